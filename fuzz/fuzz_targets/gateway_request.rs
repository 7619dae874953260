#![no_main]
//! Fuzz target `gateway_request`: the engine's request path after TLS, `checks::gateway_request`
//! (see `fuzz/gateway_checks.rs` for the input layout).

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the regression test uses the rest of the file
#[path = "../gateway_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::gateway_request(data));
