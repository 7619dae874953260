//! The PROXY protocol behind a real HAProxy (TCP mode, `send-proxy` and `send-proxy-v2`): the
//! gateway takes the client's address from the header of a trusted balancer, for its audit
//! records (and its limits and sign-in throttling), and refuses what it must not believe: a header
//! from an untrusted address, a connection without one from a trusted balancer.

use portcullis_protocols::proxy;
use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::From;
use portcullis_testkit::haproxy::{Haproxy, Send};
use portcullis_testkit::*;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A gateway that trusts PROXY headers from 127.0.0.1 only (where HAProxy connects from).
fn gateway(echo: &targets::TcpTarget) -> Gateway {
    Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[proxy_protocol]\ntrusted = [\"127.0.0.1/32\"]\n")
        .start()
}

/// One echo through a tunnel opened at `ep`, then a clean close.
async fn echo_through(ep: &impl client::Endpoint, gw: &Gateway) {
    let mut ws = WsClient::open(ep, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(b"through the balancer").await;
    ws.send_close(CloseCode::NORMAL).await;
    ws.recv_close(10 * SEC).await;
}

#[tokio::test]
async fn the_balancers_header_names_the_client() {
    let echo = EchoTarget::start();
    let gw = gateway(&echo);
    for (send, client) in [(Send::ProxyV2, "127.0.0.3"), (Send::ProxyV1, "127.0.0.4")] {
        let haproxy = Haproxy::start(gw.addr(), send);
        echo_through(
            &From {
                addr: haproxy.addr(),
                source: ip(client),
            },
            &gw,
        )
        .await;
        let rec = gw
            .records_where(1, |r| {
                r["event"] == "session" && r["client"].as_str().unwrap_or("").starts_with(client)
            })
            .pop()
            .unwrap_or_else(|| panic!("no session of {client}: {:?}", gw.audit_lines(0)));
        assert_eq!(rec["ended"], "client_closed", "{send:?}: {rec}");
    }
    // A client of an untrusted address needs no header and is audited as itself.
    echo_through(
        &From {
            addr: gw.addr(),
            source: ip("127.0.0.2"),
        },
        &gw,
    )
    .await;
    assert_eq!(gw.records_where(3, |r| r["event"] == "session").len(), 3);
    let direct = gw.records_where(1, |r| r["client"].as_str().unwrap_or("").starts_with("127.0.0.2:"));
    assert_eq!(direct.len(), 1, "{:?}", gw.audit_lines(0));
}

/// What the gateway must not believe: a header from an untrusted address (anyone could claim to
/// be anyone), and a connection from the balancer's address without one (the balancer would
/// then be every client).
#[tokio::test]
async fn headers_are_believed_from_trusted_balancers_only() {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let echo = EchoTarget::start();
    let gw = gateway(&echo);
    // Untrusted 127.0.0.2 sends a header claiming 10.9.9.9: not TLS, so no answer at all.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip("127.0.0.2"), 0)).unwrap();
    let tcp = socket.connect(gw.addr()).await.unwrap();
    let mut tcp = tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp);
    tcp.write_all(&proxy::encode_v2("10.9.9.9:4000".parse().unwrap(), gw.addr()))
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(10 * SEC, tcp.read_to_end(&mut answer)).await;
    assert!(answer.len() < 16, "the gateway answered a forged header: {answer:?}");
    // Trusted 127.0.0.1 starts TLS without a header: refused before TLS.
    let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let handshake = futures_rustls::TlsConnector::from(client::insecure_tls())
        .connect(name, tokio_util::compat::TokioAsyncReadCompatExt::compat(tcp));
    let refused = tokio::time::timeout(20 * SEC, handshake)
        .await
        .expect("an answer in time");
    assert!(refused.is_err(), "TLS from the balancer's address without a header");
    // Neither left a session or a client address of their own in the audit log.
    let lines = gw.audit_lines(0);
    assert!(
        lines
            .iter()
            .all(|l| !l["client"].as_str().unwrap_or("").starts_with("10.9.9.9")),
        "{lines:?}"
    );
    assert!(gw.records_where(0, |r| r["event"] == "session").is_empty());
}
