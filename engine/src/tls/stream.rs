//! A connection after its handshake: the record layer over the socket, as a futures-io stream
//! for the routes that read and write messages (requests, the web app, terminals). Relays take
//! its parts instead (`into_parts`) and seal and open records in their own buffers.
//!
//! Reads: records are read into a pooled buffer and opened in place; plaintext is copied out to
//! the caller. Writes: plaintext is copied into the outgoing buffer and sealed there, then sent.
//! Both buffers exist only while bytes are in flight: a stream waiting for its client holds none.

use futures_lite::io::{AsyncRead, AsyncWrite};
use portcullis_core::relay::pool::PooledBuf;
use portcullis_core::tls::{ContentType, Opened, RecordError, RecordLayer, MAX_PLAINTEXT, MAX_RECORD};
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// The read buffer: a whole record and room to read the next one behind it.
const INBUF: usize = 2 * MAX_RECORD;
/// Most sealed bytes a write leaves queued before it waits for the socket.
const OUT_LIMIT: usize = 64 << 10;

pub struct TlsStream<S> {
    socket: S,
    /// `None` once a relay took it over (`detach`). Boxed: the keys (about 1.2 KiB) move to the
    /// relay without a copy, and a detached stream, which lives as long as its connection, keeps
    /// a pointer, not their room.
    records: Option<Box<RecordLayer>>,
    inbuf: PooledBuf,
    /// Ciphertext read and not opened yet.
    cipher: Range<usize>,
    /// Plaintext opened and not read yet.
    plain: Range<usize>,
    /// Plaintext rustls decrypted during the handshake (the first request, sent with Finished).
    early: Vec<u8>,
    early_pos: usize,
    /// Sealed records not yet written.
    out: Vec<u8>,
    out_pos: usize,
    peer_closed: bool,
    close_queued: bool,
}

impl<S> TlsStream<S> {
    /// `early`: plaintext already decrypted; `rest`: ciphertext read behind the handshake.
    pub(crate) fn new(socket: S, records: RecordLayer, early: Vec<u8>, rest: Vec<u8>) -> Self {
        let mut inbuf = PooledBuf::new(INBUF);
        let mut cipher = 0..0;
        if !rest.is_empty() {
            // At most a partial record and whatever followed it in one read of the handshake.
            let n = rest.len().min(INBUF);
            inbuf.get()[..n].copy_from_slice(&rest[..n]);
            cipher = 0..n;
        }
        TlsStream {
            socket,
            records: Some(Box::new(records)),
            inbuf,
            cipher,
            plain: 0..0,
            early,
            early_pos: 0,
            out: Vec::new(),
            out_pos: 0,
            peer_closed: false,
            close_queued: false,
        }
    }

    /// Records sealed already (rustls' session tickets, kept back from the handshake): sent
    /// with the first write, or by a flush.
    pub(crate) fn with_queued(mut self, records: Vec<u8>) -> Self {
        debug_assert!(self.out.is_empty());
        self.out = records;
        self
    }

    /// Queues close_notify: the next flush or close sends it.
    pub fn begin_close(&mut self) {
        if !self.close_queued {
            self.close_queued = true;
            if let Some(records) = self.records.as_mut() {
                let _ = records.seal_close_notify(&mut self.out);
            }
        }
    }

    /// The record layer (`None` once detached).
    pub fn records(&self) -> Option<&RecordLayer> {
        self.records.as_deref()
    }

    /// Hands the record layer to a relay, which from now on reads and writes the socket itself
    /// (`socket_mut`): with what this stream had opened and not given out (plaintext) and read
    /// and not opened (ciphertext). `None` if writes are still queued (flush first) or it was
    /// detached already. The stream is unusable afterwards.
    pub fn detach(&mut self) -> Option<(Box<RecordLayer>, Vec<u8>, Vec<u8>)> {
        if self.out_pos < self.out.len() || self.close_queued {
            return None;
        }
        let records = self.records.take()?;
        let mut plain = std::mem::take(&mut self.early)[self.early_pos..].to_vec();
        let (p, c) = (self.plain.clone(), self.cipher.clone());
        let cipher = if self.inbuf.is_held() {
            let buf = self.inbuf.get();
            plain.extend_from_slice(&buf[p]);
            buf[c].to_vec()
        } else {
            Vec::new()
        };
        self.inbuf.release();
        self.plain = 0..0;
        self.cipher = 0..0;
        Some((records, plain, cipher))
    }

    /// The socket under TLS: for a relay that took the record layer.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Bytes this stream holds in buffers now (0 between bursts).
    pub fn buffered_bytes(&self) -> usize {
        let inbuf = if self.inbuf.is_held() { self.inbuf.size() } else { 0 };
        inbuf + self.out.capacity() + self.early.capacity()
    }

    fn seal_into_out(&mut self, data: &[u8]) -> io::Result<()> {
        let start = self.out.len();
        let sealed = self.seal_after(data);
        if sealed.is_err() {
            // Never leave plaintext where sealed records are expected; the stream is done.
            self.out.truncate(start);
            self.records = None;
        }
        sealed
    }

    fn seal_after(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(records) = self.records.as_mut() else {
            return Err(detached());
        };
        if records.key_update_due() {
            records.seal_key_update(&mut self.out, false).map_err(invalid)?;
        }
        let (prefix, suffix) = (records.prefix(), records.suffix());
        for chunk in data.chunks(MAX_PLAINTEXT) {
            let at = self.out.len();
            self.out.reserve(prefix + chunk.len() + suffix);
            self.out.resize(at + prefix, 0);
            self.out.extend_from_slice(chunk);
            self.out.resize(at + prefix + chunk.len() + suffix, 0);
            records
                .seal(
                    &mut self.out,
                    ContentType::ApplicationData,
                    at + prefix..at + prefix + chunk.len(),
                )
                .map_err(invalid)?;
        }
        Ok(())
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "TLS taken over by a relay")
}

fn invalid(e: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncWrite + Unpin> TlsStream<S> {
    /// Writes queued records until none is left or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        // Nothing in flight: the buffer goes (a stream between bursts holds none).
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.early_pos < this.early.len() {
                let n = buf.len().min(this.early.len() - this.early_pos);
                buf[..n].copy_from_slice(&this.early[this.early_pos..this.early_pos + n]);
                this.early_pos += n;
                if this.early_pos == this.early.len() {
                    this.early = Vec::new();
                    this.early_pos = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if !this.plain.is_empty() {
                let n = buf.len().min(this.plain.len());
                let at = this.plain.start;
                buf[..n].copy_from_slice(&this.inbuf.get()[at..at + n]);
                this.plain.start += n;
                if this.plain.is_empty() && this.cipher.is_empty() {
                    this.inbuf.release();
                }
                return Poll::Ready(Ok(n));
            }
            if this.peer_closed {
                // Nothing after close_notify counts: the buffer goes.
                this.cipher = 0..0;
                this.inbuf.release();
                return Poll::Ready(Ok(0));
            }
            if !this.cipher.is_empty() {
                let base = this.cipher.start;
                let range = this.cipher.clone();
                let Some(records) = this.records.as_mut() else {
                    return Poll::Ready(Err(detached()));
                };
                match records.open(&mut this.inbuf.get()[range]) {
                    Err(e) => return Poll::Ready(Err(invalid(e))),
                    Ok(Some((len, opened))) => {
                        this.cipher.start += len;
                        match opened {
                            Opened::Data(r) => this.plain = base + r.start..base + r.end,
                            Opened::Closed => this.peer_closed = true,
                            // A key update the peer asked us for goes out before our next data
                            // (`seal_into_out`): one, however many requests came meanwhile.
                            Opened::Nothing => {}
                        }
                        continue;
                    }
                    Ok(None) => {}
                }
            }
            // Read more, behind what is there; a partial record moves to the front first when
            // the rest of it would not fit (this stream copies anyway; relays avoid it).
            if this.cipher.is_empty() {
                this.cipher = 0..0;
            } else if INBUF - this.cipher.start < MAX_RECORD {
                let (start, end) = (this.cipher.start, this.cipher.end);
                this.inbuf.get().copy_within(start..end, 0);
                this.cipher = 0..end - start;
            }
            let end = this.cipher.end;
            match Pin::new(&mut this.socket).poll_read(cx, &mut this.inbuf.get()[end..]) {
                Poll::Pending => {
                    if this.cipher.is_empty() {
                        this.inbuf.release();
                    }
                    return Poll::Pending;
                }
                // The peer left without close_notify: a truncation, as rustls reports it.
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into())),
                Poll::Ready(Ok(n)) => this.cipher.end += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.out.len() - this.out_pos >= OUT_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        let take = data.len().min(OUT_LIMIT);
        this.seal_into_out(&data[..take])?;
        // Send now if the socket takes it; what it does not take waits for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.begin_close();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.socket).poll_close(cx)
    }
}
