use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

const NOW: u64 = 1_800_000_000;
const ISSUER: &str = "https://idp.example.com";

/// An EC P-256 key: (PKCS#8 DER, its JWK with `kid`).
fn ec_key(kid: &str) -> (Vec<u8>, Value) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    (pkcs8.as_ref().to_vec(), jwk)
}

fn ed_key(kid: &str) -> (Vec<u8>, Value) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    });
    (pkcs8.as_ref().to_vec(), jwk)
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": "portcullis", "sub": "u-1", "exp": NOW + 300, "iat": NOW - 5,
        "nonce": "n-0123", "preferred_username": "alice", "groups": ["ops", "dba"],
    })
}

fn sign_ec(der: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(der)).unwrap()
}

fn expected() -> Expected<'static> {
    Expected {
        issuer: ISSUER,
        client_id: "portcullis",
        nonce: "n-0123",
        now: NOW,
        leeway: 30,
    }
}

fn set(keys: &[&Value]) -> JwkSet {
    serde_json::from_value(json!({ "keys": keys })).unwrap()
}

#[test]
fn a_valid_id_token_is_accepted_and_names_the_user() {
    let (der, jwk) = ec_key("k1");
    let (_, other) = ec_key("k2");
    let token = sign_ec(&der, "k1", &claims());
    let got = validate_id_token(&token, &set(&[&other, &jwk]), &expected()).unwrap();
    assert_eq!(got["sub"], "u-1");
    let provider = crate::config::OidcProvider {
        id: "corp".into(),
        name: "Corp".into(),
        issuer: ISSUER.into(),
        client_id: "portcullis".into(),
        client_secret_file: "s".into(),
        redirect_uri: "https://gw/api/oidc/callback".into(),
        scopes: vec![],
        user_claim: "preferred_username".into(),
        groups_claim: "groups".into(),
        namespace: true,
        ca: None,
    };
    assert_eq!(
        identity(&got, &provider).unwrap(),
        ("corp:alice".into(), vec!["corp:ops".into(), "corp:dba".into()])
    );
    let mapped = crate::config::OidcProvider {
        namespace: false,
        user_claim: "email".into(),
        ..provider.clone()
    };
    let mut with_email = got.clone();
    with_email.insert("email".into(), json!("alice@example.com"));
    assert!(
        identity(&with_email, &mapped).is_err(),
        "an unverified email names nobody"
    );
    with_email.insert("email_verified".into(), json!(true));
    assert_eq!(identity(&with_email, &mapped).unwrap().0, "alice@example.com");
    let mut nameless = got.clone();
    nameless.remove("preferred_username");
    assert!(identity(&nameless, &provider).is_err());
}

#[test]
fn what_a_forger_or_a_confused_provider_sends_is_refused() {
    let (der, jwk) = ec_key("k1");
    let keys = set(&[&jwk]);
    let check = |token: &str| validate_id_token(token, &keys, &expected()).unwrap_err();
    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        sign_ec(&der, "k1", &c)
    };
    assert_eq!(
        check(&with("iss", json!("https://evil.example.com"))),
        IdTokenError::WrongIssuer
    );
    assert_eq!(
        check(&with("aud", json!("another-client"))),
        IdTokenError::WrongAudience
    );
    // Several audiences without this client as the authorized party.
    assert_eq!(
        check(&with("aud", json!(["portcullis", "other"]))),
        IdTokenError::WrongAudience
    );
    let mut both = claims();
    both["aud"] = json!(["portcullis", "other"]);
    both["azp"] = json!("portcullis");
    assert!(validate_id_token(&sign_ec(&der, "k1", &both), &keys, &expected()).is_ok());
    assert_eq!(check(&with("exp", json!(NOW - 31))), IdTokenError::Expired);
    assert_eq!(check(&with("iat", json!(NOW + 120))), IdTokenError::NotYetValid);
    assert_eq!(check(&with("nonce", json!("n-other"))), IdTokenError::Nonce);
    let mut no_nonce = claims();
    no_nonce.as_object_mut().unwrap().remove("nonce");
    assert_eq!(check(&sign_ec(&der, "k1", &no_nonce)), IdTokenError::Nonce);
    // Signed by another key under this key's id.
    let (other_der, _) = ec_key("k1");
    assert_eq!(check(&sign_ec(&other_der, "k1", &claims())), IdTokenError::BadSignature);
    // An unknown key id.
    assert_eq!(check(&sign_ec(&der, "k9", &claims())), IdTokenError::UnknownKey);
    // `alg: none`.
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#));
    assert!(matches!(
        check(&none),
        IdTokenError::Malformed | IdTokenError::Algorithm(_)
    ));
    // HS256 keyed with the public key (the algorithm confusion attack).
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&x)).unwrap();
    assert!(matches!(check(&hs), IdTokenError::Algorithm(_)));
    // EdDSA under the id of a key meant for ES256.
    let (ed_der, _) = ed_key("k1");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let ed = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_ed_der(&ed_der)).unwrap();
    assert!(matches!(check(&ed), IdTokenError::Algorithm(_)));
    assert_eq!(check("not.a.token"), IdTokenError::Malformed);
    assert_eq!(check(&"a".repeat(MAX_ID_TOKEN_LEN + 1)), IdTokenError::Malformed);
}

#[test]
fn eddsa_providers_work_too() {
    let (der, jwk) = ed_key("e1");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("e1".into());
    let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_ed_der(&der)).unwrap();
    assert!(validate_id_token(&token, &set(&[&jwk]), &expected()).is_ok());
}

#[test]
fn pkce_s256_matches_rfc_7636() {
    // RFC 7636 appendix B.
    assert_eq!(
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}
