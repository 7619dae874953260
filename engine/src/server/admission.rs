//! Admission: which connections the gateway takes, so that no client, however many addresses it
//! has, can take every descriptor or every handshake slot.
//!
//! - a cap on all connections, below the open-files limit (descriptors stay free to reach targets
//!   and to accept and close what is refused, so an attack never turns into EMFILE);
//! - per client (the real client, after a trusted balancer's PROXY header; IPv6 by /64): a cap on
//!   concurrent connections and a rate of new ones (a token bucket);
//! - a cap on connections that have not finished TLS and their request yet, with a random early
//!   drop from a threshold on (OpenSSH's MaxStartups): a flood of handshakes from many addresses
//!   still leaves room for real users.
//!
//! Counters are process-wide (caps are for the whole gateway), touched once per connection on
//! accept and on end, never on the data path. Every refusal is counted by reason.

use portcullis_core::config::{AdmissionLimits, ConnectionLimits};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The gateway holds all the connections it may.
    Capacity,
    /// Too many unauthenticated connections (early drop).
    Unauthenticated,
    /// The client holds all the connections one client may.
    PerClient,
    /// The client opens connections faster than its rate.
    Rate,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Capacity,
        Refusal::Unauthenticated,
        Refusal::PerClient,
        Refusal::Rate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::PerClient => "per_client",
            Refusal::Rate => "rate",
        }
    }
}

#[derive(Clone, Copy)]
struct Client {
    open: u32,
    /// Token bucket of new connections.
    tokens: f64,
    refilled: Instant,
}

pub struct Admission {
    /// Swapped whole on reload.
    limits: arc_swap::ArcSwap<AdmissionLimits>,
    /// Connections the open-files limit allows (what derived caps are derived from).
    capacity: usize,
    total: AtomicUsize,
    unauthenticated: AtomicUsize,
    clients: Mutex<HashMap<IpAddr, Client>>,
    refused: [AtomicU64; 4],
    /// Early-drop randomness: unpredictable enough to an attacker, not a secret.
    rng: AtomicU64,
}

impl Admission {
    pub fn new(limits: &ConnectionLimits, capacity: usize) -> Arc<Admission> {
        let seed = portcullis_core::secret::random::<8>()
            .map(u64::from_ne_bytes)
            .unwrap_or(0x9e37_79b9);
        Arc::new(Admission {
            limits: arc_swap::ArcSwap::from_pointee(limits.resolve(capacity)),
            capacity,
            total: AtomicUsize::new(0),
            unauthenticated: AtomicUsize::new(0),
            clients: Mutex::new(HashMap::new()),
            refused: Default::default(),
            rng: AtomicU64::new(seed | 1),
        })
    }

    pub fn limits(&self) -> AdmissionLimits {
        **self.limits.load()
    }

    /// The limits of a reloaded configuration (counters carry over).
    pub fn reconfigure(&self, limits: &ConnectionLimits) {
        self.limits.store(Arc::new(limits.resolve(self.capacity)));
    }

    /// A new connection from the balancer or client at the other end: the global caps.
    pub fn enter(self: &Arc<Self>) -> Result<Ticket, Refusal> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let pending = self.unauthenticated.fetch_add(1, Ordering::AcqRel) + 1;
        let ticket = Ticket {
            admission: self.clone(),
            client: None,
            pending: true,
        };
        let limits = self.limits();
        if total > limits.max_connections {
            return Err(self.refuse(ticket, Refusal::Capacity));
        }
        if pending > limits.early_drop_from && self.early_drop(pending, &limits) {
            return Err(self.refuse(ticket, Refusal::Unauthenticated));
        }
        Ok(ticket)
    }

    /// Counts a refusal (and lets the ticket go).
    fn refuse(&self, ticket: Ticket, why: Refusal) -> Refusal {
        drop(ticket);
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
        why
    }

    /// Whether to drop a connection when `pending` are unauthenticated: never below the threshold,
    /// always at the cap, in between with a probability rising linearly from 30 %.
    fn early_drop(&self, pending: usize, limits: &AdmissionLimits) -> bool {
        let (from, full) = (limits.early_drop_from, limits.max_unauthenticated);
        if pending >= full {
            return true;
        }
        let p = 0.3 + 0.7 * (pending - from) as f64 / (full - from).max(1) as f64;
        self.random() < p
    }

    /// xorshift64*, shared: a lost update between cores only repeats a number.
    fn random(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Refusals since start, by reason.
    pub fn refused(&self) -> [(Refusal, u64); 4] {
        Refusal::ALL.map(|r| (r, self.refused[r as usize].load(Ordering::Relaxed)))
    }

    /// Connections held now, and how many of them are unauthenticated.
    pub fn held(&self) -> (usize, usize) {
        (
            self.total.load(Ordering::Relaxed),
            self.unauthenticated.load(Ordering::Relaxed),
        )
    }
}

/// A connection the gateway took; it gives its places back when dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    client: Option<IpAddr>,
    pending: bool,
}

impl Ticket {
    /// The connection is the client `ip`'s (`key`: the client key, IPv6 by /64): its caps, at
    /// `now`. A trusted balancer speaking for itself is exempt.
    pub fn client(&mut self, key: IpAddr, exempt: bool, now: Instant) -> Result<(), Refusal> {
        if exempt {
            return Ok(());
        }
        let a = &self.admission;
        let limits = a.limits();
        let mut clients = a.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= limits.max_connections.saturating_mul(2) && !clients.contains_key(&key) {
            // Forget clients that hold nothing and whose bucket is full again.
            clients
                .retain(|_, c| c.open > 0 || now.duration_since(c.refilled).as_secs_f64() * limits.rate < limits.burst);
        }
        let c = clients.entry(key).or_insert(Client {
            open: 0,
            tokens: limits.burst,
            refilled: now,
        });
        c.tokens = (c.tokens + now.duration_since(c.refilled).as_secs_f64() * limits.rate).min(limits.burst);
        c.refilled = now;
        let why = if c.open as usize >= limits.max_connections_per_client {
            Refusal::PerClient
        } else if c.tokens < 1.0 {
            Refusal::Rate
        } else {
            c.tokens -= 1.0;
            c.open += 1;
            self.client = Some(key);
            return Ok(());
        };
        drop(clients);
        a.refused[why as usize].fetch_add(1, Ordering::Relaxed);
        Err(why)
    }

    /// The connection finished TLS and its request was decided: it no longer counts as
    /// unauthenticated.
    pub fn settled(&mut self) {
        if std::mem::take(&mut self.pending) {
            self.admission.unauthenticated.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.settled();
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.client {
            let mut clients = self.admission.clients.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = clients.get_mut(&key) {
                c.open = c.open.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: Some(10),
            max_connections_per_client: Some(3),
            new_connections_per_second: 2,
            max_unauthenticated: 8,
            early_drop_from: 4,
        }
    }

    #[test]
    fn per_client_cap_and_rate() {
        let a = Admission::new(&limits(), 1000);
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut t = a.enter().unwrap();
            t.client(ip, false, t0).unwrap();
            t.settled();
            held.push(t);
        }
        let mut t = a.enter().unwrap();
        assert_eq!(t.client(ip, false, t0), Err(Refusal::PerClient));
        drop(t);
        // Another client is not held back; the balancer itself is exempt.
        let mut other = a.enter().unwrap();
        other.client("192.0.2.2".parse().unwrap(), false, t0).unwrap();
        let mut balancer = a.enter().unwrap();
        balancer.client("10.0.0.1".parse().unwrap(), true, t0).unwrap();
        // One connection ends: the place is free, but the burst of 4 is spent by the 4th attempt.
        held.pop();
        let mut t = a.enter().unwrap();
        t.client(ip, false, t0).unwrap();
        held.push(t);
        held.pop();
        let mut t = a.enter().unwrap();
        assert_eq!(t.client(ip, false, t0), Err(Refusal::Rate));
        // Half a second later one token is back (2 per second).
        let mut t = a.enter().unwrap();
        t.client(ip, false, t0 + Duration::from_millis(500)).unwrap();
        let refused: HashMap<_, _> = a.refused().into_iter().collect();
        assert_eq!((refused[&Refusal::PerClient], refused[&Refusal::Rate]), (1, 1));
    }

    #[test]
    fn global_cap_and_early_drop() {
        let a = Admission::new(&limits(), 1000);
        // Up to the early-drop threshold every connection is taken.
        let mut held: Vec<Ticket> = (0..4).map(|_| a.enter().unwrap()).collect();
        // Between threshold and cap some are dropped; at the cap all are.
        let mut dropped = 0;
        for _ in 0..200 {
            match a.enter() {
                Ok(t) => drop(t),
                Err(Refusal::Unauthenticated) => dropped += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!((50..200).contains(&dropped), "{dropped} of 200 dropped at 5 pending");
        // Up to one under the cap some get through (bounded attempts: each may be dropped)...
        for _ in 0..10_000 {
            if held.len() == 7 {
                break;
            }
            if let Ok(t) = a.enter() {
                held.push(t);
            }
        }
        assert_eq!(held.len(), 7);
        // ...and the one that would reach it never does.
        for _ in 0..100 {
            assert_eq!(a.enter().err(), Some(Refusal::Unauthenticated), "at the cap");
        }
        // Settled connections leave the unauthenticated count, not the total.
        for t in &mut held {
            t.settled();
        }
        held.extend((0..3).map(|_| a.enter().unwrap()));
        assert_eq!(a.held(), (10, 3));
        assert_eq!(a.enter().err(), Some(Refusal::Capacity));
        drop(held);
        assert_eq!(a.held(), (0, 0));
    }
}
