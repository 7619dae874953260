//! A plain `ws://` WebSocket-to-TCP bridge with no TLS and no auth, like websockify or websocat:
//! every upgrade on any path is relayed to one target by the gateway's own relay (the core's state
//! machine driven by `portcullis::relay::poll`) in the server role. The load generator's tests
//! measure other bridges' paths with it, and check what a client sends in the upgrade request.

use portcullis_core::relay::{Relay, Step};
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::ws::{Limits, Role};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// What the bridge saw of an upgrade request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Path and query.
    pub target: String,
    pub authorization: Option<String>,
}

/// Starts a bridge to `target` on the current tokio runtime: its address, and the requests seen.
pub async fn plain_bridge(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<SeenRequest>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the bridge");
    let addr = listener.local_addr().expect("bridge address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(bridge(sock, target, log.clone()));
        }
    });
    (addr, seen)
}

/// One connection: the upgrade, then the relay until it ends. `None` where the client gave up.
async fn bridge(mut sock: TcpStream, target: SocketAddr, log: Arc<Mutex<Vec<SeenRequest>>>) -> Option<()> {
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let (response, leftover) = loop {
        let n = sock.read(&mut buf[filled..]).await.ok().filter(|&n| n > 0)?;
        filled += n;
        let Some(head) = http::parse_head(&buf[..filled], HeadLimits::default()).ok()? else {
            continue;
        };
        let upgrade = http::websocket_upgrade(&head).ok()?;
        let path = match head.query {
            "" => head.path.to_owned(),
            query => format!("{}?{query}", head.path),
        };
        log.lock().unwrap().push(SeenRequest {
            target: path,
            authorization: head.header("authorization").map(str::to_owned),
        });
        break (
            http::switching_protocols(upgrade.key, None),
            buf[head.len..filled].to_vec(),
        );
    };
    sock.write_all(&response).await.ok()?;
    let raw = TcpStream::connect(target).await.ok()?;
    let _ = raw.set_nodelay(true);
    let _ = sock.set_nodelay(true);
    let (mut ws, mut raw) = (PlainWs(sock.compat()), raw.compat());
    let mut relay = Relay::websocket(Role::Server, Limits::default(), 16 * 1024, 1);
    relay.received_early(&leftover);
    // `Closing` only reports that the close began: run on to the end.
    loop {
        let step = std::future::poll_fn(|cx| portcullis::relay::poll(&mut relay, cx, &mut ws, &mut raw)).await;
        if let Step::Ended(_) = step {
            return Some(());
        }
    }
}

/// Plain TCP as a relay transport (there is no TLS close_notify to send).
struct PlainWs(Compat<TcpStream>);

impl futures_lite::AsyncRead for PlainWs {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl futures_lite::AsyncWrite for PlainWs {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

impl portcullis::relay::Transport for PlainWs {}
