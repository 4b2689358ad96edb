//! The daemon's settings file, `multipassd.conf`: INI with a `[General]` section, the format
//! Multipass writes. Parsed in two stages: [`Ini`] keeps every section and key as read (so a write
//! never drops what another tool put there), typed accessors interpret the keys we own.
//!
//! The INI reading and writing are our own on purpose. The file is Qt's (QSettings): keys before
//! any section belong to `[General]`, values may be double-quoted, and what Multipass or an
//! administrator wrote must come back unchanged apart from the one key we set. The INI crates
//! (rust-ini, configparser) apply their own quoting, escaping and layout when they write, so a
//! round trip through them would not keep Qt's file byte-for-byte.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, FileMode};
use crate::passphrase::PassphraseHash;

/// The section Multipass keeps its keys in.
pub const GENERAL: &str = "General";
/// The passphrase key (its value is a hash, never the passphrase).
pub const PASSPHRASE_KEY: &str = "local.passphrase";

/// A settings key as a refusal may show it back: what follows a `=` in it (a value typed after
/// `get`'s key by mistake, perhaps a passphrase) as `...`, and the key as names are shown
/// ([`crate::names::shown`]: control and formatting characters escaped, at most 64 characters),
/// so that what anyone sends as a key cannot drive the terminal that shows the refusal, nor make
/// it as long as the request.
pub fn shown_key(key: &str) -> String {
    match key.split_once('=') {
        Some((key, _)) => format!("{}=...", crate::names::shown(key)),
        None => crate::names::shown(key).to_string(),
    }
}

/// An INI document, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ini {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Ini {
    /// Parse INI text. `path` is only for error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Ini> {
        let mut ini = Ini::default();
        let mut current: Option<usize> = None;
        for (number, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
                continue;
            }
            let err = |reason| Error::Settings {
                path: path.to_path_buf(),
                line: number + 1,
                reason,
            };
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest
                    .strip_suffix(']')
                    .ok_or_else(|| err("unterminated section"))?;
                current = Some(ini.section_index(name.trim()));
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| err("expected key=value"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(err("empty key"));
            }
            let value = unquote(value.trim()).ok_or_else(|| err("unterminated quoted value"))?;
            // Keys before any section belong to [General], as in QSettings.
            let section = *current.get_or_insert_with(|| ini.section_index(GENERAL));
            ini.sections[section].1.push((key.to_string(), value));
        }
        Ok(ini)
    }

    /// The value of `key` in `section`, the last one if repeated.
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .filter(|(name, _)| name == section)
            .flat_map(|(_, entries)| entries.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .next_back()
    }

    /// Set `key` in `section`, replacing every earlier value.
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        self.remove(section, key);
        let index = self.section_index(section);
        self.sections[index]
            .1
            .push((key.to_string(), value.to_string()));
    }

    /// Remove `key` from `section`; whether it was there.
    pub fn remove(&mut self, section: &str, key: &str) -> bool {
        let mut removed = false;
        for (name, entries) in self.sections.iter_mut().filter(|(n, _)| n == section) {
            let _ = name;
            let before = entries.len();
            entries.retain(|(k, _)| k != key);
            removed |= entries.len() != before;
        }
        removed
    }

    /// Serialise, quoting values that INI readers would otherwise split or trim.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (name, entries) in &self.sections {
            if entries.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("[{name}]\n"));
            for (key, value) in entries {
                out.push_str(&format!("{key}={}\n", quote(value)));
            }
        }
        out
    }

    /// The stored passphrase hash, if one is set. A value in an unknown format is an error, not
    /// "unset": an administrator must not silently lose a passphrase.
    pub fn passphrase(&self) -> Result<Option<PassphraseHash>> {
        match self.get(GENERAL, PASSPHRASE_KEY) {
            None | Some("") => Ok(None),
            Some(value) => PassphraseHash::parse(value).map(Some),
        }
    }

    /// Store `hash`, or clear the passphrase with `None`.
    pub fn set_passphrase(&mut self, hash: Option<&PassphraseHash>) {
        match hash {
            Some(hash) => self.set(GENERAL, PASSPHRASE_KEY, &hash.to_setting()),
            None => {
                self.remove(GENERAL, PASSPHRASE_KEY);
            }
        }
    }

    fn section_index(&mut self, name: &str) -> usize {
        match self.sections.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                self.sections.push((name.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        }
    }
}

fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value.contains(|c: char| matches!(c, ',' | ';' | '"' | '\\' | '#') || c.is_control())
        && value.trim() == value;
    if plain || value.is_empty() {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return Some(value.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// The settings file on disk: read without a lock (replacement is atomic), modified under the
/// lock of its directory.
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
    mode: FileMode,
}

impl SettingsFile {
    /// The file at `path`, written with `mode`.
    pub fn new(path: impl Into<PathBuf>, mode: FileMode) -> SettingsFile {
        SettingsFile {
            path: path.into(),
            mode,
        }
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read it; a missing file is an empty document.
    pub fn load(&self) -> Result<Ini> {
        self.parse(fsutil::read_optional(&self.path)?)
    }

    /// Read, change and replace it under the lock, so concurrent writers never lose each other's
    /// keys. A file that cannot be parsed (damaged) is kept under a second name, with its mode,
    /// and replaced by one holding the change alone: setting the passphrase again is then how an
    /// administrator mends it, without editing the file, where every read of it fails.
    pub fn update<R>(&self, change: impl FnOnce(&mut Ini) -> R) -> Result<R> {
        fsutil::update(&self.path, self.mode, |bytes| self.changed(bytes, change))
    }

    /// As [`Self::update`], once `allowed`, asked under the file's lock, has said yes; when
    /// it says no, nothing is read or written and the answer is `None`. A condition that can
    /// change meanwhile (whether the requester is still trusted) is then checked in the same
    /// order as the writes: a change whose requester was removed before another writer's change
    /// cannot land after it.
    pub fn update_if<R>(
        &self,
        allowed: impl FnOnce() -> Result<bool>,
        change: impl FnOnce(&mut Ini) -> R,
    ) -> Result<Option<R>> {
        let file = fsutil::LockedFile::lock(&self.path, self.mode)?;
        if !allowed()? {
            return Ok(None);
        }
        let (result, contents) = self.changed(file.read()?, change)?;
        file.replace(&contents)?;
        Ok(Some(result))
    }

    /// The file's new contents: `bytes` (the file as it was, if any) with `change` made, and
    /// what `change` returned.
    fn changed<R>(
        &self,
        bytes: Option<Vec<u8>>,
        change: impl FnOnce(&mut Ini) -> R,
    ) -> Result<(R, Vec<u8>)> {
        let mut ini = match self.parse(bytes.clone()) {
            Ok(ini) => ini,
            Err(e @ Error::Settings { .. }) => {
                let kept = fsutil::aside_name(&self.path, "damaged");
                fsutil::write_atomic(&kept, &bytes.unwrap_or_default(), self.mode)?;
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    kept = %kept.display(),
                    "the settings file could not be read; it was kept under another name and is \
                     written anew"
                );
                Ini::default()
            }
            Err(e) => return Err(e),
        };
        let result = change(&mut ini);
        Ok((result, ini.to_text().into_bytes()))
    }

    fn parse(&self, bytes: Option<Vec<u8>>) -> Result<Ini> {
        match bytes {
            None => Ok(Ini::default()),
            Some(bytes) => Ini::parse(&String::from_utf8_lossy(&bytes), &self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_shown_back_escaped_and_bounded() {
        assert_eq!(
            shown_key("local.passphrase=hunter2"),
            "local.passphrase=..."
        );
        assert_eq!(
            shown_key("x\n\u{1b}[31mFAKE\r"),
            "x\\u{000a}\\u{001b}[31mFAKE\\u{000d}"
        );
        let long = "k".repeat(60_000);
        assert_eq!(shown_key(&long), format!("{}...", "k".repeat(64)));
    }

    #[test]
    fn parses_multipass_style_file() {
        let text = "[General]\nlocal.passphrase=abc\nother=1\n\n[Other]\nx = y \n";
        let ini = Ini::parse(text, Path::new("t")).unwrap();
        assert_eq!(ini.get(GENERAL, PASSPHRASE_KEY), Some("abc"));
        assert_eq!(ini.get("Other", "x"), Some("y"));
        assert_eq!(ini.get("Other", "missing"), None);
    }

    #[test]
    fn argon2_value_roundtrips_quoted() {
        let mut ini = Ini::default();
        let value = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
        ini.set(GENERAL, PASSPHRASE_KEY, value);
        let text = ini.to_text();
        assert!(text.contains('"'), "commas must be quoted: {text}");
        let back = Ini::parse(&text, Path::new("t")).unwrap();
        assert_eq!(back.get(GENERAL, PASSPHRASE_KEY), Some(value));
    }

    #[test]
    fn unknown_keys_survive_a_write() {
        let mut ini = Ini::parse("[General]\nfoo=bar\n[Z]\nq=1\n", Path::new("t")).unwrap();
        ini.set(GENERAL, PASSPHRASE_KEY, "x");
        let back = Ini::parse(&ini.to_text(), Path::new("t")).unwrap();
        assert_eq!(back.get(GENERAL, "foo"), Some("bar"));
        assert_eq!(back.get("Z", "q"), Some("1"));
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let err = Ini::parse("[General]\nnot a pair\n", Path::new("conf")).unwrap_err();
        assert_eq!(err.to_string(), "conf:2: expected key=value");
        assert!(Ini::parse("[General\n", Path::new("t")).is_err());
        assert!(Ini::parse("a=\"open\n", Path::new("t")).is_err());
    }

    #[test]
    fn update_is_atomic_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = SettingsFile::new(dir.path().join("multipassd.conf"), FileMode::PRIVATE);
        file.update(|ini| ini.set(GENERAL, "a", "1")).unwrap();
        file.update(|ini| ini.set(GENERAL, "b", "2")).unwrap();
        let ini = file.load().unwrap();
        assert_eq!(ini.get(GENERAL, "a"), Some("1"));
        assert_eq!(ini.get(GENERAL, "b"), Some("2"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn passphrase_cleared_by_none() {
        let mut ini = Ini::default();
        let hash = PassphraseHash::new("x").unwrap();
        ini.set_passphrase(Some(&hash));
        assert!(ini.passphrase().unwrap().is_some());
        ini.set_passphrase(None);
        assert!(ini.passphrase().unwrap().is_none());
    }

    /// A damaged file fails every read, and the next write (setting the passphrase again) mends
    /// it, keeping the damaged one under a second name with its mode.
    #[test]
    fn a_damaged_file_is_mended_by_the_next_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("multipassd.conf");
        std::fs::write(&path, "[General]\nlocal.passphrase\n").unwrap();
        let file = SettingsFile::new(&path, FileMode::PRIVATE);
        assert!(file.load().is_err());
        file.update(|ini| ini.set(GENERAL, "a", "1")).unwrap();
        assert_eq!(file.load().unwrap().get(GENERAL, "a"), Some("1"));
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".conf.damaged-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(
            std::fs::read_to_string(&kept[0]).unwrap(),
            "[General]\nlocal.passphrase\n"
        );
        assert_eq!(
            std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Damaged again within the same second: the first one kept is not overwritten.
        std::fs::write(&path, "[General]\nsecond damage\n").unwrap();
        file.update(|ini| ini.set(GENERAL, "a", "2")).unwrap();
        let mut kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".conf.damaged-"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        kept.sort();
        assert_eq!(
            kept,
            [
                "[General]\nlocal.passphrase\n",
                "[General]\nsecond damage\n"
            ]
        );
    }
}
