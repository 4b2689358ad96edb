//! The trust store: which client certificates the daemon trusts.
//!
//! On disk it is what Multipass writes, a concatenation of PEM `CERTIFICATE` blocks, so the
//! documented recovery (`cat cert.pem | sudo tee -a store.pem`) keeps working. Unlike Multipass:
//! - each block may be preceded by RFC 7468 explanatory text, `key: value` lines saying who the
//!   client is and how it was trusted; PEM readers skip such text;
//! - readers notice a changed file (by its inode, size and times) and reload it, so a hand edit
//!   takes effect without a restart;
//! - writers take the directory lock, re-read the file and merge, so nothing appended by hand is
//!   lost, and replace the file atomically.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};
use crate::fsutil::{self, FileMode, LockedFile};
use crate::pki::Fingerprint;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";
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
    rewritten: bool,
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
    fn pem_from(&self, first: usize) -> String {
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

/// What identifies one version of the file, cheaply: a changed key means reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    fn stat(path: &Path) -> Result<Option<FileKey>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(FileKey::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

struct Cached {
    key: Option<FileKey>,
    bundle: Arc<Bundle>,
    loaded: bool,
}

/// The trust store file, shared by every request of the daemon (and used by the helper).
pub struct TrustStore {
    path: PathBuf,
    mode: FileMode,
    cache: Mutex<Cached>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("path", &self.path)
            .finish()
    }
}

/// How many times a writer re-reads when the file keeps changing under it (hand appends take no
/// lock) before giving up.
const MERGE_ATTEMPTS: usize = 20;

impl TrustStore {
    /// The store at `path`; files it writes get `mode`. Nothing is read yet.
    pub fn new(path: impl Into<PathBuf>, mode: FileMode) -> TrustStore {
        TrustStore {
            path: path.into(),
            mode,
            cache: Mutex::new(Cached {
                key: None,
                bundle: Arc::new(Bundle::default()),
                loaded: false,
            }),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current content, re-read if the file changed since last time.
    pub fn current(&self) -> Result<Arc<Bundle>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = FileKey::stat(&self.path)?;
        if cache.loaded && cache.key == key {
            return Ok(cache.bundle.clone());
        }
        let (bundle, key) = self.read()?;
        if cache.loaded {
            tracing::info!(
                path = %self.path.display(),
                certificates = bundle.len(),
                "trust store changed on disk; reloaded"
            );
        }
        if bundle.skipped() > 0 {
            tracing::warn!(
                path = %self.path.display(),
                skipped = bundle.skipped(),
                "trust store holds blocks that are not certificates; ignoring them"
            );
        }
        let bundle = Arc::new(bundle);
        *cache = Cached {
            key,
            bundle: bundle.clone(),
            loaded: true,
        };
        Ok(bundle)
    }

    /// Whether `fingerprint` is trusted now.
    pub fn is_trusted(&self, fingerprint: &Fingerprint) -> Result<bool> {
        Ok(self.current()?.contains(fingerprint))
    }

    /// Trust `entry`'s certificate. Returns `false` if it already was (its metadata is kept).
    pub fn add(&self, entry: Entry) -> Result<bool> {
        self.modify(|bundle| bundle.insert(entry.clone()))
    }

    /// Stop trusting `fingerprint`; the removed entry, if it was there.
    pub fn remove(&self, fingerprint: &Fingerprint) -> Result<Option<Entry>> {
        self.modify(|bundle| bundle.remove(fingerprint))
    }

    /// Apply `change` to the file's current content under the writers' lock and replace the file
    /// if anything changed. `change` returns its result, which tells whether to write: `true`, or
    /// `Some(_)`, means changed. It may run more than once if the file changes meanwhile.
    pub fn modify<R: Changed>(&self, mut change: impl FnMut(&mut Bundle) -> R) -> Result<R> {
        let file = LockedFile::lock(&self.path, self.mode)?;
        for _ in 0..MERGE_ATTEMPTS {
            let (mut bundle, key) = self.read_for_write(&file)?;
            let before = bundle.len();
            let result = change(&mut bundle);
            if !result.changed() {
                self.remember(bundle, key);
                return Ok(result);
            }
            // Something changed on disk since our read (a hand append takes no lock): start over
            // from the file as it is now.
            if FileKey::stat(&self.path)? != key {
                continue;
            }
            // Only additions: append them. An unlocked `tee -a` racing with us lands before or
            // after our entries, never in a file that a rename then discards.
            if let Some(key) = key.filter(|_| !bundle.rewritten && bundle.len() > before) {
                match self.append(&bundle.pem_from(before), key)? {
                    Appended::Done(now) => {
                        self.remember(bundle, now);
                        return Ok(result);
                    }
                    Appended::Changed => continue,
                    Appended::NotOurs => {}
                }
            }
            let text = bundle.to_pem();
            file.replace(text.as_bytes())?;
            // Cache what we wrote only if the file is still exactly that.
            let now = FileKey::stat(&self.path)?.filter(|k| k.size == text.len() as u64);
            self.remember(bundle, now);
            return Ok(result);
        }
        Err(Error::Write {
            path: self.path.clone(),
            source: std::io::Error::other("the file kept changing while being merged"),
        })
    }

    /// Append `text` to the file read as `key`, durably. On failure the file is cut back to its
    /// previous length (unless someone else appended meanwhile), so a refused change leaves
    /// nothing behind.
    fn append(&self, text: &str, key: FileKey) -> Result<Appended> {
        use std::io::Write;
        use std::os::unix::fs::{FileExt, OpenOptionsExt};
        let write_err = |source| Error::Write {
            path: self.path.clone(),
            source,
        };
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
        {
            Ok(f) => f,
            // Not ours to append to (e.g. created by root with `tee -a`): rewrite instead.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Ok(Appended::NotOurs)
            }
            Err(e) => return Err(write_err(e)),
        };
        let meta = file.metadata().map_err(write_err)?;
        if FileKey::of(&meta) != key {
            return Ok(Appended::Changed);
        }
        // Appending keeps owner and mode: only when they are already the ones a rewrite would
        // give; otherwise the rewrite puts them right.
        let owner_ok = match self.mode.owner {
            Some((uid, gid)) => meta.uid() == uid && meta.gid() == gid,
            None => meta.uid() == nix::unistd::geteuid().as_raw(),
        };
        if !meta.file_type().is_file() || meta.mode() & 0o7777 != self.mode.mode || !owner_ok {
            return Ok(Appended::NotOurs);
        }
        let mut bytes = Vec::with_capacity(text.len() + 1);
        if key.size > 0 {
            // A file that does not end its last line (edited by hand) gets the newline first.
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, key.size - 1)
                .map_err(write_err)?;
            if last[0] != b'\n' {
                bytes.push(b'\n');
            }
        }
        bytes.extend_from_slice(text.as_bytes());
        let mut written = 0;
        let outcome = (|| -> std::io::Result<()> {
            while written < bytes.len() {
                match file.write(&bytes[written..]) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            file.sync_data()
        })();
        let size_now = file.metadata().map(|m| m.size()).ok();
        if let Err(e) = outcome {
            if size_now == Some(key.size + written as u64) {
                let _ = file.set_len(key.size).and_then(|()| file.sync_data());
            } else {
                tracing::warn!(
                    path = %self.path.display(),
                    "a failed append could not be undone (the file changed meanwhile); \
                     readers skip the incomplete block"
                );
            }
            return Err(write_err(e));
        }
        // Cache what we appended only if nobody else appended meanwhile.
        let exact = size_now == Some(key.size + bytes.len() as u64);
        Ok(Appended::Done(if exact {
            file.metadata().ok().map(|m| FileKey::of(&m))
        } else {
            None
        }))
    }

    /// The file's content for a writer holding the lock: what the cache holds if the file is
    /// still the version it was read or written as (same inode, size, modification and change
    /// times), else the file read again. Writers follow each other under the lock, and each one
    /// remembers what it wrote, so a crowd of enrolments parses the file once, not once each.
    fn read_for_write(&self, file: &LockedFile) -> Result<(Bundle, Option<FileKey>)> {
        let key = FileKey::stat(&self.path)?;
        if key.is_some() {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.loaded && cache.key == key {
                let mut bundle = (*cache.bundle).clone();
                bundle.rewritten = false;
                return Ok((bundle, key));
            }
        }
        Ok(parse_read(file.read_with_metadata()?))
    }

    fn read(&self) -> Result<(Bundle, Option<FileKey>)> {
        Ok(parse_read(fsutil::read_with_metadata(&self.path)?))
    }

    fn remember(&self, bundle: Bundle, key: Option<FileKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        *cache = Cached {
            key,
            bundle: Arc::new(bundle),
            loaded: true,
        };
    }
}

/// The bundle of a file read with its metadata (nothing when missing), and the key of that
/// version of the file: both come from one open file, so they describe one version.
fn parse_read(read: Option<(Vec<u8>, std::fs::Metadata)>) -> (Bundle, Option<FileKey>) {
    match read {
        None => (Bundle::default(), None),
        Some((bytes, meta)) => (Bundle::parse(&bytes), Some(FileKey::of(&meta))),
    }
}

/// How [`TrustStore::append`] went.
enum Appended {
    /// Appended and synced; the file's key if the file is exactly what we know.
    Done(Option<FileKey>),
    /// The file changed since it was read: start over.
    Changed,
    /// The file's owner or mode is not ours: rewrite it instead.
    NotOurs,
}

/// Whether a [`TrustStore::modify`] closure changed the bundle.
pub trait Changed {
    /// `true` when the file must be written.
    fn changed(&self) -> bool;
}

impl Changed for bool {
    fn changed(&self) -> bool {
        *self
    }
}

impl<T> Changed for Option<T> {
    fn changed(&self) -> bool {
        self.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::new_client_cert;

    fn cert() -> (String, CertificateDer<'static>) {
        let (pem, _) = new_client_cert(time::OffsetDateTime::now_utc()).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        (pem, der)
    }

    fn store(dir: &Path) -> TrustStore {
        TrustStore::new(dir.join("store.pem"), FileMode::PRIVATE)
    }

    #[test]
    fn empty_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(store(dir.path()).current().unwrap().is_empty());
    }

    #[test]
    fn add_then_trusted_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, der) = cert();
        let meta = Metadata {
            name: Some("alice".into()),
            uid: Some(1000),
            user: Some("alice".into()),
            how: Some(Enrolment::Passphrase),
            when: Some("2026-01-01T00:00:00Z".into()),
        };
        assert!(s.add(Entry::new(der.clone(), meta.clone())).unwrap());
        assert!(!s.add(Entry::new(der.clone(), Metadata::default())).unwrap());
        let fresh = store(dir.path());
        let bundle = fresh.current().unwrap();
        let entry = bundle.get(&Fingerprint::of(&der)).unwrap();
        assert_eq!(entry.metadata, meta);
    }

    #[test]
    fn unique_names_take_the_first_free_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let named = |name: &str| Metadata {
            name: Some(name.into()),
            ..Metadata::default()
        };
        s.modify(|bundle| {
            assert_eq!(bundle.unique_name("alice"), "alice");
            bundle.insert(Entry::new(cert().1, named("alice")));
            bundle.insert(Entry::new(cert().1, named("alice-3")));
            assert_eq!(bundle.unique_name("alice"), "alice-2");
            bundle.insert(Entry::new(cert().1, named("alice-2")));
            assert_eq!(bundle.unique_name("alice"), "alice-4");
            assert_eq!(bundle.unique_name("bob"), "bob");
            // Never longer than a name may be, even for a base of the longest length.
            let long = "é".repeat(32);
            bundle.insert(Entry::new(cert().1, named(&long)));
            let unique = bundle.unique_name(&long);
            assert!(unique.len() <= crate::names::MAX_NAME_LEN, "{unique}");
            assert!(unique.ends_with("-2") && long.starts_with(&unique[..unique.len() - 2]));
            true
        })
        .unwrap();
    }

    #[test]
    fn hand_appended_block_is_noticed_and_kept_by_writers() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, first) = cert();
        s.add(Entry::new(first.clone(), Metadata::default()))
            .unwrap();
        assert_eq!(s.current().unwrap().len(), 1);
        // `tee -a`, as the documented recovery does.
        let (pem, by_hand) = cert();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.path())
            .unwrap();
        f.write_all(pem.as_bytes()).unwrap();
        drop(f);
        assert!(s.is_trusted(&Fingerprint::of(&by_hand)).unwrap());
        let (_, third) = cert();
        s.add(Entry::new(third.clone(), Metadata::default()))
            .unwrap();
        let bundle = store(dir.path()).current().unwrap();
        assert_eq!(bundle.len(), 3);
        assert_eq!(
            bundle.get(&Fingerprint::of(&by_hand)).unwrap().enrolment(),
            Enrolment::ByHand
        );
    }

    #[test]
    fn multipass_style_bundle_parses() {
        let (a, da) = cert();
        let (b, db) = cert();
        let text = format!("{a}{b}");
        let bundle = Bundle::parse(text.as_bytes());
        assert_eq!(bundle.len(), 2);
        assert!(bundle.contains(&Fingerprint::of(&da)) && bundle.contains(&Fingerprint::of(&db)));
        // And what we write is still such a bundle for a plain PEM reader.
        let written = bundle.to_pem();
        let plain: Vec<_> = CertificateDer::pem_slice_iter(written.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(plain, vec![da, db]);
    }

    #[test]
    fn damaged_and_foreign_blocks_are_skipped() {
        let (a, da) = cert();
        let text = format!(
            "junk line\n{BEGIN}\n!!!notbase64\n{END}\n{a}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{BEGIN}\nMIIB"
        );
        let bundle = Bundle::parse(text.as_bytes());
        assert_eq!(bundle.len(), 1);
        assert!(bundle.contains(&Fingerprint::of(&da)));
        assert_eq!(bundle.skipped(), 2);
    }

    #[test]
    fn a_cut_block_does_not_swallow_the_next_one() {
        let (a, da) = cert();
        let (b, db) = cert();
        // An interrupted write, then a hand append: on its own line, or glued to the cut line.
        for cut in [format!("{BEGIN}\nMIIBcut\n"), format!("{BEGIN}\nMIIBcut")] {
            let text = format!("{a}name: torn\n{cut}{b}");
            let bundle = Bundle::parse(text.as_bytes());
            assert!(bundle.contains(&Fingerprint::of(&da)), "{text}");
            assert!(bundle.contains(&Fingerprint::of(&db)), "{text}");
            assert_eq!(bundle.len(), 2);
            assert_eq!(bundle.skipped(), 1);
            // The cut entry's metadata does not stick to the appended certificate.
            assert_eq!(
                bundle.get(&Fingerprint::of(&db)).unwrap().metadata,
                Metadata::default()
            );
        }
    }

    #[test]
    fn a_writer_after_a_writer_sees_a_hand_append_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, first) = cert();
        s.add(Entry::new(first, Metadata::default())).unwrap();
        // The next writer may start from what the first one wrote, but not past a hand append
        // that nobody has read yet.
        let (pem, by_hand) = cert();
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(s.path())
            .unwrap();
        f.write_all(pem.as_bytes()).unwrap();
        drop(f);
        let (_, third) = cert();
        s.add(Entry::new(third, Metadata::default())).unwrap();
        let bundle = store(dir.path()).current().unwrap();
        assert_eq!(bundle.len(), 3);
        assert!(bundle.get(&Fingerprint::of(&by_hand)).is_some());
    }

    #[test]
    fn metadata_of_a_torn_write_is_not_lent_to_a_hand_append() {
        let (_, torn) = cert();
        let torn_fp = Fingerprint::of(&torn);
        let mut written = Bundle::default();
        written.insert(Entry::new(
            torn,
            Metadata {
                name: Some("root".into()),
                uid: Some(0),
                how: Some(Enrolment::FirstClient),
                ..Metadata::default()
            },
        ));
        let text = written.to_pem();
        // Cut after the metadata lines, before the certificate; then an administrator appends
        // a certificate by hand (found by the admission model check).
        let cut = &text[..text.find(BEGIN).unwrap()];
        let (pem, by_hand) = cert();
        let bundle = Bundle::parse(format!("{cut}{pem}").as_bytes());
        assert_eq!(bundle.len(), 1);
        let entry = bundle.get(&Fingerprint::of(&by_hand)).unwrap();
        assert_eq!(entry.metadata, Metadata::default());
        assert_eq!(entry.enrolment(), Enrolment::ByHand);
        // The same cut, then an entry whose own metadata is only its `fingerprint:` line.
        let mut plain = Bundle::default();
        plain.insert(Entry::new(by_hand.clone(), Metadata::default()));
        let bundle = Bundle::parse(format!("{cut}{}", plain.to_pem()).as_bytes());
        assert_eq!(
            bundle.get(&Fingerprint::of(&by_hand)).unwrap().enrolment(),
            Enrolment::ByHand
        );
        // Cut inside the base64 instead, then a whole write: the whole write keeps its metadata.
        let cut = &text[..text.find(END).unwrap() - 10];
        let after = Bundle::parse(format!("{cut}\n{text}").as_bytes());
        assert_eq!(after.len(), 1);
        assert_eq!(after.skipped, 1);
        assert_eq!(
            after.get(&torn_fp).unwrap().enrolment(),
            Enrolment::FirstClient
        );
        // Metadata without the line (written by hand, or by earlier releases) still applies.
        let legacy = format!("name: laptop\nhow: admin\n{pem}");
        let entry = Bundle::parse(legacy.as_bytes())
            .get(&Fingerprint::of(&by_hand))
            .cloned()
            .unwrap();
        assert_eq!(entry.metadata.name.as_deref(), Some("laptop"));
        assert_eq!(entry.enrolment(), Enrolment::Admin);
    }

    #[test]
    fn additions_are_appended_in_place_and_removals_rewrite() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, a) = cert();
        let (_, b) = cert();
        s.add(Entry::new(a.clone(), Metadata::default())).unwrap();
        let first = std::fs::metadata(s.path()).unwrap();
        let before = std::fs::read_to_string(s.path()).unwrap();
        s.add(Entry::new(b.clone(), Metadata::default())).unwrap();
        let second = std::fs::metadata(s.path()).unwrap();
        assert_eq!(
            first.ino(),
            second.ino(),
            "an addition appends to the same file"
        );
        assert!(std::fs::read_to_string(s.path())
            .unwrap()
            .starts_with(&before));
        assert_eq!(store(dir.path()).current().unwrap().len(), 2);
        s.remove(&Fingerprint::of(&a)).unwrap();
        let third = std::fs::metadata(s.path()).unwrap();
        assert_ne!(second.ino(), third.ino(), "a removal replaces the file");
        let bundle = store(dir.path()).current().unwrap();
        assert_eq!(bundle.len(), 1);
        assert!(bundle.contains(&Fingerprint::of(&b)));
    }

    #[test]
    fn appending_supplies_a_missing_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (a, da) = cert();
        crate::fsutil::write_atomic(s.path(), a.trim_end().as_bytes(), FileMode::PRIVATE).unwrap();
        let (_, db) = cert();
        s.add(Entry::new(db.clone(), Metadata::default())).unwrap();
        let bundle = store(dir.path()).current().unwrap();
        assert!(bundle.contains(&Fingerprint::of(&da)) && bundle.contains(&Fingerprint::of(&db)));
        assert_eq!(bundle.skipped(), 0);
    }

    #[test]
    fn a_store_with_another_mode_is_rewritten_with_ours() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (a, _) = cert();
        // Created by `tee -a` under a 022 umask.
        std::fs::write(s.path(), a).unwrap();
        std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let (_, db) = cert();
        s.add(Entry::new(db, Metadata::default())).unwrap();
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store(dir.path()).current().unwrap().len(), 2);
    }

    #[test]
    fn metadata_cannot_inject_a_block() {
        let (_, der) = cert();
        let mut bundle = Bundle::default();
        bundle.insert(Entry::new(
            der,
            Metadata {
                name: Some(format!("x\n{BEGIN}\nAAAA\n{END}")),
                ..Metadata::default()
            },
        ));
        let back = Bundle::parse(bundle.to_pem().as_bytes());
        assert_eq!(back.len(), 1);
        assert_eq!(back.skipped(), 0);
    }

    #[test]
    fn metadata_reads_as_it_would_be_written() {
        let (a, da) = cert();
        let nine = "-".repeat(9);
        let long = "x".repeat(300);
        let text =
            format!("name: {nine}BEGIN CERTIFICATE{nine}\nuser: a\u{8}b \nwhen: {long}\n{a}");
        let bundle = Bundle::parse(text.as_bytes());
        let meta = &bundle.get(&Fingerprint::of(&da)).unwrap().metadata;
        assert!(!meta.name.as_ref().unwrap().contains("-----"));
        assert_eq!(meta.user.as_deref(), Some("ab"));
        assert_eq!(meta.when.as_ref().unwrap().len(), 128);
        let back = Bundle::parse(bundle.to_pem().as_bytes());
        assert_eq!(back.skipped(), 0);
        assert_eq!(&back.get(&Fingerprint::of(&da)).unwrap().metadata, meta);
        assert_eq!(back.to_pem(), bundle.to_pem());
    }

    #[test]
    fn metadata_drops_bidi_and_separator_characters() {
        let (a, da) = cert();
        let text =
            format!("name: admin\u{202E}\u{2066}x\u{2028}y\u{FEFF}\nuser: r\u{200F}oot\n{a}");
        let bundle = Bundle::parse(text.as_bytes());
        let meta = &bundle.get(&Fingerprint::of(&da)).unwrap().metadata;
        assert_eq!(meta.name.as_deref(), Some("adminxy"));
        assert_eq!(meta.user.as_deref(), Some("root"));
        assert!(!bundle.to_pem().contains('\u{202E}'));
    }

    #[test]
    fn remove_keeps_others() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (_, a) = cert();
        let (_, b) = cert();
        s.add(Entry::new(a.clone(), Metadata::default())).unwrap();
        s.add(Entry::new(b.clone(), Metadata::default())).unwrap();
        assert!(s.remove(&Fingerprint::of(&a)).unwrap().is_some());
        assert!(s.remove(&Fingerprint::of(&a)).unwrap().is_none());
        let bundle = store(dir.path()).current().unwrap();
        assert_eq!(bundle.len(), 1);
        assert!(bundle.contains(&Fingerprint::of(&b)));
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.pem");
        let certs: Vec<_> = (0..16).map(|_| cert().1).collect();
        std::thread::scope(|scope| {
            for der in &certs {
                let path = path.clone();
                scope.spawn(move || {
                    // A store object per writer, as separate processes would have.
                    let s = TrustStore::new(path, FileMode::PRIVATE);
                    s.add(Entry::new(der.clone(), Metadata::default())).unwrap();
                });
            }
        });
        let bundle = TrustStore::new(path, FileMode::PRIVATE).current().unwrap();
        assert_eq!(bundle.len(), certs.len());
    }
}
