//! The fleet store: Redis 7 (or Valkey), shared by every gateway of a fleet, so that a browser
//! signed in on one node is signed in on all, sign-in attempts are counted fleet-wide, and a
//! ticket is good once anywhere.
//!
//! Commands never run on a glommio core: each call is spawned on the tokio runtime of the web
//! state and its answer awaited (a tokio `JoinHandle` wakes the core's task from the runtime's
//! thread), under `COMMAND_TIMEOUT`. redis-rs' connection manager reconnects with backoff; until
//! the first connection is made (Redis down at start), a task of our own retries. While Redis is
//! unreachable every call fails with `StoreError::Unavailable` (callers fail closed), said once
//! per transition and counted.
//!
//! Keys: `portcullis:v1:<kind>:<hex>`, where `<hex>` is the SHA-256 of the secret (sessions,
//! tickets) or of the throttle key (user names and addresses never appear in key names). Values
//! are JSON with a schema version (`"v": 1`), so that nodes of two releases can share a store
//! during a rolling upgrade: a reader ignores fields it does not know.

use super::leases::Leases;
use super::{
    Attempt, BoxFuture, RecordKind, SecretKey, Store, StoreError, StoreResult, ThrottleKey, ThrottleRule, Ticket,
    WebSession,
};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Longest a command may take, connection included; then the caller gets `Unavailable`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the store is asked whether it answers (PING), with or without traffic: a node that
/// the balancer drained for a dead store must notice by itself that the store is back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Schema version of the values written (and the key prefix).
const SCHEMA: u32 = 1;
const PREFIX: &str = "portcullis:v1:";

/// Counts one attempt under every key if none is at its limit: all or none, atomically.
/// KEYS: the counters. ARGV: per key, its limit then its window in ms. Returns {1, before...} or
/// {0, milliseconds until the fullest key frees}.
const RESERVE: &str = r"
local before = {}
local wait = -1
for i = 1, #KEYS do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then ttl = tonumber(ARGV[2 * i]) end
    if ttl > wait then wait = ttl end
  end
  before[i] = count
end
if wait >= 0 then return {0, wait} end
for i = 1, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[2 * i]) end
end
table.insert(before, 1, 1)
return before
";

/// Gives one attempt back under every key that has one.
const REFUND: &str = r"
for i = 1, #KEYS do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count > 0 then redis.call('DECR', KEYS[i]) end
end
return 1
";

static RESERVE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(RESERVE));
static REFUND_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(REFUND));

/// Compare and set of a durable record: KEYS[1]; ARGV[1] `1` when a value is expected, ARGV[2]
/// that value, ARGV[3] `1` to set (else delete), ARGV[4] the new value. 1: done, 0: changed.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then return 0 end
if ARGV[3] == '1' then redis.call('SET', KEYS[1], ARGV[4]) else redis.call('DEL', KEYS[1]) end
return 1
";
static SWAP_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(SWAP));

/// A user's durable second factors (no expiry: Redis persistence keeps them).
fn factors_key(user: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{PREFIX}factors:{}", hex(&Sha256::digest(user.as_bytes())))
}

#[derive(Serialize, Deserialize)]
struct SessionValue {
    v: u32,
    user: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    only_target: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    mfa: bool,
}

/// A revocation as the fleet keeps and announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationNotice {
    #[serde(default)]
    pub v: u32,
    /// `user` or `token`.
    pub kind: RevokedKind,
    /// The user name or the token id.
    pub subject: String,
    /// Unix seconds; absent: for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// The administrator who revoked.
    pub by: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedKind {
    User,
    Token,
}

impl RevocationNotice {
    pub fn revocation(&self) -> portcullis_core::revocation::Revocation {
        use portcullis_core::revocation::Revocation;
        match self.kind {
            RevokedKind::User => Revocation::User {
                name: self.subject.clone(),
                until: self.until,
            },
            RevokedKind::Token => Revocation::Token {
                id: self.subject.clone(),
                until: self.until,
            },
        }
    }

    fn key(&self) -> String {
        use sha2::{Digest, Sha256};
        let kind = match self.kind {
            RevokedKind::User => "user",
            RevokedKind::Token => "token",
        };
        format!(
            "{PREFIX}revoked:{kind}:{}",
            hex(&Sha256::digest(self.subject.as_bytes()))
        )
    }
}

/// A live session as the fleet lists it: registered by its node at start, refreshed by the
/// node's heartbeat (with its byte counts), gone when it ends or when its node stops refreshing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRecord {
    #[serde(default)]
    pub v: u32,
    pub id: String,
    pub node: String,
    pub user: String,
    pub target: String,
    pub protocol: String,
    pub via: String,
    pub client: String,
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default)]
    pub bytes_client_to_target: u64,
    #[serde(default)]
    pub bytes_target_to_client: u64,
}

/// An administrator's request that the node owning session `id` end it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminateNotice {
    #[serde(default)]
    pub v: u32,
    pub id: String,
    pub by: String,
}

/// An administrator on another node asks to watch live terminal session `session`: the node that
/// holds it publishes what it shows on `channel` (one watcher's own), while anyone listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    #[serde(default)]
    pub v: u32,
    pub session: String,
    pub channel: String,
    pub by: String,
}

/// Where watch requests are published; each watcher's stream has a channel of its own, named
/// with a random suffix by the watcher's node (`WATCH_STREAM_PREFIX`).
const WATCH_CHANNEL: &str = "portcullis:v1:watch-requests";
pub const WATCH_STREAM_PREFIX: &str = "portcullis:v1:watch:";

/// What a node does with the fleet's messages.
#[derive(Clone)]
pub struct FleetHandlers {
    pub revoked: Arc<dyn Fn(RevocationNotice) + Send + Sync>,
    pub watch: Arc<dyn Fn(WatchRequest) + Send + Sync>,
    pub terminate: Arc<dyn Fn(TerminateNotice) + Send + Sync>,
}

const TERMINATE_CHANNEL: &str = "portcullis:v1:terminate";

fn live_key(id: &str) -> String {
    format!("{PREFIX}live:{id}")
}

/// The sorted set of a user's sessions, scored by when each place expires (Unix ms).
fn places_key(user: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{PREFIX}places:{}", hex(&Sha256::digest(user.as_bytes())))
}

/// Leases places of a user (`leases.rs`) if fewer than the cap are held, and lists the session
/// that asked, in one round trip: KEYS[1] the user's set, KEYS[2] the session's record; ARGV:
/// now (ms), expiry (ms), the cap, the record, its TTL (ms), then the names of the entries
/// wanted. Grants them all when at least two blocks are free, else one. Returns how many
/// (0: at the cap).
const LEASE_PLACES: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local free = tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[1])
if free <= 0 then return 0 end
local want = #ARGV - 5
local n = want
if free < 2 * want then n = 1 end
for i = 1, n do redis.call('ZADD', KEYS[1], ARGV[2], ARGV[5 + i]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'NX')
redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'GT')
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
return n
";

/// A quiet revocation channel is backed by a full reload this often.
const RESYNC: Duration = Duration::from_secs(30);
/// Session records waiting for the writer task at most; past it, an ended session is released
/// at once (and a started one waits for the heartbeat to be listed).
const WRITE_QUEUE: usize = 16 * 1024;

/// Sessions started on a spare place are listed, and ended ones released, in batches: one
/// pipeline per `WRITE_BATCH` at most, instead of a round trip per session. A session that
/// starts and ends within one batch is never listed.
const WRITE_BATCH: Duration = Duration::from_millis(20);

/// What the writer task sends to the store in batches.
enum Write {
    /// List a session (started on a spare place) for `ttl`.
    Register(LiveRecord, Duration),
    /// A session ended: remove its record, and give its place's entry back when its node does.
    End {
        id: String,
        place: Option<(String, String)>,
    },
}
static LEASE_PLACES_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(LEASE_PLACES));

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The channel that wakes every node when something is revoked (the records themselves are
/// keys: a node that missed a message reloads them all when it subscribes again).
const REVOCATIONS_CHANNEL: &str = "portcullis:v1:revocations";

#[derive(Serialize, Deserialize)]
struct TicketValue {
    v: u32,
    user: String,
    target: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
}

/// Whether Redis answers, as the last command found; said once per change.
#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    /// Commands that failed (unreachable, timed out, refused), since start.
    failures: AtomicU64,
}

impl Health {
    fn answered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("the state store (Redis) answers again");
        }
    }

    fn failed(&self, why: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!("the state store (Redis) is unavailable (said once until it answers again): {why}");
        }
    }

    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

pub struct RedisStore {
    runtime: tokio::runtime::Handle,
    /// For subscriptions of their own (a watcher's stream).
    client: redis::Client,
    conn: Arc<ArcSwapOption<ConnectionManager>>,
    health: Arc<Health>,
    /// Records to list and remove, for the writer task (bounded; a full queue releases at once).
    writes: tokio::sync::mpsc::Sender<Write>,
    /// This node's share of every user's fleet-wide places.
    leases: Arc<std::sync::Mutex<Leases>>,
}

impl RedisStore {
    /// Connects in the background (a gateway starts even while Redis is down, and says so).
    /// `url`: `redis://[user:password@]host:port[/db]` or `rediss://` for TLS.
    pub fn start(url: &str, node: &str, runtime: tokio::runtime::Handle) -> Result<RedisStore, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = Arc::new(ArcSwapOption::empty());
        let health = Arc::new(Health::default());
        // Down until the first connection.
        health.down.store(true, Ordering::Relaxed);
        let (slot, first) = (conn.clone(), health.clone());
        runtime.spawn(async move {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(COMMAND_TIMEOUT))
                .set_response_timeout(Some(COMMAND_TIMEOUT))
                .set_number_of_retries(6)
                .set_max_delay(Duration::from_secs(2));
            let mut backoff = Duration::from_millis(100);
            loop {
                match ConnectionManager::new_with_config(client.clone(), config.clone()).await {
                    Ok(manager) => {
                        slot.store(Some(Arc::new(manager.clone())));
                        first.answered();
                        tracing::info!("connected to the state store (Redis)");
                        probe(manager, first).await;
                        return;
                    }
                    Err(e) => {
                        first.failed(&e.to_string());
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        let (writes, pending) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        runtime.spawn(write_in_batches(pending, conn.clone()));
        Ok(RedisStore {
            client: redis::Client::open(url)?,
            runtime,
            conn,
            health,
            writes,
            leases: Arc::new(std::sync::Mutex::new(Leases::new(node))),
        })
    }

    /// Records a revocation for the fleet (a key that expires with it, so the store holds live
    /// revocations only) and announces it to every node.
    pub fn publish_revocation(&self, notice: RevocationNotice) -> BoxFuture<'static, StoreResult<()>> {
        let value = json(&RevocationNotice {
            v: SCHEMA,
            ..notice.clone()
        });
        let key = notice.key();
        self.run(move |mut c| async move {
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&value);
            if let Some(until) = notice.until {
                set.arg("EXAT").arg(until);
            }
            let mut pipe = redis::pipe();
            pipe.atomic().add_command(set).ignore();
            pipe.cmd("PUBLISH").arg(REVOCATIONS_CHANNEL).arg(&value).ignore();
            pipe.query_async::<()>(&mut c).await
        })
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of `user`'s fleet-wide places for the session of `record` (false when the user
    /// holds `cap` places across the fleet) and lists the session. A spare place of this node's
    /// lease is taken without a round trip (the record is then listed within `WRITE_BATCH`);
    /// else the store leases places (`leases.rs`) and lists the record in one call. Places are
    /// expiring entries renewed by the heartbeat, so a node that dies cannot leak them.
    pub fn reserve_place(
        &self,
        record: &LiveRecord,
        cap: usize,
        ttl: Duration,
    ) -> BoxFuture<'static, StoreResult<bool>> {
        let record = LiveRecord {
            v: SCHEMA,
            ..record.clone()
        };
        let names = {
            let mut leases = self.leases();
            if leases.take_spare(&record.user, std::time::Instant::now()) {
                if let Err(full) = self.writes.try_send(Write::Register(record, ttl)) {
                    // Listed by the next heartbeat instead.
                    drop(full);
                }
                return Box::pin(async { Ok(true) });
            }
            leases.names()
        };
        let now = unix_ms();
        let mut script = LEASE_PLACES_SCRIPT.prepare_invoke();
        script
            .key(places_key(&record.user))
            .key(live_key(&record.id))
            .arg(now)
            .arg(now + millis(ttl))
            .arg(cap)
            .arg(json(&record))
            .arg(millis(ttl));
        for name in &names {
            script.arg(name);
        }
        let leases = self.leases.clone();
        let user = record.user;
        self.run(move |mut c| async move {
            let granted = script.invoke_async::<usize>(&mut c).await?;
            let granted: Vec<String> = names.into_iter().take(granted).collect();
            let taken = !granted.is_empty();
            leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .granted(&user, granted, std::time::Instant::now());
            Ok(taken)
        })
    }

    /// Refreshes this node's live sessions for `ttl` (their records, with byte counts) and the
    /// places it holds; gives back spare places not drawn on since the last beat.
    pub fn register_live(&self, records: Vec<LiveRecord>, ttl: Duration) -> BoxFuture<'static, StoreResult<()>> {
        let (held, freed) = {
            let mut leases = self.leases();
            let freed = leases.sweep(std::time::Instant::now(), ttl / 3);
            (leases.held(), freed)
        };
        if records.is_empty() && held.is_empty() && freed.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let expires = unix_ms() + millis(ttl);
        self.run(move |mut c| async move {
            let mut pipe = redis::pipe();
            for r in &records {
                let value = json(&LiveRecord { v: SCHEMA, ..r.clone() });
                pipe.cmd("SET")
                    .arg(live_key(&r.id))
                    .arg(value)
                    .arg("PX")
                    .arg(millis(ttl))
                    .ignore();
            }
            for (user, member) in &freed {
                pipe.cmd("ZREM").arg(places_key(user)).arg(member).ignore();
            }
            for (user, members) in &held {
                let key = places_key(user);
                let zadd = pipe.cmd("ZADD").arg(&key);
                for m in members {
                    zadd.arg(expires).arg(m);
                }
                zadd.ignore();
                pipe.cmd("PEXPIREAT").arg(&key).arg(expires).arg("NX").ignore();
                pipe.cmd("PEXPIREAT").arg(&key).arg(expires).arg("GT").ignore();
            }
            pipe.query_async::<()>(&mut c).await
        })
    }

    /// A session that held a place ended: its record is removed and its place kept as a spare
    /// or given back (`leases.rs`), by the writer task within `WRITE_BATCH` (what a failure
    /// leaves behind expires with the heartbeat TTL).
    pub fn release_live(&self, user: &str, id: &str) {
        let place = self.leases().give_back(user).map(|m| (user.to_owned(), m));
        let end = Write::End {
            id: id.to_owned(),
            place,
        };
        if let Err(full) = self.writes.try_send(end) {
            let ended = [full.into_inner()];
            drop(self.run(move |mut c| async move { write_pipe(&ended).query_async::<()>(&mut c).await }));
        }
    }

    /// Every live session of the fleet.
    pub fn list_live(&self) -> BoxFuture<'static, StoreResult<Vec<LiveRecord>>> {
        self.run(|c| async move { scan_values(c, &format!("{PREFIX}live:*")).await })
    }

    /// Asks the node that owns session `id` to end it; false when no node lists it.
    pub fn publish_terminate(&self, notice: TerminateNotice) -> BoxFuture<'static, StoreResult<bool>> {
        let key = live_key(&notice.id);
        let value = json(&TerminateNotice { v: SCHEMA, ..notice });
        self.run(move |mut c| async move {
            let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut c).await?;
            if exists {
                redis::cmd("PUBLISH")
                    .arg(TERMINATE_CHANNEL)
                    .arg(value)
                    .query_async::<()>(&mut c)
                    .await?;
            }
            Ok(exists)
        })
    }

    /// Applies every revocation of the fleet, now and from now on, and every terminate request:
    /// subscribes to both channels, then loads every live revocation record (so nothing
    /// published while this node was away is missed), and again after each reconnection.
    pub fn watch(&self, url: &str, handlers: FleetHandlers) -> redis::RedisResult<()> {
        let FleetHandlers {
            revoked: apply,
            terminate,
            watch,
        } = handlers;
        let client = redis::Client::open(url)?;
        self.runtime.spawn(async move {
            use futures_lite::StreamExt;
            let mut backoff = Duration::from_millis(100);
            loop {
                let subscribed = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(REVOCATIONS_CHANNEL).await?;
                    pubsub.subscribe(TERMINATE_CHANNEL).await?;
                    pubsub.subscribe(WATCH_CHANNEL).await?;
                    Ok::<_, redis::RedisError>(pubsub)
                };
                let mut pubsub = match tokio::time::timeout(COMMAND_TIMEOUT, subscribed).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                // Subscribed first, then the full load: a revocation published in between is
                // applied twice, never missed.
                // Without the full load nothing is trusted: subscribe and load again.
                match load_revocations(&client).await {
                    Ok(all) => {
                        tracing::info!(revocations = all.len(), "revocations loaded from the state store");
                        all.into_iter().for_each(|notice| apply(notice));
                    }
                    Err(why) => {
                        tracing::warn!("cannot load the fleet's revocations, trying again: {why}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
                let mut messages = pubsub.on_message();
                loop {
                    // A subscription that dies without the connection closing (a silent
                    // partition) delivers nothing: a quiet channel is backed by a full reload,
                    // so what it missed is applied within `RESYNC` at worst.
                    let msg = match tokio::time::timeout(RESYNC, messages.next()).await {
                        Ok(Some(msg)) => msg,
                        Ok(None) => break,
                        Err(_) => match load_revocations(&client).await {
                            Ok(all) => {
                                all.into_iter().for_each(|notice| apply(notice));
                                continue;
                            }
                            Err(_) => break,
                        },
                    };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    if msg.get_channel_name() == WATCH_CHANNEL {
                        match serde_json::from_str::<WatchRequest>(&payload) {
                            Ok(request) if request.channel.starts_with(WATCH_STREAM_PREFIX) => watch(request),
                            Ok(_) => tracing::warn!("watch request for a channel outside the watch streams"),
                            Err(e) => tracing::warn!("unreadable watch request: {e}"),
                        }
                        continue;
                    }
                    if msg.get_channel_name() == TERMINATE_CHANNEL {
                        match serde_json::from_str::<TerminateNotice>(&payload) {
                            Ok(notice) => terminate(notice),
                            Err(e) => tracing::warn!("unreadable terminate notice: {e}"),
                        }
                        continue;
                    }
                    match serde_json::from_str::<RevocationNotice>(&payload) {
                        Ok(notice) => apply(notice),
                        Err(e) => tracing::warn!("unreadable revocation notice: {e}"),
                    }
                }
                tracing::warn!("revocation channel lost; resubscribing");
            }
        });
        Ok(())
    }

    /// Asks the fleet for a watch (the node holding the session answers on `request.channel`).
    pub fn request_watch(&self, request: WatchRequest) -> BoxFuture<'static, StoreResult<u64>> {
        let value = json(&WatchRequest { v: SCHEMA, ..request });
        self.run(move |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(WATCH_CHANNEL)
                .arg(value)
                .query_async::<u64>(&mut c)
                .await
        })
    }

    /// Publishes `bytes` on `channel`; how many subscribers received them.
    pub fn publish_bytes(&self, channel: String, bytes: Vec<u8>) -> BoxFuture<'static, StoreResult<u64>> {
        self.run(move |mut c| async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(bytes)
                .query_async::<u64>(&mut c)
                .await
        })
    }

    /// Subscribes to `channel` on a connection of its own (on the store's runtime), calls
    /// `subscribed` once it is, then `deliver(Some(payload))` for each message and
    /// `deliver(None)` every `tick` without one, until `deliver` returns false or the
    /// subscription fails (then `deliver(None)` a last time is not promised: callers bound their
    /// wait themselves).
    pub fn relay_channel(
        &self,
        channel: String,
        tick: Duration,
        subscribed: impl FnOnce() + Send + 'static,
        mut deliver: impl FnMut(Option<Vec<u8>>) -> bool + Send + 'static,
    ) {
        let client = self.client.clone();
        self.runtime.spawn(async move {
            use futures_lite::StreamExt;
            let subscribing = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let Ok(Ok(mut pubsub)) = tokio::time::timeout(COMMAND_TIMEOUT, subscribing).await else {
                deliver(None);
                return;
            };
            subscribed();
            let mut messages = pubsub.on_message();
            loop {
                let more = match tokio::time::timeout(tick, messages.next()).await {
                    Ok(Some(msg)) => deliver(Some(msg.get_payload::<Vec<u8>>().unwrap_or_default())),
                    Ok(None) => {
                        deliver(None);
                        return;
                    }
                    Err(_) => deliver(None),
                };
                if !more {
                    return;
                }
            }
        });
    }

    /// Whether the store answers, as its last command or probe found.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// Runs `command` on the runtime with a clone of the connection, under the timeout.
    fn run<T, F, Fut>(&self, command: F) -> BoxFuture<'static, StoreResult<T>>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = redis::RedisResult<T>> + Send + 'static,
    {
        let health = self.health.clone();
        let Some(conn) = self.conn.load_full() else {
            return Box::pin(async { Err(StoreError::Unavailable("not connected to Redis yet".into())) });
        };
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(COMMAND_TIMEOUT, command((*conn).clone())).await });
        Box::pin(async move {
            let why = match task.await {
                Ok(Ok(Ok(value))) => {
                    health.answered();
                    return Ok(value);
                }
                Ok(Ok(Err(e))) => e.to_string(),
                Ok(Err(_)) => format!("no answer within {COMMAND_TIMEOUT:?}"),
                Err(e) => e.to_string(),
            };
            health.failed(&why);
            Err(StoreError::Unavailable(why))
        })
    }
}

/// PINGs the store every `PROBE_INTERVAL`, for as long as the runtime runs.
async fn probe(mut conn: ConnectionManager, health: Arc<Health>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let ping = redis::cmd("PING");
        match tokio::time::timeout(COMMAND_TIMEOUT, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => health.answered(),
            Ok(Err(e)) => health.failed(&e.to_string()),
            Err(_) => health.failed("no answer to PING in time"),
        }
    }
}

/// Every value under keys matching `pattern` that parses (SCAN and MGET, in batches).
async fn scan_values<T: serde::de::DeserializeOwned, C: redis::aio::ConnectionLike + Send>(
    mut conn: C,
    pattern: &str,
) -> redis::RedisResult<Vec<T>> {
    let mut cursor: u64 = 0;
    let mut all = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
            all.extend(
                values
                    .into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_str(&v).ok()),
            );
        }
        if next == 0 {
            return Ok(all);
        }
        cursor = next;
    }
}

/// Every live revocation record, on a connection of its own (the shared one may not be up yet),
/// within `5 * COMMAND_TIMEOUT`.
async fn load_revocations(client: &redis::Client) -> Result<Vec<RevocationNotice>, String> {
    let load = async {
        let c = client.get_multiplexed_async_connection().await?;
        scan_values::<RevocationNotice, _>(c, &format!("{PREFIX}revoked:*")).await
    };
    match tokio::time::timeout(5 * COMMAND_TIMEOUT, load).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Lists started sessions and releases ended ones: waits for one write, lets more gather for
/// `WRITE_BATCH`, then one pipeline for all of them.
async fn write_in_batches(
    mut pending: tokio::sync::mpsc::Receiver<Write>,
    conn: Arc<ArcSwapOption<ConnectionManager>>,
) {
    while let Some(first) = pending.recv().await {
        tokio::time::sleep(WRITE_BATCH).await;
        let mut batch = vec![first];
        while let Ok(more) = pending.try_recv() {
            batch.push(more);
        }
        let pipe = write_pipe(&batch);
        let (Some(c), false) = (conn.load_full(), pipe.is_empty()) else {
            continue;
        };
        let mut c = (*c).clone();
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut c)).await;
    }
}

/// One pipeline for a batch of writes. A session that ended within the batch is not listed
/// (its record is still deleted: the heartbeat may have listed it meanwhile).
fn write_pipe(batch: &[Write]) -> redis::Pipeline {
    let ended: std::collections::HashSet<&str> = batch
        .iter()
        .filter_map(|w| match w {
            Write::End { id, .. } => Some(id.as_str()),
            Write::Register(..) => None,
        })
        .collect();
    let mut pipe = redis::pipe();
    for write in batch {
        match write {
            Write::Register(record, ttl) if !ended.contains(record.id.as_str()) => {
                pipe.cmd("SET")
                    .arg(live_key(&record.id))
                    .arg(json(record))
                    .arg("PX")
                    .arg(millis(*ttl))
                    .ignore();
            }
            Write::Register(..) => {}
            Write::End { id, place } => {
                pipe.cmd("DEL").arg(live_key(id)).ignore();
                if let Some((user, member)) = place {
                    pipe.cmd("ZREM").arg(places_key(user)).arg(member).ignore();
                }
            }
        }
    }
    pipe
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn secret_key(kind: &str, key: &SecretKey) -> String {
    format!("{PREFIX}{kind}:{}", hex(key))
}

/// A throttle counter's key: the SHA-256 of its kind and value, so that user names and addresses
/// never appear in key names (and cannot collide across kinds).
fn throttle_key(key: &ThrottleKey) -> String {
    use sha2::{Digest, Sha256};
    let text = match key {
        ThrottleKey::UserAddress(user, ip) => format!("ua\0{user}\0{ip}"),
        ThrottleKey::Address(ip) => format!("a\0{ip}"),
        ThrottleKey::User(user) => format!("u\0{user}"),
        ThrottleKey::Starts(ip) => format!("s\0{ip}"),
    };
    format!("{PREFIX}throttle:{}", hex(&Sha256::digest(text.as_bytes())))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

fn json<T: Serialize>(value: &T) -> String {
    // Our own plain structs always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

impl RedisStore {
    /// `SET key value PX ttl`: a record that Redis expires.
    fn set_px(&self, key: String, value: String, ttl: Duration) -> BoxFuture<'static, StoreResult<()>> {
        self.run(move |mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<()>(&mut c)
                .await
        })
    }

    /// A JSON record read by `command` (`GET`, `GETDEL`); an unreadable one counts as absent.
    fn get_json<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        command: &'static str,
        key: String,
    ) -> BoxFuture<'static, StoreResult<Option<T>>> {
        let got = self
            .run(move |mut c| async move { redis::cmd(command).arg(key).query_async::<Option<String>>(&mut c).await });
        Box::pin(async move { Ok(got.await?.and_then(|text| serde_json::from_str(&text).ok())) })
    }
}

impl Store for RedisStore {
    fn put_session(&self, key: SecretKey, session: WebSession, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        let value = json(&SessionValue {
            v: SCHEMA,
            user: session.user,
            roles: session.roles,
            only_target: session.only_target,
            mfa: session.mfa,
        });
        self.set_px(secret_key("session", &key), value, ttl)
    }

    fn session(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<WebSession>>> {
        let got = self.get_json::<SessionValue>("GET", secret_key("session", &key));
        Box::pin(async move {
            Ok(got.await?.map(|s| WebSession {
                user: s.user,
                roles: s.roles,
                only_target: s.only_target,
                mfa: s.mfa,
            }))
        })
    }

    fn delete_session(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<()>> {
        let k = secret_key("session", &key);
        self.run(move |mut c| async move { redis::cmd("DEL").arg(k).query_async::<()>(&mut c).await })
    }

    fn factors<'a>(&'a self, user: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let k = factors_key(user);
        self.run(move |mut c| async move { redis::cmd("GET").arg(k).query_async::<Option<String>>(&mut c).await })
    }

    fn swap_factors<'a>(
        &'a self,
        user: &'a str,
        expected: Option<String>,
        new: Option<String>,
    ) -> BoxFuture<'a, StoreResult<bool>> {
        let mut script = SWAP_SCRIPT.prepare_invoke();
        script
            .key(factors_key(user))
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(if new.is_some() { "1" } else { "0" })
            .arg(new.unwrap_or_default());
        self.run(move |mut c| async move { script.invoke_async::<u8>(&mut c).await.map(|done| done == 1) })
    }

    fn put_record(
        &self,
        kind: RecordKind,
        key: SecretKey,
        value: String,
        ttl: Duration,
    ) -> BoxFuture<'_, StoreResult<()>> {
        self.set_px(secret_key(kind.as_str(), &key), value, ttl)
    }

    fn record(&self, kind: RecordKind, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let k = secret_key(kind.as_str(), &key);
        self.run(move |mut c| async move { redis::cmd("GET").arg(k).query_async::<Option<String>>(&mut c).await })
    }

    fn take_record(&self, kind: RecordKind, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let k = secret_key(kind.as_str(), &key);
        self.run(move |mut c| async move { redis::cmd("GETDEL").arg(k).query_async::<Option<String>>(&mut c).await })
    }

    fn put_ticket(&self, key: SecretKey, ticket: Ticket, ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        let value = json(&TicketValue {
            v: SCHEMA,
            user: ticket.user,
            target: ticket.target,
            roles: ticket.roles,
        });
        self.set_px(secret_key("ticket", &key), value, ttl)
    }

    fn take_ticket(&self, key: SecretKey) -> BoxFuture<'_, StoreResult<Option<Ticket>>> {
        // GETDEL: read and delete in one command, so two nodes cannot both redeem it.
        let got = self.get_json::<TicketValue>("GETDEL", secret_key("ticket", &key));
        Box::pin(async move {
            Ok(got.await?.map(|t| Ticket {
                user: t.user,
                target: t.target,
                roles: t.roles,
            }))
        })
    }

    fn reserve_attempt<'a>(&'a self, keys: &'a [(ThrottleKey, ThrottleRule)]) -> BoxFuture<'a, StoreResult<Attempt>> {
        let mut script = RESERVE_SCRIPT.prepare_invoke();
        for (key, rule) in keys {
            script.key(throttle_key(key)).arg(rule.limit).arg(millis(rule.window));
        }
        let answer = self.run(move |mut c| async move { script.invoke_async::<Vec<u64>>(&mut c).await });
        Box::pin(async move {
            let answer = answer.await?;
            match answer.split_first() {
                Some((1, before)) => Ok(Attempt::Reserved {
                    before: before.iter().map(|n| (*n).min(u64::from(u32::MAX)) as u32).collect(),
                }),
                Some((0, [wait])) => Ok(Attempt::Refused {
                    retry_after: Duration::from_millis(*wait),
                }),
                _ => Err(StoreError::Unavailable(format!(
                    "unexpected answer from Redis: {answer:?}"
                ))),
            }
        })
    }

    fn refund_attempt<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<()>> {
        let mut script = REFUND_SCRIPT.prepare_invoke();
        for key in keys {
            script.key(throttle_key(key));
        }
        self.run(move |mut c| async move { script.invoke_async::<()>(&mut c).await })
    }

    fn use_once(&self, key: SecretKey, ttl: Duration) -> BoxFuture<'_, StoreResult<bool>> {
        let k = secret_key("spent", &key);
        // SET NX: only the first of any number of nodes sets it.
        self.run(move |mut c| async move {
            redis::cmd("SET")
                .arg(k)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<Option<String>>(&mut c)
                .await
                .map(|set| set.is_some())
        })
    }

    fn clear_attempts<'a>(&'a self, keys: &'a [ThrottleKey]) -> BoxFuture<'a, StoreResult<()>> {
        let names: Vec<String> = keys.iter().map(throttle_key).collect();
        if names.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        self.run(move |mut c| async move { redis::cmd("DEL").arg(names).query_async::<()>(&mut c).await })
    }

    // Shared links: one hash (`links`, id -> JSON with its `expires`), pruned as it is read.
    // Redis 7.0 has no expiry per field: each value carries its own, checked by the caller too.
    fn put_link<'a>(&'a self, id: &'a str, value: String, expires_at: u64) -> BoxFuture<'a, StoreResult<()>> {
        let (key, id) = (format!("{PREFIX}links"), id.to_owned());
        let put = self.run(move |mut c| async move {
            let count: usize = redis::cmd("HLEN").arg(&key).query_async(&mut c).await?;
            if count >= super::MAX_LINKS {
                // Full: expired links go first (each value carries its `expires`).
                let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query_async(&mut c).await?;
                let now = portcullis_core::keys::unix_now();
                let expired: Vec<&String> = all
                    .iter()
                    .filter(|(_, v)| {
                        serde_json::from_str::<serde_json::Value>(v)
                            .ok()
                            .and_then(|v| v["expires"].as_u64())
                            .is_none_or(|e| e <= now)
                    })
                    .map(|(id, _)| id)
                    .collect();
                if expired.is_empty() {
                    return Ok(false);
                }
                redis::cmd("HDEL")
                    .arg(&key)
                    .arg(expired)
                    .query_async::<()>(&mut c)
                    .await?;
            }
            redis::cmd("HSET")
                .arg(&key)
                .arg(id)
                .arg(value)
                .query_async::<()>(&mut c)
                .await?;
            // The hash lives as long as its longest link.
            redis::cmd("EXPIREAT")
                .arg(&key)
                .arg(expires_at)
                .arg("GT")
                .query_async::<()>(&mut c)
                .await?;
            redis::cmd("EXPIREAT")
                .arg(&key)
                .arg(expires_at)
                .arg("NX")
                .query_async::<()>(&mut c)
                .await?;
            Ok(true)
        });
        Box::pin(async move {
            match put.await? {
                true => Ok(()),
                false => Err(StoreError::Full("shared links")),
            }
        })
    }

    fn link<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<String>>> {
        let (key, id) = (format!("{PREFIX}links"), id.to_owned());
        self.run(move |mut c| async move {
            redis::cmd("HGET")
                .arg(key)
                .arg(id)
                .query_async::<Option<String>>(&mut c)
                .await
        })
    }

    fn links(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let key = format!("{PREFIX}links");
        self.run(move |mut c| async move { redis::cmd("HVALS").arg(key).query_async::<Vec<String>>(&mut c).await })
    }

    fn remove_link<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<bool>> {
        let (key, id) = (format!("{PREFIX}links"), id.to_owned());
        self.run(move |mut c| async move {
            redis::cmd("HDEL")
                .arg(key)
                .arg(id)
                .query_async::<u32>(&mut c)
                .await
                .map(|n| n > 0)
        })
    }

    fn shared_random<'a>(&'a self, name: &'a str, ttl: Duration) -> BoxFuture<'a, StoreResult<[u8; 32]>> {
        use base64::Engine as _;
        let key = format!("{PREFIX}random:{name}");
        let fresh = match portcullis_core::secret::random::<32>() {
            Ok(v) => base64::engine::general_purpose::STANDARD.encode(v),
            Err(e) => return Box::pin(async move { Err(StoreError::Unavailable(e.to_string())) }),
        };
        let value = self.run(move |mut c| async move {
            // SET NX: the first node's value stands; everyone reads it back.
            redis::cmd("SET")
                .arg(&key)
                .arg(fresh)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl))
                .query_async::<Option<String>>(&mut c)
                .await?;
            redis::cmd("GET").arg(&key).query_async::<Option<String>>(&mut c).await
        });
        Box::pin(async move {
            let text = value
                .await?
                .ok_or_else(|| StoreError::Unavailable("shared value vanished".into()))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| StoreError::Unavailable(format!("shared value: {e}")))?;
            bytes
                .try_into()
                .map_err(|_| StoreError::Unavailable("shared value of the wrong length".into()))
        })
    }
}
