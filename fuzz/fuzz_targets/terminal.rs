#![no_main]
//! Fuzz target `terminal`: the property check `checks::terminal` (see `fuzz/checks.rs` for the input layout).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one check of the shared file
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::terminal(data));
