//! Replays fuzz inputs through their property checks for the plain regression tests
//! (`protocols/tests/fuzz_regressions.rs`, `core/tests/fuzz_regressions.rs`, both include this
//! file with `#[path]`), collecting every failure before reporting.

use std::path::PathBuf;
use std::{fs, panic};

/// Runs each input through its check; fails listing every input that panicked, with the message.
pub fn replay(inputs: impl IntoIterator<Item = (fn(&[u8]), PathBuf)>) {
    let mut failures = Vec::new();
    for (check, path) in inputs {
        let data = fs::read(&path).unwrap();
        if let Err(panic) = panic::catch_unwind(|| check(&data)) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} input(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
