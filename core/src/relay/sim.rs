//! Deterministic simulation of a relay between a scripted WebSocket client and a scripted raw
//! target, in the spirit of sozu's and FoundationDB's simulation tests: every choice (script,
//! chunk sizes, which side is ready, partial writes) comes from a `Chooser`, so a seed (unit tests)
//! or a fuzz input (`fuzz/` target `relay`) replays exactly. It drives the relay the way the
//! engine's driver does and checks the relay's promises; a broken promise panics with the reason.
//!
//! The client's transport buffers like TLS does: written bytes reach the client when the relay
//! flushes or closes it, or with a later write. In half of the runs the relay seals and opens TLS
//! records itself (`Relay::start_tls`, the gateway's zero-copy path): the client then seals its
//! frames into records of any size (with key updates between them) and opens the gateway's, and
//! the driver uses the vectored calls. Besides, with TLS: what the gateway sends is valid records
//! ending with close_notify, and bulk payload is never moved inside the relay's buffers.
//!
//! Promises checked: every byte each side sent is delivered once and in order (all of it when the
//! session ends cleanly, a prefix otherwise); nothing is written to the target after FIN; the
//! gateway sends at most one Close and nothing after it, echoing the client's code; a pong answers
//! a ping; the session ends exactly once, within a bounded number of passes; and an idle relay
//! holds no buffer.

use super::{End, Relay, Step};
use crate::audit::EndReason;
use crate::tls::{Algorithm, ContentType, Keys, Opened, RecordLayer, Rekey, Version};
use portcullis_protocols::ws::{self, CloseCode, Decoder, Event, Limits, OpCode, Role};

/// Where the simulation's choices come from.
pub trait Chooser {
    /// A number in `0..below` (`below` ≥ 1).
    fn below(&mut self, below: usize) -> usize;

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// True once the choices have run out: the run then finishes fast (whole chunks, no waits).
    fn exhausted(&self) -> bool {
        false
    }

    /// How many of `left` bytes move now: between 1 and all of them.
    fn chunk(&mut self, left: usize) -> usize {
        if self.exhausted() {
            left
        } else {
            1 + self.below(left)
        }
    }
}

/// Choices from a seed (xorshift64*).
pub struct Seeded(pub u64);

impl Chooser for Seeded {
    fn below(&mut self, below: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below.max(1)
    }
}

/// Choices read from fuzz input; zeros once it runs out, with whole chunks and no waits, so a
/// long script left by a short input still ends fast.
pub struct FromBytes<'a>(pub &'a [u8]);

impl Chooser for FromBytes<'_> {
    fn exhausted(&self) -> bool {
        self.0.is_empty()
    }

    fn below(&mut self, below: usize) -> usize {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        let v = if below > 256 {
            let Some((&c, rest)) = self.0.split_first() else {
                return usize::from(b) % below.max(1);
            };
            self.0 = rest;
            usize::from(b) << 8 | usize::from(c)
        } else {
            usize::from(b)
        };
        v % below.max(1)
    }
}

/// How the client's script ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientEnd {
    Close(u16),
    Eof,
    Text,
    Invalid,
    /// Sends nothing more; answers the gateway's Close with its own.
    StayOpen,
}

/// How the target's script ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetEnd {
    Eof,
    Error,
    /// Sends nothing more until it gets FIN, then EOF (an echo server).
    StayOpen,
}

/// What a run produced, for tests that look closer.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    pub to_target: Vec<u8>,
    pub to_client: Vec<u8>,
    pub target_writes: usize,
    pub pongs: usize,
}

struct Client {
    /// Frames the client sends, as bytes, and the data payload each carries.
    wire: Vec<u8>,
    pos: usize,
    /// Data payload sent before the terminating frame.
    payload: Vec<u8>,
    end: ClientEnd,
    decoder: Decoder,
    /// Frames received from the gateway, bytes not yet decoded.
    inbox: Vec<u8>,
    data: Vec<u8>,
    pongs: usize,
    ping_payloads: Vec<Vec<u8>>,
    close_received: Option<Option<u16>>,
    after_close: usize,
    echo_queued: bool,
    masked: bool,
}

/// The client's side of TLS, when the relay seals and opens records itself.
struct ClientTls {
    records: RecordLayer,
    /// How much of `Client::wire` has been sealed into `cipher`.
    sealed: usize,
    /// The client's records, as sent.
    cipher: Vec<u8>,
    pos: usize,
    /// Records from the gateway, not yet whole.
    inbox: Vec<u8>,
    /// The gateway sent close_notify.
    closed: bool,
}

/// Both ends' key schedules: keys by generation, the same on both ends.
pub struct SimSchedule {
    tx: u8,
    rx: u8,
}

fn sim_keys(seed: u8) -> Keys {
    Keys {
        algorithm: Algorithm::Aes128Gcm,
        key: (0..16).map(|i| seed.wrapping_mul(13).wrapping_add(i)).collect(),
        iv: std::array::from_fn(|i| seed ^ (i as u8)),
    }
}

impl Rekey for SimSchedule {
    fn next_tx(&mut self) -> Result<Keys, String> {
        self.tx = self.tx.wrapping_add(2);
        Ok(sim_keys(self.tx))
    }
    fn next_rx(&mut self) -> Result<Keys, String> {
        self.rx = self.rx.wrapping_add(2);
        Ok(sim_keys(self.rx))
    }
}

/// A connection's two record layers: (the gateway's, the client's).
pub fn record_pair(version: Version) -> (RecordLayer, RecordLayer) {
    let gateway = RecordLayer::new(version, (0, sim_keys(1)), (0, sim_keys(2)))
        .unwrap_or_else(|e| panic!("{e}"))
        .with_rekey(Box::new(SimSchedule { tx: 1, rx: 2 }));
    let client = RecordLayer::new(version, (0, sim_keys(2)), (0, sim_keys(1)))
        .unwrap_or_else(|e| panic!("{e}"))
        .with_rekey(Box::new(SimSchedule { tx: 2, rx: 1 }));
    (gateway, client)
}

impl ClientTls {
    /// Seals what the client's script added since the last call, in records of chosen sizes,
    /// sometimes with a key update (asking the gateway to update too, or not) in between.
    fn seal_new(&mut self, ch: &mut impl Chooser, wire: &[u8]) {
        while self.sealed < wire.len() {
            let left = wire.len() - self.sealed;
            let n = if ch.exhausted() {
                left.min(crate::tls::MAX_PLAINTEXT)
            } else {
                (1 + ch.below(crate::tls::MAX_PLAINTEXT)).min(left)
            };
            let chunk = &wire[self.sealed..self.sealed + n];
            self.records
                .seal_message(&mut self.cipher, ContentType::ApplicationData, chunk)
                .unwrap_or_else(|e| panic!("client seal: {e}"));
            self.sealed += n;
            if self.records.version() == Version::Tls13 && !ch.exhausted() && ch.chance(3) {
                let request = ch.chance(50);
                self.records
                    .seal_key_update(&mut self.cipher, request)
                    .unwrap_or_else(|e| panic!("client key update: {e}"));
            }
        }
    }

    /// Opens what the gateway sent; returns the plaintext.
    fn open(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.inbox.extend_from_slice(bytes);
        let mut plain = Vec::new();
        let mut pos = 0;
        loop {
            let opened = self
                .records
                .open(&mut self.inbox[pos..])
                .unwrap_or_else(|e| panic!("the gateway sent a bad record: {e}"));
            let Some((len, what)) = opened else { break };
            match what {
                Opened::Data(r) => plain.extend_from_slice(&self.inbox[pos + r.start..pos + r.end]),
                Opened::Nothing => {}
                Opened::Closed => self.closed = true,
            }
            pos += len;
        }
        self.inbox.drain(..pos);
        plain
    }
}

struct Target {
    data: Vec<u8>,
    pos: usize,
    end: TargetEnd,
    received: Vec<u8>,
    writes: usize,
    fin: bool,
}

fn frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8], masked: bool, key: [u8; 4]) {
    let key = masked.then_some(key);
    let mut header = [0u8; ws::MAX_HEADER_LEN];
    let h = ws::encode_header(&mut header, fin, opcode, payload.len() as u64, key);
    out.extend_from_slice(&header[..h]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = key {
        ws::apply_mask(&mut out[start..], key, 0);
    }
}

fn bytes(ch: &mut impl Chooser, len: usize) -> Vec<u8> {
    let salt = ch.below(256) as u8;
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

fn script_client(ch: &mut impl Chooser, buf: usize, masked: bool) -> Client {
    let mut wire = Vec::new();
    let mut payload = Vec::new();
    let mut pings = Vec::new();
    for i in 0..ch.below(24) {
        let key = [i as u8, 0x5a, ch.below(256) as u8, 3];
        match ch.below(20) {
            0 | 1 => {
                let p = {
                    let n = ch.below(20);
                    bytes(ch, n)
                };
                frame(&mut wire, true, OpCode::Ping, &p, masked, key);
                pings.push(p);
            }
            2 => frame(&mut wire, true, OpCode::Pong, b"x", masked, key),
            3 => {
                // A message in fragments, a ping between them.
                let a = {
                    let n = ch.below(buf);
                    bytes(ch, n)
                };
                let b = {
                    let n = ch.below(buf);
                    bytes(ch, n)
                };
                frame(&mut wire, false, OpCode::Binary, &a, masked, key);
                frame(&mut wire, true, OpCode::Ping, b"mid", masked, key);
                pings.push(b"mid".to_vec());
                frame(&mut wire, true, OpCode::Continuation, &b, masked, key);
                payload.extend_from_slice(&a);
                payload.extend_from_slice(&b);
            }
            _ => {
                let len = match ch.below(4) {
                    0 => ch.below(8),
                    1 => ch.below(200),
                    _ => ch.below(3 * buf),
                };
                let p = bytes(ch, len);
                frame(&mut wire, true, OpCode::Binary, &p, masked, key);
                payload.extend_from_slice(&p);
            }
        }
    }
    let end = match ch.below(6) {
        0 => ClientEnd::Eof,
        1 => ClientEnd::Text,
        2 => ClientEnd::Invalid,
        3 => ClientEnd::StayOpen,
        4 => ClientEnd::Close(4000 + ch.below(999) as u16),
        _ => ClientEnd::Close(1000),
    };
    let key = [9, 8, 7, 6];
    match end {
        ClientEnd::Close(code) => frame(&mut wire, true, OpCode::Close, &code.to_be_bytes(), masked, key),
        ClientEnd::Text => frame(&mut wire, true, OpCode::Text, b"no text in a tunnel", masked, key),
        // Reserved bits set: a protocol error.
        ClientEnd::Invalid => wire.extend_from_slice(&[0xf2, if masked { 0x80 } else { 0 }, 1, 2, 3, 4]),
        ClientEnd::Eof | ClientEnd::StayOpen => {}
    }
    // Whatever follows the last frame must never reach the target.
    if !matches!(end, ClientEnd::Eof | ClientEnd::StayOpen) {
        frame(&mut wire, true, OpCode::Binary, b"after the end", masked, key);
    }
    Client {
        wire,
        pos: 0,
        payload,
        end,
        decoder: Decoder::new(if masked { Role::Client } else { Role::Server }, Limits::default()),
        inbox: Vec::new(),
        data: Vec::new(),
        pongs: 0,
        ping_payloads: pings,
        close_received: None,
        after_close: 0,
        echo_queued: false,
        masked,
    }
}

impl Client {
    /// Decodes what the gateway sent so far.
    fn take(&mut self, bytes: &[u8]) {
        if self.close_received.is_some() {
            self.after_close += bytes.len();
            return;
        }
        self.inbox.extend_from_slice(bytes);
        let mut pos = 0;
        while pos < self.inbox.len() {
            let d = self
                .decoder
                .decode(&mut self.inbox[pos..])
                .unwrap_or_else(|e| panic!("the gateway sent a bad frame: {e}"));
            let base = pos;
            pos += d.consumed;
            match d.event {
                Some(Event::Data { range, text, .. }) => {
                    assert!(!text, "the gateway sent a text frame");
                    let r = base + range.start..base + range.end;
                    self.data.extend_from_slice(&self.inbox[r]);
                }
                Some(Event::Pong(p)) => {
                    assert!(
                        self.ping_payloads.iter().any(|x| x == p.as_bytes()),
                        "a pong that answers no ping"
                    );
                    self.pongs += 1;
                }
                Some(Event::Ping(_)) => {}
                Some(Event::Close { code, .. }) => {
                    self.close_received = Some(code.map(|c| c.0));
                    self.after_close += self.inbox.len() - pos;
                    break;
                }
                None => {}
            }
        }
        self.inbox.drain(..pos.min(self.inbox.len()));
        if self.close_received.is_some() && self.end == ClientEnd::StayOpen && !self.echo_queued {
            // A real client answers the gateway's Close with its own.
            self.echo_queued = true;
            frame(
                &mut self.wire,
                true,
                OpCode::Close,
                &1000u16.to_be_bytes(),
                self.masked,
                [1, 2, 3, 4],
            );
        }
    }
}

/// Runs one simulated session; panics when the relay breaks a promise.
pub fn run(ch: &mut impl Chooser) -> Outcome {
    let role = if ch.chance(80) { Role::Server } else { Role::Client };
    let buf = [1024, 4096, 16 * 1024 + 3, 64 * 1024][ch.below(4)];
    let masked = role == Role::Server;
    let mut client = script_client(ch, buf, masked);
    let mut target = Target {
        data: {
            let len = if ch.chance(30) { 0 } else { ch.below(3 * buf) };
            bytes(ch, len)
        },
        pos: 0,
        end: [TargetEnd::Eof, TargetEnd::Error, TargetEnd::StayOpen][ch.below(3)],
        received: Vec::new(),
        writes: 0,
        fin: false,
    };
    // Bytes the gateway had already read with the HTTP head.
    let initial = ch.below(client.wire.len().min(64) + 1);
    let mut relay = Relay::websocket(role, Limits::default(), buf, 0x9e37);
    let mut tls = None;
    if ch.chance(50) {
        let version = if ch.chance(70) { Version::Tls13 } else { Version::Tls12 };
        let (gateway, records) = record_pair(version);
        let mut client_tls = ClientTls {
            records,
            sealed: initial,
            cipher: Vec::new(),
            pos: 0,
            inbox: Vec::new(),
            closed: false,
        };
        client_tls.seal_new(ch, &client.wire);
        // Some of the first records were read with the head, not yet opened.
        let early = ch.below(client_tls.cipher.len().min(300) + 1);
        relay.start_tls(Box::new(gateway), &client.wire[..initial], &client_tls.cipher[..early]);
        client_tls.pos = early;
        tls = Some(client_tls);
    } else {
        relay.received_early(&client.wire[..initial]);
    }
    client.pos = initial;

    // Bytes written to the client's transport and not yet sent on.
    let mut in_transport = Vec::new();
    let mut ended = None;
    let mut closing = false;
    let mut timed_out = false;
    let mut stalled = 0;
    for pass in 0..2_000_000usize {
        // Choices may make an operation wait; a stalled pass forces the next one to proceed.
        let force = stalled > 0;
        let mut progress = false;

        if let Some(step) = relay.poll_event() {
            match step {
                Step::Closing => {
                    assert!(!closing, "Closing reported twice");
                    closing = true;
                }
                Step::Ended(end) => {
                    ended = Some(end);
                    break;
                }
            }
            continue;
        }

        // Peer → raw: write to the target.
        if tls.is_some() {
            let mut slices = [std::io::IoSlice::new(&[]); super::MAX_RANGES];
            let count = relay.raw_transmit_vectored(&mut slices);
            if count > 0 && !waits(ch, force) {
                assert!(!target.fin, "write to the target after FIN");
                let all: Vec<u8> = slices[..count].iter().flat_map(|s| s.iter().copied()).collect();
                let n = ch.chunk(all.len());
                target.received.extend_from_slice(&all[..n]);
                target.writes += 1;
                relay.raw_sent(n);
                progress = true;
            }
        } else if let Some(out) = relay.raw_transmit() {
            if !waits(ch, force) {
                assert!(!target.fin, "write to the target after FIN");
                let n = ch.chunk(out.len());
                target.received.extend_from_slice(&out[..n]);
                target.writes += 1;
                relay.raw_sent(n);
                progress = true;
            }
        }
        // Read from the client: its records, with TLS.
        if let Some(t) = tls.as_mut() {
            t.seal_new(ch, &client.wire);
            client.pos = t.sealed;
            if let Some(into) = relay.peer_recv_buf() {
                let left = t.cipher.len() - t.pos;
                if left == 0 && client.end == ClientEnd::Eof {
                    relay.peer_received(0);
                    progress = true;
                } else if left == 0 || waits(ch, force) {
                    progress |= relay.peer_recv_blocked();
                } else {
                    let n = ch.chunk(left).min(into.len());
                    into[..n].copy_from_slice(&t.cipher[t.pos..t.pos + n]);
                    t.pos += n;
                    relay.peer_received(n);
                    progress = true;
                }
            }
        } else if let Some(into) = relay.peer_recv_buf() {
            let left = client.wire.len() - client.pos;
            if left == 0 && client.end == ClientEnd::Eof {
                relay.peer_received(0);
                progress = true;
            } else if left == 0 || waits(ch, force) {
                progress |= relay.peer_recv_blocked();
            } else {
                let n = ch.chunk(left).min(into.len());
                into[..n].copy_from_slice(&client.wire[client.pos..client.pos + n]);
                client.pos += n;
                relay.peer_received(n);
                progress = true;
            }
        }
        if relay.raw_flush_wanted() {
            relay.raw_flushed();
            progress = true;
        }
        // Raw → peer: write to the client's transport, which (like TLS) may hold what it was
        // given until it is flushed or closed.
        if let Some(t) = tls.as_mut() {
            let mut slices = [std::io::IoSlice::new(&[]); super::MAX_RANGES];
            let count = relay.peer_transmit_vectored(&mut slices);
            if count > 0 && !waits(ch, force) {
                let all: Vec<u8> = slices[..count].iter().flat_map(|s| s.iter().copied()).collect();
                let n = ch.chunk(all.len());
                // A socket: what is written goes (the client decrypts what is whole).
                let plain = t.open(&all[..n]);
                client.take(&plain);
                relay.peer_sent(n);
                progress = true;
            }
        } else if let Some(out) = relay.peer_transmit() {
            if !waits(ch, force) {
                // A write may push out what earlier writes left in the transport (room in the
                // socket by then), never what it is given itself: only a flush or close does.
                if ch.chance(50) {
                    client.take(&std::mem::take(&mut in_transport));
                }
                let n = ch.chunk(out.len());
                in_transport.extend_from_slice(&out[..n]);
                relay.peer_sent(n);
                progress = true;
            }
        }
        // Read from the target: with TLS, into the relay's record slots, which one vectored read
        // fills in order. `Some(0)`: the target has nothing now (or has ended).
        let left = target.data.len() - target.pos;
        let read = if tls.is_some() {
            let (mut slots, count) = relay.raw_recv_vectored();
            (count > 0).then(|| {
                if left == 0 || waits(ch, force) {
                    return 0;
                }
                let (want, mut n) = (ch.chunk(left), 0);
                for slot in slots[..count].iter_mut() {
                    let take = (want - n).min(slot.len());
                    slot[..take].copy_from_slice(&target.data[target.pos + n..target.pos + n + take]);
                    n += take;
                }
                n
            })
        } else {
            relay.raw_recv_buf().map(|into| {
                if left == 0 || waits(ch, force) {
                    return 0;
                }
                let n = ch.chunk(left).min(into.len());
                into[..n].copy_from_slice(&target.data[target.pos..target.pos + n]);
                n
            })
        };
        match read {
            None => {}
            Some(n) if n > 0 => {
                target.pos += n;
                relay.raw_received(n);
                progress = true;
            }
            Some(_) if left == 0 && target.end == TargetEnd::Eof => {
                relay.raw_received(0);
                progress = true;
            }
            Some(_) if left == 0 && target.end == TargetEnd::Error => {
                relay.raw_read_failed(&std::io::ErrorKind::ConnectionReset.into());
                progress = true;
            }
            Some(_) if left == 0 && target.end == TargetEnd::StayOpen && target.fin => {
                relay.raw_received(0);
                progress = true;
            }
            Some(_) => relay.raw_recv_blocked(),
        }
        if relay.peer_flush_wanted() {
            client.take(&std::mem::take(&mut in_transport));
            relay.peer_flushed();
            progress = true;
        }
        if relay.raw_shutdown_wanted() {
            target.fin = true;
            relay.raw_shut();
            progress = true;
        }
        if relay.peer_close_wanted() {
            progress |= relay.begin_peer_close();
            // With TLS, close_notify goes out first (as `peer_transmit`).
            if relay.peer_close_ready() {
                client.take(&std::mem::take(&mut in_transport));
                relay.peer_closed();
                progress = true;
            }
        }

        if progress {
            stalled = 0;
            continue;
        }
        stalled += 1;
        if stalled == 1 {
            continue; // Retry with every operation forced ready.
        }
        // Truly idle: nothing in flight, so no buffer may be held (but for a record not yet
        // whole: its first bytes wait in the buffer they will be opened in).
        if relay.partial_record() == 0 {
            assert_eq!(relay.buffered_bytes(), 0, "an idle relay holds a buffer (pass {pass})");
        }
        // Both sides wait for each other: the session clock ends it (idle timeout, then abort).
        // Only a client and a target that both stay open may wait like this; any other stall is a
        // session that stopped making progress (lost a flush, a wakeup, a Close).
        assert!(
            timed_out || (client.end == ClientEnd::StayOpen && target.end == TargetEnd::StayOpen && !target.fin),
            "the session stalled (client {:?}, target {:?}, FIN {}, {} bytes held in the client's transport)",
            client.end,
            target.end,
            target.fin,
            in_transport.len()
        );
        if !timed_out {
            timed_out = true;
            relay.close(CloseCode::GOING_AWAY, EndReason::IdleTimeout);
            stalled = 0;
        } else {
            ended = Some(relay.abort());
            break;
        }
    }
    let end = ended.expect("the relay did not end within the pass limit");
    assert!(relay.poll_event().is_none(), "events after the end");
    check(&client, &target, &end, timed_out);
    if let Some(t) = &tls {
        // A session that ended cleanly both ways told the client with close_notify.
        let _ = initial;
        if matches!(end, End::PeerClosed(_) | End::RawClosed) && client.end != ClientEnd::Eof {
            assert!(t.closed, "no close_notify at the end ({end:?})");
        }
    }
    Outcome {
        end,
        to_target: target.received,
        to_client: client.data,
        target_writes: target.writes,
        pongs: client.pongs,
    }
}

/// Whether an operation that could proceed waits this pass instead.
fn waits(ch: &mut impl Chooser, force: bool) -> bool {
    !force && !ch.exhausted() && ch.chance(25)
}

fn check(client: &Client, target: &Target, end: &End, timed_out: bool) {
    // Once and in order: each side got a prefix of what the other sent.
    assert!(
        client.payload.starts_with(&target.received),
        "the target got bytes the client did not send, or out of order ({} of {} bytes)",
        target.received.len(),
        client.payload.len()
    );
    assert!(
        target.data.starts_with(&client.data),
        "the client got bytes the target did not send, or out of order"
    );
    assert_eq!(client.after_close, 0, "the gateway sent bytes after its Close");
    let target_failed = target.end == TargetEnd::Error && target.pos == target.data.len();
    // A client that ended (Close, EOF, a refused frame) had everything before it delivered, then FIN.
    let client_done = matches!(
        end,
        End::PeerClosed(_) | End::PeerGone | End::Protocol(_) | End::Local(EndReason::TextFrameRefused)
    );
    if client_done && !target_failed && !timed_out {
        assert_eq!(
            target.received.len(),
            client.payload.len(),
            "client data lost ({end:?})"
        );
        assert!(target.fin, "no FIN after the client ended");
    }
    match (end, client.end) {
        (End::PeerClosed(code), ClientEnd::Close(sent)) => {
            assert_eq!(*code, Some(sent));
            if !target_failed {
                assert_eq!(
                    client.data.len(),
                    target.data.len(),
                    "target data lost after the client's Close"
                );
                assert_eq!(client.close_received, Some(Some(sent)), "the Close was not echoed");
            }
        }
        // A client that hung up may miss the end of what it was sent.
        (End::RawClosed, ClientEnd::Eof) => {}
        (End::RawClosed, _) => {
            assert_eq!(client.data, target.data, "target data lost before its EOF");
            assert_eq!(client.close_received, Some(Some(CloseCode::NORMAL.0)));
        }
        (End::Local(EndReason::TextFrameRefused), e) => assert_eq!(e, ClientEnd::Text),
        (End::Protocol(_), e) => assert_eq!(e, ClientEnd::Invalid),
        (End::PeerGone, e) => assert_eq!(e, ClientEnd::Eof),
        (End::RawError(_), _) => assert_eq!(target.end, TargetEnd::Error),
        (End::Local(EndReason::IdleTimeout) | End::CloseTimeout(_), _) => assert!(timed_out),
        (End::PeerClosed(_), ClientEnd::StayOpen) => {}
        (end, client_end) => panic!("ended {end:?} with a client that ended {client_end:?}"),
    }
}
