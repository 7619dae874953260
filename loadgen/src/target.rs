//! The built-in TCP target: `echo` sends back what arrives, `sink` discards it, `source` sends
//! data without end (and discards what arrives). Each ends its side (FIN) after the peer's EOF.
//!
//! Buffers are taken only while bytes flow, so thousands of idle connections cost little.

use crate::cli::TargetMode;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BUF: usize = 64 * 1024;

/// Counters of a running target.
#[derive(Default, Debug)]
pub struct TargetStats {
    pub accepted: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// Binds `addr` and serves on the current tokio runtime; returns the bound address and counters.
pub async fn spawn(addr: SocketAddr, mode: TargetMode) -> io::Result<(SocketAddr, Arc<TargetStats>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let stats = Arc::new(TargetStats::default());
    tokio::spawn(serve(listener, mode, stats.clone()));
    Ok((bound, stats))
}

/// Accepts forever.
pub async fn serve(listener: TcpListener, mode: TargetMode, stats: Arc<TargetStats>) {
    loop {
        match listener.accept().await {
            Ok((sock, _)) => {
                stats.accepted.fetch_add(1, Relaxed);
                let _ = sock.set_nodelay(true);
                let stats = stats.clone();
                tokio::spawn(async move {
                    let _ = match mode {
                        TargetMode::Echo => echo(sock, &stats).await,
                        TargetMode::Sink => sink(sock, &stats).await,
                        TargetMode::Source => source(sock, &stats).await,
                    };
                });
            }
            // Out of descriptors or a connection reset before accept: wait a moment, go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn echo(sock: TcpStream, stats: &TargetStats) -> io::Result<()> {
    relay_bytes(sock, stats, true).await
}

async fn sink(sock: TcpStream, stats: &TargetStats) -> io::Result<()> {
    relay_bytes(sock, stats, false).await
}

/// Reads until EOF (then FIN back), counting bytes; with `echo`, writes every byte back.
async fn relay_bytes(mut sock: TcpStream, stats: &TargetStats, echo: bool) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        sock.readable().await?;
        loop {
            match sock.try_read(&mut buf) {
                Ok(0) => {
                    sock.shutdown().await?;
                    return Ok(());
                }
                Ok(n) => {
                    stats.bytes_in.fetch_add(n as u64, Relaxed);
                    if echo {
                        sock.write_all(&buf[..n]).await?;
                        stats.bytes_out.fetch_add(n as u64, Relaxed);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

async fn source(mut sock: TcpStream, stats: &TargetStats) -> io::Result<()> {
    let data: Vec<u8> = (0..BUF).map(|i| (i * 13 + 5) as u8).collect();
    let (mut rd, mut wr) = sock.split();
    let reader = async {
        let mut buf = vec![0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    stats.bytes_in.fetch_add(n as u64, Relaxed);
                }
            }
        }
    };
    let writer = async {
        loop {
            wr.write_all(&data).await?;
            stats.bytes_out.fetch_add(data.len() as u64, Relaxed);
        }
        #[allow(unreachable_code)]
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        _ = reader => {}
        r = writer => r?,
    }
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_sink_source() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (addr, stats) = spawn(any, TargetMode::Echo).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello");
        assert_eq!(stats.accepted.load(Relaxed), 1);

        let (addr, stats) = spawn(any, TargetMode::Sink).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(&[7u8; 100_000]).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert!(back.is_empty());
        assert_eq!(stats.bytes_in.load(Relaxed), 100_000);

        let (addr, _) = spawn(any, TargetMode::Source).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = vec![0u8; 200_000];
        c.read_exact(&mut buf).await.unwrap();
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap();
    }
}
