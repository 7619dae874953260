//! The admin listener (`[admin] listen`): health and readiness for balancers, Prometheus
//! metrics, and the admin API (live sessions, terminate, revoke) for operators.
//!
//! It runs on threads of its own, never on the relaying cores: one thread accepts, and each
//! connection gets a short-lived thread (at most `MAX_CONNECTIONS` at once; more are closed at
//! once), with a timeout on every read and write, one request per connection. Plain HTTP on a
//! loopback address; TLS with the gateway's certificate on any other, since admin tokens cross
//! the network. `/healthz` and `/readyz` need no credential; everything else an admin token
//! (`Policy::authorize_admin`), sent as `Authorization: Bearer`.

mod api;
pub mod service;

use crate::error::{Error, Result};
use crate::server::Shared;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Admin connections served at once; more are closed at once (balancers probe, operators
/// script: a handful is plenty, and a flood cannot start threads without bound).
const MAX_CONNECTIONS: usize = 16;
/// The whole request (head and body) must arrive within this, and each write finish within it.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Request heads and bodies of the admin API are small.
const MAX_HEAD: usize = 8 * 1024;
const MAX_BODY: usize = 4 * 1024;

/// Binds the admin listener and starts serving; returns the bound address (the port may have
/// been 0).
pub fn start(addr: SocketAddr, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) -> Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).map_err(|e| Error::Startup(format!("cannot listen on {addr} (admin): {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Io("admin listener address", e))?;
    let tls = tls.filter(|_| !addr.ip().is_loopback());
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    // Out of descriptors: back off rather than spin.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    active.fetch_sub(1, Ordering::AcqRel);
                    continue; // dropped: closed at once
                }
                let (shared, tls, done) = (shared.clone(), tls.clone(), active.clone());
                let spawned = std::thread::Builder::new().name("admin-conn".into()).spawn(move || {
                    serve(stream, &shared, tls);
                    done.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    active.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })
        .map_err(|e| Error::Io("cannot start the admin thread", e))?;
    Ok(bound)
}

fn serve(stream: TcpStream, shared: &Shared, tls: Option<Arc<rustls::ServerConfig>>) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_nodelay(true);
    match tls {
        None => exchange(stream, peer, shared),
        Some(config) => {
            let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut stream = stream;
            // The handshake first: a client that does not speak TLS is closed at once (after
            // rustls' alert), not left waiting for an answer; one that drips it is closed at the
            // deadline (each read alone is bounded by the socket's timeout).
            let deadline = Instant::now() + IO_TIMEOUT;
            while conn.is_handshaking() {
                if Instant::now() > deadline || conn.complete_io(&mut stream).is_err() {
                    let _ = conn.write_tls(&mut stream);
                    return;
                }
            }
            let mut tls = rustls::StreamOwned::new(conn, stream);
            exchange(&mut tls, peer, shared);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    }
}

/// One request, one answer.
fn exchange(mut io: impl Read + Write, peer: SocketAddr, shared: &Shared) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let answer = match read_request(&mut io, deadline) {
        Ok((buf, head_len)) => api::handle(&buf, head_len, peer, shared),
        Err(status) => api::Answer::text(status, portcullis_protocols::http::reason_phrase(status)),
    };
    let _ = io.write_all(&answer.into_bytes());
    let _ = io.flush();
}

/// Health checkers often speak HTTP/1.0 (HAProxy's `option httpchk` does by default), which the
/// shared head parser refuses on the public port. Here every answer closes the connection
/// anyway, so a 1.0 request line is read as 1.1 (same length, rewritten in place).
fn accept_http10(buf: &mut [u8]) {
    const OLD: &[u8] = b" HTTP/1.0\r\n";
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return;
    };
    let line_end = end + 2;
    if line_end >= OLD.len() && &buf[line_end - OLD.len()..line_end] == OLD {
        buf[line_end - 3] = b'1';
    }
}

/// Reads a request head and its body (Content-Length); `Err(status)` when it is malformed,
/// too large or too slow.
fn read_request(io: &mut impl Read, deadline: Instant) -> std::result::Result<(Vec<u8>, usize), u16> {
    use portcullis_protocols::http::{parse_head, HeadLimits};
    let limits = HeadLimits {
        max_bytes: MAX_HEAD,
        max_headers: 32,
    };
    let mut buf = vec![0u8; MAX_HEAD + MAX_BODY];
    let mut filled = 0;
    let mut want: Option<usize> = None;
    loop {
        if Instant::now() > deadline {
            return Err(408);
        }
        if want.is_none() {
            match parse_head(&buf[..filled], limits) {
                Ok(Some(head)) => {
                    let body = match head.header("content-length") {
                        None => 0,
                        Some(v) => v.trim().parse::<usize>().map_err(|_| 400u16)?,
                    };
                    if body > MAX_BODY {
                        return Err(413);
                    }
                    want = Some(head.len + body);
                }
                Ok(None) if filled >= MAX_HEAD => return Err(431),
                Ok(None) => {}
                Err(e) => return Err(e.status()),
            }
        }
        if let Some(total) = want {
            if filled >= total {
                let head_len = parse_head(&buf[..filled], limits).ok().flatten().map_or(0, |h| h.len);
                buf.truncate(total);
                return Ok((buf, head_len));
            }
        }
        match io.read(&mut buf[filled..]) {
            Ok(0) => return Err(400),
            Ok(n) => {
                filled += n;
                accept_http10(&mut buf[..filled]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(408),
        }
    }
}
