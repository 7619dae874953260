//! End-to-end tests against a real OpenSSH server: `ssh` through `portcullis connect` as a
//! ProxyCommand, `ssh`/`scp` through `portcullis tunnel`, and a refused tunnel that must never
//! reach sshd. Every test starts its own sshd and gateway on fresh ports, in its own temp dir.

use portcullis_testkit::gateway::gateway_bin;
use portcullis_testkit::process::{marker, run_bounded, wait_until, ChildGuard};
use portcullis_testkit::sshd::{Sshd, ALIAS};
use portcullis_testkit::targets::TcpTarget;
use portcullis_testkit::{text, Gateway, Tunnel};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn gateway_for(sshd: &Sshd) -> Gateway {
    Gateway::builder().target(ALIAS, sshd.address(), "ssh").start()
}

/// A token minted by the CLI: `portcullis token issue`.
fn cli_token(gw: &Gateway, user: &str, target: &str) -> String {
    let out = run_bounded(
        Command::new(gateway_bin())
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

/// The ssh or scp run `what` exited 0 (else the test fails with its output and sshd's log).
fn assert_ran(what: &str, out: &Output, sshd: &Sshd) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}\nsshd log:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        sshd.log_text()
    );
}

/// `ssh … echo MARK` worked: it exited 0 and the marker came back.
fn assert_echoed(out: &Output, mark: &str, sshd: &Sshd) {
    assert_ran("ssh", out, sshd);
    let stdout = text(&out.stdout);
    assert!(stdout.contains(mark), "marker missing from stdout: {stdout:?}");
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
    while let Ok(n @ 1..) = f.read(&mut buf) {
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
    assert_echoed(
        &sshd.ssh_via_connect(&gw, &token, &format!("echo {mark}")),
        &mark,
        &sshd,
    );

    let sessions = gw.session_records(1);
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
    // ssh exited normally, so its tunnel closes cleanly. Who closed first is a race: ssh's exit
    // closes the ProxyCommand (client Close) while sshd, told by ssh's disconnect, closes its TCP
    // (target EOF); either one is a clean close handshake, anything else is not.
    assert!(
        s["ended"] == "client_closed" || s["ended"] == "target_closed",
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
    assert_echoed(&sshd.ssh_via_port(tunnel.port, &format!("echo {mark}")), &mark, &sshd);
    let sessions = gw.session_records(1);
    assert_eq!(sessions.len(), 1, "audit: {:?}", gw.audit_lines(0));
    assert_eq!(sessions[0]["user"], "alice");
    assert!(sessions[0]["bytes_target_to_client"].as_u64().unwrap_or(0) > 0);

    // A second connection through the same tunnel gets its own session.
    let mark = marker();
    assert_echoed(&sshd.ssh_via_port(tunnel.port, &format!("echo {mark}")), &mark, &sshd);
    assert_eq!(gw.session_records(2).len(), 2, "audit: {:?}", gw.audit_lines(0));
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

    // sshd runs on this machine, so "remote" is sshd's temp dir.
    let remote = sshd.dir.path().join("uploaded.bin");
    let remote_spec = format!("{}@127.0.0.1:{}", sshd.user, remote.display());
    let down = local.path().join("downloaded.bin");
    for (what, from, to, copy) in [
        ("upload", src.to_str().unwrap(), remote_spec.as_str(), &remote),
        ("download", remote_spec.as_str(), down.to_str().unwrap(), &down),
    ] {
        let started = Instant::now();
        let out = sshd.scp_via_port(tunnel.port, from, to, Duration::from_secs(180));
        eprintln!("{what} of {SIZE} bytes took {:?}", started.elapsed());
        assert_ran(&format!("scp {what}"), &out, &sshd);
        assert_eq!(std::fs::metadata(copy).unwrap().len(), SIZE as u64);
        assert_eq!(sha256_file(copy), want, "the {what}ed file differs");
    }

    // The audit counts the payload: one session carried ≥ 50 MiB up, the other ≥ 50 MiB down.
    let sessions = gw.session_records(2);
    assert_eq!(sessions.len(), 2, "audit: {:?}", gw.audit_lines(0));
    for (way, key) in [
        ("upload", "bytes_client_to_target"),
        ("download", "bytes_target_to_client"),
    ] {
        assert!(
            sessions.iter().any(|s| s[key].as_u64().unwrap_or(0) >= SIZE as u64),
            "no session carried the {way}: {sessions:?}"
        );
    }
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

    // And sshd never saw a connection, not even a stray one a moment later.
    let reached = wait_until(Duration::from_millis(300), || {
        sshd.log_text().contains("Connection from")
    });
    assert!(!reached, "sshd was reached:\n{}", sshd.log_text());
}

/// Narrows down why `ssh` through `connect` can stall: bytes from the target that do not end
/// in a newline must still reach `connect`'s stdout promptly (SSH packets are binary). A raw TCP
/// target sends a partial line and then stays silent with the connection open.
#[test]
fn connect_delivers_bytes_without_newline_promptly() {
    const PARTIAL: &[u8] = b"partial-no-newline";
    let target = TcpTarget::greeting(PARTIAL, Duration::from_secs(20));
    let gw = Gateway::builder().target("raw", target.addr, "tcp").start();
    let token = gw.token("alice", "raw");
    let mut child = Command::new(gateway_bin())
        .args(["connect", &gw.url(), "--target", "raw", "--insecure"])
        .env("PORTCULLIS_TOKEN", &token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let _connect = ChildGuard::new(child, Duration::ZERO);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < PARTIAL.len() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(_) => break,
        }
    }
    assert_eq!(
        text(&got),
        text(PARTIAL),
        "connect held back target bytes that do not end in a newline (stdout never flushed?)"
    );
}
