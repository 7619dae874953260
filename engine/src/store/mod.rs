//! The state gateways of a fleet must share, behind one small async trait: web sign-in sessions,
//! sign-in throttle counters and one-time tickets. (Revocations are read by every authorization
//! decision, synchronously: the policy holds them, `portcullis_core::revocation`; a fleet store
//! keeps their durable copy and feeds that set.)
//!
//! [`MemoryStore`] keeps it in this process (the default: one node, nothing else to run). A fleet
//! store (Redis) implements the same trait; callers never know which one they talk to. Secrets
//! are never stored: sessions and tickets are keyed by the SHA-256 of the cookie or ticket.
//! Nothing here is on the relay's data path.

mod durable;
mod leases;
mod memory;
mod redis;

pub use durable::{LocalState, StateError};

pub use self::redis::{
    FleetHandlers, Health as RedisHealth, LiveRecord, RedisStore, RevocationNotice, RevokedKind, TerminateNotice,
    WatchRequest, WATCH_STREAM_PREFIX,
};
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
    /// Roles from single sign-on (empty for configured users signing in locally).
    pub roles: Vec<String>,
    /// A token sign-in is good for the token's target only.
    pub only_target: Option<String>,
    /// Signed in with a second factor (or with a token: the issuer's proof).
    pub mfa: bool,
}

/// A one-time ticket: lets a signed-in browser open one web RDP session to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub user: String,
    pub target: String,
    /// Roles from single sign-on of the session that asked for it.
    pub roles: Vec<String>,
}

/// What sign-in attempts are counted against. Addresses are client keys
/// (`portcullis_core::net::client_key`: an IPv6 client by its /64).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// One user from one client.
    UserAddress(String, IpAddr),
    /// Any user from one client.
    Address(IpAddr),
    /// One user from anywhere.
    User(String),
    /// Unauthenticated starts from one client (device login codes, single sign-on redirects):
    /// counted apart from sign-in attempts, so a page that fires them cannot lock users out.
    Starts(IpAddr),
}

/// At most `limit` attempts under a key within `window` (fixed windows: the count starts again
/// `window` after the first attempt). `u32::MAX` counts without ever refusing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThrottleRule {
    pub limit: u32,
    pub window: Duration,
}

/// The answer to [`Store::reserve_attempt`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Counted under every key; `before[i]` attempts were already counted under key `i`.
    Reserved { before: Vec<u32> },
    /// A key is at its limit; nothing was counted. It frees after `retry_after`.
    Refused { retry_after: Duration },
}

/// Short-lived records of the device login (`portcullis login`), each kind keyed by the
/// SHA-256 of a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A login waiting for approval, by its user code (what the user types in the browser).
    DeviceRequest,
    /// A login approved (or denied), by its device code (what the CLI polls with).
    DeviceAnswer,
    /// A password sign-in waiting for its second factor, by its pending token.
    MfaPending,
    /// A TOTP secret shown for enrolment, waiting for its first code, by the user.
    TotpEnrolment,
    /// A single sign-on in progress (nonce, PKCE verifier), by its `state`.
    OidcState,
    /// A WebAuthn challenge waiting for its answer (registration by user, sign-in by pending).
    WebauthnChallenge,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::DeviceRequest => "device-request",
            RecordKind::DeviceAnswer => "device-answer",
            RecordKind::MfaPending => "mfa-pending",
            RecordKind::TotpEnrolment => "totp-enrolment",
            RecordKind::OidcState => "oidc-state",
            RecordKind::WebauthnChallenge => "webauthn-challenge",
        }
    }
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

    /// Counts one sign-in attempt under every key, atomically and before the password is checked,
    /// so that concurrent guesses cannot all pass a check made before any is counted: all keys or
    /// none. Refuses (`Full`) rather than stop counting.
    fn reserve_attempt<'a>(&'a self, keys: &'a [(ThrottleKey, ThrottleRule)]) -> BoxFuture<'a, StoreResult<Attempt>>;
    /// Gives one reserved attempt back under each key (a right password is not a guess).
    fn refund_attempt<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<()>>;
    /// Forgets every attempt counted under each key.
    fn clear_attempts<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<()>>;

    /// Spends a single-use token (by the SHA-256 of its id) for `ttl` (its remaining lifetime):
    /// true the first time, false ever after, on every node that shares the store.
    fn use_once(&self, key: SecretKey, ttl: Duration) -> BoxFuture<'_, StoreResult<bool>>;

    /// The second factors `user` enrolled (JSON), a durable record: it outlives restarts (the
    /// local store's `[state] dir`, Redis persistence) and is shared by a fleet.
    fn factors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>>;
    /// Replaces `user`'s factors with `new` (`None` removes them) if they are still `expected`:
    /// false when another request changed them first (a code is then checked again).
    fn swap_factors<'a>(
        &'a self,
        user: &'a str,
        expected: Option<String>,
        new: Option<String>,
    ) -> BoxFuture<'a, StoreResult<bool>>;

    /// Stores a short-lived record (JSON text) for `ttl`. A full store sweeps, then refuses.
    fn put_record(
        &self,
        kind: RecordKind,
        key: SecretKey,
        value: String,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<()>>;
    /// The live record, left in place.
    fn record(&self, kind: RecordKind, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<String>>>;
    /// The live record, removed: whoever takes it is the only one, across the fleet.
    fn take_record(&self, kind: RecordKind, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<String>>>;

    /// Stores shared link `id` (JSON, whose `expires` the caller checks) until `expires_at`
    /// (Unix seconds). At most [`MAX_LINKS`] are kept: more are refused (`Full`).
    fn put_link<'a>(&'a self, id: &'a str, value: String, expires_at: u64) -> BoxFuture<'a, StoreResult<()>>;
    /// Shared link `id`, if it is still kept.
    fn link<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>>;
    /// Every shared link still kept (unexpired), in no order.
    fn links(&self) -> BoxFuture<'_, StoreResult<Vec<String>>>;
    /// Forgets shared link `id`: true when it was kept.
    fn remove_link<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>>;
    /// The fleet's random 32 bytes named `name` (a TLS ticket key for an epoch): the first node
    /// to ask creates them, every node gets the same until they expire after `ttl`.
    fn shared_random<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<[u8; 32]>>;
}

/// Most shared links a store keeps at once.
pub const MAX_LINKS: usize = 1000;
