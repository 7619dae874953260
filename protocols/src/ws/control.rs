//! Control frames (RFC 6455 §5.5): inline payloads and whole-frame encoders.

use super::error::ProtocolError;
use super::frame::{encode_header, CloseCode, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;

/// A control frame payload (at most 125 bytes) stored inline, so decoding pings and closes never
/// allocates.
#[derive(Clone, Copy)]
pub struct ControlPayload {
    len: u8,
    buf: [u8; MAX_CONTROL_PAYLOAD],
}

impl ControlPayload {
    /// `None` if `bytes` is longer than 125.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut buf = [0; MAX_CONTROL_PAYLOAD];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self {
            len: u8::try_from(bytes.len()).ok()?,
            buf,
        })
    }

    pub fn empty() -> Self {
        Self {
            len: 0,
            buf: [0; MAX_CONTROL_PAYLOAD],
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The payload as text. Close reasons are validated by the decoder, so this is their exact
    /// text; for ping/pong payloads, which may be any bytes, non-UTF-8 yields "".
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for ControlPayload {
    fn default() -> Self {
        Self::empty()
    }
}

impl PartialEq for ControlPayload {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ControlPayload {}

impl core::fmt::Debug for ControlPayload {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => write!(f, "ControlPayload({s:?})"),
            Err(_) => write!(f, "ControlPayload({:x?})", self.as_bytes()),
        }
    }
}

/// Splits a received Close payload into code and reason (§5.5.1, §7.4): empty, or a wire-valid
/// code followed by UTF-8.
pub(crate) fn parse_close(payload: &[u8]) -> Result<(Option<CloseCode>, ControlPayload), ProtocolError> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return match payload {
            [] => Ok((None, ControlPayload::empty())),
            _ => Err(ProtocolError::InvalidClosePayload),
        };
    };
    let code = CloseCode(u16::from_be_bytes(*code));
    if !code.is_valid_on_wire() {
        return Err(ProtocolError::InvalidClosePayload);
    }
    // A reason that is not UTF-8 is invalid payload data (1007), as RFC 6455 §8.1 and the
    // Autobahn suite (7.5.1) have it, not a protocol error.
    if core::str::from_utf8(reason).is_err() {
        return Err(ProtocolError::InvalidUtf8);
    }
    let reason = ControlPayload::new(reason).ok_or(ProtocolError::ControlTooLong)?;
    Ok((Some(code), reason))
}

/// Appends a Close frame to `out`. The reason is cut to 123 bytes (125 minus the code) on a
/// char boundary so the payload stays valid UTF-8.
pub fn encode_close(out: &mut Vec<u8>, code: CloseCode, reason: &str, mask: Option<[u8; 4]>) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1; // terminates: 0 is always a boundary
    }
    let reason = reason.get(..end).unwrap_or_default().as_bytes();
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.0.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason);
    encode_control(out, OpCode::Close, &payload[..2 + reason.len()], mask);
}

/// Appends a control frame (`Ping`, `Pong` or `Close`) to `out`; payloads over 125 bytes are
/// truncated to 125.
pub fn encode_control(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    debug_assert!(opcode.is_control(), "encode_control with a data opcode");
    let payload = payload.get(..MAX_CONTROL_PAYLOAD).unwrap_or(payload);
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, opcode, payload.len() as u64, mask);
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bounds() {
        assert!(ControlPayload::new(&[7; 126]).is_none());
        let p = ControlPayload::new(&[7; 125]).unwrap();
        assert_eq!((p.len(), p.as_bytes()), (125, &[7u8; 125][..]));
        assert!(ControlPayload::empty().is_empty());
        assert_eq!(ControlPayload::new(b"bye").unwrap().as_str(), "bye");
        assert_eq!(ControlPayload::new(&[0xff]).unwrap().as_str(), "");
    }

    #[test]
    fn rfc_unmasked_ping() {
        // RFC 6455 §5.7: unmasked Ping with body "Hello".
        let mut out = Vec::new();
        encode_control(&mut out, OpCode::Ping, b"Hello", None);
        assert_eq!(out, [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn rfc_masked_pong() {
        // RFC 6455 §5.7: masked Pong with body "Hello" (same key as the masked text example).
        let mut out = vec![0xaa];
        encode_control(&mut out, OpCode::Pong, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]));
        let want = [0xaa, 0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(out, want, "appends after existing content");
    }

    #[test]
    fn control_payload_truncated_to_125() {
        let mut out = Vec::new();
        encode_control(&mut out, OpCode::Ping, &[1; 300], None);
        assert_eq!((out[1], out.len()), (125, 127));
    }

    #[test]
    fn close_reason_truncated_on_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes of 2-byte chars
        let mut out = Vec::new();
        encode_close(&mut out, CloseCode::GOING_AWAY, &reason, None);
        // 123 bytes would split a char: 122 bytes of reason remain.
        assert_eq!(out[1], 124);
        let (code, text) = parse_close(&out[2..]).unwrap();
        assert_eq!(code, Some(CloseCode::GOING_AWAY));
        assert_eq!(text.as_str(), "é".repeat(61));
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(parse_close(&[]), Ok((None, ControlPayload::empty())));
        assert_eq!(parse_close(&[0x03]), Err(ProtocolError::InvalidClosePayload));
        assert_eq!(parse_close(&[0x03, 0xed]), Err(ProtocolError::InvalidClosePayload)); // 1005
        assert_eq!(parse_close(&[0x03, 0xe8, 0xc3]), Err(ProtocolError::InvalidUtf8));
        let (code, reason) = parse_close(&[0x0f, 0xa0, b'o', b'k']).unwrap();
        assert_eq!((code, reason.as_str()), (Some(CloseCode(4000)), "ok"));
    }
}
