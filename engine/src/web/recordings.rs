//! Recordings for replay: the list, and one recording streamed. Both touch the disk, so both run
//! on the files pool: a directory of ten thousand recordings never stalls a relaying core.

use super::response::{Body, Response};
use crate::blocking::Pools;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Most recordings listed (newest first among those read).
const MAX_LISTED: usize = 10_000;
/// Largest recording served for replay; larger ones are refused rather than streamed for minutes.
pub const MAX_REPLAY_BYTES: u64 = 256 << 20;

/// Runs `f` on the files pool within `limit` (a hung disk or mount answers 503, never holds the
/// connection).
pub async fn on_files_pool<T: Send + 'static>(
    pools: &Pools,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    match crate::server::timeout(limit, pools.files.call(f)).await {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Response::error(503, &e.to_string())),
        None => Err(Response::error(503, "the disk did not answer in time")),
    }
}

/// The list of recordings in `dir` as the web app shows it.
pub async fn list(pools: &Pools, dir: PathBuf, limit: Duration) -> Response {
    match on_files_pool(pools, limit, move || read_list(&dir)).await {
        Ok(list) => Response::json(200, serde_json::Value::Array(list)),
        Err(r) => r,
    }
}

fn read_list(dir: &Path) -> Vec<serde_json::Value> {
    let mut list = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten().take(MAX_LISTED) {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".cast"))
        else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        let header = first_line(&path).and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok());
        let title = header
            .as_ref()
            .and_then(|h| h["title"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let (user, target) = title.split_once('@').unwrap_or(("", ""));
        let start = header.as_ref().and_then(|h| h["timestamp"].as_u64()).unwrap_or(0);
        list.push(serde_json::json!({
            "session": id, "user": user, "target": target,
            "start": portcullis_core::audit::rfc3339(UNIX_EPOCH + Duration::from_secs(start)),
            "bytes": meta.len(),
        }));
    }
    list.sort_by(|a, b| b["start"].as_str().cmp(&a["start"].as_str()));
    list
}

fn first_line(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = vec![0u8; 4096];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let line = buf[..n].split(|&b| b == b'\n').next()?;
    String::from_utf8(line.to_vec()).ok()
}

/// One recording, opened for streaming. `id` must be a session id (hex): nothing else can name
/// a file.
pub async fn open(pools: &Pools, dir: PathBuf, id: &str, limit: Duration) -> Response {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Response::error(404, "no such recording");
    }
    let path = dir.join(format!("{id}.cast"));
    let opened = on_files_pool(pools, limit, move || {
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, len))
    })
    .await;
    match opened {
        Ok(Ok((_, len))) if len > MAX_REPLAY_BYTES => Response::error(413, "recording too large to replay"),
        Ok(Ok((file, len))) => Response {
            status: 200,
            content_type: "application/x-asciicast",
            headers: Vec::new(),
            body: Body::File { file, len },
            reason: None,
        },
        Ok(Err(_)) => Response::error(404, "no such recording"),
        Err(r) => r,
    }
}
