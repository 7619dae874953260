//! `portcullis tunnel` as a child process: a local port whose every connection is a tunnel to a
//! target through the gateway. It is ready when it prints its documented `forwarding` line (once
//! its listener is bound); a probe connection would open a tunnel and a target session of its own.

use crate::gateway::{gateway_bin, Gateway};
use crate::process::ChildGuard;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `portcullis tunnel`, killed on drop.
pub struct Tunnel {
    pub port: u16,
    process: ChildGuard,
}

impl Tunnel {
    /// Forwards a fresh local port to `target` with `token`.
    pub fn start(gw: &Gateway, target: &str, token: &str) -> Tunnel {
        let port = crate::free_port();
        let mut child = Command::new(gateway_bin())
            .args(["tunnel", &gw.url(), "--target", target, "--insecure", "--local"])
            .arg(format!("127.0.0.1:{port}"))
            // Never on the command line, where `ps` shows it.
            .env("PORTCULLIS_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start portcullis tunnel");
        let stderr = child.stderr.take().expect("stderr");
        let mut process = ChildGuard::new(child, Duration::ZERO);
        // Its log goes on to the test's output; the first `forwarding` line says it listens.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[tunnel {port}] {line}");
                if line.contains("forwarding") {
                    let _ = tx.send(());
                }
            }
        });
        // Disconnected (it exited) or a timeout: either way it does not listen.
        if let Err(e) = rx.recv_timeout(Duration::from_secs(10)) {
            let status = process.wait_exit(Duration::from_secs(1));
            panic!("portcullis tunnel did not start listening on {port} ({e}; exit: {status:?})");
        }
        Tunnel { port, process }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }
}
