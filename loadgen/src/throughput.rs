//! `throughput`: sessions stream bulk data through the tunnel for a fixed time; MB/s each way.
//!
//! Each session writes one prebuilt masked frame again and again (masking is done once, so the
//! load generator spends its CPU on TLS, as the gateway does) and counts the payload it reads
//! back. On the RD Gateway path (`--rd-gateway`) the frame carries one DATA packet, and what comes
//! back is counted as DATA payload. With an echo target both directions carry data, with a sink
//! only the upstream, and with `--send none` and a source target only the downstream.

use crate::cli::{Send, ThroughputArgs};
use crate::endpoint::Endpoint;
use crate::progress;
use crate::sessions::{join_all, open_and_start, Start};
use crate::stats::{mb_per_s, ErrorTally};
use crate::ws::{CloseOutcome, Input, WsConn};
use crate::Outcome;
use serde_json::json;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

const READ_BUF: usize = 64 * 1024;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

struct SessionResult {
    up: u64,
    down: u64,
    error: Option<String>,
    close: CloseOutcome,
}

pub async fn run(args: ThroughputArgs) -> anyhow::Result<Outcome> {
    let ep = Arc::new(Endpoint::from_args(&args.conn, 1).await?);
    let duration: Duration = args.duration.into();
    let send = args.send == Send::Up;
    let frame_size = args.frame_size.unwrap_or(default_frame_size(args.conn.rd_gateway));
    let payload: Arc<[u8]> = (0..frame_size).map(|i| (i * 7 + 13) as u8).collect();
    let up_total = Arc::new(AtomicU64::new(0));
    let down_total = Arc::new(AtomicU64::new(0));
    let pb = progress::bar(args.run.quiet, duration.as_millis() as u64);

    let (u, d) = (up_total.clone(), down_total.clone());
    let (opened, set) = open_and_start(
        ep.clone(),
        args.sessions,
        64,
        READ_BUF,
        Start::Together,
        &pb,
        move |_, conn, start| session(conn, start + duration, send, payload.clone(), u.clone(), d.clone()),
    )
    .await?;
    pb.set_length(duration.as_millis() as u64);

    let (u, d, start) = (up_total.clone(), down_total.clone(), opened.start);
    let mut last = (Instant::now(), 0u64, 0u64);
    let ticker = progress::tick(&pb, move |pb| {
        let now = Instant::now();
        let (up, down) = (u.load(Relaxed), d.load(Relaxed));
        let dt = now.duration_since(last.0).as_secs_f64();
        pb.set_position(now.duration_since(start).as_millis() as u64);
        pb.set_message(format!(
            "up {:.1} MB/s, down {:.1} MB/s",
            mb_per_s(up - last.1, dt),
            mb_per_s(down - last.2, dt)
        ));
        last = (now, up, down);
    });
    let results = join_all(set).await;
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();

    let secs = duration.as_secs_f64();
    let mut errors = opened.errors.clone();
    let mut session_errors = ErrorTally::default();
    let (mut up, mut down, mut unclean) = (0u64, 0u64, 0u64);
    let mut per_session = Vec::with_capacity(results.len());
    for r in &results {
        up += r.up;
        down += r.down;
        if let Some(e) = &r.error {
            session_errors.add(e.clone());
        }
        if let CloseOutcome::Failed(e) = &r.close {
            if r.error.is_none() {
                unclean += 1;
                session_errors.add(format!("close: {e}"));
            }
        }
        per_session.push(json!({"up_mb_s": mb_per_s(r.up, secs), "down_mb_s": mb_per_s(r.down, secs)}));
    }
    errors.merge(&session_errors);
    let n = results.len().max(1) as u64;
    let json = json!({
        "scenario": "throughput",
        "url": ep.describe(),
        "sessions": args.sessions,
        "sessions_opened": opened.ok,
        "workers": args.run.workers,
        "duration_s": secs,
        "send": if send { "up" } else { "none" },
        "frame_size": frame_size,
        "rd_gateway": args.conn.rd_gateway,
        "up_bytes": up,
        "down_bytes": down,
        "up_mb_s": mb_per_s(up, secs),
        "down_mb_s": mb_per_s(down, secs),
        "total_mb_s": mb_per_s(up + down, secs),
        "per_session_mean_up_mb_s": mb_per_s(up / n, secs),
        "per_session_mean_down_mb_s": mb_per_s(down / n, secs),
        "per_session": per_session,
        "open_s": opened.took.as_secs_f64(),
        "unclean_closes": unclean,
        "errors": errors.to_json(),
        "error_count": errors.total(),
    });
    let summary = format!(
        "throughput: {} of {} sessions for {:.1} s via {}: up {:.2} MB/s, down {:.2} MB/s (per session up {:.2}, down {:.2}){}",
        opened.ok,
        args.sessions,
        secs,
        ep.describe(),
        mb_per_s(up, secs),
        mb_per_s(down, secs),
        mb_per_s(up / n, secs),
        mb_per_s(down / n, secs),
        errors.suffix()
    );
    Ok(Outcome { json, summary })
}

/// 16 KiB less the masked WebSocket header (8 bytes for 126..=65535 bytes of payload), and less
/// the DATA header on the RD Gateway path: each frame is then exactly one full TLS record.
pub fn default_frame_size(rd_gateway: bool) -> usize {
    let frame = 16 * 1024 - 8;
    match rd_gateway {
        true => frame - portcullis_protocols::tsgu::DATA_HEADER_LEN,
        false => frame,
    }
}

async fn session(
    mut conn: WsConn,
    end: Instant,
    send: bool,
    payload: Arc<[u8]>,
    up_total: Arc<AtomicU64>,
    down_total: Arc<AtomicU64>,
) -> SessionResult {
    let frame = if send {
        conn.prebuilt_frame(&payload)
    } else {
        Vec::new()
    };
    let payload_len = payload.len() as u64;
    let (mut pos, mut up, mut down) = (0usize, 0u64, 0u64);
    let streamed = tokio::time::timeout_at(
        end.into(),
        poll_fn(|cx| loop {
            let mut progress = false;
            // Queued control frames (pongs) go out between whole data frames.
            if (pos == 0 && conn.has_queued()) || (!send && conn.has_output()) {
                match conn.poll_output(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            } else if send {
                match conn.poll_write_raw(cx, &frame[pos..]) {
                    Poll::Ready(Ok(n)) => {
                        pos += n;
                        if pos == frame.len() {
                            pos = 0;
                            up += payload_len;
                            up_total.fetch_add(payload_len, Relaxed);
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let mut got = 0u64;
            match conn.poll_input(cx, |d| got += d.len() as u64) {
                Poll::Ready(Ok(Input::Progress)) => progress = true,
                Poll::Ready(other) => return Poll::Ready(Err(Input::ended(other))),
                Poll::Pending => {}
            }
            if got > 0 {
                down += got;
                down_total.fetch_add(got, Relaxed);
            }
            if !progress {
                return Poll::Pending;
            }
        }),
    )
    .await;
    let error = match streamed {
        Err(_elapsed) => None,
        Ok(Err(e)) => Some(format!("session: {e}")),
        Ok(Ok(())) => None,
    };
    let close = if error.is_some() {
        CloseOutcome::Failed("session failed".into())
    } else {
        // Finish the frame in flight (reading meanwhile, so an echo cannot block us), then close.
        let finished = tokio::time::timeout(
            CLOSE_TIMEOUT,
            poll_fn(|cx| loop {
                if pos == 0 {
                    return Poll::Ready(Ok(()));
                }
                match conn.poll_write_raw(cx, &frame[pos..]) {
                    Poll::Ready(Ok(n)) => {
                        pos = (pos + n) % frame.len();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
                match conn.poll_input(cx, |_| {}) {
                    Poll::Ready(Ok(Input::Progress)) => continue,
                    Poll::Ready(Ok(_)) => return Poll::Ready(Err(io::Error::other("the server ended the session"))),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }),
        )
        .await;
        match finished {
            Ok(Ok(())) => conn.close(CLOSE_TIMEOUT).await,
            Ok(Err(e)) => CloseOutcome::Failed(e.to_string()),
            Err(_) => CloseOutcome::Failed("timed out finishing the last frame".into()),
        }
    };
    SessionResult { up, down, error, close }
}
