//! End-to-end RDP through `portcullis tunnel`: a real FreeRDP client (xfreerdp, FreeRDP 2) on a
//! local port, the gateway, and a real RDP server behind it:
//! - xrdp + xorgxrdp with TLS security: the password is checked by xrdp-sesman (PAM) after the
//!   TLS session is up, so the outcome shows in sesman's and xrdp's logs, and a good password
//!   ends in a real Xorg session that xrdp connects to.
//! - freerdp-shadow-cli with NLA (CredSSP/NTLM against a SAM file): the password is checked
//!   before the session, so `xfreerdp +auth-only` exits 0 or non-zero.
//!
//! Every test starts its own servers, displays, gateway and tunnel on fresh loopback ports; xrdp
//! tests run one at a time (see `portcullis_testkit::rdp::Xrdp`). Needs the Debian packages listed
//! there, and root for xrdp.

use portcullis_testkit::process::{random_string, wait_until};
use portcullis_testkit::rdp::{ClientSession, FreeRdp, ShadowServer, Xrdp, Xvfb, CLIENT_ACTIVE};
use portcullis_testkit::{text, Gateway, Tunnel};
use std::time::Duration;

/// The gateway's name for the RDP server.
const TARGET: &str = "desk1";

const AUTH_ONLY_LIMIT: Duration = Duration::from_secs(60);

/// A gateway with the RDP server at `address`, and a tunnel to it (both live as long as the pair).
fn through_tunnel(address: String) -> (Gateway, Tunnel) {
    let gw = Gateway::builder().target(TARGET, address, "rdp").start();
    let tunnel = Tunnel::start(&gw, TARGET, &gw.token("alice", TARGET));
    (gw, tunnel)
}

/// The one session record of this test: user alice, target desk1, protocol rdp, bytes both ways,
/// the RDP user name from the client's X.224 cookie, and who ended it.
/// `ended` lists the acceptable endings: when both peers hang up at once either may be first.
fn assert_one_rdp_session(gw: &Gateway, rdp_user: &str, ended: &[&str]) -> serde_json::Value {
    let sessions = gw.session_records(1);
    assert_eq!(
        sessions.len(),
        1,
        "expected one session record, audit: {:?}",
        gw.audit_lines(0)
    );
    let s = sessions[0].clone();
    eprintln!("audit session record: {s}");
    assert_eq!(
        (s["user"].as_str(), s["target"].as_str(), s["protocol"].as_str()),
        (Some("alice"), Some(TARGET), Some("rdp")),
        "{s}"
    );
    assert!(s["bytes_client_to_target"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(s["bytes_target_to_client"].as_u64().unwrap_or(0) > 0, "{s}");
    assert!(!s["end"].as_str().unwrap_or("").is_empty(), "{s}");
    // xfreerdp sends "Cookie: mstshash=USER" in its X.224 Connection Request.
    assert_eq!(s["rdp_cookie"], rdp_user, "{s}");
    assert!(ended.iter().any(|e| s["ended"] == *e), "ended not in {ended:?}: {s}");
    s
}

/// Waits up to `limit` for `reached` (given the client's log) while the client runs, checks that
/// the client then stays connected for `period`, stops it, and returns its log.
fn hold_session(
    session: &mut ClientSession,
    limit: Duration,
    mut reached: impl FnMut(&str) -> bool,
    period: Duration,
    diagnostics: impl Fn() -> String,
) -> String {
    let done = wait_until(limit, || reached(&session.log_text()) || session.exited().is_some());
    let status = session.exited();
    assert!(
        done && status.is_none(),
        "not reached within {limit:?} (client exit: {status:?})\n--- xfreerdp\n{}\n{}",
        session.log_text(),
        diagnostics()
    );
    assert!(
        session.stays_up(period),
        "xfreerdp ended during the session: {:?}\n{}\n{}",
        session.exited(),
        session.log_text(),
        diagnostics()
    );
    let log = session.log_text();
    session.stop();
    log
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

/// The logs of an xrdp session's parties.
struct Logs {
    client: String,
    sesman: String,
    xrdp: String,
}

/// An xfreerdp session through a tunnel to xrdp, over: the logs, and what must outlive them.
struct XrdpRun {
    logs: Logs,
    user: String,
    gw: Gateway,
    _tunnel: Tunnel,
    _server: Xrdp,
}

/// Starts xrdp, and an xfreerdp session (on its own display) through a gateway and a tunnel with
/// the right or a wrong password; holds it until `reached(user, logs)` and then for `period`.
fn xrdp_session(wrong_password: bool, period: Duration, reached: impl Fn(&str, &Logs) -> bool) -> XrdpRun {
    let server = Xrdp::start();
    let display = Xvfb::start();
    let (gw, tunnel) = through_tunnel(server.address());
    let password = match wrong_password {
        true => format!("{}-wrong", server.password),
        false => server.password.clone(),
    };
    let mut session = FreeRdp::new(&display).session(tunnel.port, &server.user, &password);
    let logs = |client: &str| Logs {
        client: client.to_owned(),
        sesman: server.sesman_log(),
        xrdp: server.xrdp_log(),
    };
    let limit = Duration::from_secs(90);
    let up = |client: &str| reached(&server.user, &logs(client));
    let client = hold_session(&mut session, limit, up, period, || server.diagnostics());
    XrdpRun {
        logs: logs(&client),
        user: server.user.clone(),
        gw,
        _tunnel: tunnel,
        _server: server,
    }
}

impl XrdpRun {
    /// Exactly one RDP connection reached xrdp (the one through the gateway), and the client,
    /// stopped while its session ran, closed the tunnel. Shows the log lines worth seeing.
    fn assert_one_connection(&self, sesman_lines: &[&str], xrdp_lines: &[&str]) {
        let xlog = &self.logs.xrdp;
        assert_eq!(count(xlog, "connection received from"), 1, "xrdp log:\n{xlog}");
        show("sesman", &self.logs.sesman, sesman_lines);
        show("xrdp", xlog, xrdp_lines);
        assert_one_rdp_session(&self.gw, &self.user, &["client_closed"]);
    }
}

#[test]
fn xrdp_tls_right_password_opens_a_session_through_tunnel() {
    // sesman: PAM accepted the password and the Xorg session started; xrdp: connected to it;
    // xfreerdp: its connection sequence is complete. Then the tunnel keeps carrying the session.
    let run = xrdp_session(false, Duration::from_secs(2), |user, logs| {
        logs.sesman
            .contains(&format!("Session started successfully for user {user}"))
            && logs.xrdp.contains(&format!("login successful for user {user}"))
            && logs.xrdp.contains("connected ok")
            && logs.client.contains(CLIENT_ACTIVE)
    });
    let Logs { client, sesman, xrdp } = &run.logs;
    let granted = format!("++ created session (access granted): username {}", run.user);
    assert!(sesman.contains(&granted), "sesman log:\n{sesman}");
    assert!(!sesman.contains("pam_authenticate failed"), "sesman log:\n{sesman}");
    assert!(client.contains("Negotiated TLS security"), "xfreerdp:\n{client}");
    assert!(
        xrdp.contains("selected [SSL]"),
        "xrdp did not pick TLS security:\n{xrdp}"
    );
    assert!(
        xrdp.contains("TLS connection established from 127.0.0.1"),
        "xrdp log:\n{xrdp}"
    );
    assert!(
        xrdp.contains("lib_mod_log_peer") && xrdp.contains("lib_mod_connect: connecting via UNIX socket"),
        "xrdp did not attach to the Xorg session:\n{xrdp}"
    );
    run.assert_one_connection(
        &["access granted", "Session started", "pam_"],
        &[
            "Security protocol",
            "login successful",
            "lib_mod_log_peer",
            "connected ok",
        ],
    );
}

#[test]
fn xrdp_tls_wrong_password_is_rejected_through_tunnel() {
    // With TLS security the RDP connection itself is complete before the password is checked
    // (xfreerdp reaches CONNECTION_STATE_ACTIVE, `+auth-only` would exit 0 whatever the password):
    // the rejection is xrdp's login screen showing the failure, and the client stays connected.
    // A tunnel failure would instead end the client.
    let run = xrdp_session(true, Duration::from_secs(1), |user, logs| {
        logs.sesman.contains("pam_authenticate failed")
            && logs.sesman.contains(&format!("AUTHFAIL: user={user}"))
            && logs.xrdp.contains(&format!("login failed for user {user}"))
    });
    let Logs { client, sesman, xrdp } = &run.logs;
    assert!(client.contains(CLIENT_ACTIVE), "xfreerdp:\n{client}");
    assert!(client.contains("Negotiated TLS security"), "xfreerdp:\n{client}");
    assert!(
        !sesman.contains("created session"),
        "sesman created a session:\n{sesman}"
    );
    assert!(
        !sesman.contains("Session started successfully"),
        "sesman log:\n{sesman}"
    );
    assert!(!xrdp.contains("login successful"), "xrdp log:\n{xrdp}");
    assert!(
        !xrdp.contains("lib_mod_log_peer"),
        "xrdp attached to a session:\n{xrdp}"
    );
    run.assert_one_connection(
        &["pam_authenticate", "AUTHFAIL"],
        &["Security protocol", "login failed"],
    );
}

// ---------------------------------------------------------------------------------------------
// freerdp-shadow-cli: NLA (CredSSP) before the session
// ---------------------------------------------------------------------------------------------

const SHADOW_USER: &str = "rdpuser";

fn shadow() -> ShadowServer {
    ShadowServer::start(SHADOW_USER, &format!("Sh-{}", random_string(16)))
}

/// An `xfreerdp +auth-only` run through a tunnel (kept up until the test has read the audit).
struct AuthOnly {
    gw: Gateway,
    _tunnel: Tunnel,
    ok: bool,
    log: String,
}

/// `xfreerdp +auth-only` through a tunnel to `server` with `password`; NLA is negotiated.
fn auth_only(server: &ShadowServer, password: &str) -> AuthOnly {
    let (gw, tunnel) = through_tunnel(server.address());
    let out = FreeRdp::new(&server.xvfb).auth_only(tunnel.port, &server.user, password, AUTH_ONLY_LIMIT);
    let log = text(&out.stdout) + &text(&out.stderr);
    assert!(log.contains("Negotiated NLA security"), "xfreerdp:\n{log}");
    eprintln!("xfreerdp +auth-only: {}", out.status);
    AuthOnly {
        gw,
        _tunnel: tunnel,
        ok: out.status.success(),
        log,
    }
}

#[test]
fn shadow_nla_right_password_authenticates_through_tunnel() {
    let server = shadow();
    let AuthOnly { gw, _tunnel, ok, log } = auth_only(&server, &server.password);
    assert!(
        ok,
        "xfreerdp +auth-only failed:\n{log}\n--- shadow\n{}",
        server.log_text()
    );
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
    let AuthOnly { gw, _tunnel, ok, log } = auth_only(&server, &format!("{}-wrong", server.password));
    assert!(!ok, "xfreerdp accepted a wrong password:\n{log}");
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
    // The server hung up after the failed CredSSP exchange: the target side ended the session.
    assert_one_rdp_session(&gw, SHADOW_USER, &["target_closed", "client_closed"]);
}

#[test]
fn shadow_nla_full_session_through_tunnel() {
    let server = shadow();
    // Its own display: the client window must not be inside the shadowed screen.
    let display = Xvfb::start();
    let (gw, tunnel) = through_tunnel(server.address());
    let mut session = FreeRdp::new(&display).session(tunnel.port, &server.user, &server.password);
    let active = |client: &str| client.contains(CLIENT_ACTIVE);
    let client_log = hold_session(
        &mut session,
        Duration::from_secs(60),
        active,
        Duration::from_secs(3),
        || format!("--- shadow\n{}", server.log_text()),
    );
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
