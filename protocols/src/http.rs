//! HTTP/1.1 request heads and WebSocket upgrade (RFC 6455 §4) over `httparse`.
//!
//! The gateway reads one request head per connection, bounded in bytes and header count, routes
//! it, and either answers and closes or upgrades to WebSocket. Responses are built here too so
//! the engine never formats protocol text itself.

use crate::ws;
use std::borrow::Cow;

/// Bounds on a request head. Anything above is refused with 431 before it is buffered further.
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub max_headers: usize,
}

/// Default bound on a request head's bytes (the gateway's `limits.max_header_bytes`).
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8 * 1024;
/// Default bound on a request head's header count (`limits.max_headers`).
pub const DEFAULT_MAX_HEADERS: usize = 32;

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Why a request head was refused; `status()` is the response to send before closing.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many headers")]
    TooManyHeaders,
    #[error("unsupported HTTP version")]
    Version,
    #[error("method not allowed")]
    Method,
    #[error("not a WebSocket upgrade: {0}")]
    NotUpgrade(&'static str),
    #[error("unsupported WebSocket version")]
    WsVersion,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::Version => 505,
            HttpError::Method => 405,
            HttpError::NotUpgrade(_) => 400,
            HttpError::WsVersion => 426,
        }
    }
}

/// A parsed request head borrowing from the read buffer.
#[derive(Debug)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    /// Query string without the `?`, empty when absent.
    pub query: &'a str,
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more bytes are needed (and
/// `buf` is still under the limit).
pub fn parse_head<'a>(buf: &'a [u8], limits: HeadLimits) -> Result<Option<RequestHead<'a>>, HttpError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let window = &buf[..buf.len().min(limits.max_bytes)];
    let len = match req.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HttpError::Version),
        Err(_) => return Err(HttpError::Malformed("invalid request head")),
    };
    if req.version != Some(1) {
        return Err(HttpError::Version);
    }
    let method = req.method.ok_or(HttpError::Malformed("no method"))?;
    let target = req.path.ok_or(HttpError::Malformed("no path"))?;
    if !target.starts_with('/') {
        return Err(HttpError::Malformed("request target must be a path"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = req.headers.iter().map(|h| (h.name, h.value)).collect();
    Ok(Some(RequestHead {
        method,
        path,
        query,
        headers,
        len,
    }))
}

impl<'a> RequestHead<'a> {
    /// First header of that name (case-insensitive), as text; non-UTF-8 values read as absent.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether any `name` header holds `token` in its comma-separated list (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Value of a query parameter, percent-decoded. `None` when absent or badly encoded.
    pub fn query_param(&self, name: &str) -> Option<Cow<'a, str>> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v)).flatten()
        })
    }

    /// Bearer token from `Authorization`, else the `token` query parameter (for browsers, which
    /// cannot set headers on a WebSocket).
    pub fn bearer_token(&self) -> Option<Cow<'a, str>> {
        if let Some(v) = self.header("authorization") {
            let (scheme, rest) = v.split_once(' ')?;
            return scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| Cow::Borrowed(rest.trim()));
        }
        self.query_param("token")
    }
}

fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// A validated WebSocket upgrade request.
#[derive(Debug)]
pub struct Upgrade<'a> {
    pub key: &'a str,
    pub origin: Option<&'a str>,
    /// Offered subprotocols, in the client's order of preference.
    pub protocols: Vec<&'a str>,
}

/// Checks the RFC 6455 §4.2.1 requirements for an opening handshake.
pub fn websocket_upgrade<'a>(req: &RequestHead<'a>) -> Result<Upgrade<'a>, HttpError> {
    if req.method != "GET" {
        return Err(HttpError::Method);
    }
    upgrade_with_key(req, ws::is_valid_client_key)
}

/// The upgrade headers of an RD Gateway request: its method is `RDG_OUT_DATA`, not `GET`, and
/// FreeRDP 2.11 sends a `Sec-WebSocket-Key` that is not base64 of 16 bytes (15 characters from
/// `@` to `_`), so any short printable key is taken; the accept value is computed from it as sent.
pub fn upgrade_headers<'a>(req: &RequestHead<'a>) -> Result<Upgrade<'a>, HttpError> {
    upgrade_with_key(req, |key| {
        (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
    })
}

fn upgrade_with_key<'a>(req: &RequestHead<'a>, valid_key: fn(&str) -> bool) -> Result<Upgrade<'a>, HttpError> {
    if !req.has_token("upgrade", "websocket") {
        return Err(HttpError::NotUpgrade("missing Upgrade: websocket"));
    }
    if !req.has_token("connection", "upgrade") {
        return Err(HttpError::NotUpgrade("missing Connection: upgrade"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err(HttpError::WsVersion);
    }
    let key = req
        .header("sec-websocket-key")
        .ok_or(HttpError::NotUpgrade("missing Sec-WebSocket-Key"))?;
    if !valid_key(key) {
        return Err(HttpError::NotUpgrade("invalid Sec-WebSocket-Key"));
    }
    let protocols = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    Ok(Upgrade {
        key,
        origin: req.header("origin"),
        protocols,
    })
}

impl Upgrade<'_> {
    /// The first offered subprotocol that the server supports (client preference wins).
    pub fn negotiate<'s>(&self, supported: &[&'s str]) -> Option<&'s str> {
        self.protocols
            .iter()
            .find_map(|p| supported.iter().find(|s| s.eq_ignore_ascii_case(p)).copied())
    }

    /// Origin hook: browsers send `Origin`; native clients usually do not. `allowed` decides.
    pub fn origin_allowed(&self, allowed: impl Fn(&str) -> bool) -> bool {
        self.origin.is_none_or(allowed)
    }
}

/// `101 Switching Protocols` for an accepted upgrade.
pub fn switching_protocols(key: &str, protocol: Option<&str>) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        ws::accept_key(key)
    );
    if let Some(p) = protocol {
        out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

/// The head of a complete response that closes the connection, `content_length` bytes of body
/// to follow (written separately, so a large or shared body is never copied into the head).
/// Every answer says `no-store` unless `extra_headers` sets its own Cache-Control.
pub fn response_head(
    status: u16,
    content_type: &str,
    content_length: usize,
    extra_headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {content_length}\r\nConnection: close\r\n",
        reason_phrase(status),
    );
    if !extra_headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
    {
        out.push_str("Cache-Control: no-store\r\n");
    }
    if status == 426 {
        out.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    if status == 401 {
        out.push_str("WWW-Authenticate: Bearer\r\n");
    }
    for (k, v) in extra_headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A complete plain-text response that closes the connection.
pub fn response(status: u16, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = response_head(status, "text/plain; charset=utf-8", body.len(), extra_headers);
    out.extend_from_slice(body.as_bytes());
    out
}

/// A client's WebSocket upgrade request (RFC 6455 §4.1), as the CLI, the load generator and
/// the tests send it.
#[derive(Clone, Copy, Debug)]
pub struct UpgradeRequest<'a> {
    /// Path and query.
    pub path: &'a str,
    /// `host[:port]`.
    pub host: &'a str,
    /// `Sec-WebSocket-Key`, from `ws::client_key`.
    pub key: &'a str,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer: Option<&'a str>,
    pub user_agent: &'a str,
    /// More headers, checked: a name is a token, a value holds no CR or LF.
    pub headers: &'a [(&'a str, &'a str)],
}

impl UpgradeRequest<'_> {
    pub fn encode(&self) -> Result<Vec<u8>, HttpError> {
        let clean = |v: &str| !v.contains(['\r', '\n']);
        if !self.path.starts_with('/') || !clean(self.path) || self.path.contains(' ') {
            return Err(HttpError::Malformed("request target must be a path"));
        }
        if ![self.host, self.key, self.user_agent].into_iter().all(clean) || !self.bearer.is_none_or(clean) {
            return Err(HttpError::Malformed("header value with a line break"));
        }
        let mut out = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: {}\r\n",
            self.path, self.host, self.key, self.user_agent
        );
        if let Some(token) = self.bearer {
            out.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in self.headers {
            if !is_token(name) || !clean(value) {
                return Err(HttpError::Malformed("invalid header"));
            }
            out.push_str(&format!("{name}: {}\r\n", value.trim()));
        }
        out.push_str("\r\n");
        Ok(out.into_bytes())
    }
}

/// An HTTP token (RFC 9110 §5.6.2): what a header name may be.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a server answered to an upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeAnswer {
    /// 101 with the right `Sec-WebSocket-Accept`; WebSocket data starts after `head_len` bytes.
    Accepted { head_len: usize },
    /// Any other status; a short reason may follow the head.
    Refused { status: u16, head_len: usize },
}

/// Why an upgrade answer is unusable.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeAnswerError {
    #[error("bad HTTP answer: {0}")]
    Http(HttpError),
    #[error("the WebSocket handshake is invalid (Sec-WebSocket-Accept mismatch)")]
    AcceptMismatch,
}

/// Reads the answer to an upgrade request sent with `key`. `Ok(None)` until the head is whole.
pub fn upgrade_answer(buf: &[u8], key: &str, limits: HeadLimits) -> Result<Option<UpgradeAnswer>, UpgradeAnswerError> {
    let Some(head) = parse_response_head(buf, limits).map_err(UpgradeAnswerError::Http)? else {
        return Ok(None);
    };
    if head.status != 101 {
        return Ok(Some(UpgradeAnswer::Refused {
            status: head.status,
            head_len: head.len,
        }));
    }
    if head.accept.as_deref() != Some(ws::accept_key(key).as_str()) {
        return Err(UpgradeAnswerError::AcceptMismatch);
    }
    Ok(Some(UpgradeAnswer::Accepted { head_len: head.len }))
}

/// A refusal's body as one line a client can show: printable, trimmed, at most `max` characters.
pub fn refusal_detail(body: &[u8], max: usize) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect()
}

/// Status code of a response head, for clients. `Ok(None)` until the head is complete.
pub fn parse_response_head(buf: &[u8], limits: HeadLimits) -> Result<Option<ResponseHead>, HttpError> {
    let mut storage = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(&buf[..buf.len().min(limits.max_bytes)]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_bytes => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HttpError::Malformed("invalid response head")),
    };
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_owned())
    };
    Ok(Some(ResponseHead {
        status: resp.code.unwrap_or(0),
        accept: header("sec-websocket-accept"),
        len,
    }))
}

#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub accept: Option<String>,
    pub len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6455 §1.3 example handshake.
    const RFC_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn head(buf: &[u8]) -> RequestHead<'_> {
        parse_head(buf, HeadLimits::default()).unwrap().unwrap()
    }

    #[test]
    fn rfc_6455_handshake() {
        let req = head(RFC_REQUEST);
        assert_eq!(req.len, RFC_REQUEST.len());
        let up = websocket_upgrade(&req).unwrap();
        assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(up.origin, Some("http://example.com"));
        assert_eq!(up.negotiate(&["superchat", "chat"]), Some("chat"));
        let resp = String::from_utf8(switching_protocols(up.key, Some("chat"))).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.starts_with("HTTP/1.1 101 "));
        assert!(resp.ends_with("\r\n\r\n"));
    }

    #[test]
    fn partial_then_complete() {
        for cut in 0..RFC_REQUEST.len() {
            assert!(parse_head(&RFC_REQUEST[..cut], HeadLimits::default())
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn limits() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(
            parse_head(big.as_bytes(), HeadLimits::default()).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let never_ends = format!("GET / HTTP/1.1\r\n{}", "X: y\r\n".repeat(20));
        let limits = HeadLimits {
            max_bytes: 64,
            max_headers: 32,
        };
        assert_eq!(
            parse_head(never_ends.as_bytes(), limits).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let many: String = (0..40).map(|i| format!("H{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            parse_head(req.as_bytes(), HeadLimits::default()).unwrap_err(),
            HttpError::TooManyHeaders
        );
        assert_eq!(HttpError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn malformed_and_versions() {
        assert_eq!(
            parse_head(b"\x16\x03\x01\x02\x00\x01\x00", HeadLimits::default())
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.0\r\n\r\n", HeadLimits::default()).unwrap_err(),
            HttpError::Version
        );
        assert!(parse_head(b"GET http://x/ HTTP/1.1\r\n\r\n", HeadLimits::default()).is_err());
    }

    #[test]
    fn upgrade_requirements() {
        let ok = "GET /v1/tunnel/vm1?token=a%2Eb HTTP/1.1\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let req = head(ok.as_bytes());
        assert_eq!(req.path, "/v1/tunnel/vm1");
        assert_eq!(req.bearer_token().as_deref(), Some("a.b"));
        assert!(websocket_upgrade(&req).unwrap().origin_allowed(|_| false));
        let cases = [
            (ok.replace("GET", "POST"), HttpError::Method),
            (
                ok.replace("Upgrade: WebSocket\r\n", ""),
                HttpError::NotUpgrade("missing Upgrade: websocket"),
            ),
            (
                ok.replace("keep-alive, Upgrade", "keep-alive"),
                HttpError::NotUpgrade("missing Connection: upgrade"),
            ),
            (ok.replace("Version: 13", "Version: 8"), HttpError::WsVersion),
            (
                ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
                HttpError::NotUpgrade("invalid Sec-WebSocket-Key"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(websocket_upgrade(&head(text.as_bytes())).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn bearer_header_wins_over_query() {
        let req = head(b"GET /?token=q HTTP/1.1\r\nAuthorization: Bearer  h.t.s \r\n\r\n");
        assert_eq!(req.bearer_token().as_deref(), Some("h.t.s"));
        let req = head(b"GET /?token=q HTTP/1.1\r\nAuthorization: Basic abc\r\n\r\n");
        assert_eq!(req.bearer_token(), None);
        let req = head(b"GET /?a=1&token=%zz HTTP/1.1\r\n\r\n");
        assert_eq!(req.bearer_token(), None);
    }

    #[test]
    fn upgrade_request_and_answer() {
        let key = ws::client_key([7; 16]);
        let req = UpgradeRequest {
            path: "/v1/tunnel/vm1",
            host: "gw:443",
            key: &key,
            bearer: Some("t.o.k"),
            user_agent: "portcullis/1",
            headers: &[("X-Trace", "1")],
        }
        .encode()
        .unwrap();
        let head = parse_head(&req, HeadLimits::default()).unwrap().unwrap();
        let upgrade = websocket_upgrade(&head).unwrap();
        assert_eq!(
            (head.path, head.bearer_token().as_deref()),
            ("/v1/tunnel/vm1", Some("t.o.k"))
        );
        let mut answer = switching_protocols(upgrade.key, None);
        let len = answer.len();
        answer.extend_from_slice(b"\x82\x00");
        assert_eq!(
            upgrade_answer(&answer, &key, HeadLimits::default()),
            Ok(Some(UpgradeAnswer::Accepted { head_len: len }))
        );
        assert_eq!(
            upgrade_answer(&answer[..len - 1], &key, HeadLimits::default()),
            Ok(None)
        );
        assert_eq!(
            upgrade_answer(&answer, &ws::client_key([8; 16]), HeadLimits::default()),
            Err(UpgradeAnswerError::AcceptMismatch)
        );
        let refused = response(403, &[], "target is not allowed for this user\n");
        assert!(matches!(
            upgrade_answer(&refused, &key, HeadLimits::default()),
            Ok(Some(UpgradeAnswer::Refused { status: 403, .. }))
        ));
        assert_eq!(refusal_detail(b" no\x07 way \n", 200), "no way");
        // Header injection is refused, not sent.
        let bad = UpgradeRequest {
            headers: &[("X", "a\r\nEvil: 1")],
            path: "/",
            host: "h",
            key: &key,
            bearer: None,
            user_agent: "u",
        };
        assert!(bad.encode().is_err());
        assert!(UpgradeRequest {
            bearer: Some("a\nb"),
            headers: &[],
            ..bad
        }
        .encode()
        .is_err());
        assert!(UpgradeRequest {
            headers: &[("Bad Name", "v")],
            ..bad
        }
        .encode()
        .is_err());
    }

    #[test]
    fn error_response_shape() {
        let r = String::from_utf8(response(401, &[], "token required\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(r.contains("Content-Length: 15\r\n") && r.contains("WWW-Authenticate: Bearer"));
        let head = parse_response_head(r.as_bytes(), HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 401);
    }
}
