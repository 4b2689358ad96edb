//! The trust store: which client certificates the daemon trusts.
//!
//! On disk it is what Multipass writes, a concatenation of PEM `CERTIFICATE` blocks, so the
//! documented recovery (`cat cert.pem | sudo tee -a store.pem`) keeps working. Unlike Multipass:
//! - each block may be preceded by RFC 7468 explanatory text, `key: value` lines saying who the
//!   client is and how it was trusted; PEM readers skip such text;
//! - readers notice a changed file (by its inode, size and times) and reload it, so a hand edit
//!   takes effect without a restart;
//! - writers take the directory lock, re-read the file and merge, so nothing appended by hand is
//!   lost: additions are appended, other changes replace the file atomically.
//!
//! The file format is in `format`, the writers' protocol (merge, append or replace) in `write`;
//! this module holds the cached store that readers share.

mod format;
mod write;

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::fsutil::{self, FileMode};
use crate::pki::Fingerprint;

pub use format::{Bundle, Enrolment, Entry, Metadata};
pub use write::Changed;

/// What [`TrustStore::enrol`] did.
#[derive(Debug)]
pub struct Enrolled {
    /// The client was not trusted before.
    pub added: bool,
    /// Nobody was trusted before.
    pub was_empty: bool,
    /// The name it is trusted under (its existing entry's, if it was trusted already).
    pub name: Option<String>,
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
        FileKey::stat_io(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    fn stat_io(path: &Path) -> std::io::Result<Option<FileKey>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(FileKey::of(&meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct Cached {
    key: Option<FileKey>,
    bundle: Arc<Bundle>,
    loaded: bool,
}

/// The pieces [`TrustStore::presence`] reads a file in: about 80 entries.
const LOOKUP_CHUNK: usize = 64 * 1024;

/// What a request needs to know of the store: whether its client is trusted, whether anybody is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    /// The fingerprint asked about is trusted.
    pub trusted: bool,
    /// Nobody is trusted.
    pub empty: bool,
    /// Answered from the whole store, as [`TrustStore::current`] has it; `false` when answered
    /// from the client's own entry while another thread was reading the file.
    pub whole: bool,
}

/// The trust store file, shared by every request of the daemon (and used by the helper).
pub struct TrustStore {
    path: PathBuf,
    mode: FileMode,
    cache: Mutex<Cached>,
    /// Set while a thread holding `cache` reads and parses the file, and from
    /// [`TrustStore::read_later`] until then.
    reading: AtomicBool,
    /// Held by the one request at a time that looks for its entry in the file instead of waiting
    /// for that read ([`TrustStore::presence`]): at most one more scan of the file at once.
    looking: Mutex<()>,
    /// Files this store's rewrites replaced, still open (see [`TrustStore::carry_late_appends`]).
    replaced: Mutex<Vec<Replaced>>,
}

/// A version of the file that a rewrite replaced, kept open: a hand append that opened it before
/// the rename (`tee -a` opens its file when it starts, and may write seconds later) writes into
/// it, where nobody reads.
struct Replaced {
    /// Tells it from the others after the list changed (see [`REPLACED_IDS`]).
    id: u64,
    file: std::fs::File,
    /// What of it has been read: its size when it was replaced, then what was carried over.
    read_to: u64,
    /// When it was replaced.
    kept: std::time::Instant,
}

/// Where [`Replaced::id`]s come from: unique in the process, so that a version is found again
/// after a write that may itself have replaced the file and changed the list.
static REPLACED_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Replaced versions kept open, the newest: a hand append is one command, so one is nearly
/// always enough; a few cover removals in quick succession.
const REPLACED_KEPT: usize = 8;
/// The most of a replaced version read at once: what a person appends by hand.
const LATE_APPEND_MAX: u64 = 1 << 20;
/// How long a replaced version is kept open: far longer than a hand append takes from opening
/// the file to writing, and short enough that deleted versions do not hold disk space for long.
const REPLACED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

thread_local! {
    /// Set while this thread holds the writers' lock in [`TrustStore::modify`]: carrying late
    /// appends over takes that lock, which is not re-entrant.
    static WRITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("path", &self.path)
            .finish()
    }
}

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
            reading: AtomicBool::new(false),
            looking: Mutex::new(()),
            replaced: Mutex::new(Vec::new()),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current content, re-read if the file changed since last time.
    pub fn current(&self) -> Result<Arc<Bundle>> {
        self.carry_late_appends();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = FileKey::stat(&self.path)?;
        if cache.loaded && cache.key == key {
            return Ok(cache.bundle.clone());
        }
        let (bundle, key) = {
            self.reading.store(true, Ordering::Release);
            let _done = Reading(&self.reading);
            self.read()?
        };
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
        if bundle.only_text() {
            tracing::warn!(
                path = %self.path.display(),
                "the trust store file is not empty but holds no certificate (damaged, or not a \
                 store): nobody is trusted, so the next administrator to connect becomes the \
                 first client. The file is kept; what is trusted from now on is appended to it"
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

    /// What [`TrustStore::current`] would give, if the file is still the version it holds:
    /// one `stat`, never a read. `None` when the file changed (or was never read).
    pub fn current_if_unchanged(&self) -> Option<Arc<Bundle>> {
        let key = FileKey::stat(&self.path).ok()?;
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        (cache.loaded && cache.key == key).then(|| cache.bundle.clone())
    }

    /// Say that the file will be read whole soon, by a thread of the caller's: until a read ends,
    /// [`TrustStore::presence`] looks for its client in the file instead of reading it whole
    /// first. The daemon puts a large store's first read off until the connection that started it
    /// has been served. Does nothing once the store has been read.
    pub fn read_later(&self) {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.loaded {
            self.reading.store(true, Ordering::Release);
        }
    }

    /// Whether `fingerprint` is trusted now.
    pub fn is_trusted(&self, fingerprint: &Fingerprint) -> Result<bool> {
        Ok(self.current()?.contains(fingerprint))
    }

    /// Whether `certificate`, whose SHA-256 is `fingerprint`, is trusted now and whether anybody
    /// is: what [`TrustStore::current`] says, without always waiting for it. While another thread
    /// reads the file (the daemon's first read, which takes milliseconds per thousand entries),
    /// and before that read when [`TrustStore::read_later`] announced it, the certificate's block
    /// is looked for in the file as it is now; only a client not found that way waits for, or
    /// makes, the whole read. The answer is about `fingerprint`: the certificate only says where
    /// to look.
    pub fn presence(&self, certificate: &[u8], fingerprint: &Fingerprint) -> Result<Presence> {
        self.carry_late_appends();
        if self.reading.load(Ordering::Acquire) {
            if let Ok(_turn) = self.looking.try_lock() {
                // A failed read is the whole read's to report.
                let found = fsutil::open_regular(&self.path).map(|file| {
                    file.is_some_and(|(file, _)| {
                        format::holds_certificate(&file, certificate, fingerprint, LOOKUP_CHUNK)
                            .unwrap_or(false)
                    })
                });
                if let Ok(true) = found {
                    return Ok(Presence {
                        trusted: true,
                        empty: false,
                        whole: false,
                    });
                }
            }
        }
        let bundle = self.current()?;
        Ok(Presence {
            trusted: bundle.contains(fingerprint),
            empty: bundle.is_empty(),
            whole: true,
        })
    }

    /// Trust `entry`'s certificate. Returns `false` if it already was (its metadata is kept).
    pub fn add(&self, entry: Entry) -> Result<bool> {
        self.modify(|bundle| bundle.insert(entry.clone()))
    }

    /// Trust `entry`'s certificate, as [`TrustStore::add`], under a name that no other client
    /// has and that no active token of `tokens` keeps for the client it will enroll: the
    /// entry's own, or else the first free of `name-2`, `name-3`... Two clients with one name
    /// could not be removed by it, and a token would not give its client the name it promised.
    pub fn enrol(
        &self,
        entry: Entry,
        tokens: Option<&crate::tokens::TokenStore>,
        now: time::OffsetDateTime,
    ) -> Result<Enrolled> {
        // Read before the store's lock, and without the token file's: the token file's lock is
        // never taken while the store's is held (a redemption lets go of the token file before
        // it enrols; a token's creation reads the store under the token file's lock, the one
        // order `DirLock` allows), so no two writers can wait for each other. A token
        // created with a name between this read and the write below is not seen: its client is
        // then made unique instead (a known limit, docs/SECURITY.md).
        let reserved: Vec<String> = tokens
            .and_then(|tokens| tokens.list().ok())
            .unwrap_or_default()
            .iter()
            .filter(|r| r.status(now) == crate::tokens::TokenStatus::Active)
            .filter_map(|r| r.client_name().map(str::to_string))
            .collect();
        let (mut was_empty, mut name) = (false, None);
        let added = self.modify(|bundle| {
            if let Some(existing) = bundle.get(&entry.fingerprint) {
                name = existing.metadata.name.clone();
                return false;
            }
            let mut entry = entry.clone();
            if let Some(base) = &entry.metadata.name {
                entry.metadata.name = Some(bundle.unique_name(base, &reserved));
            }
            name = entry.metadata.name.clone();
            was_empty = bundle.is_empty();
            bundle.insert(entry)
        })?;
        Ok(Enrolled {
            added,
            was_empty,
            name,
        })
    }

    /// Stop trusting `fingerprint`; the removed entry, if it was there.
    pub fn remove(&self, fingerprint: &Fingerprint) -> Result<Option<Entry>> {
        self.modify(|bundle| bundle.remove(fingerprint))
    }

    /// Keep the version of the file a rewrite just replaced open, from `read_to` on.
    pub(super) fn keep_replaced(&self, file: std::fs::File, read_to: u64) {
        let mut replaced = self.replaced.lock().unwrap_or_else(|e| e.into_inner());
        if replaced.len() == REPLACED_KEPT {
            replaced.remove(0);
        }
        replaced.retain(|version| version.kept.elapsed() < REPLACED_FOR);
        replaced.push(Replaced {
            id: REPLACED_IDS.fetch_add(1, Ordering::Relaxed),
            file,
            read_to,
            kept: std::time::Instant::now(),
        });
    }

    /// Add the certificates appended by hand to a version of the file that a rewrite of ours had
    /// replaced (their `tee -a` opened it before our rename and wrote after it): without this
    /// they would be lost with that version, although the command that appended them succeeded.
    /// Whole certificate blocks only; a block still being written is taken when it ends. Called
    /// before every read of the store, which costs one `fstat` per version kept, usually none.
    pub fn carry_late_appends(&self) {
        if WRITING.with(|w| w.get()) {
            return;
        }
        // What each version kept holds beyond what was read of it: read under the lock, taken
        // as read only once it is in the store, so that a failed write loses nothing.
        // (the version's id, how far it is read once these are in, the entries)
        let mut late: Vec<(u64, u64, Vec<Entry>)> = Vec::new();
        {
            let mut replaced = match self.replaced.try_lock() {
                Ok(replaced) => replaced,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            };
            replaced.retain(|version| version.kept.elapsed() < REPLACED_FOR);
            for version in replaced.iter_mut() {
                let Ok(meta) = version.file.metadata() else {
                    continue;
                };
                if meta.len() <= version.read_to {
                    continue;
                }
                let len = (meta.len() - version.read_to).min(LATE_APPEND_MAX) as usize;
                let mut bytes = vec![0; len];
                use std::os::unix::fs::FileExt;
                if version
                    .file
                    .read_exact_at(&mut bytes, version.read_to)
                    .is_err()
                {
                    continue;
                }
                match format::end_of_last_block(&bytes) {
                    Some(end) => late.push((
                        version.id,
                        version.read_to + end as u64,
                        Bundle::parse(&bytes[..end]).iter().cloned().collect(),
                    )),
                    // As much as a person appends, and not a block's end in it: not read again.
                    None if len as u64 == LATE_APPEND_MAX => version.read_to += len as u64,
                    None => {}
                }
            }
        }
        if late.is_empty() {
            return;
        }
        let mut added = 0;
        let written = self.modify(|bundle| {
            added = late
                .iter()
                .flat_map(|(_, _, entries)| entries)
                .filter(|entry| bundle.insert((*entry).clone()))
                .count();
            added > 0
        });
        if let Err(e) = written {
            // Tried again at the next read; the read itself goes on.
            tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot add certificates appended by hand to a replaced trust store file"
            );
            return;
        }
        let mut replaced = self.replaced.lock().unwrap_or_else(|e| e.into_inner());
        // By id: the write may itself have replaced the file, and changed the list.
        for (id, read_to, _) in late {
            if let Some(version) = replaced.iter_mut().find(|version| version.id == id) {
                version.read_to = version.read_to.max(read_to);
            }
        }
        if added > 0 {
            tracing::warn!(
                path = %self.path.display(),
                certificates = added,
                "certificates appended by hand to the trust store while a removal replaced the \
                 file were written to the old file; added them to the store"
            );
        }
    }

    fn read(&self) -> Result<(Bundle, Option<FileKey>)> {
        read_file(&self.path)
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

/// Clears [`TrustStore::reading`] however the read ends.
struct Reading<'a>(&'a AtomicBool);

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The bundle of the store file at `path` (empty when missing), and the key of that version of
/// the file: both come from one open file, so they describe one version. A large file is read
/// in parts by the threads that parse it ([`Bundle::read`]).
fn read_file(path: &Path) -> Result<(Bundle, Option<FileKey>)> {
    let Some((file, meta)) = fsutil::open_regular(path)? else {
        return Ok((Bundle::default(), None));
    };
    let bundle = Bundle::read(&file, meta.len()).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((bundle, Some(FileKey::of(&meta))))
}

#[cfg(test)]
mod tests;
