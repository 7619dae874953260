//! Independent WebSocket clients against the real gateway: Python's `websockets` library and
//! websocat. They frame, fragment, ping and close in their own ways; the tunnel must carry their
//! bytes exactly. `scripts/test` installs both.

mod common;

use common::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn echo_gateway() -> (EchoTarget, Gateway) {
    let echo = EchoTarget::start();
    let gw = Gateway::start(
        &[TargetDef {
            name: "echo",
            address: echo.addr.to_string(),
            protocol: "tcp",
        }],
        "",
    );
    (echo, gw)
}

/// Runs `cmd` with a hard time limit and returns (success, stdout, stderr).
/// `pause` holds stdin back for a while halfway through, so keepalive pings get their turn.
fn run_bounded(mut cmd: Command, stdin: &[u8], pause: Duration, limit: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?} ({e}); scripts/test installs it", cmd.get_program()));
    // Feed stdin from a thread: the child may echo before it has read everything.
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let (first, second) = stdin.split_at(stdin.len() / 2);
        let _ = input.write_all(first);
        std::thread::sleep(pause);
        let _ = input.write_all(second);
    });
    let id = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        unsafe { libc::kill(id as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().unwrap();
    let _ = feeder.join();
    drop(watchdog);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const PYTHON_CLIENT: &str = r#"
import ssl, sys
from websockets.sync.client import connect

url, token = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with connect(url, ssl=ctx, additional_headers={"Authorization": "Bearer " + token}, max_size=None) as ws:
    # A message in three fragments, then a ping between messages, then a large one.
    ws.send([b"hel", b"lo ", b"world"])
    assert ws.ping(b"probe").wait(5), "no pong"
    big = bytes(i % 251 for i in range(300_000))
    ws.send(big)
    want = b"hello world" + big
    got = b""
    while len(got) < len(want):
        got += ws.recv(timeout=10)
    assert got == want, "echo mismatch"
    ws.close(code=1000, reason="done")
    print("close", ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None)
print("ok")
"#;

#[test]
fn python_websockets_client() {
    let (echo, gw) = echo_gateway();
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        PYTHON_CLIENT,
        &format!("{}/v1/tunnel/echo", gw.url()),
        &gw.token("alice", "echo"),
    ]);
    let (ok, out, err) = run_bounded(cmd, b"", Duration::ZERO, Duration::from_secs(60));
    assert!(ok, "python client failed:\n{out}\n{err}");
    assert!(out.contains("close 1000") && out.trim_end().ends_with("ok"), "{out}");
    assert_eq!(echo.accepted(), 1);
    let lines = gw.audit_lines(1);
    let rec = lines.iter().find(|l| l["event"] == "session").unwrap();
    assert_eq!(rec["bytes_client_to_target"], 300_011);
    assert_eq!(rec["ended"], "client_closed");
}

#[test]
fn python_websockets_denied_without_token() {
    let (echo, gw) = echo_gateway();
    let script = r#"
import ssl, sys
from websockets.sync.client import connect
from websockets.exceptions import InvalidStatus
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    connect(sys.argv[1], ssl=ctx)
except InvalidStatus as e:
    print("status", e.response.status_code)
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, &format!("{}/v1/tunnel/echo", gw.url())]);
    let (_, out, err) = run_bounded(cmd, b"", Duration::ZERO, Duration::from_secs(30));
    assert!(out.contains("status 401"), "{out}\n{err}");
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn websocat_client() {
    let (echo, gw) = echo_gateway();
    let token = gw.token("alice", "echo");
    let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut cmd = Command::new("websocat");
    // The URL goes first: websocat's -H takes every value after it.
    cmd.arg(format!("{}/v1/tunnel/echo", gw.url()))
        .args(["--binary", "-k", "--ping-interval", "1", "-H"])
        .arg(format!("Authorization: Bearer {token}"));
    let (ok, out, err) = run_bounded(cmd, &payload, Duration::from_millis(2500), Duration::from_secs(60));
    assert!(ok, "websocat failed: {err}");
    assert_eq!(out.len(), payload.len(), "{err}");
    assert!(out.as_bytes() == payload.as_slice());
    assert_eq!(echo.accepted(), 1);
    let lines = gw.audit_lines(1);
    let rec = lines.iter().find(|l| l["event"] == "session").unwrap();
    assert_eq!(rec["bytes_target_to_client"], payload.len() as u64);
}
