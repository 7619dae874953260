//! Headless Chromium (Debian's) driven by playwright-core from the Node scripts in `web/e2e/`.
//!
//! A test starts its servers, then [`run_script`] runs `node web/e2e/<script>` with its settings
//! as JSON in `E2E_CONFIG`, answers the script's `{"step":…}` lines on its stdin, and returns the
//! script's `{"result":…}` and exit status. Needs node, /usr/bin/chromium and `npm ci` in web/e2e
//! (`scripts/test` installs them).

use crate::gateway::repo_root;
use crate::process::{spawn_piped, ChildGuard};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The script's own watchdog fires this long before the test's limit, so that it can still
/// report what it saw and close its browser.
const SCRIPT_MARGIN: Duration = Duration::from_secs(15);

/// `target/e2e-artifacts/<name>` (screenshots), emptied.
pub fn artifacts(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>
    let target = exe.ancestors().nth(3).expect("target dir");
    let dir = target.join("e2e-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    eprintln!("browser test artifacts: {}", dir.display());
    dir
}

/// Panics with what is missing unless node, Chromium, the scripts' node_modules and `extra`
/// files (path, package) are there.
pub fn check_prerequisites(extra: &[(&str, &str)]) {
    let e2e = repo_root().join("web/e2e");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let files = [(CHROMIUM, "apt-get install chromium")].iter().chain(extra);
    let mut missing: Vec<String> = files
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, how)| format!("{path} ({how})"))
        .collect();
    if !e2e.join("node_modules/playwright-core").exists() {
        missing.push("web/e2e/node_modules (npm ci in web/e2e)".into());
    }
    if !node {
        missing.push("node".into());
    }
    assert!(
        missing.is_empty(),
        "browser tests need: {}; scripts/test installs them",
        missing.join(", ")
    );
}

/// What a script run gave: its exit status (`None`: it was killed at the limit), its result
/// object, its log (stderr).
pub struct ScriptRun {
    pub status: Option<ExitStatus>,
    pub result: Value,
    pub log: String,
}

impl ScriptRun {
    /// It exited 0 and reported `ok: true`.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.result["ok"] == true
    }

    /// The result; panics with the script's error and log unless [`ScriptRun::ok`].
    pub fn assert_ok(&self) -> &Value {
        assert!(
            self.ok(),
            "browser script failed ({:?}): {}\nchecks passed: {}\n--- script log ---\n{}",
            self.status,
            self.result["error"],
            self.result["checks"],
            self.log
        );
        &self.result
    }
}

/// Runs `node web/e2e/<script>` with `config` (its `timeout_ms` set from `limit`), answers each
/// `{"step":…}` line with `on_step`, and returns once the script exits. After `limit` the script
/// and the browser it started are ended (SIGTERM, so playwright closes the browser, then SIGKILL),
/// as they are when `on_step` panics.
pub fn run_script(
    script: &str,
    mut config: Value,
    limit: Duration,
    mut on_step: impl FnMut(&str) -> String,
) -> ScriptRun {
    check_prerequisites(&[]);
    config["timeout_ms"] = json!(limit.saturating_sub(SCRIPT_MARGIN).as_millis() as u64);
    let started = Instant::now();
    let mut child = spawn_piped(
        Command::new("node")
            .arg(script)
            .current_dir(repo_root().join("web/e2e"))
            .env("E2E_CONFIG", config.to_string()),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let lines = lines_of(child.stdout.take().expect("stdout"));
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let log = Arc::new(Mutex::new(String::new()));
    let writer = log.clone();
    let log_thread = std::thread::spawn(move || {
        for line in stderr {
            eprintln!("{line}");
            let mut log = writer.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let pgid = child.id();
    let mut process = ChildGuard::new(child, Duration::from_secs(5));
    let deadline = started + limit;
    let mut result = Value::Null;
    let status = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => match serde_json::from_str::<Value>(&line) {
                Ok(msg) if msg["step"].is_string() => {
                    let answer = on_step(msg["step"].as_str().unwrap_or_default());
                    let _ = writeln!(stdin, "{answer}").and_then(|_| stdin.flush());
                }
                Ok(msg) if msg.get("result").is_some() => result = msg["result"].clone(),
                _ => eprintln!("[{script} stdout] {line}"),
            },
            // stdout closed: the script is exiting (its browser already closed).
            Err(RecvTimeoutError::Disconnected) => break process.wait_exit(SCRIPT_MARGIN),
            Err(RecvTimeoutError::Timeout) => break None,
        }
    };
    process.stop();
    // The log's pipe closes with the last of the script's group (a browser it left behind).
    crate::process::kill_group_of(pgid);
    crate::process::wait_until(Duration::from_secs(5), || log_thread.is_finished());
    eprintln!("browser script {script}: {status:?} after {:?}", started.elapsed());
    let log = log.lock().unwrap().clone();
    ScriptRun { status, result, log }
}

/// The lines of a pipe, from a thread, until it closes.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
