//! The public listener's TLS, as testssl.sh sees it: TLS 1.2 and 1.3 only, AEAD ciphers only, no
//! named vulnerability (BREACH included: the page itself is never compressed). Findings about the
//! test's self-signed certificate are the certificate's, not the gateway's, and are ignored.

use portcullis_testkit::*;
use serde_json::Value;
use std::process::Command;

const TESTSSL: &str = "/usr/bin/testssl";

/// Findings that judge the certificate (self-signed here), not the TLS configuration.
fn about_the_certificate(id: &str) -> bool {
    id.starts_with("cert")
        || id.starts_with("intermediate_cert")
        || matches!(id, "DNS_CAArecord" | "OCSP_stapling" | "certificate_transparency")
}

#[test]
fn testssl_finds_only_modern_aead_tls_and_no_vulnerability() {
    assert!(
        std::path::Path::new(TESTSSL).exists(),
        "testssl.sh is not installed (scripts/test installs the Debian package testssl.sh)"
    );
    let gw = Gateway::builder().start();
    let json = gw.dir.path().join("testssl.json");
    let out = Command::new(TESTSSL)
        // Protocols, cipher categories, vulnerabilities: what this test judges (about 20 s;
        // the full run adds certificate and header checks and takes twice as long).
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "-p",
            "-s",
            "-U",
            "--jsonfile",
        ])
        .arg(&json)
        .arg(format!("127.0.0.1:{}", gw.port))
        .output()
        .expect("testssl");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no JSON ({e}); it said:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<Value> = serde_json::from_str(&text).unwrap();
    let finding = |id: &str| -> String {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("testssl reported nothing for {id}"))
            .to_owned()
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert_eq!(finding(old), "not offered", "{old}");
    }
    assert!(finding("TLS1_2").starts_with("offered"), "{}", finding("TLS1_2"));
    assert!(finding("TLS1_3").starts_with("offered"), "{}", finding("TLS1_3"));
    // Every cipher class but the strong AEAD ones: NULL, anonymous, export, low, 3DES/IDEA, and
    // "average" (CBC, no AEAD).
    for weak in [
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ] {
        assert_eq!(finding(weak), "not offered", "{weak}");
    }
    assert!(
        finding("cipherlist_STRONG").starts_with("offered"),
        "{}",
        finding("cipherlist_STRONG")
    );
    let problems: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("LOW" | "MEDIUM" | "HIGH" | "CRITICAL")))
        .filter(|f| !about_the_certificate(f["id"].as_str().unwrap_or("")))
        .map(|f| format!("{} {}: {}", f["id"], f["severity"], f["finding"]))
        .collect();
    assert!(problems.is_empty(), "testssl findings:\n{}", problems.join("\n"));
    // Named vulnerabilities, each checked and not found.
    for id in [
        "heartbleed",
        "CCS",
        "ticketbleed",
        "ROBOT",
        "secure_renego",
        "CRIME_TLS",
        "BREACH",
        "POODLE_SSL",
        "SWEET32",
        "FREAK",
        "DROWN",
        "LOGJAM",
        "BEAST",
        "LUCKY13",
        "RC4",
    ] {
        let f = findings
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("no {id} finding"));
        assert!(
            matches!(f["severity"].as_str(), Some("OK" | "INFO")),
            "{id}: {} {}",
            f["severity"],
            f["finding"]
        );
    }
}
