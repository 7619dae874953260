//! The native client: `portcullis connect` (stdin/stdout, for OpenSSH's ProxyCommand) and
//! `portcullis tunnel` (a local port), both speaking the gateway's TLS + WebSocket protocol.
//! Runs on tokio; the relay is the same state machine the gateway uses, in the client role.

use crate::relay::{End, Relay, Step};
use anyhow::{anyhow, bail, Context};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::ws::{self, CloseCode, Limits, Role};
use rustls::pki_types::ServerName;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

pub type ClientTls = futures_rustls::client::TlsStream<Compat<tokio::net::TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
const BUFFER: usize = 64 * 1024;

/// Where the gateway is: from `wss://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl GatewayUrl {
    pub fn parse(url: &str) -> anyhow::Result<GatewayUrl> {
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| anyhow!("gateway URL must start with wss:// (got {url:?})"))?;
        let (authority, prefix) = rest
            .split_once('/')
            .map(|(a, p)| (a, format!("/{}", p.trim_end_matches('/'))))
            .unwrap_or((rest, String::new()));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("bad IPv6 address in {url:?}"))?;
            (h.to_owned(), after.strip_prefix(':').map(str::to_owned))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
                None => (authority.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| anyhow!("bad port in {url:?}"))?,
            None => 443,
        };
        if host.is_empty() {
            bail!("no host in {url:?}");
        }
        Ok(GatewayUrl {
            host,
            port,
            prefix: if prefix == "/" { String::new() } else { prefix },
        })
    }
}

/// A refusal from the gateway, with its HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("gateway refused the tunnel: {status} {reason}{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
pub struct Refused {
    pub status: u16,
    pub reason: &'static str,
    pub detail: String,
}

/// Opens a tunnel: TCP, TLS, WebSocket upgrade with the token. Returns the stream and any bytes
/// that came after the 101 head.
pub async fn open(
    url: &GatewayUrl,
    target: &str,
    token: &str,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<(ClientTls, Vec<u8>)> {
    let addr = (url.host.as_str(), url.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {}:{} timed out", url.host, url.port))?
        .with_context(|| format!("cannot connect to {}:{}", url.host, url.port))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(url.host.clone()).map_err(|_| anyhow!("bad server name {:?}", url.host))?;
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        futures_rustls::TlsConnector::from(tls).connect(name, tcp.compat()),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {} timed out", url.host))?
    .with_context(|| format!("TLS handshake with {} failed", url.host))?;

    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| anyhow!("no randomness"))?;
    let key = ws::client_key(nonce);
    let request = format!(
        "GET {}/v1/tunnel/{target} HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\nUser-Agent: portcullis/{}\r\n\r\n",
        url.prefix,
        url.host,
        url.port,
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    let limits = HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 64,
    };
    let mut buf = vec![0u8; limits.max_bytes];
    let mut filled = 0;
    let head = loop {
        let n = tokio::time::timeout(CONNECT_TIMEOUT, stream.read(&mut buf[filled..]))
            .await
            .map_err(|_| anyhow!("no answer from the gateway"))??;
        if n == 0 {
            bail!("the gateway closed the connection before answering");
        }
        filled += n;
        if let Some(head) = http::parse_response_head(&buf[..filled], limits)
            .map_err(|e| anyhow!("bad answer from the gateway: {e}"))?
        {
            break head;
        }
    };
    if head.status != 101 {
        // The body is a one-line reason; read what is there without waiting long.
        let mut body = buf[head.len..filled].to_vec();
        let mut more = [0u8; 512];
        while body.len() < 512 {
            match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut more)).await {
                Ok(Ok(n)) if n > 0 => body.extend_from_slice(&more[..n]),
                _ => break,
            }
        }
        let detail = String::from_utf8_lossy(&body)
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        return Err(Refused {
            status: head.status,
            reason: http::reason_phrase(head.status),
            detail,
        }
        .into());
    }
    if head.accept.as_deref() != Some(ws::accept_key(&key).as_str()) {
        bail!("the gateway's WebSocket handshake is invalid (Sec-WebSocket-Accept mismatch)");
    }
    Ok((stream, buf[head.len..filled].to_vec()))
}

/// Relays a raw stream through an open tunnel until both sides are done. When `stop` resolves
/// (e.g. OpenSSH sends its ProxyCommand SIGHUP on exit), the tunnel is closed cleanly.
pub async fn relay<R: AsyncRead + AsyncWrite + Unpin>(
    mut ws: ClientTls,
    leftover: Vec<u8>,
    mut raw: R,
    stop: impl std::future::Future<Output = ()>,
) -> End {
    let mut relay = Relay::new(Role::Client, Limits::default(), BUFFER, &leftover);
    let mut stop = std::pin::pin!(stop);
    let mut stopped = false;
    loop {
        let step = tokio::select! {
            step = futures_lite::future::poll_fn(|cx| relay.poll(cx, &mut ws, &mut raw)) => Some(step),
            _ = &mut stop, if !stopped => None,
        };
        match step {
            Some(Step::Ended(end)) => return end,
            Some(Step::Closing) => break,
            None => {
                stopped = true;
                relay.close(CloseCode::NORMAL, "client_exit");
            }
        }
    }
    let rest = tokio::time::timeout(
        CLOSE_TIMEOUT,
        futures_lite::future::poll_fn(|cx| relay.poll(cx, &mut ws, &mut raw)),
    )
    .await;
    match rest {
        Ok(Step::Ended(end)) => end,
        _ => relay.abort(),
    }
}

/// Resolves on SIGHUP, SIGTERM or SIGINT.
async fn exit_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = recv(&mut hup) => {}
        _ = recv(&mut term) => {}
        _ = recv(&mut int) => {}
    }
}

/// Standard input and output as one duplex stream.
pub struct Stdio {
    stdin: Compat<tokio::io::Stdin>,
    stdout: Compat<tokio::io::Stdout>,
}

impl Stdio {
    pub fn new() -> Self {
        Stdio {
            stdin: tokio::io::stdin().compat(),
            stdout: tokio::io::stdout().compat_write(),
        }
    }
}

impl Default for Stdio {
    fn default() -> Self {
        Self::new()
    }
}

impl AsyncRead for Stdio {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdout).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_close(cx)
    }
}

/// `portcullis connect`: stdin/stdout through the tunnel.
pub async fn connect_stdio(
    url: &GatewayUrl,
    target: &str,
    token: &str,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<()> {
    let (ws, leftover) = open(url, target, token, tls).await?;
    match relay(ws, leftover, Stdio::new(), exit_signal()).await {
        End::PeerClosed(_) | End::RawClosed | End::Local(_, "client_exit") => Ok(()),
        other => Err(anyhow!(
            "tunnel ended: {}",
            other.label().replace("client_", "gateway_")
        )),
    }
}

/// `portcullis tunnel`: every connection to `local` gets its own tunnel to the target.
pub async fn tunnel(
    url: GatewayUrl,
    target: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    local: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(local)
        .await
        .with_context(|| format!("cannot listen on {local}"))?;
    let bound = listener.local_addr()?;
    eprintln!(
        "portcullis: forwarding {bound} -> {target} via {}:{}",
        url.host, url.port
    );
    let url = Arc::new(url);
    let target: Arc<str> = target.into();
    let token: Arc<str> = token.into();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("portcullis: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let (url, target, token, tls) = (url.clone(), target.clone(), token.clone(), tls.clone());
                tokio::spawn(async move {
                    match open(&url, &target, &token, tls).await {
                        Ok((ws, leftover)) => {
                            let end = relay(ws, leftover, sock.compat(), std::future::pending()).await;
                            eprintln!("portcullis: {peer}: {}", end.label().replace("client_", "gateway_"));
                        }
                        Err(e) => eprintln!("portcullis: {peer}: {e:#}"),
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls() {
        let u = GatewayUrl::parse("wss://bastion.example.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("bastion.example.com", 443, "")
        );
        let u = GatewayUrl::parse("wss://127.0.0.1:8443/gw/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("127.0.0.1", 8443, "/gw"));
        let u = GatewayUrl::parse("wss://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert!(GatewayUrl::parse("ws://x").is_err());
        assert!(GatewayUrl::parse("wss://x:notaport").is_err());
        assert!(GatewayUrl::parse("wss://:1").is_err());
    }
}
