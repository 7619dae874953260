//! Identity (issue #15): the gateway signs short-lived tokens for users who logged in with
//! `portcullis login` (a device login approved in the web app by headless Chromium), so that
//! plain `ssh` reaches a real sshd through `portcullis ssh-config`'s ProxyCommand with no token on
//! any command line; logout revokes the login. Keys named by `kid` rotate: a rotated-out key's
//! tokens and unknown key ids are refused.

use portcullis_testkit::browser::{artifacts, run_script};
use portcullis_testkit::gateway::gateway_bin;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::sshd::Sshd;
use portcullis_testkit::{Gateway, WsClient};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "identity test password";
const SEC: Duration = Duration::from_secs(1);

fn portcullis(home: &Path) -> Command {
    let mut cmd = Command::new(gateway_bin());
    cmd.env("XDG_CONFIG_HOME", home).env_remove("PORTCULLIS_TOKEN");
    cmd
}

/// Every process's command line, for a check that no token is in any.
fn command_lines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .collect()
}

fn audit(gw: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(gw.config_path().with_file_name("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_login_reaches_ssh_with_no_token_on_any_command_line() {
    let sshd = Sshd::start();
    let gw = Gateway::builder()
        .password(PASSWORD)
        .auth("token_private_key = \"token.key\"\nissued_token_ttl = \"2m\"\n")
        .target_with("vm1", sshd.address(), "ssh", &sshd.target_keys(&sshd.host_key()))
        .target("other", "127.0.0.1:9", "tcp")
        .user("alice", &["vm1"], "require_mfa = true")
        .start();
    let home = tempfile::tempdir().unwrap();
    let url = gw.origin();

    // `portcullis login`: prints the link and the code, then waits for the approval.
    let mut login = portcullis(home.path())
        .args(["login", &url, "--insecure", "--no-browser"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(login.stderr.take().unwrap()).lines();
    let mut shown = String::new();
    while !shown.contains("the code") {
        shown.push_str(&lines.next().expect("login's instructions").unwrap());
        shown.push('\n');
    }
    let uri = shown
        .split_whitespace()
        .find(|w| w.starts_with("https://"))
        .unwrap()
        .to_owned();
    let code = uri.rsplit_once("code=").unwrap().1.to_owned();
    assert!(uri.starts_with(&format!("{url}/device?code=")), "{shown}");

    // Before approval the CLI's poll is pending, and an unknown device code is too (it learns
    // nothing either way); a made-up user code is unknown to the approval API.
    let config = json!({
        "url": url, "uri": uri, "code": code, "user": "alice", "password": PASSWORD,
        "artifacts": artifacts("device_login"),
    });
    let browser = tokio::task::spawn_blocking(move || {
        run_script("device.mjs", config, Duration::from_secs(90), |s| {
            panic!("unexpected step {s}")
        })
    });
    browser.await.unwrap().assert_ok();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = login.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < 20 * SEC, "login did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(status.success(), "{shown}{}", rest.join("\n"));
    assert!(rest.join("\n").contains("Logged in as alice"), "{rest:?}");
    let logins = home.path().join("portcullis/logins.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&logins).unwrap().permissions().mode() & 0o777, 0o600);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&logins).unwrap()).unwrap();
    let credential = stored.as_object().unwrap().values().next().unwrap()["credential"]
        .as_str()
        .unwrap()
        .to_owned();

    // `ssh-config`, then plain ssh with it: no token anywhere on a command line meanwhile.
    let block = portcullis(home.path())
        .args(["ssh-config", &url, "--insecure"])
        .output()
        .unwrap();
    let block = String::from_utf8(block.stdout).unwrap();
    assert!(block.contains("Host vm1\n"), "{block}");
    assert!(!block.contains("other"), "TCP targets are not SSH hosts: {block}");
    assert!(!block.contains("eyJ"), "{block}");
    let cfg = home.path().join("ssh_config");
    std::fs::write(&cfg, &block).unwrap();
    let mut opts = sshd.client_opts();
    opts[1] = cfg.display().to_string();
    let session = Command::new("ssh")
        .env("XDG_CONFIG_HOME", home.path())
        .args(&opts)
        .arg(format!("{}@vm1", sshd.user))
        .arg("sleep 2; echo through-the-gateway")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_until(10 * SEC, || command_lines()
            .iter()
            .any(|c| c.contains(" connect ") && c.contains("--target vm1"))),
        "the ProxyCommand did not start"
    );
    let lines_now = command_lines();
    for line in &lines_now {
        assert!(!line.contains("eyJ"), "a token on a command line: {line}");
        assert!(!line.contains(&credential), "the credential on a command line: {line}");
    }
    let out = session.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("through-the-gateway"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The credential opens nothing itself; it fetches tokens only for the user's own targets.
    assert_eq!(WsClient::refused_tunnel(&gw, "vm1", &credential).await, 403);
    let fetch = |target: &str, bearer: &str| {
        let (url, target, bearer) = (url.clone(), target.to_owned(), bearer.to_owned());
        async move { post_json(&url, "/v1/token", Some(&bearer), json!({ "target": target })).await }
    };
    assert_eq!(fetch("other", &credential).await.0, 403);
    let (status, answer) = fetch("vm1", &credential).await;
    assert_eq!(status, 200, "{answer}");
    // An access token is not a credential.
    assert_eq!(fetch("vm1", answer["token"].as_str().unwrap()).await.0, 401);
    assert_eq!(
        post_json(&url, "/v1/device/token", None, json!({ "device_code": "made-up" })).await,
        (400, json!({ "error": "authorization_pending" }))
    );

    // A tunnel opened with a token the login fetched is live while the user logs out.
    let access = answer["token"].as_str().unwrap().to_owned();
    let mut live = WsClient::open(&gw, "vm1", &access).await;
    // Logout revokes the credential: ssh no longer gets through.
    let out = portcullis(home.path())
        .args(["logout", &url, "--insecure"])
        .output()
        .unwrap();
    // ... and the tokens it fetched: the live tunnel ends, the token opens nothing more.
    assert_eq!(live.recv_close(10 * SEC).await.0, Some(1008));
    assert_eq!(WsClient::refused_tunnel(&gw, "vm1", &access).await, 403);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fetch("vm1", &credential).await.0, 403);
    let out = Command::new("ssh")
        .env("XDG_CONFIG_HOME", home.path())
        .args(&opts)
        .arg(format!("{}@vm1", sshd.user))
        .arg("true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not logged in"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Audited: the request, the approval, the credential, each token, the logout.
    let actions: Vec<String> = audit(&gw)
        .iter()
        .filter(|r| r["event"] == "identity")
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "device_requested",
        "device_approved",
        "login_issued",
        "token_issued",
        "login_revoked",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} not in {actions:?}");
    }
    let issued = audit(&gw).into_iter().find(|r| r["action"] == "token_issued").unwrap();
    assert_eq!(
        (
            issued["user"].as_str(),
            issued["target"].as_str(),
            issued["ttl_s"].as_u64()
        ),
        (Some("alice"), Some("vm1"), Some(120))
    );
}

/// A JSON POST (or GET without a body) to the gateway's API, over TLS: (status, JSON body).
async fn post_json(origin: &str, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let url = portcullis::cli::client::GatewayUrl::parse(origin).unwrap();
    let tls = portcullis::tls::client_config(portcullis::tls::ServerTrust::Insecure).unwrap();
    portcullis::cli::login::request(&url, tls, "POST", path, bearer, Some(&body))
        .await
        .unwrap()
}

/// Keys named by `kid` (`[[auth.key]]`): each verifies the tokens that name it; an unknown
/// `kid`, and a token naming none while several keys are configured, are refused; after a reload
/// that drops a key (its rotation), its tokens are refused and the other key's still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_by_kid_and_rotated_out_or_unknown_keys_are_refused() {
    use portcullis_protocols::token::{Claims, TokenIssuer};
    use portcullis_testkit::process::Signal;
    let echo = portcullis_testkit::targets::EchoTarget::start();
    let keys = tempfile::tempdir().unwrap();
    let (old_private, old_public) = portcullis_core::keys::generate().unwrap();
    let (new_private, new_public) = portcullis_core::keys::generate().unwrap();
    std::fs::write(keys.path().join("old.pub"), old_public).unwrap();
    std::fs::write(keys.path().join("new.pub"), new_public).unwrap();
    let key_block = |kid: &str| {
        format!(
            "[[auth.key]]\nkid = \"{kid}\"\npublic_key = \"{}\"\nissuer = \"control-plane\"\n",
            keys.path().join(format!("{kid}.pub")).display()
        )
    };
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .auth(&format!("{}{}", key_block("old"), key_block("new")))
        .start();
    let now = portcullis_core::keys::unix_now();
    let sign = |private: &str, kid: Option<&str>| {
        let claims = Claims {
            sub: "alice".into(),
            tgt: "echo".into(),
            exp: now + 600,
            nbf: now,
            iat: Some(now),
            jti: portcullis_core::secret::random_hex::<8>().unwrap(),
            iss: Some("control-plane".into()),
            aud: None,
            scope: None,
            once: false,
            roles: Vec::new(),
            lgn: None,
        };
        let issuer = TokenIssuer::from_private_pem(private.as_bytes()).unwrap();
        match kid {
            Some(k) => issuer.with_kid(k),
            None => issuer,
        }
        .issue(&claims)
        .unwrap()
    };
    let old = sign(&old_private, Some("old"));
    let new = sign(&new_private, Some("new"));
    for token in [&old, &new] {
        let mut ws = WsClient::open(&gw, "echo", token).await;
        ws.echoes(b"by kid").await;
    }
    assert_eq!(
        WsClient::refused_tunnel(&gw, "echo", &sign(&new_private, Some("nope"))).await,
        401
    );
    assert_eq!(
        WsClient::refused_tunnel(&gw, "echo", &sign(&new_private, None)).await,
        401
    );
    // Signed by the old key while naming the new one: the named key checks it.
    assert_eq!(
        WsClient::refused_tunnel(&gw, "echo", &sign(&old_private, Some("new"))).await,
        401
    );

    // Rotation: the old key leaves the configuration.
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).unwrap().replace(&key_block("old"), "");
    std::fs::write(&path, text).unwrap();
    gw.signal(Signal::HUP);
    assert!(
        wait_until(10 * SEC, || gw.log().contains("configuration reloaded")),
        "{}",
        gw.log()
    );
    assert_eq!(WsClient::refused_tunnel(&gw, "echo", &old).await, 401);
    let mut ws = WsClient::open(&gw, "echo", &new).await;
    ws.echoes(b"still in").await;
    let denials: Vec<Value> = audit(&gw).into_iter().filter(|r| r["event"] == "denied").collect();
    assert!(
        denials.iter().any(|r| r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("no key this gateway knows"))),
        "{denials:?}"
    );
}

/// The `mfa` answer of `POST /api/login` for alice, or her session cookie.
async fn password_step(gw: &Gateway) -> Result<String, String> {
    use portcullis_testkit::client::{https, session_cookie};
    let body = json!({ "user": "alice", "password": PASSWORD }).to_string();
    let (status, head, answer) = https(gw, "POST", "/api/login", &[], &body).await;
    assert_eq!(status, 200, "{answer}");
    let v: Value = serde_json::from_str(&answer).unwrap();
    match v["pending"].as_str() {
        Some(pending) => Ok(pending.to_owned()),
        None => Err(session_cookie(&head).expect("a session cookie")),
    }
}

async fn code_step(gw: &Gateway, pending: &str, code: &str) -> (u16, Option<String>) {
    use portcullis_testkit::client::{https, session_cookie};
    let body = json!({ "pending": pending, "code": code }).to_string();
    let (status, head, _) = https(gw, "POST", "/api/login/mfa", &[], &body).await;
    (status, session_cookie(&head))
}

/// A role requires a second factor: until alice enrols one she can open nothing; she enrols a
/// TOTP app (the secret from the enrolment API, codes computed here as an app would); then a
/// password alone no longer signs her in: a wrong code is refused and counted like a password, a
/// right one signs her in once (the same code again is refused), a recovery code works once.
/// The factor outlives a restart of the gateway (`[state] dir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_totp_factor_is_enrolled_then_asked_for_and_survives_a_restart() {
    use portcullis_core::totp;
    use portcullis_testkit::client::https;
    let echo = portcullis_testkit::targets::EchoTarget::start();
    let state = tempfile::tempdir().unwrap();
    let node = || {
        Gateway::builder()
            .password(PASSWORD)
            .target("echo", echo.addr, "tcp")
            .user("alice", &[], "roles = [\"ops\"]")
            .toml(&format!(
                "[[role]]\nname = \"ops\"\ntargets = [\"*\"]\nrequire_mfa = true\n[state]\ndir = \"{}\"\n",
                state.path().join("state").display()
            ))
            .start()
    };
    let gw = node();
    // No factor yet: signed in, but limited to enrolling one.
    let cookie = password_step(&gw).await.expect_err("no second step before enrolment");
    let headers = [("Cookie", cookie.as_str())];
    let (status, _, session) = https(&gw, "GET", "/api/session", &headers, "").await;
    assert_eq!(status, 200);
    let session: Value = serde_json::from_str(&session).unwrap();
    assert_eq!(session["targets"], json!([]), "{session}");
    assert_eq!(session["mfa"]["required"], true);
    let (status, _, _) = https(&gw, "POST", "/api/rdp/ticket", &headers, "{\"target\":\"echo\"}").await;
    assert_eq!(status, 403, "nothing opens before a factor is enrolled");

    // Enrolment: a secret, then a first code.
    let (status, _, begun) = https(&gw, "POST", "/api/mfa/totp", &headers, "{}").await;
    assert_eq!(status, 200, "{begun}");
    let begun: Value = serde_json::from_str(&begun).unwrap();
    let secret = totp::base32_decode(begun["secret"].as_str().unwrap()).unwrap();
    assert!(begun["uri"].as_str().unwrap().starts_with("otpauth://totp/"));
    assert!(begun["qr"]["size"].as_u64().unwrap() >= 21);
    let now = || portcullis_core::keys::unix_now();
    let (status, _, _) = https(&gw, "POST", "/api/mfa/totp/confirm", &headers, "{\"code\":\"000000\"}").await;
    assert_eq!(status, 401, "a wrong first code enrols nothing");
    let first = totp::code_at(&secret, now() / totp::STEP);
    let body = json!({ "code": first }).to_string();
    let (status, head, confirmed) = https(&gw, "POST", "/api/mfa/totp/confirm", &headers, &body).await;
    assert_eq!(status, 200, "{confirmed}");
    let recovery: Vec<String> = serde_json::from_str::<Value>(&confirmed).unwrap()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    let enrolled = portcullis_testkit::client::session_cookie(&head).unwrap();
    assert_ne!(enrolled, cookie, "a new session once the factor is there");
    let (_, _, session) = https(&gw, "GET", "/api/session", &[("Cookie", enrolled.as_str())], "").await;
    assert!(session.contains("\"echo\""), "{session}");

    // Killed and started again on the same state: the factor is still asked for.
    drop(gw);
    let gw = node();
    let pending = password_step(&gw).await.expect("a second step");
    assert_eq!(code_step(&gw, &pending, "123456").await.0, 401);
    // The enrolment's code was used: the same step's code is refused; the next step's works, once.
    let next_step = now() / totp::STEP + 1;
    let used = totp::code_at(&secret, now() / totp::STEP);
    let code = if used == first {
        totp::code_at(&secret, next_step)
    } else {
        used
    };
    let (status, signed) = code_step(&gw, &pending, &code).await;
    assert_eq!(status, 200);
    assert!(signed.is_some());
    let again = password_step(&gw).await.expect("a second step");
    assert_eq!(code_step(&gw, &again, &code).await.0, 401, "a code is good once");
    // A recovery code, once.
    assert_eq!(code_step(&gw, &again, &recovery[3]).await.0, 200);
    let third = password_step(&gw).await.expect("a second step");
    assert_eq!(code_step(&gw, &third, &recovery[3]).await.0, 401);
    // Five wrong codes drop the pending sign-in: even a right code no longer completes it.
    for _ in 0..5 {
        assert_eq!(code_step(&gw, &third, "999999").await.0, 401);
    }
    assert_eq!(code_step(&gw, &third, &recovery[5]).await.0, 401);
    // And they were counted like wrong passwords: the password itself is now throttled here.
    let body = json!({ "user": "alice", "password": PASSWORD }).to_string();
    assert_eq!(https(&gw, "POST", "/api/login", &[], &body).await.0, 429);
    // A lost phone: an administrator removes the factor (once; then there is none to remove).
    let root = gw.admin_token("root");
    assert_eq!(
        gw.admin_request("DELETE", "/v1/users/alice/factors", Some(&root), "").0,
        200
    );
    assert_eq!(
        gw.admin_request("DELETE", "/v1/users/alice/factors", Some(&root), "").0,
        404
    );
    let records = audit(&gw);
    let methods: Vec<&str> = records
        .iter()
        .filter(|r| r["action"] == "signed_in")
        .filter_map(|r| r["method"].as_str())
        .collect();
    assert!(
        methods.contains(&"password+totp") && methods.contains(&"password+recovery_code"),
        "{methods:?}"
    );
    assert!(records
        .iter()
        .any(|r| r["action"] == "sign_in_failed" && r["reason"] == "wrong code"));
}

/// `portcullis rdp`: a local tunnel on a free port and the local client started at it (here a
/// stand-in client: bash sending bytes to the echo target through the tunnel); the command ends
/// with the client.
#[test]
fn portcullis_rdp_starts_the_client_on_a_local_tunnel_and_ends_with_it() {
    let echo = portcullis_testkit::targets::EchoTarget::start();
    let gw = Gateway::builder().target("desk1", echo.addr, "tcp").start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("desk1.token");
    std::fs::write(&token_file, gw.token("alice", "desk1")).unwrap();
    let client = dir.path().join("client.sh");
    let out = dir.path().join("echoed");
    std::fs::write(
        &client,
        format!(
            "exec 3<>/dev/tcp/${{1%:*}}/${{1##*:}}\nprintf 'rdp-bytes' >&3\nhead -c 9 <&3 > {}\n",
            out.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let status = Command::new(gateway_bin())
        .args(["rdp", &gw.url(), "--insecure", "--target", "desk1", "--token-file"])
        .arg(&token_file)
        .args(["--client", &format!("bash {} {{addr}}", client.display())])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(started.elapsed() < 30 * SEC);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "rdp-bytes");
}
