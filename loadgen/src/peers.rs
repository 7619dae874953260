//! Upgrade requests of peers whose clients send something new with every session, so that the load
//! generator can drive them with the same scenarios as Portcullis:
//!
//! - **Devolutions Gateway** (`--devolutions-key`, `--devolutions-dst`): TCP forwarding at
//!   `GET <PREFIX>/jet/fwd/tcp/<jet-aid>?token=<JWT>`. Each association token is accepted once (the
//!   gateway keeps its `jti` and refuses a second use of a non-RDP token), so every session gets a
//!   fresh one: an RS256 JWT signed with the provisioner's RSA private key, header
//!   `{"alg":"RS256","typ":"JWT","cty":"ASSOCIATION"}` and the claims `tokengen sign forward
//!   --dst-hst DST` writes (`tools/tokengen` in the gateway's repository): `dst_hst`, `exp`, `nbf`,
//!   `jti` (a fresh UUID), `jet_aid` (a fresh UUID, which must be the one in the path), `jet_ap`
//!   `"unknown"`, `jet_cm` `"fwd"`, `jet_rec` `"none"`.
//! - **wstunnel** (`--wstunnel-dst`): the client's upgrade, as `wstunnel client -L tcp://…:DST`
//!   sends it (wstunnel 10.x, `tunnel/transport/websocket.rs`): `GET /v1/events` (`/<prefix>/events`
//!   with the URL's prefix in place of the default `v1`), `Sec-WebSocket-Protocol: v1,
//!   authorization.bearer.<JWT>`, the JWT being HS256 with a key the client picks at random (the
//!   server decodes it without checking the signature) over `{"id": <fresh UUID>, "p": {"Tcp":
//!   {"proxy_protocol": false}}, "r": HOST, "rp": PORT}`: the tunnel's destination.
//!
//! Tokens are made before the session's TCP connect, so no step time includes them; they are part
//! of the load generator's own CPU (an RSA-2048 signature is roughly a millisecond).

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, signature};
use std::time::{Duration, SystemTime};

/// The path and headers of one session's upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// A peer whose upgrade request changes with every session.
pub enum Peer {
    Devolutions(Devolutions),
    Wstunnel(Wstunnel),
}

impl Peer {
    /// A fresh request for one session; `prefix` is the URL's path prefix ("" for none).
    pub fn session_request(&self, prefix: &str) -> anyhow::Result<SessionRequest> {
        match self {
            Peer::Devolutions(d) => {
                let jet_aid = uuid_v4()?;
                let token = d.token(&jet_aid)?;
                Ok(SessionRequest {
                    path: format!("{prefix}/jet/fwd/tcp/{jet_aid}?token={token}"),
                    headers: Vec::new(),
                })
            }
            Peer::Wstunnel(w) => Ok(SessionRequest {
                path: Wstunnel::path(prefix),
                headers: vec![(
                    "Sec-WebSocket-Protocol".to_owned(),
                    format!("v1, authorization.bearer.{}", w.token(&uuid_v4()?)),
                )],
            }),
        }
    }

    /// The path for reports (token and ids left out).
    pub fn display_path(&self, prefix: &str) -> String {
        match self {
            Peer::Devolutions(_) => format!("{prefix}/jet/fwd/tcp/<jet-aid>?token=…"),
            Peer::Wstunnel(_) => Wstunnel::path(prefix),
        }
    }
}

/// A random (version 4) UUID in its usual text form.
pub fn uuid_v4() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow!("no random numbers from the system"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The DER inside the first PEM block of `pem`, and its label (`PRIVATE KEY`, `RSA PRIVATE KEY`, …).
fn pem_block(pem: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ").ok_or_else(|| anyhow!("no PEM block"))?;
    let rest = &pem[start + "-----BEGIN ".len()..];
    let (label, rest) = rest.split_once("-----").ok_or_else(|| anyhow!("bad PEM header"))?;
    let end = format!("-----END {label}-----");
    let body = &rest[..rest.find(&end).ok_or_else(|| anyhow!("no {end}"))?];
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| anyhow!("bad base64 in the PEM block: {e}"))?;
    Ok((label.to_owned(), der))
}

/// Mints Devolutions Gateway association tokens for TCP forwarding (`jet_cm` `fwd`).
pub struct Devolutions {
    key: signature::RsaKeyPair,
    rng: SystemRandom,
    dst_hst: String,
    ttl: Duration,
}

impl Devolutions {
    /// `pem`: the provisioner's RSA private key, PKCS#8 (`PRIVATE KEY`, as `openssl genpkey`
    /// writes it) or PKCS#1 (`RSA PRIVATE KEY`), 2048 bits or more. `dst_hst`: the target,
    /// `HOST:PORT` (or `tcp://HOST:PORT`), as `tokengen forward --dst-hst` takes it.
    pub fn new(pem: &[u8], dst_hst: &str, ttl: Duration) -> anyhow::Result<Devolutions> {
        let pem = std::str::from_utf8(pem).context("the key file is not PEM text")?;
        let (label, der) = pem_block(pem)?;
        let key = match label.as_str() {
            "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(&der),
            other => bail!("expected an RSA private key (PRIVATE KEY or RSA PRIVATE KEY), found {other}"),
        }
        .map_err(|e| anyhow!("not a usable RSA private key (2048 bits or more): {e}"))?;
        if dst_hst.is_empty() || dst_hst.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') {
            bail!("--devolutions-dst {dst_hst:?} is not HOST:PORT");
        }
        Ok(Devolutions {
            key,
            rng: SystemRandom::new(),
            dst_hst: dst_hst.to_owned(),
            ttl,
        })
    }

    /// A signed association token for session `jet_aid` (a UUID), valid from now for the TTL.
    pub fn token(&self, jet_aid: &str) -> anyhow::Result<String> {
        let nbf = unix_now();
        let claims = serde_json::json!({
            "dst_hst": self.dst_hst,
            "exp": nbf + self.ttl.as_secs() as i64,
            "jet_aid": jet_aid,
            "jet_ap": "unknown",
            "jet_cm": "fwd",
            "jet_rec": "none",
            "jti": uuid_v4()?,
            "nbf": nbf,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","cty":"ASSOCIATION"}"#),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| anyhow!("RSA signing failed"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// Makes wstunnel's tunnel descriptions (the JWT of its upgrade request) for a TCP destination.
pub struct Wstunnel {
    host: String,
    port: u16,
    key: hmac::Key,
}

impl Wstunnel {
    /// `dst`: `HOST:PORT` (`[V6]:PORT`), the address the server connects to; it must be allowed
    /// by the server's `--restrict-to`.
    pub fn new(dst: &str) -> anyhow::Result<Wstunnel> {
        let (host, port) = dst
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("--wstunnel-dst {dst:?} is not HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| anyhow!("--wstunnel-dst {dst:?}: bad port"))?;
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control() || c == '"') {
            bail!("--wstunnel-dst {dst:?} is not HOST:PORT");
        }
        // The client's key is random and never checked by the server, as in wstunnel's own client.
        let rng = SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).map_err(|_| anyhow!("no random numbers"))?;
        Ok(Wstunnel {
            host: host.to_owned(),
            port,
            key,
        })
    }

    /// `/<prefix>/events`, wstunnel's default prefix being `v1`.
    fn path(prefix: &str) -> String {
        if prefix.is_empty() {
            "/v1/events".to_owned()
        } else {
            format!("{prefix}/events")
        }
    }

    /// The tunnel's JWT with request id `id`.
    pub fn token(&self, id: &str) -> String {
        let claims = serde_json::json!({
            "id": id,
            "p": {"Tcp": {"proxy_protocol": false}},
            "r": self.host,
            "rp": self.port,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn part(jwt: &str, i: usize) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn uuids_are_v4() {
        let u = uuid_v4().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(u, uuid_v4().unwrap());
    }

    #[test]
    fn wstunnel_request() {
        let w = Peer::Wstunnel(Wstunnel::new("127.0.0.1:9000").unwrap());
        let r = w.session_request("").unwrap();
        assert_eq!(r.path, "/v1/events");
        let (name, value) = &r.headers[0];
        assert_eq!(name, "Sec-WebSocket-Protocol");
        let jwt = value.strip_prefix("v1, authorization.bearer.").unwrap();
        assert_eq!(part(jwt, 0)["alg"], "HS256");
        let c = part(jwt, 1);
        assert_eq!(c["p"], serde_json::json!({"Tcp": {"proxy_protocol": false}}));
        assert_eq!((c["r"].as_str(), c["rp"].as_u64()), (Some("127.0.0.1"), Some(9000)));
        assert_eq!(w.session_request("/secret").unwrap().path, "/secret/events");
        assert!(Wstunnel::new("127.0.0.1").is_err());
        assert!(Wstunnel::new("127.0.0.1:0").is_err());
    }

    /// With an RSA key from openssl (skipped where there is none): the token verifies with the
    /// public key, and its header and claims are tokengen's.
    #[test]
    fn devolutions_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("provisioner.key");
        let made = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key)
            .stderr(std::process::Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("openssl not available: skipped");
            return;
        }
        let d = Devolutions::new(
            &std::fs::read(&key).unwrap(),
            "127.0.0.1:9000",
            Duration::from_secs(900),
        )
        .unwrap();
        let peer = Peer::Devolutions(d);
        let r = peer.session_request("/gw").unwrap();
        let rest = r.path.strip_prefix("/gw/jet/fwd/tcp/").unwrap();
        let (aid, token) = rest.split_once("?token=").unwrap();
        assert!(r.headers.is_empty());
        assert_eq!(
            part(token, 0),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "cty": "ASSOCIATION"})
        );
        let c = part(token, 1);
        assert_eq!(c["jet_aid"], aid, "the path's jet-aid is the token's");
        assert_eq!(
            (c["jet_cm"].as_str(), c["jet_ap"].as_str()),
            (Some("fwd"), Some("unknown"))
        );
        assert_eq!(
            (c["jet_rec"].as_str(), c["dst_hst"].as_str()),
            (Some("none"), Some("127.0.0.1:9000"))
        );
        assert_eq!(c["exp"].as_i64().unwrap() - c["nbf"].as_i64().unwrap(), 900);
        assert_ne!(c["jti"], c["jet_aid"]);
        let Peer::Devolutions(d) = &peer else { unreachable!() };
        let (input, sig) = token.rsplit_once('.').unwrap();
        signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, d.key.public().as_ref())
            .verify(input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("the signature verifies");
        let other = peer.session_request("").unwrap();
        assert_ne!(other.path, r.path, "a fresh token and jet-aid per session");
    }

    #[test]
    fn pem_blocks() {
        let pem = "junk\n-----BEGIN PRIVATE KEY-----\nAAEC\nAw==\n-----END PRIVATE KEY-----\n";
        assert_eq!(pem_block(pem).unwrap(), ("PRIVATE KEY".to_owned(), vec![0, 1, 2, 3]));
        assert!(pem_block("-----BEGIN X-----\nAA==\n").is_err());
        let e = Devolutions::new(
            b"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n",
            "h:1",
            Duration::from_secs(60),
        );
        assert!(e.is_err());
    }
}
