//! Access tokens: short-lived JWTs signed with Ed25519 (`alg: EdDSA`).
//!
//! The gateway holds only the public key, so a compromised gateway cannot mint tokens; an external
//! control plane (or `portcullis token issue`) holds the private key. The algorithm is pinned to
//! EdDSA, so `none` and HMAC-with-the-public-key confusion are refused before any claim is read.
//! Time is an argument, not a clock read, so validation is deterministic and fuzzable.

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest token accepted; real ones are ~300 bytes. Bounds the work done on hostile input.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The claims Portcullis requires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User name, as in the gateway's `[[user]]` policy.
    pub sub: String,
    /// Target name the token is good for (empty in admin tokens, which reach no target).
    #[serde(default)]
    pub tgt: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Issued at, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Unique token id, recorded in the audit log.
    pub jti: String,
    /// Who issued it; checked when the gateway is configured with an `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Whom it is for; checked when the gateway is configured with an `audience`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Space-separated rights beyond reaching `tgt` (RFC 8693 `scope`): `admin` lets the holder
    /// use the admin API. Tokens without it can do nothing there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Single use: the gateway (the fleet, with a fleet store) accepts it once, then refuses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub once: bool,
    /// Roles of a user signed in through single sign-on (from their groups), for tokens the
    /// gateway signs itself: only its own key may carry them (`TokenError::RolesNotAllowed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// The `jti` of the login credential this token was fetched with (`portcullis login`):
    /// revoking that login (logout) refuses and ends this token's sessions too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lgn: Option<String>,
}

/// The scope that opens the admin API.
pub const ADMIN_SCOPE: &str = "admin";
/// The scope of a `portcullis login` credential: it fetches access tokens from the gateway that
/// signed it, and opens nothing itself.
pub const LOGIN_SCOPE: &str = "login";

impl Claims {
    /// Whether the token's `scope` lists `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_ascii_whitespace().any(|s| s == scope))
    }
}

/// RFC 7519 4.1.3: one audience, or several.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

/// What the gateway expects of a token beyond its signature and period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// The `iss` a token must carry.
    pub issuer: Option<String>,
    /// An audience the token's `aud` must include.
    pub audience: Option<String>,
    /// The longest lifetime accepted: `exp` minus when it was issued (`iat`, else `nbf`, and never
    /// later than now), in seconds.
    pub max_ttl: Option<u64>,
}

/// Why a token was refused. Never carries the token itself, so it is safe to log.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not EdDSA")]
    WrongAlgorithm,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is missing a required claim")]
    MissingClaim,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("invalid key: {0}")]
    BadKey(String),
    #[error("token is from another issuer")]
    WrongIssuer,
    #[error("token is for another audience")]
    WrongAudience,
    #[error("token lifetime is longer than this gateway accepts")]
    LifetimeTooLong,
    /// RFC 7515 4.1.11: a `crit` header names extensions that must be understood; this gateway
    /// understands none.
    #[error("token has critical header extensions")]
    CriticalExtension,
    /// The token's `kid` names no configured key, or it names none while several are configured
    /// (a token is checked with the key it names, never with each in turn).
    #[error("token names no key this gateway knows")]
    UnknownKey,
    /// Roles, or the `login` scope, in a token signed by a key that may not grant them (only the
    /// gateway's own may).
    #[error("token carries rights only the gateway's own key may grant")]
    RolesNotAllowed,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
            ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::Json(e) if e.is_data() => TokenError::MissingClaim,
            _ => TokenError::Malformed,
        }
    }
}

/// One key tokens may be signed with, and what tokens signed with it must be.
#[derive(Clone)]
struct VerifyingKey {
    /// The `kid` tokens carry to name this key; `None` for the one-key shorthand.
    kid: Option<String>,
    key: DecodingKey,
    expect: Expectations,
    /// Its tokens may carry `roles` (the gateway's own key).
    grants_roles: bool,
}

/// Verifies tokens with the gateway's public keys: one (`token_public_key`), or several named by
/// `kid` (`[[auth.key]]`, so that keys rotate without downtime).
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<VerifyingKey>,
    validation: Validation,
    leeway: u64,
}

impl TokenVerifier {
    /// No key yet; `leeway` is the clock skew tolerated on `exp` and `nbf`, in seconds.
    pub fn new(leeway: u64) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // exp/nbf are checked below against the caller's clock; the library reads the system clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        Self {
            keys: Vec::new(),
            validation,
            leeway,
        }
    }

    /// One key, with no `kid`: `pem` is an Ed25519 public key (`-----BEGIN PUBLIC KEY-----`,
    /// SPKI).
    pub fn from_public_pem(pem: &[u8], leeway: u64) -> Result<Self, TokenError> {
        Self::new(leeway).with_key(None, pem, Expectations::default())
    }

    /// The same verifier, also accepting tokens signed with `pem` (naming it `kid`, if any), which
    /// must meet `expect`. Two keys with the same `kid` are refused.
    pub fn with_key(mut self, kid: Option<&str>, pem: &[u8], expect: Expectations) -> Result<Self, TokenError> {
        if self.keys.iter().any(|k| k.kid.as_deref() == kid) {
            return Err(TokenError::BadKey(format!("two keys named {kid:?}")));
        }
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| TokenError::BadKey(e.to_string()))?;
        self.keys.push(VerifyingKey {
            kid: kid.map(str::to_owned),
            key,
            expect,
            grants_roles: false,
        });
        Ok(self)
    }

    /// The key named `kid` may sign tokens that carry `roles` (the gateway's own key).
    pub fn granting_roles(mut self, kid: Option<&str>) -> Self {
        for k in self.keys.iter_mut().filter(|k| k.kid.as_deref() == kid) {
            k.grants_roles = true;
        }
        self
    }

    /// The same verifier, every key of which also checks `expect` (for keys added before).
    pub fn expecting(mut self, expect: Expectations) -> Self {
        for k in &mut self.keys {
            k.expect = expect.clone();
        }
        self
    }

    /// The key a token's header names: by `kid`; when it names none, the only key, or the only
    /// key besides the gateway's own (whose tokens always name it) when that one has no `kid`.
    fn key_for(&self, kid: Option<&str>) -> Result<&VerifyingKey, TokenError> {
        match kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => {
                let mut others = self.keys.iter().filter(|k| !(k.grants_roles && k.kid.is_some()));
                match (others.next(), others.next()) {
                    (Some(only), None) if only.kid.is_none() => Some(only),
                    _ => None,
                }
            }
        }
        .ok_or(TokenError::UnknownKey)
    }

    /// Checks signature, algorithm and validity period at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        // Pin the algorithm before anything else, so a `none` or HMAC header is named as such.
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::WrongAlgorithm);
        }
        if has_crit(token)? {
            return Err(TokenError::CriticalExtension);
        }
        let key = self.key_for(header.kid.as_deref())?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation)?.claims;
        // Roles (single sign-on) and login credentials come from the gateway's own key only.
        if (!claims.roles.is_empty() || claims.has_scope(LOGIN_SCOPE)) && !key.grants_roles {
            return Err(TokenError::RolesNotAllowed);
        }
        Self::check_claims(&key.expect, self.leeway, &claims, now)?;
        self.check_period(&claims, now)?;
        Ok(claims)
    }

    /// Issuer, audience and lifetime, as the key's expectations say.
    fn check_claims(e: &Expectations, leeway: u64, claims: &Claims, now: u64) -> Result<(), TokenError> {
        if e.issuer.as_ref().is_some_and(|i| claims.iss.as_ref() != Some(i)) {
            return Err(TokenError::WrongIssuer);
        }
        if e.audience
            .as_ref()
            .is_some_and(|a| !claims.aud.as_ref().is_some_and(|aud| aud.contains(a)))
        {
            return Err(TokenError::WrongAudience);
        }
        if let Some(max) = e.max_ttl {
            let issued = claims.iat.unwrap_or(claims.nbf).min(now);
            if claims.exp.saturating_sub(issued) > max.saturating_add(leeway) {
                return Err(TokenError::LifetimeTooLong);
            }
        }
        Ok(())
    }

    /// Checks only the validity period of claims verified earlier, at `now`, with the leeway.
    pub fn check_period(&self, claims: &Claims, now: u64) -> Result<(), TokenError> {
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// Whether the token's JOSE header has a `crit` member (the jsonwebtoken crate ignores it).
fn has_crit(token: &str) -> Result<bool, TokenError> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let encoded = token.split('.').next().ok_or(TokenError::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    Ok(header.contains_key("crit"))
}

/// Signs tokens with an Ed25519 private key (PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`).
pub struct TokenIssuer {
    key: EncodingKey,
    kid: Option<String>,
}

impl TokenIssuer {
    pub fn from_private_pem(pem: &[u8]) -> Result<Self, TokenError> {
        let key = EncodingKey::from_ed_pem(pem).map_err(|e| TokenError::BadKey(e.to_string()))?;
        Ok(Self { key, kid: None })
    }

    /// Tokens name the key they are signed with (`kid` in the header).
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_owned());
        self
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| TokenError::BadKey(e.to_string()))
    }
}

/// PEM helpers for Ed25519 keys: the gateway writes keys in the standard forms OpenSSL reads.
pub mod pem {
    use base64::{engine::general_purpose::STANDARD, Engine};

    /// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
    const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

    pub fn encode(label: &str, der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    /// SPKI PEM of a raw 32-byte Ed25519 public key.
    pub fn ed25519_public(raw: &[u8; 32]) -> String {
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(raw);
        encode("PUBLIC KEY", &der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    // A fixed Ed25519 key pair (RFC 8032 test 1 secret), PKCS#8 v1 and SPKI.
    const PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const PUBLIC_RAW: [u8; 32] = [
        0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1,
        0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
    ];
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            sub: "alice".into(),
            tgt: "vm1".into(),
            exp: NOW + 900,
            nbf: NOW - 10,
            iat: Some(NOW - 10),
            jti: "j1".into(),
            iss: None,
            aud: None,
            scope: None,
            once: false,
            roles: Vec::new(),
            lgn: None,
        }
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::from_public_pem(pem::ed25519_public(&PUBLIC_RAW).as_bytes(), 30).unwrap()
    }

    fn issue(c: &Claims) -> String {
        TokenIssuer::from_private_pem(PRIVATE.as_bytes())
            .unwrap()
            .issue(c)
            .unwrap()
    }

    #[test]
    fn round_trip() {
        assert_eq!(verifier().verify(&issue(&claims()), NOW).unwrap(), claims());
    }

    /// A validly signed token whose header is `header` (JSON).
    fn signed_with_header(header: &str, c: &Claims) -> String {
        let head = URL_SAFE_NO_PAD.encode(header);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap());
        let message = format!("{head}.{body}");
        let key = EncodingKey::from_ed_pem(PRIVATE.as_bytes()).unwrap();
        let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::EdDSA).unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn critical_header_extensions_are_refused() {
        let plain = signed_with_header(r#"{"alg":"EdDSA","typ":"JWT"}"#, &claims());
        assert_eq!(verifier().verify(&plain, NOW), Ok(claims()));
        let crit = signed_with_header(r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#, &claims());
        assert_eq!(verifier().verify(&crit, NOW), Err(TokenError::CriticalExtension));
    }

    #[test]
    fn issuer_audience_and_lifetime_when_expected() {
        let expecting = |issuer: Option<&str>, audience: Option<&str>, max_ttl| {
            verifier().expecting(Expectations {
                issuer: issuer.map(Into::into),
                audience: audience.map(Into::into),
                max_ttl,
            })
        };
        let ours = Claims {
            iss: Some("https://idp.example".into()),
            aud: Some(Audience::Many(vec!["other".into(), "portcullis".into()])),
            ..claims()
        };
        let v = expecting(Some("https://idp.example"), Some("portcullis"), Some(900));
        assert_eq!(v.verify(&issue(&ours), NOW), Ok(ours.clone()));
        // Without expectations, iss and aud are not looked at.
        assert!(verifier().verify(&issue(&claims()), NOW).is_ok());
        let theirs = Claims {
            iss: Some("https://elsewhere.example".into()),
            ..ours.clone()
        };
        assert_eq!(v.verify(&issue(&theirs), NOW), Err(TokenError::WrongIssuer));
        assert_eq!(v.verify(&issue(&claims()), NOW), Err(TokenError::WrongIssuer));
        let not_for_us = Claims {
            aud: Some(Audience::One("other".into())),
            ..ours.clone()
        };
        assert_eq!(v.verify(&issue(&not_for_us), NOW), Err(TokenError::WrongAudience));
        // A century-long token; and one whose iat is after now does not shorten its lifetime.
        let long = Claims {
            exp: NOW + 100 * 365 * 86400,
            ..ours.clone()
        };
        assert_eq!(v.verify(&issue(&long), NOW), Err(TokenError::LifetimeTooLong));
        let backdated = Claims {
            iat: Some(NOW + 3600),
            nbf: NOW - 10,
            exp: NOW + 3600 + 900,
            ..ours.clone()
        };
        assert_eq!(v.verify(&issue(&backdated), NOW), Err(TokenError::LifetimeTooLong));
        // 900 s of lifetime plus the 30 s leeway is the most.
        let edge = Claims {
            exp: NOW - 10 + 930,
            ..ours
        };
        assert!(v.verify(&issue(&edge), NOW).is_ok());
    }

    #[test]
    fn expiry_and_not_before_with_leeway() {
        let t = issue(&claims());
        assert!(verifier().verify(&t, NOW + 900 + 29).is_ok());
        assert_eq!(verifier().verify(&t, NOW + 900 + 30), Err(TokenError::Expired));
        assert!(verifier().verify(&t, NOW - 10 - 30).is_ok());
        assert_eq!(verifier().verify(&t, NOW - 10 - 31), Err(TokenError::NotYetValid));
    }

    #[test]
    fn tampered_payload_is_refused() {
        let t = issue(&claims());
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut other = claims();
        other.tgt = "db1".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        assert_eq!(verifier().verify(&parts.join("."), NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn none_and_hmac_algorithms_are_refused() {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        for alg in ["none", "HS256"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let t = format!("{header}.{payload}.");
            let err = verifier().verify(&t, NOW).unwrap_err();
            let want = if alg == "none" {
                TokenError::Malformed
            } else {
                TokenError::WrongAlgorithm
            };
            assert_eq!(err, want, "{alg}");
        }
    }

    #[test]
    fn missing_claims_and_garbage_are_refused() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice"}"#);
        let err = verifier().verify(&format!("{header}.{payload}.AAAA"), NOW).unwrap_err();
        assert!(matches!(
            err,
            TokenError::MissingClaim | TokenError::BadSignature | TokenError::Malformed
        ));
        for junk in ["", ".", "..", "a.b.c", "not a token"] {
            assert!(verifier().verify(junk, NOW).is_err());
        }
        assert_eq!(
            verifier().verify(&"a".repeat(MAX_TOKEN_LEN + 1), NOW),
            Err(TokenError::TooLong)
        );
    }

    #[test]
    fn wrong_key_is_refused() {
        let other = TokenVerifier::from_public_pem(pem::ed25519_public(&[7; 32]).as_bytes(), 0);
        // Not every 32-byte string is a valid point; either the key or the signature is refused.
        if let Ok(v) = other {
            assert!(v.verify(&issue(&claims()), NOW).is_err());
        }
    }
}
