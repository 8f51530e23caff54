//! AutoMTLS: the certificates go-plugin makes for each side, and TLS configs that trust exactly
//! the peer's certificate.
//!
//! go-plugin generates a fresh self-signed certificate per process (ECDSA P-521, `CN=localhost`,
//! `O=HashiCorp`, `IsCA=true`, SAN `localhost`, client and server auth). The host passes its PEM
//! in `PLUGIN_CLIENT_CERT`; the plugin prints the DER of its own in handshake field 6. Each side
//! then trusts only that one certificate. rustls' webpki verifier refuses a `CA=true` certificate
//! as a leaf, so [`PinnedVerifier`] compares the exact DER and checks only the handshake
//! signatures. Only the aws-lc-rs provider verifies P-521 signatures, so it is used explicitly.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, DistinguishedName, ServerConfig, SignatureScheme};

use crate::ProtocolError;

/// The curve of a generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Curve {
    /// What go-plugin uses; about 10 ms of key generation per side on a 2-core VM.
    #[default]
    P521,
    /// Much faster to generate; accepted by Go peers and plugsconc peers alike.
    P256,
}

/// A certificate with its private key.
#[derive(Debug)]
pub struct CertifiedKey {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    pem: String,
}

impl Clone for CertifiedKey {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            pem: self.pem.clone(),
        }
    }
}

impl CertifiedKey {
    /// Generates a certificate exactly as go-plugin's `generateCert` does, on the given curve.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Tls`] if key generation or signing fails.
    pub fn generate(curve: Curve) -> Result<Self, ProtocolError> {
        let alg = match curve {
            Curve::P521 => &rcgen::PKCS_ECDSA_P521_SHA512,
            Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let key_pair = KeyPair::generate_for(alg).map_err(tls_err)?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(tls_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "HashiCorp");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(30);
        params.not_after = now + time::Duration::hours(262_980);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key_pair).map_err(tls_err)?;
        Ok(Self {
            pem: cert.pem(),
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key_pair.serialize_der()),
        })
    }

    /// The DER of the certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The PEM of the certificate, as the host puts it in `PLUGIN_CLIENT_CERT`.
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A positive 128-bit serial, like Go's `rand.Int(rand.Reader, 2^128)`.
fn random_serial() -> Result<SerialNumber, ProtocolError> {
    let mut bytes = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| ProtocolError::Tls("no system randomness for the serial number".into()))?;
    bytes[0] &= 0x7f; // keep it positive in DER
    Ok(SerialNumber::from_slice(&bytes))
}

fn tls_err(err: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Tls(err.to_string())
}

fn provider() -> CryptoProvider {
    aws_lc_rs::default_provider()
}

/// Parses the PEM in `PLUGIN_CLIENT_CERT`.
///
/// # Errors
///
/// [`ProtocolError::InvalidCertificate`] when it holds no PEM certificate.
pub fn parse_cert_pem(pem: &str) -> Result<CertificateDer<'static>, ProtocolError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|err| {
        ProtocolError::InvalidCertificate {
            place: "PLUGIN_CLIENT_CERT",
            reason: err.to_string(),
        }
    })
}

/// Trusts exactly the pinned certificates, verifying only the TLS handshake signatures.
#[derive(Debug)]
pub struct PinnedVerifier {
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    /// A verifier accepting only `cert`.
    pub fn new(cert: CertificateDer<'static>) -> Self {
        Self {
            pinned: vec![cert],
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS server config presenting `own` and requiring the client to present exactly `peer`.
/// ALPN is `h2` (grpc-go 1.67+ enforces it).
///
/// # Errors
///
/// [`ProtocolError::Tls`] if the key does not fit the provider.
pub fn server_config(
    own: &CertifiedKey,
    peer: CertificateDer<'static>,
) -> Result<Arc<ServerConfig>, ProtocolError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_client_cert_verifier(Arc::new(PinnedVerifier::new(peer)))
        .with_single_cert(vec![own.cert.clone()], own.key())
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client config presenting `own` and accepting only a server presenting `peer`.
///
/// # Errors
///
/// [`ProtocolError::Tls`] if the key does not fit the provider.
pub fn client_config(
    own: &CertifiedKey,
    peer: CertificateDer<'static>,
) -> Result<Arc<ClientConfig>, ProtocolError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(peer)))
        .with_client_auth_cert(vec![own.cert.clone()], own.key())
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The server name go-plugin certificates are made for.
pub fn server_name() -> ServerName<'static> {
    ServerName::DnsName(rustls::pki_types::DnsName::try_from("localhost").expect("valid name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    #[test]
    fn generated_cert_matches_go_plugin() {
        let key = CertifiedKey::generate(Curve::P521).unwrap();
        let (_, cert) = X509Certificate::from_der(key.cert_der()).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=localhost, O=HashiCorp");
        assert_eq!(cert.issuer(), cert.subject());
        assert!(cert.is_ca());
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::DNSName("localhost")]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && ku.key_agreement());
        assert!(ku.key_cert_sign());
        // ecdsa-with-SHA512 over a P-521 key.
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.10045.4.3.4"
        );
        let validity = cert.validity();
        let years = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 31_557_600;
        assert_eq!(years, 30);
        assert!(key.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn pem_round_trips() {
        let key = CertifiedKey::generate(Curve::P256).unwrap();
        assert_eq!(&parse_cert_pem(key.cert_pem()).unwrap(), key.cert_der());
        assert!(parse_cert_pem("not a pem").is_err());
    }

    #[test]
    fn verifier_pins_the_exact_certificate() {
        let a = CertifiedKey::generate(Curve::P256).unwrap();
        let b = CertifiedKey::generate(Curve::P256).unwrap();
        let verifier = PinnedVerifier::new(a.cert_der().clone());
        let name = server_name();
        let now = UnixTime::now();
        assert!(
            verifier
                .verify_server_cert(a.cert_der(), &[], &name, &[], now)
                .is_ok()
        );
        assert!(
            verifier
                .verify_server_cert(b.cert_der(), &[], &name, &[], now)
                .is_err()
        );
        assert!(verifier.verify_client_cert(b.cert_der(), &[], now).is_err());
    }

    #[test]
    fn configs_build_for_both_curves() {
        for curve in [Curve::P521, Curve::P256] {
            let host = CertifiedKey::generate(curve).unwrap();
            let plugin = CertifiedKey::generate(curve).unwrap();
            let server = server_config(&plugin, host.cert_der().clone()).unwrap();
            let client = client_config(&host, plugin.cert_der().clone()).unwrap();
            assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
            assert_eq!(client.alpn_protocols, vec![b"h2".to_vec()]);
        }
    }

    #[test]
    fn tls_handshake_in_memory_with_go_style_certs() {
        let host = CertifiedKey::generate(Curve::P521).unwrap();
        let plugin = CertifiedKey::generate(Curve::P521).unwrap();
        let server = server_config(&plugin, host.cert_der().clone()).unwrap();
        let client = client_config(&host, plugin.cert_der().clone()).unwrap();
        let mut c = rustls::ClientConnection::new(client, server_name()).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        pump(&mut c, &mut s).unwrap();
        assert!(!c.is_handshaking() && !s.is_handshaking());
        assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]));

        // A stranger's certificate is refused by the plugin side.
        let stranger = CertifiedKey::generate(Curve::P256).unwrap();
        let client = client_config(&stranger, plugin.cert_der().clone()).unwrap();
        let server = server_config(&plugin, host.cert_der().clone()).unwrap();
        let mut c = rustls::ClientConnection::new(client, server_name()).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        assert!(pump(&mut c, &mut s).is_err());
    }

    fn pump(
        c: &mut rustls::ClientConnection,
        s: &mut rustls::ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Ok(())
    }
}
