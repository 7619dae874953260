//! `portcullis login`: a device-authorization flow in the spirit of RFC 8628, and the tokens a
//! logged-in CLI fetches. No token is ever shown to the user or put on a command line.
//!
//! 1. The CLI asks for a code (`POST /v1/device/code`, no credential; counted against the
//!    address's sign-in attempts): a secret device code it keeps, and a short user code.
//! 2. The user opens `/device?code=…` in the web app, signs in as usual, sees where the request
//!    came from and approves (`POST /api/device`, with the sign-in cookie and the origin check).
//! 3. The CLI, polling `POST /v1/device/token` with its device code, receives a login credential:
//!    a token signed by the gateway with the `login` scope, valid `[auth] login_ttl`, which opens
//!    nothing itself.
//! 4. With it the CLI fetches short-lived access tokens per target (`POST /v1/token`; the policy's
//!    `authorize` decides, as for every route), lists its targets (`GET /v1/targets`), and ends
//!    the login (`POST /v1/logout`: the credential is revoked like any token, fleet-wide).
//!
//! Codes live in the store (shared by a fleet): a request by the SHA-256 of its user code, the
//! answer by the SHA-256 of the device code, each taken once.

use super::api::{signed_in, store, WebRequest};
use super::response::Response;
use crate::store::{key_of, RecordKind, ThrottleKey, ThrottleRule};
use portcullis_core::audit::{AuditRecord, IdentityAction, IdentityRecord, Via};
use portcullis_core::policy::{Credential, Destination};
use portcullis_core::revocation::Revocation;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a code waits for approval.
const CODE_TTL: Duration = Duration::from_secs(600);
/// How often the CLI should poll, in seconds.
const POLL_INTERVAL: u64 = 2;
/// User codes: 8 letters without vowels (no words) or look-alikes, shown as `XXXX-XXXX`:
/// 20^8 = 2.6e10 codes, and only signed-in users may try them.
const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

#[derive(Serialize, Deserialize)]
struct PendingLogin {
    v: u32,
    /// The SHA-256 of the device code, hex.
    device: String,
    /// The address that asked (shown to the approving user).
    client: String,
    requested: u64,
}

#[derive(Serialize, Deserialize)]
struct LoginAnswer {
    v: u32,
    user: String,
    approved: bool,
    /// Roles of the approving session (single sign-on): the credential carries them.
    #[serde(default)]
    roles: Vec<String>,
}

/// The user code in its canonical form (`BCDF-GHJK`), from what a user may type.
fn canonical(code: &str) -> Option<String> {
    let letters: String = code
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (letters.len() == 8 && letters.bytes().all(|b| ALPHABET.contains(&b)))
        .then(|| format!("{}-{}", &letters[..4], &letters[4..]))
}

fn user_code() -> Result<String, portcullis_core::secret::RandomError> {
    let bytes = portcullis_core::secret::random::<8>()?;
    // 256 % 20 != 0: the bias (at most 1/256 per letter) does not make codes guessable.
    let letters: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    Ok(format!("{}-{}", &letters[..4], &letters[4..]))
}

fn audit(req: &WebRequest<'_>, action: IdentityAction, user: Option<&str>) -> IdentityRecord {
    IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action,
        user: user.map(str::to_owned),
        client: req.client.ip().to_string(),
        target: None,
        token_id: None,
        ttl_s: None,
        method: None,
        reason: None,
    }
}

fn record(req: &WebRequest<'_>, r: IdentityRecord) {
    req.shared.audit.record(&AuditRecord::Identity(r));
}

/// The gateway's signer, or the answer when it has none.
fn minter<'a>(req: &'a WebRequest<'_>) -> Result<&'a portcullis_core::keys::Minter, Response> {
    req.minter
        .ok_or_else(|| Response::error(404, "this gateway does not issue tokens (no [auth] token_private_key)"))
}

/// `POST /v1/device/code`.
pub async fn code(req: &WebRequest<'_>) -> Response {
    if let Err(r) = minter(req) {
        return r;
    }
    // A JSON request: a page of another site cannot send one without a preflight.
    if !is_json(req) {
        return Response::error(415, "expected Content-Type: application/json");
    }
    if let Err(r) = count_start(req).await {
        return r;
    }
    let (Ok(device_code), Ok(user_code)) = (portcullis_core::secret::random_base64url::<32>(), user_code()) else {
        return Response::error(503, "no randomness");
    };
    let pending = PendingLogin {
        v: 1,
        device: portcullis_core::secret::hex(&key_of(&device_code)),
        client: req.client.ip().to_string(),
        requested: portcullis_core::keys::unix_now(),
    };
    let value = serde_json::to_string(&pending).unwrap_or_default();
    let put = req
        .web
        .store
        .put_record(RecordKind::DeviceRequest, key_of(&user_code), value, CODE_TTL);
    if let Err(r) = store(req, put).await {
        return r;
    }
    record(req, audit(req, IdentityAction::DeviceRequested, None));
    let host = req.head.header("host").unwrap_or("localhost");
    Response::json(
        200,
        serde_json::json!({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": format!("https://{host}/device"),
            "verification_uri_complete": format!("https://{host}/device?code={user_code}"),
            "expires_in": CODE_TTL.as_secs(),
            "interval": POLL_INTERVAL,
        }),
    )
}

fn is_json(req: &WebRequest<'_>) -> bool {
    req.head.header("content-type").is_some_and(|v| {
        v.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Counts an unauthenticated start (a device code, a single sign-on redirect) against the
/// client, apart from its sign-in attempts: each one stores a record, so a client cannot fill
/// the store. `Err` is the answer (429) when it is at the limit.
pub(super) async fn count_start(req: &WebRequest<'_>) -> Result<(), Response> {
    let rules = req.policy.config.web.throttle;
    let address = portcullis_core::net::client_key(req.client.ip());
    let keys = [(
        ThrottleKey::Starts(address),
        ThrottleRule {
            limit: rules.per_address,
            window: rules.window,
        },
    )];
    match store(req, req.web.store.reserve_attempt(&keys)).await? {
        crate::store::Attempt::Reserved { .. } => Ok(()),
        crate::store::Attempt::Refused { retry_after } => {
            let secs = retry_after.as_secs().max(1);
            Err(
                Response::error(429, &format!("too many sign-in starts; try again in {secs} s"))
                    .with_header("Retry-After", secs.to_string()),
            )
        }
    }
}

/// `GET /api/device/{code}`: what the approving user is shown.
pub async fn request(req: &WebRequest<'_>, code: &str) -> Response {
    let session = match signed_in(req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if session.only_target.is_some() {
        return Response::error(403, "sign in with your password to approve a login");
    }
    let Some(code) = canonical(code) else {
        return Response::error(404, "unknown or expired code");
    };
    match store(req, req.web.store.record(RecordKind::DeviceRequest, key_of(&code))).await {
        Ok(Some(text)) => match serde_json::from_str::<PendingLogin>(&text) {
            Ok(p) => {
                // A request from elsewhere than the approving browser is worth a second look
                // (someone may have sent this user their code).
                let same = p.client == req.client.ip().to_string();
                Response::json(
                    200,
                    serde_json::json!({ "code": code, "client": p.client, "requested": p.requested, "same_address": same }),
                )
            }
            Err(_) => Response::error(404, "unknown or expired code"),
        },
        Ok(None) => Response::error(404, "unknown or expired code"),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct AnswerBody {
    code: String,
    approve: bool,
}

/// `POST /api/device`: the signed-in user approves (or denies) a pending login, once.
pub async fn answer(req: &WebRequest<'_>) -> Response {
    let AnswerBody { code, approve } = match super::api::json_post(req, "{\"code\":…,\"approve\":true|false}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let session = match signed_in(req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if session.only_target.is_some() {
        return Response::error(403, "sign in with your password to approve a login");
    }
    let Some(code) = canonical(&code) else {
        return Response::error(404, "unknown or expired code");
    };
    let pending = match store(req, req.web.store.take_record(RecordKind::DeviceRequest, key_of(&code))).await {
        Ok(Some(text)) => serde_json::from_str::<PendingLogin>(&text).ok(),
        Ok(None) => None,
        Err(r) => return r,
    };
    let Some(device) = pending.and_then(|p| decode_key(&p.device)) else {
        return Response::error(404, "unknown or expired code");
    };
    let value = serde_json::to_string(&LoginAnswer {
        v: 1,
        user: session.user.clone(),
        approved: approve,
        roles: session.roles.clone(),
    })
    .unwrap_or_default();
    let put = req
        .web
        .store
        .put_record(RecordKind::DeviceAnswer, device, value, CODE_TTL);
    if let Err(r) = store(req, put).await {
        return r;
    }
    let action = if approve {
        IdentityAction::DeviceApproved
    } else {
        IdentityAction::DeviceDenied
    };
    record(req, audit(req, action, Some(&session.user)));
    tracing::info!(user = %session.user, approve, "device login answered");
    Response::json(200, serde_json::json!({ "approved": approve }))
}

fn decode_key(hex: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

#[derive(Deserialize)]
struct PollBody {
    device_code: String,
}

/// RFC 8628 3.5: errors the CLI reads by name.
fn poll_error(error: &str, status: u16) -> Response {
    Response::json(status, serde_json::json!({ "error": error }))
}

/// `POST /v1/device/token`: pending until approved; then the login credential, once.
pub async fn poll(req: &WebRequest<'_>) -> Response {
    let minter = match minter(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if !is_json(req) {
        return Response::error(415, "expected Content-Type: application/json");
    }
    let Ok(PollBody { device_code }) = serde_json::from_slice::<PollBody>(req.body) else {
        return Response::error(400, "expected {\"device_code\":…}");
    };
    let answer = match store(
        req,
        req.web
            .store
            .take_record(RecordKind::DeviceAnswer, key_of(&device_code)),
    )
    .await
    {
        Ok(Some(text)) => serde_json::from_str::<LoginAnswer>(&text).ok(),
        Ok(None) => return poll_error("authorization_pending", 400),
        Err(r) => return r,
    };
    let Some(answer) = answer.filter(|a| a.approved) else {
        return poll_error("access_denied", 403);
    };
    let now = portcullis_core::keys::unix_now();
    if req.policy.user_of(&answer.user, &answer.roles).is_none() {
        return poll_error("access_denied", 403);
    }
    // A single sign-on user's roles are frozen in the credential: it lasts no longer than a web
    // sign-in would (then they log in again, and their groups are read again).
    let ttl = if answer.roles.is_empty() {
        req.policy.config.auth.login_ttl
    } else {
        req.policy.config.auth.login_ttl.min(req.policy.config.web.session_ttl)
    };
    let scope = Some(portcullis_protocols::token::LOGIN_SCOPE);
    let Ok((credential, claims)) = minter.mint_with_roles(&answer.user, &answer.roles, "", scope, ttl, now, None)
    else {
        return Response::error(503, "cannot sign the login credential");
    };
    let mut r = audit(req, IdentityAction::LoginIssued, Some(&answer.user));
    r.token_id = Some(claims.jti.clone());
    r.ttl_s = Some(ttl.as_secs());
    record(req, r);
    Response::json(
        200,
        serde_json::json!({
            "credential": credential, "user": answer.user, "expires_in": ttl.as_secs(),
        }),
    )
}

#[derive(Deserialize)]
struct TokenRequest {
    target: String,
}

/// `POST /v1/token`: an access token for one target, for a logged-in CLI.
pub async fn token(req: &WebRequest<'_>) -> Response {
    let minter = match minter(req) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let now = portcullis_core::keys::unix_now();
    let bearer = req.head.bearer_token();
    let login = match req.policy.login_credential(bearer.as_deref(), now) {
        Ok(c) => c,
        Err(d) => return Response::error(d.status(), &d.to_string()),
    };
    let Ok(TokenRequest { target }) = serde_json::from_slice::<TokenRequest>(req.body) else {
        return Response::error(400, "expected {\"target\":…}");
    };
    // The policy decides as for a tunnel opened by this user.
    let credential = Credential::WebSession {
        user: &login.sub,
        only_target: None,
        roles: &login.roles,
    };
    let grant = match req
        .policy
        .authorize(credential, Destination::Name(&target), Via::Tunnel, now)
    {
        Ok(g) => g,
        Err(d) => return Response::error(d.status(), &d.to_string()),
    };
    // Never past the login itself: its revocation (until its end) then covers the token's life.
    let ttl = req
        .policy
        .config
        .auth
        .issued_token_ttl
        .min(Duration::from_secs(login.exp.saturating_sub(now).max(1)));
    let Ok((token, claims)) = minter.mint_with_roles(
        &grant.user,
        &grant.roles,
        &grant.target.name,
        None,
        ttl,
        now,
        Some(&login.jti),
    ) else {
        return Response::error(503, "cannot sign the token");
    };
    let mut r = audit(req, IdentityAction::TokenIssued, Some(&grant.user));
    r.target = Some(grant.target.name.clone());
    r.token_id = Some(claims.jti);
    r.ttl_s = Some(ttl.as_secs());
    record(req, r);
    Response::json(
        200,
        serde_json::json!({ "token": token, "target": grant.target.name, "expires_in": ttl.as_secs() }),
    )
}

/// `GET /v1/targets`: the logged-in user's targets (for `portcullis ssh-config`).
pub async fn targets(req: &WebRequest<'_>) -> Response {
    let now = portcullis_core::keys::unix_now();
    let bearer = req.head.bearer_token();
    let login = match req.policy.login_credential(bearer.as_deref(), now) {
        Ok(c) => c,
        Err(d) => return Response::error(d.status(), &d.to_string()),
    };
    let targets: Vec<serde_json::Value> = req
        .policy
        .targets_of(&login.sub, None, &login.roles)
        .into_iter()
        // A logged-in CLI reaches targets natively: not those kept to the browser.
        .filter(|t| t.native)
        .map(|t| serde_json::json!({ "name": t.name, "protocol": t.protocol.as_str() }))
        .collect();
    Response::json(200, serde_json::json!({ "user": login.sub, "targets": targets }))
}

/// `POST /v1/logout`: the credential is revoked until it would have expired.
pub async fn logout(req: &WebRequest<'_>) -> Response {
    let now = portcullis_core::keys::unix_now();
    let bearer = req.head.bearer_token();
    let login = match req.policy.login_credential(bearer.as_deref(), now) {
        Ok(c) => c,
        Err(d) => return Response::error(d.status(), &d.to_string()),
    };
    let revocation = Revocation::Token {
        id: login.jti.clone(),
        until: Some(login.exp.saturating_add(req.policy.config.auth.leeway.as_secs())),
    };
    if let Err(e) = crate::server::revoke::revoke(req.shared, revocation, &login.sub, now).await {
        tracing::warn!(user = %login.sub, "logout: {e}");
        return Response::error(503, &format!("{e}; try again"));
    }
    let mut r = audit(req, IdentityAction::LoginRevoked, Some(&login.sub));
    r.token_id = Some(login.jti);
    record(req, r);
    Response::json(200, serde_json::json!({ "logged_out": login.sub }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_canonical_and_typed_forgivingly() {
        for _ in 0..100 {
            let code = user_code().unwrap();
            assert_eq!(canonical(&code).as_deref(), Some(code.as_str()));
            assert_eq!(
                canonical(&code.to_lowercase().replace('-', " ")).as_deref(),
                Some(code.as_str())
            );
        }
        assert_eq!(canonical("BCDF-GHJ"), None);
        assert_eq!(canonical("ABCD-EFGH"), None, "vowels are never in codes");
        assert_eq!(canonical("BCDF-GHJK-L"), None);
        assert_eq!(decode_key(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(decode_key("zz"), None);
    }
}
