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
    let v2 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
    let pair = Ed25519KeyPair::from_pkcs8(v2.as_ref()).map_err(|_| KeyError::Generate)?;
    let public: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| KeyError::Generate)?;
    // ring writes PKCS#8 v2 (RFC 5958, the public key included), which OpenSSL 3 and most other
    // tools refuse for Ed25519; v1 (RFC 8410: the seed alone) is what they all read.
    let seed = v2.as_ref().get(V2_SEED).ok_or(KeyError::Generate)?;
    let mut v1 = PKCS8_V1_ED25519_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    Ok((pem::encode("PRIVATE KEY", &v1), pem::ed25519_public(&public)))
}

/// Where ring's PKCS#8 v2 document holds the 32-byte seed (after its fixed 16-byte header).
const V2_SEED: std::ops::Range<usize> = 16..48;
/// DER of an RFC 8410 Ed25519 OneAsymmetricKey v1 up to the seed: SEQUENCE, version 0,
/// AlgorithmIdentifier id-Ed25519, OCTET STRING wrapping the 32-byte CurvePrivateKey.
const PKCS8_V1_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `user` to reach `target`, valid from now for `ttl`, with a random `jti`.
pub fn issue(private_pem: &[u8], user: &str, target: &str, ttl: Duration) -> Result<String, KeyError> {
    issue_scoped(private_pem, user, target, None, ttl)
}

/// A single-use token (`once`): the gateway, or the fleet, accepts it one time.
pub fn issue_once(private_pem: &[u8], user: &str, target: &str, ttl: Duration) -> Result<String, KeyError> {
    issue_with(private_pem, user, target, None, true, ttl)
}

/// A token with a `scope` (e.g. `admin`, for the admin API; such tokens name no target).
pub fn issue_scoped(
    private_pem: &[u8],
    user: &str,
    target: &str,
    scope: Option<&str>,
    ttl: Duration,
) -> Result<String, KeyError> {
    issue_with(private_pem, user, target, scope, false, ttl)
}

fn issue_with(
    private_pem: &[u8],
    user: &str,
    target: &str,
    scope: Option<&str>,
    once: bool,
    ttl: Duration,
) -> Result<String, KeyError> {
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
        scope: scope.map(str::to_owned),
        once,
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
        // PKCS#8 v1 (48 bytes of DER), and its seed is the key whose public half is written.
        let b64: String = private.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!((der.len(), der[4]), (48, 0), "PKCS#8 v1");
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
        assert_eq!(
            pem::ed25519_public(pair.public_key().as_ref().try_into().unwrap()),
            public
        );
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
