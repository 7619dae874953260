//! RDCleanPath: web RDP through the gateway (`/v1/rdp`, also `/jet/rdp` as IronRDP web clients
//! expect). The browser cannot do TCP or the RDP server's TLS itself, so the gateway does the
//! pre-TLS part for it:
//!
//! 1. read one RDCleanPath request (bounded, within the request timeout) from WebSocket messages;
//! 2. authorize its `proxy_auth` (a token, or a one-time ticket of the web app) for its
//!    `destination`, which must be a configured RDP target (by name or by the configured address
//!    of the target the credential is for: never an arbitrary host);
//! 3. connect, send the preconnection blob and the client's X.224 Connection Request, read the
//!    X.224 Connection Confirm, and do the TLS handshake with the server as a client;
//! 4. answer with the confirm, the server's certificate chain and address; then relay WebSocket
//!    binary frames to and from that TLS stream.
//!
//! The gateway sees the client's RDP bytes in the clear, so it enforces the target's channel
//! policy: with `clipboard = false` or `drives = false`, the relay passes the client's first
//! bytes through [`rdp::channels::FirstPduFilter`] (CredSSP messages pass, the MCS Connect
//! Initial is held until whole), which renames the refused static channels (`cliprdr`, `rdpdr`)
//! so the server never opens them; a client whose first PDU is not a well-formed Connect Initial
//! is cut off before the server gets it. The session's record lists what was removed.
//!
//! Every failure answers with an RDCleanPath error PDU and is audited.

use crate::server::conn::{Conn, ReadEnd};
use crate::server::dial::dial;
use crate::server::session::{self, Extras, StartError};
use crate::server::socket::Socket;
use crate::server::timeout;
use crate::web::signin;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use portcullis_core::audit::{EndReason, Ending, Via};
use portcullis_core::policy::{Credential, Destination, Grant};
use portcullis_core::relay::{Filtered, PeerFilter, Relay};
use portcullis_protocols::rdp::channels::{ChannelPolicy, FirstPduFilter, Inspected, MAX_CONNECT_INITIAL};
use portcullis_protocols::rdp::{
    self, CleanPathFailure, CleanPathRequest, Negotiated, MAX_CLEANPATH_REQUEST, MAX_X224_LEN,
};
use portcullis_protocols::ws::{self, CloseCode, Message, MessageAssembler, OpCode, Role};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use std::time::Instant;

type ServerTls = futures_rustls::client::TlsStream<Socket>;

const PATH: &str = "/v1/rdp";

/// Why an RDCleanPath session did not start: what the client is told, and what the audit says.
struct Refusal {
    failure: CleanPathFailure,
    status: u16,
    reason: String,
    user: Option<String>,
}

impl Refusal {
    fn new(failure: CleanPathFailure, status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            failure,
            status,
            reason: reason.into(),
            user: None,
        }
    }

    fn http(status: u16, reason: impl Into<String>) -> Self {
        Refusal::new(CleanPathFailure::Http(status), status, reason)
    }

    /// A failure on the way to the server (502 in the audit log).
    fn general(reason: impl Into<String>) -> Self {
        Refusal::new(CleanPathFailure::General, 502, reason)
    }

    fn of(mut self, grant: &Grant) -> Self {
        self.user = Some(grant.user.clone());
        self
    }
}

/// A connected, TLS-secured RDP server, ready to relay.
struct Established {
    server: ServerTls,
    /// The RDCleanPath response for the browser.
    response: Vec<u8>,
    /// The security protocol the server selected (its X.224 Connection Confirm).
    protocol: u32,
}

pub async fn handle(conn: &mut Conn, accept: Vec<u8>, leftover: Vec<u8>) {
    if !conn.accept_upgrade(&accept).await {
        return;
    }
    let (pdu, after) = match read_request(conn, leftover).await {
        Ok(r) => r,
        Err(refusal) => return refuse(conn, refusal).await,
    };
    let (request, info) = match rdp::parse_cleanpath_request(&pdu) {
        Ok(r) => r,
        Err(e) => return refuse(conn, Refusal::http(400, format!("bad RDCleanPath request: {e}"))).await,
    };
    let grant = match authorize(conn, &request).await {
        Ok(g) => g,
        Err(refusal) => return refuse(conn, refusal).await,
    };
    if conn.shared.store_refuses() {
        return refuse(conn, Refusal::http(503, "the state store is unavailable").of(&grant)).await;
    }
    if let Err(status) = conn.spend_single_use(&grant).await {
        let reason = if status == 403 {
            "single-use token used already"
        } else {
            "the state store is unavailable"
        };
        return refuse(conn, Refusal::http(status, reason).of(&grant)).await;
    }
    let slot = match conn.reserve_session(&grant).await {
        Ok(slot) => slot,
        Err(e) => return refuse(conn, Refusal::http(e.status(), e.to_string()).of(&grant)).await,
    };
    let Established {
        mut server,
        response,
        protocol,
    } = match establish(conn, &grant, &request).await {
        Ok(e) => e,
        Err(refusal) => return refuse(conn, refusal.of(&grant)).await,
    };
    let mut audit = match conn.start_session(grant, slot) {
        Ok(audit) => audit,
        Err(e @ StartError::AuditUnavailable) => return conn.close_ws(CloseCode::TRY_AGAIN_LATER, e.public()).await,
        Err(_) => return conn.close_ws(CloseCode::INTERNAL_ERROR, "").await,
    };
    if let Err(e) = conn.send_frame(OpCode::Binary, &response).await {
        let ending = Ending::with_detail(EndReason::ClientError, e.to_string());
        return audit.finish(ending, Default::default(), Extras::default());
    }
    let target = audit.grant().target.clone();
    // The state this connection started with, shared: a clone of its settings would be carried
    // in the session's task for its whole life.
    let state = conn.state.clone();
    let settings = &state.policy.config.session;
    let limits = conn.policy().config.limits.websocket();
    let mut relay = Relay::websocket(Role::Server, limits, settings.buffer_size, 0);
    let channels = ChannelPolicy {
        clipboard: target.clipboard,
        drives: target.drives,
    };
    if channels.refuses_any() {
        relay.filter_peer(
            Box::new(ChannelFilter(FirstPduFilter::new(channels, protocol))),
            MAX_CONNECT_INITIAL,
        );
    }
    let clock = session::clock_settings(&target, settings, true);
    let end = {
        let watch = session::Watch::new(&conn.tracker, &conn.shared, &audit, settings);
        session::relay_client(
            &mut relay,
            &mut conn.tls,
            &after,
            &mut server,
            clock,
            &watch,
            audit.id(),
        )
        .await
    };
    if let Some(ChannelFilter(filter)) = relay.peer_filter::<ChannelFilter>() {
        if !filter.removed().is_empty() {
            tracing::info!(session = audit.id(), channels = ?filter.removed(), "RDP channels removed by the target's policy");
            audit.channels_removed(filter.removed().iter().map(|c| c.to_string()).collect());
        }
    }
    let extras = Extras {
        rdp_cookie: info.cookie,
        recording: None,
    };
    audit.finish(end.ending(), relay.counters(), extras);
}

/// The target's channel policy over what the client sends first (its CredSSP messages and its MCS
/// Connect Initial), inside the relay.
struct ChannelFilter(FirstPduFilter);

impl PeerFilter for ChannelFilter {
    fn inspect(&mut self, held: &mut [u8]) -> Result<Filtered, String> {
        match self.0.inspect(held) {
            Ok(Inspected::Release(n)) => Ok(Filtered::Release(n)),
            Ok(Inspected::Done) => Ok(Filtered::Done),
            Err(e) => Err(format!("RDP channel filter refused the client's request: {e}")),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Reads WebSocket messages until one whole RDCleanPath PDU is in. Returns it and any bytes
/// that followed it.
async fn read_request(conn: &mut Conn, leftover: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let bad = |reason: String| Refusal::http(400, reason);
    let limit = MAX_CLEANPATH_REQUEST as u64;
    let mut assembler = MessageAssembler::new(
        Role::Server,
        ws::Limits {
            max_frame_payload: limit,
            max_message: limit,
        },
    );
    let (mut start, mut end) = (0, leftover.len());
    let mut buf = leftover;
    buf.resize(buf.len().max(4096), 0);
    let mut pdu = Vec::new();
    let deadline = Instant::now() + conn.settings().request_timeout;
    loop {
        while start < end {
            let (used, msg) = assembler.feed(&mut buf[start..end]).map_err(|e| bad(e.to_string()))?;
            start += used;
            match msg {
                Some(Message::Binary(bytes)) => {
                    pdu.extend_from_slice(&bytes);
                    let whole = rdp::cleanpath_len(&pdu, MAX_CLEANPATH_REQUEST).map_err(|e| bad(e.to_string()))?;
                    if whole.is_some_and(|len| pdu.len() >= len) {
                        return Ok((pdu, buf[start..end].to_vec()));
                    }
                }
                Some(Message::Close { .. }) => return Err(bad("client closed before its request".into())),
                Some(Message::Text(_)) => return Err(bad("RDCleanPath is binary".into())),
                Some(Message::Ping(_) | Message::Pong(_)) | None => {}
            }
        }
        start = 0;
        end = match conn.read_until(deadline, &mut buf, 0).await {
            Ok(n) => n,
            Err(ReadEnd::TimedOut) => return Err(Refusal::http(408, "no RDCleanPath request in time")),
            Err(ReadEnd::Closed) => return Err(bad("client left before its request".into())),
        };
    }
}

/// The policy's answer for the request's credential: a one-time ticket of the web app (redeemed
/// here, so it is good once) or a token.
async fn authorize(conn: &Conn, request: &CleanPathRequest) -> Result<Grant, Refusal> {
    let now = portcullis_core::keys::unix_now();
    let destination = Destination::NameOrAddress(&request.destination);
    let grant = if signin::is_ticket(&request.proxy_auth) {
        let ticket = signin::redeem_ticket(conn.shared.web.store.as_ref(), &request.proxy_auth)
            .await
            .map_err(|e| Refusal::http(503, e.to_string()))?
            .ok_or_else(|| Refusal::http(401, "invalid or used ticket"))?;
        let credential = Credential::Ticket {
            user: &ticket.user,
            target: &ticket.target,
            roles: &ticket.roles,
        };
        let mut grant = conn.policy().authorize(credential, destination, Via::WebRdp, now);
        // A shared link's guest: the session ends with the link (gone: refused).
        if let Ok(g) = grant.as_mut() {
            let expiry = crate::server::timeout(
                conn.settings().request_timeout,
                crate::web::links::guest_expiry(conn.shared.web.store.as_ref(), &g.user),
            )
            .await;
            match expiry {
                Some(Ok(expires)) => g.token_expires = expires.or(g.token_expires),
                Some(Err(why)) => return Err(Refusal::http(403, why)),
                None => return Err(Refusal::http(503, "the state store did not answer in time")),
            }
        }
        grant
    } else {
        let credential = Credential::Token(Some(&request.proxy_auth));
        conn.policy().authorize(credential, destination, Via::WebRdp, now)
    };
    grant.map_err(|d| Refusal::http(d.status(), d.to_string()))
}

/// Connects to the granted target and does what the browser cannot: X.224 negotiation and TLS.
async fn establish(conn: &Conn, grant: &Grant, request: &CleanPathRequest) -> Result<Established, Refusal> {
    let target = &grant.target;
    let settings = conn.settings();
    let mut tcp = dial(target, settings.connect_timeout, &conn.shared.pools)
        .await
        .map_err(|e| Refusal::http(502, format!("target unreachable: {e}")))?;
    let server_addr = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| target.address.clone());
    let (confirm, protocol) = negotiate(&mut tcp, request, settings.connect_timeout).await?;
    // With a `cert_ca`, the server's chain must lead to it and name the target's host.
    let tls = match conn.state.rdp_trust.get(&target.name) {
        Some(tls) => tls.clone(),
        None => crate::tls::rdp_client_config(),
    };
    let server = tls_with_server(tcp, target.host(), tls, settings.handshake_timeout).await?;
    let chain: Vec<Vec<u8>> = server
        .get_ref()
        .1
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    if let Some(pin) = target.cert_sha256 {
        let leaf = chain.first().map(Sha256::digest);
        if leaf.as_deref() != Some(&pin[..]) {
            return Err(Refusal::new(
                CleanPathFailure::TlsAlert(42),
                502,
                "server certificate does not match the pinned fingerprint",
            ));
        }
    }
    let response = rdp::cleanpath_response(&server_addr, &confirm, &chain)
        .map_err(|e| Refusal::general(format!("cannot encode the RDCleanPath response: {e}")))?;
    Ok(Established {
        server,
        response,
        protocol,
    })
}

/// Sends the preconnection blob (if any) and the client's Connection Request; returns the
/// server's Connection Confirm when it accepts, and the security protocol it selected.
async fn negotiate(
    tcp: &mut TcpStream,
    request: &CleanPathRequest,
    limit: std::time::Duration,
) -> Result<(Vec<u8>, u32), Refusal> {
    let mut first = Vec::new();
    if let Some(pcb) = &request.preconnection_blob {
        first.extend_from_slice(pcb.as_bytes());
    }
    first.extend_from_slice(&request.x224_request);
    let confirm = timeout(limit, async {
        tcp.write_all(&first).await?;
        let mut cc = vec![0u8; MAX_X224_LEN];
        let mut n = 0;
        loop {
            let whole = rdp::tpkt_len(&cc[..n], MAX_X224_LEN).map_err(|e| std::io::Error::other(e.to_string()))?;
            if let Some(len) = whole.filter(|len| n >= *len) {
                cc.truncate(len);
                return Ok(cc);
            }
            // Read no further than the Confirm: what follows belongs to the TLS handshake.
            let want = whole.unwrap_or(4);
            let got = tcp.read(&mut cc[n..want.max(n + 1).min(MAX_X224_LEN)]).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            n += got;
        }
    })
    .await
    .ok_or_else(|| Refusal::general("no X.224 Connection Confirm in time"))?
    .map_err(|e: std::io::Error| Refusal::general(format!("X.224 negotiation failed: {e}")))?;
    match rdp::parse_connection_confirm(&confirm) {
        Ok(Negotiated::Protocol(protocol)) => Ok((confirm, protocol)),
        Ok(Negotiated::Failure(code)) => Err(Refusal::new(
            CleanPathFailure::Negotiation(confirm.clone()),
            502,
            format!("server refused negotiation: {code}"),
        )),
        Err(e) => Err(Refusal::general(format!("bad X.224 Connection Confirm: {e}"))),
    }
}

/// The TLS handshake with the RDP server, as its client. Its certificate is checked by the
/// browser (and by a configured pin), so any is accepted here.
async fn tls_with_server(
    tcp: TcpStream,
    host: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    limit: std::time::Duration,
) -> Result<ServerTls, Refusal> {
    let name =
        ServerName::try_from(host.to_owned()).map_err(|_| Refusal::general(format!("bad server name {host}")))?;
    let connector = futures_rustls::TlsConnector::from(tls);
    match timeout(limit, connector.connect(name, Socket::new(tcp))).await {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => {
            let alert = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .and_then(|te| match te {
                    rustls::Error::AlertReceived(a) => Some(u8::from(*a)),
                    _ => None,
                })
                .unwrap_or(40);
            Err(Refusal::new(
                CleanPathFailure::TlsAlert(alert),
                502,
                format!("TLS with the server failed: {e}"),
            ))
        }
        None => Err(Refusal::general("TLS handshake with the server timed out")),
    }
}

async fn refuse(conn: &mut Conn, refusal: Refusal) {
    conn.deny(PATH, refusal.status, &refusal.reason, refusal.user.as_deref());
    let _ = conn
        .send_frame(OpCode::Binary, &rdp::cleanpath_error(&refusal.failure))
        .await;
    conn.close_ws(CloseCode::POLICY, "rdcleanpath_error").await;
}
