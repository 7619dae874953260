//! A real HAProxy (Debian's package) in TCP mode in front of a gateway, sending the PROXY
//! protocol: the balancer the gateway's `[proxy_protocol]` is for.

use crate::ports::{free_port, listening};
use crate::process::{self, wait_until, ChildGuard};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

pub const HAPROXY: &str = "/usr/sbin/haproxy";

pub struct Haproxy {
    pub port: u16,
    _guard: ChildGuard,
    _dir: tempfile::TempDir,
}

/// What HAProxy puts in front of each connection to the backend.
#[derive(Clone, Copy, Debug)]
pub enum Send {
    ProxyV1,
    ProxyV2,
}

impl Haproxy {
    /// Listens on a fresh loopback port and forwards every connection to `backend`.
    pub fn start(backend: SocketAddr, send: Send) -> Haproxy {
        assert!(
            std::path::Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: install haproxy (scripts/test does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let send = match send {
            Send::ProxyV1 => "send-proxy",
            Send::ProxyV2 => "send-proxy-v2",
        };
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  log stderr format raw local0 info\n\
                 defaults\n  mode tcp\n  log global\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
                 backend be\n  server gw {backend} {send}\n"
            ),
        )
        .expect("haproxy config");
        let log = dir.path().join("haproxy.log");
        let child = process::spawn_logged(Command::new(HAPROXY).arg("-f").arg(&config).arg("-db"), &log);
        let mut guard = ChildGuard::new(child, Duration::from_secs(1));
        // HAProxy says nothing when it listens; watch its socket (no probe connection, which it
        // would forward to the gateway).
        let up = wait_until(Duration::from_secs(10), || listening(port) || guard.exited().is_some());
        assert!(
            up && guard.exited().is_none(),
            "haproxy did not listen on {port}:\n{}",
            process::read_log(&log)
        );
        Haproxy {
            port,
            _guard: guard,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}
