//! The report of benches/compare.sh: reads the JSON results of one run from a directory, prints
//! the markdown table (each measurement also as a ratio to the direct path) and the issue's
//! targets, and writes `summary.json` and an SVG chart (plotters, SVG backend only).
//!
//! Usage: `compare-report DIR [--svg FILE]` (default `DIR/chart.svg`).
//!
//! Layout of DIR, as compare.sh writes it:
//! - `meta.json`: date, machine, settings of the run;
//! - `<path>/{throughput,latency,connect,idle,ssh}.json`: portcullis-loadgen results, for the
//!   paths `direct`, `portcullis`, `rd-gateway`, `websockify`, `websockify-tls`, `websocat`,
//!   `websocat-tls`, `devolutions`, `wstunnel`;
//! - `<path>/{throughput,connect,ssh}_cpu_s`: CPU seconds the server (and its children) used
//!   during that scenario (for the direct path, the echo target's; none for direct `ssh`);
//! - `<path>/workers`: the server's worker count, when it has one;
//! - `iperf3.json`: `iperf3 -J` client output; `rustls.json`: the `rustls-handshake` result;
//!   `crypto.json`: `portcullis-loadgen crypto-floor` (AES-128-GCM alone, ns per byte).
//!
//! Missing files leave their cells empty ("–"); a run with errors is marked with `!`.

use plotters::prelude::*;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const PATHS: &[(&str, &str)] = &[
    ("direct", "direct TCP (loadgen tcp://)"),
    ("portcullis", "Portcullis (wss)"),
    ("rd-gateway", "Portcullis RD Gateway (wss, MS-TSGU)"),
    ("websockify", "websockify (ws)"),
    ("websockify-tls", "websockify (wss)"),
    ("websocat", "websocat (ws)"),
    ("websocat-tls", "websocat (wss)"),
    ("devolutions", "Devolutions Gateway (wss, /jet/fwd/tcp)"),
    ("wstunnel", "wstunnel (wss)"),
];

/// Paths whose client side is TLS (`wss://`).
fn is_tls(id: &str) -> bool {
    matches!(id, "portcullis" | "rd-gateway" | "devolutions" | "wstunnel") || id.ends_with("-tls")
}

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
}

fn read_num(p: &Path) -> Option<f64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// One path's numbers; None where not measured or failed outright.
#[derive(Default, Clone)]
struct Row {
    id: String,
    label: String,
    throughput_mb_s: Option<f64>,
    throughput_down_mb_s: Option<f64>,
    throughput_errors: u64,
    /// Server CPU per byte relayed each way (one byte up and its echo down), nanoseconds.
    throughput_cpu_ns_per_byte: Option<f64>,
    p99_ms: Option<f64>,
    p50_ms: Option<f64>,
    latency_sessions: Option<u64>,
    latency_rate: Option<f64>,
    latency_lost: u64,
    latency_errors: u64,
    sessions_per_s: Option<f64>,
    connect_errors: u64,
    connect_failed: u64,
    tls_resumed: Option<u64>,
    cpu_s: Option<f64>,
    completed: Option<u64>,
    per_cpu_s: Option<f64>,
    idle_kib: Option<f64>,
    idle_held: Option<u64>,
    idle_asked: Option<u64>,
    idle_processes: Option<u64>,
    idle_errors: u64,
    workers: Option<u64>,
    ssh_per_s: Option<f64>,
    ssh_p50_ms: Option<f64>,
    ssh_p99_ms: Option<f64>,
    ssh_completed: Option<u64>,
    ssh_failed: u64,
    ssh_errors: u64,
    /// Server CPU per whole SSH session, milliseconds (the SSH server's own work excluded).
    ssh_cpu_ms: Option<f64>,
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_u64()
}

fn load_row(dir: &Path, id: &str, label: &str) -> Option<Row> {
    let d = dir.join(id);
    if !d.is_dir() {
        return None;
    }
    let mut r = Row {
        id: id.into(),
        label: label.into(),
        workers: read_num(&d.join("workers")).map(|w| w as u64),
        ..Row::default()
    };
    if let Some(t) = read_json(&d.join("throughput.json")) {
        r.throughput_mb_s = f(&t, &["up_mb_s"]);
        r.throughput_down_mb_s = f(&t, &["down_mb_s"]);
        r.throughput_errors = u(&t, &["error_count"]).unwrap_or(0);
        r.throughput_cpu_ns_per_byte = match (read_num(&d.join("throughput_cpu_s")), u(&t, &["up_bytes"])) {
            (Some(cpu), Some(bytes)) if bytes > 0 => Some(cpu * 1e9 / bytes as f64),
            _ => None,
        };
    }
    if let Some(l) = read_json(&d.join("latency.json")) {
        r.p99_ms = f(&l, &["rtt", "p99_us"]).map(|v| v / 1000.0);
        r.p50_ms = f(&l, &["rtt", "p50_us"]).map(|v| v / 1000.0);
        r.latency_sessions = u(&l, &["sessions_opened"]);
        r.latency_rate = f(&l, &["achieved_rate_per_s"]);
        r.latency_lost = u(&l, &["lost"]).unwrap_or(0);
        r.latency_errors = u(&l, &["error_count"]).unwrap_or(0);
    }
    if let Some(c) = read_json(&d.join("connect.json")) {
        r.sessions_per_s = f(&c, &["sessions_per_s"]);
        r.completed = u(&c, &["completed"]);
        r.connect_failed = u(&c, &["failed"]).unwrap_or(0);
        r.connect_errors = u(&c, &["error_count"]).unwrap_or(0);
        r.tls_resumed = u(&c, &["tls_resumed"]);
        r.cpu_s = read_num(&d.join("connect_cpu_s"));
        r.per_cpu_s = match (r.completed, r.cpu_s) {
            (Some(n), Some(s)) if s > 0.0 => Some(n as f64 / s),
            _ => None,
        };
    }
    if let Some(i) = read_json(&d.join("idle.json")) {
        let procs = u(&i, &["gateway_processes_after"]);
        // A server that forks per connection: count the whole tree (Pss), else the process's RSS.
        let bytes = if procs.is_some_and(|p| p > 1) {
            f(&i, &["gateway_tree_pss_per_session_bytes"])
        } else {
            f(&i, &["gateway_rss_per_session_bytes"])
        };
        r.idle_kib = bytes.map(|b| b / 1024.0);
        r.idle_held = u(&i, &["held"]);
        r.idle_asked = u(&i, &["sessions"]);
        r.idle_processes = procs;
        r.idle_errors = u(&i, &["error_count"]).unwrap_or(0);
    }
    if let Some(x) = read_json(&d.join("ssh.json")) {
        r.ssh_per_s = f(&x, &["sessions_per_s"]);
        r.ssh_p50_ms = f(&x, &["steps", "total", "p50_us"]).map(|v| v / 1000.0);
        r.ssh_p99_ms = f(&x, &["steps", "total", "p99_us"]).map(|v| v / 1000.0);
        r.ssh_completed = u(&x, &["completed"]);
        r.ssh_failed = u(&x, &["failed"]).unwrap_or(0);
        r.ssh_errors = u(&x, &["error_count"]).unwrap_or(0);
        r.ssh_cpu_ms = match (read_num(&d.join("ssh_cpu_s")), r.ssh_completed) {
            (Some(cpu), Some(n)) if n > 0 => Some(cpu * 1000.0 / n as f64),
            _ => None,
        };
    }
    Some(r)
}

fn num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) if v.abs() >= 1.0 => format!("{v:.2}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!(" ({:.2}×)", v / b),
        _ => String::new(),
    }
}

fn mark(errors: u64) -> &'static str {
    if errors > 0 {
        " !"
    } else {
        ""
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: compare-report DIR [--svg FILE]");
        return ExitCode::from(2);
    };
    let mut svg = dir.join("chart.svg");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--svg", Some(p)) => svg = PathBuf::from(p),
            _ => {
                eprintln!("usage: compare-report DIR [--svg FILE]");
                return ExitCode::from(2);
            }
        }
    }
    if !dir.is_dir() {
        eprintln!("compare-report: error: {} is not a directory", dir.display());
        return ExitCode::FAILURE;
    }
    let rows: Vec<Row> = PATHS
        .iter()
        .filter_map(|(id, label)| load_row(&dir, id, label))
        .collect();
    let meta = read_json(&dir.join("meta.json")).unwrap_or(Value::Null);
    let iperf = read_json(&dir.join("iperf3.json"))
        .and_then(|v| f(&v, &["end", "sum_received", "bits_per_second"]))
        .map(|bps| bps / 8e6);
    let rustls = read_json(&dir.join("rustls.json")).unwrap_or(Value::Null);
    let crypto = read_json(&dir.join("crypto.json")).unwrap_or(Value::Null);
    let direct = rows.iter().find(|r| r.id == "direct").cloned().unwrap_or_default();

    let fleet = read_json(&dir.join("fleet").join("summary.json"));
    let (mut md, targets) = markdown(&rows, &direct, iperf, &rustls, &crypto, &meta);
    if let Some(fleet) = &fleet {
        md.push_str(&fleet_markdown(fleet));
    }
    print!("{md}");
    let summary = json!({
        "meta": meta,
        "iperf3_mb_s": iperf,
        "rustls": rustls,
        "crypto_floor": crypto,
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
        "targets": targets,
        "fleet": fleet,
    });
    let written = std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary).expect("JSON") + "\n",
    )
    .and_then(|_| std::fs::write(dir.join("table.md"), &md));
    if let Err(e) = written {
        eprintln!("compare-report: error: cannot write into {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = chart(&svg, &rows, iperf, f(&crypto, &["both_ways_ns_per_byte"]), &meta) {
        eprintln!("compare-report: error: cannot draw {}: {e}", svg.display());
        return ExitCode::FAILURE;
    }
    eprintln!("compare-report: wrote {}, summary.json, table.md", svg.display());
    ExitCode::SUCCESS
}

/// The fleet scenario (`fleet/summary.json`, written by benches/fleet.sh).
fn fleet_markdown(fleet: &Value) -> String {
    let list = |key: &str| {
        fleet["one_gateway"][key]
            .as_array()
            .map(|v| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "–".into())
    };
    let mut md = String::from("\n**Fleet** (benches/fleet.sh, same client and gateway binary):\n\n");
    let _ = writeln!(
        md,
        "- One gateway, sessions per gateway CPU-second: local store {}; Redis {}: Redis costs {} %.",
        list("local_sessions_per_cpu_s"),
        list("redis_sessions_per_cpu_s"),
        num(f(fleet, &["one_gateway", "redis_cost_percent"]))
    );
    let _ = writeln!(
        md,
        "- {} gateways on one Redis behind HAProxy: {} sessions/s, {} sessions per gateway CPU-second, {} KiB per idle session held through the balancer.",
        u(fleet, &["fleet", "nodes"]).map_or("–".into(), |n| n.to_string()),
        num(f(fleet, &["fleet", "sessions_per_s"])),
        num(f(fleet, &["fleet", "sessions_per_gateway_cpu_s"])),
        num(f(fleet, &["fleet", "idle_kib_per_session"]))
    );
    md
}

fn row_json(r: &Row) -> Value {
    json!({
        "path": r.id,
        "label": r.label,
        "throughput_up_mb_s": r.throughput_mb_s,
        "throughput_down_mb_s": r.throughput_down_mb_s,
        "throughput_server_cpu_ns_per_byte": r.throughput_cpu_ns_per_byte,
        "latency_p50_ms": r.p50_ms,
        "latency_p99_ms": r.p99_ms,
        "latency_sessions": r.latency_sessions,
        "latency_rate_per_s": r.latency_rate,
        "latency_lost": r.latency_lost,
        "sessions_per_s": r.sessions_per_s,
        "connect_completed": r.completed,
        "connect_failed": r.connect_failed,
        "connect_tls_resumed": r.tls_resumed,
        "connect_server_cpu_s": r.cpu_s,
        "sessions_per_server_cpu_s": r.per_cpu_s,
        "idle_kib_per_session": r.idle_kib,
        "idle_held": r.idle_held,
        "idle_sessions": r.idle_asked,
        "idle_processes": r.idle_processes,
        "workers": r.workers,
        "ssh_sessions_per_s": r.ssh_per_s,
        "ssh_total_p50_ms": r.ssh_p50_ms,
        "ssh_total_p99_ms": r.ssh_p99_ms,
        "ssh_completed": r.ssh_completed,
        "ssh_failed": r.ssh_failed,
        "ssh_server_cpu_ms_per_session": r.ssh_cpu_ms,
        "errors": {
            "throughput": r.throughput_errors,
            "latency": r.latency_errors,
            "connect": r.connect_errors,
            "idle": r.idle_errors,
            "ssh": r.ssh_errors,
        },
    })
}

fn markdown(
    rows: &[Row],
    direct: &Row,
    iperf: Option<f64>,
    rustls: &Value,
    crypto: &Value,
    meta: &Value,
) -> (String, Value) {
    let mut md = String::new();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if let Some(date) = s(meta, "date") {
        let _ = writeln!(
            md,
            "Run of {date} on {} ({} CPUs, {}, kernel {}).\n",
            s(meta, "host").unwrap_or_default(),
            u(meta, &["nproc"]).map_or("?".into(), |n| n.to_string()),
            s(meta, "cpu").unwrap_or_default(),
            s(meta, "kernel").unwrap_or_default()
        );
    }
    if let Some(pinned) = s(meta, "pinned").filter(|p| !p.is_empty()) {
        let _ = writeln!(md, "Pinned (`PIN=1`): {pinned}.\n");
    }
    let lat = rows.iter().find_map(|r| r.latency_sessions.zip(r.latency_rate));
    let idle_n = rows.iter().filter_map(|r| r.idle_asked).max();
    let _ = writeln!(
        md,
        "| Path | Throughput, 1 session, MB/s each way | Server CPU, ns per byte each way | Latency p99 RTT, ms{} | Connect, sessions/s | Sessions per server CPU-s | Idle, KiB per session (held) | SSH sessions/s | SSH session p50 / p99, ms | Server CPU per SSH session, ms |",
        lat.map_or(String::new(), |(n, r)| format!(" ({n} sessions, {r:.0} msg/s)"))
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let thr = format!(
            "{}{}{}",
            num(r.throughput_mb_s),
            ratio(r.throughput_mb_s, direct.throughput_mb_s),
            mark(r.throughput_errors)
        );
        let lat = format!(
            "{}{}{}{}",
            num(r.p99_ms),
            ratio(r.p99_ms, direct.p99_ms),
            if r.latency_lost > 0 {
                format!(", {} lost", r.latency_lost)
            } else {
                String::new()
            },
            mark(r.latency_errors)
        );
        let conn = format!(
            "{}{}{}",
            num(r.sessions_per_s),
            ratio(r.sessions_per_s, direct.sessions_per_s),
            mark(r.connect_errors)
        );
        let idle = format!(
            "{}{}{}{}",
            num(r.idle_kib),
            ratio(r.idle_kib, direct.idle_kib),
            r.idle_held.map_or(String::new(), |h| format!(" ({h})")),
            mark(r.idle_errors)
        );
        let label = match r.workers {
            Some(w) => format!("{}, {w} workers", r.label),
            None => r.label.clone(),
        };
        let ssh = format!(
            "{}{}{}",
            num(r.ssh_per_s),
            ratio(r.ssh_per_s, direct.ssh_per_s),
            mark(r.ssh_errors)
        );
        let ssh_lat = match (r.ssh_p50_ms, r.ssh_p99_ms) {
            (None, None) => "–".to_string(),
            (a, b) => format!("{} / {}", num(a), num(b)),
        };
        let _ = writeln!(
            md,
            "| {label} | {thr} | {} | {lat} | {conn} | {} | {idle} | {ssh} | {ssh_lat} | {} |",
            num(r.throughput_cpu_ns_per_byte),
            num(r.per_cpu_s),
            num(r.ssh_cpu_ms)
        );
    }
    if let Some(i) = iperf {
        let _ = writeln!(
            md,
            "| iperf3, loopback, 1 stream (raw ceiling) | {}{} | – | – | – | – | – | – | – | – |",
            num(Some(i)),
            ratio(Some(i), direct.throughput_mb_s)
        );
    }
    let floor = f(crypto, &["both_ways_ns_per_byte"]);
    if floor.is_some() {
        let _ = writeln!(
            md,
            "| AES-128-GCM alone, 1 core: seal + open of {}-byte records (the crypto floor of a TLS relay) | – | {} | – | – | – | – | – | – | – |",
            u(crypto, &["record_bytes"]).unwrap_or(16384),
            num(floor),
        );
    }
    let full_server = f(rustls, &["full", "server_per_s"]);
    let full_pairs = f(rustls, &["full", "pairs_per_s"]);
    let resumed_server = f(rustls, &["resumed", "server_per_s"]);
    if full_server.is_some() {
        let _ = writeln!(
            md,
            "| rustls alone, 1 core, in memory, full handshakes (sessions/s: both ends on the core; per CPU-s: server side; idle: heap of one open ServerConnection) | – | – | – | {} | {} | {} | – | – | – |",
            num(full_pairs),
            num(full_server),
            f(rustls, &["memory", "server_connection_bytes"]).map_or("–".into(), |b| num(Some(b / 1024.0))),
        );
        let _ = writeln!(
            md,
            "| rustls alone, 1 core, in memory, resumed handshakes (same) | – | – | – | {} | {} | – | – | – | – |",
            num(f(rustls, &["resumed", "pairs_per_s"])),
            num(resumed_server),
        );
    }
    let _ = writeln!(
        md,
        "\nRatios are to the direct path. Throughput: MB = 10^6 bytes, echo target, bytes sent per second (the echo returns as much). \
         Latency: round trip of {} B messages, open loop. Connect: whole sessions (TCP, TLS, upgrade, 16-byte echo, close){}; \
         per server CPU-s: sessions divided by the CPU time the server used meanwhile. Server CPU per byte: the server's CPU time during the throughput run over the bytes sent (for the direct path, the echo target's). SSH: whole sessions through the path to an OpenSSH server (key exchange, public key authentication, `true`, disconnect), {} in flight; server CPU excludes sshd. Idle: growth of the server's RSS \
         (for a server that forks per connection, the Pss of its process tree) per held session{}.{}{}{} `!`: the run counted errors.",
        64,
        if rows
            .iter()
            .filter(|r| is_tls(&r.id))
            .all(|r| r.tls_resumed.is_none_or(|n| n == 0))
        {
            ", every TLS session a full handshake (no resumption)"
        } else {
            ", some TLS sessions resumed"
        },
        u(meta, &["settings", "ssh_concurrency"]).map_or("several".into(), |n| n.to_string()),
        idle_n.map_or(String::new(), |n| format!(", up to {n} sessions")),
        if rows.iter().any(|r| r.id == "rd-gateway") {
            " RD Gateway: the same gateway and target through `/remoteDesktopGateway/` (MS-TSGU over WebSocket, \
             the target declared `rdp`, the token as PAA cookie), every frame one DATA packet (a 10-byte header inside it)."
        } else {
            ""
        },
        if rows.iter().any(|r| r.id == "devolutions" || r.id == "wstunnel") {
            " Devolutions Gateway: `/jet/fwd/tcp/<jet-aid>?token=…`, a fresh RS256 association token per session (each is accepted once), \
             signed by the load generator before the session's TCP connect (its CPU, not the server's). wstunnel: its client's upgrade \
             (`/v1/events`, the destination as a JWT in `Sec-WebSocket-Protocol`), a fresh tunnel id per session."
        } else {
            ""
        },
        match floor {
            Some(b) => format!(
                " Crypto floor: AES-128-GCM alone (ring, one thread) costs {} ns per byte to seal and {} to open {}-byte records: \
                 {} ns per byte each way (one byte up, its echo down), the least a TLS relay's server CPU per byte can be, before any socket work.",
                num(f(crypto, &["seal_ns_per_byte"])),
                num(f(crypto, &["open_ns_per_byte"])),
                u(crypto, &["record_bytes"]).unwrap_or(16384),
                num(Some(b))
            ),
            None => String::new(),
        }
    );

    // The targets.
    let p = rows.iter().find(|r| r.id == "portcullis");
    let peers: Vec<&Row> = rows
        .iter()
        .filter(|r| !matches!(r.id.as_str(), "direct" | "portcullis" | "rd-gateway"))
        .collect();
    let best_peer = peers
        .iter()
        .filter_map(|r| r.throughput_mb_s.map(|t| (t, r.label.as_str())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let best_tls_peer = peers
        .iter()
        .filter(|r| is_tls(&r.id))
        .filter_map(|r| r.throughput_mb_s.map(|t| (t, r.label.as_str())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut targets = Vec::new();
    let mut verdict = |name: &str, ok: Option<bool>, detail: String| {
        targets.push(json!({"target": name, "met": ok, "detail": detail}));
    };
    if let Some(p) = p {
        let thr = p.throughput_mb_s;
        verdict(
            "throughput >= 50% of direct TCP",
            thr.zip(direct.throughput_mb_s).map(|(a, b)| a >= 0.5 * b),
            format!(
                "{} of {} MB/s = {}",
                num(thr),
                num(direct.throughput_mb_s),
                thr.zip(direct.throughput_mb_s)
                    .map_or("–".into(), |(a, b)| format!("{:.0}%", 100.0 * a / b))
            ),
        );
        verdict(
            "throughput >= 2x the best peer",
            thr.zip(best_peer).map(|(a, (b, _))| a >= 2.0 * b),
            format!(
                "{} MB/s vs best peer {} ({}); best TLS peer {}",
                num(thr),
                best_peer.map_or("–".into(), |(b, l)| format!("{l} {} MB/s", num(Some(b)))),
                thr.zip(best_peer)
                    .map_or("–".into(), |(a, (b, _))| format!("{:.2}×", a / b)),
                best_tls_peer.map_or("–".into(), |(b, l)| format!(
                    "{l} {} MB/s ({})",
                    num(Some(b)),
                    thr.map_or("–".into(), |a| format!("{:.2}×", a / b))
                )),
            ),
        );
        let cpu = p.throughput_cpu_ns_per_byte;
        verdict(
            "server CPU per relayed byte <= 0.9 ns",
            cpu.map(|c| c <= 0.9),
            format!("{} ns per byte each way", num(cpu)),
        );
        let leanest_peer = peers
            .iter()
            .filter_map(|r| r.throughput_cpu_ns_per_byte.map(|c| (c, r.label.as_str())))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        verdict(
            "CPU per byte at most half the best peer's",
            cpu.zip(leanest_peer).map(|(a, (b, _))| a <= 0.5 * b),
            format!(
                "{} ns per byte vs {}",
                num(cpu),
                leanest_peer.map_or("–".into(), |(b, l)| format!(
                    "{l} {} ({})",
                    num(Some(b)),
                    cpu.map_or("–".into(), |a| format!("{:.2}× less", b / a))
                ))
            ),
        );
        let added = p.p99_ms.zip(direct.p99_ms).map(|(a, b)| a - b);
        verdict(
            "p99 added latency < 1 ms",
            added.map(|a| a < 1.0 && p.latency_lost == 0),
            format!(
                "p99 {} ms vs direct {} ms: {}{} ms{}",
                num(p.p99_ms),
                num(direct.p99_ms),
                if added.is_some_and(|a| a < 0.0) { "" } else { "+" },
                num(added),
                lat.map_or(String::new(), |(n, r)| format!(" at {n} sessions, {r:.0} msg/s"))
            ),
        );
        verdict(
            "idle <= 8 KiB per session (at 9,000 held)",
            p.idle_kib.map(|k| k <= 8.0),
            format!(
                "{} KiB per session with {} sessions held",
                num(p.idle_kib),
                p.idle_held.map_or("–".into(), |h| h.to_string())
            ),
        );
        verdict(
            "connect per gateway CPU-second >= 50% of rustls' full handshakes alone",
            p.per_cpu_s.zip(full_server).map(|(a, b)| a >= 0.5 * b),
            format!(
                "{} sessions per gateway CPU-second vs rustls server side alone {} full handshakes/s = {}; {} sessions/s over {} workers = {} per worker",
                num(p.per_cpu_s),
                num(full_server),
                p.per_cpu_s
                    .zip(full_server)
                    .map_or("–".into(), |(a, b)| format!("{:.0}%", 100.0 * a / b)),
                num(p.sessions_per_s),
                p.workers.map_or("?".into(), |w| w.to_string()),
                num(p.sessions_per_s.zip(p.workers).map(|(s, w)| s / w.max(1) as f64)),
            ),
        );
    }
    if !targets.is_empty() {
        let _ = writeln!(
            md,
            "\nTargets (issue 17; resumption is measured apart, `TLS_RESUME=1`):\n"
        );
        for t in &targets {
            let state = match t["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(
                md,
                "- {}: **{state}** ({})",
                t["target"].as_str().unwrap_or(""),
                t["detail"].as_str().unwrap_or("")
            );
        }
    }
    (md, Value::Array(targets))
}

fn color(id: &str) -> RGBColor {
    match id {
        "direct" => RGBColor(120, 120, 120),
        "iperf3" | "crypto-floor" => RGBColor(180, 180, 180),
        "portcullis" => RGBColor(31, 119, 180),
        "rd-gateway" => RGBColor(148, 103, 189),
        "websockify" => RGBColor(255, 187, 120),
        "websockify-tls" => RGBColor(255, 127, 14),
        "websocat" => RGBColor(152, 223, 138),
        "devolutions" => RGBColor(214, 39, 40),
        "wstunnel" => RGBColor(140, 86, 75),
        _ => RGBColor(44, 160, 44),
    }
}

type Bars = Vec<(String, String, f64)>;

fn chart(
    svg: &Path,
    rows: &[Row],
    iperf: Option<f64>,
    crypto_floor: Option<f64>,
    meta: &Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let short = |r: &Row| {
        let s = match r.id.as_str() {
            "direct" => "direct",
            "portcullis" => "Portcullis",
            "rd-gateway" => "RD Gateway",
            "websockify" => "websockify",
            "websockify-tls" => "websockify TLS",
            "websocat" => "websocat",
            "websocat-tls" => "websocat TLS",
            "devolutions" => "Devolutions GW",
            "wstunnel" => "wstunnel",
            other => other,
        };
        s.to_string()
    };
    let pick = |get: &dyn Fn(&Row) -> Option<f64>| -> Bars {
        rows.iter()
            .filter_map(|r| get(r).map(|v| (r.id.clone(), short(r), v)))
            .collect()
    };
    let mut thr = pick(&|r| r.throughput_mb_s);
    if let Some(i) = iperf {
        thr.insert(0, ("iperf3".into(), "iperf3".into(), i));
    }
    let mut cpu = pick(&|r| r.throughput_cpu_ns_per_byte);
    if let Some(c) = crypto_floor {
        cpu.push(("crypto-floor".into(), "AES-GCM alone".into(), c));
    }
    let panels: [(&str, Bars); 6] = [
        ("Throughput, 1 session, MB/s (higher is better)", thr),
        ("Server CPU per byte relayed, ns (lower is better)", cpu),
        ("Latency p99 RTT, ms (lower is better)", pick(&|r| r.p99_ms)),
        ("Connect, sessions/s (higher is better)", pick(&|r| r.sessions_per_s)),
        ("Idle memory, KiB per session (lower is better)", pick(&|r| r.idle_kib)),
        ("Whole SSH sessions/s (higher is better)", pick(&|r| r.ssh_per_s)),
    ];
    let root = SVGBackend::new(svg, (1200, 1200)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = match meta.get("date").and_then(Value::as_str) {
        Some(d) => format!(
            "Portcullis and peers on one machine ({} CPUs, {})",
            u(meta, &["nproc"]).map_or("?".into(), |n| n.to_string()),
            d
        ),
        None => "Portcullis and peers on one machine".to_string(),
    };
    let (head, body) = root.split_vertically(40);
    head.draw(&Text::new(title, (20, 10), ("sans-serif", 22).into_font()))?;
    for (area, (caption, bars)) in body.split_evenly((3, 2)).iter().zip(panels) {
        panel(area, caption, &bars)?;
    }
    root.present()?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    bars: &Bars,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let max = bars.iter().map(|b| b.2).fold(0.0f64, f64::max).max(1e-9);
    let n = bars.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(8)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..max * 1.25)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(0)
        .label_style(("sans-serif", 12))
        .draw()?;
    // Each bar carries its name and value above it.
    for (i, (id, name, v)) in bars.iter().enumerate() {
        let (x0, x1) = (i as f64 + 0.12, i as f64 + 0.88);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x0, 0.0), (x1, *v)],
            color(id).filled(),
        )))?;
        chart.draw_series([
            Text::new(name.clone(), (x0, *v + max * 0.13), ("sans-serif", 12).into_font()),
            Text::new(num(Some(*v)), (x0, *v + max * 0.06), ("sans-serif", 12).into_font()),
        ])?;
    }
    Ok(())
}
