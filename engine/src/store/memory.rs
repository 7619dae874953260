//! The in-process store: the default for one node. Every map is bounded, so a flood of sign-ins
//! or failed guesses cannot grow memory without end: expired entries are swept as a map fills,
//! and a map full of live entries refuses (`StoreError::Full`, the caller answers 503) instead of
//! dropping what it was given. Each kind of throttle key is counted in a map of its own, so a
//! flood of addresses cannot stop the counting of a user's attempts.

use super::{
    Attempt, BoxFuture, RecordKind, SecretKey, Store, StoreError, StoreResult, ThrottleKey, ThrottleRule, Ticket,
    WebSession,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on live sessions, tickets, and tracked users and addresses, each.
const MAX_ENTRIES: usize = 100_000;

/// Attempts counted under one key in its current window.
#[derive(Clone, Copy)]
struct Counter {
    count: u32,
    since: Instant,
    window: Duration,
}

impl Counter {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.since) < self.window
    }

    fn frees_in(&self, now: Instant) -> Duration {
        (self.since + self.window).saturating_duration_since(now)
    }
}

/// One map per kind of key, so a flood of one kind (addresses) cannot stop the counting of
/// another (users).
fn kind(key: &ThrottleKey) -> usize {
    match key {
        ThrottleKey::UserAddress(..) => 0,
        ThrottleKey::Address(_) => 1,
        ThrottleKey::User(_) => 2,
        ThrottleKey::Starts(_) => 3,
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<SecretKey, (WebSession, Instant)>,
    tickets: HashMap<SecretKey, (Ticket, Instant)>,
    /// Single-use tokens spent, until they expire.
    spent: HashMap<SecretKey, ((), Instant)>,
    /// Device logins, per kind.
    records: HashMap<RecordKind, HashMap<SecretKey, (String, Instant)>>,
    attempts: [HashMap<ThrottleKey, Counter>; 4],
    /// Shared links by id: their JSON and when they expire (Unix seconds).
    links: HashMap<String, (String, u64)>,
    /// `shared_random` values by name (a few TLS ticket keys).
    randoms: HashMap<String, ([u8; 32], Instant)>,
}

impl State {
    fn counter(&self, key: &ThrottleKey) -> Option<&Counter> {
        self.attempts[kind(key)].get(key)
    }

    fn reserve(&mut self, keys: &[(ThrottleKey, ThrottleRule)]) -> StoreResult<Attempt> {
        let now = Instant::now();
        let refused = keys
            .iter()
            .filter_map(|(key, rule)| self.counter(key).filter(|c| c.live(now) && c.count >= rule.limit))
            .map(|c| c.frees_in(now))
            .max();
        if let Some(retry_after) = refused {
            return Ok(Attempt::Refused { retry_after });
        }
        // Room for every new key first, so that either all are counted or none.
        for (key, _) in keys {
            let map = &mut self.attempts[kind(key)];
            if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
                map.retain(|_, c| c.live(now));
                if map.len() >= MAX_ENTRIES {
                    return Err(StoreError::Full("sign-in attempts"));
                }
            }
        }
        let mut before = Vec::with_capacity(keys.len());
        for (key, rule) in keys {
            let fresh = Counter {
                count: 0,
                since: now,
                window: rule.window,
            };
            let c = self.attempts[kind(key)].entry(key.clone()).or_insert(fresh);
            if !c.live(now) {
                *c = fresh;
            }
            before.push(c.count);
            c.count = c.count.saturating_add(1);
        }
        Ok(Attempt::Reserved { before })
    }
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    /// Durable records (second factors), in memory and, with `[state] dir`, written through to
    /// the node's state database by a thread of their own (never on a core).
    factors: Mutex<HashMap<String, String>>,
    durable: Option<DurableWriter>,
}

/// Writes durable records to the state database, one at a time, and says when each is on disk.
/// One write: the user, their new factors (`None` removes them), and who waits for it.
type DurableWrite = (String, Option<String>, tokio::sync::oneshot::Sender<bool>);

struct DurableWriter {
    queue: Option<std::sync::mpsc::Sender<DurableWrite>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DurableWriter {
    /// Lets the writer finish what is queued and close the database (the next open of the same
    /// file must not find it locked).
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl DurableWriter {
    fn start(state: std::sync::Arc<super::LocalState>) -> std::io::Result<DurableWriter> {
        let (queue, jobs) = std::sync::mpsc::channel::<DurableWrite>();
        let thread = std::thread::Builder::new().name("state-writer".into()).spawn(move || {
            for (user, value, done) in jobs {
                let written = state.put_factors(&user, value.as_deref());
                if let Err(e) = &written {
                    tracing::error!("cannot record second factors durably: {e}");
                }
                let _ = done.send(written.is_ok());
            }
        })?;
        Ok(DurableWriter {
            queue: Some(queue),
            thread: Some(thread),
        })
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A store whose durable records live in `state` too (loaded now, written through).
    pub fn with_durable(state: std::sync::Arc<super::LocalState>) -> Result<MemoryStore, super::StateError> {
        let factors = state.all_factors()?.into_iter().collect();
        let durable = DurableWriter::start(state).map_err(|e| super::StateError::new(e.to_string()))?;
        Ok(MemoryStore {
            factors: Mutex::new(factors),
            durable: Some(durable),
            ..MemoryStore::default()
        })
    }

    fn factors_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.factors.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic elsewhere while holding the lock leaves maps that are still consistent (every
        // update is a single insert or remove), so a poisoned lock is used as is.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

/// Inserts into a bounded map, sweeping expired entries when it is full; refuses when still full.
fn insert_bounded<V>(
    map: &mut HashMap<SecretKey, (V, Instant)>,
    key: SecretKey,
    value: V,
    ttl: Duration,
    what: &'static str,
) -> StoreResult<()> {
    let now = Instant::now();
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, (_, expires)| *expires > now);
    }
    if map.len() >= MAX_ENTRIES {
        return Err(StoreError::Full(what));
    }
    map.insert(key, (value, now + ttl));
    Ok(())
}

impl Store for MemoryStore {
    fn put_session(&self, key: SecretKey, session: WebSession, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        ready(self.with(|s| insert_bounded(&mut s.sessions, key, session, ttl, "sign-in sessions")))
    }

    fn session(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<WebSession>>> {
        let found = self.with(|s| match s.sessions.get(&key) {
            Some((session, expires)) if *expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                s.sessions.remove(&key);
                None
            }
            None => None,
        });
        ready(Ok(found))
    }

    fn delete_session(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<()>> {
        self.with(|s| s.sessions.remove(&key));
        ready(Ok(()))
    }

    fn factors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        ready(Ok(self.factors_map().get(user).cloned()))
    }

    fn swap_factors<'a>(
        &'a self,
        user: &'a str,
        expected: Option<String>,
        new: Option<String>,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        {
            let mut map = self.factors_map();
            if map.get(user) != expected.as_ref() {
                return ready(Ok(false));
            }
            match &new {
                Some(v) => map.insert(user.to_owned(), v.clone()),
                None => map.remove(user),
            };
        }
        let Some(durable) = &self.durable else {
            return ready(Ok(true));
        };
        let written_value = new.clone();
        let (done, written) = tokio::sync::oneshot::channel();
        let queued = durable
            .queue
            .as_ref()
            .is_some_and(|q| q.send((user.to_owned(), new, done)).is_ok());
        Box::pin(async move {
            if queued && written.await.unwrap_or(false) {
                return Ok(true);
            }
            // Not on disk: undone here too (unless a later write changed it since), so memory
            // never claims what a restart would lose.
            let mut map = self.factors_map();
            if map.get(user) == written_value.as_ref() {
                match expected {
                    Some(v) => map.insert(user.to_owned(), v),
                    None => map.remove(user),
                };
            }
            Err(StoreError::Unavailable(
                "the state database could not be written".into(),
            ))
        })
    }

    fn put_record(
        &self,
        kind: RecordKind,
        key: SecretKey,
        value: String,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<()>> {
        ready(self.with(|s| insert_bounded(s.records.entry(kind).or_default(), key, value, ttl, kind.as_str())))
    }

    fn record(&self, kind: RecordKind, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let now = Instant::now();
        ready(Ok(self.with(|s| {
            s.records
                .get(&kind)
                .and_then(|m| m.get(&key))
                .filter(|(_, expires)| *expires > now)
                .map(|(v, _)| v.clone())
        })))
    }

    fn take_record(&self, kind: RecordKind, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let now = Instant::now();
        let taken = self.with(|s| s.records.get_mut(&kind).and_then(|m| m.remove(&key)));
        ready(Ok(taken.and_then(|(v, expires)| (expires > now).then_some(v))))
    }

    fn put_ticket(&self, key: SecretKey, ticket: Ticket, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        ready(self.with(|s| insert_bounded(&mut s.tickets, key, ticket, ttl, "tickets")))
    }

    fn take_ticket(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<Ticket>>> {
        let taken = self.with(|s| s.tickets.remove(&key));
        ready(Ok(
            taken.and_then(|(t, expires)| (expires > Instant::now()).then_some(t))
        ))
    }

    fn reserve_attempt<'a>(&'a self, keys: &'a [(ThrottleKey, ThrottleRule)]) -> BoxFuture<'a, StoreResult<Attempt>> {
        ready(self.with(|s| s.reserve(keys)))
    }

    fn refund_attempt<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<()>> {
        ready(self.with(|s| {
            let now = Instant::now();
            for key in keys {
                if let Some(c) = s.attempts[kind(key)].get_mut(key).filter(|c| c.live(now)) {
                    c.count = c.count.saturating_sub(1);
                }
            }
            Ok(())
        }))
    }

    fn clear_attempts<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<()>> {
        ready(self.with(|s| {
            for key in keys {
                s.attempts[kind(key)].remove(key);
            }
            Ok(())
        }))
    }

    fn use_once(&self, key: SecretKey, ttl: Duration) -> BoxFuture<'_, StoreResult<bool>> {
        ready(self.with(|s| {
            if s.spent.get(&key).is_some_and(|(_, until)| *until > Instant::now()) {
                return Ok(false);
            }
            insert_bounded(&mut s.spent, key, (), ttl, "single-use tokens").map(|()| true)
        }))
    }

    fn put_link<'a>(&'a self, id: &'a str, value: String, expires_at: u64) -> BoxFuture<'a, StoreResult<()>> {
        let now = portcullis_core::keys::unix_now();
        ready(self.with(|st| {
            st.links.retain(|_, (_, until)| *until > now);
            if st.links.len() >= super::MAX_LINKS && !st.links.contains_key(id) {
                return Err(StoreError::Full("shared links"));
            }
            st.links.insert(id.to_owned(), (value, expires_at));
            Ok(())
        }))
    }

    fn link<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let now = portcullis_core::keys::unix_now();
        ready(Ok(self.with(|st| {
            st.links
                .get(id)
                .filter(|(_, until)| *until > now)
                .map(|(v, _)| v.clone())
        })))
    }

    fn links(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let now = portcullis_core::keys::unix_now();
        ready(Ok(self.with(|st| {
            st.links.retain(|_, (_, until)| *until > now);
            st.links.values().map(|(v, _)| v.clone()).collect()
        })))
    }

    fn remove_link<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        ready(Ok(self.with(|st| st.links.remove(id).is_some())))
    }

    fn shared_random<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<[u8; 32]>> {
        ready(self.with(|st| {
            let now = Instant::now();
            st.randoms.retain(|_, (_, until)| *until > now);
            if let Some((value, _)) = st.randoms.get(name) {
                return Ok(*value);
            }
            // Only the gateway's own names (a handful of ticket epochs) come here.
            if st.randoms.len() >= 64 {
                return Err(StoreError::Full("shared random values"));
            }
            let value = portcullis_core::secret::random::<32>().map_err(|e| StoreError::Unavailable(e.to_string()))?;
            st.randoms.insert(name.to_owned(), (value, now + ttl));
            Ok(value)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn sessions_expire_and_are_removed() {
        let s = MemoryStore::new();
        let session = WebSession {
            user: "a".into(),
            roles: Vec::new(),
            only_target: None,
            mfa: false,
        };
        block(s.put_session([1; 32], session.clone(), Duration::from_secs(60))).unwrap();
        block(s.put_session([2; 32], session.clone(), Duration::ZERO)).unwrap();
        assert_eq!(block(s.session([1; 32])).unwrap(), Some(session));
        assert_eq!(block(s.session([2; 32])).unwrap(), None, "expired");
        assert_eq!(block(s.session([3; 32])).unwrap(), None);
        block(s.delete_session([1; 32])).unwrap();
        assert_eq!(block(s.session([1; 32])).unwrap(), None);
    }

    #[test]
    fn tickets_are_good_once() {
        let s = MemoryStore::new();
        let t = Ticket {
            user: "a".into(),
            target: "desk".into(),
            roles: Vec::new(),
        };
        block(s.put_ticket([1; 32], t.clone(), Duration::from_secs(60))).unwrap();
        assert_eq!(block(s.take_ticket([1; 32])).unwrap(), Some(t));
        assert_eq!(block(s.take_ticket([1; 32])).unwrap(), None);
    }

    fn rule(limit: u32) -> ThrottleRule {
        ThrottleRule {
            limit,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn attempts_are_reserved_under_every_key_or_none() {
        let s = MemoryStore::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let pair = ThrottleKey::UserAddress("alice".into(), ip);
        let address = ThrottleKey::Address(ip);
        let user = ThrottleKey::User("alice".into());
        let keys = [
            (pair.clone(), rule(2)),
            (address.clone(), rule(3)),
            (user.clone(), rule(u32::MAX)),
        ];
        assert_eq!(
            block(s.reserve_attempt(&keys)),
            Ok(Attempt::Reserved { before: vec![0, 0, 0] })
        );
        assert_eq!(
            block(s.reserve_attempt(&keys)),
            Ok(Attempt::Reserved { before: vec![1, 1, 1] })
        );
        let Ok(Attempt::Refused { retry_after }) = block(s.reserve_attempt(&keys)) else {
            panic!("a third attempt for the pair")
        };
        assert!(retry_after > Duration::from_secs(55) && retry_after <= Duration::from_secs(60));
        // Refused: nothing counted, so the address still has one attempt for another user.
        let bob = [
            (ThrottleKey::UserAddress("bob".into(), ip), rule(2)),
            (address.clone(), rule(3)),
        ];
        assert_eq!(
            block(s.reserve_attempt(&bob)),
            Ok(Attempt::Reserved { before: vec![0, 2] })
        );
        assert!(matches!(block(s.reserve_attempt(&bob)), Ok(Attempt::Refused { .. })));
        // A refund gives one back; clearing forgets.
        block(s.refund_attempt(std::slice::from_ref(&address))).unwrap();
        block(s.clear_attempts(std::slice::from_ref(&pair))).unwrap();
        assert_eq!(
            block(s.reserve_attempt(&keys)),
            Ok(Attempt::Reserved { before: vec![0, 2, 2] })
        );
    }

    #[test]
    fn windows_end() {
        let s = MemoryStore::new();
        let key = ThrottleKey::User("alice".into());
        let short = ThrottleRule {
            limit: 1,
            window: Duration::from_millis(1),
        };
        assert!(matches!(
            block(s.reserve_attempt(&[(key.clone(), short)])),
            Ok(Attempt::Reserved { .. })
        ));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            block(s.reserve_attempt(&[(key, short)])),
            Ok(Attempt::Reserved { before: vec![0] })
        );
    }

    /// A flood of addresses cannot stop the counting of a user's attempts, and a full map refuses
    /// instead of dropping.
    #[test]
    fn full_maps_refuse_and_kinds_are_counted_apart() {
        let s = MemoryStore::new();
        s.with(|st| {
            for i in 0..MAX_ENTRIES as u32 {
                let addr = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i)));
                st.reserve(&[(ThrottleKey::Address(addr), rule(1))]).unwrap();
            }
        });
        let fresh = ThrottleKey::Address("192.0.2.9".parse().unwrap());
        let alice = ThrottleKey::User("alice".into());
        assert_eq!(
            block(s.reserve_attempt(&[(alice.clone(), rule(1)), (fresh, rule(1))])),
            Err(StoreError::Full("sign-in attempts"))
        );
        assert_eq!(
            block(s.reserve_attempt(&[(alice.clone(), rule(1))])),
            Ok(Attempt::Reserved { before: vec![0] }),
            "nothing was counted for alice by the refused call; users are counted apart"
        );
        let session = WebSession {
            user: "a".into(),
            roles: Vec::new(),
            only_target: None,
            mfa: false,
        };
        s.with(|st| {
            for i in 0..MAX_ENTRIES as u32 {
                let mut key = [0u8; 32];
                key[..4].copy_from_slice(&i.to_be_bytes());
                st.sessions
                    .insert(key, (session.clone(), Instant::now() + Duration::from_secs(60)));
            }
        });
        assert_eq!(
            block(s.put_session([0xff; 32], session, Duration::from_secs(60))),
            Err(StoreError::Full("sign-in sessions"))
        );
    }
}
