//! The browser SSH terminal's server side against a real sshd: sign-in, the terminal WebSocket
//! protocol (data, resize reaching the PTY, exit status), recording, and every refusal.

use portcullis_protocols::ws::Message;
use portcullis_testkit::client::{eventually, sign_in, Endpoint};
use portcullis_testkit::gateway::{gateway_bin, spawn_ready};
use portcullis_testkit::process::{self, run_bounded, wait_until, ChildGuard};
use portcullis_testkit::sshd::{other_host_key, Sshd};
use portcullis_testkit::{free_port, https, text, Gateway, WsClient};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "correct horse battery";

/// sshd + a gateway whose `vm1` uses the gateway's key, `vm-typed` asks the user, `vm-wrong-key`
/// pins a host key that is not sshd's, and alice may reach all but `forbidden`.
fn setup() -> (Sshd, Gateway) {
    let sshd = Sshd::start();
    let (addr, pin) = (sshd.address(), sshd.host_key());
    let gw = Gateway::builder()
        .toml("[recording]\ndir = \"{dir}/recordings\"")
        .target_with("vm1", &addr, "ssh", &sshd.target_keys(&pin))
        .target_with(
            "vm-typed",
            &addr,
            "ssh",
            &format!("host_key = \"{pin}\"\nclipboard = false"),
        )
        .target_with("vm-wrong-key", &addr, "ssh", &sshd.target_keys(&other_host_key()))
        .target_with("forbidden", &addr, "ssh", &sshd.target_keys(&pin))
        .password(PASSWORD)
        .user("alice", &["vm1", "vm-typed", "vm-wrong-key"], "replay = true")
        .user("bob", &[], "")
        .start();
    (sshd, gw)
}

/// Signs alice in; the headers of a same-origin terminal WebSocket with her session.
async fn alice_headers(ep: &impl Endpoint, password: &str) -> [(&'static str, String); 2] {
    let (status, cookie) = sign_in(ep, "alice", password).await;
    assert_eq!(status, 200);
    [("Cookie", cookie.expect("session cookie")), ("Origin", ep.origin())]
}

fn as_refs<'a>(headers: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    headers.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// A terminal WebSocket on `path` with `headers`; panics unless it opens.
async fn terminal(ep: &impl Endpoint, path: &str, headers: &[(&'static str, String)]) -> WsClient {
    WsClient::open_with(ep, path, &as_refs(headers))
        .await
        .unwrap_or_else(|answer| panic!("terminal refused: {}", text(&answer)))
}

/// Collects terminal output until `needle` shows up (or panics after 15 s with what came);
/// returns the control messages seen meanwhile.
async fn wait_for(ws: &mut WsClient, out: &mut String, needle: &str) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + 15 * SEC;
    let mut control = Vec::new();
    while !out.contains(needle) {
        match ws
            .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            Some(Message::Binary(b)) => out.push_str(&text(&b)),
            Some(Message::Text(t)) => control.push(serde_json::from_str(&t).unwrap()),
            Some(_) => {}
            None => panic!("no {needle:?} in terminal output:\n{out}\ncontrol: {control:?}"),
        }
    }
    control
}

/// Types `input` and waits for `needle` in the output.
async fn run(ws: &mut WsClient, input: &str, needle: &str) -> Vec<serde_json::Value> {
    ws.send_binary(input.as_bytes()).await;
    wait_for(ws, &mut String::new(), needle).await
}

#[tokio::test]
async fn terminal_session_end_to_end() {
    let (_sshd, gw) = setup();
    let headers = alice_headers(&gw, PASSWORD).await;
    let cookie = [("Cookie", headers[0].1.as_str())];

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

    let mut ws = terminal(&gw, "/v1/ssh/vm1?cols=100&rows=30", &headers).await;
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
    run(&mut ws, "stty size\n", "40 120").await;

    ws.send_binary(b"exit 3\n").await;
    let exit = ws.recv_json(15 * SEC).await.expect("an exit message");
    assert_eq!(
        (exit["type"].as_str(), exit["status"].as_i64()),
        (Some("exit"), Some(3)),
        "{exit}"
    );

    // Audited, recorded, and the recording holds what the user saw; replay lists it.
    let rec = &gw.session_records(1)[0];
    assert_eq!(
        (rec["user"].as_str(), rec["target"].as_str(), rec["via"].as_str()),
        (Some("alice"), Some("vm1"), Some("web_terminal"))
    );
    assert_eq!(
        (rec["ended"].as_str(), rec["detail"].as_str()),
        (Some("exit_status"), Some("3")),
        "{rec}"
    );
    assert!(rec.get("token_id").is_none(), "a web session has no token: {rec}");
    let path = rec["recording"].as_str().expect("recording path").to_owned();
    let recorded = wait_until(5 * SEC, || {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(&format!("{marker}-42"))
    });
    assert!(recorded, "marker not in recording");
    // Readable by the gateway's user only, like the audit log.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let path = std::path::Path::new(&path);
    assert_eq!(mode(path), 0o600, "recording file mode");
    assert_eq!(mode(path.parent().unwrap()), 0o700, "recordings directory mode");
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
    let (sshd, gw) = setup();
    let headers = alice_headers(&gw, PASSWORD).await;
    let pem = std::fs::read_to_string(&sshd.client_key).unwrap();
    let mut ws = terminal(&gw, "/v1/ssh/vm-typed", &headers).await;
    let auth = serde_json::json!({ "type": "auth", "username": sshd.user, "private_key": pem }).to_string();
    ws.send_text(&auth).await;
    let control = run(&mut ws, "echo typed-$((1+1))\n", "typed-2").await;
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
    let (_sshd, gw) = setup();
    // Wrong password, unknown user: 401, same answer.
    assert_eq!(sign_in(&gw, "alice", "wrong").await.0, 401);
    assert_eq!(sign_in(&gw, "mallory", PASSWORD).await.0, 401);
    // Cross-origin sign-in.
    let body = serde_json::json!({ "user": "alice", "password": PASSWORD }).to_string();
    let evil = ("Origin", "https://evil.example");
    assert_eq!(https(&gw, "POST", "/api/login", &[evil], &body).await.0, 403);

    let headers = alice_headers(&gw, PASSWORD).await;
    let cookie = ("Cookie", headers[0].1.as_str());
    let origin = ("Origin", headers[1].1.as_str());
    let forged = ("Cookie", "__Host-portcullis_session=AAAA");
    for (what, path, headers, want) in [
        (
            "cross-origin with a valid cookie",
            "/v1/ssh/vm1",
            vec![cookie, evil],
            403,
        ),
        ("no cookie", "/v1/ssh/vm1", vec![origin], 401),
        ("a forged cookie", "/v1/ssh/vm1", vec![forged, origin], 401),
        (
            "not in the user's policy",
            "/v1/ssh/forbidden",
            vec![cookie, origin],
            403,
        ),
        // One policy decision for every route: an unknown target is not found.
        ("unknown target", "/v1/ssh/nowhere", vec![cookie, origin], 404),
    ] {
        assert_eq!(WsClient::refused(&gw, path, &headers).await, want, "{what}");
    }
    // Changed host key: a clear error, no shell.
    let mut ws = terminal(&gw, "/v1/ssh/vm-wrong-key", &headers).await;
    let msg = ws.recv_json(15 * SEC).await.expect("an error message");
    assert_eq!(msg["type"], "error");
    let message = msg["message"].as_str().unwrap_or_default();
    assert!(message.contains("does not match the pinned key"), "{msg}");
    // A cross-site page cannot sign the user out; sign-out ends the session.
    assert_eq!(https(&gw, "POST", "/api/logout", &[cookie, evil], "").await.0, 403);
    assert_eq!(https(&gw, "GET", "/api/session", &[cookie], "").await.0, 200);
    assert_eq!(https(&gw, "POST", "/api/logout", &[cookie], "").await.0, 200);
    assert_eq!(https(&gw, "GET", "/api/session", &[cookie], "").await.0, 401);
    // bob may not replay.
    let bob = sign_in(&gw, "bob", PASSWORD).await.1.unwrap();
    assert_eq!(
        https(&gw, "GET", "/api/recordings", &[("Cookie", bob.as_str())], "")
            .await
            .0,
        403
    );
    // Lockout: after 5 failures even the right password is refused, with 429.
    for _ in 0..5 {
        sign_in(&gw, "bob", "nope").await;
    }
    assert_eq!(sign_in(&gw, "bob", PASSWORD).await.0, 429);
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    // A one-second session lifetime.
    let sshd = Sshd::start();
    let gw = Gateway::builder()
        .toml("[web]\nsession_ttl = \"1s\"")
        .target_with(
            "vm1",
            sshd.address(),
            "ssh",
            &format!("host_key = \"{}\"", sshd.host_key()),
        )
        .password(PASSWORD)
        .user("alice", &["vm1"], "")
        .start();
    let headers = alice_headers(&gw, PASSWORD).await;
    let cookie = [("Cookie", headers[0].1.as_str())];
    assert_eq!(https(&gw, "GET", "/api/session", &cookie, "").await.0, 200);
    let (gw_ref, cookie_ref) = (&gw, &cookie);
    let expired = eventually(10 * SEC, || async move {
        https(gw_ref, "GET", "/api/session", cookie_ref, "").await.0 == 401
    })
    .await;
    assert!(expired, "the session did not expire");
    assert_eq!(WsClient::refused(&gw, "/v1/ssh/vm1", &as_refs(&headers)).await, 401);
}

/// `portcullis serve` with no config: sign in with the printed password and get a shell from
/// the built-in SSH server.
#[tokio::test]
async fn demo_gives_a_working_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = dir.path().join("demo.log");
    // The banner (with the password) is printed before the gateway reports ready.
    let (_demo, _) = spawn_ready(
        Command::new(gateway_bin()).args(["serve", "--listen", &addr.to_string()]),
        &log,
    );
    let banner = process::read_log(&log);
    let password = banner
        .lines()
        .find_map(|l| l.split_once("sign in as demo / ").map(|(_, p)| p.trim().to_owned()))
        .unwrap_or_else(|| panic!("no demo password in the banner:\n{banner}"));
    let (status, cookie) = sign_in(&addr, "demo", &password).await;
    assert_eq!(status, 200);
    let headers = [("Cookie", cookie.expect("session cookie")), ("Origin", addr.origin())];
    let mut ws = terminal(&addr, "/v1/ssh/demo-shell?cols=90&rows=20", &headers).await;
    let mut out = String::new();
    ws.send_binary(b"echo demo-$((20+22)); stty size\n").await;
    wait_for(&mut ws, &mut out, "demo-42").await;
    wait_for(&mut ws, &mut out, "20 90").await;
    // The tokens are in files, not in the printed commands (where `ps` would show them), and the
    // printed `connect` works as printed.
    assert!(!banner.contains("eyJ"), "a token in the banner:\n{banner}");
    let line = banner
        .lines()
        .find(|l| l.contains("echo hello |"))
        .unwrap_or_else(|| panic!("no connect example:\n{banner}"));
    let file = line.rsplit("--token-file ").next().unwrap().trim();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
    let mut connect = Command::new(gateway_bin());
    connect.args([
        "connect",
        &format!("wss://{addr}"),
        "--insecure",
        "--target",
        "echo",
        "--token-file",
        file,
    ]);
    let out = process::run_bounded_fed(&mut connect, 20 * SEC, |mut stdin| {
        use std::io::Write;
        let _ = stdin.write_all(b"hello through the demo\n");
    });
    assert_eq!(text(&out.stdout), "hello through the demo\n", "{}", text(&out.stderr));
}

/// The demo serves a shell behind a printed password: loopback only.
#[test]
fn the_demo_refuses_to_listen_beyond_loopback() {
    let out = Command::new(gateway_bin())
        .args(["serve", "--listen", "0.0.0.0:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loopback only"), "{err}");
}

/// The gateway's credentials may live in an SSH agent instead of a key file.
#[tokio::test]
async fn gateway_credentials_from_an_ssh_agent() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let agent = Command::new("/usr/bin/ssh-agent")
        .args(["-D", "-a"])
        .arg(&socket)
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client)");
    let _agent = ChildGuard::new(agent, Duration::ZERO);
    assert!(wait_until(10 * SEC, || socket.exists()), "ssh-agent did not start");
    let added = run_bounded(
        Command::new("/usr/bin/ssh-add")
            .arg(&sshd.client_key)
            .env("SSH_AUTH_SOCK", &socket),
        10 * SEC,
    );
    assert!(added.status.success(), "ssh-add: {}", text(&added.stderr));
    let keys = format!(
        "ssh_user = \"{}\"\nssh_agent = \"{}\"\nhost_key = \"{}\"",
        sshd.user,
        socket.display(),
        sshd.host_key()
    );
    let gw = Gateway::builder()
        .target_with("vm-agent", sshd.address(), "ssh", &keys)
        .password(PASSWORD)
        .user("alice", &["vm-agent"], "")
        .start();
    let headers = alice_headers(&gw, PASSWORD).await;
    let mut ws = terminal(&gw, "/v1/ssh/vm-agent", &headers).await;
    run(&mut ws, "echo agent-$((3*3))\n", "agent-9").await;
}

/// A browser that vanishes (reads nothing, answers no ping: a cut network, a closed laptop) is
/// pinged like a tunnel's client and dropped after two intervals; its SSH session ends with it.
#[tokio::test]
async fn a_silent_browser_is_pinged_then_dropped() {
    let sshd = Sshd::start();
    let pin = sshd.host_key();
    let gw = Gateway::builder()
        .session("ping_interval = \"500ms\"\n")
        .target_with("vm1", sshd.address(), "ssh", &sshd.target_keys(&pin))
        .password(PASSWORD)
        .user("alice", &["vm1"], "")
        .start();
    let headers = alice_headers(&gw, PASSWORD).await;
    let mut ws = terminal(&gw, "/v1/ssh/vm1", &headers).await;
    run(&mut ws, "echo up-$((1+1))\n", "up-2").await;
    // From here on the browser is silent.
    let rec = &gw.session_records(1)[0];
    assert_eq!(rec["ended"], "ping_timeout", "{rec}");
    drop(ws);
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: std::path::PathBuf) -> SmallDisk {
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", text(&out.stderr));
        SmallDisk(path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_recordings_disk_refuses_required_sessions_and_others_go_on_unrecorded() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: mounting a small disk needs root (CI runs as root)");
        return;
    }
    let sshd = Sshd::start();
    let (addr, pin) = (sshd.address(), sshd.host_key());
    let gw = Gateway::builder()
        .toml("[recording]\ndir = \"{dir}/small\"\nrequired = true")
        .target_with("vm1", &addr, "ssh", &sshd.target_keys(&pin))
        .password(PASSWORD)
        .user("alice", &["vm1"], "")
        .start();
    // 1 MiB of disk: below the 64 MiB a recording needs to start.
    let _disk = SmallDisk::mount(gw.dir.path().join("small"));
    let headers = alice_headers(&gw, PASSWORD).await;
    let mut ws = terminal(&gw, "/v1/ssh/vm1", &headers).await;
    let msg = ws.recv_json(15 * SEC).await.expect("an error message");
    assert_eq!(msg["type"], "error", "{msg}");
    assert!(
        msg["message"].as_str().unwrap().contains("recording is unavailable"),
        "{msg}"
    );
    assert_eq!(ws.recv_close(10 * SEC).await.0, Some(1013));
    let rec = &gw.session_records(1)[0];
    assert_eq!(rec["ended"], "recording_unavailable", "{rec}");
    // The balancer hears of it: this node cannot take the sessions its policy requires.
    let (status, body) = gw.admin_request("GET", "/readyz", None, "");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("recordings are required"), "{body}");
    assert!(rec["detail"].as_str().unwrap().contains("MiB needed"), "{rec}");
    assert_eq!(sshd.accepted(0), 0, "the refused session never reached the target");

    // Not required: the session goes on, unrecorded, and is counted.
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(gw.config_path(), config.replace("required = true", "required = false")).unwrap();
    gw.signal(process::Signal::HUP);
    assert!(wait_until(10 * SEC, || gw.log().contains("configuration reloaded")));
    assert_eq!(gw.admin_request("GET", "/readyz", None, "").0, 200);
    let mut ws = terminal(&gw, "/v1/ssh/vm1", &headers).await;
    run(&mut ws, "echo UNRECORDED-$((6*7))\n", "UNRECORDED-42").await;
    ws.send_binary(b"exit\n").await;
    ws.recv_json(15 * SEC).await;
    let rec = &gw.session_records(2)[1];
    assert_eq!(rec["ended"], "exit_status", "{rec}");
    assert!(rec.get("recording").is_none(), "{rec}");
    let (_, metrics) = gw.admin_request("GET", "/metrics", Some(&gw.admin_token("root")), "");
    assert!(
        metrics.contains("portcullis_sessions_unrecorded_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn recordings_past_their_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir(&recordings).unwrap();
    let three_days_ago = std::time::SystemTime::now() - 3 * 86_400 * SEC;
    let make = |name: &str, modified: std::time::SystemTime| {
        let path = recordings.join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_modified(modified).unwrap();
        path
    };
    let old = make("old.cast", three_days_ago);
    let new = make("new.cast", std::time::SystemTime::now());
    let other = make("notes.txt", three_days_ago);
    let gw = Gateway::builder()
        .toml(&format!(
            "[recording]\ndir = \"{}\"\nretention = \"1day\"",
            recordings.display()
        ))
        .start();
    // Swept at start, then hourly.
    assert!(wait_until(10 * SEC, || !old.exists()), "{}", gw.log());
    assert!(new.exists() && other.exists(), "only recordings past the retention go");
    let (_, metrics) = gw.admin_request("GET", "/metrics", Some(&gw.admin_token("root")), "");
    assert!(metrics.contains("portcullis_recordings_expired_total 1\n"), "{metrics}");
}

/// The next control message of `type_` (terminal output and other messages skipped).
async fn control_of(ws: &mut WsClient, type_: &str) -> serde_json::Value {
    loop {
        match ws.recv(15 * SEC).await {
            Some(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == type_ {
                    return v;
                }
            }
            Some(_) => {}
            None => panic!("no {type_} message"),
        }
    }
}

/// The gateway enforces file transfer itself, whatever the page does: not on a target whose
/// policy says no, not over `max_file_size`, not more bytes than announced (the partial file is
/// removed); each refusal audited.
#[tokio::test]
async fn file_transfer_policy_is_enforced_by_the_gateway() {
    let sshd = Sshd::start();
    let (addr, pin) = (sshd.address(), sshd.host_key());
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::builder()
        .target_with(
            "vm1",
            &addr,
            "ssh",
            &format!("{}\nfile_transfer = true", sshd.target_keys(&pin)),
        )
        .target_with("vm2", &addr, "ssh", &sshd.target_keys(&pin))
        .password(PASSWORD)
        .user("alice", &["vm1", "vm2"], "")
        .toml("[web]\nmax_file_size = 4096")
        .start();
    let headers = alice_headers(&gw, PASSWORD).await;
    let mut vm2 = terminal(&gw, "/v1/ssh/vm2", &headers).await;
    let ready = control_of(&mut vm2, "ready").await;
    assert!(ready.get("file_transfer").is_none(), "{ready}");
    vm2.send_text(r#"{"type":"download","path":"/etc/hostname"}"#).await;
    let refused = control_of(&mut vm2, "fileerror").await;
    assert!(
        refused["message"].as_str().unwrap().contains("not allowed"),
        "{refused}"
    );

    let mut vm1 = terminal(&gw, "/v1/ssh/vm1", &headers).await;
    let ready = control_of(&mut vm1, "ready").await;
    assert_eq!(
        (ready["file_transfer"].as_bool(), ready["max_file_size"].as_u64()),
        (Some(true), Some(4096))
    );
    vm1.send_text(r#"{"type":"upload","path":"x","size":5000}"#).await;
    let refused = control_of(&mut vm1, "fileerror").await;
    assert!(
        refused["message"].as_str().unwrap().contains("over the limit"),
        "{refused}"
    );
    // Announced 4 bytes, sends 8: cut off, and nothing stays on the server.
    let path = dir.path().join("liar.bin");
    vm1.send_text(&format!(r#"{{"type":"upload","path":"{}","size":4}}"#, path.display()))
        .await;
    vm1.send_text(r#"{"type":"chunk","data":"QUFBQUJCQkI="}"#).await;
    let refused = control_of(&mut vm1, "fileerror").await;
    assert!(refused["message"].as_str().unwrap().contains("more bytes"), "{refused}");
    assert!(
        eventually(5 * SEC, || async { !path.exists() }).await,
        "the partial upload stayed on the server"
    );
    // A download over the limit.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; 5000]).unwrap();
    vm1.send_text(&format!(r#"{{"type":"download","path":"{}"}}"#, big.display()))
        .await;
    let refused = control_of(&mut vm1, "fileerror").await;
    assert!(
        refused["message"].as_str().unwrap().contains("over the limit"),
        "{refused}"
    );
    let files = gw.records_where(4, |l| l["event"] == "file");
    assert!(files.iter().all(|f| f["outcome"] != "ok"), "{files:?}");
    assert_eq!(
        files.iter().filter(|f| f["outcome"] == "refused").count(),
        3,
        "{files:?}"
    );
}

/// A shared link's guest terminal ends when the link does (`token_expired`), even with
/// `end_at_token_expiry` off; a revoked link's guest cannot start another.
#[tokio::test]
async fn a_link_guests_terminal_ends_with_the_link() {
    let sshd = Sshd::start();
    let (addr, pin) = (sshd.address(), sshd.host_key());
    let gw = Gateway::builder()
        .target_with("vm1", &addr, "ssh", &sshd.target_keys(&pin))
        .password(PASSWORD)
        .user("alice", &["vm1"], "")
        .toml("[admin]\nlisten = \"127.0.0.1:0\"\nusers = [\"alice\"]")
        .start();
    let admin = alice_headers(&gw, PASSWORD).await;
    let cookie = [("Cookie", admin[0].1.as_str())];
    // Long enough to open the terminal on a loaded machine, short enough to wait for.
    let body = r#"{"target":"vm1","ttl_seconds":5,"once":false}"#;
    let (status, _, made) = https(&gw, "POST", "/api/admin/links", &cookie, body).await;
    assert_eq!(status, 201, "{made}");
    let link = serde_json::from_str::<serde_json::Value>(&made).unwrap()["url"]
        .as_str()
        .unwrap()
        .split("#/link/")
        .nth(1)
        .unwrap()
        .to_owned();
    let body = serde_json::json!({ "link": link }).to_string();
    let (status, head, _) = https(&gw, "POST", "/api/link", &[], &body).await;
    assert_eq!(status, 200);
    let guest = portcullis_testkit::session_cookie(&head).unwrap();
    let headers = [("Cookie", guest), ("Origin", gw.origin())];
    let mut ws = terminal(&gw, "/v1/ssh/vm1", &headers).await;
    run(&mut ws, "echo LINK-$((2*3))\n", "LINK-6").await;
    // Nothing more sent: the link's end closes it (well before the idle timeout).
    let (code, reason) = ws.recv_close(15 * SEC).await;
    assert_eq!((code, reason.as_str()), (Some(1008), "token_expired"));
    let rec = gw.sessions_of("vm1", 1);
    assert_eq!(rec[0]["ended"], "token_expired", "{}", rec[0]);
    assert!(rec[0]["user"].as_str().unwrap().starts_with("link:"));
}
