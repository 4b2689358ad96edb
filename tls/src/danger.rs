//! Test-only ways around the handshake. Compiled only with the `danger-test-client` feature, which
//! only dev-dependencies enable: production code cannot reach it.

use rustls::pki_types::CertificateDer;

use crate::VerifiedClient;

/// A [`VerifiedClient`] for `certificate` without a handshake, for tests that drive the daemon's
/// admission in-process. Nothing proves that the caller holds the certificate's key.
pub fn verified_client(certificate: CertificateDer<'static>) -> VerifiedClient {
    VerifiedClient::new(certificate)
}

#[cfg(test)]
mod tests {
    use trust::Fingerprint;

    #[test]
    fn a_test_client_is_the_certificate_it_was_given() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["test".to_string()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        let client = super::verified_client(der.clone());
        assert_eq!(client.certificate(), &der);
        assert_eq!(client.fingerprint(), Fingerprint::of(&der));
    }
}
