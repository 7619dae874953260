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
    dir: tempfile::TempDir,
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
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let send = match send {
            Send::ProxyV1 => "send-proxy",
            Send::ProxyV2 => "send-proxy-v2",
        };
        let frontend = format!("frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n");
        Self::run(
            dir,
            port,
            "",
            &format!("{frontend}backend be\n  server gw {backend} {send}\n"),
        )
    }

    /// Writes the configuration (`global` lines, then `rest` after the common defaults), starts
    /// HAProxy and waits until it listens on `port`.
    fn run(dir: tempfile::TempDir, port: u16, global: &str, rest: &str) -> Haproxy {
        assert!(
            std::path::Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: install haproxy (scripts/test does)"
        );
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  log stderr format raw local0 info\n{global}\
                 defaults\n  mode tcp\n  log global\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n{rest}"
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
            dir,
        }
    }

    /// A balancer in front of a fleet: round robin over `backends` (each a gateway's public
    /// address and its admin port), PROXY v2 to each, and a health check of `GET /readyz` on the
    /// admin port every 200 ms (one failure takes a server out, one success brings it back), as
    /// the README advises. Its stats socket says which servers are up (`servers_up`).
    pub fn fleet(backends: &[(SocketAddr, u16)]) -> Haproxy {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let socket = dir.path().join("admin.sock");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, (addr, admin))| {
                format!("  server gw{i} {addr} send-proxy-v2 check port {admin} inter 200ms fall 1 rise 1\n")
            })
            .collect();
        let global = format!("  stats socket {} mode 600 level admin\n", socket.display());
        let rest = format!(
            "frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n\
             backend be\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n{servers}"
        );
        Self::run(dir, port, &global, &rest)
    }

    /// How many backend servers the balancer's health checks say are up.
    pub fn servers_up(&self) -> usize {
        use std::io::{Read, Write};
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(self.dir.path().join("admin.sock")) else {
            return 0;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut csv = String::new();
        if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut csv).is_err() {
            return 0;
        }
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(status)) = (column("pxname"), column("svname"), column("status")) else {
            return 0;
        };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.get(px) == Some(&"be") && !matches!(f.get(sv), Some(&"BACKEND") | Some(&"FRONTEND")))
            .filter(|f| f.get(status).is_some_and(|s| s.starts_with("UP")))
            .count()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl crate::client::Endpoint for Haproxy {
    fn addr(&self) -> SocketAddr {
        Haproxy::addr(self)
    }
}
