//! Test harness: a real `portcullis` gateway process with a generated config, the loadgen's own
//! targets in process, a minimal plain `ws://` bridge (like websockify) built on the gateway's
//! relay, and a real OpenSSH server (`sshd.rs`). The gateway binary is built with
//! `cargo build -p portcullis` when missing or older than its sources (the binary of another
//! package is not built for this crate's tests).
#![allow(dead_code)]

pub mod sshd;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// The build directory of this test binary (`target/debug` for `target/debug/deps/test-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let t = if p.is_dir() {
                newest_source(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            newest = newest.max(t);
        }
    }
    newest
}

/// Path of an up-to-date `portcullis` binary, building it once per test process if needed.
pub fn gateway_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = profile_dir();
        let bin = dir.join("portcullis");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let sources = [
            root.join("engine/src"),
            root.join("engine/Cargo.toml"),
            root.join("protocols/src"),
        ]
        .iter()
        .map(|p| {
            if p.is_dir() {
                newest_source(p)
            } else {
                p.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            }
        })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
        let fresh = bin.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= sources);
        if !fresh {
            let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
            cmd.args(["build", "-p", "portcullis", "--bin", "portcullis"])
                .current_dir(&root);
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cannot run cargo to build the gateway");
            assert!(status.success(), "cargo build -p portcullis failed");
        }
        assert!(bin.exists(), "no gateway binary at {}", bin.display());
        bin
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway process on a fresh port: targets by name, user `alice` may reach all of them.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub audit: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    pub fn start(targets: &[(&str, SocketAddr)]) -> Gateway {
        let bin = gateway_bin();
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = portcullis::keys::generate().unwrap();
        std::fs::write(dir.path().join("token.pub"), public).unwrap();
        let key = dir.path().join("token.key");
        std::fs::write(&key, private).unwrap();
        let port = free_port();
        let mut cfg = format!(
            "listen = \"127.0.0.1:{port}\"\nworkers = 2\n[auth]\ntoken_public_key = \"token.pub\"\n\
             [audit]\npath = \"audit.jsonl\"\n"
        );
        for (name, addr) in targets {
            cfg.push_str(&format!(
                "[[target]]\nname = \"{name}\"\naddress = \"{addr}\"\nprotocol = \"tcp\"\n"
            ));
        }
        let names: Vec<String> = targets.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        cfg.push_str(&format!(
            "[[user]]\nname = \"alice\"\ntargets = [{}]\n",
            names.join(", ")
        ));
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, cfg).unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[gateway {port}] {line}");
                if line.contains("listening on") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("gateway did not start");
        let audit = dir.path().join("audit.jsonl");
        Gateway {
            child,
            port,
            dir,
            key,
            audit,
        }
    }

    pub fn url(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Arguments that authenticate as alice for `target` with a minted token.
    pub fn auth(&self, target: &str) -> Vec<String> {
        vec![
            "--insecure".into(),
            "--token-key".into(),
            self.key.display().to_string(),
            "--user".into(),
            "alice".into(),
            "--target".into(),
            target.into(),
        ]
    }

    /// Audit records, waiting up to 5 s for at least `want`.
    pub fn audit_lines(&self, want: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
            if lines.len() >= want || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// What the plain bridge saw of each upgrade request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Path with query.
    pub target: String,
    pub authorization: Option<String>,
}

/// A plain-TCP WebSocket-to-TCP bridge (no TLS, no auth), like websockify or websocat: every
/// upgrade on any path is relayed to `target` by the gateway's relay in the server role.
pub async fn plain_bridge(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<SeenRequest>>>) {
    use portcullis::relay::{Relay, Step};
    use portcullis_protocols::http::{self, HeadLimits};
    use portcullis_protocols::ws::{Limits, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut filled = 0;
                let (response, leftover) = loop {
                    let n = sock.read(&mut buf[filled..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    filled += n;
                    if let Some(head) = http::parse_head(&buf[..filled], HeadLimits::default()).ok()? {
                        let upgrade = http::websocket_upgrade(&head).ok()?;
                        let target = if head.query.is_empty() {
                            head.path.to_string()
                        } else {
                            format!("{}?{}", head.path, head.query)
                        };
                        log.lock().unwrap().push(SeenRequest {
                            target,
                            authorization: head.header("authorization").map(str::to_string),
                        });
                        break (
                            http::switching_protocols(upgrade.key, None),
                            buf[head.len..filled].to_vec(),
                        );
                    }
                };
                sock.write_all(&response).await.ok()?;
                let raw = tokio::net::TcpStream::connect(target).await.ok()?;
                let _ = raw.set_nodelay(true);
                let _ = sock.set_nodelay(true);
                let mut ws = PlainWs(sock.compat());
                let mut raw = raw.compat();
                let mut relay = Relay::new(Role::Server, Limits::default(), 16 * 1024, &leftover);
                // Closing only reports that the close began; run on to the end.
                while let Step::Closing = std::future::poll_fn(|cx| relay.poll(cx, &mut ws, &mut raw)).await {}
                Some(())
            });
        }
    });
    (addr, seen)
}

/// Plain TCP as a relay transport (there is no TLS close_notify to send).
struct PlainWs(tokio_util::compat::Compat<tokio::net::TcpStream>);

impl futures_lite::AsyncRead for PlainWs {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for PlainWs {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_close(cx)
    }
}

impl portcullis::relay::Transport for PlainWs {}
