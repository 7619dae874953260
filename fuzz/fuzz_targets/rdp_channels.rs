#![no_main]
//! Fuzz target `rdp_channels`: the property check `checks::rdp_channels` (see `fuzz/checks.rs` for the input layout).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // each target uses one check of the shared file
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::rdp_channels(data));
