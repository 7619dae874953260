//! The gateway's TLS (rustls' handshake, our record layer) against rustls' own client, every
//! version and suite the gateway offers: echo both ways, key updates, close_notify, resumption.

use super::accept::accept;
use super::Identity;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

/// A rustls client offering only `suite`.
fn client(suite: rustls::SupportedCipherSuite) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let version = match suite {
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
        _ => &rustls::version::TLS12,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(super::AcceptAnyCert(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))))
        .with_no_client_auth();
    Arc::new(config)
}

/// Serves `connections` connections with an echo over the gateway's TLS; returns its address and
/// the thread, which reports each connection's record layer version and copied-byte count.
fn echo_server(connections: usize) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<String>>) {
    let config = Identity::self_signed(&[])
        .unwrap()
        .server_config(rustls::crypto::ring::Ticketer::new().unwrap())
        .unwrap();
    // One message: the listener's address.
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let mut seen = Vec::new();
            for _ in 0..connections {
                let stream = listener.accept().await.unwrap();
                let mut tls = accept(config.clone(), stream).await.unwrap();
                seen.push(format!("{:?}", tls.records().map(|r| r.version())));
                let mut buf = vec![0u8; 20_000];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            tls.write_all(&buf[..n]).await.unwrap();
                            tls.flush().await.unwrap();
                        }
                        Err(e) => panic!("server read: {e}"),
                    }
                }
                // The client's close_notify came: answer with ours.
                tls.close().await.unwrap();
                assert_eq!(tls.buffered_bytes(), 0, "a closed stream holds no buffer");
            }
            seen
        })
        .unwrap();
    let addr = rx.recv().unwrap();
    (addr, std::thread::spawn(move || handle.join().unwrap()))
}

fn connect(addr: std::net::SocketAddr, config: Arc<ClientConfig>) -> StreamOwned<ClientConnection, TcpStream> {
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, TcpStream::connect(addr).unwrap())
}

/// Sends `total` bytes in writes of `chunk` and reads the echo back, checking every byte.
fn echo(tls: &mut StreamOwned<ClientConnection, TcpStream>, total: usize, chunk: usize) {
    let data: Vec<u8> = (0..total).map(|i| (i * 31 + i / 7) as u8).collect();
    let mut got = vec![0u8; total];
    let mut read = 0;
    for part in data.chunks(chunk) {
        tls.write_all(part).unwrap();
        tls.flush().unwrap();
        let want = read + part.len();
        while read < want {
            read += tls.read(&mut got[read..want]).unwrap();
        }
    }
    assert!(got == data, "echo differs");
}

#[test]
fn every_suite_echoes_both_ways_through_our_record_layer() {
    // The test certificate is ECDSA: TLS 1.2's RSA suites cannot be negotiated with it.
    let suites: Vec<_> = rustls::crypto::ring::default_provider()
        .cipher_suites
        .into_iter()
        .filter(|s| s.tls13().is_some() || format!("{:?}", s.suite()).contains("ECDSA"))
        .collect();
    assert_eq!(suites.len(), 6);
    let (addr, server) = echo_server(suites.len());
    for suite in &suites {
        let mut tls = connect(addr, client(*suite));
        // Small writes, then records of the full size and odd sizes across records.
        echo(&mut tls, 3000, 1);
        echo(&mut tls, 200_000, 16_384);
        echo(&mut tls, 100_000, 40_001);
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let mut rest = Vec::new();
        // The server's close_notify: a clean end (rustls would report a truncation otherwise).
        tls.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{suite:?}");
    }
    let seen = server.join().unwrap();
    assert_eq!(seen.iter().filter(|v| *v == "Some(Tls13)").count(), 3, "{seen:?}");
    assert_eq!(
        seen.iter().filter(|v| *v == "Some(Tls12)").count(),
        suites.len() - 3,
        "{seen:?}"
    );
}

#[test]
fn a_client_key_update_moves_the_server_to_the_next_keys() {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let (addr, server) = echo_server(1);
    let mut tls = connect(addr, client(suite));
    echo(&mut tls, 50_000, 16_384);
    for _ in 0..3 {
        tls.conn.refresh_traffic_keys().unwrap();
        echo(&mut tls, 50_000, 7_000);
    }
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    server.join().unwrap();
}

#[test]
fn a_request_sent_with_the_clients_finished_is_not_lost() {
    // rustls' client sends its first data in the flight that carries its Finished when the
    // data is queued before the handshake completes: the server's handshake decrypts it.
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let (addr, server) = echo_server(1);
    let mut conn = ClientConnection::new(client(suite), ServerName::try_from("localhost").unwrap()).unwrap();
    conn.writer().write_all(b"early request").unwrap();
    let mut tls = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    let mut got = [0u8; 13];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"early request");
    tls.conn.send_close_notify();
    tls.flush().unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).unwrap();
    server.join().unwrap();
}

#[test]
fn a_returning_client_resumes_with_its_ticket_in_both_versions() {
    use rustls::HandshakeKind;
    let suites = [
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    let (addr, server) = echo_server(4);
    for suite in suites {
        let config = client(suite);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut tls = connect(addr, config.clone());
            echo(&mut tls, 1000, 1000);
            kinds.push(tls.conn.handshake_kind());
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).unwrap();
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "{suite:?}"
        );
    }
    server.join().unwrap();
}

/// The other way round: our client (`portcullis connect`'s TLS) against rustls' own server, both
/// versions: echo both ways, and the server's TLS 1.3 session tickets, which reach our record
/// layer after the handshake, land in rustls' session store, so the next connection resumes.
#[test]
fn our_client_talks_to_rustls_server_and_resumes_with_its_tickets() {
    use rustls::{HandshakeKind, ServerConnection};
    let identity = Identity::self_signed(&[]).unwrap();
    let server_config = identity
        .server_config(rustls::crypto::ring::Ticketer::new().unwrap())
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let rounds = 4;
    let server = std::thread::spawn(move || {
        let mut kinds = Vec::new();
        for _ in 0..rounds {
            let (tcp, _) = listener.accept().unwrap();
            let mut tls = StreamOwned::new(ServerConnection::new(server_config.clone()).unwrap(), tcp);
            let mut buf = vec![0u8; 70_000];
            loop {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        tls.write_all(&buf[..n]).unwrap();
                        tls.flush().unwrap();
                    }
                }
            }
            kinds.push(tls.conn.handshake_kind());
        }
        kinds
    });
    let client_config = |suite| {
        let mut config = client(suite).as_ref().clone();
        config.enable_secret_extraction = true;
        Arc::new(config)
    };
    let suites = [
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
        rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            for suite in suites {
                let config = client_config(suite);
                for _ in 0..2 {
                    let tcp = glommio::net::TcpStream::connect(addr).await.unwrap();
                    let name = ServerName::try_from("localhost").unwrap();
                    let mut tls = super::accept::connect(config.clone(), name, tcp).await.unwrap();
                    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
                    let mut back = vec![0u8; data.len()];
                    for (part, into) in data.chunks(30_000).zip(back.chunks_mut(30_000)) {
                        tls.write_all(part).await.unwrap();
                        tls.flush().await.unwrap();
                        tls.read_exact(into).await.unwrap();
                    }
                    assert!(back == data, "{suite:?}: echo differs");
                    tls.close().await.unwrap();
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
    let kinds = server.join().unwrap();
    assert_eq!(
        kinds,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed)
        ]
    );
}

/// A socket that counts the writes reaching it.
struct CountingWrites<S> {
    inner: S,
    writes: std::rc::Rc<std::cell::Cell<usize>>,
}

impl<S: futures_lite::AsyncRead + Unpin> futures_lite::AsyncRead for CountingWrites<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: futures_lite::AsyncWrite + Unpin> futures_lite::AsyncWrite for CountingWrites<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.writes.set(self.writes.get() + 1);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A TLS 1.3 server's session tickets come after the handshake and a client never waits for
/// them: they wait for the server's first answer and leave in its write (two writes for the
/// handshake and an answer, not three), and still reach the client, which resumes with one.
/// TLS 1.2's come before the server's Finished, which the client does wait for: three writes.
#[test]
fn tls13_session_tickets_leave_with_the_first_answer() {
    use rustls::HandshakeKind;
    let suites = [
        (rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256, 2),
        (
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            3,
        ),
    ];
    let config = Identity::self_signed(&[])
        .unwrap()
        .server_config(rustls::crypto::ring::Ticketer::new().unwrap())
        .unwrap();
    // One message: the listener's address.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(256 << 10)
        .spawn(move || async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let mut counts = Vec::new();
            for _ in 0..2 * suites.len() {
                let writes = std::rc::Rc::new(std::cell::Cell::new(0));
                let socket = CountingWrites {
                    inner: listener.accept().await.unwrap(),
                    writes: writes.clone(),
                };
                let mut tls = accept(config.clone(), socket).await.unwrap();
                let mut request = [0u8; 4];
                tls.read_exact(&mut request).await.unwrap();
                assert_eq!(&request, b"ping");
                tls.write_all(b"pong").await.unwrap();
                tls.flush().await.unwrap();
                counts.push(writes.get());
                let mut rest = Vec::new();
                let _ = tls.read_to_end(&mut rest).await;
            }
            counts
        })
        .unwrap();
    let addr = rx.recv().unwrap();
    for (suite, _) in suites {
        let config = client(suite);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let mut tls = connect(addr, config.clone());
            tls.write_all(b"ping").unwrap();
            tls.flush().unwrap();
            let mut answer = [0u8; 4];
            tls.read_exact(&mut answer).unwrap();
            assert_eq!(&answer, b"pong");
            kinds.push(tls.conn.handshake_kind());
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        }
        assert_eq!(
            kinds,
            [Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
            "{suite:?}"
        );
    }
    let counts = server.join().unwrap();
    // Each suite's full handshake, then its resumed one.
    assert_eq!(counts[0], suites[0].1, "TLS 1.3, full handshake: {counts:?}");
    assert_eq!(counts[2], suites[1].1, "TLS 1.2, full handshake: {counts:?}");
}
