use super::sim::{self, Seeded};
use super::*;
use portcullis_protocols::ws::{self, OpCode};

/// A client's masked frame.
fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let mut header = [0u8; ws::MAX_HEADER_LEN];
    let h = ws::encode_header(&mut header, true, opcode, payload.len() as u64, Some(key));
    out.extend_from_slice(&header[..h]);
    let start = out.len();
    out.extend_from_slice(payload);
    ws::apply_mask(&mut out[start..], key, 0);
}

/// One gathered write of what the relay has for the target, appended to `into`, all of it taken.
/// False when it had nothing.
fn write_to_raw(relay: &mut Relay, into: &mut Vec<u8>) -> bool {
    let mut slices = [IoSlice::new(&[]); MAX_RANGES];
    let count = relay.raw_transmit_vectored(&mut slices);
    if count == 0 {
        return false;
    }
    for s in &slices[..count] {
        into.extend_from_slice(s);
    }
    let n: usize = slices[..count].iter().map(|s| s.len()).sum();
    relay.raw_sent(n);
    true
}

/// What a simple run produced.
struct Run {
    end: End,
    to_raw: Vec<u8>,
    raw_writes: usize,
    fin: bool,
    to_peer: Vec<u8>,
}

/// Relays `input` from a client in reads of `chunk` bytes until the session ends. The raw side
/// takes every write whole and is silent until FIN, then EOF; with `eof` the client hangs up
/// after its input.
fn relay(input: &[u8], chunk: usize, buf_size: usize, eof: bool) -> Run {
    let relay = Relay::websocket(Role::Server, Limits::default(), buf_size, 1);
    run_relay(relay, input, chunk, usize::MAX, eof)
}

/// `relay` with a relay of the caller's, and raw writes that take at most `write` bytes.
fn run_relay(mut relay: Relay, input: &[u8], chunk: usize, write: usize, eof: bool) -> Run {
    let (mut pos, mut run) = (
        0,
        Run {
            end: End::PeerGone,
            to_raw: Vec::new(),
            raw_writes: 0,
            fin: false,
            to_peer: Vec::new(),
        },
    );
    for _ in 0..1_000_000 {
        if let Some(Step::Ended(end)) = relay.poll_event() {
            run.end = end;
            return run;
        }
        if let Some(out) = relay.raw_transmit() {
            assert!(!run.fin, "write after FIN");
            let n = out.len().min(write);
            run.to_raw.extend_from_slice(&out[..n]);
            run.raw_writes += 1;
            relay.raw_sent(n);
        }
        if let Some(buf) = relay.peer_recv_buf() {
            let n = chunk.min(buf.len()).min(input.len() - pos);
            if n > 0 {
                buf[..n].copy_from_slice(&input[pos..pos + n]);
                pos += n;
                relay.peer_received(n);
            } else if eof {
                relay.peer_received(0);
            } else {
                relay.peer_recv_blocked();
            }
        }
        if let Some(out) = relay.peer_transmit() {
            run.to_peer.extend_from_slice(out);
            let n = out.len();
            relay.peer_sent(n);
        }
        if relay.raw_recv_buf().is_some() {
            if run.fin {
                relay.raw_received(0);
            } else {
                relay.raw_recv_blocked();
            }
        }
        if relay.raw_shutdown_wanted() {
            run.fin = true;
            relay.raw_shut();
        }
        if relay.peer_close_wanted() {
            relay.peer_closed();
        }
    }
    panic!("the relay did not end");
}

/// Payload of uneven frames, split across reads at every kind of place, reaches the raw side
/// whole, in order and in far fewer writes than frames; the peer's Close comes after all of it,
/// and FIN only then.
#[test]
fn payloads_of_many_frames_are_gathered_into_few_writes() {
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200usize {
        let payload: Vec<u8> = (0..(i * 37) % 3000 + 1).map(|j| (i + j) as u8).collect();
        frame(&mut input, OpCode::Binary, &payload, [i as u8, 7, 0x5a, 3]);
        expected.extend_from_slice(&payload);
        if i % 50 == 0 {
            frame(&mut input, OpCode::Ping, b"hi", [1, 2, 3, 4]);
        }
    }
    frame(&mut input, OpCode::Close, &1000u16.to_be_bytes(), [9, 9, 9, 9]);
    for (chunk, buf_size) in [
        (1, 1024),
        (7, 1024),
        (1000, 4096),
        (16 * 1024, 64 * 1024),
        (1 << 20, 64 * 1024),
    ] {
        let run = relay(&input, chunk, buf_size, false);
        assert_eq!(run.end, End::PeerClosed(Some(1000)), "chunk {chunk}");
        assert!(run.to_raw == expected, "chunk {chunk}: payload differs");
        assert!(run.fin, "chunk {chunk}: no FIN");
        // One write per frame would be 200; gathered, a write carries most of a buffer.
        assert!(
            run.raw_writes * (buf_size / 3) <= expected.len(),
            "chunk {chunk}, buffer {buf_size}: {} writes for {} bytes in 200 frames",
            run.raw_writes,
            expected.len()
        );
        // Pongs went back (one per ping, or only the latest of those read together), then the
        // Close echo.
        let pongs = run.to_peer.windows(4).filter(|w| *w == [0x8a, 2, b'h', b'i']).count();
        assert!((1..=4).contains(&pongs), "chunk {chunk}: {pongs} pongs");
        if chunk <= 1000 {
            assert_eq!(pongs, 4, "chunk {chunk}");
        }
        assert_eq!(
            &run.to_peer[run.to_peer.len() - 4..],
            &[0x88, 2, 0x03, 0xe8],
            "chunk {chunk}"
        );
    }
}

/// A frame the tunnel refuses ends the session, but data from the frames before it is still
/// delivered, before FIN.
#[test]
fn data_before_a_refused_frame_is_delivered() {
    let mut input = Vec::new();
    frame(&mut input, OpCode::Binary, b"first ", [1, 2, 3, 4]);
    frame(&mut input, OpCode::Binary, b"second", [5, 6, 7, 8]);
    frame(&mut input, OpCode::Text, b"no text in a tunnel", [9, 9, 9, 9]);
    frame(&mut input, OpCode::Binary, b"never", [1, 1, 1, 1]);
    let run = relay(&input, 1 << 20, 4096, false);
    assert_eq!(run.end, End::Local(EndReason::TextFrameRefused));
    assert_eq!(run.to_raw, b"first second");
    assert!(run.fin);
    // Close 1003 with its reason went back.
    assert_eq!(&run.to_peer[..4], &[0x88, 2 + 18, 0x03, 0xeb]);
}

/// A client that vanishes without a Close: what it sent before is delivered, then FIN.
#[test]
fn data_before_the_peer_vanishes_is_delivered() {
    let mut input = Vec::new();
    frame(&mut input, OpCode::Binary, b"last ", [1, 2, 3, 4]);
    frame(&mut input, OpCode::Binary, b"words", [5, 6, 7, 8]);
    for chunk in [3, 1 << 20] {
        let run = relay(&input, chunk, 4096, true);
        assert_eq!(run.end, End::PeerGone);
        assert_eq!(run.to_raw, b"last words", "chunk {chunk}");
        assert!(run.fin, "chunk {chunk}");
    }
}

/// The buffer contract: a raw read lands behind room for a TLS record header and the frame
/// header, the frame is written from that same place (no copy), and the payload fills whole TLS
/// records; peer payload is unmasked and written to the raw side from where it was read.
#[test]
fn frames_are_built_and_forwarded_in_place() {
    let mut relay = Relay::websocket(Role::Server, Limits::default(), 64 * 1024, 1);
    let into = relay.raw_recv_buf().unwrap();
    let (read_at, cap) = (into.as_ptr() as usize, into.len());
    assert_eq!(cap, 4 * framing::TLS_RECORD - 4, "a frame fills four records");
    into[..3].copy_from_slice(b"abc");
    relay.raw_received(3);
    let sent = relay.peer_transmit().unwrap();
    assert_eq!(sent, [0x82, 3, b'a', b'b', b'c']);
    assert_eq!(
        sent.as_ptr() as usize + 2,
        read_at,
        "the header went in front, in place"
    );
    relay.peer_sent(5);

    let mut input = Vec::new();
    frame(&mut input, OpCode::Binary, b"hello", [1, 2, 3, 4]);
    let into = relay.peer_recv_buf().unwrap();
    let landed = into.as_ptr() as usize;
    into[..input.len()].copy_from_slice(&input);
    relay.peer_received(input.len());
    assert!(relay.peer_recv_blocked(), "gathered payload goes to the writer");
    let out = relay.raw_transmit().unwrap();
    assert_eq!(out, b"hello");
    assert_eq!(out.as_ptr() as usize, landed + 6, "unmasked where it was read");
}

/// An idle relay holds no buffer: memory follows traffic, not the number of sessions.
#[test]
fn idle_relays_hold_no_buffers() {
    let mut relay = Relay::websocket(Role::Server, Limits::default(), 64 * 1024, 1);
    assert_eq!(relay.buffered_bytes(), 0);
    assert!(relay.peer_recv_buf().is_some() && relay.raw_recv_buf().is_some());
    assert!(relay.buffered_bytes() > 2 * 64 * 1024);
    assert!(!relay.peer_recv_blocked());
    relay.raw_recv_blocked();
    assert_eq!(relay.buffered_bytes(), 0);
}

/// The relay's own state is what every idle session keeps (with the task that drives it): the
/// room for a pong, and the decoder's for a control frame, are allocated only while one is in
/// flight; our ping is a flag. 1032 bytes with all three inline, 664 without.
#[test]
#[cfg(target_pointer_width = "64")]
fn the_relay_state_an_idle_session_keeps_is_small() {
    assert!(std::mem::size_of::<Relay>() <= 680, "{}", std::mem::size_of::<Relay>());
}

/// Deterministic simulation over many seeds: random scripts, chunking, readiness and partial
/// writes on both sides (see `sim.rs` for the promises checked). A failing seed replays exactly.
#[test]
fn simulated_sessions_keep_every_promise() {
    let seeds: u64 = std::env::var("RELAY_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    let mut ends = std::collections::HashMap::new();
    for seed in 1..=seeds {
        let outcome = std::panic::catch_unwind(|| sim::run(&mut Seeded(seed))).unwrap_or_else(|_| {
            panic!("simulation seed {seed} failed (RELAY_SIM_SEEDS={seed} reruns seeds 1..={seed})")
        });
        let kind = format!("{:?}", outcome.end);
        *ends
            .entry(kind.split('(').next().unwrap_or_default().to_owned())
            .or_insert(0) += 1;
    }
    // The seeds reach every way a session ends.
    for kind in ["PeerClosed", "RawClosed", "PeerGone", "RawError", "Protocol", "Local"] {
        assert!(ends.contains_key(kind), "no seed ended {kind}: {ends:?}");
    }
}

/// Fuzz inputs drive the same simulation; the empty input is the shortest session.
#[test]
fn simulation_from_bytes() {
    sim::run(&mut sim::FromBytes(&[]));
    sim::run(&mut sim::FromBytes(b"\x01\x02\x03\xff\x80\x10\x00\x07"));
}

/// The target's last bytes and the gateway's Close reach a client whose transport holds what it
/// is given until flushed (TLS does): after the Close is written the transport is still flushed.
#[test]
fn the_close_is_flushed_after_the_target_closes() {
    let mut relay = Relay::websocket(Role::Server, Limits::default(), 4096, 1);
    let into = relay.raw_recv_buf().unwrap();
    into[..4].copy_from_slice(b"tail");
    relay.raw_received(4);
    let n = relay.peer_transmit().unwrap().len();
    relay.peer_sent(n);
    relay.raw_recv_buf().unwrap();
    relay.raw_received(0);
    assert!(!relay.peer_flush_wanted(), "the Close goes out first");
    let close = relay.peer_transmit().unwrap().to_vec();
    assert_eq!(&close[..4], &[0x88, 2 + 28, 0x03, 0xe8]);
    relay.peer_sent(close.len());
    assert!(
        relay.peer_flush_wanted(),
        "the data frame and the Close must be flushed"
    );
}

/// A toy first-message filter: `-` bytes pass as they come; then `#`, a length byte and that many
/// bytes are held until whole and passed upper-cased; then everything passes. Anything else is
/// refused.
#[derive(Default)]
struct Upper {
    calls: usize,
    done: bool,
}

impl PeerFilter for Upper {
    fn inspect(&mut self, held: &mut [u8]) -> Result<Filtered, String> {
        self.calls += 1;
        let dashes = held.iter().take_while(|&&b| b == b'-').count();
        let rest = &mut held[dashes..];
        let whole = rest.len() >= 2 && rest.len() >= 2 + usize::from(rest[1]);
        match rest {
            [] | [b'#'] => Ok(Filtered::Release(dashes)),
            [b'#', _, ..] if !whole => Ok(Filtered::Release(dashes)),
            [b'#', len, body @ ..] => {
                body[..usize::from(*len)].make_ascii_uppercase();
                self.done = true;
                Ok(Filtered::Done)
            }
            _ => Err(format!("unexpected {:?}", rest[0] as char)),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn filtered_relay(buf_size: usize, max_held: usize) -> Relay {
    let mut relay = Relay::websocket(Role::Server, Limits::default(), buf_size, 1);
    relay.filter_peer(Box::<Upper>::default(), max_held);
    relay
}

/// A filter sees the peer's payload before the raw side does, however it arrives (frames split
/// across reads, pings between them, partial raw writes, small buffers): what it passes on comes
/// through at once, what it holds only once released, changed; after it is done, nothing is
/// inspected any more.
#[test]
fn a_filter_holds_and_rewrites_the_first_message() {
    let stream = [b"---".as_slice(), b"#", &[200], &[b'x'; 200], b"tail-#after"].concat();
    let expected = [b"---".as_slice(), b"#", &[200], &[b'X'; 200], b"tail-#after"].concat();
    for (frames, chunk, write, buf_size) in [
        (1, 1 << 20, usize::MAX, 64 * 1024),
        (7, 1, 3, 1024),
        (50, 13, 5, 1024),
        (3, 100, usize::MAX, 4096),
    ] {
        let mut input = Vec::new();
        for (i, piece) in stream.chunks(stream.len().div_ceil(frames)).enumerate() {
            frame(&mut input, OpCode::Binary, piece, [i as u8, 1, 2, 3]);
            frame(&mut input, OpCode::Ping, b"p", [4, 3, 2, 1]);
        }
        frame(&mut input, OpCode::Close, &1000u16.to_be_bytes(), [9, 9, 9, 9]);
        let relay = filtered_relay(buf_size, 1024);
        let run = run_relay(relay, &input, chunk, write, false);
        assert_eq!(run.end, End::PeerClosed(Some(1000)), "{frames} frames, chunk {chunk}");
        assert!(
            run.to_raw == expected,
            "{frames} frames, chunk {chunk}: {:?}",
            String::from_utf8_lossy(&run.to_raw)
        );
    }
    // Bytes read with the HTTP head go through the filter too; its findings can be read back.
    let mut relay = filtered_relay(64 * 1024, 1024);
    let mut early = Vec::new();
    frame(&mut early, OpCode::Binary, b"-#\x02ab", [1, 2, 3, 4]);
    relay.received_early(&early);
    assert!(relay.peer_recv_buf().is_some());
    assert!(relay.peer_recv_blocked());
    assert_eq!(relay.raw_transmit(), Some(&b"-#\x02AB"[..]));
    assert!(relay.peer_filter::<Upper>().is_some_and(|f| f.done && f.calls == 1));
    assert!(relay.peer_filter::<String>().is_none());
}

/// Nothing a filter holds reaches the raw side unless it releases it: not when the peer closes or
/// vanishes mid-message, not when the filter refuses (the session then ends with Close 1008 as a
/// protocol error), not when it would hold more than it may.
#[test]
fn what_a_filter_holds_goes_nowhere_unless_released() {
    let mut input = Vec::new();
    frame(&mut input, OpCode::Binary, b"--#\x09abc", [1, 2, 3, 4]);
    let closed = [input.clone(), {
        let mut c = Vec::new();
        frame(&mut c, OpCode::Close, &1000u16.to_be_bytes(), [9, 9, 9, 9]);
        c
    }]
    .concat();
    for chunk in [1, 1 << 20] {
        let run = run_relay(filtered_relay(1024, 64), &closed, chunk, usize::MAX, false);
        assert_eq!(
            (run.end, run.to_raw.as_slice()),
            (End::PeerClosed(Some(1000)), &b"--"[..])
        );
        let run = run_relay(filtered_relay(1024, 64), &input, chunk, usize::MAX, true);
        assert_eq!((run.end, run.to_raw.as_slice()), (End::PeerGone, &b"--"[..]));
        assert!(run.fin);
    }
    let mut refused = Vec::new();
    frame(&mut refused, OpCode::Binary, b"--#\x09ab", [1, 2, 3, 4]);
    frame(&mut refused, OpCode::Binary, b"!never", [1, 2, 3, 4]);
    let mut refused_at_once = Vec::new();
    frame(&mut refused_at_once, OpCode::Binary, b"-x", [1, 2, 3, 4]);
    for chunk in [1, 5, 1 << 20] {
        // Refused as a whole message: its dashes are part of what it held.
        let run = run_relay(filtered_relay(1024, 64), &refused_at_once, chunk, usize::MAX, false);
        assert!(
            matches!(run.end, End::Protocol(ref e) if e.contains("unexpected")),
            "{:?}",
            run.end
        );
        assert!(run.to_raw.len() <= 1 && run.fin, "chunk {chunk}");
        // Close 1008 with its reason.
        let reason = b"refused by the gateway";
        assert!(run
            .to_peer
            .ends_with(&[&[0x88, 2 + reason.len() as u8, 0x03, 0xf0][..], reason].concat()));
    }
    // `#` and what follows are held (the toy filter waits for its 9 bytes) until the client leaves.
    let run = run_relay(filtered_relay(1024, 64), &refused, 1 << 20, usize::MAX, true);
    assert_eq!((run.end, run.to_raw.as_slice()), (End::PeerGone, &b"--"[..]));
    // Holding more than allowed ends the session.
    let mut long = Vec::new();
    frame(
        &mut long,
        OpCode::Binary,
        &[b"#\xff".as_slice(), &[b'y'; 100]].concat(),
        [1, 2, 3, 4],
    );
    let run = run_relay(filtered_relay(1024, 64), &long, 1 << 20, usize::MAX, false);
    assert!(
        matches!(run.end, End::Protocol(ref e) if e.contains("held over 64")),
        "{:?}",
        run.end
    );
    assert!(run.to_raw.is_empty());
}

/// The zero-copy path, instrumented: with TLS in the relay, client records of one full frame each
/// are opened where they were read and written to the target from there (the slices handed to
/// the target's write lie in the memory the reads filled, and the relay's move counter stays at
/// 0); target bytes are sealed where they were read (each record's payload is the memory the
/// vectored read filled, at the same address), whatever the read sizes.
#[test]
fn bulk_records_cross_the_relay_without_a_copy_either_way() {
    use crate::tls::Version;
    for version in [Version::Tls13, Version::Tls12] {
        for chunk in [1000, 7001, 16_645, 40_000, 1 << 20] {
            let (gateway, mut client) = sim::record_pair(version);
            let mut relay = Relay::websocket(Role::Server, Limits::default(), 64 * 1024, 1);
            relay.start_tls(Box::new(gateway), &[], &[]);
            // 64 frames of 16,376 bytes: each masked frame (8-byte header) fills one record.
            let mut wire = Vec::new();
            let mut sent = Vec::new();
            for i in 0..64u32 {
                let payload: Vec<u8> = (0..16_376u32).map(|j| (i * 7 + j * 13) as u8).collect();
                let mut f = Vec::new();
                frame(&mut f, OpCode::Binary, &payload, [1, 2, 3, i as u8]);
                assert_eq!(f.len(), crate::tls::MAX_PLAINTEXT);
                client
                    .seal_message(&mut wire, crate::tls::ContentType::ApplicationData, &f)
                    .unwrap();
                sent.extend_from_slice(&payload);
            }
            let (mut pos, mut got) = (0, Vec::new());
            loop {
                if write_to_raw(&mut relay, &mut got) {
                    continue;
                }
                let Some(into) = relay.peer_recv_buf() else {
                    panic!("no read and nothing to write")
                };
                let n = chunk.min(into.len()).min(wire.len() - pos);
                if n == 0 {
                    // The client has nothing more now: what was gathered goes to the target.
                    if relay.peer_recv_blocked() {
                        continue;
                    }
                    break;
                }
                into[..n].copy_from_slice(&wire[pos..pos + n]);
                pos += n;
                relay.peer_received(n);
            }
            assert!(got == sent, "{version:?} chunk {chunk}: payload differs");
            assert_eq!(
                relay.counters().copied,
                0,
                "{version:?} chunk {chunk}: payload was moved"
            );
            assert_eq!(relay.partial_record(), 0);

            // Target → client: every record is sealed where its bytes were read.
            let target: Vec<u8> = (0..200_000u32).map(|j| (j * 31) as u8).collect();
            let (mut tpos, mut plain) = (0, Vec::new());
            while tpos < target.len() {
                let (mut slots, count) = relay.raw_recv_vectored();
                assert!(count >= 1);
                let mut at = Vec::new();
                let mut n = 0;
                for slot in slots[..count].iter_mut() {
                    let take = slot.len().min(target.len() - tpos - n).min(chunk);
                    slot[..take].copy_from_slice(&target[tpos + n..tpos + n + take]);
                    at.push((slot.as_ptr() as usize, take));
                    n += take;
                    if take < slot.len() {
                        break;
                    }
                }
                tpos += n;
                relay.raw_received(n);
                let mut slices = [IoSlice::new(&[]); MAX_RANGES];
                let count = relay.peer_transmit_vectored(&mut slices);
                let filled = at.iter().filter(|(_, t)| *t > 0).count();
                assert_eq!(count, filled, "one record per filled slot");
                let mut sent = 0;
                for (s, (addr, take)) in slices[..count].iter().zip(&at) {
                    // The record ends where its payload ended, plus the trailer: same memory.
                    let record = s.as_ptr() as usize..s.as_ptr() as usize + s.len();
                    assert!(
                        record.contains(addr) && record.contains(&(addr + take - 1)),
                        "sealed elsewhere"
                    );
                    let mut rec = s.to_vec();
                    let (_, opened) = client.open(&mut rec).unwrap().unwrap();
                    let crate::tls::Opened::Data(r) = opened else { panic!() };
                    // Unmasked server frame: a 4-byte header for these sizes (2 for small ones).
                    let h = if rec[r.start + 1] == 126 { 4 } else { 2 };
                    plain.extend_from_slice(&rec[r.start + h..r.end]);
                    sent += s.len();
                }
                relay.peer_sent(sent);
            }
            assert!(plain == target, "{version:?} chunk {chunk}: target bytes differ");
        }
    }
}

/// What came before the relay started is all delivered, in order, and nothing else: plaintext
/// read with the request head big enough that its payload is already handed to the target's
/// writer, then records the TLS stream had read and not opened, carrying more payload and the
/// client's Close. (The payload of those records waits behind the first write; a buffer released
/// with ranges still pointing into it must never be written from.)
#[test]
fn everything_read_before_the_relay_started_reaches_the_target_once() {
    use crate::tls::{ContentType, Version};
    let (gateway, mut client) = sim::record_pair(Version::Tls13);
    let mut relay = Relay::websocket(Role::Server, Limits::default(), 16 * 1024, 1);
    let first: Vec<u8> = (0..40_000u32).map(|i| (i * 7) as u8).collect();
    let second: Vec<u8> = (0..9_000u32).map(|i| (i * 11) as u8).collect();
    let mut plain = Vec::new();
    for part in first.chunks(10_000) {
        frame(&mut plain, OpCode::Binary, part, [1, 2, 3, 4]);
    }
    let mut inner = Vec::new();
    frame(&mut inner, OpCode::Binary, &second, [5, 6, 7, 8]);
    frame(&mut inner, OpCode::Close, &1000u16.to_be_bytes(), [9, 9, 9, 9]);
    let mut cipher = Vec::new();
    client
        .seal_message(&mut cipher, ContentType::ApplicationData, &inner)
        .unwrap();
    relay.start_tls(Box::new(gateway), &plain, &cipher);
    let mut to_raw = Vec::new();
    let mut fin = false;
    for _ in 0..100 {
        if write_to_raw(&mut relay, &mut to_raw) {
            continue;
        }
        if relay.raw_shutdown_wanted() {
            relay.raw_shut();
            fin = true;
            break;
        }
        break;
    }
    assert!(fin, "no FIN after the client's Close");
    assert_eq!(to_raw.len(), first.len() + second.len());
    assert!(to_raw == [first, second].concat(), "payload out of order or altered");
    assert_eq!(relay.buffered_bytes(), 0, "the inbound buffer went back");
}

/// A session ending cleanly under TLS: the client's Close came, the target's side is shut both
/// ways; our Close and close_notify leave in one write (one syscall and one wake-up of the client
/// fewer), and the transport may close once it is out.
#[test]
fn our_close_and_close_notify_leave_in_one_write() {
    use crate::tls::{ContentType, Opened, Version};
    for version in [Version::Tls13, Version::Tls12] {
        let (gateway, mut client) = sim::record_pair(version);
        let mut relay = Relay::websocket(Role::Server, Limits::default(), 16 * 1024, 1);
        let mut close = Vec::new();
        frame(&mut close, OpCode::Close, &1000u16.to_be_bytes(), [9, 9, 9, 9]);
        let mut cipher = Vec::new();
        client
            .seal_message(&mut cipher, ContentType::ApplicationData, &close)
            .unwrap();
        relay.start_tls(Box::new(gateway), &[], &cipher);
        let mut to_raw = Vec::new();
        while write_to_raw(&mut relay, &mut to_raw) {}
        assert!(
            relay.raw_shutdown_wanted(),
            "{version:?}: no FIN after the client's Close"
        );
        relay.raw_shut();
        relay.raw_recv_buf().unwrap();
        relay.raw_received(0);
        let mut wire = relay.peer_transmit().expect("our Close").to_vec();
        relay.peer_sent(wire.len());
        assert!(relay.peer_transmit().is_none(), "{version:?}: a second write");
        assert!(relay.peer_flush_wanted());
        assert!(relay.peer_close_wanted() && relay.peer_close_ready());
        assert!(!relay.begin_peer_close(), "{version:?}: close_notify queued twice");
        // The client reads our Close, then close_notify, from that one write.
        let (len, opened) = client.open(&mut wire).unwrap().unwrap();
        let Opened::Data(r) = opened else {
            panic!("{version:?}: {opened:?}")
        };
        assert_eq!(&wire[r.start..r.start + 4], &[0x88, 2, 0x03, 0xe8]);
        let mut rest = wire[len..].to_vec();
        let (n, opened) = client.open(&mut rest).unwrap().unwrap();
        assert!(matches!(opened, Opened::Closed), "{version:?}: {opened:?}");
        assert_eq!(n, rest.len());
    }
}
