#![no_main]
//! Fuzz target `chunked`: the property check `checks::chunked` (see `fuzz/checks.rs`).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one check of the shared file
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::chunked(data));
