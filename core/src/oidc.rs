//! OpenID Connect, the parts without I/O: PKCE (RFC 7636, S256), the ID token's validation
//! (OIDC Core 3.1.3.7: signature with a key of the provider's JWKS, algorithm pinned to the
//! asymmetric ones, issuer, audience, authorized party, expiry, issue time, nonce), and how its
//! claims name a user and their roles. The engine fetches the documents and drives the flow.

pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Longest ID token accepted (bounds the work on what a provider, or a forger, sends).
pub const MAX_ID_TOKEN_LEN: usize = 16 * 1024;

/// Why an ID token was refused. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    #[error("ID token is malformed")]
    Malformed,
    #[error("ID token algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("ID token names no key of the provider")]
    UnknownKey,
    #[error("ID token signature is invalid")]
    BadSignature,
    #[error("ID token is from another issuer")]
    WrongIssuer,
    #[error("ID token is for another client")]
    WrongAudience,
    #[error("ID token has expired")]
    Expired,
    #[error("ID token is not valid yet")]
    NotYetValid,
    #[error("ID token nonce does not match the sign-in")]
    Nonce,
    #[error("ID token lacks the claim {0}")]
    MissingClaim(String),
}

/// What the ID token must be.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds.
    pub now: u64,
    /// Clock skew tolerated, seconds.
    pub leeway: u64,
}

/// The algorithms a provider may sign with: asymmetric only (HS* with a public key as the secret,
/// and `none`, are the classic confusions).
const ACCEPTED: [Algorithm; 7] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Validates `token` against the provider's `keys`; returns its claims.
pub fn validate_id_token(
    token: &str,
    keys: &JwkSet,
    expect: &Expected<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    if token.len() > MAX_ID_TOKEN_LEN {
        return Err(IdTokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !ACCEPTED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or(IdTokenError::UnknownKey)?;
    // A key that says which algorithm it is for is used for that one only.
    if let Some(alg) = jwk.common.key_algorithm {
        if format!("{alg:?}") != format!("{:?}", header.alg) {
            return Err(IdTokenError::Algorithm(format!("{:?} with a {alg:?} key", header.alg)));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    // Time is checked below against the caller's clock; the library reads the system clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => IdTokenError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => IdTokenError::Algorithm(format!("{:?}", header.alg)),
            _ => IdTokenError::Malformed,
        })?
        .claims;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    let number = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| IdTokenError::MissingClaim(name.into()))
    };
    if text("iss") != Some(expect.issuer) {
        return Err(IdTokenError::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => return Err(IdTokenError::MissingClaim("aud".into())),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    // Several audiences: the token must have been issued to this client (`azp`).
    if audiences.len() > 1 && text("azp") != Some(expect.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    if number("exp")?.saturating_add(expect.leeway) <= expect.now {
        return Err(IdTokenError::Expired);
    }
    if number("iat")? > expect.now.saturating_add(expect.leeway) {
        return Err(IdTokenError::NotYetValid);
    }
    if claims
        .get("nbf")
        .and_then(Value::as_u64)
        .is_some_and(|nbf| nbf > expect.now.saturating_add(expect.leeway))
    {
        return Err(IdTokenError::NotYetValid);
    }
    let nonce = text("nonce").ok_or(IdTokenError::Nonce)?;
    if !crate::secret::constant_time_eq(nonce.as_bytes(), expect.nonce.as_bytes()) {
        return Err(IdTokenError::Nonce);
    }
    if text("sub").is_none_or(str::is_empty) {
        return Err(IdTokenError::MissingClaim("sub".into()));
    }
    Ok(claims)
}

/// RFC 6749 2.3.1: HTTP Basic credentials of a client (each part form-encoded first).
pub fn basic_auth(client_id_encoded: &str, secret_encoded: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{client_id_encoded}:{secret_encoded}"))
    )
}

/// RFC 7636 S256: the challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Who the claims say the user is, per the provider's settings: the user name (`id:name`
/// unless `namespace` is off) and the groups (`id:group`, always namespaced: a role names the
/// provider whose groups it trusts).
pub fn identity(
    claims: &Map<String, Value>,
    provider: &crate::config::OidcProvider,
) -> Result<(String, Vec<String>), IdTokenError> {
    let name = claims
        .get(&provider.user_claim)
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control))
        .ok_or_else(|| IdTokenError::MissingClaim(provider.user_claim.clone()))?;
    // An email names a user only once the provider has verified it.
    if provider.user_claim == "email" && claims.get("email_verified") != Some(&Value::Bool(true)) {
        return Err(IdTokenError::MissingClaim("email_verified".into()));
    }
    let user = if provider.namespace {
        format!("{}:{name}", provider.id)
    } else {
        name.to_owned()
    };
    // `link:` names the guests of shared links: no signed-in user may take one.
    if user.starts_with(crate::policy::LINK_USER_PREFIX) {
        return Err(IdTokenError::MissingClaim(provider.user_claim.clone()));
    }
    let groups = match claims.get(&provider.groups_claim) {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .take(256)
            .map(|g| format!("{}:{g}", provider.id))
            .collect(),
        Some(Value::String(g)) => vec![format!("{}:{g}", provider.id)],
        _ => Vec::new(),
    };
    Ok((user, groups))
}

#[cfg(test)]
mod tests;
