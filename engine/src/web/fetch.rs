//! A small HTTPS client for what the gateway asks of identity providers (discovery, keys, the
//! token endpoint): one request per connection, on the tokio runtime (never on a core), bounded
//! in time and size. Not a general client: HTTP/1.1, `Connection: close`, JSON answers.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// The whole exchange (connect, TLS, request, answer) must end within this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer read.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("bad URL {0}")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("the answer is malformed")]
    Malformed,
    #[error("the answer is larger than {MAX_ANSWER} bytes")]
    TooLarge,
    #[error("HTTP {0}")]
    Status(u16, String),
}

/// `https://host[:port]/path?query` split up.
struct Url<'a> {
    host: &'a str,
    port: u16,
    path: &'a str,
}

fn parse(url: &str) -> Result<Url<'_>, FetchError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| FetchError::Url(url.into()))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            (h, p.parse().map_err(|_| FetchError::Url(url.into()))?)
        }
        _ => (authority, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(FetchError::Url(url.into()));
    }
    Ok(Url { host, port, path })
}

/// A GET for JSON.
pub async fn get_json(tls: Arc<rustls::ClientConfig>, url: &str) -> Result<serde_json::Value, FetchError> {
    json(request(tls, "GET", url, &[], b"").await?)
}

/// A POST of a form for JSON (`headers` e.g. `Authorization`).
pub async fn post_form(
    tls: Arc<rustls::ClientConfig>,
    url: &str,
    headers: &[(&str, &str)],
    form: &[(&str, &str)],
) -> Result<serde_json::Value, FetchError> {
    let body: String = form
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    json(request(tls, "POST", url, &all, body.as_bytes()).await?)
}

fn json((status, body): (u16, Vec<u8>)) -> Result<serde_json::Value, FetchError> {
    if !(200..300).contains(&status) {
        let detail: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(FetchError::Status(status, detail));
    }
    serde_json::from_slice(&body).map_err(|_| FetchError::Malformed)
}

/// `application/x-www-form-urlencoded` (and RFC 6749 2.3.1's encoding of client credentials).
pub fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn request(
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), FetchError> {
    tokio::time::timeout(FETCH_TIMEOUT, exchange(tls, method, url, headers, body))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn exchange(
    tls: Arc<rustls::ClientConfig>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), FetchError> {
    let u = parse(url)?;
    let tcp = tokio::net::TcpStream::connect((u.host, u.port)).await?;
    let name = rustls::pki_types::ServerName::try_from(u.host.to_owned()).map_err(|_| FetchError::Url(url.into()))?;
    let mut stream = futures_rustls::TlsConnector::from(tls)
        .connect(name, tcp.compat())
        .await?;
    let host = if u.port == 443 {
        u.host.to_owned()
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis/{}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        u.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A peer that closes without close_notify after a complete answer is common.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        if answer.len() + n > MAX_ANSWER {
            return Err(FetchError::TooLarge);
        }
        answer.extend_from_slice(&chunk[..n]);
        if complete(&answer) {
            break;
        }
    }
    split(&answer)
}

/// Whether `buf` holds a whole answer by its `Content-Length` (else it ends at close).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
    length.is_some_and(|n| buf.len() >= end + 4 + n)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn find(buf: &[u8], needle: &[u8]) -> Option<usize> {
    buf.windows(needle.len()).position(|w| w == needle)
}

/// Status and body (de-chunked) of a whole answer.
fn split(buf: &[u8]) -> Result<(u16, Vec<u8>), FetchError> {
    let end = find(buf, b"\r\n\r\n").ok_or(FetchError::Malformed)?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| FetchError::Malformed)?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or(FetchError::Malformed)?;
    let body = &buf[end + 4..];
    let chunked = header(head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_vec() };
    Ok((status, body))
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    loop {
        let line_end = find(body, b"\r\n").ok_or(FetchError::Malformed)?;
        let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| FetchError::Malformed)?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| FetchError::Malformed)?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if size > MAX_ANSWER || body.len() < size.saturating_add(2) {
            return Err(FetchError::Malformed);
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_answers_and_chunks() {
        let u = parse("https://idp.example.com:8443/realms/x/token?a=b").unwrap();
        assert_eq!(
            (u.host, u.port, u.path),
            ("idp.example.com", 8443, "/realms/x/token?a=b")
        );
        let u = parse("https://127.0.0.1").unwrap();
        assert_eq!((u.host, u.port, u.path), ("127.0.0.1", 443, "/"));
        assert!(parse("http://idp.example.com/").is_err());
        let a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(split(a).unwrap(), (200, b"{\"a\":1}".to_vec()));
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}"));
        assert!(split(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err());
        assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
