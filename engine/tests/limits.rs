//! Connection limits, from the outside: one address cannot take every connection (a cap per
//! client, a rate of new ones), the whole gateway has a cap below its descriptors, connections
//! that never finish TLS are bounded and expire, the open-files limit is raised at start, and
//! running out of descriptors is neither a hot loop nor a log line per failure.

use portcullis_protocols::ws::CloseCode;
use portcullis_testkit::client::From;
use portcullis_testkit::process::wait_until;
use portcullis_testkit::*;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A plain TCP connection from `source`, nothing sent.
fn raw_from(gw: &Gateway, source: &str) -> std::net::TcpStream {
    let socket = bound_connect(gw.addr(), ip(source));
    socket.set_read_timeout(Some(5 * SEC)).unwrap();
    socket
}

/// std has no bind-before-connect; tokio does: connect on a throwaway runtime, on its own thread
/// (the tests' runtime cannot block).
fn bound_connect(addr: SocketAddr, source: IpAddr) -> std::net::TcpStream {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::new(source, 0)).unwrap();
            s.connect(addr).await.unwrap().into_std().unwrap()
        })
    })
    .join()
    .unwrap()
}

/// Whether the gateway has closed this connection (without a byte: a refusal before TLS).
fn is_closed(conn: &std::net::TcpStream) -> bool {
    let _ = conn.set_nonblocking(true);
    let mut byte = [0u8; 1];
    match conn.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// How many of `conns` are closed, once at least `want` are (or after 5 s). Refusals close at
/// once; held connections stay open for the handshake timeout, set long where this is used.
fn closed_count(conns: &[std::net::TcpStream], want: usize) -> usize {
    let count = || conns.iter().filter(|c| is_closed(c)).count();
    wait_until(5 * SEC, || count() >= want);
    count()
}

/// Waits until a new connection from `source` is held again (the gateway freed places).
fn held_again(gw: &Gateway, source: &str) -> bool {
    wait_until(10 * SEC, || {
        let c = raw_from(gw, source);
        // A refusal closes at once; a held connection is still open a moment later.
        !wait_until(Duration::from_millis(300), || is_closed(&c))
    })
}

/// A tunnel from `source` works (echo through it).
async fn tunnel_works(gw: &Gateway, source: &str) {
    let ep = From {
        addr: gw.addr(),
        source: ip(source),
    };
    let mut ws = WsClient::open(&ep, "echo", &gw.token("alice", "echo")).await;
    ws.echoes(b"still served").await;
    ws.send_close(CloseCode::NORMAL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[limits]\nmax_connections_per_client = 3\n")
        .start();
    // Three idle connections from 127.0.0.5 are held; the fourth is closed at once.
    let mut conns: Vec<_> = (0..4).map(|_| raw_from(&gw, "127.0.0.5")).collect();
    assert_eq!(
        closed_count(&conns, 1),
        1,
        "one of four connections of one client refused"
    );
    // Others are served meanwhile; when one of its connections ends, the client gets a place back.
    tunnel_works(&gw, "127.0.0.6").await;
    conns.retain(|c| !is_closed(c));
    conns.pop();
    assert!(held_again(&gw, "127.0.0.5"), "the client's place was not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_of_a_client_are_rate_limited() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[limits]\nnew_connections_per_second = 2\n")
        .start();
    // A burst of twice the rate is allowed, then connections are refused until tokens come back.
    let conns: Vec<_> = (0..8).map(|_| raw_from(&gw, "127.0.0.7")).collect();
    let refused = closed_count(&conns, 3);
    assert!(
        (3..=4).contains(&refused),
        "{refused} of 8 refused at 2 per second (burst 4)"
    );
    // Another address is not affected.
    tunnel_works(&gw, "127.0.0.8").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_holds_at_most_max_connections() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[limits]\nmax_connections = 16\nmax_unauthenticated = 64\nearly_drop_from = 32\n")
        .session("handshake_timeout = \"30s\"")
        .start();
    // 24 idle connections from 24 addresses: 16 held, the rest closed at once.
    let conns: Vec<_> = (0..24).map(|i| raw_from(&gw, &format!("127.0.1.{}", i + 1))).collect();
    assert_eq!(closed_count(&conns, 8), 8, "16 of 24 held");
    // When they go, their places are free again.
    drop(conns);
    assert!(held_again(&gw, "127.0.0.9"));
    tunnel_works(&gw, "127.0.0.9").await;
}

/// A flood of connections that never start TLS, from many addresses: the gateway holds at most
/// `max_unauthenticated` of them, drops the rest at once, and serves again once they time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_bounded_and_expire() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[limits]\nmax_unauthenticated = 16\nearly_drop_from = 8\n")
        .session("handshake_timeout = \"1s\"")
        .start();
    let flood: Vec<_> = (0..60).map(|i| raw_from(&gw, &format!("127.0.2.{}", i + 1))).collect();
    let held = flood.len() - closed_count(&flood, 60 - 15);
    assert!((8..16).contains(&held), "{held} of 60 unauthenticated connections held");
    // They expire with the handshake timeout; then a user gets through.
    let expired = wait_until(10 * SEC, || flood.iter().all(is_closed));
    assert!(expired, "idle connections outlived the handshake timeout");
    tunnel_works(&gw, "127.0.0.10").await;
}

/// At start the soft open-files limit is raised to the hard one, and the capacity derived from it
/// is logged; when descriptors run out anyway (caps set above them here), accepting backs off and
/// says so once, not once per failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_are_raised_and_running_out_is_logged_once() {
    let echo = EchoTarget::start();
    let gw = Gateway::builder()
        .target("echo", echo.addr, "tcp")
        .toml("[limits]\nmax_connections = 100000\nmax_connections_per_client = 100000\nnew_connections_per_second = 100000\nmax_unauthenticated = 100000\nearly_drop_from = 50000\n")
        .session("handshake_timeout = \"3s\"")
        .open_files(64, 192)
        .start();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((fields[3], fields[4]), ("192", "192"), "{line}");
    assert!(
        gw.log().contains("open_files=192"),
        "capacity not logged:\n{}",
        gw.log()
    );
    // More idle connections than descriptors.
    let conns: Vec<_> = (0..300)
        .map(|i| raw_from(&gw, &format!("127.0.3.{}", i % 250 + 1)))
        .collect();
    let logged = wait_until(5 * SEC, || gw.log().contains("accept failing"));
    assert!(logged, "running out of descriptors was not logged:\n{}", gw.log());
    // More accepts fail while they are held (every 100 ms per worker): still one line.
    wait_until(SEC, || false);
    let lines = gw.log().matches("accept failing").count();
    assert!(lines <= 2, "{lines} lines for one run of failures (two workers)");
    drop(conns);
    // It recovers once the connections are gone.
    assert!(held_again(&gw, "127.0.0.11"));
    tunnel_works(&gw, "127.0.0.12").await;
}
