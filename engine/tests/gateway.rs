//! The gateway against its own clients: denials, bad input, close handshakes, timeouts, shutdown.
//! Each test runs a real `portcullis` process on a fresh loopback port.

mod common;

use common::*;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use portcullis_protocols::token::Claims;
use portcullis_protocols::ws::{CloseCode, Message, OpCode};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn echo_targets(echo: &EchoTarget) -> Vec<TargetDef> {
    vec![
        TargetDef {
            name: "echo",
            address: echo.addr.to_string(),
            protocol: "tcp",
        },
        TargetDef {
            name: "forbidden",
            address: echo.addr.to_string(),
            protocol: "tcp",
        },
        TargetDef {
            name: "dead",
            address: dead_address(),
            protocol: "tcp",
        },
    ]
}

async fn healthy(gw: &Gateway) {
    let mut tls = tls_connect(gw.addr()).await;
    let resp = exchange(&mut tls, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
}

#[tokio::test]
async fn echo_round_trip_and_audit() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    // Fragmented message: the tunnel carries bytes, not messages.
    ws.send_frame(false, OpCode::Binary, &payload[..1000], true).await;
    ws.send_frame(true, OpCode::Continuation, &payload[1000..], true).await;
    assert_eq!(ws.recv_bytes(payload.len(), 10 * SEC).await, payload);
    ws.send_close(CloseCode::NORMAL).await;
    assert_eq!(ws.recv_close(10 * SEC).await.0, Some(1000));
    let lines = gw.audit_lines(1);
    let rec = lines.iter().find(|l| l["event"] == "session").expect("session record");
    assert_eq!(rec["user"], "alice");
    assert_eq!(rec["target"], "echo");
    assert_eq!(rec["protocol"], "tcp");
    assert_eq!(rec["bytes_client_to_target"], payload.len() as u64);
    assert_eq!(rec["bytes_target_to_client"], payload.len() as u64);
    assert_eq!(rec["ended"], "client_closed");
    assert!(rec["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(rec["session"].as_str().unwrap().len() >= 16);
}

#[tokio::test]
async fn pings_are_answered_between_data() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.send_frame(true, OpCode::Ping, b"are you there", true).await;
    match ws.recv(10 * SEC).await {
        Some(Message::Pong(p)) => assert_eq!(p.as_bytes(), b"are you there"),
        other => panic!("expected pong, got {other:?}"),
    }
    ws.send_binary(b"after ping").await;
    assert_eq!(ws.recv_bytes(10, 10 * SEC).await, b"after ping");
}

#[tokio::test]
async fn half_close_from_client_delivers_the_targets_last_bytes() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    // Data and Close in one write: the echo's answer still comes back before the closing handshake.
    ws.send_binary(b"last words").await;
    ws.send_close(CloseCode::NORMAL).await;
    let mut data = Vec::new();
    loop {
        match ws.recv(10 * SEC).await {
            Some(Message::Binary(b)) => data.extend_from_slice(&b),
            Some(Message::Close { code, .. }) => {
                assert_eq!(code.map(|c| c.0), Some(1000));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(data, b"last words");
}

#[tokio::test]
async fn target_closing_sends_close_1000() {
    // A target that greets and hangs up.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut c, _) = listener.accept().unwrap();
        c.write_all(b"SSH-2.0-fake\r\n").unwrap();
    });
    let gw = Gateway::start(
        &[TargetDef {
            name: "hangup",
            address: addr.to_string(),
            protocol: "ssh",
        }],
        "",
    );
    let mut ws = WsClient::open(&gw, "hangup", &gw.token("alice", "hangup")).await;
    assert_eq!(ws.recv_bytes(14, 10 * SEC).await, b"SSH-2.0-fake\r\n");
    let (code, reason) = ws.recv_close(10 * SEC).await;
    assert_eq!(code, Some(1000));
    assert!(reason.contains("target closed"), "{reason}");
    ws.send_close(CloseCode::NORMAL).await;
    let lines = gw.audit_lines(1);
    assert_eq!(
        lines.iter().find(|l| l["event"] == "session").unwrap()["ended"],
        "target_closed"
    );
}

#[tokio::test]
async fn denials_reach_no_target() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "");
    let now = unix_now();
    let claims = |tgt: &str, nbf: u64, exp: u64| Claims {
        sub: "alice".into(),
        tgt: tgt.into(),
        exp,
        nbf,
        iat: Some(nbf),
        jti: "t".into(),
    };
    let other = Gateway::start(&echo_targets(&echo), "");
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 401),
        ("garbage token", Some("abc.def.ghi".into()), 401),
        (
            "expired",
            Some(gw.token_with(&claims("echo", now - 600, now - 60))),
            401,
        ),
        (
            "not yet valid",
            Some(gw.token_with(&claims("echo", now + 600, now + 900))),
            401,
        ),
        ("wrong signature", Some(other.token("alice", "echo")), 401),
        ("token for another target", Some(gw.token("alice", "forbidden")), 403),
        ("user not allowed", Some(gw.token("bob", "echo")), 403),
        ("unknown user", Some(gw.token("mallory", "echo")), 403),
    ];
    for (what, token, want) in cases {
        let mut tls = tls_connect(gw.addr()).await;
        let resp = exchange(
            &mut tls,
            upgrade_request("/v1/tunnel/echo", token.as_deref()).as_bytes(),
        )
        .await;
        assert_eq!(status_of(&resp), want, "{what}: {}", String::from_utf8_lossy(&resp));
    }
    // A valid token for a target the user may not reach, asked on that target's own path.
    let mut tls = tls_connect(gw.addr()).await;
    let resp = exchange(
        &mut tls,
        upgrade_request("/v1/tunnel/forbidden", Some(&gw.token("alice", "forbidden"))).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 403);
    // Unknown target: 404, whatever the token says.
    let mut tls = tls_connect(gw.addr()).await;
    let resp = exchange(
        &mut tls,
        upgrade_request("/v1/tunnel/nowhere", Some(&gw.token("alice", "nowhere"))).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 404);
    assert_eq!(echo.accepted(), 0, "a denied request reached the target");
    // Target not answering: 502.
    let mut tls = tls_connect(gw.addr()).await;
    let resp = exchange(
        &mut tls,
        upgrade_request("/v1/tunnel/dead", Some(&gw.token("alice", "dead"))).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&resp), 502);
    // The query-parameter form works like the header.
    let token = gw.token("alice", "echo");
    let mut tls = tls_connect(gw.addr()).await;
    tls.write_all(upgrade_request(&format!("/v1/tunnel/echo?token={token}"), None).as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tls.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    assert_eq!(echo.accepted_reaching(1).await, 1);
    // Every denial is audited, and no token text ever is.
    let lines = gw.audit_lines(11);
    assert!(lines.iter().filter(|l| l["event"] == "denied").count() >= 11);
    let audit = std::fs::read_to_string(&gw.audit).unwrap();
    assert!(!audit.contains(&token[..40]) && !audit.contains("abc.def.ghi"));
}

#[tokio::test]
async fn routes_and_http_errors() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "");
    let cases: &[(&[u8], u16)] = &[
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /v1/tunnel/echo HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"POST /v1/tunnel/echo HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET / HTTP/1.0\r\n\r\n", 505),
        (b"\x00\x01garbage\r\n\r\n", 400),
    ];
    for (req, want) in cases {
        let mut tls = tls_connect(gw.addr()).await;
        let resp = exchange(&mut tls, req).await;
        assert_eq!(status_of(&resp), *want, "{}", String::from_utf8_lossy(req));
    }
    let bad_version =
        upgrade_request("/v1/tunnel/echo", Some(&gw.token("alice", "echo"))).replace("Version: 13", "Version: 8");
    let mut tls = tls_connect(gw.addr()).await;
    let resp = exchange(&mut tls, bad_version.as_bytes()).await;
    assert_eq!(status_of(&resp), 426);
    assert!(String::from_utf8_lossy(&resp).contains("Sec-WebSocket-Version: 13"));
    assert_eq!(echo.accepted(), 0);
}

#[tokio::test]
async fn hostile_input_is_contained() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(
        &echo_targets(&echo),
        "request_timeout = \"1s\"\nhandshake_timeout = \"2s\"",
    );
    // A session that stays up throughout.
    let mut bystander = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;

    // Garbage instead of TLS: the connection is dropped.
    let mut raw = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let n = tokio::time::timeout(10 * SEC, raw.read_to_end(&mut sink))
        .await
        .expect("not closed");
    assert!(
        n.is_err() || sink.is_empty() || sink[0] == 0x15,
        "plaintext got an HTTP answer"
    );

    // Silence instead of a TLS handshake: closed after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let r = tokio::time::timeout(10 * SEC, silent.read_to_end(&mut sink)).await;
    assert!(r.is_ok(), "silent connection was not closed");

    // Oversized head: 431.
    let mut tls = tls_connect(gw.addr()).await;
    let big = format!("GET /healthz HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(status_of(&exchange(&mut tls, big.as_bytes()).await), 431);
    let mut tls = tls_connect(gw.addr()).await;
    let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status_of(&exchange(&mut tls, format!("GET /healthz HTTP/1.1\r\n{many}\r\n").as_bytes()).await),
        431
    );

    // A request that never finishes: 408 and closed after the request timeout.
    let mut tls = tls_connect(gw.addr()).await;
    let started = std::time::Instant::now();
    let resp = exchange(&mut tls, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(status_of(&resp), 408);
    assert!(started.elapsed() < 9 * SEC);

    // Unmasked client frame: Close 1002.
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.send_frame(true, OpCode::Binary, b"not masked", false).await;
    assert_eq!(ws.recv_close(10 * SEC).await.0, Some(1002));

    // Oversized frame (the header alone says 2 GiB): Close 1009, nothing buffered.
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.tls
        .write_all(&[0x82, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0, 1, 2, 3, 4])
        .await
        .unwrap();
    ws.tls.flush().await.unwrap();
    assert_eq!(ws.recv_close(10 * SEC).await.0, Some(1009));

    // Text frames have no place in a byte tunnel: Close 1003.
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.send_frame(true, OpCode::Text, b"hello", true).await;
    assert_eq!(ws.recv_close(10 * SEC).await.0, Some(1003));

    // Reserved bits: 1002.
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.tls.write_all(&[0xc2, 0x80, 1, 2, 3, 4]).await.unwrap();
    ws.tls.flush().await.unwrap();
    assert_eq!(ws.recv_close(10 * SEC).await.0, Some(1002));

    // Through all of it the bystander session and the health check kept working.
    bystander.send_binary(b"still here").await;
    assert_eq!(bystander.recv_bytes(10, 10 * SEC).await, b"still here");
    healthy(&gw).await;
}

#[tokio::test]
async fn idle_sessions_are_closed() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "idle_timeout = \"1s\"\nping_interval = \"300ms\"");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    let (code, reason) = loop {
        // Pings keep arriving, but answering them is not activity.
        match ws.recv(10 * SEC).await {
            Some(Message::Ping(p)) => ws.send_frame(true, OpCode::Pong, p.as_bytes(), true).await,
            Some(Message::Close { code, reason }) => break (code.map(|c| c.0), reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(code, Some(1001));
    assert_eq!(reason, "idle_timeout");
}

#[tokio::test]
async fn silent_peers_are_detected_by_ping() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "ping_interval = \"300ms\"");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    // Read frames but never answer pings: the gateway gives up on us.
    let mut pings = 0;
    let reason = loop {
        match ws.recv(10 * SEC).await {
            Some(Message::Ping(_)) => pings += 1,
            Some(Message::Close { reason, .. }) => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(pings >= 1);
    assert_eq!(reason, "ping_timeout");
}

#[tokio::test]
async fn max_lifetime_ends_sessions() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(&echo_targets(&echo), "max_lifetime = \"1s\"");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    ws.send_binary(b"x").await;
    let (code, reason) = ws.recv_close(10 * SEC).await;
    assert_eq!((code, reason.as_str()), (Some(1008), "max_lifetime"));
}

#[tokio::test]
async fn sigterm_drains_then_closes_sessions() {
    let echo = EchoTarget::start();
    let mut gw = Gateway::start(&echo_targets(&echo), "drain_timeout = \"1s\"");
    let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGTERM) };
    // During the drain the session still works; new connections are refused.
    ws.send_binary(b"draining").await;
    assert_eq!(ws.recv_bytes(8, 10 * SEC).await, b"draining");
    let (code, reason) = ws.recv_close(10 * SEC).await;
    assert_eq!((code, reason.as_str()), (Some(1001), "gateway_shutdown"));
    ws.send_close(CloseCode::GOING_AWAY).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.child.wait().unwrap();
        (status, gw)
    });
    let (status, _gw) = tokio::time::timeout(10 * SEC, status)
        .await
        .expect("gateway did not exit")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn config_check_reports_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(dir.path().join("token.pub"), portcullis::keys::generate().unwrap().1).unwrap();
    std::fs::write(&good, "listen = \"127.0.0.1:8443\"\n[auth]\ntoken_public_key = \"token.pub\"\n[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n[[user]]\nname = \"alice\"\ntargets = [\"vm1\"]\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("[\"vm1\"]", "[\"vm9\"]"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 10: user.targets: unknown target \"vm9\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn cli_errors_are_one_line() {
    let out = std::process::Command::new(BIN)
        .args([
            "connect",
            "wss://127.0.0.1:1",
            "--target",
            "x",
            "--token",
            "t",
            "--insecure",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("portcullis: error: cannot connect") && err.lines().count() == 1,
        "{err}"
    );
    let out = std::process::Command::new(BIN)
        .args([
            "token",
            "issue",
            "--key",
            "/nonexistent",
            "--user",
            "a",
            "--target",
            "b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[tokio::test]
async fn rdp_tunnels_audit_the_x224_cookie() {
    let echo = EchoTarget::start();
    let gw = Gateway::start(
        &[TargetDef {
            name: "desk",
            address: echo.addr.to_string(),
            protocol: "rdp",
        }],
        "",
    );
    let mut ws = WsClient::open(&gw, "desk", &gw.token("alice", "desk")).await;
    let cr = portcullis_protocols::rdp::connection_request("ALICE-PC\\alice");
    // Split across frames, as a client may.
    ws.send_binary(&cr[..5]).await;
    ws.send_binary(&cr[5..]).await;
    assert_eq!(ws.recv_bytes(cr.len(), 10 * SEC).await, cr);
    ws.send_close(CloseCode::NORMAL).await;
    ws.recv_close(10 * SEC).await;
    let lines = gw.audit_lines(1);
    let rec = lines.iter().find(|l| l["event"] == "session").unwrap();
    assert_eq!(rec["protocol"], "rdp");
    assert_eq!(rec["rdp_cookie"], "ALICE-PC\\alice");
}

#[tokio::test]
async fn sighup_reloads_policy_without_dropping_sessions() {
    let echo = EchoTarget::start();
    let mut gw = Gateway::start(&echo_targets(&echo), "");
    let mut live = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
    // Take "echo" away from alice and reload.
    let config = gw.dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let changed = text.replacen("targets = [\"echo\", \"dead\"]", "targets = [\"dead\"]", 1);
    assert_ne!(text, changed, "test config shape changed");
    std::fs::write(&config, changed).unwrap();
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) };
    // New sessions see the new policy. The reload is asynchronous, and a connection accepted
    // just before it keeps the old snapshot: poll, reading only each answer's status line.
    let deadline = std::time::Instant::now() + 10 * SEC;
    loop {
        let mut tls = tls_connect(gw.addr()).await;
        let req = upgrade_request("/v1/tunnel/echo", Some(&gw.token("alice", "echo")));
        tls.write_all(req.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let mut head = [0u8; 12];
        let got = tokio::time::timeout(5 * SEC, tls.read_exact(&mut head)).await;
        if matches!(got, Ok(Ok(()))) && &head == b"HTTP/1.1 403" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "policy not reloaded: {}",
            String::from_utf8_lossy(&head)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The session opened before the reload keeps working.
    live.send_binary(b"still relayed").await;
    assert_eq!(live.recv_bytes(13, 10 * SEC).await, b"still relayed");
    // A broken file is refused and the running policy kept.
    std::fs::write(&config, "this is not toml").unwrap();
    unsafe { libc::kill(gw.child.id() as i32, libc::SIGHUP) };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut tls = tls_connect(gw.addr()).await;
    assert_eq!(
        status_of(&exchange(&mut tls, b"GET /healthz HTTP/1.1\r\n\r\n").await),
        200
    );
    assert!(gw.child.try_wait().unwrap().is_none(), "gateway exited on a bad reload");
}
