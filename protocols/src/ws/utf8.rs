//! Incremental UTF-8 validation for text messages whose bytes arrive in arbitrary pieces.

/// Validates a byte stream fed in pieces, carrying at most 3 bytes of a code point split across
/// pieces. Rejects at the first byte that cannot continue a valid sequence (overlongs, surrogates
/// and > U+10FFFF included), so the verdict never depends on where the stream was split.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    partial: [u8; 4],
    partial_len: usize,
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece. After an `Err` the validator's state is unspecified until `finish`.
    #[allow(clippy::result_unit_err)] // the contract fixes `()`: callers map it to their own error
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), ()> {
        // Complete a code point left over from the previous piece, one byte at a time: std's
        // validator tells "invalid" (error_len Some) from "valid but truncated" (None).
        while self.partial_len > 0 {
            let Some((&b, rest)) = input.split_first() else {
                return Ok(());
            };
            input = rest;
            let slot = self.partial.get_mut(self.partial_len).ok_or(())?;
            *slot = b;
            self.partial_len += 1;
            let pending = self.partial.get(..self.partial_len).ok_or(())?;
            match core::str::from_utf8(pending) {
                Ok(_) => self.partial_len = 0,
                Err(e) if e.error_len().is_some() => return Err(()),
                Err(_) => {}
            }
        }
        match core::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(()),
            Err(e) => {
                // A valid prefix of a code point (1-3 bytes) cut by the end of the piece.
                let tail = input.get(e.valid_up_to()..).ok_or(())?;
                let slot = self.partial.get_mut(..tail.len()).ok_or(())?;
                slot.copy_from_slice(tail);
                self.partial_len = tail.len();
                Ok(())
            }
        }
    }

    /// Ends the stream: fails if it stopped inside a code point. Resets for the next message.
    #[allow(clippy::result_unit_err)]
    pub fn finish(&mut self) -> Result<(), ()> {
        let complete = self.partial_len == 0;
        self.partial_len = 0;
        if complete {
            Ok(())
        } else {
            Err(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn validate_split(bytes: &[u8], piece: usize) -> bool {
        let mut v = Utf8Validator::new();
        bytes.chunks(piece.max(1)).all(|c| v.feed(c).is_ok()) && v.finish().is_ok()
    }

    #[test]
    fn accepts_valid_text_split_anywhere() {
        let s = "héllo wörld €𝄞 ✓".as_bytes();
        for piece in 1..=s.len() {
            assert!(validate_split(s, piece), "piece {piece}");
        }
        assert!(validate_split(b"", 1));
    }

    #[test]
    fn rejects_invalid_sequences() {
        for bad in [
            &[0xff][..],
            &[0x80],                   // lone continuation
            &[0xc0, 0xaf],             // overlong
            &[0xe0, 0x80, 0xaf],       // overlong
            &[0xed, 0xa0, 0x80],       // surrogate
            &[0xf4, 0x90, 0x80, 0x80], // > U+10FFFF
            &[0xce, 0xba, 0xe1],       // truncated at the end
            &[0xf0, 0x9d, 0x84],       // truncated at the end
        ] {
            for piece in 1..=bad.len() {
                assert!(!validate_split(bad, piece), "{bad:x?} piece {piece}");
            }
        }
    }

    #[test]
    fn fails_fast_on_first_bad_byte() {
        // RFC 6455 §8.1 wants invalid text rejected early; E0 80 is already invalid.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[b'a', 0xe0]), Ok(()));
        assert_eq!(v.feed(&[0x80]), Err(()));
    }

    #[test]
    fn finish_resets() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xe2, 0x82]).unwrap();
        assert_eq!(v.finish(), Err(()));
        v.feed(b"ok").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }

    proptest! {
        #[test]
        fn agrees_with_std(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            piece in 1usize..8,
        ) {
            prop_assert_eq!(validate_split(&bytes, piece), core::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn agrees_with_std_on_mostly_valid_text(s in "\\PC{0,20}", flip in any::<(usize, u8)>(), piece in 1usize..6) {
            let mut bytes = s.into_bytes();
            if let Some(len) = core::num::NonZeroUsize::new(bytes.len()) {
                bytes[flip.0 % len] ^= flip.1;
            }
            prop_assert_eq!(validate_split(&bytes, piece), core::str::from_utf8(&bytes).is_ok());
        }
    }
}
