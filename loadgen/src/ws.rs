//! The load generator's own WebSocket client session, on the sans-IO codec of
//! `portcullis-protocols` (decoder in the client role, `encode_header` + `apply_mask`).
//!
//! A session is driven from one task by `poll_*` calls in a `poll_fn` (as the gateway's relay
//! does), so the TLS stream is never split: the scenario polls output and input in one loop.
//! Pings are answered and a peer Close is echoed automatically.
//!
//! On the direct path (`tcp://`) the same session type runs without WebSocket: no upgrade, data
//! goes out and comes in as raw bytes, and closing is a FIN (shutdown) answered by the target's
//! FIN, so every scenario runs unchanged against the bare target.

use crate::endpoint::Endpoint;
use crate::peers::SessionRequest;
use crate::rdgateway::{self, Unpacker};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::ws::{self, CloseCode, Decoder, Event, Limits, OpCode, Role, MAX_HEADER_LEN};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

type TlsStream = futures_rustls::client::TlsStream<Compat<TcpStream>>;

/// The byte transport under the WebSocket: plain TCP (`ws://`) or TLS (`wss://`).
pub enum Stream {
    Plain(Compat<TcpStream>),
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Why a session could not be opened, with the step that failed.
#[derive(Debug, Clone)]
pub struct OpenError {
    /// `tcp`, `tls`, `upgrade`, (RD Gateway) `channel` or (a peer's per-session token) `token`.
    pub step: &'static str,
    pub message: String,
    /// The HTTP status when the server answered something other than 101.
    pub status: Option<u16>,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.step, self.message)
    }
}

impl std::error::Error for OpenError {}

fn open_error(step: &'static str, message: impl std::fmt::Display) -> OpenError {
    OpenError {
        step,
        message: message.to_string(),
        status: None,
    }
}

/// How long each step of opening took.
#[derive(Clone, Copy, Debug)]
pub struct OpenTimes {
    pub tcp: Duration,
    pub tls: Option<Duration>,
    /// The TLS handshake resumed an earlier session (no certificate, no signature).
    pub tls_resumed: bool,
    /// Request sent to 101 received: for Portcullis this includes the token check and the target
    /// connect, which happen before the 101. RD Gateway: request sent to CHANNEL_RESPONSE
    /// received (the token check and target connect come with the control phase after the 101).
    /// None on the direct path (`tcp://`).
    pub upgrade: Option<Duration>,
}

/// Connects TCP, from `source` if given. With a source address the port is chosen at connect time
/// (IP_BIND_ADDRESS_NO_PORT), so each source address has the whole ephemeral range per destination.
pub async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr).await;
    };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let one: libc::c_int = 1;
        // SAFETY: a valid socket fd and a c_int option value of the right size. (rustix has no
        // wrapper for IP_BIND_ADDRESS_NO_PORT.)
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sock.bind(SocketAddr::new(ip, 0))?;
    sock.connect(addr).await
}

/// Opens session number `i` (which picks its source address): TCP, TLS, WebSocket upgrade, and on
/// the RD Gateway path the control phase up to the open channel.
pub async fn open(ep: &Endpoint, i: u64, buf_size: usize) -> Result<(WsConn, OpenTimes), OpenError> {
    let limit = ep.open_timeout;
    // A peer's per-session token is made before the clock starts (it is the client's work).
    let session = ep
        .session_request()
        .map_err(|e| open_error("token", format!("{e:#}")))?;
    let t0 = Instant::now();
    let tcp = tokio::time::timeout(limit, connect_tcp(ep.addr, ep.source(i)))
        .await
        .map_err(|_| open_error("tcp", "timed out"))?
        .map_err(|e| open_error("tcp", e))?;
    let _ = tcp.set_nodelay(true);
    let t1 = Instant::now();
    let (stream, tls, tls_resumed) = match &ep.tls {
        Some((connector, name)) => {
            let s = tokio::time::timeout(limit, connector.connect(name.clone(), tcp.compat()))
                .await
                .map_err(|_| open_error("tls", "timed out"))?
                .map_err(|e| {
                    let hint = if e.to_string().contains("certificate") {
                        " (a self-signed gateway needs --insecure, or --ca with its CA certificate)"
                    } else {
                        ""
                    };
                    open_error("tls", format!("{e}{hint}"))
                })?;
            let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            (Stream::Tls(Box::new(s)), Some(t1.elapsed()), resumed)
        }
        None => (Stream::Plain(tcp.compat()), None, false),
    };
    let tcp = t1 - t0;
    if ep.url.raw {
        return Ok((
            WsConn::raw(stream, buf_size),
            OpenTimes {
                tcp,
                tls,
                tls_resumed,
                upgrade: None,
            },
        ));
    }
    let t2 = Instant::now();
    let mut conn = WsConn::new(stream, buf_size);
    tokio::time::timeout(limit, conn.handshake(ep, session.as_ref()))
        .await
        .map_err(|_| open_error("upgrade", "timed out"))??;
    if let Some(channel) = &ep.rd_gateway {
        tokio::time::timeout(limit, rdgateway::open_channel(&mut conn, channel))
            .await
            .map_err(|_| open_error("channel", "timed out"))?
            .map_err(|e| open_error("channel", e))?;
    }
    Ok((
        conn,
        OpenTimes {
            tcp,
            tls,
            tls_resumed,
            upgrade: Some(t2.elapsed()),
        },
    ))
}

/// What one `poll_input` call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Bytes were read and decoded (data, if any, went to the callback).
    Progress,
    /// The peer sent Close (with this code); our Close is queued if it was not sent yet.
    Closed(Option<u16>),
    /// The transport ended.
    Eof,
}

impl Input {
    /// The error a scenario reports when input ended its session (anything but `Progress`).
    pub fn ended(input: io::Result<Input>) -> io::Error {
        match input {
            Ok(Input::Closed(code)) => io::Error::other(format!(
                "the server closed the session (code {})",
                code.map_or("none".into(), |c| c.to_string())
            )),
            Ok(Input::Eof) => io::Error::other("the connection ended"),
            Ok(Input::Progress) => io::Error::other("no progress"),
            Err(e) => e,
        }
    }
}

/// How a graceful close went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Close frames exchanged and the server closed the connection.
    Clean,
    /// Close frames exchanged, but the connection stayed open until the time limit.
    NoEof,
    /// No Close from the server: this went wrong.
    Failed(String),
}

pub struct WsConn {
    stream: Stream,
    /// Direct path: raw bytes, no frames; our "Close" is a FIN, the peer's is its FIN.
    raw: bool,
    /// Raw mode: our FIN was sent.
    shut_down: bool,
    decoder: Decoder,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    needs_flush: bool,
    rng: u64,
    close_sent: bool,
    peer_close: Option<Option<u16>>,
    eof: bool,
    /// RD Gateway path: payload travels in TSGU DATA packets (see `rdgateway`).
    rdg: Option<Box<Unpacker>>,
}

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh random seed: std's hasher keys come from the OS and differ per `RandomState`.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(SEED_COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// SplitMix64: fast, and random enough for mask keys and handshake nonces.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mask_key(rng: &mut u64) -> [u8; 4] {
    (splitmix(rng) as u32).to_ne_bytes()
}

impl WsConn {
    pub fn new(stream: Stream, buf_size: usize) -> WsConn {
        WsConn {
            stream,
            raw: false,
            shut_down: false,
            decoder: Decoder::new(
                Role::Client,
                Limits {
                    max_frame_payload: 1 << 30,
                    max_message: 1 << 50,
                },
            ),
            rbuf: vec![0u8; buf_size.max(512)].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
            needs_flush: false,
            rng: random_seed(),
            close_sent: false,
            peer_close: None,
            eof: false,
            rdg: None,
        }
    }

    /// A session on the direct path: the bytes of `stream` are the payload (no upgrade, no frames).
    pub fn raw(stream: Stream, buf_size: usize) -> WsConn {
        WsConn {
            raw: true,
            ..WsConn::new(stream, buf_size)
        }
    }

    /// A direct-path (`tcp://`) session without WebSocket framing.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// The TCP stream of an untouched direct-path session (nothing read, queued or closed yet), for
    /// clients that speak to the target themselves (`ssh`); otherwise the session back.
    pub fn into_tcp(self) -> Result<TcpStream, Box<WsConn>> {
        let untouched = self.raw && self.wbuf.is_empty() && self.rstart == self.rend && !self.close_sent && !self.eof;
        match self.stream {
            Stream::Plain(s) if untouched => Ok(s.into_inner()),
            stream => Err(Box::new(WsConn { stream, ..self })),
        }
    }

    /// Sends the upgrade request and reads the answer; keeps bytes after the head for decoding.
    async fn handshake(&mut self, ep: &Endpoint, session: Option<&SessionRequest>) -> Result<(), OpenError> {
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&splitmix(&mut self.rng).to_le_bytes());
        nonce[8..].copy_from_slice(&splitmix(&mut self.rng).to_le_bytes());
        let key = ws::client_key(nonce);
        let request = ep.request_head(&key, session);
        let io_err = |e: io::Error| open_error("upgrade", e);
        self.stream.write_all(&request).await.map_err(io_err)?;
        self.stream.flush().await.map_err(io_err)?;
        let limits = HeadLimits {
            max_bytes: 16 * 1024,
            max_headers: 64,
        };
        let mut buf = vec![0u8; limits.max_bytes];
        let mut filled = 0;
        let answer = loop {
            let n = self.stream.read(&mut buf[filled..]).await.map_err(io_err)?;
            if n == 0 {
                return Err(open_error(
                    "upgrade",
                    if filled == 0 {
                        "connection closed before any answer".to_string()
                    } else {
                        format!(
                            "connection closed in the middle of the answer: {:?}",
                            String::from_utf8_lossy(&buf[..filled.min(100)])
                        )
                    },
                ));
            }
            filled += n;
            match http::upgrade_answer(&buf[..filled], &key, limits) {
                Ok(Some(answer)) => break answer,
                Ok(None) => {}
                Err(e) => return Err(open_error("upgrade", e)),
            }
        };
        let head_len = match answer {
            http::UpgradeAnswer::Accepted { head_len } => head_len,
            http::UpgradeAnswer::Refused { status, head_len } => {
                // The body is a short reason; take what is there and what follows within a moment.
                let mut body = buf[head_len..filled].to_vec();
                let mut more = [0u8; 512];
                while body.len() < 512 {
                    match tokio::time::timeout(Duration::from_millis(200), self.stream.read(&mut more)).await {
                        Ok(Ok(n)) if n > 0 => body.extend_from_slice(&more[..n]),
                        _ => break,
                    }
                }
                let detail = http::refusal_detail(&body, 120);
                let reason = http::reason_phrase(status);
                return Err(OpenError {
                    step: "upgrade",
                    message: if detail.is_empty() {
                        format!("{status} {reason}")
                    } else {
                        format!("{status} {reason} ({detail})")
                    },
                    status: Some(status),
                });
            }
        };
        let rest = &buf[head_len..filled];
        if rest.len() > self.rbuf.len() {
            self.rbuf = vec![0u8; rest.len()].into_boxed_slice();
        }
        self.rbuf[..rest.len()].copy_from_slice(rest);
        self.rstart = 0;
        self.rend = rest.len();
        Ok(())
    }

    fn mask_key(&mut self) -> [u8; 4] {
        mask_key(&mut self.rng)
    }

    /// Queues `payload` for the target: one masked binary frame (raw mode: the bytes themselves;
    /// RD Gateway: DATA packets, one per frame).
    pub fn queue_binary(&mut self, payload: &[u8]) {
        if self.raw {
            self.wbuf.extend_from_slice(payload);
            return;
        }
        if self.rdg.is_some() {
            let rng = &mut self.rng;
            rdgateway::frame_data(&mut self.wbuf, payload, || mask_key(rng));
            return;
        }
        self.queue_message(payload);
    }

    /// Queues one masked binary frame carrying exactly `payload`.
    pub fn queue_message(&mut self, payload: &[u8]) {
        let key = self.mask_key();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let n = ws::encode_header(&mut hdr, true, OpCode::Binary, payload.len() as u64, Some(key));
        self.wbuf.extend_from_slice(&hdr[..n]);
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        ws::apply_mask(&mut self.wbuf[start..], key, 0);
    }

    /// Whole masked binary frames carrying `payload` (RD Gateway: as DATA packets), for sending
    /// many times with `poll_write_raw` (bulk senders skip re-masking every frame).
    pub fn prebuilt_frame(&mut self, payload: &[u8]) -> Vec<u8> {
        if self.raw {
            return payload.to_vec();
        }
        if self.rdg.is_some() {
            let mut frames = Vec::with_capacity(payload.len() + 64);
            let rng = &mut self.rng;
            rdgateway::frame_data(&mut frames, payload, || mask_key(rng));
            return frames;
        }
        let key = self.mask_key();
        let mut frame = vec![0u8; MAX_HEADER_LEN];
        let n = ws::encode_header(&mut frame, true, OpCode::Binary, payload.len() as u64, Some(key));
        frame.truncate(n);
        frame.extend_from_slice(payload);
        ws::apply_mask(&mut frame[n..], key, 0);
        frame
    }

    /// RD Gateway: the control phase starts; the gateway's packets are taken apart from now on.
    pub fn start_rd_gateway(&mut self) {
        self.rdg = Some(Box::default());
    }

    /// RD Gateway: the channel is open; what is sent and received from now on is DATA.
    pub fn rd_gateway_open(&mut self) {
        if let Some(u) = self.rdg.as_mut() {
            u.set_open();
        }
    }

    /// RD Gateway, while opening: the next whole control packet the gateway sent.
    pub fn rd_gateway_packet(&mut self) -> Option<Vec<u8>> {
        self.rdg.as_mut()?.next_control()
    }

    /// Queues our Close frame (once); raw mode: a FIN after the queued bytes.
    pub fn queue_close(&mut self, code: CloseCode) {
        if self.raw {
            self.close_sent = true;
            return;
        }
        if !self.close_sent {
            let key = self.mask_key();
            ws::encode_close(&mut self.wbuf, code, "", Some(key));
            self.close_sent = true;
        }
    }

    /// Frames are queued and not yet all written.
    pub fn has_queued(&self) -> bool {
        self.wpos < self.wbuf.len()
    }

    /// Queued frames or unflushed bytes remain (or, raw, a FIN to send).
    pub fn has_output(&self) -> bool {
        self.has_queued() || self.needs_flush || (self.raw && self.close_sent && !self.shut_down)
    }

    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The peer's Close, once received.
    pub fn peer_close(&self) -> Option<Option<u16>> {
        self.peer_close
    }

    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Writes all queued frames, then flushes.
    pub fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.wbuf[self.wpos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
            self.needs_flush = true;
        }
        self.wbuf.clear();
        self.wpos = 0;
        if self.needs_flush {
            ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
            self.needs_flush = false;
        }
        if self.raw && self.close_sent && !self.shut_down {
            ready!(Pin::new(&mut self.stream).poll_close(cx))?;
            self.shut_down = true;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes raw bytes (pieces of prebuilt frames). Only between whole frames may queued frames
    /// go out, so call this only when `has_queued()` is false or a frame is half written.
    pub fn poll_write_raw(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, data))?;
        if n == 0 && !data.is_empty() {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.needs_flush = true;
        Poll::Ready(Ok(n))
    }

    /// Reads once (if nothing is buffered) and decodes everything buffered; data chunks go to
    /// `on_data`. Pings are answered (queued) and a Close is echoed (queued).
    pub fn poll_input<F: FnMut(&[u8])>(&mut self, cx: &mut Context<'_>, mut on_data: F) -> Poll<io::Result<Input>> {
        if self.eof {
            return Poll::Ready(Ok(Input::Eof));
        }
        if let Some(u) = self.rdg.as_mut().filter(|u| u.is_open() && !u.early.is_empty()) {
            // DATA that came with the end of the control phase.
            on_data(&std::mem::take(&mut u.early));
            return Poll::Ready(Ok(Input::Progress));
        }
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
            let n = match ready!(Pin::new(&mut self.stream).poll_read(cx, &mut self.rbuf)) {
                Ok(n) => n,
                // rustls reports a TCP FIN without close_notify this way.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if n == 0 {
                self.eof = true;
                return Poll::Ready(Ok(Input::Eof));
            }
            if self.raw {
                on_data(&self.rbuf[..n]);
                return Poll::Ready(Ok(Input::Progress));
            }
            self.rend = n;
        }
        while self.rstart < self.rend {
            let base = self.rstart;
            let decoded = self
                .decoder
                .decode(&mut self.rbuf[base..self.rend])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame from the server: {e}")))?;
            self.rstart += decoded.consumed;
            match decoded.event {
                Some(Event::Data { range, .. }) if !range.is_empty() => {
                    let data = &self.rbuf[base + range.start..base + range.end];
                    match self.rdg.as_mut() {
                        Some(u) => u.feed(data, &mut on_data)?,
                        None => on_data(data),
                    }
                }
                Some(Event::Ping(p)) if !self.close_sent => {
                    let key = self.mask_key();
                    ws::encode_control(&mut self.wbuf, OpCode::Pong, p.as_bytes(), Some(key));
                }
                Some(Event::Close { code, .. }) => {
                    let code = code.map(|c| c.0);
                    self.peer_close = Some(code);
                    self.rstart = self.rend;
                    self.queue_close(match code {
                        Some(c) if CloseCode(c).is_valid_on_wire() => CloseCode(c),
                        _ => CloseCode::NORMAL,
                    });
                    return Poll::Ready(Ok(Input::Closed(code)));
                }
                // Empty data chunks, pongs, pings after our Close, header bytes only.
                _ => {}
            }
        }
        Poll::Ready(Ok(Input::Progress))
    }

    /// Finishes a session: sends Close (unless sent), keeps reading (and discarding) until the
    /// server's Close and its end of the connection, within `limit`.
    pub async fn close(&mut self, limit: Duration) -> CloseOutcome {
        self.queue_close(CloseCode::NORMAL);
        let r = tokio::time::timeout(
            limit,
            poll_fn(|cx| loop {
                let out = if self.has_output() {
                    self.poll_output(cx)
                } else {
                    Poll::Ready(Ok(()))
                };
                if let Poll::Ready(Err(e)) = out {
                    return Poll::Ready(Err(e));
                }
                match self.poll_input(cx, |_| {}) {
                    Poll::Ready(Ok(Input::Progress)) | Poll::Ready(Ok(Input::Closed(_))) => continue,
                    Poll::Ready(Ok(Input::Eof)) => return Poll::Ready(Ok(())),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }),
        )
        .await;
        if self.raw {
            // Our FIN went out; the target's FIN (EOF) is its answer.
            return match r {
                Ok(Ok(())) => CloseOutcome::Clean,
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => CloseOutcome::Clean,
                Ok(Err(e)) => CloseOutcome::Failed(e.to_string()),
                Err(_) => CloseOutcome::Failed("no FIN from the target in time".into()),
            };
        }
        match (r, self.peer_close.is_some()) {
            (Ok(Ok(())), true) => CloseOutcome::Clean,
            (Err(_), true) => CloseOutcome::NoEof,
            (Ok(Ok(())), false) => CloseOutcome::Failed("connection ended without a Close frame".into()),
            (Ok(Err(e)), true) if self.eof || e.kind() == io::ErrorKind::ConnectionReset => CloseOutcome::Clean,
            (Ok(Err(e)), _) => CloseOutcome::Failed(e.to_string()),
            (Err(_), false) => CloseOutcome::Failed("no Close frame from the server in time".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_and_splitmix_moves() {
        assert_ne!(random_seed(), random_seed());
        let mut s = 1;
        let a = splitmix(&mut s);
        let b = splitmix(&mut s);
        assert_ne!(a, b);
    }
}
