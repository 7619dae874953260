//! Web RDP in a real browser (issue 6): Debian's Chromium, driven by playwright-core from
//! `web/e2e/rdp.mjs`, signs in to the web app, opens an RDP target, and the IronRDP web client in
//! the page reaches a real xrdp through the gateway's RDCleanPath endpoint (`/v1/rdp`) with a
//! one-time ticket from `POST /api/rdp/ticket`.
//!
//! The IronRDP web client does not ask for an automatic logon (its connector config has
//! `autologon: false`), and xrdp (TLS security, no NLA) uses the logon info's password only with
//! that flag, so xrdp first shows its own login screen, with the username filled in. The script
//! then types the password there through the canvas (keyboard -> IronRDP scancodes), which tests
//! the input path too. Checked: both pictures render (canvases with several colours, saved in
//! `target/e2e-artifacts/web_rdp/`), xrdp-sesman logs the user on, the session's desktop differs
//! from the login screen, and the gateway audits a `web_rdp` session.
//!
//! Needs root (xrdp checks passwords with PAM), xrdp + xorgxrdp + x11-utils, node, /usr/bin/chromium
//! and `npm ci` in web/e2e: `scripts/test` installs them.

mod common;
mod rdp_peers;

use common::*;
use rdp_peers::{terminate, text, wait_until, Xrdp};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

const PASSWORD: &str = "browser rdp password";
/// The whole browser run, start to close; the script's own watchdog fires 15 s earlier.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

/// The session program xrdp-sesman starts after the logon: windows with text and colours, so the
/// session's desktop is not one colour and cannot be mistaken for xrdp's login screen.
const SESSION_SCRIPT: &str = "#!/bin/sh\n# portcullis browser RDP test session\n\
    /usr/bin/xmessage -geometry +40+40 -bg '#1f5fbf' -fg white 'Portcullis web RDP: the test user session' &\n\
    /usr/bin/xmessage -geometry +40+200 -bg '#f5c518' -fg black 'Logged on through /v1/rdp' &\n\
    exec sleep 600\n";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `target/e2e-artifacts/<name>`, emptied.
fn artifacts(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("e2e-artifacts")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("browser RDP test artifacts: {}", dir.display());
    dir
}

fn check_prerequisites() {
    let e2e = repo_root().join("web/e2e");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!Path::new("/usr/bin/chromium").exists()).then_some("/usr/bin/chromium (apt-get install chromium)"),
        (!Path::new("/usr/bin/xmessage").exists()).then_some("/usr/bin/xmessage (apt-get install x11-utils)"),
        (!e2e.join("node_modules/playwright-core").exists()).then_some("web/e2e/node_modules (npm ci in web/e2e)"),
        (!node).then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        missing.is_empty(),
        "the browser RDP test needs: {}; scripts/test installs them",
        missing.join(", ")
    );
}

/// What a script run gave: its exit status, its result object, its log (stderr).
struct ScriptRun {
    status: Option<ExitStatus>,
    result: Value,
    log: String,
}

/// Runs `node web/e2e/<script>` with `config` in `E2E_CONFIG`, answers each `{"step":…}` line on
/// its stdin with `on_step`, and returns once it exits. After `SCRIPT_LIMIT` the script and the
/// browser it started are killed (`status` is then `None`).
fn run_script(script: &str, config: &Value, mut on_step: impl FnMut(&str) -> String) -> ScriptRun {
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(repo_root().join("web/e2e"))
        .env("E2E_CONFIG", config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("cannot start node");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        text(&buf)
    });
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let mut result = Value::Null;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("[{script} stdout] {line}");
                    continue;
                };
                if let Some(step) = msg["step"].as_str() {
                    let answer = on_step(step);
                    let _ = writeln!(stdin, "{answer}").and_then(|_| stdin.flush());
                } else if msg.get("result").is_some() {
                    result = msg["result"].clone();
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    drop(stdin);
    let status = if timed_out {
        terminate(&mut child, Duration::ZERO);
        None
    } else {
        // stdout closed: the script is exiting (its browser already closed).
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > end {
                terminate(&mut child, Duration::ZERO);
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let log = log.join().unwrap_or_default();
    eprintln!("--- {script} log\n{log}");
    ScriptRun { status, result, log }
}

#[test]
fn browser_opens_an_xrdp_desktop() {
    check_prerequisites();
    let xrdp = Xrdp::start();
    std::fs::write(xrdp.dir.path().join("wm.sh"), SESSION_SCRIPT).unwrap();
    let hash = portcullis::web::passwd::hash(PASSWORD).unwrap();
    let gw = Gateway::start_toml(&format!(
        "[[target]]\nname = \"desk1\"\naddress = \"{}\"\nprotocol = \"rdp\"\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntargets = [\"desk1\"]\n",
        xrdp.address()
    ));
    let dir = artifacts("web_rdp");
    let config = json!({
        "url": format!("https://127.0.0.1:{}", gw.port),
        "user": "alice",
        "password": PASSWORD,
        "target": "desk1",
        "rdp_user": xrdp.user,
        "rdp_password": xrdp.password,
        "artifacts": dir,
        "min_colours": 3,
        "timeout_ms": (SCRIPT_LIMIT - Duration::from_secs(15)).as_millis() as u64,
    });
    let granted = format!("created session (access granted): username {}", xrdp.user);
    let logged_on = || xrdp.sesman_log().contains(&granted);
    let run = run_script("rdp.mjs", &config, |step| {
        let done = match step {
            "logon" => logged_on(),
            "logon_wait" => wait_until(Duration::from_secs(30), logged_on),
            other => panic!("unknown step {other}"),
        };
        match (step, done) {
            (_, true) => "session",
            ("logon", false) => "login",
            _ => "failed",
        }
        .to_owned()
    });
    assert!(
        run.status.is_some_and(|s| s.success()) && run.result["ok"] == true,
        "rdp.mjs failed ({:?}): {}\nresult: {}\n{}",
        run.status,
        run.result["error"],
        run.result,
        xrdp.diagnostics()
    );
    assert!(run.log.contains("ok: "), "{}", run.log);

    // The session's desktop showed, and its picture was saved.
    assert!(
        run.result["colours"].as_u64().unwrap_or(0) >= 3,
        "(nearly) uniform desktop: {}",
        run.result
    );
    let png = std::fs::read(dir.join("rdp.png")).expect("rdp.png artifact");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "rdp.png is not a picture"
    );
    // xrdp logged the user on: what rendered last is the user's session.
    assert!(logged_on(), "no logon in sesman's log\n{}", xrdp.diagnostics());

    // The gateway audited the session as web RDP (written when the browser left the page).
    let lines = gw.audit_lines(1);
    let rec = lines
        .iter()
        .find(|l| l["event"] == "session" && l["via"] == "web_rdp")
        .unwrap_or_else(|| panic!("no web_rdp session in the audit log: {lines:?}"));
    assert_eq!(rec["user"], "alice", "{rec}");
    assert_eq!(rec["target"], "desk1", "{rec}");
    assert_eq!(rec["protocol"], "rdp", "{rec}");
    assert_eq!(rec["token_id"], "web-ticket", "{rec}");
    assert!(rec["bytes_target_to_client"].as_u64().unwrap_or(0) > 10_000, "{rec}");
}
