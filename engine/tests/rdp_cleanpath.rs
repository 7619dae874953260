//! RDCleanPath (web RDP) refusals: every bad request gets its error PDU, nothing unauthorized
//! reaches a server, and the gateway keeps serving.

use portcullis_protocols::rdp::{self, CleanPathAnswer};
use portcullis_protocols::ws::{Message, OpCode};
use portcullis_testkit::client::status_for;
use portcullis_testkit::targets::TcpTarget;
use portcullis_testkit::{Gateway, WsClient};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Sends `pdu` as one binary message on `/v1/rdp` and returns the gateway's answer.
async fn ask(gw: &Gateway, pdu: &[u8]) -> CleanPathAnswer {
    let mut ws = WsClient::open_path(gw, "/v1/rdp", None).await;
    ws.send_frame(true, OpCode::Binary, pdu, true).await;
    answer(&mut ws).await
}

async fn answer(ws: &mut WsClient) -> CleanPathAnswer {
    match ws.recv(15 * SEC).await {
        Some(Message::Binary(b)) => {
            let answer = rdp::parse_cleanpath_answer(&b).expect("an RDCleanPath PDU");
            // After an error the gateway closes the WebSocket.
            if matches!(answer, CleanPathAnswer::Error { .. }) {
                assert!(matches!(ws.recv(10 * SEC).await, Some(Message::Close { .. }) | None));
            }
            answer
        }
        other => panic!("expected an RDCleanPath PDU, got {other:?}"),
    }
}

fn http_error(a: &CleanPathAnswer) -> Option<u16> {
    match a {
        CleanPathAnswer::Error { http_status, .. } => *http_status,
        CleanPathAnswer::Response { .. } => panic!("expected an error, got a response"),
    }
}

/// TPKT + X.224 Connection Confirm selecting TLS (PROTOCOL_SSL).
const CONFIRM_TLS: &[u8] = &[3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, 1, 0, 0, 0];

#[tokio::test]
async fn bad_requests_get_error_pdus() {
    // Servers that read the request and hang up: during X.224, during TLS, or (desk) whenever.
    let x224_hangup = TcpTarget::answering(b"");
    let tls_hangup = TcpTarget::answering(CONFIRM_TLS);
    let desk = TcpTarget::answering(b"");
    let gw = Gateway::builder()
        .target("desk", desk.addr, "rdp")
        .target("x224-hangup", x224_hangup.addr, "rdp")
        .target("tls-hangup", tls_hangup.addr, "rdp")
        .target("shell", desk.addr, "ssh")
        .target("forbidden", desk.addr, "rdp")
        .session("request_timeout = \"1s\"")
        .start();
    let cr = rdp::connection_request("alice");
    let req = |dest: &str, token: &str| rdp::cleanpath_request(&cr, dest, token, None).unwrap();
    let alice = |target: &str| gw.token("alice", target);

    let mut trailing = req("desk", &alice("desk"));
    trailing.push(0);
    let mut wrong_version = req("desk", &alice("desk"));
    // The version is the first INTEGER: 3390 (0x0d3e) -> 3391.
    let at = wrong_version.windows(2).position(|w| w == [0x0d, 0x3e]).unwrap();
    wrong_version[at + 1] = 0x3f;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // Authorization: bad token, unknown destination, not allowed, not an RDP target.
        ("bad token", req("desk", "not-a-token"), 401),
        (
            "unknown destination",
            req("10.1.2.3:3389", &alice("10.1.2.3:3389")),
            404,
        ),
        ("target not allowed", req("forbidden", &alice("forbidden")), 403),
        ("user not allowed", req("desk", &gw.token("bob", "desk")), 403),
        ("token for another target", req("desk", &alice("shell")), 403),
        // One policy decision for every route: the wrong protocol is a bad request.
        ("an SSH target", req("shell", &alice("shell")), 400),
        // Malformed: trailing bytes, wrong version, garbage X.224 inside, not DER at all, oversized.
        ("trailing bytes", trailing, 400),
        ("wrong version", wrong_version, 400),
        (
            "garbage X.224",
            rdp::cleanpath_request(&[3, 0, 0, 8, 1, 2, 3, 4], "desk", &alice("desk"), None).unwrap(),
            400,
        ),
        ("not DER", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        // A DER header announcing 1 MiB: refused from the header alone.
        (
            "1 MiB",
            vec![0x30, 0x83, 0x10, 0x00, 0x00, 0xa0, 0x04, 0x02, 0x02, 0x0d, 0x3e],
            400,
        ),
    ];
    for (what, pdu, want) in &cases {
        assert_eq!(http_error(&ask(&gw, pdu).await), Some(*want), "{what}");
    }

    // Truncated: half a request, then nothing: refused at the request timeout.
    let full = req("desk", &alice("desk"));
    let mut ws = WsClient::open_path(&gw, "/v1/rdp", None).await;
    ws.send_frame(true, OpCode::Binary, &full[..full.len() / 2], true).await;
    assert_eq!(http_error(&answer(&mut ws).await), Some(408));
    assert_eq!(desk.accepted(), 0, "a refused request reached the server");

    // Servers that hang up during X.224 or during TLS: a general error / a TLS error.
    match ask(&gw, &req("x224-hangup", &alice("x224-hangup"))).await {
        CleanPathAnswer::Error { code, .. } => assert_eq!(code, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(x224_hangup.accepted(), 1);
    match ask(&gw, &req("tls-hangup", &alice("tls-hangup"))).await {
        CleanPathAnswer::Error { tls_alert, .. } => assert!(tls_alert.is_some()),
        other => panic!("{other:?}"),
    }

    // Every refusal is audited, and the gateway still serves.
    let want = cases.len() + 3;
    let denied = gw.records_where(want, |l| l["event"] == "denied" && l["path"] == "/v1/rdp");
    assert!(denied.len() >= want, "{} denials audited", denied.len());
    assert_eq!(status_for(&gw, b"GET /healthz HTTP/1.1\r\n\r\n").await, 200);
}
