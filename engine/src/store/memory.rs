//! The in-process store: the default for one node. Every map is bounded, so a flood of sign-ins
//! or failed guesses cannot grow memory without end: expired entries are swept as a map fills,
//! and a map full of live entries refuses (`StoreError::Full`, the caller answers 503) instead of
//! dropping what it was given. Users and addresses are counted in maps of their own, so a flood
//! of addresses cannot stop the counting of a user's failures.

use super::{BoxFuture, SecretKey, Store, StoreError, StoreResult, ThrottleKey, ThrottleRule, Ticket, WebSession};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on live sessions, tickets, and tracked users and addresses, each.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    window: Duration,
    locked_until: Option<Instant>,
}

impl Failures {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until.filter(|t| *t > now).map(|t| t - now)
    }

    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.first) <= self.window || self.locked(now).is_some()
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<SecretKey, (WebSession, Instant)>,
    tickets: HashMap<SecretKey, (Ticket, Instant)>,
    user_failures: HashMap<String, Failures>,
    address_failures: HashMap<IpAddr, Failures>,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
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

/// Counts one failure against `key` in a bounded map.
fn count_failure<K: Eq + Hash>(map: &mut HashMap<K, Failures>, key: K, rule: ThrottleRule) -> StoreResult<()> {
    let now = Instant::now();
    if map.len() >= MAX_ENTRIES && !map.contains_key(&key) {
        map.retain(|_, f| f.live(now));
        if map.len() >= MAX_ENTRIES {
            return Err(StoreError::Full("sign-in failures"));
        }
    }
    let fresh = Failures {
        count: 0,
        first: now,
        window: rule.window,
        locked_until: None,
    };
    let f = map.entry(key).or_insert(fresh);
    if now.duration_since(f.first) > rule.window {
        *f = fresh;
    }
    f.count += 1;
    if f.count >= rule.limit {
        f.locked_until = Some(now + rule.lock);
    }
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

    fn put_ticket(&self, key: SecretKey, ticket: Ticket, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        ready(self.with(|s| insert_bounded(&mut s.tickets, key, ticket, ttl, "tickets")))
    }

    fn take_ticket(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<Ticket>>> {
        let taken = self.with(|s| s.tickets.remove(&key));
        ready(Ok(
            taken.and_then(|(t, expires)| (expires > Instant::now()).then_some(t))
        ))
    }

    fn locked_for<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<Option<Duration>>> {
        let now = Instant::now();
        let wait = self.with(|s| {
            keys.iter()
                .filter_map(|k| match k {
                    ThrottleKey::User(u) => s.user_failures.get(u),
                    ThrottleKey::Address(a) => s.address_failures.get(a),
                })
                .filter_map(|f| f.locked(now))
                .max()
        });
        ready(Ok(wait))
    }

    fn record_failure(&self, key: ThrottleKey, rule: ThrottleRule) -> BoxFuture<'_, StoreResult<()>> {
        ready(self.with(|s| match key {
            ThrottleKey::User(u) => count_failure(&mut s.user_failures, u, rule),
            ThrottleKey::Address(a) => count_failure(&mut s.address_failures, a, rule),
        }))
    }

    fn clear_failures(&self, key: ThrottleKey) -> BoxFuture<'_, StoreResult<()>> {
        self.with(|s| match key {
            ThrottleKey::User(u) => {
                s.user_failures.remove(&u);
            }
            ThrottleKey::Address(a) => {
                s.address_failures.remove(&a);
            }
        });
        ready(Ok(()))
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
            only_target: None,
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
        };
        block(s.put_ticket([1; 32], t.clone(), Duration::from_secs(60))).unwrap();
        assert_eq!(block(s.take_ticket([1; 32])).unwrap(), Some(t));
        assert_eq!(block(s.take_ticket([1; 32])).unwrap(), None);
    }

    #[test]
    fn failures_lock_per_key() {
        let s = MemoryStore::new();
        let rule = ThrottleRule {
            limit: 3,
            window: Duration::from_secs(60),
            lock: Duration::from_secs(300),
        };
        let alice = ThrottleKey::User("alice".into());
        let ip = ThrottleKey::Address("192.0.2.1".parse::<IpAddr>().unwrap());
        for _ in 0..2 {
            block(s.record_failure(alice.clone(), rule)).unwrap();
        }
        assert_eq!(block(s.locked_for(&[alice.clone(), ip.clone()])).unwrap(), None);
        block(s.record_failure(alice.clone(), rule)).unwrap();
        let wait = block(s.locked_for(&[ip.clone(), alice.clone()])).unwrap().unwrap();
        assert!(wait > Duration::from_secs(290));
        assert_eq!(block(s.locked_for(&[ip])).unwrap(), None);
        block(s.clear_failures(alice.clone())).unwrap();
        assert_eq!(block(s.locked_for(&[alice])).unwrap(), None);
    }

    /// A flood of addresses cannot stop the counting of a user's failures, and a full map
    /// refuses instead of dropping.
    #[test]
    fn full_maps_refuse_and_users_are_counted_apart() {
        let s = MemoryStore::new();
        let rule = ThrottleRule {
            limit: 1,
            window: Duration::from_secs(60),
            lock: Duration::from_secs(300),
        };
        s.with(|st| {
            for i in 0..MAX_ENTRIES as u32 {
                let addr = IpAddr::from(std::net::Ipv6Addr::from(u128::from(i)));
                count_failure(&mut st.address_failures, addr, rule).unwrap();
            }
        });
        let fresh = ThrottleKey::Address("192.0.2.9".parse().unwrap());
        assert_eq!(
            block(s.record_failure(fresh, rule)),
            Err(StoreError::Full("sign-in failures"))
        );
        let alice = ThrottleKey::User("alice".into());
        block(s.record_failure(alice.clone(), rule)).unwrap();
        assert!(block(s.locked_for(&[alice])).unwrap().is_some());
        let session = WebSession {
            user: "a".into(),
            only_target: None,
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
