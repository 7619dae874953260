//! Property checks of the gateway's core (`portcullis-core`): the whole request path after TLS with
//! its one authorization decision (`gateway_request`), and the relay state machine driven by a
//! deterministic simulation (`relay`). Shared by those fuzz targets and the plain regression test
//! `core/tests/fuzz_regressions.rs`, which all include this file with `#[path]`. It lives apart
//! from `checks.rs` because it needs `portcullis-core`, which `portcullis-protocols`' tests cannot use.
//!
//! `gateway_request` input: `[sel, request...]`. `sel & 7` picks the clock; `sel >> 3` a cut point
//! (in 32nds of the request). In the request, `$0`..`$5` stand for tokens signed at start-up with
//! the RFC 8032 test 1 key (signatures cannot be found by mutation), so the fuzzer reaches every
//! authorization outcome. The same input also asks `Policy::authorize` for a grant with a web
//! sign-in or a one-time ticket as the credential (see `check_grants`):
//!
//! | placeholder | user | target | valid |
//! | --- | --- | --- | --- |
//! | `$0` | alice | vm1 | 1_799_999_900 .. 1_800_000_900 |
//! | `$1` | alice | vm2 (not hers) | same |
//! | `$2` | mallory (no policy) | vm1 | same |
//! | `$3` | alice | gone (no such target) | same |
//! | `$4` | alice | vm1 | expired at 1_700_000_000 |
//! | `$5` | alice | rdp1 | same as `$0` |

use std::sync::OnceLock;

use portcullis_core::audit::Via;
use portcullis_core::config::{Config, Protocol};
use portcullis_core::policy::{Credential, Destination, Grant, Policy};
use portcullis_core::request::{decide, Decision, MAX_BODY};
use portcullis_core::route::{route, Route};
use portcullis_protocols::http::{self, HeadLimits};
use portcullis_protocols::token::{pem, Claims, TokenIssuer, TokenVerifier};

/// A property check over one fuzz input; panics on a violation.
pub type Check = fn(&[u8]);

/// The targets whose checks live here (the others are in `checks.rs`).
pub const TARGETS: &[(&str, Check)] = &[
    ("gateway_request", gateway_request),
    ("relay", relay),
    ("tls_records", tls_records),
    ("webauthn", webauthn),
];

/// The gateway's TLS record layer (`portcullis_core::tls`) on anything. The first byte picks the
/// version and how the rest is used: as raw bytes on the wire (headers, lengths, authentication),
/// or sealed by the peer as records of a chosen content type (so that alerts, post-handshake
/// messages and key updates with any content get past the AEAD), then possibly one byte flipped.
/// No panic; a record opens only when whole; plaintext lies inside its record; after the peer's
/// close_notify nothing more opens.
pub fn tls_records(data: &[u8]) {
    use portcullis_core::tls::{ContentType, Opened, Version, HEADER, MAX_PLAINTEXT};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let version = if pick & 1 == 0 { Version::Tls13 } else { Version::Tls12 };
    let (mut gateway, mut client) = portcullis_core::relay::sim::record_pair(version);
    let types = [
        ContentType::ApplicationData,
        ContentType::Alert,
        ContentType::Handshake,
        ContentType::ChangeCipherSpec,
    ];
    let mut wire = if pick >> 1 & 1 == 0 {
        rest.to_vec()
    } else {
        let mut out = Vec::new();
        for (i, chunk) in rest.chunks(MAX_PLAINTEXT / 4 + 1).enumerate() {
            let typ = types[(usize::from(pick >> 2) + i) % types.len()];
            client.seal_message(&mut out, typ, chunk).expect("seal");
        }
        if pick >> 4 != 0 && !out.is_empty() {
            let at = usize::from(pick >> 4) * 7 % out.len();
            out[at] ^= pick | 1;
        }
        out
    };
    let mut pos = 0;
    let mut closed = false;
    while pos < wire.len() {
        match gateway.open(&mut wire[pos..]) {
            Ok(Some((len, opened))) => {
                assert!(!closed, "a record opened after close_notify");
                assert!(len >= HEADER && pos + len <= wire.len(), "record of {len} at {pos}");
                if let Opened::Data(r) = &opened {
                    assert!(
                        r.start >= HEADER && r.end <= len && r.len() <= MAX_PLAINTEXT,
                        "{r:?} of {len}"
                    );
                }
                closed |= opened == Opened::Closed;
                pos += len;
                if gateway.key_update_due() {
                    let mut out = Vec::new();
                    gateway.seal_key_update(&mut out, false).expect("key update");
                }
            }
            Ok(None) => break,
            Err(_) => break,
        }
    }
}

/// The WebAuthn parsers (`portcullis_core::webauthn`) on anything: the first byte picks CBOR,
/// authenticator data, or a whole registration (client data and attestation object, split at
/// the second byte). No panic; what parses obeys its bounds.
pub fn webauthn(data: &[u8]) {
    use portcullis_core::webauthn as w;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    match pick % 3 {
        0 => {
            if let Ok((_, left)) = w::cbor(rest) {
                assert!(left.len() < rest.len(), "a CBOR item takes at least one byte");
            }
        }
        1 => {
            if let Ok(d) = w::auth_data(rest) {
                assert!(rest.len() >= 37);
                if let Some((id, _)) = d.credential {
                    assert!(!id.is_empty() && id.len() < 1024);
                }
            }
        }
        _ => {
            let Some((&cut, rest)) = rest.split_first() else { return };
            let (client, attestation) = rest.split_at(usize::from(cut).min(rest.len()));
            let origins = ["https://localhost".to_owned()];
            let expect = w::Expected {
                kind: "webauthn.create",
                challenge: "c",
                origins: &origins,
                rp_id: "localhost",
            };
            let _ = w::register(client, attestation, &expect);
        }
    }
}

/// The relay's promises under every interleaving the input picks (`portcullis_core::relay::sim`).
pub fn relay(data: &[u8]) {
    portcullis_core::relay::sim::run(&mut portcullis_core::relay::sim::FromBytes(data));
}

const LEEWAY: u64 = 30;
const NOW: [u64; 8] = [
    0,
    1_700_000_000,
    1_799_999_850,
    1_799_999_900,
    1_800_000_000,
    1_800_000_929,
    1_800_000_930,
    u64::MAX,
];
/// PKCS#8 of the RFC 8032 test 1 secret key (the token unit tests' key pair).
const PRIVATE_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
const PUBLIC_KEY: [u8; 32] = [
    0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72,
    0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a,
];
/// Small limits, so that the fuzzer reaches them.
const MAX_HEADER_BYTES: usize = 1024;
const MAX_HEADERS: usize = 12;
const CONFIG: &str = r#"
listen = "127.0.0.1:1"
[auth]
token_public_key = "unused.pem"
[limits]
max_header_bytes = 1024
max_headers = 12
[[target]]
name = "vm1"
address = "10.0.0.4:22"
protocol = "ssh"
[[target]]
name = "vm2"
address = "10.0.0.5:22"
protocol = "ssh"
[[target]]
name = "rdp1"
address = "10.0.0.6:3389"
protocol = "rdp"
[[target]]
name = "rdp2"
address = "10.0.0.6:3389"
protocol = "rdp"
[[user]]
name = "alice"
targets = ["vm1", "rdp1", "rdp2"]
[[user]]
name = "bob"
targets = ["vm2"]
"#;

/// Ids (`jti`) of the tokens that may open a tunnel: right user, target and policy.
const GOOD_TOKENS: [&str; 2] = ["t0", "t5"];

pub struct Fixture {
    pub policy: Policy,
    pub tokens: Vec<String>,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::parse(CONFIG, std::path::Path::new(".")).expect("fixed config");
        assert_eq!(
            (config.limits.max_header_bytes, config.limits.max_headers),
            (MAX_HEADER_BYTES, MAX_HEADERS)
        );
        let verifier = TokenVerifier::from_public_pem(pem::ed25519_public(&PUBLIC_KEY).as_bytes(), LEEWAY)
            .expect("fixed public key");
        let issuer = TokenIssuer::from_private_pem(PRIVATE_KEY.as_bytes()).expect("fixed private key");
        let specs = [
            ("alice", "vm1", 1_800_000_900),
            ("alice", "vm2", 1_800_000_900),
            ("mallory", "vm1", 1_800_000_900),
            ("alice", "gone", 1_800_000_900),
            ("alice", "vm1", 1_700_000_000),
            ("alice", "rdp1", 1_800_000_900),
        ];
        let tokens = specs
            .iter()
            .enumerate()
            .map(|(i, (sub, tgt, exp))| {
                let claims = Claims {
                    sub: sub.to_string(),
                    tgt: tgt.to_string(),
                    exp: *exp,
                    nbf: exp - 1000,
                    iat: None,
                    jti: format!("t{i}"),
                    iss: None,
                    aud: None,
                    scope: None,
                    once: false,
                    roles: Vec::new(),
                    lgn: None,
                };
                issuer.issue(&claims).expect("sign")
            })
            .collect();
        Fixture {
            policy: Policy::new(config, verifier, Default::default()),
            tokens,
        }
    })
}

/// The request with each `$0`..`$5` replaced by its token.
pub fn expand(raw: &[u8], tokens: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (raw[i], raw.get(i + 1)) {
            (b'$', Some(d @ b'0'..=b'5')) => {
                out.extend_from_slice(tokens[usize::from(d - b'0')].as_bytes());
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn same(a: &Decision, b: &Decision) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

pub fn gateway_request(data: &[u8]) {
    let fx = fixture();
    let (sel, raw) = match data.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, data),
    };
    let now = NOW[usize::from(sel & 7)];
    let buf = expand(raw, &fx.tokens);
    let decision = decide(&buf, &fx.policy, now);
    assert!(same(&decision, &decide(&buf, &fx.policy, now)), "not deterministic");
    check_decision(&buf, now, &decision);
    check_grants(raw, now);

    // Bytes after a whole head (WebSocket data, a body) never change the decision, and no prefix
    // of it decides anything.
    if let Ok(Some(head)) = http::parse_head(&buf, LIMITS) {
        assert!(
            same(&decision, &decide(&buf[..head.len], &fx.policy, now)),
            "decided by trailing bytes"
        );
        assert!(matches!(
            decide(&buf[..head.len - 1], &fx.policy, now),
            Decision::NeedMore
        ));
    }
    // The gateway decides on whatever it has read so far and the first answer is final: deciding
    // on a prefix gives either NeedMore or the same decision as the whole.
    let cut = buf.len() * usize::from(sel >> 3) / 32;
    let early = decide(&buf[..cut], &fx.policy, now);
    assert!(
        matches!(early, Decision::NeedMore) || same(&early, &decision),
        "prefix of {cut} bytes decided {early:?}, the whole {decision:?}"
    );
}

/// The kind of decision an input gets (`tunnel`, `web`, `rdp`, `need-more` or the status), so the
/// regression test can show that the seeds reach every kind.
pub fn describe(data: &[u8]) -> String {
    let fx = fixture();
    let (sel, raw) = data.split_first().map(|(s, r)| (*s, r)).unwrap_or((0, data));
    match decide(&expand(raw, &fx.tokens), &fx.policy, NOW[usize::from(sel & 7)]) {
        Decision::NeedMore => "need-more".into(),
        Decision::Respond(reply) => reply.status.to_string(),
        Decision::Tunnel { .. } => "tunnel".into(),
        Decision::Web { .. } => "web".into(),
        Decision::RdCleanPath { .. } => "rdp".into(),
        Decision::RdGateway { .. } => "rd-gateway".into(),
    }
}

const LIMITS: HeadLimits = HeadLimits {
    max_bytes: MAX_HEADER_BYTES,
    max_headers: MAX_HEADERS,
};

/// What any decision on `buf` at `now` must satisfy; panics on a violation.
pub fn check_decision(buf: &[u8], now: u64, decision: &Decision) {
    let fx = fixture();
    let head = http::parse_head(buf, LIMITS);
    match decision {
        Decision::NeedMore => {
            assert!(buf.len() < MAX_HEADER_BYTES, "NeedMore at {} bytes", buf.len());
            assert!(matches!(head, Ok(None)), "NeedMore on a whole head: {head:?}");
        }
        Decision::Respond(reply) => {
            const STATUSES: [u16; 11] = [200, 400, 401, 403, 404, 405, 411, 413, 426, 431, 505];
            let status = reply.status;
            assert!(STATUSES.contains(&status), "unexpected status {status}");
            if reply.json {
                serde_json::from_str::<serde_json::Value>(&reply.body).expect("a JSON body that parses");
            } else {
                assert!(reply.body.ends_with('\n'), "body {:?}", reply.body);
            }
            let reason = reply.denied.as_ref().map(|d| d.reason.as_str()).unwrap_or_default();
            assert!(reply.denied.is_none() || status >= 400, "denial with {status}");
            // Secrets are never echoed or logged: no token signature in the body or the audit reason,
            // and the audited path has no query string.
            for token in &fx.tokens {
                let signature = token.rsplit('.').next().unwrap_or_default();
                assert!(!reply.body.contains(signature), "token in the response body");
                assert!(!reason.contains(signature), "token in the audit reason");
            }
            if let Some(denied) = &reply.denied {
                assert!(
                    !denied.path.contains('?') && denied.path.len() <= 256,
                    "audited path {:?}",
                    denied.path
                );
            }
            if status == 200 {
                let head = head
                    .as_ref()
                    .expect("200 on a bad head")
                    .as_ref()
                    .expect("200 on a partial head");
                assert_eq!((head.method, head.path), ("GET", "/healthz"));
            }
        }
        Decision::Tunnel {
            grant,
            accept,
            head_len,
        } => {
            // Deny by default: only a valid token for this target, of a user whose policy lists it.
            let jti = grant.token_id.as_deref().expect("a tunnel without a token id");
            assert!(GOOD_TOKENS.contains(&jti), "tunnel with token {jti}");
            check_grant_follows_policy(grant);
            assert_eq!(grant.via, Via::Tunnel);
            let head = head.expect("tunnel on a bad head").expect("tunnel on a partial head");
            assert_eq!(*head_len, head.len);
            assert_eq!(head.path, format!("/v1/tunnel/{}", grant.target.name));
            let upgrade = http::websocket_upgrade(&head).expect("tunnel without a valid upgrade");
            assert_eq!(*accept, http::switching_protocols(upgrade.key, None));
            // The token names this target and is within its period at `now`.
            let token = head.bearer_token().expect("tunnel without a token");
            let claims = fx
                .policy
                .verifier
                .verify(&token, now)
                .expect("tunnel with a token that does not verify");
            assert_eq!(claims.tgt, grant.target.name, "token for another target");
            assert!(claims.exp.saturating_add(LEEWAY) > now, "expired token accepted");
            assert!(claims.nbf <= now.saturating_add(LEEWAY), "immature token accepted");
        }
        Decision::Web {
            route: web,
            head_len,
            body_len,
        } => {
            let head = head.expect("web on a bad head").expect("web on a partial head");
            assert_eq!(*head_len, head.len);
            assert!(*body_len <= MAX_BODY, "body of {body_len} bytes");
            // The one router agrees: this path is a web route, the same one.
            match route(head.method, head.path) {
                Ok(Route::Web(r)) => assert_eq!(r.map(str::to_owned), *web),
                other => panic!("web decision for {} routed {other:?}", head.path),
            }
        }
        Decision::RdCleanPath { accept, head_len } => {
            let head = head.expect("rdp on a bad head").expect("rdp on a partial head");
            assert_eq!(*head_len, head.len);
            assert!(
                head.path == "/v1/rdp" || head.path == "/jet/rdp",
                "rdp for {}",
                head.path
            );
            let upgrade = http::websocket_upgrade(&head).expect("rdp without a valid upgrade");
            assert_eq!(*accept, http::switching_protocols(upgrade.key, None));
        }
        Decision::RdGateway { channel, head_len } => {
            let head = head
                .expect("rd gateway on a bad head")
                .expect("rd gateway on a partial head");
            assert_eq!(*head_len, head.len);
            assert!(
                head.path.eq_ignore_ascii_case("/remoteDesktopGateway/"),
                "rd gateway for {}",
                head.path
            );
            // Only the PAA scheme (a token inside the tunnel) is ever taken.
            assert!(head
                .header("rdg-auth-scheme")
                .is_some_and(|s| s.trim().eq_ignore_ascii_case("paa")));
            match channel {
                portcullis_core::rdgateway::Channel::WebSocket { accept } => {
                    assert_eq!(head.method, "RDG_OUT_DATA");
                    let upgrade = http::upgrade_headers(&head).expect("rd gateway without a valid upgrade");
                    assert_eq!(*accept, http::switching_protocols(upgrade.key, None));
                }
                portcullis_core::rdgateway::Channel::Out { connection_id }
                | portcullis_core::rdgateway::Channel::In { connection_id, .. } => {
                    assert!(connection_id.len() <= portcullis_core::rdgateway::MAX_CONNECTION_ID);
                    assert!(connection_id
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b"{}-".contains(&b)));
                }
            }
        }
    }
}

/// A grant must follow from the policy: a user of it, a target it lists for that user, and a
/// route that carries the target's protocol.
fn check_grant_follows_policy(grant: &Grant) {
    let fx = fixture();
    if grant.user.starts_with(portcullis_core::policy::LINK_USER_PREFIX) {
        // A shared link's guest: no user policy, the browser routes only (the caller checks
        // the grant names the credential's one target).
        assert!(
            matches!(grant.via, Via::WebTerminal | Via::WebRdp),
            "a link guest granted {:?}",
            grant.via
        );
    } else {
        let user = fx
            .policy
            .user_of(&grant.user, &grant.roles)
            .expect("grant for a user without policy");
        assert!(
            user.targets.contains(&grant.target.name),
            "target not in the user's policy"
        );
    }
    let target = fx
        .policy
        .config
        .targets
        .get(&grant.target.name)
        .expect("grant for an unknown target");
    assert_eq!(target.address, grant.target.address);
    match grant.via {
        Via::WebTerminal => assert_eq!(grant.target.protocol, Protocol::Ssh, "terminal to a non-SSH target"),
        Via::WebRdp => assert_eq!(grant.target.protocol, Protocol::Rdp, "web RDP to a non-RDP target"),
        _ => {}
    }
}

/// The grant for credentials that are not tokens, from lines of the input: `destination`, `user`,
/// `bound target`. A web sign-in (bound or not) or a ticket asks for the destination over each
/// web route; a grant must follow from the policy, name the bound target when there is one, and
/// reach a target by address only when it is the bound one.
fn check_grants(raw: &[u8], now: u64) {
    let fx = fixture();
    let text = String::from_utf8_lossy(&raw[..raw.len().min(512)]);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let destination = lines.next().unwrap_or_default();
    let user = lines.next().unwrap_or_default();
    let bound = lines.next().filter(|b| !b.is_empty());
    // A fourth line names a role, as single sign-on would grant it.
    let roles: Vec<String> = lines
        .next()
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .into_iter()
        .collect();
    let credentials = [
        Credential::WebSession {
            user,
            only_target: None,
            roles: &[],
        },
        Credential::WebSession {
            user,
            only_target: bound,
            roles: &roles,
        },
        Credential::Ticket {
            user,
            target: bound.unwrap_or(destination),
            roles: &roles,
        },
    ];
    for credential in credentials {
        for via in [Via::WebTerminal, Via::WebRdp, Via::Tunnel] {
            for dest in [Destination::Name(destination), Destination::NameOrAddress(destination)] {
                let Ok(grant) = fx.policy.authorize(credential, dest, via, now) else {
                    continue;
                };
                check_grant_follows_policy(&grant);
                assert_eq!(grant.user, user);
                assert_eq!(grant.token_id, None, "a grant without a token has no token id");
                let bound_to = match credential {
                    Credential::WebSession { only_target, .. } => only_target,
                    Credential::Ticket { target, .. } => Some(target),
                    Credential::Token(_) => unreachable!(),
                };
                if let Some(b) = bound_to {
                    assert_eq!(grant.target.name, b, "grant beyond the credential's target");
                }
                if grant.user.starts_with(portcullis_core::policy::LINK_USER_PREFIX) {
                    assert!(bound_to.is_some(), "a link guest without its one target");
                }
                if grant.target.name != destination {
                    assert!(
                        matches!(dest, Destination::NameOrAddress(_)) && grant.target.address == destination,
                        "{destination:?} reached {}",
                        grant.target.name
                    );
                    assert_eq!(
                        bound_to,
                        Some(grant.target.name.as_str()),
                        "an address reached an unbound target"
                    );
                }
            }
        }
    }
}
