//! Logging that never blocks a worker.
//!
//! Workers format an event into a line and hand it to a bounded queue; one thread writes the
//! queue to stderr. When stderr is slow or stopped (a stuck pipe, a paused terminal) the queue
//! fills and new lines are dropped and counted, and the next line written says how many went:
//! a log reader can lose lines but never stall a session. Every line is escaped here, whatever
//! the field: a control character in a value (a newline that would forge a line, an escape
//! sequence for the reader's terminal) is written as `\n`, `\x1b`, ….

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Lines waiting for stderr at most; about 1 MiB of typical lines.
const QUEUE_LINES: usize = 4096;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for collectors.
    Json,
}

enum Item {
    Line(Vec<u8>),
    /// Answered (through the pair) once every earlier line is written.
    Flush(Arc<(Mutex<bool>, Condvar)>),
}

struct Sink {
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Lines dropped because stderr did not keep up, since start.
pub fn dropped_lines() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Installs the global subscriber: `PORTCULLIS_LOG` filters (`info` by default), `format`
/// shapes the lines; colour only when stderr is a terminal.
pub fn init(format: LogFormat) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("PORTCULLIS_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    let terminal = std::io::stderr().is_terminal();
    // Panics are logged like everything else (never written to stderr from a core); the worker
    // that catches one says what it did about it.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("?");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, "panic: {info}\n{backtrace}");
        } else {
            tracing::error!(thread, "panic: {info}");
        }
    }));
    let writer = start_writer(terminal);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Text => registry.with(layer.with_ansi(terminal).with_filter(filter)).init(),
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(filter))
            .init(),
    }
}

/// Waits (up to `limit`) until every line logged so far is written: before the process exits.
pub fn flush(limit: Duration) {
    let Some(sink) = SINK.get() else { return };
    let done = Arc::new((Mutex::new(false), Condvar::new()));
    if sink.queue.try_send(Item::Flush(done.clone())).is_err() {
        return;
    }
    let (lock, signal) = &*done;
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let _ = signal.wait_timeout_while(guard, limit, |written| !*written);
}

fn start_writer(terminal: bool) -> MakeLine {
    let (queue, lines) = sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = dropped.clone();
    let spawned = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(lines, counted));
    if spawned.is_err() {
        // No thread: lines are dropped and counted rather than written from the workers.
        eprintln!("portcullis: cannot start the log writer thread; logging is off");
    }
    let _ = SINK.set(Sink { queue, dropped });
    MakeLine { keep_escapes: terminal }
}

/// How long the writer sleeps when it finds the queue empty, while lines are coming. A writer
/// blocked in `recv` is woken by every line (a futex wake and a context switch per line: at
/// 2,500 sessions a second, two lines each, that was 12 % of the gateway's CPU); a polling one
/// is never woken by a worker and writes what accumulated in one write.
const POLL: Duration = Duration::from_millis(10);
/// Empty polls in a row after which the writer blocks in `recv` again (quiet: one wake per
/// line costs nothing then), about one second.
const IDLE_POLLS: u32 = 100;
/// From this many lines in a `RATE_WINDOW` the writer polls instead of blocking: below it,
/// lines are sparse and each is written at once (a blocked writer wakes for it), so a quiet
/// gateway's lines appear without delay.
const BUSY_LINES: usize = 20;
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// Bytes gathered into one write at most.
const BATCH: usize = 64 * 1024;

fn write_lines(lines: Receiver<Item>, dropped: Arc<AtomicU64>) {
    use std::sync::mpsc::TryRecvError;
    let mut reported = 0;
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
    // Blocking until lines come fast enough to batch.
    let mut empty_polls = IDLE_POLLS;
    let (mut window, mut in_window) = (std::time::Instant::now(), 0usize);
    loop {
        let first = if empty_polls >= IDLE_POLLS {
            match lines.recv() {
                Ok(item) => Some(item),
                Err(_) => return,
            }
        } else {
            match lines.try_recv() {
                Ok(item) => Some(item),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            }
        };
        let Some(first) = first else {
            empty_polls += 1;
            std::thread::sleep(POLL);
            continue;
        };
        let mut drained = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            drained += 1;
            match item {
                Item::Line(line) => {
                    let lost = dropped.load(Ordering::Relaxed);
                    if lost != reported {
                        batch.extend_from_slice(
                            format!("portcullis: {} log lines dropped (stderr too slow)\n", lost - reported).as_bytes(),
                        );
                        reported = lost;
                    }
                    batch.extend_from_slice(&line);
                    if batch.len() >= BATCH {
                        write_batch(&mut batch);
                    }
                }
                Item::Flush(done) => {
                    write_batch(&mut batch);
                    let _ = std::io::stderr().flush();
                    let (lock, signal) = &*done;
                    *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
                    signal.notify_all();
                }
            }
            next = lines.try_recv().ok();
        }
        write_batch(&mut batch);
        if window.elapsed() > RATE_WINDOW {
            (window, in_window) = (std::time::Instant::now(), 0);
        }
        in_window += drained;
        empty_polls = if in_window >= BUSY_LINES { 0 } else { IDLE_POLLS };
    }
}

/// Writes what was gathered in one write (other threads print to stderr too: the listening
/// line, errors; the lock keeps lines whole).
fn write_batch(batch: &mut Vec<u8>) {
    if !batch.is_empty() {
        let _ = std::io::stderr().lock().write_all(batch);
        batch.clear();
    }
}

/// Makes a [`Line`] per event (the fmt layer writes each event through a fresh writer).
#[derive(Clone, Copy)]
struct MakeLine {
    /// Colour is on: keep the formatter's own escape sequences (field values are escaped by
    /// tracing-subscriber itself in that case).
    keep_escapes: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for MakeLine {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            keep_escapes: self.keep_escapes,
        }
    }
}

/// One event's bytes; escaped and queued when dropped.
struct Line {
    buf: Vec<u8>,
    keep_escapes: bool,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Some(sink) = SINK.get() else { return };
        let line = escape_line(&self.buf, self.keep_escapes);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = sink.queue.try_send(Item::Line(line)) {
            sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One line: control characters other than a tab (and the escape that starts the formatter's
/// colours, when `keep_escapes`) written as `\n`, `\r`, `\xNN`; exactly one newline, at the end.
fn escape_line(event: &[u8], keep_escapes: bool) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let mut out = Vec::with_capacity(body.len() + 1);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0x1b if keep_escapes => out.push(b),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::escape_line;

    #[test]
    fn a_line_stays_one_line_without_control_characters() {
        let forged = b"INFO sign-in failed user=mallory\nINFO signed in user=admin\x1b[2J\r\x07\n";
        let out = escape_line(forged, false);
        assert_eq!(
            out,
            b"INFO sign-in failed user=mallory\\nINFO signed in user=admin\\x1b[2J\\r\\x07\n".to_vec()
        );
        assert_eq!(
            escape_line(b"\x1b[32mINFO\x1b[0m ok\n", true),
            b"\x1b[32mINFO\x1b[0m ok\n".to_vec()
        );
        assert_eq!(escape_line(b"no newline", false), b"no newline\n".to_vec());
    }
}
