//! The RD Gateway (`/remoteDesktopGateway/`, MS-TSGU): native RDP clients (mstsc, FreeRDP's `/g:`)
//! reach a configured RDP target with a Portcullis token as their gateway access token.
//!
//! 1. The request path chose the channel (`portcullis_core::rdgateway::channel_of`): a WebSocket
//!    (`RDG_OUT_DATA` upgraded), or one half of the HTTP transport's pair. The pair is joined
//!    here by its `RDG-Connection-Id` (`super::super::rdg_pairs`): the `RDG_OUT_DATA` connection
//!    runs the tunnel; the `RDG_IN_DATA` connection, on whatever core it landed, only decodes its
//!    chunked body and feeds the bytes to it over a bounded channel between cores.
//! 2. The control phase (`portcullis_core::rdgateway::Handshake`): handshake, tunnel create (the
//!    PAA cookie is checked), tunnel authorize, channel create (authorized by the policy), each
//!    answered with the protocol's packet, within the request timeout; a refusal answers with its
//!    error code and is audited.
//! 3. With the channel granted: the session place, the target connected, CHANNEL_RESPONSE, then
//!    the relay (`RdGateway` framing: DATA packets in place) under the session clock, audited
//!    with `via: rd_gateway`.

use crate::relay::Transport;
use crate::server::conn::{Conn, ReadEnd, Tls};
use crate::server::dial::dial;
use crate::server::handlers::tunnel::rdp_cookie;
use crate::server::rdg_pairs::{Feed, FeedEnd};
use crate::server::session::{self, Extras, StartError};
use crate::server::timeout;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::AsyncWriteExt;
use portcullis_core::audit::{EndReason, Ending};
use portcullis_core::policy::Grant;
use portcullis_core::rdgateway::{Channel, Handshake, Next};
use portcullis_core::relay::rdgateway::RdGateway;
use portcullis_core::relay::Relay;
use portcullis_protocols::rdp;
use portcullis_protocols::tsgu::{self, hresult, GatewayPacket};
use portcullis_protocols::ws::{self, CloseCode, Message, MessageAssembler, OpCode, Role};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

const PATH: &str = portcullis_core::route::RD_GATEWAY_PATH;

/// The seed the HTTP transport's `RDG_OUT_DATA` answer starts with ([MS-TSGU] 3.3.5.1: clients
/// read and skip it; FreeRDP expects 10 bytes).
const SEED_LEN: usize = 10;

/// The channel id in CHANNEL_RESPONSE: one channel per tunnel.
const CHANNEL_ID: u32 = 1;

pub async fn handle(conn: &mut Conn, channel: Channel, leftover: Vec<u8>) {
    match channel {
        Channel::WebSocket { accept } => {
            if !conn.accept_upgrade(&accept).await {
                return;
            }
            let inbound = Inbound::WebSocket(Box::new(WsPackets::new(conn, leftover)));
            tunnel(conn, inbound).await
        }
        Channel::Out { connection_id } => {
            let Some(feed) = crate::server::rdg_pairs::out_channel(conn, &connection_id).await else {
                return;
            };
            tunnel(conn, Inbound::Http(feed)).await
        }
        Channel::In { connection_id, chunked } => {
            crate::server::rdg_pairs::in_channel(conn, &connection_id, chunked, leftover).await
        }
    }
}

/// Where the client's packets come from.
enum Inbound {
    /// The WebSocket on this connection.
    WebSocket(Box<WsPackets>),
    /// The `RDG_IN_DATA` connection's body, fed across cores.
    Http(Feed),
}

/// The client's WebSocket during the control phase: whole messages, their payloads one stream.
struct WsPackets {
    assembler: MessageAssembler,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl WsPackets {
    fn new(conn: &Conn, leftover: Vec<u8>) -> Self {
        let limit = tsgu::MAX_PACKET_LEN as u64;
        let limits = ws::Limits {
            max_frame_payload: limit,
            max_message: limit,
        };
        let end = leftover.len();
        let mut buf = leftover;
        buf.resize(buf.len().max(conn.settings().buffer_size.min(16 * 1024)), 0);
        WsPackets {
            assembler: MessageAssembler::new(Role::Server, limits),
            buf,
            start: 0,
            end,
        }
    }
}

/// Why the control phase ended without a channel.
struct Failed {
    status: u16,
    reason: String,
    user: Option<String>,
}

impl Failed {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Failed {
            status,
            reason: reason.into(),
            user: None,
        }
    }
}

impl Inbound {
    /// Appends more of the client's packet stream to `pending`, before `deadline`.
    async fn more(&mut self, conn: &mut Conn, pending: &mut Vec<u8>, deadline: Instant) -> Result<(), Failed> {
        match self {
            Inbound::WebSocket(ws) => loop {
                while ws.start < ws.end {
                    let (used, msg) = ws
                        .assembler
                        .feed(&mut ws.buf[ws.start..ws.end])
                        .map_err(|e| Failed::new(400, format!("bad WebSocket framing: {e}")))?;
                    ws.start += used;
                    match msg {
                        Some(Message::Binary(bytes)) => {
                            pending.extend_from_slice(&bytes);
                            return Ok(());
                        }
                        Some(Message::Close { .. }) => {
                            return Err(Failed::new(400, "client closed during the handshake"))
                        }
                        Some(Message::Text(_)) => return Err(Failed::new(400, "RD Gateway packets are binary")),
                        Some(Message::Ping(_) | Message::Pong(_)) | None => {}
                    }
                }
                ws.start = 0;
                ws.end = match conn.read_until(deadline, &mut ws.buf, 0).await {
                    Ok(n) => n,
                    Err(ReadEnd::TimedOut) => return Err(Failed::new(408, "RD Gateway handshake timed out")),
                    Err(ReadEnd::Closed) => return Err(Failed::new(400, "client left during the handshake")),
                };
            },
            Inbound::Http(feed) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match timeout(left, feed.next()).await {
                    Some(Ok(bytes)) => {
                        pending.extend_from_slice(&bytes);
                        Ok(())
                    }
                    Some(Err(FeedEnd::Closed)) => Err(Failed::new(400, "client left during the handshake")),
                    Some(Err(FeedEnd::Refused(reason))) => Err(Failed::new(400, reason)),
                    None => Err(Failed::new(408, "RD Gateway handshake timed out")),
                }
            }
        }
    }

    /// Sends one of our packets.
    async fn send(&self, conn: &mut Conn, packet: &GatewayPacket<'_>) -> io::Result<()> {
        let bytes = packet.to_vec().map_err(io::Error::other)?;
        match self {
            Inbound::WebSocket(_) => conn.send_frame(OpCode::Binary, &bytes).await,
            Inbound::Http(_) => {
                let limit = conn.settings().close_timeout;
                let tls = &mut conn.tls;
                timeout(limit, async {
                    tls.write_all(&bytes).await?;
                    tls.flush().await
                })
                .await
                .unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
            }
        }
    }

    /// Ends a refused tunnel: the packet (if any), then the connection.
    async fn refuse(self, conn: &mut Conn, packet: Option<GatewayPacket<'_>>) {
        if let Some(packet) = packet {
            let _ = self.send(conn, &packet).await;
        }
        match self {
            Inbound::WebSocket(_) => conn.close_ws(CloseCode::POLICY, "rd_gateway_refused").await,
            Inbound::Http(_) => conn.send_and_close(&[], &[]).await,
        }
    }
}

/// Runs the control phase, then the session.
async fn tunnel(conn: &mut Conn, mut inbound: Inbound) {
    // The state this connection started with, shared: a clone of its settings would be carried
    // in the session's task for its whole life.
    let state = conn.state.clone();
    let settings = &state.policy.config.session;
    // Announced before the target is known: the shortest any RDP target has.
    let idle = conn
        .policy()
        .config
        .targets
        .values()
        .filter(|t| t.protocol == portcullis_core::config::Protocol::Rdp)
        .map(|t| t.idle_timeout(settings))
        .min()
        .unwrap_or(settings.idle_timeout);
    let idle_minutes = u32::try_from(idle.as_secs().div_ceil(60)).unwrap_or(u32::MAX);
    let mut handshake = Handshake::new(rand_tunnel_id(), idle_minutes);
    let deadline = Instant::now() + settings.request_timeout;
    let mut pending = Vec::new();
    let grant = loop {
        let decoded = match tsgu::decode_client(&pending) {
            Ok(Some((packet, len))) => Some((handshake.on_packet(packet, conn.policy(), unix_now()), len)),
            Ok(None) => None,
            Err(e) => {
                let mut failed = Failed::new(400, format!("malformed RD Gateway packet: {e}"));
                failed.user = handshake.user().map(str::to_owned);
                return fail(conn, inbound, failed, None).await;
            }
        };
        let Some((next, len)) = decoded else {
            if let Err(mut failed) = inbound.more(conn, &mut pending, deadline).await {
                failed.user = handshake.user().map(str::to_owned);
                return fail(conn, inbound, failed, None).await;
            }
            continue;
        };
        pending.drain(..len);
        if handshake.user().is_some() {
            // The token is checked: no longer an unauthenticated connection.
            conn.ticket.settled();
        }
        match next {
            Next::Reply(packet) => {
                if inbound.send(conn, &packet).await.is_err() {
                    return;
                }
            }
            Next::Refuse(packet, refusal) => {
                let failed = Failed {
                    status: refusal.status,
                    reason: refusal.reason,
                    user: refusal.user,
                };
                return fail(conn, inbound, failed, packet).await;
            }
            Next::Connect(grant) => break *grant,
        }
    };
    if !pending.is_empty() {
        let mut failed = Failed::new(400, "RD Gateway data before the channel opened");
        failed.user = Some(grant.user.clone());
        let packet = handshake.channel_failed(hresult::E_PROXY_INTERNALERROR);
        return fail(conn, inbound, failed, Some(packet)).await;
    }
    let (mut backend, audit) = match open(conn, &grant).await {
        Ok(opened) => opened,
        Err((code, failed)) => {
            let packet = handshake.channel_failed(code);
            return fail(conn, inbound, failed, Some(packet)).await;
        }
    };
    if let Err(e) = inbound.send(conn, &handshake.channel_opened(CHANNEL_ID)).await {
        let ending = Ending::with_detail(EndReason::ClientError, e.to_string());
        return audit.finish(ending, Default::default(), Extras::default());
    }
    tracing::debug!(session = audit.id(), client_name = ?handshake.client_name(), "RD Gateway channel open");
    let target = audit.grant().target.clone();
    let clock = session::clock_settings(&target, settings, true);
    let watch = session::Watch::new(&conn.tracker, &conn.shared, &audit, settings);
    let (end, counters, rdp_cookie) = match inbound {
        Inbound::WebSocket(ws) => {
            let limits = conn.policy().config.limits.websocket();
            let mut relay = Relay::new(RdGateway::new(limits), settings.buffer_size);
            // The client's X.224 Connection Request names the RDP user (audited).
            relay.capture_first(rdp::MAX_X224_LEN);
            let early = &ws.buf[ws.start..ws.end];
            let end = session::relay_client(
                &mut relay,
                &mut conn.tls,
                early,
                &mut backend,
                clock,
                &watch,
                audit.id(),
            )
            .await;
            (end, relay.counters(), rdp_cookie(relay.captured()))
        }
        Inbound::Http(feed) => {
            let mut relay = Relay::new(RdGateway::plain(), settings.buffer_size);
            relay.capture_first(rdp::MAX_X224_LEN);
            let mut pair = Pair {
                feed,
                chunk: Vec::new(),
                at: 0,
                out: &mut conn.tls,
            };
            let end = session::drive(&mut relay, &mut pair, &mut backend, clock, &watch, audit.id()).await;
            (end, relay.counters(), rdp_cookie(relay.captured()))
        }
    };
    let extras = Extras {
        rdp_cookie,
        recording: None,
    };
    audit.finish(end.ending(), counters, extras);
}

/// Takes the user's session place and connects to the target; the session's audit starts.
async fn open(
    conn: &mut Conn,
    grant: &Grant,
) -> Result<(crate::server::socket::Socket, session::SessionAudit), (u32, Failed)> {
    let failed = |status: u16, reason: &str| {
        let mut f = Failed::new(status, reason);
        f.user = Some(grant.user.clone());
        f
    };
    if conn.shared.store_refuses() {
        // Fail closed: without the fleet store this node cannot know what the fleet revoked.
        return Err((
            hresult::E_PROXY_INTERNALERROR,
            failed(503, "the state store is unavailable"),
        ));
    }
    if let Err(status) = conn.spend_single_use(grant).await {
        let (code, reason) = match status {
            403 => (
                hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
                "single-use token used already",
            ),
            _ => (hresult::E_PROXY_INTERNALERROR, "the state store is unavailable"),
        };
        return Err((code, failed(status, reason)));
    }
    let slot = conn.reserve_session(grant).await.map_err(|e| {
        (
            tsgu::hresult::HR_MAXCONNECTIONSREACHED,
            failed(e.status(), &e.to_string()),
        )
    })?;
    let settings = conn.settings();
    let backend = dial(&grant.target, settings.connect_timeout, &conn.shared.pools)
        .await
        .map_err(|e| {
            let reason = format!("target unreachable: {e}");
            (hresult::E_PROXY_TS_CONNECTFAILED, failed(502, &reason))
        })?;
    let audit = conn.start_session(grant.clone(), slot).map_err(|e| {
        let status = if matches!(e, StartError::AuditUnavailable) {
            503
        } else {
            500
        };
        (hresult::E_PROXY_INTERNALERROR, failed(status, e.public()))
    })?;
    Ok((crate::server::socket::Socket::new(backend), audit))
}

/// Audits a refusal, answers it (its packet, if any) and ends the connection.
async fn fail(conn: &mut Conn, inbound: Inbound, failed: Failed, packet: Option<GatewayPacket<'_>>) {
    conn.deny(PATH, failed.status, &failed.reason, failed.user.as_deref());
    inbound.refuse(conn, packet).await;
}

/// The HTTP transport's two halves as one stream for the relay: reads from the `RDG_IN_DATA`
/// feed, writes to this (`RDG_OUT_DATA`) connection.
struct Pair<'a> {
    feed: Feed,
    /// The feed's current chunk, `at` bytes of it read.
    chunk: Vec<u8>,
    at: usize,
    out: &'a mut Tls,
}

impl AsyncRead for Pair<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        while this.at == this.chunk.len() {
            match this.feed.poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(chunk)) => {
                    this.chunk = chunk;
                    this.at = 0;
                }
                Poll::Ready(Err(FeedEnd::Closed)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Err(FeedEnd::Refused(reason))) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason)))
                }
            }
        }
        let n = buf.len().min(this.chunk.len() - this.at);
        buf[..n].copy_from_slice(&this.chunk[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Pair<'_> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.out).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.out).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.out).poll_close(cx)
    }
}

impl Transport for Pair<'_> {
    fn begin_close(&mut self) {
        self.out.begin_close();
    }
}

/// The `RDG_OUT_DATA` answer of the HTTP transport: `200`, a body that lasts as long as the
/// connection (no length), and the seed.
pub fn out_channel_answer() -> Vec<u8> {
    let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n".to_vec();
    let seed = portcullis_core::secret::random::<SEED_LEN>().unwrap_or_default();
    answer.extend_from_slice(&seed);
    answer
}

fn rand_tunnel_id() -> u32 {
    u32::from_le_bytes(portcullis_core::secret::random::<4>().unwrap_or_default())
}

fn unix_now() -> u64 {
    portcullis_core::keys::unix_now()
}
