//! Web sign-in sessions and the brake on password guessing.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const COOKIE: &str = "portcullis_session";
/// Bound on live sessions and tracked failure keys, so a flood cannot grow memory.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Debug)]
pub struct WebSession {
    pub user: String,
    pub expires: Instant,
    /// A token sign-in is good for the token's target only.
    pub only_target: Option<String>,
}

/// Sessions keyed by the SHA-256 of the cookie value: the store never holds usable cookies.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], WebSession>>,
}

fn key_of(cookie: &str) -> [u8; 32] {
    Sha256::digest(cookie.as_bytes()).into()
}

impl Sessions {
    /// A new session; returns the cookie value (256 random bits, base64url).
    pub fn create(&self, session: WebSession) -> String {
        use base64::Engine;
        let mut raw = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        let cookie = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
        }
        if map.len() < MAX_ENTRIES {
            map.insert(key_of(&cookie), session);
        }
        cookie
    }

    /// The live session for a cookie value; expired ones are removed.
    pub fn get(&self, cookie: &str) -> Option<WebSession> {
        let key = key_of(cookie);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, cookie: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key_of(cookie));
    }
}

/// Single-use, short-lived tickets that let a signed-in browser open one RDP session: the IronRDP
/// web client carries an opaque `proxy_auth` string, and the browser holds no JWT.
#[derive(Default)]
pub struct Tickets {
    map: Mutex<HashMap<[u8; 32], (String, String, Instant)>>,
}

/// Tickets are recognisable, so `/v1/rdp` knows not to parse them as JWTs.
pub const TICKET_PREFIX: &str = "pct_";
const TICKET_TTL: Duration = Duration::from_secs(60);

impl Tickets {
    pub fn issue(&self, user: &str, target: &str) -> String {
        use base64::Engine;
        let mut raw = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        let ticket = format!(
            "{TICKET_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (_, _, expires)| *expires > now);
        if map.len() < MAX_ENTRIES {
            map.insert(key_of(&ticket), (user.to_owned(), target.to_owned(), now + TICKET_TTL));
        }
        ticket
    }

    /// (user, target) of a live ticket, which is used up.
    pub fn redeem(&self, ticket: &str) -> Option<(String, String)> {
        let (user, target, expires) = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key_of(ticket))?;
        (expires > Instant::now()).then_some((user, target))
    }
}

/// Failed sign-ins per user and per client address; too many lock that key for a while.
#[derive(Default)]
pub struct Throttle {
    inner: Mutex<ThrottleMaps>,
}

#[derive(Default)]
struct ThrottleMaps {
    users: HashMap<String, Failures>,
    addrs: HashMap<IpAddr, Failures>,
}

#[derive(Clone, Copy)]
struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

const WINDOW: Duration = Duration::from_secs(15 * 60);
const USER_LIMIT: u32 = 5;
const USER_LOCK: Duration = Duration::from_secs(5 * 60);
const ADDR_LIMIT: u32 = 20;
const ADDR_LOCK: Duration = Duration::from_secs(15 * 60);

impl Failures {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until.filter(|t| *t > now).map(|t| t - now)
    }

    fn record(&mut self, now: Instant, limit: u32, lock: Duration) {
        if now.duration_since(self.first) > WINDOW {
            *self = Failures {
                count: 0,
                first: now,
                locked_until: None,
            };
        }
        self.count += 1;
        if self.count >= limit {
            self.locked_until = Some(now + lock);
        }
    }
}

impl Throttle {
    /// `Err(wait)` while the user or the address is locked out.
    pub fn check(&self, user: &str, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let maps = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let user_wait = maps.users.get(user).and_then(|f| f.locked(now));
        let addr_wait = maps.addrs.get(&addr).and_then(|f| f.locked(now));
        match user_wait.max(addr_wait) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    pub fn failed(&self, user: &str, addr: IpAddr) {
        let now = Instant::now();
        let mut maps = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if maps.users.len() + maps.addrs.len() >= MAX_ENTRIES {
            maps.users
                .retain(|_, f| now.duration_since(f.first) <= WINDOW || f.locked(now).is_some());
            maps.addrs
                .retain(|_, f| now.duration_since(f.first) <= WINDOW || f.locked(now).is_some());
        }
        let fresh = Failures {
            count: 0,
            first: now,
            locked_until: None,
        };
        if maps.users.len() < MAX_ENTRIES {
            maps.users
                .entry(user.to_owned())
                .or_insert(fresh)
                .record(now, USER_LIMIT, USER_LOCK);
        }
        if maps.addrs.len() < MAX_ENTRIES {
            maps.addrs
                .entry(addr)
                .or_insert(fresh)
                .record(now, ADDR_LIMIT, ADDR_LOCK);
        }
    }

    /// A successful sign-in clears the user's count (not the address's).
    pub fn succeeded(&self, user: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).users.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_keyed_by_hash() {
        let s = Sessions::default();
        let live = s.create(WebSession {
            user: "a".into(),
            expires: Instant::now() + WINDOW,
            only_target: None,
        });
        let dead = s.create(WebSession {
            user: "b".into(),
            expires: Instant::now(),
            only_target: None,
        });
        assert_eq!(s.get(&live).unwrap().user, "a");
        assert!(s.get(&dead).is_none());
        assert!(s.get("guess").is_none());
        assert_eq!(live.len(), 43);
        s.remove(&live);
        assert!(s.get(&live).is_none());
    }

    #[test]
    fn lockout_per_user_and_per_address() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..USER_LIMIT {
            assert!(t.check("alice", ip).is_ok());
            t.failed("alice", ip);
        }
        assert!(t.check("alice", ip).is_err());
        assert!(
            t.check("alice", "192.0.2.2".parse().unwrap()).is_err(),
            "the user is locked from anywhere"
        );
        assert!(t.check("bob", ip).is_ok());
        for i in 0..ADDR_LIMIT {
            t.failed(&format!("u{i}"), ip);
        }
        assert!(t.check("carol", ip).is_err(), "the address is locked for every user");
        assert!(t.check("carol", "192.0.2.3".parse().unwrap()).is_ok());
    }
}
