use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

/// CBOR encoding for the tests (the gateway only reads CBOR).
fn head(major: u8, n: usize) -> Vec<u8> {
    match n {
        0..=23 => vec![(major << 5) | n as u8],
        24..=255 => vec![(major << 5) | 24, n as u8],
        _ => {
            let mut v = vec![(major << 5) | 25];
            v.extend((n as u16).to_be_bytes());
            v
        }
    }
}
fn bytes(b: &[u8]) -> Vec<u8> {
    [head(2, b.len()), b.to_vec()].concat()
}
fn text(s: &str) -> Vec<u8> {
    [head(3, s.len()), s.as_bytes().to_vec()].concat()
}
fn int(i: i64) -> Vec<u8> {
    if i >= 0 {
        head(0, i as usize)
    } else {
        head(1, (-1 - i) as usize)
    }
}
fn map(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut v = head(5, entries.len());
    for (k, val) in entries {
        v.extend(k);
        v.extend(val);
    }
    v
}

struct Authenticator {
    pair: EcdsaKeyPair,
    id: Vec<u8>,
    count: u32,
}

const RP: &str = "localhost";
const ORIGIN: &str = "https://localhost:8443";

impl Authenticator {
    fn new() -> Authenticator {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        Authenticator {
            pair,
            id: vec![7; 16],
            count: 0,
        }
    }

    fn auth_data(&self, rp: &str, flags: u8, with_credential: bool) -> Vec<u8> {
        let mut d = Sha256::digest(rp.as_bytes()).to_vec();
        d.push(flags | if with_credential { 0x40 } else { 0 });
        d.extend(self.count.to_be_bytes());
        if with_credential {
            d.extend([0u8; 16]);
            d.extend((self.id.len() as u16).to_be_bytes());
            d.extend(&self.id);
            let point = self.pair.public_key().as_ref();
            d.extend(map(&[
                (int(1), int(2)),
                (int(3), int(-7)),
                (int(-1), int(1)),
                (int(-2), bytes(&point[1..33])),
                (int(-3), bytes(&point[33..])),
            ]));
        }
        d
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        serde_json::json!({ "type": kind, "challenge": challenge, "origin": origin })
            .to_string()
            .into_bytes()
    }

    fn attestation(&self, rp: &str, flags: u8) -> Vec<u8> {
        map(&[
            (text("fmt"), text("none")),
            (text("attStmt"), map(&[])),
            (text("authData"), bytes(&self.auth_data(rp, flags, true))),
        ])
    }

    fn assert(&mut self, challenge: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        self.count += 1;
        let data = self.auth_data(RP, 0x05, false);
        let client = Self::client_data("webauthn.get", challenge, ORIGIN);
        let mut message = data.clone();
        message.extend(Sha256::digest(&client));
        let sig = self
            .pair
            .sign(&SystemRandom::new(), &message)
            .unwrap()
            .as_ref()
            .to_vec();
        (client, data, sig)
    }
}

fn expect<'a>(kind: &'a str, challenge: &'a str, origins: &'a [String]) -> Expected<'a> {
    Expected {
        kind,
        challenge,
        origins,
        rp_id: RP,
    }
}

#[test]
fn a_software_authenticator_registers_and_signs_in() {
    let origins = vec![ORIGIN.to_owned()];
    let challenge = URL_SAFE_NO_PAD.encode([1u8; 32]);
    let mut a = Authenticator::new();
    let client = Authenticator::client_data("webauthn.create", &challenge, ORIGIN);
    let (id, key, count) = register(
        &client,
        &a.attestation(RP, 0x05),
        &expect("webauthn.create", &challenge, &origins),
    )
    .unwrap();
    assert_eq!((id.clone(), count), (a.id.clone(), 0));
    let (alg, raw) = key.to_parts();
    assert_eq!(PublicKey::from_parts(alg, raw.to_vec()).unwrap(), key);

    let get = expect("webauthn.get", &challenge, &origins);
    let (client, data, sig) = a.assert(&challenge);
    assert_eq!(authenticate(&client, &data, &sig, &key, 0, &get), Ok(1));
    // The same assertion again: the counter did not move.
    assert_eq!(
        authenticate(&client, &data, &sig, &key, 1, &get),
        Err(WebauthnError::Counter)
    );
    // Another message under that signature.
    let (client2, data2, _) = a.assert(&challenge);
    assert_eq!(
        authenticate(&client2, &data2, &sig, &key, 1, &get),
        Err(WebauthnError::Signature)
    );
    // Another key.
    let other = Authenticator::new();
    let point = other.pair.public_key().as_ref().to_vec();
    let (client3, data3, sig3) = a.assert(&challenge);
    assert_eq!(
        authenticate(&client3, &data3, &sig3, &PublicKey::Es256(point), 0, &get),
        Err(WebauthnError::Signature)
    );
}

#[test]
fn the_wrong_ceremony_challenge_origin_or_party_is_refused() {
    let origins = vec![ORIGIN.to_owned()];
    let challenge = URL_SAFE_NO_PAD.encode([1u8; 32]);
    let a = Authenticator::new();
    let att = a.attestation(RP, 0x05);
    let create = expect("webauthn.create", &challenge, &origins);
    let client = |kind: &str, ch: &str, origin: &str| Authenticator::client_data(kind, ch, origin);
    assert_eq!(
        register(&client("webauthn.get", &challenge, ORIGIN), &att, &create),
        Err(WebauthnError::Type)
    );
    assert_eq!(
        register(&client("webauthn.create", "other", ORIGIN), &att, &create),
        Err(WebauthnError::Challenge)
    );
    assert!(matches!(
        register(
            &client("webauthn.create", &challenge, "https://evil.example"),
            &att,
            &create
        ),
        Err(WebauthnError::Origin(_))
    ));
    let good = client("webauthn.create", &challenge, ORIGIN);
    assert_eq!(
        register(&good, &a.attestation("evil.example", 0x05), &create),
        Err(WebauthnError::RpId)
    );
    assert_eq!(
        register(&good, &a.attestation(RP, 0x04), &create),
        Err(WebauthnError::UserPresence)
    );
    assert_eq!(register(b"not json", &att, &create), Err(WebauthnError::ClientData));
}

#[test]
fn hostile_cbor_is_refused_without_panicking() {
    // Nested arrays past the depth limit.
    let deep = [vec![0x81u8; 20], vec![0x00]].concat();
    assert_eq!(cbor(&deep).unwrap_err(), WebauthnError::Cbor);
    // A byte string claiming more than there is.
    assert_eq!(
        cbor(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
        WebauthnError::Cbor
    );
    // A map claiming a billion entries.
    assert_eq!(cbor(&[0xba, 0x40, 0, 0, 0]).unwrap_err(), WebauthnError::Cbor);
    // Indefinite length.
    assert_eq!(cbor(&[0x9f, 0xff]).unwrap_err(), WebauthnError::Cbor);
    assert_eq!(cbor(&[]).unwrap_err(), WebauthnError::Cbor);
    assert_eq!(auth_data(&[0; 36]).unwrap_err(), WebauthnError::AuthData);
    assert_eq!(auth_data(&vec![0; MAX_INPUT + 1]).unwrap_err(), WebauthnError::TooLarge);
    let mut short = vec![0u8; 37];
    short[32] = 0x41;
    assert_eq!(auth_data(&short).unwrap_err(), WebauthnError::AuthData);
    assert_eq!(cbor(&int(-8)).unwrap().0, Cbor::Int(-8));
}
