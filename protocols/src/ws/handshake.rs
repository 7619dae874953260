//! Opening handshake keys (RFC 6455 §4.1, §4.2.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// Fixed GUID the server appends to the client's key (§1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(client_key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// A valid `Sec-WebSocket-Key` is the canonical base64 of exactly 16 bytes (24 characters).
pub fn is_valid_client_key(key: &str) -> bool {
    // The length check first bounds the work done on hostile header values.
    let mut out = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut out) == Ok(16)
}

/// A `Sec-WebSocket-Key` built from 16 caller-provided random bytes.
pub fn client_key(random16: [u8; 16]) -> String {
    STANDARD.encode(random16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example() {
        // RFC 6455 §1.3 (the value in SPEC-ws.md, "...9kOoOsZ+xOo4YzQ=", is a typo: this is the RFC's).
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn key_validation() {
        assert!(is_valid_client_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_client_key(""));
        assert!(!is_valid_client_key("dGhlIHNhbXBsZSBub25jZQ")); // unpadded
        assert!(!is_valid_client_key("dGhlIHNhbXBsZSBub25jZQ==="));
        assert!(!is_valid_client_key("dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!is_valid_client_key("dGhlIHNhbXBsZSBub25jZR==")); // non-canonical trailing bits
        assert!(!is_valid_client_key("AAAAAAAAAAAAAAAAAAAAAAAA")); // 18 bytes
        assert!(!is_valid_client_key("dGhlIHNhbXBsZSBub25j====")); // 15 bytes, padded to 24
    }

    #[test]
    fn client_key_round_trip() {
        let key = client_key(*b"the sample nonce");
        assert_eq!(key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(is_valid_client_key(&key));
    }
}
