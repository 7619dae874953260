//! Test harness: a real `portcullis` process on a fresh loopback port, tokens, and a raw
//! WebSocket client that can also misbehave on purpose.
#![allow(dead_code)]

pub mod sshd;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use portcullis::client::ClientTls;
use portcullis_protocols::token::{Claims, TokenIssuer};
use portcullis_protocols::ws::{self, CloseCode, Limits, Message, MessageAssembler, OpCode, Role};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::compat::TokioAsyncReadCompatExt;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A free loopback port: bind to 0 and release. Every test takes fresh ports (listeners of a
/// just-ended process can linger with SO_REUSEPORT).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn unix_now() -> u64 {
    portcullis::keys::unix_now()
}

pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub private_key: String,
    pub audit: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A target definition for the test config.
pub struct TargetDef {
    pub name: &'static str,
    pub address: String,
    pub protocol: &'static str,
}

impl Gateway {
    /// Starts a gateway with `targets`, users `alice` (all targets but `forbidden`), `bob` (none),
    /// and `extra` TOML appended to the `[session]` table.
    pub fn start(targets: &[TargetDef], session: &str) -> Gateway {
        let mut body = format!("[session]\n{session}\n");
        for t in targets {
            body.push_str(&format!(
                "[[target]]\nname = \"{}\"\naddress = \"{}\"\nprotocol = \"{}\"\n",
                t.name, t.address, t.protocol
            ));
        }
        let alice: Vec<String> = targets
            .iter()
            .filter(|t| t.name != "forbidden")
            .map(|t| format!("\"{}\"", t.name))
            .collect();
        body.push_str(&format!(
            "[[user]]\nname = \"alice\"\ntargets = [{}]\n[[user]]\nname = \"bob\"\ntargets = []\n",
            alice.join(", ")
        ));
        Self::start_toml(&body)
    }

    /// Starts a gateway whose config is the fixed head (listen, token key, audit file) followed by
    /// `body` (sessions, targets, users, web, recording tables). `{dir}` in `body` is replaced by the
    /// gateway's temp dir.
    pub fn start_toml(body: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = portcullis::keys::generate().unwrap();
        std::fs::write(dir.path().join("token.pub"), public).unwrap();
        std::fs::write(dir.path().join("token.key"), &private).unwrap();
        let port = free_port();
        let audit = dir.path().join("audit.jsonl");
        let cfg = format!(
            "listen = \"127.0.0.1:{port}\"\nworkers = 2\n[auth]\ntoken_public_key = \"token.pub\"\nleeway = \"0s\"\n\
             [audit]\npath = \"audit.jsonl\"\n{}\n",
            body.replace("{dir}", &dir.path().display().to_string())
        );
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, cfg).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("PORTCULLIS_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the "listening" line, then forward the log to the test's stderr.
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
        Gateway {
            child,
            port,
            dir,
            private_key: private,
            audit,
        }
    }

    pub fn url(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn token(&self, user: &str, target: &str) -> String {
        portcullis::keys::issue(self.private_key.as_bytes(), user, target, Duration::from_secs(600)).unwrap()
    }

    pub fn token_with(&self, claims: &Claims) -> String {
        TokenIssuer::from_private_pem(self.private_key.as_bytes())
            .unwrap()
            .issue(claims)
            .unwrap()
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("token.key")
    }

    /// Audit lines written so far, parsed. Waits briefly for `want` lines.
    pub fn audit_lines(&self, want: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            if lines.len() >= want || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn insecure_tls() -> Arc<rustls::ClientConfig> {
    portcullis::tls::client_config(portcullis::tls::ServerTrust::Insecure).unwrap()
}

/// TLS to the gateway, nothing sent yet.
pub async fn tls_connect(addr: SocketAddr) -> ClientTls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    futures_rustls::TlsConnector::from(insecure_tls())
        .connect(name, tcp.compat())
        .await
        .unwrap()
}

/// Sends `request` and reads until the peer closes (or 10 s); returns everything received.
pub async fn exchange(tls: &mut ClientTls, request: &[u8]) -> Vec<u8> {
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    read_to_close(tls, Duration::from_secs(10)).await
}

pub async fn read_to_close(tls: &mut ClientTls, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(limit, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

pub fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

pub fn upgrade_request(path: &str, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
}

/// A raw WebSocket client session (client role) for protocol-level tests.
pub struct WsClient {
    pub tls: ClientTls,
    assembler: MessageAssembler,
    buf: Vec<u8>,
    start: usize,
}

impl WsClient {
    /// Opens `/v1/tunnel/{target}` with `token`; panics unless the gateway answers 101.
    pub async fn open(gw: &Gateway, target: &str, token: &str) -> WsClient {
        Self::open_path(gw, &format!("/v1/tunnel/{target}"), Some(token)).await
    }

    /// Opens a WebSocket on `path`; panics unless the gateway answers 101.
    pub async fn open_path(gw: &Gateway, path: &str, token: Option<&str>) -> WsClient {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        match Self::open_with(gw, path, &auth).await {
            Ok(ws) => ws,
            Err(head) => panic!("upgrade refused: {}", String::from_utf8_lossy(&head)),
        }
    }

    /// Opens a WebSocket on `path` with `extra` header lines (each ending in CRLF). `Err` holds the
    /// gateway's whole answer when it is not 101.
    pub async fn open_with(gw: &Gateway, path: &str, extra: &str) -> Result<WsClient, Vec<u8>> {
        let mut tls = tls_connect(gw.addr()).await;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
            gw.port
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut byte))
                .await
                .unwrap()
                .unwrap_or(0);
            if n == 0 {
                return Err(head);
            }
            head.push(byte[0]);
        }
        if status_of(&head) != 101 {
            head.extend(read_to_close(&mut tls, Duration::from_secs(5)).await);
            return Err(head);
        }
        Ok(WsClient {
            tls,
            assembler: MessageAssembler::new(Role::Client, Limits::default()),
            buf: Vec::new(),
            start: 0,
        })
    }

    /// A client on a connection that already completed the upgrade.
    pub fn from_tls(tls: ClientTls) -> WsClient {
        WsClient {
            tls,
            assembler: MessageAssembler::new(Role::Client, Limits::default()),
            buf: Vec::new(),
            start: 0,
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, OpCode::Text, text.as_bytes(), true).await
    }

    /// Sends one frame; `masked: false` breaks RFC 6455 on purpose.
    pub async fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8], masked: bool) {
        let key = masked.then_some([0x37, 0xfa, 0x21, 0x3d]);
        let mut frame = vec![0u8; ws::MAX_HEADER_LEN];
        let n = ws::encode_header(&mut frame, fin, opcode, payload.len() as u64, key);
        frame.truncate(n);
        let start = frame.len();
        frame.extend_from_slice(payload);
        if let Some(key) = key {
            ws::apply_mask(&mut frame[start..], key, 0);
        }
        self.tls.write_all(&frame).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    pub async fn send_binary(&mut self, payload: &[u8]) {
        self.send_frame(true, OpCode::Binary, payload, true).await
    }

    pub async fn send_close(&mut self, code: CloseCode) {
        self.send_frame(true, OpCode::Close, &code.0.to_be_bytes(), true).await
    }

    /// Next whole message, or None when the connection ends or `limit` passes.
    pub async fn recv(&mut self, limit: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while self.start < self.buf.len() {
                let (used, msg) = self
                    .assembler
                    .feed(&mut self.buf[self.start..])
                    .expect("gateway sent a bad frame");
                self.start += used;
                if let Some(m) = msg {
                    return Some(m);
                }
            }
            self.buf.clear();
            self.start = 0;
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.tls.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads binary payload until `n` bytes arrived (pings are skipped).
    pub async fn recv_bytes(&mut self, n: usize, limit: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.recv(limit).await {
                Some(Message::Binary(b)) => out.extend_from_slice(&b),
                Some(Message::Ping(_)) | Some(Message::Pong(_)) => {}
                other => panic!("expected data, got {other:?}"),
            }
        }
        out
    }

    /// Waits for the gateway's Close and returns its code and reason.
    pub async fn recv_close(&mut self, limit: Duration) -> (Option<u16>, String) {
        loop {
            match self.recv(limit).await {
                Some(Message::Close { code, reason }) => return (code.map(|c| c.0), reason),
                Some(_) => continue,
                None => panic!("connection ended without a Close frame"),
            }
        }
    }
}

/// One HTTPS request to the gateway; returns (status, head, body).
pub async fn https(gw: &Gateway, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut tls = tls_connect(gw.addr()).await;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len(),
        port = gw.port
    );
    let resp = exchange(&mut tls, req.as_bytes()).await;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status_of(&resp), head.to_owned(), body.to_owned())
}

/// The `portcullis_session` cookie a response sets, as a `Cookie:` header line.
pub fn session_cookie(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: portcullis_session="))
        .map(|v| format!("Cookie: portcullis_session={}\r\n", v.split(';').next().unwrap_or("")))
}

/// A TCP echo target on a fresh loopback port; counts the connections it accepted.
pub struct EchoTarget {
    pub addr: SocketAddr,
    pub accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl EchoTarget {
    pub fn start() -> EchoTarget {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    // Echo the half-close too: FIN after the last byte.
                    let _ = conn.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        EchoTarget { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The count once it reaches `n`, or whatever it is after 5 s: the gateway answers 101 as soon
    /// as its connect completes, which can be before this target's accept loop has counted it.
    pub async fn accepted_reaching(&self, n: usize) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.accepted() < n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.accepted()
    }
}

/// A closed loopback port: connecting to it is refused.
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// `portcullis tunnel` as a child process, killed on drop.
pub struct Tunnel {
    pub child: Child,
    pub port: u16,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tunnel {
    pub fn start(gw: &Gateway, target: &str, token: &str) -> Tunnel {
        let port = free_port();
        let mut child = Command::new(BIN)
            .args([
                "tunnel",
                &gw.url(),
                "--target",
                target,
                "--token",
                token,
                "--insecure",
                "--local",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start portcullis tunnel");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[tunnel {port}] {line}");
                if line.contains("forwarding") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut tunnel = Tunnel { child, port };
        // The "forwarding" line is printed once the listener is bound, so the port accepts from
        // then on. (A probe connection would open a tunnel and an sshd session of its own.)
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let status = tunnel.child.try_wait().ok().flatten();
            panic!("portcullis tunnel did not start listening on {port} (exit: {status:?})");
        }
        tunnel
    }
}

/// The audit log's session records, waiting up to 15 s for `want` of them.
pub fn session_records(gw: &Gateway, want: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sessions: Vec<serde_json::Value> = gw
            .audit_lines(0)
            .into_iter()
            .filter(|l| l["event"] == "session")
            .collect();
        if sessions.len() >= want || Instant::now() > deadline {
            return sessions;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
