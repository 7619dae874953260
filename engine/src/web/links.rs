//! Shared links: an administrator lets a person without an account open one session to one
//! target in the browser, for a set time and optionally once (once across the fleet).
//!
//! A link is `https://GATEWAY/#/link/<id>.<secret>`: the secret travels in the URL fragment, which
//! browsers never send in a request line (so it is in no access log), and the page posts it in a
//! JSON body. The store keeps the link's id, target, expiry and the SHA-256 of the secret, never
//! the secret; it is compared in constant time. Opening a link starts a web session for the guest
//! user `link:<id>` bound to the target (`Policy` lets such a guest reach exactly that target,
//! through the browser routes only), lasting no longer than the link. A single-use link is spent
//! in the store (`use_once`) when opened. Revoking one removes it and revokes its guest user
//! (through the one revocation path: fleet-wide, its live sessions end). Every step is audited:
//! `admin` records for making and revoking, `identity` `link_used` (or `sign_in_failed` with
//! `method: link`) for each use, and the sessions themselves under the guest user.

use super::api::{admit_attempt, json_post, start_session, store, WebRequest};
use super::response::Response;
use super::sessions::{administrator, record};
use portcullis_core::audit::{AdminAction, AuditRecord, IdentityAction};
use portcullis_core::config::Protocol;
use portcullis_core::policy::LINK_USER_PREFIX;
use portcullis_core::revocation::Revocation;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Shortest and longest validity of a link.
const MIN_TTL: Duration = Duration::from_secs(1);
const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const SCHEMA: u32 = 1;

/// A link as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkRecord {
    v: u32,
    id: String,
    target: String,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
    created_by: String,
    created: String,
    /// Unix seconds.
    expires: u64,
    once: bool,
}

impl LinkRecord {
    fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "target": self.target, "created_by": self.created_by, "created": self.created,
            "expires": portcullis_core::audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(self.expires)),
            "once": self.once,
        })
    }
}

fn guest(id: &str) -> String {
    format!("{LINK_USER_PREFIX}{id}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    target: String,
    ttl_seconds: u64,
    #[serde(default)]
    once: bool,
}

/// `POST /api/admin/links` `{"target","ttl_seconds","once"}`: `201 {"id","url",…}`; the URL (with
/// its secret) is shown this once.
pub async fn create(req: &WebRequest<'_>) -> Response {
    let CreateBody {
        target,
        ttl_seconds,
        once,
    } = match json_post(req, "{\"target\":…,\"ttl_seconds\":…,\"once\":…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let admin = match administrator(req, AdminAction::CreateLink).await {
        Ok(s) => s.user,
        Err(r) => return r,
    };
    let Some(host) = req.head.header("host").filter(|h| super::rdpfile::is_host(h)) else {
        return Response::error(400, "missing or invalid Host");
    };
    let ttl = Duration::from_secs(ttl_seconds);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Response::error(400, "ttl_seconds: from 1 s to 7 days");
    }
    // Only what a browser route opens: an SSH terminal or a remote desktop.
    match req.policy.config.targets.get(&target) {
        Some(t) if matches!(t.protocol, Protocol::Ssh | Protocol::Rdp) => {}
        Some(_) => return Response::error(400, "only SSH and RDP targets open in the browser"),
        None => return Response::error(404, "unknown target"),
    }
    let (Ok(id), Ok(secret)) = (
        portcullis_core::secret::random_hex::<8>(),
        portcullis_core::secret::random_base64url::<32>(),
    ) else {
        return Response::error(503, "no randomness");
    };
    let now = portcullis_core::keys::unix_now();
    let link = LinkRecord {
        v: SCHEMA,
        id: id.clone(),
        target: target.clone(),
        secret_sha256: portcullis_core::secret::hex(&Sha256::digest(secret.as_bytes())),
        created_by: admin.clone(),
        created: portcullis_core::audit::now_rfc3339(),
        expires: now + ttl.as_secs(),
        once,
    };
    let value = serde_json::to_string(&link).unwrap_or_default();
    let mut r = record(req, AdminAction::CreateLink, Some(&admin));
    r.subject = Some(id.clone());
    r.detail = Some(format!("target {target}, {} s, once: {once}", ttl.as_secs()));
    let answer = match store(req, req.web.store.put_link(&id, value, link.expires)).await {
        Ok(()) => {
            let mut body = link.public();
            body["url"] = format!("https://{host}/#/link/{id}.{secret}").into();
            Response::json(201, body)
        }
        Err(r) => r,
    };
    r.status = answer.status;
    req.shared.audit.record(&AuditRecord::Admin(r));
    answer
}

/// The live links, parsed (expired ones are dropped from the store as they are seen).
async fn live_links(req: &WebRequest<'_>) -> Result<Vec<LinkRecord>, Response> {
    let now = portcullis_core::keys::unix_now();
    let mut live = Vec::new();
    for value in store(req, req.web.store.links()).await? {
        match serde_json::from_str::<LinkRecord>(&value) {
            Ok(link) if link.expires > now => live.push(link),
            Ok(link) => {
                let _ = store(req, req.web.store.remove_link(&link.id)).await;
            }
            Err(_) => {}
        }
    }
    live.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(live)
}

/// `GET /api/admin/links`: `{"links":[{id,target,created_by,created,expires,once}]}`.
pub async fn list(req: &WebRequest<'_>) -> Response {
    if let Err(r) = administrator(req, AdminAction::CreateLink).await {
        return r;
    }
    match live_links(req).await {
        Ok(links) => {
            // What a link may open: the targets a browser route reaches.
            let mut targets: Vec<&str> = req
                .policy
                .config
                .targets
                .values()
                .filter(|t| matches!(t.protocol, Protocol::Ssh | Protocol::Rdp))
                .map(|t| t.name.as_str())
                .collect();
            targets.sort_unstable();
            Response::json(
                200,
                serde_json::json!({
                    "links": links.iter().map(LinkRecord::public).collect::<Vec<_>>(),
                    "targets": targets,
                }),
            )
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    id: String,
}

/// `POST /api/admin/links/revoke` `{"id"}`: the link stops working and its live sessions end.
pub async fn revoke(req: &WebRequest<'_>) -> Response {
    let RevokeBody { id } = match json_post(req, "{\"id\":…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let admin = match administrator(req, AdminAction::RevokeLink).await {
        Ok(s) => s.user,
        Err(r) => return r,
    };
    let mut r = record(req, AdminAction::RevokeLink, Some(&admin));
    r.subject = Some(id.clone());
    let link = match store(req, req.web.store.link(&id)).await {
        Ok(Some(v)) => serde_json::from_str::<LinkRecord>(&v).ok(),
        Ok(None) => None,
        Err(resp) => return resp,
    };
    let Some(link) = link else {
        r.status = 404;
        req.shared.audit.record(&AuditRecord::Admin(r));
        return Response::error(404, "no such link");
    };
    let _ = store(req, req.web.store.remove_link(&id)).await;
    let now = portcullis_core::keys::unix_now();
    let revocation = Revocation::User {
        name: guest(&id),
        until: Some(link.expires),
    };
    let answer = match crate::server::revoke::revoke(req.shared, revocation, &admin, now).await {
        Ok(ended) => {
            r.sessions_ended = Some(ended);
            Response::json(200, serde_json::json!({ "revoked": id, "sessions_ended": ended }))
        }
        Err(e) => {
            r.detail = Some(e.to_string());
            Response::json(200, serde_json::json!({ "revoked": id, "warning": e.to_string() }))
        }
    };
    r.status = answer.status;
    req.shared.audit.record(&AuditRecord::Admin(r));
    answer
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    link: String,
}

/// `POST /api/link` `{"link":"<id>.<secret>"}` (the fragment of the link): a guest session for the
/// link's target (`Set-Cookie`), `200 {"target","protocol"}`; any refusal is the same `403`.
pub async fn open(req: &WebRequest<'_>) -> Response {
    let OpenBody { link } = match json_post(req, "{\"link\":…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some((id, secret)) = link.split_once('.').filter(|(id, s)| {
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !s.is_empty() && s.len() <= 64
    }) else {
        return Response::error(400, "not a link");
    };
    let user = guest(id);
    // Counted like sign-ins (per client and per link): guessing is throttled.
    if let Err(r) = admit_attempt(req, &user, "link").await {
        return r;
    }
    let refuse = |why: &str| {
        super::mfa::audit(req, IdentityAction::SignInFailed, &user, "link", Some(why));
        Response::error(403, "this link is not valid (expired, used up or revoked)")
    };
    let stored = match store(req, req.web.store.link(id)).await {
        Ok(v) => v.and_then(|v| serde_json::from_str::<LinkRecord>(&v).ok()),
        Err(r) => return r,
    };
    let Some(stored) = stored else {
        return refuse("unknown, expired or revoked link");
    };
    let digest = portcullis_core::secret::hex(&Sha256::digest(secret.as_bytes()));
    if !portcullis_core::secret::constant_time_eq(digest.as_bytes(), stored.secret_sha256.as_bytes()) {
        return refuse("wrong secret");
    }
    let now = portcullis_core::keys::unix_now();
    if stored.expires <= now {
        return refuse("expired");
    }
    let left = Duration::from_secs(stored.expires - now);
    if stored.once {
        let spend = req
            .web
            .store
            .use_once(crate::store::key_of(&format!("link:{id}")), left);
        match store(req, spend).await {
            Ok(true) => {}
            Ok(false) => return refuse("used already"),
            Err(r) => return r,
        }
    }
    let protocol = req
        .policy
        .config
        .targets
        .get(&stored.target)
        .map(|t| t.protocol.as_str())
        .unwrap_or("");
    let mut r = portcullis_core::audit::IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action: IdentityAction::LinkUsed,
        user: Some(user.clone()),
        client: req.client.ip().to_string(),
        target: Some(stored.target.clone()),
        token_id: None,
        ttl_s: Some(left.as_secs()),
        method: Some("link"),
        reason: None,
    };
    let ttl = req.policy.config.web.session_ttl.min(left);
    let started = start_session(req, user, Some(stored.target.clone()), true, ttl).await;
    if started.status != 200 {
        r.action = IdentityAction::SignInFailed;
        r.reason = Some("the session could not start".into());
        req.shared.audit.record(&AuditRecord::Identity(r));
        return started;
    }
    req.shared.audit.record(&AuditRecord::Identity(r));
    // A link that opened is not a guess: its attempt is given back.
    let _ = store(
        req,
        super::signin::attempt_succeeded(req.web.store.as_ref(), &guest(id), req.client.ip()),
    )
    .await;
    let mut answer = Response::json(
        200,
        serde_json::json!({ "target": stored.target, "protocol": protocol }),
    );
    answer.headers = started.headers;
    answer
}

/// For a grant to a shared link's guest (`link:<id>`): the link's expiry (Unix seconds), which the
/// session must end by; `Ok(None)` for any other user. `Err`: the link is gone (expired, revoked)
/// or the store cannot say (fail closed): no new session.
pub async fn guest_expiry(store: &dyn crate::store::Store, user: &str) -> Result<Option<u64>, &'static str> {
    let Some(id) = user.strip_prefix(LINK_USER_PREFIX) else {
        return Ok(None);
    };
    let link = match store.link(id).await {
        Ok(Some(v)) => serde_json::from_str::<LinkRecord>(&v).ok(),
        Ok(None) => None,
        Err(_) => return Err("the state store is unavailable"),
    };
    match link {
        Some(link) if link.expires > portcullis_core::keys::unix_now() => Ok(Some(link.expires)),
        _ => Err("the shared link expired or was revoked"),
    }
}
