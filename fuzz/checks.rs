//! Property checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the plain regression
//! test (`protocols/tests/fuzz_regressions.rs`), which both include this file with `#[path]`, so
//! a crash found by libFuzzer replays under `cargo test` through exactly the same code.
//!
//! Every check takes raw fuzz input and panics when a property is violated. The first bytes of the
//! input choose parameters (role, limits, split points, keys); the layout is documented on each
//! check, and `fuzz/scripts/make_seeds.py` writes seeds in that layout.

use std::sync::OnceLock;

use portcullis_protocols::http::{self, HeadLimits, HttpError};
use portcullis_protocols::token::{self, TokenError, TokenVerifier};
use portcullis_protocols::ws::{
    self, CloseCode, Decoded, Decoder, Event, Limits, Message, MessageAssembler, OpCode, ProtocolError, Role,
    MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN,
};

/// A property check over one fuzz input; panics on a violation.
pub type Check = fn(&[u8]);

/// Every target with its check, by the name of its `fuzz/fuzz_targets/<name>.rs` and of its
/// `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` directories.
pub const TARGETS: &[(&str, Check)] = &[
    ("ws_decoder", ws_decoder),
    ("ws_assembler", ws_assembler),
    ("ws_roundtrip", ws_roundtrip),
    ("http_head", http_head),
    ("token", token),
    ("ws_mask", ws_mask),
];

/// The check for a target name, if there is such a target.
pub fn check_for(target: &str) -> Option<Check> {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
}

// ---------------------------------------------------------------------------------------------
// Input parameters

/// Splits off the first `N` bytes as parameters (zeros when the input is shorter).
fn params<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut p = [0u8; N];
    let n = data.len().min(N);
    p[..n].copy_from_slice(&data[..n]);
    (p, &data[n..])
}

fn role(flags: u8) -> Role {
    if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    }
}

/// Small limits, so the fuzzer reaches both size errors with short inputs: bits 1-3 pick the frame
/// payload limit, bits 4-6 the message limit.
fn small_limits(flags: u8) -> Limits {
    const FRAME: [u64; 8] = [0, 1, 5, 16, 125, 126, 300, 1 << 16];
    const MESSAGE: [u64; 8] = [0, 3, 16, 64, 126, 256, 1024, 1 << 20];
    Limits {
        max_frame_payload: FRAME[usize::from((flags >> 1) & 7)],
        max_message: MESSAGE[usize::from((flags >> 4) & 7)],
    }
}

/// A position in `0..=len` taken from two little-endian bytes.
fn point(lo: u8, hi: u8, len: usize) -> usize {
    usize::from(u16::from_le_bytes([lo, hi])) % (len + 1)
}

// ---------------------------------------------------------------------------------------------
// Decoder contract helpers (public so the regression test can show they fail when they should)

/// How many `decode`/`feed` calls in a row may consume nothing. The contract allows a call that
/// consumes nothing but returns an event; a run of them is a livelock. The drivers below make at
/// most one legitimate idle call in a row (on an empty piece), so 2 leaves a margin of one.
pub const MAX_IDLE_CALLS: usize = 2;

/// The progress guarantee of `Decoder::decode` and `MessageAssembler::feed`: on non-empty input,
/// consume something or return an event; never consume more than was given.
pub fn assert_progress(input_len: usize, consumed: usize, has_event: bool) {
    assert!(consumed <= input_len, "consumed {consumed} of {input_len} input bytes");
    assert!(
        input_len == 0 || consumed > 0 || has_event,
        "no progress: {input_len} bytes given, none consumed, no event"
    );
}

/// A data event's range lies within the bytes consumed by that call (hence within its input).
pub fn assert_range_within(range: &core::ops::Range<usize>, consumed: usize, input_len: usize) {
    assert!(
        range.start <= range.end && range.end <= consumed && consumed <= input_len,
        "data range {range:?} outside consumed {consumed} / input {input_len}"
    );
}

fn count_idle(idle: &mut usize, consumed: usize) {
    if consumed == 0 {
        *idle += 1;
        assert!(*idle <= MAX_IDLE_CALLS, "{idle} calls in a row consumed nothing");
    } else {
        *idle = 0;
    }
}

/// A decoded message in a form comparable across the decoder and the assembler.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    Data { text: bool, bytes: Vec<u8> },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl From<&Message> for Msg {
    fn from(m: &Message) -> Self {
        match m {
            Message::Text(s) => Msg::Data {
                text: true,
                bytes: s.as_bytes().to_vec(),
            },
            Message::Binary(b) => Msg::Data {
                text: false,
                bytes: b.clone(),
            },
            Message::Ping(p) => Msg::Ping(p.as_bytes().to_vec()),
            Message::Pong(p) => Msg::Pong(p.as_bytes().to_vec()),
            Message::Close { code, reason } => Msg::Close(code.map(|c| c.0), reason.clone()),
        }
    }
}

/// How a run over the whole input ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// All input consumed, no Close (possibly inside a frame or message).
    Open,
    Closed,
    Failed(ProtocolError),
}

fn check_close(code: Option<CloseCode>, reason: &[u8]) {
    if let Some(c) = code {
        assert!(c.is_valid_on_wire(), "close code {} is not valid on the wire", c.0);
    } else {
        assert!(reason.is_empty(), "close reason without a code");
    }
    assert!(
        reason.len() <= MAX_CONTROL_PAYLOAD - 2,
        "close reason of {} bytes",
        reason.len()
    );
    assert!(core::str::from_utf8(reason).is_ok(), "close reason is not UTF-8");
}

fn assert_sticky_error(err: &ProtocolError, again: Result<Decoded, ProtocolError>) {
    assert_eq!(again.as_ref().err(), Some(err), "error not repeated: {again:?}");
}

// ---------------------------------------------------------------------------------------------
// ws_decoder

/// Input: `[flags, split_lo, split_hi, wire...]`. `flags` bit 0 picks the role (0 server, 1
/// client), bits 1-6 small limits. The wire bytes are decoded once whole and once in two pieces
/// cut at the split point; each call must respect the progress guarantee and the range contract,
/// errors must be sticky, nothing may follow Close, text must be valid UTF-8, limits must hold,
/// and both runs must yield the same completed messages and the same ending.
pub fn ws_decoder(data: &[u8]) {
    let ([flags, lo, hi], wire) = params::<3>(data);
    let (role, limits) = (role(flags), small_limits(flags));
    let cut = point(lo, hi, wire.len());
    let whole = run_decoder(role, limits, &[wire]);
    let split = run_decoder(role, limits, &[&wire[..cut], &wire[cut..]]);
    assert_eq!(whole, split, "outcome depends on the split at {cut}");
}

fn run_decoder(role: Role, limits: Limits, pieces: &[&[u8]]) -> (Vec<Msg>, End) {
    let mut dec = Decoder::new(role, limits);
    assert_eq!(dec.role(), role);
    let mut msgs = Vec::new();
    // The open data message: its type and the bytes so far.
    let mut open: Option<(bool, Vec<u8>)> = None;
    let mut idle = 0;
    for piece in pieces {
        let mut buf = piece.to_vec();
        let mut pos = 0;
        loop {
            let input = &mut buf[pos..];
            let len = input.len();
            let was_closed = dec.is_closed();
            let Decoded { consumed, event } = match dec.decode(input) {
                Ok(d) => d,
                Err(e) => {
                    assert!(!was_closed, "error {e:?} after Close");
                    assert_sticky_error(&e, dec.decode(&mut []));
                    assert_sticky_error(&e, dec.decode(&mut [0x81, 0x80, 0, 0, 0, 0]));
                    return (msgs, End::Failed(e));
                }
            };
            assert_progress(len, consumed, event.is_some());
            count_idle(&mut idle, consumed);
            if was_closed {
                assert_eq!((consumed, &event), (len, &None), "input after Close was not ignored");
            }
            match event {
                None => {}
                Some(Event::Data { range, text, fin }) => {
                    assert_range_within(&range, consumed, len);
                    let (open_text, bytes) = open.get_or_insert_with(|| (text, Vec::new()));
                    assert_eq!(*open_text, text, "message type changed between fragments");
                    bytes.extend_from_slice(&input[range]);
                    let total = bytes.len() as u64;
                    assert!(total <= limits.max_message, "message of {total} bytes over the limit");
                    if text {
                        // Valid so far: at most a code point cut by the end of the chunk.
                        if let Err(e) = core::str::from_utf8(bytes) {
                            assert!(e.error_len().is_none(), "invalid UTF-8 passed as text");
                            assert!(!fin, "text message ends inside a code point");
                        }
                    }
                    if fin {
                        let (text, bytes) = open.take().unwrap_or_default();
                        msgs.push(Msg::Data { text, bytes });
                    }
                }
                Some(Event::Ping(p)) => msgs.push(Msg::Ping(p.as_bytes().to_vec())),
                Some(Event::Pong(p)) => msgs.push(Msg::Pong(p.as_bytes().to_vec())),
                Some(Event::Close { code, reason }) => {
                    check_close(code, reason.as_bytes());
                    assert!(dec.is_closed(), "Close event but the decoder is not closed");
                    msgs.push(Msg::Close(code.map(|c| c.0), reason.as_str().to_owned()));
                }
            }
            pos += consumed;
            if pos == buf.len() {
                break;
            }
        }
    }
    let end = if dec.is_closed() { End::Closed } else { End::Open };
    (msgs, end)
}

// ---------------------------------------------------------------------------------------------
// ws_assembler

/// Input: `[flags, chunk, wire...]`. `flags` as for `ws_decoder`; the wire bytes are fed to a
/// `MessageAssembler` whole and in chunks of `chunk % 64 + 1` bytes. Both runs must respect the
/// progress guarantee and the limits, and produce the same messages and ending, which must also
/// agree with the bare decoder's.
pub fn ws_assembler(data: &[u8]) {
    let ([flags, chunk], wire) = params::<2>(data);
    let (role, limits) = (role(flags), small_limits(flags));
    let whole = run_assembler(role, limits, wire, wire.len().max(1));
    let chunked = run_assembler(role, limits, wire, usize::from(chunk % 64) + 1);
    assert_eq!(whole, chunked, "outcome depends on the chunk size {}", chunk % 64 + 1);
    let as_msgs: Vec<Msg> = whole.0.iter().map(Msg::from).collect();
    assert_eq!(
        (as_msgs, whole.1),
        run_decoder(role, limits, &[wire]),
        "assembler and decoder disagree"
    );
}

fn run_assembler(role: Role, limits: Limits, wire: &[u8], chunk: usize) -> (Vec<Message>, End) {
    let mut asm = MessageAssembler::new(role, limits);
    let mut msgs = Vec::new();
    let mut idle = 0;
    for piece in wire.chunks(chunk) {
        let mut buf = piece.to_vec();
        let mut pos = 0;
        while pos < buf.len() {
            let len = buf.len() - pos;
            let was_closed = asm.decoder().is_closed();
            let (consumed, msg) = match asm.feed(&mut buf[pos..]) {
                Ok(r) => r,
                Err(e) => {
                    let again = asm.feed(&mut [0x82, 0x00]);
                    assert_eq!(again.err().as_ref(), Some(&e), "assembler error not repeated");
                    return (msgs, End::Failed(e));
                }
            };
            assert_progress(len, consumed, msg.is_some());
            count_idle(&mut idle, consumed);
            if was_closed {
                assert_eq!((consumed, &msg), (len, &None), "input after Close was not ignored");
            }
            if let Some(m) = msg {
                check_message(&m, limits);
                if matches!(m, Message::Close { .. }) {
                    assert!(asm.decoder().is_closed(), "Close message but the decoder is not closed");
                }
                msgs.push(m);
            }
            pos += consumed;
        }
    }
    let end = if asm.decoder().is_closed() {
        End::Closed
    } else {
        End::Open
    };
    (msgs, end)
}

fn check_message(m: &Message, limits: Limits) {
    match m {
        Message::Text(s) => assert!(s.len() as u64 <= limits.max_message, "text over the limit"),
        Message::Binary(b) => assert!(b.len() as u64 <= limits.max_message, "binary over the limit"),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
        Message::Close { code, reason } => check_close(*code, reason.as_bytes()),
    }
}

// ---------------------------------------------------------------------------------------------
// ws_roundtrip

/// Input: `[flags, k0, k1, k2, k3, wire...]`. The wire bytes are decoded into messages (role from
/// `flags` bit 0; frame and message limits both 64 KiB, so any message fits one frame), the
/// messages are re-encoded one frame each as the peer would send them (masked with key `k` when
/// we are the server), and decoding that must give the same messages; re-encoding those must give
/// the same bytes.
pub fn ws_roundtrip(data: &[u8]) {
    let ([flags, k0, k1, k2, k3], wire) = params::<5>(data);
    let role = role(flags);
    let limits = Limits {
        max_frame_payload: 1 << 16,
        max_message: 1 << 16,
    };
    let mask = (role == Role::Server).then_some([k0, k1, k2, k3]);
    let (first, _) = run_assembler(role, limits, wire, wire.len().max(1));
    let encoded = encode_messages(&first, mask);
    let (second, end) = run_assembler(role, limits, &encoded, encoded.len().max(1));
    assert_eq!(first, second, "re-encoded messages decode differently");
    let closed = matches!(first.last(), Some(Message::Close { .. }));
    assert_eq!(
        end,
        if closed { End::Closed } else { End::Open },
        "re-encoded stream ended badly"
    );
    assert_eq!(encode_messages(&second, mask), encoded, "encoding is not deterministic");
}

fn encode_messages(msgs: &[Message], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        match m {
            Message::Text(s) => encode_data(&mut out, OpCode::Text, s.as_bytes(), mask),
            Message::Binary(b) => encode_data(&mut out, OpCode::Binary, b, mask),
            Message::Ping(p) => ws::encode_control(&mut out, OpCode::Ping, p.as_bytes(), mask),
            Message::Pong(p) => ws::encode_control(&mut out, OpCode::Pong, p.as_bytes(), mask),
            Message::Close { code: Some(c), reason } => ws::encode_close(&mut out, *c, reason, mask),
            Message::Close { code: None, .. } => ws::encode_control(&mut out, OpCode::Close, &[], mask),
        }
    }
    out
}

fn encode_data(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let n = ws::encode_header(&mut header, true, opcode, payload.len() as u64, mask);
    assert_eq!(n, ws::header_len(payload.len() as u64, mask.is_some()));
    out.extend_from_slice(&header[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        let next = ws::apply_mask(&mut out[start..], key, 0);
        assert_eq!(next, payload.len() % 4);
    }
}

// ---------------------------------------------------------------------------------------------
// http_head

/// Input: `[limits, cut_lo, cut_hi, bytes...]`. `limits` bits 0-2 pick `max_bytes`, bits 3-5
/// `max_headers`. The bytes are parsed as a request head and as a response head. A complete head
/// must lie within the input and the byte limit, every proper prefix of it must parse as
/// incomplete (checked at the cut point), `Ok(None)` only under the byte limit; then
/// `websocket_upgrade`, `bearer_token`, `query_param` run on whatever parsed, and an accepted
/// upgrade's 101 response must parse back with the right accept key.
pub fn http_head(data: &[u8]) {
    let ([sel, lo, hi], buf) = params::<3>(data);
    const BYTES: [usize; 8] = [0, 1, 16, 64, 256, 1024, 4096, 8192];
    const HEADERS: [usize; 8] = [0, 1, 2, 4, 8, 16, 32, 64];
    let limits = HeadLimits {
        max_bytes: BYTES[usize::from(sel & 7)],
        max_headers: HEADERS[usize::from((sel >> 3) & 7)],
    };
    request_head(buf, limits, lo, hi);
    response_head(buf, limits, lo, hi);
}

fn request_head(buf: &[u8], limits: HeadLimits, lo: u8, hi: u8) {
    let req = match http::parse_head(buf, limits) {
        Ok(Some(req)) => req,
        Ok(None) => {
            assert!(
                buf.len() < limits.max_bytes,
                "incomplete at {} bytes, over the limit",
                buf.len()
            );
            return;
        }
        Err(e) => {
            if e == HttpError::HeadTooLarge {
                assert!(buf.len() >= limits.max_bytes, "HeadTooLarge under the limit");
            }
            assert!(
                matches!(e.status(), 400 | 405 | 426 | 431 | 505),
                "status {}",
                e.status()
            );
            return;
        }
    };
    assert!(
        req.len <= buf.len() && req.len <= limits.max_bytes,
        "head length {} out of bounds",
        req.len
    );
    assert!(
        req.headers.len() <= limits.max_headers,
        "{} headers over the limit",
        req.headers.len()
    );
    assert!(!req.method.is_empty(), "empty method");
    assert!(
        req.path.starts_with('/') && !req.path.contains('?'),
        "bad path {:?}",
        req.path
    );
    // The head is self-delimiting: what follows it is not part of it, and any proper prefix of it
    // means "more bytes needed" (the engine reads until the head is complete).
    let again = http::parse_head(&buf[..req.len], limits).map(|r| r.map(|r| (r.method, r.path, r.query, r.len)));
    assert_eq!(
        again,
        Ok(Some((req.method, req.path, req.query, req.len))),
        "head changes without its tail"
    );
    let cut = point(lo, hi, req.len.saturating_sub(1));
    let prefix = http::parse_head(&buf[..cut], limits);
    assert!(
        matches!(prefix, Ok(None)),
        "prefix of {cut} bytes of a valid head gave {prefix:?}"
    );

    for (name, _) in &req.headers {
        let _ = req.header(name);
        let _ = req.has_token(name, "upgrade");
    }
    // A percent-decoded query token may hold any text; only the absence of panics matters here.
    let _ = req.bearer_token();
    for name in ["token", "a", ""] {
        let _ = req.query_param(name);
    }
    let Ok(up) = http::websocket_upgrade(&req) else {
        return;
    };
    assert_eq!(req.method, "GET");
    assert!(ws::is_valid_client_key(up.key), "accepted invalid key {:?}", up.key);
    assert!(
        up.protocols.iter().all(|p| !p.is_empty() && p.trim() == *p),
        "{:?}",
        up.protocols
    );
    let _ = up.origin_allowed(|o| o.starts_with("https://"));
    let protocol = up.negotiate(&["chat", "superchat"]);
    let resp = http::switching_protocols(up.key, protocol);
    let head = http::parse_response_head(&resp, HeadLimits::default());
    let head = head.ok().flatten().expect("our 101 response must parse");
    assert_eq!((head.status, head.len), (101, resp.len()));
    assert_eq!(head.accept, Some(ws::accept_key(up.key)));
}

fn response_head(buf: &[u8], limits: HeadLimits, lo: u8, hi: u8) {
    let resp = match http::parse_response_head(buf, limits) {
        Ok(Some(resp)) => resp,
        Ok(None) => {
            assert!(buf.len() < limits.max_bytes, "incomplete response over the limit");
            return;
        }
        Err(e) => {
            if e == HttpError::HeadTooLarge {
                assert!(buf.len() >= limits.max_bytes, "HeadTooLarge under the limit");
            }
            return;
        }
    };
    assert!(
        resp.len <= buf.len() && resp.len <= limits.max_bytes,
        "response length {}",
        resp.len
    );
    assert!(resp.status <= 999, "status {}", resp.status);
    let cut = point(lo, hi, resp.len.saturating_sub(1));
    let prefix = http::parse_response_head(&buf[..cut], limits);
    assert!(
        matches!(prefix, Ok(None)),
        "prefix of {cut} bytes of a valid response gave {prefix:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// token

/// Ed25519 public key of RFC 8032 test 1 (the key pair the token unit tests sign with).
const TOKEN_PUBLIC_KEY: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72,
    0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];
const TOKEN_LEEWAY: u64 = 30;

fn verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let pem = token::pem::ed25519_public(&TOKEN_PUBLIC_KEY);
        TokenVerifier::from_public_pem(pem.as_bytes(), TOKEN_LEEWAY).expect("fixed public key")
    })
}

/// Input: `[now, token...]`. `now` picks the clock from a table around 1.8e9 s; the rest, read as
/// UTF-8 (lossily), is verified with a fixed public key. Must never panic; an accepted token must
/// be within its validity period.
pub fn token(data: &[u8]) {
    const NOW: [u64; 8] = [
        0,
        1_799_999_000,
        1_799_999_960,
        1_800_000_000,
        1_800_000_900,
        1_800_000_929,
        1_800_000_930,
        u64::MAX,
    ];
    let ([sel], rest) = params::<1>(data);
    let now = NOW[usize::from(sel & 7)];
    let text = String::from_utf8_lossy(rest);
    match verifier().verify(&text, now) {
        Ok(c) => {
            assert!(c.exp.saturating_add(TOKEN_LEEWAY) > now, "expired token accepted");
            assert!(c.nbf <= now.saturating_add(TOKEN_LEEWAY), "immature token accepted");
        }
        Err(TokenError::TooLong) => assert!(text.len() > token::MAX_TOKEN_LEN),
        Err(e) => assert!(!matches!(e, TokenError::BadKey(_)), "{e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// ws_mask

/// Input: `[k0, k1, k2, k3, offset, shift, cut_lo, cut_hi, payload...]`. The payload, placed at
/// `shift % 8` bytes into a buffer to vary its alignment, is masked with `apply_mask` whole and in
/// two pieces cut at the cut point, starting at key `offset`; both must equal
/// `apply_mask_bytewise`, return `(offset + len) % 4`, and masking twice must restore the payload.
pub fn ws_mask(data: &[u8]) {
    let ([k0, k1, k2, k3, offset, shift, lo, hi], payload) = params::<8>(data);
    let (key, offset, shift) = ([k0, k1, k2, k3], usize::from(offset), usize::from(shift % 8));
    let mut want = payload.to_vec();
    let want_next = ws::apply_mask_bytewise(&mut want, key, offset);
    assert_eq!(want_next, (offset + payload.len()) % 4, "bytewise offset");

    let mut store = vec![0u8; shift + payload.len()];
    let buf = &mut store[shift..];
    buf.copy_from_slice(payload);
    assert_eq!(ws::apply_mask(buf, key, offset), want_next, "offset after apply_mask");
    assert_eq!(
        buf,
        &want[..],
        "apply_mask != apply_mask_bytewise (shift {shift}, offset {offset})"
    );
    assert_eq!(ws::apply_mask(buf, key, offset), want_next);
    assert_eq!(buf, payload, "masking twice does not restore the payload");

    let cut = point(lo, hi, payload.len());
    let (a, b) = buf.split_at_mut(cut);
    let mid = ws::apply_mask(a, key, offset);
    assert_eq!(ws::apply_mask(b, key, mid), want_next);
    assert_eq!(buf, &want[..], "masking split at {cut} differs");
}
