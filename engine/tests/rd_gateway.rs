//! The RD Gateway (`/remoteDesktopGateway/`, MS-TSGU) at the protocol level, with the testkit's
//! RD Gateway client (built on the product's own packet codec) against a real gateway process
//! and TCP targets: both transports carry bytes, the HTTP transport's two connections are joined
//! on whichever cores they land, every refusal answers with the protocol's code and is audited,
//! malformed packets and stalled clients end only their own tunnel. Real RDP clients and servers
//! through the gateway are in `rd_gateway_rdp.rs`.

use portcullis_protocols::tsgu::{hresult, ClientPacket, GatewayPacket};
use portcullis_testkit::client::status_for;
use portcullis_testkit::rdgateway::{self, connection_id, RdgClient};
use portcullis_testkit::targets::TcpTarget;
use portcullis_testkit::*;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// A gateway where `desk` (alice's) and `desk2` (also alice's) are RDP targets on an echo
/// server, `elsewhere` is an RDP target that is not alice's, `dead` has nothing listening.
fn gateway(echo: &TcpTarget, session: &str) -> Gateway {
    Gateway::builder()
        .target("desk", echo.addr, "rdp")
        .target("desk2", echo.addr, "rdp")
        .target("elsewhere", echo.addr, "rdp")
        .target("dead", dead_address(), "rdp")
        .user("alice", &["desk", "desk2", "dead"], "")
        .session(session)
        .start()
}

fn denials(gw: &Gateway, want: usize) -> Vec<serde_json::Value> {
    gw.records_where(want, |l| {
        l["event"] == "denied" && l["path"] == "/remoteDesktopGateway/"
    })
}

#[tokio::test]
async fn websocket_tunnel_carries_rdp_bytes_and_is_audited() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "");
    let mut rdg = RdgClient::websocket(&gw).await.expect("upgrade");
    rdg.open_channel(Some(&gw.token("alice", "desk")), "desk", 3389)
        .await
        .expect("channel");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
    // DATA packets carry at most 64 KiB each.
    for part in payload.chunks(60_000) {
        rdg.echoes(part).await;
    }
    // The client closes the channel: the gateway acknowledges and ends the session.
    rdg.send(&ClientPacket::CloseChannel { status: 0 }).await;
    let answer = rdg.recv(10 * SEC).await.expect("an answer to CLOSE_CHANNEL");
    assert_eq!(answer.packet(), GatewayPacket::CloseChannelResponse { status: 0 });
    assert!(rdg.ends_within(10 * SEC).await);
    let records = gw.records_where(1, |l| l["event"] == "session");
    let rec = &records[0];
    assert_eq!(rec["via"], "rd_gateway", "{rec}");
    assert_eq!(
        (rec["user"].as_str(), rec["target"].as_str()),
        (Some("alice"), Some("desk"))
    );
    assert_eq!(rec["protocol"], "rdp");
    assert_eq!(rec["bytes_client_to_target"], payload.len() as u64, "{rec}");
    assert_eq!(rec["bytes_target_to_client"], payload.len() as u64, "{rec}");
    assert_eq!(rec["ended"], "client_closed", "{rec}");
}

/// By its configured address too (what a client sends when the user typed the address), but only
/// the address of the target the token is for.
#[tokio::test]
async fn a_channel_names_its_target_by_name_or_configured_address() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "");
    let token = gw.token("alice", "desk");
    let mut rdg = RdgClient::websocket(&gw).await.unwrap();
    let host = echo.addr.ip().to_string();
    rdg.open_channel(Some(&token), &host, echo.addr.port())
        .await
        .expect("by address");
    rdg.echoes(b"by address").await;
    drop(rdg);
    let records = gw.records_where(1, |l| l["event"] == "session");
    // Both desk and desk2 have this address: the token's target is the one granted.
    assert_eq!(records[0]["target"], "desk");
}

/// The HTTP transport: many pairs at once on a two-core gateway, so halves land on the same core
/// and on different cores (the kernel spreads connections by their ports); each carries its
/// own bytes.
#[tokio::test]
async fn http_transport_pairs_are_joined_on_any_core() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "");
    let token = gw.token("alice", "desk");
    let mut tasks = Vec::new();
    for i in 0..12u32 {
        let (addr, token) = (gw.addr(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut rdg = RdgClient::pair(&addr, &connection_id()).await.expect("pair");
            rdg.open_channel(Some(&token), "desk", 3389).await.expect("channel");
            let payload: Vec<u8> = (0..70_000u32).map(|b| (b * (i + 3) % 251) as u8).collect();
            for part in payload.chunks(30_000) {
                rdg.echoes(part).await;
            }
            rdg
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap());
    }
    drop(open);
    let records = gw.records_where(12, |l| l["event"] == "session");
    assert!(
        records
            .iter()
            .all(|r| r["via"] == "rd_gateway" && r["bytes_client_to_target"] == 70_000),
        "{records:?}"
    );
}

/// Halves that do not meet: an `RDG_IN_DATA` with no `RDG_OUT_DATA` waiting (another node's,
/// behind a balancer without affinity), one from another client address than its
/// `RDG_OUT_DATA` (someone else's pair), a second `RDG_OUT_DATA` with the same id.
#[tokio::test]
async fn unmatched_http_halves_are_refused_clearly() {
    use futures_lite::AsyncWriteExt;
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "request_timeout = \"3s\"");
    let id = connection_id();
    let half = |method: &str| {
        [
            rdgateway::request(method, &id, false, "RDG-Auth-Scheme: PAA\r\n"),
            b"Content-Length: 0\r\n\r\n".to_vec(),
        ]
        .concat()
    };
    assert_eq!(status_for(&gw, &half("RDG_IN_DATA")).await, 404);
    let denied = denials(&gw, 1);
    assert!(
        denied[0]["reason"].as_str().unwrap().contains("same node"),
        "{denied:?}"
    );
    // An RDG_OUT_DATA waits for its other half.
    let mut out = portcullis_testkit::client::tls_connect(&gw).await;
    out.write_all(&half("RDG_OUT_DATA")).await.unwrap();
    out.flush().await.unwrap();
    let mut answer = vec![0u8; 12];
    futures_lite::AsyncReadExt::read_exact(&mut out, &mut answer)
        .await
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    // Another client cannot join it, and a second RDG_OUT_DATA cannot take its id.
    let other = portcullis_testkit::client::From {
        addr: gw.addr(),
        source: "127.0.0.2".parse().unwrap(),
    };
    assert_eq!(status_for(&other, &half("RDG_IN_DATA")).await, 403);
    assert_eq!(status_for(&gw, &half("RDG_OUT_DATA")).await, 409);
    let denied = denials(&gw, 3);
    assert!(
        denied[1]["reason"].as_str().unwrap().contains("another client"),
        "{denied:?}"
    );
    assert!(
        denied[2]["reason"].as_str().unwrap().contains("open already"),
        "{denied:?}"
    );
    // The rightful client still can.
    assert_eq!(status_for(&gw, &half("RDG_IN_DATA")).await, 200);
}

/// A half that waits for its other half costs no CPU while it waits (a waiting RDG_OUT_DATA is
/// an unauthenticated client's to open): the gateway process is idle meanwhile.
#[tokio::test]
async fn waiting_halves_hold_no_cpu() {
    use futures_lite::AsyncWriteExt;
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "request_timeout = \"30s\"");
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let out = [
            rdgateway::request("RDG_OUT_DATA", &connection_id(), false, "RDG-Auth-Scheme: PAA\r\n"),
            b"Content-Length: 0\r\n\r\n".to_vec(),
        ]
        .concat();
        let mut tls = portcullis_testkit::client::tls_connect(&gw).await;
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        waiting.push(tls);
    }
    tokio::time::sleep(SEC / 2).await;
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // utime and stime, in clock ticks (fields 14 and 15 of the line).
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = cpu();
    tokio::time::sleep(2 * SEC).await;
    let spent = cpu() - before;
    // A core spinning for its waiting half spends 80 to 160 ticks in 2 s (100 ticks a second).
    assert!(
        spent < 30,
        "the gateway spent {spent} ticks of CPU in 2 s with 4 halves waiting"
    );
    drop(waiting);
}

#[tokio::test]
async fn refusals_answer_with_the_protocol_code_and_are_audited() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "");
    let desk = gw.token("alice", "desk");
    let other_key = portcullis_core::keys::generate().unwrap().0;
    let forged = portcullis_core::keys::issue(other_key.as_bytes(), "alice", "desk", 60 * SEC).unwrap();
    let cases: Vec<(Option<String>, &str, u16, u32, &str)> = vec![
        (
            None,
            "desk",
            3389,
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            "missing token",
        ),
        (
            Some("garbage".into()),
            "desk",
            3389,
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            "token",
        ),
        (
            Some(forged),
            "desk",
            3389,
            hresult::E_PROXY_COOKIE_AUTHENTICATION_ACCESS_DENIED,
            "signature",
        ),
        // A token for another target, a target that is not alice's, hosts not configured.
        (
            Some(desk.clone()),
            "desk2",
            3389,
            hresult::E_PROXY_RAP_ACCESSDENIED,
            "another target",
        ),
        (
            Some(gw.token("alice", "elsewhere")),
            "elsewhere",
            3389,
            hresult::E_PROXY_RAP_ACCESSDENIED,
            "not allowed",
        ),
        (
            Some(desk.clone()),
            "10.9.9.9",
            3389,
            hresult::E_PROXY_RAP_ACCESSDENIED,
            "unknown target",
        ),
        (
            Some(desk.clone()),
            "127.0.0.1",
            22,
            hresult::E_PROXY_RAP_ACCESSDENIED,
            "unknown target",
        ),
        (
            Some(gw.token("alice", "dead")),
            "dead",
            3389,
            hresult::E_PROXY_TS_CONNECTFAILED,
            "unreachable",
        ),
    ];
    for (i, (token, resource, port, code, reason)) in cases.iter().enumerate() {
        let mut rdg = RdgClient::websocket(&gw).await.unwrap();
        let got = rdg.open_channel(token.as_deref(), resource, *port).await;
        assert_eq!(got, Err(*code), "case {i}: {resource}");
        assert!(rdg.ends_within(10 * SEC).await, "case {i}: the connection stays open");
        let denied = denials(&gw, i + 1);
        let last = &denied[i];
        assert!(last["reason"].as_str().unwrap().contains(reason), "case {i}: {last}");
        // Never the token in the audit log.
        if let Some(t) = token {
            assert!(!last.to_string().contains(t.as_str()), "token in the audit record");
        }
    }
    // Only the unreachable target was dialled; the refused ones never reached the echo server.
    assert_eq!(echo.accepted(), 0);
    // The same refusals on the HTTP transport.
    let mut rdg = RdgClient::pair(&gw, &connection_id()).await.unwrap();
    let got = rdg.open_channel(Some(&desk), "desk2", 3389).await;
    assert_eq!(got, Err(hresult::E_PROXY_RAP_ACCESSDENIED));
    assert!(rdg.ends_within(10 * SEC).await);
}

/// A client asking for NTLM (no `RDG-Auth-Scheme: PAA`), or another method, is refused before any
/// packet.
#[tokio::test]
async fn requests_without_a_gateway_access_token_are_refused() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "");
    let ntlm = [
        rdgateway::request(
            "RDG_OUT_DATA",
            &connection_id(),
            true,
            "Authorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw==\r\n",
        ),
        b"\r\n".to_vec(),
    ]
    .concat();
    assert_eq!(status_for(&gw, &ntlm).await, 401);
    let get = b"GET /remoteDesktopGateway/ HTTP/1.1\r\nHost: x\r\nRDG-Auth-Scheme: PAA\r\n\r\n";
    assert_eq!(status_for(&gw, get).await, 405);
    let denied = denials(&gw, 2);
    assert!(denied[0]["reason"].as_str().unwrap().contains("PAA"), "{denied:?}");
}

/// Malformed or out-of-order packets at each step end that tunnel (audited), and never another.
#[tokio::test]
async fn malformed_packets_at_each_step_end_only_their_tunnel() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "");
    let token = gw.token("alice", "desk");
    let mut good = RdgClient::websocket(&gw).await.unwrap();
    good.open_channel(Some(&token), "desk", 3389).await.unwrap();
    let cookie = portcullis_protocols::tsgu::utf16z(&token);
    let steps: Vec<ClientPacket<'_>> = vec![
        rdgateway::handshake(),
        rdgateway::tunnel_create(Some(&cookie)),
        rdgateway::tunnel_auth(),
        rdgateway::channel_create("desk", 3389),
    ];
    let garbage: [&[u8]; 4] = [
        // A length shorter than the header; a type the gateway never takes; a truncated packet;
        // data before the channel is open.
        &[1, 0, 0, 0, 4, 0, 0, 0],
        &[0x55, 0, 0, 0, 8, 0, 0, 0],
        &[4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0],
        &[0xA, 0, 0, 0, 11, 0, 0, 0, 1, 0, 0x41],
    ];
    for step in 0..steps.len() {
        for (g, bad) in garbage.iter().enumerate() {
            let mut rdg = RdgClient::websocket(&gw).await.unwrap();
            for p in &steps[..step] {
                rdg.send(p).await;
                let answer = rdg.recv(10 * SEC).await.expect("an answer");
                assert!(!matches!(answer.packet(), GatewayPacket::Data(_)));
            }
            rdg.send_bytes(bad).await;
            assert!(rdg.ends_within(10 * SEC).await, "step {step}, garbage {g}: still open");
        }
    }
    // Each was audited; the session that was open all along still works.
    let denied = denials(&gw, 16);
    assert!(denied.iter().all(|d| d["status"] == 400), "{denied:?}");
    good.echoes(b"unaffected").await;
    assert_eq!(echo.accepted(), 1);
}

/// A client that stops mid-handshake is dropped at the request timeout (audited), on both
/// transports; other tunnels carry on meanwhile.
#[tokio::test]
async fn a_client_stalling_mid_handshake_times_out() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo, "request_timeout = \"2s\"");
    let token = gw.token("alice", "desk");
    let mut stalled_ws = RdgClient::websocket(&gw).await.unwrap();
    stalled_ws.send(&rdgateway::handshake()).await;
    stalled_ws.recv(10 * SEC).await.expect("handshake response");
    let mut stalled_pair = RdgClient::pair(&gw, &connection_id()).await.unwrap();
    // An RDG_OUT_DATA whose RDG_IN_DATA never comes.
    let lonely = [
        rdgateway::request("RDG_OUT_DATA", &connection_id(), false, "RDG-Auth-Scheme: PAA\r\n"),
        b"Content-Length: 0\r\n\r\n".to_vec(),
    ]
    .concat();
    let mut alone = portcullis_testkit::client::tls_connect(&gw).await;
    futures_lite::AsyncWriteExt::write_all(&mut alone, &lonely)
        .await
        .unwrap();
    let mut good = RdgClient::websocket(&gw).await.unwrap();
    good.open_channel(Some(&token), "desk", 3389).await.unwrap();
    good.echoes(b"while others stall").await;
    assert!(
        stalled_ws.ends_within(10 * SEC).await,
        "stalled WebSocket client still connected"
    );
    assert!(stalled_pair.ends_within(10 * SEC).await, "stalled pair still connected");
    let rest = portcullis_testkit::client::read_to_close(&mut alone, 10 * SEC).await;
    assert!(String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"));
    let denied = denials(&gw, 3);
    assert_eq!(denied.iter().filter(|d| d["status"] == 408).count(), 3, "{denied:?}");
    good.echoes(b"after the timeouts").await;
}

/// A target's `clipboard` and `drives` reach RD Gateway clients as redirection flags (advice);
/// `native = false` keeps a target off the RD Gateway and the tunnel (403, audited).
#[tokio::test]
async fn target_policy_reaches_clients_and_browser_only_targets_are_refused() {
    use portcullis_protocols::tsgu::RedirectFlags;
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target_with("locked", echo.addr, "rdp", "clipboard = false\ndrives = false")
        .target_with("webonly", echo.addr, "rdp", "native = false")
        .user("alice", &["locked", "webonly"], "")
        .start();
    let mut rdg = RdgClient::websocket(&gw).await.unwrap();
    let cookie = portcullis_protocols::tsgu::utf16z(&gw.token("alice", "locked"));
    rdg.send(&rdgateway::handshake()).await;
    rdg.recv(10 * SEC).await.unwrap();
    rdg.send(&rdgateway::tunnel_create(Some(&cookie))).await;
    rdg.recv(10 * SEC).await.unwrap();
    rdg.send(&rdgateway::tunnel_auth()).await;
    let answer = rdg.recv(10 * SEC).await.unwrap();
    let GatewayPacket::TunnelAuthResponse(r) = answer.packet() else {
        panic!("expected a tunnel auth response")
    };
    assert_eq!(
        r.redirect_flags,
        Some(RedirectFlags::DISABLE_DRIVE | RedirectFlags::DISABLE_CLIPBOARD)
    );
    let webonly = gw.token("alice", "webonly");
    let mut rdg = RdgClient::websocket(&gw).await.unwrap();
    assert_eq!(
        rdg.open_channel(Some(&webonly), "webonly", 3389).await,
        Err(hresult::E_PROXY_RAP_ACCESSDENIED)
    );
    assert_eq!(WsClient::refused_tunnel(&gw, "webonly", &webonly).await, 403);
    let denied = gw.records_where(2, |l| l["event"] == "denied");
    assert!(
        denied
            .iter()
            .all(|d| d["reason"].as_str().unwrap().contains("browser only")),
        "{denied:?}"
    );
    assert_eq!(echo.accepted(), 0);
}
