//! Revocations: users and tokens whose sessions are refused, until a time or for good.
//!
//! One set per process, shared by every configuration snapshot (a reload does not un-revoke) and
//! read by `Policy::authorize` on every decision, so a revocation takes effect at the next
//! request. Writers are the administrators' tools (the admin API) and, in a fleet, the shared
//! store. Bounded: a full set refuses new entries rather than forget old ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

/// Most revoked users and tokens, each.
pub const MAX_REVOCATIONS: usize = 100_000;

/// What is revoked, and until when (Unix seconds; `None`: for good).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    User { name: String, until: Option<u64> },
    Token { id: String, until: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many revocations ({MAX_REVOCATIONS} of a kind)")]
pub struct RevocationsFull;

#[derive(Default)]
pub struct Revocations {
    /// True while the set may hold entries: decisions skip the lock while nothing was revoked.
    any: AtomicBool,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, Option<u64>>,
    tokens: HashMap<String, Option<u64>>,
}

impl Revocations {
    pub fn revoke(&self, revocation: Revocation, now: u64) -> Result<(), RevocationsFull> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let (map, key, until) = match revocation {
            Revocation::User { name, until } => (&mut inner.users, name, until),
            Revocation::Token { id, until } => (&mut inner.tokens, id, until),
        };
        if map.len() >= MAX_REVOCATIONS && !map.contains_key(&key) {
            map.retain(|_, until| until.is_none_or(|t| t > now));
            if map.len() >= MAX_REVOCATIONS {
                return Err(RevocationsFull);
            }
        }
        map.insert(key, until);
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether sessions of `user`, or opened with the token `token_id`, are refused at `now`.
    pub fn is_revoked(&self, user: &str, token_id: Option<&str>, now: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let active = |until: &Option<u64>| until.is_none_or(|t| now < t);
        inner.users.get(user).is_some_and(active) || token_id.is_some_and(|id| inner.tokens.get(id).is_some_and(active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_until_their_end() {
        let r = Revocations::default();
        assert!(!r.is_revoked("mallory", None, 0));
        r.revoke(
            Revocation::User {
                name: "mallory".into(),
                until: Some(1000),
            },
            0,
        )
        .unwrap();
        r.revoke(
            Revocation::Token {
                id: "jti1".into(),
                until: None,
            },
            0,
        )
        .unwrap();
        assert!(r.is_revoked("mallory", None, 999));
        assert!(!r.is_revoked("mallory", None, 1000));
        assert!(r.is_revoked("alice", Some("jti1"), u64::MAX));
        assert!(!r.is_revoked("alice", Some("jti2"), 0));
    }
}
