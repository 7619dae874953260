//! `/v1/tunnel/{target}`: an authorized WebSocket tunnel to a target's TCP port. The grant comes
//! from the request path; this connects, answers 101 and relays until the session ends.

use crate::server::conn::Conn;
use crate::server::dial::dial;
use crate::server::session::{self, Extras, StartError};
use crate::server::socket::Socket;
use portcullis_core::audit::{EndReason, Ending};
use portcullis_core::config::Protocol;
use portcullis_core::policy::Grant;
use portcullis_core::relay::Relay;
use portcullis_core::request::Reply;
use portcullis_protocols::rdp;
use portcullis_protocols::ws::Role;

pub async fn handle(conn: &mut Conn, grant: Grant, accept: Vec<u8>, leftover: Vec<u8>) {
    let path = format!("/v1/tunnel/{}", grant.target.name);
    let settings = conn.settings().clone();
    if conn.shared.store_refuses() {
        // Fail closed: without the fleet store this node cannot know what the fleet revoked.
        conn.deny(&path, 503, "the state store is unavailable", Some(&grant.user));
        return conn
            .reply(
                &Reply::text(503, "the state store is unavailable; try again later"),
                None,
            )
            .await;
    }
    if let Err(status) = conn.spend_single_use(&grant).await {
        let reason = if status == 403 {
            "single-use token used already"
        } else {
            "the state store is unavailable"
        };
        conn.deny(&path, status, reason, Some(&grant.user));
        return conn.reply(&Reply::text(status, reason), None).await;
    }
    let slot = match conn.reserve_session(&grant).await {
        Ok(slot) => slot,
        Err(e) => {
            conn.deny(&path, e.status(), &e.to_string(), Some(&grant.user));
            return conn.reply(&Reply::text(e.status(), e.public()), None).await;
        }
    };
    let mut backend = match dial(&grant.target, settings.connect_timeout, &conn.shared.pools).await {
        Ok(b) => Socket::new(b),
        Err(e) => {
            conn.deny(&path, 502, &format!("target unreachable: {e}"), Some(&grant.user));
            return conn.reply(&Reply::text(502, "target unreachable"), None).await;
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
            return conn.reply(&Reply::text(status, e.public()), None).await;
        }
    };
    if !conn.accept_upgrade(&accept).await {
        // Granted and connected, but the client left before its tunnel started.
        let ending = Ending::with_detail(EndReason::ClientDisconnected, "before the upgrade completed");
        return audit.finish(ending, Default::default(), Extras::default());
    }
    let target = audit.grant().target.clone();
    if crate::fault::panic_in_tunnel(&target.name) {
        panic!("injected fault: panic in the tunnel to {}", target.name);
    }
    let limits = conn.policy().config.limits.websocket();
    let mut relay = Relay::websocket(Role::Server, limits, settings.buffer_size, 0);
    if target.protocol == Protocol::Rdp {
        // Native RDP clients open with an X.224 Connection Request naming the user.
        relay.capture_first(rdp::MAX_X224_LEN);
    }
    let clock = session::clock_settings(&target, &settings, true);
    let watch = session::Watch::new(&conn.tracker, &conn.shared, &audit, &settings);
    let end = session::relay_client(
        &mut relay,
        &mut conn.tls,
        &leftover,
        &mut backend,
        clock,
        &watch,
        audit.id(),
    )
    .await;
    let extras = Extras {
        rdp_cookie: (target.protocol == Protocol::Rdp)
            .then(|| rdp_cookie(relay.captured()))
            .flatten(),
        recording: None,
    };
    audit.finish(end.ending(), relay.counters(), extras);
}

/// The `mstshash` cookie of the X.224 Connection Request at the start of `first`, if whole.
pub(super) fn rdp_cookie(first: &[u8]) -> Option<String> {
    let len = rdp::tpkt_len(first, rdp::MAX_X224_LEN).ok()??;
    rdp::parse_connection_request(first.get(..len)?).ok()?.cookie
}
