//! TLS records after the handshake, sealed and opened in place: the gateway's one record layer.
//!
//! rustls runs every handshake (`UnbufferedServerConnection`) and keeps the key schedule
//! (`rustls::kernel::KernelConnection`: key updates); once the handshake is done its traffic
//! secrets come here, the way kernel TLS would take them. What is left is small and sans-IO:
//! AEAD over records in buffers the caller owns, so a relay decrypts a record where it was read
//! and encrypts a frame where it was framed, with no copy of the payload and no buffer held
//! between bursts (rustls' buffered API decrypts into its own buffer and copies the plaintext
//! out, and copies plaintext into a fresh record buffer to encrypt it).
//!
//! Covered: TLS 1.3 and TLS 1.2 with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 (every suite
//! the gateway offers); TLS 1.3 KeyUpdate both ways (the peer's, answered when it asks, and ours
//! before a key's confidentiality limit); close_notify. Refused, ending the connection: any other
//! post-handshake message (renegotiation, tickets from a client), ChangeCipherSpec, alerts other
//! than close_notify, oversized records, records that fail to authenticate.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use std::ops::Range;

/// Bytes of a record header: type, version, length.
pub const HEADER: usize = 5;
/// Most plaintext in one record.
pub const MAX_PLAINTEXT: usize = 16 * 1024;
/// Most bytes after a record's header (RFC 8446 §5.2: plaintext + 256).
pub const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Most bytes of a whole record.
pub const MAX_RECORD: usize = HEADER + MAX_CIPHERTEXT;
/// Most bytes in front of a record's plaintext (TLS 1.2 AES-GCM: header and explicit nonce).
pub const MAX_PREFIX: usize = HEADER + 8;
/// Most bytes behind a record's plaintext (TLS 1.3: content type and tag).
pub const MAX_SUFFIX: usize = 1 + TAG;
const TAG: usize = 16;

/// Records sealed under one key before we replace it (TLS 1.3): below AES-GCM's confidentiality
/// limit (RFC 8446 §5.5: 2^24.5 full records), with a margin. (TLS 1.2 cannot replace keys;
/// like rustls, it is not limited.)
pub const KEY_RECORD_LIMIT: u64 = 1 << 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Tls12,
    Tls13,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Algorithm {
    fn ring(self) -> &'static aead::Algorithm {
        match self {
            Algorithm::Aes128Gcm => &aead::AES_128_GCM,
            Algorithm::Aes256Gcm => &aead::AES_256_GCM,
            Algorithm::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// A direction's traffic key (what rustls extracts), zeroed when dropped.
pub struct Keys {
    pub algorithm: Algorithm,
    pub key: Vec<u8>,
    /// TLS 1.3 and TLS 1.2 ChaCha20: the per-record nonce is this XOR the sequence number. TLS 1.2
    /// AES-GCM: the 4-byte salt and 8 bytes from the key block (rustls' layout).
    pub iv: [u8; 12],
}

impl Drop for Keys {
    fn drop(&mut self) {
        // Best effort without unsafe code: the fence keeps the stores from being dropped as dead.
        self.key.fill(0);
        self.iv.fill(0);
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
    }
}

/// Where the next traffic keys come from after a TLS 1.3 KeyUpdate: rustls' key schedule
/// (`KernelConnection`), kept by the engine; for a client, also where a server's session tickets
/// go (rustls' session store).
pub trait Rekey: Send {
    fn next_tx(&mut self) -> Result<Keys, String>;
    fn next_rx(&mut self) -> Result<Keys, String>;
    /// A TLS 1.3 NewSessionTicket's body, from the server. Refused unless we are its client.
    fn session_ticket(&mut self, _body: &[u8]) -> Result<(), String> {
        Err("a session ticket sent to a server".into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ContentType {
    ChangeCipherSpec = 20,
    Alert = 21,
    Handshake = 22,
    ApplicationData = 23,
}

impl ContentType {
    fn from_u8(b: u8) -> Option<ContentType> {
        Some(match b {
            20 => ContentType::ChangeCipherSpec,
            21 => ContentType::Alert,
            22 => ContentType::Handshake,
            23 => ContentType::ApplicationData,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("not a TLS record (type {0})")]
    BadType(u8),
    #[error("record version {0:#06x} is not TLS")]
    BadVersion(u16),
    #[error("record of {0} bytes is over the limit")]
    Oversized(usize),
    #[error("record failed to authenticate")]
    Decrypt,
    #[error("peer sent TLS alert {0}")]
    Alert(u8),
    #[error("peer sent a {0:?} record after the handshake")]
    Unexpected(ContentType),
    #[error("peer sent handshake message {0} after the handshake (renegotiation is refused)")]
    UnexpectedHandshake(u8),
    #[error("malformed post-handshake message")]
    BadHandshake,
    #[error("record after close_notify")]
    AfterClose,
    #[error("key limit reached")]
    KeyExhausted,
    #[error("key update failed: {0}")]
    Rekey(String),
    #[error("no room for the record around the payload")]
    NoRoom,
    #[error("over {MAX_EMPTY_RECORDS} records in a row without application data")]
    TooManyEmpty,
}

/// Records in a row without application data (key updates, tickets, empty records) a peer may
/// send before the connection is refused.
pub const MAX_EMPTY_RECORDS: u32 = 32;

/// What a record carried, for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data, decrypted in place at this range of the buffer given.
    Data(Range<usize>),
    /// Nothing for the application (a KeyUpdate was handled).
    Nothing,
    /// The peer's close_notify: it sends nothing more.
    Closed,
}

struct Direction {
    key: LessSafeKey,
    algorithm: Algorithm,
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, keys: Keys) -> Result<Direction, RecordError> {
        let unbound = UnboundKey::new(keys.algorithm.ring(), &keys.key)
            .map_err(|_| RecordError::Rekey("bad key length".into()))?;
        Ok(Direction {
            key: LessSafeKey::new(unbound),
            algorithm: keys.algorithm,
            iv: keys.iv,
            seq,
        })
    }

    /// The IV with the sequence number XORed into its last 8 bytes.
    fn nonce_bytes(&self) -> [u8; 12] {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce
    }
}

/// One connection's record layer: both directions' keys and sequence numbers.
pub struct RecordLayer {
    version: Version,
    tx: Direction,
    rx: Direction,
    rekey: Option<Box<dyn Rekey>>,
    /// A KeyUpdate is due from us (the peer asked, or our key is near its limit).
    key_update_due: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// Records opened in a row that carried no application data.
    empty_records: u32,
}

impl RecordLayer {
    /// `tx` and `rx`: each direction's next sequence number and keys, as rustls extracted them.
    pub fn new(version: Version, tx: (u64, Keys), rx: (u64, Keys)) -> Result<RecordLayer, RecordError> {
        Ok(RecordLayer {
            version,
            tx: Direction::new(tx.0, tx.1)?,
            rx: Direction::new(rx.0, rx.1)?,
            rekey: None,
            key_update_due: false,
            peer_closed: false,
            empty_records: 0,
        })
    }

    /// Where TLS 1.3 key updates get their keys. Without one, a key update ends the connection.
    pub fn with_rekey(mut self, rekey: Box<dyn Rekey>) -> Self {
        self.rekey = Some(rekey);
        self
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// Bytes in front of a record's plaintext.
    pub fn prefix(&self) -> usize {
        match (self.version, self.tx.algorithm) {
            (Version::Tls12, Algorithm::Aes128Gcm | Algorithm::Aes256Gcm) => HEADER + 8,
            _ => HEADER,
        }
    }

    /// Bytes behind a record's plaintext.
    pub fn suffix(&self) -> usize {
        match self.version {
            Version::Tls13 => 1 + TAG,
            Version::Tls12 => TAG,
        }
    }

    /// The length of the whole record at the front of `buf`, once its header is there; whether
    /// it is all there is the caller's to check. An impossible header is an error at once.
    pub fn record_len(buf: &[u8]) -> Result<Option<usize>, RecordError> {
        let Some(header) = buf.get(..HEADER) else {
            return Ok(None);
        };
        ContentType::from_u8(header[0]).ok_or(RecordError::BadType(header[0]))?;
        let version = u16::from_be_bytes([header[1], header[2]]);
        if version >> 8 != 3 {
            return Err(RecordError::BadVersion(version));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(RecordError::Oversized(len));
        }
        Ok(Some(HEADER + len))
    }

    /// Opens the record at the front of `buf` in place. `Ok(None)`: not all of it is there yet.
    /// Otherwise the record's length and what it carried; plaintext stays where it was read.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<Option<(usize, Opened)>, RecordError> {
        let Some(len) = Self::record_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < len {
            return Ok(None);
        }
        if self.peer_closed {
            return Err(RecordError::AfterClose);
        }
        let (typ, plain) = self.decrypt(&mut buf[..len])?;
        // Records that carry nothing for the application (key updates, tickets, empty data) cost
        // work and give nothing: a peer may send a few in a row, not a stream of them (rustls and
        // BoringSSL allow 32 as well).
        if typ == ContentType::ApplicationData && !plain.is_empty() {
            self.empty_records = 0;
        } else {
            self.empty_records += 1;
            if self.empty_records > MAX_EMPTY_RECORDS {
                return Err(RecordError::TooManyEmpty);
            }
        }
        let opened = match typ {
            ContentType::ApplicationData => Opened::Data(plain),
            ContentType::Alert => match buf[plain] {
                [_, 0] => {
                    self.peer_closed = true;
                    Opened::Closed
                }
                [_, desc] => return Err(RecordError::Alert(desc)),
                _ => return Err(RecordError::BadHandshake),
            },
            ContentType::Handshake => {
                self.handshake(&buf[plain])?;
                Opened::Nothing
            }
            ContentType::ChangeCipherSpec => return Err(RecordError::Unexpected(typ)),
        };
        Ok(Some((len, opened)))
    }

    fn decrypt(&mut self, record: &mut [u8]) -> Result<(ContentType, Range<usize>), RecordError> {
        let outer = record[0];
        if self.rx.seq == u64::MAX {
            return Err(RecordError::KeyExhausted);
        }
        let (typ, plain) = match self.version {
            Version::Tls13 => {
                if outer != ContentType::ApplicationData as u8 {
                    return Err(RecordError::Unexpected(
                        ContentType::from_u8(outer).unwrap_or(ContentType::Handshake),
                    ));
                }
                let aad: [u8; HEADER] = record[..HEADER].try_into().unwrap_or_default();
                let nonce = Nonce::assume_unique_for_key(self.rx.nonce_bytes());
                let inner = self
                    .rx
                    .key
                    .open_in_place(nonce, Aad::from(aad), &mut record[HEADER..])
                    .map_err(|_| RecordError::Decrypt)?;
                // The real type is the last non-zero byte; zeros after it are padding.
                let Some(last) = inner.iter().rposition(|&b| b != 0) else {
                    return Err(RecordError::Decrypt);
                };
                let typ = ContentType::from_u8(inner[last]).ok_or(RecordError::BadType(inner[last]))?;
                if last > MAX_PLAINTEXT {
                    return Err(RecordError::Oversized(last));
                }
                (typ, HEADER..HEADER + last)
            }
            Version::Tls12 => {
                let typ = ContentType::from_u8(outer).ok_or(RecordError::BadType(outer))?;
                let explicit = match self.rx.algorithm {
                    Algorithm::Chacha20Poly1305 => 0,
                    _ => 8,
                };
                let body = record.len() - HEADER;
                if body < explicit + TAG {
                    return Err(RecordError::Decrypt);
                }
                let plain_len = body - explicit - TAG;
                let nonce = if explicit == 8 {
                    let mut n = [0u8; 12];
                    n[..4].copy_from_slice(&self.rx.iv[..4]);
                    n[4..].copy_from_slice(&record[HEADER..HEADER + 8]);
                    n
                } else {
                    self.rx.nonce_bytes()
                };
                let aad = tls12_aad(self.rx.seq, outer, [record[1], record[2]], plain_len);
                self.rx
                    .key
                    .open_within(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut record[HEADER..],
                        explicit..,
                    )
                    .map_err(|_| RecordError::Decrypt)?;
                if plain_len > MAX_PLAINTEXT {
                    return Err(RecordError::Oversized(plain_len));
                }
                // open_within decrypts to the front of the body, over the explicit nonce (the
                // cipher writes 8 bytes behind where it reads: no copy of its own).
                (typ, HEADER..HEADER + plain_len)
            }
        };
        self.rx.seq += 1;
        Ok((typ, plain))
    }

    /// A post-handshake message from the peer: only TLS 1.3's KeyUpdate is accepted.
    fn handshake(&mut self, mut msgs: &[u8]) -> Result<(), RecordError> {
        if msgs.is_empty() {
            return Err(RecordError::BadHandshake);
        }
        while let [typ, a, b, c, rest @ ..] = msgs {
            let len = usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c);
            if self.version != Version::Tls13 || !matches!(*typ, 4 | 24) {
                return Err(RecordError::UnexpectedHandshake(*typ));
            }
            if *typ == 4 {
                // NewSessionTicket: a client keeps it (rustls' session store) to resume later.
                let (Some(body), Some(rest)) = (rest.get(..len), rest.get(len..)) else {
                    return Err(RecordError::BadHandshake);
                };
                let rekey = self.rekey().map_err(|_| RecordError::UnexpectedHandshake(4))?;
                rekey
                    .session_ticket(body)
                    .map_err(|_| RecordError::UnexpectedHandshake(4))?;
                msgs = rest;
                continue;
            }
            let (body, rest) = (rest.get(..len), rest.get(len..));
            // A KeyUpdate ends its record (RFC 8446 §5.1): what follows is under the next key.
            let (Some([request]), Some([])) = (body, rest) else {
                return Err(RecordError::BadHandshake);
            };
            let keys = self.rekey()?.next_rx().map_err(RecordError::Rekey)?;
            self.rx = Direction::new(0, keys)?;
            match request {
                0 => {}
                1 => self.key_update_due = true,
                _ => return Err(RecordError::BadHandshake),
            }
            msgs = &[];
        }
        if !msgs.is_empty() {
            return Err(RecordError::BadHandshake);
        }
        Ok(())
    }

    fn rekey(&mut self) -> Result<&mut Box<dyn Rekey>, RecordError> {
        self.rekey.as_mut().ok_or(RecordError::Rekey("no key schedule".into()))
    }

    /// Seals `buf[plain]` in place as one record of `typ`: the header (and TLS 1.2's explicit
    /// nonce) goes into the `prefix()` bytes before it, the TLS 1.3 content type and the tag into
    /// the `suffix()` bytes after it. Returns the record's range. At most `MAX_PLAINTEXT` bytes.
    pub fn seal(&mut self, buf: &mut [u8], typ: ContentType, plain: Range<usize>) -> Result<Range<usize>, RecordError> {
        let (prefix, suffix) = (self.prefix(), self.suffix());
        if plain.len() > MAX_PLAINTEXT {
            return Err(RecordError::Oversized(plain.len()));
        }
        let (Some(start), end) = (plain.start.checked_sub(prefix), plain.end + suffix) else {
            return Err(RecordError::NoRoom);
        };
        if end > buf.len() || plain.start > plain.end {
            return Err(RecordError::NoRoom);
        }
        if self.tx.seq == u64::MAX {
            // TLS 1.3 replaces its key long before (`key_update_due`); TLS 1.2 cannot replace it
            // and, as in rustls, is not limited short of the sequence number itself.
            return Err(RecordError::KeyExhausted);
        }
        let record = &mut buf[start..end];
        let body_len = record.len() - HEADER;
        let nonce = self.tx.nonce_bytes();
        let p = plain.len();
        // The AAD (TLS 1.3: the record header; TLS 1.2: sequence, type, version, length) and
        // where the bytes to encrypt start and how many there are.
        let mut aad = [0u8; 13];
        let (aad_len, inner_at, inner_len) = match self.version {
            Version::Tls13 => {
                record[..HEADER].copy_from_slice(&header(ContentType::ApplicationData as u8, body_len));
                record[HEADER + p] = typ as u8;
                aad[..HEADER].copy_from_slice(&record[..HEADER]);
                (HEADER, HEADER, p + 1)
            }
            Version::Tls12 => {
                record[..HEADER].copy_from_slice(&header(typ as u8, body_len));
                if prefix - HEADER == 8 {
                    record[HEADER..HEADER + 8].copy_from_slice(&nonce[4..]);
                }
                aad = tls12_aad(self.tx.seq, typ as u8, [3, 3], p);
                (aad.len(), prefix, p)
            }
        };
        let (inner, tag_out) = record[inner_at..].split_at_mut(inner_len);
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad[..aad_len]), inner)
            .map_err(|_| RecordError::KeyExhausted)?;
        tag_out.copy_from_slice(tag.as_ref());
        self.tx.seq += 1;
        if self.tx.seq >= KEY_RECORD_LIMIT - 1024 && self.version == Version::Tls13 && self.rekey.is_some() {
            self.key_update_due = true;
        }
        Ok(start..end)
    }

    /// True when a KeyUpdate must go out before more data (`seal_key_update`).
    pub fn key_update_due(&self) -> bool {
        self.key_update_due
    }

    /// Appends our KeyUpdate record (sealed under the current key) to `out`, then moves to the
    /// next key; `request_peer` asks the peer to update too (the gateway never does: it answers
    /// or replaces a worn key, and the peer's key is the peer's business).
    pub fn seal_key_update(&mut self, out: &mut Vec<u8>, request_peer: bool) -> Result<(), RecordError> {
        self.seal_message(out, ContentType::Handshake, &[24, 0, 0, 1, u8::from(request_peer)])?;
        let keys = self.rekey()?.next_tx().map_err(RecordError::Rekey)?;
        self.tx = Direction::new(0, keys)?;
        self.key_update_due = false;
        Ok(())
    }

    /// Appends a close_notify alert record to `out`.
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), RecordError> {
        self.seal_message(out, ContentType::Alert, &[1, 0])
    }

    /// Appends `payload` (at most one record's worth) sealed as one record to `out`. The copy
    /// into `out` is for small messages (control frames, alerts), never relayed payload.
    pub fn seal_message(&mut self, out: &mut Vec<u8>, typ: ContentType, payload: &[u8]) -> Result<(), RecordError> {
        let at = out.len();
        let (prefix, suffix) = (self.prefix(), self.suffix());
        out.resize(at + prefix, 0);
        out.extend_from_slice(payload);
        out.resize(out.len() + suffix, 0);
        let plain = at + prefix..at + prefix + payload.len();
        match self.seal(out, typ, plain) {
            Ok(_) => Ok(()),
            Err(e) => {
                // Never leave plaintext where sealed records are expected.
                out.truncate(at);
                Err(e)
            }
        }
    }

    /// The peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }
}

fn header(typ: u8, body_len: usize) -> [u8; HEADER] {
    let len = (body_len as u16).to_be_bytes();
    [typ, 3, 3, len[0], len[1]]
}

fn tls12_aad(seq: u64, typ: u8, version: [u8; 2], len: usize) -> [u8; 13] {
    let mut aad = [0u8; 13];
    aad[..8].copy_from_slice(&seq.to_be_bytes());
    aad[8] = typ;
    aad[9..11].copy_from_slice(&version);
    aad[11..].copy_from_slice(&(len as u16).to_be_bytes());
    aad
}

#[cfg(test)]
mod tests;
