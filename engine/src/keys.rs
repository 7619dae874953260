//! Token keys and token issuing, for `portcullis keygen` / `portcullis token issue` and the demo.

use anyhow::{anyhow, bail, Context};
use portcullis_protocols::token::{pem, Claims, TokenIssuer};
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A fresh Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
pub fn generate() -> anyhow::Result<(String, String)> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow!("key generation failed"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow!("key generation failed"))?;
    let public: [u8; 32] = pair
        .public_key()
        .as_ref()
        .try_into()
        .map_err(|_| anyhow!("unexpected public key size"))?;
    Ok((pem::encode("PRIVATE KEY", pkcs8.as_ref()), pem::ed25519_public(&public)))
}

/// Writes `PREFIX.key` (0600) and `PREFIX.pub`. Refuses to overwrite either.
pub fn keygen(prefix: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (private, public) = generate()?;
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} already exists; not overwriting a key", p.display());
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("cannot create {}", key_path.display()))?;
    f.write_all(private.as_bytes())?;
    std::fs::write(&pub_path, public).with_context(|| format!("cannot write {}", pub_path.display()))?;
    eprintln!(
        "wrote {} (private, keep secret) and {} (public, for the gateway's auth.token_public_key)",
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `user` to reach `target`, valid from now for `ttl`.
pub fn issue(private_pem: &[u8], user: &str, target: &str, ttl: Duration) -> anyhow::Result<String> {
    if ttl.is_zero() || ttl > Duration::from_secs(7 * 24 * 3600) {
        bail!("--ttl must be between 1s and 7d");
    }
    let issuer = TokenIssuer::from_private_pem(private_pem).map_err(|e| anyhow!("{e}"))?;
    let now = unix_now();
    let mut jti = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jti).map_err(|_| anyhow!("no randomness"))?;
    let claims = Claims {
        sub: user.to_owned(),
        tgt: target.to_owned(),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: Some(now),
        jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
    };
    issuer.issue(&claims).map_err(|e| anyhow!("{e}"))
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
    }

    #[test]
    fn keygen_writes_private_key_0600_and_refuses_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("token");
        keygen(&prefix).unwrap();
        let mode = std::fs::metadata(prefix.with_extension("key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(keygen(&prefix).is_err());
    }
}
