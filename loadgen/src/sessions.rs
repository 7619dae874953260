//! Opening a batch of sessions, then starting them all at once.
//!
//! Every session is one task: it opens (at most `concurrency` at a time), reports, waits for the
//! common start, then runs the scenario's body with its connection. Measurements start only when
//! every session has been opened or has failed, so opening does not skew them.

use crate::endpoint::Endpoint;
use crate::stats::ErrorTally;
use crate::ws::{self, OpenError, OpenTimes, WsConn};
use indicatif::ProgressBar;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

/// What opening the batch gave.
pub struct Opened {
    pub ok: u64,
    pub errors: ErrorTally,
    /// From the first connect to the last session opened or failed.
    pub took: Duration,
    /// When the bodies were started.
    pub start: Instant,
}

/// When the bodies start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// All together, once every session is open or has failed (measurements).
    Together,
    /// Each as soon as its session is open (holding sessions: pings get answered meanwhile).
    AtOnce,
}

/// Opens `n` sessions and runs `body(i, conn, start)` in each. The returned set yields the
/// bodies' results (`None` for sessions that did not open). Returns once all sessions are open or
/// failed; fails when none could be opened, with the most common reason.
pub async fn open_and_start<T, F, Fut>(
    ep: Arc<Endpoint>,
    n: u32,
    concurrency: u32,
    buf_size: usize,
    when: Start,
    pb: &ProgressBar,
    body: F,
) -> anyhow::Result<(Opened, JoinSet<Option<T>>)>
where
    F: Fn(u64, WsConn, Instant) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let body = Arc::new(body);
    let permits = Arc::new(Semaphore::new(concurrency.max(1) as usize));
    let (report_tx, mut report_rx) = mpsc::unbounded_channel::<Result<OpenTimes, OpenError>>();
    let (go_tx, go_rx) = watch::channel::<Option<Instant>>(None);
    let mut set = JoinSet::new();
    let began = Instant::now();
    for i in 0..u64::from(n) {
        let (ep, permits, report_tx, mut go_rx, body) = (
            ep.clone(),
            permits.clone(),
            report_tx.clone(),
            go_rx.clone(),
            body.clone(),
        );
        set.spawn(async move {
            let opened = {
                let _permit = permits.acquire().await.ok()?;
                ws::open(&ep, i, buf_size).await
            };
            let _ = report_tx.send(opened.as_ref().map(|(_, t)| *t).map_err(Clone::clone));
            let (conn, _) = opened.ok()?;
            let start = match when {
                Start::Together => (*go_rx.wait_for(Option::is_some).await.ok()?)?,
                Start::AtOnce => Instant::now(),
            };
            Some(body(i, conn, start).await)
        });
    }
    drop(report_tx);
    drop(go_rx);

    let mut ok = 0u64;
    let mut errors = ErrorTally::default();
    let mut reported = 0u64;
    pb.set_length(u64::from(n));
    while let Some(r) = report_rx.recv().await {
        reported += 1;
        match r {
            Ok(_) => ok += 1,
            Err(e) => errors.add(e.to_string()),
        }
        if reported.is_multiple_of(16) || reported == u64::from(n) {
            pb.set_position(reported);
            pb.set_message(format!(
                "opening sessions: {ok} open, {} failed, of {n}",
                errors.total()
            ));
        }
        if reported == u64::from(n) {
            break;
        }
    }
    let took = began.elapsed();
    if ok == 0 {
        set.abort_all();
        let (why, count) = errors.most_common().unwrap_or(("no session was attempted", 0));
        anyhow::bail!("no session could be opened ({count} of {n} failed): {why}");
    }
    let start = Instant::now();
    pb.set_position(0);
    // Waiters see the value even after the sender is gone (`wait_for` checks the current value).
    let _ = go_tx.send(Some(start));
    Ok((
        Opened {
            ok,
            errors,
            took,
            start,
        },
        set,
    ))
}

/// Collects the bodies' results, skipping sessions that never opened.
pub async fn join_all<T: 'static>(mut set: JoinSet<Option<T>>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    out
}
