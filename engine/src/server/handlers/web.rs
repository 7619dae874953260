//! The web app's routes: reads the (small, bounded) body, runs the API function of the route,
//! and sends its response: streamed when it is a file, shared when it is an embedded asset. The
//! terminal route continues as a WebSocket in `terminal.rs`.

use crate::server::conn::{Conn, Head, ReadEnd};
use crate::server::timeout;
use crate::web::api::{self, Action, WebRequest};
use crate::web::response::{Body, Response};
use futures_lite::AsyncWriteExt;
use portcullis_core::request::Reply;
use portcullis_core::route::WebRoute;
use portcullis_protocols::http;

/// Bytes of a file sent per read on the files pool.
const FILE_CHUNK: usize = 64 * 1024;

pub async fn handle(conn: &mut Conn, route: WebRoute<String>, mut head: Head, head_len: usize, body_len: usize) {
    let total = head_len + body_len;
    if head.buf.len() < total {
        head.buf.resize(total, 0);
    }
    while head.filled < total {
        match conn.read_until(head.deadline, &mut head.buf, head.filled).await {
            Ok(n) => head.filled += n,
            Err(ReadEnd::TimedOut) => return conn.reply(&Reply::text(408, "request timeout"), None).await,
            Err(ReadEnd::Closed) => return,
        }
    }
    let limits = conn.policy().config.limits.head();
    let Ok(Some(parsed)) = http::parse_head(&head.buf[..head_len], limits) else {
        return;
    };
    let action = {
        let req = WebRequest {
            head: &parsed,
            body: &head.buf[head_len..total],
            client: conn.client,
            policy: conn.policy(),
            web: &conn.shared.web,
            pools: &conn.shared.pools,
            limit: conn.settings().request_timeout,
            shared: &conn.shared,
            minter: conn.state.minter.as_deref(),
        };
        api::handle(&req, route).await
    };
    match action {
        Action::Respond(resp) => {
            // A refusal of the API (and of the administration's pages) is audited; an answer
            // without a reason is not one (a device login still waiting for approval, polled
            // every few seconds).
            let audited = parsed.path.starts_with("/v1/") || parsed.path.starts_with("/api/admin/");
            if let (true, Some(reason)) = (resp.status >= 400 && audited, &resp.reason) {
                conn.deny(parsed.path, resp.status, reason, None);
            }
            send(conn, resp).await
        }
        Action::Terminal(start) => {
            let leftover = head.buf[total..head.filled].to_vec();
            drop(head);
            super::terminal::handle(conn, *start, leftover).await
        }
        Action::Watch(start) => {
            let leftover = head.buf[total..head.filled].to_vec();
            drop(head);
            super::watch::handle(conn, *start, leftover).await
        }
    }
}

/// Sends a response and closes, within the close timeout for a small body; a large one (the app,
/// a recording) gets the close timeout per 64 KiB chunk: a slow reader is not cut off, a stalled
/// one is. What one connection holds meanwhile is the chunk in rustls (its buffer limit, 64 KiB
/// of records) and, for a file, the chunk read: assets are shared, never copied.
async fn send(conn: &mut Conn, resp: Response) {
    let head = resp.head();
    match resp.body {
        Body::Empty => conn.send_and_close(&head, &[]).await,
        Body::Static(bytes) if bytes.len() <= FILE_CHUNK => conn.send_and_close(&head, bytes).await,
        Body::Static(bytes) => stream_static(conn, &head, bytes).await,
        Body::Owned(bytes) => conn.send_and_close(&head, &bytes).await,
        Body::File { file, len } => stream_file(conn, &head, file, len).await,
    }
}

async fn stream_static(conn: &mut Conn, head: &[u8], body: &'static [u8]) {
    let limit = conn.settings().close_timeout;
    if !matches!(timeout(limit, conn.tls.write_all(head)).await, Some(Ok(()))) {
        return;
    }
    for chunk in body.chunks(FILE_CHUNK) {
        if !matches!(timeout(limit, conn.tls.write_all(chunk)).await, Some(Ok(()))) {
            return;
        }
    }
    conn.send_and_close(&[], &[]).await
}

async fn stream_file(conn: &mut Conn, head: &[u8], file: std::fs::File, len: u64) {
    let limit = conn.settings().close_timeout;
    if !matches!(timeout(limit, conn.tls.write_all(head)).await, Some(Ok(()))) {
        return;
    }
    let file = std::sync::Arc::new(file);
    let mut sent = 0u64;
    while sent < len {
        let want = (len - sent).min(FILE_CHUNK as u64) as usize;
        let (reader, offset) = (file.clone(), sent);
        let chunk = crate::web::recordings::on_files_pool(&conn.shared.pools, limit, move || {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0u8; want];
            let n = reader.read_at(&mut buf, offset)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        })
        .await;
        // A file that shrank or failed ends the response short: the client sees a truncated body.
        let Ok(Ok(chunk)) = chunk else { return };
        if chunk.is_empty() {
            return;
        }
        if !matches!(timeout(limit, conn.tls.write_all(&chunk)).await, Some(Ok(()))) {
            return;
        }
        sent += chunk.len() as u64;
    }
    conn.send_and_close(&[], &[]).await
}
