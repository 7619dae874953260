//! The keys a gateway verifies tokens with, and the one it signs its own with: read from the
//! files the configuration names (or given in memory by the demo), at start and on each reload.

use super::{Error, Result};
use portcullis_core::config::{Config, TokenKey};
use portcullis_core::keys::{kid_of, public_of, Minter};
use portcullis_protocols::token::TokenVerifier;
use std::sync::Arc;

/// A configured key: (kid, PEM, issuer, audience).
type Known = (Option<String>, String, Option<String>, Option<String>);

/// Where the token keys come from: the files named in the config, or (demo) memory.
pub enum KeySource {
    File,
    /// One public key (no `kid`), and the private half when the gateway signs tokens too.
    Pem {
        public: Vec<u8>,
        private: Option<Vec<u8>>,
    },
}

/// The verifier of every configured key, and the gateway's signer when it has a private key.
/// The signing key's public half is added to the verifier under its own `kid`, unless it is
/// already one of the configured keys (then tokens name that key, or none for the one-key
/// shorthand).
pub fn load(config: &Config, source: &KeySource) -> Result<(TokenVerifier, Option<Arc<Minter>>)> {
    let auth = &config.auth;
    let mut verifier = TokenVerifier::new(auth.leeway.as_secs());
    let mut public_keys: Vec<Known> = Vec::new();
    let private = match source {
        KeySource::File => {
            for key in &auth.keys {
                let pem = read(key, "cannot read token public key")?;
                verifier = verifier
                    .with_key(key.kid.as_deref(), pem.as_bytes(), auth.expectations(key))
                    .map_err(Error::TokenKey)?;
                public_keys.push((key.kid.clone(), pem, key.issuer.clone(), key.audience.clone()));
            }
            match &auth.token_private_key {
                Some(path) => {
                    Some(std::fs::read(path).map_err(|e| Error::file("cannot read token private key", path, e))?)
                }
                None => None,
            }
        }
        KeySource::Pem { public, private } => {
            verifier = TokenVerifier::from_public_pem(public, auth.leeway.as_secs())
                .map_err(Error::TokenKey)?
                .expecting(auth.expectations(&TokenKey {
                    kid: None,
                    public_key: Default::default(),
                    issuer: auth.issuer.clone(),
                    audience: auth.audience.clone(),
                }));
            public_keys.push((
                None,
                String::from_utf8_lossy(public).into_owned(),
                auth.issuer.clone(),
                auth.audience.clone(),
            ));
            private.clone()
        }
    };
    let Some(private) = private else {
        return Ok((verifier, None));
    };
    let public = public_of(&private).map_err(|e| Error::Startup(format!("auth.token_private_key: {e}")))?;
    // The same key whatever its line breaks or wrapping: compared by its base64 body.
    let body = |pem: &str| -> String {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.trim().chars())
            .collect()
    };
    let known = public_keys.iter().find(|(_, pem, _, _)| body(pem) == body(&public));
    // The gateway's tokens meet the expectations of the key they are verified with.
    let (issuer, audience) = match known {
        Some((_, _, iss, aud)) => (iss.clone(), aud.clone()),
        None => (auth.issuer.clone(), auth.audience.clone()),
    };
    let kid = match known {
        Some((kid, _, _, _)) => kid.clone(),
        None => {
            let kid = kid_of(&public);
            let own = TokenKey {
                kid: Some(kid.clone()),
                public_key: Default::default(),
                issuer: auth.issuer.clone(),
                audience: auth.audience.clone(),
            };
            verifier = verifier
                .with_key(Some(&kid), public.as_bytes(), auth.expectations(&own))
                .map_err(Error::TokenKey)?;
            Some(kid)
        }
    };
    // Only the gateway's own key may put roles (of single sign-on users) in a token.
    let verifier = verifier.granting_roles(kid.as_deref());
    let minter = Minter::new(&private, kid.as_deref(), issuer, audience)
        .map_err(|e| Error::Startup(format!("auth.token_private_key: {e}")))?;
    Ok((verifier, Some(Arc::new(minter))))
}

fn read(key: &TokenKey, what: &'static str) -> Result<String> {
    std::fs::read_to_string(&key.public_key).map_err(|e| Error::file(what, &key.public_key, e))
}
