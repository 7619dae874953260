#![no_main]
//! Fuzz target `gateway_request`: the request path after TLS and the policy's grants,
//! `checks::gateway_request` (see `fuzz/core_checks.rs` for the input layout).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the regression test uses the rest of the file
#[path = "../core_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::gateway_request(data));
