//! The web app's HTTP API (see `web/API.md`): sign-in, session, recordings, and the checks in
//! front of the terminal WebSocket. Runs on the glommio executors; password hashing runs on a
//! blocking thread so it never stalls the core's other sessions.

use super::session::{WebSession, COOKIE};
use super::{assets, passwd, WebState};
use crate::config::{Protocol, Target};
use crate::policy::Policy;
use portcullis_protocols::http::{self, RequestHead};
use serde::Deserialize;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Request bodies of this API are tiny JSON objects.
pub const MAX_BODY: usize = 16 * 1024;
/// Failed sign-ins are answered this late, to slow guessing without holding a thread.
const FAILURE_DELAY: Duration = Duration::from_millis(750);

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// Embedded assets are borrowed, not copied, into the response.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    pub fn json(status: u16, value: serde_json::Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Cow::Owned(value.to_string().into_bytes()),
        }
    }

    fn error(status: u16, message: &str) -> Response {
        Response::json(status, serde_json::json!({ "error": message }))
    }

    /// The full HTTP response, with the security headers every answer of the web app carries.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n\
             Strict-Transport-Security: max-age=31536000\r\n\
             Content-Security-Policy: default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'\r\n",
            self.status,
            http::reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        // API answers are never cached; assets say otherwise in their own headers.
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("cache-control"))
        {
            head.push_str("Cache-Control: no-store\r\n");
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A terminal the checks allowed: what `server/terminal.rs` needs to start it.
pub struct TerminalStart {
    pub user: String,
    pub target: Target,
    pub cols: u16,
    pub rows: u16,
    pub accept: Vec<u8>,
}

pub enum Action {
    Respond(Response),
    Terminal(Box<TerminalStart>),
}

fn cookie<'a>(head: &RequestHead<'a>) -> Option<&'a str> {
    head.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|v| v.strip_prefix('=')))
}

/// Browsers send `Origin` on POSTs and WebSocket upgrades: it must be this gateway (as the
/// browser reached it) or one the configuration names.
fn origin_ok(head: &RequestHead<'_>, policy: &Policy) -> bool {
    let (Some(origin), Some(host)) = (head.header("origin"), head.header("host")) else {
        return false;
    };
    origin == format!("https://{host}") || policy.config.web.origins.iter().any(|o| o == origin)
}

fn session_cookie(value: &str, max_age: u64) -> String {
    format!("{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}")
}

pub fn current_session(head: &RequestHead<'_>, web: &WebState) -> Option<WebSession> {
    cookie(head).and_then(|c| web.sessions.get(c))
}

/// Whether this path belongs to the web app (vs. tunnels and health).
pub fn is_web_path(path: &str) -> bool {
    path == "/"
        || path == "/index.html"
        || path.starts_with("/assets/")
        || path.starts_with("/api/")
        || path.starts_with("/v1/ssh/")
}

pub async fn handle(
    head: &RequestHead<'_>,
    body: &[u8],
    client: SocketAddr,
    policy: &Policy,
    web: &WebState,
) -> Action {
    let r = |resp: Response| Action::Respond(resp);
    match (head.method, head.path) {
        ("GET", p) if !p.starts_with("/api/") && !p.starts_with("/v1/") => match assets::get(p) {
            // Revalidated on every load (the assets change with the binary), sent again only
            // when they did: app.js carries the RDP client's WebAssembly and is large.
            Some(a) => {
                let etag = format!("\"{}\"", a.etag);
                let fresh = head
                    .header("if-none-match")
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
                let (status, body) = if fresh {
                    (304, Cow::Borrowed(&[][..]))
                } else {
                    (200, Cow::Borrowed(a.body))
                };
                let headers = vec![("Cache-Control", "no-cache".to_owned()), ("ETag", etag)];
                r(Response {
                    status,
                    content_type: a.content_type,
                    headers,
                    body,
                })
            }
            None => r(Response::error(404, "not found")),
        },
        ("POST", "/api/login") => r(login(head, body, client, policy, web).await),
        ("POST", "/api/login/token") => r(login_token(head, body, client, policy, web)),
        ("POST", "/api/logout") => {
            if let Some(c) = cookie(head) {
                web.sessions.remove(c);
            }
            let mut resp = Response::json(200, serde_json::json!({}));
            resp.headers.push(("Set-Cookie", session_cookie("", 0)));
            r(resp)
        }
        ("GET", "/api/session") => r(session_info(head, policy, web)),
        ("POST", "/api/rdp/ticket") => r(rdp_ticket(head, body, policy, web)),
        ("GET", "/api/recordings") => r(recordings(head, policy, web)),
        ("GET", p) if p.starts_with("/api/recordings/") => {
            r(recording(head, policy, web, &p["/api/recordings/".len()..]))
        }
        ("GET", p) if p.starts_with("/v1/ssh/") => terminal(head, policy, web, &p["/v1/ssh/".len()..]),
        (_, p) if p.starts_with("/api/") || p.starts_with("/v1/") => r(Response::error(404, "not found")),
        _ => r(Response::error(405, "method not allowed")),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

async fn login(head: &RequestHead<'_>, body: &[u8], client: SocketAddr, policy: &Policy, web: &WebState) -> Response {
    if !origin_ok(head, policy) {
        return Response::error(403, "cross-origin request refused");
    }
    let Ok(LoginBody { user, password }) = serde_json::from_slice(body) else {
        return Response::error(400, "expected {\"user\":…,\"password\":…}");
    };
    if let Err(wait) = web.throttle.check(&user, client.ip()) {
        let secs = wait.as_secs().max(1);
        tracing::info!(%client, user = %user, "sign-in refused: locked out");
        return Response::json(
            429,
            serde_json::json!({ "error": format!("too many failed sign-ins; try again in {secs} s"), "retry_after": secs }),
        );
    }
    let hash = policy.config.accounts.get(&user).and_then(|a| a.password_hash.clone());
    // Verify against a fixed dummy hash for unknown users, so timing does not reveal who exists.
    let phc = hash.clone().unwrap_or_else(|| DUMMY_HASH.to_owned());
    let ok = glommio::executor()
        .spawn_blocking(move || passwd::verify(&password, &phc))
        .await
        && hash.is_some();
    if !ok {
        web.throttle.failed(&user, client.ip());
        tracing::info!(%client, user = %user, "sign-in failed");
        glommio::timer::sleep(FAILURE_DELAY).await;
        return Response::error(401, "invalid user or password");
    }
    web.throttle.succeeded(&user);
    tracing::info!(%client, user = %user, "signed in");
    start_session(user, None, policy.config.web.session_ttl, web)
}

/// Argon2id of a random password nobody knows (same cost as real hashes).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zr2d8tAwxOIpsl9ATVcSazFYSi8V/3wuXzrbdgH3mZM";

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

fn login_token(head: &RequestHead<'_>, body: &[u8], client: SocketAddr, policy: &Policy, web: &WebState) -> Response {
    if !origin_ok(head, policy) {
        return Response::error(403, "cross-origin request refused");
    }
    let Ok(TokenBody { token }) = serde_json::from_slice(body) else {
        return Response::error(400, "expected {\"token\":…}");
    };
    let now = crate::keys::unix_now();
    let claims = match policy.verifier.verify(&token, now) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%client, "token sign-in failed: {e}");
            return Response::error(401, &e.to_string());
        }
    };
    if !policy.config.users.contains_key(&claims.sub) {
        return Response::error(403, "user is not allowed");
    }
    let ttl = policy
        .config
        .web
        .session_ttl
        .min(Duration::from_secs(claims.exp.saturating_sub(now)));
    tracing::info!(%client, user = %claims.sub, "signed in with a token");
    start_session(claims.sub, Some(claims.tgt), ttl, web)
}

fn start_session(user: String, only_target: Option<String>, ttl: Duration, web: &WebState) -> Response {
    let value = web.sessions.create(WebSession {
        user: user.clone(),
        expires: Instant::now() + ttl,
        only_target,
    });
    let mut resp = Response::json(200, serde_json::json!({ "user": user }));
    resp.headers.push(("Set-Cookie", session_cookie(&value, ttl.as_secs())));
    resp
}

/// The targets a web session may open.
fn allowed_targets<'p>(s: &WebSession, policy: &'p Policy) -> Vec<&'p Target> {
    let Some(names) = policy.config.users.get(&s.user) else {
        return Vec::new();
    };
    let mut targets: Vec<&Target> = names
        .iter()
        .filter(|n| s.only_target.as_ref().is_none_or(|t| t == *n))
        .filter_map(|n| policy.config.targets.get(n))
        .collect();
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    targets
}

fn session_info(head: &RequestHead<'_>, policy: &Policy, web: &WebState) -> Response {
    let Some(s) = current_session(head, web) else {
        return Response::error(401, "not signed in");
    };
    let targets: Vec<serde_json::Value> = allowed_targets(&s, policy)
        .into_iter()
        .map(|t| {
            let credentials = if t.ssh.key.is_some() || t.ssh.agent.is_some() {
                "gateway"
            } else {
                "user"
            };
            serde_json::json!({
                "name": t.name, "protocol": t.protocol.to_string(), "credentials": credentials,
                "clipboard": t.ssh.clipboard,
            })
        })
        .collect();
    let can_replay = policy.config.accounts.get(&s.user).is_some_and(|a| a.replay);
    Response::json(
        200,
        serde_json::json!({ "user": s.user, "targets": targets, "can_replay": can_replay }),
    )
}

#[derive(Deserialize)]
struct TicketBody {
    target: String,
}

/// A one-time `proxy_auth` for the IronRDP web client to open `target` through `/v1/rdp`.
fn rdp_ticket(head: &RequestHead<'_>, body: &[u8], policy: &Policy, web: &WebState) -> Response {
    if !origin_ok(head, policy) {
        return Response::error(403, "cross-origin request refused");
    }
    let Some(s) = current_session(head, web) else {
        return Response::error(401, "not signed in");
    };
    let Ok(TicketBody { target }) = serde_json::from_slice(body) else {
        return Response::error(400, "expected {\"target\":…}");
    };
    match allowed_targets(&s, policy).into_iter().find(|t| t.name == target) {
        Some(t) if t.protocol == Protocol::Rdp => {
            let ticket = web.tickets.issue(&s.user, &t.name);
            Response::json(
                200,
                serde_json::json!({ "ticket": ticket, "destination": t.name, "path": "/v1/rdp" }),
            )
        }
        Some(_) => Response::error(400, "not an RDP target"),
        None => Response::error(403, "target is not allowed for this user"),
    }
}

fn replay_allowed(head: &RequestHead<'_>, policy: &Policy, web: &WebState) -> Result<(), Response> {
    let Some(s) = current_session(head, web) else {
        return Err(Response::error(401, "not signed in"));
    };
    if !policy.config.accounts.get(&s.user).is_some_and(|a| a.replay) {
        return Err(Response::error(
            403,
            "replaying recordings is not allowed for this user",
        ));
    }
    if policy.config.recording.dir.is_none() {
        return Err(Response::error(404, "recording is not configured"));
    }
    Ok(())
}

fn recordings(head: &RequestHead<'_>, policy: &Policy, web: &WebState) -> Response {
    if let Err(resp) = replay_allowed(head, policy, web) {
        return resp;
    }
    let dir = policy
        .config
        .recording
        .dir
        .as_deref()
        .unwrap_or(std::path::Path::new("."));
    let mut list = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten().take(10_000) {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cast"))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let header = first_line(&path).and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok());
        let title = header
            .as_ref()
            .and_then(|h| h["title"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let (user, target) = title.split_once('@').unwrap_or(("", ""));
        let start = header.as_ref().and_then(|h| h["timestamp"].as_u64()).unwrap_or(0);
        list.push(serde_json::json!({
            "session": id, "user": user, "target": target,
            "start": crate::audit::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(start)),
            "bytes": meta.len(),
        }));
    }
    list.sort_by(|a, b| b["start"].as_str().cmp(&a["start"].as_str()));
    Response::json(200, serde_json::Value::Array(list))
}

fn first_line(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 4096];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let line = buf[..n].split(|&b| b == b'\n').next()?;
    String::from_utf8(line.to_vec()).ok()
}

fn recording(head: &RequestHead<'_>, policy: &Policy, web: &WebState, id: &str) -> Response {
    if let Err(resp) = replay_allowed(head, policy, web) {
        return resp;
    }
    // Session ids are hex: nothing else can name a file.
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Response::error(404, "no such recording");
    }
    let dir = policy
        .config
        .recording
        .dir
        .as_deref()
        .unwrap_or(std::path::Path::new("."));
    match std::fs::read(dir.join(format!("{id}.cast"))) {
        Ok(body) => Response {
            status: 200,
            content_type: "application/x-asciicast",
            headers: Vec::new(),
            body: Cow::Owned(body),
        },
        Err(_) => Response::error(404, "no such recording"),
    }
}

fn terminal(head: &RequestHead<'_>, policy: &Policy, web: &WebState, target: &str) -> Action {
    let refuse = |status: u16, msg: &str| Action::Respond(Response::error(status, msg));
    let upgrade = match http::websocket_upgrade(head) {
        Ok(u) => u,
        Err(e) => return refuse(e.status(), &e.to_string()),
    };
    // The cookie is ambient: without this check any site could open a terminal as the user.
    if !origin_ok(head, policy) {
        return refuse(403, "cross-origin WebSocket refused");
    }
    let Some(session) = current_session(head, web) else {
        return refuse(401, "not signed in or session expired");
    };
    let Some(t) = allowed_targets(&session, policy).into_iter().find(|t| t.name == target) else {
        return refuse(403, "target is not allowed for this user");
    };
    if t.protocol != Protocol::Ssh {
        return refuse(400, "not an SSH target");
    }
    let size = |name: &str, default: u16| {
        head.query_param(name)
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|v| (1..=1000).contains(v))
            .unwrap_or(default)
    };
    Action::Terminal(Box::new(TerminalStart {
        user: session.user,
        target: t.clone(),
        cols: size("cols", 80),
        rows: size("rows", 24),
        accept: http::switching_protocols(upgrade.key, None),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dummy_hash_is_argon2id() {
        assert!(!super::passwd::verify("", super::DUMMY_HASH));
        assert_eq!(
            argon2::PasswordHash::new(super::DUMMY_HASH).unwrap().algorithm.as_str(),
            "argon2id"
        );
    }
}
