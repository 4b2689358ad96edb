//! Certificates as the trust store sees them: fingerprints as identities, and parsing the PEM a
//! client or an administrator hands in.
//!
//! Making certificates and speaking TLS are the `multipass-tls` crate's job; this crate (and so
//! the privileged helper) only reads certificates, so it links no TLS stack and no key
//! generation.

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The identity of a client: the SHA-256 of its certificate's exact DER.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// Hashes the first 8 bytes only: a quarter of the input to the maps' hasher, which every load of
/// the trust store runs once per entry (docs/PERFORMANCE.md). The maps keep their keyed hasher,
/// so nobody can aim fingerprints at one bucket without knowing its key; what stays the same
/// whatever the key is two fingerprints that share their first 64 bits, which takes about 2^32
/// certificates for one pair (and equality still compares all 32 bytes).
impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether `text` is this fingerprint in hex (either case): what [`Fingerprint::from_hex`]
    /// would read as it, without decoding.
    pub fn is_written_as(&self, text: &str) -> bool {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(self.0, &mut hex).is_ok() && text.as_bytes().eq_ignore_ascii_case(&hex)
    }

    /// Parse [`Fingerprint::to_hex`]'s output (either case).
    pub fn from_hex(text: &str) -> Option<Fingerprint> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Fingerprint(bytes))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", short_hex(&self.to_hex()))
    }
}

/// Hex digits of a fingerprint shown where a whole one would not fit (`trust list`'s table,
/// messages): as many as `git` shows of a commit, and more than enough to designate a client.
pub const SHORT_HEX: usize = 16;

/// The first [`SHORT_HEX`] digits of the hex fingerprint `hex` (all of it, if shorter).
pub fn short_hex(hex: &str) -> &str {
    hex.get(..SHORT_HEX).unwrap_or(hex)
}

/// A certificate as a PEM `CERTIFICATE` block (64-column base64, `\n` line ends).
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Largest PEM input accepted as one client certificate (ours are under 1 KiB).
pub const MAX_CERTIFICATE_PEM: usize = 16 * 1024;

/// Largest client certificate (DER) the daemon takes in a handshake, and so writes to the store.
/// Without a bound a client's certificate could be as large as a TLS handshake message allows
/// (64 KiB), and every client trusted by the passphrase would cost the store, and each read of
/// it, that much. Its PEM block fits in [`MAX_CERTIFICATE_PEM`], so any client the daemon trusted
/// can be handed to the helper too. Ours are about 500 bytes; an RSA-4096 one about 1.5 KiB.
pub const MAX_CERTIFICATE_DER: usize = 8 * 1024;

/// Parse input that must be exactly one PEM `CERTIFICATE` block holding a valid X.509
/// certificate, and nothing else: no second certificate, no key, no other PEM item. Used for
/// certificates an administrator asks the helper to trust.
pub fn parse_single_certificate(pem: &[u8]) -> Result<CertificateDer<'static>> {
    use rustls_pki_types::pem::SectionKind;
    let refuse = |found: String| Err(Error::NotOneCertificate { found });
    if pem.len() > MAX_CERTIFICATE_PEM {
        return refuse(format!(
            "{} bytes of input (at most {MAX_CERTIFICATE_PEM} accepted)",
            pem.len()
        ));
    }
    // Count every PEM boundary, including types the PEM reader does not know and would skip.
    let blocks = pem.windows(11).filter(|w| w == b"-----BEGIN ").count();
    if blocks != 1 {
        return refuse(format!("{blocks} PEM blocks"));
    }
    let sections: Vec<(SectionKind, Vec<u8>)> =
        match <(SectionKind, Vec<u8>)>::pem_slice_iter(pem).collect() {
            Ok(s) => s,
            Err(e) => return refuse(format!("malformed PEM ({e})")),
        };
    let der = match sections.as_slice() {
        [(SectionKind::Certificate, der)] => der.clone(),
        [(kind, _)] => return refuse(format!("a PEM block of type {kind:?}")),
        _ => return refuse("no recognisable PEM block".to_string()),
    };
    match x509_parser::parse_x509_certificate(&der) {
        Ok(([], _)) => Ok(CertificateDer::from(der)),
        Ok(_) => Err(Error::InvalidCertificate {
            reason: "trailing data after the certificate".into(),
        }),
        Err(e) => Err(Error::InvalidCertificate {
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A new self-signed certificate, PEM, as a client would make one.
    pub(crate) fn new_certificate() -> (String, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![uuid::Uuid::new_v4().to_string()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key)
    }

    #[test]
    fn written_as_is_what_from_hex_reads() {
        let fp = Fingerprint::of(b"some certificate");
        let hex = fp.to_hex();
        for text in [hex.clone(), hex.to_uppercase()] {
            assert!(fp.is_written_as(&text));
            assert_eq!(Fingerprint::from_hex(&text), Some(fp));
        }
        let other = Fingerprint::of(b"another").to_hex();
        for text in [other.as_str(), &hex[..62], "", "zz"] {
            assert!(!fp.is_written_as(text), "{text}");
            assert_ne!(Fingerprint::from_hex(text), Some(fp));
        }
    }

    #[test]
    fn the_largest_certificate_taken_in_a_handshake_fits_the_helpers_bound() {
        let pem = certificate_pem(&[0x30; MAX_CERTIFICATE_DER]);
        assert!(pem.len() <= MAX_CERTIFICATE_PEM, "{}", pem.len());
    }

    #[test]
    fn single_certificate_accepted() {
        let (pem, _) = new_certificate();
        let der = parse_single_certificate(pem.as_bytes()).unwrap();
        assert_eq!(der, CertificateDer::from_pem_slice(pem.as_bytes()).unwrap());
    }

    #[test]
    fn anything_but_one_certificate_refused() {
        let (a, key) = new_certificate();
        let (b, _) = new_certificate();
        let key_pem = key.serialize_pem();
        let garbage =
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        let unknown = format!(
            "{a}-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        );
        let oversized = format!("{a}{}", " ".repeat(MAX_CERTIFICATE_PEM));
        for (what, input) in [
            ("two certificates", format!("{a}{b}")),
            ("a private key", key_pem.clone()),
            ("certificate and key", format!("{a}{key_pem}")),
            ("garbage", "hello".to_string()),
            ("not X.509", garbage.to_string()),
            ("unknown PEM type", unknown),
            ("oversized", oversized),
            ("empty", String::new()),
        ] {
            assert!(
                parse_single_certificate(input.as_bytes()).is_err(),
                "{what} accepted"
            );
        }
    }
}
