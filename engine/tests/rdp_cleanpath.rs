//! RDCleanPath (web RDP) refusals: every bad request gets its error PDU, nothing unauthorized
//! reaches a server, and the gateway keeps serving.

mod common;

use common::*;
use portcullis_protocols::rdp::{self, CleanPathAnswer};
use portcullis_protocols::ws::{Message, OpCode};
use std::io::{Read, Write};
use std::net::TcpListener;
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

/// A server that accepts, reads what it is sent, optionally answers, then hangs up; counts
/// connections.
fn hangup_server(answer: &'static [u8]) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 512];
            let _ = c.set_read_timeout(Some(5 * SEC));
            let _ = c.read(&mut buf);
            let _ = c.write_all(answer);
            if !answer.is_empty() {
                let _ = c.read(&mut buf);
            }
        }
    });
    (addr, count)
}

/// TPKT + X.224 Connection Confirm selecting TLS (PROTOCOL_SSL).
const CONFIRM_TLS: &[u8] = &[3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, 2, 0, 8, 0, 1, 0, 0, 0];

#[tokio::test]
async fn bad_requests_get_error_pdus() {
    let (x224_hangup, x224_count) = hangup_server(b"");
    let (tls_hangup, _) = hangup_server(CONFIRM_TLS);
    let (desk_addr, desk_count) = hangup_server(b"");
    let gw = Gateway::start(
        &[
            TargetDef {
                name: "desk",
                address: desk_addr.clone(),
                protocol: "rdp",
            },
            TargetDef {
                name: "x224-hangup",
                address: x224_hangup,
                protocol: "rdp",
            },
            TargetDef {
                name: "tls-hangup",
                address: tls_hangup,
                protocol: "rdp",
            },
            TargetDef {
                name: "shell",
                address: desk_addr.clone(),
                protocol: "ssh",
            },
            TargetDef {
                name: "forbidden",
                address: desk_addr,
                protocol: "rdp",
            },
        ],
        "request_timeout = \"1s\"",
    );
    let cr = rdp::connection_request("alice");
    let req = |dest: &str, token: &str| rdp::cleanpath_request(&cr, dest, token, None).unwrap();

    // Authorization: bad token, unknown destination, not allowed, not an RDP target.
    assert_eq!(http_error(&ask(&gw, &req("desk", "not-a-token")).await), Some(401));
    assert_eq!(
        http_error(&ask(&gw, &req("10.1.2.3:3389", &gw.token("alice", "10.1.2.3:3389"))).await),
        Some(404)
    );
    assert_eq!(
        http_error(&ask(&gw, &req("forbidden", &gw.token("alice", "forbidden"))).await),
        Some(403)
    );
    assert_eq!(
        http_error(&ask(&gw, &req("desk", &gw.token("bob", "desk"))).await),
        Some(403)
    );
    assert_eq!(
        http_error(&ask(&gw, &req("desk", &gw.token("alice", "shell"))).await),
        Some(403)
    );
    assert_eq!(
        http_error(&ask(&gw, &req("shell", &gw.token("alice", "shell"))).await),
        Some(403)
    );

    // Malformed: trailing bytes, wrong version, garbage X.224 inside, not DER at all, oversized.
    let mut trailing = req("desk", &gw.token("alice", "desk"));
    trailing.push(0);
    assert_eq!(http_error(&ask(&gw, &trailing).await), Some(400));
    let mut wrong_version = req("desk", &gw.token("alice", "desk"));
    // The version is the first INTEGER: 3390 (0x0d3e) -> 3391.
    let at = wrong_version.windows(2).position(|w| w == [0x0d, 0x3e]).unwrap();
    wrong_version[at + 1] = 0x3f;
    assert_eq!(http_error(&ask(&gw, &wrong_version).await), Some(400));
    let bad_x224 = rdp::cleanpath_request(&[3, 0, 0, 8, 1, 2, 3, 4], "desk", &gw.token("alice", "desk"), None).unwrap();
    assert_eq!(http_error(&ask(&gw, &bad_x224).await), Some(400));
    assert_eq!(http_error(&ask(&gw, b"GET / HTTP/1.1\r\n\r\n").await), Some(400));
    // A DER header announcing 1 MiB: refused from the header alone.
    assert_eq!(
        http_error(&ask(&gw, &[0x30, 0x83, 0x10, 0x00, 0x00, 0xa0, 0x04, 0x02, 0x02, 0x0d, 0x3e]).await),
        Some(400)
    );

    // Truncated: half a request, then nothing: refused at the request timeout.
    let full = req("desk", &gw.token("alice", "desk"));
    let mut ws = WsClient::open_path(&gw, "/v1/rdp", None).await;
    ws.send_frame(true, OpCode::Binary, &full[..full.len() / 2], true).await;
    assert_eq!(http_error(&answer(&mut ws).await), Some(408));
    assert_eq!(
        desk_count.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused request reached the server"
    );

    // Servers that hang up during X.224 or during TLS: a general error / a TLS error.
    match ask(&gw, &req("x224-hangup", &gw.token("alice", "x224-hangup"))).await {
        CleanPathAnswer::Error { code, .. } => assert_eq!(code, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(x224_count.load(std::sync::atomic::Ordering::SeqCst), 1);
    match ask(&gw, &req("tls-hangup", &gw.token("alice", "tls-hangup"))).await {
        CleanPathAnswer::Error { tls_alert, .. } => assert!(tls_alert.is_some()),
        other => panic!("{other:?}"),
    }

    // Every refusal is audited, and the gateway still serves.
    let denied = gw
        .audit_lines(14)
        .iter()
        .filter(|l| l["event"] == "denied" && l["path"] == "/v1/rdp")
        .count();
    assert!(denied >= 14, "{denied} denials audited");
    let mut tls = tls_connect(gw.addr()).await;
    assert_eq!(
        status_of(&exchange(&mut tls, b"GET /healthz HTTP/1.1\r\n\r\n").await),
        200
    );
}
