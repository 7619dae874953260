//! A real OpenSSH server for end-to-end tests, and bounded process helpers.
#![allow(dead_code)]

use super::{free_port, Gateway, BIN};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH: &str = "/usr/bin/ssh";
pub const SCP: &str = "/usr/bin/scp";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// Name of the target in the gateway and the host key alias in known_hosts.
pub const ALIAS: &str = "vm1";

pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Process helpers
// ---------------------------------------------------------------------------------------------

/// Runs `cmd` (stdin closed, output captured) in its own process group; if it is not done after
/// `limit`, the whole group (e.g. ssh and its ProxyCommand) is killed and the test panics.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            let stderr = err.join().unwrap_or_default();
            panic!(
                "timed out after {limit:?}: {what}\nstderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The group may still hold the pipes open (a lingering ProxyCommand); bound that too.
    let out = join_bounded(out, deadline.max(Instant::now() + Duration::from_secs(5)), &mut child);
    let err = join_bounded(err, deadline.max(Instant::now() + Duration::from_secs(5)), &mut child);
    Output {
        status,
        stdout: out,
        stderr: err,
    }
}

pub fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

pub fn join_bounded(h: std::thread::JoinHandle<Vec<u8>>, deadline: Instant, child: &mut Child) -> Vec<u8> {
    while !h.is_finished() {
        if Instant::now() > deadline {
            kill_group(child);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    h.join().unwrap_or_default()
}

/// SIGKILL to the process group led by `child` (it was spawned with `process_group(0)`).
pub fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: plain syscall on a process group we created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A marker unlikely to appear by chance in any output.
pub fn marker() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "MARK-{}-{:x}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn current_user() -> String {
    let out = run_bounded(Command::new("id").arg("-un"), Duration::from_secs(10));
    assert!(out.status.success(), "id -un failed");
    text(&out.stdout).trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// A real sshd
// ---------------------------------------------------------------------------------------------

pub struct Sshd {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub user: String,
    pub client_key: PathBuf,
    pub known_hosts: PathBuf,
    pub log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(path: &Path) {
    let out = run_bounded(
        Command::new(SSH_KEYGEN)
            .args(["-t", "ed25519", "-N", "", "-q", "-C", "portcullis-test", "-f"])
            .arg(path),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "ssh-keygen failed: {}", text(&out.stderr));
}

impl Sshd {
    pub fn start() -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host_key = d.join("host_key");
        let client_key = d.join("client_key");
        keygen(&host_key);
        keygen(&client_key);
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();

        let port = free_port();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_pub = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let known_hosts = d.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {host_pub}\n{ALIAS} {host_pub}\n"),
        )
        .unwrap();

        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
                hk = host_key.display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();

        let log = d.join("sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start sshd");
        let mut sshd = Sshd {
            child,
            port,
            dir,
            user: current_user(),
            client_key,
            known_hosts,
            log,
        };

        // Wait until it listens. Its own "Server listening" line rather than a probe connection:
        // a probe would add a "Connection from" line, which the denial test must not see.
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = format!("Server listening on 127.0.0.1 port {port}");
        loop {
            if sshd.log_text().contains(&want) {
                break;
            }
            if let Some(status) = sshd.child.try_wait().unwrap() {
                panic!("sshd exited with {status}:\n{}", sshd.log_text());
            }
            if Instant::now() > deadline {
                panic!("sshd did not listen on port {port} within 10 s:\n{}", sshd.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The options every ssh/scp run gets: no user config, this test's keys, no prompts.
    pub fn client_opts(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            self.client_key.display().to_string(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-o".into(),
            "ServerAliveInterval=5".into(),
            "-o".into(),
            "ServerAliveCountMax=6".into(),
        ]
    }

    /// `ssh` to `ALIAS` through `BIN connect` as ProxyCommand.
    pub fn ssh_via_connect(&self, gw: &Gateway, token: &str, remote: &str) -> Output {
        let proxy = format!("{BIN} connect {} --target {ALIAS} --insecure --token {token}", gw.url());
        run_bounded(
            Command::new(SSH)
                .args(self.client_opts())
                .arg("-o")
                .arg(format!("ProxyCommand={proxy}"))
                .arg(format!("{}@{ALIAS}", self.user))
                .arg(remote),
            CMD_TIMEOUT,
        )
    }

    /// Plain `ssh` to a local port (a tunnel), host key checked under `ALIAS`.
    pub fn ssh_via_port(&self, port: u16, remote: &str) -> Output {
        run_bounded(
            Command::new(SSH)
                .args(self.client_opts())
                .args(["-o", &format!("HostKeyAlias={ALIAS}"), "-p", &port.to_string()])
                .arg(format!("{}@127.0.0.1", self.user))
                .arg(remote),
            CMD_TIMEOUT,
        )
    }

    pub fn scp_via_port(&self, port: u16, from: &str, to: &str, limit: Duration) -> Output {
        run_bounded(
            Command::new(SCP).args(self.client_opts()).args([
                "-q",
                "-o",
                &format!("HostKeyAlias={ALIAS}"),
                "-P",
                &port.to_string(),
                from,
                to,
            ]),
            limit,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway and client helpers
// ---------------------------------------------------------------------------------------------
