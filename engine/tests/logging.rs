//! Logging, from the outside: a stopped log reader never stalls sessions, lines cannot be forged
//! or carry a terminal's escape sequences, colour only on a terminal, JSON on request.

use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::{sign_in, status_for, upgrade_request};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// stderr is a pipe nobody reads: once its 64 KiB are full, a write blocks. Hundreds of refused
/// requests (each logged) must neither stall a live tunnel nor the requests themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_log_reader_does_not_stall_sessions() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .unlimited_connections()
        .stderr_stopped()
        .start();
    let mut tunnel = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    tunnel.echoes(b"before").await;
    let refused = upgrade_request("/v1/tunnel/echo", Some("not-a-token"));
    let mut answered = 0;
    for _ in 0..600 {
        match tokio::time::timeout(2 * SEC, status_for(&gw, refused.as_bytes())).await {
            Ok(401) => answered += 1,
            Ok(status) => panic!("a bad token answered {status}"),
            Err(_) => break,
        }
    }
    assert_eq!(answered, 600, "requests stalled behind the log after {answered}");
    tunnel.echoes(b"after hundreds of log lines nobody read").await;
    tunnel.send_close(CloseCode::NORMAL).await;
}

/// Attacker-chosen text (a user name with a newline and escape sequences) stays inside its line;
/// stderr is a file here, so no colour codes either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_cannot_be_forged_and_have_no_colour_off_a_terminal() {
    let gw = Gateway::builder().password("right horse").start();
    let forged = "mallory\n2026-11-26T00:00:00Z  INFO portcullis: signed in user=\"admin\"";
    assert_eq!(sign_in(&gw, forged, "wrong").await.0, 401);
    assert_eq!(sign_in(&gw, "eve\x1b[2J\x1b]0;pwned\x07", "wrong").await.0, 401);
    let logged = wait_until(5 * SEC, || gw.log().matches("sign-in failed").count() >= 2);
    assert!(logged, "sign-in failures not logged:\n{}", gw.log());
    let log = gw.log();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-11-26T00:00:00Z")),
        "a forged line:\n{log}"
    );
    assert!(
        !log.contains('\x1b') && !log.contains('\x07'),
        "escape sequences in the log:\n{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .args(&["--log-format", "json"])
        .start();
    let mut tunnel = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    tunnel.echoes(b"logged").await;
    tunnel.send_close(CloseCode::NORMAL).await;
    assert!(wait_until(5 * SEC, || gw.log().contains("gateway listening")));
    let log = gw.log();
    for line in log.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{log}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{line}");
    }
    assert!(
        log.contains("\"listen\":\"127.0.0.1:"),
        "fields are not JSON fields:\n{log}"
    );
}
