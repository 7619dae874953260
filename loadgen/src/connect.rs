//! `connect`: whole sessions per second, opened and closed by `--sessions` loops, with the latency
//! of each step: TCP connect, TLS handshake, upgrade (for Portcullis: token check and target
//! connect happen before the 101), optional echo probe, close (Close frames exchanged and the
//! connection closed by the server). On the direct path (`tcp://`) only TCP connect, probe and
//! close (FIN both ways) are timed.

use crate::cli::ConnectArgs;
use crate::endpoint::Endpoint;
use crate::progress;
use crate::stats::{record_step, step_summary, ErrorTally, Summary};
use crate::ws::{self, CloseOutcome, Input, WsConn};
use crate::Outcome;
use hdrhistogram::Histogram;
use serde_json::json;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

const READ_BUF: usize = 4096;
const PROBE: &[u8; 16] = b"portcullis-probe";
/// After a failure, wait this long before the next attempt, so a refusing server is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Steps {
    tcp: Option<Histogram<u64>>,
    tls: Option<Histogram<u64>>,
    upgrade: Option<Histogram<u64>>,
    probe: Option<Histogram<u64>>,
    close: Option<Histogram<u64>>,
    total: Option<Histogram<u64>>,
}

struct Shared {
    steps: Mutex<Steps>,
    errors: Mutex<ErrorTally>,
    done: AtomicU64,
    failed: AtomicU64,
    resumed: AtomicU64,
    next: AtomicU64,
}

pub async fn run(args: ConnectArgs) -> anyhow::Result<Outcome> {
    let ep = Arc::new(Endpoint::from_args(&args.conn, 1).await?);
    let duration: Duration = args.duration.into();
    let shared = Arc::new(Shared {
        steps: Mutex::new(Steps::default()),
        errors: Mutex::new(ErrorTally::default()),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        next: AtomicU64::new(0),
    });
    let pb = progress::bar(args.run.quiet, duration.as_millis() as u64);
    let start = Instant::now();
    let end = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..args.sessions {
        let (ep, shared, probe) = (ep.clone(), shared.clone(), args.probe);
        set.spawn(async move {
            while Instant::now() < end {
                let i = shared.next.fetch_add(1, Relaxed);
                match one(&ep, i, probe).await {
                    Ok(t) => {
                        let mut s = shared.steps.lock().unwrap_or_else(|p| p.into_inner());
                        record_step(&mut s.tcp, t.open.tcp);
                        if let Some(tls) = t.open.tls {
                            record_step(&mut s.tls, tls);
                        }
                        if let Some(upgrade) = t.open.upgrade {
                            record_step(&mut s.upgrade, upgrade);
                        }
                        if let Some(p) = t.probe {
                            record_step(&mut s.probe, p);
                        }
                        record_step(&mut s.close, t.close);
                        record_step(&mut s.total, t.total);
                        drop(s);
                        shared.done.fetch_add(1, Relaxed);
                        if t.open.tls_resumed {
                            shared.resumed.fetch_add(1, Relaxed);
                        }
                    }
                    Err(e) => {
                        shared.errors.lock().unwrap_or_else(|p| p.into_inner()).add(e);
                        shared.failed.fetch_add(1, Relaxed);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        });
    }
    let sh = shared.clone();
    let ticker = progress::tick(&pb, move |pb| {
        let el = start.elapsed();
        pb.set_position(el.as_millis() as u64);
        let done = sh.done.load(Relaxed);
        pb.set_message(format!(
            "{done} sessions ({:.0}/s), {} failed",
            done as f64 / el.as_secs_f64().max(1e-3),
            sh.failed.load(Relaxed)
        ));
    });
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();

    let done = shared.done.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    let errors = shared.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if done == 0 {
        let (why, _) = errors.most_common().unwrap_or(("no session was attempted", 0));
        anyhow::bail!("no session completed ({failed} failed): {why}");
    }
    let steps = shared.steps.lock().unwrap_or_else(|p| p.into_inner());
    let rate = (done as f64 / elapsed * 10.0).round() / 10.0;
    let p50 = |h: &Option<Histogram<u64>>| {
        h.as_ref()
            .map(|h| crate::stats::ms(Summary::of(h).p50_us))
            .unwrap_or_else(|| "-".into())
    };
    let resumed = shared.resumed.load(Relaxed);
    let json = json!({
        "scenario": "connect",
        "url": ep.describe(),
        "sessions": args.sessions,
        "workers": args.run.workers,
        "duration_s": duration.as_secs_f64(),
        "elapsed_s": elapsed,
        "probe": args.probe,
        "completed": done,
        "failed": failed,
        "sessions_per_s": rate,
        "tls_resumed": resumed,
        "steps": {
            "tcp": step_summary(&steps.tcp),
            "tls": step_summary(&steps.tls),
            "upgrade": step_summary(&steps.upgrade),
            "probe": step_summary(&steps.probe),
            "close": step_summary(&steps.close),
            "total": step_summary(&steps.total),
        },
        "errors": errors.to_json(),
        "error_count": errors.total(),
    });
    let tls = if steps.tls.is_some() {
        let full = if resumed == 0 {
            " (all full handshakes)".to_string()
        } else {
            format!(" ({resumed} resumed)")
        };
        format!(", tls {} ms{full}", p50(&steps.tls))
    } else {
        String::new()
    };
    let probe = if args.probe {
        format!(", probe {} ms", p50(&steps.probe))
    } else {
        String::new()
    };
    let upgrade = if steps.upgrade.is_some() {
        format!(", upgrade {} ms", p50(&steps.upgrade))
    } else {
        String::new()
    };
    let summary = format!(
        "connect: {} loops for {:.1} s via {}: {rate} sessions/s ({done} completed, {failed} failed); p50 tcp {} ms{tls}{upgrade}{probe}, close {} ms, total {} ms{}",
        args.sessions,
        duration.as_secs_f64(),
        ep.describe(),
        p50(&steps.tcp),
        p50(&steps.close),
        p50(&steps.total),
        errors.suffix()
    );
    Ok(Outcome { json, summary })
}

struct Times {
    open: ws::OpenTimes,
    probe: Option<Duration>,
    close: Duration,
    total: Duration,
}

/// One whole session: open, optional probe, graceful close.
async fn one(ep: &Endpoint, i: u64, probe: bool) -> Result<Times, String> {
    let t0 = Instant::now();
    let (mut conn, open) = ws::open(ep, i, READ_BUF).await.map_err(|e| e.to_string())?;
    let probe = if probe {
        let t = Instant::now();
        tokio::time::timeout(ep.open_timeout, echo(&mut conn))
            .await
            .map_err(|_| "probe: no echo in time".to_string())?
            .map_err(|e| format!("probe: {e}"))?;
        Some(t.elapsed())
    } else {
        None
    };
    let t = Instant::now();
    match conn.close(ep.open_timeout).await {
        CloseOutcome::Clean | CloseOutcome::NoEof => {}
        CloseOutcome::Failed(e) => return Err(format!("close: {e}")),
    }
    let close = t.elapsed();
    Ok(Times {
        open,
        probe,
        close,
        total: t0.elapsed(),
    })
}

/// Sends the probe and waits until as many bytes came back, which must be the probe's (a bridge
/// that passed on masked payload without unmasking it would return other bytes).
async fn echo(conn: &mut WsConn) -> io::Result<()> {
    conn.queue_binary(PROBE);
    let mut got = Vec::with_capacity(PROBE.len());
    poll_fn(|cx| loop {
        if conn.has_output() {
            if let Poll::Ready(Err(e)) = conn.poll_output(cx) {
                return Poll::Ready(Err(e));
            }
        }
        match conn.poll_input(cx, |d| got.extend_from_slice(d)) {
            Poll::Ready(Ok(Input::Progress)) => {
                if got.len() >= PROBE.len() {
                    if got[..PROBE.len()] != PROBE[..] {
                        return Poll::Ready(Err(io::Error::other(
                            "the echo differs from the probe (the path changed the bytes)",
                        )));
                    }
                    return Poll::Ready(Ok(()));
                }
            }
            Poll::Ready(Ok(_)) => return Poll::Ready(Err(io::Error::other("the session ended before the echo"))),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}
