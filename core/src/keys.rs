//! Token signing keys and token issuing (the CLI, the demo, load generators and tests).

use portcullis_protocols::token::{pem, Claims, TokenError, TokenIssuer};
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest lifetime `issue` signs: tokens are meant to be short-lived.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error(transparent)]
    Random(#[from] crate::secret::RandomError),
    #[error("key generation failed")]
    Generate,
    #[error("the lifetime must be between 1s and 7d")]
    Ttl,
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A fresh Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate() -> Result<(String, String), KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
    let public: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| KeyError::Generate)?;
    Ok((pem::encode("PRIVATE KEY", pkcs8.as_ref()), pem::ed25519_public(&public)))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `user` to reach `target`, valid from now for `ttl`, with a random `jti`.
pub fn issue(private_pem: &[u8], user: &str, target: &str, ttl: Duration) -> Result<String, KeyError> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(KeyError::Ttl);
    }
    let issuer = TokenIssuer::from_private_pem(private_pem)?;
    let now = unix_now();
    let claims = Claims {
        sub: user.to_owned(),
        tgt: target.to_owned(),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: Some(now),
        jti: crate::secret::random_hex::<16>()?,
        iss: None,
        aud: None,
    };
    Ok(issuer.issue(&claims)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocols::token::TokenVerifier;

    #[test]
    fn generated_keys_sign_and_verify() {
        let (private, public) = generate().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        let token = issue(private.as_bytes(), "alice", "vm1", Duration::from_secs(60)).unwrap();
        let v = TokenVerifier::from_public_pem(public.as_bytes(), 0).unwrap();
        let claims = v.verify(&token, unix_now()).unwrap();
        assert_eq!((claims.sub.as_str(), claims.tgt.as_str()), ("alice", "vm1"));
        assert_eq!(claims.jti.len(), 32);
        let (_, other_public) = generate().unwrap();
        let other = TokenVerifier::from_public_pem(other_public.as_bytes(), 0).unwrap();
        assert!(other.verify(&token, unix_now()).is_err());
        assert!(matches!(
            issue(private.as_bytes(), "a", "b", Duration::ZERO),
            Err(KeyError::Ttl)
        ));
    }
}
