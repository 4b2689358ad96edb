//! Passphrase hashes: Argon2id for everything we write, Multipass's legacy scrypt for what we find.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Longest passphrase accepted, in bytes; bounds the work an attacker can ask for.
pub const MAX_PASSPHRASE_LEN: usize = 1024;

/// The prompt for the passphrase, word for word Multipass's (scripts answer it), in the client
/// and the helper alike.
pub const PROMPT: &str = "Please enter passphrase: ";
/// The prompt for the passphrase a second time, when it is set.
pub const PROMPT_AGAIN: &str = "Please re-enter passphrase: ";

/// Said when a passphrase that is not set is cleared (by the daemon, or the helper's command).
pub const NOTHING_TO_CLEAR: &str = "No passphrase was set; nothing was changed.";

/// Why a new passphrase was refused. The messages never repeat the passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPassphrase {
    /// Longer than [`MAX_PASSPHRASE_LEN`] bytes.
    #[error("the passphrase is longer than {MAX_PASSPHRASE_LEN} bytes")]
    TooLong,
    /// `mpt_` and 40 hex digits: `authenticate` would take it for an enrollment token and never
    /// compare it with the passphrase.
    #[error(
        "the passphrase has the shape of an enrollment token (mpt_ and 40 hex digits), which \
         `multipass authenticate` would take for one, so it could never be used"
    )]
    TokenShaped,
    /// A line break or NUL: the prompts read one line, so such a passphrase could never be typed
    /// at `multipass authenticate`'s, and a D-Bus string (the helper's `SetPassphrase`) cannot
    /// hold a NUL.
    #[error("the passphrase contains a line break or NUL character")]
    LineBreak,
}

/// Check a passphrase about to be set, wherever it is set (the daemon's `set local.passphrase`,
/// the helper over D-Bus and through pkexec), before anything is hashed or written. The empty
/// passphrase is valid: it clears the setting.
pub fn validate_new(passphrase: &str) -> Result<(), InvalidPassphrase> {
    if passphrase.len() > MAX_PASSPHRASE_LEN {
        return Err(InvalidPassphrase::TooLong);
    }
    // A client takes what looks like a token, blanks and quotes around it aside, for one: such
    // a passphrase could be set but never used.
    if crate::tokens::token_in(passphrase).is_some() {
        return Err(InvalidPassphrase::TokenShaped);
    }
    if passphrase.contains(['\n', '\r', '\0']) {
        return Err(InvalidPassphrase::LineBreak);
    }
    Ok(())
}

/// Largest Argon2 memory cost accepted in a stored hash (256 MiB; ours is 19 MiB).
const MAX_MEMORY_KIB: u32 = 256 * 1024;
/// Largest Argon2 time cost accepted in a stored hash (ours is 2).
const MAX_TIME_COST: u32 = 16;
/// Largest Argon2 parallelism accepted in a stored hash (ours is 1).
const MAX_LANES: u32 = 16;

/// A stored passphrase hash, parsed. Its `Debug` never shows the hash.
#[derive(Clone)]
pub enum PassphraseHash {
    /// An Argon2id PHC string (salt and parameters inside).
    Argon2id(String),
    /// Multipass's legacy value: scrypt N=16384 r=8 p=1, empty salt, 64 bytes.
    LegacyScrypt([u8; 64]),
}

impl fmt::Debug for PassphraseHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassphraseHash::Argon2id(_) => f.write_str("PassphraseHash::Argon2id(..)"),
            PassphraseHash::LegacyScrypt(_) => f.write_str("PassphraseHash::LegacyScrypt(..)"),
        }
    }
}

impl PassphraseHash {
    /// Parse a value from the settings file.
    pub fn parse(stored: &str) -> Result<PassphraseHash> {
        let stored = stored.trim();
        if stored.starts_with("$argon2id$") {
            let parsed = PasswordHash::new(stored).map_err(|_| Error::UnknownHashFormat)?;
            // A PHC string without salt or output, or with parameters Argon2 refuses, can never
            // verify; one with absurd costs would make every attempt allocate gigabytes (found
            // by fuzzing: "$argon2id$m=17" was accepted as a set passphrase).
            let params = argon2::Params::try_from(&parsed).map_err(|_| Error::UnknownHashFormat)?;
            if parsed.salt.is_none()
                || parsed.hash.is_none()
                || params.m_cost() > MAX_MEMORY_KIB
                || params.t_cost() > MAX_TIME_COST
                || params.p_cost() > MAX_LANES
            {
                return Err(Error::UnknownHashFormat);
            }
            return Ok(PassphraseHash::Argon2id(stored.to_string()));
        }
        if stored.len() == 128 {
            let mut bytes = [0u8; 64];
            if hex::decode_to_slice(stored, &mut bytes).is_ok() {
                return Ok(PassphraseHash::LegacyScrypt(bytes));
            }
        }
        Err(Error::UnknownHashFormat)
    }

    /// Hash a new passphrase with Argon2id (default parameters: m=19456 KiB, t=2, p=1) and a
    /// random salt.
    pub fn new(passphrase: &str) -> Result<PassphraseHash> {
        let salt = SaltString::generate(&mut rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(passphrase.as_bytes(), &salt)
            .map_err(|e| Error::Hash(e.to_string()))?;
        Ok(PassphraseHash::Argon2id(hash.to_string()))
    }

    /// Whether `candidate` is the passphrase. Constant-time in the comparison; the cost of the
    /// hash is the same for every candidate.
    pub fn verify(&self, candidate: &str) -> bool {
        if candidate.len() > MAX_PASSPHRASE_LEN {
            return false;
        }
        match self {
            PassphraseHash::Argon2id(phc) => match PasswordHash::new(phc) {
                // `verify_password` compares the outputs in constant time.
                Ok(parsed) => Argon2::default()
                    .verify_password(candidate.as_bytes(), &parsed)
                    .is_ok(),
                Err(_) => false,
            },
            PassphraseHash::LegacyScrypt(expected) => {
                let mut out = Zeroizing::new([0u8; 64]);
                let params = match scrypt::Params::new(14, 8, 1, 64) {
                    Ok(p) => p,
                    Err(_) => return false,
                };
                if scrypt::scrypt(candidate.as_bytes(), b"", &params, out.as_mut()).is_err() {
                    return false;
                }
                out.ct_eq(expected).into()
            }
        }
    }

    /// Whether this hash should be replaced by Argon2id after the next successful verification.
    pub fn needs_upgrade(&self) -> bool {
        matches!(self, PassphraseHash::LegacyScrypt(_))
    }

    /// The value to store in the settings file.
    pub fn to_setting(&self) -> String {
        match self {
            PassphraseHash::Argon2id(phc) => phc.clone(),
            PassphraseHash::LegacyScrypt(bytes) => hex::encode(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Multipass's value for "passphrase" (docs/CONTRACT.md, The trust model).
    const LEGACY: &str = "f28cb995d91eed8064674766f28e468aae8065b2cf02af556c857dd77de2d2476f3830fd02147f3e35037a1812df0d0d0934fa677be585269fee5358d5c70758";

    #[test]
    fn legacy_scrypt_vector_verifies() {
        let hash = PassphraseHash::parse(LEGACY).unwrap();
        assert!(hash.needs_upgrade());
        assert!(hash.verify("passphrase"));
        assert!(!hash.verify("passphrasf"));
        assert!(!hash.verify(""));
    }

    #[test]
    fn argon2id_roundtrip() {
        let hash = PassphraseHash::new("correct horse").unwrap();
        let stored = hash.to_setting();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let parsed = PassphraseHash::parse(&stored).unwrap();
        assert!(!parsed.needs_upgrade());
        assert!(parsed.verify("correct horse"));
        assert!(!parsed.verify("correct horsf"));
    }

    #[test]
    fn salts_differ() {
        let a = PassphraseHash::new("same").unwrap().to_setting();
        let b = PassphraseHash::new("same").unwrap().to_setting();
        assert_ne!(a, b);
    }

    #[test]
    fn unknown_formats_are_refused() {
        for bad in [
            "",
            "plain",
            "$argon2id$m=17",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
            "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
            &"zz".repeat(64),
        ] {
            assert!(PassphraseHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn new_passphrases_are_validated() {
        assert_eq!(validate_new(""), Ok(()));
        assert_eq!(validate_new("correct horse battery staple"), Ok(()));
        assert_eq!(validate_new(&"p".repeat(MAX_PASSPHRASE_LEN)), Ok(()));
        assert_eq!(
            validate_new(&"p".repeat(MAX_PASSPHRASE_LEN + 1)),
            Err(InvalidPassphrase::TooLong)
        );
        let token = format!("mpt_{}", "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(validate_new(&token), Err(InvalidPassphrase::TokenShaped));
        // Clients take one with blanks or quotes around it for the token too.
        for around in [
            format!(" {token}"),
            format!("'{token}'"),
            format!("\t{token} "),
        ] {
            assert_eq!(validate_new(&around), Err(InvalidPassphrase::TokenShaped));
        }
        // Otherwise only the exact shape is a token.
        assert_eq!(validate_new(&format!("{token}0")), Ok(()));
        assert_eq!(validate_new(&token.to_uppercase()), Ok(()));
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(validate_new(bad), Err(InvalidPassphrase::LineBreak));
        }
        assert!(!InvalidPassphrase::TokenShaped.to_string().contains("0123"));
    }

    #[test]
    fn debug_hides_the_hash() {
        let hash = PassphraseHash::parse(LEGACY).unwrap();
        assert!(!format!("{hash:?}").contains("f28c"));
    }
}
