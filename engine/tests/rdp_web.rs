//! Web RDP through `/v1/rdp` (RDCleanPath) to a real xrdp: the gateway's answer carries the
//! server's X.224 confirm and certificate, and the client's next PDU, sent in the clear on the
//! WebSocket, reaches xrdp's MCS layer through the gateway's TLS session with it. Tokens and
//! one-time web tickets are both accepted; a certificate pin is enforced. (The IronRDP web client
//! in a browser is the other half; see browser_rdp.rs.)
//!
//! A target's channel policy is enforced on the client's MCS Connect Initial: with
//! `clipboard = false` and `drives = false`, xrdp (logging at DEBUG, where it names every static
//! channel a client asks for) is asked for `PCNONE2`, `rdpsnd`, `PCNONE1`, `drdynvc` where the
//! client asked for `rdpdr`, `rdpsnd`, `cliprdr`, `drdynvc` (as it is for an unrestricted target),
//! the session's record lists the channels removed, and a first PDU that is no well-formed
//! Connect Initial never reaches xrdp.

use portcullis_protocols::rdp::{self, channels, CleanPathAnswer, Negotiated};
use portcullis_protocols::ws::{CloseCode, Message, OpCode};
use portcullis_testkit::client::sign_in;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::rdp::{channels_asked, Xrdp};
use portcullis_testkit::{https, Gateway, WsClient};
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const PASSWORD: &str = "web rdp password";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(":")
}

async fn ask(gw: &Gateway, proxy_auth: &str, destination: &str) -> (WsClient, CleanPathAnswer) {
    let mut ws = WsClient::open_path(gw, "/v1/rdp", None).await;
    let pdu = rdp::cleanpath_request(&rdp::connection_request("rdpuser"), destination, proxy_auth, None).unwrap();
    ws.send_frame(true, OpCode::Binary, &pdu, true).await;
    match ws.recv(30 * SEC).await {
        Some(Message::Binary(b)) => {
            let answer = rdp::parse_cleanpath_answer(&b).unwrap();
            (ws, answer)
        }
        other => panic!("expected an RDCleanPath answer, got {other:?}"),
    }
}

/// The answer to a request with `proxy_auth` for `destination` is a response (the server's).
async fn answered(gw: &Gateway, proxy_auth: &str, destination: &str) {
    let (_, answer) = ask(gw, proxy_auth, destination).await;
    assert!(
        matches!(answer, CleanPathAnswer::Response { .. }),
        "{destination}: {answer:?}"
    );
}

/// The answer to a request with `proxy_auth` for `destination` is an HTTP error `status`.
async fn refused(gw: &Gateway, proxy_auth: &str, destination: &str, status: u16) {
    let (_, answer) = ask(gw, proxy_auth, destination).await;
    let got = match answer {
        CleanPathAnswer::Error { http_status, .. } => http_status,
        CleanPathAnswer::Response { .. } => None,
    };
    assert_eq!(got, Some(status), "{destination}: {answer:?}");
}

/// A one-time web ticket for `desk1` from a signed-in session.
async fn ticket(gw: &Gateway, cookie: &str) -> String {
    let (status, _, body) = https(
        gw,
        "POST",
        "/api/rdp/ticket",
        &[("Cookie", cookie)],
        r#"{"target":"desk1"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ticket: serde_json::Value = serde_json::from_str(&body).unwrap();
    ticket["ticket"].as_str().unwrap().to_owned()
}

/// After the answer the WebSocket carries the RDP stream inside the gateway's TLS session with
/// the server: send an X.224 Data TPDU whose MCS content is not a Connect Initial and return
/// once the server has hung up on it.
async fn send_bad_mcs(ws: &mut WsClient) {
    // TPKT (12 bytes) + X.224 Data TPDU header + 5 bytes that are no BER Connect-Initial.
    ws.send_binary(&[3, 0, 0, 12, 2, 0xf0, 0x80, 0x7f, 0x65, 0x00, 0x00, 0x00])
        .await;
    while let Some(msg) = ws.recv(30 * SEC).await {
        if matches!(msg, Message::Close { .. }) {
            return;
        }
    }
}

/// What xrdp logged since `from` (a length of its log).
fn log_since(xrdp: &Xrdp, from: usize) -> String {
    xrdp.xrdp_log().get(from..).unwrap_or_default().to_owned()
}

/// Sends a Connect Initial asking for FreeRDP's usual channels on an answered connection, and
/// returns the channels xrdp says it was asked for (once it has answered with its Connect
/// Response, an MCS PDU in a TPKT).
async fn ask_for_channels(xrdp: &Xrdp, ws: &mut WsClient) -> Vec<String> {
    let from = xrdp.xrdp_log_len();
    ws.send_binary(&channels::connect_initial(&[
        b"rdpdr", b"rdpsnd", b"cliprdr", b"drdynvc",
    ]))
    .await;
    match ws.recv(30 * SEC).await {
        Some(Message::Binary(b)) => assert_eq!(b.first(), Some(&3), "xrdp answers with a TPKT: {b:?}"),
        other => panic!(
            "expected xrdp's MCS Connect Response, got {other:?}\n{}",
            log_since(xrdp, from)
        ),
    }
    let logged = || channels_asked(&log_since(xrdp, from)).len() >= 4;
    assert!(wait_until(10 * SEC, logged), "{}", log_since(xrdp, from));
    channels_asked(&log_since(xrdp, from))
}

#[tokio::test]
async fn rdcleanpath_to_xrdp() {
    let xrdp = Xrdp::start_debug();
    let cert_pem = std::fs::read(xrdp.dir.path().join("cert.pem")).unwrap();
    let cert_der = rustls::pki_types::CertificateDer::from_pem_slice(&cert_pem)
        .unwrap()
        .as_ref()
        .to_vec();
    let pin = |fingerprint: String| format!("cert_sha256 = \"{fingerprint}\"");
    let addr = xrdp.address();
    let ca = xrdp.dir.path().join("ca.pem").display().to_string();
    let leaf = xrdp.dir.path().join("cert.pem").display().to_string();
    let gw = Gateway::builder()
        .target("desk1", &addr, "rdp")
        .target_with("pinned", &addr, "rdp", &pin(hex(&Sha256::digest(&cert_der))))
        .target_with("mispinned", &addr, "rdp", &pin(hex(&[7u8; 32])))
        .target_with("ca-checked", &addr, "rdp", &format!("cert_ca = \"{ca}\""))
        // The server's own certificate is no CA: its chain leads nowhere from there.
        .target_with("ca-other", &addr, "rdp", &format!("cert_ca = \"{leaf}\""))
        .target_with("locked", &addr, "rdp", "clipboard = false\ndrives = false")
        .password(PASSWORD)
        .start();

    // A token: the answer has the server's confirm (TLS selected), certificate and address.
    let (mut ws, answer) = ask(&gw, &gw.token("alice", "desk1"), "desk1").await;
    match &answer {
        CleanPathAnswer::Response {
            x224_confirm,
            chain,
            server_addr,
        } => {
            assert_eq!(
                rdp::parse_connection_confirm(x224_confirm).unwrap(),
                Negotiated::Protocol(1)
            );
            assert_eq!(chain.first(), Some(&cert_der));
            assert_eq!(server_addr, &addr);
        }
        other => panic!("{other:?}"),
    }
    // ...and what the client sends next reaches xrdp's MCS layer through the gateway's TLS.
    send_bad_mcs(&mut ws).await;
    drop(ws);
    let log = xrdp.xrdp_log();
    assert!(log.contains("selected [SSL]"), "{log}");
    assert!(
        log.contains("Connect-Initial callingDomainSelector failed"),
        "xrdp's MCS layer got our bytes: {log}"
    );

    // A client's channels reach xrdp as asked for; on a target with `clipboard = false` and
    // `drives = false`, the clipboard and device redirection entries are renamed (each entry keeps
    // its place, so every channel still gets its id) and the rest is untouched.
    let (mut ws, _) = ask(&gw, &gw.token("alice", "desk1"), "desk1").await;
    assert_eq!(
        ask_for_channels(&xrdp, &mut ws).await,
        ["rdpdr", "rdpsnd", "cliprdr", "drdynvc"]
    );
    drop(ws);
    let (mut ws, _) = ask(&gw, &gw.token("alice", "locked"), "locked").await;
    assert_eq!(
        ask_for_channels(&xrdp, &mut ws).await,
        ["PCNONE2", "rdpsnd", "PCNONE1", "drdynvc"]
    );
    drop(ws);
    // A first PDU that is no Connect Initial (or a malformed one) is refused before xrdp sees it.
    let from = xrdp.xrdp_log_len();
    let (mut ws, _) = ask(&gw, &gw.token("alice", "locked"), "locked").await;
    ws.send_binary(&[3, 0, 0, 12, 2, 0xf0, 0x80, 0x7f, 0x65, 0x00, 0x00, 0x00])
        .await;
    let closed = loop {
        match ws.recv(30 * SEC).await {
            Some(Message::Close { code, reason }) => break (code, reason),
            Some(_) => continue,
            None => panic!("no Close from the gateway"),
        }
    };
    assert_eq!(closed, (Some(CloseCode::POLICY), "refused by the gateway".to_owned()));
    drop(ws);
    let cut = gw.records_where(1, |l| l["event"] == "session" && l["ended"] == "protocol_error");
    assert_eq!(cut.len(), 1, "{cut:?}");
    assert_eq!(cut[0]["target"], "locked");
    assert!(
        cut[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("RDP channel filter refused") && d.contains("Connect-Initial")),
        "{}",
        cut[0]
    );
    // xrdp waited for a Connect Initial until the gateway hung up (it parses what it gets, and
    // says so: "Connect-Initial callingDomainSelector failed" for this one, above).
    let ended = || log_since(&xrdp, from).contains("Processing [ITU-T T.125] Connect-Initial failed");
    assert!(wait_until(10 * SEC, ended), "{}", log_since(&xrdp, from));
    assert!(
        !log_since(&xrdp, from).contains("callingDomainSelector"),
        "xrdp got the refused PDU: {}",
        log_since(&xrdp, from)
    );

    // The destination may also be given as the configured address.
    answered(&gw, &gw.token("alice", "desk1"), &addr).await;

    // A pinned certificate that matches passes; one that does not is refused by the gateway.
    answered(&gw, &gw.token("alice", "pinned"), "pinned").await;
    let (_, answer) = ask(&gw, &gw.token("alice", "mispinned"), "mispinned").await;
    assert!(
        matches!(
            answer,
            CleanPathAnswer::Error {
                tls_alert: Some(42),
                ..
            }
        ),
        "{answer:?}"
    );
    // A certificate issued by the target's CA for its address passes; another CA's is refused.
    answered(&gw, &gw.token("alice", "ca-checked"), "ca-checked").await;
    let (_, answer) = ask(&gw, &gw.token("alice", "ca-other"), "ca-other").await;
    assert!(matches!(answer, CleanPathAnswer::Error { .. }), "{answer:?}");
    // Targets checked neither way are named at start.
    assert!(
        gw.log().contains("target desk1: any server certificate is accepted"),
        "{}",
        gw.log()
    );

    // A signed-in browser gets a one-time ticket instead of a token: for its target only, once.
    let (status, cookie) = sign_in(&gw, "alice", PASSWORD).await;
    assert_eq!(status, 200);
    let cookie = cookie.unwrap();
    refused(&gw, &ticket(&gw, &cookie).await, "pinned", 403).await;
    let ticket = ticket(&gw, &cookie).await;
    answered(&gw, &ticket, "desk1").await;
    refused(&gw, &ticket, "desk1", 401).await;
    let (status, _, _) = https(&gw, "POST", "/api/rdp/ticket", &[], r#"{"target":"desk1"}"#).await;
    assert_eq!(status, 401);

    // Audit: the sessions carry the X.224 cookie and how they came in; the filtered one, what
    // was removed (by channel, in the client's order).
    let records = gw.records_where(1, |l| l["event"] == "session" && l["via"] == "web_rdp");
    let rec = records.first().expect("web RDP session record");
    assert_eq!(rec["rdp_cookie"], "rdpuser");
    assert_eq!(rec["protocol"], "rdp");
    let removed: Vec<_> = records
        .iter()
        .filter(|r| r.get("channels_removed").is_some())
        .map(|r| (r["target"].clone(), r["channels_removed"].clone()))
        .collect();
    assert_eq!(
        removed,
        [("locked".into(), serde_json::json!(["rdpdr", "cliprdr"]))],
        "{records:?}"
    );
}
