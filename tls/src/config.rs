//! TLS configuration of both sides, and the client-certificate verifier.
//!
//! Multipass clients present self-signed certificates, so there is no chain to verify. The
//! verifier here therefore checks only that the client proved possession of the key whose
//! certificate it presented (the handshake signature), and leaves the yes/no to the trust store.
//! Its name says what it skips.
//!
//! Neither side resumes sessions. The `multipass` client is a new process for every command and
//! cannot carry a TLS 1.3 session from one process to the next (rustls gives a client session no
//! public encoding), so tickets would only cost both sides work on every connection; and a
//! resumed session would identify its client by a ticket instead of a fresh proof of its key. So
//! the daemon issues no tickets and keeps no session cache, and every connection is a full
//! handshake: a client that offers a ticket gets a full handshake and is identified by the
//! certificate it presents then.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use trust::Fingerprint;

use crate::error::Result;
use crate::pki::{ClientIdentity, ServerPki};

/// ALPN protocol gRPC speaks; gRPC stacks other than ours insist on it.
const ALPN_H2: &[u8] = b"h2";

/// Accepts any client certificate without chain verification, but always verifies the handshake
/// signature, so that a client that presents a certificate is known to hold its key. Client
/// authentication is optional in TLS so that a client without a certificate gets the daemon's
/// explanation (`NoClientCertificate`) as a gRPC error instead of a failed handshake; the gate
/// refuses every request without one.
#[derive(Debug)]
pub struct PossessionOnlyClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PossessionOnlyClientVerifier {
    /// A verifier using the ring provider's signature algorithms.
    pub fn new() -> PossessionOnlyClientVerifier {
        PossessionOnlyClientVerifier {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl Default for PossessionOnlyClientVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for PossessionOnlyClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.len() > trust::pki::MAX_CERTIFICATE_DER {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        // No chain and no expiry check (Multipass trusts expired client certificates); but it must
        // be a certificate, or the signature check below has no key to use.
        x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server certificate the daemon presents, replaceable while it runs: the daemon renews its
/// certificate before it expires and swaps it in here, and every handshake from then on presents
/// the new one. Connections already established keep theirs; clients verify against the root CA,
/// which renewal keeps, so they notice nothing.
pub struct ServerCertResolver {
    current: RwLock<Arc<CertifiedKey>>,
    /// Called before each handshake takes the chain (see [`ServerCertResolver::check_with`]).
    check: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ServerCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertResolver")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl ServerCertResolver {
    /// A resolver presenting `pki`'s chain. Fails if the key does not match the certificate.
    pub fn new(pki: &ServerPki) -> Result<Arc<ServerCertResolver>> {
        Ok(Arc::new(ServerCertResolver {
            current: RwLock::new(certified_key(pki)?),
            check: std::sync::OnceLock::new(),
        }))
    }

    /// Call `check` before each handshake takes the chain, so that it may [`replace`] a chain
    /// that no client would accept now before this handshake presents it. Set once; it runs on
    /// the handshake's thread and must be quick when nothing is wrong.
    ///
    /// [`replace`]: ServerCertResolver::replace
    pub fn check_with(&self, check: impl Fn() + Send + Sync + 'static) {
        let _ = self.check.set(Box::new(check));
    }

    /// Present `pki`'s chain from the next handshake on. On error the current one stays.
    pub fn replace(&self, pki: &ServerPki) -> Result<()> {
        let next = certified_key(pki)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// The fingerprint of the server certificate presented now.
    pub fn fingerprint(&self) -> Fingerprint {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        // `certified_key` never builds one with an empty chain.
        Fingerprint::of(current.cert.first().map(|c| c.as_ref()).unwrap_or_default())
    }
}

fn certified_key(pki: &ServerPki) -> Result<Arc<CertifiedKey>> {
    if pki.chain.is_empty() {
        return Err(trust::Error::NotOneCertificate {
            found: "an empty server certificate chain".into(),
        }
        .into());
    }
    let provider = rustls::crypto::ring::default_provider();
    Ok(Arc::new(CertifiedKey::from_der(
        pki.chain.clone(),
        pki.key.clone_key(),
        &provider,
    )?))
}

impl ResolvesServerCert for ServerCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(check) = self.check.get() {
            check();
        }
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The cryptography of both sides: ring's, with AES-128-GCM and SHA-256 preferred. The keys are
/// P-256 (128-bit security), so AES-256 and SHA-384 add no strength, and SHA-256 has CPU
/// instructions where SHA-384 has none: the handshake's key schedule and transcript hash cost
/// about a tenth of either side's handshake with SHA-384 (docs/PERFORMANCE.md). The other suites
/// stay, for clients that offer only those.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The daemon's TLS configuration: TLS 1.3 only, the server chain `certificates` presents now,
/// client certificates requested and checked by [`PossessionOnlyClientVerifier`], ALPN `h2`, no
/// session resumption (see the module's documentation), the server's cipher suite order.
pub fn server_config(certificates: Arc<ServerCertResolver>) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PossessionOnlyClientVerifier::new()))
        .with_cert_resolver(certificates);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The client's TLS configuration: verify the daemon against the root CA in `root_ca_pem` (server
/// name `localhost`), present `identity`, keep no sessions (see the module's documentation).
pub fn client_config(
    root_ca_pem: &[u8],
    identity: &ClientIdentity,
) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(root_ca_pem).flatten() {
        roots.add(cert)?;
        found += 1;
    }
    if found == 0 {
        return Err(trust::Error::NotOneCertificate {
            found: "no certificate in the root CA file".into(),
        }
        .into());
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            identity.certified_key(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// A client whose handshake proved it holds the key of the certificate it presented.
///
/// Only [`VerifiedClient::from_connection`] makes one, from a connection whose configuration came
/// from [`server_config`]; daemon handlers take this type, never raw DER.
#[derive(Clone, Debug)]
pub struct VerifiedClient {
    certificate: CertificateDer<'static>,
    fingerprint: Fingerprint,
}

impl VerifiedClient {
    /// The client of a finished server-side handshake, if it presented a certificate.
    pub fn from_connection(conn: &rustls::ServerConnection) -> Option<VerifiedClient> {
        let certificate = conn.peer_certificates()?.first()?.clone().into_owned();
        Some(VerifiedClient::new(certificate))
    }

    /// Private: only a handshake (above) and, in test builds, [`crate::danger`] call it.
    pub(crate) fn new(certificate: CertificateDer<'static>) -> VerifiedClient {
        let fingerprint = Fingerprint::of(&certificate);
        VerifiedClient {
            certificate,
            fingerprint,
        }
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The identity.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerPkiOptions;
    use trust::DataDir;

    /// A self-signed client certificate carrying `padding` bytes in an extension of its own.
    fn client_cert_padded(padding: usize) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 99999, 1],
                vec![0x04; padding],
            ));
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_client_certificate_larger_than_the_store_takes_is_refused() {
        let verifier = PossessionOnlyClientVerifier::new();
        let verify =
            |der: &CertificateDer<'_>| verifier.verify_client_cert(der, &[], UnixTime::now());
        let ours = client_cert_padded(0);
        assert!(verify(&ours).is_ok());
        let near = client_cert_padded(trust::pki::MAX_CERTIFICATE_DER - ours.len() - 64);
        assert!(near.len() <= trust::pki::MAX_CERTIFICATE_DER);
        assert!(verify(&near).is_ok(), "{} bytes", near.len());
        let large = client_cert_padded(trust::pki::MAX_CERTIFICATE_DER);
        assert!(matches!(
            verify(&large),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding
            ))
        ));
    }

    /// Two server certificates of one root, made one after the other in a fresh directory.
    fn two_server_pkis() -> (ServerPki, ServerPki) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        // Renewal margin longer than the validity: every load makes a new server certificate.
        let opts = ServerPkiOptions {
            server_validity: time::Duration::minutes(5),
            renew_before: time::Duration::minutes(10),
        };
        let first = ServerPki::load_or_create(&dir, opts).unwrap();
        let second = ServerPki::load_or_create(&dir, opts).unwrap();
        (first, second)
    }

    #[test]
    fn resolver_presents_the_replacement() {
        let (first, second) = two_server_pkis();
        let resolver = ServerCertResolver::new(&first).unwrap();
        assert_eq!(resolver.fingerprint(), Fingerprint::of(&first.chain[0]));
        resolver.replace(&second).unwrap();
        assert_eq!(resolver.fingerprint(), Fingerprint::of(&second.chain[0]));
        assert!(server_config(resolver).is_ok());
    }

    #[test]
    fn resolver_refuses_a_key_of_another_certificate() {
        let (first, mut second) = two_server_pkis();
        let resolver = ServerCertResolver::new(&first).unwrap();
        second.key = first.key.clone_key();
        assert!(resolver.replace(&second).is_err());
        assert_eq!(resolver.fingerprint(), Fingerprint::of(&first.chain[0]));
    }
}
