//! A real Redis (Debian's redis-server 7.0) on a fresh loopback port, for the fleet tests: started
//! in the foreground, stopped by its guard, and restartable on the same port (the store-down
//! policy and recovery). Persistence is off unless asked for (`with_append_only`).

use crate::process::{spawn_logged, wait_until, ChildGuard};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";

pub struct RedisServer {
    process: Option<ChildGuard>,
    pub port: u16,
    append_only: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// With append-only persistence in its own directory: a restart keeps what was written.
    pub fn with_append_only() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(append_only: bool) -> RedisServer {
        assert!(
            std::path::Path::new(REDIS_SERVER).exists(),
            "redis-server is not installed (scripts/test installs the Debian package redis-server)"
        );
        let mut redis = RedisServer {
            process: None,
            port: crate::free_port(),
            append_only,
            dir: tempfile::Builder::new().prefix("portcullis-redis-").tempdir().unwrap(),
        };
        redis.run();
        redis
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn run(&mut self) {
        let mut cmd = Command::new(REDIS_SERVER);
        cmd.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", if self.append_only { "yes" } else { "no" }])
            .arg("--dir")
            .arg(self.dir.path());
        let child = spawn_logged(&mut cmd, &self.log());
        self.process = Some(ChildGuard::new(child, Duration::from_secs(3)));
        let up = wait_until(Duration::from_secs(10), || self.ping());
        assert!(
            up,
            "redis-server did not answer PING:\n{}",
            crate::process::read_log(&self.log())
        );
    }

    /// Whether it answers PING now.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGTERM, then SIGKILL after the grace time); `start_again` brings it back on the
    /// same port.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop();
        }
    }

    pub fn start_again(&mut self) {
        self.stop();
        self.run();
    }

    /// The `[cluster]` table of a gateway that uses it.
    pub fn cluster_toml(&self, node: &str) -> String {
        self.db(0).cluster_toml(node)
    }

    /// One of its numbered databases: scenarios of one test binary share the server (one Redis
    /// per binary) without sharing keys. (Publish/subscribe channels are server-wide: run
    /// scenarios that publish one after another.)
    pub fn db(&self, db: u8) -> RedisDb {
        RedisDb { port: self.port, db }
    }
}

pub struct RedisDb {
    pub port: u16,
    pub db: u8,
}

impl RedisDb {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, self.db)
    }

    /// The `[cluster]` table of a gateway that uses this database.
    pub fn cluster_toml(&self, node: &str) -> String {
        format!("[cluster]\nnode = \"{node}\"\nstore = \"{}\"\n", self.url())
    }
}

/// A TCP link to a server that a test can cut and restore: a node "cut off from Redis" while
/// the rest of the fleet still reaches it. Cutting closes every connection through it and
/// refuses new ones until restored.
pub struct Link {
    pub port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    _listener: crate::targets::TcpTarget,
}

impl Link {
    pub fn to(port: u16) -> Link {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (cut_, open_) = (cut.clone(), open.clone());
        let listener = crate::targets::TcpTarget::start(move |client| {
            if cut_.load(Ordering::SeqCst) {
                return; // dropped: closed at once
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let mut held = open_.lock().unwrap();
            for s in [&client, &server] {
                if let Ok(c) = s.try_clone() {
                    held.push(c);
                }
            }
            drop(held);
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                    let _ = from.shutdown(std::net::Shutdown::Both);
                });
            };
            if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                pipe(client, s2);
                pipe(server, c2);
            }
        });
        Link {
            port: listener.addr.port(),
            cut,
            open,
            _listener: listener,
        }
    }

    pub fn url(&self, db: u8) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Closes every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}
