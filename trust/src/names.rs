//! Names of trusted clients and of enrollment tokens: what people read in `multipass trust list`
//! and in the audit log, so they must show what they are.
//!
//! A name is short and printable: no control characters (Unicode general category Cc), no
//! format characters (Cf: the bidirectional controls U+061C, U+200E, U+200F, U+202A-U+202E,
//! U+2066-U+2069, and invisible ones such as U+200B and U+FEFF), no line or paragraph separators
//! (Zl U+2028, Zp U+2029). Bidirectional controls reorder what follows them, so a name holding
//! one can make a listing show another client's name or a false fingerprint; separators break
//! one entry into several lines. `char::is_control` knows only Cc, hence the general category.
//!
//! The daemon (token names, any name it stores), the helper (`TrustCertificate`) and the client
//! (before sending) all ask [`validate`]; the trust store drops [`is_forbidden`] characters from
//! what it reads, so a hand-edited file cannot smuggle them in either.

use std::fmt;

use unicode_general_category::{get_general_category, GeneralCategory};

/// Longest name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Why a name was refused. The messages complete "Invalid name '...': ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// Nothing at all.
    #[error("it is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    #[error("it is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    /// A character that would change how the name, or what follows it, is shown.
    #[error("it contains U+{:04X}, {}", u32::from(*.0), describe(*.0))]
    Unprintable(char),
    /// Five dashes, which read as a PEM boundary in the trust store.
    #[error("it contains '-----'")]
    PemBoundary,
}

/// Whether `c` may not appear in a name (see the module's documentation).
pub fn is_forbidden(c: char) -> bool {
    // ASCII, nearly every character asked about, without the table: only its controls are
    // forbidden. (The table lookup copies the table in a debug build: 18 s of a 40,000-client
    // `trust list`.)
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

fn describe(c: char) -> &'static str {
    match get_general_category(c) {
        GeneralCategory::Control => "a control character",
        GeneralCategory::Format => "an invisible formatting or bidirectional control character",
        GeneralCategory::LineSeparator => "a line separator",
        _ => "a paragraph separator",
    }
}

/// Check a name: 1 to [`MAX_NAME_LEN`] bytes, no [`is_forbidden`] character, no `-----`.
pub fn validate(name: &str) -> Result<&str, InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong);
    }
    if let Some(c) = name.chars().find(|&c| is_forbidden(c)) {
        return Err(InvalidName::Unprintable(c));
    }
    if name.contains("-----") {
        return Err(InvalidName::PemBoundary);
    }
    Ok(name)
}

/// `name` as it may be shown back in a message: forbidden characters as `\u{..}` escapes (so
/// the refusal itself cannot be reordered by them), at most [`MAX_NAME_LEN`] characters.
pub fn shown(name: &str) -> Shown<'_> {
    Shown(name)
}

/// See [`shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().take(MAX_NAME_LEN) {
            if is_forbidden(c) {
                write!(f, "\\u{{{:04x}}}", u32::from(c))?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if self.0.chars().nth(MAX_NAME_LEN).is_some() {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// The name a client enrolled by `uid` gets when none is given: the login name, or `uid-N` when
/// there is none or it is not a valid name.
pub fn default_for_uid(uid: u32) -> String {
    crate::access::user_name(uid)
        .filter(|name| validate(name).is_ok())
        .unwrap_or_else(|| format!("uid-{uid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bidirectional control of Unicode (the Bidi_Control property), the separators and a
    /// few invisible format characters.
    const FORBIDDEN: [char; 18] = [
        '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{2028}', '\u{2029}',
        '\u{200B}', '\u{FEFF}', '\n', '\u{7}',
    ];

    #[test]
    fn ascii_is_judged_as_the_table_judges_it() {
        for c in (0u8..=127).map(char::from) {
            let by_table = matches!(
                get_general_category(c),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            );
            assert_eq!(is_forbidden(c), by_table, "{c:?}");
        }
    }

    #[test]
    fn printable_names_pass() {
        for name in [
            "alice",
            "bob-laptop",
            "Zoë's laptop",
            "運用チーム",
            "a b",
            "x.y@z+1",
        ] {
            assert_eq!(validate(name), Ok(name));
        }
        assert!(validate(&"é".repeat(32)).is_ok());
    }

    #[test]
    fn controls_formats_and_separators_are_refused() {
        for c in FORBIDDEN {
            let name = format!("ali{c}ce");
            assert_eq!(validate(&name), Err(InvalidName::Unprintable(c)), "{c:?}");
            assert!(is_forbidden(c));
        }
        let message = validate("a\u{202E}b").unwrap_err().to_string();
        assert_eq!(
            message,
            "it contains U+202E, an invisible formatting or bidirectional control character"
        );
        assert_eq!(
            validate("a\u{2028}b").unwrap_err().to_string(),
            "it contains U+2028, a line separator"
        );
    }

    #[test]
    fn length_emptiness_and_pem_boundaries() {
        assert_eq!(validate(""), Err(InvalidName::Empty));
        assert!(validate(&"x".repeat(MAX_NAME_LEN)).is_ok());
        assert_eq!(
            validate(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(InvalidName::TooLong)
        );
        // Counted in bytes: 33 two-byte characters are too long.
        assert_eq!(validate(&"é".repeat(33)), Err(InvalidName::TooLong));
        assert_eq!(validate("a-----b"), Err(InvalidName::PemBoundary));
    }

    #[test]
    fn shown_escapes_what_would_reorder_the_message() {
        assert_eq!(shown("a\u{202E}b\nc").to_string(), "a\\u{202e}b\\u{000a}c");
        assert_eq!(
            shown(&"x".repeat(70)).to_string(),
            format!("{}...", "x".repeat(64))
        );
    }
}
