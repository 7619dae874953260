//! Replays the seeds and saved regressions of the fuzz target `gateway_request` (the request path
//! after TLS, `server::request::decide`) through its property check, so a plain `cargo test` guards
//! what fuzzing found. The codec targets are replayed by `protocols/tests/fuzz_regressions.rs`.

#[path = "../../fuzz/gateway_checks.rs"]
mod checks;
#[path = "../../fuzz/replay.rs"]
mod replay;

use std::fs;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of `fuzz/<kind>/<target>/` that `keep` accepts, for each target checked here.
fn inputs(kind: &str, keep: impl Fn(&str) -> bool) -> Vec<(checks::Check, PathBuf)> {
    let mut out = Vec::new();
    for (target, check) in checks::TARGETS {
        let dir = fuzz_dir().join(kind).join(target);
        for file in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if file.is_file() && keep(&name) {
                out.push((*check, file));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn replay(inputs: &[(checks::Check, PathBuf)]) {
    replay::replay(inputs.iter().cloned());
}

#[test]
fn seeds_pass() {
    let seeds = inputs("corpus", |name| name.starts_with("seed-"));
    assert!(seeds.len() >= 10, "expected the committed seeds, found {}", seeds.len());
    replay(&seeds);
}

#[test]
fn regressions_pass() {
    replay(&inputs("regressions", |name| !name.starts_with('.')));
}

#[test]
fn empty_and_short_inputs_pass() {
    for len in 0..16 {
        checks::gateway_request(&vec![0u8; len]);
        checks::gateway_request(&vec![b'$'; len]);
    }
}

#[test]
fn fuzz_target_file_runs_the_check() {
    let file = fuzz_dir().join("fuzz_targets/gateway_request.rs");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert!(text.contains("checks::gateway_request("));
}

/// The seeds are only useful if they reach every kind of decision.
#[test]
fn seeds_reach_every_decision() {
    let kinds: Vec<String> = inputs("corpus", |name| name.starts_with("seed-"))
        .iter()
        .map(|(_, path)| checks::describe(&fs::read(path).unwrap()))
        .collect();
    for want in ["tunnel", "web", "rdp", "need-more", "200", "400", "401", "403", "404"] {
        assert!(kinds.iter().any(|k| k == want), "no seed reaches {want}: {kinds:?}");
    }
}

/// The check can fail: a tunnel granted to a token the policy refuses is reported.
#[test]
#[should_panic(expected = "tunnel with token t1")]
fn forged_tunnel_is_caught() {
    use portcullis::server::request::{decide, Decision};
    let fx = checks::fixture();
    let now = 1_800_000_000;
    let request = b"GET /v1/tunnel/vm1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer $0\r\n\r\n";
    let buf = checks::expand(request, &fx.tokens);
    let Decision::Tunnel {
        target,
        mut claims,
        accept,
        head_len,
    } = decide(&buf, &fx.policy, now)
    else {
        panic!("the valid token should open a tunnel");
    };
    claims.jti = "t1".into();
    checks::check_decision(
        &buf,
        now,
        &Decision::Tunnel {
            target,
            claims,
            accept,
            head_len,
        },
    );
}
