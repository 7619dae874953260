//! The tunnel relay: WebSocket binary frames on one side, a raw byte stream on the other.
//!
//! One state machine drives both directions from a single `poll`, so the WebSocket transport is
//! never split or locked, and pongs and closes are written between data frames by the same writer.
//! It is generic over futures-io, so the gateway (glommio, server role) and the CLI client (tokio,
//! client role) run the same code.
//!
//! Copies: frames are unmasked in place in the read buffer and written to the raw side from there;
//! while the peer keeps sending, the payloads of consecutive frames are gathered into one range
//! (each moved back over the header before it) and written together, one write per buffer rather
//! than per frame. Raw bytes are read just behind a reserved header gap, so a frame goes out as one
//! contiguous write.
//!
//! Close: a peer Close or raw EOF is a half-close. Peer Close → FIN to the raw side, keep relaying
//! raw → peer until raw EOF, then echo the Close. Raw EOF → send Close(1000), keep relaying
//! peer → raw until the peer's Close. The driver bounds how long a half-closed session may last.

use futures_lite::io::{AsyncRead, AsyncWrite};
use portcullis_protocols::ws::{self, CloseCode, ControlPayload, Decoder, Event, Limits, OpCode, ProtocolError, Role};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Room for the longest frame header (10 bytes + 4 bytes of mask key).
const HEADROOM: usize = 14;

/// Plaintext bytes of a full TLS record (TLS 1.2 and 1.3).
const TLS_RECORD: usize = 16 * 1024;

/// Payload from the peer is gathered while at least this much buffer (or a quarter of a small
/// one) is free for the next read.
const MIN_GATHER_ROOM: usize = TLS_RECORD;

/// The largest payload to read for one frame into `area` bytes of buffer: frames are sized to fill
/// whole TLS records, so a frame never spills its last few bytes into one more record (one more
/// seal and one more send; a 16 KiB payload plus its 4-byte header took two records). Over plain
/// TCP it costs nothing.
fn frame_payload_cap(area: usize, masked: bool) -> usize {
    let records = (area + ws::header_len(area as u64, masked)) / TLS_RECORD;
    if records == 0 {
        return area;
    }
    let whole = records * TLS_RECORD;
    // Payloads this size have a 4- or 10-byte header (plus the mask key).
    for base in [4, 10] {
        let header = base + if masked { 4 } else { 0 };
        let n = whole - header;
        if ws::header_len(n as u64, masked) == header && n <= area {
            return n;
        }
    }
    area
}

/// Bytes of free buffers a core keeps for reuse (about 128 buffers at the default 64 KiB); beyond
/// this, released buffers are freed.
const POOL_BYTES: usize = 8 << 20;

/// Relay buffers of one core not in use by any session, and their total size.
#[derive(Default)]
struct Pool {
    free: Vec<Box<[u8]>>,
    bytes: usize,
}

thread_local! {
    /// Sessions take a buffer only while data is in flight and give it back as soon as a read
    /// would block, so an idle session holds none: memory follows traffic, not the number of open
    /// sessions.
    static POOL: std::cell::RefCell<Pool> = std::cell::RefCell::new(Pool::default());
}

/// A buffer borrowed from the core's pool while needed.
struct PooledBuf {
    buf: Option<Box<[u8]>>,
    size: usize,
}

impl PooledBuf {
    fn new(size: usize) -> Self {
        PooledBuf { buf: None, size }
    }

    fn get(&mut self) -> &mut [u8] {
        let size = self.size;
        self.buf.get_or_insert_with(|| {
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                match pool.free.iter().rposition(|b| b.len() == size) {
                    Some(i) => {
                        pool.bytes -= size;
                        pool.free.swap_remove(i)
                    }
                    None => vec![0u8; size].into_boxed_slice(),
                }
            })
        })
    }

    fn release(&mut self) {
        if let Some(buf) = self.buf.take() {
            POOL.with(|p| {
                let mut pool = p.borrow_mut();
                if pool.bytes + buf.len() <= POOL_BYTES {
                    pool.bytes += buf.len();
                    pool.free.push(buf);
                }
            });
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        self.release();
    }
}

/// A WebSocket byte transport that can announce its own closing (TLS close_notify).
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    fn begin_close(&mut self) {}
}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for futures_rustls::server::TlsStream<T> {
    fn begin_close(&mut self) {
        self.get_mut().1.send_close_notify();
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for futures_rustls::client::TlsStream<T> {
    fn begin_close(&mut self) {
        self.get_mut().1.send_close_notify();
    }
}

/// How a relayed session ended, for the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The WebSocket peer sent Close (with this code) and the close handshake completed.
    PeerClosed(Option<u16>),
    /// The raw side sent EOF first and the close handshake completed.
    RawClosed,
    /// The WebSocket peer vanished without a Close frame.
    PeerGone,
    /// Reading or writing the WebSocket side failed.
    PeerError(String),
    /// Reading or writing the raw side failed.
    RawError(String),
    /// The peer broke RFC 6455; we sent the matching close code.
    Protocol(ProtocolError),
    /// Ended by the gateway (timeout, shutdown), with the close code and reason sent.
    Local(u16, &'static str),
}

impl End {
    /// Short stable label for logs and the audit record.
    pub fn label(&self) -> String {
        match self {
            End::PeerClosed(_) => "client_closed".into(),
            End::RawClosed => "target_closed".into(),
            End::PeerGone => "client_disconnected".into(),
            End::PeerError(e) => format!("client_error: {e}"),
            End::RawError(e) => format!("target_error: {e}"),
            End::Protocol(e) => format!("protocol_error: {e}"),
            End::Local(_, reason) => reason.to_string(),
        }
    }
}

/// What `Relay::poll` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The session started closing or half-closing; the driver should now bound how long it lasts.
    Closing,
    Ended(End),
}

/// Byte and frame counters, read by the session driver for idle and liveness checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Payload bytes from the WebSocket peer to the raw side.
    pub peer_to_raw: u64,
    /// Payload bytes from the raw side to the WebSocket peer.
    pub raw_to_peer: u64,
    /// Reads from the WebSocket peer that returned data (any frame, pongs included).
    pub peer_reads: u64,
}

pub struct Relay {
    role: Role,
    decoder: Decoder,
    // Peer → raw.
    inbuf: PooledBuf,
    in_start: usize,
    in_end: usize,
    in_write: Option<(usize, usize)>,
    /// Payload decoded but not yet written, gathered into one range of `inbuf` so that the
    /// payloads of several frames (and TLS records) reach the raw side in one write. Only while
    /// `in_write` is None.
    gather: Option<(usize, usize)>,
    /// Bytes were written to the raw side since its last flush (stdout buffers; sockets do not).
    in_unflushed: bool,
    peer_open: bool,
    // Raw → peer.
    outbuf: PooledBuf,
    out_write: Option<(usize, usize)>,
    out_unflushed: bool,
    raw_read_open: bool,
    /// Most payload bytes per frame (see `frame_payload_cap`).
    frame_cap: usize,
    // Control frames waiting for the writer, in order: pong, ping, close.
    pong: Option<ControlPayload>,
    ping: Option<ControlPayload>,
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
    end: Option<End>,
    closing_reported: bool,
    counters: Counters,
    mask_seed: u64,
    /// The first bytes the peer sent, kept for the audit log (e.g. an RDP X.224 cookie).
    capture: Option<(Vec<u8>, usize)>,
}

impl Relay {
    /// `initial` holds bytes already read from the peer after the HTTP head.
    pub fn new(role: Role, limits: Limits, buf_size: usize, initial: &[u8]) -> Self {
        // Both directions use one size so they share the pool.
        let size = buf_size.max(initial.len()).max(1024) + HEADROOM;
        let mut inbuf = PooledBuf::new(size);
        if !initial.is_empty() {
            inbuf.get()[..initial.len()].copy_from_slice(initial);
        }
        Self {
            role,
            decoder: Decoder::new(role, limits),
            inbuf,
            in_start: 0,
            in_end: initial.len(),
            in_write: None,
            gather: None,
            in_unflushed: false,
            peer_open: true,
            outbuf: PooledBuf::new(size),
            out_write: None,
            out_unflushed: false,
            raw_read_open: true,
            frame_cap: frame_payload_cap(size - HEADROOM, matches!(role, Role::Client)),
            pong: None,
            ping: None,
            close: None,
            ctrl: Vec::new(),
            ctrl_pos: 0,
            ctrl_is_close: false,
            close_sent: false,
            peer_gone: false,
            raw_write_shut: false,
            finish_after_close: false,
            end: None,
            closing_reported: false,
            counters: Counters::default(),
            mask_seed: seed(),
            capture: None,
        }
    }

    /// Keeps a copy of the first `limit` payload bytes from the peer (see `captured`).
    pub fn capture_first(&mut self, limit: usize) {
        self.capture = Some((Vec::with_capacity(limit), limit));
    }

    pub fn captured(&self) -> &[u8] {
        self.capture.as_ref().map(|(c, _)| c.as_slice()).unwrap_or_default()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// True once a Close has been queued or sent: the session is winding down.
    pub fn is_closing(&self) -> bool {
        self.close.is_some() || self.close_sent
    }

    /// Ends the session from outside (timeouts, shutdown): sends Close and stops relaying.
    pub fn close(&mut self, code: CloseCode, reason: &'static str) {
        self.record(End::Local(code.0, reason));
        self.raw_read_open = false;
        self.finish_after_close = true;
        if !self.close_sent && self.close.is_none() {
            self.close = Some((code, reason));
        }
    }

    /// Sends a ping to probe a silent peer.
    pub fn ping(&mut self) {
        if self.ping.is_none() && !self.is_closing() {
            self.ping = ControlPayload::new(b"portcullis");
        }
    }

    fn record(&mut self, end: End) {
        self.end.get_or_insert(end);
    }

    /// Drives both directions until the session has ended.
    pub fn poll<W: Transport, R: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        ws: &mut W,
        raw: &mut R,
    ) -> Poll<Step> {
        loop {
            // Data already read from the peer is delivered even after the peer is gone.
            let up = if self.peer_open || self.in_write.is_some() {
                self.poll_up(cx, ws, raw)
            } else {
                Poll::Pending
            };
            let down = self.poll_down(cx, ws, raw);
            if let Poll::Ready(()) = self.poll_half_close(cx, raw) {
                continue;
            }
            if self.finished() {
                return self.poll_finish(cx, ws, raw).map(Step::Ended);
            }
            if !self.closing_reported && (self.is_closing() || !self.peer_open || !self.raw_read_open) {
                self.closing_reported = true;
                return Poll::Ready(Step::Closing);
            }
            if up.is_pending() && down.is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Gives up on a session whose close did not finish in time.
    pub fn abort(&mut self) -> End {
        self.end
            .take()
            .unwrap_or(End::Local(CloseCode::GOING_AWAY.0, "close_timeout"))
    }

    fn finished(&self) -> bool {
        // The peer is gone, or Close frames went both ways, or ours went out after an error; and
        // what the peer sent before is delivered.
        self.in_write.is_none() && (self.peer_gone || (self.close_sent && (!self.peer_open || self.finish_after_close)))
    }

    /// The peer broke the protocol or sent what a tunnel does not carry: close with `code`.
    fn fail_peer(&mut self, end: End, code: CloseCode, reason: &'static str) -> Poll<()> {
        // Data from frames before the offending one is still delivered.
        self.write_gathered();
        self.record(end);
        self.peer_open = false;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.close.get_or_insert((code, reason));
        Poll::Ready(())
    }

    /// The peer's transport failed or hit EOF.
    fn peer_lost(&mut self, end: End) -> Poll<()> {
        self.write_gathered();
        self.record(end);
        self.peer_open = false;
        self.peer_gone = true;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.out_write = None;
        Poll::Ready(())
    }

    /// Peer → raw. Ready(()) whenever state changed that the other direction may care about.
    fn poll_up<W: Transport, R: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        ws: &mut W,
        raw: &mut R,
    ) -> Poll<()> {
        loop {
            if let Some((start, end)) = self.in_write {
                if self.raw_write_shut {
                    // The raw side is gone for writing; drop what the peer still sends.
                    self.in_write = None;
                    continue;
                }
                match Pin::new(&mut *raw).poll_write(cx, &self.inbuf.get()[start..end]) {
                    Poll::Ready(Ok(0)) => return self.raw_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.counters.peer_to_raw += n as u64;
                        self.in_unflushed = true;
                        self.in_write = (start + n < end).then_some((start + n, end));
                        continue;
                    }
                    Poll::Ready(Err(e)) => return self.raw_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if !self.peer_open {
                return Poll::Pending;
            }
            if self.in_start < self.in_end {
                let decoded = match self.decoder.decode(&mut self.inbuf.get()[self.in_start..self.in_end]) {
                    Ok(d) => d,
                    Err(e) => {
                        let code = e.close_code();
                        return self.fail_peer(End::Protocol(e), code, "protocol error");
                    }
                };
                let base = self.in_start;
                self.in_start += decoded.consumed;
                match decoded.event {
                    None => {}
                    Some(Event::Data { range, text, .. }) => {
                        if text {
                            let end = End::Local(CloseCode::UNSUPPORTED_DATA.0, "text_frame_refused");
                            return self.fail_peer(end, CloseCode::UNSUPPORTED_DATA, "binary frames only");
                        }
                        if !range.is_empty() {
                            let (start, end) = (base + range.start, base + range.end);
                            if let Some((cap, limit)) = &mut self.capture {
                                let take = (end - start).min(limit.saturating_sub(cap.len()));
                                cap.extend_from_slice(&self.inbuf.get()[start..start + take]);
                            }
                            self.gather = Some(match self.gather {
                                None => (start, end),
                                // Close the gap the frame header left (payloads only move back).
                                Some((g0, g1)) => {
                                    self.inbuf.get().copy_within(start..end, g1);
                                    (g0, g1 + end - start)
                                }
                            });
                        }
                    }
                    Some(Event::Ping(p)) => {
                        // Answer only the latest ping (RFC 6455 §5.5.3), so a ping flood costs no memory.
                        self.pong = Some(p);
                        return Poll::Ready(());
                    }
                    Some(Event::Pong(_)) => {}
                    Some(Event::Close { code, .. }) => {
                        self.peer_open = false;
                        self.write_gathered();
                        self.record(End::PeerClosed(code.map(|c| c.0)));
                        return Poll::Ready(());
                    }
                }
                continue;
            }
            // Read behind the payload gathered so far while the buffer has room for a TLS record's
            // worth, so that it all reaches the raw side in one write; else from the start.
            let at = match self.gather {
                Some((_, g1)) => {
                    let len = self.inbuf.get().len();
                    if len - g1 < MIN_GATHER_ROOM.min(len / 4) {
                        self.write_gathered();
                        continue;
                    }
                    g1
                }
                None => 0,
            };
            (self.in_start, self.in_end) = (at, at);
            match Pin::new(&mut *ws).poll_read(cx, &mut self.inbuf.get()[at..]) {
                Poll::Ready(Ok(0)) => return self.peer_lost(End::PeerGone),
                Poll::Ready(Ok(n)) => {
                    self.in_end = at + n;
                    self.counters.peer_reads += 1;
                }
                // A peer that drops TCP without TLS close_notify has simply gone away.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return self.peer_lost(End::PeerGone)
                }
                Poll::Ready(Err(e)) => return self.peer_lost(End::PeerError(e.to_string())),
                // The peer has nothing more right now: write what was gathered.
                Poll::Pending if self.gather.is_some() => self.write_gathered(),
                Poll::Pending => {
                    // Everything read has been forwarded: the buffer goes back to the pool.
                    self.inbuf.release();
                    // Nothing more to forward right now: push out what the raw side buffered.
                    if self.in_unflushed {
                        match Pin::new(&mut *raw).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.in_unflushed = false,
                            Poll::Ready(Err(e)) => return self.raw_failed(e),
                            Poll::Pending => {}
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Hands the gathered payload to the writer.
    fn write_gathered(&mut self) {
        if self.in_write.is_none() {
            self.in_write = self.gather.take();
        }
    }

    fn raw_failed(&mut self, e: io::Error) -> Poll<()> {
        self.record(End::RawError(e.to_string()));
        self.in_write = None;
        self.gather = None;
        self.raw_write_shut = true;
        self.raw_read_open = false;
        self.finish_after_close = true;
        self.close
            .get_or_insert((CloseCode::INTERNAL_ERROR, "target connection failed"));
        Poll::Ready(())
    }

    /// Raw → peer, plus every control frame.
    fn poll_down<W: Transport, R: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        ws: &mut W,
        raw: &mut R,
    ) -> Poll<()> {
        loop {
            if self.close_sent || self.peer_gone {
                return Poll::Pending;
            }
            if let Some((start, end)) = self.out_write {
                match Pin::new(&mut *ws).poll_write(cx, &self.outbuf.get()[start..end]) {
                    Poll::Ready(Ok(0)) => return self.peer_write_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.out_write = (start + n < end).then_some((start + n, end));
                        self.out_unflushed = true;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return self.peer_write_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.ctrl_pos < self.ctrl.len() {
                match Pin::new(&mut *ws).poll_write(cx, &self.ctrl[self.ctrl_pos..]) {
                    Poll::Ready(Ok(0)) => return self.peer_write_failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        self.ctrl_pos += n;
                        self.out_unflushed = true;
                        if self.ctrl_pos == self.ctrl.len() && self.ctrl_is_close {
                            self.close_sent = true;
                            return Poll::Ready(());
                        }
                        continue;
                    }
                    Poll::Ready(Err(e)) => return self.peer_write_failed(e),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.queue_control() {
                continue;
            }
            if !self.raw_read_open {
                return self.flush(cx, ws);
            }
            let mask = matches!(self.role, Role::Client);
            let payload_at = HEADROOM;
            let payload_end = payload_at + self.frame_cap;
            match Pin::new(&mut *raw).poll_read(cx, &mut self.outbuf.get()[payload_at..payload_end]) {
                Poll::Ready(Ok(0)) => {
                    self.raw_read_open = false;
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
                    continue;
                }
                Poll::Ready(Ok(n)) => {
                    let key = mask.then(|| self.next_mask());
                    let hlen = ws::header_len(n as u64, mask);
                    let start = payload_at - hlen;
                    let mut header = [0u8; HEADROOM];
                    let written = ws::encode_header(&mut header, true, OpCode::Binary, n as u64, key);
                    let out = self.outbuf.get();
                    out[start..payload_at].copy_from_slice(&header[..written]);
                    if let Some(key) = key {
                        ws::apply_mask(&mut out[payload_at..payload_at + n], key, 0);
                    }
                    self.counters.raw_to_peer += n as u64;
                    self.out_write = Some((start, payload_at + n));
                }
                Poll::Ready(Err(e)) => {
                    self.raw_read_open = false;
                    self.record(End::RawError(e.to_string()));
                    self.finish_after_close = true;
                    self.close
                        .get_or_insert((CloseCode::INTERNAL_ERROR, "target connection failed"));
                    continue;
                }
                Poll::Pending => {
                    self.outbuf.release();
                    return self.flush(cx, ws);
                }
            }
        }
    }

    /// Flushes written frames when there is nothing more to write right now, so frames that
    /// arrive together leave in as few TLS records and syscalls as possible.
    fn flush<W: Transport>(&mut self, cx: &mut Context<'_>, ws: &mut W) -> Poll<()> {
        if self.out_unflushed {
            match Pin::new(&mut *ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.out_unflushed = false,
                Poll::Ready(Err(e)) => return self.peer_write_failed(e),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Encodes the next control frame into `ctrl`. Returns false when there is none.
    fn queue_control(&mut self) -> bool {
        // Checked on every pass of the writer loop: return before any work when nothing waits.
        if self.pong.is_none() && self.ping.is_none() && self.close.is_none() {
            return false;
        }
        let mask = matches!(self.role, Role::Client).then(|| self.next_mask());
        self.ctrl.clear();
        self.ctrl_pos = 0;
        self.ctrl_is_close = false;
        if let Some(p) = self.pong.take() {
            ws::encode_control(&mut self.ctrl, OpCode::Pong, p.as_bytes(), mask);
        } else if let Some(p) = self.ping.take() {
            ws::encode_control(&mut self.ctrl, OpCode::Ping, p.as_bytes(), mask);
        } else if let Some((code, reason)) = self.close.take() {
            ws::encode_close(&mut self.ctrl, code, reason, mask);
            self.ctrl_is_close = true;
        }
        true
    }

    fn peer_write_failed(&mut self, e: io::Error) -> Poll<()> {
        self.peer_lost(End::PeerError(e.to_string()))
    }

    /// Sends FIN to the raw side once the peer will send nothing more and all its data is out.
    fn poll_half_close<R: AsyncWrite + Unpin>(&mut self, cx: &mut Context<'_>, raw: &mut R) -> Poll<()> {
        if self.peer_open || self.raw_write_shut || self.in_write.is_some() {
            return Poll::Pending;
        }
        match Pin::new(raw).poll_close(cx) {
            Poll::Ready(_) => {
                self.raw_write_shut = true;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_finish<W: Transport, R: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        ws: &mut W,
        raw: &mut R,
    ) -> Poll<End> {
        if !self.raw_write_shut {
            let _ = ready!(Pin::new(&mut *raw).poll_close(cx));
            self.raw_write_shut = true;
        }
        if !self.peer_gone {
            ws.begin_close();
            let _ = ready!(Pin::new(&mut *ws).poll_close(cx));
        }
        Poll::Ready(self.end.take().unwrap_or(End::PeerGone))
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift64*: masks need to be unpredictable to intermediaries, not secret (RFC 6455 §10.3);
        // the seed comes from the OS.
        self.mask_seed ^= self.mask_seed >> 12;
        self.mask_seed ^= self.mask_seed << 25;
        self.mask_seed ^= self.mask_seed >> 27;
        (self.mask_seed.wrapping_mul(0x2545_f491_4f6c_dd1d) as u32).to_ne_bytes()
    }
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_ne_bytes(b) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_fill_whole_tls_records() {
        for masked in [false, true] {
            for area in [1024, 16 * 1024, 16 * 1024 + 3, 64 * 1024, 100_000, 1 << 20] {
                let n = frame_payload_cap(area, masked);
                assert!(n <= area, "{area}: {n}");
                let frame = n + ws::header_len(n as u64, masked);
                if area + ws::header_len(area as u64, masked) < TLS_RECORD {
                    assert_eq!(n, area, "a small buffer is used whole");
                } else {
                    assert_eq!(frame % TLS_RECORD, 0, "{area} masked={masked}: frame of {frame}");
                    assert!(area - n < TLS_RECORD, "{area}: wastes a record");
                }
            }
        }
        assert_eq!(frame_payload_cap(16 * 1024, false), 16 * 1024 - 4);
        assert_eq!(frame_payload_cap(16 * 1024, true), 16 * 1024 - 8);
        assert_eq!(frame_payload_cap(100_000, false), 6 * TLS_RECORD - 10);
    }

    /// The WebSocket side: hands out `input` at most `chunk` bytes per read, then waits (or, with
    /// `eof`, ends); keeps what is written.
    struct Peer {
        input: Vec<u8>,
        pos: usize,
        chunk: usize,
        eof: bool,
        written: Vec<u8>,
    }

    impl AsyncRead for Peer {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let n = self.chunk.min(buf.len()).min(self.input.len() - self.pos);
            if n == 0 && self.eof {
                return Poll::Ready(Ok(0));
            }
            if n == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            buf[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Peer {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl Transport for Peer {}

    /// The raw side: records each write; silent until it gets FIN, then EOF.
    #[derive(Default)]
    struct Raw {
        data: Vec<u8>,
        writes: usize,
        fin: bool,
    }

    impl AsyncRead for Raw {
        fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, _: &mut [u8]) -> Poll<io::Result<usize>> {
            if self.fin {
                return Poll::Ready(Ok(0));
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    impl AsyncWrite for Raw {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            assert!(!self.fin, "write after FIN");
            self.data.extend_from_slice(buf);
            self.writes += 1;
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.fin = true;
            Poll::Ready(Ok(()))
        }
    }

    /// A client's masked frame.
    fn frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
        let mut header = [0u8; HEADROOM];
        let h = ws::encode_header(&mut header, true, opcode, payload.len() as u64, Some(key));
        out.extend_from_slice(&header[..h]);
        let start = out.len();
        out.extend_from_slice(payload);
        ws::apply_mask(&mut out[start..], key, 0);
    }

    /// Relays `input` from a client in reads of `chunk` bytes until the session ends.
    fn relay(input: Vec<u8>, chunk: usize, buf_size: usize, eof: bool) -> (End, Raw, Peer) {
        let mut relay = Relay::new(Role::Server, Limits::default(), buf_size, &[]);
        let mut peer = Peer {
            input,
            pos: 0,
            chunk,
            eof,
            written: Vec::new(),
        };
        let mut raw = Raw::default();
        let end = futures_lite::future::block_on(std::future::poll_fn(|cx| loop {
            match relay.poll(cx, &mut peer, &mut raw) {
                Poll::Ready(Step::Closing) => continue,
                Poll::Ready(Step::Ended(end)) => return Poll::Ready(end),
                Poll::Pending => return Poll::Pending,
            }
        }));
        (end, raw, peer)
    }

    /// Payload of uneven frames, split across reads at every kind of place, reaches the raw side
    /// whole, in order and in far fewer writes than frames; the peer's Close comes after all of
    /// it, and FIN only then.
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
            let (end, raw, peer) = relay(input.clone(), chunk, buf_size, false);
            assert_eq!(end, End::PeerClosed(Some(1000)), "chunk {chunk}");
            assert!(raw.data == expected, "chunk {chunk}: payload differs");
            assert!(raw.fin, "chunk {chunk}: no FIN");
            // One write per frame would be 200; gathered, a write carries most of a buffer.
            assert!(
                raw.writes * (buf_size / 3) <= expected.len(),
                "chunk {chunk}, buffer {buf_size}: {} writes for {} bytes in 200 frames",
                raw.writes,
                expected.len()
            );
            // Four pongs and the Close echo went back.
            assert_eq!(peer.written.iter().filter(|&&b| b == 0x8a).count(), 4, "chunk {chunk}");
            assert_eq!(
                &peer.written[peer.written.len() - 4..],
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
        let (end, raw, _) = relay(input, 1 << 20, 4096, false);
        assert_eq!(end, End::Local(CloseCode::UNSUPPORTED_DATA.0, "text_frame_refused"));
        assert_eq!(raw.data, b"first second");
        assert!(raw.fin);
    }

    /// A client that vanishes without a Close: what it sent before is delivered, then FIN.
    #[test]
    fn data_before_the_peer_vanishes_is_delivered() {
        let mut input = Vec::new();
        frame(&mut input, OpCode::Binary, b"last ", [1, 2, 3, 4]);
        frame(&mut input, OpCode::Binary, b"words", [5, 6, 7, 8]);
        for chunk in [3, 1 << 20] {
            let (end, raw, _) = relay(input.clone(), chunk, 4096, true);
            assert_eq!(end, End::PeerGone);
            assert_eq!(raw.data, b"last words", "chunk {chunk}");
            assert!(raw.fin, "chunk {chunk}");
        }
    }
}
