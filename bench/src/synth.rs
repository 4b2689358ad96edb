//! Large trust stores, made cheaply.
//!
//! Generating 100,000 real certificates with rcgen takes long; the store never parses X.509 (it
//! decodes PEM to DER, hashes the DER with SHA-256 and indexes the fingerprint), so distinct DER
//! of the right shape and size costs it exactly what real certificates would. Each synthetic
//! certificate is a real client certificate made by `tls::pki::new_client_cert` with its
//! 16-byte serial number overwritten by a counter: same length, same structure, a different
//! fingerprint (its signature no longer verifies, which nothing on this path checks). Each entry
//! carries the metadata lines the daemon writes, so parsing costs what it costs in service.

use anyhow::{bail, Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use trust::{Bundle, Enrolment, Entry, Metadata};

/// A store file's text with `n` synthetic entries followed by `extra` (real certificates).
pub fn store_text(n: usize, extra: &[CertificateDer<'static>]) -> Result<String> {
    let (pem, _) = tls::pki::new_client_cert(time::OffsetDateTime::now_utc())?;
    let template = CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec();
    let (_, x509) = x509_parser::parse_x509_certificate(&template)
        .map_err(|e| anyhow::anyhow!("template certificate: {e}"))?;
    let serial = x509.tbs_certificate.raw_serial().to_vec();
    let at = template
        .windows(serial.len())
        .position(|w| w == serial.as_slice())
        .context("serial not found in the template")?;
    if serial.len() < 9 {
        bail!("template serial too short");
    }
    let mut bundle = Bundle::default();
    let mut der = template.clone();
    for i in 0..n {
        let end = at + serial.len();
        der[end - 8..end].copy_from_slice(&(i as u64).to_be_bytes());
        let inserted = bundle.insert(Entry::new(
            CertificateDer::from(der.clone()),
            Metadata {
                name: Some(format!("user{i}")),
                uid: Some(100_000 + i as u32),
                user: Some(format!("user{i}")),
                how: Some(Enrolment::Passphrase),
                when: Some("2026-01-01T00:00:00Z".into()),
            },
        ));
        debug_assert!(inserted);
    }
    for cert in extra {
        bundle.insert(Entry::new(cert.clone(), Metadata::default()));
    }
    if bundle.len() != n + extra.len() {
        bail!("synthetic certificates are not distinct");
    }
    Ok(bundle.to_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_entries_that_parse_back() {
        let text = store_text(50, &[]).unwrap();
        let bundle = Bundle::parse(text.as_bytes());
        assert_eq!(bundle.len(), 50);
        assert_eq!(bundle.skipped(), 0);
    }
}
