//! Decoding errors, each tied to the close code the endpoint must answer with (RFC 6455 §7.4.1).

use super::frame::CloseCode;

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
    #[error("client frame is not masked")]
    UnmaskedFrame,
    #[error("server frame is masked")]
    MaskedFrame,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooLarge { max: u64 },
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    #[error("new data message while a fragmented message is in progress")]
    ExpectedContinuation,
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error("invalid close frame payload")]
    InvalidClosePayload,
    #[error("payload length not minimally encoded")]
    NonMinimalLength,
    /// A protocol carried inside the messages (the RD Gateway's packets) is broken.
    #[error("{0}")]
    Tunnel(&'static str),
}

impl ProtocolError {
    /// The status code to put in the Close frame sent in response to this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::TOO_BIG,
            Self::ReservedBits
            | Self::UnknownOpcode(_)
            | Self::UnmaskedFrame
            | Self::MaskedFrame
            | Self::FragmentedControl
            | Self::ControlTooLong
            | Self::UnexpectedContinuation
            | Self::ExpectedContinuation
            | Self::InvalidClosePayload
            | Self::NonMinimalLength
            | Self::Tunnel(_) => CloseCode::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        use ProtocolError::*;
        let cases = [
            (ReservedBits, 1002),
            (UnknownOpcode(3), 1002),
            (UnmaskedFrame, 1002),
            (MaskedFrame, 1002),
            (FragmentedControl, 1002),
            (ControlTooLong, 1002),
            (FrameTooLarge { len: 2, max: 1 }, 1009),
            (MessageTooLarge { max: 1 }, 1009),
            (UnexpectedContinuation, 1002),
            (ExpectedContinuation, 1002),
            (InvalidUtf8, 1007),
            (InvalidClosePayload, 1002),
            (NonMinimalLength, 1002),
        ];
        for (err, code) in cases {
            assert_eq!(err.close_code(), CloseCode(code), "{err}");
            assert!(err.close_code().is_valid_on_wire());
        }
    }
}
