//! Native RDP through the RD Gateway with real clients and servers: FreeRDP 2.11 (`xfreerdp /g:`,
//! the gateway access token as `/gat:`) over both transports (`/gt:http`: WebSocket;
//! `/gt:http,no-websockets`: the RDG_OUT_DATA / RDG_IN_DATA pair), to xrdp (TLS security,
//! password checked by sesman) and to freerdp-shadow-cli (NLA, right and wrong password).
//! Refusals a user meets (no token, a token for another target) end the client with the
//! gateway's error and never reach the server. Protocol-level cases are in `rd_gateway.rs`.

use portcullis_testkit::process::{random_string, wait_until};
use portcullis_testkit::rdp::{FreeRdp, GatewayTransport, ShadowServer, Xrdp, Xvfb, CLIENT_ACTIVE};
use portcullis_testkit::{text, Gateway};
use std::time::Duration;

const TARGET: &str = "desk1";
const SHADOW_USER: &str = "rdpuser";
const AUTH_ONLY_LIMIT: Duration = Duration::from_secs(60);

fn gateway_to(address: String) -> Gateway {
    Gateway::builder()
        .target(TARGET, address, "rdp")
        .target("desk2", "127.0.0.1:9", "rdp")
        .user("alice", &[TARGET, "desk2"], "")
        .start()
}

/// The one `rd_gateway` session record: alice to desk1, bytes both ways, the RDP user from the
/// client's X.224 cookie.
fn assert_one_session(gw: &Gateway, rdp_user: &str) -> serde_json::Value {
    let records = gw.records_where(1, |l| l["event"] == "session");
    assert_eq!(records.len(), 1, "{records:?}");
    let s = records[0].clone();
    assert_eq!(s["via"], "rd_gateway", "{s}");
    assert_eq!(
        (s["user"].as_str(), s["target"].as_str()),
        (Some("alice"), Some(TARGET)),
        "{s}"
    );
    assert!(s["bytes_client_to_target"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["bytes_target_to_client"].as_u64().unwrap_or(0) > 0, "{s}");
    // FreeRDP sends `DOMAIN\\user` through a gateway (an empty domain here).
    assert_eq!(
        s["rdp_cookie"].as_str().map(|c| c.trim_start_matches('\\')),
        Some(rdp_user),
        "{s}"
    );
    s
}

fn shadow() -> ShadowServer {
    ShadowServer::start(SHADOW_USER, &format!("Sh-{}", random_string(16)))
}

/// `xfreerdp +auth-only` to the shadow server through the gateway; (exit ok, client log).
fn shadow_auth_only(
    gw: &Gateway,
    server: &ShadowServer,
    token: Option<&str>,
    transport: GatewayTransport,
    password: &str,
) -> (bool, String) {
    let client = FreeRdp::new(&server.xvfb).via_gateway(gw.port, token, transport, TARGET);
    let out = client.auth_only(0, &server.user, password, AUTH_ONLY_LIMIT);
    let log = text(&out.stdout) + &text(&out.stderr);
    eprintln!(
        "xfreerdp +auth-only through the RD Gateway ({transport:?}): {}",
        out.status
    );
    (out.status.success(), log)
}

fn nla_through_gateway(transport: GatewayTransport) {
    let server = shadow();
    let gw = gateway_to(server.address());
    let token = gw.token("alice", TARGET);
    let (ok, log) = shadow_auth_only(&gw, &server, Some(&token), transport, &server.password);
    assert!(
        ok,
        "xfreerdp +auth-only failed:\n{log}\n--- shadow\n{}\n--- gateway\n{}",
        server.log_text(),
        gw.log()
    );
    assert!(log.contains("Negotiated NLA security"), "xfreerdp:\n{log}");
    assert!(log.contains("Authentication only, exit status 0"), "xfreerdp:\n{log}");
    assert_one_session(&gw, SHADOW_USER);
    // A wrong password: the server refuses it, through the same gateway.
    let wrong = format!("{}-wrong", server.password);
    let (ok, log) = shadow_auth_only(&gw, &server, Some(&token), transport, &wrong);
    assert!(!ok, "xfreerdp accepted a wrong password:\n{log}");
    assert!(log.contains("Authentication only, exit status 1"), "xfreerdp:\n{log}");
    let refused = wait_until(Duration::from_secs(10), || {
        server.log_text().contains("client authentication failure")
    });
    assert!(refused, "shadow server log:\n{}", server.log_text());
}

#[test]
fn shadow_nla_through_the_rd_gateway_websocket() {
    nla_through_gateway(GatewayTransport::WebSocket);
}

#[test]
fn shadow_nla_through_the_rd_gateway_http_pair() {
    nla_through_gateway(GatewayTransport::HttpPair);
}

/// A user without a token, or with a token for another target: FreeRDP ends with the gateway's
/// refusal and the server never sees a connection.
#[test]
fn freerdp_refused_by_the_rd_gateway_never_reaches_the_server() {
    let server = shadow();
    let gw = gateway_to(server.address());
    let other = gw.token("alice", "desk2");
    for (token, transport) in [
        (None, GatewayTransport::WebSocket),
        (Some(other.as_str()), GatewayTransport::WebSocket),
        (Some(other.as_str()), GatewayTransport::HttpPair),
    ] {
        let (ok, log) = shadow_auth_only(&gw, &server, token, transport, &server.password);
        assert!(!ok, "xfreerdp got through without a valid token:\n{log}");
    }
    let denied = gw.records_where(3, |l| l["event"] == "denied");
    eprintln!("denials: {denied:?}");
    assert!(
        denied.iter().all(|d| d["path"] == "/remoteDesktopGateway/"),
        "{denied:?}"
    );
    assert!(
        denied.iter().any(|d| d["reason"].as_str().unwrap().contains("PAA")
            || d["reason"].as_str().unwrap().contains("missing token")),
        "{denied:?}"
    );
    assert_eq!(
        denied
            .iter()
            .filter(|d| d["reason"].as_str().unwrap().contains("another target"))
            .count(),
        2,
        "{denied:?}"
    );
    assert!(gw.records_where(0, |l| l["event"] == "session").is_empty());
    assert!(!server.log_text().contains("Negotiated NLA"), "{}", server.log_text());
}

/// The web app's `.rdp` file: `xfreerdp FILE` reaches the target through the RD Gateway with the
/// token inside; the same file a second time is refused (its token is single use).
#[test]
fn the_web_apps_rdp_file_reaches_its_target_once() {
    use portcullis_testkit::client::{https, sign_in};
    let server = shadow();
    let gw = Gateway::builder()
        .target(TARGET, server.address(), "rdp")
        .user("alice", &[TARGET], "")
        .password("correct horse battery")
        .auth("token_private_key = \"token.key\"\n")
        .start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (head, file) = rt.block_on(async {
        let (status, cookie) = sign_in(&gw, "alice", "correct horse battery").await;
        assert_eq!(status, 200);
        let cookie = cookie.expect("a session cookie");
        let body = serde_json::json!({ "target": TARGET }).to_string();
        let (status, head, file) = https(&gw, "POST", "/api/rdp/file", &[("Cookie", &cookie)], &body).await;
        assert_eq!(status, 200, "{head}\n{file}");
        // Without a session, no file.
        let (status, _, _) = https(&gw, "POST", "/api/rdp/file", &[], &body).await;
        assert_eq!(status, 401);
        (head, file)
    });
    assert!(head.contains("Content-Type: application/x-rdp"), "{head}");
    assert!(
        head.contains(&format!("attachment; filename=\"{TARGET}.rdp\"")),
        "{head}"
    );
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    assert!(file.contains(&format!("gatewayhostname:s:{}", gw.addr())), "{file}");
    let issued = gw.records_where(1, |l| l["event"] == "identity" && l["method"] == "rdp_file");
    assert!(issued[0]["ttl_s"].as_u64().unwrap() <= 300, "{issued:?}");
    let path = gw.dir.path().join("desk1.rdp");
    std::fs::write(&path, &file).unwrap();
    let run = || {
        let out =
            FreeRdp::new(&server.xvfb)
                .with_file(&path)
                .auth_only(0, &server.user, &server.password, AUTH_ONLY_LIMIT);
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    let (ok, log) = run();
    assert!(
        ok,
        "xfreerdp with the .rdp file failed:\n{log}\n--- gateway\n{}",
        gw.log()
    );
    assert!(log.contains("Negotiated NLA security"), "xfreerdp:\n{log}");
    assert_one_session(&gw, SHADOW_USER);
    let (ok, log) = run();
    assert!(!ok, "the .rdp file worked twice:\n{log}");
    let denied = gw.records_where(1, |l| l["event"] == "denied");
    assert!(
        denied[0]["reason"].as_str().unwrap().contains("single-use"),
        "{denied:?}"
    );
}

fn xrdp_through_gateway(transport: GatewayTransport) {
    let server = Xrdp::start();
    let display = Xvfb::start();
    let gw = gateway_to(server.address());
    let token = gw.token("alice", TARGET);
    let client = FreeRdp::new(&display).via_gateway(gw.port, Some(&token), transport, TARGET);
    let mut session = client.session(0, &server.user, &server.password);
    let user = server.user.clone();
    let up = wait_until(Duration::from_secs(90), || {
        session.exited().is_some()
            || (server
                .sesman_log()
                .contains(&format!("Session started successfully for user {user}"))
                && server.xrdp_log().contains("connected ok")
                && session.log_text().contains(CLIENT_ACTIVE))
    });
    assert!(
        up && session.exited().is_none(),
        "no session through the RD Gateway ({transport:?}):\n--- xfreerdp\n{}\n{}\n--- gateway\n{}",
        session.log_text(),
        server.diagnostics(),
        gw.log()
    );
    assert!(
        session.stays_up(Duration::from_secs(2)),
        "xfreerdp ended:\n{}",
        session.log_text()
    );
    session.stop();
    let log = session.log_text();
    assert!(log.contains("Negotiated TLS security"), "xfreerdp:\n{log}");
    let xlog = server.xrdp_log();
    assert_eq!(xlog.matches("connection received from").count(), 1, "xrdp log:\n{xlog}");
    let s = assert_one_session(&gw, &server.user);
    assert!(
        s["ended"] == "client_disconnected" || s["ended"] == "client_closed",
        "{s}"
    );
}

#[test]
fn xrdp_session_through_the_rd_gateway_websocket() {
    xrdp_through_gateway(GatewayTransport::WebSocket);
}

#[test]
fn xrdp_session_through_the_rd_gateway_http_pair() {
    xrdp_through_gateway(GatewayTransport::HttpPair);
}
