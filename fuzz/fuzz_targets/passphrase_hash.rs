//! A stored passphrase value: an Argon2id PHC string or Multipass's legacy hex scrypt hash.
//! Parsing must not panic, what parses must be written back unchanged, and the debug form must
//! never show it. (The enrollment tokens have their own target, `token_file`.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use trust::PassphraseHash;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hash) = PassphraseHash::parse(text) else {
        return;
    };
    let setting = hash.to_setting();
    let again = PassphraseHash::parse(&setting)
        .unwrap_or_else(|e| panic!("our own value does not parse ({e}): {setting}"));
    assert_eq!(again.to_setting(), setting, "not stable");
    let shown = format!("{hash:?}");
    assert!(
        shown == "PassphraseHash::Argon2id(..)" || shown == "PassphraseHash::LegacyScrypt(..)",
        "Debug shows more than the kind: {shown}"
    );
});
