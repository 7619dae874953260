//! Taking access away, from the outside: a reload ends the live sessions its policy no longer
//! allows; tokens are held to a maximum lifetime, an issuer and an audience; a session can end
//! with its token; a token sign-in stays within its token's scope; and a panic in one connection
//! ends that connection only.

use portcullis_protocols::token::{Audience, Claims};
use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::{sign_in, WsClient};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::process::Signal;
use portcullis_testkit::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn claims(user: &str, target: &str, ttl: u64) -> Claims {
    let now = portcullis_core::keys::unix_now();
    Claims {
        sub: user.into(),
        tgt: target.into(),
        exp: now + ttl,
        nbf: now,
        iat: Some(now),
        jti: format!("t{ttl}"),
        iss: None,
        aud: None,
        scope: None,
        once: false,
        roles: Vec::new(),
        lgn: None,
    }
}

/// The upgrade's status for a token (101 when it opens; the tunnel is then closed).
async fn status_with(gw: &Gateway, target: &str, token: &str) -> u16 {
    match WsClient::connect(gw, &format!("/v1/tunnel/{target}"), Some(token), &[]).await {
        Ok(mut ws) => {
            ws.send_close(CloseCode::NORMAL).await;
            101
        }
        Err(answer) => status_of(&answer),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_ends_the_sessions_it_no_longer_allows() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .target("echo2", echo.addr, "tcp")
        .start();
    let mut losing = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    let mut keeping = WsClient::open(&gw, "echo2", &gw.token("alice", "echo2")).await;
    losing.echoes(b"before").await;
    // alice loses echo; echo2 stays.
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    let changed = config.replace("targets = [\"echo\", \"echo2\"]", "targets = [\"echo2\"]");
    assert_ne!(config, changed);
    std::fs::write(gw.config_path(), changed).unwrap();
    gw.signal(Signal::HUP);
    let (code, reason) = losing.recv_close(10 * SEC).await;
    assert_eq!((code, reason.as_str()), (Some(1008), "policy_revoked"));
    losing.send_close(CloseCode::POLICY).await;
    keeping.echoes(b"still allowed").await;
    let ended = gw.sessions_of("echo", 1);
    assert_eq!(ended[0]["ended"], "policy_revoked", "{ended:?}");
    // And new tunnels to echo are refused.
    assert_eq!(status_with(&gw, "echo", &gw.token("alice", "echo")).await, 403);
    keeping.send_close(CloseCode::NORMAL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_held_to_a_lifetime_issuer_and_audience() {
    let echo = EchoTarget::start();
    // Defaults: a token may live a day at most.
    let gw = Gateway::builder().target("echo", echo.addr, "tcp").start();
    let century = gw.token_with(&claims("alice", "echo", 100 * 365 * 86400));
    assert_eq!(status_with(&gw, "echo", &century).await, 401, "a 100-year token");
    assert_eq!(
        status_with(&gw, "echo", &gw.token_with(&claims("alice", "echo", 3600))).await,
        101
    );
    // With an issuer and an audience configured, tokens must carry them.
    let strict = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .auth("issuer = \"https://idp.example\"\naudience = \"bastion\"\nmax_token_ttl = \"10m\"")
        .start();
    let ours = Claims {
        iss: Some("https://idp.example".into()),
        aud: Some(Audience::Many(vec!["mail".into(), "bastion".into()])),
        ..claims("alice", "echo", 600)
    };
    assert_eq!(status_with(&strict, "echo", &strict.token_with(&ours)).await, 101);
    for (what, bad) in [
        (
            "no issuer",
            Claims {
                iss: None,
                ..ours.clone()
            },
        ),
        (
            "another audience",
            Claims {
                aud: Some(Audience::One("mail".into())),
                ..ours.clone()
            },
        ),
        (
            "an hour",
            Claims {
                exp: ours.exp + 3000,
                ..ours.clone()
            },
        ),
    ] {
        assert_eq!(
            status_with(&strict, "echo", &strict.token_with(&bad)).await,
            401,
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_can_end_with_its_token() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .session("end_at_token_expiry = true\n")
        .start();
    let mut ws = WsClient::open(&gw, "echo", &gw.token_with(&claims("alice", "echo", 2))).await;
    ws.echoes(b"while the token lives").await;
    let (code, reason) = ws.recv_close(10 * SEC).await;
    assert_eq!((code, reason.as_str()), (Some(1008), "token_expired"));
    ws.send_close(CloseCode::POLICY).await;
    assert_eq!(gw.session_records(1)[0]["ended"], "token_expired");
}

/// A web session from a token is good for that token's target: not for recordings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_sign_in_stays_within_its_scope() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[recording]\ndir = \"{dir}/recordings\"\n[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]\n")
        .password("right horse")
        .user("alice", &["echo"], "replay = true")
        .start();
    let body = serde_json::json!({ "token": gw.token("alice", "echo") }).to_string();
    let (status, head, _) = https(&gw, "POST", "/api/login/token", &[], &body).await;
    assert_eq!(status, 200);
    let cookie = session_cookie(&head).expect("a session cookie");
    let with_token = [("Cookie", cookie.as_str())];
    let (_, _, session) = https(&gw, "GET", "/api/session", &with_token, "").await;
    assert!(session.contains("\"can_replay\":false"), "{session}");
    assert_eq!(https(&gw, "GET", "/api/recordings", &with_token, "").await.0, 403);
    // Nor the administration, though alice is an administrator.
    assert!(session.contains("\"admin\":false"), "{session}");
    assert_eq!(https(&gw, "GET", "/api/admin/sessions", &with_token, "").await.0, 403);
    assert_eq!(https(&gw, "GET", "/api/admin/links", &with_token, "").await.0, 403);
    // A page of another site cannot make links with an administrator's cookie: refused, audited.
    let password = sign_in(&gw, "alice", "right horse").await.1.unwrap();
    let cross = [("Cookie", password.as_str()), ("Origin", "https://evil.example")];
    let body = r#"{"target":"echo","ttl_seconds":60,"once":false}"#;
    assert_eq!(https(&gw, "POST", "/api/admin/links", &cross, body).await.0, 403);
    let denied = gw.records_where(2, |l| l["event"] == "denied" && l["path"] == "/api/admin/links");
    assert!(
        denied.iter().any(|d| d["reason"] == "cross-origin request refused"),
        "{denied:?}"
    );
    // The same user signed in with a password may.
    let password = sign_in(&gw, "alice", "right horse").await.1.unwrap();
    let with_password = [("Cookie", password.as_str())];
    assert_eq!(https(&gw, "GET", "/api/recordings", &with_password, "").await.0, 200);
    assert_eq!(
        https(&gw, "GET", "/api/admin/sessions", &with_password, "").await.0,
        200
    );
}

/// A panic inside a connection's task (injected; debug builds only) ends that connection, is
/// recorded as `internal_error`, and leaves the worker and its other sessions running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_ends_its_connection_only() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .target("fault-panic", echo.addr, "tcp")
        .env("PORTCULLIS_FAULTS", "panic")
        .start();
    let mut live = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    // Several, so that both workers (and so the live session's) panic at least once.
    for _ in 0..6 {
        let mut doomed = WsClient::open(&gw, "fault-panic", &gw.token("alice", "fault-panic")).await;
        let closed = tokio::time::timeout(5 * SEC, doomed.recv(60 * SEC)).await;
        assert!(matches!(closed, Ok(None)), "the panicking connection is closed at once");
    }
    live.echoes(b"the worker survived").await;
    let mut fresh = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    fresh.echoes(b"and serves new sessions").await;
    let records = gw.sessions_of("fault-panic", 6);
    assert!(records.iter().all(|r| r["ended"] == "internal_error"), "{records:?}");
    assert!(
        wait_until(5 * SEC, || gw.log().matches("a connection task panicked").count() == 6),
        "{}",
        gw.log()
    );
    live.send_close(CloseCode::NORMAL).await;
    fresh.send_close(CloseCode::NORMAL).await;
}
