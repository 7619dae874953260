//! WebAuthn (passkeys and security keys) as a second factor, the parts without I/O: a bounded
//! CBOR reader, the authenticator data, COSE public keys (ES256 on P-256, EdDSA on Ed25519), the
//! client data check (type, challenge, origin), and the assertion signature (ring). Attestation
//! is not verified (the gateway asks for `none`): an enrolled key proves possession, not its
//! make. Every parser returns a typed error and never panics (fuzzed: `fuzz/fuzz_targets/webauthn.rs`).

use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ED25519};
use sha2::{Digest, Sha256};

/// The largest attestation object, authenticator data or client data accepted.
pub const MAX_INPUT: usize = 8 * 1024;
const MAX_DEPTH: usize = 6;
const MAX_ITEMS: u64 = 64;

/// Why a WebAuthn answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebauthnError {
    #[error("malformed CBOR")]
    Cbor,
    #[error("malformed authenticator data")]
    AuthData,
    #[error("unsupported or malformed public key")]
    PublicKey,
    #[error("malformed client data")]
    ClientData,
    #[error("client data is for another ceremony")]
    Type,
    #[error("the challenge does not match")]
    Challenge,
    #[error("the origin {0} is not this gateway")]
    Origin(String),
    #[error("the authenticator data is for another relying party")]
    RpId,
    #[error("the user was not present")]
    UserPresence,
    #[error("the signature is invalid")]
    Signature,
    #[error("the signature counter went back: a cloned authenticator?")]
    Counter,
    #[error("input larger than {MAX_INPUT} bytes")]
    TooLarge,
}

/// A CBOR data item (the subset WebAuthn uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cbor {
    Int(i128),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Cbor>),
    Map(Vec<(Cbor, Cbor)>),
    Bool(bool),
    Null,
}

impl Cbor {
    fn get(&self, key: &Cbor) -> Option<&Cbor> {
        match self {
            Cbor::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Reads one CBOR item from the front of `input`; returns it and the rest.
pub fn cbor(input: &[u8]) -> Result<(Cbor, &[u8]), WebauthnError> {
    if input.len() > MAX_INPUT {
        return Err(WebauthnError::TooLarge);
    }
    item(input, 0)
}

fn take(input: &[u8], n: usize) -> Result<(&[u8], &[u8]), WebauthnError> {
    (input.len() >= n).then(|| input.split_at(n)).ok_or(WebauthnError::Cbor)
}

fn item(input: &[u8], depth: usize) -> Result<(Cbor, &[u8]), WebauthnError> {
    if depth > MAX_DEPTH {
        return Err(WebauthnError::Cbor);
    }
    let (&first, rest) = input.split_first().ok_or(WebauthnError::Cbor)?;
    let (major, info) = (first >> 5, first & 31);
    let (arg, rest): (u64, &[u8]) = match info {
        0..=23 => (u64::from(info), rest),
        24 => take(rest, 1).map(|(b, r)| (u64::from(b[0]), r))?,
        25 => take(rest, 2).map(|(b, r)| (u64::from(u16::from_be_bytes([b[0], b[1]])), r))?,
        26 => take(rest, 4).map(|(b, r)| (u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])), r))?,
        27 => take(rest, 8).map(|(b, r)| (u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]), r))?,
        // Indefinite lengths and reserved values: not in WebAuthn's canonical CBOR.
        _ => return Err(WebauthnError::Cbor),
    };
    let len = |n: u64| usize::try_from(n).map_err(|_| WebauthnError::Cbor);
    match major {
        0 => Ok((Cbor::Int(i128::from(arg)), rest)),
        1 => Ok((Cbor::Int(-1 - i128::from(arg)), rest)),
        2 => take(rest, len(arg)?).map(|(b, r)| (Cbor::Bytes(b.to_vec()), r)),
        3 => {
            let (b, r) = take(rest, len(arg)?)?;
            let text = std::str::from_utf8(b).map_err(|_| WebauthnError::Cbor)?;
            Ok((Cbor::Text(text.to_owned()), r))
        }
        4 | 5 => {
            if arg > MAX_ITEMS {
                return Err(WebauthnError::Cbor);
            }
            let mut rest = rest;
            if major == 4 {
                let mut items = Vec::new();
                for _ in 0..arg {
                    let (v, r) = item(rest, depth + 1)?;
                    items.push(v);
                    rest = r;
                }
                Ok((Cbor::Array(items), rest))
            } else {
                let mut entries = Vec::new();
                for _ in 0..arg {
                    let (k, r) = item(rest, depth + 1)?;
                    let (v, r) = item(r, depth + 1)?;
                    entries.push((k, v));
                    rest = r;
                }
                Ok((Cbor::Map(entries), rest))
            }
        }
        7 => match info {
            20 => Ok((Cbor::Bool(false), rest)),
            21 => Ok((Cbor::Bool(true), rest)),
            22 => Ok((Cbor::Null, rest)),
            _ => Err(WebauthnError::Cbor),
        },
        // Tags (6) are not used by WebAuthn.
        _ => Err(WebauthnError::Cbor),
    }
}

/// A credential public key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// ES256: the uncompressed P-256 point (65 bytes).
    Es256(Vec<u8>),
    /// EdDSA: the Ed25519 key (32 bytes).
    Ed25519(Vec<u8>),
}

impl PublicKey {
    /// `alg` and bytes, for storage.
    pub fn to_parts(&self) -> (i32, &[u8]) {
        match self {
            PublicKey::Es256(k) => (-7, k),
            PublicKey::Ed25519(k) => (-8, k),
        }
    }

    pub fn from_parts(alg: i32, bytes: Vec<u8>) -> Result<PublicKey, WebauthnError> {
        match (alg, bytes.len()) {
            (-7, 65) if bytes[0] == 4 => Ok(PublicKey::Es256(bytes)),
            (-8, 32) => Ok(PublicKey::Ed25519(bytes)),
            _ => Err(WebauthnError::PublicKey),
        }
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), WebauthnError> {
        let (alg, key): (&'static dyn ring::signature::VerificationAlgorithm, &[u8]) = match self {
            PublicKey::Es256(k) => (&ECDSA_P256_SHA256_ASN1, k),
            PublicKey::Ed25519(k) => (&ED25519, k),
        };
        UnparsedPublicKey::new(alg, key)
            .verify(message, signature)
            .map_err(|_| WebauthnError::Signature)
    }
}

/// A COSE_Key (RFC 9053): EC2 P-256 with ES256, or OKP Ed25519 with EdDSA.
pub fn cose_key(key: &Cbor) -> Result<PublicKey, WebauthnError> {
    let int = |n: i128| key.get(&Cbor::Int(n));
    let bytes = |n: i128| match int(n) {
        Some(Cbor::Bytes(b)) if b.len() == 32 => Ok(b.clone()),
        _ => Err(WebauthnError::PublicKey),
    };
    match (int(1), int(3), int(-1)) {
        // kty EC2, alg ES256, crv P-256.
        (Some(Cbor::Int(2)), Some(Cbor::Int(-7)), Some(Cbor::Int(1))) => {
            let mut point = vec![4u8];
            point.extend(bytes(-2)?);
            point.extend(bytes(-3)?);
            Ok(PublicKey::Es256(point))
        }
        // kty OKP, alg EdDSA, crv Ed25519.
        (Some(Cbor::Int(1)), Some(Cbor::Int(-8)), Some(Cbor::Int(6))) => Ok(PublicKey::Ed25519(bytes(-2)?)),
        _ => Err(WebauthnError::PublicKey),
    }
}

/// Authenticator data (WebAuthn 6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthData {
    pub rp_id_hash: [u8; 32],
    pub user_present: bool,
    pub user_verified: bool,
    pub sign_count: u32,
    /// Registration only: the new credential's id and public key.
    pub credential: Option<(Vec<u8>, PublicKey)>,
}

pub fn auth_data(data: &[u8]) -> Result<AuthData, WebauthnError> {
    if data.len() > MAX_INPUT {
        return Err(WebauthnError::TooLarge);
    }
    if data.len() < 37 {
        return Err(WebauthnError::AuthData);
    }
    let flags = data[32];
    let mut rp_id_hash = [0u8; 32];
    rp_id_hash.copy_from_slice(&data[..32]);
    let sign_count = u32::from_be_bytes([data[33], data[34], data[35], data[36]]);
    let credential = if flags & 0x40 != 0 {
        let rest = &data[37..];
        // AAGUID (16), then the credential id's length (2).
        if rest.len() < 18 {
            return Err(WebauthnError::AuthData);
        }
        let id_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        let rest = &rest[18..];
        if id_len == 0 || id_len > 1023 || rest.len() < id_len {
            return Err(WebauthnError::AuthData);
        }
        let (id, rest) = rest.split_at(id_len);
        let (key, _extensions) = cbor(rest)?;
        Some((id.to_vec(), cose_key(&key)?))
    } else {
        None
    };
    Ok(AuthData {
        rp_id_hash,
        user_present: flags & 0x01 != 0,
        user_verified: flags & 0x04 != 0,
        sign_count,
        credential,
    })
}

/// What the client data and authenticator data must say.
pub struct Expected<'a> {
    /// `webauthn.create` or `webauthn.get`.
    pub kind: &'a str,
    /// The challenge as sent (base64url).
    pub challenge: &'a str,
    /// Origins accepted (`https://host[:port]`).
    pub origins: &'a [String],
    pub rp_id: &'a str,
}

fn check_client_data(client_data: &[u8], expect: &Expected<'_>) -> Result<(), WebauthnError> {
    if client_data.len() > MAX_INPUT {
        return Err(WebauthnError::TooLarge);
    }
    let v: serde_json::Value = serde_json::from_slice(client_data).map_err(|_| WebauthnError::ClientData)?;
    let text = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_str)
            .ok_or(WebauthnError::ClientData)
    };
    if text("type")? != expect.kind {
        return Err(WebauthnError::Type);
    }
    if !crate::secret::constant_time_eq(text("challenge")?.as_bytes(), expect.challenge.as_bytes()) {
        return Err(WebauthnError::Challenge);
    }
    let origin = text("origin")?;
    if !expect.origins.iter().any(|o| o == origin) {
        return Err(WebauthnError::Origin(origin.chars().take(100).collect()));
    }
    Ok(())
}

fn check_auth_data(data: &AuthData, rp_id: &str) -> Result<(), WebauthnError> {
    let want: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();
    if !crate::secret::constant_time_eq(&data.rp_id_hash, &want) {
        return Err(WebauthnError::RpId);
    }
    if !data.user_present {
        return Err(WebauthnError::UserPresence);
    }
    Ok(())
}

/// Registration (WebAuthn 7.1, without attestation): the new credential's id and public key.
pub fn register(
    client_data: &[u8],
    attestation_object: &[u8],
    expect: &Expected<'_>,
) -> Result<(Vec<u8>, PublicKey, u32), WebauthnError> {
    check_client_data(client_data, expect)?;
    let (object, _) = cbor(attestation_object)?;
    let Some(Cbor::Bytes(raw)) = object.get(&Cbor::Text("authData".into())) else {
        return Err(WebauthnError::AuthData);
    };
    let data = auth_data(raw)?;
    check_auth_data(&data, expect.rp_id)?;
    let (id, key) = data.credential.ok_or(WebauthnError::AuthData)?;
    Ok((id, key, data.sign_count))
}

/// Authentication (WebAuthn 7.2): checks the assertion with the stored key and counter; returns
/// the new counter.
pub fn authenticate(
    client_data: &[u8],
    authenticator_data: &[u8],
    signature: &[u8],
    key: &PublicKey,
    stored_count: u32,
    expect: &Expected<'_>,
) -> Result<u32, WebauthnError> {
    check_client_data(client_data, expect)?;
    let data = auth_data(authenticator_data)?;
    check_auth_data(&data, expect.rp_id)?;
    let mut message = authenticator_data.to_vec();
    message.extend_from_slice(&Sha256::digest(client_data));
    key.verify(&message, signature)?;
    // A counter that does not move forward (when either is non-zero) betrays a clone.
    if (data.sign_count != 0 || stored_count != 0) && data.sign_count <= stored_count {
        return Err(WebauthnError::Counter);
    }
    Ok(data.sign_count)
}

#[cfg(test)]
mod tests;

/// Unpadded base64url, as WebAuthn's JSON forms carry binary fields.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The inverse of [`b64url`] (padding tolerated); `None` for anything else or past `MAX_INPUT`.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    if text.len() > MAX_INPUT * 2 {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}
