//! `portcullis admin …`: the admin API from a shell. One blocking request per command over the
//! admin listener (plain HTTP on loopback, HTTPS elsewhere); the admin token comes from a file,
//! never from the command line, where every local user could read it.

use anyhow::{anyhow, bail, Context};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Answers larger than this are cut (a list of 100,000 sessions is about 30 MB).
const MAX_ANSWER: u64 = 64 << 20;

/// Where the admin listener is: `http://host:port` or `https://host:port`.
pub struct AdminUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl AdminUrl {
    pub fn parse(url: &str) -> anyhow::Result<AdminUrl> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            bail!("{url}: expected http://HOST:PORT or https://HOST:PORT");
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| anyhow!("{url}: no port"))?;
        let port = port.parse().with_context(|| format!("{url}: bad port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(AdminUrl { tls, host, port })
    }
}

/// An answer of the admin API.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends one request; `token` is the admin token, `body` JSON.
pub fn request(
    url: &AdminUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> anyhow::Result<Answer> {
    let stream = TcpStream::connect((url.host.as_str(), url.port))
        .with_context(|| format!("cannot reach the admin listener at {}:{}", url.host, url.port))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        url.host,
        url.port,
        body.len()
    );
    let mut raw = Vec::new();
    match (url.tls, tls) {
        (false, _) => exchange(stream, &head, body, &mut raw)?,
        (true, Some(config)) => {
            let name = rustls::pki_types::ServerName::try_from(url.host.clone()).context("bad host name")?;
            let conn = rustls::ClientConnection::new(config, name)?;
            exchange(rustls::StreamOwned::new(conn, stream), &head, body, &mut raw)?;
        }
        (true, None) => bail!("https needs a TLS configuration"),
    }
    parse_answer(&raw)
}

fn exchange(mut io: impl Read + Write, head: &str, body: &str, out: &mut Vec<u8>) -> anyhow::Result<()> {
    io.write_all(head.as_bytes())?;
    io.write_all(body.as_bytes())?;
    io.flush()?;
    match io.take(MAX_ANSWER).read_to_end(out) {
        Ok(_) => Ok(()),
        // A TLS peer that closes without close_notify still sent a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let limits = portcullis_protocols::http::HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 64,
    };
    let head = portcullis_protocols::http::parse_response_head(raw, limits)
        .map_err(|e| anyhow!("bad answer from the admin listener: {e}"))?
        .ok_or_else(|| anyhow!("incomplete answer from the admin listener"))?;
    Ok(Answer {
        status: head.status,
        body: String::from_utf8_lossy(&raw[head.len..]).into_owned(),
    })
}

/// One line per live session, for people; `--json` prints the API's answer as it is.
pub fn format_sessions(body: &str) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_str(body).context("bad JSON from the admin API")?;
    let sessions = value["sessions"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "{:<24} {:<12} {:<16} {:<8} {:<12} {:<22} {:>8} {:>12} {:>12}\n",
        "ID", "USER", "TARGET", "PROTO", "VIA", "CLIENT", "SECONDS", "UP", "DOWN"
    );
    for s in &sessions {
        let text = |k: &str| s[k].as_str().unwrap_or("-").to_owned();
        let num = |k: &str| s[k].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "{:<24} {:<12} {:<16} {:<8} {:<12} {:<22} {:>8} {:>12} {:>12}\n",
            text("id"),
            text("user"),
            text("target"),
            text("protocol"),
            text("via"),
            text("client"),
            num("seconds"),
            num("bytes_client_to_target"),
            num("bytes_target_to_client"),
        ));
    }
    Ok(out)
}
