//! `GET /api/admin/audit`: the web app's Audit page searches this node's audit log (the JSON lines
//! file of `[audit] path`) for administrators: sign-ins, sessions, denials and admin actions by
//! kind, user, target, time and outcome (`portcullis_core::audit_search`).
//!
//! The file is read on the files pool from its end backwards, newest first, at most `MAX_SCAN`
//! bytes of it and `MAX_RESULTS` records per search, so a search costs a bounded amount whatever
//! the log's size; the answer says when the scan stopped before the file's start. A fleet's nodes
//! each keep their own log: the page searches the node that serves it (ship the logs, e.g. through
//! `[audit] syslog_socket`, to search the fleet's in one place).

use super::api::WebRequest;
use super::response::Response;
use super::sessions::{administrator, record};
use portcullis_core::audit::{AdminAction, AuditRecord};
use portcullis_core::audit_search::Query;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

/// Most bytes of the log one search reads (its newest part).
const MAX_SCAN: u64 = 64 << 20;
/// Most records one search returns.
pub const MAX_RESULTS: usize = 500;
/// Longest audit line taken; a longer one is skipped.
const MAX_LINE: usize = 64 << 10;
const BLOCK: usize = 64 << 10;

pub async fn search(req: &WebRequest<'_>) -> Response {
    let admin = match administrator(req, AdminAction::SearchAudit).await {
        Ok(s) => s.user,
        Err(r) => return r,
    };
    let param = |name| req.head.query_param(name);
    let (kind, user, target, outcome, from, to) = (
        param("event"),
        param("user"),
        param("target"),
        param("outcome"),
        param("from"),
        param("to"),
    );
    let query = match Query::parse(
        kind.as_deref(),
        user.as_deref(),
        target.as_deref(),
        outcome.as_deref(),
        from.as_deref(),
        to.as_deref(),
    ) {
        Ok(q) => q,
        Err(e) => return Response::error(400, &e.to_string()),
    };
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, MAX_RESULTS);
    let mut r = record(req, AdminAction::SearchAudit, Some(&admin));
    r.detail = Some(format!("{query:?}"));
    let Some(path) = req.policy.config.audit_path.clone() else {
        r.status = 404;
        req.shared.audit.record(&AuditRecord::Admin(r));
        return Response::error(404, "this gateway keeps no audit file ([audit] path)");
    };
    let scan = req.pools.files.call(move || scan(&path, &query, limit));
    let answer = match crate::server::timeout(req.limit, scan).await {
        Some(Ok(Ok(found))) => Response::json(200, found),
        Some(Ok(Err(e))) => Response::error(503, &format!("cannot read the audit log: {e}")),
        Some(Err(e)) => Response::error(503, &e.to_string()),
        None => Response::error(503, "the audit search did not finish in time"),
    };
    r.status = answer.status;
    req.shared.audit.record(&AuditRecord::Admin(r));
    answer
}

/// The newest `limit` records of the file at `path` that `query` selects, reading at most
/// `MAX_SCAN` bytes from its end.
fn scan(path: &PathBuf, query: &Query, limit: usize) -> std::io::Result<serde_json::Value> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let stop = len.saturating_sub(MAX_SCAN);
    let mut records = Vec::new();
    // Bytes of a line whose start is in a block not read yet.
    let mut partial: Vec<u8> = Vec::new();
    let mut pos = len;
    let mut block = vec![0u8; BLOCK];
    while pos > stop && records.len() < limit {
        let n = (pos - stop).min(BLOCK as u64) as usize;
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut block[..n])?;
        let mut chunk = block[..n].to_vec();
        chunk.append(&mut partial);
        let mut lines = chunk.split(|b| *b == b'\n').rev().collect::<Vec<_>>();
        // The first line may go on in the previous block (unless this is the file's start).
        let first = if pos > 0 { lines.pop() } else { None };
        for line in lines {
            take(line, query, &mut records, limit);
            if records.len() >= limit {
                break;
            }
        }
        if let Some(first) = first {
            if first.len() <= MAX_LINE {
                partial = first.to_vec();
            }
        }
    }
    if pos == stop && stop == 0 && records.len() < limit {
        take(&partial, query, &mut records, limit);
    }
    Ok(serde_json::json!({
        "records": records,
        "complete": stop == 0 || records.len() >= limit,
        "scanned_bytes": len - pos,
    }))
}

fn take(line: &[u8], query: &Query, records: &mut Vec<serde_json::Value>, limit: usize) {
    if line.is_empty() || line.len() > MAX_LINE || records.len() >= limit {
        return;
    }
    if let Ok(record) = serde_json::from_slice::<serde_json::Value>(line) {
        if query.matches(&record) {
            records.push(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_newest_first_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut text = String::new();
        // Lines long enough that many cross the 64 KiB block boundaries.
        for i in 0..3000 {
            let user = if i % 3 == 0 { "carol" } else { "dave" };
            text.push_str(&format!(
                "{{\"event\":\"denied\",\"time\":\"2026-11-26T09:{:02}:{:02}.000Z\",\"path\":\"/v1/tunnel/t{i}\",\"status\":403,\"reason\":\"{}\",\"user\":\"{user}\"}}\n",
                i / 60 % 60,
                i % 60,
                "x".repeat(i % 200)
            ));
        }
        std::fs::write(&path, text).unwrap();
        let carol = Query::parse(None, Some("carol"), None, None, None, None).unwrap();
        let found = scan(&path, &carol, 5000).unwrap();
        let records = found["records"].as_array().unwrap();
        assert_eq!(records.len(), 1000);
        assert_eq!(records[0]["path"], "/v1/tunnel/t2997", "newest first");
        assert_eq!(records[999]["path"], "/v1/tunnel/t0");
        assert_eq!(found["complete"], true);
        let found = scan(&path, &carol, 10).unwrap();
        assert_eq!(found["records"].as_array().unwrap().len(), 10);
        let one = Query::parse(None, None, Some("t1500"), None, None, None).unwrap();
        let found = scan(&path, &one, 10).unwrap();
        assert_eq!(found["records"].as_array().unwrap().len(), 1);
    }
}
