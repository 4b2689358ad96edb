//! Certificates in PEM files, as DER.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Every `CERTIFICATE` block of a PEM file, as DER, in order. Text outside blocks (RFC 7468
/// explanatory text) is skipped.
pub fn certificates(bytes: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(bytes)
        .map(|c| c.expect("well-formed PEM certificate block").to_vec())
        .collect()
}

/// The certificates of a PEM file; an absent file holds none.
pub fn certificates_in_file(path: &std::path::Path) -> Vec<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => certificates(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// Whether `path` exists and holds at least one well-formed certificate block (never panics:
/// for polling a file that another process is writing).
pub fn holds_certificate(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| {
        CertificateDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .next()
            .is_some()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_explanatory_text() {
        let pem = "name: x\nuid: 1\n-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\nhow: by-hand\n-----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certificates(pem.as_bytes()),
            vec![vec![0u8, 1, 2], vec![3u8, 4, 5]]
        );
    }
}
