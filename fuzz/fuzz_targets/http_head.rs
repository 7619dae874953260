#![no_main]
//! Fuzz target `http_head`: the property check `checks::http_head` (see `fuzz/checks.rs` for the input layout).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one check of the shared file
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::http_head(data));
