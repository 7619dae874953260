//! Decoder and assembler behaviour: RFC 6455 §5.7 vectors, every error, streaming edge cases.

use super::*;
use ProtocolError::*;

pub(super) const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One frame on the wire, masked with `mask` when given.
pub(super) fn frame(fin: bool, op: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0; MAX_HEADER_LEN];
    let n = encode_header(&mut out, fin, op, payload.len() as u64, mask);
    out.truncate(n);
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[n..], key, 0);
    }
    out
}

/// Events with data copied out of the input, for comparison.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Data(Vec<u8>, bool, bool),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// Decodes `bytes` in one buffer, checking the progress guarantee on every call.
fn events_with(role: Role, limits: Limits, bytes: &[u8]) -> (Vec<Ev>, Option<ProtocolError>) {
    let mut dec = Decoder::new(role, limits);
    let mut buf = bytes.to_vec();
    let mut at = 0;
    let mut out = Vec::new();
    while at < buf.len() {
        let input = &mut buf[at..];
        let d = match dec.decode(input) {
            Ok(d) => d,
            Err(e) => return (out, Some(e)),
        };
        assert!(d.consumed > 0 || d.event.is_some(), "no progress");
        assert!(d.consumed <= input.len());
        out.extend(d.event.map(|e| match e {
            Event::Data { range, text, fin } => Ev::Data(input[range].to_vec(), text, fin),
            Event::Ping(p) => Ev::Ping(p.as_bytes().to_vec()),
            Event::Pong(p) => Ev::Pong(p.as_bytes().to_vec()),
            Event::Close { code, reason } => Ev::Close(code.map(|c| c.0), reason.as_str().into()),
        }));
        at += d.consumed;
    }
    (out, None)
}

fn events(role: Role, bytes: &[u8]) -> (Vec<Ev>, Option<ProtocolError>) {
    events_with(role, Limits::default(), bytes)
}

fn error(role: Role, bytes: &[u8]) -> ProtocolError {
    events(role, bytes).1.expect("an error")
}

fn data(bytes: &[u8], text: bool, fin: bool) -> Ev {
    Ev::Data(bytes.to_vec(), text, fin)
}

#[test]
fn rfc_unmasked_text() {
    let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(frame(true, OpCode::Text, b"Hello", None), wire);
    assert_eq!(events(Role::Client, &wire), (vec![data(b"Hello", true, true)], None));
}

#[test]
fn rfc_masked_text_is_unmasked_in_place() {
    let mut wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(frame(true, OpCode::Text, b"Hello", Some(KEY)), wire);
    let mut dec = Decoder::new(Role::Server, Limits::default());
    let d = dec.decode(&mut wire).unwrap();
    let want = Event::Data {
        range: 6..11,
        text: true,
        fin: true,
    };
    assert_eq!((d.consumed, d.event), (11, Some(want)));
    assert_eq!(&wire[6..], b"Hello");
}

#[test]
fn rfc_fragmented_text() {
    let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    let want = vec![data(b"Hel", true, false), data(b"lo", true, true)];
    assert_eq!(events(Role::Client, &wire), (want, None));
}

#[test]
fn rfc_ping_and_masked_pong() {
    let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
    assert_eq!(events(Role::Client, &ping), (vec![Ev::Ping(b"Hello".to_vec())], None));
    let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    assert_eq!(events(Role::Server, &pong), (vec![Ev::Pong(b"Hello".to_vec())], None));
}

#[test]
fn rfc_256_byte_and_64k_binary() {
    for len in [256usize, 65536] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let wire = frame(true, OpCode::Binary, &payload, None);
        let head: &[u8] = if len == 256 {
            &[0x82, 0x7e, 0x01, 0x00]
        } else {
            &[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0, 0]
        };
        assert!(wire.starts_with(head));
        assert_eq!(events(Role::Client, &wire), (vec![data(&payload, false, true)], None));
    }
}

#[test]
fn partial_payload_is_relayed_as_it_arrives() {
    let wire = frame(true, OpCode::Binary, b"abcdef", Some(KEY));
    let mut dec = Decoder::new(Role::Server, Limits::default());
    let mut part = wire[..9].to_vec(); // header (6) + "abc"
    let d = dec.decode(&mut part).unwrap();
    assert_eq!(d.consumed, 9);
    assert_eq!(
        d.event,
        Some(Event::Data {
            range: 6..9,
            text: false,
            fin: false
        })
    );
    assert_eq!(&part[6..], b"abc");
    let mut rest = wire[9..].to_vec();
    let d = dec.decode(&mut rest).unwrap();
    assert_eq!(
        d.event,
        Some(Event::Data {
            range: 0..3,
            text: false,
            fin: true
        })
    );
    assert_eq!(rest, b"def", "mask offset carried across calls");
}

#[test]
fn one_event_per_call_even_with_more_input() {
    let mut wire = frame(true, OpCode::Binary, b"ab", None);
    wire.extend(frame(true, OpCode::Binary, b"cd", None));
    let mut dec = Decoder::new(Role::Client, Limits::default());
    let d = dec.decode(&mut wire).unwrap();
    assert_eq!(d.consumed, 4);
    let d = dec.decode(&mut wire[4..]).unwrap();
    assert_eq!((d.consumed, d.event.is_some()), (4, true));
}

#[test]
fn empty_data_frames_still_mark_boundaries() {
    let mut wire = frame(false, OpCode::Text, b"", None);
    wire.extend(frame(true, OpCode::Continuation, b"", None));
    wire.extend(frame(true, OpCode::Binary, b"", None));
    let want = vec![data(b"", true, false), data(b"", true, true), data(b"", false, true)];
    assert_eq!(events(Role::Client, &wire), (want, None));
}

#[test]
fn control_frames_interleave_with_fragments() {
    let mut wire = frame(false, OpCode::Binary, b"ab", None);
    wire.extend(frame(true, OpCode::Ping, b"p", None));
    wire.extend(frame(true, OpCode::Pong, b"", None));
    wire.extend(frame(true, OpCode::Continuation, b"c", None));
    let want = vec![
        data(b"ab", false, false),
        Ev::Ping(b"p".to_vec()),
        Ev::Pong(vec![]),
        data(b"c", false, true),
    ];
    assert_eq!(events(Role::Client, &wire), (want, None));
}

#[test]
fn header_split_byte_by_byte() {
    let wire = frame(true, OpCode::Binary, &[7; 300], Some(KEY));
    let mut dec = Decoder::new(Role::Server, Limits::default());
    // 8 header bytes (2 + 16-bit length + key), none of which yields an event.
    for (i, &b) in wire[..8].iter().enumerate() {
        let d = dec.decode(&mut [b]).unwrap();
        assert_eq!((d.consumed, d.event), (1, None), "header byte {i}");
    }
    let mut last = [wire[8]];
    let d = dec.decode(&mut last).unwrap();
    assert_eq!(
        d.event,
        Some(Event::Data {
            range: 0..1,
            text: false,
            fin: false
        })
    );
    assert_eq!(last, [7]);
}

#[test]
fn close_frames() {
    let close = |payload: &[u8]| frame(true, OpCode::Close, payload, None);
    assert_eq!(
        events(Role::Client, &close(b"")),
        (vec![Ev::Close(None, String::new())], None)
    );
    let (evs, err) = events(Role::Client, &close(b"\x03\xe8bye"));
    assert_eq!((evs, err), (vec![Ev::Close(Some(1000), "bye".into())], None));

    let mut out = Vec::new();
    encode_close(&mut out, CloseCode::POLICY, "nope", Some(KEY));
    assert_eq!(events(Role::Server, &out).0, vec![Ev::Close(Some(1008), "nope".into())]);
}

#[test]
fn input_after_close_is_swallowed() {
    let mut wire = frame(true, OpCode::Close, b"", None);
    wire.extend(frame(true, OpCode::Text, b"late", None));
    wire.extend([0xff; 3]); // garbage, not even a valid header
    let mut dec = Decoder::new(Role::Client, Limits::default());
    assert_eq!(dec.decode(&mut wire).unwrap().consumed, 2);
    assert!(dec.is_closed());
    let d = dec.decode(&mut wire[2..]).unwrap();
    assert_eq!((d.consumed, d.event), (wire.len() - 2, None));
}

#[test]
fn errors_are_sticky() {
    let mut dec = Decoder::new(Role::Client, Limits::default());
    assert_eq!(dec.decode(&mut [0xc1, 0x00]), Err(ReservedBits));
    let mut good = frame(true, OpCode::Text, b"ok", None);
    assert_eq!(dec.decode(&mut good), Err(ReservedBits));
}

#[test]
fn framing_errors() {
    assert_eq!(error(Role::Client, &[0xc1, 0x00]), ReservedBits);
    assert_eq!(error(Role::Client, &[0xa2, 0x00]), ReservedBits);
    assert_eq!(error(Role::Client, &[0x87, 0x00]), UnknownOpcode(7));
    assert_eq!(error(Role::Client, &[0x8f, 0x00]), UnknownOpcode(15));
    assert_eq!(
        error(Role::Server, &frame(true, OpCode::Text, b"x", None)),
        UnmaskedFrame
    );
    assert_eq!(
        error(Role::Client, &frame(true, OpCode::Text, b"x", Some(KEY))),
        MaskedFrame
    );
    assert_eq!(
        error(Role::Client, &frame(false, OpCode::Ping, b"", None)),
        FragmentedControl
    );
    assert_eq!(
        error(Role::Client, &frame(true, OpCode::Ping, &[0; 126], None)),
        ControlTooLong
    );
    assert_eq!(error(Role::Client, &[0x82, 0x7e, 0x00, 0x05]), NonMinimalLength);
    assert_eq!(
        error(Role::Client, &[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0x01, 0]),
        NonMinimalLength
    );
    assert_eq!(
        error(Role::Client, &[0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        MaskedFrame
    );
    assert_eq!(
        error(Role::Client, &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
        NonMinimalLength
    );
}

#[test]
fn sequence_errors() {
    let cont = frame(true, OpCode::Continuation, b"x", None);
    assert_eq!(error(Role::Client, &cont), UnexpectedContinuation);
    let mut wire = frame(false, OpCode::Text, b"a", None);
    wire.extend(frame(true, OpCode::Binary, b"b", None));
    assert_eq!(error(Role::Client, &wire), ExpectedContinuation);
    // A finished message closes the sequence: a continuation after it is unexpected.
    let mut wire = frame(true, OpCode::Text, b"a", None);
    wire.extend(&cont);
    assert_eq!(error(Role::Client, &wire), UnexpectedContinuation);
}

#[test]
fn size_limits_are_checked_on_the_header() {
    let limits = Limits {
        max_frame_payload: 10,
        max_message: 15,
    };
    // Only the header is supplied: the frame is refused before any payload arrives.
    let header = &frame(true, OpCode::Binary, &[0; 11], None)[..2];
    let (evs, err) = events_with(Role::Client, limits, header);
    assert_eq!((evs, err), (vec![], Some(FrameTooLarge { len: 11, max: 10 })));
    let huge = [0x82, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let err = events_with(Role::Client, limits, &huge).1;
    assert_eq!(
        err,
        Some(FrameTooLarge {
            len: u64::MAX >> 1,
            max: 10
        })
    );

    let mut wire = frame(false, OpCode::Binary, &[0; 10], None);
    wire.extend(frame(true, OpCode::Ping, b"", None)); // control frames don't count
    wire.extend(frame(true, OpCode::Continuation, &[0; 5], None));
    assert_eq!(events_with(Role::Client, limits, &wire).1, None);
    wire.extend(frame(false, OpCode::Binary, &[0; 10], None));
    wire.extend(&frame(false, OpCode::Continuation, &[0; 6], None)[..2]);
    let (evs, err) = events_with(Role::Client, limits, &wire);
    assert_eq!((evs.len(), err), (4, Some(MessageTooLarge { max: 15 })));
}

#[test]
fn unlimited_limits_accept_the_largest_length() {
    let limits = Limits {
        max_frame_payload: u64::MAX,
        max_message: u64::MAX,
    };
    let mut wire = frame(false, OpCode::Binary, b"x", None);
    wire.extend([0x00, 0x7f, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2]);
    let (evs, err) = events_with(Role::Client, limits, &wire);
    assert_eq!(err, None);
    assert_eq!(evs.last(), Some(&data(&[1, 2], false, false)));
}

#[test]
fn utf8_errors() {
    let bad = frame(true, OpCode::Text, &[b'a', 0xff], None);
    assert_eq!(events(Role::Client, &bad), (vec![], Some(InvalidUtf8)));
    // A code point split across fragments is fine...
    let euro = "€".as_bytes();
    let mut wire = frame(false, OpCode::Text, &euro[..1], None);
    wire.extend(frame(true, OpCode::Continuation, &euro[1..], None));
    let want = vec![data(&euro[..1], true, false), data(&euro[1..], true, true)];
    assert_eq!(events(Role::Client, &wire), (want, None));
    // ...but one truncated at the end of the message is not.
    let truncated = frame(true, OpCode::Text, &euro[..2], None);
    assert_eq!(events(Role::Client, &truncated).1, Some(InvalidUtf8));
    // Binary messages are not validated.
    let bin = frame(true, OpCode::Binary, &[0xff], None);
    assert_eq!(events(Role::Client, &bin).1, None);
}

#[test]
fn invalid_close_payloads() {
    for payload in [&b"\x03"[..], b"\x03\xed", b"\x03\xee", b"\x00\x00"] {
        let wire = frame(true, OpCode::Close, payload, None);
        assert_eq!(error(Role::Client, &wire), InvalidClosePayload, "{payload:x?}");
    }
    // A valid code with a reason that is not UTF-8: 1007, not 1002.
    let wire = frame(true, OpCode::Close, b"\x0b\xb8\xff", None);
    assert_eq!(error(Role::Client, &wire), InvalidUtf8);
    assert_eq!(InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
}

#[test]
fn assembler_collects_messages() {
    let mut wire = frame(false, OpCode::Text, "hé".as_bytes(), Some(KEY));
    wire.extend(frame(true, OpCode::Ping, b"p", Some(KEY)));
    wire.extend(frame(true, OpCode::Continuation, "llo".as_bytes(), Some([1, 2, 3, 4])));
    wire.extend(frame(true, OpCode::Binary, &[0, 255], Some(KEY)));
    let mut close = Vec::new();
    encode_close(&mut close, CloseCode::NORMAL, "done", Some(KEY));
    wire.extend(close);
    let mut asm = MessageAssembler::new(Role::Server, Limits::default());
    let mut got = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let (used, msg) = asm.feed(&mut wire[at..]).unwrap();
        got.extend(msg);
        at += used;
    }
    let want = vec![
        Message::Ping(ControlPayload::new(b"p").unwrap()),
        Message::Text("héllo".into()),
        Message::Binary(vec![0, 255]),
        Message::Close {
            code: Some(CloseCode::NORMAL),
            reason: "done".into(),
        },
    ];
    assert_eq!(got, want);
}

/// A masked control frame that arrives a byte at a time is collected whole (its room exists only
/// while it is being collected), then the next one from scratch.
#[test]
fn control_frames_split_byte_by_byte() {
    let mut wire = frame(true, OpCode::Ping, b"split ping", Some(KEY));
    wire.extend(frame(true, OpCode::Pong, b"pong", Some(KEY)));
    let mut dec = Decoder::new(Role::Server, Limits::default());
    let mut got = Vec::new();
    for &b in &wire {
        let d = dec.decode(&mut [b]).unwrap();
        assert_eq!(d.consumed, 1);
        match d.event {
            Some(Event::Ping(p)) => got.push(Ev::Ping(p.as_bytes().to_vec())),
            Some(Event::Pong(p)) => got.push(Ev::Pong(p.as_bytes().to_vec())),
            None => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, vec![Ev::Ping(b"split ping".to_vec()), Ev::Pong(b"pong".to_vec())]);
}
