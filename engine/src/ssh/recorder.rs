//! Session recordings in asciicast v2, written by one thread so a slow or full disk never
//! stalls a live session: events are queued without blocking and dropped (and counted) when the
//! queue is full; a write error ends that recording, not the session.

use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const QUEUE: usize = 8192;

/// Events dropped because the recorder was behind, and recordings a write error stopped, since
/// start (for the metrics).
static DROPPED: AtomicU64 = AtomicU64::new(0);
static FAILURES: AtomicU64 = AtomicU64::new(0);

pub fn dropped_events() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

pub fn write_failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Sessions that went on unrecorded because their recording could not start (not `required`).
static UNRECORDED: AtomicU64 = AtomicU64::new(0);
/// Recordings deleted for being older than `[recording] retention`.
static EXPIRED: AtomicU64 = AtomicU64::new(0);

pub fn unrecorded_sessions() -> u64 {
    UNRECORDED.load(Ordering::Relaxed)
}

pub fn count_unrecorded() {
    UNRECORDED.fetch_add(1, Ordering::Relaxed);
}

pub fn expired_recordings() -> u64 {
    EXPIRED.load(Ordering::Relaxed)
}

/// Refuses to start a recording on a disk with less than `min_free_mb` MiB available: a full
/// disk would cut it short, and the audit log often shares that disk.
pub fn check_room(dir: &Path, min_free_mb: u64) -> std::io::Result<()> {
    let st = rustix::fs::statvfs(dir).map_err(std::io::Error::from)?;
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < min_free_mb.saturating_mul(1 << 20) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "{} MiB free on the recordings disk, {min_free_mb} MiB needed",
                free >> 20
            ),
        ));
    }
    Ok(())
}

/// How often old recordings are looked for.
const RETENTION_SWEEP: std::time::Duration = std::time::Duration::from_secs(3600);

/// Starts the thread that deletes recordings past their retention: at start, then hourly.
/// `settings` says where and how long, as configured now (a reload changes them).
pub fn start_retention(
    settings: impl Fn() -> Option<(PathBuf, std::time::Duration)> + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("recordings-retention".into())
        .spawn(move || loop {
            if let Some((dir, retention)) = settings() {
                match expire(&dir, retention) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(dir = %dir.display(), deleted = n, "recordings past their retention deleted")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(dir = %dir.display(), "cannot apply the recordings' retention: {e}"),
                }
            }
            std::thread::sleep(RETENTION_SWEEP);
        })
        .map(|_| ())
}

/// Deletes the recordings in `dir` older than `retention`; returns how many went.
pub fn expire(dir: &Path, retention: std::time::Duration) -> std::io::Result<usize> {
    let now = std::time::SystemTime::now();
    let mut deleted = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "cast") {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if now.duration_since(modified).is_ok_and(|age| age > retention) && std::fs::remove_file(&path).is_ok() {
            deleted += 1;
        }
    }
    EXPIRED.fetch_add(deleted as u64, Ordering::Relaxed);
    Ok(deleted)
}

enum Event {
    Open {
        id: u64,
        file: BufWriter<File>,
        path: PathBuf,
    },
    Data {
        id: u64,
        line: String,
    },
    Close {
        id: u64,
    },
    /// Answered once every event queued before it is written and flushed.
    Sync(std::sync::mpsc::Sender<()>),
}

/// Cheap to clone: every clone feeds the one writer thread.
#[derive(Clone)]
pub struct Recorder {
    tx: SyncSender<Event>,
    /// Recordings that ended while the queue was full: closed once the writer has caught up, so
    /// that no file stays open (and unflushed) for lack of room for its Close.
    late_closes: Arc<Mutex<Vec<u64>>>,
}

type OpenFiles = HashMap<u64, (BufWriter<File>, PathBuf)>;

fn close(open: &mut OpenFiles, id: u64) {
    if let Some((mut file, path)) = open.remove(&id) {
        if let Err(e) = file.flush() {
            FAILURES.fetch_add(1, Ordering::Relaxed);
            tracing::error!(recording = %path.display(), "recording incomplete: {e}");
        }
    }
}

impl Recorder {
    pub fn start() -> std::io::Result<Recorder> {
        let (tx, rx) = sync_channel::<Event>(QUEUE);
        let late_closes = Arc::new(Mutex::new(Vec::new()));
        let late = late_closes.clone();
        std::thread::Builder::new().name("recorder".into()).spawn(move || {
            let mut open: OpenFiles = HashMap::new();
            loop {
                let event = match rx.try_recv() {
                    Ok(event) => event,
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => {
                        // Caught up: what ended while the queue was full can close now.
                        let ids = std::mem::take(&mut *late.lock().unwrap_or_else(|e| e.into_inner()));
                        for id in ids {
                            close(&mut open, id);
                        }
                        match rx.recv() {
                            Ok(event) => event,
                            Err(_) => break,
                        }
                    }
                };
                match event {
                    Event::Open { id, file, path } => {
                        open.insert(id, (file, path));
                    }
                    Event::Data { id, line } => {
                        if let Some((file, path)) = open.get_mut(&id) {
                            if let Err(e) = file.write_all(line.as_bytes()) {
                                FAILURES.fetch_add(1, Ordering::Relaxed);
                                tracing::error!(recording = %path.display(), "recording stopped: {e}");
                                open.remove(&id);
                            }
                        }
                    }
                    Event::Close { id } => close(&mut open, id),
                    Event::Sync(done) => {
                        for (file, _) in open.values_mut() {
                            let _ = file.flush();
                        }
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Recorder { tx, late_closes })
    }

    /// Waits (up to `limit`) until everything queued so far is written: for an orderly stop, and
    /// for tests. False if the writer did not answer in time.
    pub fn sync(&self, limit: std::time::Duration) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        self.tx.send(Event::Sync(tx)).is_ok() && rx.recv_timeout(limit).is_ok()
    }

    /// Creates `dir/<session>.cast` and writes its header. Fails (disk full, permissions) before
    /// the session starts, so a `required` recording can refuse the session.
    pub fn open(
        &self,
        dir: &Path,
        session: &str,
        header: &Header,
        input: bool,
        min_free_mb: u64,
    ) -> std::io::Result<Recording> {
        // Recordings hold what users typed and saw: readable by the gateway's user only, like
        // the audit log (a directory it creates is 0700, each file 0600).
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        check_room(dir, min_free_mb)?;
        let path = dir.join(format!("{session}.cast"));
        let file = File::options().write(true).create_new(true).mode(0o600).open(&path)?;
        let mut file = BufWriter::new(file);
        let mut line = serde_json::to_string(header).map_err(std::io::Error::other)?;
        line.push('\n');
        file.write_all(line.as_bytes())?;
        file.flush()?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.tx.send(Event::Open {
            id,
            file,
            path: path.clone(),
        });
        Ok(Recording {
            id,
            tx: self.tx.clone(),
            late_closes: self.late_closes.clone(),
            start: Instant::now(),
            path,
            input,
            out: Utf8Carry::default(),
            dropped: 0,
        })
    }
}

#[derive(Serialize)]
pub struct Header {
    pub version: u8,
    pub width: u16,
    pub height: u16,
    pub timestamp: u64,
    pub title: String,
}

/// One session's recording. Dropping it closes the file.
pub struct Recording {
    id: u64,
    tx: SyncSender<Event>,
    late_closes: Arc<Mutex<Vec<u64>>>,
    start: Instant,
    pub path: PathBuf,
    input: bool,
    out: Utf8Carry,
    dropped: u64,
}

impl Recording {
    pub fn output(&mut self, bytes: &[u8]) {
        let text = self.out.push(bytes);
        if !text.is_empty() {
            self.event("o", &text);
        }
    }

    pub fn input(&mut self, bytes: &[u8]) {
        if self.input {
            self.event("i", &String::from_utf8_lossy(bytes));
        }
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.event("r", &format!("{cols}x{rows}"));
    }

    fn event(&mut self, kind: &str, data: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let Ok(mut line) = serde_json::to_string(&(t, kind, data)) else {
            return;
        };
        line.push('\n');
        match self.tx.try_send(Event::Data { id: self.id, line }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                self.dropped += 1;
                if self.dropped == 1 {
                    tracing::warn!(recording = %self.path.display(), "recorder is behind: dropping events");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Event::Close { id: self.id }) {
            self.late_closes.lock().unwrap_or_else(|e| e.into_inner()).push(self.id);
        }
    }
}

/// Turns a byte stream into valid UTF-8 text without splitting characters across events.
#[derive(Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(valid_up_to);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_never_split() {
        let mut c = Utf8Carry::default();
        let bytes = "é✓".as_bytes();
        assert_eq!(c.push(&bytes[..1]), "");
        assert_eq!(c.push(&bytes[1..3]), "é");
        assert_eq!(c.push(&bytes[3..]), "✓");
        assert_eq!(c.push(b"\xff ok"), "\u{fffd} ok");
    }

    #[test]
    fn recording_file_is_asciicast_v2() {
        let dir = tempfile::tempdir().unwrap();
        let rec = Recorder::start().unwrap();
        let header = Header {
            version: 2,
            width: 80,
            height: 24,
            timestamp: 1,
            title: "t".into(),
        };
        let mut r = rec.open(dir.path(), "s1", &header, false, 0).unwrap();
        r.output(b"hello ");
        r.input(b"secret");
        r.output("wörld".as_bytes());
        let path = r.path.clone();
        drop(r);
        assert!(
            rec.open(dir.path(), "s1", &header, false, 0).is_err(),
            "never overwrites a recording"
        );
        assert!(
            rec.sync(std::time::Duration::from_secs(10)),
            "the recorder did not answer"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        assert_eq!(lines[2][2], "wörld");
        assert_eq!(lines.len(), 3, "input is not recorded unless the policy says so");
    }
}
