//! One client connection: the TLS handshake, the request head, the decision of the core's request
//! path, then the route's handler. [`Conn`] is what every handler gets: the TLS stream, the
//! client's address, the configuration snapshot, and the helpers they share (answer and close,
//! upgrade, send a frame, audit a refusal).

use super::admission::Ticket;
use super::handlers;
use super::registry::{Slot, SlotRefused};
use super::session::{SessionAudit, StartError};
use super::shutdown::Tracker;
use super::socket::Socket;
use super::{timeout, Shared, State};
use crate::metrics::{RefusalKind, RouteKind};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use portcullis_core::audit::{now_rfc3339, AuditRecord, DenialRecord};
use portcullis_core::config::SessionSettings;
use portcullis_core::policy::{Grant, Policy};
use portcullis_core::request::{self, Decision, Reply};
use portcullis_protocols::http;
use portcullis_protocols::ws::{self, CloseCode, OpCode};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Tls = crate::tls::stream::TlsStream<Socket>;

/// A client connection after TLS, with what its handler needs.
pub struct Conn {
    pub tls: Tls,
    pub client: SocketAddr,
    /// One snapshot of the configuration for the whole connection: a reload never changes a
    /// connection halfway.
    pub state: Arc<State>,
    pub shared: Arc<Shared>,
    pub tracker: Rc<Tracker>,
    /// Its place among the connections the gateway holds (given back when the connection ends).
    pub ticket: Ticket,
}

/// A connection just accepted, with what its task needs. Handed over boxed: an async function
/// keeps its arguments for its whole life, so inline they would stay in every session's task.
pub struct Incoming {
    pub stream: TcpStream,
    pub shared: Arc<Shared>,
    pub tracker: Rc<Tracker>,
    pub ticket: Ticket,
}

pub async fn handle(incoming: Box<Incoming>) {
    // The handshake's state (rustls' and the PROXY header's, 5 KiB) is boxed: it lives only until
    // the request, and inline it would size every connection's task for the session's whole life.
    let Some(mut conn) = Box::pin(establish(incoming)).await else {
        return;
    };
    // A tunnel's relay runs here, after `route` returned: the request's state (its head, the
    // decision) is not kept in the session's task either.
    if let Some(request) = conn.route().await {
        handlers::tunnel::handle(&mut conn, request).await;
    }
}

/// The connection up to its first request: the PROXY header from a trusted balancer, the
/// client's caps and the TLS handshake. `None`: refused or failed (logged and counted).
async fn establish(incoming: Box<Incoming>) -> Option<Conn> {
    let Incoming {
        stream,
        shared,
        tracker,
        mut ticket,
    } = *incoming;
    let Ok(peer) = stream.peer_addr() else {
        return None;
    };
    let state = shared.state.load_full();
    let _ = stream.set_nodelay(true);
    let limit = state.policy.config.session.handshake_timeout;
    // The PROXY header and the TLS handshake share the handshake timeout.
    let deadline = Instant::now() + limit;
    let mut socket = Socket::new(stream);
    let client = client_address(&mut socket, peer, &state, limit).await?;
    // The client's own caps, by its real address; a balancer speaking for itself is exempt.
    let exempt = client == peer && state.policy.config.proxy_trusted.iter().any(|c| c.contains(peer.ip()));
    let key = portcullis_core::net::client_key(client.ip());
    if let Err(why) = ticket.client(key, exempt, Instant::now()) {
        tracing::debug!(%client, refused = why.as_str(), "connection refused");
        return None;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let tls = match timeout(left, crate::tls::accept::accept(state.tls_config.clone(), socket)).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            crate::metrics::with(|m| m.handshake_failures.inc());
            tracing::debug!(%client, "TLS handshake failed: {e}");
            return None;
        }
        None => {
            crate::metrics::with(|m| m.handshake_timeouts.inc());
            tracing::debug!(%client, "TLS handshake timed out");
            return None;
        }
    };
    Some(Conn {
        tls,
        client,
        state,
        shared,
        tracker,
        ticket,
    })
}

/// Whose connection this is: the address a trusted balancer's PROXY header names (a connection
/// from a trusted balancer must start with one), else the peer's. `None`: refuse the connection.
async fn client_address(
    socket: &mut Socket,
    peer: SocketAddr,
    state: &State,
    limit: std::time::Duration,
) -> Option<SocketAddr> {
    let trusted = &state.policy.config.proxy_trusted;
    if !trusted.iter().any(|c| c.contains(peer.ip())) {
        return Some(peer);
    }
    match timeout(limit, socket.read_proxy_header()).await {
        Some(Ok(header)) => Some(header.source().unwrap_or(peer)),
        Some(Err(e)) => {
            tracing::debug!(balancer = %peer, "connection refused: {e}");
            None
        }
        None => {
            tracing::debug!(balancer = %peer, "connection refused: no PROXY header in time");
            None
        }
    }
}

/// The request head read so far, and what followed it.
pub struct Head {
    pub buf: Vec<u8>,
    pub filled: usize,
    /// When the whole request (head and body) must be in.
    pub deadline: Instant,
}

impl Conn {
    pub fn policy(&self) -> &Policy {
        &self.state.policy
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.state.policy.config.session
    }

    /// Takes one of the grant's user's session places (`[session] max_sessions_per_user`),
    /// before the session is set up: on this node, and in a fleet across every node (the fleet
    /// store counts them). At the cap, the caller refuses with 429 (audited); with the fleet
    /// store down, it counts on this node only, or refuses (503) under `on_store_down = "deny"`.
    pub async fn reserve_session(&self, grant: &Grant) -> Result<Slot, SlotRefused> {
        let cap = self.settings().max_sessions_per_user;
        let mut slot = self.shared.registry.reserve(&grant.user, cap).inspect_err(|_| {
            tracing::info!(client = %self.client, user = %grant.user, cap, "session refused: the user is at the session cap");
        })?;
        // While the store is known to be down, no session waits for a command to time out.
        let fleet = self.shared.web.fleet.clone().filter(|_| self.shared.store_up());
        if fleet.is_none() && self.shared.store_refuses() {
            return Err(SlotRefused::StoreDown);
        }
        if let Some(fleet) = fleet {
            let cluster = &self.state.policy.config.cluster;
            let record = crate::store::LiveRecord {
                v: 0,
                id: slot.id().to_owned(),
                node: cluster.node.clone(),
                user: grant.user.clone(),
                target: grant.target.name.clone(),
                protocol: grant.target.protocol.as_str().to_owned(),
                via: grant.via.as_str().to_owned(),
                client: self.client.to_string(),
                start: portcullis_core::audit::now_rfc3339(),
                token_id: grant.token_id.clone(),
                bytes_client_to_target: 0,
                bytes_target_to_client: 0,
            };
            match fleet.reserve_place(&record, cap, cluster.live_ttl()).await {
                Ok(true) => slot.in_fleet(fleet),
                Ok(false) => {
                    tracing::info!(client = %self.client, user = %grant.user, cap, "session refused: the user is at the session cap across the fleet");
                    return Err(SlotRefused::AtCap(super::registry::AtCap(cap)));
                }
                Err(_) if self.shared.store_refuses() => return Err(SlotRefused::StoreDown),
                // on_store_down = "allow": counted on this node only meanwhile.
                Err(_) => {}
            }
        }
        Ok(slot)
    }

    /// Spends the grant's token when it is single use (`once`): across the fleet with a fleet
    /// store. `Err(status)`: 403 when it was used already, 503 when the store cannot say (a
    /// single-use token is never honoured on a guess).
    pub async fn spend_single_use(&self, grant: &Grant) -> Result<(), u16> {
        let (true, Some(jti)) = (grant.single_use, &grant.token_id) else {
            return Ok(());
        };
        let now = portcullis_core::keys::unix_now();
        let left = Duration::from_secs(grant.token_expires.unwrap_or(now).saturating_sub(now))
            + self.policy().config.auth.leeway;
        let spend = self
            .shared
            .web
            .store
            .use_once(crate::store::key_of(jti), left.max(Duration::from_secs(1)));
        match timeout(self.settings().request_timeout, spend).await {
            Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => Err(403),
            _ => Err(503),
        }
    }

    /// Starts the audit of a granted session (see `SessionAudit::start`).
    pub fn start_session(&self, grant: Grant, slot: Slot) -> Result<SessionAudit, StartError> {
        let required = self.state.policy.config.audit_required;
        // Listed fleet-wide when its place was taken (`reserve_session`); the heartbeat
        // refreshes the record with its byte counts.
        SessionAudit::start(grant, self.client, &self.shared.audit, required, slot)
    }

    /// Reads until the core's request path decides, within the request timeout (slowloris-proof),
    /// then runs the route's handler, or returns a tunnel's request to `handle` to run.
    async fn route(&mut self) -> Option<Box<handlers::tunnel::Request>> {
        let limits = self.policy().config.limits;
        let mut head = Head {
            buf: vec![0u8; limits.max_header_bytes],
            filled: 0,
            deadline: Instant::now() + self.settings().request_timeout,
        };
        loop {
            let decision = request::decide(
                &head.buf[..head.filled],
                self.policy(),
                portcullis_core::keys::unix_now(),
            );
            if !matches!(decision, Decision::NeedMore | Decision::RdGateway { .. }) {
                // TLS is done and the request decided: no longer an unauthenticated connection.
                // (An RD Gateway client is, until its token is checked inside the tunnel.)
                self.ticket.settled();
            }
            if !matches!(decision, Decision::NeedMore) {
                crate::metrics::with(|m| m.request(route_kind(&decision)));
            }
            match decision {
                Decision::NeedMore => {}
                Decision::Respond(reply) => {
                    self.reply(&reply, None).await;
                    return None;
                }
                // The web and RDP handlers run on the heap: their futures are large (RDP holds a
                // TLS client, ~9 KiB), and inline they would size every connection's task, so
                // each idle tunnel would carry them.
                Decision::Web {
                    route,
                    head_len,
                    body_len,
                } => {
                    Box::pin(handlers::web::handle(self, route, head, head_len, body_len)).await;
                    return None;
                }
                Decision::RdCleanPath { accept, head_len } => {
                    let leftover = head.buf[head_len..head.filled].to_vec();
                    Box::pin(handlers::rdcleanpath::handle(self, accept, leftover)).await;
                    return None;
                }
                Decision::RdGateway { channel, head_len } => {
                    let leftover = head.buf[head_len..head.filled].to_vec();
                    Box::pin(handlers::rdgateway::handle(self, channel, leftover)).await;
                    return None;
                }
                Decision::Tunnel {
                    grant,
                    accept,
                    head_len,
                } => {
                    // The head buffer is not kept for the session's lifetime.
                    let leftover = head.buf[head_len..head.filled].to_vec();
                    drop(head);
                    let request = handlers::tunnel::Request {
                        grant,
                        accept,
                        leftover,
                    };
                    return Some(Box::new(request));
                }
            }
            if head.filled == head.buf.len() {
                self.reply(&Reply::text(431, "request head too large"), None).await;
                return None;
            }
            match self.read_until(head.deadline, &mut head.buf, head.filled).await {
                Ok(n) => head.filled += n,
                Err(ReadEnd::TimedOut) => {
                    self.reply(&Reply::text(408, "request timeout"), None).await;
                    return None;
                }
                Err(ReadEnd::Closed) => return None,
            }
        }
    }

    /// One read into `buf[at..]` before `deadline`.
    pub async fn read_until(&mut self, deadline: Instant, buf: &mut [u8], at: usize) -> Result<usize, ReadEnd> {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, self.tls.read(&mut buf[at..])).await {
            None => Err(ReadEnd::TimedOut),
            Some(Ok(0)) | Some(Err(_)) => Err(ReadEnd::Closed),
            Some(Ok(n)) => Ok(n),
        }
    }

    /// Sends a reply (plain text, or JSON on the web app's paths) and closes. Audits it when
    /// it is a refusal that belongs in the audit log; `user` says who, when known.
    pub async fn reply(&mut self, reply: &Reply, user: Option<&str>) {
        if let Some(denied) = &reply.denied {
            self.deny(&denied.path, reply.status, &denied.reason, user);
        } else if reply.status >= 400 {
            tracing::debug!(client = %self.client, status = reply.status, "bad request");
        }
        let content_type = if reply.json {
            crate::web::response::JSON
        } else {
            "text/plain; charset=utf-8"
        };
        let head = if reply.json {
            crate::web::response::head(reply.status, content_type, reply.body.len(), &[])
        } else {
            http::response_head(reply.status, content_type, reply.body.len(), &[])
        };
        self.send_and_close(&head, reply.body.as_bytes()).await
    }

    /// Writes `head` and `body`, then TLS close_notify and FIN, all within the close timeout.
    pub async fn send_and_close(&mut self, head: &[u8], body: &[u8]) {
        let limit = self.settings().close_timeout;
        let tls = &mut self.tls;
        let _ = timeout(limit, async {
            write_joined(tls, head, body).await?;
            tls.begin_close();
            tls.close().await
        })
        .await;
    }

    /// Sends the 101 answer of an accepted upgrade; false if the client is gone.
    pub async fn accept_upgrade(&mut self, accept: &[u8]) -> bool {
        let limit = self.settings().close_timeout;
        let tls = &mut self.tls;
        let sent = timeout(limit, async {
            tls.write_all(accept).await?;
            tls.flush().await
        })
        .await;
        matches!(sent, Some(Ok(())))
    }

    /// One unmasked WebSocket frame from the gateway, written and flushed within the close timeout.
    pub async fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut header = [0u8; ws::MAX_HEADER_LEN];
        let n = ws::encode_header(&mut header, true, opcode, payload.len() as u64, None);
        let limit = self.settings().close_timeout;
        let tls = &mut self.tls;
        timeout(limit, async {
            write_joined(tls, &header[..n], payload).await?;
            tls.flush().await
        })
        .await
        .unwrap_or_else(|| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Sends a WebSocket Close and closes the connection.
    pub async fn close_ws(&mut self, code: CloseCode, reason: &str) {
        let mut close = Vec::new();
        ws::encode_close(&mut close, code, reason, None);
        self.send_and_close(&close, &[]).await
    }

    /// Audits a refused request (and logs it), and counts it by kind (`RefusalKind::of_status`).
    pub fn deny(&self, path: &str, status: u16, reason: &str, user: Option<&str>) {
        crate::metrics::with(|m| m.refused(RefusalKind::of_status(status)));
        tracing::info!(client = %self.client, path, status, reason, "request denied");
        self.shared.audit.record(&AuditRecord::Denied(DenialRecord {
            time: now_rfc3339(),
            client: self.client.to_string(),
            path: request::logged_path(path),
            status,
            reason: reason.to_owned(),
            user: user.map(str::to_owned),
        }));
    }
}

fn route_kind(decision: &Decision) -> RouteKind {
    match decision {
        Decision::Tunnel { .. } => RouteKind::Tunnel,
        Decision::RdCleanPath { .. } => RouteKind::WebRdp,
        Decision::RdGateway { .. } => RouteKind::RdGateway,
        Decision::Web { .. } => RouteKind::Web,
        Decision::NeedMore | Decision::Respond(_) => RouteKind::Answered,
    }
}

/// Writes `head` then `body`: joined into one write (one TLS record) when the body is small,
/// as terminal frames and API answers are; a large body (an asset) is written as it is.
async fn write_joined(tls: &mut Tls, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    const JOIN_UP_TO: usize = 16 * 1024;
    if body.len() <= JOIN_UP_TO {
        let mut joined = Vec::with_capacity(head.len() + body.len());
        joined.extend_from_slice(head);
        joined.extend_from_slice(body);
        tls.write_all(&joined).await
    } else {
        tls.write_all(head).await?;
        tls.write_all(body).await
    }
}

/// Why a read of the request ended early.
pub enum ReadEnd {
    TimedOut,
    Closed,
}
