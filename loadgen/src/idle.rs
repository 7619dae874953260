//! `idle`: opens and holds many sessions (answering the gateway's pings), then reports how many
//! stayed open and the gateway's resident memory per session (VmRSS of `--pid`, before and after).
//!
//! Connections are spread over several loopback source addresses (127.0.0.K), each with its own
//! ephemeral port range, and the open-files limit is raised to the hard limit at start.

use crate::cli::IdleArgs;
use crate::endpoint::Endpoint;
use crate::sessions::{join_all, open_and_start, Start};
use crate::stats::ErrorTally;
use crate::sys;
use crate::ws::{CloseOutcome, Input, WsConn};
use crate::{progress, Outcome};
use anyhow::bail;
use serde_json::json;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Idle sessions only see pings and Close frames: a small read buffer keeps our own memory low.
const READ_BUF: usize = 1024;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors kept free for everything else (runtime, stdio, files).
const SPARE_FDS: u64 = 64;

struct SessionResult {
    /// Still open when the hold ended.
    held: bool,
    error: Option<String>,
    close: Option<CloseOutcome>,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<Outcome> {
    let n = args.sessions;
    let limit = sys::nofile_limit();
    if u64::from(n) + SPARE_FDS > limit {
        bail!(
            "{n} sessions need about {} open files, but the limit is {limit} (raise the hard limit, e.g. `ulimit -Hn`, or lower --sessions)",
            u64::from(n) + SPARE_FDS
        );
    }
    // Several source addresses by default: about 10 000 sessions each, at least 4.
    let ep = Arc::new(Endpoint::from_args(&args.conn, n.div_ceil(10_000).max(4)).await?);
    let rss_before = args.pid.map(sys::vm_rss_kib).transpose()?;
    let tree_before = args.pid.map(sys::tree_pss_kib).transpose()?;
    let pb = progress::bar(args.run.quiet, u64::from(n));
    let alive = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);

    let (al, rx) = (alive.clone(), stop_rx.clone());
    let (opened, set) = open_and_start(
        ep.clone(),
        n,
        args.concurrency,
        READ_BUF,
        Start::AtOnce,
        &pb,
        move |_, conn, _| hold(conn, rx.clone(), al.clone()),
    )
    .await?;
    let hold_for: Duration = args.hold.into();
    let held_from = Instant::now();
    let (al, total) = (alive.clone(), opened.ok);
    pb.set_length(hold_for.as_millis() as u64);
    pb.set_position(0);
    let ticker = progress::tick(&pb, move |pb| {
        pb.set_position(held_from.elapsed().as_millis() as u64);
        pb.set_message(format!("holding {} of {total} sessions", al.load(Relaxed)));
    });
    tokio::time::sleep(hold_for).await;
    let rss_after = args.pid.map(sys::vm_rss_kib).transpose()?;
    let tree_after = args.pid.map(sys::tree_pss_kib).transpose()?;
    let alive_at_end = alive.load(Relaxed);
    let own_rss = sys::own_rss_kib();
    let _ = stop_tx.send(true);
    pb.set_message(format!("closing {alive_at_end} sessions"));
    let results = join_all(set).await;
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();
    drop(stop_rx);

    let mut errors = opened.errors.clone();
    let mut session_errors = ErrorTally::default();
    let mut held = 0u64;
    let mut unclean = 0u64;
    for r in &results {
        held += u64::from(r.held);
        if let Some(e) = &r.error {
            session_errors.add(e.clone());
        }
        if let Some(CloseOutcome::Failed(e)) = &r.close {
            unclean += 1;
            session_errors.add(format!("close: {e}"));
        }
    }
    errors.merge(&session_errors);
    let delta = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some(a as i64 - b as i64),
        _ => None,
    };
    let per_session = delta.filter(|_| held > 0).map(|d| (d * 1024) as f64 / held as f64);
    let tree_delta = match (tree_before, tree_after) {
        (Some((b, _)), Some((a, _))) => Some(a as i64 - b as i64),
        _ => None,
    };
    let tree_per_session = tree_delta
        .filter(|_| held > 0)
        .map(|d| ((d * 1024) as f64 / held as f64).round());
    let json = json!({
        "scenario": "idle",
        "url": ep.describe(),
        "sessions": n,
        "sessions_opened": opened.ok,
        "held": held,
        "failed_to_open": u64::from(n) - opened.ok,
        "workers": args.run.workers,
        "source_addrs": ep.sources.len().max(1),
        "open_s": opened.took.as_secs_f64(),
        "open_per_s": (opened.ok as f64 / opened.took.as_secs_f64().max(1e-9) * 10.0).round() / 10.0,
        "hold_s": hold_for.as_secs_f64(),
        "gateway_pid": args.pid,
        "gateway_rss_before_kib": rss_before,
        "gateway_rss_after_kib": rss_after,
        "gateway_rss_delta_kib": delta,
        "gateway_rss_per_session_bytes": per_session.map(f64::round),
        // The process and its descendants (for servers that fork per connection), by Pss.
        "gateway_processes_before": tree_before.map(|t| t.1),
        "gateway_processes_after": tree_after.map(|t| t.1),
        "gateway_tree_pss_before_kib": tree_before.map(|t| t.0),
        "gateway_tree_pss_after_kib": tree_after.map(|t| t.0),
        "gateway_tree_pss_per_session_bytes": tree_per_session,
        "loadgen_rss_kib": own_rss,
        "nofile_limit": limit,
        "unclean_closes": unclean,
        "errors": errors.to_json(),
        "error_count": errors.total(),
    });
    let memory = match (per_session, delta, tree_after, tree_per_session) {
        // A forking server: its own RSS says little, the whole tree counts.
        (_, _, Some((_, procs)), Some(t)) if procs > 1 => format!(
            ", gateway and its {} child processes Pss +{} KiB = {:.1} KiB per session",
            procs - 1,
            tree_delta.unwrap_or(0),
            t / 1024.0
        ),
        (Some(p), Some(d), _, _) => format!(", gateway RSS +{d} KiB = {:.1} KiB per session", p / 1024.0),
        _ => ", no --pid: gateway memory not measured".to_string(),
    };
    let summary = format!(
        "idle: held {held} of {n} sessions for {:.1} s via {} (opened in {:.1} s){memory}{}",
        hold_for.as_secs_f64(),
        ep.describe(),
        opened.took.as_secs_f64(),
        errors.suffix()
    );
    Ok(Outcome { json, summary })
}

/// Keeps one session open (answering pings) until told to stop, then closes it.
async fn hold(mut conn: WsConn, mut stop: watch::Receiver<bool>, alive: Arc<AtomicU64>) -> SessionResult {
    alive.fetch_add(1, Relaxed);
    let ended = tokio::select! {
        _ = stop.wait_for(|s| *s) => None,
        e = idle(&mut conn) => Some(e),
    };
    alive.fetch_sub(1, Relaxed);
    match ended {
        None => SessionResult {
            held: true,
            error: None,
            close: Some(conn.close(CLOSE_TIMEOUT).await),
        },
        Some(e) => SessionResult {
            held: false,
            error: Some(format!("session: {e}")),
            close: None,
        },
    }
}

/// Reads (and answers pings) until the session ends; returns why.
async fn idle(conn: &mut WsConn) -> io::Error {
    poll_fn(|cx| loop {
        if conn.has_output() {
            if let Poll::Ready(Err(e)) = conn.poll_output(cx) {
                return Poll::Ready(e);
            }
        }
        match conn.poll_input(cx, |_| {}) {
            Poll::Ready(Ok(Input::Progress)) => continue,
            Poll::Ready(Ok(Input::Closed(code))) => {
                return Poll::Ready(io::Error::other(format!(
                    "the server closed the session (code {})",
                    code.map_or("none".into(), |c| c.to_string())
                )))
            }
            Poll::Ready(Ok(Input::Eof)) => return Poll::Ready(io::Error::other("the connection ended")),
            Poll::Ready(Err(e)) => return Poll::Ready(e),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}
