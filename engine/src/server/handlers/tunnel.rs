//! `/v1/tunnel/{target}`: an authorized WebSocket tunnel to a target's TCP port. The grant comes
//! from the request path; this connects, answers 101 and relays until the session ends.

use crate::server::conn::Conn;
use crate::server::dial::dial;
use crate::server::session::{self, Extras, SessionAudit, StartError};
use crate::server::socket::Socket;
use portcullis_core::audit::{EndReason, Ending};
use portcullis_core::config::Protocol;
use portcullis_core::policy::Grant;
use portcullis_core::relay::Relay;
use portcullis_core::request::Reply;
use portcullis_protocols::rdp;
use portcullis_protocols::ws::Role;

/// A granted tunnel request. Boxed: an async function keeps its arguments for its whole life,
/// so inline they would stay in every tunnel's task after the relay took what it needs.
pub struct Request {
    pub grant: Grant,
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept: Vec<u8>,
    /// Bytes read behind the request head: the start of the tunnel.
    pub leftover: Vec<u8>,
}

pub async fn handle(conn: &mut Conn, request: Box<Request>) {
    // Boxed: the checks, the dial and the answer end before the relay starts, and their 2 KiB of
    // state, inline, would size every tunnel's task for its whole life (idle sessions included).
    let Some((mut backend, audit, leftover)) = Box::pin(open(conn, request)).await else {
        return;
    };
    let target = audit.grant().target.clone();
    if crate::fault::panic_in_tunnel(&target.name) {
        panic!("injected fault: panic in the tunnel to {}", target.name);
    }
    // The state this connection started with, shared: a clone of its settings would be carried
    // in the session's task for its whole life.
    let state = conn.state.clone();
    let settings = &state.policy.config.session;
    let limits = state.policy.config.limits.websocket();
    let mut relay = Relay::websocket(Role::Server, limits, settings.buffer_size, 0);
    if target.protocol == Protocol::Rdp {
        // Native RDP clients open with an X.224 Connection Request naming the user.
        relay.capture_first(rdp::MAX_X224_LEN);
    }
    let clock = session::clock_settings(&target, settings, true);
    let watch = session::Watch::new(&conn.tracker, &conn.shared, &audit, settings);
    let relaying = session::relay_client(
        &mut relay,
        &mut conn.tls,
        &leftover,
        &mut backend,
        clock,
        &watch,
        audit.id(),
    );
    // The relay holds the early bytes now.
    drop(leftover);
    let end = relaying.await;
    let extras = Extras {
        rdp_cookie: (target.protocol == Protocol::Rdp)
            .then(|| rdp_cookie(relay.captured()))
            .flatten(),
        recording: None,
    };
    audit.finish(end.ending(), relay.counters(), extras);
}

/// Everything before the relay: the store's say, the single-use token, the user's session place,
/// the target's connection, the session's audit and the 101 answer. `None`: refused (answered
/// and audited), or the client left before its tunnel started (audited).
async fn open(conn: &mut Conn, request: Box<Request>) -> Option<(Socket, SessionAudit, Vec<u8>)> {
    let Request {
        grant,
        accept,
        leftover,
    } = *request;
    let path = format!("/v1/tunnel/{}", grant.target.name);
    if conn.shared.store_refuses() {
        // Fail closed: without the fleet store this node cannot know what the fleet revoked.
        conn.deny(&path, 503, "the state store is unavailable", Some(&grant.user));
        let reply = Reply::text(503, "the state store is unavailable; try again later");
        conn.reply(&reply, None).await;
        return None;
    }
    if let Err(status) = conn.spend_single_use(&grant).await {
        let reason = if status == 403 {
            "single-use token used already"
        } else {
            "the state store is unavailable"
        };
        conn.deny(&path, status, reason, Some(&grant.user));
        conn.reply(&Reply::text(status, reason), None).await;
        return None;
    }
    let slot = match conn.reserve_session(&grant).await {
        Ok(slot) => slot,
        Err(e) => {
            conn.deny(&path, e.status(), &e.to_string(), Some(&grant.user));
            conn.reply(&Reply::text(e.status(), e.public()), None).await;
            return None;
        }
    };
    let connect_timeout = conn.settings().connect_timeout;
    let backend = match dial(&grant.target, connect_timeout, &conn.shared.pools).await {
        Ok(b) => Socket::new(b),
        Err(e) => {
            conn.deny(&path, 502, &format!("target unreachable: {e}"), Some(&grant.user));
            conn.reply(&Reply::text(502, "target unreachable"), None).await;
            return None;
        }
    };
    let audit = match conn.start_session(grant, slot) {
        Ok(audit) => audit,
        Err(e) => {
            let status = if matches!(e, StartError::AuditUnavailable) {
                503
            } else {
                500
            };
            conn.reply(&Reply::text(status, e.public()), None).await;
            return None;
        }
    };
    if !conn.accept_upgrade(&accept).await {
        // Granted and connected, but the client left before its tunnel started.
        let ending = Ending::with_detail(EndReason::ClientDisconnected, "before the upgrade completed");
        audit.finish(ending, Default::default(), Extras::default());
        return None;
    }
    Some((backend, audit, leftover))
}

/// The `mstshash` cookie of the X.224 Connection Request at the start of `first`, if whole.
pub(super) fn rdp_cookie(first: &[u8]) -> Option<String> {
    let len = rdp::tpkt_len(first, rdp::MAX_X224_LEN).ok()??;
    rdp::parse_connection_request(first.get(..len)?).ok()?.cookie
}
