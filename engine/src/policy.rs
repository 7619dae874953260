//! Who may reach what. Deny by default: a session needs a valid token, for a target that exists
//! in the config, naming that same target, for a user whose policy lists it.

use crate::config::{Config, Target};
use portcullis_protocols::token::{Claims, TokenError, TokenVerifier, MAX_TOKEN_LEN};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// Most verified tokens a policy snapshot remembers; when full it starts over.
const TOKEN_CACHE_MAX: usize = 4096;

/// Why a tunnel request was refused. `status()` is the HTTP answer; the text is safe to log and
/// to send (it never contains the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    MissingToken,
    BadToken(TokenError),
    UnknownTarget,
    /// The token names another target.
    TokenTargetMismatch,
    /// The token's user is not in the policy.
    UnknownUser,
    /// The user's policy does not list the target.
    NotAllowed,
}

impl Denial {
    pub fn status(&self) -> u16 {
        match self {
            Denial::MissingToken | Denial::BadToken(_) => 401,
            Denial::UnknownTarget => 404,
            Denial::TokenTargetMismatch | Denial::UnknownUser | Denial::NotAllowed => 403,
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Denial::MissingToken => "missing token".into(),
            Denial::BadToken(e) => e.to_string(),
            Denial::UnknownTarget => "unknown target".into(),
            Denial::TokenTargetMismatch => "token is for another target".into(),
            Denial::UnknownUser => "user is not allowed".into(),
            Denial::NotAllowed => "target is not allowed for this user".into(),
        }
    }
}

pub struct Policy {
    pub config: Config,
    pub verifier: TokenVerifier,
    /// Claims of tokens this snapshot has verified, by SHA-256 of the token text: a client that
    /// reconnects with the same token (a ProxyCommand per `ssh`, reconnect loops) skips the Ed25519
    /// check (~60 µs, about 15 % of a tunnel's setup). The period is still checked on every use,
    /// and the cache dies with the snapshot, so a reload with another key never honours it. Only
    /// digests of valid tokens are kept, never token text.
    verified: Mutex<HashMap<[u8; 32], Claims>>,
}

impl Policy {
    pub fn new(config: Config, verifier: TokenVerifier) -> Policy {
        Policy {
            config,
            verifier,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` at `now`, from the cache when this snapshot has verified it before.
    fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return self.verifier.verify(token, now);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self.verified.lock().ok().and_then(|m| m.get(&digest).cloned());
        if let Some(claims) = cached {
            self.verifier.check_period(&claims, now)?;
            return Ok(claims);
        }
        let claims = self.verifier.verify(token, now)?;
        if let Ok(mut map) = self.verified.lock() {
            if map.len() >= TOKEN_CACHE_MAX {
                map.clear();
            }
            map.insert(digest, claims.clone());
        }
        Ok(claims)
    }

    /// Decides a request for `target` carrying `token`, at `now` (Unix seconds).
    pub fn authorize(&self, token: Option<&str>, target: &str, now: u64) -> Result<(Claims, &Target), Denial> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Denial::MissingToken)?;
        let claims = self.verify(token, now).map_err(Denial::BadToken)?;
        let target = self.config.targets.get(target).ok_or(Denial::UnknownTarget)?;
        if claims.tgt != target.name {
            return Err(Denial::TokenTargetMismatch);
        }
        let allowed = self.config.users.get(&claims.sub).ok_or(Denial::UnknownUser)?;
        if !allowed.contains(&target.name) {
            return Err(Denial::NotAllowed);
        }
        Ok((claims, target))
    }
}

/// A policy over `targets_and_users` (TOML) with a fresh token key pair; the private key's PEM.
#[cfg(test)]
pub(crate) fn test_policy(targets_and_users: &str) -> (Policy, String) {
    let (private, public) = crate::keys::generate().unwrap();
    let config = Config::parse(
        &format!("listen = \"127.0.0.1:1\"\n[auth]\ntoken_public_key = \"k\"\n{targets_and_users}"),
        std::path::Path::new("."),
    )
    .unwrap();
    let verifier = TokenVerifier::from_public_pem(public.as_bytes(), 0).unwrap();
    (Policy::new(config, verifier), private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> (Policy, String) {
        test_policy(
            "[[target]]\nname = \"vm1\"\naddress = \"10.0.0.4:22\"\nprotocol = \"ssh\"\n[[target]]\nname = \"vm2\"\naddress = \"10.0.0.5:22\"\nprotocol = \"ssh\"\n[[user]]\nname = \"alice\"\ntargets = [\"vm1\"]\n",
        )
    }

    fn cached(policy: &Policy) -> usize {
        policy.verified.lock().unwrap().len()
    }

    #[test]
    fn verified_tokens_are_cached_but_still_checked() {
        let (policy, key) = policy();
        let now = crate::keys::unix_now();
        let token = crate::keys::issue(key.as_bytes(), "alice", "vm1", Duration::from_secs(60)).unwrap();
        let (first, _) = policy.authorize(Some(&token), "vm1", now).unwrap();
        assert_eq!(cached(&policy), 1);
        let (again, _) = policy.authorize(Some(&token), "vm1", now).unwrap();
        assert_eq!((first, cached(&policy)), (again, 1));
        // A hit is still held to the token's period and to the target and user checks.
        assert_eq!(
            policy.authorize(Some(&token), "vm1", now + 3600).unwrap_err(),
            Denial::BadToken(TokenError::Expired)
        );
        assert_eq!(
            policy.authorize(Some(&token), "vm2", now).unwrap_err(),
            Denial::TokenTargetMismatch
        );
        // Refused tokens are not remembered; a changed signature is another token.
        let mut forged = token.clone().into_bytes();
        let at = forged.len() - 10;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(matches!(
            policy.authorize(Some(&forged), "vm1", now),
            Err(Denial::BadToken(TokenError::BadSignature | TokenError::Malformed))
        ));
        assert_eq!(cached(&policy), 1);
        // Another snapshot (a reload with a new key) knows nothing of it.
        let (rotated, _) = self::policy();
        assert_eq!(
            rotated.authorize(Some(&token), "vm1", now).unwrap_err(),
            Denial::BadToken(TokenError::BadSignature)
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let (policy, key) = policy();
        for _ in 0..TOKEN_CACHE_MAX + 1 {
            let token = crate::keys::issue(key.as_bytes(), "alice", "vm1", Duration::from_secs(60)).unwrap();
            policy.authorize(Some(&token), "vm1", crate::keys::unix_now()).unwrap();
            assert!(cached(&policy) <= TOKEN_CACHE_MAX);
        }
    }
}
