//! The admin listener's routes: one function per route, each answering with an [`Answer`].
//!
//! | route                         | credential  | what                                      |
//! |-------------------------------|-------------|-------------------------------------------|
//! | `GET /healthz`                | none        | 200 while the process serves              |
//! | `GET /readyz`                 | none        | 200, or 503 while draining or the audit log is required and down |
//! | `GET /metrics`                | admin token | Prometheus text                           |
//! | `GET /v1/sessions`            | admin token | live sessions                             |
//! | `DELETE /v1/sessions/{id}`    | admin token | end one (Close 1008, `ended: terminated`) |
//! | `POST /v1/revocations`        | admin token | revoke a user or a token id; ends their live sessions (`ended: revoked`) |
//!
//! Every admin API request (not health, readiness or successful scrapes) is audited, refused
//! or not.

use crate::server::Shared;
use portcullis_core::audit::{now_rfc3339, rfc3339, AdminAction, AdminRecord, AuditRecord};
use portcullis_core::revocation::Revocation;
use portcullis_protocols::http::{self, HeadLimits, RequestHead};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

/// A complete answer; the connection closes after it.
pub struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
}

const JSON: &str = "application/json";
/// What Prometheus asks for and prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Answer {
    pub fn text(status: u16, body: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
        }
    }

    fn json(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            content_type: JSON,
            body: body.to_string(),
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        Answer::json(status, json!({ "error": message }))
    }

    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = http::response_head(self.status, self.content_type, self.body.len(), &[]);
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// What an authenticated request asks for.
enum Route<'a> {
    Metrics,
    Sessions,
    Terminate(&'a str),
    Revoke,
    ResetFactors(&'a str),
}

impl Route<'_> {
    fn action(&self) -> AdminAction {
        match self {
            Route::Metrics => AdminAction::ReadMetrics,
            Route::Sessions => AdminAction::ListSessions,
            Route::Terminate(_) => AdminAction::Terminate,
            // Refined once the body says which (user or token).
            Route::Revoke => AdminAction::RevokeUser,
            Route::ResetFactors(_) => AdminAction::ResetFactors,
        }
    }
}

/// Answers one request: `buf[..head_len]` is its head (already parsed once), the rest its body.
pub fn handle(buf: &[u8], head_len: usize, peer: SocketAddr, shared: &Shared) -> Answer {
    let limits = HeadLimits {
        max_bytes: buf.len().max(1),
        max_headers: 32,
    };
    let Ok(Some(head)) = http::parse_head(&buf[..head_len], limits) else {
        return Answer::text(400, "bad request");
    };
    let body = &buf[head_len..];
    let route = match (head.method, head.path) {
        ("GET", "/healthz") => return Answer::text(200, "ok"),
        ("GET", "/readyz") => return readiness(shared),
        ("GET", "/metrics") => Route::Metrics,
        ("GET", "/v1/sessions") => Route::Sessions,
        ("DELETE", p) if p.starts_with("/v1/sessions/") => Route::Terminate(&p["/v1/sessions/".len()..]),
        ("POST", "/v1/revocations") => Route::Revoke,
        ("DELETE", p) if p.starts_with("/v1/users/") && p.ends_with("/factors") => {
            Route::ResetFactors(&p["/v1/users/".len()..p.len() - "/factors".len()])
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/sessions" | "/v1/revocations") => {
            return Answer::error(405, "method not allowed")
        }
        (_, p) if p.starts_with("/v1/sessions/") => return Answer::error(405, "method not allowed"),
        _ => return Answer::error(404, "no such route"),
    };
    let mut record = AdminRecord {
        time: now_rfc3339(),
        admin: None,
        client: peer.to_string(),
        action: route.action(),
        subject: None,
        until: None,
        status: 0,
        sessions_ended: None,
        detail: None,
    };
    let now = portcullis_core::keys::unix_now();
    let admin = match shared.state.load().policy.authorize_admin(bearer(&head), now) {
        Ok(admin) => admin,
        Err(denial) => {
            record.status = denial.status();
            record.detail = Some(denial.to_string());
            tracing::info!(client = %peer, status = record.status, "admin request refused: {denial}");
            shared.audit.record(&AuditRecord::Admin(record));
            return Answer::error(denial.status(), &denial.to_string());
        }
    };
    record.admin = Some(admin.clone());
    let answer = match route {
        // Scrapes are frequent and read nothing sensitive: not audited when granted.
        Route::Metrics => return metrics(shared),
        Route::Sessions => sessions(shared),
        Route::Terminate(id) => {
            record.subject = Some(id.to_owned());
            terminate(shared, id, &admin, &mut record)
        }
        Route::Revoke => revoke(shared, body, &admin, now, &mut record),
        Route::ResetFactors(user) => {
            record.subject = Some(user.to_owned());
            reset_factors(shared, user)
        }
    };
    record.status = answer.status;
    tracing::info!(admin = %admin, action = ?record.action, subject = ?record.subject, status = answer.status, "admin request");
    shared.audit.record(&AuditRecord::Admin(record));
    answer
}

/// Removes `user`'s enrolled second factors (from every node's point of view: they are the
/// store's durable records). Their web sessions stay; their next password sign-in needs no code
/// (or, under `require_mfa`, leads to enrolment).
fn reset_factors(shared: &Shared, user: &str) -> Answer {
    let store = shared.web.store.clone();
    let user = user.to_owned();
    let reset = futures_lite::future::block_on(async move {
        for _ in 0..3 {
            let current = store.factors(&user).await?;
            if current.is_none() {
                return Ok(false);
            }
            if store.swap_factors(&user, current, None).await? {
                return Ok(true);
            }
        }
        Err(crate::store::StoreError::Unavailable(
            "the factors kept changing".into(),
        ))
    });
    match reset {
        Ok(true) => Answer::json(200, json!({ "reset": true })),
        Ok(false) => Answer::error(404, "this user has no second factor"),
        Err(e) => Answer::error(503, &e.to_string()),
    }
}

/// The admin token: from `Authorization: Bearer` only (never the query string, which ends up in
/// logs and histories).
fn bearer<'a>(head: &RequestHead<'a>) -> Option<&'a str> {
    let (scheme, token) = head.header("authorization")?.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn readiness(shared: &Shared) -> Answer {
    let state = shared.state.load();
    if shared.draining() {
        return Answer::json(503, json!({ "ready": false, "reason": "draining" }));
    }
    if state.policy.config.audit_required && !shared.audit.writable() {
        return Answer::json(
            503,
            json!({ "ready": false, "reason": "the audit log is required and cannot be written" }),
        );
    }
    if shared.store_refuses() {
        return Answer::json(
            503,
            json!({ "ready": false, "reason": "the state store does not answer (on_store_down = \"deny\")" }),
        );
    }
    let recording = &state.policy.config.recording;
    if let (true, Some(dir)) = (recording.required, &recording.dir) {
        if let Err(e) = crate::ssh::recorder::check_room(dir, recording.min_free_mb) {
            let reason = format!("recordings are required and cannot start: {e}");
            return Answer::json(503, json!({ "ready": false, "reason": reason }));
        }
    }
    Answer::json(200, json!({ "ready": true }))
}

fn metrics(shared: &Shared) -> Answer {
    Answer {
        status: 200,
        content_type: OPENMETRICS,
        body: crate::metrics::render(&shared.metric_sources()),
    }
}

fn sessions(shared: &Shared) -> Answer {
    match futures_lite::future::block_on(super::service::live_sessions(shared)) {
        (list, None) => Answer::json(200, json!({ "sessions": list })),
        // This node's only, and said so.
        (list, Some(partial)) => Answer::json(200, json!({ "sessions": list, "partial": partial })),
    }
}

fn terminate(shared: &Shared, id: &str, admin: &str, record: &mut AdminRecord) -> Answer {
    match futures_lite::future::block_on(super::service::terminate(shared, id, admin)) {
        Ok(()) => {
            record.sessions_ended = Some(1);
            Answer::json(202, json!({ "terminated": id }))
        }
        Err(e) => Answer::error(e.status, &e.message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    user: Option<String>,
    token_id: Option<String>,
    /// RFC 3339; absent: for good.
    until: Option<String>,
}

fn revoke(shared: &Shared, body: &[u8], admin: &str, now: u64, record: &mut AdminRecord) -> Answer {
    let Ok(body) = serde_json::from_slice::<RevokeBody>(body) else {
        return Answer::error(
            400,
            "expected {\"user\": …} or {\"token_id\": …}, and optionally \"until\"",
        );
    };
    let until = match body.until.as_deref().map(humantime::parse_rfc3339_weak) {
        None => None,
        Some(Ok(t)) => Some(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()),
        Some(Err(_)) => return Answer::error(400, "until: expected an RFC 3339 time, e.g. 2026-12-01T00:00:00Z"),
    };
    if until.is_some_and(|t| t <= now) {
        return Answer::error(400, "until is in the past");
    }
    record.until = until.map(|t| rfc3339(UNIX_EPOCH + Duration::from_secs(t)));
    let (revocation, subject) = match (body.user, body.token_id) {
        (Some(name), None) if !name.is_empty() => {
            record.action = AdminAction::RevokeUser;
            (
                Revocation::User {
                    name: name.clone(),
                    until,
                },
                name,
            )
        }
        (None, Some(id)) if !id.is_empty() => {
            record.action = AdminAction::RevokeToken;
            (Revocation::Token { id: id.clone(), until }, id)
        }
        _ => return Answer::error(400, "name exactly one of user and token_id"),
    };
    record.subject = Some(subject.clone());
    use crate::server::revoke::{revoke as apply, RevokeError};
    let ended = match futures_lite::future::block_on(apply(shared, revocation, admin, now)) {
        Ok(ended) => ended,
        Err(RevokeError::TooMany) => return Answer::error(507, "too many revocations"),
        Err(e) => {
            record.detail = Some(e.to_string());
            return Answer::error(503, &format!("{e}; try again"));
        }
    };
    record.sessions_ended = Some(ended);
    Answer::json(
        200,
        json!({ "revoked": subject, "until": record.until, "sessions_ended": ended }),
    )
}
