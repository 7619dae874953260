//! TLS settings for both ends: the gateway's server config and the CLI client's; the server's
//! handshake (`accept`) and the stream every route reads and writes after it (`stream`).

pub mod accept;
#[cfg(test)]
mod interop;
pub mod stream;
pub mod tickets;

use crate::error::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// The gateway's suites: AES-128-GCM first, then AES-256-GCM, then ChaCha20-Poly1305 (TLS 1.3
/// before 1.2 within each). Every byte of a session is sealed or opened once by the gateway, and
/// AES-128 (10 rounds against 14, SHA-256 in the key schedule) is the cheaper of two equally
/// sound choices. Clients without AES instructions would prefer ChaCha20; bastion clients are
/// desktops and servers that have them.
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = provider::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", s.suite());
        if name.contains("AES_128_GCM") {
            0
        } else if name.contains("AES_256_GCM") {
            1
        } else {
            2
        }
    };
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

/// The server's certificate chain and key, loaded or generated.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate, `AA:BB:…`.
    pub fingerprint: String,
    pub self_signed: bool,
}

impl Identity {
    pub fn load(cert: &Path, key: &Path) -> Result<Identity> {
        let pem = std::fs::read(cert).map_err(|e| Error::file("cannot read certificate", cert, e))?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("bad certificate PEM in {}: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(Error::Tls(format!("no certificate in {}", cert.display())));
        }
        let key_pem = std::fs::read(key).map_err(|e| Error::file("cannot read key", key, e))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| Error::Tls(format!("bad private key PEM in {}: {e}", key.display())))?;
        Ok(Identity {
            fingerprint: fingerprint(&chain[0]),
            chain,
            key,
            self_signed: false,
        })
    }

    /// A fresh self-signed certificate for `localhost`, `127.0.0.1`, `::1` and `extra` names.
    pub fn self_signed(extra: &[String]) -> Result<Identity> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        names.extend(extra.iter().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>());
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| Error::Tls(format!("cannot generate a self-signed certificate: {e}")))?;
        let der = ck.cert.der().clone();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Identity {
            fingerprint: fingerprint(&der),
            chain: vec![der],
            key,
            self_signed: true,
        })
    }

    /// The gateway's TLS settings; `tickets` seals session tickets (the fleet's keys).
    pub fn server_config(&self, tickets: Arc<dyn rustls::server::ProducesTickets>) -> Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(server_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(format!("certificate and key do not match: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Our order, not the client's: rustls clients put AES-256 first (browsers already AES-128).
        config.ignore_client_order = true;
        // After the handshake the record layer is ours (`portcullis_core::tls`): rustls hands over
        // its traffic secrets and keeps the key schedule.
        config.enable_secret_extraction = true;
        // Session tickets, so that a client reconnecting skips the full handshake, on any node of
        // the fleet: sealed with keys rotated every 6 hours and shared through the store.
        config.ticketer = tickets;
        Ok(Arc::new(config))
    }
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How the CLI client checks the gateway's certificate.
pub enum ServerTrust<'a> {
    /// The public web PKI (Mozilla's roots).
    WebPki,
    /// Only certificates issued by the CA(s) in this PEM file.
    CaFile(&'a Path),
    /// Any certificate: for a self-signed demo gateway only.
    Insecure,
}

pub fn client_config(trust: ServerTrust<'_>) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut config = match trust {
        ServerTrust::WebPki => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        ServerTrust::CaFile(path) => builder.with_root_certificates(ca_roots(path)?).with_no_client_auth(),
        ServerTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // `portcullis connect` runs the record layer itself after the handshake (`accept::connect`).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file, as trust roots.
fn ca_roots(path: &Path) -> Result<RootCertStore> {
    let pem = std::fs::read(path).map_err(|e| Error::file("cannot read CA file", path, e))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("bad PEM in {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("unusable CA certificate in {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!("no certificate in {}", path.display())));
    }
    Ok(roots)
}

/// TLS to an RDP server whose certificate must chain to the CA(s) in `ca` and name the host it is
/// reached by (a target's `cert_ca`).
pub fn rdp_client_config_with_ca(ca: &Path) -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(ca_roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS to RDP servers, which mostly present self-signed certificates: without a target's
/// `cert_ca`, any certificate is taken here and the chain is checked against a configured pin
/// (`cert_sha256`), if any. No ALPN (RDP does not use it).
pub fn rdp_client_config() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let config = ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .expect("ring supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// `--insecure`: skips certificate checks but still verifies handshake signatures, so the session
/// is at least bound to the key the server presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ServerConnection};

    /// The gateway picks AES-128-GCM even when the client lists AES-256-GCM first.
    #[test]
    fn server_prefers_aes_128() {
        let identity = Identity::self_signed(&[]).unwrap();
        let client_config = Arc::new(
            ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
                .with_no_client_auth(),
        );
        assert!(format!("{:?}", client_config.crypto_provider().cipher_suites[0].suite()).contains("AES_256"));
        let mut client = ClientConnection::new(client_config, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut server = ServerConnection::new(
            identity
                .server_config(crate::tls::tickets::FleetTickets::new())
                .unwrap(),
        )
        .unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let suite = format!("{:?}", server.negotiated_cipher_suite().unwrap().suite());
        assert_eq!(suite, "TLS13_AES_128_GCM_SHA256");
    }
}
