//! The web app end to end in a real browser (issue 5): Debian's Chromium, driven by playwright-core
//! from the Node scripts in `web/e2e/`, against the real gateway binary and a real sshd on loopback.
//!
//! Each test starts its servers, then runs `node web/e2e/<script>.mjs` with its settings as JSON in
//! `E2E_CONFIG`, bounded in time, and checks the script's result line and exit code, then what the
//! gateway wrote (audit records, recordings). Screenshots go to `target/e2e-artifacts/<test>/`.
//!
//! Needs node, /usr/bin/chromium and `npm ci` in web/e2e: `scripts/test` installs them.

mod common;

use common::sshd::*;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "browser test password";
/// A whole script run, browser start to browser close, must finish within this.
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);
const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Running a browser script
// ---------------------------------------------------------------------------------------------

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
    eprintln!("browser test artifacts: {}", dir.display());
    dir
}

fn check_prerequisites() {
    let e2e = repo_root().join("web/e2e");
    let missing: Vec<&str> = [
        (!Path::new("/usr/bin/chromium").exists()).then_some("/usr/bin/chromium (apt-get install chromium)"),
        (!e2e.join("node_modules/playwright-core").exists()).then_some("web/e2e/node_modules (npm ci in web/e2e)"),
        Command::new("node")
            .arg("--version")
            .output()
            .map_or(true, |o| !o.status.success())
            .then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(
        missing.is_empty(),
        "browser tests need: {}; scripts/test installs them",
        missing.join(", ")
    );
}

/// What a script run gave: its exit status, its result object, its log (stderr).
struct ScriptRun {
    status: ExitStatus,
    result: Value,
    log: String,
}

impl ScriptRun {
    /// Panics with the script's error and log unless it exited 0 with `ok: true`.
    fn assert_ok(&self) -> &Value {
        assert!(
            self.status.success() && self.result["ok"] == true,
            "browser script failed ({}): {}\nchecks passed: {}\n--- script log ---\n{}",
            self.status,
            self.result["error"],
            self.result["checks"],
            self.log
        );
        &self.result
    }
}

/// Runs `node web/e2e/<script>.mjs` with `config` (plus the artifacts dir) and answers its
/// `{"step":…}` lines with `on_step`. After `SCRIPT_LIMIT` the script's process group gets
/// SIGTERM (playwright then closes its browser), then SIGKILL, and the test fails.
fn run_script(script: &str, mut config: Value, mut on_step: impl FnMut(&str) -> String) -> ScriptRun {
    check_prerequisites();
    let limit = SCRIPT_LIMIT;
    config["timeout_ms"] = json!((limit - 10 * SEC).as_millis() as u64);
    let started = Instant::now();
    let path = repo_root().join("web/e2e").join(format!("{script}.mjs"));
    let child = Command::new("node")
        .arg(&path)
        .current_dir(repo_root().join("web/e2e"))
        .env("E2E_CONFIG", config.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node {}: {e}", path.display()));
    // Whatever happens below (a failed step panics too), the script and its browser end.
    let mut child = ScriptGuard(child);
    let mut stdin = child.0.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.0.stderr.take().unwrap();
    let log_writer = log.clone();
    let stderr_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let mut log = log_writer.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let deadline = started + limit;
    let mut result = Value::Null;
    let stop = |child: &mut ScriptGuard, why: &str| -> ! {
        terminate_group(&mut child.0);
        panic!(
            "browser script {script}: {why}\n--- script log ---\n{}",
            log.lock().unwrap()
        );
    };
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("[{script} stdout] {line}");
                    continue;
                };
                if let Some(step) = v["step"].as_str() {
                    let answer = on_step(step);
                    let _ = writeln!(stdin, "{answer}");
                    let _ = stdin.flush();
                } else if v.get("result").is_some() {
                    result = v["result"].clone();
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => stop(&mut child, &format!("no end after {limit:?}")),
        }
    }
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            stop(&mut child, &format!("did not exit within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The log's pipe closes with the script; bounded all the same.
    let grace = Instant::now() + 5 * SEC;
    while !stderr_thread.is_finished() && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("browser script {script}: {status} after {:?}", started.elapsed());
    let log = log.lock().unwrap().clone();
    ScriptRun { status, result, log }
}

/// The running script: ended (process group) when dropped before it exited.
struct ScriptGuard(std::process::Child);

impl Drop for ScriptGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            terminate_group(&mut self.0);
        }
    }
}

/// SIGTERM to the script's process group, SIGKILL after 5 s.
fn terminate_group(child: &mut std::process::Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain syscalls on the process group this test created (`process_group(0)`).
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let grace = Instant::now() + 5 * SEC;
    while Instant::now() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// The first two fields of an OpenSSH public key file ("ssh-ed25519 AAAA…").
fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn host_key(sshd: &Sshd) -> String {
    public_key(&sshd.dir.path().join("host_key.pub"))
}

/// An SSH target entry where the gateway logs in with sshd's client key and pins `pin`.
fn ssh_target(name: &str, sshd: &Sshd, pin: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\naddress = \"{}\"\nprotocol = \"ssh\"\n\
         ssh_user = \"{}\"\nssh_key = \"{}\"\nhost_key = \"{pin}\"\n",
        sshd.address(),
        sshd.user,
        sshd.client_key.display()
    )
}

fn user(name: &str, targets: &[&str]) -> String {
    // One Argon2 hash for every user (it is slow in a debug build).
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| portcullis::web::passwd::hash(PASSWORD).unwrap());
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[[user]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\ntargets = [{}]\n",
        list.join(", ")
    )
}

fn base_url(gw: &Gateway) -> String {
    format!("https://127.0.0.1:{}", gw.port)
}

/// The session audit records for `target`, waiting up to 10 s for at least `want` of them.
fn sessions_of(gw: &Gateway, target: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + 10 * SEC;
    loop {
        let all = gw.audit_lines(0);
        let found: Vec<Value> = all
            .into_iter()
            .filter(|l| l["event"] == "session" && l["target"] == target)
            .collect();
        if found.len() >= want || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_file_contains(path: &str, needle: &str) {
    let deadline = Instant::now() + 10 * SEC;
    while !std::fs::read_to_string(path).unwrap_or_default().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} is not in {path}:\n{}",
            std::fs::read_to_string(path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Sign in with the form, open vm1, type `echo <marker>`, see it in xterm's buffer, resize the
/// window and see `stty size` follow, screenshot, `exit 3` shown in #status; then the audit record
/// and the recording (which holds the marker).
#[test]
fn browser_terminal_session() {
    let sshd = Sshd::start();
    let gw = Gateway::start_toml(&format!(
        "[recording]\ndir = \"{{dir}}/recordings\"\n{}{}",
        ssh_target("vm1", &sshd, &host_key(&sshd)),
        user("alice", &["vm1"])
    ));
    let marker = marker();
    let dir = artifacts("terminal_session");
    let run = run_script(
        "session",
        json!({
            "url": base_url(&gw),
            "user": "alice",
            "password": PASSWORD,
            "target": "vm1",
            "marker": marker,
            "artifacts": dir,
        }),
        |step| panic!("unexpected step {step}"),
    );
    let result = run.assert_ok();
    let shot = result["screenshot"].as_str().unwrap();
    let png = std::fs::read(shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "{shot} is a PNG"
    );

    let records = sessions_of(&gw, "vm1", 1);
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec["user"], "alice");
    assert_eq!(rec["via"], "web_terminal");
    assert_eq!(rec["ended"], "exit_status: 3", "{rec}");
    let recording = rec["recording"].as_str().expect("a recording path in the audit record");
    wait_file_contains(recording, &marker);
    // The recording saw the resize too: a `"r"` event with the size stty reported at the end.
    let last = &result["sizes"][1];
    wait_file_contains(recording, &format!("\"r\",\"{}x{}\"", last["cols"], last["rows"]));
}

/// Refusals as the browser shows them: wrong password, lockout, a target outside the policy
/// (not listed; opened directly: an error), a changed host key, an expired sign-in (a second
/// gateway with `session_ttl = "2s"`), and a cross-origin terminal WebSocket. Then the gateway's
/// own record of them.
#[test]
fn browser_denials() {
    let sshd = Sshd::start();
    let pin = host_key(&sshd);
    let other = tempfile::tempdir().unwrap();
    keygen(&other.path().join("other"));
    let wrong_pin = public_key(&other.path().join("other.pub"));
    let gw = Gateway::start_toml(&format!(
        "[recording]\ndir = \"{{dir}}/recordings\"\n{}{}{}{}{}",
        ssh_target("vm1", &sshd, &pin),
        ssh_target("vm-wrong-key", &sshd, &wrong_pin),
        ssh_target("forbidden", &sshd, &pin),
        user("alice", &["vm1", "vm-wrong-key"]),
        user("carol", &["vm1"]),
    ));
    let short = Gateway::start_toml(&format!(
        "[web]\nsession_ttl = \"2s\"\n{}{}",
        ssh_target("vm1", &sshd, &pin),
        user("alice", &["vm1"])
    ));
    // For the pages of other origins the script serves on loopback.
    let other_origin = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = artifacts("denials");
    let run = run_script(
        "denials",
        json!({
            "url": base_url(&gw),
            "ttl_url": base_url(&short),
            "user": "alice",
            "lock_user": "carol",
            "password": PASSWORD,
            "allowed": ["vm1", "vm-wrong-key"],
            "forbidden": "forbidden",
            "wrong_key": "vm-wrong-key",
            "cert_pem": other_origin.cert.pem(),
            "key_pem": other_origin.signing_key.serialize_pem(),
            "artifacts": dir,
        }),
        |step| panic!("unexpected step {step}"),
    );
    run.assert_ok();

    // The gateway's side: the refused WebSockets are audited with the right status and reason.
    let audit = gw.audit_lines(0);
    let denied: Vec<&Value> = audit.iter().filter(|l| l["event"] == "denied").collect();
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
    let wrong = sessions_of(&gw, "vm-wrong-key", 1);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(
        wrong[0]["ended"]
            .as_str()
            .unwrap_or("")
            .contains("does not match the pinned key"),
        "{}",
        wrong[0]
    );
    assert_eq!(wrong[0]["bytes_target_to_client"], 0, "{}", wrong[0]);
    // Only the control WebSocket reached vm1.
    assert_eq!(sessions_of(&gw, "vm1", 1).len(), 1);
    assert!(sessions_of(&gw, "forbidden", 0).is_empty());
}

/// SIGKILL to `pid` and every process below it (sshd's per-connection processes and the shells
/// they started), found through /proc before any of them dies.
fn kill_tree(pid: u32) -> usize {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    for p in &tree {
        // SAFETY: plain syscall on processes this test started (sshd and its descendants).
        unsafe {
            libc::kill(*p as libc::pid_t, libc::SIGKILL);
        }
    }
    tree.len()
}

/// Two live browser sessions to two sshds; one sshd is killed (sessions and all): its tab shows
/// the disconnect, the gateway audits how it ended, the other session and a new one still work.
#[test]
fn browser_sshd_killed_mid_session() {
    let stable = Sshd::start();
    let mut doomed = Sshd::start();
    let gw = Gateway::start_toml(&format!(
        "[recording]\ndir = \"{{dir}}/recordings\"\n{}{}{}",
        ssh_target("vm1", &stable, &host_key(&stable)),
        ssh_target("vm-doomed", &doomed, &host_key(&doomed)),
        user("alice", &["vm1", "vm-doomed"])
    ));
    let markers: Vec<String> = (0..4).map(|_| marker()).collect();
    let dir = artifacts("sshd_killed");
    let mut killed = 0;
    let run = run_script(
        "disconnect",
        json!({
            "url": base_url(&gw),
            "user": "alice",
            "password": PASSWORD,
            "stable": "vm1",
            "doomed": "vm-doomed",
            "markers": markers,
            "artifacts": dir,
        }),
        |step| {
            assert_eq!(step, "kill_sshd");
            killed = kill_tree(doomed.child.id());
            let _ = doomed.child.wait();
            format!("killed {killed} processes")
        },
    );
    run.assert_ok();
    assert!(killed >= 2, "sshd and its session processes: {killed}");

    // The gateway noticed: the dead session's record says the target side ended it.
    let lost = sessions_of(&gw, "vm-doomed", 2);
    let first = lost.first().expect("an audit record for the killed session");
    let ended = first["ended"].as_str().unwrap_or("");
    assert!(ended.starts_with("target_"), "{first}");
    wait_file_contains(first["recording"].as_str().unwrap(), &markers[1]);
    // The reconnect to the dead server is audited too, as a failure to reach the target.
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(
        lost[1]["ended"].as_str().unwrap_or("").starts_with("target_"),
        "{}",
        lost[1]
    );
    // The other sessions ended normally, and the gateway still runs.
    let ok = sessions_of(&gw, "vm1", 2);
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert!(ok.iter().all(|r| r["ended"] == "exit_status: 0"), "{ok:?}");
    let mut gw = gw;
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway is still running");
}
