//! Property checks shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the plain regression
//! test (`protocols/tests/fuzz_regressions.rs`), which both include this file with `#[path]`, so
//! a crash found by libFuzzer replays under `cargo test` through exactly the same code.
//!
//! Every check takes raw fuzz input and panics when a property is violated. The first bytes of the
//! input choose parameters (role, limits, split points, keys); the layout is documented on each
//! check, and `fuzz/scripts/make_seeds.py` writes seeds in that layout.

use std::sync::OnceLock;

use portcullis_protocols::chunked::{self, ChunkLimits, ChunkedDecoder, ChunkedError};
use portcullis_protocols::http::{self, HeadLimits, HttpError};
use portcullis_protocols::rdp::channels::{self, ChannelPolicy, FirstPduFilter, Inspected, MAX_CONNECT_INITIAL};
use portcullis_protocols::rdp::{
    self, CleanPathAnswer, CleanPathRequest, ConnectionRequestInfo, RdpError, MAX_CLEANPATH_REQUEST, MAX_X224_LEN,
};
use portcullis_protocols::terminal::{
    self, ClientMessage, ServerMessage, TerminalError, MAX_COLS, MAX_CONTROL_LEN, MAX_ROWS,
};
use portcullis_protocols::token::{self, TokenError, TokenVerifier};
use portcullis_protocols::tsgu;
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
    ("rdp_x224", rdp_x224),
    ("rdp_cleanpath", rdp_cleanpath),
    ("rdp_channels", rdp_channels),
    ("terminal", terminal),
    ("proxy_header", proxy_header),
    ("tsgu", tsgu),
    ("chunked", chunked),
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

// ---------------------------------------------------------------------------------------------
// rdp_x224

/// The longest `Cookie: mstshash=` value a Connection Request with an RDP_NEG_REQ can carry, as
/// `rdp::connection_request` builds it: the TPDU length indicator is one byte and 255 is reserved,
/// so 6 fixed bytes + the 17-byte prefix + the cookie + CR LF + the 8-byte RDP_NEG_REQ <= 254.
pub const MAX_COOKIE_LEN: usize = 254 - 6 - 17 - 2 - 8;

/// Input: `[sel, pdu...]`. `sel` bits 0-2 pick the `max` given to `tpkt_len`; bit 3 overwrites
/// the TPKT length field of `pdu` with its actual length (when it has 4 bytes and fits 16 bits), so
/// that mutations get past the whole-packet check into the X.224 decoders. `tpkt_len` must give
/// `Ok(None)` exactly when fewer than 4 bytes are in and otherwise a length in `7..=max` read from
/// the header, or the matching error; `parse_connection_request` and `parse_connection_confirm`
/// must never both succeed, succeed only on one whole TPKT packet, and a request's cookie must
/// re-encode with `connection_request` and parse back (see `check_connection_request`).
pub fn rdp_x224(data: &[u8]) {
    const MAX: [usize; 8] = [0, 6, 7, 8, 64, MAX_X224_LEN, 0xFFFF, usize::MAX];
    let ([sel], rest) = params::<1>(data);
    let mut pdu = rest.to_vec();
    if sel & 8 != 0 && pdu.len() >= 4 {
        if let Ok(len) = u16::try_from(pdu.len()) {
            pdu[2..4].copy_from_slice(&len.to_be_bytes());
        }
    }
    check_tpkt_len(&pdu, MAX[usize::from(sel & 7)]);
    check_tpkt_len(&pdu, MAX_X224_LEN);

    let request = rdp::parse_connection_request(&pdu);
    let confirm = rdp::parse_connection_confirm(&pdu);
    assert!(
        request.is_err() || confirm.is_err(),
        "parsed as both a Connection Request and a Connection Confirm"
    );
    if request.is_ok() || confirm.is_ok() {
        assert_eq!(
            rdp::tpkt_len(&pdu, MAX_X224_LEN),
            Ok(Some(pdu.len())),
            "parsed something that is not one whole TPKT packet"
        );
    }
    if let Ok(info) = request {
        assert!(
            info.cookie.is_none() || info.routing_token.is_none(),
            "both a cookie and a routing token"
        );
        if let Some(cookie) = &info.cookie {
            assert!(!cookie.contains("\r\n"), "cookie {cookie:?} holds its own terminator");
            check_connection_request(cookie);
        }
    }
}

fn check_tpkt_len(buf: &[u8], max: usize) {
    let result = rdp::tpkt_len(buf, max);
    let Some(header) = buf.get(..4) else {
        assert_eq!(result, Ok(None), "{} bytes are not a TPKT header", buf.len());
        return;
    };
    let field = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match result {
        Ok(None) => panic!("Ok(None) with {} bytes in", buf.len()),
        Ok(Some(len)) => {
            assert_eq!((header[0], len), (3, field), "length {len} from header {header:02x?}");
            assert!((7..=max).contains(&len), "TPKT length {len} outside 7..={max}");
        }
        Err(RdpError::NotTpkt) => assert_ne!(header[0], 3, "a TPKT version 3 header refused"),
        Err(RdpError::Malformed(_)) => assert!(header[0] == 3 && field < 7, "length {field} refused"),
        Err(RdpError::TooLarge { len, max: m }) => {
            assert!(
                header[0] == 3 && len == field && m == max && len > max,
                "TooLarge {len}/{m} (max {max})"
            )
        }
        Err(e) => panic!("tpkt_len: {e:?}"),
    }
}

/// `rdp::connection_request(user)` must parse back with `user` as its cookie and TLS + CredSSP
/// requested, unless the format cannot carry `user`: a CR LF inside it would end the cookie early
/// (nothing is checked then), and over `MAX_COOKIE_LEN` bytes it must either still round-trip or
/// give nothing. Returns the encoded request.
fn check_connection_request(user: &str) -> Vec<u8> {
    let pdu = rdp::connection_request(user);
    if user.contains("\r\n") || (pdu.is_empty() && user.len() > MAX_COOKIE_LEN) {
        return pdu;
    }
    let info = rdp::parse_connection_request(&pdu).unwrap_or_else(|e| {
        panic!(
            "connection_request for a {}-byte user gave {} bytes that do not parse back: {e}",
            user.len(),
            pdu.len()
        )
    });
    let want = ConnectionRequestInfo {
        cookie: Some(user.to_owned()),
        routing_token: None,
        requested_protocols: 3,
    };
    assert_eq!(info, want, "connection_request does not parse back");
    pdu
}

// ---------------------------------------------------------------------------------------------
// rdp_cleanpath

/// Input: `[sel, bytes...]`, used twice.
///
/// As a PDU: `cleanpath_len` (with the `max` picked by `sel` bits 1-3, and with
/// `MAX_CLEANPATH_REQUEST`) must agree with its bounds and with `parse_cleanpath_request`'s verdict
/// (trailing bytes, truncation); a request that parses must re-encode with `cleanpath_request` and
/// parse back equal; a response that `parse_cleanpath_answer` accepts must re-encode with
/// `cleanpath_response` and parse back equal; and for any whole PDU that parses, every prefix
/// must be detected as incomplete or at its full length, never refused.
///
/// As strings: the bytes, read as UTF-8 (lossily) and split at NUL, give the destination, the
/// proxy_auth token, a user name and a preconnection blob (sent when `sel` bit 0 is set); missing
/// parts are empty. A request built from them with `cleanpath_request`, its X.224 part being
/// `connection_request(user)`, must be detected at its full length (and as too large under it)
/// from every prefix without an error, and parse back with the same fields and cookie.
pub fn rdp_cleanpath(data: &[u8]) {
    const MAX: [usize; 8] = [0, 1, 2, 16, 64, 256, MAX_CLEANPATH_REQUEST, usize::MAX];
    let ([sel], bytes) = params::<1>(data);
    cleanpath_pdu(bytes, MAX[usize::from((sel >> 1) & 7)]);

    let text = String::from_utf8_lossy(bytes);
    let mut parts = text.split('\0');
    let mut next = || parts.next().unwrap_or("");
    let (destination, proxy_auth, user, blob) = (next(), next(), next(), next());
    cleanpath_built(destination, proxy_auth, user, (sel & 1 != 0).then_some(blob));
}

fn cleanpath_pdu(buf: &[u8], max: usize) {
    let _ = check_cleanpath_len(buf, max);
    let full = check_cleanpath_len(buf, MAX_CLEANPATH_REQUEST);
    let request = rdp::parse_cleanpath_request(buf);
    let answer = rdp::parse_cleanpath_answer(buf);
    match (&full, &request) {
        (_, Ok(_)) => assert_eq!(full, Ok(Some(buf.len())), "request parsed but detected as {full:?}"),
        (Err(e), Err(got)) => assert_eq!(got, e, "detection and parsing disagree"),
        (Ok(Some(n)), Err(got)) if *n < buf.len() => assert_eq!(got, &RdpError::TrailingBytes),
        (Ok(_), Err(got)) if full != Ok(Some(buf.len())) => {
            assert!(matches!(got, RdpError::Malformed(_)), "truncated request gave {got:?}")
        }
        _ => {}
    }
    if let Ok((req, info)) = &request {
        assert!(answer.is_err(), "a request accepted as an answer");
        let inner = rdp::parse_connection_request(&req.x224_request);
        assert_eq!(inner.as_ref(), Ok(info), "X.224 request parses differently alone");
        let again = rdp::cleanpath_request(
            &req.x224_request,
            &req.destination,
            &req.proxy_auth,
            req.preconnection_blob.as_deref(),
        )
        .unwrap_or_else(|e| panic!("re-encoding a parsed request failed: {e}"));
        assert_eq!(
            rdp::parse_cleanpath_request(&again).as_ref(),
            Ok(&(req.clone(), info.clone())),
            "re-encoded request parses differently"
        );
    }
    if let Ok(CleanPathAnswer::Response {
        x224_confirm,
        chain,
        server_addr,
    }) = &answer
    {
        let again = rdp::cleanpath_response(server_addr, x224_confirm, chain)
            .unwrap_or_else(|e| panic!("re-encoding a parsed response failed: {e}"));
        assert_eq!(
            rdp::parse_cleanpath_answer(&again).as_ref(),
            answer.as_ref(),
            "re-encoded response parses differently"
        );
    }
    if (request.is_ok() || answer.is_ok()) && full == Ok(Some(buf.len())) {
        assert_detection_monotone(buf, MAX_CLEANPATH_REQUEST);
    }
}

fn check_cleanpath_len(buf: &[u8], max: usize) -> Result<Option<usize>, RdpError> {
    let result = rdp::cleanpath_len(buf, max);
    match &result {
        Ok(None) => assert!(buf.len() <= max, "{} bytes still incomplete over max {max}", buf.len()),
        Ok(Some(n)) => assert!(
            *n <= max && buf.first() == Some(&0x30),
            "detected {n} bytes (max {max})"
        ),
        Err(RdpError::TooLarge { len, max: m }) => assert!(*m == max && *len > max, "TooLarge {len}/{m} (max {max})"),
        Err(RdpError::NotCleanPath) => assert!(!buf.is_empty(), "empty input refused"),
        Err(e) => panic!("cleanpath_len: {e:?}"),
    }
    result
}

/// Every proper prefix of the whole PDU `pdu` is detected as incomplete or at the full length.
fn assert_detection_monotone(pdu: &[u8], max: usize) {
    for cut in 0..pdu.len() {
        match rdp::cleanpath_len(&pdu[..cut], max) {
            Ok(None) => {}
            Ok(Some(n)) => assert_eq!(n, pdu.len(), "prefix of {cut} bytes detected as {n} bytes"),
            Err(e) => panic!("prefix of {cut} bytes of a valid {}-byte PDU refused: {e}", pdu.len()),
        }
    }
}

fn cleanpath_built(destination: &str, proxy_auth: &str, user: &str, blob: Option<&str>) {
    let x224 = check_connection_request(user);
    let pdu = rdp::cleanpath_request(&x224, destination, proxy_auth, blob)
        .unwrap_or_else(|e| panic!("cleanpath_request failed: {e}"));
    let len = pdu.len();
    assert_eq!(rdp::cleanpath_len(&pdu, len), Ok(Some(len)), "request not detected");
    assert_eq!(
        rdp::cleanpath_len(&pdu, len - 1),
        Err(RdpError::TooLarge { len, max: len - 1 }),
        "request not too large for a max one byte under it"
    );
    assert_detection_monotone(&pdu, len);

    let parsed = rdp::parse_cleanpath_request(&pdu);
    if len > MAX_CLEANPATH_REQUEST {
        let max = MAX_CLEANPATH_REQUEST;
        assert_eq!(parsed, Err(RdpError::TooLarge { len, max }), "oversized request");
        return;
    }
    match parsed {
        Ok((req, info)) => {
            let want = CleanPathRequest {
                destination: destination.to_owned(),
                proxy_auth: proxy_auth.to_owned(),
                preconnection_blob: blob.map(str::to_owned),
                x224_request: x224,
            };
            assert_eq!(req, want, "request fields do not round-trip");
            if !user.contains("\r\n") {
                assert_eq!(info.cookie.as_deref(), Some(user), "cookie does not round-trip");
            }
        }
        // Only an X.224 part that `connection_request` could not build (see above) may fail.
        Err(e) => assert!(
            (x224.is_empty() || user.contains("\r\n")) && matches!(e, RdpError::Malformed(_)),
            "request from a {}-byte user did not parse: {e}",
            user.len()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// rdp_channels

/// Input: `[sel, seed, stream...]`. `sel` bit 0 refuses the clipboard, bit 1 drives (the policy);
/// bit 2 overwrites the TPKT length field of `stream` with its length (when it fits), so that
/// mutations reach the Connect Initial parser; bit 3 has the server select TLS alone (else
/// HYBRID_EX, where CredSSP messages come first). `seed` picks the sizes in which the stream
/// arrives.
///
/// `filter_connect_initial` on the stream as one PDU: refused PDUs are left untouched (and their
/// channels cannot be read either); accepted ones keep their length, their channels' count and
/// options, and every byte outside the names of entries the policy refuses, which become the
/// placeholders; no entry names a refused channel afterwards, the removed list is what the policy
/// refused of the request, and a second pass changes nothing. `FirstPduFilter` over the stream,
/// fed whole and in pieces the way the relay feeds it: never holds `MAX_CONNECT_INITIAL` bytes,
/// releases only the stream's own bytes before the Connect Initial is whole, reaches the same
/// verdict however the stream is cut, and once done gives the stream with its Connect Initial
/// filtered as above.
pub fn rdp_channels(data: &[u8]) {
    let ([sel, seed], rest) = params::<2>(data);
    let policy = ChannelPolicy {
        clipboard: sel & 1 == 0,
        drives: sel & 2 == 0,
    };
    let mut stream = rest.to_vec();
    if sel & 4 != 0 && stream.len() >= 4 {
        if let Ok(len) = u16::try_from(stream.len()) {
            stream[2..4].copy_from_slice(&len.to_be_bytes());
        }
    }
    check_channel_filter(&stream, policy);
    check_channel_filter(&stream, ChannelPolicy::ALLOW_ALL);

    let protocol = if sel & 8 != 0 { 1 } else { 8 };
    let (whole_out, whole_end, at) = feed_first_pdu(&stream, policy, protocol, &[usize::MAX]);
    // Arrival sizes of 1 to 64 bytes, from a small generator seeded by the input.
    let mut x = u32::from(seed) | 0x100;
    let cuts: Vec<usize> = (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 64) as usize + 1
        })
        .collect();
    let (cut_out, cut_end, _) = feed_first_pdu(&stream, policy, protocol, &cuts);
    assert_eq!(whole_end, cut_end, "the verdict depends on how the stream is cut");
    match whole_end {
        Ok(true) => {
            assert!(whole_out == cut_out, "the output depends on how the stream is cut");
            assert_eq!(whole_out.len(), stream.len());
            let at = at.expect("where the Connect Initial started");
            assert!(protocol == 8 || at == 0, "CredSSP bytes passed without NLA");
            let len = rdp::tpkt_len(&stream[at..], MAX_CONNECT_INITIAL)
                .ok()
                .flatten()
                .expect("a whole TPKT where the filter was done");
            let mut pdu = stream[at..at + len].to_vec();
            channels::filter_connect_initial(&mut pdu, policy).expect("the filter passed a refused PDU");
            assert_eq!(whole_out[..at], stream[..at], "CredSSP bytes changed");
            assert!(
                whole_out[at..at + len] == pdu[..],
                "the Connect Initial is not filtered as one PDU"
            );
            assert_eq!(
                whole_out[at + len..],
                stream[at + len..],
                "bytes after the Connect Initial changed"
            );
        }
        Ok(false) | Err(_) => {
            for out in [&whole_out, &cut_out] {
                assert_eq!(out[..], stream[..out.len()], "released bytes differ from the stream's");
            }
            if whole_end.is_ok() {
                assert!(whole_out == cut_out, "waiting with different bytes released");
            }
        }
    }
}

/// Checks `filter_connect_initial` on `pdu` as one whole Connect Initial (see `rdp_channels`).
fn check_channel_filter(pdu: &[u8], policy: ChannelPolicy) {
    let mut filtered = pdu.to_vec();
    let Ok(removed) = channels::filter_connect_initial(&mut filtered, policy) else {
        assert_eq!(filtered, pdu, "a refused PDU was changed");
        assert!(
            channels::requested_channels(pdu).is_err(),
            "refused, yet its channels read"
        );
        return;
    };
    let before = channels::requested_channels(pdu).expect("accepted, yet its channels do not read");
    let after = channels::requested_channels(&filtered).expect("filtered PDU no longer reads");
    assert_eq!((filtered.len(), after.len()), (pdu.len(), before.len()));
    let mut expected = Vec::new();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.options, b.options, "options changed");
        match policy.refusal(&b.name) {
            Some(channel) => {
                assert_eq!(a.name, channel.placeholder, "{:?} not renamed", b.name());
                if !expected.contains(&channel.name) {
                    expected.push(channel.name);
                }
            }
            None => assert_eq!(a.name, b.name, "{:?} renamed", b.name()),
        }
        assert!(policy.refusal(&a.name).is_none(), "{:?} still refused", a.name());
    }
    assert_eq!(removed, expected, "removed list");
    // Only name bytes changed: at most 8 per removed entry.
    let renamed = before.iter().filter(|b| policy.refusal(&b.name).is_some()).count();
    let changed = pdu.iter().zip(&filtered).filter(|(a, b)| a != b).count();
    assert!(changed <= 8 * renamed, "{changed} bytes changed for {renamed} names");
    if !policy.refuses_any() {
        assert_eq!(filtered, pdu, "changed although the policy allows everything");
    }
    let again = filtered.clone();
    assert!(channels::filter_connect_initial(&mut filtered, policy).is_ok_and(|r| r.is_empty()));
    assert_eq!(filtered, again, "a second pass changed the PDU");
}

/// Feeds `stream` to a `FirstPduFilter` (for a server that selected `protocol`) in arrivals of the sizes in `cuts` (cycled), handing it
/// every unreleased byte each time, as the relay does. Returns what it released, how it ended
/// (`Ok(true)` done, `Ok(false)` waiting) and where the Connect Initial started.
fn feed_first_pdu(
    stream: &[u8],
    policy: ChannelPolicy,
    protocol: u32,
    cuts: &[usize],
) -> (Vec<u8>, Result<bool, RdpError>, Option<usize>) {
    let mut filter = FirstPduFilter::new(policy, protocol);
    let (mut held, mut out, mut pos) = (Vec::new(), Vec::new(), 0);
    for &cut in cuts.iter().cycle() {
        if pos >= stream.len() {
            break;
        }
        let n = cut.clamp(1, stream.len() - pos);
        held.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
        match filter.inspect(&mut held) {
            Ok(Inspected::Done) => {
                out.append(&mut held);
                out.extend_from_slice(&stream[pos..]);
                return (out, Ok(true), filter.connect_initial_at());
            }
            Ok(Inspected::Release(k)) => {
                assert!(k <= held.len(), "released {k} of {} bytes", held.len());
                out.extend(held.drain(..k));
                assert!(held.len() < MAX_CONNECT_INITIAL, "holds {} bytes", held.len());
                assert!(!filter.is_done());
            }
            Err(e) => return (out, Err(e), None),
        }
    }
    (out, Ok(false), None)
}

// ---------------------------------------------------------------------------------------------
// terminal

/// Input: `[sel, rep, text...]`. The text (UTF-8, read lossily) goes through `parse_client` and
/// `parse_server`: errors only as their bounds say; an accepted client message must satisfy the
/// size and credential rules and parse back equal after `encode_client`; an accepted server
/// message must survive `encode_server` (below). Then `sel` bits 0-1 pick a server message the
/// gateway could build from outside text: `Ready` (clipboard: bit 2), `Exit` (status when bit 2,
/// from `rep`; signal when bit 3), `Error`, each text being the input text repeated `rep + 1`
/// times (at most `4 * MAX_CONTROL_LEN` bytes), or (3) `Error` with the text once.
/// `encode_server` must give at most `MAX_CONTROL_LEN` bytes that `parse_server` accepts and that
/// decode to the same message, an `Error` text only cut to about `MAX_CONTROL_LEN / 2` bytes.
pub fn terminal(data: &[u8]) {
    let ([sel, rep], rest) = params::<2>(data);
    let text = String::from_utf8_lossy(rest);
    terminal_client(&text);
    terminal_server(&text);

    let times = (usize::from(rep) + 1)
        .min(4 * MAX_CONTROL_LEN / text.len().max(1))
        .max(1);
    let long = || text.repeat(times);
    let msg = match sel & 3 {
        0 => ServerMessage::Ready {
            clipboard: sel & 4 != 0,
            file_transfer: sel & 8 != 0,
            max_file_size: (sel & 16 != 0).then_some(u64::from(rep)),
        },
        1 => ServerMessage::Exit {
            status: (sel & 4 != 0).then_some(u32::MAX >> (rep % 32)),
            signal: (sel & 8 != 0).then(long),
        },
        2 => ServerMessage::Error { message: long() },
        _ => ServerMessage::Error {
            message: text.clone().into_owned(),
        },
    };
    check_encode_server(&msg);
}

fn terminal_client(text: &str) {
    let msg = match terminal::parse_client(text) {
        Ok(msg) => msg,
        Err(TerminalError::TooLong) => {
            assert!(text.len() > MAX_CONTROL_LEN, "TooLong at {} bytes", text.len());
            return;
        }
        Err(TerminalError::BadSize { cols, rows }) => {
            let ok = (1..=MAX_COLS).contains(&cols) && (1..=MAX_ROWS).contains(&rows);
            assert!(!ok, "size {cols}x{rows} refused");
            return;
        }
        Err(TerminalError::Invalid(_)) => {
            assert!(text.len() <= MAX_CONTROL_LEN, "over-long text parsed");
            return;
        }
    };
    assert!(text.len() <= MAX_CONTROL_LEN, "{} bytes accepted", text.len());
    match &msg {
        ClientMessage::Resize { cols, rows } => assert!(
            (1..=MAX_COLS).contains(cols) && (1..=MAX_ROWS).contains(rows),
            "size {cols}x{rows} accepted"
        ),
        ClientMessage::Auth {
            username,
            password,
            private_key,
        } => {
            assert!(
                !username.is_empty() && username.len() <= 256 && !username.chars().any(char::is_control),
                "bad username {username:?} accepted"
            );
            assert!(
                password.is_some() != private_key.is_some(),
                "auth needs exactly one of password and private key"
            );
        }
        ClientMessage::Close {} | ClientMessage::Done {} => {}
        // Paths, sizes and chunk contents are the gateway's to check (`terminal.rs` handler):
        // parsing only bounds them by the message length.
        ClientMessage::Upload { path, .. } | ClientMessage::Download { path } => {
            assert!(path.len() <= MAX_CONTROL_LEN)
        }
        ClientMessage::Chunk { data } => assert!(data.len() <= MAX_CONTROL_LEN),
    }
    let encoded = terminal::encode_client(&msg);
    assert_eq!(
        terminal::parse_client(&encoded),
        Ok(msg),
        "re-encoded client message ({} bytes) parses differently",
        encoded.len()
    );
}

fn terminal_server(text: &str) {
    match terminal::parse_server(text) {
        Ok(msg) => {
            assert!(text.len() <= MAX_CONTROL_LEN, "{} bytes accepted", text.len());
            check_encode_server(&msg);
        }
        Err(TerminalError::TooLong) => assert!(text.len() > MAX_CONTROL_LEN, "TooLong at {} bytes", text.len()),
        Err(e) => assert!(
            text.len() <= MAX_CONTROL_LEN && matches!(e, TerminalError::Invalid(_)),
            "{e:?}"
        ),
    }
}

/// A server message without its (possibly huge) texts, for panic messages.
fn describe(msg: &ServerMessage) -> String {
    match msg {
        ServerMessage::Ready { clipboard, .. } => format!("Ready {{ clipboard: {clipboard} }}"),
        ServerMessage::Exit { status, signal } => format!(
            "Exit {{ status: {status:?}, signal: {:?} bytes }}",
            signal.as_ref().map(String::len)
        ),
        ServerMessage::Error { message } => format!("Error {{ message: {} bytes }}", message.len()),
        ServerMessage::Watched { watchers } => format!("Watched {{ watchers: {watchers} }}"),
        ServerMessage::FileData { data } => format!("FileData {{ {} bytes }}", data.len()),
        ServerMessage::FileProgress { bytes } => format!("FileProgress {{ bytes: {bytes} }}"),
        ServerMessage::FileDone { path, size, .. } => {
            format!("FileDone {{ path: {} bytes, size: {size} }}", path.len())
        }
        ServerMessage::FileError { message } => format!("FileError {{ message: {} bytes }}", message.len()),
    }
}

fn check_encode_server(msg: &ServerMessage) {
    let encoded = terminal::encode_server(msg);
    assert!(
        encoded.len() <= MAX_CONTROL_LEN,
        "encode_server gave {} bytes (over MAX_CONTROL_LEN {MAX_CONTROL_LEN}) for {}",
        encoded.len(),
        describe(msg)
    );
    let back = terminal::parse_server(&encoded)
        .unwrap_or_else(|e| panic!("encode_server output for {} does not parse: {e}", describe(msg)));
    // A message that fits is sent unchanged; one that does not has its outside texts cut to a
    // prefix (an error text, a signal name) and nothing else changed.
    let fits = serde_json::to_string(msg)
        .map(|t| t.len() <= MAX_CONTROL_LEN)
        .unwrap_or(false);
    if fits {
        assert!(back == *msg, "{} parses back as {}", describe(msg), describe(&back));
        return;
    }
    match (msg, &back) {
        (ServerMessage::Error { message }, ServerMessage::Error { message: cut }) => {
            assert!(message.starts_with(cut.as_str()), "error text changed, not cut");
        }
        (
            ServerMessage::Exit {
                status,
                signal: Some(sig),
            },
            ServerMessage::Exit {
                status: s2,
                signal: Some(cut),
            },
        ) => {
            assert!(status == s2 && sig.starts_with(cut.as_str()), "exit changed, not cut");
        }
        _ => panic!("{} parses back as {}", describe(msg), describe(&back)),
    }
}

/// `proxy_header`: the bytes as the start of a connection from a trusted balancer, through
/// `proxy::parse`. Never panics; a header lies within the input and the limits (107 bytes for v1,
/// `MAX_V2_LEN` for v2); every proper prefix of a whole header asks for more; `Ok(None)` only
/// under the limit; a header with addresses re-encodes (v1 and v2) and parses back equal.
pub fn proxy_header(data: &[u8]) {
    use portcullis_protocols::proxy::{self, ProxyHeader, MAX_V1_LEN, MAX_V2_LEN};
    match proxy::parse(data) {
        Ok(None) => assert!(data.len() < MAX_V2_LEN, "need more at {} bytes", data.len()),
        Ok(Some((header, len))) => {
            assert!(len <= data.len(), "header of {len} bytes in {}", data.len());
            let limit = if data.starts_with(&proxy::V2_SIGNATURE) {
                MAX_V2_LEN
            } else {
                MAX_V1_LEN
            };
            assert!(len <= limit, "header of {len} bytes over {limit}");
            for cut in 0..len {
                assert_eq!(proxy::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes decided");
            }
            if let ProxyHeader::Proxied { source, destination } = header {
                let (v2, _) = proxy::parse(&proxy::encode_v2(source, destination)).unwrap().unwrap();
                let same_family = source.is_ipv4() == destination.is_ipv4();
                if same_family {
                    assert_eq!(v2, header, "v2 round trip");
                    let (v1, _) = proxy::parse(&proxy::encode_v1(source, destination)).unwrap().unwrap();
                    assert_eq!(v1, header, "v1 round trip");
                }
            }
        }
        Err(_) => {}
    }
}

/// `tsgu`: input `[lo, hi]`, then a stream of MS-TSGU packets, decoded in both directions
/// (`tsgu::decode_client`, `tsgu::decode_gateway`), whole and fed in two pieces cut at
/// `point(lo, hi)`. Never panics; each packet takes at least a header and at most the rest of
/// the input and `MAX_PACKET_LEN`; no more packets than headers fit; `Ok(None)` only for a packet
/// not all there, an error only once a header is; proper prefixes of a decoded packet ask for
/// more; every decoded packet re-encodes and decodes back equal; the pieces give the same packets
/// and the same ending.
pub fn tsgu(data: &[u8]) {
    let ([lo, hi], wire) = params::<2>(data);
    let cut = point(lo, hi, wire.len());
    for step in [tsgu_client as TsguStep, tsgu_gateway] {
        let whole = tsgu_whole(wire, step);
        assert_eq!(tsgu_pieces(wire, cut, step), whole, "cut at {cut}");
    }
}

/// One decoding step in one direction: the packet, re-encoded once its round trip is checked,
/// and how many bytes it took.
type TsguStep = fn(&[u8]) -> Result<Option<(Vec<u8>, usize)>, tsgu::TsguError>;

fn tsgu_client(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, tsgu::TsguError> {
    let Some((packet, used)) = tsgu::decode_client(buf)? else {
        return Ok(None);
    };
    let bytes = packet
        .to_vec()
        .unwrap_or_else(|e| panic!("{packet:?} does not re-encode: {e}"));
    let back = tsgu::decode_client(&bytes);
    assert_eq!(back, Ok(Some((packet.clone(), bytes.len()))), "client round trip");
    Ok(Some((bytes, used)))
}

fn tsgu_gateway(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, tsgu::TsguError> {
    let Some((packet, used)) = tsgu::decode_gateway(buf)? else {
        return Ok(None);
    };
    let bytes = packet
        .to_vec()
        .unwrap_or_else(|e| panic!("{packet:?} does not re-encode: {e}"));
    let back = tsgu::decode_gateway(&bytes);
    assert_eq!(back, Ok(Some((packet.clone(), bytes.len()))), "gateway round trip");
    Ok(Some((bytes, used)))
}

/// The packets of a run (re-encoded) and how it ended: bytes left over, or an error.
#[derive(Debug, PartialEq)]
struct TsguRun {
    packets: Vec<Vec<u8>>,
    end: Result<usize, tsgu::TsguError>,
}

fn tsgu_whole(wire: &[u8], step: TsguStep) -> TsguRun {
    use tsgu::{HEADER_LEN, MAX_PACKET_LEN};
    let mut packets = Vec::new();
    let mut rest = wire;
    let end = loop {
        match step(rest) {
            Ok(Some((bytes, used))) => {
                assert!(
                    (HEADER_LEN..=rest.len().min(MAX_PACKET_LEN)).contains(&used),
                    "packet of {used} bytes in {}",
                    rest.len()
                );
                for prefix in [0, 1, HEADER_LEN - 1, HEADER_LEN, used / 2, used - 1] {
                    if prefix < used {
                        assert_eq!(
                            step(&rest[..prefix]),
                            Ok(None),
                            "prefix of {prefix} bytes of {used} decided"
                        );
                    }
                }
                packets.push(bytes);
                rest = &rest[used..];
            }
            Ok(None) => {
                match tsgu::peek_header(rest) {
                    Ok(Some(header)) => assert!(header.length > rest.len(), "{header:?} in {} bytes", rest.len()),
                    Ok(None) => assert!(rest.len() < HEADER_LEN),
                    Err(e) => panic!("waiting for a packet whose header fails: {e}"),
                }
                break Ok(rest.len());
            }
            Err(e) => {
                assert!(rest.len() >= HEADER_LEN, "{e} before a whole header");
                break Err(e);
            }
        }
    };
    assert!(packets.len() <= wire.len() / HEADER_LEN, "{} packets", packets.len());
    TsguRun { packets, end }
}

/// The stream fed as a reader would: a buffer grows by each piece and gives up whole packets.
fn tsgu_pieces(wire: &[u8], cut: usize, step: TsguStep) -> TsguRun {
    let mut buffer = Vec::new();
    let mut packets = Vec::new();
    for piece in [&wire[..cut], &wire[cut..]] {
        buffer.extend_from_slice(piece);
        loop {
            match step(&buffer) {
                Ok(Some((bytes, used))) => {
                    packets.push(bytes);
                    buffer.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return TsguRun { packets, end: Err(e) },
            }
        }
    }
    TsguRun {
        packets,
        end: Ok(buffer.len()),
    }
}

// ---------------------------------------------------------------------------------------------
// chunked

/// `chunked`: input `[flags, lo, hi, wire...]`. The wire bytes are a chunked body for
/// `chunked::ChunkedDecoder`, with the chunk limit picked by `flags` bits 0-2 (0 to unlimited,
/// small ones so `ChunkTooLarge` is reached). They are decoded whole, in two pieces cut at
/// `point(lo, hi)`, byte by byte, and in pieces whose lengths the wire bytes pick; each call must
/// keep the contract (consumed within the input, progress on non-empty input, one non-empty data
/// range ending at `consumed`, nothing consumed after the end, the offset counting consumed
/// bytes, errors sticky) and every run must give the same body bytes, the same end and the same
/// error at the same stream offset. Then the wire bytes as a body: cut into chunks whose sizes
/// the bytes pick, encoded with `encode_chunk` (FreeRDP's format, checked against `{:X}`) and
/// `LAST_CHUNK`, they must decode back to themselves whole and split, ending exactly at the end;
/// with a limit one under the largest chunk, they must fail with `ChunkTooLarge` at that chunk.
pub fn chunked(data: &[u8]) {
    const MAX_CHUNK: [usize; 8] = [0, 1, 5, 16, 300, 4096, 1 << 16, usize::MAX];
    let ([flags, lo, hi], wire) = params::<3>(data);
    let limits = ChunkLimits {
        max_chunk: MAX_CHUNK[usize::from(flags & 7)],
    };
    let cut = point(lo, hi, wire.len());
    let whole = chunked_run(limits, &[wire]);
    assert_eq!(
        chunked_run(limits, &[&wire[..cut], &wire[cut..]]),
        whole,
        "cut at {cut}"
    );
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(chunked_run(limits, &bytes), whole, "byte by byte");
    assert_eq!(
        chunked_run(limits, &chunked_pieces(wire)),
        whole,
        "pieces picked by the bytes"
    );

    // Round trip: the wire bytes as the body.
    let mut encoded = Vec::new();
    let mut sizes = Vec::new();
    let mut rest = wire;
    while let Some(&first) = rest.first() {
        let size = (usize::from(first ^ lo) % (usize::from(hi) + 1) + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        let start = encoded.len();
        chunked::encode_chunk(chunk, &mut encoded);
        let mut want = format!("{:X}\r\n", chunk.len()).into_bytes();
        want.extend_from_slice(chunk);
        want.extend_from_slice(b"\r\n");
        assert_eq!(&encoded[start..], &want[..], "encode_chunk of {size} bytes");
        sizes.push((start, size));
        rest = tail;
    }
    encoded.extend_from_slice(chunked::LAST_CHUNK);
    let largest = sizes.iter().map(|&(_, size)| size).max().unwrap_or(0);
    let fits = ChunkLimits { max_chunk: largest };
    let want = ChunkedRun {
        body: wire.to_vec(),
        end: Some(encoded.len() as u64),
        error: None,
    };
    let cut = point(hi, lo, encoded.len());
    assert_eq!(chunked_run(fits, &[&encoded]), want, "round trip");
    assert_eq!(
        chunked_run(fits, &[&encoded[..cut], &encoded[cut..]]),
        want,
        "round trip cut at {cut}"
    );
    if let Some(&(start, size)) = sizes.iter().find(|&&(_, size)| size == largest) {
        let under = ChunkLimits { max_chunk: largest - 1 };
        let run = chunked_run(under, &[&encoded]);
        let digits = format!("{size:X}").len();
        let at = (start + digits) as u64;
        let error = ChunkedError::ChunkTooLarge {
            len: size,
            max: size - 1,
        };
        assert_eq!(run.error, Some((error, at)), "limit one under the largest chunk");
        assert!(wire.starts_with(&run.body), "body before the refused chunk");
    }
}

/// How a run over a chunked body went: the body bytes, the stream offset where it ended (if it
/// did) and the first error with its offset.
#[derive(Debug, PartialEq, Eq)]
struct ChunkedRun {
    body: Vec<u8>,
    end: Option<u64>,
    error: Option<(ChunkedError, u64)>,
}

/// Pieces whose lengths are picked by the bytes themselves: each piece is `1..=32` bytes long,
/// from its first byte.
fn chunked_pieces(wire: &[u8]) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let mut rest = wire;
    while let Some(&first) = rest.first() {
        let (piece, tail) = rest.split_at((usize::from(first) % 32 + 1).min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

/// Feeds the pieces one after the other, each in a loop as a reader would (at least one call per
/// piece, even empty), checking each call's contract.
fn chunked_run(limits: ChunkLimits, pieces: &[&[u8]]) -> ChunkedRun {
    let mut dec = ChunkedDecoder::new(limits);
    assert_eq!(dec.limits(), limits);
    let mut body = Vec::new();
    let mut end = None;
    let mut offset = 0u64;
    for piece in pieces {
        let mut rest: &[u8] = piece;
        loop {
            let len = rest.len();
            let decoded = match dec.decode(rest) {
                Ok(d) => d,
                Err(e) => {
                    let at = dec.offset();
                    assert!(
                        (offset..offset + len as u64).contains(&at),
                        "{e:?} at {at}, outside the {len} bytes given at {offset}"
                    );
                    if e == ChunkedError::AfterEnd {
                        assert_eq!((end, at), (Some(offset), offset), "AfterEnd before the end");
                    } else {
                        assert!(end.is_none(), "{e:?} after the end");
                    }
                    if let ChunkedError::ChunkTooLarge { len, max } = e {
                        assert!(len > max && max == limits.max_chunk, "{e:?} under {limits:?}");
                    }
                    for again in [&b""[..], b"0\r\n\r\n", b"1\r\nx\r\n"] {
                        assert_eq!(dec.decode(again).as_ref().err(), Some(&e), "error not repeated");
                    }
                    assert_eq!(dec.offset(), at, "offset moved after the error");
                    return ChunkedRun {
                        body,
                        end,
                        error: Some((e, at)),
                    };
                }
            };
            assert_progress(len, decoded.consumed, false);
            offset += decoded.consumed as u64;
            assert_eq!(dec.offset(), offset, "offset is not the bytes consumed");
            if let Some(range) = &decoded.data {
                assert_range_within(range, decoded.consumed, len);
                assert!(range.start < range.end, "empty data range {range:?}");
                assert_eq!(range.end, decoded.consumed, "bytes consumed after the data");
                assert!(
                    range.len() <= limits.max_chunk,
                    "{} bytes of a chunk over {limits:?}",
                    range.len()
                );
                assert!(end.is_none() && !decoded.end, "data after the end");
                body.extend_from_slice(&rest[range.clone()]);
                assert!(body.len() as u64 + 3 <= offset, "{} body bytes in {offset}", body.len());
            }
            assert_eq!(dec.is_done(), decoded.end, "end flag and decoder disagree");
            if decoded.end {
                assert!(end.is_none() || decoded.consumed == 0, "ended twice");
                end.get_or_insert(offset);
            }
            rest = &rest[decoded.consumed..];
            if rest.is_empty() {
                break;
            }
        }
    }
    ChunkedRun { body, end, error: None }
}
