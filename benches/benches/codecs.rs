//! Criterion benchmarks of the sans-IO codecs in `portcullis-protocols`.
//!
//! Groups (see benches/README.md for what each one means and recorded results):
//! - `ws_decode_unmask`: server-role `Decoder` on one masked binary frame, payload unmasked in place
//!   (`reused_buffer`: one decoder and buffer for all iterations; `fresh_copy`: `iter_batched_ref`).
//! - `ws_encode/client`: `encode_header` + `apply_mask` into a relay-style out buffer.
//! - `ws_encode/server`: `encode_header` only (server frames are not masked).
//! - `ws_mask`: `apply_mask` (word-at-a-time) vs `apply_mask_bytewise` (reference).
//! - `http_upgrade`: `parse_head` + `websocket_upgrade` + `bearer_token` on a real upgrade request.
//! - `token_verify`: `TokenVerifier::verify` of a real Ed25519 (EdDSA) JWT.
//! - `tls_reference`: ring AES-256-GCM seal/open of one 16 KiB TLS record, the cost TLS adds per byte.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::token::{pem, Claims, TokenIssuer, TokenVerifier};
use portcullis_protocols::ws::{
    apply_mask, apply_mask_bytewise, encode_header, header_len, Decoder, Event, Limits, OpCode, Role, MAX_HEADER_LEN,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Payload sizes for the WebSocket groups: a keystroke-ish message, a small read, a full TLS
/// record's worth, and the default `Limits::max_frame_payload` (1 MiB).
const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 1024 * 1024];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Same headroom the engine's relay keeps in front of a read so the header lands before the payload.
const HEADROOM: usize = MAX_HEADER_LEN;
/// "Now" for token validity, seconds since the epoch (time is an argument in the codec).
const NOW: u64 = 1_800_000_000;

fn label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// Large payloads get fewer samples so a full run stays within a few minutes.
fn samples(size: usize) -> usize {
    if size >= 1 << 20 {
        10
    } else {
        50
    }
}

/// Inputs for `iter_batched_ref`: enough per batch to amortise the timer (~256 KiB of frames, so
/// the batch stays cache-resident like a freshly read socket buffer), one per batch when large.
fn batch(frame_len: usize) -> BatchSize {
    match (256 * 1024) / frame_len {
        0 | 1 => BatchSize::PerIteration,
        n => BatchSize::NumIterations(n as u64),
    }
}

/// Deterministic, non-constant payload bytes.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect()
}

/// One complete masked binary frame (as a client sends it) with `payload`.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&mut header, true, OpCode::Binary, payload.len() as u64, Some(KEY));
    let mut frame = header[..n].to_vec();
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], KEY, 0);
    frame
}

/// Decodes one whole frame; returns the unmasked payload range.
fn decode_frame(dec: &mut Decoder, frame: &mut [u8]) -> core::ops::Range<usize> {
    match dec.decode(frame) {
        Ok(d) => match d.event {
            Some(Event::Data { range, fin: true, .. }) if d.consumed == frame.len() => range,
            other => panic!("unexpected decode result: {other:?}"),
        },
        Err(e) => panic!("decode failed: {e}"),
    }
}

fn ws_decode_unmask(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_decode_unmask");
    for size in SIZES {
        let plain = payload(size);
        let frame = masked_frame(&plain);
        let decoder = Decoder::new(Role::Server, Limits::default());

        // Check once, outside the timing, that the bench decodes what it claims to.
        let (mut dec, mut check) = (decoder.clone(), frame.clone());
        let range = decode_frame(&mut dec, &mut check);
        assert_eq!(&check[range], &plain[..]);

        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(samples(size));
        // Steady state of a relay: one long-lived decoder and one warm, reused read buffer. Unmasking
        // is an XOR, so each decode re-masks what the previous one unmasked: the header is never
        // touched, the payload alternates masked/unmasked, and every iteration parses the header and
        // unmasks all `size` bytes (binary frames do no data-dependent work).
        let (mut dec, mut buf) = (decoder.clone(), frame.clone());
        group.bench_function(BenchmarkId::new("reused_buffer", label(size)), |b| {
            b.iter(|| decode_frame(&mut dec, black_box(&mut buf)))
        });
        let hlen = frame.len() - size;
        assert!(
            buf == frame || buf[hlen..] == plain[..],
            "payload must toggle masked/unmasked"
        );
        // Fresh masked copy and fresh decoder per iteration via `iter_batched_ref` (setup untimed).
        group.bench_with_input(BenchmarkId::new("fresh_copy", label(size)), &frame, |b, frame| {
            b.iter_batched_ref(
                || (decoder.clone(), frame.clone()),
                |(dec, buf)| decode_frame(dec, black_box(buf)),
                batch(frame.len()),
            )
        });
    }
    group.finish();
}

/// Encodes one outgoing frame the way the relay does: header built on the stack, copied into the
/// headroom in front of the payload, payload masked in place when `mask` is set.
fn encode_into(out: &mut [u8], n: usize, mask: Option<[u8; 4]>) -> usize {
    let hlen = header_len(n as u64, mask.is_some());
    let start = HEADROOM - hlen;
    let mut header = [0u8; MAX_HEADER_LEN];
    let written = encode_header(&mut header, true, OpCode::Binary, n as u64, mask);
    out[start..HEADROOM].copy_from_slice(&header[..written]);
    if let Some(key) = mask {
        apply_mask(&mut out[HEADROOM..HEADROOM + n], key, 0);
    }
    start
}

fn ws_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_encode");
    for size in SIZES {
        let mut out = vec![0u8; HEADROOM];
        out.extend(payload(size));
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(samples(size));
        // Masking is data-independent, so re-masking the same buffer every iteration is full work.
        group.bench_function(BenchmarkId::new("client", label(size)), |b| {
            b.iter(|| encode_into(black_box(&mut out), black_box(size), black_box(Some(KEY))))
        });
        group.bench_function(BenchmarkId::new("server", label(size)), |b| {
            b.iter(|| encode_into(black_box(&mut out), black_box(size), black_box(None)))
        });
    }
    group.finish();
}

fn ws_mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_mask");
    for size in SIZES {
        let mut buf = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.sample_size(samples(size));
        group.bench_function(BenchmarkId::new("apply_mask", label(size)), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), 0))
        });
        group.bench_function(BenchmarkId::new("apply_mask_bytewise", label(size)), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), black_box(KEY), 0))
        });
    }
    group.finish();
}

/// A fresh Ed25519 key pair from ring, as (PKCS#8 private PEM, SPKI public PEM).
fn ed25519_pems() -> (String, String) {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate Ed25519 key");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse generated key");
    let raw: [u8; 32] = pair.public_key().as_ref().try_into().expect("32-byte public key");
    (pem::encode("PRIVATE KEY", pkcs8.as_ref()), pem::ed25519_public(&raw))
}

fn claims() -> Claims {
    Claims {
        sub: "alice".into(),
        tgt: "vm1".into(),
        exp: NOW + 900,
        nbf: NOW - 10,
        iat: Some(NOW - 10),
        jti: "5f0c3a8e-2b7d-4e61-9a53-0c8d7f1e2a44".into(),
        iss: None,
        aud: None,
        scope: None,
        once: false,
        roles: Vec::new(),
        lgn: None,
    }
}

/// A real token and a verifier for it.
fn token_setup() -> (String, TokenVerifier) {
    let (private, public) = ed25519_pems();
    let issuer = TokenIssuer::from_private_pem(private.as_bytes()).expect("issuer");
    let token = issuer.issue(&claims()).expect("issue");
    let verifier = TokenVerifier::from_public_pem(public.as_bytes(), 30).expect("verifier");
    (token, verifier)
}

/// The upgrade request the CLI sends, carrying `token` as a bearer token.
fn upgrade_request(token: &str) -> Vec<u8> {
    format!(
        "GET /v1/tunnel/vm1 HTTP/1.1\r\n\
         Host: bastion.example.com\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\
         \r\n"
    )
    .into_bytes()
}

/// What the gateway does with a request head before it looks at the token's signature.
fn parse_upgrade(buf: &[u8]) -> usize {
    let head = http::parse_head(buf, HeadLimits::default())
        .expect("valid head")
        .expect("complete head");
    let upgrade = http::websocket_upgrade(&head).expect("valid upgrade");
    let token = head.bearer_token().expect("bearer token");
    upgrade.key.len() + token.len() + head.len
}

fn http_upgrade(c: &mut Criterion) {
    let (token, _) = token_setup();
    let request = upgrade_request(&token);
    assert_eq!(parse_upgrade(&request), 24 + token.len() + request.len());
    let mut group = c.benchmark_group("http_upgrade");
    group.throughput(Throughput::Bytes(request.len() as u64));
    group.bench_function(
        BenchmarkId::new("parse_upgrade_bearer", format!("{}B", request.len())),
        |b| b.iter(|| parse_upgrade(black_box(&request))),
    );
    group.finish();
}

fn token_verify(c: &mut Criterion) {
    let (token, verifier) = token_setup();
    assert_eq!(verifier.verify(&token, NOW), Ok(claims()));
    let mut group = c.benchmark_group("token_verify");
    group.bench_function(BenchmarkId::new("ed25519_jwt", format!("{}B", token.len())), |b| {
        b.iter(|| verifier.verify(black_box(&token), black_box(NOW)))
    });
    group.finish();
}

/// Reference point for the WebSocket numbers: the AEAD work rustls does per 16 KiB TLS 1.3 record
/// (rustls uses ring or aws-lc-rs for AES-GCM). The fixed nonce is fine for timing only.
fn tls_reference(c: &mut Criterion) {
    const RECORD: usize = 16 * 1024;
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).expect("AES-256 key"));
    let nonce = || Nonce::assume_unique_for_key([7; 12]);
    // TLS 1.3 additional data: the record header (type, legacy version, ciphertext length).
    let aad = || {
        let len = (RECORD + 1 + AES_256_GCM.tag_len()) as u16;
        let [hi, lo] = len.to_be_bytes();
        Aad::from([0x17, 0x03, 0x03, hi, lo])
    };
    let mut group = c.benchmark_group("tls_reference");
    group.throughput(Throughput::Bytes(RECORD as u64));

    let mut buf = payload(RECORD);
    group.bench_function(BenchmarkId::new("aes256gcm_seal", label(RECORD)), |b| {
        b.iter(|| {
            key.seal_in_place_separate_tag(nonce(), aad(), black_box(&mut buf))
                .expect("seal")
        })
    });

    let mut sealed = payload(RECORD);
    let tag = key
        .seal_in_place_separate_tag(nonce(), aad(), &mut sealed)
        .expect("seal");
    sealed.extend_from_slice(tag.as_ref());
    group.bench_function(BenchmarkId::new("aes256gcm_open", label(RECORD)), |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |buf| {
                key.open_in_place(nonce(), aad(), black_box(buf))
                    .map(|p| p.len())
                    .expect("open")
            },
            batch(sealed.len()),
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = ws_decode_unmask, ws_encode, ws_mask, http_upgrade, token_verify, tls_reference
}
criterion_main!(benches);
