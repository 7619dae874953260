//! Replays the seeds and saved regressions of the fuzz targets of the core (`gateway_request`: the
//! request path after TLS and the policy's grants; `relay`: the relay's simulation; `tls_records`:
//! the record layer) through their
//! property checks, so a plain `cargo test -p portcullis-core` guards what fuzzing found. The
//! codec targets are replayed by `protocols/tests/fuzz_regressions.rs`.

#[path = "../../fuzz/core_checks.rs"]
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
    assert!(seeds.len() >= 14, "expected the committed seeds, found {}", seeds.len());
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
        checks::relay(&vec![0u8; len]);
        checks::relay(&vec![0xffu8; len]);
        checks::tls_records(&vec![0u8; len]);
        checks::tls_records(&vec![0xffu8; len]);
        checks::webauthn(&vec![0u8; len]);
        checks::webauthn(&vec![0xffu8; len]);
    }
}

#[test]
fn fuzz_target_file_runs_the_check() {
    for (target, _) in checks::TARGETS {
        let file = fuzz_dir().join(format!("fuzz_targets/{target}.rs"));
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(&format!("checks::{target}(")), "{target}");
    }
}

/// The seeds are only useful if they reach every kind of decision.
#[test]
fn seeds_reach_every_decision() {
    let kinds: Vec<String> = inputs("corpus", |name| name.starts_with("seed-"))
        .iter()
        .filter(|(_, path)| path.parent().is_some_and(|d| d.ends_with("gateway_request")))
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
    use portcullis_core::request::{decide, Decision};
    let fx = checks::fixture();
    let now = 1_800_000_000;
    let request = b"GET /v1/tunnel/vm1 HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer $0\r\n\r\n";
    let buf = checks::expand(request, &fx.tokens);
    let Decision::Tunnel {
        mut grant,
        accept,
        head_len,
    } = decide(&buf, &fx.policy, now)
    else {
        panic!("the valid token should open a tunnel");
    };
    grant.token_id = Some("t1".into());
    checks::check_decision(
        &buf,
        now,
        &Decision::Tunnel {
            grant,
            accept,
            head_len,
        },
    );
}

/// The relay seeds are only useful if they reach every way a session ends. (That the relay check
/// can fail is shown by the core's unit tests, which break the relay on purpose.)
#[test]
fn relay_seeds_reach_every_ending() {
    let mut ends = std::collections::BTreeSet::new();
    for (_, path) in inputs("corpus", |name| name.starts_with("seed-")) {
        if path.parent().is_some_and(|d| d.ends_with("relay")) {
            let outcome = portcullis_core::relay::sim::run(&mut portcullis_core::relay::sim::FromBytes(
                &fs::read(&path).unwrap(),
            ));
            ends.insert(
                format!("{:?}", outcome.end)
                    .split('(')
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    for want in ["PeerClosed", "RawClosed", "PeerGone", "Protocol", "Local"] {
        assert!(ends.contains(want), "no relay seed ends {want}: {ends:?}");
    }
}
