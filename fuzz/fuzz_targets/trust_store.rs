//! The trust store parser reads a file that administrators append to by hand (and that an
//! interrupted write may have cut short). Whatever it reads, it must not panic, and what the
//! daemon writes back must read back as the same entries: writing never loses, adds or alters
//! a certificate or its metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust::Bundle;

fuzz_target!(|data: &[u8]| {
    let bundle = Bundle::parse(data);
    let written = bundle.to_pem();
    let again = Bundle::parse(written.as_bytes());
    assert_eq!(
        again.skipped(),
        0,
        "our own output has damaged blocks:\n{written}"
    );
    assert_eq!(
        again.len(),
        bundle.len(),
        "entries lost or added:\n{written}"
    );
    for (a, b) in bundle.iter().zip(again.iter()) {
        assert_eq!(a.fingerprint, b.fingerprint, "order or identity changed");
        assert_eq!(a.metadata, b.metadata, "metadata changed:\n{written}");
    }
    assert_eq!(again.to_pem(), written, "writing is not stable");
});
