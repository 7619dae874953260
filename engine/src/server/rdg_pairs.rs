//! The RD Gateway's HTTP transport joins two connections into one tunnel: `RDG_OUT_DATA` (the
//! gateway writes to the client) and `RDG_IN_DATA` (the client writes to the gateway), with the
//! same `RDG-Connection-Id`, from the same client address.
//!
//! Each core accepts its own connections, so the two halves may land on different cores. A TLS
//! session cannot move between cores here (a glommio socket belongs to its core's ring), so the
//! tunnel runs on the core of the `RDG_OUT_DATA` connection, and the `RDG_IN_DATA` connection,
//! wherever it is, hands over what it receives: it decodes its chunked body and passes the bytes
//! through a bounded pipe between cores ([`Feed`]), which the tunnel reads as its client's input.
//! Same core or not, the path is the same. The pipe holds at most `FEED_DEPTH` reads, and a full
//! pipe stops the `RDG_IN_DATA` reads: backpressure reaches the client. The pipe is a mutex-guarded
//! queue with wakers (`event_listener`), which wake tasks on any core; nothing is registered with
//! a core's event loop, so a half that never comes costs nothing once its wait times out.
//!
//! Behind a balancer the halves may reach different gateways: the `RDG_IN_DATA` half then finds no
//! `RDG_OUT_DATA` waiting and is refused with a clear error (a balancer must keep a client on one
//! node: source-address affinity, or use the WebSocket transport, which is one connection). The
//! halves must come from the same client address (exactly: an IPv6 client that changes its
//! temporary address between the two connections cannot pair).

use super::conn::{Conn, ReadEnd};
use super::handlers::rdgateway::out_channel_answer;
use event_listener::Event;
use portcullis_core::request::Reply;
use portcullis_protocols::chunked::{ChunkLimits, ChunkedDecoder};
use portcullis_protocols::http;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

const PATH: &str = portcullis_core::route::RD_GATEWAY_PATH;

/// Reads of the `RDG_IN_DATA` connection in flight to the tunnel, at most.
const FEED_DEPTH: usize = 8;

/// Most bytes of one read handed over (one item of the feed).
const READ_SIZE: usize = 16 * 1024;

/// One item of the feed: bytes of the packet stream, or why the `RDG_IN_DATA` half stopped.
type Item = Result<Vec<u8>, String>;

/// `RDG_OUT_DATA` connections waiting for their other half, by connection id. Process-wide:
/// the halves may be on different cores.
#[derive(Default)]
pub struct Pairs {
    waiting: Mutex<HashMap<String, Waiting>>,
}

struct Waiting {
    client: IpAddr,
    pipe: Arc<Pipe>,
}

/// The bounded queue between the halves.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    /// Notified when an item arrives or the `RDG_IN_DATA` half is gone.
    readable: Event,
    /// Notified when an item is taken or the tunnel is gone.
    writable: Event,
}

#[derive(Default)]
struct PipeState {
    items: VecDeque<Item>,
    in_gone: bool,
    tunnel_gone: bool,
}

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `bytes` once there is room; false when the tunnel is gone.
    async fn send(&self, bytes: Vec<u8>) -> bool {
        let mut item = Some(Ok(bytes));
        loop {
            let listener = {
                let mut state = self.lock();
                if state.tunnel_gone {
                    return false;
                }
                if state.items.len() < FEED_DEPTH {
                    state.items.extend(item.take());
                    drop(state);
                    self.readable.notify(usize::MAX);
                    return true;
                }
                self.writable.listen()
            };
            // Registered before the state was released: a take in between is not missed.
            listener.await;
        }
    }

    /// Why the `RDG_IN_DATA` half stopped: always queued (one item past the bound), so the tunnel
    /// audits it.
    fn report(&self, reason: String) {
        self.lock().items.push_back(Err(reason));
        self.readable.notify(usize::MAX);
    }

    fn in_gone(&self) {
        self.lock().in_gone = true;
        self.readable.notify(usize::MAX);
    }

    /// Resolves once the tunnel is gone.
    async fn tunnel_gone(&self) {
        loop {
            let listener = {
                if self.lock().tunnel_gone {
                    return;
                }
                self.writable.listen()
            };
            listener.await;
        }
    }
}

/// What the tunnel reads from the `RDG_IN_DATA` half.
pub struct Feed {
    pipe: Arc<Pipe>,
    listener: Option<event_listener::EventListener>,
    pairs: Arc<super::Shared>,
    id: String,
}

/// Why the feed ended.
pub enum FeedEnd {
    /// The `RDG_IN_DATA` connection closed.
    Closed,
    /// It sent something that is not a chunked body.
    Refused(String),
}

impl Feed {
    /// The next bytes of the client's packet stream (waits for the `RDG_IN_DATA` half to come).
    pub async fn next(&mut self) -> Result<Vec<u8>, FeedEnd> {
        futures_lite::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Vec<u8>, FeedEnd>> {
        loop {
            {
                let mut state = self.pipe.lock();
                if let Some(item) = state.items.pop_front() {
                    drop(state);
                    self.listener = None;
                    self.pipe.writable.notify(usize::MAX);
                    return Poll::Ready(item.map_err(FeedEnd::Refused));
                }
                if state.in_gone {
                    return Poll::Ready(Err(FeedEnd::Closed));
                }
            }
            match self.listener.as_mut() {
                // Listen, then look again: an item queued in between is not missed.
                None => self.listener = Some(self.pipe.readable.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => self.listener = None,
                },
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.pipe.lock().tunnel_gone = true;
        self.pipe.writable.notify(usize::MAX);
        // Still waiting (the other half never came): no longer.
        if let Ok(mut waiting) = self.pairs.rdg_pairs.waiting.lock() {
            if waiting.get(&self.id).is_some_and(|w| Arc::ptr_eq(&w.pipe, &self.pipe)) {
                waiting.remove(&self.id);
            }
        }
    }
}

/// The `RDG_OUT_DATA` half: registers, answers `200` and the seed, and returns the feed the
/// `RDG_IN_DATA` half will fill. `None`: refused or gone (answered and audited).
pub async fn out_channel(conn: &mut Conn, id: &str) -> Option<Feed> {
    let pipe = Arc::new(Pipe::default());
    let registered = conn.shared.rdg_pairs.waiting.lock().ok().is_some_and(|mut waiting| {
        if waiting.contains_key(id) {
            return false;
        }
        let client = conn.client.ip();
        waiting.insert(
            id.to_owned(),
            Waiting {
                client,
                pipe: pipe.clone(),
            },
        );
        true
    });
    if !registered {
        let reason = "an RDG_OUT_DATA connection with this RDG-Connection-Id is open already";
        conn.deny(PATH, 409, reason, None);
        conn.reply(&Reply::text(409, reason), None).await;
        return None;
    }
    let feed = Feed {
        pipe,
        listener: None,
        pairs: conn.shared.clone(),
        id: id.to_owned(),
    };
    // Dropping the feed (the client left) takes the registration back.
    conn.accept_upgrade(&out_channel_answer()).await.then_some(feed)
}

/// The `RDG_IN_DATA` half: finds its `RDG_OUT_DATA` half on this node, then feeds it the body.
pub async fn in_channel(conn: &mut Conn, id: &str, chunked: bool, leftover: Vec<u8>) {
    let client = conn.client.ip();
    let found = conn.shared.rdg_pairs.waiting.lock().ok().and_then(|mut waiting| {
        // Only the same client may join a waiting half.
        match waiting.get(id) {
            Some(w) if w.client == client => waiting.remove(id).map(Ok),
            Some(_) => Some(Err(())),
            None => None,
        }
    });
    let pipe = match found {
        Some(Ok(Waiting { pipe, .. })) => pipe,
        Some(Err(())) => {
            let reason = "the RDG_OUT_DATA connection with this RDG-Connection-Id is another client's";
            conn.deny(PATH, 403, reason, None);
            return conn.reply(&Reply::text(403, reason), None).await;
        }
        None => {
            let reason = "no RDG_OUT_DATA connection with this RDG-Connection-Id on this gateway node \
                          (a balancer must send both connections of a client to the same node)";
            conn.deny(PATH, 404, reason, None);
            return conn.reply(&Reply::text(404, reason), None).await;
        }
    };
    // Joined to a waiting tunnel, whose own handshake timeout bounds this half from now on.
    conn.ticket.settled();
    // This half only reads until the end: send the TLS 1.3 session tickets kept back for the
    // first answer now, if the socket takes them at once (no wait: they are only a nicety).
    let _ = futures_lite::future::poll_once(futures_lite::AsyncWriteExt::flush(&mut conn.tls)).await;
    let fed = futures_lite::future::or(feed(conn, id, chunked, leftover, &pipe), async {
        pipe.tunnel_gone().await;
        Ok(())
    })
    .await;
    if let Err(reason) = &fed {
        // The tunnel audits it (it knows the user); this half reports it and answers 400.
        pipe.report(reason.clone());
    }
    pipe.in_gone();
    match fed {
        Err(reason) => conn.reply(&Reply::text(400, &reason), None).await,
        Ok(()) => conn.send_and_close(&[], &[]).await,
    }
}

/// Reads the `RDG_IN_DATA` body and sends its bytes (chunked coding undone) to the tunnel.
/// `Err`: why the body is not acceptable.
async fn feed(conn: &mut Conn, id: &str, mut chunked: bool, leftover: Vec<u8>, pipe: &Pipe) -> Result<(), String> {
    let mut buf = leftover;
    let mut filled = buf.len();
    buf.resize(READ_SIZE.max(filled), 0);
    if !chunked {
        // FreeRDP: the request with no body first; after our 200, the same request again, with a
        // chunked body. The second head must come within the request timeout.
        if !conn
            .accept_upgrade(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
        {
            return Ok(());
        }
        let deadline = Instant::now() + conn.settings().request_timeout;
        let limits = conn.policy().config.limits.head();
        loop {
            match http::parse_head(&buf[..filled], limits) {
                Ok(Some(head)) => {
                    let same = head.method == "RDG_IN_DATA"
                        && head.path.eq_ignore_ascii_case(PATH)
                        && head.header("rdg-connection-id").map(str::trim) == Some(id);
                    if !same || !portcullis_core::rdgateway::is_chunked(&head) {
                        return Err("the second RDG_IN_DATA request is not the chunked body of the first".into());
                    }
                    let len = head.len;
                    buf.copy_within(len..filled, 0);
                    filled -= len;
                    chunked = true;
                    break;
                }
                Ok(None) if filled < buf.len() => {}
                Ok(None) => return Err("RDG_IN_DATA request head too large".into()),
                Err(e) => return Err(format!("bad RDG_IN_DATA request: {e}")),
            }
            match conn.read_until(deadline, &mut buf, filled).await {
                Ok(n) => filled += n,
                Err(ReadEnd::TimedOut) => return Err("no chunked RDG_IN_DATA request in time".into()),
                Err(ReadEnd::Closed) => return Ok(()),
            }
        }
    }
    debug_assert!(chunked);
    let mut decoder = ChunkedDecoder::new(ChunkLimits {
        max_chunk: portcullis_protocols::tsgu::MAX_PACKET_LEN,
    });
    loop {
        let mut at = 0;
        let mut out = Vec::new();
        while at < filled {
            let decoded = decoder
                .decode(&buf[at..filled])
                .map_err(|e| format!("bad chunked RDG_IN_DATA body: {e}"))?;
            if let Some(range) = decoded.data {
                out.extend_from_slice(&buf[at + range.start..at + range.end]);
            }
            at += decoded.consumed;
            if decoded.end {
                send(pipe, out).await;
                return Ok(());
            }
            if decoded.consumed == 0 {
                break;
            }
        }
        if !send(pipe, out).await {
            return Ok(());
        }
        // No timeout here: the tunnel's session clock decides how long it may sit idle, and
        // its end stops this read (`Ended`).
        filled = match futures_lite::AsyncReadExt::read(&mut conn.tls, &mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
    }
}

/// Hands bytes to the tunnel; false when it is gone.
async fn send(pipe: &Pipe, bytes: Vec<u8>) -> bool {
    bytes.is_empty() || pipe.send(bytes).await
}
