//! This node's share of each user's fleet-wide session places (`[session]
//! max_sessions_per_user` counted across the fleet), leased from the store in blocks so that
//! most sessions start without a round trip to it.
//!
//! The store counts a user's places as entries of one sorted set, each scored by when it
//! expires (the heartbeat renews the entries its node holds; a dead node's expire). A node asks
//! for `LEASE_BLOCK` entries at a time while the user is far from the cap, and keeps the ones
//! its ended sessions give back as spares for the next sessions. Near the cap (fewer than two
//! blocks free) the store grants one entry at a time and the node gives each back as soon as its
//! session ends, so no place the cap allows sits unused on another node. Spares not drawn on for
//! one heartbeat are given back.
//!
//! The cap is never exceeded: every session holds an entry of the store's set. What leasing
//! costs is that a user far from the cap may briefly count up to `LEASE_BLOCK - 1` spare places
//! per node against it.
//!
//! No I/O here: the store calls these under its lock and sends what they return.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Entries asked for at a time while the user is far from the cap.
pub const LEASE_BLOCK: usize = 16;

/// Per user: the store's entries this node holds and how many are in use.
#[derive(Default)]
struct UserLease {
    members: Vec<String>,
    in_use: usize,
    /// The store granted fewer than a block: the user is near the cap.
    tight: bool,
    last_drawn: Option<Instant>,
}

pub struct Leases {
    users: HashMap<String, UserLease>,
    /// Entry names: `<node>:<random tag of this process>:<n>` (a restarted node never reuses
    /// the names of entries its previous run left to expire).
    prefix: String,
    next: u64,
}

impl Leases {
    pub fn new(node: &str) -> Leases {
        let tag = portcullis_core::secret::random_hex::<6>().unwrap_or_else(|_| "0".into());
        Leases {
            users: HashMap::new(),
            prefix: format!("{node}:{tag}:"),
            next: 0,
        }
    }

    /// Takes a spare place of `user`'s lease; false when the store must be asked.
    pub fn take_spare(&mut self, user: &str, now: Instant) -> bool {
        let Some(lease) = self.users.get_mut(user) else {
            return false;
        };
        if lease.in_use >= lease.members.len() {
            return false;
        }
        lease.in_use += 1;
        lease.last_drawn = Some(now);
        true
    }

    /// Names for the entries of one lease request.
    pub fn names(&mut self) -> Vec<String> {
        (0..LEASE_BLOCK)
            .map(|_| {
                self.next += 1;
                format!("{}{}", self.prefix, self.next)
            })
            .collect()
    }

    /// The store granted `granted` (a prefix of the names asked for): one of them is in use by
    /// the session that asked, the rest are spares.
    pub fn granted(&mut self, user: &str, granted: Vec<String>, now: Instant) {
        if granted.is_empty() {
            return;
        }
        let lease = self.users.entry(user.to_owned()).or_default();
        lease.tight = granted.len() < LEASE_BLOCK;
        lease.members.extend(granted);
        lease.in_use += 1;
        lease.last_drawn = Some(now);
    }

    /// A session of `user` ended: its place becomes a spare, or, near the cap, the entry to
    /// remove from the store at once.
    pub fn give_back(&mut self, user: &str) -> Option<String> {
        let lease = self.users.get_mut(user)?;
        lease.in_use = lease.in_use.saturating_sub(1);
        let member = if lease.tight { lease.members.pop() } else { None };
        if lease.members.is_empty() {
            self.users.remove(user);
        }
        member
    }

    /// Spares of users whose lease was not drawn on for `idle`: the entries to remove.
    pub fn sweep(&mut self, now: Instant, idle: Duration) -> Vec<(String, String)> {
        let mut freed = Vec::new();
        self.users.retain(|user, lease| {
            let quiet = lease.last_drawn.is_none_or(|t| now.duration_since(t) >= idle);
            if quiet {
                while lease.members.len() > lease.in_use {
                    if let Some(m) = lease.members.pop() {
                        freed.push((user.clone(), m));
                    }
                }
            }
            !lease.members.is_empty()
        });
        freed
    }

    /// Every entry this node holds, per user (the heartbeat renews them).
    pub fn held(&self) -> Vec<(String, Vec<String>)> {
        self.users
            .iter()
            .map(|(user, lease)| (user.clone(), lease.members.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, leases: &mut Leases) -> Vec<String> {
        leases.names().into_iter().take(n).collect()
    }

    #[test]
    fn a_block_serves_the_next_sessions_without_the_store() {
        let now = Instant::now();
        let mut leases = Leases::new("gw-a");
        assert!(!leases.take_spare("alice", now));
        let block = names(LEASE_BLOCK, &mut leases);
        leases.granted("alice", block, now);
        for _ in 1..LEASE_BLOCK {
            assert!(leases.take_spare("alice", now));
        }
        // The block is in use: the next session asks the store again.
        assert!(!leases.take_spare("alice", now));
        assert!(!leases.take_spare("bob", now));
        // Far from the cap, ended sessions keep their places as spares.
        assert_eq!(leases.give_back("alice"), None);
        assert!(leases.take_spare("alice", now));
    }

    #[test]
    fn near_the_cap_places_go_back_at_once() {
        let now = Instant::now();
        let mut leases = Leases::new("gw-a");
        let one = names(1, &mut leases);
        leases.granted("alice", one.clone(), now);
        assert_eq!(leases.give_back("alice"), Some(one[0].clone()));
        assert!(leases.held().is_empty());
        assert!(!leases.take_spare("alice", now));
    }

    #[test]
    fn quiet_spares_are_swept_and_places_in_use_kept() {
        let now = Instant::now();
        let mut leases = Leases::new("gw-a");
        let block = names(LEASE_BLOCK, &mut leases);
        leases.granted("alice", block, now);
        assert!(leases.take_spare("alice", now));
        assert!(leases.sweep(now, Duration::from_secs(1)).is_empty());
        let later = now + Duration::from_secs(2);
        let freed = leases.sweep(later, Duration::from_secs(1));
        assert_eq!(freed.len(), LEASE_BLOCK - 2);
        assert_eq!(leases.held()[0].1.len(), 2);
        // The two in use end; their places are spares, swept next time.
        assert_eq!(leases.give_back("alice"), None);
        assert_eq!(leases.give_back("alice"), None);
        assert_eq!(leases.sweep(later, Duration::from_secs(1)).len(), 2);
        assert!(leases.held().is_empty());
    }

    #[test]
    fn names_are_unique_and_name_the_node() {
        let mut leases = Leases::new("gw-a");
        let mut all = leases.names();
        all.extend(leases.names());
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 2 * LEASE_BLOCK);
        assert!(all.iter().all(|n| n.starts_with("gw-a:")));
        assert_ne!(Leases::new("gw-a").names()[0], all[0]);
    }
}
