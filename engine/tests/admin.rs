//! The admin listener from the outside: health and readiness without a credential, everything
//! else with an admin token only; metrics that count what happened; live sessions listed,
//! terminated and revoked (through the API and the `portcullis admin` CLI), each audited; the
//! per-user session cap.

use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::WsClient;
use portcullis_testkit::process::Signal;
use portcullis_testkit::*;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn scrape(gw: &Gateway) -> String {
    let (status, body) = gw.admin_request("GET", "/metrics", Some(&gw.admin_token("root")), "");
    assert_eq!(status, 200, "{body}");
    body
}

fn admin_records(gw: &Gateway, want: usize) -> Vec<Value> {
    gw.records_where(want, |r| r["event"] == "admin")
}

#[test]
fn health_and_readiness_are_open_and_everything_else_needs_an_admin_token() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"root\"]\n")
        .start();
    assert_eq!(gw.admin_request("GET", "/healthz", None, ""), (200, "ok\n".into()));
    let (status, body) = gw.admin_request("GET", "/readyz", None, "");
    assert_eq!((status, body.as_str()), (200, "{\"ready\":true}"));
    // No token, a tunnel token, an admin token of a user not in [admin] users, a forged one.
    assert_eq!(gw.admin_request("GET", "/v1/sessions", None, "").0, 401);
    let tunnel = gw.token("alice", "echo");
    assert_eq!(gw.admin_request("GET", "/metrics", Some(&tunnel), "").0, 403);
    assert_eq!(
        gw.admin_request("GET", "/v1/sessions", Some(&gw.admin_token("alice")), "")
            .0,
        403
    );
    let forged = format!("{}x", gw.admin_token("root"));
    assert_eq!(gw.admin_request("GET", "/v1/sessions", Some(&forged), "").0, 401);
    // The token is taken from the Authorization header only, never from the query string.
    let in_query = format!("/v1/sessions?token={}", gw.admin_token("root"));
    assert_eq!(gw.admin_request("GET", &in_query, None, "").0, 401);
    assert_eq!(
        gw.admin_request("GET", "/v1/sessions", Some(&gw.admin_token("root")), "")
            .0,
        200
    );
    assert_eq!(gw.admin_request("GET", "/nope", None, "").0, 404);
    // Health checkers speaking HTTP/1.0 (HAProxy's httpchk) are answered too.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(gw.admin.unwrap()).unwrap();
        s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(gw.admin_request("POST", "/healthz", None, "").0, 405);
    // An admin token opens no tunnel.
    let admin = gw.admin_token("root");
    let opened = tokio_run(async { WsClient::refused_tunnel(&gw, "echo", &admin).await });
    assert_eq!(opened, 403);
    // Every refusal and the granted listing are audited, with who and why.
    let records = admin_records(&gw, 6);
    let statuses: Vec<u64> = records.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [401, 403, 403, 401, 401, 200], "{records:?}");
    assert_eq!(records[1]["action"], "read_metrics");
    assert_eq!(records[2]["detail"], "not an admin token");
    assert_eq!(records[5]["admin"], "root");
    assert_eq!(records[5]["action"], "list_sessions");
    // The public port knows nothing of these routes.
    let public = tokio_run(async { portcullis_testkit::client::https(&gw, "GET", "/metrics", &[], "").await });
    assert_eq!(public.0, 404);
}

fn tokio_run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_bytes_refusals_and_name_the_configuration() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .target("forbidden", echo.addr, "tcp")
        .start();
    let before = scrape(&gw);
    assert_eq!(
        sample(
            &before,
            "portcullis_sessions_started_total{via=\"tunnel\",protocol=\"tcp\"}"
        ),
        Some(0.0)
    );
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    let payload = vec![7u8; 100_000];
    ws.send_binary(&payload).await;
    assert_eq!(ws.recv_bytes(payload.len(), 10 * SEC).await.len(), payload.len());
    let live = scrape(&gw);
    assert_eq!(
        sample(&live, "portcullis_sessions_live{via=\"tunnel\",protocol=\"tcp\"}"),
        Some(1.0)
    );
    ws.send_close(CloseCode::NORMAL).await;
    ws.recv_close(10 * SEC).await;
    gw.sessions_of("echo", 1);
    // Refusals: a target alice may not reach, a bad token.
    assert_eq!(
        WsClient::refused_tunnel(&gw, "forbidden", &gw.token("alice", "forbidden")).await,
        403
    );
    assert_eq!(
        WsClient::refused(&gw, "/v1/tunnel/echo", &[("Authorization", "Bearer nonsense")]).await,
        401
    );
    let m = scrape(&gw);
    let get = |name: &str| sample(&m, name).unwrap_or_else(|| panic!("no {name} in\n{m}"));
    assert_eq!(
        get("portcullis_sessions_started_total{via=\"tunnel\",protocol=\"tcp\"}"),
        1.0
    );
    assert_eq!(get("portcullis_sessions_live{via=\"tunnel\",protocol=\"tcp\"}"), 0.0);
    assert_eq!(get("portcullis_sessions_ended_total{reason=\"client_closed\"}"), 1.0);
    assert_eq!(get("portcullis_session_duration_seconds_count"), 1.0);
    assert_eq!(get("portcullis_target_connect_seconds_count"), 1.0);
    assert!(get("portcullis_relayed_bytes_total{protocol=\"tcp\",direction=\"client_to_target\"}") >= 100_000.0);
    assert!(get("portcullis_relayed_bytes_total{protocol=\"tcp\",direction=\"target_to_client\"}") >= 100_000.0);
    assert_eq!(get("portcullis_requests_refused_total{reason=\"policy\"}"), 1.0);
    assert_eq!(get("portcullis_requests_refused_total{reason=\"auth\"}"), 1.0);
    assert_eq!(get("portcullis_requests_total{route=\"tunnel\"}"), 1.0);
    assert!(get("portcullis_connections_accepted_total") >= 3.0);
    assert!(get("process_open_fds") > 0.0);
    assert!(get("process_resident_memory_bytes") > 1e6);
    assert_eq!(get("portcullis_audit_writable"), 1.0);
    assert_eq!(get("portcullis_draining"), 0.0);
    // The configuration's digest, so that drift between nodes shows.
    use sha2::Digest;
    let config = std::fs::read(gw.config_path()).unwrap();
    let digest: String = sha2::Sha256::digest(&config)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(m.contains(&format!("config_sha256=\"{digest}\"")), "{m}");
    assert!(m.trim_end().ends_with("# EOF"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_and_terminates_a_live_session() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder().target("echo", echo.addr, "tcp").start();
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(b"hello").await;
    let admin = gw.admin_token("root");
    let (status, body) = gw.admin_request("GET", "/v1/sessions", Some(&admin), "");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{list}");
    let s = &sessions[0];
    assert_eq!(
        (
            s["user"].as_str(),
            s["target"].as_str(),
            s["via"].as_str(),
            s["protocol"].as_str()
        ),
        (Some("alice"), Some("echo"), Some("tunnel"), Some("tcp"))
    );
    assert!(s["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(gw.admin_request("DELETE", "/v1/sessions/nope", Some(&admin), "").0, 404);
    let (status, _) = gw.admin_request("DELETE", &format!("/v1/sessions/{id}"), Some(&admin), "");
    assert_eq!(status, 202);
    let (code, reason) = ws.recv_close(10 * SEC).await;
    assert_eq!((code, reason.as_str()), (Some(1008), "terminated"));
    ws.send_close(CloseCode::POLICY).await;
    let ended = gw.sessions_of("echo", 1);
    assert_eq!(ended[0]["ended"], "terminated");
    assert_eq!(ended[0]["terminated_by"], "root");
    assert_eq!(ended[0]["session"], id.as_str());
    let records = gw.records_where(3, |r| r["event"] == "admin");
    let terminate = records
        .iter()
        .find(|r| r["action"] == "terminate" && r["status"] == 202)
        .expect("terminate audited");
    assert_eq!(terminate["subject"], id.as_str());
    // The session's place (and its entry in the list) is given back just after its record is
    // written, on the session's core: the list empties a moment after the record appears.
    let mut body = String::new();
    let emptied = process::wait_until(10 * SEC, || {
        body = gw.admin_request("GET", "/v1/sessions", Some(&admin), "").1;
        body == "{\"sessions\":[]}"
    });
    assert!(emptied, "still listed: {body}");
}

/// `portcullis admin` with the token in a file.
fn cli(gw: &Gateway, token_file: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(gateway::gateway_bin())
        .arg("admin")
        .arg("--url")
        .arg(format!("http://{}", gw.admin.unwrap()))
        .arg("--token-file")
        .arg(token_file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_user_or_a_token_ends_their_sessions_and_refuses_new_ones() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .user("alice", &["echo"], "")
        .user("bob", &["echo"], "")
        .start();
    let token_file = gw.dir.path().join("admin.token");
    std::fs::write(&token_file, gw.admin_token("root")).unwrap();
    let mut alice1 = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    let mut alice2 = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    let bob_token = gw.token("bob", "echo");
    let mut bob1 = WsClient::open(&gw, "echo", &bob_token).await;
    let other_bob_token = gw.token("bob", "echo");
    let mut bob2 = WsClient::open(&gw, "echo", &other_bob_token).await;
    for ws in [&mut alice1, &mut alice2, &mut bob1, &mut bob2] {
        ws.echoes(b"up").await;
    }
    let (ok, table, err) = cli(&gw, &token_file, &["sessions"]);
    assert!(ok, "{err}");
    assert_eq!(table.lines().count(), 5, "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" alice ")).count(), 2, "{table}");

    let (ok, out, err) = cli(&gw, &token_file, &["revoke-user", "alice", "--until", "1h"]);
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(answer["sessions_ended"], 2);
    for ws in [&mut alice1, &mut alice2] {
        assert_eq!(ws.recv_close(10 * SEC).await, (Some(1008), "revoked".to_owned()));
        ws.send_close(CloseCode::POLICY).await;
    }
    bob1.echoes(b"still here").await;
    let refused = WsClient::refused_tunnel(&gw, "echo", &gw.token("alice", "echo")).await;
    assert_eq!(refused, 403);

    // A token: the sessions it opened end, the same user's other token goes on.
    let jti = portcullis_protocols::token::TokenVerifier::from_public_pem(
        &std::fs::read(gw.dir.path().join("token.pub")).unwrap(),
        0,
    )
    .unwrap()
    .verify(&bob_token, portcullis_core::keys::unix_now())
    .unwrap()
    .jti;
    let (ok, _, err) = cli(&gw, &token_file, &["revoke-token", &jti]);
    assert!(ok, "{err}");
    assert_eq!(bob1.recv_close(10 * SEC).await, (Some(1008), "revoked".to_owned()));
    bob1.send_close(CloseCode::POLICY).await;
    bob2.echoes(b"other token").await;
    bob2.send_close(CloseCode::NORMAL).await;

    let ended = gw.sessions_of("echo", 4);
    let revoked: Vec<_> = ended.iter().filter(|r| r["ended"] == "revoked").collect();
    assert_eq!(revoked.len(), 3, "{ended:?}");
    assert!(revoked.iter().all(|r| r["terminated_by"] == "root"));
    let records = gw.records_where(2, |r| r["event"] == "admin" && r["action"] != "list_sessions");
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(records[0]["action"], "revoke_user");
    assert_eq!(records[0]["subject"], "alice");
    assert!(records[0]["until"].as_str().is_some());
    assert_eq!(records[1]["action"], "revoke_token");
    assert_eq!(records[1]["sessions_ended"], 1);
    // The CLI refuses a token on its command line: there is no such option.
    let (ok, _, err) = cli(&gw, &token_file, &["--token", "x", "sessions"]);
    assert!(!ok && err.contains("--token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_at_the_session_cap_is_refused_with_429() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .session("max_sessions_per_user = 2")
        .start();
    let token = gw.token("alice", "echo");
    let mut a = WsClient::open(&gw, "echo", &token).await;
    let mut b = WsClient::open(&gw, "echo", &token).await;
    assert_eq!(WsClient::refused_tunnel(&gw, "echo", &token).await, 429);
    let denied = gw.records_where(1, |r| r["event"] == "denied");
    assert_eq!(denied[0]["status"], 429);
    assert_eq!(denied[0]["user"], "alice");
    a.send_close(CloseCode::NORMAL).await;
    a.recv_close(10 * SEC).await;
    gw.sessions_of("echo", 1);
    // A place is free again.
    let mut c = WsClient::open(&gw, "echo", &token).await;
    c.echoes(b"in").await;
    b.echoes(b"still").await;
    let m = scrape(&gw);
    assert_eq!(
        sample(&m, "portcullis_requests_refused_total{reason=\"session_limit\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_draining() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .session("drain_timeout = \"1m\"")
        .start();
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(b"x").await;
    assert_eq!(gw.admin_request("GET", "/readyz", None, "").0, 200);
    gw.signal(Signal::TERM);
    // The stop signal is handled on its own thread: wait for the gateway to say it drains.
    assert!(
        process::wait_until(10 * SEC, || gw.log().contains("draining sessions")),
        "{}",
        gw.log()
    );
    let (status, body) = gw.admin_request("GET", "/readyz", None, "");
    assert_eq!(
        (status, body.as_str()),
        (503, "{\"ready\":false,\"reason\":\"draining\"}")
    );
    assert_eq!(gw.admin_request("GET", "/healthz", None, "").0, 200);
    assert_eq!(sample(&scrape(&gw), "portcullis_draining"), Some(1.0));
    ws.echoes(b"the session goes on while draining").await;
    ws.send_close(CloseCode::NORMAL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_admin_listener_speaks_tls() {
    let gw = Gateway::builder().toml("[admin]\nlisten = \"0.0.0.0:0\"").start();
    let port = gw.admin.unwrap().port();
    // Plain HTTP gets no HTTP answer: the listener expects a TLS ClientHello.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(10 * SEC)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // The CLI over HTTPS (the test gateway's certificate is self-signed: --insecure).
    let token_file = gw.dir.path().join("admin.token");
    std::fs::write(&token_file, gw.admin_token("root")).unwrap();
    let sessions = |extra: &[&str]| {
        Command::new(gateway::gateway_bin())
            .arg("admin")
            .args(extra)
            .arg("--url")
            .arg(format!("https://127.0.0.1:{port}"))
            .arg("--token-file")
            .arg(&token_file)
            .arg("sessions")
            .output()
            .unwrap()
    };
    let out = sessions(&["--insecure", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{\"sessions\":[]}");
    // And it verifies the certificate unless told otherwise.
    let out = sessions(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_state_dir_a_revocation_outlives_a_crash() {
    let echo = EchoTarget::start();
    let state = tempfile::tempdir().unwrap();
    let node = || {
        Gateway::builder()
            .target("echo", echo.addr, "tcp")
            .user("alice", &["echo"], "")
            .user("bob", &["echo"], "")
            .toml(&format!("[state]\ndir = \"{}\"", state.path().join("state").display()))
            .start()
    };
    let gw = node();
    let body = serde_json::json!({ "user": "alice" }).to_string();
    let (status, answer) = gw.admin_request("POST", "/v1/revocations", Some(&gw.admin_token("root")), &body);
    assert_eq!(status, 200, "{answer}");
    // Killed (SIGKILL, no orderly stop), then started again on the same state.
    drop(gw);
    let gw = node();
    assert!(
        gw.log().contains("durable state loaded"),
        "logged before ready: {}",
        gw.log()
    );
    let refused = WsClient::refused_tunnel(&gw, "echo", &gw.token("alice", "echo")).await;
    assert_eq!(refused, 403);
    let mut ws = WsClient::open(&gw, "echo", &gw.token("bob", "echo")).await;
    ws.echoes(b"bob is not revoked").await;
    ws.send_close(CloseCode::NORMAL).await;
}
