#![no_main]
//! Fuzz target `tls_records`: the gateway's TLS record layer on raw and sealed input,
//! `checks::tls_records`.

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)] // the regression test uses the rest of the file
#[path = "../core_checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::tls_records(data));
