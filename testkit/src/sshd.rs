//! A real OpenSSH server on 127.0.0.1 (`sshd -D -e` with a config in a temp dir: generated host,
//! client and wrong keys, known_hosts) and its clients: `ssh` through `portcullis connect` as a
//! ProxyCommand, `ssh`/`scp` to a local port (a tunnel), and the load generator's login options.
//! sshd needs `/run/sshd`; public-key logins need an unlocked account (see FIELD-NOTES).

use crate::gateway::{gateway_bin, Gateway};
use crate::process::{self, run_bounded, wait_until, ChildGuard};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH: &str = "/usr/bin/ssh";
pub const SCP: &str = "/usr/bin/scp";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// The gateway's name for the server, and its host key alias in known_hosts.
pub const ALIAS: &str = "vm1";

/// How long one ssh command may take.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes a new ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let out = run_bounded(
        Command::new(SSH_KEYGEN)
            .args(["-t", "ed25519", "-N", "", "-q", "-C", "portcullis-test", "-f"])
            .arg(path),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "ssh-keygen failed: {}", crate::text(&out.stderr));
}

/// The first two fields of an OpenSSH public key file (`ssh-ed25519 AAAA…`): a host key pin.
pub fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A host key pin that is not the server's: a fresh key's public half.
pub fn other_host_key() -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    keygen(&dir.path().join("other"));
    public_key(&dir.path().join("other.pub"))
}

/// A running sshd, killed with its sessions on drop.
pub struct Sshd {
    process: ChildGuard,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Whoever runs the tests: the account the clients log in as.
    pub user: String,
    /// In authorized_keys.
    pub client_key: PathBuf,
    /// Not in authorized_keys.
    pub wrong_key: PathBuf,
    /// The server's public host key file.
    pub host_key_pub: PathBuf,
    pub known_hosts: PathBuf,
    log: PathBuf,
}

impl Sshd {
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (scripts/test does)"
        );
        // sshd exits at once without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::Builder::new()
            .prefix("portcullis-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for key in ["host_key", "client_key", "wrong_key"] {
            keygen(&d.join(key));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = crate::free_port();
        let host_pub = public_key(&d.join("host_key.pub"));
        let known_hosts = d.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {host_pub}\n{ALIAS} {host_pub}\n"),
        )
        .unwrap();
        // VERBOSE: "Connection from" lines (the denial tests count them). MaxStartups: the default
        // (10:30:100) drops connections at random once more than 10 are unauthenticated at once.
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {hk}\nPidFile {pid}\nAuthorizedKeysFile {ak}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nMaxStartups 100\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            ),
        )
        .unwrap();
        let log = d.join("sshd.log");
        let child = process::spawn_logged(Command::new(SSHD).args(["-D", "-e", "-f"]).arg(&config), &log);
        let mut sshd = Sshd {
            process: ChildGuard::new(child, Duration::from_secs(2)),
            port,
            user: process::current_user(),
            client_key: d.join("client_key"),
            wrong_key: d.join("wrong_key"),
            host_key_pub: d.join("host_key.pub"),
            known_hosts,
            log,
            dir,
        };
        // Its own "Server listening" line rather than a probe connection: a probe would add a
        // "Connection from" line, which the denial tests must not see.
        let want = format!("Server listening on 127.0.0.1 port {port}");
        let up = wait_until(Duration::from_secs(10), || {
            sshd.log_text().contains(&want) || sshd.process.exited().is_some()
        });
        let status = sshd.process.exited();
        assert!(
            up && status.is_none(),
            "sshd did not listen on {port} (exit: {status:?}):\n{}",
            sshd.log_text()
        );
        sshd
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGKILL to sshd and every process below it (its sessions and their shells), as a crash
    /// would end them; returns how many processes there were.
    pub fn kill(&mut self) -> usize {
        let killed = process::kill_tree(self.process.id());
        self.process.wait_exit(Duration::from_secs(10));
        killed
    }

    /// The pin of its host key (`ssh-ed25519 AAAA…`).
    pub fn host_key(&self) -> String {
        public_key(&self.host_key_pub)
    }

    pub fn log_text(&self) -> String {
        process::read_log(&self.log)
    }

    /// The keys of a gateway target table that logs in with the client key and pins `pin`.
    pub fn target_keys(&self, pin: &str) -> String {
        format!(
            "ssh_user = \"{}\"\nssh_key = \"{}\"\nhost_key = \"{pin}\"",
            self.user,
            self.client_key.display()
        )
    }

    /// Logins sshd accepted so far, waiting up to 5 s for its log to show at least `want`.
    pub fn accepted(&self, want: usize) -> usize {
        let count = || self.log_text().matches("Accepted publickey for ").count();
        wait_until(Duration::from_secs(5), || count() >= want);
        count()
    }

    /// The load generator's `--ssh-user U --ssh-key K` (the authorized key, or the wrong one).
    pub fn login(&self, right_key: bool) -> Vec<String> {
        let key = if right_key { &self.client_key } else { &self.wrong_key };
        vec![
            "--ssh-user".into(),
            self.user.clone(),
            "--ssh-key".into(),
            key.display().to_string(),
        ]
    }

    /// The options every ssh/scp run gets: no user config, this server's keys, no prompts.
    pub fn client_opts(&self) -> Vec<String> {
        let known_hosts = format!("UserKnownHostsFile={}", self.known_hosts.display());
        let mut opts: Vec<String> = ["-F", "/dev/null", "-i"].map(str::to_owned).to_vec();
        opts.push(self.client_key.display().to_string());
        for o in [
            known_hosts.as_str(),
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "ConnectTimeout=10",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=6",
        ] {
            opts.extend(["-o".to_owned(), o.to_owned()]);
        }
        opts
    }

    /// `ssh` to [`ALIAS`] through `portcullis connect` as its ProxyCommand.
    pub fn ssh_via_connect(&self, gw: &Gateway, token: &str, remote: &str) -> Output {
        let proxy = format!(
            "{} connect {} --target {ALIAS} --insecure --token {token}",
            gateway_bin().display(),
            gw.url()
        );
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

    /// Plain `ssh` to a local port (a tunnel), the host key checked under [`ALIAS`].
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

    /// `scp` through a local port (a tunnel).
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
