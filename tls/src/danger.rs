//! Test-only ways around the handshake. Compiled only with the `danger-test-client` feature, which
//! only dev-dependencies enable: production code cannot reach it.

use rustls::pki_types::CertificateDer;

use crate::VerifiedClient;

/// A [`VerifiedClient`] for `certificate` without a handshake, for tests that drive the daemon's
/// admission in-process. Nothing proves that the caller holds the certificate's key.
pub fn verified_client(certificate: CertificateDer<'static>) -> VerifiedClient {
    VerifiedClient::new(certificate)
}
