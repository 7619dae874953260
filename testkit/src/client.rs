//! Clients of the gateway's port: TLS that trusts anything (its certificate is self-signed), raw
//! HTTP exchanges for refusals and the web API, and [`WsClient`], a protocol-level WebSocket
//! client that can also break RFC 6455 on purpose. Valid upgrade requests are built by the
//! product's own `http::UpgradeRequest`; hand-written bytes are for hostile requests only.

use crate::gateway::Gateway;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// TLS to the gateway as tests speak it: rustls' own stream, independent of the gateway's record
/// layer (which `portcullis connect` shares), so that tests check one against the other.
pub type ClientTls = futures_rustls::client::TlsStream<tokio_util::compat::Compat<tokio::net::TcpStream>>;
use portcullis::web::signin::COOKIE;
use portcullis_protocols::http::{self, HeadLimits, UpgradeAnswer, UpgradeRequest};
use portcullis_protocols::ws::{self, CloseCode, Limits, Message, MessageAssembler, OpCode, Role};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The `Sec-WebSocket-Key` of RFC 6455's example handshake.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SEC: Duration = Duration::from_secs(1);

/// Something with a gateway's TLS port: a [`Gateway`], or the address of one started otherwise.
pub trait Endpoint {
    fn addr(&self) -> SocketAddr;

    /// `host:port`, for the Host header.
    fn host(&self) -> String {
        self.addr().to_string()
    }

    /// The same-origin `Origin` of its web app.
    fn origin(&self) -> String {
        format!("https://{}", self.addr())
    }

    /// The local address to connect from (loopback has all of 127/8), if not the default.
    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
}

/// An endpoint reached from a chosen local address, e.g. `127.0.0.3` through a balancer.
#[derive(Clone, Copy, Debug)]
pub struct From {
    pub addr: SocketAddr,
    pub source: std::net::IpAddr,
}

impl Endpoint for From {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn source(&self) -> Option<std::net::IpAddr> {
        Some(self.source)
    }
}

impl Endpoint for Gateway {
    fn addr(&self) -> SocketAddr {
        Gateway::addr(self)
    }
}

impl Endpoint for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

pub fn insecure_tls() -> Arc<rustls::ClientConfig> {
    portcullis::tls::client_config(portcullis::tls::ServerTrust::Insecure).expect("client TLS config")
}

/// TLS to the gateway, nothing sent yet.
pub async fn tls_connect(ep: &impl Endpoint) -> ClientTls {
    let tcp = match ep.source() {
        None => tokio::net::TcpStream::connect(ep.addr()).await,
        Some(source) => {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(source, 0))
                .expect("bind the source address");
            socket.connect(ep.addr()).await
        }
    }
    .expect("connect to the gateway");
    tls_over(tcp).await
}

/// TLS to the gateway over a TCP connection the caller set up (a small receive window, …).
pub async fn tls_over(tcp: tokio::net::TcpStream) -> ClientTls {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    futures_rustls::TlsConnector::from(insecure_tls())
        .connect(name, tcp.compat())
        .await
        .expect("TLS handshake with the gateway")
}

/// Sends `request` and reads until the peer closes (or 10 s); returns everything received.
pub async fn exchange(tls: &mut ClientTls, request: &[u8]) -> Vec<u8> {
    tls.write_all(request).await.expect("write");
    tls.flush().await.expect("flush");
    read_to_close(tls, 10 * SEC).await
}

/// A new connection that sends `request`: the answer's status code.
pub async fn status_for(ep: &impl Endpoint, request: &[u8]) -> u16 {
    let mut tls = tls_connect(ep).await;
    status_of(&exchange(&mut tls, request).await)
}

/// Everything the peer sends until it closes, an error, or `limit`.
pub async fn read_to_close(tls: &mut ClientTls, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n @ 1..) = tls.read(&mut buf).await {
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    out
}

/// The status code of an HTTP response (0 when there is none).
pub fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A valid upgrade request for `path` (Host `localhost`), with `token` as a bearer token.
pub fn upgrade_request(path: &str, token: Option<&str>) -> String {
    let request = UpgradeRequest {
        path,
        host: "localhost",
        key: KEY,
        bearer: token,
        user_agent: "portcullis-testkit",
        headers: &[],
    };
    crate::text(&request.encode().expect("a valid upgrade request"))
}

/// One HTTPS request to the web API; returns (status, head, body). Sent with a JSON content type
/// and the same-origin `Origin` unless `headers` has one.
pub async fn https(
    ep: &impl Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        ep.host(),
        body.len()
    );
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("origin")) {
        head.push_str(&format!("Origin: {}\r\n", ep.origin()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut tls = tls_connect(ep).await;
    let resp = exchange(&mut tls, format!("{head}\r\n{body}").as_bytes()).await;
    let text = crate::text(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(&resp), head.to_owned(), body.to_owned())
}

/// Signs in to the web app: the status, and the session cookie (`__Host-portcullis_session=…`) if set.
pub async fn sign_in(ep: &impl Endpoint, user: &str, password: &str) -> (u16, Option<String>) {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    let (status, head, _) = https(ep, "POST", "/api/login", &[], &body).await;
    (status, session_cookie(&head))
}

/// The session cookie a response head sets, as `name=value` for a `Cookie` header.
pub fn session_cookie(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("Set-Cookie: {COOKIE}=")))
        .map(|v| format!("{COOKIE}={}", v.split(';').next().unwrap_or("")))
}

/// One WebSocket frame as a client sends it; `masked: false` breaks RFC 6455 on purpose.
pub fn frame(fin: bool, opcode: OpCode, payload: &[u8], masked: bool) -> Vec<u8> {
    let key = masked.then_some([0x37, 0xfa, 0x21, 0x3d]);
    let mut frame = vec![0u8; ws::MAX_HEADER_LEN];
    let n = ws::encode_header(&mut frame, fin, opcode, payload.len() as u64, key);
    frame.truncate(n);
    frame.extend_from_slice(payload);
    if let Some(key) = key {
        ws::apply_mask(&mut frame[n..], key, 0);
    }
    frame
}

/// A raw WebSocket session in the client role, for protocol-level tests.
pub struct WsClient {
    pub tls: ClientTls,
    assembler: MessageAssembler,
    buf: Vec<u8>,
    start: usize,
}

impl WsClient {
    /// Opens `/v1/tunnel/{target}` with `token`; panics unless the gateway answers 101.
    pub async fn open(ep: &impl Endpoint, target: &str, token: &str) -> WsClient {
        Self::open_path(ep, &format!("/v1/tunnel/{target}"), Some(token)).await
    }

    /// Opens a WebSocket on `path`; panics unless the gateway answers 101.
    pub async fn open_path(ep: &impl Endpoint, path: &str, token: Option<&str>) -> WsClient {
        Self::connect(ep, path, token, &[])
            .await
            .unwrap_or_else(|answer| panic!("upgrade refused: {}", crate::text(&answer)))
    }

    /// Opens a WebSocket on `path` with more headers (a cookie, an origin). `Err` holds the
    /// gateway's whole answer when it is not 101.
    pub async fn open_with(ep: &impl Endpoint, path: &str, headers: &[(&str, &str)]) -> Result<WsClient, Vec<u8>> {
        Self::connect(ep, path, None, headers).await
    }

    /// The status of an upgrade on `path` that must be refused.
    pub async fn refused(ep: &impl Endpoint, path: &str, headers: &[(&str, &str)]) -> u16 {
        match Self::open_with(ep, path, headers).await {
            Ok(_) => panic!("the upgrade on {path} was accepted"),
            Err(answer) => status_of(&answer),
        }
    }

    /// The status refusing a tunnel to `target` with `token` (panics if it opens).
    pub async fn refused_tunnel(ep: &impl Endpoint, target: &str, token: &str) -> u16 {
        let bearer = format!("Bearer {token}");
        Self::refused(ep, &format!("/v1/tunnel/{target}"), &[("Authorization", &bearer)]).await
    }

    /// The upgrade: a valid request, and the answer checked (`Sec-WebSocket-Accept` included).
    pub async fn connect(
        ep: &impl Endpoint,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, Vec<u8>> {
        let tls = tls_connect(ep).await;
        let request = UpgradeRequest {
            path,
            host: &ep.host(),
            key: KEY,
            bearer: token,
            user_agent: "portcullis-testkit",
            headers,
        };
        Self::upgrade_over(tls, &request.encode().expect("a valid upgrade request")).await
    }

    /// Sends `request` (an upgrade request of any method, with [`KEY`] as its key) and reads the
    /// answer as [`WsClient::connect`] does.
    pub async fn upgrade_raw(ep: &impl Endpoint, request: &[u8]) -> Result<WsClient, Vec<u8>> {
        Self::upgrade_over(tls_connect(ep).await, request).await
    }

    async fn upgrade_over(mut tls: ClientTls, request: &[u8]) -> Result<WsClient, Vec<u8>> {
        tls.write_all(request).await.unwrap();
        tls.flush().await.unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(10 * SEC, tls.read(&mut chunk))
                .await
                .expect("no answer to the upgrade within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return Err(answer);
            }
            answer.extend_from_slice(&chunk[..n]);
            match http::upgrade_answer(&answer, KEY, HeadLimits::default()).expect("a valid upgrade answer") {
                None => continue,
                Some(UpgradeAnswer::Accepted { head_len }) => {
                    let mut ws = WsClient::from_tls(tls);
                    ws.buf = answer.split_off(head_len);
                    return Ok(ws);
                }
                Some(UpgradeAnswer::Refused { .. }) => {
                    answer.extend(read_to_close(&mut tls, 5 * SEC).await);
                    return Err(answer);
                }
            }
        }
    }

    /// A client on a connection that already completed the upgrade.
    pub fn from_tls(tls: ClientTls) -> WsClient {
        WsClient {
            tls,
            assembler: MessageAssembler::new(Role::Client, Limits::default()),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Sends raw bytes (a hand-made frame).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.expect("write");
        self.tls.flush().await.expect("flush");
    }

    /// Sends one frame; `masked: false` breaks RFC 6455 on purpose.
    pub async fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8], masked: bool) {
        self.send_raw(&frame(fin, opcode, payload, masked)).await
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, OpCode::Text, text.as_bytes(), true).await
    }

    pub async fn send_binary(&mut self, payload: &[u8]) {
        self.send_frame(true, OpCode::Binary, payload, true).await
    }

    pub async fn send_close(&mut self, code: CloseCode) {
        self.send_frame(true, OpCode::Close, &code.0.to_be_bytes(), true).await
    }

    /// The next whole message, or None when the connection ends or `limit` passes.
    pub async fn recv(&mut self, limit: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while self.start < self.buf.len() {
                let (used, msg) = self
                    .assembler
                    .feed(&mut self.buf[self.start..])
                    .expect("the gateway sent a bad frame");
                self.start += used;
                if msg.is_some() {
                    return msg;
                }
            }
            self.buf.clear();
            self.start = 0;
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.tls.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// The next text message as JSON (the terminal's control messages), skipping other kinds.
    pub async fn recv_json(&mut self, limit: Duration) -> Option<serde_json::Value> {
        loop {
            match self.recv(limit).await? {
                Message::Text(t) => return Some(serde_json::from_str(&t).expect("a JSON control message")),
                _ => continue,
            }
        }
    }

    /// Binary payload until `n` bytes arrived (pings and pongs are skipped).
    pub async fn recv_bytes(&mut self, n: usize, limit: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.recv(limit).await {
                Some(Message::Binary(b)) => out.extend_from_slice(&b),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected data, got {other:?}"),
            }
        }
        out
    }

    /// Sends `payload` and expects it back (through an echo target).
    pub async fn echoes(&mut self, payload: &[u8]) {
        self.send_binary(payload).await;
        assert_eq!(self.recv_bytes(payload.len(), 10 * SEC).await, payload);
    }

    /// Waits for the gateway's Close; returns its code and reason.
    pub async fn recv_close(&mut self, limit: Duration) -> (Option<u16>, String) {
        loop {
            match self.recv(limit).await {
                Some(Message::Close { code, reason }) => return (code.map(|c| c.0), reason),
                Some(_) => continue,
                None => panic!("the connection ended without a Close frame"),
            }
        }
    }
}

/// Tries `attempt` every 100 ms until it returns true or `limit` passes (false), for states of
/// the gateway that announce themselves with no event (an expiry).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut attempt: impl FnMut() -> F,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if attempt().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
