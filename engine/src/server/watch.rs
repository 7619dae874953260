//! Watching a live browser-terminal session read-only (the web app's Sessions page).
//!
//! The session publishes what the terminal shows (the SSH output and its size) into its
//! [`WatchHub`]; each watcher has a bounded queue of its own. Publishing never waits: a watcher
//! whose queue is full (a slow network, a stalled tab) is dropped with "lagged", so no watcher
//! ever slows the session or makes it hold more than `MAX_BACKLOG` per watcher. A watcher starts
//! with the newest `HISTORY` bytes of output, so it sees the current screen. The hub counts its
//! watchers and wakes the session when the count changes: the watched user is told.
//!
//! The hub is shared between cores (a watcher's connection may be on another core than the
//! session): a mutex-guarded state and `event_listener` wakers, as in `rdg_pairs`.
//!
//! A watcher on another node of a fleet gets the stream through the fleet store's publish and
//! subscribe (Redis): its node subscribes to a channel of its own and publishes a watch request;
//! the node holding the session adds a watcher to the hub and publishes what it sees on that
//! channel ([`forward`], in the [`encode`] format), until nobody listens (a publish reaches no
//! subscriber) or the session ends. The watcher's node feeds what arrives into a [`remote`]
//! watcher, bounded the same way.

use event_listener::{Event, EventListener};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Output kept for a new watcher (the recent screen).
const HISTORY: usize = 64 * 1024;
/// Most output queued for one watcher before it is dropped as lagging.
const MAX_BACKLOG: usize = 256 * 1024;
/// What a queued size change counts for against the backlog.
const RESIZE_COST: usize = 4;

/// What an item counts for against a watcher's backlog.
fn cost(item: &Seen) -> usize {
    match item {
        Seen::Output(b) => b.len(),
        Seen::Resize(..) => RESIZE_COST,
    }
}

/// Most watchers of one session.
pub const MAX_WATCHERS: usize = 8;

/// What a watcher receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Output(Vec<u8>),
    /// The terminal's size changed (cols, rows).
    Resize(u16, u16),
}

/// Why a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The session ended.
    SessionEnded,
    /// The watcher fell too far behind.
    Lagged,
    /// (Another node's session) its node did not answer, or stopped.
    NodeLost,
}

#[derive(Default)]
pub struct WatchHub {
    state: Mutex<HubState>,
    /// Notified when the number of watchers changes.
    changed: Event,
}

#[derive(Default)]
struct HubState {
    history: VecDeque<u8>,
    size: (u16, u16),
    watchers: Vec<Arc<Queue>>,
    ended: bool,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Event,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Seen>,
    bytes: usize,
    end: Option<WatchEnd>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    /// Queues `item` unless the watcher is too far behind: then it ends (false).
    fn push(&self, item: Seen, len: usize) -> bool {
        let mut q = lock(&self.state);
        if q.end.is_some() {
            return false;
        }
        if q.bytes + len > MAX_BACKLOG {
            q.end = Some(WatchEnd::Lagged);
            q.items.clear();
            drop(q);
            self.ready.notify(usize::MAX);
            return false;
        }
        q.bytes += len;
        q.items.push_back(item);
        drop(q);
        self.ready.notify(usize::MAX);
        true
    }

    fn end(&self, why: WatchEnd) {
        lock(&self.state).end.get_or_insert(why);
        self.ready.notify(usize::MAX);
    }
}

impl WatchHub {
    pub fn new(cols: u16, rows: u16) -> Arc<WatchHub> {
        let hub = WatchHub::default();
        lock(&hub.state).size = (cols, rows);
        Arc::new(hub)
    }

    /// The terminal showed `bytes` (called by the session; never waits).
    pub fn output(&self, bytes: &[u8]) {
        let mut st = lock(&self.state);
        st.history.extend(bytes.iter().copied());
        let over = st.history.len().saturating_sub(HISTORY);
        st.history.drain(..over);
        if st.watchers.is_empty() {
            return;
        }
        let before = st.watchers.len();
        st.watchers
            .retain(|w| w.push(Seen::Output(bytes.to_vec()), bytes.len()));
        let dropped = st.watchers.len() != before;
        drop(st);
        if dropped {
            self.changed.notify(usize::MAX);
        }
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        let mut st = lock(&self.state);
        st.size = (cols, rows);
        st.watchers.retain(|w| w.push(Seen::Resize(cols, rows), RESIZE_COST));
    }

    /// The session is over: every watcher is told.
    pub fn end(&self) {
        let mut st = lock(&self.state);
        st.ended = true;
        for w in st.watchers.drain(..) {
            w.end(WatchEnd::SessionEnded);
        }
    }

    pub fn watchers(&self) -> usize {
        lock(&self.state).watchers.len()
    }

    /// Resolves when the number of watchers may have changed (listen, then read `watchers`).
    pub fn listen(&self) -> EventListener {
        self.changed.listen()
    }

    /// A new watcher: the terminal's size and recent output first. `None` when the session is
    /// over or has `MAX_WATCHERS` already.
    pub fn watch(self: &Arc<Self>) -> Option<Watching> {
        let mut st = lock(&self.state);
        if st.ended || st.watchers.len() >= MAX_WATCHERS {
            return None;
        }
        let queue = Arc::new(Queue::default());
        {
            let mut q = lock(&queue.state);
            let (cols, rows) = st.size;
            q.items.push_back(Seen::Resize(cols, rows));
            let (a, b) = st.history.as_slices();
            q.items.push_back(Seen::Output([a, b].concat()));
            q.bytes = RESIZE_COST + st.history.len();
        }
        st.watchers.push(queue.clone());
        drop(st);
        self.changed.notify(usize::MAX);
        Some(Watching {
            hub: Arc::downgrade(self),
            queue,
            listener: None,
        })
    }
}

/// One watcher's end of the hub; dropping it stops the watch.
pub struct Watching {
    hub: Weak<WatchHub>,
    queue: Arc<Queue>,
    listener: Option<EventListener>,
}

impl Watching {
    /// The next thing the terminal showed, or why the watch is over.
    pub async fn next(&mut self) -> Result<Seen, WatchEnd> {
        loop {
            {
                let mut q = lock(&self.queue.state);
                if let Some(item) = q.items.pop_front() {
                    q.bytes = q.bytes.saturating_sub(cost(&item));
                    return Ok(item);
                }
                if let Some(end) = q.end {
                    return Err(end);
                }
            }
            match self.listener.take() {
                None => self.listener = Some(self.queue.ready.listen()),
                Some(listener) => listener.await,
            }
        }
    }
}

/// The feeding end of a watcher whose session is on another node.
pub struct RemoteFeed {
    queue: Arc<Queue>,
}

/// A watcher fed from elsewhere (another node's session), and its feeding end.
pub fn remote() -> (RemoteFeed, Watching) {
    let queue = Arc::new(Queue::default());
    let watching = Watching {
        hub: Weak::new(),
        queue: queue.clone(),
        listener: None,
    };
    (RemoteFeed { queue }, watching)
}

impl Drop for RemoteFeed {
    /// The feed stopped (the subscription failed or ended): a watch still open hears so.
    fn drop(&mut self) {
        self.queue.end(WatchEnd::NodeLost);
    }
}

impl RemoteFeed {
    /// Queues what arrived; false when the watch is over (lagged, or the watcher left).
    pub fn push(&self, seen: Seen) -> bool {
        let len = cost(&seen);
        !self.gone() && self.queue.push(seen, len)
    }

    pub fn end(&self, why: WatchEnd) {
        self.queue.end(why);
    }

    /// The watcher left (its `Watching` was dropped).
    pub fn gone(&self) -> bool {
        Arc::strong_count(&self.queue) == 1
    }
}

/// The wire format between nodes: a tag byte, then `o` output bytes, `r` cols and rows (u16
/// big-endian), `e` an end reason byte (`s` ended, `l` lagged), or `k` (nothing: a keepalive
/// that tells the publisher whether anyone still listens).
pub fn encode(item: &Result<Seen, WatchEnd>) -> Vec<u8> {
    match item {
        Ok(Seen::Output(b)) => [&b"o"[..], b].concat(),
        Ok(Seen::Resize(c, r)) => [b"r".as_slice(), &c.to_be_bytes(), &r.to_be_bytes()].concat(),
        Err(WatchEnd::SessionEnded) => b"es".to_vec(),
        Err(WatchEnd::Lagged) => b"el".to_vec(),
        Err(WatchEnd::NodeLost) => b"en".to_vec(),
    }
}

pub const KEEPALIVE: &[u8] = b"k";

/// What an [`encode`]d message says; `None` for a keepalive or anything unreadable.
pub fn decode(bytes: &[u8]) -> Option<Result<Seen, WatchEnd>> {
    let (tag, rest) = bytes.split_first()?;
    match (tag, rest) {
        (b'o', b) => Some(Ok(Seen::Output(b.to_vec()))),
        (b'r', [c0, c1, r0, r1]) => Some(Ok(Seen::Resize(
            u16::from_be_bytes([*c0, *c1]),
            u16::from_be_bytes([*r0, *r1]),
        ))),
        (b'e', [b's']) => Some(Err(WatchEnd::SessionEnded)),
        (b'e', [b'l']) => Some(Err(WatchEnd::Lagged)),
        (b'e', _) => Some(Err(WatchEnd::NodeLost)),
        _ => None,
    }
}

/// Publishes what `watching` sees with `publish` (which answers how many received it) until
/// nobody receives it, the watch ends, or publishing fails. Every `idle` without output a
/// keepalive asks whether anyone still listens.
pub async fn forward<F, Fut>(mut watching: Watching, idle: std::time::Duration, publish: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    loop {
        let next = futures_lite::future::or(async { Some(watching.next().await) }, async {
            async_sleep(idle).await;
            None
        })
        .await;
        let (bytes, last) = match next {
            Some(item) => (encode(&item), item.is_err()),
            None => (KEEPALIVE.to_vec(), false),
        };
        if publish(bytes).await.unwrap_or(0) == 0 || last {
            return;
        }
    }
}

/// A sleep that works on the runtime `forward` runs on (the fleet store's tokio runtime).
async fn async_sleep(d: std::time::Duration) {
    tokio::time::sleep(d).await
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            let mut st = lock(&hub.state);
            let before = st.watchers.len();
            st.watchers.retain(|w| !Arc::ptr_eq(w, &self.queue));
            let changed = st.watchers.len() != before;
            drop(st);
            if changed {
                hub.changed.notify(usize::MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn watchers_see_the_recent_screen_then_what_follows() {
        let hub = WatchHub::new(80, 24);
        hub.output(b"before ");
        let mut w = hub.watch().unwrap();
        assert_eq!(hub.watchers(), 1);
        hub.output(b"after");
        hub.resize(100, 30);
        assert_eq!(block(w.next()), Ok(Seen::Resize(80, 24)));
        assert_eq!(block(w.next()), Ok(Seen::Output(b"before ".to_vec())));
        assert_eq!(block(w.next()), Ok(Seen::Output(b"after".to_vec())));
        assert_eq!(block(w.next()), Ok(Seen::Resize(100, 30)));
        hub.end();
        assert_eq!(block(w.next()), Err(WatchEnd::SessionEnded));
        assert!(hub.watch().is_none(), "no watching an ended session");
    }

    #[test]
    fn a_slow_watcher_is_dropped_and_never_holds_the_session() {
        let hub = WatchHub::new(80, 24);
        let mut slow = hub.watch().unwrap();
        let mut fast = hub.watch().unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..32 {
            hub.output(&chunk);
            // The fast one keeps up.
            while let Ok(Seen::Output(_) | Seen::Resize(..)) =
                futures_lite::future::block_on(futures_lite::future::or(fast.next(), async { Err(WatchEnd::Lagged) }))
            {
            }
        }
        assert_eq!(hub.watchers(), 1, "the slow one is gone, the fast one stays");
        // The slow one drains nothing but learns it lagged.
        let mut got = Vec::new();
        loop {
            match block(slow.next()) {
                Ok(s) => got.push(s),
                Err(e) => {
                    assert_eq!(e, WatchEnd::Lagged);
                    break;
                }
            }
        }
        assert!(got.is_empty(), "a lagging watcher's queue is dropped");
        drop(fast);
        assert_eq!(hub.watchers(), 0);
    }

    #[test]
    fn the_wire_format_round_trips() {
        for item in [
            Ok(Seen::Output(b"ls -l\r\n".to_vec())),
            Ok(Seen::Output(Vec::new())),
            Ok(Seen::Resize(132, 43)),
            Err(WatchEnd::SessionEnded),
            Err(WatchEnd::Lagged),
            Err(WatchEnd::NodeLost),
        ] {
            assert_eq!(decode(&encode(&item)), Some(item));
        }
        assert_eq!(decode(KEEPALIVE), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"r12"), None);
    }

    #[test]
    fn a_remote_watcher_is_fed_until_it_leaves() {
        let (feed, mut w) = remote();
        assert!(feed.push(Seen::Resize(80, 24)));
        assert!(feed.push(Seen::Output(b"hi".to_vec())));
        assert_eq!(block(w.next()), Ok(Seen::Resize(80, 24)));
        assert_eq!(block(w.next()), Ok(Seen::Output(b"hi".to_vec())));
        feed.end(WatchEnd::NodeLost);
        assert_eq!(block(w.next()), Err(WatchEnd::NodeLost));
        drop(w);
        assert!(feed.gone());
        assert!(!feed.push(Seen::Output(b"late".to_vec())));
    }

    #[test]
    fn history_and_watchers_are_bounded() {
        let hub = WatchHub::new(80, 24);
        hub.output(&vec![b'a'; HISTORY * 3]);
        let mut w = hub.watch().unwrap();
        block(w.next()).unwrap();
        assert_eq!(block(w.next()), Ok(Seen::Output(vec![b'a'; HISTORY])));
        let more: Vec<_> = (1..MAX_WATCHERS).map(|_| hub.watch().unwrap()).collect();
        assert!(hub.watch().is_none());
        drop(more);
        assert!(hub.watch().is_some());
    }
}
