//! Secret random bytes from the operating system. A failure is an error the caller must handle:
//! a cookie, ticket or session id made of zeroes would be guessable, so nothing falls back.

use ring::rand::{SecureRandom, SystemRandom};

/// The operating system's random source failed (getrandom). Nothing that needs a secret can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomError;

/// `N` secret random bytes.
pub fn random<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).map_err(|_| RandomError)?;
    Ok(out)
}

/// `N` random bytes as lowercase hex (session ids, token ids).
pub fn random_hex<const N: usize>() -> Result<String, RandomError> {
    Ok(hex(&random::<N>()?))
}

/// `N` random bytes as unpadded base64url (cookies, tickets).
pub fn random_base64url<const N: usize>() -> Result<String, RandomError> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<N>()?))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Every byte is looked at whatever the others hold; black_box keeps the optimizer from
    // turning the fold into an early exit.
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_differ_and_encode() {
        let a = random_hex::<12>().unwrap();
        let b = random_hex::<12>().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert_eq!(random_base64url::<32>().unwrap().len(), 43);
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
