#![no_main]
//! Fuzz target `webauthn`: the WebAuthn parsers (CBOR, authenticator data, registration),
//! `checks::webauthn`.

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the regression test uses the rest of the file
#[path = "../core_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::webauthn(data));
