//! One client connection: TLS handshake, one HTTP request head, then an answer or a tunnel.

use super::request::{self, Decision};
use super::socket::Socket;
use super::{Shared, State, Tracker};
use crate::audit::{now_rfc3339, DenialRecord, SessionRecord};
use crate::config::Protocol;
use crate::config::{SessionSettings, Target};
use crate::relay::{End, Relay, Step};
use futures_lite::{AsyncReadExt, AsyncWriteExt, Future};
use glommio::net::TcpStream;
use portcullis_protocols::token::Claims;
use portcullis_protocols::ws::{self, CloseCode, Role};
use portcullis_protocols::{http, rdp};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) type Tls = futures_rustls::server::TlsStream<Socket>;

/// `None` if `fut` did not finish within `limit`.
pub async fn timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

pub async fn handle(stream: TcpStream, shared: Arc<Shared>, tracker: Rc<Tracker>) {
    let client = match stream.peer_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    // One snapshot of the configuration for the whole connection.
    let state = shared.state.load_full();
    let settings = &state.policy.config.session;
    let _ = stream.set_nodelay(true);
    let tls = match timeout(settings.handshake_timeout, state.acceptor.accept(Socket::new(stream))).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            tracing::debug!(%client, "TLS handshake failed: {e}");
            return;
        }
        None => {
            tracing::debug!(%client, "TLS handshake timed out");
            return;
        }
    };
    let mut conn = Conn {
        tls,
        client,
        state: &state,
        shared: &shared,
    };
    conn.serve(&tracker).await;
}

pub(super) struct Conn<'a> {
    pub(super) tls: Tls,
    pub(super) client: SocketAddr,
    pub(super) state: &'a State,
    pub(super) shared: &'a Shared,
}

impl Conn<'_> {
    async fn serve(&mut self, tracker: &Tracker) {
        let limits = &self.state.policy.config.limits;
        let settings = &self.state.policy.config.session;
        let mut buf = vec![0u8; limits.max_header_bytes];
        let mut filled = 0;
        let deadline = Instant::now() + settings.request_timeout;
        // Read until the head decides, within the request timeout (slowloris-proof).
        loop {
            match request::decide(&buf[..filled], &self.state.policy, unix_now()) {
                Decision::NeedMore => {}
                Decision::Respond { status, body, denied } => {
                    if let Some(reason) = denied {
                        self.deny(&path_of(&buf[..filled]), status, reason, None);
                    } else if status >= 400 {
                        tracing::debug!(client = %self.client, status, "bad request");
                    }
                    return self.respond(status, &body).await;
                }
                // The web and RDP paths run on the heap: their futures are large (the RDP one holds a
                // TLS client, ~9 KiB), and inline they would size every connection's task, so each
                // idle tunnel would carry them.
                Decision::Web { head_len, body_len } => {
                    return Box::pin(self.web(buf, filled, head_len, body_len, deadline, tracker)).await;
                }
                Decision::RdpUpgrade { accept, head_len } => {
                    let leftover = buf[head_len..filled].to_vec();
                    return Box::pin(self.rdp(accept, leftover, tracker)).await;
                }
                Decision::Tunnel {
                    target,
                    claims,
                    accept,
                    head_len,
                } => {
                    let path = path_of(&buf[..filled]);
                    // The head buffer is not kept for the session's lifetime.
                    let leftover = buf[head_len..filled].to_vec();
                    drop(buf);
                    return self.tunnel(path, target, claims, accept, &leftover, tracker).await;
                }
            }
            if filled == buf.len() {
                return self.respond(431, "request head too large\n").await;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.tls.read(&mut buf[filled..])).await {
                None => return self.respond(408, "request timeout\n").await,
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(n)) => filled += n,
            }
        }
    }

    /// The web app: read the (small, bounded) body, then answer or start a terminal.
    async fn web(
        &mut self,
        mut buf: Vec<u8>,
        mut filled: usize,
        head_len: usize,
        body_len: usize,
        deadline: Instant,
        tracker: &Tracker,
    ) {
        let total = head_len + body_len;
        if buf.len() < total {
            buf.resize(total, 0);
        }
        while filled < total {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.tls.read(&mut buf[filled..])).await {
                None => return self.respond(408, "request timeout\n").await,
                Some(Ok(0)) | Some(Err(_)) => return,
                Some(Ok(n)) => filled += n,
            }
        }
        let limits = &self.state.policy.config.limits;
        let head_limits = http::HeadLimits {
            max_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
        };
        let Ok(Some(head)) = http::parse_head(&buf[..head_len], head_limits) else {
            return;
        };
        let action = crate::web::api::handle(
            &head,
            &buf[head_len..total],
            self.client,
            &self.state.policy,
            &self.shared.web,
        )
        .await;
        match action {
            crate::web::api::Action::Respond(resp) => {
                if resp.status >= 400 && head.path.starts_with("/v1/") {
                    let reason = String::from_utf8_lossy(&resp.body).into_owned();
                    self.deny(head.path, resp.status, reason, None);
                }
                let bytes = resp.to_bytes();
                self.send_and_close(&bytes).await
            }
            crate::web::api::Action::Terminal(start) => {
                let leftover = buf[total..filled].to_vec();
                self.terminal(*start, leftover, tracker).await
            }
        }
    }

    /// Writes `bytes`, then TLS close_notify and FIN, all within the close timeout.
    pub(super) async fn send_and_close(&mut self, bytes: &[u8]) {
        let close = self.state.policy.config.session.close_timeout;
        let tls = &mut self.tls;
        let _ = timeout(close, async {
            tls.write_all(bytes).await?;
            tls.get_mut().1.send_close_notify();
            tls.close().await
        })
        .await;
    }

    /// Sends a complete response and closes the connection (TLS close_notify, then FIN).
    pub(super) async fn respond(&mut self, status: u16, body: &str) {
        self.send_and_close(&http::response(status, &[], body)).await
    }

    /// One unmasked WebSocket frame from the gateway, written and flushed within the close timeout.
    pub(super) async fn send_frame(&mut self, opcode: ws::OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = vec![0u8; ws::MAX_HEADER_LEN];
        let n = ws::encode_header(&mut frame, true, opcode, payload.len() as u64, None);
        frame.truncate(n);
        frame.extend_from_slice(payload);
        let limit = self.state.policy.config.session.close_timeout;
        let tls = &mut self.tls;
        timeout(limit, async {
            tls.write_all(&frame).await?;
            tls.flush().await
        })
        .await
        .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Sends a WebSocket Close and closes the connection.
    pub(super) async fn close_ws(&mut self, code: ws::CloseCode, reason: &str) {
        let mut close = Vec::new();
        ws::encode_close(&mut close, code, reason, None);
        self.send_and_close(&close).await
    }

    pub(super) fn deny(&self, path: &str, status: u16, reason: String, user: Option<String>) {
        tracing::info!(client = %self.client, path, status, reason = %reason, "request denied");
        self.shared.audit.record(&DenialRecord {
            event: "denied",
            time: now_rfc3339(),
            client: self.client.to_string(),
            path: path.to_owned(),
            status,
            reason,
            user,
        });
    }

    async fn tunnel(
        &mut self,
        path: String,
        target: Box<Target>,
        claims: Claims,
        accept: Vec<u8>,
        leftover: &[u8],
        tracker: &Tracker,
    ) {
        let settings = &self.state.policy.config.session;
        let mut backend = match connect(&target, settings.connect_timeout).await {
            Ok(b) => b,
            Err(e) => {
                self.deny(&path, 502, format!("target unreachable: {e}"), Some(claims.sub.clone()));
                return self.respond(502, "target unreachable\n").await;
            }
        };
        let sent = timeout(settings.close_timeout, async {
            self.tls.write_all(&accept).await?;
            self.tls.flush().await
        })
        .await;
        if !matches!(sent, Some(Ok(()))) {
            return;
        }

        let session = session_id();
        let started = now_rfc3339();
        tracing::info!(%session, user = %claims.sub, client = %self.client, target = %target.name, "session started");
        let limits = &self.state.policy.config.limits;
        let ws_limits = ws::Limits {
            max_frame_payload: limits.max_frame_size,
            max_message: limits.max_message_size,
        };
        let mut relay = Relay::new(Role::Server, ws_limits, settings.buffer_size, leftover);
        if target.protocol == Protocol::Rdp {
            // Native RDP clients open with an X.224 Connection Request naming the user.
            relay.capture_first(rdp::MAX_X224_LEN);
        }
        let end = drive(&mut relay, &mut self.tls, &mut backend, settings, tracker).await;
        let rdp_cookie = match target.protocol {
            Protocol::Rdp => rdp_cookie(relay.captured()),
            _ => None,
        };
        let counters = relay.counters();
        tracing::info!(%session, ended = %end.label(), up = counters.peer_to_raw, down = counters.raw_to_peer, "session ended");
        self.shared.audit.record(&SessionRecord {
            event: "session",
            session,
            user: claims.sub,
            client: self.client.to_string(),
            target: target.name.clone(),
            protocol: target.protocol.to_string(),
            token_id: claims.jti,
            start: started,
            end: now_rfc3339(),
            bytes_client_to_target: counters.peer_to_raw,
            bytes_target_to_client: counters.raw_to_peer,
            ended: end.label(),
            rdp_cookie,
            recording: None,
            via: None,
        });
    }
}

/// The `mstshash` cookie of the X.224 Connection Request at the start of `first`, if whole.
fn rdp_cookie(first: &[u8]) -> Option<String> {
    let len = rdp::tpkt_len(first, rdp::MAX_X224_LEN).ok()??;
    rdp::parse_connection_request(first.get(..len)?).ok()?.cookie
}

/// The request path without its query string (which may hold a token), for logs.
fn path_of(buf: &[u8]) -> String {
    let line = buf.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    String::from_utf8_lossy(&path[..path.len().min(256)]).into_owned()
}

pub(super) fn unix_now() -> u64 {
    crate::keys::unix_now()
}

pub(super) async fn connect(target: &Target, limit: Duration) -> std::io::Result<TcpStream> {
    use std::io::{Error, ErrorKind};
    let addrs: Vec<SocketAddr> = match target.address.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        // Name resolution blocks, so it runs off the executor thread.
        Err(_) => {
            let name = target.address.clone();
            glommio::executor()
                .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(&name).map(|a| a.collect()))
                .await?
        }
    };
    let deadline = Instant::now() + limit;
    let mut last = Error::new(ErrorKind::NotFound, "no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, TcpStream::connect(addr)).await {
            Some(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Some(Err(e)) => last = Error::other(e.to_string()),
            None => return Err(Error::new(ErrorKind::TimedOut, "connect timed out")),
        }
    }
    Err(last)
}

/// Runs a relay under the session's clocks: idle timeout, max lifetime, pings to a silent peer,
/// a bound on closing, and the gateway's shutdown.
pub(super) async fn drive<R: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin>(
    relay: &mut Relay,
    tls: &mut Tls,
    backend: &mut R,
    s: &SessionSettings,
    tracker: &Tracker,
) -> End {
    enum Wake {
        Relay(Step),
        Tick,
        Shutdown,
    }
    let start = Instant::now();
    let lifetime = s.max_lifetime.map(|d| start + d);
    let mut close_by: Option<Instant> = None;
    let mut seen = relay.counters();
    let mut last_data = start;
    let mut ping_outstanding = false;
    loop {
        let now = Instant::now();
        if tracker.closing() && !relay.is_closing() {
            relay.close(CloseCode::GOING_AWAY, "gateway_shutdown");
        }
        if relay.is_closing() && close_by.is_none() {
            close_by = Some(now + s.close_timeout);
        }
        let wake_at = [
            Some(now + s.ping_interval),
            Some(last_data + s.idle_timeout),
            lifetime,
            close_by,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now);
        let shutdown = tracker.close_requested();
        let wake = futures_lite::future::or(
            futures_lite::future::poll_fn(|cx| relay.poll(cx, tls, backend).map(Wake::Relay)),
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(wake_at.saturating_duration_since(now)).await;
                    Wake::Tick
                },
                async {
                    if tracker.closing() {
                        return Wake::Shutdown;
                    }
                    shutdown.await;
                    Wake::Shutdown
                },
            ),
        )
        .await;
        let now = Instant::now();
        match wake {
            Wake::Relay(Step::Ended(end)) => return end,
            Wake::Relay(Step::Closing) => close_by = close_by.or(Some(now + s.close_timeout)),
            Wake::Shutdown => {}
            Wake::Tick => {
                if close_by.is_some_and(|t| now >= t) {
                    return relay.abort();
                }
                if lifetime.is_some_and(|t| now >= t) {
                    relay.close(CloseCode::POLICY, "max_lifetime");
                    continue;
                }
                let c = relay.counters();
                if c.peer_to_raw != seen.peer_to_raw || c.raw_to_peer != seen.raw_to_peer {
                    last_data = now;
                }
                if now.duration_since(last_data) >= s.idle_timeout {
                    relay.close(CloseCode::GOING_AWAY, "idle_timeout");
                } else if c.peer_reads != seen.peer_reads {
                    ping_outstanding = false;
                } else if ping_outstanding {
                    relay.close(CloseCode::GOING_AWAY, "ping_timeout");
                } else {
                    relay.ping();
                    ping_outstanding = true;
                }
                seen = c;
            }
        }
    }
}

pub(super) fn session_id() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
