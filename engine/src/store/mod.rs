//! The state gateways of a fleet must share, behind one small async trait: web sign-in sessions,
//! sign-in throttle counters and one-time tickets. (Revocations are read by every authorization
//! decision, synchronously: the policy holds them, `portcullis_core::revocation`; a fleet store
//! keeps their durable copy and feeds that set.)
//!
//! [`MemoryStore`] keeps it in this process (the default: one node, nothing else to run). A fleet
//! store (Redis) implements the same trait; callers never know which one they talk to. Secrets
//! are never stored: sessions and tickets are keyed by the SHA-256 of the cookie or ticket.
//! Nothing here is on the relay's data path.

mod memory;

pub use memory::MemoryStore;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// SHA-256 of a secret (a cookie or a ticket): the key it is stored under.
pub type SecretKey = [u8; 32];

pub fn key_of(secret: &str) -> SecretKey {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSession {
    pub user: String,
    /// A token sign-in is good for the token's target only.
    pub only_target: Option<String>,
}

/// A one-time ticket: lets a signed-in browser open one web RDP session to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub user: String,
    pub target: String,
}

/// What sign-in failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    User(String),
    Address(IpAddr),
}

/// `limit` failures within `window` lock the key for `lock`.
#[derive(Clone, Copy, Debug)]
pub struct ThrottleRule {
    pub limit: u32,
    pub window: Duration,
    pub lock: Duration,
}

/// The store could not answer. Callers fail closed: a sign-in is refused, not waved through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    /// A bounded store is full of live entries (a flood): refused rather than dropped silently.
    #[error("the state store is full ({0})")]
    Full(&'static str),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait Store: Send + Sync {
    /// Stores a sign-in session for `ttl`. A full store sweeps its expired entries, then refuses.
    fn put_session(&self, key: SecretKey, session: WebSession, ttl: Duration) -> BoxFuture<'_, StoreResult<()>>;
    /// The live session under `key`, if any.
    fn session(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<WebSession>>>;
    fn delete_session(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<()>>;

    fn put_ticket(&self, key: SecretKey, ticket: Ticket, ttl: Duration) -> BoxFuture<'_, StoreResult<()>>;
    /// The live ticket under `key`, removed: a ticket is good once.
    fn take_ticket(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<Ticket>>>;

    /// How long the longest lock among `keys` still lasts, if any is locked.
    fn locked_for<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<Option<Duration>>>;
    /// Counts a failure against `key` under `rule`; refuses (`Full`) rather than stop counting.
    fn record_failure(&self, key: ThrottleKey, rule: ThrottleRule) -> BoxFuture<'_, StoreResult<()>>;
    /// Forgets the failures counted against `key`.
    fn clear_failures(&self, key: ThrottleKey) -> BoxFuture<'_, StoreResult<()>>;
}
