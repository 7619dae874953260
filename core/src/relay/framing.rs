//! The relay's framing layer: how payload is cut into frames on the framed (peer) side.
//!
//! The relay owns buffers and direction logic; a `Framing` only decodes frames in place and writes
//! a header into the room the relay reserved in front of a payload. WebSocket (RFC 6455) is the
//! framing of every route today; the RD Gateway issue stacks its own packets inside WebSocket
//! messages by implementing this trait over [`WebSocket`].

use portcullis_protocols::ws::{self, CloseCode, ControlPayload, Decoder, Event, Limits, OpCode, ProtocolError, Role};
use std::ops::Range;

/// Plaintext bytes of a full TLS record (TLS 1.2 and 1.3).
pub const TLS_RECORD: usize = 16 * 1024;

/// What the peer sent, decoded in place.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Payload at `input[range]` of the slice passed to `decode`, ready to relay as is.
    Data(Range<usize>),
    /// A text frame, which a byte tunnel does not carry.
    Text,
    Ping(ControlPayload),
    Pong,
    /// The peer's Close (its code, if any): it will send nothing more.
    Close(Option<u16>),
}

/// A message the relay sends between data frames.
#[derive(Clone, Copy, Debug)]
pub enum Control<'a> {
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    Close(CloseCode, &'a str),
}

pub trait Framing {
    /// Most bytes a data frame's header takes in front of its payload.
    const MAX_HEADER: usize;

    /// Decodes from `input` (unmasking or otherwise transforming payload in place). Returns the
    /// bytes used and at most one event; makes progress on any non-empty input.
    fn decode(&mut self, input: &mut [u8]) -> Result<(usize, Option<Inbound>), ProtocolError>;

    /// Frames the payload at `buf[at..at + len]`: writes its header into the bytes just before
    /// `at` (the relay reserves `MAX_HEADER` of them) and transforms the payload in place if the
    /// framing needs to. Returns where the frame starts.
    fn seal(&mut self, buf: &mut [u8], at: usize, len: usize) -> usize;

    /// Encodes a whole control message into `out`.
    fn control(&mut self, out: &mut Vec<u8>, control: Control<'_>);

    /// Most payload bytes to read for one data frame out of `area` bytes of buffer.
    fn payload_cap(&self, area: usize) -> usize;
}

/// RFC 6455 framing over the sans-IO codec of `portcullis-protocols`: binary frames only, masked
/// when we are the client.
pub struct WebSocket {
    decoder: Decoder,
    role: Role,
    mask_seed: u64,
}

impl WebSocket {
    /// `mask_seed` makes client masks unpredictable to intermediaries (RFC 6455 §10.3); it need
    /// not be secret. Servers send unmasked frames and ignore it.
    pub fn new(role: Role, limits: Limits, mask_seed: u64) -> Self {
        WebSocket {
            decoder: Decoder::new(role, limits),
            role,
            mask_seed: mask_seed | 1,
        }
    }

    fn masked(&self) -> bool {
        self.role == Role::Client
    }

    fn next_mask(&mut self) -> Option<[u8; 4]> {
        if !self.masked() {
            return None;
        }
        // xorshift64*: cheap, and unpredictable enough given an OS-random seed.
        self.mask_seed ^= self.mask_seed >> 12;
        self.mask_seed ^= self.mask_seed << 25;
        self.mask_seed ^= self.mask_seed >> 27;
        Some((self.mask_seed.wrapping_mul(0x2545_f491_4f6c_dd1d) as u32).to_ne_bytes())
    }
}

impl Framing for WebSocket {
    const MAX_HEADER: usize = ws::MAX_HEADER_LEN;

    fn decode(&mut self, input: &mut [u8]) -> Result<(usize, Option<Inbound>), ProtocolError> {
        let decoded = self.decoder.decode(input)?;
        let event = decoded.event.map(|e| match e {
            Event::Data { text: true, .. } => Inbound::Text,
            Event::Data { range, .. } => Inbound::Data(range),
            Event::Ping(p) => Inbound::Ping(p),
            Event::Pong(_) => Inbound::Pong,
            Event::Close { code, .. } => Inbound::Close(code.map(|c| c.0)),
        });
        Ok((decoded.consumed, event))
    }

    fn seal(&mut self, buf: &mut [u8], at: usize, len: usize) -> usize {
        let key = self.next_mask();
        let hlen = ws::header_len(len as u64, key.is_some());
        let start = at - hlen;
        ws::encode_header(&mut buf[start..at], true, OpCode::Binary, len as u64, key);
        if let Some(key) = key {
            ws::apply_mask(&mut buf[at..at + len], key, 0);
        }
        start
    }

    fn control(&mut self, out: &mut Vec<u8>, control: Control<'_>) {
        let mask = self.next_mask();
        match control {
            Control::Ping(p) => ws::encode_control(out, OpCode::Ping, p, mask),
            Control::Pong(p) => ws::encode_control(out, OpCode::Pong, p, mask),
            Control::Close(code, reason) => ws::encode_close(out, code, reason, mask),
        }
    }

    fn payload_cap(&self, area: usize) -> usize {
        frame_payload_cap(area, self.masked())
    }
}

/// The largest payload to read for one frame into `area` bytes of buffer: frames are sized to fill
/// whole TLS records, so a frame never spills its last few bytes into one more record (one more
/// seal and one more send; a 16 KiB payload plus its 4-byte header took two records). Over plain
/// TCP it costs nothing.
pub fn frame_payload_cap(area: usize, masked: bool) -> usize {
    let records = (area + ws::header_len(area as u64, masked)) / TLS_RECORD;
    if records == 0 {
        return area;
    }
    let whole = records * TLS_RECORD;
    // Payloads this size have a 4- or 10-byte header (plus the mask key).
    for base in [4, 10] {
        let header = base + if masked { 4 } else { 0 };
        let n = whole - header;
        if ws::header_len(n as u64, masked) == header && n <= area {
            return n;
        }
    }
    area
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fill_whole_tls_records() {
        for masked in [false, true] {
            for area in [1024, 16 * 1024, 16 * 1024 + 3, 64 * 1024, 100_000, 1 << 20] {
                let n = frame_payload_cap(area, masked);
                assert!(n <= area, "{area}: {n}");
                let frame = n + ws::header_len(n as u64, masked);
                if area + ws::header_len(area as u64, masked) < TLS_RECORD {
                    assert_eq!(n, area, "a small buffer is used whole");
                } else {
                    assert_eq!(frame % TLS_RECORD, 0, "{area} masked={masked}: frame of {frame}");
                    assert!(area - n < TLS_RECORD, "{area}: wastes a record");
                }
            }
        }
        assert_eq!(frame_payload_cap(16 * 1024, false), 16 * 1024 - 4);
        assert_eq!(frame_payload_cap(16 * 1024, true), 16 * 1024 - 8);
        assert_eq!(frame_payload_cap(100_000, false), 6 * TLS_RECORD - 10);
    }

    /// A sealed frame decodes back to its payload in both roles.
    #[test]
    fn sealed_frames_decode() {
        for (role, peer) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
            let mut tx = WebSocket::new(role, Limits::default(), 42);
            let mut rx = WebSocket::new(peer, Limits::default(), 7);
            let payload: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
            let mut buf = vec![0u8; WebSocket::MAX_HEADER + payload.len()];
            buf[WebSocket::MAX_HEADER..].copy_from_slice(&payload);
            let start = tx.seal(&mut buf, WebSocket::MAX_HEADER, payload.len());
            let frame = &mut buf[start..];
            let (used, event) = rx.decode(frame).unwrap();
            let Some(Inbound::Data(range)) = event else {
                panic!("{event:?}")
            };
            assert_eq!(used, frame.len());
            assert_eq!(&frame[range], &payload[..]);
        }
    }
}
