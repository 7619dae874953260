//! The web app's HTTP API (see `web/API.md`): sign-in, session, tickets, recordings, and the
//! checks in front of the terminal WebSocket. One function per route of
//! `portcullis_core::route::WebRoute`; the policy's `authorize` is the only yes for a target.

use super::response::{Body, Response};
use super::signin;
use super::{assets, device, mfa, oidc, passkeys, recordings, WebState};
use crate::blocking::Pools;
use crate::store::WebSession;
use portcullis_core::audit::Via;
use portcullis_core::config::Protocol;
use portcullis_core::policy::{Credential, Destination, Grant, Policy};
use portcullis_core::route::WebRoute;
use portcullis_protocols::http::{self, RequestHead};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Failed sign-ins are answered this late, to slow guessing without holding a thread.
const FAILURE_DELAY: Duration = Duration::from_millis(750);

/// One request to the web app.
pub struct WebRequest<'a> {
    pub head: &'a RequestHead<'a>,
    pub body: &'a [u8],
    pub client: SocketAddr,
    pub policy: &'a Policy,
    pub web: &'a WebState,
    pub pools: &'a Pools,
    /// How long a call to the store or a file read may take (the request timeout).
    pub limit: Duration,
    /// Process-wide services (the audit log, revocations).
    pub shared: &'a crate::server::Shared,
    /// The gateway's token signer, when it has a private key.
    pub minter: Option<&'a portcullis_core::keys::Minter>,
}

/// A terminal the checks allowed: what the terminal handler needs to start it.
pub struct TerminalStart {
    pub grant: Grant,
    pub cols: u16,
    pub rows: u16,
    pub accept: Vec<u8>,
}

pub enum Action {
    Respond(Response),
    Terminal(Box<TerminalStart>),
    Watch(Box<super::sessions::WatchStart>),
}

pub async fn handle(req: &WebRequest<'_>, route: WebRoute<String>) -> Action {
    let respond = Action::Respond;
    match route {
        WebRoute::Asset { path } => respond(asset(req.head, &path)),
        WebRoute::Terminal { target } => terminal(req, &target).await,
        WebRoute::Login => respond(login(req).await),
        WebRoute::LoginToken => respond(login_token(req).await),
        WebRoute::Logout => respond(logout(req).await),
        WebRoute::Session => respond(session_info(req).await),
        WebRoute::RdpTicket => respond(rdp_ticket(req).await),
        WebRoute::RdpFile => respond(super::rdpfile::download(req).await),
        WebRoute::LiveSessions => respond(super::sessions::list(req).await),
        WebRoute::TerminateSession => respond(super::sessions::terminate(req).await),
        WebRoute::AuditSearch => respond(super::auditlog::search(req).await),
        WebRoute::Links => respond(super::links::list(req).await),
        WebRoute::LinkCreate => respond(super::links::create(req).await),
        WebRoute::LinkRevoke => respond(super::links::revoke(req).await),
        WebRoute::LinkOpen => respond(super::links::open(req).await),
        WebRoute::Watch { session } => super::sessions::watch(req, &session).await,
        WebRoute::Recordings => respond(match replay_dir(req).await {
            Ok(dir) => recordings::list(req.pools, dir, req.limit).await,
            Err(r) => r,
        }),
        WebRoute::Recording { id } => respond(match replay_dir(req).await {
            Ok(dir) => recordings::open(req.pools, dir, &id, req.limit).await,
            Err(r) => r,
        }),
        WebRoute::DeviceCode => respond(device::code(req).await),
        WebRoute::DeviceToken => respond(device::poll(req).await),
        WebRoute::DeviceRequest { code } => respond(device::request(req, &code).await),
        WebRoute::DeviceAnswer => respond(device::answer(req).await),
        WebRoute::IssueToken => respond(device::token(req).await),
        WebRoute::Targets => respond(device::targets(req).await),
        WebRoute::LoginEnd => respond(device::logout(req).await),
        WebRoute::LoginMfa => respond(mfa::second_step(req).await),
        WebRoute::TotpBegin => respond(mfa::enrol_begin(req).await),
        WebRoute::TotpConfirm => respond(mfa::enrol_confirm(req).await),
        WebRoute::OidcProviders => respond(oidc::providers(req)),
        WebRoute::OidcStart { id } => respond(oidc::start(req, &id).await),
        WebRoute::OidcCallback => respond(oidc::callback(req).await),
        WebRoute::PasskeyBegin => respond(passkeys::register_begin(req).await),
        WebRoute::PasskeyConfirm => respond(passkeys::register_finish(req).await),
        WebRoute::LoginPasskeyBegin => respond(passkeys::sign_in_begin(req).await),
        WebRoute::LoginPasskey => respond(passkeys::sign_in_finish(req).await),
    }
}

fn asset(head: &RequestHead<'_>, path: &str) -> Response {
    let Some(a) = assets::get(path) else {
        return Response::error(404, "not found");
    };
    // Revalidated on every load (the assets change with the binary), sent again only when they
    // did: app.js carries the RDP client's WebAssembly and is large. Gzipped when the client
    // takes it; each encoding has its own (strong) ETag.
    let gzip = a
        .gzip
        .filter(|_| head.header("accept-encoding").is_some_and(assets::accepts_gzip));
    let (body, etag) = match gzip {
        Some(gz) => (gz, format!("\"{}-gz\"", a.etag)),
        None => (a.body, format!("\"{}\"", a.etag)),
    };
    let fresh = head
        .header("if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut headers = vec![
        ("Cache-Control", "no-cache".to_owned()),
        ("ETag", etag),
        ("Vary", "Accept-Encoding".to_owned()),
    ];
    if gzip.is_some() {
        headers.push(("Content-Encoding", "gzip".to_owned()));
    }
    Response {
        status: if fresh { 304 } else { 200 },
        content_type: a.content_type,
        headers,
        body: if fresh { Body::Empty } else { Body::Static(body) },
        reason: None,
    }
}

/// Browsers send `Origin` on POSTs and WebSocket upgrades: it must be this gateway (as the
/// browser reached it) or one the configuration names.
pub(super) fn origin_ok(head: &RequestHead<'_>, policy: &Policy) -> bool {
    let (Some(origin), Some(host)) = (head.header("origin"), head.header("host")) else {
        return false;
    };
    origin == format!("https://{host}") || policy.config.web.origins.iter().any(|o| o == origin)
}

/// A JSON POST from the gateway's own pages: the origin check, then the body as `T` (`Err` is
/// the answer: 403 cross-origin, 400 with `expected` when the body does not parse).
pub(super) fn json_post<T: serde::de::DeserializeOwned>(req: &WebRequest<'_>, expected: &str) -> Result<T, Response> {
    if !origin_ok(req.head, req.policy) {
        return Err(Response::error(403, "cross-origin request refused"));
    }
    serde_json::from_slice(req.body).map_err(|_| Response::error(400, &format!("expected {expected}")))
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    // Not an error line per request: the store says once when it goes down and comes back.
    tracing::debug!("web sign-in state unavailable: {e}");
    Response::error(
        503,
        "sign-in is unavailable: the state store does not answer; try again later",
    )
}

/// A call to the state store, bounded by the request timeout: `Err` is the answer (503) when it
/// fails or does not answer in time. Callers fail closed.
pub(super) async fn store<T, E: std::fmt::Display>(
    req: &WebRequest<'_>,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Response> {
    match crate::server::timeout(req.limit, call).await {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(unavailable(e)),
        None => Err(unavailable("the state store did not answer in time")),
    }
}

/// The signed-in session of the request, meeting its user's second-factor policy: `Err` is
/// the answer when there is none (401), or when it still has to enrol a factor (403).
pub(super) async fn signed_in(req: &WebRequest<'_>) -> Result<WebSession, Response> {
    let session = signed_in_any(req).await?;
    if !mfa::satisfied(req.policy, &session) {
        return Err(Response::error(
            403,
            "a second factor is required: enrol one first (Security page)",
        ));
    }
    Ok(session)
}

/// The signed-in session, whether or not it meets the second-factor policy (for enrolment).
pub(super) async fn signed_in_any(req: &WebRequest<'_>) -> Result<WebSession, Response> {
    store(req, signin::current(req.web.store.as_ref(), req.head))
        .await?
        .ok_or_else(|| Response::error(401, "not signed in"))
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(req: &WebRequest<'_>) -> Response {
    let LoginBody { user, password } = match json_post(req, "{\"user\":…,\"password\":…}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let state = req.web.store.as_ref();
    let client = req.client;
    if let Err(r) = admit_attempt(req, &user, "password").await {
        return r;
    }
    let hash = req.policy.config.users.get(&user).and_then(|u| u.password_hash.clone());
    // Verify against a fixed dummy hash for unknown users, so timing does not reveal who exists.
    let phc = hash
        .clone()
        .unwrap_or_else(|| portcullis_core::passwd::DUMMY_HASH.to_owned());
    let verified = match req
        .pools
        .hashing
        .run(move || portcullis_core::passwd::verify(&password, &phc))
    {
        Ok(check) => check.await.unwrap_or(false),
        Err(e) => {
            tracing::warn!(%client, "sign-in refused: {e}");
            return Response::error(503, "too many sign-ins at once; try again in a moment")
                .with_header("Retry-After", "1".into());
        }
    };
    if !(verified && hash.is_some()) {
        // The attempt stays counted.
        tracing::info!(%client, user = ?user, "sign-in failed");
        sign_in_failed(req, &user);
        glommio::timer::sleep(FAILURE_DELAY).await;
        return Response::error(401, "invalid user or password");
    }
    if let Err(r) = store(req, signin::attempt_succeeded(state, &user, client.ip())).await {
        return r;
    }
    tracing::info!(%client, user = ?user, "password accepted");
    mfa::after_password(req, user).await
}

/// Counts a sign-in guess of `user` (a password, a code, a passkey answer) before it is checked,
/// and waits the delay the throttle asks for; `Err` is the answer (429, audited as `method`) when
/// the client is at its limit. One throttle for every step of a sign-in.
pub(super) async fn admit_attempt(req: &WebRequest<'_>, user: &str, method: &'static str) -> Result<(), Response> {
    let rules = req.policy.config.web.throttle;
    match store(
        req,
        signin::begin_attempt(req.web.store.as_ref(), user, req.client.ip(), &rules),
    )
    .await?
    {
        signin::Admission::Check { delay } => {
            if !delay.is_zero() {
                glommio::timer::sleep(delay).await;
            }
            Ok(())
        }
        signin::Admission::Refused { retry_after } => {
            let secs = retry_after.as_secs().max(1);
            tracing::info!(client = %req.client, user = ?user, method, "sign-in refused: too many attempts");
            crate::metrics::with(|m| m.refused(crate::metrics::RefusalKind::Throttle));
            if method != "password" {
                super::mfa::audit(
                    req,
                    portcullis_core::audit::IdentityAction::SignInFailed,
                    user,
                    method,
                    Some("throttled"),
                );
            }
            Err(Response::json(
                429,
                serde_json::json!({ "error": format!("too many failed sign-ins; try again in {secs} s"), "retry_after": secs }),
            )
            .with_header("Retry-After", secs.to_string()))
        }
    }
}

/// A failed password, audited (the name as given: it may be no user at all; bounded by the
/// throttle like the attempts themselves).
fn sign_in_failed(req: &WebRequest<'_>, user: &str) {
    use portcullis_core::audit::{AuditRecord, IdentityAction, IdentityRecord};
    let name: String = user.chars().take(64).collect();
    req.shared.audit.record(&AuditRecord::Identity(IdentityRecord {
        time: portcullis_core::audit::now_rfc3339(),
        action: IdentityAction::SignInFailed,
        user: Some(name),
        client: req.client.ip().to_string(),
        target: None,
        token_id: None,
        ttl_s: None,
        method: Some("password"),
        reason: Some("invalid user or password".into()),
    }));
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

async fn login_token(req: &WebRequest<'_>) -> Response {
    let TokenBody { token } = match json_post(req, "{\"token\":…}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let now = portcullis_core::keys::unix_now();
    let claims = match req.policy.sign_in_token(&token, now) {
        Ok(c) => c,
        Err(denial) => {
            tracing::info!(client = %req.client, "token sign-in failed: {denial}");
            return Response::error(denial.status(), &denial.to_string());
        }
    };
    let ttl = req
        .policy
        .config
        .web
        .session_ttl
        .min(Duration::from_secs(claims.exp.saturating_sub(now)));
    if claims.once {
        // Spent here: the web session it opens is its one use.
        let left = Duration::from_secs(claims.exp.saturating_sub(now)) + req.policy.config.auth.leeway;
        let key = crate::store::key_of(&claims.jti);
        match store(req, req.web.store.use_once(key, left.max(Duration::from_secs(1)))).await {
            Ok(true) => {}
            Ok(false) => return Response::error(403, "this single-use token was used already"),
            Err(r) => return r,
        }
    }
    tracing::info!(client = %req.client, user = %claims.sub, "signed in with a token");
    // A token is its issuer's proof of who the user is: it stands for the second factor too.
    start_session_with_roles(req, claims.sub, claims.roles, Some(claims.tgt), true, ttl).await
}

/// Starts a web session (`mfa`: signed in with a second factor, or a token).
pub(super) async fn start_session(
    req: &WebRequest<'_>,
    user: String,
    only_target: Option<String>,
    mfa: bool,
    ttl: Duration,
) -> Response {
    start_session_with_roles(req, user, Vec::new(), only_target, mfa, ttl).await
}

/// Starts a web session for a user who holds `roles` (from single sign-on).
pub(super) async fn start_session_with_roles(
    req: &WebRequest<'_>,
    user: String,
    roles: Vec<String>,
    only_target: Option<String>,
    mfa: bool,
    ttl: Duration,
) -> Response {
    let session = WebSession {
        user: user.clone(),
        roles,
        only_target,
        mfa,
    };
    match store(req, signin::start_session(req.web.store.as_ref(), session, ttl)).await {
        Ok(cookie) => Response::json(200, serde_json::json!({ "user": user }))
            .with_header("Set-Cookie", signin::set_cookie(&cookie, ttl)),
        Err(r) => r,
    }
}

async fn logout(req: &WebRequest<'_>) -> Response {
    // A cross-site page must not sign users out either.
    if !origin_ok(req.head, req.policy) {
        return Response::error(403, "cross-origin request refused");
    }
    if let Err(r) = store(req, signin::end_session(req.web.store.as_ref(), req.head)).await {
        return r;
    }
    Response::json(200, serde_json::json!({})).with_header("Set-Cookie", signin::set_cookie("", Duration::ZERO))
}

async fn session_info(req: &WebRequest<'_>) -> Response {
    let s = match signed_in_any(req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let factor = match mfa::status(req, &s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Until a required factor is enrolled, the session lists nothing it could open.
    let usable = mfa::satisfied(req.policy, &s);
    let targets: Vec<serde_json::Value> = req
        .policy
        .targets_of(&s.user, s.only_target.as_deref(), &s.roles)
        .into_iter()
        .filter(|_| usable)
        .map(|t| {
            let credentials = if t.ssh.gateway_credentials() { "gateway" } else { "user" };
            serde_json::json!({
                "name": t.name, "protocol": t.protocol.as_str(), "credentials": credentials,
                "clipboard": t.clipboard, "native": t.native,
            })
        })
        .collect();
    let can_replay = req
        .policy
        .may_replay(
            &s.user,
            s.only_target.as_deref(),
            &s.roles,
            portcullis_core::keys::unix_now(),
        )
        .is_ok()
        && usable;
    Response::json(
        200,
        serde_json::json!({
            "user": s.user, "targets": targets, "can_replay": can_replay, "mfa": factor,
            "admin": usable && s.only_target.is_none() && req.policy.is_web_admin(&s.user, &s.roles),
        }),
    )
}

#[derive(Deserialize)]
struct TicketBody {
    target: String,
}

/// The signed-in browser's grant to `target` over `via`, as the policy decides for its user (its
/// roles, and the one target a token sign-in or shared link is limited to). `Err`: the answer.
pub(super) async fn signed_in_grant(req: &WebRequest<'_>, target: &str, via: Via) -> Result<Grant, Response> {
    let s = signed_in(req).await?;
    let credential = Credential::WebSession {
        user: &s.user,
        only_target: s.only_target.as_deref(),
        roles: &s.roles,
    };
    let now = portcullis_core::keys::unix_now();
    req.policy
        .authorize(credential, Destination::Name(target), via, now)
        .map_err(|d| Response::error(d.status(), &d.to_string()))
}

/// A one-time `proxy_auth` for the IronRDP web client to open `target` through `/v1/rdp`.
async fn rdp_ticket(req: &WebRequest<'_>) -> Response {
    let TicketBody { target } = match json_post(req, "{\"target\":…}") {
        Ok(body) => body,
        Err(r) => return r,
    };
    let grant = match signed_in_grant(req, &target, Via::WebRdp).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match crate::server::timeout(
        req.limit,
        super::links::guest_expiry(req.web.store.as_ref(), &grant.user),
    )
    .await
    {
        Some(Ok(_)) => {}
        Some(Err(why)) => return Response::error(403, why),
        None => return Response::error(503, "the state store did not answer in time"),
    }
    match store(
        req,
        signin::issue_ticket(req.web.store.as_ref(), &grant.user, &grant.target.name, &grant.roles),
    )
    .await
    {
        Ok(ticket) => Response::json(
            200,
            serde_json::json!({ "ticket": ticket, "destination": grant.target.name, "path": "/v1/rdp" }),
        ),
        Err(r) => r,
    }
}

/// The recordings directory, when the signed-in user may replay.
async fn replay_dir(req: &WebRequest<'_>) -> Result<std::path::PathBuf, Response> {
    let s = signed_in(req).await?;
    req.policy
        .may_replay(
            &s.user,
            s.only_target.as_deref(),
            &s.roles,
            portcullis_core::keys::unix_now(),
        )
        .map_err(|d| Response::error(d.status(), &d.to_string()))?;
    req.policy
        .config
        .recording
        .dir
        .clone()
        .ok_or_else(|| Response::error(404, "recording is not configured"))
}

async fn terminal(req: &WebRequest<'_>, target: &str) -> Action {
    let refuse = |status: u16, msg: &str| Action::Respond(Response::error(status, msg));
    let upgrade = match http::websocket_upgrade(req.head) {
        Ok(u) => u,
        Err(e) => return refuse(e.status(), &e.to_string()),
    };
    // The cookie is ambient: without this check any site could open a terminal as the user.
    if !origin_ok(req.head, req.policy) {
        return refuse(403, "cross-origin WebSocket refused");
    }
    let session = match store(req, signin::current(req.web.store.as_ref(), req.head)).await {
        Ok(Some(s)) => s,
        Ok(None) => return refuse(401, "not signed in or session expired"),
        Err(r) => return Action::Respond(r),
    };
    if !mfa::satisfied(req.policy, &session) {
        return refuse(403, "a second factor is required: enrol one first");
    }
    let credential = Credential::WebSession {
        user: &session.user,
        only_target: session.only_target.as_deref(),
        roles: &session.roles,
    };
    let now = portcullis_core::keys::unix_now();
    let grant = match req
        .policy
        .authorize(credential, Destination::Name(target), Via::WebTerminal, now)
    {
        Ok(g) => g,
        Err(denial) => return refuse(denial.status(), &denial.to_string()),
    };
    let mut grant = grant;
    // A shared link's guest: the session ends with the link.
    match crate::server::timeout(
        req.limit,
        super::links::guest_expiry(req.web.store.as_ref(), &grant.user),
    )
    .await
    {
        Some(Ok(expires)) => grant.token_expires = expires.or(grant.token_expires),
        Some(Err(why)) => return refuse(403, why),
        None => return refuse(503, "the state store did not answer in time"),
    }
    debug_assert_eq!(grant.target.protocol, Protocol::Ssh);
    let size = |name: &str, default: u16| {
        req.head
            .query_param(name)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|v| (1..=1000).contains(v))
            .unwrap_or(default)
    };
    Action::Terminal(Box::new(TerminalStart {
        grant,
        cols: size("cols", 80),
        rows: size("rows", 24),
        accept: http::switching_protocols(upgrade.key, None),
    }))
}
