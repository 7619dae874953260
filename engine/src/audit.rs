//! The audit trail: one JSON line per session (and per refused request), written by a dedicated
//! thread so a slow disk never stalls a relay.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

#[derive(Debug, Serialize)]
pub struct SessionRecord {
    pub event: &'static str,
    pub session: String,
    pub user: String,
    pub client: String,
    pub target: String,
    pub protocol: String,
    pub token_id: String,
    /// RFC 3339, UTC.
    pub start: String,
    pub end: String,
    pub bytes_client_to_target: u64,
    pub bytes_target_to_client: u64,
    pub ended: String,
    /// RDP: the `Cookie: mstshash=` (user name) the client's X.224 request presented.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdp_cookie: Option<String>,
    /// The session's recording file, when it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// How the user came in when not by a tunnel (`web_terminal`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct DenialRecord {
    pub event: &'static str,
    pub time: String,
    pub client: String,
    pub path: String,
    pub status: u16,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Cheap to clone; each executor holds one.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Vec<u8>>,
}

impl Audit {
    /// Appends to `path` (created 0600 if absent), or writes to stdout.
    pub fn start(path: Option<&Path>) -> anyhow::Result<Audit> {
        let mut out: Box<dyn Write + Send> = match path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("cannot open audit log {}: {e}", p.display()))?;
                Box::new(file)
            }
            None => Box::new(std::io::stdout()),
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::Builder::new().name("audit".into()).spawn(move || {
            for line in rx {
                // Each record goes out in one write, so concurrent writers never interleave lines.
                if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
                    tracing::error!("audit log write failed: {e}");
                }
            }
        })?;
        Ok(Audit { tx })
    }

    pub fn record(&self, rec: &impl Serialize) {
        if let Ok(mut line) = serde_json::to_vec(rec) {
            line.push(b'\n');
            let _ = self.tx.send(line);
        }
    }
}

/// Current time in RFC 3339 (UTC, milliseconds), without a date-time crate.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

pub fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_305_599)),
            "2026-11-21T23:59:59.000Z"
        );
    }
}
