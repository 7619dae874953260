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
