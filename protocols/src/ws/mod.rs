//! WebSocket (RFC 6455) codec, sans-IO: frame headers, masking, a streaming decoder that relays
//! data payload in place, a whole-message assembler, and handshake keys. No extensions are
//! supported, so the RSV bits must always be clear.

pub mod assembler;
pub mod control;
pub mod decoder;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use assembler::{Message, MessageAssembler};
pub use control::{encode_close, encode_control, ControlPayload};
pub use decoder::{Decoded, Decoder, Event, Limits, Role, DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_MAX_MESSAGE};
pub use error::ProtocolError;
pub use frame::{encode_header, header_len, CloseCode, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
pub use handshake::{accept_key, client_key, is_valid_client_key};
pub use mask::{apply_mask, apply_mask_bytewise};
pub use utf8::Utf8Validator;
