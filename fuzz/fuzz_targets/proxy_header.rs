#![no_main]
//! Fuzz target `proxy_header`: the property check `checks::proxy_header` (see `fuzz/checks.rs`).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one check of the shared file
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::proxy_header(data));
