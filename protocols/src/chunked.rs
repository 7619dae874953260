//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1), the decoding side: the body of a request sent
//! with `Transfer-Encoding: chunked`, as the RD Gateway's legacy HTTP transport receives it.
//! FreeRDP 2.11 sends its `RDG_IN_DATA` body that way, one MS-TSGU packet per chunk, each written
//! as `format!("{:X}\r\n", len)`, the packet and `\r\n` (upper-case hex, no extensions, never a
//! trailer). That body never ends in normal use; a last chunk `0\r\n\r\n` ends it.
//!
//! Layout (RFC 9112 §7.1; `BWS` is optional spaces and tabs):
//!
//! ```text
//! chunked-body    = *chunk last-chunk trailer-section CRLF
//! chunk           = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size      = 1*HEXDIG                 (last-chunk: all zeros)
//! chunk-ext       = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! trailer-section = *( field-line CRLF )
//! ```
//!
//! Sans-IO: [`ChunkedDecoder::decode`] takes whatever bytes have arrived and returns how many it
//! consumed and at most one range of body data, which lies within those consumed bytes: the data
//! is handed back in place, never copied. The decoder keeps its state between calls (size line,
//! inside data, CRLF after data, trailer section, done), so any split of the stream gives the same
//! body bytes and the same error at the same stream offset ([`ChunkedDecoder::offset`]). On
//! non-empty input a call consumes something, unless the body has ended (then it is an error), so
//! a caller loops on `input[consumed..]` until it is empty.
//!
//! The client is unauthenticated at that point, so everything is bounded and nothing but a few
//! counters is kept: a chunk larger than [`ChunkLimits::max_chunk`] is refused as soon as its size
//! is read, before any of its data; a size has at most [`MAX_SIZE_DIGITS`] significant hex digits
//! (leading zeros are allowed); the size line with its extensions is at most [`MAX_SIZE_LINE`]
//! bytes; the trailer section at most [`MAX_TRAILER`]. Extensions and trailer fields are skipped,
//! not interpreted (the gateway forwards neither). Line endings must be CRLF: a bare LF or a CR
//! not followed by LF is an error, as is anything but CRLF right after a chunk's data. Errors are
//! sticky: once `decode` fails it returns that error again.

use core::ops::Range;

/// Most significant hex digits in a chunk size (leading zeros do not count): sizes are below
/// 4 GiB, so they fit a `usize` on every supported platform and never overflow.
pub const MAX_SIZE_DIGITS: u8 = 8;
/// Longest size line, its CRLF excluded: digits (leading zeros included), spaces and extensions.
pub const MAX_SIZE_LINE: usize = 256;
/// Longest trailer section, its field lines with their CRLFs, the final empty line excluded.
pub const MAX_TRAILER: usize = 4096;
/// Default largest chunk: a MS-TSGU packet is at most 68 KiB, and FreeRDP sends one per chunk.
pub const DEFAULT_MAX_CHUNK: usize = 1 << 20;
/// The last chunk with an empty trailer section: ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Size limits that bound what a client can make the decoder accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest chunk; checked against the size line, before any of the chunk's data.
    pub max_chunk: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_chunk: DEFAULT_MAX_CHUNK,
        }
    }
}

/// Result of one [`ChunkedDecoder::decode`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the next call starts at `input[consumed..]`.
    pub consumed: usize,
    /// Body data at `input[range]` of the input passed to this call, within `..consumed`; never
    /// empty. A chunk may come in several ranges (over several calls), and a range never spans two
    /// chunks.
    pub data: Option<Range<usize>>,
    /// The body is complete: the last chunk and the trailer section were read, by this call (the
    /// bytes after `consumed` are not part of the body) or an earlier one (with empty input).
    pub end: bool,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkedError {
    /// The size line does not start with a hex digit, or the size is followed by something other
    /// than an extension or CRLF (a sign, `0x`, trailing spaces, another token).
    #[error("bad chunk size line: unexpected byte {byte:#04x}")]
    BadSize { byte: u8 },
    #[error("chunk size with more than {MAX_SIZE_DIGITS} significant hex digits")]
    SizeOverflow,
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    #[error("chunk of {len} bytes exceeds the limit of {max}")]
    ChunkTooLarge { len: usize, max: usize },
    /// A bare LF, a CR followed by something else than LF, or chunk data followed by something
    /// else than CRLF. `byte` is the one found instead.
    #[error("expected CRLF, found byte {byte:#04x}")]
    MissingCrlf { byte: u8 },
    #[error("trailer section longer than {MAX_TRAILER} bytes")]
    TrailerTooLong,
    /// Bytes after the end of the body (the last chunk and its trailer section).
    #[error("data after the last chunk")]
    AfterEnd,
}

/// Where in the size line the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SizePhase {
    /// Reading hex digits; the line so far holds only digits.
    Digits,
    /// Spaces or tabs after the digits: only a `;` may follow.
    Space,
    /// Inside the extensions, until CR.
    Ext,
    /// After the CR: LF must follow.
    Lf,
}

/// Where in the trailer section the decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrailerPhase {
    /// At the start of a line: CR begins the final empty line, anything else a field line.
    LineStart,
    /// Inside a field line, until CR.
    Line,
    /// After a field line's CR.
    LineLf,
    /// After the final empty line's CR.
    EndLf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading a size line: the size so far, its significant digits, the line's length (CRLF
    /// excluded) and the phase.
    Size {
        size: usize,
        significant: u8,
        line: usize,
        phase: SizePhase,
    },
    /// Inside a chunk's data: `remaining` bytes to go (never 0).
    Data { remaining: usize },
    /// After a chunk's data: CR (`seen_cr` false) then LF.
    DataCrlf { seen_cr: bool },
    /// After the last chunk: `len` bytes of field lines so far.
    Trailer { len: usize, phase: TrailerPhase },
    /// The body is complete.
    Done,
    /// An error occurred; it is returned again by every call.
    Failed(ChunkedError),
}

const SIZE_START: State = State::Size {
    size: 0,
    significant: 0,
    line: 0,
    phase: SizePhase::Digits,
};

/// Streaming decoder of one chunked body. Keeps a few counters, never a byte of the stream.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    limits: ChunkLimits,
    state: State,
    /// Bytes of the stream consumed; after an error, the offset of the byte that caused it.
    offset: u64,
}

impl ChunkedDecoder {
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            limits,
            state: SIZE_START,
            offset: 0,
        }
    }

    pub fn limits(&self) -> ChunkLimits {
        self.limits
    }

    /// True once the last chunk and the trailer section have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of the stream consumed so far; after an error, the stream offset of the byte at which
    /// it was found (for logs, and to check that any split of the stream fails at the same place).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Decodes from `input`. Returns the bytes consumed and at most one range of body data within
    /// them. If `input` is non-empty, `consumed > 0` unless the body has ended (then the input is
    /// an [`AfterEnd`](ChunkedError::AfterEnd) error), so calling again on `input[consumed..]`
    /// until it is empty always terminates. A call returns after a range of data or at the end of
    /// the body; it consumes nothing after either.
    ///
    /// After an error every call returns that error again.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, ChunkedError> {
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let mut pos = 0;
        let result = self.step(input, &mut pos);
        match &result {
            Ok(decoded) => self.offset += decoded.consumed as u64,
            Err(e) => {
                self.offset += pos as u64;
                self.state = State::Failed(e.clone());
            }
        }
        result
    }

    /// The work of `decode`; on an error, `pos` is the index of the byte that caused it.
    fn step(&mut self, input: &[u8], pos: &mut usize) -> Result<Decoded, ChunkedError> {
        let pending = |consumed, end| Decoded {
            consumed,
            data: None,
            end,
        };
        if self.state == State::Done {
            return if input.is_empty() {
                Ok(pending(0, true))
            } else {
                Err(ChunkedError::AfterEnd)
            };
        }
        loop {
            if let State::Data { remaining } = self.state {
                let start = *pos;
                let n = remaining.min(input.len().saturating_sub(start));
                if n == 0 {
                    return Ok(pending(start, false));
                }
                *pos = start + n;
                self.state = if n == remaining {
                    State::DataCrlf { seen_cr: false }
                } else {
                    State::Data {
                        remaining: remaining - n,
                    }
                };
                return Ok(Decoded {
                    consumed: *pos,
                    data: Some(start..*pos),
                    end: false,
                });
            }
            let Some(&byte) = input.get(*pos) else {
                return Ok(pending(*pos, false));
            };
            self.state = self.advance(byte)?;
            *pos += 1;
            if self.state == State::Done {
                return Ok(pending(*pos, true));
            }
        }
    }

    /// The state after one control byte (size line, CRLF after data, trailer section).
    fn advance(&self, byte: u8) -> Result<State, ChunkedError> {
        use ChunkedError::*;
        let crlf = |expected: u8, next: State| {
            if byte == expected {
                Ok(next)
            } else {
                Err(MissingCrlf { byte })
            }
        };
        match self.state {
            State::Size {
                size,
                significant,
                line,
                phase,
            } => {
                // The line grows by any byte but the CR that ends it.
                let longer = |phase| {
                    if line >= MAX_SIZE_LINE {
                        return Err(SizeLineTooLong);
                    }
                    Ok(State::Size {
                        size,
                        significant,
                        line: line + 1,
                        phase,
                    })
                };
                match phase {
                    SizePhase::Digits => {
                        if let Some(digit) = hex_value(byte) {
                            if line >= MAX_SIZE_LINE {
                                return Err(SizeLineTooLong);
                            }
                            let significant = if size == 0 && digit == 0 { 0 } else { significant + 1 };
                            if significant > MAX_SIZE_DIGITS {
                                return Err(SizeOverflow);
                            }
                            let size = size
                                .checked_mul(16)
                                .and_then(|s| s.checked_add(usize::from(digit)))
                                .ok_or(SizeOverflow)?;
                            return Ok(State::Size {
                                size,
                                significant,
                                line: line + 1,
                                phase,
                            });
                        }
                        // The size is complete: refuse it now if it is too large, so none of the
                        // chunk is ever read.
                        if line == 0 {
                            return Err(BadSize { byte });
                        }
                        if size > self.limits.max_chunk {
                            return Err(ChunkTooLarge {
                                len: size,
                                max: self.limits.max_chunk,
                            });
                        }
                        match byte {
                            b'\r' => Ok(State::Size {
                                size,
                                significant,
                                line,
                                phase: SizePhase::Lf,
                            }),
                            b';' => longer(SizePhase::Ext),
                            b' ' | b'\t' => longer(SizePhase::Space),
                            b'\n' => Err(MissingCrlf { byte }),
                            _ => Err(BadSize { byte }),
                        }
                    }
                    SizePhase::Space => match byte {
                        b' ' | b'\t' => longer(SizePhase::Space),
                        b';' => longer(SizePhase::Ext),
                        b'\n' => Err(MissingCrlf { byte }),
                        _ => Err(BadSize { byte }),
                    },
                    SizePhase::Ext => match byte {
                        b'\r' => Ok(State::Size {
                            size,
                            significant,
                            line,
                            phase: SizePhase::Lf,
                        }),
                        b'\n' => Err(MissingCrlf { byte }),
                        _ => longer(SizePhase::Ext),
                    },
                    SizePhase::Lf => crlf(
                        b'\n',
                        if size == 0 {
                            State::Trailer {
                                len: 0,
                                phase: TrailerPhase::LineStart,
                            }
                        } else {
                            State::Data { remaining: size }
                        },
                    ),
                }
            }
            State::DataCrlf { seen_cr: false } => crlf(b'\r', State::DataCrlf { seen_cr: true }),
            State::DataCrlf { seen_cr: true } => crlf(b'\n', SIZE_START),
            State::Trailer { len, phase } => {
                let field = |phase| {
                    if len >= MAX_TRAILER {
                        return Err(TrailerTooLong);
                    }
                    Ok(State::Trailer { len: len + 1, phase })
                };
                match (phase, byte) {
                    (TrailerPhase::LineStart, b'\r') => Ok(State::Trailer {
                        len,
                        phase: TrailerPhase::EndLf,
                    }),
                    (TrailerPhase::LineStart | TrailerPhase::Line, b'\n') => Err(MissingCrlf { byte }),
                    (TrailerPhase::Line, b'\r') => field(TrailerPhase::LineLf),
                    (TrailerPhase::LineStart | TrailerPhase::Line, _) => field(TrailerPhase::Line),
                    (TrailerPhase::LineLf, b'\n') => field(TrailerPhase::LineStart),
                    (TrailerPhase::EndLf, b'\n') => Ok(State::Done),
                    (TrailerPhase::LineLf | TrailerPhase::EndLf, _) => Err(MissingCrlf { byte }),
                }
            }
            // `step` handles these without reading a byte.
            State::Data { .. } | State::Done => Ok(self.state.clone()),
            State::Failed(ref e) => Err(e.clone()),
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Appends `data` to `out` as one chunk, as FreeRDP writes them: the size in upper-case hex,
/// CRLF, the data, CRLF. Empty data appends nothing (a chunk of size 0 is the last chunk; end a
/// body with [`LAST_CHUNK`]).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 2 * core::mem::size_of::<usize>()];
    let mut start = digits.len();
    let mut n = data.len();
    for slot in digits.iter_mut().rev() {
        if n == 0 {
            break;
        }
        *slot = HEX[n & 0xF];
        n >>= 4;
        start -= 1;
    }
    out.reserve(digits.len() - start + data.len() + 4);
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `pieces` one after the other, looping on each as a caller would: the body bytes,
    /// whether it ended, and the first error with the decoder's offset then.
    fn run(limits: ChunkLimits, pieces: &[&[u8]]) -> (Vec<u8>, bool, Option<(ChunkedError, u64)>) {
        let mut dec = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        let mut end = false;
        for piece in pieces {
            let mut rest: &[u8] = piece;
            loop {
                match dec.decode(rest) {
                    Ok(d) => {
                        assert!(d.consumed <= rest.len());
                        assert!(d.consumed > 0 || rest.is_empty() || d.end);
                        if let Some(r) = d.data {
                            assert!(r.start < r.end && r.end <= d.consumed);
                            body.extend_from_slice(&rest[r]);
                        }
                        end |= d.end;
                        rest = &rest[d.consumed..];
                        if rest.is_empty() {
                            break;
                        }
                    }
                    Err(e) => {
                        assert_eq!(dec.decode(b"").unwrap_err(), e, "error not sticky");
                        return (body, end, Some((e, dec.offset())));
                    }
                }
            }
        }
        (body, end, None)
    }

    fn whole(wire: &[u8]) -> (Vec<u8>, bool, Option<(ChunkedError, u64)>) {
        run(ChunkLimits::default(), &[wire])
    }

    /// FreeRDP's `rdg_write_chunked`: `format!("{:X}\r\n")`, the packet, CRLF.
    fn freerdp_chunk(packet: &[u8]) -> Vec<u8> {
        let mut v = format!("{:X}\r\n", packet.len()).into_bytes();
        v.extend_from_slice(packet);
        v.extend_from_slice(b"\r\n");
        v
    }

    fn packets() -> Vec<Vec<u8>> {
        vec![
            // HANDSHAKE_REQUEST, version 1.0, extended auth PAA.
            vec![1, 0, 0, 0, 14, 0, 0, 0, 1, 0, 0, 0, 2, 0],
            // DATA of 3 bytes.
            vec![10, 0, 0, 0, 13, 0, 0, 0, 3, 0, b'x', b'y', b'z'],
            // A 300-byte DATA packet: a size of three hex digits (0x136).
            (0..300u32).map(|i| i as u8).collect(),
            // KEEPALIVE.
            vec![13, 0, 0, 0, 8, 0, 0, 0],
        ]
    }

    #[test]
    fn freerdp_format() {
        let mut wire = Vec::new();
        for p in packets() {
            let mut ours = Vec::new();
            encode_chunk(&p, &mut ours);
            assert_eq!(ours, freerdp_chunk(&p));
            wire.extend_from_slice(&ours);
        }
        assert!(wire.starts_with(b"E\r\n\x01\x00"));
        let (body, end, err) = whole(&wire);
        assert_eq!(body, packets().concat());
        assert!(!end && err.is_none());

        // One call: the size line and the data together, the range in place.
        let mut dec = ChunkedDecoder::new(ChunkLimits::default());
        let d = dec.decode(&wire).unwrap();
        assert_eq!(
            d,
            Decoded {
                consumed: 17,
                data: Some(3..17),
                end: false
            }
        );
        assert_eq!(dec.offset(), 17);
        // A lower-case size is fine too.
        assert_eq!(whole(b"a\r\n0123456789\r\n").0, b"0123456789");
    }

    #[test]
    fn last_chunk_ends() {
        let mut wire = freerdp_chunk(b"abc");
        wire.extend_from_slice(LAST_CHUNK);
        let mut dec = ChunkedDecoder::new(ChunkLimits::default());
        assert_eq!(dec.decode(&wire).unwrap().data, Some(3..6));
        let d = dec.decode(&wire[6..]).unwrap();
        assert_eq!(
            d,
            Decoded {
                consumed: 7,
                data: None,
                end: true
            }
        );
        assert!(dec.is_done());
        assert_eq!(
            dec.decode(b"").unwrap(),
            Decoded {
                consumed: 0,
                data: None,
                end: true
            }
        );
        assert_eq!(dec.decode(b"x"), Err(ChunkedError::AfterEnd));
        assert_eq!(dec.offset(), 13);
        assert_eq!(dec.decode(b""), Err(ChunkedError::AfterEnd));
        // Leading zeros and an extension on the last chunk.
        assert_eq!(whole(b"000;x=1\r\n\r\n"), (vec![], true, None));
        // Bytes after the end in the same input: the end is reported, then the error.
        assert_eq!(
            whole(b"1\r\na\r\n0\r\n\r\nGET"),
            (b"a".to_vec(), true, Some((ChunkedError::AfterEnd, 11)))
        );
    }

    #[test]
    fn every_split_gives_the_same_bytes() {
        let mut wire = Vec::new();
        for p in packets() {
            encode_chunk(&p, &mut wire);
        }
        wire.extend_from_slice(b"5;name=\"quoted;value\" ; other\r\nhello\r\n");
        wire.extend_from_slice(b"0\r\nX-Checksum: 1\r\nX-Other: two\r\n\r\n");
        let want = whole(&wire);
        assert!(want.1 && want.2.is_none());
        assert_eq!(want.0, [packets().concat(), b"hello".to_vec()].concat());
        for cut in 0..=wire.len() {
            assert_eq!(
                run(ChunkLimits::default(), &[&wire[..cut], &wire[cut..]]),
                want,
                "cut at {cut}"
            );
            for cut2 in (cut..=wire.len()).step_by(7) {
                let pieces = [&wire[..cut], &wire[cut..cut2], &wire[cut2..]];
                assert_eq!(run(ChunkLimits::default(), &pieces), want, "cuts at {cut}, {cut2}");
            }
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(ChunkLimits::default(), &bytes), want, "byte by byte");
    }

    #[test]
    fn extensions_are_ignored() {
        assert_eq!(whole(b"3;a\r\nabc\r\n").0, b"abc");
        assert_eq!(whole(b"3 ;a=b;c=\"d\\\"e\"\r\nabc\r\n").0, b"abc");
        assert_eq!(whole(b"3\t; a = b\r\nabc\r\n").0, b"abc");
        // The longest line is accepted, one byte more is not.
        let mut line = b"3;".to_vec();
        line.resize(MAX_SIZE_LINE, b'x');
        let ok = [line.as_slice(), b"\r\nabc\r\n"].concat();
        assert_eq!(whole(&ok), (b"abc".to_vec(), false, None));
        let long = [line.as_slice(), b"x\r\nabc\r\n"].concat();
        assert_eq!(
            whole(&long).2,
            Some((ChunkedError::SizeLineTooLong, MAX_SIZE_LINE as u64))
        );
        // Leading zeros count towards the line.
        let zeros = vec![b'0'; MAX_SIZE_LINE + 1];
        assert_eq!(
            whole(&zeros).2,
            Some((ChunkedError::SizeLineTooLong, MAX_SIZE_LINE as u64))
        );
    }

    #[test]
    fn trailers_are_skipped() {
        let wire = b"2\r\nhi\r\n0\r\nExpires: never\r\nX-A: b\r\n\r\n";
        assert_eq!(whole(wire), (b"hi".to_vec(), true, None));
        // The longest trailer section is accepted, one byte more is not.
        let mut field = b"X: ".to_vec();
        field.resize(MAX_TRAILER - 2, b'y');
        let ok = [b"0\r\n", field.as_slice(), b"\r\n\r\n"].concat();
        assert_eq!(whole(&ok), (vec![], true, None));
        let long = [b"0\r\n", field.as_slice(), b"y\r\n\r\n"].concat();
        assert_eq!(
            whole(&long).2,
            Some((ChunkedError::TrailerTooLong, 3 + MAX_TRAILER as u64))
        );
        // Bare LF and a lone CR in a trailer.
        let bare = whole(b"0\r\nX: y\n\r\n").2;
        assert_eq!(bare, Some((ChunkedError::MissingCrlf { byte: b'\n' }, 7)));
        let lone_cr = whole(b"0\r\nX: y\rz\r\n\r\n").2;
        assert_eq!(lone_cr, Some((ChunkedError::MissingCrlf { byte: b'z' }, 8)));
        assert_eq!(
            whole(b"0\r\n\rx").2,
            Some((ChunkedError::MissingCrlf { byte: b'x' }, 4))
        );
    }

    #[test]
    fn bad_sizes() {
        use ChunkedError::BadSize;
        for (wire, byte, at) in [
            (&b"\r\n"[..], b'\r', 0),
            (b";x\r\n", b';', 0),
            (b"-1\r\n", b'-', 0),
            (b"+1\r\n", b'+', 0),
            (b" 1\r\n", b' ', 0),
            (b"0x10\r\n", b'x', 1),
            (b"g\r\n", b'g', 0),
            (b"1 \r\n", b'\r', 2),
            (b"1 x\r\n", b'x', 2),
            (b"1,2\r\n", b',', 1),
        ] {
            let got = whole(wire);
            assert_eq!(
                got.2,
                Some((BadSize { byte }, at)),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
            assert!(got.0.is_empty());
        }
    }

    #[test]
    fn size_overflow() {
        assert_eq!(whole(b"FFFFFFFFFFFFFFFFF\r\n").2, Some((ChunkedError::SizeOverflow, 8)));
        assert_eq!(whole(b"100000000\r\n").2, Some((ChunkedError::SizeOverflow, 8)));
        // Eight significant digits after any number of zeros are a size (here too large).
        let max = ChunkLimits { max_chunk: usize::MAX };
        let mut dec = ChunkedDecoder::new(max);
        assert_eq!(dec.decode(b"0000FFFFFFFF\r\n").unwrap().consumed, 14);
        assert_eq!(dec.decode(b"ab").unwrap().data, Some(0..2));
        assert_eq!(
            whole(b"0000FFFFFFFF\r\n").2,
            Some((
                ChunkedError::ChunkTooLarge {
                    len: 0xFFFF_FFFF,
                    max: DEFAULT_MAX_CHUNK
                },
                12
            ))
        );
    }

    #[test]
    fn oversize_chunk_refused_before_its_data() {
        let limits = ChunkLimits { max_chunk: 16 };
        let mut wire = freerdp_chunk(&[7; 16]);
        let at = wire.len() as u64 + 2;
        wire.extend_from_slice(&freerdp_chunk(&[9; 17]));
        let (body, end, err) = run(limits, &[&wire]);
        assert_eq!(body, [7; 16]);
        assert!(!end);
        assert_eq!(err, Some((ChunkedError::ChunkTooLarge { len: 17, max: 16 }, at)));
        // Refused at the byte after the digits, whatever follows: none of it is read.
        let mut dec = ChunkedDecoder::new(limits);
        assert_eq!(
            dec.decode(b"11"),
            Ok(Decoded {
                consumed: 2,
                data: None,
                end: false
            })
        );
        assert_eq!(dec.decode(b";"), Err(ChunkedError::ChunkTooLarge { len: 17, max: 16 }));
        // A zero limit allows the last chunk only.
        let zero = ChunkLimits { max_chunk: 0 };
        assert_eq!(run(zero, &[LAST_CHUNK]), (vec![], true, None));
        assert_eq!(
            run(zero, &[b"1\r\n"]).2.map(|e| e.0),
            Some(ChunkedError::ChunkTooLarge { len: 1, max: 0 })
        );
    }

    #[test]
    fn missing_crlf() {
        use ChunkedError::MissingCrlf;
        for (wire, byte, at) in [
            (&b"3\r\nabcX"[..], b'X', 6),
            (b"3\r\nabc\rX", b'X', 7),
            (b"3\r\nabc\n", b'\n', 6),
            (b"3\nabc\r\n", b'\n', 1),
            (b"3\rabc\r\n", b'a', 2),
            (b"3;x\nabc\r\n", b'\n', 3),
            (b"3 \nabc\r\n", b'\n', 2),
            (b"0\n\r\n", b'\n', 1),
        ] {
            assert_eq!(
                whole(wire).2,
                Some((MissingCrlf { byte }, at)),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // The data before a missing CRLF was handed over (it was within its chunk).
        assert_eq!(whole(b"3\r\nabcd").0, b"abc");
    }

    #[test]
    fn progress_and_empty_input() {
        let mut dec = ChunkedDecoder::new(ChunkLimits::default());
        assert_eq!(
            dec.decode(b""),
            Ok(Decoded {
                consumed: 0,
                data: None,
                end: false
            })
        );
        for &b in b"A\r\n" {
            assert_eq!(dec.decode(&[b]).unwrap().consumed, 1);
        }
        assert_eq!(
            dec.decode(b""),
            Ok(Decoded {
                consumed: 0,
                data: None,
                end: false
            })
        );
        // Data up to the chunk's end only: the CRLF after it is left for the next call.
        let d = dec.decode(b"0123456789\r\n").unwrap();
        assert_eq!(
            d,
            Decoded {
                consumed: 10,
                data: Some(0..10),
                end: false
            }
        );
        assert_eq!(dec.decode(b"\r\n").unwrap().consumed, 2);
    }

    #[test]
    fn encode_chunk_sizes() {
        for len in [0usize, 1, 9, 10, 15, 16, 255, 256, 4095, 65_545] {
            let data = vec![b'z'; len];
            let mut out = b"prefix".to_vec();
            encode_chunk(&data, &mut out);
            let want = if len == 0 { vec![] } else { freerdp_chunk(&data) };
            assert_eq!(out[6..], want[..], "len {len}");
        }
    }
}
