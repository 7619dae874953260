//! Independent WebSocket clients against the real gateway: Python's `websockets` library and
//! websocat. They frame, fragment, ping and close in their own ways; the tunnel must carry their
//! bytes exactly. `scripts/test` installs both.

use portcullis_testkit::process::{run_bounded, run_bounded_fed};
use portcullis_testkit::targets::TcpTarget;
use portcullis_testkit::{text, EchoTarget, Gateway};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

fn echo_gateway() -> (TcpTarget, Gateway) {
    let echo = EchoTarget::start();
    let gw = Gateway::builder().target("echo", echo.addr, "tcp").start();
    (echo, gw)
}

/// `python3 -c script args…` within `limit`: (success, stdout, stderr).
fn python(script: &str, args: &[&str], limit: Duration) -> (bool, String, String) {
    let out = run_bounded(Command::new("python3").args(["-c", script]).args(args), limit);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
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
    let url = format!("{}/v1/tunnel/echo", gw.url());
    let (ok, out, err) = python(
        PYTHON_CLIENT,
        &[&url, &gw.token("alice", "echo")],
        Duration::from_secs(60),
    );
    assert!(ok, "python client failed:\n{out}\n{err}");
    assert!(out.contains("close 1000") && out.trim_end().ends_with("ok"), "{out}");
    assert_eq!(echo.accepted(), 1);
    let rec = &gw.session_records(1)[0];
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
    let url = format!("{}/v1/tunnel/echo", gw.url());
    let (_, out, err) = python(script, &[&url], Duration::from_secs(30));
    assert!(out.contains("status 401"), "{out}\n{err}");
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn websocat_client() {
    let (echo, gw) = echo_gateway();
    let token = gw.token("alice", "echo");
    let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    // The URL goes first: websocat's -H takes every value after it.
    let mut cmd = Command::new("websocat");
    cmd.arg(format!("{}/v1/tunnel/echo", gw.url()))
        .args(["--binary", "-k", "--ping-interval", "1", "-H"])
        .arg(format!("Authorization: Bearer {token}"));
    // Half the input, a pause so that keepalive pings get their turn, then the rest.
    let input = payload.clone();
    let out = run_bounded_fed(&mut cmd, Duration::from_secs(60), move |mut stdin| {
        let (first, second) = input.split_at(input.len() / 2);
        let _ = stdin.write_all(first);
        std::thread::sleep(Duration::from_millis(2500));
        let _ = stdin.write_all(second);
    });
    let err = text(&out.stderr);
    assert!(out.status.success(), "websocat failed: {err}");
    assert_eq!(out.stdout.len(), payload.len(), "{err}");
    assert!(out.stdout == payload);
    assert_eq!(echo.accepted(), 1);
    assert_eq!(gw.session_records(1)[0]["bytes_target_to_client"], payload.len() as u64);
}
