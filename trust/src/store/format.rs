//! The file format: PEM `CERTIFICATE` blocks, each preceded by `key: value` metadata lines
//! (RFC 7468 explanatory text) saying who the client is and how it was trusted.

use std::collections::HashMap;
use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::pki::Fingerprint;

pub(super) const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
pub(super) const END: &str = "-----END CERTIFICATE-----";
/// The metadata key naming the certificate its metadata belongs to.
const FINGERPRINT_KEY: &str = "fingerprint";

/// How a client came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enrolment {
    /// The first admin client on a fresh service.
    FirstClient,
    /// `multipass authenticate` with the passphrase.
    Passphrase,
    /// `multipass authenticate` with a one-time token.
    Token,
    /// An administrator, through the polkit-guarded helper.
    Admin,
    /// Appended to the file by hand (a block without metadata).
    ByHand,
}

impl Enrolment {
    /// The word stored in the file and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Enrolment::FirstClient => "first-client",
            Enrolment::Passphrase => "passphrase",
            Enrolment::Token => "token",
            Enrolment::Admin => "admin",
            Enrolment::ByHand => "by-hand",
        }
    }

    fn parse(word: &str) -> Option<Enrolment> {
        Some(match word {
            "first-client" => Enrolment::FirstClient,
            "passphrase" => Enrolment::Passphrase,
            "token" => Enrolment::Token,
            "admin" => Enrolment::Admin,
            "by-hand" => Enrolment::ByHand,
            _ => return None,
        })
    }
}

impl fmt::Display for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What we know about a trusted client besides its certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// A name for people (defaults to the enrolling user's login name).
    pub name: Option<String>,
    /// Uid of the user whose connection enrolled it.
    pub uid: Option<u32>,
    /// Login name of that user.
    pub user: Option<String>,
    /// How it was trusted; absent means added by hand.
    pub how: Option<Enrolment>,
    /// When, RFC 3339.
    pub when: Option<String>,
}

impl Metadata {
    fn apply(&mut self, key: &str, value: &str) -> bool {
        let value = sanitize(value);
        let value = value.as_str();
        match key {
            "name" => self.name = Some(value.to_string()),
            "uid" => self.uid = value.parse().ok(),
            "user" => self.user = Some(value.to_string()),
            "how" => self.how = Enrolment::parse(value),
            "when" => self.when = Some(value.to_string()),
            _ => return false,
        }
        true
    }

    fn write(&self, out: &mut String) {
        let mut line = |key: &str, value: &str| {
            out.push_str(key);
            out.push_str(": ");
            out.push_str(&sanitize(value));
            out.push('\n');
        };
        if let Some(v) = &self.name {
            line("name", v);
        }
        if let Some(v) = self.uid {
            line("uid", &v.to_string());
        }
        if let Some(v) = &self.user {
            line("user", v);
        }
        if let Some(v) = self.how {
            line("how", v.as_str());
        }
        if let Some(v) = &self.when {
            line("when", v);
        }
    }
}

/// Metadata values are single printable lines of at most 128 characters that cannot be mistaken
/// for a PEM boundary, without the characters names may not hold ([`crate::names`]: controls,
/// bidirectional and other format characters, line and paragraph separators), so that a
/// hand-edited entry cannot make a listing lie either. Applied when reading too, so that what
/// is read is exactly what would be written (found by fuzzing: a control character or an
/// overlong value read from the file was silently changed by the next rewrite; and a single
/// pass turned nine dashes into five).
fn sanitize(value: &str) -> String {
    let mut clean: String = value
        .chars()
        .filter(|&c| !crate::names::is_forbidden(c))
        .collect();
    while clean.contains("-----") {
        clean = clean.replace("-----", "-");
    }
    let clean: String = clean.trim().chars().take(128).collect();
    clean.trim_end().to_string()
}

/// One trusted certificate.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The certificate, exact DER: the identity.
    pub certificate: CertificateDer<'static>,
    /// Its SHA-256.
    pub fingerprint: Fingerprint,
    /// Who and how.
    pub metadata: Metadata,
}

impl Entry {
    /// An entry for `certificate`.
    pub fn new(certificate: CertificateDer<'static>, metadata: Metadata) -> Entry {
        Entry {
            fingerprint: Fingerprint::of(&certificate),
            certificate,
            metadata,
        }
    }

    /// How it was trusted.
    pub fn enrolment(&self) -> Enrolment {
        self.metadata.how.unwrap_or(Enrolment::ByHand)
    }
}

/// The parsed content of a trust store file.
#[derive(Debug, Clone, Default)]
pub struct Bundle {
    entries: Vec<Entry>,
    index: HashMap<Fingerprint, usize>,
    skipped: usize,
    /// Set by any change other than adding entries at the end: the file must then be rewritten
    /// rather than appended to.
    pub(super) rewritten: bool,
}

impl Bundle {
    /// Parse a store file. Never fails: text that is not a certificate block or metadata is
    /// skipped (and counted in [`Bundle::skipped`]), as PEM readers do.
    pub fn parse(bytes: &[u8]) -> Bundle {
        let text = String::from_utf8_lossy(bytes);
        let mut bundle = Bundle::default();
        let mut pending = Metadata::default();
        // The `fingerprint:` line that opens the metadata of entries we write: metadata is given
        // only to the certificate it names, so the metadata of a write torn before its
        // certificate is never lent to a certificate appended by hand after it.
        let mut pending_for: Option<Option<Fingerprint>> = None;
        let mut block: Option<String> = None;
        for line in text.lines() {
            let trimmed = line.trim();
            // A boundary ends any block in progress: a block cut short (an interrupted write)
            // followed by a hand append must not swallow the appended certificate. Text glued
            // before the boundary (the cut block had no final newline) belongs to the cut block.
            if trimmed.ends_with(BEGIN) {
                if block.take().is_some() {
                    bundle.skipped += 1;
                    pending = Metadata::default();
                    pending_for = None;
                } else if trimmed != BEGIN {
                    pending = Metadata::default();
                    pending_for = None;
                }
                let mut b = String::with_capacity(1024);
                b.push_str(BEGIN);
                b.push('\n');
                block = Some(b);
                continue;
            }
            // A metadata line also ends a block in progress: base64 has no colon, so the block
            // was cut short and the next writer's metadata belongs to the next certificate.
            if block.is_some() && trimmed.contains(':') {
                block = None;
                bundle.skipped += 1;
                pending = Metadata::default();
                pending_for = None;
            }
            match &mut block {
                None => {
                    if let Some((key, value)) = trimmed.split_once(':') {
                        if key.trim() == FINGERPRINT_KEY {
                            // It opens an entry: what came before belongs to a torn write.
                            pending = Metadata::default();
                            pending_for = Some(Fingerprint::from_hex(value.trim()));
                        } else {
                            pending.apply(key.trim(), value);
                        }
                    }
                }
                Some(b) => {
                    b.push_str(trimmed);
                    b.push('\n');
                    if trimmed == END {
                        match CertificateDer::from_pem_slice(b.as_bytes()) {
                            Ok(der) => {
                                let mut entry = Entry::new(der, std::mem::take(&mut pending));
                                if pending_for.is_some_and(|f| f != Some(entry.fingerprint)) {
                                    entry.metadata = Metadata::default();
                                }
                                bundle.insert(entry);
                            }
                            Err(_) => bundle.skipped += 1,
                        }
                        pending = Metadata::default();
                        pending_for = None;
                        block = None;
                    }
                }
            }
        }
        if block.is_some() {
            // A block cut short, e.g. by an interrupted `tee -a`.
            bundle.skipped += 1;
        }
        bundle
    }

    /// The file content: each entry's metadata, then its PEM block.
    pub fn to_pem(&self) -> String {
        self.pem_from(0)
    }

    /// The file text of the entries from the `first`-th on.
    pub(super) fn pem_from(&self, first: usize) -> String {
        let mut out = String::with_capacity(self.entries.len().saturating_sub(first) * 800);
        for entry in &self.entries[first.min(self.entries.len())..] {
            // First, so that any metadata line that survives a torn write comes after it.
            out.push_str(FINGERPRINT_KEY);
            out.push_str(": ");
            out.push_str(&entry.fingerprint.to_hex());
            out.push('\n');
            entry.metadata.write(&mut out);
            out.push_str(&crate::pki::certificate_pem(&entry.certificate));
        }
        out
    }

    /// Whether `fingerprint` is trusted.
    pub fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.index.contains_key(fingerprint)
    }

    /// The entry for `fingerprint`.
    pub fn get(&self, fingerprint: &Fingerprint) -> Option<&Entry> {
        self.index.get(fingerprint).map(|&i| &self.entries[i])
    }

    /// Add `entry`; `false` (and nothing changes) if its certificate is already there.
    pub fn insert(&mut self, entry: Entry) -> bool {
        if self.index.contains_key(&entry.fingerprint) {
            return false;
        }
        self.index.insert(entry.fingerprint, self.entries.len());
        self.entries.push(entry);
        true
    }

    /// `base`, or if a client already has that name, `base-2`, `base-3`... the first that none
    /// has; `base` is shortened when the suffix would make a name longer than names may be.
    pub fn unique_name(&self, base: &str) -> String {
        let taken = |name: &str| {
            self.entries
                .iter()
                .any(|e| e.metadata.name.as_deref() == Some(name))
        };
        if !taken(base) {
            return base.to_string();
        }
        (2..)
            .map(|n| {
                let suffix = format!("-{n}");
                let mut head = crate::names::MAX_NAME_LEN.saturating_sub(suffix.len());
                while !base.is_char_boundary(head.min(base.len())) {
                    head -= 1;
                }
                format!("{}{suffix}", &base[..head.min(base.len())])
            })
            .find(|name| !taken(name))
            .expect("some suffix is free")
    }

    /// Remove the entry for `fingerprint`.
    pub fn remove(&mut self, fingerprint: &Fingerprint) -> Option<Entry> {
        let i = self.index.remove(fingerprint)?;
        self.rewritten = true;
        let entry = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(entry)
    }

    /// Number of trusted certificates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nobody is trusted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Blocks that were not certificates (damaged or of another PEM type).
    pub fn skipped(&self) -> usize {
        self.skipped
    }
}
