//! Small TCP targets on fresh loopback ports, on plain threads (independent of the test's
//! runtime), counting the connections they accept: what a test needs to see whether the gateway
//! reached a target at all.

use crate::process::wait_until;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A server that runs `handler` on its own thread for each connection it accepts.
pub struct TcpTarget {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl TcpTarget {
    pub fn start(handler: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a target");
        let addr = listener.local_addr().expect("target address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let handler = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                std::thread::spawn(move || handler(conn));
            }
        });
        TcpTarget { addr, accepted }
    }

    /// Sends `greeting` to each client, keeps the connection open for `linger`, then hangs up.
    pub fn greeting(greeting: &'static [u8], linger: Duration) -> TcpTarget {
        Self::start(move |mut conn| {
            let _ = conn.write_all(greeting);
            std::thread::sleep(linger);
        })
    }

    /// Reads what the client sends (up to 5 s), answers `answer`, waits for the client's next
    /// bytes (when it answered), then hangs up.
    pub fn answering(answer: &'static [u8]) -> TcpTarget {
        Self::start(move |mut conn| {
            let mut buf = [0u8; 512];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(answer);
            if !answer.is_empty() {
                let _ = conn.read(&mut buf);
            }
        })
    }

    /// How many connections it accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The count once it reaches `n`, or whatever it is after 5 s: the gateway answers 101 as soon
    /// as its connect completes, which can be before the accept loop here has counted it.
    pub fn accepted_reaching(&self, n: usize) -> usize {
        wait_until(Duration::from_secs(5), || self.accepted() >= n);
        self.accepted()
    }
}

/// A TCP echo target: every byte back, and the half-close too (FIN after the last byte).
pub struct EchoTarget;

impl EchoTarget {
    pub fn start() -> TcpTarget {
        TcpTarget::start(|mut conn| {
            let mut buf = [0u8; 65536];
            while let Ok(n @ 1..) = conn.read(&mut buf) {
                if conn.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = conn.shutdown(std::net::Shutdown::Write);
        })
    }
}
