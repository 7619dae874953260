//! Single sign-on (issue #15): a real OpenID provider (`oidc-provider` from npm, over HTTPS on
//! loopback with a certificate from a CA the gateway is told to trust), headless Chromium
//! signing in through its login page; group-mapped roles; a replayed callback; a user with no
//! role; the provider stopped (a clear page, and a local administrator still signs in). The ID
//! token validator's refusals (audience, issuer, nonce, expiry, signature, algorithm confusion)
//! are unit tests of `portcullis_core::oidc` with a test key set: a certified provider never
//! sends a bad token.

use portcullis_testkit::browser::{artifacts, run_script};
use portcullis_testkit::gateway::repo_root;
use portcullis_testkit::process::ChildGuard;
use portcullis_testkit::Gateway;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PASSWORD: &str = "break glass password";

/// A CA and a certificate it signed for 127.0.0.1, in `dir` (ca.pem, leaf.pem, leaf.key).
fn provider_certificate(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=portcullis test IdP CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ][..],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec[..],
        &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"][..],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

/// Enrols a TOTP app for `user` through the API (as the Security page would); returns its secret
/// (base32).
fn enrol_totp(gw: &Gateway, user: &str) -> String {
    use portcullis_testkit::client::{https, session_cookie};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let body = json!({ "user": user, "password": PASSWORD }).to_string();
        let (status, head, _) = https(gw, "POST", "/api/login", &[], &body).await;
        assert_eq!(status, 200);
        let cookie = session_cookie(&head).unwrap();
        let headers = [("Cookie", cookie.as_str())];
        let (_, _, begun) = https(gw, "POST", "/api/mfa/totp", &headers, "{}").await;
        let secret = serde_json::from_str::<serde_json::Value>(&begun).unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        let raw = portcullis_core::totp::base32_decode(&secret).unwrap();
        let step = portcullis_core::keys::unix_now() / portcullis_core::totp::STEP;
        let code = json!({ "code": portcullis_core::totp::code_at(&raw, step) }).to_string();
        let (status, _, _) = https(gw, "POST", "/api/mfa/totp/confirm", &headers, &code).await;
        assert_eq!(status, 200);
        secret
    })
}

#[test]
fn single_sign_on_through_a_real_openid_provider() {
    portcullis_testkit::browser::check_prerequisites(&[]);
    let dir = tempfile::tempdir().unwrap();
    provider_certificate(dir.path());
    let secret = portcullis_core::secret::random_hex::<16>().unwrap();
    let secret_file = dir.path().join("client.secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let provider_port = portcullis_testkit::free_port();
    let provider_url = format!("https://127.0.0.1:{provider_port}");
    let gw = Gateway::builder()
        .password(PASSWORD)
        .target("vm1", "127.0.0.1:9", "tcp")
        .target("db1", "127.0.0.1:9", "tcp")
        .user("root", &["vm1", "db1"], "require_mfa = true")
        .toml(&format!(
            "[[role]]\nname = \"ops\"\ntargets = [\"vm*\"]\ngroups = [\"corp:ops\"]\n\
             [[oidc]]\nid = \"corp\"\nname = \"Corp SSO\"\nissuer = \"{provider_url}\"\nclient_id = \"portcullis\"\n\
             client_secret_file = \"{}\"\nredirect_uri = \"https://127.0.0.1:{{port}}/api/oidc/callback\"\n\
             scopes = [\"openid\", \"profile\", \"groups\"]\nca = \"{}\"\n",
            secret_file.display(),
            dir.path().join("ca.pem").display()
        ))
        .start();
    let config = json!({
        "port": provider_port,
        "cert": dir.path().join("leaf.pem"), "key": dir.path().join("leaf.key"),
        "client_id": "portcullis", "client_secret": secret,
        "redirect_uri": format!("{}/api/oidc/callback", gw.origin()),
        "groups": { "alice": ["ops", "unmapped"], "eve": ["interns"] },
    });
    let mut child = Command::new("node")
        .arg("oidc-provider.mjs")
        .current_dir(repo_root().join("web/e2e"))
        .env("OIDC_CONFIG", config.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let stdout = child.stdout.take().unwrap();
    let mut provider = Some(ChildGuard::new(child, Duration::from_secs(5)));
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().expect("the provider's first line").unwrap();
    assert!(line.contains("listening"), "the provider did not start: {line}");
    // What it says later (warnings) is drained, so that it never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(|l| eprintln!("[oidc-provider] {}", l.unwrap_or_default())));

    let admin_totp_secret = enrol_totp(&gw, "root");
    let settings = json!({
        "url": gw.origin(), "provider": provider_url, "admin": "root", "admin_password": PASSWORD,
        "admin_totp_secret": admin_totp_secret,
        "artifacts": artifacts("sso"),
    });
    let run = run_script("sso.mjs", settings, Duration::from_secs(90), |step| match step {
        "stop-provider" => {
            if let Some(mut p) = provider.take() {
                p.stop();
            }
            "stopped".into()
        }
        other => panic!("unexpected step {other}"),
    });
    if !run.ok() {
        eprintln!("gateway log:\n{}", gw.log());
    }
    run.assert_ok();
    let audit = std::fs::read_to_string(gw.config_path().with_file_name("audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"action\":\"signed_in\"") && audit.contains("\"user\":\"corp:alice\""),
        "{audit}"
    );
    assert!(audit.contains("corp: corp:eve holds no role"), "{audit}");
}
