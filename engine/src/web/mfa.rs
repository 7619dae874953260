//! Second factors for local users: TOTP (RFC 6238, `portcullis_core::totp`) enrolled from the
//! web app, with ten one-time recovery codes. Enrolled factors are durable records of the store
//! (`Store::factors`: the node's state database, or Redis with persistence), shared by a fleet.
//!
//! - A password sign-in of a user with a factor does not start a session: it answers
//!   `{"mfa":"totp","pending":…}`, and `POST /api/login/mfa` with that token and a code does.
//!   Codes are counted against the same throttle as passwords, and each is accepted once (the
//!   last TOTP step used is kept; a recovery code is removed when used).
//! - A user whose policy requires a second factor (`require_mfa`, for them or a role) and who has
//!   none signs in to a session that can only enrol one (`satisfied` is false until then).
//! - Enrolment: `POST /api/mfa/totp` shows a new secret (and its QR code), `POST
//!   /api/mfa/totp/confirm` with a first code records it and returns the recovery codes once; the
//!   session is then replaced by one signed in with the factor.

use super::api::{json_post, signed_in_any, store, WebRequest};
use super::response::Response;
use super::signin;
use crate::store::{key_of, RecordKind, ThrottleKey, ThrottleRule, WebSession};
use portcullis_core::audit::{AuditRecord, IdentityAction, IdentityRecord};
use portcullis_core::policy::Policy;
use portcullis_core::totp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a password sign-in waits for its second factor.
const PENDING_TTL: Duration = Duration::from_secs(300);
/// How long an enrolment waits for its first code.
const ENROLMENT_TTL: Duration = Duration::from_secs(600);
/// Failed codes are answered this late, like failed passwords.
const FAILURE_DELAY: Duration = Duration::from_millis(750);

/// A user's enrolled factors, as stored (JSON, with a schema version).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factors {
    pub(super) v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    totp: Option<Totp>,
    /// WebAuthn credentials (passkeys, security keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) passkeys: Vec<Passkey>,
    /// SHA-256 (hex) of each unused recovery code.
    #[serde(default)]
    pub(super) recovery: Vec<String>,
}

/// The schema of factor records this release writes and reads: 2 since passkeys (a release that
/// knows only 1 must not read a record with passkeys as "no factor").
pub(super) const FACTORS_SCHEMA: u32 = 2;

/// A WebAuthn credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Passkey {
    /// The credential id, base64url.
    pub id: String,
    /// COSE algorithm (-7 ES256, -8 EdDSA).
    pub alg: i32,
    /// The public key, base64url.
    pub key: String,
    /// The authenticator's signature counter last seen.
    pub count: u32,
    pub created: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Totp {
    /// The secret, base32.
    secret: String,
    /// The last step a code was accepted for: codes of that step or earlier are refused.
    #[serde(default)]
    last_step: u64,
    enrolled: u64,
}

impl Factors {
    /// The record as stored; one this release cannot read (damaged, or of a newer schema) is an
    /// error, never "no factor": the second factor must not fail open.
    pub(super) fn parse(text: Option<&str>) -> Result<Factors, Response> {
        match text {
            None => Ok(Factors::default()),
            Some(t) => serde_json::from_str::<Factors>(t)
                .ok()
                .filter(|f| f.v <= FACTORS_SCHEMA)
                .ok_or_else(|| {
                    tracing::error!("a second-factor record cannot be read: sign-in refused for its user");
                    Response::error(503, "the second factor cannot be checked; ask an administrator")
                }),
        }
    }

    pub fn has_totp(&self) -> bool {
        self.totp.is_some()
    }

    /// Any second factor enrolled.
    pub fn has_any(&self) -> bool {
        self.totp.is_some() || !self.passkeys.is_empty()
    }

    /// The second steps a sign-in of this user offers.
    pub fn methods(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.totp.is_some() {
            m.push("totp");
        }
        if !self.passkeys.is_empty() {
            m.push("webauthn");
        }
        m
    }
}

#[derive(Serialize, Deserialize)]
struct Pending {
    v: u32,
    user: String,
}

/// Wrong codes one password sign-in may be followed by.
const MAX_CODE_FAILURES: u32 = 5;

#[derive(Serialize, Deserialize)]
struct Enrolment {
    v: u32,
    secret: String,
}

/// Whether `session` meets its user's second-factor policy.
pub fn satisfied(policy: &Policy, session: &WebSession) -> bool {
    session.mfa || !policy.config.users.get(&session.user).is_some_and(|u| u.require_mfa)
}

pub(super) fn hash(code: &str) -> String {
    portcullis_core::secret::hex(&key_of(&totp::normalise_recovery(code)))
}

pub(super) fn audit(
    req: &WebRequest<'_>,
    action: IdentityAction,
    user: &str,
    method: &'static str,
    reason: Option<&str>,
) {
    req.shared.audit.record(&AuditRecord::Identity(IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action,
        user: Some(user.to_owned()),
        client: req.client.ip().to_string(),
        target: None,
        token_id: None,
        ttl_s: None,
        method: Some(method),
        reason: reason.map(str::to_owned),
    }));
}

/// After a right password: a session, or (the user has a factor) the second step.
pub async fn after_password(req: &WebRequest<'_>, user: String) -> Response {
    let factors = match store(req, req.web.store.factors(&user))
        .await
        .and_then(|t| Factors::parse(t.as_deref()))
    {
        Ok(f) => f,
        Err(r) => return r,
    };
    if !factors.has_any() {
        audit(req, IdentityAction::SignedIn, &user, "password", None);
        return super::api::start_session(req, user, None, false, req.policy.config.web.session_ttl).await;
    }
    let Ok(token) = portcullis_core::secret::random_base64url::<32>() else {
        return Response::error(503, "no randomness");
    };
    let value = serde_json::to_string(&Pending {
        v: 1,
        user: user.clone(),
    })
    .unwrap_or_default();
    let put = req
        .web
        .store
        .put_record(RecordKind::MfaPending, key_of(&token), value, PENDING_TTL);
    if let Err(r) = store(req, put).await {
        return r;
    }
    let methods = factors.methods();
    Response::json(
        200,
        serde_json::json!({ "mfa": methods[0], "methods": methods, "pending": token, "user": user }),
    )
}

#[derive(Deserialize)]
struct CodeBody {
    pending: String,
    code: String,
}

/// `POST /api/login/mfa`: the second step of a password sign-in.
pub async fn second_step(req: &WebRequest<'_>) -> Response {
    let CodeBody { pending, code } = match json_post(req, "{\"pending\":…,\"code\":…}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let state = req.web.store.as_ref();
    let record = match store(req, state.record(RecordKind::MfaPending, key_of(&pending))).await {
        Ok(Some(text)) => match serde_json::from_str::<Pending>(&text) {
            Ok(p) => p,
            Err(_) => return Response::error(401, "the sign-in expired; sign in again"),
        },
        Ok(None) => return Response::error(401, "the sign-in expired; sign in again"),
        Err(r) => return r,
    };
    let user = record.user.clone();
    let client = req.client;
    // Codes are guesses like passwords: the same counters, before the check.
    if let Err(r) = super::api::admit_attempt(req, &user, "totp").await {
        return r;
    }
    let method = match check_code(req, &user, &code).await {
        Ok(Some(method)) => method,
        Ok(None) => {
            tracing::info!(%client, user = ?user, "second factor refused");
            audit(req, IdentityAction::SignInFailed, &user, "totp", Some("wrong code"));
            // Counted atomically per pending sign-in (concurrent guesses each get their own
            // count); at the cap it is dropped: the password must be given again.
            let counter = ThrottleKey::User(format!(
                "\0mfa-pending\0{}",
                portcullis_core::secret::hex(&key_of(&pending))
            ));
            let rule = ThrottleRule {
                limit: MAX_CODE_FAILURES,
                window: PENDING_TTL,
            };
            let spent = match state.reserve_attempt(&[(counter, rule)]).await {
                Ok(crate::store::Attempt::Reserved { before }) => {
                    before.first().is_some_and(|n| n + 1 >= MAX_CODE_FAILURES)
                }
                Ok(crate::store::Attempt::Refused { .. }) | Err(_) => true,
            };
            if spent {
                let _ = state.take_record(RecordKind::MfaPending, key_of(&pending)).await;
            }
            glommio::timer::sleep(FAILURE_DELAY).await;
            if spent {
                return Response::error(401, "too many wrong codes; sign in again");
            }
            return Response::error(401, "invalid code");
        }
        Err(r) => return r,
    };
    // The pending sign-in is good once.
    match store(req, state.take_record(RecordKind::MfaPending, key_of(&pending))).await {
        Ok(Some(_)) => {}
        Ok(None) => return Response::error(401, "the sign-in expired; sign in again"),
        Err(r) => return r,
    }
    if let Err(r) = store(req, signin::attempt_succeeded(state, &user, client.ip())).await {
        return r;
    }
    audit(req, IdentityAction::SignedIn, &user, method, None);
    super::api::start_session(req, user, None, true, req.policy.config.web.session_ttl).await
}

/// Checks a TOTP code or a recovery code of `user`, and records its use (compare and set, so
/// two requests cannot both spend one code). `Ok(Some(method))` when it is right.
async fn check_code(req: &WebRequest<'_>, user: &str, code: &str) -> Result<Option<&'static str>, Response> {
    let state = req.web.store.as_ref();
    // A lost race (another request used a code meanwhile) is checked again, a few times.
    for _ in 0..3 {
        let text = store(req, state.factors(user)).await?;
        let mut factors = Factors::parse(text.as_deref())?;
        let now = portcullis_core::keys::unix_now();
        let method = if let Some(t) = factors.totp.as_mut() {
            let secret = totp::base32_decode(&t.secret).unwrap_or_default();
            match totp::verify(&secret, code, now, Some(t.last_step).filter(|s| *s > 0)) {
                Some(step) => {
                    t.last_step = step;
                    Some("password+totp")
                }
                None => None,
            }
        } else {
            None
        };
        let method = match method {
            Some(m) => m,
            None => {
                let h = hash(code);
                // Constant-time comparison of each stored hash (they are hashes of secrets).
                let found = factors
                    .recovery
                    .iter()
                    .position(|r| portcullis_core::secret::constant_time_eq(r.as_bytes(), h.as_bytes()));
                match found {
                    Some(i) if totp::normalise_recovery(code).len() == 12 => {
                        factors.recovery.remove(i);
                        "password+recovery_code"
                    }
                    _ => return Ok(None),
                }
            }
        };
        let new = serde_json::to_string(&factors).unwrap_or_default();
        if store(req, state.swap_factors(user, text, Some(new))).await? {
            return Ok(Some(method));
        }
    }
    Err(Response::error(503, "try again"))
}

/// `POST /api/mfa/totp`: a new secret to enrol (shown once, kept for `ENROLMENT_TTL`).
pub async fn enrol_begin(req: &WebRequest<'_>) -> Response {
    let (session, _) = match enrolling(req).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let Ok(secret) = portcullis_core::secret::random::<{ totp::SECRET_LEN }>() else {
        return Response::error(503, "no randomness");
    };
    let value = serde_json::to_string(&Enrolment {
        v: 1,
        secret: totp::base32(&secret),
    })
    .unwrap_or_default();
    let put = req
        .web
        .store
        .put_record(RecordKind::TotpEnrolment, enrolment_key(req), value, ENROLMENT_TTL);
    if let Err(r) = store(req, put).await {
        return r;
    }
    let issuer = format!("Portcullis {}", req.head.header("host").unwrap_or("gateway"));
    let uri = totp::otpauth_uri(&issuer, &session.user, &secret);
    let qr = match qrcodegen::QrCode::encode_text(&uri, qrcodegen::QrCodeEcc::Medium) {
        Ok(qr) => {
            let size = qr.size();
            let modules: String = (0..size)
                .flat_map(|y| (0..size).map(move |x| (x, y)))
                .map(|(x, y)| if qr.get_module(x, y) { '1' } else { '0' })
                .collect();
            serde_json::json!({ "size": size, "modules": modules })
        }
        Err(_) => serde_json::Value::Null,
    };
    Response::json(
        200,
        serde_json::json!({ "secret": totp::base32(&secret), "uri": uri, "qr": qr }),
    )
}

#[derive(Deserialize)]
struct ConfirmBody {
    code: String,
}

/// `POST /api/mfa/totp/confirm`: the first code proves the app holds the secret; the factor is
/// recorded, the recovery codes are returned (once), and the session is replaced by one signed
/// in with the factor.
pub async fn enrol_confirm(req: &WebRequest<'_>) -> Response {
    let ConfirmBody { code } = match json_post(req, "{\"code\":…}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let session = match signed_in_any(req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if session.only_target.is_some() {
        return Response::error(403, "sign in with your password to enrol a second factor");
    }
    let state = req.web.store.as_ref();
    let enrolment = match store(req, state.record(RecordKind::TotpEnrolment, enrolment_key(req))).await {
        Ok(Some(text)) => serde_json::from_str::<Enrolment>(&text).ok(),
        Ok(None) => None,
        Err(r) => return r,
    };
    let Some(secret) = enrolment.and_then(|e| totp::base32_decode(&e.secret)) else {
        return Response::error(404, "no enrolment in progress; start again");
    };
    let now = portcullis_core::keys::unix_now();
    let Some(step) = totp::verify(&secret, &code, now, None) else {
        glommio::timer::sleep(FAILURE_DELAY).await;
        return Response::error(401, "invalid code; check the app's clock and try again");
    };
    if let Err(r) = store(req, state.take_record(RecordKind::TotpEnrolment, enrolment_key(req))).await {
        return r;
    }
    let Ok(codes) = totp::recovery_codes() else {
        return Response::error(503, "no randomness");
    };
    let current = match store(req, state.factors(&session.user)).await {
        Ok(text) => text,
        Err(r) => return r,
    };
    // Checked again against what the swap below expects: a password-only session may enrol a
    // first factor, never replace one (even one enrolled since it began).
    match Factors::parse(current.as_deref()) {
        Ok(f) if f.has_any() && !session.mfa => {
            return Response::error(403, "sign in with your second factor to replace it")
        }
        Ok(_) => {}
        Err(r) => return r,
    }
    // Passkeys enrolled already are kept; the TOTP app and the recovery codes are new.
    let mut factors = match Factors::parse(current.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    factors.v = FACTORS_SCHEMA;
    factors.totp = Some(Totp {
        secret: totp::base32(&secret),
        last_step: step,
        enrolled: now,
    });
    factors.recovery = codes.iter().map(|c| hash(c)).collect();
    enrolled(req, session, current, &factors, &codes, "totp").await
}

/// Records a user's factors with one more enrolled (if they are still `current`), audits it, and
/// replaces the session by one signed in with it (the old one ends); the answer carries the
/// recovery codes to show once (none when the user had them already).
pub(super) async fn enrolled(
    req: &WebRequest<'_>,
    session: WebSession,
    current: Option<String>,
    factors: &Factors,
    codes: &[String],
    method: &'static str,
) -> Response {
    let state = req.web.store.as_ref();
    let new = serde_json::to_string(factors).unwrap_or_default();
    match store(req, state.swap_factors(&session.user, current, Some(new))).await {
        Ok(true) => {}
        Ok(false) => return Response::error(409, "the factors changed meanwhile; start again"),
        Err(r) => return r,
    }
    audit(req, IdentityAction::FactorEnrolled, &session.user, method, None);
    if let Err(r) = store(req, signin::end_session(state, req.head)).await {
        return r;
    }
    let ttl = req.policy.config.web.session_ttl;
    let renewed = WebSession {
        user: session.user,
        roles: session.roles,
        only_target: None,
        mfa: true,
    };
    match store(req, signin::start_session(state, renewed, ttl)).await {
        Ok(cookie) => Response::json(200, serde_json::json!({ "recovery_codes": codes }))
            .with_header("Set-Cookie", signin::set_cookie(&cookie, ttl)),
        Err(r) => r,
    }
}

/// The session that may begin enrolling a factor (a JSON POST from a password sign-in; when the
/// user has a factor already, a session signed in with it) and the user's current factors.
pub(super) async fn enrolling(req: &WebRequest<'_>) -> Result<(WebSession, Factors), Response> {
    json_post::<serde_json::Value>(req, "{}")?;
    let session = signed_in_any(req).await?;
    if session.only_target.is_some() {
        return Err(Response::error(
            403,
            "sign in with your password to enrol a second factor",
        ));
    }
    let factors = Factors::parse(store(req, req.web.store.factors(&session.user)).await?.as_deref())?;
    // Replacing or adding a factor takes a session signed in with one.
    if factors.has_any() && !session.mfa {
        return Err(Response::error(
            403,
            "sign in with your second factor to change your factors",
        ));
    }
    Ok((session, factors))
}

/// An enrolment belongs to the session that began it (by the SHA-256 of its cookie), not to the
/// user: another session of the same user cannot finish it.
fn enrolment_key(req: &WebRequest<'_>) -> crate::store::SecretKey {
    key_of(&format!(
        "totp-enrolment\0{}",
        signin::cookie(req.head).unwrap_or_default()
    ))
}

/// What `GET /api/session` says about the user's second factor.
pub async fn status(req: &WebRequest<'_>, session: &WebSession) -> Result<serde_json::Value, Response> {
    let text = store(req, req.web.store.factors(&session.user)).await?;
    let factors = Factors::parse(text.as_deref())?;
    Ok(serde_json::json!({
        "enrolled": factors.has_any(),
        "methods": factors.methods(),
        "passkeys": factors.passkeys.len(),
        "passkeys_available": req.policy.config.web.rp_id.is_some(),
        "verified": session.mfa,
        "required": req.policy.config.users.get(&session.user).is_some_and(|u| u.require_mfa),
        "recovery_codes_left": factors.recovery.len(),
    }))
}
