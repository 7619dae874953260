//! WebAuthn second factor (issue #15) in a real browser: Chromium's virtual authenticator (CDP)
//! on https://localhost, against the real gateway with `[web] rp_id = "localhost"`; the factor is
//! stored by the gateway and checked on the next sign-in (ES256 assertions, counter). The
//! ceremonies' refusals (origin, challenge, relying party, signature, counter, hostile CBOR) are
//! unit tests of `portcullis_core::webauthn` with a software authenticator, and fuzzed.

use portcullis_testkit::browser::{artifacts, run_script};
use portcullis_testkit::Gateway;
use serde_json::json;
use std::time::Duration;

const PASSWORD: &str = "passkey test password";

#[test]
fn a_passkey_is_enrolled_and_asked_for_in_chromium() {
    let gw = Gateway::builder()
        .password(PASSWORD)
        .target("vm1", "127.0.0.1:9", "tcp")
        .user("alice", &["vm1"], "")
        .toml("[web]\nrp_id = \"localhost\"\n")
        .start();
    let url = format!("https://localhost:{}", gw.addr().port());
    let config = json!({ "url": url, "user": "alice", "password": PASSWORD, "artifacts": artifacts("passkey") });
    let run = run_script("passkey.mjs", config, Duration::from_secs(90), |s| {
        panic!("unexpected step {s}")
    });
    if !run.ok() {
        eprintln!("gateway log:\n{}", gw.log());
    }
    run.assert_ok();
    let audit = std::fs::read_to_string(gw.config_path().with_file_name("audit.jsonl")).unwrap();
    assert!(audit.contains("\"method\":\"password+webauthn\""), "{audit}");
    assert!(audit.contains("\"action\":\"factor_enrolled\""), "{audit}");
}
