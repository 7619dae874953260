//! The relay's I/O driver: moves bytes between two futures-io streams as the sans-IO relay
//! (`portcullis_core::relay`) asks, and nothing else. Generic over the streams, so the gateway
//! (glommio: the client's socket, the relay sealing and opening its TLS records) and the CLI
//! (tokio, rustls' stream to the gateway) run the same code. Reads and writes are vectored: the
//! relay hands over several records or payload ranges at once.

use futures_lite::io::{AsyncRead, AsyncWrite};
use portcullis_core::relay::framing::Framing;
use portcullis_core::relay::ranges::MAX_RANGES;
use portcullis_core::relay::{Relay, Step};
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A framed transport that can announce its own closing (TLS close_notify).
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    fn begin_close(&mut self) {}
}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for crate::tls::stream::TlsStream<T> {
    fn begin_close(&mut self) {
        crate::tls::stream::TlsStream::begin_close(self);
    }
}

/// The CLI's socket to the gateway, when its relay seals and opens records itself.
impl Transport for tokio_util::compat::Compat<tokio::net::TcpStream> {}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for futures_rustls::client::TlsStream<T> {
    fn begin_close(&mut self) {
        self.get_mut().1.send_close_notify();
    }
}

/// Performs every operation `relay` wants until one is pending on each side, or the relay has
/// something to report (it started closing, or it ended).
///
/// Each direction runs until it blocks before the other gets a turn, as long as neither has an
/// event to report: a burst of frames one way costs no poll of the idle way per frame.
pub fn poll<F: Framing, P: Transport + ?Sized, R: AsyncRead + AsyncWrite + Unpin>(
    relay: &mut Relay<F>,
    cx: &mut Context<'_>,
    peer: &mut P,
    raw: &mut R,
) -> Poll<Step> {
    loop {
        if let Some(step) = relay.poll_event() {
            return Poll::Ready(step);
        }
        let up = peer_to_raw(relay, cx, peer, raw);
        let down = raw_to_peer(relay, cx, peer, raw);
        let closed = close(relay, cx, peer, raw);
        if !(up || down || closed) {
            return Poll::Pending;
        }
    }
}

/// Peer → raw until it blocks: deliver what was read before reading more (the same buffer).
/// True when anything happened.
fn peer_to_raw<F: Framing, P: Transport + ?Sized, R: AsyncWrite + Unpin>(
    relay: &mut Relay<F>,
    cx: &mut Context<'_>,
    peer: &mut P,
    raw: &mut R,
) -> bool {
    let mut any = false;
    loop {
        let write = {
            let mut slices = [IoSlice::new(&[]); MAX_RANGES];
            match relay.raw_transmit_vectored(&mut slices) {
                0 => None,
                n => Some(Pin::new(&mut *raw).poll_write_vectored(cx, &slices[..n])),
            }
        };
        if let Some(r) = write {
            if settle(r, relay, Relay::raw_sent, Relay::raw_write_failed) {
                any = true;
                continue;
            }
        } else if let Some(buf) = relay.peer_recv_buf() {
            let progressed = match Pin::new(&mut *peer).poll_read(cx, buf) {
                Poll::Pending => relay.peer_recv_blocked(),
                r => settle(r, relay, Relay::peer_received, Relay::peer_read_failed),
            };
            if progressed {
                any = true;
                continue;
            }
        }
        if relay.raw_flush_wanted() {
            let r = Pin::new(&mut *raw).poll_flush(cx);
            any |= settle(r, relay, |r, ()| r.raw_flushed(), Relay::raw_write_failed);
        }
        return any;
    }
}

/// Raw → peer until it blocks: data frames and control messages, then more raw bytes; frames
/// written together are flushed together. True when anything happened.
fn raw_to_peer<F: Framing, P: Transport + ?Sized, R: AsyncRead + Unpin>(
    relay: &mut Relay<F>,
    cx: &mut Context<'_>,
    peer: &mut P,
    raw: &mut R,
) -> bool {
    let mut any = false;
    loop {
        let write = {
            let mut slices = [IoSlice::new(&[]); MAX_RANGES];
            match relay.peer_transmit_vectored(&mut slices) {
                0 => None,
                n => Some(Pin::new(&mut *peer).poll_write_vectored(cx, &slices[..n])),
            }
        };
        if let Some(r) = write {
            if settle(r, relay, Relay::peer_sent, Relay::peer_write_failed) {
                any = true;
                continue;
            }
        } else {
            let read = {
                let (mut slots, n) = relay.raw_recv_vectored();
                (n > 0).then(|| Pin::new(&mut *raw).poll_read_vectored(cx, &mut slots[..n]))
            };
            match read {
                None => {}
                Some(Poll::Pending) => relay.raw_recv_blocked(),
                Some(r) => {
                    settle(r, relay, Relay::raw_received, Relay::raw_read_failed);
                    any = true;
                    continue;
                }
            }
        }
        if relay.peer_flush_wanted() {
            let r = Pin::new(&mut *peer).poll_flush(cx);
            any |= settle(r, relay, |r, ()| r.peer_flushed(), Relay::peer_write_failed);
        }
        return any;
    }
}

/// Closing: FIN to the raw side, then the peer's transport. A failed shutdown leaves nothing
/// more to do on that side either. True when a step finished.
fn close<F: Framing, P: Transport + ?Sized, R: AsyncWrite + Unpin>(
    relay: &mut Relay<F>,
    cx: &mut Context<'_>,
    peer: &mut P,
    raw: &mut R,
) -> bool {
    let mut any = false;
    if relay.raw_shutdown_wanted() && Pin::new(&mut *raw).poll_close(cx).is_ready() {
        relay.raw_shut();
        any = true;
    }
    if relay.peer_close_wanted() {
        if relay.begin_peer_close() {
            peer.begin_close();
            // The relay's own close_notify, if it seals records, goes out before the close.
            any = true;
        }
        if relay.peer_close_ready() && Pin::new(&mut *peer).poll_close(cx).is_ready() {
            relay.peer_closed();
            any = true;
        }
    }
    any
}

/// Reports a finished I/O operation to the relay; true when it finished (success or failure).
fn settle<F: Framing, T>(
    result: Poll<std::io::Result<T>>,
    relay: &mut Relay<F>,
    ok: fn(&mut Relay<F>, T),
    failed: fn(&mut Relay<F>, &std::io::Error),
) -> bool {
    match result {
        Poll::Ready(Ok(v)) => ok(relay, v),
        Poll::Ready(Err(e)) => failed(relay, &e),
        Poll::Pending => return false,
    }
    true
}
