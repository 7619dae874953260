//! A TCP socket with gathered writes and scattered reads: the client's (under TLS) and a target's.
//!
//! glommio's `TcpStream` writes only the first slice of a vectored write (and reads into only the
//! first of a vectored read), so a relay that hands over several TLS records at once paid one
//! `send` per 16 KiB record. Here all pending records leave in one `sendmsg`, and a target's bytes
//! land in one `recvmsg` in several record slots, each with room around it to be sealed in place:
//! fewer syscalls, and on loopback fewer, larger segments for the kernel to carry and fewer
//! wakeups of the reader. Readiness and timeouts stay glommio's.
//!
//! From a trusted balancer, a connection starts with a PROXY protocol header: `read_proxy_header`
//! takes it off before TLS sees the stream, and hands whatever came after it back to TLS first.

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use portcullis_protocols::proxy::{self, ProxyError, ProxyHeader};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Slices gathered per `sendmsg`: rustls' send buffer holds at most 64 KiB, four full records.
const MAX_SLICES: usize = 16;

pub struct Socket {
    stream: TcpStream,
    /// Bytes read with a PROXY header that belong to the connection (the start of TLS), given
    /// back by the next reads. Boxed: a connection without one pays a pointer.
    unread: Option<Box<(Vec<u8>, usize)>>,
    /// The last read filled everything it was given: more bytes may be waiting, and a scattered
    /// `recvmsg` is worth trying. Otherwise the socket is most likely drained and a read goes
    /// through glommio, which waits on its readiness poll without a syscall while one is armed
    /// (trying `recvmsg` first cost a failed syscall per wait, and glommio's own read then failed
    /// too before arming its poll).
    filled_last: bool,
    /// `recvmsg` calls that found nothing (tests check that waiting costs none).
    #[cfg(test)]
    empty_recvs: usize,
}

impl Socket {
    pub fn new(stream: TcpStream) -> Self {
        Socket {
            stream,
            unread: None,
            filled_last: false,
            #[cfg(test)]
            empty_recvs: 0,
        }
    }

    /// Reads the PROXY protocol header a trusted balancer sends first. Reads no further than
    /// its bounded length; bytes after the header stay for TLS.
    pub async fn read_proxy_header(&mut self) -> Result<ProxyHeader, ProxyError> {
        use futures_lite::AsyncReadExt;
        let mut buf = vec![0u8; proxy::MAX_V2_LEN];
        let mut filled = 0;
        loop {
            match proxy::parse(&buf[..filled])? {
                Some((header, len)) => {
                    if len < filled {
                        buf.truncate(filled);
                        self.unread = Some(Box::new((buf, len)));
                    }
                    return Ok(header);
                }
                None if filled == buf.len() => return Err(ProxyError::TooLong),
                None => match self.stream.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return Err(ProxyError::Missing),
                    Ok(n) => filled += n,
                },
            }
        }
    }

    /// One non-blocking `sendmsg` of `bufs`; `None` if the socket buffer is full.
    fn try_send(&self, bufs: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        use rustix::net::{sendmsg, SendAncillaryBuffer, SendFlags};
        let bufs = &bufs[..bufs.len().min(MAX_SLICES)];
        let fd = self.fd();
        loop {
            match sendmsg(
                fd,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            ) {
                Ok(sent) => return Some(Ok(sent)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return None,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

impl Socket {
    /// One non-blocking `recvmsg` into `bufs`; `None` if nothing is there yet.
    fn try_recv(&self, bufs: &mut [IoSliceMut<'_>]) -> Option<io::Result<usize>> {
        use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvFlags};
        let fd = self.fd();
        loop {
            match recvmsg(fd, bufs, &mut RecvAncillaryBuffer::default(), RecvFlags::DONTWAIT) {
                Ok(msg) => return Some(Ok(msg.bytes)),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return None,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    /// The stream's descriptor, borrowed for one call.
    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: glommio's stream owns the descriptor and keeps it open at least as long as
        // `self` is borrowed, which bounds the returned borrow.
        unsafe { BorrowedFd::borrow_raw(self.stream.as_raw_fd()) }
    }
}

/// The client's socket, when the relay seals and opens its records itself: the relay queues its
/// close_notify, nothing to announce here.
impl crate::relay::Transport for Socket {}

impl AsyncRead for Socket {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if let Some(unread) = &mut self.unread {
            let (bytes, pos) = &mut **unread;
            let n = buf.len().min(bytes.len() - *pos);
            buf[..n].copy_from_slice(&bytes[*pos..*pos + n]);
            *pos += n;
            if *pos == bytes.len() {
                self.unread = None;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        let bufs = &mut bufs[first..];
        if self.unread.is_none() && bufs.len() > 1 && self.filled_last {
            let room: usize = bufs.iter().map(|b| b.len()).sum();
            if let Some(result) = self.try_recv(bufs) {
                self.filled_last = matches!(result, Ok(n) if n == room);
                return Poll::Ready(result);
            }
            #[cfg(test)]
            {
                self.empty_recvs += 1;
            }
        }
        // Drained (or one slot): glommio's read fills the first slot, or waits for bytes with
        // its timeout. A full slot means more may follow: the next read scatters again.
        let result = self.as_mut().poll_read(cx, &mut bufs[0]);
        self.filled_last = matches!(result, Poll::Ready(Ok(n)) if n == bufs[0].len());
        result
    }
}

impl AsyncWrite for Socket {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        let bufs = &bufs[first..];
        if bufs.len() == 1 {
            return Pin::new(&mut self.stream).poll_write(cx, &bufs[0]);
        }
        match self.try_send(bufs) {
            Some(result) => Poll::Ready(result),
            // Full: glommio's write retries once and otherwise waits for room (with its timeout).
            None => Pin::new(&mut self.stream).poll_write(cx, &bufs[0]),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::poll_fn;
    use futures_lite::AsyncReadExt;
    use glommio::net::TcpListener;
    use glommio::{LocalExecutorBuilder, Placement};
    use sha2::{Digest, Sha256};

    /// A PROXY header in pieces, with the start of TLS right behind it: the header is taken off
    /// and what followed is read first, then the stream.
    #[test]
    fn proxy_header_is_taken_off_and_the_rest_handed_back() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(|| async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let source: std::net::SocketAddr = "192.0.2.7:50412".parse().unwrap();
                let sender = glommio::spawn_local(async move {
                    use futures_lite::AsyncWriteExt;
                    let mut c = glommio::net::TcpStream::connect(addr).await.unwrap();
                    let mut first = proxy::encode_v2(source, addr);
                    let tail = first.split_off(10);
                    c.write_all(&first).await.unwrap();
                    c.flush().await.unwrap();
                    glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
                    c.write_all(&[tail, b"tls!".to_vec()].concat()).await.unwrap();
                    c.write_all(b" more").await.unwrap();
                    c.close().await.unwrap();
                });
                let mut sock = Socket::new(listener.accept().await.unwrap());
                let header = sock.read_proxy_header().await.unwrap();
                assert_eq!(header.source(), Some(source));
                let mut rest = Vec::new();
                sock.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"tls! more");
                sender.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// One vectored read of `bufs` (each a slot of `sizes`), into `into`.
    async fn read_slots(sock: &mut Socket, into: &mut [u8], sizes: &[usize]) -> usize {
        let mut rest = into;
        let mut bufs = Vec::new();
        for &size in sizes {
            let (slot, tail) = rest.split_at_mut(size);
            bufs.push(IoSliceMut::new(slot));
            rest = tail;
        }
        poll_fn(|cx| Pin::new(&mut *sock).poll_read_vectored(cx, &mut bufs))
            .await
            .unwrap()
    }

    /// Scattered reads where they pay, none where they cannot: a read that filled its slot is
    /// followed by one `recvmsg` over every slot, while a reader waiting for small messages goes
    /// straight to glommio's readiness poll, with no failed `recvmsg` of its own per wait.
    #[test]
    fn scattered_reads_follow_full_ones_and_waits_cost_no_failed_read() {
        const SLOT: usize = 16 * 1024;
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(|| async {
                use glommio::channels::local_channel;
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let (go_tx, go_rx) = local_channel::new_bounded::<()>(1);
                let sender = glommio::spawn_local(async move {
                    use futures_lite::AsyncWriteExt;
                    let mut c = glommio::net::TcpStream::connect(addr).await.unwrap();
                    c.write_all(&vec![7u8; 4 * SLOT]).await.unwrap();
                    for i in 0..50u8 {
                        go_rx.recv().await.unwrap();
                        c.write_all(&[i; 10]).await.unwrap();
                    }
                    c.close().await.unwrap();
                });
                let mut sock = Socket::new(listener.accept().await.unwrap());
                // Everything sent is there before the first read.
                let mut all = vec![0u8; 4 * SLOT];
                while sock.stream.peek(&mut all).await.unwrap() < all.len() {}
                let mut slots = vec![0u8; 3 * SLOT];
                // Nothing was known of the socket: one slot; it came back full, so all three.
                assert_eq!(read_slots(&mut sock, &mut slots, &[SLOT; 3]).await, SLOT);
                assert_eq!(read_slots(&mut sock, &mut slots, &[SLOT; 3]).await, 3 * SLOT);
                for i in 0..50u8 {
                    go_tx.send(()).await.unwrap();
                    let mut n = 0;
                    while n < 10 {
                        n += read_slots(&mut sock, &mut slots[n..], &[SLOT, SLOT - n]).await;
                    }
                    assert_eq!(slots[..10], [i; 10]);
                }
                // Only the first wait, right after full reads, tried a read first.
                assert!(
                    sock.empty_recvs <= 1,
                    "{} failed recvmsg calls while waiting",
                    sock.empty_recvs
                );
                sender.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// 32 MiB as gathered writes of unevenly sized slices, the way rustls hands over records,
    /// while the peer reads in small pieces so that the socket buffer fills: partial and refused
    /// `sendmsg`s must resume at the right byte, and the peer must get every byte in order.
    #[test]
    fn gathered_writes_arrive_whole_and_in_order() {
        const TOTAL: usize = 32 << 20;
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(|| async {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let reader = glommio::spawn_local(async move {
                    let mut peer = listener.accept().await.unwrap();
                    let (mut digest, mut got, mut buf) = (Sha256::new(), 0, vec![0u8; 7001]);
                    loop {
                        let n = peer.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return (got, digest.finalize());
                        }
                        digest.update(&buf[..n]);
                        got += n;
                    }
                });
                let mut sock = Socket::new(glommio::net::TcpStream::connect(addr).await.unwrap());
                let data: Vec<u8> = (0..TOTAL).map(|i| (i % 251) as u8).collect();
                let (mut pos, mut calls, mut partial) = (0, 0, 0);
                while pos < TOTAL {
                    let mut slices = Vec::new();
                    let mut at = pos;
                    for size in [16406, 5, 16406, 1, 9000, 16406] {
                        let end = (at + size).min(TOTAL);
                        slices.push(IoSlice::new(&data[at..end]));
                        at = end;
                    }
                    let n = poll_fn(|cx| Pin::new(&mut sock).poll_write_vectored(cx, &slices))
                        .await
                        .unwrap();
                    assert!(n > 0 && n <= at - pos);
                    partial += usize::from(n < at - pos);
                    calls += 1;
                    pos += n;
                }
                poll_fn(|cx| Pin::new(&mut sock).poll_close(cx)).await.unwrap();
                let (got, digest) = reader.await;
                assert_eq!(got, TOTAL);
                assert_eq!(digest, Sha256::digest(&data));
                // Several slices went per call, and some calls were cut short by a full buffer.
                assert!(calls < TOTAL / 16406, "{calls} calls");
                assert!(partial > 0, "the socket buffer never filled");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
