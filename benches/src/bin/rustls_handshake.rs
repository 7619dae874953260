//! rustls alone: TLS handshakes between a client and a server in memory, on one thread, with the
//! gateway's own configurations from `portcullis::tls` (ring provider, TLS 1.3 and 1.2, ALPN
//! `http/1.1`; the client is the load generator's `--insecure` configuration, which skips the
//! chain check but verifies the handshake signature). The certificate is the one `portcullis
//! serve` generates without a `[tls]` section (rcgen's default: ECDSA P-256 with SHA-256), or the
//! PEM files given with `--cert` and `--key`.
//!
//! This is the reference of the `connect` scenario in benches/compare.sh: how many handshakes one
//! core can do when it does nothing else. Two kinds are measured, each for `--duration`:
//! `full` (client resumption off, as the load generator's `--no-tls-resume` and every new
//! `portcullis connect` process) and `resumed` (TLS 1.3 tickets from the server's session cache,
//! as a client that keeps its configuration). For each: handshakes per second with both ends on
//! this core, and the server's and the client's share, timed around their own calls alone.
//!
//! It also measures the heap a server connection keeps once open (`--memory N`, default 1000): N
//! connections handshake and exchange a request-sized and a response-sized message (as an upgrade
//! does), the clients are dropped and the live heap growth per kept server connection is counted
//! by a counting allocator. That is rustls's share of an idle tunnel's memory.
//!
//! Usage: `rustls-handshake [--duration SECS] [--memory N] [--cert PEM --key PEM] [--json FILE]`.
//! Pin it to one core for a per-core figure (`taskset -c 0 rustls-handshake`).

use portcullis::tls::{client_config, Identity, ServerTrust};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Args {
    duration: Duration,
    memory: usize,
    cert: Option<(PathBuf, PathBuf)>,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(3),
        memory: 1000,
        cert: None,
        json: None,
    };
    let (mut cert, mut key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--duration" => {
                let v = value("--duration")?;
                let secs: f64 = v
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|_| format!("--duration: not a number of seconds: {v:?}"))?;
                if !(secs.is_finite() && secs > 0.0 && secs <= 600.0) {
                    return Err(format!("--duration must be between 0 and 600 seconds, got {v}"));
                }
                args.duration = Duration::from_secs_f64(secs);
            }
            "--memory" => {
                let v = value("--memory")?;
                args.memory = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| format!("--memory: a number of connections from 1 to 1000000, got {v:?}"))?;
            }
            "--cert" => cert = Some(PathBuf::from(value("--cert")?)),
            "--key" => key = Some(PathBuf::from(value("--key")?)),
            "--json" => args.json = Some(PathBuf::from(value("--json")?)),
            "-h" | "--help" => {
                println!("usage: rustls-handshake [--duration SECS] [--memory N] [--cert PEM --key PEM] [--json FILE]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    args.cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(args)
}

/// Time spent in each side's calls during one kind of run.
#[derive(Default)]
struct Tally {
    handshakes: u64,
    wall: Duration,
    server: Duration,
    client: Duration,
    resumed: u64,
    version: Option<String>,
    suite: Option<String>,
    kx: Option<String>,
}

/// Moves everything `from` wants to write into `to`, and lets `to` process it. Returns the time
/// spent in `from` (writing) and in `to` (reading and processing).
fn pump(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) -> Result<(Duration, Duration), rustls::Error> {
    let t0 = Instant::now();
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("writing to a Vec cannot fail");
    }
    let t1 = Instant::now();
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("reading from a slice cannot fail");
        to.process_new_packets()?;
    }
    Ok((t1 - t0, t1.elapsed()))
}

fn handshake(
    server_cfg: &Arc<ServerConfig>,
    client_cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    buf: &mut Vec<u8>,
    tally: &mut Tally,
) -> Result<(), rustls::Error> {
    handshake_pair(server_cfg, client_cfg, name, buf, tally).map(drop)
}

fn handshake_pair(
    server_cfg: &Arc<ServerConfig>,
    client_cfg: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    buf: &mut Vec<u8>,
    tally: &mut Tally,
) -> Result<(Connection, Connection), rustls::Error> {
    let t = Instant::now();
    let mut server = Connection::Server(ServerConnection::new(server_cfg.clone())?);
    let ts = t.elapsed();
    let t = Instant::now();
    let mut client = Connection::Client(ClientConnection::new(client_cfg.clone(), name.clone())?);
    tally.client += t.elapsed();
    tally.server += ts;
    for _ in 0..16 {
        let (c, s) = pump(&mut client, &mut server, buf)?;
        tally.client += c;
        tally.server += s;
        let (s, c) = pump(&mut server, &mut client, buf)?;
        tally.client += c;
        tally.server += s;
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() && !server.wants_write() {
            tally.handshakes += 1;
            if client.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                tally.resumed += 1;
            }
            if tally.version.is_none() {
                tally.version = server.protocol_version().map(|v| format!("{v:?}"));
                tally.suite = server.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()));
                tally.kx = server
                    .negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name()));
            }
            return Ok((client, server));
        }
    }
    Err(rustls::Error::General("handshake did not finish in 16 flights".into()))
}

fn run(kind: &str, server_cfg: &Arc<ServerConfig>, client_cfg: &Arc<ClientConfig>, duration: Duration) -> Tally {
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut tally = Tally::default();
    // Warm up (and, for resumption, get the first tickets), then measure.
    for _ in 0..20 {
        handshake(server_cfg, client_cfg, &name, &mut buf, &mut Tally::default())
            .unwrap_or_else(|e| panic!("{kind} handshake failed: {e}"));
    }
    let start = Instant::now();
    while start.elapsed() < duration {
        for _ in 0..10 {
            handshake(server_cfg, client_cfg, &name, &mut buf, &mut tally)
                .unwrap_or_else(|e| panic!("{kind} handshake failed: {e}"));
        }
    }
    tally.wall = start.elapsed();
    tally
}

/// Live heap bytes per open server connection after a handshake and an upgrade-sized exchange.
fn memory_per_connection(server_cfg: &Arc<ServerConfig>, client_cfg: &Arc<ClientConfig>, n: usize) -> f64 {
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut buf = Vec::with_capacity(64 * 1024);
    let request = vec![b'q'; 400];
    let response = vec![b'r'; 200];
    let mut scratch = vec![0u8; 4096];
    let mut open = |keep: &mut Vec<Connection>| {
        let (mut client, mut server) =
            handshake_pair(server_cfg, client_cfg, &name, &mut buf, &mut Tally::default()).expect("memory handshake");
        client.writer().write_all(&request).expect("client write");
        pump(&mut client, &mut server, &mut buf).expect("to server");
        let got = server.reader().read(&mut scratch).expect("server read");
        assert_eq!(got, request.len());
        server.writer().write_all(&response).expect("server write");
        pump(&mut server, &mut client, &mut buf).expect("to client");
        keep.push(server);
    };
    // Warm up: the server's session cache (256 entries) fills here and stays full afterwards.
    let mut warm = Vec::new();
    for _ in 0..300 {
        open(&mut warm);
    }
    drop(warm);
    let mut kept = Vec::with_capacity(n);
    let before = LIVE.load(Relaxed);
    for _ in 0..n {
        open(&mut kept);
    }
    let after = LIVE.load(Relaxed);
    drop(kept);
    ((after - before) as f64 / n as f64).round()
}

fn per_s(n: u64, d: Duration) -> f64 {
    (n as f64 / d.as_secs_f64().max(1e-9) * 10.0).round() / 10.0
}

fn report(t: &Tally) -> serde_json::Value {
    let us = |d: Duration| (d.as_secs_f64() * 1e6 / t.handshakes.max(1) as f64 * 10.0).round() / 10.0;
    json!({
        "handshakes": t.handshakes,
        "resumed": t.resumed,
        "seconds": t.wall.as_secs_f64(),
        "pairs_per_s": per_s(t.handshakes, t.wall),
        "server_per_s": per_s(t.handshakes, t.server),
        "client_per_s": per_s(t.handshakes, t.client),
        "server_us": us(t.server),
        "client_us": us(t.client),
        "protocol": t.version,
        "cipher_suite": t.suite,
        "key_exchange": t.kx,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rustls-handshake: {e}");
            return ExitCode::from(2);
        }
    };
    let (identity, cert) = match &args.cert {
        Some((c, k)) => match Identity::load(c, k) {
            Ok(i) => (i, format!("{} (from --cert)", c.display())),
            Err(e) => {
                eprintln!("rustls-handshake: error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        None => (
            Identity::self_signed(&[]).expect("rcgen generates a certificate"),
            "self-signed ECDSA P-256/SHA-256, as `portcullis serve` generates without [tls]".to_string(),
        ),
    };
    let tickets = rustls::crypto::ring::Ticketer::new().expect("a ticketer");
    let server_cfg = identity.server_config(tickets).expect("valid server config");
    let resuming = client_config(ServerTrust::Insecure).expect("valid client config");
    let mut fresh = (*resuming).clone();
    fresh.resumption = Resumption::disabled();
    let fresh = Arc::new(fresh);

    let full = run("full", &server_cfg, &fresh, args.duration);
    let resumed = run("resumed", &server_cfg, &resuming, args.duration);
    let conn_bytes = memory_per_connection(&server_cfg, &fresh, args.memory);
    let result = json!({
        "bench": "rustls-handshake",
        "rustls": "0.23 (ring provider, the gateway's portcullis::tls configurations)",
        "certificate": cert,
        "threads": 1,
        "full": report(&full),
        "resumed": report(&resumed),
        "memory": {
            "connections": args.memory,
            "server_connection_bytes": conn_bytes,
            "note": "live heap per open rustls ServerConnection after the handshake and a 400 B / 200 B exchange",
        },
    });
    let text = serde_json::to_string_pretty(&result).expect("JSON");
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, format!("{text}\n")) {
            eprintln!("rustls-handshake: error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    } else {
        println!("{text}");
    }
    let line = |name: &str, t: &Tally| {
        format!(
            "{name}: {:.0} handshakes/s with both ends on one core; server alone {:.0}/s ({:.1} µs each), client alone {:.0}/s",
            per_s(t.handshakes, t.wall),
            per_s(t.handshakes, t.server),
            t.server.as_secs_f64() * 1e6 / t.handshakes.max(1) as f64,
            per_s(t.handshakes, t.client),
        )
    };
    eprintln!(
        "rustls-handshake ({} {} {}): {}; {}; an open server connection keeps {:.1} KiB of heap",
        full.version.as_deref().unwrap_or("?"),
        full.suite.as_deref().unwrap_or("?"),
        full.kx.as_deref().unwrap_or("?"),
        line("full", &full),
        line("resumed", &resumed),
        conn_bytes / 1024.0
    );
    ExitCode::SUCCESS
}
