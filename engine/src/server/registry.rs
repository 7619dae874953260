//! The live sessions of this process: what the admin API lists, terminates and revokes, and what
//! `[session] max_sessions_per_user` counts.
//!
//! Touched when a session starts or ends and by the admin API, never on the data path: each
//! session publishes its byte counts into its own entry (relaxed stores on a line no other
//! session writes), and an administrator's stop reaches the session's core through the entry's
//! event (glommio wakes a task from another thread through its executor's notifier).

use portcullis_core::audit::{EndReason, Via};
use portcullis_core::config::Protocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Why an administrator ended a session, and who.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// `Terminated` or `Revoked`.
    pub reason: EndReason,
    /// The administrator (the admin token's user).
    pub by: String,
}

/// One live session, as the admin API shows it.
pub struct LiveSession {
    pub id: String,
    pub user: String,
    pub target: String,
    pub protocol: Protocol,
    pub via: Via,
    pub client: SocketAddr,
    pub token_id: Option<String>,
    /// The login credential its token was fetched with, if any (its revocation ends this too).
    pub login_id: Option<String>,
    /// RFC 3339, UTC.
    pub start: String,
    pub started: Instant,
    up: AtomicU64,
    down: AtomicU64,
    stop: Mutex<Option<Stop>>,
    stopped: event_listener::Event,
    /// What a browser terminal shows, for administrators watching it (set by the terminal).
    pub watch: std::sync::OnceLock<Arc<super::watch::WatchHub>>,
}

impl LiveSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        user: String,
        target: String,
        protocol: Protocol,
        via: Via,
        client: SocketAddr,
        token_id: Option<String>,
        start: String,
    ) -> LiveSession {
        LiveSession {
            id,
            user,
            target,
            protocol,
            via,
            client,
            token_id,
            login_id: None,
            start,
            started: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            stop: Mutex::new(None),
            stopped: event_listener::Event::new(),
            watch: std::sync::OnceLock::new(),
        }
    }

    /// The fleet's record of it, as node `node` registers it.
    pub fn record(&self, node: &str) -> crate::store::LiveRecord {
        let (up, down) = self.bytes();
        crate::store::LiveRecord {
            v: 0,
            id: self.id.clone(),
            node: node.to_owned(),
            user: self.user.clone(),
            target: self.target.clone(),
            protocol: self.protocol.as_str().to_owned(),
            via: self.via.as_str().to_owned(),
            client: self.client.to_string(),
            start: self.start.clone(),
            token_id: self.token_id.clone(),
            bytes_client_to_target: up,
            bytes_target_to_client: down,
        }
    }

    /// Bytes relayed so far: client to target, target to client.
    pub fn bytes(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }

    /// The session's byte counts so far (called by the session itself).
    pub fn publish(&self, up: u64, down: u64) {
        self.up.store(up, Ordering::Relaxed);
        self.down.store(down, Ordering::Relaxed);
    }

    fn stop_slot(&self) -> MutexGuard<'_, Option<Stop>> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the session to end; the first stop wins. False if it was already asked.
    pub fn stop(&self, stop: Stop) -> bool {
        let mut slot = self.stop_slot();
        if slot.is_some() {
            return false;
        }
        *slot = Some(stop);
        drop(slot);
        self.stopped.notify(usize::MAX);
        true
    }

    /// Why an administrator ended it, if one did.
    pub fn stopped_by(&self) -> Option<Stop> {
        self.stop_slot().clone()
    }

    /// Resolves once an administrator asks the session to end.
    pub async fn stop_requested(&self) -> Stop {
        loop {
            if let Some(stop) = self.stopped_by() {
                return stop;
            }
            let listener = self.stopped.listen();
            if let Some(stop) = self.stopped_by() {
                return stop;
            }
            listener.await;
        }
    }
}

/// The user already holds `max_sessions_per_user` sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many sessions for this user ({0} at most)")]
pub struct AtCap(pub usize);

/// Why a session got no place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotRefused {
    #[error(transparent)]
    AtCap(#[from] AtCap),
    /// The fleet store does not answer and `on_store_down = "deny"`.
    #[error("the state store is unavailable")]
    StoreDown,
}

impl SlotRefused {
    pub fn status(&self) -> u16 {
        match self {
            SlotRefused::AtCap(_) => 429,
            SlotRefused::StoreDown => 503,
        }
    }

    /// What the client is told.
    pub fn public(&self) -> &'static str {
        match self {
            SlotRefused::AtCap(_) => "too many sessions for this user",
            SlotRefused::StoreDown => "the state store is unavailable; try again later",
        }
    }
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Arc<LiveSession>>,
    /// Sessions reserved or live, per user.
    per_user: HashMap<String, usize>,
}

impl Registry {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of `user`'s `cap` session places, before the session is set up (connect,
    /// TLS to the target), so a user at the cap costs the gateway nothing more.
    pub fn reserve(self: &Arc<Self>, user: &str, cap: usize) -> Result<Slot, AtCap> {
        let mut inner = self.inner();
        let held = inner.per_user.entry(user.to_owned()).or_default();
        if *held >= cap {
            return Err(AtCap(cap));
        }
        *held += 1;
        drop(inner);
        Ok(Slot {
            registry: self.clone(),
            user: user.to_owned(),
            // The session's id, known before it starts: its fleet-wide place is taken under it.
            id: portcullis_core::secret::random_hex::<12>().unwrap_or_else(|_| format!("{:024x}", rand_fallback())),
            session: None,
            fleet: None,
        })
    }

    /// Every live session.
    pub fn list(&self) -> Vec<Arc<LiveSession>> {
        let mut all: Vec<_> = self.inner().sessions.values().cloned().collect();
        all.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
        all
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.inner().sessions.get(id).cloned()
    }

    /// Stops every live session `select` picks; returns how many it asked to end.
    pub fn stop_where(&self, select: impl Fn(&LiveSession) -> bool, stop: &Stop) -> usize {
        let picked: Vec<_> = self.inner().sessions.values().filter(|s| select(s)).cloned().collect();
        picked.iter().filter(|s| s.stop(stop.clone())).count()
    }

    /// Live sessions by via and protocol (the metrics' order).
    pub fn count_by(
        &self,
        via_index: impl Fn(Via) -> usize,
        protocol_index: impl Fn(Protocol) -> usize,
    ) -> [[u64; crate::metrics::PROTOCOL_COUNT]; crate::metrics::VIA_COUNT] {
        let mut counts = [[0u64; crate::metrics::PROTOCOL_COUNT]; crate::metrics::VIA_COUNT];
        for s in self.inner().sessions.values() {
            counts[via_index(s.via)][protocol_index(s.protocol)] += 1;
        }
        counts
    }
}

/// A user's place among their sessions; once the session starts, also its entry in the
/// registry. Dropping it gives both back.
pub struct Slot {
    registry: Arc<Registry>,
    user: String,
    id: String,
    session: Option<Arc<LiveSession>>,
    /// The fleet store holding this session's place and record, given back when it ends.
    fleet: Option<Arc<crate::store::RedisStore>>,
}

/// An id when the OS gives no randomness (it always does; ids need not be secret).
fn rand_fallback() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

impl Slot {
    /// The id the session will have.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The place is also held in the fleet store (released there when the session ends).
    pub fn in_fleet(&mut self, fleet: Arc<crate::store::RedisStore>) {
        self.fleet = Some(fleet);
    }

    pub fn fleet(&self) -> Option<&Arc<crate::store::RedisStore>> {
        self.fleet.as_ref()
    }

    /// Lists the started session.
    pub fn live(&mut self, session: LiveSession) -> Arc<LiveSession> {
        let session = Arc::new(session);
        self.registry
            .inner()
            .sessions
            .insert(session.id.clone(), session.clone());
        self.session = Some(session.clone());
        session
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(fleet) = &self.fleet {
            // Queued for the store's release task; nothing waits for it here.
            fleet.release_live(&self.user, &self.id);
        }
        let mut inner = self.registry.inner();
        if let Some(s) = &self.session {
            inner.sessions.remove(&s.id);
        }
        if let Some(held) = inner.per_user.get_mut(&self.user) {
            *held -= 1;
            if *held == 0 {
                inner.per_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, user: &str) -> LiveSession {
        LiveSession::new(
            id.into(),
            user.into(),
            "t".into(),
            Protocol::Tcp,
            Via::Tunnel,
            "127.0.0.1:1".parse().unwrap(),
            None,
            String::new(),
        )
    }

    #[test]
    fn caps_per_user_and_gives_places_back() {
        let r = Arc::new(Registry::default());
        let mut a = r.reserve("alice", 2).unwrap();
        let _b = r.reserve("alice", 2).unwrap();
        assert_eq!(r.reserve("alice", 2).err(), Some(AtCap(2)));
        assert!(r.reserve("bob", 2).is_ok());
        a.live(session("s1", "alice"));
        assert_eq!(r.list().len(), 1);
        drop(a);
        assert!(r.list().is_empty());
        assert!(r.reserve("alice", 2).is_ok());
    }

    #[test]
    fn the_first_stop_wins() {
        let r = Arc::new(Registry::default());
        let mut slot = r.reserve("alice", 1).unwrap();
        let s = slot.live(session("s1", "alice"));
        let by = |who: &str| Stop {
            reason: EndReason::Terminated,
            by: who.into(),
        };
        assert_eq!(r.stop_where(|s| s.user == "alice", &by("root")), 1);
        assert_eq!(r.stop_where(|s| s.user == "alice", &by("other")), 0);
        assert_eq!(s.stopped_by().unwrap().by, "root");
        assert_eq!(futures_lite::future::block_on(s.stop_requested()).by, "root");
    }
}
