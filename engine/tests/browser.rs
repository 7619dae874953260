//! The web app end to end in a real browser (issue 5): Debian's Chromium, driven by playwright-core
//! from the Node scripts in `web/e2e/`, against the real gateway binary and a real sshd on loopback.
//!
//! Each test starts its servers, then runs `node web/e2e/<script>.mjs` (see
//! `portcullis_testkit::browser`), and checks the script's result and exit code, then what the
//! gateway wrote (audit records, recordings). Screenshots go to `target/e2e-artifacts/<test>/`.
//!
//! Needs node, /usr/bin/chromium and `npm ci` in web/e2e: `scripts/test` installs them.

use portcullis_testkit::browser::{artifacts, run_script};
use portcullis_testkit::gateway::GatewayBuilder;
use portcullis_testkit::process::{marker, wait_until};
use portcullis_testkit::sshd::{other_host_key, Sshd};
use portcullis_testkit::Gateway;
use serde_json::{json, Value};
use std::time::Duration;

const PASSWORD: &str = "browser test password";
/// A whole script run, browser start to browser close, must finish within this.
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

/// A gateway that records sessions and whose users sign in with [`PASSWORD`].
fn web_gateway() -> GatewayBuilder {
    Gateway::builder()
        .toml("[recording]\ndir = \"{dir}/recordings\"")
        .password(PASSWORD)
}

/// The SSH target `name` on `sshd`: the gateway logs in with sshd's client key and pins `pin`.
fn ssh_target(gw: GatewayBuilder, name: &str, sshd: &Sshd, pin: &str) -> GatewayBuilder {
    gw.target_with(name, sshd.address(), "ssh", &sshd.target_keys(pin))
}

/// A browser script's settings: the gateway's URL, alice's credentials, where screenshots go.
fn settings(gw: &Gateway, artifacts_name: &str, more: Value) -> Value {
    let mut config = json!({
        "url": gw.origin(),
        "user": "alice",
        "password": PASSWORD,
        "artifacts": artifacts(artifacts_name),
    });
    config
        .as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    config
}

fn no_steps(step: &str) -> String {
    panic!("unexpected step {step}")
}

/// Waits (up to 10 s) for `needle` in the file at `path` (a recording).
fn assert_file_contains(path: &str, needle: &str) {
    let found = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(path).unwrap_or_default().contains(needle)
    });
    assert!(
        found,
        "{needle:?} is not in {path}:\n{}",
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// The session ended with the remote command's exit status `status`.
fn exited_with(rec: &Value, status: &str) -> bool {
    rec["ended"] == "exit_status" && rec["detail"] == status
}

/// Sign in with the form, open vm1, type `echo <marker>`, see it in xterm's buffer, resize the
/// window and see `stty size` follow, screenshot, `exit 3` shown in #status; then the audit record
/// and the recording (which holds the marker).
#[test]
fn browser_terminal_session() {
    let sshd = Sshd::start();
    let gw = ssh_target(web_gateway(), "vm1", &sshd, &sshd.host_key())
        .user("alice", &["vm1"], "")
        .start();
    let marker = marker();
    let config = settings(&gw, "terminal_session", json!({ "target": "vm1", "marker": marker }));
    let run = run_script("session.mjs", config, SCRIPT_LIMIT, no_steps);
    let result = run.assert_ok();
    let shot = result["screenshot"].as_str().unwrap();
    let png = std::fs::read(shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{shot} is a PNG"
    );

    let records = gw.sessions_of("vm1", 1);
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec["user"], "alice");
    assert_eq!(rec["via"], "web_terminal");
    assert!(exited_with(rec, "3"), "{rec}");
    let recording = rec["recording"].as_str().expect("a recording path in the audit record");
    assert_file_contains(recording, &marker);
    // The recording saw the resize too: a `"r"` event with the size stty reported at the end.
    let last = &result["sizes"][1];
    assert_file_contains(recording, &format!("\"r\",\"{}x{}\"", last["cols"], last["rows"]));
}

/// Refusals as the browser shows them: wrong password, lockout, a target outside the policy
/// (not listed; opened directly: an error), a changed host key, an expired sign-in (a second
/// gateway with `session_ttl = "2s"`), and a cross-origin terminal WebSocket. Then the gateway's
/// own record of them.
#[test]
fn browser_denials() {
    let sshd = Sshd::start();
    let pin = sshd.host_key();
    let gw = web_gateway();
    let gw = ssh_target(gw, "vm1", &sshd, &pin);
    let gw = ssh_target(gw, "vm-wrong-key", &sshd, &other_host_key());
    let gw = ssh_target(gw, "forbidden", &sshd, &pin)
        .user("alice", &["vm1", "vm-wrong-key"], "")
        .user("carol", &["vm1"], "")
        .start();
    let short = Gateway::builder()
        .toml("[web]\nsession_ttl = \"2s\"")
        .password(PASSWORD);
    let short = ssh_target(short, "vm1", &sshd, &pin)
        .user("alice", &["vm1"], "")
        .start();
    // For the pages of other origins the script serves on loopback.
    let other_origin = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let config = json!({
        "ttl_url": short.origin(),
        "lock_user": "carol",
        "allowed": ["vm1", "vm-wrong-key"],
        "forbidden": "forbidden",
        "wrong_key": "vm-wrong-key",
        "cert_pem": other_origin.cert.pem(),
        "key_pem": other_origin.signing_key.serialize_pem(),
    });
    run_script("denials.mjs", settings(&gw, "denials", config), SCRIPT_LIMIT, no_steps).assert_ok();

    // The gateway's side: the refused WebSockets are audited with the right status and reason.
    let denied = gw.records_where(0, |l| l["event"] == "denied");
    let count = |path: &str, status: u16, reason: &str| {
        denied
            .iter()
            .filter(|l| {
                l["path"].as_str().unwrap_or("").starts_with(path)
                    && l["status"] == status
                    && l["reason"].as_str().unwrap_or("").contains(reason)
            })
            .count()
    };
    assert_eq!(count("/v1/ssh/forbidden", 403, "not allowed"), 1, "{denied:?}");
    assert_eq!(count("/v1/ssh/vm1", 403, "cross-origin"), 2, "{denied:?}");
    // The changed host key ended that session with the gateway's message, no shell.
    let wrong = gw.sessions_of("vm-wrong-key", 1);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert_eq!(wrong[0]["ended"], "target_error", "{}", wrong[0]);
    let detail = wrong[0]["detail"].as_str().unwrap_or("");
    assert!(detail.contains("does not match the pinned key"), "{}", wrong[0]);
    assert_eq!(wrong[0]["bytes_target_to_client"], 0, "{}", wrong[0]);
    // Only the control WebSocket reached vm1.
    assert_eq!(gw.sessions_of("vm1", 1).len(), 1);
    assert!(gw.sessions_of("forbidden", 0).is_empty());
}

/// Two live browser sessions to two sshds; one sshd is killed (sessions and all): its tab shows
/// the disconnect, the gateway audits how it ended, the other session and a new one still work.
#[test]
fn browser_sshd_killed_mid_session() {
    let stable = Sshd::start();
    let mut doomed = Sshd::start();
    let gw = ssh_target(web_gateway(), "vm1", &stable, &stable.host_key());
    let mut gw = ssh_target(gw, "vm-doomed", &doomed, &doomed.host_key())
        .user("alice", &["vm1", "vm-doomed"], "")
        .start();
    let markers: Vec<String> = (0..4).map(|_| marker()).collect();
    let mut killed = 0;
    let config = json!({ "stable": "vm1", "doomed": "vm-doomed", "markers": markers });
    let run = run_script(
        "disconnect.mjs",
        settings(&gw, "sshd_killed", config),
        SCRIPT_LIMIT,
        |step| {
            assert_eq!(step, "kill_sshd");
            killed = doomed.kill();
            format!("killed {killed} processes")
        },
    );
    run.assert_ok();
    assert!(killed >= 2, "sshd and its session processes: {killed}");

    // The gateway noticed: the dead session's record says the target side ended it.
    let lost = gw.sessions_of("vm-doomed", 2);
    let first = lost.first().expect("an audit record for the killed session");
    let ended = first["ended"].as_str().unwrap_or("");
    assert!(ended.starts_with("target_"), "{first}");
    assert_file_contains(first["recording"].as_str().unwrap(), &markers[1]);
    // The reconnect to the dead server is audited too, as a failure to reach the target.
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(
        lost[1]["ended"].as_str().unwrap_or("").starts_with("target_"),
        "{}",
        lost[1]
    );
    // The other sessions ended normally, and the gateway still runs.
    let ok = gw.sessions_of("vm1", 2);
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert!(ok.iter().all(|r| exited_with(r, "0")), "{ok:?}");
    assert!(gw.exited().is_none(), "the gateway is still running");
}

/// The Sessions page: carol's live tunnel (opened here) is listed for alice, an administrator, its
/// byte count follows the traffic, and alice ends it with a reason; the tunnel closes, the session
/// record says who ended it, the admin record keeps the reason. bob, not an administrator, is
/// refused.
#[test]
fn sessions_page_lists_and_terminates_live_sessions() {
    use portcullis_testkit::{EchoTarget, WsClient};
    let echo = EchoTarget::start();
    let gw = web_gateway()
        .target("echo", echo.addr, "tcp")
        .user("alice", &["echo"], "")
        .user("bob", &["echo"], "")
        .user("carol", &["echo"], "")
        .toml("[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]")
        .start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut ws = rt.block_on(WsClient::open(&gw, "echo", &gw.token("carol", "echo")));
    rt.block_on(ws.echoes(b"before the page"));
    let config = settings(
        &gw,
        "sessions_page",
        json!({ "other": "bob", "target": "echo", "session_user": "carol" }),
    );
    let run = run_script("sessions.mjs", config, SCRIPT_LIMIT, |step| {
        assert_eq!(step, "send");
        rt.block_on(ws.echoes(&[7u8; 5000]));
        "sent".into()
    });
    run.assert_ok();
    // The tunnel was closed by the gateway.
    let (code, _) = rt.block_on(ws.recv_close(Duration::from_secs(10)));
    assert_eq!(code, Some(1008), "a terminated session closes with policy violation");
    let rec = gw.sessions_of("echo", 1);
    assert_eq!(rec[0]["user"], "carol");
    assert_eq!(rec[0]["ended"], "terminated", "{}", rec[0]);
    assert_eq!(rec[0]["terminated_by"], "alice", "{}", rec[0]);
    let admin = gw.records_where(2, |l| l["event"] == "admin");
    let ended = admin
        .iter()
        .find(|a| a["action"] == "terminate" && a["status"] == 202)
        .expect("a terminate record");
    assert_eq!(ended["admin"], "alice");
    assert_eq!(ended["detail"], "e2e: suspicious activity");
    assert_eq!(ended["subject"], rec[0]["session"]);
    let refused = admin.iter().find(|a| a["status"] == 403).expect("bob's refusal");
    assert!(refused["detail"].as_str().unwrap().contains("bob"), "{refused}");
}

/// Shared links (see web/e2e/links.mjs): a guest without an account opens vm1 through alice's
/// link, once; a revoked link ends its session; an expired one is refused; the guest never
/// reaches vm2. Then the audit: who made and revoked the links, each use and each refusal, the
/// guest's sessions under `link:<id>`.
#[test]
fn shared_links_open_one_target_for_a_guest() {
    let sshd = Sshd::start();
    let pin = sshd.host_key();
    let gw = ssh_target(web_gateway(), "vm1", &sshd, &pin);
    let gw = ssh_target(gw, "vm2", &sshd, &pin)
        .user("alice", &["vm1"], "")
        .toml("[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]")
        .start();
    let config = settings(
        &gw,
        "shared_links",
        json!({ "target": "vm1", "other_target": "vm2", "marker": marker() }),
    );
    let run = run_script("links.mjs", config, SCRIPT_LIMIT, no_steps);
    let result = run.assert_ok();
    let ids: Vec<String> = result["link_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let admin = gw.records_where(4, |l| l["event"] == "admin" && l["action"] != "search_audit");
    let made = admin
        .iter()
        .filter(|a| a["action"] == "create_link" && a["status"] == 201)
        .count();
    assert_eq!(made, 3, "{admin:?}");
    let revoked: Vec<_> = admin.iter().filter(|a| a["action"] == "revoke_link").collect();
    assert_eq!(revoked.len(), 1, "{admin:?}");
    assert_eq!(revoked[0]["subject"], ids[1]);
    assert_eq!(revoked[0]["sessions_ended"], 1, "{}", revoked[0]);
    let identity = gw.records_where(5, |l| l["event"] == "identity" && l["method"] == "link");
    let used: Vec<_> = identity.iter().filter(|l| l["action"] == "link_used").collect();
    assert_eq!(used.len(), 2, "{identity:?}");
    assert!(used.iter().all(|u| u["target"] == "vm1"));
    let refused: Vec<&str> = identity
        .iter()
        .filter(|l| l["action"] == "sign_in_failed")
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(refused.len(), 3, "{identity:?}");
    assert!(refused.contains(&"used already"), "{refused:?}");
    // The revoked link's session ended as revoked; both sessions ran as the links' guests.
    let sessions = gw.sessions_of("vm1", 2);
    let guests: Vec<&str> = sessions.iter().map(|s| s["user"].as_str().unwrap()).collect();
    assert!(guests.contains(&format!("link:{}", ids[0]).as_str()), "{guests:?}");
    let revoked_session = sessions
        .iter()
        .find(|s| s["user"] == format!("link:{}", ids[1]))
        .expect("the reusable link's session");
    assert_eq!(revoked_session["ended"], "revoked", "{revoked_session}");
    assert!(gw.sessions_of("vm2", 0).is_empty());
    let denied = gw.records_where(1, |l| l["event"] == "denied" && l["path"] == "/v1/ssh/vm2");
    assert_eq!(denied[0]["status"], 403, "{denied:?}");
}

/// Watching a live terminal (see web/e2e/watch.mjs); then the audit: alice's watch recorded
/// against carol's session, bob's refusal too.
#[test]
fn administrators_watch_a_live_terminal_read_only() {
    let sshd = Sshd::start();
    let gw = ssh_target(web_gateway(), "vm1", &sshd, &sshd.host_key())
        .user("alice", &["vm1"], "")
        .user("carol", &["vm1"], "")
        .user("bob", &["vm1"], "")
        .toml("[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]")
        .start();
    let config = settings(
        &gw,
        "watch",
        json!({ "other": "carol", "third": "bob", "target": "vm1", "marker": marker() }),
    );
    let run = run_script("watch.mjs", config, SCRIPT_LIMIT, no_steps);
    let result = run.assert_ok();
    let session = result["session"].as_str().unwrap();
    let admin = gw.records_where(2, |l| l["event"] == "admin" && l["action"] == "watch_session");
    let granted = admin.iter().find(|a| a["status"] == 101).expect("alice's watch");
    assert_eq!(granted["admin"], "alice");
    assert_eq!(granted["subject"], session);
    assert!(
        admin.iter().any(|a| a["status"] == 403 && a["admin"] == "bob"),
        "{admin:?}"
    );
}

/// File transfer in the browser terminal (see web/e2e/files.mjs): the uploaded file is on the
/// server byte for byte, the downloaded one is the server's, and each is audited with its size
/// and SHA-256.
#[test]
fn files_move_through_the_browser_terminal() {
    use sha2::{Digest, Sha256};
    let sshd = Sshd::start();
    let pin = sshd.host_key();
    let dir = tempfile::tempdir().unwrap();
    let pattern = |n: usize| (0..n).map(|i| (i * 7 % 251) as u8).collect::<Vec<u8>>();
    let down = pattern(30_000);
    std::fs::write(dir.path().join("down.bin"), &down).unwrap();
    let keys = format!("{}\nfile_transfer = true", sshd.target_keys(&pin));
    let gw = web_gateway()
        .target_with("vm1", sshd.address(), "ssh", &keys)
        .target_with("vm2", sshd.address(), "ssh", &sshd.target_keys(&pin))
        .user("alice", &["vm1", "vm2"], "")
        .toml("[web]\nmax_file_size = 65536")
        .start();
    let config = settings(
        &gw,
        "files",
        json!({ "target": "vm1", "other_target": "vm2", "dir": dir.path(), "upload_size": 20_000, "too_big": 70_000 }),
    );
    let run = run_script("files.mjs", config, SCRIPT_LIMIT, no_steps);
    let result = run.assert_ok();
    let up = pattern(20_000);
    assert_eq!(
        std::fs::read(dir.path().join("up.bin")).unwrap(),
        up,
        "the uploaded file on the server"
    );
    let hex = |b: &[u8]| Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(result["download_sha256"], hex(&down), "the downloaded file");
    let files = gw.records_where(2, |l| l["event"] == "file");
    let upload = files
        .iter()
        .find(|f| f["direction"] == "upload")
        .expect("the upload's record");
    assert_eq!(
        (upload["outcome"].as_str(), upload["size"].as_u64()),
        (Some("ok"), Some(20_000))
    );
    assert_eq!(upload["sha256"], hex(&up));
    assert_eq!(upload["user"], "alice");
    let download = files
        .iter()
        .find(|f| f["direction"] == "download")
        .expect("the download's record");
    assert_eq!(download["sha256"], hex(&down));
    assert!(!dir.path().join("big.bin").exists());
}
