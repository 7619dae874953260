//! Argon2id password hashes (PHC strings) for web sign-in.
//!
//! Hashing is deliberately slow (tens of milliseconds): callers run it on the engine's bounded
//! hashing pool, never on a core that relays sessions.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    #[error(transparent)]
    Random(#[from] crate::secret::RandomError),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// An Argon2id PHC string for `password`, with a fresh random salt and the crate's default cost.
pub fn hash(password: &str) -> Result<String, PasswdError> {
    let salt = crate::secret::random::<16>()?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswdError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswdError::Hash(e.to_string()))
}

/// Checks `password` against a PHC string (Argon2 compares in constant time). A malformed
/// string never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    argon2::PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Whether `phc` is an Argon2id PHC string (what `portcullis passwd` writes).
pub fn is_argon2id(phc: &str) -> bool {
    argon2::PasswordHash::new(phc).is_ok_and(|p| p.algorithm.as_str() == "argon2id")
}

/// Argon2id of a random password nobody knows, at the same cost as real hashes: unknown users are
/// checked against it so that timing does not reveal who exists.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Zr2d8tAwxOIpsl9ATVcSazFYSi8V/3wuXzrbdgH3mZM";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$") && is_argon2id(&h));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret ", &h));
        assert!(!verify("s3cret", "not a hash"));
        assert!(!is_argon2id("$2b$12$abcdefghijklmnopqrstuv"));
    }

    #[test]
    fn dummy_hash_is_argon2id_and_matches_nothing_simple() {
        assert!(is_argon2id(DUMMY_HASH));
        assert!(!verify("", DUMMY_HASH));
    }
}
