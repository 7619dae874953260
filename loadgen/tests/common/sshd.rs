//! A real OpenSSH server on 127.0.0.1 for the `ssh` scenario (as engine/tests/common/sshd.rs
//! starts it): generated host and client keys, a config in a temporary directory, `sshd -D -e`.
//! Every wait is bounded; the server is killed on drop.
#![allow(dead_code)]

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

pub struct Sshd {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The user the tests log in as (whoever runs them).
    pub user: String,
    /// In authorized_keys.
    pub client_key: PathBuf,
    /// Not in authorized_keys.
    pub wrong_key: PathBuf,
    /// The server's host public key (`ssh-ed25519 AAAA… comment`).
    pub host_key_pub: PathBuf,
    pub log: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short command to its end within `limit` (killed and a panic after that).
fn run_bounded(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("timed out after {limit:?}: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn keygen(path: &Path) {
    let out = run_bounded(
        Command::new(SSH_KEYGEN)
            .args(["-t", "ed25519", "-N", "", "-q", "-C", "portcullis-loadgen-test", "-f"])
            .arg(path),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn current_user() -> String {
    let out = run_bounded(Command::new("id").arg("-un"), Duration::from_secs(10));
    assert!(out.status.success(), "id -un failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Sshd {
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (scripts/test does)"
        );
        // sshd exits at once without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (host_key, client_key, wrong_key) = (d.join("host_key"), d.join("client_key"), d.join("wrong_key"));
        keygen(&host_key);
        keygen(&client_key);
        keygen(&wrong_key);
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = d.join("sshd_config");
        // MaxStartups: the default (10:30:100) drops connections at random once more than 10
        // are unauthenticated at once.
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nMaxStartups 100\nLogLevel INFO\n",
                hk = host_key.display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = d.join("sshd.log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start sshd");
        let mut sshd = Sshd {
            child,
            port,
            user: current_user(),
            client_key,
            wrong_key,
            host_key_pub: d.join("host_key.pub"),
            log,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let want = format!("Server listening on 127.0.0.1 port {port}");
        while !sshd.log_text().contains(&want) {
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

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Logins sshd accepted so far, waiting up to 5 s for the log to show at least `want`.
    pub fn accepted(&self, want: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = self.log_text().matches("Accepted publickey for ").count();
            if n >= want || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `--ssh-user U --ssh-key K` (the authorized key, or the wrong one).
    pub fn login(&self, right_key: bool) -> Vec<String> {
        let key = if right_key { &self.client_key } else { &self.wrong_key };
        vec![
            "--ssh-user".into(),
            self.user.clone(),
            "--ssh-key".into(),
            key.display().to_string(),
        ]
    }
}
