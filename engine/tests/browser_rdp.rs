//! Web RDP in a real browser (issue 6): Debian's Chromium, driven by playwright-core from
//! `web/e2e/rdp.mjs`, signs in to the web app, opens an RDP target, and the IronRDP web client in
//! the page reaches a real xrdp through the gateway's RDCleanPath endpoint (`/v1/rdp`) with a
//! one-time ticket from `POST /api/rdp/ticket`.
//!
//! The IronRDP web client does not ask for an automatic logon (its connector config has
//! `autologon: false`), and xrdp (TLS security, no NLA) uses the logon info's password only with
//! that flag, so xrdp first shows its own login screen, with the username filled in. The script
//! then types the password there through the canvas (keyboard -> IronRDP scancodes), which tests
//! the input path too. Checked: both pictures render (canvases with several colours, saved in
//! `target/e2e-artifacts/web_rdp/`), xrdp-sesman logs the user on, the session's desktop differs
//! from the login screen, and the gateway audits a `web_rdp` session.
//!
//! The target's channel policy holds against a modified client: first, in the same browser, the
//! script opens `desk2` (`clipboard = false`, `drives = false`) with the page told that the
//! clipboard is allowed, so the IronRDP client asks for `cliprdr`. xrdp (logging at DEBUG, where it
//! names each static channel a client asks for) is asked for `PCNONE1` and `drdynvc` there, and for
//! `cliprdr` and `drdynvc` in the `desk1` session after it; desk2 still shows xrdp's login
//! screen, and its audit record says `"channels_removed":["cliprdr"]`.
//!
//! Needs root (xrdp checks passwords with PAM), xrdp + xorgxrdp + x11-utils, node, /usr/bin/chromium
//! and `npm ci` in web/e2e: `scripts/test` installs them.

use portcullis_testkit::browser::{artifacts, check_prerequisites, run_script};
use portcullis_testkit::process::wait_until;
use portcullis_testkit::rdp::{channels_asked, Xrdp};
use portcullis_testkit::Gateway;
use serde_json::json;
use std::time::Duration;

const PASSWORD: &str = "browser rdp password";
/// The whole browser run, start to close.
const SCRIPT_LIMIT: Duration = Duration::from_secs(120);

/// The session program xrdp-sesman starts after the logon: windows with text and colours, so the
/// session's desktop is not one colour and cannot be mistaken for xrdp's login screen.
const SESSION_SCRIPT: &str = "#!/bin/sh\n# portcullis browser RDP test session\n\
    /usr/bin/xmessage -geometry +40+40 -bg '#1f5fbf' -fg white 'Portcullis web RDP: the test user session' &\n\
    /usr/bin/xmessage -geometry +40+200 -bg '#f5c518' -fg black 'Logged on through /v1/rdp' &\n\
    exec sleep 600\n";

#[test]
fn browser_opens_an_xrdp_desktop() {
    check_prerequisites(&[("/usr/bin/xmessage", "apt-get install x11-utils")]);
    let xrdp = Xrdp::start_debug();
    std::fs::write(xrdp.dir.path().join("wm.sh"), SESSION_SCRIPT).unwrap();
    let gw = Gateway::builder()
        .target("desk1", xrdp.address(), "rdp")
        .target_with("desk2", xrdp.address(), "rdp", "clipboard = false\ndrives = false")
        .password(PASSWORD)
        .user("alice", &["desk1", "desk2"], "")
        .start();
    let dir = artifacts("web_rdp");
    let config = json!({
        "url": gw.origin(),
        "user": "alice",
        "password": PASSWORD,
        "target": "desk1",
        "rdp_user": xrdp.user,
        "rdp_password": xrdp.password,
        "artifacts": dir,
        "min_colours": 3,
        "restricted_target": "desk2",
    });
    let granted = format!("created session (access granted): username {}", xrdp.user);
    let logged_on = || xrdp.sesman_log().contains(&granted);
    // Where xrdp's log of the desk1 session starts (once desk2's has been checked).
    let mut desk1_from = None;
    let run = run_script("rdp.mjs", config, SCRIPT_LIMIT, |step| {
        let done = match step {
            "logon" => logged_on(),
            "logon_wait" => wait_until(Duration::from_secs(30), logged_on),
            "restricted" => {
                let asked = channels_asked(&xrdp.xrdp_log());
                desk1_from = Some(xrdp.xrdp_log_len());
                return if asked == ["PCNONE1", "drdynvc"] {
                    "ok".to_owned()
                } else {
                    format!("xrdp was asked for {asked:?}")
                };
            }
            other => panic!("unknown step {other}"),
        };
        match (step, done) {
            (_, true) => "session",
            ("logon", false) => "login",
            _ => "failed",
        }
        .to_owned()
    });
    assert!(
        run.ok(),
        "rdp.mjs failed ({:?}): {}\nresult: {}\n{}",
        run.status,
        run.result["error"],
        run.result,
        xrdp.diagnostics()
    );
    assert!(run.log.contains("ok: "), "{}", run.log);

    // The session's desktop showed, and its picture was saved.
    assert!(
        run.result["colours"].as_u64().unwrap_or(0) >= 3,
        "(nearly) uniform desktop: {}",
        run.result
    );
    let png = std::fs::read(dir.join("rdp.png")).expect("rdp.png artifact");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
        "rdp.png is not a picture"
    );
    // xrdp logged the user on: what rendered last is the user's session.
    assert!(logged_on(), "no logon in sesman's log\n{}", xrdp.diagnostics());
    // The same client asking desk1 (no restriction): xrdp was asked for the clipboard unchanged.
    let from = desk1_from.expect("the script checked desk2");
    let desk1_log = xrdp.xrdp_log().get(from..).unwrap_or_default().to_owned();
    assert_eq!(channels_asked(&desk1_log), ["cliprdr", "drdynvc"], "{desk1_log}");

    // The gateway audited the session as web RDP (written when the browser left the page).
    let records = gw.records_where(2, |l| l["event"] == "session" && l["via"] == "web_rdp");
    let restricted = records
        .iter()
        .find(|r| r["target"] == "desk2")
        .unwrap_or_else(|| panic!("no desk2 session in the audit log: {:?}", gw.audit_lines(0)));
    assert_eq!(restricted["channels_removed"], json!(["cliprdr"]), "{restricted}");
    let rec = records
        .iter()
        .find(|r| r["target"] == "desk1")
        .unwrap_or_else(|| panic!("no desk1 session in the audit log: {:?}", gw.audit_lines(0)));
    assert!(rec.get("channels_removed").is_none(), "{rec}");
    assert_eq!(rec["user"], "alice", "{rec}");
    assert_eq!(rec["target"], "desk1", "{rec}");
    assert_eq!(rec["protocol"], "rdp", "{rec}");
    // A one-time web ticket is no token: the record has no token id.
    assert!(rec.get("token_id").is_none(), "{rec}");
    assert!(rec["bytes_target_to_client"].as_u64().unwrap_or(0) > 10_000, "{rec}");
}
