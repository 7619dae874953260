//! The audit trail's writer: one JSON line per record (`portcullis_core::audit`), written by a
//! dedicated thread so that a slow disk never stalls a relay. The queue to it is bounded (a flood
//! of refusals against a stalled disk cannot grow memory); a record that finds it full is dropped,
//! counted and logged, never waited for.

use crate::error::{Error, Result};
use portcullis_core::audit::AuditRecord;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// Cheap to clone; each executor holds one.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::SyncSender<Vec<u8>>,
    failures: Arc<AtomicU64>,
}

/// Records waiting for the writer at most (a few MB of JSON lines).
const QUEUE: usize = 16 * 1024;

impl Audit {
    /// Appends to `path` (created 0600 if absent), or writes to stdout.
    pub fn start(path: Option<&Path>) -> Result<Audit> {
        let mut out: Box<dyn Write + Send> = match path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| Error::file("cannot open audit log", p, e))?;
                Box::new(file)
            }
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
        let failures = Arc::new(AtomicU64::new(0));
        let failed = failures.clone();
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || {
                for line in rx {
                    // Each record goes out in one write, so concurrent writers never interleave lines.
                    if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("audit log write failed: {e}");
                    }
                }
            })
            .map_err(|e| Error::Io("cannot start the audit thread", e))?;
        Ok(Audit { tx, failures })
    }

    pub fn record(&self, record: &AuditRecord) {
        let line = serde_json::to_vec(record).map(|mut line| {
            line.push(b'\n');
            line
        });
        let lost = match line {
            Ok(line) => match self.tx.try_send(line) {
                Ok(()) => return,
                Err(mpsc::TrySendError::Full(_)) => "the audit queue is full (the log is not keeping up)",
                Err(mpsc::TrySendError::Disconnected(_)) => "the audit writer stopped",
            },
            Err(_) => "a record could not be encoded",
        };
        let n = self.failures.fetch_add(1, Ordering::Relaxed);
        // The first loss, then one line per thousand: losses must not flood the log either.
        if n.is_multiple_of(1000) {
            tracing::error!(lost = n + 1, "audit record lost: {lost}");
        }
    }

    /// Records that could not be written or were dropped, since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}
