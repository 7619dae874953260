#![no_main]
//! Fuzz target `relay`: the relay state machine under every interleaving of reads, write
//! readiness and partial writes the input picks, `checks::relay` (see
//! `portcullis_core::relay::sim` for the promises checked).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the regression test uses the rest of the file
#[path = "../core_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::relay(data));
