//! WebAuthn second factor (passkeys, security keys), with `[web] rp_id` set: enrolled from the
//! Security page, asked for after the password like a TOTP code. The ceremonies' checks are
//! `portcullis_core::webauthn`; this is their HTTP side.
//!
//! - `POST /api/mfa/webauthn`: creation options with a one-time challenge (bound to the session);
//!   `POST /api/mfa/webauthn/confirm`: the authenticator's answer, checked and recorded (the
//!   first factor of a user also gets recovery codes, and the session is replaced by one signed in
//!   with it).
//! - `POST /api/login/webauthn/begin` (a pending password sign-in): request options with a
//!   one-time challenge; `POST /api/login/webauthn`: the assertion, checked against the stored
//!   key and counter (counted like passwords), then the session.

use super::api::{json_post, signed_in_any, store, WebRequest};
use super::mfa::{audit, hash, Factors, Passkey};
use super::response::Response;
use super::signin;
use crate::store::{key_of, RecordKind, SecretKey};
use portcullis_core::audit::IdentityAction;
use portcullis_core::webauthn::{self as wa, b64url, b64url_decode};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a ceremony may take.
const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Passkeys one user may enrol.
const MAX_PASSKEYS: usize = 10;

#[derive(Serialize, Deserialize)]
struct Challenge {
    v: u32,
    challenge: String,
    user: String,
}

fn rp_id<'a>(req: &'a WebRequest<'_>) -> Result<&'a str, Response> {
    req.policy
        .config
        .web
        .rp_id
        .as_deref()
        .ok_or_else(|| Response::error(404, "passkeys are not configured on this gateway ([web] rp_id)"))
}

/// The origins a ceremony may come from: this gateway as the browser reached it when that name is
/// the relying party itself (never a subdomain: a page on another subdomain could relay a
/// ceremony), and the configured ones.
fn origins(req: &WebRequest<'_>, rp_id: &str) -> Vec<String> {
    let mut all = req.policy.config.web.origins.clone();
    if let Some(host) = req.head.header("host") {
        let name = host.rsplit_once(':').map_or(
            host,
            |(n, p)| if p.bytes().all(|b| b.is_ascii_digit()) { n } else { host },
        );
        if name.eq_ignore_ascii_case(rp_id) {
            all.push(format!("https://{host}"));
        }
    }
    all
}

async fn new_challenge(req: &WebRequest<'_>, key: SecretKey, user: &str) -> Result<String, Response> {
    let challenge =
        b64url(&portcullis_core::secret::random::<32>().map_err(|_| Response::error(503, "no randomness"))?);
    let value = serde_json::to_string(&Challenge {
        v: 1,
        challenge: challenge.clone(),
        user: user.to_owned(),
    })
    .unwrap_or_default();
    store(
        req,
        req.web
            .store
            .put_record(RecordKind::WebauthnChallenge, key, value, CHALLENGE_TTL),
    )
    .await?;
    Ok(challenge)
}

/// The challenge under `key`, taken (each is answered once).
async fn take_challenge(req: &WebRequest<'_>, key: SecretKey) -> Result<Challenge, Response> {
    match store(req, req.web.store.take_record(RecordKind::WebauthnChallenge, key)).await? {
        Some(text) => serde_json::from_str(&text).map_err(|_| Response::error(400, "no ceremony in progress")),
        None => Err(Response::error(
            400,
            "no ceremony in progress, or it expired; start again",
        )),
    }
}

fn registration_key(req: &WebRequest<'_>) -> SecretKey {
    key_of(&format!(
        "webauthn-register\0{}",
        signin::cookie(req.head).unwrap_or_default()
    ))
}

fn sign_in_key(pending: &str) -> SecretKey {
    key_of(&format!("webauthn-sign-in\0{pending}"))
}

/// `POST /api/mfa/webauthn`.
pub async fn register_begin(req: &WebRequest<'_>) -> Response {
    let rp = match rp_id(req) {
        Ok(rp) => rp,
        Err(r) => return r,
    };
    let (session, factors) = match super::mfa::enrolling(req).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if factors.passkeys.len() >= MAX_PASSKEYS {
        return Response::error(409, "too many passkeys; remove one first");
    }
    let challenge = match new_challenge(req, registration_key(req), &session.user).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let exclude: Vec<serde_json::Value> = factors
        .passkeys
        .iter()
        .map(|p| serde_json::json!({ "type": "public-key", "id": p.id }))
        .collect();
    Response::json(
        200,
        serde_json::json!({ "publicKey": {
            "challenge": challenge,
            "rp": { "id": rp, "name": "Portcullis" },
            "user": {
                "id": b64url(&key_of(&session.user)[..16]),
                "name": session.user,
                "displayName": session.user,
            },
            "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }, { "type": "public-key", "alg": -8 }],
            "timeout": CHALLENGE_TTL.as_millis() as u64,
            "attestation": "none",
            "authenticatorSelection": { "userVerification": "preferred", "residentKey": "discouraged" },
            "excludeCredentials": exclude,
        }}),
    )
}

#[derive(Deserialize)]
struct Registration {
    #[serde(rename = "clientDataJSON")]
    client_data: String,
    #[serde(rename = "attestationObject")]
    attestation: String,
}

/// `POST /api/mfa/webauthn/confirm`.
pub async fn register_finish(req: &WebRequest<'_>) -> Response {
    let body: Registration = match json_post(req, "{\"clientDataJSON\":…,\"attestationObject\":…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rp = match rp_id(req) {
        Ok(rp) => rp,
        Err(r) => return r,
    };
    let session = match signed_in_any(req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let challenge = match take_challenge(req, registration_key(req)).await {
        Ok(c) if c.user == session.user => c,
        Ok(_) => return Response::error(400, "no ceremony in progress"),
        Err(r) => return r,
    };
    let (Some(client), Some(attestation)) = (b64url_decode(&body.client_data), b64url_decode(&body.attestation)) else {
        return Response::error(400, "expected base64url fields");
    };
    let origins = origins(req, rp);
    let expect = wa::Expected {
        kind: "webauthn.create",
        challenge: &challenge.challenge,
        origins: &origins,
        rp_id: rp,
    };
    let (id, key, count) = match wa::register(&client, &attestation, &expect) {
        Ok(found) => found,
        Err(e) => return Response::error(400, &format!("the authenticator's answer is refused: {e}")),
    };
    let state = req.web.store.as_ref();
    let current = match store(req, state.factors(&session.user)).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut factors = match Factors::parse(current.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    // Checked again against what the swap expects (as for TOTP).
    if factors.has_any() && !session.mfa {
        return Response::error(403, "sign in with your second factor to add another");
    }
    let id = b64url(&id);
    if factors.passkeys.iter().any(|p| p.id == id) {
        return Response::error(409, "this authenticator is enrolled already");
    }
    let (alg, raw) = key.to_parts();
    factors.v = super::mfa::FACTORS_SCHEMA;
    factors.passkeys.push(Passkey {
        id,
        alg,
        key: b64url(raw),
        count,
        created: portcullis_core::keys::unix_now(),
    });
    // The first factor comes with recovery codes (a lost key must not lock the user out).
    let codes = if factors.recovery.is_empty() {
        match portcullis_core::totp::recovery_codes() {
            Ok(codes) => codes,
            Err(_) => return Response::error(503, "no randomness"),
        }
    } else {
        Vec::new()
    };
    if !codes.is_empty() {
        factors.recovery = codes.iter().map(|c| hash(c)).collect();
    }
    super::mfa::enrolled(req, session, current, &factors, &codes, "webauthn").await
}

#[derive(Deserialize)]
struct PendingBody {
    pending: String,
}

/// The user of a pending password sign-in.
async fn pending_user(req: &WebRequest<'_>, pending: &str) -> Result<String, Response> {
    let text = store(req, req.web.store.record(RecordKind::MfaPending, key_of(pending)))
        .await?
        .ok_or_else(|| Response::error(401, "the sign-in expired; sign in again"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| Response::error(401, "the sign-in expired"))?;
    v["user"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Response::error(401, "the sign-in expired"))
}

/// `POST /api/login/webauthn/begin`.
pub async fn sign_in_begin(req: &WebRequest<'_>) -> Response {
    let PendingBody { pending } = match json_post(req, "{\"pending\":…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rp = match rp_id(req) {
        Ok(rp) => rp,
        Err(r) => return r,
    };
    let user = match pending_user(req, &pending).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let factors = match store(req, req.web.store.factors(&user))
        .await
        .and_then(|t| Factors::parse(t.as_deref()))
    {
        Ok(f) => f,
        Err(r) => return r,
    };
    if factors.passkeys.is_empty() {
        return Response::error(400, "no passkey is enrolled");
    }
    let challenge = match new_challenge(req, sign_in_key(&pending), &user).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let allow: Vec<serde_json::Value> = factors
        .passkeys
        .iter()
        .map(|p| serde_json::json!({ "type": "public-key", "id": p.id }))
        .collect();
    Response::json(
        200,
        serde_json::json!({ "publicKey": {
            "challenge": challenge, "rpId": rp, "allowCredentials": allow,
            "userVerification": "preferred", "timeout": CHALLENGE_TTL.as_millis() as u64,
        }}),
    )
}

#[derive(Deserialize)]
struct Assertion {
    pending: String,
    id: String,
    #[serde(rename = "clientDataJSON")]
    client_data: String,
    #[serde(rename = "authenticatorData")]
    authenticator_data: String,
    signature: String,
}

/// `POST /api/login/webauthn`.
pub async fn sign_in_finish(req: &WebRequest<'_>) -> Response {
    let body: Assertion = match json_post(req, "{\"pending\":…,\"id\":…,\"clientDataJSON\":…,…}") {
        Ok(b) => b,
        Err(r) => return r,
    };
    let rp = match rp_id(req) {
        Ok(rp) => rp,
        Err(r) => return r,
    };
    let user = match pending_user(req, &body.pending).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let state = req.web.store.as_ref();
    let client = req.client;
    // Counted like a password: the same counters, before the check.
    if let Err(r) = super::api::admit_attempt(req, &user, "webauthn").await {
        return r;
    }
    let challenge = match take_challenge(req, sign_in_key(&body.pending)).await {
        Ok(c) if c.user == user => c,
        Ok(_) => return Response::error(400, "no ceremony in progress"),
        Err(r) => return r,
    };
    let decoded = (
        b64url_decode(&body.client_data),
        b64url_decode(&body.authenticator_data),
        b64url_decode(&body.signature),
    );
    let (Some(client_data), Some(auth_data), Some(signature)) = decoded else {
        return Response::error(400, "expected base64url fields");
    };
    let origins = origins(req, rp);
    let expect = wa::Expected {
        kind: "webauthn.get",
        challenge: &challenge.challenge,
        origins: &origins,
        rp_id: rp,
    };
    // Compare and set: two answers cannot both move one counter.
    let mut recorded = false;
    for _ in 0..3 {
        let current = match store(req, state.factors(&user)).await {
            Ok(t) => t,
            Err(r) => return r,
        };
        let mut factors = match Factors::parse(current.as_deref()) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let Some(passkey) = factors.passkeys.iter_mut().find(|p| p.id == body.id) else {
            audit(
                req,
                IdentityAction::SignInFailed,
                &user,
                "webauthn",
                Some("unknown credential"),
            );
            return Response::error(401, "this authenticator is not enrolled");
        };
        let key = match b64url_decode(&passkey.key).map(|k| wa::PublicKey::from_parts(passkey.alg, k)) {
            Some(Ok(k)) => k,
            _ => return Response::error(503, "a stored passkey cannot be read"),
        };
        match wa::authenticate(&client_data, &auth_data, &signature, &key, passkey.count, &expect) {
            Ok(count) => passkey.count = count,
            Err(e) => {
                tracing::info!(%client, user = ?user, "passkey refused: {e}");
                audit(
                    req,
                    IdentityAction::SignInFailed,
                    &user,
                    "webauthn",
                    Some(&e.to_string()),
                );
                return Response::error(401, "the authenticator's answer is refused");
            }
        }
        let new = serde_json::to_string(&factors).unwrap_or_default();
        match store(req, state.swap_factors(&user, current, Some(new))).await {
            Ok(true) => {
                recorded = true;
                break;
            }
            Ok(false) => continue,
            Err(r) => return r,
        }
    }
    if !recorded {
        return Response::error(503, "try again");
    }
    match store(req, state.take_record(RecordKind::MfaPending, key_of(&body.pending))).await {
        Ok(Some(_)) => {}
        Ok(None) => return Response::error(401, "the sign-in expired; sign in again"),
        Err(r) => return r,
    }
    if let Err(r) = store(req, signin::attempt_succeeded(state, &user, client.ip())).await {
        return r;
    }
    audit(req, IdentityAction::SignedIn, &user, "password+webauthn", None);
    super::api::start_session(req, user, None, true, req.policy.config.web.session_ttl).await
}
