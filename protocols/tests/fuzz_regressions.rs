//! Replays the fuzz seeds (`fuzz/corpus/<target>/seed-*`) and every saved crash or regression input
//! (`fuzz/regressions/<target>/*`) through the same property checks the cargo-fuzz targets run, so
//! a plain `cargo test` guards what fuzzing found without cargo-fuzz or a nightly toolchain.

#[path = "../../fuzz/checks.rs"]
mod checks;
#[path = "../../fuzz/replay.rs"]
mod replay;

use std::fs;
use std::path::{Path, PathBuf};

/// Targets whose checks need the core crate (`fuzz/core_checks.rs`): replayed by
/// `core/tests/fuzz_regressions.rs` instead.
const CORE_TARGETS: &[&str] = &["gateway_request", "relay", "tls_records", "webauthn"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files to replay for one kind of directory (`corpus` or `regressions`), per target name.
fn inputs(kind: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let root = fuzz_dir().join(kind);
    let mut out = Vec::new();
    for dir in fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        if CORE_TARGETS.contains(&target.as_str()) {
            continue;
        }
        assert!(
            checks::check_for(&target).is_some(),
            "{} names no fuzz target (known: {:?})",
            dir.display(),
            checks::TARGETS.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        for file in fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if file.is_file() && keep(&name) {
                out.push((target.clone(), file));
            }
        }
    }
    out.sort();
    out
}

/// Runs each input through its target's check.
fn replay(inputs: &[(String, PathBuf)]) {
    replay::replay(
        inputs
            .iter()
            .map(|(target, path)| (checks::check_for(target).unwrap() as fn(&[u8]), path.clone())),
    );
}

#[test]
fn seeds_pass_every_check() {
    let seeds = inputs("corpus", |name| name.starts_with("seed-"));
    for (target, _) in checks::TARGETS {
        assert!(seeds.iter().any(|(t, _)| t == target), "no seed for target {target}");
    }
    replay(&seeds);
}

#[test]
fn regressions_pass_every_check() {
    let regressions = inputs("regressions", |name| !name.starts_with('.'));
    for (target, _) in checks::TARGETS {
        assert!(
            fuzz_dir().join("regressions").join(target).is_dir(),
            "missing fuzz/regressions/{target}/"
        );
    }
    replay(&regressions);
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (target, _) in checks::TARGETS {
        let file = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("checks::{target}(")),
            "{} does not run its check",
            file.display()
        );
    }
}

#[test]
fn empty_and_short_inputs_pass() {
    for (_, check) in checks::TARGETS {
        for len in 0..16 {
            check(&vec![0u8; len]);
            check(&vec![0xffu8; len]);
        }
    }
}

// The checks must be able to fail: their contract assertions panic on violations.

#[test]
#[should_panic(expected = "no progress")]
fn progress_violation_panics() {
    checks::assert_progress(5, 0, false);
}

#[test]
#[should_panic(expected = "consumed 6 of 5")]
fn over_consumption_panics() {
    checks::assert_progress(5, 6, true);
}

#[test]
#[should_panic(expected = "outside consumed")]
fn range_violation_panics() {
    checks::assert_range_within(&(2..7), 5, 9);
}
