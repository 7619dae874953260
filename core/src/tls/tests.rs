//! The record layer against itself: every version and suite both ways, in place; tampering,
//! padding, alerts, key updates, limits. Interoperation with rustls itself (the peer's records
//! sealed by rustls, ours opened by rustls) is tested in the engine, which has rustls.

use super::*;

const SUITES: [(Version, Algorithm); 5] = [
    (Version::Tls13, Algorithm::Aes128Gcm),
    (Version::Tls13, Algorithm::Aes256Gcm),
    (Version::Tls13, Algorithm::Chacha20Poly1305),
    (Version::Tls12, Algorithm::Aes128Gcm),
    (Version::Tls12, Algorithm::Chacha20Poly1305),
];

fn keys(algorithm: Algorithm, seed: u8) -> Keys {
    let len = if algorithm == Algorithm::Aes128Gcm { 16 } else { 32 };
    Keys {
        algorithm,
        key: (0..len).map(|i| seed.wrapping_mul(31).wrapping_add(i)).collect(),
        iv: std::array::from_fn(|i| seed ^ i as u8),
    }
}

/// Two ends of one connection: what one seals the other opens.
fn pair(version: Version, algorithm: Algorithm) -> (RecordLayer, RecordLayer) {
    let a = RecordLayer::new(version, (0, keys(algorithm, 1)), (0, keys(algorithm, 2))).unwrap();
    let b = RecordLayer::new(version, (0, keys(algorithm, 2)), (0, keys(algorithm, 1))).unwrap();
    (a, b)
}

/// Seals `payload` in place inside a buffer with room around it, as the relay does.
fn seal_in_buf(layer: &mut RecordLayer, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_PREFIX + payload.len() + MAX_SUFFIX];
    buf[MAX_PREFIX..MAX_PREFIX + payload.len()].copy_from_slice(payload);
    let record = layer
        .seal(
            &mut buf,
            ContentType::ApplicationData,
            MAX_PREFIX..MAX_PREFIX + payload.len(),
        )
        .unwrap();
    buf[record].to_vec()
}

#[test]
fn every_suite_round_trips_in_place_both_ways() {
    for (version, algorithm) in SUITES {
        let (mut a, mut b) = pair(version, algorithm);
        for len in [0, 1, 100, 4096, MAX_PLAINTEXT] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            for flip in [false, true] {
                let (tx, rx) = if flip { (&mut b, &mut a) } else { (&mut a, &mut b) };
                let mut record = seal_in_buf(tx, &payload);
                assert_eq!(
                    record.len(),
                    tx.prefix() + len + tx.suffix(),
                    "{version:?} {algorithm:?}"
                );
                if len > 8 {
                    assert_ne!(&record[tx.prefix()..tx.prefix() + len], &payload[..], "sealed");
                }
                let (used, opened) = rx.open(&mut record).unwrap().unwrap();
                assert_eq!(used, record.len());
                let Opened::Data(range) = opened else {
                    panic!("{opened:?}")
                };
                assert_eq!(&record[range], &payload[..], "{version:?} {algorithm:?} {len}");
            }
        }
    }
}

#[test]
fn incomplete_records_wait_and_impossible_headers_fail_at_once() {
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut record = seal_in_buf(&mut a, b"hello");
    for cut in 0..record.len() {
        assert_eq!(b.open(&mut record[..cut].to_vec()).unwrap(), None, "cut at {cut}");
    }
    assert!(matches!(b.open(&mut record).unwrap(), Some((_, Opened::Data(_)))));
    assert_eq!(
        RecordLayer::record_len(&[99, 3, 3, 0, 1]),
        Err(RecordError::BadType(99))
    );
    assert_eq!(RecordLayer::record_len(b"GET /"), Err(RecordError::BadType(b'G')));
    assert_eq!(
        RecordLayer::record_len(&[23, 2, 0, 0, 1]),
        Err(RecordError::BadVersion(0x200))
    );
    assert_eq!(
        RecordLayer::record_len(&[23, 3, 3, 0x48, 0x01]),
        Err(RecordError::Oversized(0x4801))
    );
    assert_eq!(RecordLayer::record_len(&[23, 3, 3, 0x41, 0x00]), Ok(Some(MAX_RECORD)));
}

#[test]
fn tampering_anywhere_fails_to_authenticate() {
    for (version, algorithm) in SUITES {
        let (mut a, _) = pair(version, algorithm);
        let record = seal_in_buf(&mut a, b"attack at dawn");
        for i in 0..record.len() {
            // Flipping a length byte changes the framing; every other byte must fail the tag.
            if i == 3 || i == 4 {
                continue;
            }
            let (_, mut b) = pair(version, algorithm);
            let mut bad = record.clone();
            bad[i] ^= 0x40;
            assert!(b.open(&mut bad).is_err(), "{version:?} {algorithm:?} byte {i}");
        }
    }
}

#[test]
fn replayed_or_reordered_records_fail() {
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let first = seal_in_buf(&mut a, b"one");
    let mut second = seal_in_buf(&mut a, b"two");
    assert_eq!(b.open(&mut second.clone()), Err(RecordError::Decrypt));
    let (_, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    b.open(&mut first.clone()).unwrap().unwrap();
    assert_eq!(b.open(&mut first.clone()), Err(RecordError::Decrypt));
    let _ = b.open(&mut second);
}

/// Seals `inner` (content, type byte, padding: TLS 1.3's inner plaintext, written by hand) under
/// `layer`'s sending key.
fn seal_raw_tls13(layer: &mut RecordLayer, inner: &[u8]) -> Vec<u8> {
    let mut rec = header(23, inner.len() + TAG).to_vec();
    rec.extend_from_slice(inner);
    let aad: [u8; HEADER] = rec[..HEADER].try_into().unwrap();
    let nonce = Nonce::assume_unique_for_key(layer.tx.nonce_bytes());
    let tag = layer
        .tx
        .key
        .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut rec[HEADER..])
        .unwrap();
    rec.extend_from_slice(tag.as_ref());
    layer.tx.seq += 1;
    rec
}

#[test]
fn tls13_padding_is_stripped_and_the_inner_type_is_the_real_one() {
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut rec = seal_raw_tls13(&mut a, &[b'h', b'i', 0, 23, 0, 0, 0, 0, 0]);
    let Opened::Data(range) = b.open(&mut rec).unwrap().unwrap().1 else {
        panic!()
    };
    assert_eq!(&rec[range], b"hi\0");
    // A padded close_notify is still one.
    let mut rec = seal_raw_tls13(&mut a, &[1, 0, 21, 0, 0]);
    assert_eq!(b.open(&mut rec).unwrap().unwrap().1, Opened::Closed);
    // Padding only (no type byte), or an unknown inner type: refused.
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut rec = seal_raw_tls13(&mut a, &[0, 0, 0]);
    assert_eq!(b.open(&mut rec), Err(RecordError::Decrypt));
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut rec = seal_raw_tls13(&mut a, &[b'x', 99]);
    assert_eq!(b.open(&mut rec), Err(RecordError::BadType(99)));
}

#[test]
fn close_notify_closes_and_nothing_may_follow() {
    for (version, algorithm) in SUITES {
        let (mut a, mut b) = pair(version, algorithm);
        let mut out = Vec::new();
        a.seal_close_notify(&mut out).unwrap();
        let (used, opened) = b.open(&mut out).unwrap().unwrap();
        assert_eq!((used, opened), (out.len(), Opened::Closed));
        assert!(b.peer_closed());
        let mut more = seal_in_buf(&mut a, b"late");
        assert_eq!(b.open(&mut more), Err(RecordError::AfterClose));
    }
}

#[test]
fn other_alerts_and_post_handshake_messages_end_the_connection() {
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut out = Vec::new();
    a.seal_message(&mut out, ContentType::Alert, &[2, 40]).unwrap();
    assert_eq!(b.open(&mut out), Err(RecordError::Alert(40)));

    // A NewSessionTicket (4) or ClientHello (1) after the handshake: refused.
    for typ in [1u8, 4, 13] {
        let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
        let mut out = Vec::new();
        a.seal_message(&mut out, ContentType::Handshake, &[typ, 0, 0, 0])
            .unwrap();
        assert_eq!(b.open(&mut out), Err(RecordError::UnexpectedHandshake(typ)));
    }
    // TLS 1.2 renegotiation (a HelloRequest from a server, a ClientHello from a client).
    let (mut a, mut b) = pair(Version::Tls12, Algorithm::Aes128Gcm);
    let mut out = Vec::new();
    a.seal_message(&mut out, ContentType::Handshake, &[1, 0, 0, 0]).unwrap();
    assert_eq!(b.open(&mut out), Err(RecordError::UnexpectedHandshake(1)));
    // ChangeCipherSpec after the handshake.
    let (mut a, mut b) = pair(Version::Tls12, Algorithm::Aes128Gcm);
    let mut out = Vec::new();
    a.seal_message(&mut out, ContentType::ChangeCipherSpec, &[1]).unwrap();
    assert_eq!(
        b.open(&mut out),
        Err(RecordError::Unexpected(ContentType::ChangeCipherSpec))
    );
    // A TLS 1.3 record whose outer type is not application data.
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut rec = seal_in_buf(&mut a, b"x");
    rec[0] = 22;
    assert!(b.open(&mut rec).is_err());
}

/// Key schedules that hand out keys by generation, the same on both ends.
struct Schedule {
    tx_seed: u8,
    rx_seed: u8,
}

impl Rekey for Schedule {
    fn next_tx(&mut self) -> Result<Keys, String> {
        self.tx_seed = self.tx_seed.wrapping_add(10);
        Ok(keys(Algorithm::Aes128Gcm, self.tx_seed))
    }
    fn next_rx(&mut self) -> Result<Keys, String> {
        self.rx_seed = self.rx_seed.wrapping_add(10);
        Ok(keys(Algorithm::Aes128Gcm, self.rx_seed))
    }
}

#[test]
fn key_updates_move_both_ends_to_the_next_keys_and_answer_requests() {
    let (a, b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut a = a.with_rekey(Box::new(Schedule { tx_seed: 1, rx_seed: 2 }));
    let mut b = b.with_rekey(Box::new(Schedule { tx_seed: 2, rx_seed: 1 }));
    // a updates its sending key (not asking b to): b follows on receipt.
    let mut out = Vec::new();
    a.seal_key_update(&mut out, false).unwrap();
    assert_eq!(b.open(&mut out).unwrap().unwrap().1, Opened::Nothing);
    assert!(!b.key_update_due());
    let mut rec = seal_in_buf(&mut a, b"after");
    let Opened::Data(r) = b.open(&mut rec).unwrap().unwrap().1 else {
        panic!()
    };
    assert_eq!(&rec[r], b"after");

    // a asks b to update too (update_requested = 1): b must answer before its next data.
    let mut out = Vec::new();
    a.seal_message(&mut out, ContentType::Handshake, &[24, 0, 0, 1, 1])
        .unwrap();
    let next = a.rekey().unwrap().next_tx().unwrap();
    a.tx = Direction::new(0, next).unwrap();
    b.open(&mut out).unwrap().unwrap();
    assert!(b.key_update_due());
    let mut answer = Vec::new();
    b.seal_key_update(&mut answer, false).unwrap();
    assert!(!b.key_update_due());
    assert_eq!(a.open(&mut answer).unwrap().unwrap().1, Opened::Nothing);
    let mut rec = seal_in_buf(&mut b, b"both moved");
    let Opened::Data(r) = a.open(&mut rec).unwrap().unwrap().1 else {
        panic!()
    };
    assert_eq!(&rec[r], b"both moved");

    // Without a key schedule a key update ends the connection; a malformed one too.
    let (mut a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut out = Vec::new();
    a.seal_message(&mut out, ContentType::Handshake, &[24, 0, 0, 1, 0])
        .unwrap();
    assert!(matches!(b.open(&mut out), Err(RecordError::Rekey(_))));
    for bad in [&[24u8, 0, 0, 2, 0, 0][..], &[24, 0, 0, 1, 7], &[24, 0, 0, 1], &[24, 0]] {
        let (a, b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
        let (mut a, mut b) = (a, b.with_rekey(Box::new(Schedule { tx_seed: 2, rx_seed: 1 })));
        let mut out = Vec::new();
        a.seal_message(&mut out, ContentType::Handshake, bad).unwrap();
        assert_eq!(b.open(&mut out), Err(RecordError::BadHandshake), "{bad:?}");
    }
}

#[test]
fn a_key_near_its_limit_is_replaced_in_tls13_and_ends_tls12() {
    let (a, mut b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut a = a.with_rekey(Box::new(Schedule { tx_seed: 1, rx_seed: 2 }));
    a.tx.seq = KEY_RECORD_LIMIT - 1025;
    b.rx.seq = KEY_RECORD_LIMIT - 1025;
    let mut b = b.with_rekey(Box::new(Schedule { tx_seed: 2, rx_seed: 1 }));
    let mut rec = seal_in_buf(&mut a, b"last under the old key");
    assert!(a.key_update_due());
    b.open(&mut rec).unwrap().unwrap();
    let mut out = Vec::new();
    a.seal_key_update(&mut out, false).unwrap();
    assert_eq!(a.tx.seq, 0);
    b.open(&mut out).unwrap().unwrap();
    let mut rec = seal_in_buf(&mut a, b"fresh key");
    assert!(matches!(b.open(&mut rec).unwrap().unwrap().1, Opened::Data(_)));

    // TLS 1.2 cannot replace its key: like rustls, it goes on (to the sequence number's end).
    let (mut a, mut b) = pair(Version::Tls12, Algorithm::Aes128Gcm);
    a.tx.seq = KEY_RECORD_LIMIT;
    b.rx.seq = KEY_RECORD_LIMIT;
    let mut rec = seal_in_buf(&mut a, b"still fine");
    assert!(matches!(b.open(&mut rec).unwrap().unwrap().1, Opened::Data(_)));
    a.tx.seq = u64::MAX;
    let mut buf = vec![0u8; 64];
    assert_eq!(
        a.seal(&mut buf, ContentType::ApplicationData, 20..30),
        Err(RecordError::KeyExhausted)
    );
    // A failed seal leaves no plaintext behind in the output.
    let mut out = b"sealed so far".to_vec();
    assert_eq!(
        a.seal_message(&mut out, ContentType::ApplicationData, b"secret"),
        Err(RecordError::KeyExhausted)
    );
    assert_eq!(out, b"sealed so far");
}

#[test]
fn sealing_needs_room_around_the_payload() {
    let (mut a, _) = pair(Version::Tls12, Algorithm::Aes128Gcm);
    let mut buf = vec![0u8; 100];
    assert_eq!(
        a.seal(&mut buf, ContentType::ApplicationData, 12..50),
        Err(RecordError::NoRoom)
    );
    assert_eq!(
        a.seal(&mut buf, ContentType::ApplicationData, 13..90),
        Err(RecordError::NoRoom)
    );
    assert_eq!(a.seal(&mut buf, ContentType::ApplicationData, 13..84), Ok(0..100));
    let mut big = vec![0u8; MAX_PLAINTEXT + 64];
    assert_eq!(
        a.seal(&mut big, ContentType::ApplicationData, 13..MAX_PLAINTEXT + 14),
        Err(RecordError::Oversized(MAX_PLAINTEXT + 1))
    );
}

#[test]
fn a_key_update_ends_its_record_and_records_without_data_are_bounded() {
    let schedule = || Box::new(Schedule { tx_seed: 1, rx_seed: 2 });
    // A KeyUpdate with anything behind it in the same record: refused.
    let (mut a, b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let mut b = b.with_rekey(Box::new(Schedule { tx_seed: 2, rx_seed: 1 }));
    let mut out = Vec::new();
    a.seal_message(&mut out, ContentType::Handshake, &[24, 0, 0, 1, 0, 24, 0, 0, 1, 0])
        .unwrap();
    assert_eq!(b.open(&mut out), Err(RecordError::BadHandshake));
    // Key updates one per record: 32 in a row are taken, the 33rd is not.
    let (a, b) = pair(Version::Tls13, Algorithm::Aes128Gcm);
    let (mut a, mut b) = (
        a.with_rekey(schedule()),
        b.with_rekey(Box::new(Schedule { tx_seed: 2, rx_seed: 1 })),
    );
    for i in 0..=MAX_EMPTY_RECORDS {
        let mut out = Vec::new();
        a.seal_key_update(&mut out, true).unwrap();
        let opened = b.open(&mut out);
        if i < MAX_EMPTY_RECORDS {
            assert_eq!(opened.unwrap().unwrap().1, Opened::Nothing, "update {i}");
        } else {
            assert_eq!(opened, Err(RecordError::TooManyEmpty));
        }
    }
    // Empty data records likewise; one with data in between starts the count again.
    let (mut a, mut b) = pair(Version::Tls12, Algorithm::Chacha20Poly1305);
    for round in 0..3 {
        for _ in 0..MAX_EMPTY_RECORDS {
            let mut out = Vec::new();
            a.seal_message(&mut out, ContentType::ApplicationData, &[]).unwrap();
            assert!(b.open(&mut out).is_ok(), "round {round}");
        }
        let mut out = Vec::new();
        a.seal_message(&mut out, ContentType::ApplicationData, b"x").unwrap();
        assert!(matches!(b.open(&mut out).unwrap().unwrap().1, Opened::Data(_)));
    }
    let mut out = Vec::new();
    for _ in 0..=MAX_EMPTY_RECORDS {
        a.seal_message(&mut out, ContentType::ApplicationData, &[]).unwrap();
    }
    let mut pos = 0;
    let mut refused = false;
    while pos < out.len() {
        match b.open(&mut out[pos..]) {
            Ok(Some((len, _))) => pos += len,
            Err(e) => {
                assert_eq!(e, RecordError::TooManyEmpty);
                refused = true;
                break;
            }
            Ok(None) => break,
        }
    }
    assert!(refused);
}
