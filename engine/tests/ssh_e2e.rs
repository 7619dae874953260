//! End-to-end tests against a real OpenSSH server: `ssh` through `portcullis connect` as a
//! ProxyCommand, `ssh`/`scp` through `portcullis tunnel`, and a refused tunnel that must never
//! reach sshd. Every test starts its own sshd and gateway on fresh ports, in its own temp dir.

mod common;

use common::sshd::*;
use common::{session_records, Gateway, TargetDef, Tunnel, BIN};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn gateway_for(sshd: &Sshd) -> Gateway {
    Gateway::start(
        &[TargetDef {
            name: ALIAS,
            address: sshd.address(),
            protocol: "ssh",
        }],
        "",
    )
}

/// A token minted by the CLI: `portcullis token issue`.
fn cli_token(gw: &Gateway, user: &str, target: &str) -> String {
    let out = run_bounded(
        Command::new(BIN)
            .args(["token", "issue", "--key"])
            .arg(gw.key_path())
            .args(["--user", user, "--target", target, "--ttl", "5m"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "token issue failed: {}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256_file(p: &Path) -> [u8; 32] {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("cannot open {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().into()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn ssh_through_connect_proxycommand() {
    let sshd = Sshd::start();
    let gw = gateway_for(&sshd);
    let harness_token = gw.token("alice", ALIAS);
    let token = cli_token(&gw, "alice", ALIAS);
    assert_ne!(harness_token, token, "two issued tokens should differ (jti, iat)");

    let mark = marker();
    let out = sshd.ssh_via_connect(&gw, &token, &format!("echo {mark}"));
    assert!(
        out.status.success(),
        "ssh failed ({}):\nstdout: {}\nstderr: {}\nsshd log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        sshd.log_text()
    );
    assert!(
        text(&out.stdout).contains(&mark),
        "marker missing from stdout: {:?}",
        text(&out.stdout)
    );

    let sessions = session_records(&gw, 1);
    assert_eq!(
        sessions.len(),
        1,
        "expected one session record, audit: {:?}",
        gw.audit_lines(0)
    );
    let s = &sessions[0];
    assert_eq!(s["user"], "alice", "{s}");
    assert_eq!(s["target"], ALIAS, "{s}");
    assert_eq!(s["protocol"], "ssh", "{s}");
    assert!(s["bytes_client_to_target"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["bytes_target_to_client"].as_u64().unwrap_or(0) > 0, "{s}");
    assert_eq!(
        s["ended"], "client_closed",
        "ssh exited normally, so its tunnel closes cleanly: {s}"
    );
    assert!(!s["end"].as_str().unwrap_or("").is_empty(), "{s}");
    // The sshd saw exactly the one connection, and accepted the key.
    let log = sshd.log_text();
    assert_eq!(log.matches("Connection from").count(), 1, "sshd log:\n{log}");
    assert!(log.contains("Accepted publickey"), "sshd log:\n{log}");
}

#[test]
fn ssh_through_local_tunnel() {
    let sshd = Sshd::start();
    let gw = gateway_for(&sshd);
    let tunnel = Tunnel::start(&gw, ALIAS, &gw.token("alice", ALIAS));

    let mark = marker();
    let out = sshd.ssh_via_port(tunnel.port, &format!("echo {mark}"));
    assert!(
        out.status.success(),
        "ssh failed ({}):\nstdout: {}\nstderr: {}\nsshd log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        sshd.log_text()
    );
    assert!(
        text(&out.stdout).contains(&mark),
        "marker missing from stdout: {:?}",
        text(&out.stdout)
    );

    let sessions = session_records(&gw, 1);
    assert_eq!(sessions.len(), 1, "audit: {:?}", gw.audit_lines(0));
    assert_eq!(sessions[0]["user"], "alice");
    assert!(sessions[0]["bytes_target_to_client"].as_u64().unwrap_or(0) > 0);

    // A second connection through the same tunnel gets its own session.
    let mark2 = marker();
    let out = sshd.ssh_via_port(tunnel.port, &format!("echo {mark2}"));
    assert!(out.status.success(), "second ssh failed: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&mark2));
    assert_eq!(session_records(&gw, 2).len(), 2, "audit: {:?}", gw.audit_lines(0));
}

#[test]
fn scp_50_mib_through_tunnel() {
    const SIZE: usize = 50 << 20;
    let sshd = Sshd::start();
    let gw = gateway_for(&sshd);
    let tunnel = Tunnel::start(&gw, ALIAS, &gw.token("alice", ALIAS));

    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src.bin");
    let data = pseudo_random(SIZE, 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    std::fs::write(&src, &data).unwrap();
    let want = sha256_file(&src);
    drop(data);

    // Up: local -> remote (sshd runs on this machine, so "remote" is sshd's temp dir).
    let remote = sshd.dir.path().join("uploaded.bin");
    let started = Instant::now();
    let out = sshd.scp_via_port(
        tunnel.port,
        src.to_str().unwrap(),
        &format!("{}@127.0.0.1:{}", sshd.user, remote.display()),
        Duration::from_secs(180),
    );
    eprintln!("upload of {SIZE} bytes took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "scp up failed ({}): {}\nsshd log:\n{}",
        out.status,
        text(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(std::fs::metadata(&remote).unwrap().len(), SIZE as u64);
    assert_eq!(sha256_file(&remote), want, "uploaded file differs");

    // Down: remote -> local.
    let down = local.path().join("downloaded.bin");
    let started = Instant::now();
    let out = sshd.scp_via_port(
        tunnel.port,
        &format!("{}@127.0.0.1:{}", sshd.user, remote.display()),
        down.to_str().unwrap(),
        Duration::from_secs(180),
    );
    eprintln!("download of {SIZE} bytes took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "scp down failed ({}): {}\nsshd log:\n{}",
        out.status,
        text(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(std::fs::metadata(&down).unwrap().len(), SIZE as u64);
    assert_eq!(sha256_file(&down), want, "downloaded file differs");

    // The audit counts the payload: one session carried ≥ 50 MiB up, the other ≥ 50 MiB down.
    let sessions = session_records(&gw, 2);
    assert_eq!(sessions.len(), 2, "audit: {:?}", gw.audit_lines(0));
    let up = |s: &serde_json::Value| s["bytes_client_to_target"].as_u64().unwrap_or(0);
    let dn = |s: &serde_json::Value| s["bytes_target_to_client"].as_u64().unwrap_or(0);
    assert!(
        sessions.iter().any(|s| up(s) >= SIZE as u64),
        "no session carried the upload: {sessions:?}"
    );
    assert!(
        sessions.iter().any(|s| dn(s) >= SIZE as u64),
        "no session carried the download: {sessions:?}"
    );
}

#[test]
fn ssh_target_denied_without_policy() {
    let sshd = Sshd::start();
    let gw = gateway_for(&sshd);
    let token = cli_token(&gw, "bob", ALIAS);

    let mark = marker();
    let out = sshd.ssh_via_connect(&gw, &token, &format!("echo {mark}"));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "ssh succeeded for bob: {}", text(&out.stdout));
    assert!(!text(&out.stdout).contains(&mark));
    assert!(
        stderr.contains("403"),
        "connect's error should mention 403, stderr:\n{stderr}"
    );

    // The gateway recorded the refusal and no session.
    let lines = gw.audit_lines(1);
    let denied: Vec<_> = lines.iter().filter(|l| l["event"] == "denied").collect();
    assert_eq!(denied.len(), 1, "audit: {lines:?}");
    assert_eq!(denied[0]["status"], 403, "audit: {lines:?}");
    assert!(lines.iter().all(|l| l["event"] != "session"), "audit: {lines:?}");

    // And sshd never saw a connection. Give a stray one a moment to show up in the log.
    std::thread::sleep(Duration::from_millis(300));
    let log = sshd.log_text();
    assert!(!log.contains("Connection from"), "sshd was reached:\n{log}");
}

/// Narrows down why `ssh` through `connect` can stall: bytes from the target that do not end
/// in a newline must still reach `connect`'s stdout promptly (SSH packets are binary). A raw TCP
/// target sends a partial line and then stays silent with the connection open.
#[test]
fn connect_delivers_bytes_without_newline_promptly() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.write_all(b"partial-no-newline");
            std::thread::sleep(Duration::from_secs(20));
        }
    });
    let gw = Gateway::start(
        &[TargetDef {
            name: "raw",
            address,
            protocol: "tcp",
        }],
        "",
    );
    let token = gw.token("alice", "raw");
    let mut child = Command::new(BIN)
        .args(["connect", &gw.url(), "--target", "raw", "--insecure", "--token", &token])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < b"partial-no-newline".len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    kill_group(&mut child);
    assert_eq!(
        text(&got),
        "partial-no-newline",
        "connect held back target bytes that do not end in a newline (stdout never flushed?)"
    );
}
