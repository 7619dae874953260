//! Streaming frame decoder: bytes in, events out, no payload copies for data frames.

use core::ops::Range;

use super::control::{parse_close, ControlPayload};
use super::error::ProtocolError;
use super::frame::{parse_header, CloseCode, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;

/// Which end of the connection we are; decides the masking rule for frames we receive (§5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Peer (client) frames MUST be masked.
    Server,
    /// Peer (server) frames MUST NOT be masked.
    Client,
}

/// Size limits that bound what a peer can make us accept.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest data frame payload; checked against the header, before any payload is read.
    /// Control frames are bounded by the protocol's own 125 bytes instead.
    pub max_frame_payload: u64,
    /// Largest data message, summed over its fragments.
    pub max_message: u64,
}

/// Default largest data frame payload (the gateway's `limits.max_frame_size`).
pub const DEFAULT_MAX_FRAME_PAYLOAD: u64 = 1 << 20;
/// Default largest data message (`limits.max_message_size`).
pub const DEFAULT_MAX_MESSAGE: u64 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_payload: DEFAULT_MAX_FRAME_PAYLOAD,
            max_message: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Result of one [`Decoder::decode`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the next call starts at `input[consumed..]`.
    pub consumed: usize,
    pub event: Option<Event>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A chunk of a data message, already unmasked, at `input[range]` of the input passed to this
    /// call. Text chunks are validated UTF-8 so far; `fin` marks the message's last chunk (possibly
    /// empty). Every data frame yields at least one event, so message boundaries stay visible.
    Data {
        range: Range<usize>,
        text: bool,
        fin: bool,
    },
    Ping(ControlPayload),
    Pong(ControlPayload),
    /// `code` is `None` for an empty payload; `reason` holds validated UTF-8 only.
    Close {
        code: Option<CloseCode>,
        reason: ControlPayload,
    },
}

#[derive(Clone, Debug)]
enum State {
    /// Collecting a frame header; `hdr[..hdr_len]` holds the bytes seen so far.
    Header,
    /// Inside a data frame's payload.
    Data { remaining: u64 },
    /// Collecting a control frame's payload into `ctrl`.
    Control { remaining: usize },
    /// A Close frame was received: nothing after it is meaningful (§5.5.1).
    Closed,
    /// A protocol error occurred; the connection must be failed.
    Failed(ProtocolError),
}

/// Streaming decoder. Buffers at most a 14-byte header and a 125-byte control payload; data
/// payload is unmasked in place in the caller's buffer and handed back as a range of it.
#[derive(Clone, Debug)]
pub struct Decoder {
    role: Role,
    limits: Limits,
    state: State,
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: usize,
    /// Current frame's fin bit, opcode and mask key with its running offset.
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    mask_offset: usize,
    /// The control frame being collected; allocated for it and freed when it is whole, so a
    /// decoder between frames (every idle session has one) keeps no room for one.
    ctrl: Option<Box<[u8; MAX_CONTROL_PAYLOAD]>>,
    ctrl_len: usize,
    /// `Some(is_text)` while a data message is open (between its first frame and fin).
    message: Option<bool>,
    message_len: u64,
    utf8: Utf8Validator,
}

impl Decoder {
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            role,
            limits,
            state: State::Header,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            fin: false,
            opcode: OpCode::Continuation,
            mask: None,
            mask_offset: 0,
            ctrl: None,
            ctrl_len: 0,
            message: None,
            message_len: 0,
            utf8: Utf8Validator::new(),
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// True once a Close frame has been decoded.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Decodes from `input`, unmasking data payload in place. Returns the bytes consumed and at
    /// most one event. If `input` is non-empty, `consumed > 0` or an event is returned, so calling
    /// again on `input[consumed..]` until it is empty always terminates.
    ///
    /// After an error every call returns that error again. After a Close event all further input
    /// is consumed and ignored (the peer must not send anything after Close).
    pub fn decode(&mut self, input: &mut [u8]) -> Result<Decoded, ProtocolError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Closed => return Ok(done(input.len(), None)),
            _ => {}
        }
        let result = self.step(input);
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn step(&mut self, input: &mut [u8]) -> Result<Decoded, ProtocolError> {
        let mut pos = 0;
        loop {
            let rest = input.get_mut(pos..).unwrap_or_default();
            match self.state {
                State::Header => match self.read_header(rest)? {
                    (used, Some(header)) => {
                        pos += used;
                        self.begin_frame(header)?;
                    }
                    (used, None) => return Ok(done(pos + used, None)),
                },
                State::Data { remaining } => {
                    let (used, event) = self.read_data(rest, remaining)?;
                    let event = event.map(|e| e.shifted(pos));
                    return Ok(done(pos + used, event));
                }
                State::Control { remaining } => {
                    let (used, event) = self.read_control(rest, remaining)?;
                    return Ok(done(pos + used, event));
                }
                State::Closed | State::Failed(_) => return Ok(done(pos, None)),
            }
        }
    }

    /// Buffers header bytes; returns how many were used and the header once complete. Copying is
    /// at most 14 bytes, and lets one code path serve headers split anywhere.
    fn read_header(&mut self, input: &[u8]) -> Result<(usize, Option<FrameHeader>), ProtocolError> {
        let have = self.hdr_len;
        let take = input.len().min(MAX_HEADER_LEN - have);
        let (Some(dst), Some(src)) = (self.hdr.get_mut(have..have + take), input.get(..take)) else {
            return Ok((0, None));
        };
        dst.copy_from_slice(src);
        let buffered = self.hdr.get(..have + take).unwrap_or_default();
        match parse_header(buffered, self.role == Role::Server)? {
            None => {
                // Incomplete means fewer than 14 bytes, so all of `input` went into the buffer.
                self.hdr_len = have + take;
                Ok((take, None))
            }
            Some((header, len)) => {
                self.hdr_len = 0;
                // `have` bytes were incomplete on their own, so the header ends in this input.
                Ok((len.saturating_sub(have), Some(header)))
            }
        }
    }

    /// Applies the stateful rules (fragmentation sequence, size limits) and enters the payload.
    fn begin_frame(&mut self, h: FrameHeader) -> Result<(), ProtocolError> {
        self.fin = h.fin;
        self.opcode = h.opcode;
        self.mask = h.mask;
        self.mask_offset = 0;
        if h.opcode.is_control() {
            self.ctrl_len = 0;
            // parse_header bounds control payloads by 125, so this conversion cannot fail.
            let remaining = usize::try_from(h.len).map_err(|_| ProtocolError::ControlTooLong)?;
            self.state = State::Control { remaining };
            return Ok(());
        }
        match (h.opcode, self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {}
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (op, None) => {
                self.message = Some(op == OpCode::Text);
                self.message_len = 0;
            }
        }
        let max = self.limits.max_frame_payload;
        if h.len > max {
            return Err(ProtocolError::FrameTooLarge { len: h.len, max });
        }
        let max = self.limits.max_message;
        self.message_len = match self.message_len.checked_add(h.len) {
            Some(total) if total <= max => total,
            _ => return Err(ProtocolError::MessageTooLarge { max }),
        };
        self.state = State::Data { remaining: h.len };
        Ok(())
    }

    /// Unmasks and validates as much of the current data frame as `input` holds. The event's
    /// range is relative to `input`.
    fn read_data(&mut self, input: &mut [u8], remaining: u64) -> Result<(usize, Option<Event>), ProtocolError> {
        let n = usize::try_from(remaining).map_or(input.len(), |r| r.min(input.len()));
        if n == 0 && remaining > 0 {
            return Ok((0, None));
        }
        let chunk = input.get_mut(..n).unwrap_or_default();
        if let Some(key) = self.mask {
            self.mask_offset = apply_mask(chunk, key, self.mask_offset);
        }
        let text = self.message == Some(true);
        if text {
            self.utf8.feed(chunk).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        let remaining = remaining.saturating_sub(n as u64);
        let fin = self.fin && remaining == 0;
        if fin && text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if remaining == 0 {
            self.state = State::Header;
            if fin {
                self.message = None;
            }
        } else {
            self.state = State::Data { remaining };
        }
        Ok((n, Some(Event::Data { range: 0..n, text, fin })))
    }

    /// Buffers a control payload; emits its event once complete.
    fn read_control(&mut self, input: &[u8], remaining: usize) -> Result<(usize, Option<Event>), ProtocolError> {
        let n = remaining.min(input.len());
        let at = self.ctrl_len;
        let ctrl = self.ctrl.get_or_insert_with(|| Box::new([0; MAX_CONTROL_PAYLOAD]));
        let (Some(dst), Some(src)) = (ctrl.get_mut(at..at + n), input.get(..n)) else {
            return Err(ProtocolError::ControlTooLong);
        };
        dst.copy_from_slice(src);
        if let Some(key) = self.mask {
            self.mask_offset = apply_mask(dst, key, self.mask_offset);
        }
        self.ctrl_len = at + n;
        if n < remaining {
            self.state = State::Control {
                remaining: remaining - n,
            };
            return Ok((n, None));
        }
        self.state = State::Header;
        let ctrl = self.ctrl.take();
        let payload = ctrl.as_deref().and_then(|c| c.get(..self.ctrl_len)).unwrap_or_default();
        let event = match self.opcode {
            OpCode::Close => {
                let (code, reason) = parse_close(payload)?;
                self.state = State::Closed;
                Event::Close { code, reason }
            }
            op => {
                let p = ControlPayload::new(payload).ok_or(ProtocolError::ControlTooLong)?;
                if op == OpCode::Ping {
                    Event::Ping(p)
                } else {
                    Event::Pong(p)
                }
            }
        };
        Ok((n, Some(event)))
    }
}

impl Event {
    /// Re-bases a data range from a sub-slice onto the caller's whole input.
    fn shifted(self, by: usize) -> Self {
        match self {
            Event::Data { range, text, fin } => Event::Data {
                range: range.start + by..range.end + by,
                text,
                fin,
            },
            other => other,
        }
    }
}

fn done(consumed: usize, event: Option<Event>) -> Decoded {
    Decoded { consumed, event }
}
