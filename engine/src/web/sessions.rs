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
    if !req.policy.is_web_admin(&s.user, &s.roles) {
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
