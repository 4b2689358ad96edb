//! What the helper applies to a certificate an administrator asks it to trust (root reads
//! this input from a less privileged caller): exactly one PEM certificate block that parses as
//! X.509, nothing else. It must not panic on any input, and what it accepts must be accepted
//! again in the form the store writes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust::pki::{certificate_pem, parse_single_certificate, MAX_CERTIFICATE_PEM};

fuzz_target!(|data: &[u8]| {
    let Ok(der) = parse_single_certificate(data) else {
        return;
    };
    assert!(data.len() <= MAX_CERTIFICATE_PEM);
    let pem = certificate_pem(&der);
    let again = parse_single_certificate(pem.as_bytes())
        .unwrap_or_else(|e| panic!("our own PEM of an accepted certificate is refused: {e}"));
    assert_eq!(again, der);
});
