//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, continued across calls via an offset.

/// XOR-masks `buf` with `key`, starting at key byte `offset` (taken mod 4), and returns the key
/// offset for the byte after `buf`, so a payload split over several reads masks correctly.
///
/// Works a u64 at a time: 8 is a multiple of 4, so one key rotated to the offset and replicated
/// twice covers every word; bytes before the first aligned word and after the last go one by one.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let head_len = buf.as_ptr().align_offset(8).min(buf.len());
    let (head, body) = buf.split_at_mut(head_len);
    let offset = apply_mask_bytewise(head, key, offset);

    let k = rotate(key, offset);
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut words = body.chunks_exact_mut(8);
    for word in &mut words {
        // Always 8 bytes; the conversion cannot fail and compiles to a plain load/store.
        if let Ok(w) = <&mut [u8; 8]>::try_from(word) {
            *w = (u64::from_ne_bytes(*w) ^ wide).to_ne_bytes();
        }
    }
    apply_mask_bytewise(words.into_remainder(), key, offset)
}

/// Byte-at-a-time reference for [`apply_mask`]; same contract.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) -> usize {
    let mut off = offset & 3;
    for b in buf {
        *b ^= key[off];
        off = (off + 1) & 3;
    }
    off
}

/// The key as seen from byte `offset` onwards.
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut k = key;
    k.rotate_left(offset & 3);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    #[test]
    fn rfc_masked_hello() {
        let mut buf = *b"Hello";
        assert_eq!(apply_mask(&mut buf, KEY, 0), 1);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut buf, KEY, 0);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn matches_bytewise_for_all_short_lengths_offsets_and_alignments() {
        let src: Vec<u8> = (0..80u8).map(|i| i.wrapping_mul(37)).collect();
        for start in 0..8 {
            for len in 0..64 {
                for offset in 0..4 {
                    let mut fast = src.clone();
                    let mut slow = src.clone();
                    let a = apply_mask(&mut fast[start..start + len], KEY, offset);
                    let b = apply_mask_bytewise(&mut slow[start..start + len], KEY, offset);
                    assert_eq!((a, &fast), (b, &slow), "start {start} len {len} off {offset}");
                    assert_eq!(a, (offset + len) % 4);
                }
            }
        }
    }

    #[test]
    fn offset_is_taken_mod_4() {
        let (mut a, mut b) = ([9u8; 13], [9u8; 13]);
        assert_eq!(apply_mask(&mut a, KEY, 6), apply_mask(&mut b, KEY, 2));
        assert_eq!(a, b);
    }

    proptest! {
        #[test]
        fn split_masking_equals_whole(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let mut whole = data.clone();
            apply_mask_bytewise(&mut whole, key, 0);
            let mut pieces = data.clone();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
            points.push(data.len());
            points.sort_unstable();
            let (mut at, mut off) = (0, 0);
            for p in points {
                off = apply_mask(&mut pieces[at..p], key, off);
                at = p;
            }
            prop_assert_eq!(pieces, whole);
        }
    }
}
