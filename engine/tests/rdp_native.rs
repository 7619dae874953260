//! End-to-end RDP through `portcullis tunnel`: a real FreeRDP client (xfreerdp, FreeRDP 2) on a
//! local port, the gateway, and a real RDP server behind it:
//! - xrdp + xorgxrdp with TLS security: the password is checked by xrdp-sesman (PAM) after the
//!   TLS session is up, so the outcome shows in sesman's and xrdp's logs, and a good password
//!   ends in a real Xorg session that xrdp connects to.
//! - freerdp-shadow-cli with NLA (CredSSP/NTLM against a SAM file): the password is checked
//!   before the session, so `xfreerdp +auth-only` exits 0 or non-zero.
//!
//! Every test starts its own servers, displays, gateway and tunnel on fresh loopback ports; xrdp
//! tests run one at a time (see `rdp_peers::Xrdp`). Needs the Debian packages listed in
//! `rdp_peers`, and root for xrdp.

mod common;
mod rdp_peers;

use common::{session_records, Gateway, TargetDef, Tunnel};
use rdp_peers::{text, wait_until, FreeRdp, ShadowServer, Xrdp, Xvfb, CLIENT_ACTIVE};
use std::time::Duration;

/// The gateway's name for the RDP server.
const TARGET: &str = "desk1";

const AUTH_ONLY_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Gateway and tunnel
// ---------------------------------------------------------------------------------------------

fn gateway_for(address: String) -> Gateway {
    Gateway::start(
        &[TargetDef {
            name: TARGET,
            address,
            protocol: "rdp",
        }],
        "",
    )
}

/// The one session record of this test: user alice, target desk1, protocol rdp, bytes both ways,
/// the RDP user name from the client's X.224 cookie, and who ended it.
/// `ended` lists the acceptable endings: when both peers hang up at once either may be first.
fn assert_one_rdp_session(gw: &Gateway, rdp_user: &str, ended: &[&str]) -> serde_json::Value {
    let sessions = session_records(gw, 1);
    assert_eq!(
        sessions.len(),
        1,
        "expected one session record, audit: {:?}",
        gw.audit_lines(0)
    );
    let s = sessions[0].clone();
    eprintln!("audit session record: {s}");
    assert_eq!(s["user"], "alice", "{s}");
    assert_eq!(s["target"], TARGET, "{s}");
    assert_eq!(s["protocol"], "rdp", "{s}");
    assert!(s["bytes_client_to_target"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["bytes_target_to_client"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(!s["end"].as_str().unwrap_or("").is_empty(), "{s}");
    // xfreerdp sends "Cookie: mstshash=USER" in its X.224 Connection Request.
    assert_eq!(s["rdp_cookie"], rdp_user, "{s}");
    assert!(ended.iter().any(|e| s["ended"] == *e), "ended not in {ended:?}: {s}");
    s
}

/// Log lines worth seeing in CI output.
fn show(what: &str, log: &str, needles: &[&str]) {
    for line in log.lines().filter(|l| needles.iter().any(|n| l.contains(n))) {
        eprintln!("[{what}] {line}");
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

// ---------------------------------------------------------------------------------------------
// xrdp: TLS security, password checked by sesman (PAM)
// ---------------------------------------------------------------------------------------------

#[test]
fn xrdp_tls_right_password_opens_a_session_through_tunnel() {
    let xrdp = Xrdp::start();
    let display = Xvfb::start();
    let client = FreeRdp::new(&display);
    let gw = gateway_for(xrdp.address());
    let tunnel = Tunnel::start(&gw, TARGET, &gw.token("alice", TARGET));

    let mut session = client.session(tunnel.port, &xrdp.user, &xrdp.password);
    let user = &xrdp.user;
    // sesman: PAM accepted the password and the Xorg session started; xrdp: connected to it;
    // xfreerdp: its connection sequence is complete.
    let granted = format!("++ created session (access granted): username {user}");
    let started = format!("Session started successfully for user {user}");
    let login_ok = format!("login successful for user {user}");
    let up = wait_until(Duration::from_secs(90), || {
        let (s, x) = (xrdp.sesman_log(), xrdp.xrdp_log());
        let done = s.contains(&started) && x.contains(&login_ok) && x.contains("connected ok");
        (done && session.log_text().contains(CLIENT_ACTIVE)) || session.exited().is_some()
    });
    let status = session.exited();
    assert!(
        up && status.is_none(),
        "no xrdp session within 90 s (client exit: {status:?})\n--- xfreerdp\n{}\n{}",
        session.log_text(),
        xrdp.diagnostics()
    );
    // The session stays up: the tunnel keeps carrying it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        session.exited().is_none(),
        "xfreerdp ended during the session: {:?}\n{}",
        session.exited(),
        session.log_text()
    );
    let client_log = session.log_text();
    session.stop();

    let (sesman, xlog) = (xrdp.sesman_log(), xrdp.xrdp_log());
    assert!(sesman.contains(&granted), "sesman log:\n{sesman}");
    assert!(!sesman.contains("pam_authenticate failed"), "sesman log:\n{sesman}");
    assert!(
        client_log.contains("Negotiated TLS security"),
        "xfreerdp:\n{client_log}"
    );
    assert!(
        xlog.contains("selected [SSL]"),
        "xrdp did not pick TLS security:\n{xlog}"
    );
    assert!(
        xlog.contains("TLS connection established from 127.0.0.1"),
        "xrdp log:\n{xlog}"
    );
    assert!(
        xlog.contains("lib_mod_log_peer") && xlog.contains("lib_mod_connect: connecting via UNIX socket"),
        "xrdp did not attach to the Xorg session:\n{xlog}"
    );
    // Exactly one RDP connection reached xrdp: the one through the gateway.
    assert_eq!(count(&xlog, "connection received from"), 1, "xrdp log:\n{xlog}");
    show("sesman", &sesman, &["access granted", "Session started", "pam_"]);
    show(
        "xrdp",
        &xlog,
        &[
            "Security protocol",
            "login successful",
            "lib_mod_log_peer",
            "connected ok",
        ],
    );
    // The client was stopped while the session ran: the client side closed the tunnel.
    assert_one_rdp_session(&gw, user, &["client_closed"]);
}

#[test]
fn xrdp_tls_wrong_password_is_rejected_through_tunnel() {
    let xrdp = Xrdp::start();
    let display = Xvfb::start();
    let client = FreeRdp::new(&display);
    let gw = gateway_for(xrdp.address());
    let tunnel = Tunnel::start(&gw, TARGET, &gw.token("alice", TARGET));

    let wrong = format!("{}-wrong", xrdp.password);
    let mut session = client.session(tunnel.port, &xrdp.user, &wrong);
    let user = &xrdp.user;
    let authfail = format!("AUTHFAIL: user={user}");
    let login_failed = format!("login failed for user {user}");
    let rejected = wait_until(Duration::from_secs(90), || {
        let (s, x) = (xrdp.sesman_log(), xrdp.xrdp_log());
        (s.contains("pam_authenticate failed") && s.contains(&authfail) && x.contains(&login_failed))
            || session.exited().is_some()
    });
    let status = session.exited();
    assert!(
        rejected && status.is_none(),
        "sesman did not reject the password within 90 s (client exit: {status:?})\n--- xfreerdp\n{}\n{}",
        session.log_text(),
        xrdp.diagnostics()
    );
    // With TLS security the RDP connection itself is complete before the password is checked
    // (xfreerdp reached CONNECTION_STATE_ACTIVE, `+auth-only` would exit 0 whatever the password):
    // the rejection is xrdp's login screen showing the failure, and the client stays connected.
    // A tunnel failure would instead end the client.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        session.exited().is_none(),
        "xfreerdp ended: {:?}\n{}",
        session.exited(),
        session.log_text()
    );
    let client_log = session.log_text();
    session.stop();

    let (sesman, xlog) = (xrdp.sesman_log(), xrdp.xrdp_log());
    assert!(client_log.contains(CLIENT_ACTIVE), "xfreerdp:\n{client_log}");
    assert!(
        client_log.contains("Negotiated TLS security"),
        "xfreerdp:\n{client_log}"
    );
    assert!(
        !sesman.contains("created session"),
        "sesman created a session:\n{sesman}"
    );
    assert!(
        !sesman.contains("Session started successfully"),
        "sesman log:\n{sesman}"
    );
    assert!(!xlog.contains("login successful"), "xrdp log:\n{xlog}");
    assert!(
        !xlog.contains("lib_mod_log_peer"),
        "xrdp attached to a session:\n{xlog}"
    );
    assert_eq!(count(&xlog, "connection received from"), 1, "xrdp log:\n{xlog}");
    show("sesman", &sesman, &["pam_authenticate", "AUTHFAIL"]);
    show("xrdp", &xlog, &["Security protocol", "login failed"]);
    assert_one_rdp_session(&gw, user, &["client_closed"]);
}

// ---------------------------------------------------------------------------------------------
// freerdp-shadow-cli: NLA (CredSSP) before the session
// ---------------------------------------------------------------------------------------------

const SHADOW_USER: &str = "rdpuser";

fn shadow() -> ShadowServer {
    ShadowServer::start(SHADOW_USER, &format!("Sh-{}", rdp_peers::random_string(16)))
}

#[test]
fn shadow_nla_right_password_authenticates_through_tunnel() {
    let server = shadow();
    let client = FreeRdp::new(&server.xvfb);
    let gw = gateway_for(server.address());
    let tunnel = Tunnel::start(&gw, TARGET, &gw.token("alice", TARGET));

    let out = client.auth_only(tunnel.port, &server.user, &server.password, AUTH_ONLY_LIMIT);
    let log = text(&out.stdout) + &text(&out.stderr);
    assert!(
        out.status.success(),
        "xfreerdp +auth-only failed ({}):\n{log}\n--- shadow\n{}",
        out.status,
        server.log_text()
    );
    assert!(log.contains("Negotiated NLA security"), "xfreerdp:\n{log}");
    assert!(log.contains("Authentication only, exit status 0"), "xfreerdp:\n{log}");
    let shadow_log = server.log_text();
    assert!(
        !shadow_log.contains("client authentication failure"),
        "shadow:\n{shadow_log}"
    );
    // After authenticating, xfreerdp disconnects: the client side closes the tunnel.
    assert_one_rdp_session(&gw, SHADOW_USER, &["client_closed"]);
}

#[test]
fn shadow_nla_wrong_password_fails_through_tunnel() {
    let server = shadow();
    let client = FreeRdp::new(&server.xvfb);
    let gw = gateway_for(server.address());
    let tunnel = Tunnel::start(&gw, TARGET, &gw.token("alice", TARGET));

    let wrong = format!("{}-wrong", server.password);
    let out = client.auth_only(tunnel.port, &server.user, &wrong, AUTH_ONLY_LIMIT);
    let log = text(&out.stdout) + &text(&out.stderr);
    assert!(!out.status.success(), "xfreerdp accepted a wrong password:\n{log}");
    assert!(log.contains("Negotiated NLA security"), "xfreerdp:\n{log}");
    assert!(log.contains("Authentication only, exit status 1"), "xfreerdp:\n{log}");
    // The server itself refused the credentials (not a broken tunnel).
    let refused = wait_until(Duration::from_secs(10), || {
        server.log_text().contains("client authentication failure")
    });
    assert!(refused, "shadow server log:\n{}", server.log_text());
    show(
        "shadow",
        &server.log_text(),
        &["authentication failure", "MIC", "SEC_E_"],
    );
    eprintln!("xfreerdp +auth-only with a wrong password: {}", out.status);
    // The server hung up after the failed CredSSP exchange: the target side ended the session.
    assert_one_rdp_session(&gw, SHADOW_USER, &["target_closed", "client_closed"]);
}

#[test]
fn shadow_nla_full_session_through_tunnel() {
    let server = shadow();
    // Its own display: the client window must not be inside the shadowed screen.
    let display = Xvfb::start();
    let client = FreeRdp::new(&display);
    let gw = gateway_for(server.address());
    let tunnel = Tunnel::start(&gw, TARGET, &gw.token("alice", TARGET));

    let mut session = client.session(tunnel.port, &server.user, &server.password);
    let active = wait_until(Duration::from_secs(60), || {
        session.log_text().contains(CLIENT_ACTIVE) || session.exited().is_some()
    });
    let status = session.exited();
    assert!(
        active && status.is_none(),
        "no active session within 60 s (client exit: {status:?})\n--- xfreerdp\n{}\n--- shadow\n{}",
        session.log_text(),
        server.log_text()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        session.exited().is_none(),
        "xfreerdp ended during the session: {:?}\n{}",
        session.exited(),
        session.log_text()
    );
    let client_log = session.log_text();
    session.stop();
    assert!(
        client_log.contains("Negotiated NLA security"),
        "xfreerdp:\n{client_log}"
    );
    // The client was stopped while the session ran: the client side closed the tunnel.
    let s = assert_one_rdp_session(&gw, SHADOW_USER, &["client_closed"]);
    let down = s["bytes_target_to_client"].as_u64().unwrap_or(0);
    let up = s["bytes_client_to_target"].as_u64().unwrap_or(0);
    eprintln!("full shadow session: {up} bytes up, {down} bytes down");
}

#[test]
fn ini_editing_replaces_only_active_keys_of_the_section() {
    let ini = "[Globals]\n; port=tcp://:3389\nport=3389\n#hidelogwindow=true\n[Xorg]\nport=-1\n";
    let out = rdp_peers::ini_set(ini, "Globals", "port", "tcp://127.0.0.1:5");
    assert_eq!(
        rdp_peers::ini_get(&out, "Globals", "port").as_deref(),
        Some("tcp://127.0.0.1:5")
    );
    assert_eq!(rdp_peers::ini_get(&out, "Xorg", "port").as_deref(), Some("-1"));
    assert!(out.contains("; port=tcp://:3389\n"), "{out}");
    let out = rdp_peers::ini_set(&out, "Globals", "autorun", "Xorg");
    assert_eq!(rdp_peers::ini_get(&out, "Globals", "autorun").as_deref(), Some("Xorg"));
    assert!(out.find("autorun=Xorg").unwrap() < out.find("[Xorg]").unwrap(), "{out}");
    let out = rdp_peers::ini_set(&out, "Logging", "LogLevel", "INFO");
    assert_eq!(rdp_peers::ini_get(&out, "Logging", "LogLevel").as_deref(), Some("INFO"));
}
