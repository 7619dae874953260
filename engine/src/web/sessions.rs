//! The web app's Sessions page, for administrators: every live session of the fleet, and ending
//! one with a reason. The same service as the admin API (`admin::service`); the credential is a
//! signed-in browser whose user administers the gateway (`Policy::is_web_admin`; a second factor
//! when their policy requires one, as everywhere in the app). Every termination and every refusal
//! is an `admin` audit record.

use super::api::{json_post, signed_in, WebRequest};
use super::response::Response;
use crate::admin::service;
use crate::store::WebSession;
use portcullis_core::audit::{now_rfc3339, AdminAction, AdminRecord, AuditRecord};
use serde::Deserialize;

/// Longest termination reason kept (it goes to the audit log).
const MAX_REASON: usize = 200;

pub(super) fn record(req: &WebRequest<'_>, action: AdminAction, admin: Option<&str>) -> AdminRecord {
    AdminRecord {
        time: now_rfc3339(),
        admin: admin.map(str::to_owned),
        client: req.client.to_string(),
        action,
        subject: None,
        until: None,
        status: 0,
        sessions_ended: None,
        detail: None,
    }
}

/// The signed-in administrator; `Err`: the answer (401, 403 audited).
pub(super) async fn administrator(req: &WebRequest<'_>, action: AdminAction) -> Result<WebSession, Response> {
    let s = signed_in(req).await?;
    // A token sign-in is limited to its target: never the gateway's administration.
    if s.only_target.is_some() || !req.policy.is_web_admin(&s.user, &s.roles) {
        // Who asked is known (signed in): the record names them, with the refusal's status.
        let mut r = record(req, action, Some(&s.user));
        r.status = 403;
        r.detail = Some(format!("{} is not an administrator", s.user));
        req.shared.audit.record(&AuditRecord::Admin(r));
        return Err(Response::error(403, "administrators only"));
    }
    Ok(s)
}

/// `GET /api/admin/sessions`: `{"sessions":[…], "partial"?: "…"}` (as the admin API's).
pub async fn list(req: &WebRequest<'_>) -> Response {
    if let Err(r) = administrator(req, AdminAction::ListSessions).await {
        return r;
    }
    // Polled by the open page: not audited when granted (like metrics scrapes).
    let (sessions, partial) = service::live_sessions(req.shared).await;
    let mut body = serde_json::json!({ "sessions": sessions });
    if let Some(p) = partial {
        body["partial"] = p.into();
    }
    Response::json(200, body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TerminateBody {
    id: String,
    reason: String,
}

/// `POST /api/admin/sessions/terminate` `{"id":…,"reason":…}`: `202 {"terminated": id}`.
pub async fn terminate(req: &WebRequest<'_>) -> Response {
    let TerminateBody { id, reason } = match json_post(req, "{\"id\":…,\"reason\":…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let s = match administrator(req, AdminAction::Terminate).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reason: String = reason
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    if reason.is_empty() {
        return Response::error(400, "say why the session is ended");
    }
    let mut r = record(req, AdminAction::Terminate, Some(&s.user));
    r.subject = Some(id.clone());
    r.detail = Some(reason);
    let answer = match service::terminate(req.shared, &id, &s.user).await {
        Ok(()) => {
            r.sessions_ended = Some(1);
            Response::json(202, serde_json::json!({ "terminated": id }))
        }
        Err(e) => Response::error(e.status, &e.message),
    };
    r.status = answer.status;
    tracing::info!(admin = %s.user, session = %id, status = answer.status, "session terminated from the web app");
    req.shared.audit.record(&AuditRecord::Admin(r));
    answer
}

/// A watch the checks allowed: what the watch handler needs.
pub struct WatchStart {
    pub session: String,
    pub admin: String,
    pub watching: crate::server::watch::Watching,
    pub user: String,
    pub target: String,
    pub accept: Vec<u8>,
}

/// `GET /v1/watch/{session}` (WebSocket): an administrator watches a live browser terminal of
/// this node, read-only.
pub async fn watch(req: &WebRequest<'_>, id: &str) -> super::api::Action {
    use super::api::Action;
    let refuse = |status: u16, msg: &str| Action::Respond(Response::error(status, msg));
    let upgrade = match portcullis_protocols::http::websocket_upgrade(req.head) {
        Ok(u) => u,
        Err(e) => return refuse(e.status(), &e.to_string()),
    };
    // The cookie is ambient: without this check any site could watch as the administrator.
    if !super::api::origin_ok(req.head, req.policy) {
        return refuse(403, "cross-origin WebSocket refused");
    }
    let admin = match administrator(req, AdminAction::WatchSession).await {
        Ok(s) => s.user,
        Err(r) => return Action::Respond(r),
    };
    let mut r = record(req, AdminAction::WatchSession, Some(&admin));
    r.subject = Some(id.to_owned());
    let live = req.shared.registry.get(id);
    let hub = live.as_ref().and_then(|s| s.watch.get().cloned());
    let (status, message) = match (&live, hub) {
        (Some(live), Some(hub)) => match hub.watch() {
            Some(watching) => {
                r.status = 101;
                req.shared.audit.record(&AuditRecord::Admin(r));
                return Action::Watch(Box::new(WatchStart {
                    session: id.to_owned(),
                    admin,
                    watching,
                    user: live.user.clone(),
                    target: live.target.clone(),
                    accept: portcullis_protocols::http::switching_protocols(upgrade.key, None),
                }));
            }
            None => (409, "the session is ending, or has as many watchers as it may"),
        },
        (Some(_), None) => (400, "only browser terminal sessions can be watched"),
        (None, _) => match watch_elsewhere(req, id, &admin).await {
            Ok((watching, user, target)) => {
                r.status = 101;
                r.detail = Some("on another node".into());
                req.shared.audit.record(&AuditRecord::Admin(r));
                return Action::Watch(Box::new(WatchStart {
                    session: id.to_owned(),
                    admin,
                    watching,
                    user,
                    target,
                    accept: portcullis_protocols::http::switching_protocols(upgrade.key, None),
                }));
            }
            Err(refused) => refused,
        },
    };
    r.status = status;
    req.shared.audit.record(&AuditRecord::Admin(r));
    refuse(status, message)
}

/// How long a remote watch waits for the session's node to answer, and how long it may then go
/// without a message (the node sends a keepalive every 5 s while the terminal is quiet).
const REMOTE_ANSWER: std::time::Duration = std::time::Duration::from_secs(5);
const REMOTE_SILENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// A watch of a terminal held by another node of the fleet (through the store's publish and
/// subscribe: see `server::watch`). `Err`: the refusal (status, message).
async fn watch_elsewhere(
    req: &WebRequest<'_>,
    id: &str,
    admin: &str,
) -> Result<(crate::server::watch::Watching, String, String), (u16, &'static str)> {
    use crate::server::watch::{self, WatchEnd};
    let not_here = (404, "no live session with this id");
    let Some(fleet) = req.shared.web.fleet.clone() else {
        return Err((404, "no live session with this id on this node"));
    };
    let live = match crate::server::timeout(req.limit, fleet.list_live()).await {
        Some(Ok(all)) => all.into_iter().find(|r| r.id == id).ok_or(not_here)?,
        _ => return Err((503, "the state store does not answer")),
    };
    if live.via != portcullis_core::audit::Via::WebTerminal.as_str() {
        return Err((400, "only browser terminal sessions can be watched"));
    }
    let suffix = portcullis_core::secret::random_hex::<16>().map_err(|_| (503, "no randomness"))?;
    let channel = format!("{}{suffix}", crate::store::WATCH_STREAM_PREFIX);
    let (feed, watching) = watch::remote();
    let request = crate::store::WatchRequest {
        v: 0,
        session: id.to_owned(),
        channel: channel.clone(),
        by: admin.to_owned(),
    };
    let asking = fleet.clone();
    let started = std::time::Instant::now();
    let mut last = None::<std::time::Instant>;
    fleet.relay_channel(
        channel,
        std::time::Duration::from_secs(1),
        move || {
            // Subscribed: now the session's node may answer.
            tokio::spawn(asking.request_watch(request));
        },
        move |message| {
            if feed.gone() {
                return false;
            }
            let now = std::time::Instant::now();
            match message {
                Some(bytes) => {
                    last = Some(now);
                    match watch::decode(&bytes) {
                        Some(Ok(seen)) => feed.push(seen),
                        Some(Err(end)) => {
                            feed.end(end);
                            false
                        }
                        None => true,
                    }
                }
                None => {
                    let silent = match last {
                        None => now.duration_since(started) > REMOTE_ANSWER,
                        Some(at) => now.duration_since(at) > REMOTE_SILENCE,
                    };
                    if silent {
                        feed.end(WatchEnd::NodeLost);
                    }
                    !silent
                }
            }
        },
    );
    Ok((watching, live.user, live.target))
}
