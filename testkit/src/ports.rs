//! Loopback ports. Every test takes fresh ones: a gateway that just exited leaves its io_uring
//! listeners (SO_REUSEPORT) alive for a moment, and a new one on the same port would share them.

use std::net::TcpListener;

/// A free loopback port: bind to 0 and release it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// A loopback address nothing listens on: connecting to it is refused.
pub fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Whether something listens on the loopback TCP `port` (from /proc, so checking makes no
/// connection the server could count or log).
pub fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.len() > 3 && cols[1].ends_with(&want) && cols[3] == "0A"
        })
    })
}
