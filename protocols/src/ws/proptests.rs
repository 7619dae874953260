//! Property tests: encode/decode round trips in both roles, split-invariance, hostile input.

use proptest::prelude::*;
use proptest::sample::Index;

use super::tests::frame;
use super::*;

#[derive(Clone, Debug)]
enum Plan {
    /// A data message cut into fragments at `cuts`, optionally with a Ping between fragments.
    Data {
        text: bool,
        payload: Vec<u8>,
        cuts: Vec<Index>,
        interleave: bool,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

fn plan() -> impl Strategy<Value = Plan> {
    let control = proptest::collection::vec(any::<u8>(), 0..=125);
    let cuts = proptest::collection::vec(any::<Index>(), 0..4);
    prop_oneof![
        ("\\PC{0,60}", cuts.clone(), any::<bool>()).prop_map(|(s, cuts, interleave)| Plan::Data {
            text: true,
            payload: s.into_bytes(),
            cuts,
            interleave
        }),
        (proptest::collection::vec(any::<u8>(), 0..300), cuts, any::<bool>()).prop_map(
            |(payload, cuts, interleave)| Plan::Data {
                text: false,
                payload,
                cuts,
                interleave
            }
        ),
        control.clone().prop_map(Plan::Ping),
        control.prop_map(Plan::Pong),
    ]
}

fn close() -> impl Strategy<Value = Option<(u16, String)>> {
    let code = prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999];
    proptest::option::of((code, "\\PC{0,40}"))
}

/// Encodes the plans as the peer of `role` would (masking iff we are the server) and returns the
/// wire bytes with the messages an assembler must produce from them.
fn encode(plans: &[Plan], close: &Option<(u16, String)>, role: Role, seed: u32) -> (Vec<u8>, Vec<Message>) {
    let mut frames = 0u32;
    let mut key = || {
        frames += 1;
        (role == Role::Server).then(|| seed.wrapping_add(frames.wrapping_mul(0x9e37_79b9)).to_le_bytes())
    };
    let (mut wire, mut want) = (Vec::new(), Vec::new());
    let ping = ControlPayload::new(b"i").unwrap();
    for p in plans {
        match p {
            Plan::Data {
                text,
                payload,
                cuts,
                interleave,
            } => {
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
                points.sort_unstable();
                points.push(payload.len());
                let (mut start, mut op) = (0, if *text { OpCode::Text } else { OpCode::Binary });
                for (i, &end) in points.iter().enumerate() {
                    let fin = i + 1 == points.len();
                    wire.extend(frame(fin, op, &payload[start..end], key()));
                    if *interleave && !fin {
                        wire.extend(frame(true, OpCode::Ping, ping.as_bytes(), key()));
                        want.push(Message::Ping(ping));
                    }
                    (start, op) = (end, OpCode::Continuation);
                }
                want.push(if *text {
                    Message::Text(String::from_utf8(payload.clone()).unwrap())
                } else {
                    Message::Binary(payload.clone())
                });
            }
            Plan::Ping(b) => {
                encode_control(&mut wire, OpCode::Ping, b, key());
                want.push(Message::Ping(ControlPayload::new(b).unwrap()));
            }
            Plan::Pong(b) => {
                encode_control(&mut wire, OpCode::Pong, b, key());
                want.push(Message::Pong(ControlPayload::new(b).unwrap()));
            }
        }
    }
    if let Some((code, reason)) = close {
        encode_close(&mut wire, CloseCode(*code), reason, key());
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        want.push(Message::Close {
            code: Some(CloseCode(*code)),
            reason: reason[..end].into(),
        });
    }
    (wire, want)
}

type Outcome = (Vec<Message>, Option<ProtocolError>);

/// Feeds `wire` to an assembler in pieces ending at `cuts` (plus the end), checking progress.
fn assemble(role: Role, limits: Limits, wire: &[u8], cuts: &[usize]) -> Outcome {
    let mut asm = MessageAssembler::new(role, limits);
    let mut buf = wire.to_vec();
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(wire.len())).collect();
    bounds.push(wire.len());
    bounds.sort_unstable();
    let (mut out, mut start) = (Vec::new(), 0);
    for end in bounds {
        while start < end {
            let piece = &mut buf[start..end];
            match asm.feed(piece) {
                Ok((used, msg)) => {
                    assert!(used > 0 || msg.is_some(), "no progress");
                    assert!(used <= end - start);
                    out.extend(msg);
                    start += used;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn byte_by_byte(wire: &[u8]) -> Vec<usize> {
    (1..wire.len()).collect()
}

fn split_points(cuts: &[Index], len: usize) -> Vec<usize> {
    cuts.iter().map(|c| c.index(len + 1)).collect()
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![
        Just(Limits::default()),
        Just(Limits {
            max_frame_payload: 100,
            max_message: 200
        }),
        Just(Limits {
            max_frame_payload: 0,
            max_message: 0
        }),
    ]
}

proptest! {
    #[test]
    fn round_trip_in_both_roles(
        plans in proptest::collection::vec(plan(), 0..6),
        close in close(),
        role in role(),
        seed in any::<u32>(),
        cuts in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let (wire, want) = encode(&plans, &close, role, seed);
        let whole = assemble(role, Limits::default(), &wire, &[]);
        prop_assert_eq!(&whole, &(want, None));
        let split = assemble(role, Limits::default(), &wire, &split_points(&cuts, wire.len()));
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(&assemble(role, Limits::default(), &wire, &byte_by_byte(&wire)), &whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_ignore_splits(
        wire in proptest::collection::vec(any::<u8>(), 0..400),
        role in role(),
        limits in limits(),
        cuts in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let whole = assemble(role, limits, &wire, &[]);
        let split = assemble(role, limits, &wire, &split_points(&cuts, wire.len()));
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(&assemble(role, limits, &wire, &byte_by_byte(&wire)), &whole);
    }

    #[test]
    fn corrupted_streams_never_panic_and_ignore_splits(
        plans in proptest::collection::vec(plan(), 1..5),
        role in role(),
        limits in limits(),
        seed in any::<u32>(),
        flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..4),
        cuts in proptest::collection::vec(any::<Index>(), 0..8),
    ) {
        let (mut wire, _) = encode(&plans, &None, role, seed);
        for (at, x) in flips {
            if !wire.is_empty() {
                let i = at.index(wire.len());
                wire[i] ^= x;
            }
        }
        let whole = assemble(role, limits, &wire, &[]);
        let split = assemble(role, limits, &wire, &split_points(&cuts, wire.len()));
        prop_assert_eq!(&split, &whole);
        prop_assert_eq!(&assemble(role, limits, &wire, &byte_by_byte(&wire)), &whole);
    }
}
