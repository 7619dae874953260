//! A real `portcullis serve` process on a fresh loopback port, with a generated config and token
//! key in its own temp dir. It is ready when it writes `READY <fingerprint>` to the descriptor
//! `--ready-fd` names (a pipe only this child inherits), not when a log line shows up. Its log goes
//! to a file, shown when the start fails or the test panics.

use crate::process::{self, ChildGuard};
use portcullis_protocols::token::{Claims, TokenIssuer};
use rustix::process::Signal;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Display;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// The descriptor number the readiness pipe has in the gateway.
pub const READY_FD: RawFd = 3;
/// How long a gateway may take to listen.
const START_LIMIT: Duration = Duration::from_secs(20);

/// Path of an up-to-date `portcullis` binary in the target dir of the running test executable,
/// built once per test process with `cargo build -p portcullis` when it is missing or older than
/// the sources of the engine, the core or the protocols (a test crate other than the engine's
/// does not get the engine's binary built for it).
pub fn gateway_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test>-<hash>
        let profile = exe.parent().and_then(Path::parent).expect("profile dir").to_path_buf();
        let bin = profile.join("portcullis");
        let root = repo_root();
        let sources = ["engine", "core", "protocols"]
            .iter()
            .flat_map(|c| [root.join(c).join("src"), root.join(c).join("Cargo.toml")])
            .map(|p| newest(&p))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if !bin.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= sources) {
            let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            cmd.args(["build", "-p", "portcullis", "--bin", "portcullis"])
                .current_dir(&root);
            if profile.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cannot run cargo to build the gateway");
            assert!(status.success(), "cargo build -p portcullis failed");
        }
        assert!(bin.exists(), "no gateway binary at {}", bin.display());
        bin
    })
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The newest modification time of a file or of anything below a directory.
fn newest(path: &Path) -> SystemTime {
    let own = path
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().map(|e| newest(&e.path())).fold(own, SystemTime::max),
        Err(_) => own,
    }
}

/// An Argon2id hash of `password` for `password_hash`, computed once per password (it is slow in
/// a debug build).
pub fn password_hash(password: &str) -> String {
    static HASHES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let mut hashes = HASHES.get_or_init(Default::default).lock().unwrap();
    hashes
        .entry(password.to_owned())
        .or_insert_with(|| portcullis_core::passwd::hash(password).expect("password hash"))
        .clone()
}

/// Runs `cmd` (a `portcullis serve …`) with `--ready-fd` and its output appended to `log`, and
/// returns it once it is ready, with the certificate fingerprint it reported. Panics with the log
/// when it exits, closes the pipe without a READY line, or says nothing within 20 s.
pub fn spawn_ready(cmd: &mut Command, log: &Path) -> (ChildGuard, String) {
    spawn_ready_with(cmd, log, None)
}

/// As [`spawn_ready`], with stderr sent to `stderr` instead of the log when given.
pub fn spawn_ready_with(cmd: &mut Command, log: &Path, stderr: Option<std::process::Stdio>) -> (ChildGuard, String) {
    let (guard, ready) = spawn_ready_line(cmd, log, stderr);
    (guard, ready.fingerprint)
}

/// What a gateway's READY line says: `READY <fingerprint> [admin=<address>]`.
pub struct Ready {
    pub fingerprint: String,
    pub admin: Option<SocketAddr>,
}

/// As [`spawn_ready_with`], with everything the READY line says.
pub fn spawn_ready_line(cmd: &mut Command, log: &Path, stderr: Option<std::process::Stdio>) -> (ChildGuard, Ready) {
    // CLOEXEC: tests spawning in parallel never inherit each other's pipe; only this child gets
    // the write end, as READY_FD, through dup2 (which clears the flag on the copy).
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    let raw = write.as_raw_fd();
    cmd.arg("--ready-fd").arg(READY_FD.to_string());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (fcntl, dup2) on descriptors the child inherited. `raw` stays open in the
    // parent until after spawn. The OwnedFd for READY_FD only names the descriptor dup2 replaces;
    // it is never dropped (ManuallyDrop), so nothing closes it before exec.
    unsafe {
        cmd.pre_exec(move || {
            let write = BorrowedFd::borrow_raw(raw);
            if raw == READY_FD {
                rustix::io::fcntl_setfd(write, rustix::io::FdFlags::empty())?;
            } else {
                let mut target = std::mem::ManuallyDrop::new(OwnedFd::from_raw_fd(READY_FD));
                rustix::io::dup2(write, &mut target)?;
            }
            Ok(())
        });
    }
    let mut guard = ChildGuard::new(process::spawn_logged_with(cmd, log, stderr), Duration::ZERO);
    drop(write);
    match read_line(read, START_LIMIT) {
        Ok(line) if line.starts_with("READY ") => {
            let mut words = line["READY ".len()..].split_whitespace();
            let fingerprint = words.next().unwrap_or_default().to_owned();
            let admin = words
                .find_map(|w| w.strip_prefix("admin="))
                .and_then(|a| a.parse().ok());
            (guard, Ready { fingerprint, admin })
        }
        outcome => {
            let status = guard.wait_exit(Duration::from_secs(1));
            guard.stop();
            panic!(
                "{cmd:?} did not start ({outcome:?}, exit: {status:?}); its log:\n{}",
                process::read_log(log)
            );
        }
    }
}

/// The first line written to `fd`, or why there is none (EOF, a timeout).
fn read_line(fd: OwnedFd, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    let mut pipe = std::fs::File::from(fd);
    let mut got = Vec::new();
    while !got.contains(&b'\n') {
        if !process::readable_within(&pipe, deadline.saturating_duration_since(Instant::now())) {
            return Err(format!("no line within {limit:?}"));
        }
        let mut buf = [0u8; 256];
        match pipe.read(&mut buf) {
            Ok(0) => return Err(format!("EOF after {:?}", crate::text(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(crate::text(&got))
}

/// What a gateway serves; see [`Gateway::builder`].
#[derive(Default)]
pub struct GatewayBuilder {
    session: String,
    body: String,
    targets: Vec<(String, String)>,
    /// (name, targets, more keys)
    users: Vec<(String, Vec<String>, String)>,
    password: Option<String>,
    /// More keys of `[audit]` (whose `path` is `audit.jsonl` in its directory).
    audit: String,
    /// More keys of `[auth]`.
    auth: String,
    /// More environment variables for the gateway.
    env: Vec<(String, String)>,
    /// Resource limits to start it with, as `prlimit` arguments (`--nofile=64:192`).
    rlimits: Vec<String>,
    cpus: Option<String>,
    /// More arguments for `portcullis serve`.
    args: Vec<String>,
    /// Its stderr into a pipe nobody reads (a stopped log reader), instead of the log file.
    stderr_stopped: bool,
    run_as: Option<String>,
    /// The token key pair (private, public PEM); fresh unless shared with another gateway.
    keys: Option<(String, String)>,
}

impl GatewayBuilder {
    /// The token key pair of `other`: the nodes of a fleet trust the same issuer.
    pub fn keys_of(mut self, other: &Gateway) -> Self {
        let public = std::fs::read_to_string(other.dir.path().join("token.pub")).expect("token.pub");
        self.keys = Some((other.private_key.clone(), public));
        self
    }

    /// `[service] user`: the gateway drops to this user once it listens; its temp dir (config,
    /// keys, audit log) is given to that user first, as a package gives /etc and /var dirs.
    pub fn run_as(mut self, user: &str) -> Self {
        self.run_as = Some(user.to_owned());
        self.body.push_str(&format!("[service]\nuser = \"{user}\"\n"));
        self
    }

    /// Connection limits out of the way, for load tests from one address (the defaults allow a
    /// client 50 new connections a second).
    pub fn unlimited_connections(self) -> Self {
        self.toml("[limits]\nnew_connections_per_second = 1000000\nmax_connections_per_client = 10000000\n")
    }

    /// More arguments for `portcullis serve`, e.g. `["--log-format", "json"]`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Its stderr goes to a pipe that nobody reads: once the pipe is full, a write to it blocks
    /// (a stopped `journalctl -f`, a suspended terminal). The log file stays empty.
    pub fn stderr_stopped(mut self) -> Self {
        self.stderr_stopped = true;
        self
    }

    /// Starts it with these soft and hard open-files limits.
    pub fn open_files(mut self, soft: u64, hard: u64) -> Self {
        self.rlimits.push(format!("--nofile={soft}:{hard}"));
        self
    }

    /// Starts it with this CPU affinity (`taskset -c`'s list, e.g. `"1"`), as systemd's
    /// `CPUAffinity=` or a container's cpuset would.
    pub fn cpus(mut self, list: &str) -> Self {
        self.cpus = Some(list.into());
        self
    }

    /// More `[auth]` keys, e.g. `issuer = "…"`.
    pub fn auth(mut self, lines: &str) -> Self {
        self.auth.push_str(lines);
        self.auth.push('\n');
        self
    }

    /// An environment variable for the gateway (e.g. `PORTCULLIS_FAULTS`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// More `[audit]` keys, e.g. `required = true`.
    pub fn audit(mut self, lines: &str) -> Self {
        self.audit.push_str(lines);
        self.audit.push('\n');
        self
    }

    /// Starts it with a soft file size limit (RLIMIT_FSIZE; the hard one unlimited): writes past `bytes` fail
    /// as on a full disk (raise it later with `prlimit --pid`).
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        self.rlimits.push(format!("--fsize={bytes}:unlimited"));
        self
    }

    /// A target `name` at `address` speaking `protocol` (`tcp`, `ssh`, `rdp`).
    pub fn target(self, name: &str, address: impl Display, protocol: &str) -> Self {
        self.target_with(name, address, protocol, "")
    }

    /// A target with more keys of its table (`extra`: TOML lines).
    pub fn target_with(mut self, name: &str, address: impl Display, protocol: &str, extra: &str) -> Self {
        let table =
            format!("[[target]]\nname = \"{name}\"\naddress = \"{address}\"\nprotocol = \"{protocol}\"\n{extra}\n");
        self.targets.push((name.to_owned(), table));
        self
    }

    /// A user who may reach `targets`, with more keys of its table (`extra`: TOML lines). Without
    /// any, the gateway has `alice` (every target but `forbidden`) and `bob` (none).
    pub fn user(mut self, name: &str, targets: &[&str], extra: &str) -> Self {
        let targets = targets.iter().map(|t| t.to_string()).collect();
        self.users.push((name.to_owned(), targets, extra.to_owned()));
        self
    }

    /// Every user signs in to the web app with `password`.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Lines of the `[session]` table (timeouts, limits).
    pub fn session(mut self, lines: &str) -> Self {
        self.session.push_str(lines);
        self.session.push('\n');
        self
    }

    /// More tables (`[web]`, `[recording]`, ...); `{dir}` stands for the gateway's temp dir, `{port}` for
    /// its port.
    pub fn toml(mut self, tables: &str) -> Self {
        self.body.push_str(tables);
        self.body.push('\n');
        self
    }

    /// Writes the config and starts the gateway; returns once it listens.
    pub fn start(mut self) -> Gateway {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-gw-")
            .tempdir()
            .expect("temp dir");
        let (private_key, public) = self
            .keys
            .clone()
            .unwrap_or_else(|| portcullis_core::keys::generate().expect("token key"));
        std::fs::write(dir.path().join("token.pub"), public).unwrap();
        std::fs::write(dir.path().join("token.key"), &private_key).unwrap();
        let port = crate::free_port();
        if self.users.is_empty() {
            let names: Vec<String> = self
                .targets
                .iter()
                .map(|(n, _)| n.clone())
                .filter(|n| n != "forbidden")
                .collect();
            self.users.push(("alice".into(), names, String::new()));
            self.users.push(("bob".into(), Vec::new(), String::new()));
        }
        let hash = self.password.as_deref().map(password_hash);
        let users: String = self
            .users
            .iter()
            .map(|(name, targets, extra)| {
                let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
                let password = hash
                    .as_ref()
                    .map(|h| format!("password_hash = \"{h}\"\n"))
                    .unwrap_or_default();
                format!(
                    "[[user]]\nname = \"{name}\"\n{password}targets = [{}]\n{extra}\n",
                    list.join(", ")
                )
            })
            .collect();
        let mut config = format!(
            "listen = \"127.0.0.1:{port}\"\nworkers = 2\n[auth]\ntoken_public_key = \"token.pub\"\nleeway = \"0s\"\n{}\
             [audit]\npath = \"audit.jsonl\"\n{}",
            self.auth, self.audit
        );
        if !self.session.is_empty() {
            config.push_str(&format!("[session]\n{}", self.session));
        }
        config.push_str(
            &self
                .body
                .replace("{dir}", &dir.path().display().to_string())
                .replace("{port}", &port.to_string()),
        );
        if !self.body.contains("[admin]") {
            // A free port: tests run side by side.
            config.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
        }
        for (_, table) in &self.targets {
            config.push_str(table);
        }
        config.push_str(&users);
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("gateway.log");
        if let Some(user) = &self.run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(user)
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown -R {user} failed");
        }
        // Wrappers that set what the gateway inherits, then exec it.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(cpus) = &self.cpus {
            argv.extend(["/usr/bin/taskset", "-c", cpus].map(Into::into));
        }
        if !self.rlimits.is_empty() {
            argv.push("/usr/bin/prlimit".into());
            argv.extend(self.rlimits.iter().map(Into::into));
            argv.push("--".into());
        }
        argv.push(gateway_bin().into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
            .args(["serve", "--config"])
            .arg(&config_path)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("PORTCULLIS_LOG", "debug");
        let (stderr, stderr_reader) = if self.stderr_stopped {
            let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
            (Some(std::process::Stdio::from(write)), Some(read))
        } else {
            (None, None)
        };
        let (process, ready) = spawn_ready_line(&mut command, &log, stderr);
        Gateway {
            process,
            port,
            admin: ready.admin,
            audit: dir.path().join("audit.jsonl"),
            log,
            fingerprint: ready.fingerprint,
            private_key,
            _stderr_reader: stderr_reader,
            dir,
        }
    }
}

/// A running gateway; killed (SIGKILL) when dropped.
pub struct Gateway {
    /// First, so that the process ends before its temp dir goes.
    process: ChildGuard,
    pub port: u16,
    /// The admin listener's address (health, metrics, admin API), unless turned off.
    pub admin: Option<SocketAddr>,
    /// Holds the config (`portcullis.toml`), the token key pair and the audit log.
    pub dir: tempfile::TempDir,
    pub audit: PathBuf,
    log: PathBuf,
    /// The SHA-256 fingerprint of its certificate, from its READY line.
    pub fingerprint: String,
    private_key: String,
    /// The read end of a stopped stderr pipe, held open so that writes block rather than fail.
    _stderr_reader: Option<OwnedFd>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway {} log\n{}", self.port, self.log());
        }
    }
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    pub fn url(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }

    /// The web app's origin (and base URL).
    pub fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    /// The private token key (PKCS#8 PEM), for `--token-key` and `portcullis token issue`.
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("token.key")
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        process::read_log(&self.log)
    }

    /// A token for `user` to reach `target`, valid for 10 minutes.
    pub fn token(&self, user: &str, target: &str) -> String {
        portcullis_core::keys::issue(self.private_key.as_bytes(), user, target, Duration::from_secs(600))
            .expect("token")
    }

    /// A token with exactly these claims.
    /// A single-use token (`once`) for `user` to reach `target`, valid for 10 minutes.
    pub fn token_once(&self, user: &str, target: &str) -> String {
        portcullis_core::keys::issue_once(self.private_key.as_bytes(), user, target, Duration::from_secs(600))
            .expect("token")
    }

    /// An admin token (scope `admin`) for `user`, valid for 10 minutes.
    pub fn admin_token(&self, user: &str) -> String {
        portcullis_core::keys::issue_scoped(
            self.private_key.as_bytes(),
            user,
            "",
            Some("admin"),
            Duration::from_secs(600),
        )
        .expect("token")
    }

    /// One request to the admin listener (plain HTTP): its status and body.
    pub fn admin_request(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let addr = self.admin.expect("the admin listener is on");
        let mut s = std::net::TcpStream::connect(addr).expect("admin listener");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("admin answer");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        (status, body)
    }

    pub fn token_with(&self, claims: &Claims) -> String {
        TokenIssuer::from_private_pem(self.private_key.as_bytes())
            .and_then(|issuer| issuer.issue(claims))
            .expect("token")
    }

    /// Arguments of `portcullis-loadgen` and `portcullis connect` that mint alice's token for
    /// `target` from the key file.
    pub fn auth(&self, target: &str) -> Vec<String> {
        let key = self.key_path().display().to_string();
        ["--insecure", "--token-key", &key, "--user", "alice", "--target", target]
            .map(str::to_owned)
            .to_vec()
    }

    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// Waits up to `limit` for the gateway to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(limit)
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// The audit records written so far (whole lines only), waiting up to 10 s for `want`.
    pub fn audit_lines(&self, want: usize) -> Vec<Value> {
        self.records_where(want, |_| true)
    }

    /// The `session` records, waiting up to 10 s for `want` of them.
    pub fn session_records(&self, want: usize) -> Vec<Value> {
        self.records_where(want, |r| r["event"] == "session")
    }

    /// The `session` records of `target`, waiting up to 10 s for `want` of them.
    pub fn sessions_of(&self, target: &str, want: usize) -> Vec<Value> {
        self.records_where(want, |r| r["event"] == "session" && r["target"] == target)
    }

    /// The records that `keep`, waiting up to 10 s for `want` of them: the audit log is a file,
    /// there is nothing to wait on.
    pub fn records_where(&self, want: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let read = || -> Vec<Value> {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            text.split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
                .filter(|r| keep(r))
                .collect()
        };
        let mut records = read();
        process::wait_until(Duration::from_secs(10), || {
            records = read();
            records.len() >= want
        });
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EchoTarget, WsClient};

    #[tokio::test]
    async fn a_gateway_is_ready_when_it_says_so_and_audits_its_sessions() {
        let echo = EchoTarget::start();
        let gw = Gateway::builder().target("echo", echo.addr, "tcp").start();
        // 32 bytes as colon-separated hex.
        assert_eq!(gw.fingerprint.split(':').count(), 32, "{}", gw.fingerprint);
        let mut ws = WsClient::open(&gw, "echo", &gw.token("alice", "echo")).await;
        ws.echoes(b"ping through the tunnel").await;
        ws.send_close(portcullis_protocols::ws::CloseCode::NORMAL).await;
        assert_eq!(ws.recv_close(Duration::from_secs(10)).await.0, Some(1000));
        let records = gw.session_records(1);
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(
            (records[0]["user"].as_str(), records[0]["target"].as_str()),
            (Some("alice"), Some("echo"))
        );
    }

    #[test]
    fn a_gateway_that_cannot_start_fails_with_its_log() {
        let failed = std::panic::catch_unwind(|| Gateway::builder().target("x", "not an address", "tcp").start());
        let message = failed
            .err()
            .and_then(|e| e.downcast::<String>().ok())
            .expect("a panic message");
        assert!(
            message.contains("did not start") && message.contains("EOF"),
            "{message}"
        );
        assert!(
            message.contains("target.address"),
            "the gateway's own error is shown: {message}"
        );
    }
}
