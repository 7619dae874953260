//! TLS session tickets sealed with keys the whole fleet shares, so that a client resumes on any
//! node behind the balancer, not only the one that served it first.
//!
//! Keys belong to epochs of `PERIOD` (wall-clock time / `PERIOD`). Each epoch's key is a random
//! value from the store (`Store::shared_random`: the first node to ask creates it, all others get
//! the same; with the local store it is this node's alone). A refresher on the tokio runtime keeps
//! the previous, current and next epochs' keys; tickets are sealed under the current one and open
//! under any of the three, so a ticket lives at most about two periods and nodes whose clocks
//! differ a little still agree. Without a key for the current epoch (the store unreachable since
//! before it began) no ticket is issued: clients then do full handshakes, nothing fails.
//!
//! A ticket: epoch (8 bytes, big-endian) | nonce (12) | AES-256-GCM(session state) | tag (16),
//! the epoch authenticated as associated data.

use crate::store::Store;
use arc_swap::ArcSwap;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use rustls::server::ProducesTickets;
use std::sync::Arc;
use std::time::Duration;

/// How long one key seals new tickets (rustls' own ticketer rotates every 6 hours too).
pub const PERIOD: Duration = Duration::from_secs(6 * 3600);
/// How often the refresher asks the store (a new epoch's key is fetched before it starts).
const REFRESH: Duration = Duration::from_secs(60);
/// How soon the refresher asks again after the store failed to answer.
const RETRY: Duration = Duration::from_secs(2);
const HEADER: usize = 8 + 12;

/// Keys by epoch: the previous, current and next.
#[derive(Default)]
struct KeySet {
    keys: Vec<(u64, LessSafeKey)>,
}

impl KeySet {
    fn key(&self, epoch: u64) -> Option<&LessSafeKey> {
        self.keys.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k)
    }
}

pub struct FleetTickets {
    keys: ArcSwap<KeySet>,
    period: Duration,
}

impl std::fmt::Debug for FleetTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTickets")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl FleetTickets {
    pub fn new() -> Arc<FleetTickets> {
        Self::with_period(PERIOD)
    }

    pub fn with_period(period: Duration) -> Arc<FleetTickets> {
        Arc::new(FleetTickets {
            keys: ArcSwap::from_pointee(KeySet::default()),
            period: period.max(Duration::from_secs(1)),
        })
    }

    fn epoch_at(&self, unix: u64) -> u64 {
        unix / self.period.as_secs()
    }

    /// Fetches the keys of the epochs around now from the store; keeps the old ones on failure.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), String> {
        let now = self.epoch_at(portcullis_core::keys::unix_now());
        // Long enough for the last epoch that opens a key's tickets, no longer.
        let ttl = self.period * 3;
        let mut keys = Vec::new();
        for epoch in [now.saturating_sub(1), now, now + 1] {
            let secret = store
                .shared_random(&format!("tls-ticket-key:{epoch}"), ttl)
                .await
                .map_err(|e| e.to_string())?;
            let key = UnboundKey::new(&AES_256_GCM, &secret).map_err(|_| "bad key".to_owned())?;
            keys.push((epoch, LessSafeKey::new(key)));
        }
        self.keys.store(Arc::new(KeySet { keys }));
        Ok(())
    }

    /// Keeps the keys fresh for the life of the process, on `runtime`.
    pub fn start_refresher(self: &Arc<Self>, store: Arc<dyn Store>, runtime: &tokio::runtime::Handle) {
        let this = self.clone();
        runtime.spawn(async move {
            loop {
                let wait = match this.refresh(store.as_ref()).await {
                    Ok(()) => REFRESH,
                    Err(e) => {
                        tracing::warn!("TLS ticket keys not refreshed (clients resume less): {e}");
                        RETRY
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
    }

    fn seal_at(&self, unix: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let epoch = self.epoch_at(unix);
        let keys = self.keys.load();
        let key = keys.key(epoch)?;
        let nonce: [u8; 12] = portcullis_core::secret::random().ok()?;
        let mut out = Vec::with_capacity(HEADER + plain.len() + 16);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let (head, body) = out.split_at_mut(HEADER);
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&head[..8]), body)
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn open_at(&self, unix: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < HEADER + 16 {
            return None;
        }
        let epoch = u64::from_be_bytes(ticket[..8].try_into().ok()?);
        let now = self.epoch_at(unix);
        if epoch.saturating_add(1) < now || epoch > now.saturating_add(1) {
            return None;
        }
        let keys = self.keys.load();
        let key = keys.key(epoch)?;
        let nonce = Nonce::try_assume_unique_for_key(&ticket[8..HEADER]).ok()?;
        let mut body = ticket[HEADER..].to_vec();
        let plain = key.open_in_place(nonce, Aad::from(&ticket[..8]), &mut body).ok()?;
        let len = plain.len();
        body.truncate(len);
        Some(body)
    }
}

impl ProducesTickets for FleetTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.period.as_secs().min(u64::from(u32::MAX)) as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal_at(portcullis_core::keys::unix_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open_at(portcullis_core::keys::unix_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        futures_lite::future::block_on(f)
    }

    #[test]
    fn tickets_open_for_two_periods_on_every_node_of_one_store_and_nowhere_else() {
        let store = MemoryStore::default();
        let (a, b) = (FleetTickets::with_period(PERIOD), FleetTickets::with_period(PERIOD));
        assert!(a.encrypt(b"state").is_none(), "no key yet: no ticket");
        block_on(a.refresh(&store)).unwrap();
        block_on(b.refresh(&store)).unwrap();
        let now = portcullis_core::keys::unix_now();
        let ticket = a.seal_at(now, b"session state").unwrap();
        assert_eq!(
            b.open_at(now, &ticket).as_deref(),
            Some(&b"session state"[..]),
            "another node opens it"
        );
        let p = PERIOD.as_secs();
        assert!(b.open_at(now + p, &ticket).is_some(), "the next period still opens it");
        assert!(b.open_at(now + 2 * p + p, &ticket).is_none(), "later it has expired");
        let mut bad = ticket.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(b.open_at(now, &bad).is_none(), "tampered");
        let mut other_epoch = ticket.clone();
        other_epoch[7] ^= 1;
        assert!(b.open_at(now, &other_epoch).is_none(), "the epoch is authenticated");
        // A node of another store (another fleet) has other keys.
        let elsewhere = FleetTickets::with_period(PERIOD);
        block_on(elsewhere.refresh(&MemoryStore::default())).unwrap();
        assert!(elsewhere.open_at(now, &ticket).is_none());
        assert!(a.open_at(now, &[0u8; 10]).is_none());
    }
}
