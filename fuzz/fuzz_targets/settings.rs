//! The settings parser reads `multipassd.conf`, which Multipass, administrators and our writers
//! all touch. It must not panic; whatever it accepts, our serialisation must parse back to the
//! same document (so a write never changes or drops another tool's keys), and the passphrase
//! accessor must not panic either.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trust::settings::{Ini, GENERAL, PASSPHRASE_KEY};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ini) = Ini::parse(text, Path::new("fuzz.conf")) else {
        return;
    };
    let _ = ini.passphrase();
    let written = ini.to_text();
    let again = Ini::parse(&written, Path::new("written.conf"))
        .unwrap_or_else(|e| panic!("our own output does not parse ({e}):\n{written}"));
    assert_eq!(again.to_text(), written, "writing is not stable");
    assert_eq!(
        again.get(GENERAL, PASSPHRASE_KEY),
        ini.get(GENERAL, PASSPHRASE_KEY),
        "the passphrase value changed:\n{written}"
    );
});
