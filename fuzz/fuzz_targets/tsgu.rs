#![no_main]
//! Fuzz target `tsgu`: the property check `checks::tsgu` (see `fuzz/checks.rs`).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one check of the shared file
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::tsgu(data));
