//! The browser SSH terminal's server side against a real sshd: sign-in, the terminal WebSocket
//! protocol (data, resize reaching the PTY, exit status), recording, and every refusal.

mod common;

use common::sshd::*;
use common::*;
use portcullis_protocols::ws::Message;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "correct horse battery";

struct Setup {
    sshd: Sshd,
    gw: Gateway,
}

/// sshd + a gateway whose `vm1` uses the gateway's key, `vm-typed` asks the user, `vm-wrong-key`
/// pins a host key that is not sshd's, and alice may reach all but `forbidden`.
fn setup(extra_session: &str) -> Setup {
    let sshd = Sshd::start();
    let host_pub = std::fs::read_to_string(sshd.dir.path().join("host_key.pub")).unwrap();
    let host_pub: String = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let other_dir = tempfile::tempdir().unwrap();
    keygen(&other_dir.path().join("other"));
    let other_pub = std::fs::read_to_string(other_dir.path().join("other.pub")).unwrap();
    let other_pub: String = other_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let hash = portcullis::web::passwd::hash(PASSWORD).unwrap();
    let addr = sshd.address();
    let key = sshd.client_key.display().to_string();
    let user = &sshd.user;
    let body = format!(
        "[session]\n{extra_session}\n[recording]\ndir = \"{{dir}}/recordings\"\n\
         [[target]]\nname = \"vm1\"\naddress = \"{addr}\"\nprotocol = \"ssh\"\nssh_user = \"{user}\"\nssh_key = \"{key}\"\nhost_key = \"{host_pub}\"\n\
         [[target]]\nname = \"vm-typed\"\naddress = \"{addr}\"\nprotocol = \"ssh\"\nhost_key = \"{host_pub}\"\nclipboard = false\n\
         [[target]]\nname = \"vm-wrong-key\"\naddress = \"{addr}\"\nprotocol = \"ssh\"\nssh_user = \"{user}\"\nssh_key = \"{key}\"\nhost_key = \"{other_pub}\"\n\
         [[target]]\nname = \"forbidden\"\naddress = \"{addr}\"\nprotocol = \"ssh\"\nssh_user = \"{user}\"\nssh_key = \"{key}\"\nhost_key = \"{host_pub}\"\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nreplay = true\ntargets = [\"vm1\", \"vm-typed\", \"vm-wrong-key\"]\n\
         [[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\ntargets = []\n"
    );
    let gw = Gateway::start_toml(&body);
    Setup { sshd, gw }
}

async fn sign_in(gw: &Gateway, user: &str, password: &str) -> (u16, Option<String>) {
    let body = serde_json::json!({ "user": user, "password": password }).to_string();
    let (status, head, _) = https(gw, "POST", "/api/login", "", &body).await;
    (status, session_cookie(&head))
}

fn origin(gw: &Gateway) -> String {
    format!("Origin: https://127.0.0.1:{}\r\n", gw.port)
}

/// Collects terminal output until `needle` shows up (or panics after 15 s with what came).
async fn wait_for(ws: &mut WsClient, out: &mut String, needle: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + 15 * SEC;
    let mut control = Vec::new();
    while !out.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.recv(left).await {
            Some(Message::Binary(b)) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(Message::Text(t)) => control.push(serde_json::from_str(&t).unwrap()),
            Some(_) => {}
            None => panic!("no {needle:?} in terminal output:\n{out}\ncontrol: {control:?}"),
        }
    }
    control
}

#[tokio::test]
async fn terminal_session_end_to_end() {
    let Setup { sshd: _sshd, gw } = setup("");
    let (status, cookie) = sign_in(&gw, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.expect("session cookie");

    let (status, _, body) = https(&gw, "GET", "/api/session", &cookie, "").await;
    assert_eq!(status, 200);
    let session: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = session["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vm-typed", "vm-wrong-key", "vm1"]);

    let headers = format!("{cookie}{}", origin(&gw));
    let mut ws = WsClient::open_with(&gw, "/v1/ssh/vm1?cols=100&rows=30", &headers)
        .await
        .expect("upgrade");
    let marker = format!("MARK{}", std::process::id());
    let mut out = String::new();
    ws.send_binary(format!("echo {marker}-$((6*7)); stty size\n").as_bytes())
        .await;
    let control = wait_for(&mut ws, &mut out, &format!("{marker}-42")).await;
    assert!(
        control.iter().any(|c| c["type"] == "ready" && c["clipboard"] == true),
        "{control:?}"
    );
    wait_for(&mut ws, &mut out, "30 100").await;

    ws.send_text(r#"{"type":"resize","cols":120,"rows":40}"#).await;
    ws.send_binary(b"stty size\n").await;
    wait_for(&mut ws, &mut out, "40 120").await;

    ws.send_binary(b"exit 3\n").await;
    let exit = loop {
        match ws.recv(15 * SEC).await {
            Some(Message::Text(t)) => break serde_json::from_str::<serde_json::Value>(&t).unwrap(),
            Some(_) => continue,
            None => panic!("no exit message"),
        }
    };
    assert_eq!(exit["type"], "exit");
    assert_eq!(exit["status"], 3);

    // Audited, recorded, and the recording holds what the user saw; replay lists it.
    let lines = gw.audit_lines(1);
    let rec = lines.iter().find(|l| l["event"] == "session").expect("session record");
    assert_eq!(
        (rec["user"].as_str(), rec["target"].as_str(), rec["via"].as_str()),
        (Some("alice"), Some("vm1"), Some("web_terminal"))
    );
    assert_eq!(rec["ended"], "exit_status: 3");
    let path = rec["recording"].as_str().expect("recording path").to_owned();
    let deadline = Instant::now() + 5 * SEC;
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains(&format!("{marker}-42"))
    {
        assert!(Instant::now() < deadline, "marker not in recording");
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = rec["session"].as_str().unwrap();
    let (status, _, list) = https(&gw, "GET", "/api/recordings", &cookie, "").await;
    assert_eq!(status, 200);
    assert!(list.contains(id), "{list}");
    let (status, _, cast) = https(&gw, "GET", &format!("/api/recordings/{id}"), &cookie, "").await;
    assert_eq!(status, 200);
    assert!(cast.starts_with("{\"version\":2"), "{cast}");
    let (status, _, _) = https(&gw, "GET", "/api/recordings/..%2f..%2fetc%2fpasswd", &cookie, "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn typed_credentials_and_clipboard_policy() {
    let Setup { sshd, gw } = setup("");
    let (_, cookie) = sign_in(&gw, "alice", PASSWORD).await;
    let headers = format!("{}{}", cookie.unwrap(), origin(&gw));
    let pem = std::fs::read_to_string(&sshd.client_key).unwrap();
    let mut ws = WsClient::open_with(&gw, "/v1/ssh/vm-typed", &headers).await.unwrap();
    let auth = serde_json::json!({ "type": "auth", "username": sshd.user, "private_key": pem }).to_string();
    ws.send_text(&auth).await;
    ws.send_binary(b"echo typed-$((1+1))\n").await;
    let mut out = String::new();
    let control = wait_for(&mut ws, &mut out, "typed-2").await;
    assert!(
        control.iter().any(|c| c["type"] == "ready" && c["clipboard"] == false),
        "{control:?}"
    );
    // The audit never holds the key.
    ws.send_binary(b"exit\n").await;
    let _ = ws.recv(5 * SEC).await;
    let audit = std::fs::read_to_string(&gw.audit).unwrap_or_default();
    assert!(!audit.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn refusals() {
    let Setup { sshd: _sshd, gw } = setup("");
    // Wrong password, unknown user: 401, same answer.
    assert_eq!(sign_in(&gw, "alice", "wrong").await.0, 401);
    assert_eq!(sign_in(&gw, "mallory", PASSWORD).await.0, 401);
    // Cross-origin sign-in.
    let body = serde_json::json!({ "user": "alice", "password": PASSWORD }).to_string();
    let mut tls = tls_connect(gw.addr()).await;
    let req = format!(
        "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nOrigin: https://evil.example\r\nContent-Length: {}\r\n\r\n{body}",
        gw.port,
        body.len()
    );
    assert_eq!(status_of(&exchange(&mut tls, req.as_bytes()).await), 403);

    let (_, cookie) = sign_in(&gw, "alice", PASSWORD).await;
    let cookie = cookie.unwrap();
    // Cross-origin WebSocket with a valid cookie.
    let evil = format!("{cookie}Origin: https://evil.example\r\n");
    let err = WsClient::open_with(&gw, "/v1/ssh/vm1", &evil)
        .await
        .err()
        .expect("refused");
    assert_eq!(status_of(&err), 403);
    // No cookie; a forged one.
    assert_eq!(
        status_of(
            &WsClient::open_with(&gw, "/v1/ssh/vm1", &origin(&gw))
                .await
                .err()
                .unwrap()
        ),
        401
    );
    let forged = format!("Cookie: portcullis_session=AAAA\r\n{}", origin(&gw));
    assert_eq!(
        status_of(&WsClient::open_with(&gw, "/v1/ssh/vm1", &forged).await.err().unwrap()),
        401
    );
    // Target not in the user's policy.
    let ok_headers = format!("{cookie}{}", origin(&gw));
    assert_eq!(
        status_of(
            &WsClient::open_with(&gw, "/v1/ssh/forbidden", &ok_headers)
                .await
                .err()
                .unwrap()
        ),
        403
    );
    // Changed host key: a clear error, no shell.
    let mut ws = WsClient::open_with(&gw, "/v1/ssh/vm-wrong-key", &ok_headers)
        .await
        .unwrap();
    let msg = loop {
        match ws.recv(15 * SEC).await {
            Some(Message::Text(t)) => break serde_json::from_str::<serde_json::Value>(&t).unwrap(),
            Some(_) => continue,
            None => panic!("no error message"),
        }
    };
    assert_eq!(msg["type"], "error");
    assert!(
        msg["message"]
            .as_str()
            .unwrap()
            .contains("does not match the pinned key"),
        "{msg}"
    );
    // Sign-out ends the session.
    assert_eq!(https(&gw, "POST", "/api/logout", &cookie, "").await.0, 200);
    assert_eq!(https(&gw, "GET", "/api/session", &cookie, "").await.0, 401);
    // bob may not replay.
    let (_, bob) = sign_in(&gw, "bob", PASSWORD).await;
    assert_eq!(https(&gw, "GET", "/api/recordings", &bob.unwrap(), "").await.0, 403);
    // Lockout: after 5 failures even the right password is refused, with 429.
    for _ in 0..5 {
        sign_in(&gw, "bob", "nope").await;
    }
    assert_eq!(sign_in(&gw, "bob", PASSWORD).await.0, 429);
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let Setup { sshd: _sshd, gw } = {
        // A one-second session lifetime.
        let s = setup("");
        drop(s.gw);
        let body = std::fs::read_to_string(s.sshd.dir.path().join("sshd_config")).unwrap();
        assert!(!body.is_empty());
        let host_pub = std::fs::read_to_string(s.sshd.dir.path().join("host_key.pub")).unwrap();
        let host_pub: String = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        let hash = portcullis::web::passwd::hash(PASSWORD).unwrap();
        let gw = Gateway::start_toml(&format!(
            "[web]\nsession_ttl = \"1s\"\n[[target]]\nname = \"vm1\"\naddress = \"{}\"\nprotocol = \"ssh\"\nhost_key = \"{host_pub}\"\n\
             [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntargets = [\"vm1\"]\n",
            s.sshd.address()
        ));
        Setup { sshd: s.sshd, gw }
    };
    let (_, cookie) = sign_in(&gw, "alice", PASSWORD).await;
    let cookie = cookie.unwrap();
    assert_eq!(https(&gw, "GET", "/api/session", &cookie, "").await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(https(&gw, "GET", "/api/session", &cookie, "").await.0, 401);
    let headers = format!("{cookie}{}", origin(&gw));
    assert_eq!(
        status_of(&WsClient::open_with(&gw, "/v1/ssh/vm1", &headers).await.err().unwrap()),
        401
    );
}

/// `portcullis serve` with no config: sign in with the printed password and get a shell from
/// the built-in SSH server.
#[tokio::test]
async fn demo_gives_a_working_terminal() {
    use std::io::BufRead;
    let port = free_port();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split_once("sign in as demo / ").map(|(_, p)| p.trim().to_owned()) {
                let _ = tx.send(rest);
            }
        }
    });
    let password = rx.recv_timeout(20 * SEC).expect("demo banner with a password");
    let gw = DemoGuard(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The harness's helpers take a Gateway; talk to the demo by hand.
    let mut tls = tls_connect(addr).await;
    let body = serde_json::json!({ "user": "demo", "password": password }).to_string();
    let req = format!(
        "POST /api/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://127.0.0.1:{port}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let resp = String::from_utf8_lossy(&exchange(&mut tls, req.as_bytes()).await).into_owned();
    assert_eq!(status_of(resp.as_bytes()), 200, "{resp}");
    let cookie = session_cookie(&resp).unwrap();
    let mut tls = tls_connect(addr).await;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET /v1/ssh/demo-shell?cols=90&rows=20 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: https://127.0.0.1:{port}\r\n{cookie}\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut b).await.unwrap(), 1, "{}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert_eq!(status_of(&head), 101, "{}", String::from_utf8_lossy(&head));
    let mut ws = WsClient::from_tls(tls);
    ws.send_binary(b"echo demo-$((20+22)); stty size\n").await;
    let mut out = String::new();
    wait_for(&mut ws, &mut out, "demo-42").await;
    wait_for(&mut ws, &mut out, "20 90").await;
    drop(gw);
}

struct DemoGuard(std::process::Child);

impl Drop for DemoGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway's credentials may live in an SSH agent instead of a key file.
#[tokio::test]
async fn gateway_credentials_from_an_ssh_agent() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("/usr/bin/ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    let deadline = Instant::now() + 10 * SEC;
    while !socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = run_bounded(
        std::process::Command::new("/usr/bin/ssh-add")
            .arg(&sshd.client_key)
            .env("SSH_AUTH_SOCK", &socket),
        10 * SEC,
    );
    assert!(added.status.success(), "ssh-add: {}", text(&added.stderr));
    let host_pub = std::fs::read_to_string(sshd.dir.path().join("host_key.pub")).unwrap();
    let host_pub: String = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let hash = portcullis::web::passwd::hash(PASSWORD).unwrap();
    let gw = Gateway::start_toml(&format!(
        "[[target]]\nname = \"vm-agent\"\naddress = \"{}\"\nprotocol = \"ssh\"\nssh_user = \"{}\"\nssh_agent = \"{}\"\nhost_key = \"{host_pub}\"\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ntargets = [\"vm-agent\"]\n",
        sshd.address(),
        sshd.user,
        socket.display()
    ));
    let (_, cookie) = sign_in(&gw, "alice", PASSWORD).await;
    let headers = format!("{}{}", cookie.unwrap(), origin(&gw));
    let mut ws = WsClient::open_with(&gw, "/v1/ssh/vm-agent", &headers).await.unwrap();
    ws.send_binary(b"echo agent-$((3*3))\n").await;
    let mut out = String::new();
    wait_for(&mut ws, &mut out, "agent-9").await;
    let _ = agent.kill();
    let _ = agent.wait();
}
