//! The native client: `portcullis connect` (stdin/stdout, for OpenSSH's ProxyCommand) and
//! `portcullis tunnel` (a local port), both speaking the gateway's TLS + WebSocket protocol.
//! Runs on tokio; the relay is the same sans-IO state machine the gateway uses, in the client role.

use crate::relay;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use portcullis_core::audit::EndReason;
use portcullis_core::relay::{End, Relay, Step};
use portcullis_protocols::http::{self, HeadLimits, UpgradeAnswer, UpgradeRequest};
use portcullis_protocols::ws::{self, CloseCode, Limits, Role};
use rustls::pki_types::ServerName;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// TLS to the gateway: rustls' handshake, then the gateway's record layer (`crate::tls`), so
/// that a tunnel seals and opens records in its relay's buffers as the gateway does.
pub type ClientTls = crate::tls::stream::TlsStream<Compat<tokio::net::TcpStream>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The relay's buffer per direction (the gateway's default).
const BUFFER: usize = portcullis_core::config::settings::BUFFER_SIZE.default as usize;

/// Why the client could not open a tunnel or the tunnel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("{0}")]
    Url(String),
    #[error("connecting to {host}:{port} timed out")]
    ConnectTimeout { host: String, port: u16 },
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("TLS handshake with {host} failed: {detail}")]
    Tls { host: String, detail: String },
    #[error("the gateway closed the connection before answering")]
    NoAnswer,
    #[error("{0}")]
    Answer(#[from] http::UpgradeAnswerError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Random(#[from] portcullis_core::secret::RandomError),
    /// The tunnel opened, then ended otherwise than by a clean close.
    #[error("tunnel ended: {0}")]
    Ended(String),
    /// The gateway's API answered otherwise than expected (login, token, targets).
    #[error("{0}")]
    Api(String),
}

/// Where the gateway is: from `wss://host[:port][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl GatewayUrl {
    pub fn parse(url: &str) -> Result<GatewayUrl, ClientError> {
        let bad = |m: String| ClientError::Url(m);
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| bad(format!("gateway URL must start with wss:// (got {url:?})")))?;
        let (authority, prefix) = rest
            .split_once('/')
            .map(|(a, p)| (a, format!("/{}", p.trim_end_matches('/'))))
            .unwrap_or((rest, String::new()));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad(format!("bad IPv6 address in {url:?}")))?;
            (h.to_owned(), after.strip_prefix(':').map(str::to_owned))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
                None => (authority.to_owned(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad(format!("bad port in {url:?}")))?,
            None => 443,
        };
        if host.is_empty() {
            return Err(bad(format!("no host in {url:?}")));
        }
        Ok(GatewayUrl {
            host,
            port,
            prefix: if prefix == "/" { String::new() } else { prefix },
        })
    }

    /// `host:port` as the Host header says it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
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
) -> Result<(ClientTls, Vec<u8>), ClientError> {
    let mut stream = tls_connect(url, tls).await?;
    open_on(&mut stream, url, target, token)
        .await
        .map(|leftover| (stream, leftover))
}

/// TCP and TLS to the gateway, each within `CONNECT_TIMEOUT`.
pub async fn tls_connect(url: &GatewayUrl, tls: Arc<rustls::ClientConfig>) -> Result<ClientTls, ClientError> {
    let (host, port) = (url.host.clone(), url.port);
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| ClientError::ConnectTimeout {
            host: host.clone(),
            port,
        })?
        .map_err(|source| ClientError::Connect {
            host: host.clone(),
            port,
            source,
        })?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(format!("bad server name {host:?}")))?;
    let tls_error = |detail: String| ClientError::Tls {
        host: host.clone(),
        detail,
    };
    tokio::time::timeout(CONNECT_TIMEOUT, crate::tls::accept::connect(tls, name, tcp.compat()))
        .await
        .map_err(|_| tls_error("timed out".into()))?
        .map_err(|e| tls_error(e.to_string()))
}

/// The WebSocket upgrade with the token on an open TLS stream; the bytes after the 101 head.
async fn open_on(stream: &mut ClientTls, url: &GatewayUrl, target: &str, token: &str) -> Result<Vec<u8>, ClientError> {
    let key = ws::client_key(portcullis_core::secret::random::<16>()?);
    let path = format!("{}/v1/tunnel/{target}", url.prefix);
    let request = UpgradeRequest {
        path: &path,
        host: &url.authority(),
        key: &key,
        bearer: Some(token),
        user_agent: concat!("portcullis/", env!("CARGO_PKG_VERSION")),
        headers: &[],
    }
    .encode()
    .map_err(|e| ClientError::Url(format!("cannot build the request: {e}")))?;
    stream.write_all(&request).await?;
    stream.flush().await?;

    let limits = HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 64,
    };
    let mut buf = vec![0u8; limits.max_bytes];
    let mut filled = 0;
    let answer = loop {
        let n = tokio::time::timeout(CONNECT_TIMEOUT, stream.read(&mut buf[filled..]))
            .await
            .map_err(|_| ClientError::NoAnswer)??;
        if n == 0 {
            return Err(ClientError::NoAnswer);
        }
        filled += n;
        if let Some(answer) = http::upgrade_answer(&buf[..filled], &key, limits)? {
            break answer;
        }
    };
    match answer {
        UpgradeAnswer::Accepted { head_len } => Ok(buf[head_len..filled].to_vec()),
        UpgradeAnswer::Refused { status, head_len } => {
            // The body is a one-line reason; read what is there without waiting long.
            let mut body = buf[head_len..filled].to_vec();
            let mut more = [0u8; 512];
            while body.len() < 512 {
                match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut more)).await {
                    Ok(Ok(n)) if n > 0 => body.extend_from_slice(&more[..n]),
                    _ => break,
                }
            }
            Err(Refused {
                status,
                reason: http::reason_phrase(status),
                detail: http::refusal_detail(&body, 200),
            }
            .into())
        }
    }
}

/// Relays a raw stream through an open tunnel until both sides are done. When `stop` resolves
/// (e.g. OpenSSH sends its ProxyCommand SIGHUP on exit), the tunnel is closed cleanly.
pub async fn relay<R: AsyncRead + AsyncWrite + Unpin>(
    mut ws: ClientTls,
    leftover: Vec<u8>,
    mut raw: R,
    stop: impl std::future::Future<Output = ()>,
) -> End {
    let seed = portcullis_core::secret::random::<8>()
        .map(u64::from_ne_bytes)
        .unwrap_or(1);
    let mut relay = Relay::websocket(Role::Client, Limits::default(), BUFFER, seed);
    // The relay takes the record layer: records sealed and opened in its buffers, on the socket.
    let Some((records, plain, cipher)) = ws.detach() else {
        return End::PeerError("TLS writes still queued".into());
    };
    relay.start_tls(records, &[leftover, plain].concat(), &cipher);
    let ws = ws.socket_mut();
    let mut stop = std::pin::pin!(stop);
    let mut stopped = false;
    loop {
        let step = tokio::select! {
            step = futures_lite::future::poll_fn(|cx| relay::poll(&mut relay, cx, ws, &mut raw)) => Some(step),
            _ = &mut stop, if !stopped => None,
        };
        match step {
            Some(Step::Ended(end)) => return flushed(end, &mut raw).await,
            Some(Step::Closing) => break,
            None => {
                stopped = true;
                relay.close(CloseCode::NORMAL, EndReason::ClientClosed);
            }
        }
    }
    let rest = tokio::time::timeout(
        CLOSE_TIMEOUT,
        futures_lite::future::poll_fn(|cx| relay::poll(&mut relay, cx, ws, &mut raw)),
    )
    .await;
    let end = match rest {
        Ok(Step::Ended(end)) => end,
        _ => relay.abort(),
    };
    flushed(end, &mut raw).await
}

/// Flushes the local side before the tunnel is reported ended: tokio's stdout writes behind (a
/// write returns before its bytes reach the pipe), and `connect` exits right after, which lost
/// the last bytes a target sent (about one run in twenty of `echo hello | portcullis connect`).
async fn flushed<R: AsyncWrite + Unpin>(end: End, raw: &mut R) -> End {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, futures_lite::AsyncWriteExt::flush(raw)).await;
    end
}

/// How a tunnel's end reads from the client's side: the peer is the gateway, the raw side is
/// the local program. `None` for a clean end.
pub fn describe_end(end: &End) -> Option<String> {
    match end {
        End::PeerClosed(_) | End::RawClosed | End::Local(EndReason::ClientClosed) => None,
        End::PeerGone => Some("the gateway disconnected".into()),
        End::PeerError(e) => Some(format!("gateway error: {e}")),
        End::RawError(e) => Some(format!("local error: {e}")),
        End::Protocol(e) => Some(format!("the gateway broke the protocol: {e}")),
        End::Local(reason) => Some(reason.to_string()),
        End::CloseTimeout(_) => Some("the close did not finish in time".into()),
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
    token: &TokenSource,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(), ClientError> {
    let token = token.token(url, target, &tls).await?;
    let (ws, leftover) = open(url, target, &token, tls).await?;
    let end = relay(ws, leftover, Stdio::new(), exit_signal()).await;
    match describe_end(&end) {
        None => Ok(()),
        Some(why) => Err(ClientError::Ended(why)),
    }
}

/// Where a tunnel's token comes from: given, or fetched for each tunnel with the login credential
/// of `portcullis login` (gateway-signed tokens are short-lived).
#[derive(Clone)]
pub enum TokenSource {
    Given(Arc<str>),
    Login(Arc<super::login::Login>),
}

impl TokenSource {
    pub async fn token(
        &self,
        url: &GatewayUrl,
        target: &str,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Arc<str>, ClientError> {
        match self {
            TokenSource::Given(t) => Ok(t.clone()),
            TokenSource::Login(login) => login.access_token(url, target, tls.clone()).await.map(Into::into),
        }
    }
}

/// `portcullis tunnel`: every connection to `local` gets its own tunnel to the target.
pub async fn tunnel(
    url: GatewayUrl,
    target: String,
    token: TokenSource,
    tls: Arc<rustls::ClientConfig>,
    local: std::net::SocketAddr,
) -> Result<(), ClientError> {
    let listener = tokio::net::TcpListener::bind(local).await?;
    let bound = listener.local_addr()?;
    eprintln!(
        "portcullis: forwarding {bound} -> {target} via {}:{}",
        url.host, url.port
    );
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve_tunnel(listener, url, target, token, tls, ctrl_c).await
}

/// Tunnels each connection `listener` accepts to `target`, until `stop` resolves.
pub async fn serve_tunnel(
    listener: tokio::net::TcpListener,
    url: GatewayUrl,
    target: String,
    token: TokenSource,
    tls: Arc<rustls::ClientConfig>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ClientError> {
    let url = Arc::new(url);
    let target: Arc<str> = target.into();
    let mut stop = std::pin::pin!(stop);
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
                    let opened = match token.token(&url, &target, &tls).await {
                        Ok(token) => open(&url, &target, &token, tls).await,
                        Err(e) => Err(e),
                    };
                    match opened {
                        Ok((ws, leftover)) => {
                            let end = relay(ws, leftover, sock.compat(), std::future::pending()).await;
                            let why = describe_end(&end).unwrap_or_else(|| "closed".into());
                            eprintln!("portcullis: {peer}: {why}");
                        }
                        Err(e) => eprintln!("portcullis: {peer}: {e}"),
                    }
                });
            }
            _ = &mut stop => return Ok(()),
        }
    }
}

/// The RDP client to start for `portcullis rdp`: a command line template with `{addr}` (the local
/// tunnel), given or found on the PATH (FreeRDP). `None`: none found.
pub fn rdp_client(given: Option<&str>) -> Option<Vec<String>> {
    let template = match given {
        Some(t) => t.to_owned(),
        None => {
            let path = std::env::var_os("PATH")?;
            let found = ["xfreerdp3", "xfreerdp", "wlfreerdp3", "wlfreerdp"]
                .into_iter()
                .find(|p| std::env::split_paths(&path).any(|d| d.join(p).is_file()))?;
            format!("{found} /v:{{addr}}")
        }
    };
    let words: Vec<String> = template.split_whitespace().map(str::to_owned).collect();
    (!words.is_empty()).then_some(words)
}

/// `portcullis rdp`: a local tunnel on `local` (a free loopback port by default) and the local RDP
/// client pointed at it; the tunnel ends with the client. Without a client, the address to use is
/// printed and the tunnel runs until Ctrl-C.
pub async fn rdp(
    url: GatewayUrl,
    target: String,
    token: TokenSource,
    tls: Arc<rustls::ClientConfig>,
    local: std::net::SocketAddr,
    client: Option<Vec<String>>,
) -> Result<(), ClientError> {
    let listener = tokio::net::TcpListener::bind(local).await?;
    let addr = listener.local_addr()?;
    let Some(words) = client else {
        println!("RDP {target}: point your RDP client (mstsc, Remmina, FreeRDP) at {addr}; Ctrl-C ends the tunnel.");
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        return serve_tunnel(listener, url, target, token, tls, ctrl_c).await;
    };
    let args: Vec<String> = words.iter().map(|w| w.replace("{addr}", &addr.to_string())).collect();
    eprintln!("portcullis: RDP {target} on {addr}: starting {}", args[0]);
    let mut child = tokio::process::Command::new(&args[0])
        .args(&args[1..])
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ClientError::Api(format!("cannot start {}: {e}", args[0])))?;
    let exited = async move {
        let _ = child.wait().await;
    };
    serve_tunnel(listener, url, target, token, tls, exited).await
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
