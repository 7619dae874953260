//! The relay: a framed byte stream on one side (the peer: WebSocket frames from a client or to
//! the gateway), a raw byte stream on the other (the target, or the CLI's local socket).
//!
//! A deterministic state machine with no I/O and no clock, like quinn-proto: the driver asks it
//! where to read and what to write, performs the I/O, and reports what happened. The gateway's
//! glommio driver and the CLI's tokio driver (`engine/src/relay.rs`) only move bytes; everything
//! that decides (framing, gathering, backpressure, half-close, pongs, close codes) is here, and is
//! tested by simulation (`tests.rs`) and fuzzed (`fuzz/` target `relay`).
//!
//! # The driver's contract
//! Per pass, for each side: write what `*_transmit` returns and report `*_sent` (or a failure);
//! read into `*_recv_buf` and report `*_received` (0 = EOF), a failure, or `*_recv_blocked` when
//! the read would block; flush when `*_flush_wanted`; shut the raw side's write half when
//! `raw_shutdown_wanted`, and close the peer when `peer_close_wanted`. Stop when a pass changed
//! nothing and every wanted operation is waiting; `poll_event` says when the session starts
//! closing and when it has ended.
//!
//! # The buffer contract
//! One pooled buffer per direction, both of one size, held only while data is in flight:
//!
//! ```text
//! outbuf: [ TLS record header | framing header room | payload (≤ payload_cap) | TLS trailer ]
//!          <--- headroom (≥ 13 + MAX_HEADER, 32-aligned) --->                  <- trailer ->
//! ```
//! Raw bytes are read straight into the payload area; the framing writes its header into the room
//! in front, so a frame leaves in one contiguous write. Peer bytes are read into `inbuf` and
//! decoded in place; the payloads of consecutive frames are gathered and written to the raw side
//! together. Each direction reads only when its previous write finished, so one buffer per
//! direction bounds memory whatever the peers do.
//!
//! # TLS in the relay (the gateway's zero-copy path)
//! After `start_tls` the relay seals and opens the peer's TLS records itself
//! (`crate::tls::RecordLayer`) and its driver reads and writes the client's socket:
//! - In: ciphertext is read into `inbuf`; each whole record is opened where it lies, its frames
//!   unmasked there, and the payload of each record is one range of a gathered (vectored) write
//!   to the raw side. Reads never go so far that a record begun in them could not end inside the
//!   buffer; near the end, a read takes only the rest of the partial record, so records are never
//!   moved either. Frames smaller than a record are gathered within it by moving them together
//!   (counted in `Counters::copied`, like every byte the relay moves; 0 for bulk traffic).
//! - Out: one vectored read of the raw side fills up to `MAX_SLOTS` record slots, each with room
//!   for a record header and the framing's header in front and the record trailer behind; each
//!   filled slot is framed and sealed in place, and the records leave in one gathered write.
//! - Control frames, our KeyUpdate (answering the peer's request, or before a key wears out) and
//!   close_notify are small records sealed into `ctrl`.
//!
//! Without `start_tls` (the CLI, whose TLS is rustls' stream; the RD Gateway's HTTP transport),
//! peer bytes are plaintext and one slot is read at a time.
//!
//! # Close
//! A peer Close or raw EOF is a half-close. Peer Close → FIN to the raw side, keep relaying
//! raw → peer until raw EOF, then echo the Close. Raw EOF → send Close(1000), keep relaying
//! peer → raw until the peer's Close. The driver bounds how long a half-closed session may last.
//!
//! # Filtering
//! A [`PeerFilter`] (web RDP's channel policy) sees the peer's payload before the raw side does,
//! until it says it is done: it may change it in place and hold the tail of it back (in `inbuf`,
//! moved to the front between reads, at most `max_held` bytes) until more arrives. What it holds
//! when the peer closes or it refuses goes nowhere.

pub mod clock;
pub mod framing;
pub mod pool;
pub mod ranges;
pub mod rdgateway;
pub mod sim;

#[cfg(test)]
mod tests;

use crate::audit::{EndReason, Ending};
use crate::tls::{ContentType, Opened, RecordLayer, MAX_PLAINTEXT, MAX_RECORD};
use framing::{Control, Framing, Inbound, WebSocket};
use pool::PooledBuf;
use portcullis_protocols::ws::{CloseCode, ControlPayload, Limits, Role};
use ranges::{Ranges, MAX_RANGES};
use std::io::{self, IoSlice, IoSliceMut};

/// Bytes reserved in front of every outgoing frame for its TLS record header (TLS 1.2 AES-GCM's
/// explicit nonce included).
pub const TLS_RECORD_HEADER: usize = crate::tls::MAX_PREFIX;
/// Bytes after a TLS 1.3 record's plaintext (content type and AEAD tag), reserved after the payload.
pub const TLS_RECORD_TRAILER: usize = crate::tls::MAX_SUFFIX;
/// Most records read from the target at once (one vectored read) when the relay seals them
/// itself: as many as the configured buffer size holds (8 at the default 256 KiB).
pub const MAX_SLOTS: usize = 8;
// Each filled slot becomes one range of the gathered write to the peer.
const _: () = assert!(MAX_SLOTS <= MAX_RANGES);
/// With TLS in the relay, the least room worth a read before the buffer starts over.
const MIN_TLS_READ: usize = 4 * 1024;

/// The payload of the pings the gateway sends to a silent peer.
const PING_PAYLOAD: &[u8] = b"portcullis";

/// How a relayed session ended, from the relay's point of view (peer = framed side, raw = byte
/// side). `ending()` names it for the gateway's audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The peer sent Close (with this code) and the close handshake completed.
    PeerClosed(Option<u16>),
    /// The raw side sent EOF first and the close handshake completed.
    RawClosed,
    /// The peer vanished without a Close.
    PeerGone,
    /// Reading or writing the peer failed.
    PeerError(String),
    /// Reading or writing the raw side failed.
    RawError(String),
    /// The peer broke the framing protocol; we sent the matching close code.
    Protocol(String),
    /// Ended by the relay or its driver (a text frame, a timeout, shutdown): the Close sent said so.
    Local(EndReason),
    /// The close did not finish in time: given up, with how the session was ending if known.
    CloseTimeout(Option<String>),
}

impl End {
    /// The audit log's name for it, where the peer is the client and the raw side the target.
    pub fn ending(&self) -> Ending {
        match self {
            End::PeerClosed(_) => EndReason::ClientClosed.into(),
            End::RawClosed => EndReason::TargetClosed.into(),
            End::PeerGone => EndReason::ClientDisconnected.into(),
            End::PeerError(e) => Ending::with_detail(EndReason::ClientError, e.clone()),
            End::RawError(e) => Ending::with_detail(EndReason::TargetError, e.clone()),
            End::Protocol(e) => Ending::with_detail(EndReason::ProtocolError, e.clone()),
            End::Local(r) => (*r).into(),
            End::CloseTimeout(Some(was)) => Ending::with_detail(EndReason::CloseTimeout, format!("while {was}")),
            End::CloseTimeout(None) => EndReason::CloseTimeout.into(),
        }
    }
}

/// What `poll_event` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The session started closing or half-closing; the driver should now bound how long it lasts.
    Closing,
    Ended(End),
}

/// Byte and frame counters, read by the session clock for idle and liveness checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payload bytes from the peer to the raw side.
    pub peer_to_raw: u64,
    /// Payload bytes from the raw side to the peer.
    pub raw_to_peer: u64,
    /// Reads from the peer that returned data (any frame, pongs included).
    pub peer_reads: u64,
    /// Payload bytes the relay moved inside its buffers (frames gathered within a record, what a
    /// filter holds, bytes read before the relay started): none for bulk traffic when the relay
    /// seals and opens TLS records itself. The zero-copy path's instrument.
    pub copied: u64,
}

/// Peer payload is gathered while at least this much buffer (or a quarter of a small one) is
/// free for the next read.
const MIN_GATHER_ROOM: usize = framing::TLS_RECORD;

/// What a [`PeerFilter`] decided about the bytes it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtered {
    /// This many bytes at the front go to the raw side; the rest stay held until more arrive.
    Release(usize),
    /// Everything held goes, and the filter is done: what follows passes unseen.
    Done,
}

/// Looks at what the peer sends, and may change it in place, before it reaches the raw side,
/// holding bytes back until it has decided: web RDP's channel filter (the client's MCS Connect
/// Initial). Installed with [`Relay::filter_peer`]; a session without one pays nothing. `Send`,
/// as relays are (the CLI runs its relay on tokio).
pub trait PeerFilter: Send {
    /// `held` is every payload byte from the peer not released yet, in order (bytes held before
    /// come again, followed by the new ones). An error ends the session: nothing held reaches the
    /// raw side, the peer gets Close 1008, and the end is a protocol error with this detail.
    fn inspect(&mut self, held: &mut [u8]) -> Result<Filtered, String>;

    /// The filter itself, for its driver to read back what it found ([`Relay::peer_filter`]).
    fn as_any(&self) -> &dyn std::any::Any;
}

pub struct Relay<F: Framing = WebSocket> {
    framing: F,
    headroom: usize,
    // Peer → raw.
    inbuf: PooledBuf,
    /// Where the current peer read lands (set by `peer_recv_buf`).
    read_at: usize,
    /// Gathered payload handed to the raw writer (one gathered write).
    in_write: Ranges,
    /// Payload decoded but not yet handed to the writer, gathered so that the payloads of several
    /// frames and TLS records reach the raw side in one write: frames within a record are moved
    /// together, records stay where they were opened (one range each). Only while `in_write` is
    /// empty, but for what a filter holds behind what it released.
    gather: Ranges,
    /// The peer's TLS records, when the relay seals and opens them itself (the gateway): peer
    /// reads and writes are then ciphertext, straight from and to the socket.
    tls: Option<Box<RecordLayer>>,
    /// TLS: ciphertext read and not yet opened (a partial record), in `inbuf`.
    cipher: (usize, usize),
    /// TLS: a record was opened since the last payload was gathered.
    record_started: bool,
    /// TLS: close_notify is in `ctrl`, to go out before the transport closes.
    notify_pending: bool,
    /// TLS: payload bytes per record read from the raw side, and the distance between records.
    slot_cap: usize,
    slot_stride: usize,
    slots: usize,
    /// Bytes were written to the raw side since its last flush (stdout buffers; sockets do not).
    in_unflushed: bool,
    /// The last peer read would block (until the next bytes arrive).
    peer_blocked: bool,
    peer_open: bool,
    // Raw → peer.
    outbuf: PooledBuf,
    out_write: Ranges,
    out_unflushed: bool,
    /// The last raw read would block.
    raw_blocked: bool,
    raw_read_open: bool,
    /// Most payload bytes per frame (`Framing::payload_cap`).
    frame_cap: usize,
    // Control messages waiting for the writer, in order: pong, ping, close. The pong is boxed:
    // 125 bytes of room that every idle session would carry for a ping that rarely comes.
    pong: Option<Box<ControlPayload>>,
    /// Our ping is due (its payload is always `PING_PAYLOAD`).
    ping: bool,
    close: Option<(CloseCode, &'static str)>,
    ctrl: Vec<u8>,
    ctrl_pos: usize,
    ctrl_is_close: bool,
    close_sent: bool,
    /// The peer's transport is unusable (EOF or I/O error): nothing more can be sent to it.
    peer_gone: bool,
    raw_write_shut: bool,
    /// Set once the session can end as soon as the Close is out.
    finish_after_close: bool,
    peer_close_begun: bool,
    peer_close_done: bool,
    end: Option<End>,
    closing_reported: bool,
    ended_reported: bool,
    counters: Counters,
    /// The first payload bytes the peer sent, kept for the audit log (an RDP X.224 cookie).
    capture: Option<(Vec<u8>, usize)>,
    /// Sees peer payload before the raw side does while `filtering`; kept after for its findings.
    filter: Option<Box<dyn PeerFilter>>,
    filtering: bool,
    /// The most the filter may hold (the buffer has room for it and a read behind it).
    max_held: usize,
}

impl Relay<WebSocket> {
    /// A WebSocket relay; `mask_seed` seeds client masks (any value for servers).
    pub fn websocket(role: Role, limits: Limits, buf_size: usize, mask_seed: u64) -> Self {
        Relay::new(WebSocket::new(role, limits, mask_seed), buf_size)
    }
}

impl<F: Framing> Relay<F> {
    /// A relay over `framing` with `buf_size` bytes of payload area per direction.
    pub fn new(framing: F, buf_size: usize) -> Self {
        // Rounded up so that raw reads land 32-byte aligned (what the kernel's and memcpy's wide
        // copies like best; measured neutral to slightly better than unaligned).
        let headroom = Self::headroom();
        let area = buf_size.max(1024);
        // Both directions use one size so they share the pool.
        let size = headroom + area + TLS_RECORD_TRAILER;
        let frame_cap = framing.payload_cap(area);
        Relay {
            framing,
            headroom,
            inbuf: PooledBuf::new(size),
            read_at: 0,
            in_write: Ranges::default(),
            gather: Ranges::default(),
            tls: None,
            cipher: (0, 0),
            record_started: false,
            notify_pending: false,
            slot_cap: frame_cap,
            slot_stride: 0,
            slots: 1,
            in_unflushed: false,
            peer_blocked: false,
            peer_open: true,
            outbuf: PooledBuf::new(size),
            out_write: Ranges::default(),
            out_unflushed: false,
            raw_blocked: false,
            raw_read_open: true,
            frame_cap,
            pong: None,
            ping: false,
            close: None,
            ctrl: Vec::new(),
            ctrl_pos: 0,
            ctrl_is_close: false,
            close_sent: false,
            peer_gone: false,
            raw_write_shut: false,
            finish_after_close: false,
            peer_close_begun: false,
            peer_close_done: false,
            end: None,
            closing_reported: false,
            ended_reported: false,
            counters: Counters::default(),
            capture: None,
            filter: None,
            filtering: false,
            max_held: 0,
        }
    }

    /// Bytes the peer sent that were read before the relay started (behind the HTTP head). Call
    /// once, before driving. Buffers grow to hold them when they are larger than a read.
    pub fn received_early(&mut self, initial: &[u8]) {
        if initial.is_empty() {
            return;
        }
        let size = self.headroom + initial.len() + TLS_RECORD_TRAILER;
        if size > self.inbuf.size() {
            // Nothing is held yet: both directions move to the larger size (they share a pool).
            self.inbuf = PooledBuf::new(size);
            self.outbuf = PooledBuf::new(size);
            self.frame_cap = self.framing.payload_cap(initial.len());
        }
        self.inbuf.get()[..initial.len()].copy_from_slice(initial);
        self.counters.copied += initial.len() as u64;
        self.read_at = 0;
        self.decode_peer(initial.len());
    }

    fn headroom() -> usize {
        (TLS_RECORD_HEADER + F::MAX_HEADER).next_multiple_of(32)
    }

    /// The relay seals and opens the peer's TLS records itself from now on (`records`: the
    /// connection's record layer, after its handshake): the driver then reads and writes the
    /// peer's socket, and payload is never copied. `plaintext`: bytes already opened (behind the
    /// HTTP head), as `received_early`; `ciphertext`: bytes read and not yet opened. Call once,
    /// after `capture_first` and `filter_peer`, instead of `received_early`.
    pub fn start_tls(&mut self, records: Box<RecordLayer>, plaintext: &[u8], ciphertext: &[u8]) {
        let headroom = Self::headroom();
        let area = self.inbuf.size() - headroom - TLS_RECORD_TRAILER;
        self.slot_cap = self.framing.payload_cap(area).min(MAX_PLAINTEXT - F::MAX_HEADER);
        self.slot_stride = self.slot_cap + TLS_RECORD_TRAILER + headroom;
        // Out: as many records as the configured size holds; in, room for what came early, a
        // held filter's bytes, and a whole record behind a read.
        let slots = (area / crate::tls::MAX_PLAINTEXT).clamp(1, MAX_SLOTS);
        let size = (headroom + slots * self.slot_stride)
            .max(plaintext.len() + ciphertext.len() + self.max_held + MAX_RECORD + MIN_TLS_READ)
            .max(self.inbuf.size());
        if size > self.inbuf.size() {
            // Nothing is held yet: both directions move to the larger size (they share a pool).
            self.inbuf = PooledBuf::new(size);
            self.outbuf = PooledBuf::new(size);
        }
        self.slots = (1..=slots)
            .take_while(|i| headroom + (i - 1) * self.slot_stride + self.slot_cap + TLS_RECORD_TRAILER <= size)
            .count();
        // Target → peer uses only its record slots: a larger buffer would be lent for nothing.
        let out_size = headroom + self.slots * self.slot_stride;
        if out_size < self.outbuf.size() && !self.outbuf.is_held() {
            self.outbuf = PooledBuf::new(out_size);
        }
        let peer_closed = records.peer_closed();
        self.tls = Some(records);
        self.received_early(plaintext);
        if peer_closed {
            // The stream had read the peer's close_notify already: it sends nothing more.
            return self.peer_received(0);
        }
        if !ciphertext.is_empty() && self.peer_open {
            let at = plaintext.len();
            self.inbuf.get()[at..at + ciphertext.len()].copy_from_slice(ciphertext);
            self.counters.copied += ciphertext.len() as u64;
            self.cipher = (at, at);
            self.read_at = at;
            self.tls_received(ciphertext.len());
        }
    }

    /// Bytes of a TLS record not yet whole that the inbound buffer holds (it is opened where it
    /// lies once the rest arrives).
    pub fn partial_record(&self) -> usize {
        self.cipher.1 - self.cipher.0
    }

    /// The record layer, while the relay seals and opens records itself.
    pub fn records(&self) -> Option<&RecordLayer> {
        self.tls.as_deref()
    }

    /// Keeps a copy of the first `limit` payload bytes from the peer (see `captured`). Call before
    /// `received_early` and the first read.
    pub fn capture_first(&mut self, limit: usize) {
        self.capture = Some((Vec::with_capacity(limit), limit));
    }

    pub fn captured(&self) -> &[u8] {
        self.capture.as_ref().map(|(c, _)| c.as_slice()).unwrap_or_default()
    }

    /// Passes the peer's payload through `filter` before the raw side gets it, until the filter is
    /// done; it may hold up to `max_held` bytes back (holding more ends the session). Call before
    /// `received_early` and the first read. The buffers grow to hold that much and a read behind it.
    pub fn filter_peer(&mut self, filter: Box<dyn PeerFilter>, max_held: usize) {
        let size = self.headroom + max_held + MIN_GATHER_ROOM + TLS_RECORD_TRAILER;
        if size > self.inbuf.size() {
            // Nothing is held yet: both directions move to the larger size (they share a pool).
            self.inbuf = PooledBuf::new(size);
            self.outbuf = PooledBuf::new(size);
        }
        self.filter = Some(filter);
        self.filtering = true;
        self.max_held = max_held;
    }

    /// The filter given to `filter_peer`, if it is a `T` (to read what it found).
    pub fn peer_filter<T: 'static>(&self) -> Option<&T> {
        self.filter.as_deref().and_then(|f| f.as_any().downcast_ref::<T>())
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes this relay holds in pooled buffers right now (0 when idle).
    pub fn buffered_bytes(&self) -> usize {
        [&self.inbuf, &self.outbuf]
            .iter()
            .filter(|b| b.is_held())
            .map(|b| b.size())
            .sum()
    }

    /// True once a Close has been queued or sent: the session is winding down.
    pub fn is_closing(&self) -> bool {
        self.close.is_some() || self.close_sent
    }

    /// Ends the session from outside (timeouts, shutdown): sends Close with `code` and the
    /// reason's name, and stops relaying.
    pub fn close(&mut self, code: CloseCode, reason: EndReason) {
        self.record(End::Local(reason));
        self.raw_read_open = false;
        self.finish_after_close = true;
        if !self.close_sent && self.close.is_none() {
            self.close = Some((code, reason.as_str()));
        }
        self.release_idle_buffers();
    }

    /// Sends a ping to probe a silent peer.
    pub fn ping(&mut self) {
        if !self.is_closing() {
            self.ping = true;
        }
    }

    /// Gives up on a session whose close did not finish in time. The end says so (the close
    /// handshake did not complete), with how the session was ending as detail.
    pub fn abort(&mut self) -> End {
        self.ended_reported = true;
        End::CloseTimeout(self.end.take().map(|e| e.ending().to_string()))
    }

    /// The next thing to tell the driver: the session started closing, or it has ended.
    pub fn poll_event(&mut self) -> Option<Step> {
        if self.ended_reported {
            return None;
        }
        if self.finished() && self.raw_write_shut && (self.peer_gone || self.peer_close_done) {
            self.ended_reported = true;
            return Some(Step::Ended(self.end.take().unwrap_or(End::PeerGone)));
        }
        if !self.closing_reported && (self.is_closing() || !self.peer_open || !self.raw_read_open) {
            self.closing_reported = true;
            return Some(Step::Closing);
        }
        None
    }

    // ----------------------------------------------------------------------------------------
    // Peer → raw
    // ----------------------------------------------------------------------------------------

    /// Where to read the peer's next bytes; `None` while the previous read is still being
    /// written to the raw side (backpressure) or the peer will send nothing more.
    pub fn peer_recv_buf(&mut self) -> Option<&mut [u8]> {
        if !self.peer_open || !self.in_write.is_empty() {
            return None;
        }
        if self.filtering {
            self.compact_held();
        }
        if self.tls.is_some() {
            let (at, end) = self.tls_read_window();
            self.read_at = at;
            return Some(&mut self.inbuf.get()[at..end]);
        }
        // Read behind the payload gathered so far (`decode_peer` made sure there is room).
        self.read_at = self.gather.last_end().unwrap_or(0);
        let at = self.read_at;
        Some(&mut self.inbuf.get()[at..])
    }

    /// What the filter holds (and, with TLS, the partial record behind it) moves to the front, so
    /// the room behind it stays large.
    fn compact_held(&mut self) {
        let (cs, ce) = self.cipher;
        let Some(lo) = self.gather.first().map(|(g0, _)| g0).or((cs < ce).then_some(cs)) else {
            return;
        };
        let hi = self.gather.last_end().unwrap_or(0).max(ce);
        if lo == 0 {
            return;
        }
        self.inbuf.get().copy_within(lo..hi, 0);
        self.counters.copied += (hi - lo) as u64;
        if let Some((g0, g1)) = self.gather.first() {
            self.gather.clear();
            self.gather.push(g0 - lo, g1 - lo);
        }
        if cs < ce {
            self.cipher = (cs - lo, ce - lo);
        }
    }

    /// TLS: where the next read goes. Behind what is live, and never so far that a record begun
    /// in it could not end inside the buffer; near the end, only the rest of the partial record,
    /// which then is opened in place (never moved) and the buffer starts over once it is written.
    fn tls_read_window(&mut self) -> (usize, usize) {
        let size = self.inbuf.size();
        let (cs, ce) = self.cipher;
        let at = if cs < ce {
            ce
        } else {
            self.gather.last_end().unwrap_or(0)
        };
        if cs == ce {
            self.cipher = (at, at);
        }
        let room = size.saturating_sub(MAX_RECORD).saturating_sub(at);
        if room >= MIN_TLS_READ || cs == ce {
            return (at, at + room.max(1).min(size - at));
        }
        let want = match RecordLayer::record_len(&self.inbuf.get()[cs..ce]) {
            Ok(Some(len)) => cs + len,
            _ => cs + crate::tls::HEADER,
        };
        (at, want.max(at + 1).min(size))
    }

    /// TLS: `n` more bytes of ciphertext at `cipher.1`: opens every whole record in place and
    /// decodes its frames there.
    fn tls_received(&mut self, n: usize) {
        self.cipher.1 += n;
        while self.peer_open {
            let (cs, ce) = self.cipher;
            if cs == ce {
                break;
            }
            let Some(tls) = self.tls.as_deref_mut() else { break };
            match tls.open(&mut self.inbuf.get()[cs..ce]) {
                Ok(None) => break,
                Ok(Some((len, opened))) => {
                    self.cipher.0 += len;
                    match opened {
                        Opened::Data(r) => {
                            self.record_started = true;
                            self.decode_range(cs + r.start, cs + r.end);
                        }
                        Opened::Nothing => {}
                        // The peer closed TLS without a WebSocket Close: it has gone.
                        Opened::Closed => return self.peer_lost(End::PeerGone),
                    }
                }
                Err(e) => return self.peer_lost(End::PeerError(format!("TLS: {e}"))),
            }
        }
        if self.cipher.0 == self.cipher.1 {
            self.cipher = (0, 0);
        }
        self.gather_or_write();
    }

    /// `n` bytes arrived in the buffer `peer_recv_buf` gave; 0 is EOF.
    pub fn peer_received(&mut self, n: usize) {
        self.peer_blocked = false;
        if n == 0 {
            return self.peer_lost(End::PeerGone);
        }
        self.counters.peer_reads += 1;
        if self.tls.is_some() {
            return self.tls_received(n);
        }
        self.decode_peer(n);
    }

    /// Reading the peer failed. A peer that drops TCP without TLS close_notify has simply gone.
    pub fn peer_read_failed(&mut self, e: &io::Error) {
        self.peer_blocked = false;
        match e.kind() {
            io::ErrorKind::UnexpectedEof => self.peer_lost(End::PeerGone),
            _ => self.peer_lost(End::PeerError(e.to_string())),
        }
    }

    /// The peer read would block. Returns true when that gave the raw writer something to do.
    pub fn peer_recv_blocked(&mut self) -> bool {
        self.peer_blocked = true;
        if !self.gather.is_empty() {
            // The peer has nothing more right now: write what was gathered (unless a filter holds
            // it all, or refused it).
            self.write_gathered();
            return !self.in_write.is_empty() || !self.peer_open;
        }
        if self.in_write.is_empty() && self.cipher.0 == self.cipher.1 {
            // Everything read has been forwarded: the buffer goes back to the pool.
            self.release_inbuf();
        }
        false
    }

    fn release_inbuf(&mut self) {
        // Whatever ranges pointed into it are void: the buffer's next holder is another session.
        self.inbuf.release();
        self.cipher = (0, 0);
        self.gather.clear();
        self.in_write.clear();
    }

    /// Bytes to write to the raw side.
    pub fn raw_transmit(&mut self) -> Option<&[u8]> {
        let (start, end) = self.in_write.first()?;
        if self.raw_write_shut || !self.inbuf.is_held() {
            // The raw side is gone for writing; drop what the peer still sends.
            self.in_write.clear();
            return None;
        }
        Some(&self.inbuf.get()[start..end])
    }

    /// Everything to write to the raw side, as slices for one gathered write; returns how many
    /// (0: nothing). Report with `raw_sent` as for `raw_transmit`.
    pub fn raw_transmit_vectored<'a>(&'a mut self, out: &mut [IoSlice<'a>; MAX_RANGES]) -> usize {
        if self.in_write.is_empty() || self.raw_write_shut || !self.inbuf.is_held() {
            self.in_write.clear();
            return 0;
        }
        let ranges = self.in_write;
        ranges.slices(self.inbuf.get(), out)
    }

    /// `n` bytes of `raw_transmit` were written.
    pub fn raw_sent(&mut self, n: usize) {
        if self.in_write.is_empty() {
            return;
        }
        if n == 0 {
            return self.raw_write_failed(&io::ErrorKind::WriteZero.into());
        }
        let n = n.min(self.in_write.total());
        self.counters.peer_to_raw += n as u64;
        self.in_unflushed = true;
        self.in_write.advance(n);
        if self.in_write.is_empty() {
            // Payload gathered behind this write (records opened with the first bytes, before
            // the relay started) goes next, before the buffer may go.
            self.write_gathered();
        }
        if self.in_write.is_empty() && !self.peer_open {
            // The peer sends nothing more: a half-closed session holds no inbound buffer.
            self.release_inbuf();
        }
    }

    pub fn raw_write_failed(&mut self, e: &io::Error) {
        self.record(End::RawError(e.to_string()));
        self.in_write.clear();
        self.gather.clear();
        self.raw_write_shut = true;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.close
            .get_or_insert((CloseCode::INTERNAL_ERROR, "target connection failed"));
    }

    /// The raw side buffers writes (stdout) and there is nothing more to give it right now.
    pub fn raw_flush_wanted(&self) -> bool {
        self.in_unflushed && self.peer_blocked && self.in_write.is_empty() && !self.raw_write_shut
    }

    pub fn raw_flushed(&mut self) {
        self.in_unflushed = false;
    }

    /// Time to shut the raw side's write half (FIN): the peer will send nothing more and all it
    /// sent is delivered, or the session is over.
    pub fn raw_shutdown_wanted(&self) -> bool {
        !self.raw_write_shut && self.in_write.is_empty() && (!self.peer_open || self.finished())
    }

    pub fn raw_shut(&mut self) {
        self.raw_write_shut = true;
        self.in_write.clear();
    }

    /// Decodes `n` fresh bytes at `read_at`: unmasks in place, gathers payload, handles control
    /// frames; then hands the gathered payload over when the buffer has no room for another read.
    fn decode_peer(&mut self, n: usize) {
        self.decode_range(self.read_at, self.read_at + n);
        self.gather_or_write();
    }

    /// Decodes the plaintext at `inbuf[pos..end]` in place.
    fn decode_range(&mut self, mut pos: usize, end: usize) {
        while pos < end {
            let decoded = self.framing.decode(&mut self.inbuf.get()[pos..end]);
            let (used, event) = match decoded {
                Ok(d) => d,
                Err(e) => {
                    let code = e.close_code();
                    return self.fail_peer(End::Protocol(e.to_string()), code, "protocol error");
                }
            };
            let base = pos;
            pos += used;
            match event {
                None | Some(Inbound::Pong) => {}
                Some(Inbound::Data(range)) => {
                    if !range.is_empty() {
                        self.gather_payload(base + range.start, base + range.end);
                    }
                }
                Some(Inbound::Text) => {
                    let end = End::Local(EndReason::TextFrameRefused);
                    return self.fail_peer(end, CloseCode::UNSUPPORTED_DATA, "binary frames only");
                }
                // Answer only the latest ping (RFC 6455 §5.5.3), so a ping flood costs no memory.
                Some(Inbound::Ping(p)) => match &mut self.pong {
                    Some(pending) => **pending = p,
                    None => self.pong = Some(Box::new(p)),
                },
                Some(Inbound::Close(code)) => {
                    self.peer_open = false;
                    self.write_gathered();
                    // What a filter still holds is incomplete: it goes nowhere. (Without a filter,
                    // what waits behind a write in progress is still delivered.)
                    self.drop_held();
                    if self.in_write.is_empty() {
                        self.release_inbuf();
                    }
                    self.record(End::PeerClosed(code));
                    return;
                }
            }
        }
    }

    /// Hands the gathered payload over when the buffer has no room for another read (or no
    /// range left for another record's payload).
    fn gather_or_write(&mut self) {
        let Some(g1) = self.gather.last_end() else { return };
        let len = self.inbuf.size();
        let live = g1.max(self.cipher.1);
        let reserve = if self.tls.is_some() { MAX_RECORD } else { 0 };
        if len.saturating_sub(reserve + live) < MIN_GATHER_ROOM.min(len / 4) || self.gather.is_full() {
            self.write_gathered();
        }
    }

    fn gather_payload(&mut self, start: usize, end: usize) {
        if let Some((cap, limit)) = &mut self.capture {
            let take = (end - start).min(limit.saturating_sub(cap.len()));
            cap.extend_from_slice(&self.inbuf.get()[start..start + take]);
        }
        let record_started = std::mem::take(&mut self.record_started);
        match self.gather.last_end() {
            // The first payload, or one right behind the last.
            None => self.gather.push(start, end),
            Some(g1) if g1 == start => self.gather.push(start, end),
            // A new TLS record's payload stays where it was opened: one more range.
            Some(_) if record_started && !self.filtering && !self.gather.is_full() => self.gather.push(start, end),
            // Close the gap the frame header left (payloads only move back).
            Some(g1) => {
                self.inbuf.get().copy_within(start..end, g1);
                self.counters.copied += (end - start) as u64;
                self.gather.grow_last(end - start);
            }
        }
    }

    /// Hands the gathered payload to the raw writer: what a filter releases of it, while filtering.
    fn write_gathered(&mut self) {
        if !self.in_write.is_empty() {
            return;
        }
        if !self.filtering {
            self.in_write = std::mem::take(&mut self.gather);
            return;
        }
        // While filtering, what is gathered is one range (payloads are moved together).
        let Some((g0, g1)) = self.gather.first() else { return };
        let Some(filter) = self.filter.as_mut() else { return };
        let release = match filter.inspect(&mut self.inbuf.get()[g0..g1]) {
            Ok(Filtered::Done) => {
                self.filtering = false;
                g1 - g0
            }
            Ok(Filtered::Release(n)) if g1 - g0 - n.min(g1 - g0) <= self.max_held => n.min(g1 - g0),
            Ok(Filtered::Release(_)) => return self.refuse_filtered(format!("held over {} bytes", self.max_held)),
            Err(e) => return self.refuse_filtered(e),
        };
        if release > 0 {
            self.in_write.push(g0, g0 + release);
        }
        self.gather.clear();
        if g0 + release < g1 {
            self.gather.push(g0 + release, g1);
        }
    }

    /// Forgets what a filter still holds (the peer is gone or broke the protocol: it will never
    /// be whole). Without a filter nothing is held back: gathered payload waiting behind a write in
    /// progress is still delivered.
    fn drop_held(&mut self) {
        if self.filtering {
            self.gather.clear();
        }
    }

    /// The filter refused what the peer sent: none of what it holds goes on, the session ends.
    fn refuse_filtered(&mut self, why: String) {
        self.filtering = false;
        self.gather.clear();
        self.record(End::Protocol(why));
        self.peer_open = false;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.close.get_or_insert((CloseCode::POLICY, "refused by the gateway"));
        self.release_idle_buffers();
    }

    /// The peer broke the protocol or sent what the relay does not carry: close with `code`.
    fn fail_peer(&mut self, end: End, code: CloseCode, reason: &'static str) {
        // Data from frames before the offending one is still delivered (but nothing a filter holds).
        self.write_gathered();
        self.drop_held();
        self.record(end);
        self.peer_open = false;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.close.get_or_insert((code, reason));
        self.release_idle_buffers();
    }

    /// The peer's transport failed or hit EOF.
    fn peer_lost(&mut self, end: End) {
        self.write_gathered();
        self.drop_held();
        self.record(end);
        self.peer_open = false;
        self.peer_gone = true;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.out_write.clear();
        self.release_idle_buffers();
    }

    /// A direction that will carry nothing more gives its buffer back once its last write is out.
    fn release_idle_buffers(&mut self) {
        if !self.peer_open && self.in_write.is_empty() {
            self.release_inbuf();
        }
        if !self.raw_read_open && self.out_write.is_empty() {
            self.outbuf.release();
        }
    }

    // ----------------------------------------------------------------------------------------
    // Raw → peer
    // ----------------------------------------------------------------------------------------

    /// Bytes to write to the peer: a data frame, or a control message between frames.
    pub fn peer_transmit(&mut self) -> Option<&[u8]> {
        if self.peer_gone {
            return None;
        }
        if self.notify_pending {
            return Some(&self.ctrl[self.ctrl_pos..]);
        }
        if self.close_sent {
            return None;
        }
        if let Some((start, end)) = self.out_write.first() {
            return Some(&self.outbuf.get()[start..end]);
        }
        if self.ctrl_pos < self.ctrl.len() || self.queue_control() {
            return Some(&self.ctrl[self.ctrl_pos..]);
        }
        None
    }

    /// Everything to write to the peer now, as slices for one gathered write (the records of a
    /// vectored raw read); returns how many (0: nothing). Report with `peer_sent`.
    pub fn peer_transmit_vectored<'a>(&'a mut self, out: &mut [IoSlice<'a>; MAX_RANGES]) -> usize {
        if !self.peer_gone && !self.notify_pending && !self.close_sent && !self.out_write.is_empty() {
            let ranges = self.out_write;
            return ranges.slices(self.outbuf.get(), out);
        }
        match self.peer_transmit() {
            Some(bytes) => {
                out[0] = IoSlice::new(bytes);
                1
            }
            None => 0,
        }
    }

    /// `n` bytes of `peer_transmit` were written.
    pub fn peer_sent(&mut self, n: usize) {
        if n == 0 {
            return self.peer_write_failed(&io::ErrorKind::WriteZero.into());
        }
        self.out_unflushed = true;
        if self.notify_pending {
            self.ctrl_pos += n;
            self.notify_pending = self.ctrl_pos < self.ctrl.len();
            // Our Close, when close_notify went behind it (`queue_control`).
            if !self.notify_pending && self.ctrl_is_close {
                self.close_sent = true;
            }
            return;
        }
        if !self.out_write.is_empty() {
            self.out_write.advance(n);
            if self.out_write.is_empty() && !self.raw_read_open {
                self.outbuf.release();
            }
            return;
        }
        self.ctrl_pos += n;
        if self.ctrl_pos >= self.ctrl.len() && self.ctrl_is_close {
            self.close_sent = true;
        }
    }

    pub fn peer_write_failed(&mut self, e: &io::Error) {
        self.peer_lost(End::PeerError(e.to_string()))
    }

    /// Where to read the raw side's next bytes: just behind the header room, so the frame can be
    /// sealed in place. `None` while a frame or control message is still being written.
    pub fn raw_recv_buf(&mut self) -> Option<&mut [u8]> {
        if !self.raw_recv_ready() {
            return None;
        }
        let (at, cap) = (self.headroom, self.slot_cap.min(self.frame_cap));
        Some(&mut self.outbuf.get()[at..at + cap])
    }

    fn raw_recv_ready(&self) -> bool {
        self.raw_read_open
            && !self.close_sent
            && !self.peer_gone
            && self.out_write.is_empty()
            && self.ctrl_pos >= self.ctrl.len()
            && !self.control_queued()
    }

    /// Where to read the raw side's next bytes with one vectored read: with TLS in the relay, one
    /// slice per record, each with room around it for the record's header and trailer, so that
    /// each is sealed in place; otherwise the one slice of `raw_recv_buf`. Returns how many
    /// (0: none, as `raw_recv_buf`'s `None`). Report with `raw_received`.
    pub fn raw_recv_vectored(&mut self) -> ([IoSliceMut<'_>; MAX_SLOTS], usize) {
        let slots = if self.raw_recv_ready() { self.slots } else { 0 };
        let (headroom, stride, cap) = (self.headroom, self.slot_stride, self.slot_cap.min(self.frame_cap));
        let mut out: [IoSliceMut<'_>; MAX_SLOTS] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut rest = &mut self.outbuf.get()[..];
        let mut skip = headroom;
        for slot in out.iter_mut().take(slots) {
            let (_, tail) = rest.split_at_mut(skip);
            let (payload, tail) = tail.split_at_mut(cap);
            *slot = IoSliceMut::new(payload);
            rest = tail;
            skip = stride.saturating_sub(cap);
        }
        (out, slots)
    }

    /// `n` bytes arrived in the buffer `raw_recv_buf` gave; 0 is EOF.
    pub fn raw_received(&mut self, n: usize) {
        self.raw_blocked = false;
        if n == 0 {
            self.raw_read_open = false;
            self.outbuf.release();
            if self.peer_open {
                self.record(End::RawClosed);
                self.close
                    .get_or_insert((CloseCode::NORMAL, "target closed the connection"));
            } else {
                // The peer closed first and the raw side has now drained: echo the Close.
                let code = match &self.end {
                    Some(End::PeerClosed(Some(c))) => CloseCode(*c),
                    _ => CloseCode::NORMAL,
                };
                self.close.get_or_insert((code, ""));
            }
            return;
        }
        self.counters.raw_to_peer += n as u64;
        let Some(tls) = self.tls.as_deref_mut() else {
            let at = self.headroom;
            let start = self.framing.seal(self.outbuf.get(), at, n);
            self.out_write.push(start, at + n);
            return;
        };
        // One record per slot the read filled, each sealed where it lies.
        let cap = self.slot_cap.min(self.frame_cap);
        let (mut left, mut at) = (n, self.headroom);
        while left > 0 {
            let len = left.min(cap);
            let start = self.framing.seal(self.outbuf.get(), at, len);
            match tls.seal(self.outbuf.get(), ContentType::ApplicationData, start..at + len) {
                Ok(record) => self.out_write.push(record.start, record.end),
                Err(e) => return self.peer_lost(End::PeerError(format!("TLS: {e}"))),
            }
            left -= len;
            at += self.slot_stride;
        }
    }

    pub fn raw_read_failed(&mut self, e: &io::Error) {
        self.raw_blocked = false;
        self.raw_read_open = false;
        self.outbuf.release();
        self.record(End::RawError(e.to_string()));
        self.finish_after_close = true;
        self.close
            .get_or_insert((CloseCode::INTERNAL_ERROR, "target connection failed"));
    }

    /// The raw read would block: the buffer goes back to the pool.
    pub fn raw_recv_blocked(&mut self) {
        self.raw_blocked = true;
        if self.out_write.is_empty() {
            self.outbuf.release();
        }
    }

    /// Frames written to the peer wait in its transport (TLS) and there is nothing more to write
    /// right now, so frames that arrive together leave in as few records and syscalls as possible.
    /// After our Close nothing more is written: what the transport holds (the last frames and the
    /// Close) must still be flushed, or a client behind a full socket would never see them.
    pub fn peer_flush_wanted(&self) -> bool {
        self.out_unflushed
            && !self.peer_gone
            && (self.close_sent
                || (self.out_write.is_empty()
                    && self.ctrl_pos >= self.ctrl.len()
                    && !self.control_queued()
                    && (self.raw_blocked || !self.raw_read_open)))
    }

    pub fn peer_flushed(&mut self) {
        self.out_unflushed = false;
    }

    /// Time to close the peer's transport (TLS close_notify, then the socket): the session is over
    /// and the raw side is shut.
    pub fn peer_close_wanted(&self) -> bool {
        !self.peer_gone && !self.peer_close_done && self.raw_write_shut && self.finished()
    }

    /// True the first time: the driver announces the close (TLS close_notify) once. With TLS in
    /// the relay, the relay queues close_notify itself: `peer_transmit` has it until it is out.
    pub fn begin_peer_close(&mut self) -> bool {
        let first = !std::mem::replace(&mut self.peer_close_begun, true);
        if first {
            if let Some(tls) = self.tls.as_deref_mut() {
                self.ctrl.clear();
                self.ctrl_pos = 0;
                self.ctrl_is_close = false;
                self.notify_pending = tls.seal_close_notify(&mut self.ctrl).is_ok();
            }
        }
        first
    }

    /// The transport may close now: nothing of ours is still to be written first.
    pub fn peer_close_ready(&self) -> bool {
        !self.notify_pending
    }

    pub fn peer_closed(&mut self) {
        self.peer_close_done = true;
    }

    fn control_queued(&self) -> bool {
        self.pong.is_some()
            || self.ping
            || self.close.is_some()
            || self.tls.as_deref().is_some_and(RecordLayer::key_update_due)
    }

    /// Encodes the next control message into `ctrl`. Returns false when there is none.
    fn queue_control(&mut self) -> bool {
        if !self.control_queued() {
            return false;
        }
        self.ctrl.clear();
        self.ctrl_pos = 0;
        self.ctrl_is_close = false;
        if let Some(tls) = self.tls.as_deref_mut().filter(|t| t.key_update_due()) {
            // Our KeyUpdate goes before any more data (the peer asked, or our key is worn).
            if let Err(e) = tls.seal_key_update(&mut self.ctrl, false) {
                self.peer_lost(End::PeerError(format!("TLS: {e}")));
                return false;
            }
            return true;
        }
        let ends = self.ends_with_our_close();
        let mut frame = Vec::new();
        let out = if self.tls.is_some() { &mut frame } else { &mut self.ctrl };
        if let Some(p) = self.pong.take() {
            self.framing.control(out, Control::Pong(p.as_bytes()));
        } else if std::mem::take(&mut self.ping) {
            self.framing.control(out, Control::Ping(PING_PAYLOAD));
        } else if let Some((code, reason)) = self.close.take() {
            self.framing.control(out, Control::Close(code, reason));
            self.ctrl_is_close = true;
        }
        if let Some(tls) = self.tls.as_deref_mut() {
            if let Err(e) = tls.seal_message(&mut self.ctrl, ContentType::ApplicationData, &frame) {
                self.peer_lost(End::PeerError(format!("TLS: {e}")));
                return false;
            }
            // Our Close ends the session: close_notify follows it in the same write (one
            // syscall and one wake-up of the client fewer), as `begin_peer_close` would queue it.
            if self.ctrl_is_close && ends && tls.seal_close_notify(&mut self.ctrl).is_ok() {
                self.peer_close_begun = true;
                self.notify_pending = true;
            }
        }
        true
    }

    /// Whether the session is over once our Close is out: the peer's Close came, everything it
    /// sent is delivered, and the raw side is shut (`peer_close_wanted` follows at once).
    fn ends_with_our_close(&self) -> bool {
        !self.peer_open && self.in_write.is_empty() && self.raw_write_shut && !self.peer_gone && !self.peer_close_begun
    }

    fn finished(&self) -> bool {
        // The peer is gone, or Close frames went both ways, or ours went out after an error; and
        // what the peer sent before is delivered.
        self.in_write.is_empty()
            && (self.peer_gone || (self.close_sent && (!self.peer_open || self.finish_after_close)))
    }

    fn record(&mut self, end: End) {
        self.end.get_or_insert(end);
    }
}
