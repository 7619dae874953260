//! Single sign-on: OpenID Connect authorization code flow with PKCE (`[[oidc]]` providers).
//!
//! 1. `GET /api/oidc/{id}/start` (the sign-in page's button): the provider's discovery document
//!    (cached an hour), a one-time `state`, a `nonce` and a PKCE verifier kept in the store for
//!    10 minutes, a browser-binding cookie (so a callback link sent to someone else signs nobody
//!    in), and a redirect to the provider.
//! 2. `GET /api/oidc/callback?code&state`: the state is taken (once: a replayed callback is
//!    refused), the binding cookie checked, the code exchanged at the token endpoint (client
//!    secret, PKCE verifier), the ID token validated (`portcullis_core::oidc`), the user named
//!    (`id:name` unless the provider's `namespace` is off) and their groups mapped to roles; then
//!    a web session and a redirect to the app.
//!
//! Every call to the provider runs on the tokio runtime, bounded by `fetch::FETCH_TIMEOUT`. A
//! provider that does not answer gives a page that says so; local accounts still sign in.

use super::api::{store, WebRequest};
use super::fetch;
use super::response::{Body, Response};
use crate::store::{key_of, RecordKind};
use portcullis_core::audit::{AuditRecord, IdentityAction, IdentityRecord};
use portcullis_core::config::OidcProvider;
use portcullis_core::oidc::JwkSet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a sign-in may take at the provider.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Discovery documents and keys are fetched again after this.
const CACHE_TTL: Duration = Duration::from_secs(3600);
/// Keys are fetched again for an unknown key id at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(60);
/// The cookie binding a sign-in to the browser that started it (`SameSite=Lax`: the provider's
/// redirect back is a cross-site top-level navigation).
const BINDING_COOKIE: &str = "__Host-portcullis_oidc";

/// What a provider's discovery says, and its keys.
struct Discovered {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks: JwkSet,
    fetched: Instant,
}

/// The providers' documents, per provider id and issuer (a reload may change either).
/// A provider's id, its CA file and that file's modification time (a replaced CA file is read
/// again).
type TlsKey = (String, Option<std::path::PathBuf>, Option<std::time::SystemTime>);

#[derive(Default)]
pub struct OidcCache {
    discovered: Mutex<HashMap<(String, String), Arc<Discovered>>>,
    /// TLS client settings per provider id and CA file (built once, not per sign-in).
    tls: Mutex<HashMap<TlsKey, Arc<rustls::ClientConfig>>>,
}

#[derive(Serialize, Deserialize)]
struct SignInState {
    v: u32,
    provider: String,
    nonce: String,
    verifier: String,
    /// SHA-256 (hex) of the binding cookie.
    binding: String,
}

fn tls_for(req: &WebRequest<'_>, provider: &OidcProvider) -> Result<Arc<rustls::ClientConfig>, String> {
    let modified = provider
        .ca
        .as_ref()
        .and_then(|ca| std::fs::metadata(ca).and_then(|m| m.modified()).ok());
    let key = (provider.id.clone(), provider.ca.clone(), modified);
    let mut cache = req.web.oidc.tls.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(tls) = cache.get(&key) {
        return Ok(tls.clone());
    }
    let trust = match &provider.ca {
        Some(ca) => crate::tls::ServerTrust::CaFile(ca),
        None => crate::tls::ServerTrust::WebPki,
    };
    let tls = crate::tls::client_config(trust).map_err(|e| e.to_string())?;
    cache.insert(key, tls.clone());
    Ok(tls)
}

/// The provider's documents: cached if fetched less than `max_age` ago, else fetched (on the
/// tokio runtime).
async fn discover(req: &WebRequest<'_>, provider: &OidcProvider, max_age: Duration) -> Result<Arc<Discovered>, String> {
    let cache_key = (provider.id.clone(), provider.issuer.clone());
    let cached = req
        .web
        .oidc
        .discovered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key)
        .cloned();
    if let Some(d) = cached.filter(|d| d.fetched.elapsed() < max_age) {
        return Ok(d);
    }
    let tls = tls_for(req, provider)?;
    let issuer = provider.issuer.clone();
    let task = req.web.ssh_runtime.spawn(async move {
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc = fetch::get_json(tls.clone(), &url)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let field = |k: &str| {
            doc[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("discovery document lacks {k}"))
        };
        let (found_issuer, authorization_endpoint, token_endpoint, jwks_uri) = (
            field("issuer")?,
            field("authorization_endpoint")?,
            field("token_endpoint")?,
            field("jwks_uri")?,
        );
        // OIDC Discovery 4.3: the document must be the issuer's own.
        if found_issuer.trim_end_matches('/') != issuer {
            return Err(format!("discovery names another issuer ({found_issuer})"));
        }
        let jwks = fetch::get_json(tls, &jwks_uri)
            .await
            .map_err(|e| format!("{jwks_uri}: {e}"))?;
        let jwks: JwkSet = serde_json::from_value(jwks).map_err(|e| format!("{jwks_uri}: {e}"))?;
        Ok::<_, String>(Discovered {
            issuer: found_issuer,
            authorization_endpoint,
            token_endpoint,
            jwks,
            fetched: Instant::now(),
        })
    });
    let found = Arc::new(task.await.map_err(|e| e.to_string())??);
    req.web
        .oidc
        .discovered
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(cache_key, found.clone());
    Ok(found)
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// A page that says what went wrong, with a way back to the sign-in page.
fn page(status: u16, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in · Portcullis</title></head>\
         <body><main><h1>Sign-in did not complete</h1><p id=\"oidc-error\">{}</p><p><a href=\"/#/\">Back to the sign-in page</a> \
         (local accounts sign in with their password).</p></main></body></html>",
        html_escape(message)
    );
    let mut r = Response::json(status, serde_json::Value::Null);
    r.content_type = "text/html; charset=utf-8";
    r.body = Body::Owned(body.into_bytes());
    r.reason = Some(message.to_owned());
    r
}

fn redirect(location: String) -> Response {
    let mut r = Response::json(302, serde_json::Value::Null);
    r.body = Body::Empty;
    r.headers.push(("Location", location));
    r
}

/// `GET /api/oidc`: the providers the sign-in page offers.
pub fn providers(req: &WebRequest<'_>) -> Response {
    let list: Vec<serde_json::Value> = req
        .policy
        .config
        .oidc
        .iter()
        .map(|p| serde_json::json!({ "id": p.id, "name": p.name }))
        .collect();
    Response::json(200, serde_json::json!({ "providers": list }))
}

/// `GET /api/oidc/{id}/start`.
pub async fn start(req: &WebRequest<'_>, id: &str) -> Response {
    let Some(provider) = req.policy.config.oidc.iter().find(|p| p.id == id) else {
        return page(404, "No such sign-in provider.");
    };
    // Unauthenticated, and each start stores a record and asks the provider: counted per client.
    if let Err(r) = super::device::count_start(req).await {
        return r;
    }
    // Fetched afresh: a provider that is down is said to be so here, not after a redirect to
    // a page the browser cannot load.
    let discovered = match discover(req, provider, Duration::ZERO).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(provider = %provider.id, "single sign-on unavailable: {e}");
            return page(
                502,
                &format!(
                    "Sign-in with {} is unavailable: the identity provider does not answer. Try again later.",
                    provider.name
                ),
            );
        }
    };
    let (Ok(state), Ok(nonce), Ok(verifier), Ok(binding)) = (
        portcullis_core::secret::random_base64url::<32>(),
        portcullis_core::secret::random_base64url::<32>(),
        portcullis_core::secret::random_base64url::<32>(),
        portcullis_core::secret::random_base64url::<32>(),
    ) else {
        return page(503, "No randomness.");
    };
    let record = SignInState {
        v: 1,
        provider: provider.id.clone(),
        nonce: nonce.clone(),
        verifier: verifier.clone(),
        binding: portcullis_core::secret::hex(&key_of(&binding)),
    };
    let value = serde_json::to_string(&record).unwrap_or_default();
    let put = req
        .web
        .store
        .put_record(RecordKind::OidcState, key_of(&state), value, STATE_TTL);
    if let Err(r) = store(req, put).await {
        return r;
    }
    let enc = fetch::form_encode;
    let location = format!(
        "{}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
        discovered.authorization_endpoint,
        if discovered.authorization_endpoint.contains('?') { "&" } else { "?" },
        enc(&provider.client_id),
        enc(&provider.redirect_uri),
        enc(&provider.scopes.join(" ")),
        state,
        nonce,
        portcullis_core::oidc::pkce_challenge(&verifier),
    );
    redirect(location).with_header(
        "Set-Cookie",
        format!(
            "{BINDING_COOKIE}={binding}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
            STATE_TTL.as_secs()
        ),
    )
}

fn binding_cookie<'a>(req: &WebRequest<'a>) -> Option<&'a str> {
    req.head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(BINDING_COOKIE).and_then(|v| v.strip_prefix('=')))
}

/// `GET /api/oidc/callback`.
pub async fn callback(req: &WebRequest<'_>) -> Response {
    let Some(state) = req.head.query_param("state") else {
        return page(400, "The provider's answer has no state.");
    };
    let record = match store(req, req.web.store.take_record(RecordKind::OidcState, key_of(&state))).await {
        Ok(Some(text)) => serde_json::from_str::<SignInState>(&text).ok(),
        Ok(None) => None,
        Err(r) => return r,
    };
    let Some(record) = record else {
        return page(400, "This sign-in was already completed or has expired. Sign in again.");
    };
    // The browser that started the sign-in, and no other.
    let bound = binding_cookie(req).is_some_and(|b| {
        portcullis_core::secret::constant_time_eq(
            portcullis_core::secret::hex(&key_of(b)).as_bytes(),
            record.binding.as_bytes(),
        )
    });
    if !bound {
        return page(400, "This sign-in was started in another browser. Sign in again here.");
    }
    let Some(provider) = req.policy.config.oidc.iter().find(|p| p.id == record.provider) else {
        return page(400, "The sign-in provider is no longer configured.");
    };
    if let Some(error) = req.head.query_param("error") {
        let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        return page(403, &format!("{} refused the sign-in ({error}).", provider.name));
    }
    let Some(code) = req.head.query_param("code") else {
        return page(400, "The provider's answer has no code.");
    };
    let claims = match exchange(req, provider, &code, &record).await {
        Ok(c) => c,
        Err(e) => {
            // The detail (paths, endpoints) is for the operator's log and the audit, not the page.
            tracing::warn!(provider = %provider.id, "single sign-on refused: {e}");
            record_failure(req, provider, &e);
            return page(
                502,
                &format!("Sign-in with {} failed; the gateway's log says why.", provider.name),
            );
        }
    };
    let (user, groups) = match portcullis_core::oidc::identity(&claims, provider) {
        Ok(found) => found,
        Err(e) => return page(403, &format!("Sign-in with {} failed: {e}.", provider.name)),
    };
    let mut roles: Vec<String> = req
        .policy
        .config
        .roles
        .values()
        .filter(|r| r.groups.iter().any(|g| groups.contains(g)))
        .map(|r| r.name.clone())
        .collect();
    roles.sort();
    let configured = req.policy.config.users.contains_key(&user);
    if roles.is_empty() && !configured {
        record_failure(req, provider, &format!("{user} holds no role"));
        return page(
            403,
            &format!("Signed in as {user}, but that account has no access to this gateway. Ask an administrator."),
        );
    }
    let now = portcullis_core::keys::unix_now();
    if req.shared.revocations.is_revoked(&user, None, now) {
        return page(403, "Access is revoked.");
    }
    req.shared.audit.record(&AuditRecord::Identity(IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action: IdentityAction::SignedIn,
        user: Some(user.clone()),
        client: req.client.ip().to_string(),
        target: None,
        token_id: None,
        ttl_s: None,
        method: Some("oidc"),
        reason: None,
    }));
    tracing::info!(client = %req.client, user = %user, provider = %provider.id, ?roles, "signed in with single sign-on");
    // The provider's sign-in (with its own second-factor policy) stands for the second factor.
    let ttl = req.policy.config.web.session_ttl;
    let session = crate::store::WebSession {
        user,
        roles,
        only_target: None,
        mfa: true,
    };
    match store(req, super::signin::start_session(req.web.store.as_ref(), session, ttl)).await {
        Ok(cookie) => redirect("/#/targets".into())
            .with_header("Set-Cookie", super::signin::set_cookie(&cookie, ttl))
            .with_header(
                "Set-Cookie",
                format!("{BINDING_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"),
            ),
        Err(r) => r,
    }
}

fn record_failure(req: &WebRequest<'_>, provider: &OidcProvider, why: &str) {
    req.shared.audit.record(&AuditRecord::Identity(IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action: IdentityAction::SignInFailed,
        user: None,
        client: req.client.ip().to_string(),
        target: None,
        token_id: None,
        ttl_s: None,
        method: Some("oidc"),
        reason: Some(format!("{}: {why}", provider.id)),
    }));
}

/// The code for tokens at the provider, and the ID token validated.
async fn exchange(
    req: &WebRequest<'_>,
    provider: &OidcProvider,
    code: &str,
    record: &SignInState,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let discovered = discover(req, provider, CACHE_TTL).await?;
    let tls = tls_for(req, provider)?;
    let (secret_file, client_id, redirect_uri) = (
        provider.client_secret_file.clone(),
        provider.client_id.clone(),
        provider.redirect_uri.clone(),
    );
    let (endpoint, code, verifier) = (
        discovered.token_endpoint.clone(),
        code.to_owned(),
        record.verifier.clone(),
    );
    let task = req.web.ssh_runtime.spawn(async move {
        // Read here, off the cores (a small local file), at each use: a rotated secret needs no
        // reload. Never logged.
        let secret = std::fs::read_to_string(&secret_file)
            .map_err(|e| format!("cannot read the client secret {}: {e}", secret_file.display()))?;
        let auth =
            portcullis_core::oidc::basic_auth(&fetch::form_encode(&client_id), &fetch::form_encode(secret.trim()));
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ];
        fetch::post_form(tls, &endpoint, &[("Authorization", auth.as_str())], &form)
            .await
            .map_err(|e| format!("the token endpoint: {e}"))
    });
    let answer = task.await.map_err(|e| e.to_string())??;
    let id_token = answer["id_token"].as_str().ok_or("the provider sent no ID token")?;
    let leeway = req.policy.config.auth.leeway.as_secs();
    let validate = |d: &Discovered| {
        let expect = portcullis_core::oidc::Expected {
            issuer: d.issuer.as_str(),
            client_id: &provider.client_id,
            nonce: &record.nonce,
            now: portcullis_core::keys::unix_now(),
            leeway,
        };
        portcullis_core::oidc::validate_id_token(id_token, &d.jwks, &expect)
    };
    match validate(&discovered) {
        // A key the provider rotated in since the keys were fetched: fetch them again, once.
        Err(portcullis_core::oidc::IdTokenError::UnknownKey) => {
            let fresh = discover(req, provider, JWKS_REFETCH).await?;
            validate(&fresh).map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    }
}
