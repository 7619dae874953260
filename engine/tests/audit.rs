//! The audit log, from the outside: reopened after a rotation, never a broken line, no record
//! lost while the disk is full (held and retried), and `required` refusing sessions meanwhile.

use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::process::{wait_until, Signal};
use portcullis_testkit::*;
use std::path::Path;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

async fn one_session(gw: &Gateway, payload: &[u8]) {
    let mut ws = WsClient::open(gw, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(payload).await;
    ws.send_close(CloseCode::NORMAL).await;
    ws.recv_close(5 * SEC).await;
}

/// Running, not a zombie.
fn alive(gw: &Gateway) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, None | Some(Some('Z')))
}

/// Session records in a file, whole lines only (a line that does not parse fails the test).
fn sessions_in(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial last line in {}:\n{text}",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("broken audit line {l:?}: {e}"))
        })
        .filter(|r| r["event"] == "session")
        .count()
}

/// logrotate moves the file and signals: records go to a new file at the configured path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_audit_log_is_reopened() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder().target("echo", echo.addr, "tcp").start();
    one_session(&gw, b"first").await;
    gw.session_records(1);
    for (n, signal) in [(1, Signal::USR1), (2, Signal::HUP)] {
        let rotated = gw.audit.with_extension(format!("jsonl.{n}"));
        std::fs::rename(&gw.audit, &rotated).unwrap();
        gw.signal(signal);
        // The reopen creates the new file (0600) before anything is written to it.
        assert!(
            wait_until(5 * SEC, || gw.audit.exists()),
            "not reopened after {signal:?}"
        );
        one_session(&gw, b"after the rotation").await;
        assert_eq!(gw.session_records(1).len(), 1, "the new file has the new record");
        assert_eq!(sessions_in(&rotated), 1, "nothing more went to the moved file");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&gw.audit).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

/// Writes past a file size limit fail as on a full disk. With `required`, new sessions are
/// refused (503) while the records cannot be written; the file holds only whole lines; the
/// gateway survives; once there is room again every record of a served session is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_record_and_leaves_no_broken_line() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .audit("required = true")
        .file_size_limit(2500)
        .start();
    let token = gw.token("alice", "echo");
    let mut served = 0;
    let mut refused = false;
    for _ in 0..30 {
        match WsClient::connect(&gw, "/v1/tunnel/echo", Some(&token), &[]).await {
            Err(answer) => {
                assert_eq!(status_of(&answer), 503, "{}", text(&answer));
                refused = true;
                break;
            }
            Ok(mut ws) => {
                ws.echoes(b"one more record").await;
                ws.send_close(CloseCode::NORMAL).await;
                ws.recv_close(5 * SEC).await;
                served += 1;
                // Its record is written as it ends, or its write is failing: the next session
                // must see which. The file only grows by whole records.
                let before = served;
                wait_until(SEC, || sessions_in(&gw.audit) >= before);
            }
        }
    }
    assert!(
        refused,
        "{served} sessions served and none refused past the file size limit"
    );
    assert!(alive(&gw), "the gateway died at the file size limit");
    let written = sessions_in(&gw.audit);
    assert!(
        written < served,
        "{written} of {served} records written before the limit"
    );
    // Room again: the held record and those queued behind it are written, nothing lost.
    let pid = gw.pid().to_string();
    let raised = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited"])
        .status()
        .unwrap();
    assert!(raised.success());
    assert!(
        wait_until(10 * SEC, || sessions_in(&gw.audit) == served),
        "{} of {served} records after the disk had room again",
        sessions_in(&gw.audit)
    );
    one_session(&gw, b"sessions start again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_also_go_to_syslog_and_a_missing_daemon_is_counted() {
    let echo = EchoTarget::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log");
    // Stands in for journald's /dev/log: a datagram socket.
    let syslog = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    syslog.set_read_timeout(Some(10 * SEC)).unwrap();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .audit(&format!("syslog = true\nsyslog_socket = \"{}\"", socket_path.display()))
        .start();
    one_session(&gw, b"to syslog").await;
    let mut buf = vec![0u8; 64 * 1024];
    let n = syslog.recv(&mut buf).expect("a syslog datagram");
    let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Facility authpriv, severity info; the tag and pid; then the same JSON as the file.
    let prefix = format!("<86>portcullis[{}]: ", gw.pid());
    assert!(datagram.starts_with(&prefix), "{datagram}");
    let record: serde_json::Value = serde_json::from_str(&datagram[prefix.len()..]).unwrap();
    assert_eq!(
        (record["event"].as_str(), record["target"].as_str()),
        (Some("session"), Some("echo"))
    );
    assert_eq!(gw.sessions_of("echo", 1)[0]["session"], record["session"]);
    // The daemon goes away: records still reach the file, and the loss is counted.
    drop(syslog);
    std::fs::remove_file(&socket_path).unwrap();
    one_session(&gw, b"no syslog").await;
    assert_eq!(gw.sessions_of("echo", 2).len(), 2);
    let (_, metrics) = gw.admin_request("GET", "/metrics", Some(&gw.admin_token("root")), "");
    assert!(
        metrics.contains("portcullis_audit_syslog_failures_total 1\n"),
        "{metrics}"
    );
}
