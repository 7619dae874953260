//! `/v1/watch/{session}`: an administrator watches a live browser terminal, read-only. The
//! session's `WatchHub` feeds this connection's queue (bounded: a slow watcher is dropped, never
//! waited for); this sends it on as WebSocket frames: binary for what the terminal shows, text
//! (JSON) for the start and size changes. Anything the watcher sends is ignored but a Close.

use crate::server::conn::Conn;
use crate::server::watch::{Seen, WatchEnd};
use crate::web::sessions::WatchStart;
use futures_lite::AsyncReadExt;
use portcullis_protocols::ws::{self, CloseCode, Message, MessageAssembler, OpCode, Role};

enum Wake {
    Seen(Result<Seen, WatchEnd>),
    Watcher(std::io::Result<usize>),
}

pub async fn handle(conn: &mut Conn, start: WatchStart, leftover: Vec<u8>) {
    let WatchStart {
        session,
        admin,
        mut watching,
        user,
        target,
        accept,
    } = start;
    if !conn.accept_upgrade(&accept).await {
        return;
    }
    tracing::info!(%admin, %session, "watching a terminal session");
    let hello = serde_json::json!({ "type": "watching", "session": session, "user": user, "target": target });
    if conn
        .send_frame(OpCode::Text, hello.to_string().as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let limits = ws::Limits {
        max_frame_payload: 4096,
        max_message: 4096,
    };
    let mut assembler = MessageAssembler::new(Role::Server, limits);
    let mut buf = leftover;
    let mut end = buf.len();
    buf.resize(4096.max(end), 0);
    loop {
        // What the watcher sent: only a Close matters.
        let mut start = 0;
        while start < end {
            match assembler.feed(&mut buf[start..end]) {
                Ok((used, msg)) => {
                    start += used;
                    if let Some(Message::Close { .. }) = msg {
                        return conn.close_ws(CloseCode::NORMAL, "").await;
                    }
                }
                Err(e) => return conn.close_ws(e.close_code(), "protocol error").await,
            }
        }
        end = 0;
        let wake = {
            let tls = &mut conn.tls;
            let room = &mut buf[..];
            futures_lite::future::or(async { Wake::Seen(watching.next().await) }, async {
                Wake::Watcher(tls.read(room).await)
            })
            .await
        };
        let sent = match wake {
            Wake::Watcher(Ok(0)) | Wake::Watcher(Err(_)) => return,
            Wake::Watcher(Ok(n)) => {
                end = n;
                Ok(())
            }
            Wake::Seen(Ok(Seen::Output(bytes))) => conn.send_frame(OpCode::Binary, &bytes).await,
            Wake::Seen(Ok(Seen::Resize(cols, rows))) => {
                let msg = serde_json::json!({ "type": "resize", "cols": cols, "rows": rows });
                conn.send_frame(OpCode::Text, msg.to_string().as_bytes()).await
            }
            Wake::Seen(Err(WatchEnd::SessionEnded)) => return conn.close_ws(CloseCode::NORMAL, "session ended").await,
            Wake::Seen(Err(WatchEnd::Lagged)) => {
                return conn
                    .close_ws(CloseCode::TRY_AGAIN_LATER, "the watcher fell behind")
                    .await
            }
            Wake::Seen(Err(WatchEnd::NodeLost)) => {
                return conn
                    .close_ws(CloseCode::TRY_AGAIN_LATER, "the session's node does not answer")
                    .await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
