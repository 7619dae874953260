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
    #[error("not an Ed25519 private key in PKCS#8 PEM")]
    NotAKey,
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

/// The public key (SPKI PEM) of a private key in PKCS#8 PEM (v1, as `generate` writes and
/// OpenSSL reads).
pub fn public_of(private_pem: &[u8]) -> Result<String, KeyError> {
    use base64::Engine;
    let text = std::str::from_utf8(private_pem).map_err(|_| KeyError::NotAKey)?;
    let b64: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && !l.is_empty())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| KeyError::NotAKey)?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| KeyError::NotAKey)?;
    let public: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| KeyError::NotAKey)?;
    Ok(pem::ed25519_public(&public))
}

/// The `kid` the gateway gives its own signing key: derived from the public key, so every node
/// of a fleet holding the same key names it alike, and a new key gets a new name.
pub fn kid_of(public_pem: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(public_pem.trim().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("portcullis-{hex}")
}

/// Signs the gateway's own short-lived tokens (`[auth] token_private_key`).
pub struct Minter {
    issuer: TokenIssuer,
    iss: Option<String>,
    aud: Option<String>,
}

impl Minter {
    /// `kid`: the name tokens carry for the key (`None` when it is the only key, unnamed).
    pub fn new(
        private_pem: &[u8],
        kid: Option<&str>,
        iss: Option<String>,
        aud: Option<String>,
    ) -> Result<Minter, KeyError> {
        let issuer = TokenIssuer::from_private_pem(private_pem)?;
        Ok(Minter {
            issuer: match kid {
                Some(k) => issuer.with_kid(k),
                None => issuer,
            },
            iss,
            aud,
        })
    }

    /// A token for `user`: to reach `target` (empty when `scope` says what it is for instead),
    /// valid from `now` for `ttl`, with a fresh `jti`.
    pub fn mint(
        &self,
        user: &str,
        target: &str,
        scope: Option<&str>,
        ttl: Duration,
        now: u64,
    ) -> Result<(String, Claims), KeyError> {
        self.mint_with_roles(user, &[], target, scope, ttl, now, None)
    }

    /// The same, for a user who holds `roles` (from single sign-on: they travel in the token),
    /// fetched with the login credential `login` (its `jti`), if any.
    #[allow(clippy::too_many_arguments)]
    pub fn mint_with_roles(
        &self,
        user: &str,
        roles: &[String],
        target: &str,
        scope: Option<&str>,
        ttl: Duration,
        now: u64,
        login: Option<&str>,
    ) -> Result<(String, Claims), KeyError> {
        let claims = self.claims(user, roles, target, scope, ttl, now, login)?;
        Ok((self.issuer.issue(&claims)?, claims))
    }

    /// A single-use access token (`once`): the gateway spends it in its store when a session
    /// starts with it, so it opens one session at most (the `.rdp` files of the web app).
    pub fn mint_single_use(
        &self,
        user: &str,
        roles: &[String],
        target: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<(String, Claims), KeyError> {
        let mut claims = self.claims(user, roles, target, None, ttl, now, None)?;
        claims.once = true;
        Ok((self.issuer.issue(&claims)?, claims))
    }

    #[allow(clippy::too_many_arguments)]
    fn claims(
        &self,
        user: &str,
        roles: &[String],
        target: &str,
        scope: Option<&str>,
        ttl: Duration,
        now: u64,
        login: Option<&str>,
    ) -> Result<Claims, KeyError> {
        Ok(Claims {
            sub: user.to_owned(),
            tgt: target.to_owned(),
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: Some(now),
            jti: crate::secret::random_hex::<16>()?,
            iss: self.iss.clone(),
            aud: self.aud.clone().map(portcullis_protocols::token::Audience::One),
            scope: scope.map(str::to_owned),
            once: false,
            roles: roles.to_vec(),
            lgn: login.map(str::to_owned),
        })
    }
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
        roles: Vec::new(),
        lgn: None,
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
        assert_eq!(public_of(private.as_bytes()).unwrap(), public);
        assert!(kid_of(&public).starts_with("portcullis-"));
        assert_ne!(kid_of(&public), kid_of(&other_public));
    }

    #[test]
    fn keys_are_chosen_by_kid_and_a_rotated_out_key_is_refused() {
        use portcullis_protocols::token::{Claims, Expectations, TokenError, TokenIssuer};
        let (old_private, old_public) = generate().unwrap();
        let (new_private, new_public) = generate().unwrap();
        let now = unix_now();
        let claims = |iss: Option<&str>| Claims {
            sub: "alice".into(),
            tgt: "vm1".into(),
            exp: now + 60,
            nbf: now,
            iat: Some(now),
            jti: "j".into(),
            iss: iss.map(str::to_owned),
            aud: None,
            scope: None,
            once: false,
            roles: Vec::new(),
            lgn: None,
        };
        let sign = |private: &str, kid: Option<&str>, iss: Option<&str>| {
            let issuer = TokenIssuer::from_private_pem(private.as_bytes()).unwrap();
            match kid {
                Some(k) => issuer.with_kid(k),
                None => issuer,
            }
            .issue(&claims(iss))
            .unwrap()
        };
        let expect = |iss: &str| Expectations {
            issuer: Some(iss.into()),
            ..Expectations::default()
        };
        let both = TokenVerifier::new(0)
            .with_key(Some("old"), old_public.as_bytes(), expect("control-plane"))
            .unwrap()
            .with_key(Some("new"), new_public.as_bytes(), expect("gateway"))
            .unwrap();
        let old = sign(&old_private, Some("old"), Some("control-plane"));
        let new = sign(&new_private, Some("new"), Some("gateway"));
        assert!(both.verify(&old, now).is_ok());
        assert!(both.verify(&new, now).is_ok());
        // Each key's own issuer: a token of the old key cannot pass as the new key's issuer.
        let old_as_gateway = sign(&old_private, Some("old"), Some("gateway"));
        assert_eq!(both.verify(&old_as_gateway, now), Err(TokenError::WrongIssuer));
        // A kid names the key that checks the signature: naming another key does not help.
        let forged = sign(&old_private, Some("new"), Some("gateway"));
        assert_eq!(both.verify(&forged, now), Err(TokenError::BadSignature));
        // Unknown kid, and no kid while two keys are configured.
        assert_eq!(
            both.verify(&sign(&old_private, Some("other"), Some("control-plane")), now),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            both.verify(&sign(&old_private, None, Some("control-plane")), now),
            Err(TokenError::UnknownKey)
        );
        // The old key rotated out: its tokens are refused.
        let rotated = TokenVerifier::new(0)
            .with_key(Some("new"), new_public.as_bytes(), expect("gateway"))
            .unwrap();
        assert_eq!(rotated.verify(&old, now), Err(TokenError::UnknownKey));
        assert!(rotated.verify(&new, now).is_ok());
        // With exactly one key, a token without kid is accepted (the one-key shorthand).
        let one = TokenVerifier::from_public_pem(old_public.as_bytes(), 0).unwrap();
        assert!(one.verify(&sign(&old_private, None, None), now).is_ok());
        // An external key without kid beside the gateway's own (named) key: kid-less tokens are
        // the external issuer's; only the gateway's key may sign login credentials.
        let (own_private, own_public) = generate().unwrap();
        let mixed = TokenVerifier::new(0)
            .with_key(None, old_public.as_bytes(), Expectations::default())
            .unwrap()
            .with_key(Some("own"), own_public.as_bytes(), Expectations::default())
            .unwrap()
            .granting_roles(Some("own"));
        assert!(mixed.verify(&sign(&old_private, None, None), now).is_ok());
        let login = Minter::new(own_private.as_bytes(), Some("own"), None, None)
            .unwrap()
            .mint("alice", "", Some("login"), Duration::from_secs(60), now)
            .unwrap()
            .0;
        assert!(mixed.verify(&login, now).is_ok());
        let forged = Minter::new(old_private.as_bytes(), None, None, None)
            .unwrap()
            .mint("alice", "", Some("login"), Duration::from_secs(60), now)
            .unwrap()
            .0;
        assert_eq!(mixed.verify(&forged, now), Err(TokenError::RolesNotAllowed));
        // Two keys under one name are a configuration error.
        assert!(TokenVerifier::new(0)
            .with_key(Some("k"), old_public.as_bytes(), Expectations::default())
            .unwrap()
            .with_key(Some("k"), new_public.as_bytes(), Expectations::default())
            .is_err());
    }
}
