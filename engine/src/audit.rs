//! The audit trail's writer: one JSON line per record (`portcullis_core::audit`), written by a
//! dedicated thread so that a slow disk never stalls a relay.
//!
//! - **Whole lines only.** A write that fails halfway (a full disk, a file size limit) is cut
//!   back to the last whole line, so the file never holds a broken record for the next to be
//!   appended to.
//! - **Nothing lost while there is room.** A record that cannot be written is retried (every
//!   half second, and at once after a reopen) while the records behind it wait in a bounded
//!   queue; only when that queue is full are records dropped, counted, and said once.
//! - **Reopened on request** (`SIGHUP` or `SIGUSR1`): after logrotate moves the file, records go
//!   to a new file at the configured path.
//! - **Health.** `writable()` says whether records are getting out; with `[audit] required`, new
//!   sessions are refused while they are not. Failures are logged once per change of state.
//! - **Batched.** The writer takes every record queued when it wakes and writes them in one
//!   `write`, then lingers a moment (`LINGER`) before it waits again, so that records arriving
//!   meanwhile neither wake it nor cost a write each: at thousands of sessions a second, a few
//!   writes a millisecond instead of one (and a wake-up of this thread) per record.
//! - **Syslog too** (`[audit] syslog`): each record is also sent to the local syslog socket
//!   (journald or rsyslog listen on /dev/log), facility authpriv, without ever waiting for it: a
//!   record the socket cannot take is counted, and the file stays the record of truth (a record
//!   goes to syslog when the writer takes it, before its batch reaches the file).

use crate::error::{Error, Result};
use portcullis_core::audit::AuditRecord;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Records waiting for the writer at most (a few MB of JSON lines).
const QUEUE: usize = 16 * 1024;
/// How long a failing write waits before it is tried again (unless a reopen comes first).
const RETRY: Duration = Duration::from_millis(500);
/// How long the writer lets records gather after a write before it waits for the next one: how
/// much later than its enqueueing a record may reach the file.
const LINGER: Duration = Duration::from_millis(2);
/// Most bytes of records written at once.
const BATCH: usize = 256 << 10;

/// Cheap to clone; each executor holds one.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::SyncSender<Item>,
    health: Arc<Health>,
}

enum Item {
    Line(Vec<u8>),
    /// Answered once every earlier record is written (or given up on).
    Sync(mpsc::Sender<()>),
}

#[derive(Default)]
struct Health {
    /// The last write failed and is being retried.
    failing: AtomicBool,
    /// Records dropped because the queue was full, since start.
    dropped: AtomicU64,
    /// Writes that failed (each retry counts), since start.
    write_failures: AtomicU64,
    /// Writes made (each of one or more whole records), since start.
    writes: AtomicU64,
    /// Dropping records now (said once until a write succeeds again).
    dropping: AtomicBool,
    reopen: AtomicBool,
    /// Records the syslog socket did not take, since start.
    syslog_failures: AtomicU64,
}

impl Audit {
    /// Appends to `path` (created 0600 if absent), or writes to stdout; and with `syslog`, also
    /// sends every record to that syslog socket.
    pub fn start(path: Option<&Path>, syslog: Option<&Path>) -> Result<Audit> {
        let out = match path {
            Some(p) => Output::File(AuditFile::open(p).map_err(|e| Error::file("cannot open audit log", p, e))?),
            None => Output::Stdout,
        };
        let (tx, rx) = mpsc::sync_channel::<Item>(QUEUE);
        let health = Arc::new(Health::default());
        let syslog = match syslog {
            Some(p) => Some(Syslog::new(p).map_err(|e| Error::Io("cannot create the syslog socket", e))?),
            None => None,
        };
        let writer = Writer {
            out,
            health: health.clone(),
            syslog,
        };
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::Io("cannot start the audit thread", e))?;
        Ok(Audit { tx, health })
    }

    pub fn record(&self, record: &AuditRecord) {
        let line = serde_json::to_vec(record).map(|mut line| {
            line.push(b'\n');
            line
        });
        let Ok(line) = line else {
            // Records are plain data; this would be a bug, not an input.
            tracing::error!("an audit record could not be encoded");
            return;
        };
        if self.tx.try_send(Item::Line(line)).is_err() {
            let n = self.health.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.health.dropping.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    dropped = n,
                    "audit records are being dropped: the audit log is not keeping up"
                );
            }
        }
    }

    /// Whether records are getting out: the last write succeeded and none are being dropped.
    pub fn writable(&self) -> bool {
        !self.health.failing.load(Ordering::Relaxed) && !self.health.dropping.load(Ordering::Relaxed)
    }

    /// Records dropped (queue full) since start.
    pub fn dropped(&self) -> u64 {
        self.health.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes (retries included) since start.
    pub fn write_failures(&self) -> u64 {
        self.health.write_failures.load(Ordering::Relaxed)
    }

    /// Records the syslog socket did not take, since start.
    pub fn syslog_failures(&self) -> u64 {
        self.health.syslog_failures.load(Ordering::Relaxed)
    }

    /// Asks the writer to reopen the file at its path (after a rotation).
    pub fn reopen(&self) {
        self.health.reopen.store(true, Ordering::Relaxed);
        // Wakes a writer that is idle; a full queue means it is busy and sees the flag anyway.
        let (tx, _) = mpsc::channel();
        let _ = self.tx.try_send(Item::Sync(tx));
    }

    /// Waits (up to `limit`) until every record queued so far is written: before exiting.
    pub fn sync(&self, limit: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        self.tx.try_send(Item::Sync(tx)).is_ok() && rx.recv_timeout(limit).is_ok()
    }
}

enum Output {
    File(AuditFile),
    Stdout,
}

struct Writer {
    out: Output,
    health: Arc<Health>,
    syslog: Option<Syslog>,
}

/// The local syslog socket (RFC 3164 framing, as glibc's syslog() sends it).
struct Syslog {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    /// `<86>portcullis[PID]: `: facility authpriv (10), severity info (6).
    prefix: Vec<u8>,
    connected: bool,
    /// The last record failed (said once until one gets through).
    failing: bool,
}

impl Syslog {
    fn new(path: &Path) -> std::io::Result<Syslog> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        // Never wait for a slow syslog daemon: a full socket buffer loses the record (counted).
        socket.set_nonblocking(true)?;
        Ok(Syslog {
            socket,
            path: path.to_owned(),
            prefix: format!("<86>portcullis[{}]: ", std::process::id()).into_bytes(),
            connected: false,
            failing: false,
        })
    }

    fn send(&mut self, line: &[u8], failures: &AtomicU64) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut datagram = Vec::with_capacity(self.prefix.len() + line.len());
        datagram.extend_from_slice(&self.prefix);
        datagram.extend_from_slice(line);
        // Connected lazily and again after a failure: the daemon may restart.
        let sent = if self.connected {
            Ok(())
        } else {
            self.socket.connect(&self.path)
        }
        .and_then(|()| {
            self.connected = true;
            self.socket.send(&datagram)
        });
        match sent {
            Ok(_) => {
                if std::mem::replace(&mut self.failing, false) {
                    tracing::info!(socket = %self.path.display(), "audit records reach syslog again");
                }
            }
            Err(e) => {
                failures.fetch_add(1, Ordering::Relaxed);
                self.connected = false;
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(socket = %self.path.display(), "audit records do not reach syslog (counted; the file has them): {e}");
                }
            }
        }
    }
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Item>) {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(item) = next {
                match item {
                    Item::Line(line) => {
                        if let Some(syslog) = &mut self.syslog {
                            syslog.send(&line, &self.health.syslog_failures);
                        }
                        if batch.len() + line.len() > BATCH {
                            self.write(&batch);
                            batch.clear();
                        }
                        batch.extend_from_slice(&line);
                    }
                    Item::Sync(done) => {
                        self.write(&batch);
                        batch.clear();
                        self.reopen_if_asked();
                        let _ = done.send(());
                    }
                }
                next = rx.try_recv().ok();
            }
            self.write(&batch);
            batch.clear();
            // A batch of one is kept small: let what comes next gather without waking us.
            batch.shrink_to(64 << 10);
            std::thread::sleep(LINGER);
        }
    }

    /// Writes whole lines (one record or a batch), retrying until they are written. The queue
    /// fills meanwhile (and then drops, counted): records behind failing ones wait rather than
    /// overtake them.
    fn write(&mut self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        self.health.writes.fetch_add(1, Ordering::Relaxed);
        loop {
            self.reopen_if_asked();
            let result = match &mut self.out {
                Output::File(f) => f.append(lines),
                Output::Stdout => std::io::stdout()
                    .write_all(lines)
                    .and_then(|_| std::io::stdout().flush()),
            };
            match result {
                Ok(()) => {
                    if self.health.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("audit log writable again");
                    }
                    if self.health.dropping.swap(false, Ordering::Relaxed) {
                        let lost = self.health.dropped.load(Ordering::Relaxed);
                        tracing::warn!(dropped = lost, "audit records are no longer dropped");
                    }
                    return;
                }
                Err(e) => {
                    self.health.write_failures.fetch_add(1, Ordering::Relaxed);
                    if !self.health.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!("audit log write failing, records held and retried: {e}");
                    }
                    if matches!(self.out, Output::Stdout) {
                        return; // nothing to retry against; counted
                    }
                    self.wait_for_retry();
                }
            }
        }
    }

    fn wait_for_retry(&self) {
        let mut waited = Duration::ZERO;
        while waited < RETRY && !self.health.reopen.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
    }

    fn reopen_if_asked(&mut self) {
        if !self.health.reopen.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Output::File(f) = &mut self.out {
            match AuditFile::open(&f.path) {
                Ok(new) => {
                    *f = new;
                    tracing::info!(path = %f.path.display(), "audit log reopened");
                }
                Err(e) => {
                    tracing::error!(path = %f.path.display(), "cannot reopen the audit log, still writing to the old file: {e}")
                }
            }
        }
    }
}

/// The audit file, appended to by this writer only; `len` is where its last whole line ends.
struct AuditFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl AuditFile {
    fn open(path: &Path) -> std::io::Result<AuditFile> {
        use std::os::unix::fs::OpenOptionsExt;
        // Read too: to see whether the last line is whole.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let mut f = AuditFile {
            len: file.metadata()?.len(),
            file,
            path: path.to_owned(),
        };
        f.end_last_line()?;
        Ok(f)
    }

    /// A file whose last line was cut short (a crash mid-write) gets a newline, so that the next
    /// record starts a line of its own.
    fn end_last_line(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.len == 0 {
            return Ok(());
        }
        let mut last = [0u8; 1];
        self.file.read_exact_at(&mut last, self.len - 1)?;
        if last[0] != b'\n' {
            self.file.write_all(b"\n")?;
            self.len += 1;
        }
        Ok(())
    }

    /// Appends one whole line, or nothing: a partial write is cut back off.
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(line) {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    tracing::error!("cannot cut a partial audit line: {cut}");
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records queued while the writer was busy go out in one write, whole and in order.
    #[test]
    fn queued_records_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (tx, rx) = mpsc::sync_channel::<Item>(QUEUE);
        let health = Arc::new(Health::default());
        let lines: Vec<Vec<u8>> = (0..200).map(|i| format!("{{\"n\":{i}}}\n").into_bytes()).collect();
        for line in &lines {
            tx.try_send(Item::Line(line.clone())).unwrap();
        }
        let writer = Writer {
            out: Output::File(AuditFile::open(&path).unwrap()),
            health: health.clone(),
            syslog: None,
        };
        let thread = std::thread::spawn(move || writer.run(rx));
        // One message: the writer's answer to the sync.
        let (done, written) = mpsc::channel();
        tx.send(Item::Sync(done)).unwrap();
        written.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), lines.concat());
        assert_eq!(health.writes.load(Ordering::Relaxed), 1, "one write for the queue");
        drop(tx);
        thread.join().unwrap();
    }

    #[test]
    fn a_partial_line_is_cut_back_and_a_cut_file_gets_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").unwrap();
        let mut f = AuditFile::open(&path).unwrap();
        f.append(b"{\"c\":3}\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":\n{\"c\":3}\n");
        // A write that fails halfway, as a full disk does: here the file is swapped for /dev/full.
        let mut full = AuditFile {
            file: std::fs::OpenOptions::new().append(true).open("/dev/full").unwrap(),
            path: path.clone(),
            len: 0,
        };
        assert!(full.append(b"{\"d\":4}\n").is_err());
    }
}
