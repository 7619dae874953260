//! `latency`: small messages to an echo target at a fixed total rate, open loop.
//!
//! Send times are scheduled in advance (session i sends at start + i/rate + k·sessions/rate) and
//! a session never waits for an answer before its next send, so a stall of the gateway delays
//! every message sent during it instead of pausing the sender (coordinated omission, as in wrk2).
//! Messages carry a sequence number; the echo comes back as a byte stream that is cut into
//! messages again and matched in order.
//!
//! Three histograms: `rtt` from the moment the message was queued for sending to the moment its
//! last byte came back; `rtt_from_schedule` from the scheduled send time instead (adds the load
//! generator's own timer lag, up to ~1 ms with tokio's millisecond timer); `send_lag` is that lag.

use crate::cli::LatencyArgs;
use crate::endpoint::Endpoint;
use crate::progress;
use crate::sessions::{join_all, open_and_start, Start};
use crate::stats::{nanos, new_histogram, Summary};
use crate::ws::{CloseOutcome, Input, WsConn};
use crate::Outcome;
use hdrhistogram::Histogram;
use serde_json::json;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

const READ_BUF: usize = 16 * 1024;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
const BATCH: usize = 256;

/// rtt, rtt_from_schedule, send_lag.
type Hists = [Histogram<u64>; 3];

/// Samples are batched per session and merged under a lock, so sessions rarely contend.
struct Recorder {
    local: Vec<[u64; 3]>,
    shared: Arc<Mutex<Hists>>,
}

impl Recorder {
    fn record(&mut self, sample: [u64; 3]) {
        self.local.push(sample);
        if self.local.len() >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.local.is_empty() {
            return;
        }
        let mut h = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for s in self.local.drain(..) {
            for (h, v) in h.iter_mut().zip(s) {
                h.saturating_record(v);
            }
        }
    }
}

struct Live {
    sent: AtomicU64,
    received: AtomicU64,
}

#[derive(Default)]
struct SessionResult {
    sent: u64,
    received: u64,
    lost: u64,
    out_of_order: u64,
    unexpected_bytes: u64,
    error: Option<String>,
    close: Option<CloseOutcome>,
}

struct Plan {
    first: Instant,
    interval: Duration,
    end: Instant,
    drain: Duration,
    size: usize,
}

pub async fn run(args: LatencyArgs) -> anyhow::Result<Outcome> {
    let ep = Arc::new(Endpoint::from_args(&args.conn, 1).await?);
    let duration: Duration = args.duration.into();
    let drain: Duration = args.drain.into();
    let n = args.sessions;
    let per_session_rate = args.rate / f64::from(n);
    if per_session_rate * duration.as_secs_f64() < 1.0 {
        anyhow::bail!(
            "--rate {} over {} sessions for {} sends less than one message per session; raise --rate or --duration, or lower --sessions",
            args.rate,
            n,
            args.duration
        );
    }
    let interval = Duration::from_secs_f64(1.0 / per_session_rate);
    let shared = Arc::new(Mutex::new([new_histogram(), new_histogram(), new_histogram()]));
    let live = Arc::new(Live {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
    });
    let pb = progress::bar(args.run.quiet, duration.as_millis() as u64);

    let (sh, lv, size, rate) = (shared.clone(), live.clone(), args.size, args.rate);
    let (opened, set) = open_and_start(
        ep.clone(),
        n,
        64,
        READ_BUF,
        Start::Together,
        &pb,
        move |i, conn, start| {
            let plan = Plan {
                // Sessions are spread evenly over one interval, so the total rate is smooth.
                first: start + Duration::from_secs_f64(i as f64 / rate),
                interval,
                end: start + duration,
                drain,
                size,
            };
            let rec = Recorder {
                local: Vec::with_capacity(BATCH),
                shared: sh.clone(),
            };
            session(conn, plan, rec, lv.clone())
        },
    )
    .await?;
    pb.set_length(duration.as_millis() as u64);

    let (lv, start) = (live.clone(), opened.start);
    let ticker = progress::tick(&pb, move |pb| {
        pb.set_position(start.elapsed().as_millis() as u64);
        let (s, r) = (lv.sent.load(Relaxed), lv.received.load(Relaxed));
        pb.set_message(format!("{s} sent, {r} received, {} in flight", s.saturating_sub(r)));
    });
    let results = join_all(set).await;
    if let Some(t) = ticker {
        t.abort();
    }
    pb.finish_and_clear();

    let mut errors = opened.errors.clone();
    let mut total = SessionResult::default();
    let mut unclean = 0u64;
    for r in &results {
        total.sent += r.sent;
        total.received += r.received;
        total.lost += r.lost;
        total.out_of_order += r.out_of_order;
        total.unexpected_bytes += r.unexpected_bytes;
        if let Some(e) = &r.error {
            errors.add(e.clone());
        }
        if let Some(CloseOutcome::Failed(e)) = &r.close {
            unclean += 1;
            errors.add(format!("close: {e}"));
        }
    }
    let hists = shared.lock().unwrap_or_else(|p| p.into_inner());
    let [rtt, from_schedule, lag] = [Summary::of(&hists[0]), Summary::of(&hists[1]), Summary::of(&hists[2])];
    let secs = duration.as_secs_f64();
    let json = json!({
        "scenario": "latency",
        "url": ep.describe(),
        "sessions": n,
        "sessions_opened": opened.ok,
        "workers": args.run.workers,
        "duration_s": secs,
        "rate_per_s": args.rate,
        "message_size": args.size,
        "sent": total.sent,
        "received": total.received,
        "lost": total.lost,
        "out_of_order": total.out_of_order,
        "unexpected_bytes": total.unexpected_bytes,
        "achieved_rate_per_s": (total.sent as f64 / secs * 10.0).round() / 10.0,
        "rtt": rtt,
        "rtt_from_schedule": from_schedule,
        "send_lag": lag,
        "open_s": opened.took.as_secs_f64(),
        "unclean_closes": unclean,
        "errors": errors.to_json(),
        "error_count": errors.total(),
    });
    let summary = format!(
        "latency: {} of {} sessions, {} msg/s of {} B for {:.1} s via {}: rtt {} ({} sent, {} received, {} lost){}",
        opened.ok,
        n,
        args.rate,
        args.size,
        secs,
        ep.describe(),
        rtt.short(),
        total.sent,
        total.received,
        total.lost,
        errors.suffix()
    );
    Ok(Outcome { json, summary })
}

async fn session(mut conn: WsConn, plan: Plan, mut rec: Recorder, live: Arc<Live>) -> SessionResult {
    let mut r = SessionResult::default();
    let mut msg: Vec<u8> = (0..plan.size).map(|i| (i * 31 + 7) as u8).collect();
    let mut due = plan.first;
    let mut sending = due < plan.end;
    let mut seq = 0u64;
    // (scheduled, queued) per message in flight, oldest first.
    let mut in_flight: VecDeque<(Instant, Instant)> = VecDeque::new();
    // Reassembly of the echoed byte stream into messages.
    let (mut offset, mut head, mut expected) = (0usize, [0u8; 8], 0u64);
    let mut sleep = Box::pin(tokio::time::sleep_until(due.into()));
    let mut sleep_at = due;

    let ran = tokio::time::timeout_at(
        (plan.end + plan.drain).into(),
        poll_fn(|cx| loop {
            let mut progress = false;
            if sending {
                let now = Instant::now();
                if now >= due {
                    let before = seq;
                    while due <= now && due < plan.end {
                        msg[..8].copy_from_slice(&seq.to_le_bytes());
                        conn.queue_binary(&msg);
                        in_flight.push_back((due, now));
                        seq += 1;
                        due += plan.interval;
                    }
                    live.sent.fetch_add(seq - before, Relaxed);
                    sending = due < plan.end;
                    progress = true;
                } else {
                    if sleep_at != due {
                        sleep.as_mut().reset(due.into());
                        sleep_at = due;
                    }
                    if sleep.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
            }
            if conn.has_output() {
                match conn.poll_output(cx) {
                    Poll::Ready(Ok(())) => progress = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            let mut completed = 0u64;
            let input = conn.poll_input(cx, |mut data| {
                while !data.is_empty() {
                    let take = (plan.size - offset).min(data.len());
                    if offset < 8 {
                        let k = (8 - offset).min(take);
                        head[offset..offset + k].copy_from_slice(&data[..k]);
                    }
                    offset += take;
                    data = &data[take..];
                    if offset == plan.size {
                        offset = 0;
                        let now = Instant::now();
                        match in_flight.pop_front() {
                            Some((scheduled, queued)) => {
                                rec.record([
                                    nanos(now - queued),
                                    nanos(now - scheduled),
                                    nanos(queued.saturating_duration_since(scheduled)),
                                ]);
                                if u64::from_le_bytes(head) != expected {
                                    r.out_of_order += 1;
                                }
                                expected += 1;
                                completed += 1;
                            }
                            None => r.unexpected_bytes += plan.size as u64,
                        }
                    }
                }
            });
            if completed > 0 {
                r.received += completed;
                live.received.fetch_add(completed, Relaxed);
            }
            match input {
                Poll::Ready(Ok(Input::Progress)) => progress = true,
                Poll::Ready(other) => return Poll::Ready(Err(Input::ended(other))),
                Poll::Pending => {}
            }
            if !sending && in_flight.is_empty() && !conn.has_output() {
                return Poll::Ready(Ok(()));
            }
            if !progress {
                return Poll::Pending;
            }
        }),
    )
    .await;
    rec.flush();
    r.sent = seq;
    r.lost = in_flight.len() as u64;
    match ran {
        Ok(Ok(())) => r.close = Some(conn.close(CLOSE_TIMEOUT).await),
        Ok(Err(e)) => r.error = Some(format!("session: {e}")),
        Err(_) => {
            r.error = Some(format!("session: {} echoes missing after the drain time", r.lost));
            r.close = Some(conn.close(CLOSE_TIMEOUT).await);
        }
    }
    r
}
