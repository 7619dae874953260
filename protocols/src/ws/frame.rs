//! Frame header layout (RFC 6455 §5.2): opcodes, close codes, header parse and encode.

use super::error::ProtocolError;

const FIN: u8 = 0x80;
const RSV: u8 = 0x70;
const MASK: u8 = 0x80;
/// Largest payload a control frame may carry (§5.5), so it always fits the 7-bit length.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Largest possible header: 2 fixed + 8 extended length + 4 mask key.
pub const MAX_HEADER_LEN: usize = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    Continuation = 0,
    Text = 1,
    Binary = 2,
    Close = 8,
    Ping = 9,
    Pong = 10,
}

impl OpCode {
    /// Decodes the 4-bit opcode field; reserved values 3-7 and 11-15 are rejected.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0 => Self::Continuation,
            1 => Self::Text,
            2 => Self::Binary,
            8 => Self::Close,
            9 => Self::Ping,
            10 => Self::Pong,
            other => return Err(ProtocolError::UnknownOpcode(other)),
        })
    }

    /// Control frames have the high opcode bit set (§5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Close status code (RFC 6455 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: Self = Self(1000);
    pub const GOING_AWAY: Self = Self(1001);
    pub const PROTOCOL_ERROR: Self = Self(1002);
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    pub const INVALID_PAYLOAD: Self = Self(1007);
    pub const POLICY: Self = Self(1008);
    pub const TOO_BIG: Self = Self(1009);
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// IANA-registered: the server is overloaded or paused; the client may retry later.
    pub const TRY_AGAIN_LATER: Self = Self(1013);

    /// Whether the code may appear in a Close frame. 1004-1006 and 1015 are reserved for local
    /// use only; 1012-1014 are IANA-registered after the RFC; 3000-4999 are for libraries/apps.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

/// A fully read and statically validated frame header (message state is the decoder's business).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

/// Parses a header from the start of `buf`, which may hold only part of it (or more than it).
/// Returns `Ok(None)` when more bytes are needed, else the header and its length. Checks run as
/// soon as the bytes they need are present, so a bad header is rejected after its first two bytes
/// and the outcome never depends on how the input was split.
pub(crate) fn parse_header(buf: &[u8], require_mask: bool) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let mut r = Reader(buf);
    let (Some(b0), Some(b1)) = (r.u8(), r.u8()) else {
        return Ok(None);
    };
    if b0 & RSV != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let fin = b0 & FIN != 0;
    let opcode = OpCode::from_u8(b0 & 0x0f)?;
    let masked = b1 & MASK != 0;
    match (masked, require_mask) {
        (false, true) => return Err(ProtocolError::UnmaskedFrame),
        (true, false) => return Err(ProtocolError::MaskedFrame),
        _ => {}
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlTooLong);
        }
    }
    let len = match len7 {
        126 => {
            let Some(v) = r.array().map(u16::from_be_bytes) else {
                return Ok(None);
            };
            if v < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            u64::from(v)
        }
        127 => {
            let Some(v) = r.array().map(u64::from_be_bytes) else {
                return Ok(None);
            };
            // The MSB must be 0 (§5.2); 16-bit-sized lengths must use the shorter form.
            if v >> 63 != 0 || v <= u64::from(u16::MAX) {
                return Err(ProtocolError::NonMinimalLength);
            }
            v
        }
        n => u64::from(n),
    };
    let mask = if masked {
        let Some(key) = r.array() else {
            return Ok(None);
        };
        Some(key)
    } else {
        None
    };
    let header = FrameHeader { fin, opcode, mask, len };
    Ok(Some((header, buf.len() - r.0.len())))
}

/// Bounds-checked cursor: running short yields `None` ("need more bytes"), never a panic.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
}

/// Header length for a payload of `payload_len` bytes: 2, 4 or 10, plus 4 with a mask key.
pub fn header_len(payload_len: u64, masked: bool) -> usize {
    let base = match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

/// Writes a frame header into `out` and returns its length. `mask` is `Some` for frames sent by a
/// client; the caller then masks the payload with `apply_mask(payload, key, 0)`.
///
/// # Panics
/// If `out` is shorter than `header_len(payload_len, mask.is_some())` (14 always suffices). This is
/// a caller bug, not an input condition.
pub fn encode_header(out: &mut [u8], fin: bool, opcode: OpCode, payload_len: u64, mask: Option<[u8; 4]>) -> usize {
    let n = header_len(payload_len, mask.is_some());
    assert!(out.len() >= n, "encode_header: output buffer too short");
    debug_assert!(payload_len >> 63 == 0, "payload length MSB must be 0");
    let mut buf = [0u8; MAX_HEADER_LEN];
    buf[0] = if fin { FIN } else { 0 } | opcode as u8;
    let mask_bit = if mask.is_some() { MASK } else { 0 };
    let mut at = 2;
    match payload_len {
        0..=125 => buf[1] = mask_bit | payload_len as u8,
        126..=0xffff => {
            buf[1] = mask_bit | 126;
            buf[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
            at = 4;
        }
        _ => {
            buf[1] = mask_bit | 127;
            buf[2..10].copy_from_slice(&payload_len.to_be_bytes());
            at = 10;
        }
    }
    if let Some(key) = mask {
        buf[at..at + 4].copy_from_slice(&key);
    }
    out[..n].copy_from_slice(&buf[..n]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtocolError::*;

    /// Parses a complete header, checking that every strict prefix asks for more bytes.
    fn parse(bytes: &[u8]) -> Result<FrameHeader, ProtocolError> {
        let masked = bytes.get(1).is_some_and(|b| b & MASK != 0);
        for cut in 0..bytes.len() {
            match parse_header(&bytes[..cut], masked) {
                Ok(None) => {}
                Err(e) => return Err(e),
                Ok(Some(_)) => panic!("header complete after {cut} bytes"),
            }
        }
        let (h, n) = parse_header(bytes, masked)?.expect("complete header");
        assert_eq!(n, bytes.len());
        Ok(h)
    }

    #[test]
    fn header_len_boundaries() {
        assert_eq!(header_len(0, false), 2);
        assert_eq!(header_len(125, false), 2);
        assert_eq!(header_len(126, false), 4);
        assert_eq!(header_len(65535, true), 8);
        assert_eq!(header_len(65536, false), 10);
        assert_eq!(header_len(u64::MAX >> 1, true), 14);
    }

    #[test]
    fn rfc_length_encodings() {
        // RFC 6455 §5.7: 256-byte and 64KiB binary messages, unmasked.
        let mut out = [0u8; 14];
        let n = encode_header(&mut out, true, OpCode::Binary, 256, None);
        assert_eq!(&out[..n], &[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(parse(&out[..n]).unwrap().len, 256);
        let n = encode_header(&mut out, true, OpCode::Binary, 65536, None);
        assert_eq!(&out[..n], &[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        assert_eq!(parse(&out[..n]).unwrap().len, 65536);
    }

    #[test]
    fn rfc_masked_hello_header() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = [0u8; 14];
        let n = encode_header(&mut out, true, OpCode::Text, 5, Some(key));
        assert_eq!(&out[..n], &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]);
        let h = parse(&out[..n]).unwrap();
        let want = FrameHeader {
            fin: true,
            opcode: OpCode::Text,
            mask: Some(key),
            len: 5,
        };
        assert_eq!(h, want);
    }

    #[test]
    fn encode_parse_round_trip_lengths() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let mut out = [0u8; 14];
                let n = encode_header(&mut out, false, OpCode::Binary, len, mask);
                assert_eq!(n, header_len(len, mask.is_some()));
                let h = parse(&out[..n]).unwrap();
                assert_eq!((h.fin, h.opcode, h.mask, h.len), (false, OpCode::Binary, mask, len));
            }
        }
    }

    #[test]
    fn trailing_bytes_are_not_part_of_the_header() {
        let (h, n) = parse_header(&[0x81, 0x03, b'a', b'b', b'c'], false).unwrap().unwrap();
        assert_eq!((n, h.len), (2, 3));
    }

    #[test]
    fn static_header_errors() {
        assert_eq!(parse(&[0xc1, 0x00]), Err(ReservedBits));
        assert_eq!(parse(&[0x91, 0x00]), Err(ReservedBits));
        assert_eq!(parse(&[0x83, 0x00]), Err(UnknownOpcode(3)));
        assert_eq!(parse(&[0x8b, 0x00]), Err(UnknownOpcode(11)));
        assert_eq!(parse(&[0x09, 0x00]), Err(FragmentedControl));
        assert_eq!(parse(&[0x89, 0x7e, 0x00, 0x7e]), Err(ControlTooLong));
        assert_eq!(parse(&[0x82, 0x7e, 0x00, 0x7d]), Err(NonMinimalLength));
        let len16 = [0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        assert_eq!(parse(&len16), Err(NonMinimalLength));
        let msb = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(&msb), Err(NonMinimalLength));
        assert_eq!(parse_header(&[0x81, 0x00], true), Err(UnmaskedFrame));
        assert_eq!(parse_header(&[0x81, 0x80], false), Err(MaskedFrame));
    }

    #[test]
    fn close_code_validity() {
        for (code, ok) in [
            (0, false),
            (999, false),
            (1000, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1011, true),
            (1014, true),
            (1015, false),
            (2999, false),
            (3000, true),
            (4999, true),
            (5000, false),
        ] {
            assert_eq!(CloseCode(code).is_valid_on_wire(), ok, "{code}");
        }
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn encode_header_short_buffer_is_a_caller_bug() {
        encode_header(&mut [0u8; 3], true, OpCode::Binary, 300, None);
    }
}
