//! TLS handshakes on rustls' unbuffered API (the gateway's as a server, the CLI's as a client),
//! ending in the gateway's own record layer.
//!
//! rustls does the whole handshake (and sends its session tickets); then its traffic secrets
//! and key schedule move to `portcullis_core::tls::RecordLayer` (through rustls' kernel
//! connection API, made for kernel TLS), which every route then reads and writes through
//! (`TlsStream`), and which a relay takes over to seal and open records in its own buffers.

use super::stream::TlsStream;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use portcullis_core::tls::{Algorithm, Keys, RecordLayer, Rekey, Version};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, InsufficientSizeError, UnbufferedStatus};
use rustls::{ClientConfig, ConnectionTrafficSecrets, ProtocolVersion, ServerConfig};
use std::io;
use std::sync::Arc;

/// Most bytes of handshake the client may make us hold (a ClientHello with post-quantum key
/// shares is a few KiB; nothing legitimate comes near this).
const MAX_HANDSHAKE_BUFFER: usize = 64 << 10;
/// Most application data the client may send before the handshake's end is processed.
const MAX_EARLY_PLAINTEXT: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("handshake over {MAX_HANDSHAKE_BUFFER} bytes")]
    TooLarge,
    #[error("unsupported after the handshake: {0}")]
    Unsupported(String),
}

/// Drives an unbuffered rustls connection (client or server: the two are distinct types with
/// the same calls) through its handshake over `$socket`. Evaluates to the application data rustls
/// decrypted on the way, the bytes read behind the handshake, not yet processed, and the records
/// rustls wrote after the handshake and `$hold_after` kept back.
///
/// `$hold_after` (a TLS 1.3 server): what rustls sends once the handshake is over (its session
/// tickets) is kept for the stream to send with its first answer, one write instead of two; a
/// client never waits for tickets. Not for TLS 1.2, whose server ends the handshake with its own
/// Finished, nor for a client, whose Finished the server waits for.
macro_rules! handshake {
    ($conn:expr, $socket:expr, $hold_after:expr) => {{
        let conn = &mut $conn;
        let socket = &mut $socket;
        let mut incoming = vec![0u8; 8 << 10];
        let mut filled = 0;
        let mut outgoing: Vec<u8> = Vec::new();
        let mut early: Vec<u8> = Vec::new();
        loop {
            // Whether what rustls asks to send next comes after the handshake (asked before the
            // call: its state borrows the connection).
            let after = !conn.is_handshaking() && conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut incoming[..filled]);
            let (mut want_read, mut traffic) = (false, false);
            match state? {
                ConnectionState::ReadTraffic(mut records) => {
                    // The first request can come with the client's Finished (or the server's first
                    // bytes with its tickets): keep it for the stream.
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        if early.len() + record.payload.len() > MAX_EARLY_PLAINTEXT {
                            return Err(AcceptError::TooLarge);
                        }
                        early.extend_from_slice(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    let at = outgoing.len();
                    outgoing.resize(at + 4096, 0);
                    loop {
                        match data.encode(&mut outgoing[at..]) {
                            Ok(n) => {
                                outgoing.truncate(at + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                                outgoing.resize(at + required_size, 0)
                            }
                            Err(e) => return Err(AcceptError::Unsupported(e.to_string())),
                        }
                    }
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    if !($hold_after && after) {
                        socket.write_all(&outgoing).await?;
                        socket.flush().await?;
                        outgoing.clear();
                    }
                    transmit.done();
                }
                ConnectionState::BlockedHandshake => want_read = true,
                // TLS 1.3 lets a server write before the client's Finished; the handshake is over
                // only once rustls has it (and has queued its tickets).
                ConnectionState::WriteTraffic(_) => traffic = true,
                ConnectionState::PeerClosed | ConnectionState::Closed => return Err(AcceptError::Closed),
                other => return Err(AcceptError::Unsupported(format!("{other:?}"))),
            }
            if discard > 0 {
                incoming.copy_within(discard..filled, 0);
                filled -= discard;
            }
            if traffic && !conn.is_handshaking() {
                break;
            }
            if want_read || traffic {
                if filled == incoming.len() {
                    if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                        return Err(AcceptError::TooLarge);
                    }
                    incoming.resize(incoming.len() * 2, 0);
                }
                match socket.read(&mut incoming[filled..]).await? {
                    0 => return Err(AcceptError::Closed),
                    n => filled += n,
                }
            }
        }
        incoming.truncate(filled);
        // What was kept back (a few hundred bytes of tickets) without the room the handshake's
        // flight needed: a stream waiting for its client holds next to nothing.
        outgoing.shrink_to_fit();
        (early, incoming, outgoing)
    }};
}

fn version_of(version: Option<ProtocolVersion>) -> Result<Version, AcceptError> {
    match version {
        Some(ProtocolVersion::TLSv1_3) => Ok(Version::Tls13),
        Some(ProtocolVersion::TLSv1_2) => Ok(Version::Tls12),
        other => Err(AcceptError::Unsupported(format!("{other:?}"))),
    }
}

fn record_layer(
    secrets: rustls::ExtractedSecrets,
    version: Version,
    rekey: Box<dyn Rekey>,
) -> Result<RecordLayer, AcceptError> {
    let tx = (secrets.tx.0, keys(secrets.tx.1)?);
    let rx = (secrets.rx.0, keys(secrets.rx.1)?);
    Ok(RecordLayer::new(version, tx, rx)
        .map_err(|e| AcceptError::Unsupported(e.to_string()))?
        .with_rekey(rekey))
}

/// Runs the server side of a handshake over `socket`; the caller bounds it in time.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ServerConfig>,
    mut socket: S,
) -> Result<TlsStream<S>, AcceptError> {
    let mut conn = UnbufferedServerConnection::new(config)?;
    let (early, rest, tickets) = handshake!(conn, socket, true);
    let version = version_of(conn.protocol_version())?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    let records = record_layer(secrets, version, Box::new(Schedule(kernel)))?;
    Ok(TlsStream::new(socket, records, early, rest).with_queued(tickets))
}

/// Runs the client side of a handshake with `name` over `socket` (`portcullis connect`): the same
/// record layer afterwards, and the server's session tickets kept in `config`'s session store.
/// `config` must allow secret extraction.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mut socket: S,
) -> Result<TlsStream<S>, AcceptError> {
    let mut conn = UnbufferedClientConnection::new(config, name)?;
    let (early, rest, _) = handshake!(conn, socket, false);
    let version = version_of(conn.protocol_version())?;
    let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
    let records = record_layer(secrets, version, Box::new(Schedule(kernel)))?;
    Ok(TlsStream::new(socket, records, early, rest))
}

/// rustls' traffic secrets as the record layer's keys.
pub(crate) fn keys(secrets: ConnectionTrafficSecrets) -> Result<Keys, AcceptError> {
    let (algorithm, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Algorithm::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Algorithm::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Algorithm::Chacha20Poly1305, key, iv),
        _ => return Err(AcceptError::Unsupported("cipher suite".into())),
    };
    let iv: [u8; 12] = iv
        .as_ref()
        .try_into()
        .map_err(|_| AcceptError::Unsupported("IV length".into()))?;
    Ok(Keys {
        algorithm,
        key: key.as_ref().to_vec(),
        iv,
    })
}

/// rustls' key schedule, asked for the next keys on a TLS 1.3 KeyUpdate; a client's also takes
/// the server's session tickets into rustls' session store.
struct Schedule<Data>(KernelConnection<Data>);

impl<Data> Schedule<Data> {
    fn next(&mut self, transmit: bool) -> Result<Keys, String> {
        let next = if transmit {
            self.0.update_tx_secret()
        } else {
            self.0.update_rx_secret()
        };
        let (_, secrets) = next.map_err(|e| e.to_string())?;
        keys(secrets).map_err(|e| e.to_string())
    }
}

impl Rekey for Schedule<ServerConnectionData> {
    fn next_tx(&mut self) -> Result<Keys, String> {
        self.next(true)
    }

    fn next_rx(&mut self) -> Result<Keys, String> {
        self.next(false)
    }
}

impl Rekey for Schedule<ClientConnectionData> {
    fn next_tx(&mut self) -> Result<Keys, String> {
        self.next(true)
    }

    fn next_rx(&mut self) -> Result<Keys, String> {
        self.next(false)
    }

    fn session_ticket(&mut self, body: &[u8]) -> Result<(), String> {
        self.0.handle_new_session_ticket(body).map_err(|e| e.to_string())
    }
}
