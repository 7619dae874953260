//! Whole-message reassembly on top of [`Decoder`], for endpoints that handle small messages
//! (the web terminal control channel) rather than relaying streams.

use super::control::ControlPayload;
use super::decoder::{Decoder, Event, Limits, Role};
use super::error::ProtocolError;
use super::frame::CloseCode;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(ControlPayload),
    Pong(ControlPayload),
    Close { code: Option<CloseCode>, reason: String },
}

/// Collects data chunks into messages. Memory is bounded by `Limits::max_message`, which the
/// decoder enforces from frame headers before any payload is buffered here.
#[derive(Clone, Debug)]
pub struct MessageAssembler {
    decoder: Decoder,
    buf: Vec<u8>,
}

impl MessageAssembler {
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            decoder: Decoder::new(role, limits),
            buf: Vec::new(),
        }
    }

    /// Feeds bytes (unmasked in place); returns bytes consumed and at most one complete message.
    /// Same progress guarantee and error/close behaviour as [`Decoder::decode`].
    pub fn feed(&mut self, input: &mut [u8]) -> Result<(usize, Option<Message>), ProtocolError> {
        let decoded = self.decoder.decode(input)?;
        let message = match decoded.event {
            None => None,
            Some(Event::Data { range, text, fin }) => {
                // The decoder's range always lies within `input`.
                self.buf.extend_from_slice(input.get(range).unwrap_or_default());
                if !fin {
                    None
                } else if text {
                    // Already validated incrementally; re-checking is cheap and avoids `unsafe`.
                    let bytes = core::mem::take(&mut self.buf);
                    Some(Message::Text(
                        String::from_utf8(bytes).map_err(|_| ProtocolError::InvalidUtf8)?,
                    ))
                } else {
                    Some(Message::Binary(core::mem::take(&mut self.buf)))
                }
            }
            Some(Event::Ping(p)) => Some(Message::Ping(p)),
            Some(Event::Pong(p)) => Some(Message::Pong(p)),
            Some(Event::Close { code, reason }) => Some(Message::Close {
                code,
                reason: reason.as_str().to_owned(),
            }),
        };
        Ok((decoded.consumed, message))
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}
