//! How writers change the store: under the writers' lock, re-read the file and merge; append
//! additions in place (an unlocked hand append racing with us then survives), replace the file
//! for anything else, and start over when the file changed under us.

use std::os::unix::fs::MetadataExt;

use super::{read_file, FileKey, TrustStore};
use crate::error::{Error, Result};
use crate::fsutil::{Kept, LockedFile};
use crate::store::Bundle;

/// How many times a writer re-reads when the file keeps changing under it (hand appends take no
/// lock) before giving up.
const MERGE_ATTEMPTS: usize = 20;

/// Versions of the store kept aside at most, because a rewrite dropped text from them: the
/// first ones are kept, and rewrites of a file that keeps getting such text add no more.
const KEPT_AT_MOST: usize = 4;

impl TrustStore {
    /// Apply `change` to the file's current content under the writers' lock and write it if
    /// anything changed: appended when entries were only added, otherwise replaced. `change`
    /// returns its result, which tells whether to write: `true`, or `Some(_)`, means changed. It
    /// may run more than once if the file changes meanwhile.
    pub fn modify<R: Changed>(&self, mut change: impl FnMut(&mut Bundle) -> R) -> Result<R> {
        let file = LockedFile::lock(&self.path, self.mode)?;
        let _writing = Writing::start();
        // The version kept aside by a first try of this change, if it kept one.
        let mut kept_before: Option<Option<Kept>> = None;
        for _ in 0..MERGE_ATTEMPTS {
            let (mut bundle, mut key) = self.read_for_write(&file)?;
            let before = bundle.len();
            let result = change(&mut bundle);
            if !result.changed() {
                // The cache already holds this version when it was read from it: kept as it is,
                // so that readers holding it (a `trust list` in pages) see no change.
                let cached = {
                    let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    cache.loaded && cache.key == key && key.is_some()
                };
                if !cached {
                    self.remember(bundle, key);
                }
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
            // Text the rewrite does not carry (damaged blocks, comments) is not lost with the
            // version replaced: that version is kept beside it, as it was, for an administrator.
            let dropped = (bundle.skipped(), bundle.notes());
            // Once per change: a rewrite tried again (the file changed meanwhile: only
            // additions, by hand) keeps no second version, which would only add what the new
            // file holds anyway, and would use up the kept names.
            if dropped != (0, 0) && kept_before.is_none() {
                let kept = crate::fsutil::keep_aside(&self.path, "replaced", KEPT_AT_MOST);
                // A link changes the file's ctime, and nothing else: the file read is still
                // the file to replace, which the checks below would otherwise take for changed.
                if kept.as_ref().is_some_and(|kept| kept.linked_now) {
                    let now = FileKey::stat(&self.path)?;
                    if let (Some(was), Some(now)) = (key, now) {
                        if (now.dev, now.ino, now.size, now.mtime_ns)
                            == (was.dev, was.ino, was.size, was.mtime_ns)
                        {
                            key = Some(now);
                        }
                    }
                }
                kept_before = Some(kept);
            }
            // The version replaced, held open: a hand append that opened it before the rename
            // and writes after it is carried over (`carry_late_appends`). Only a version that
            // nobody but its owner could write, owned by the store's owner or root: one that
            // others could write (a store made by hand under a lax umask, rewritten to put that
            // right) could have been opened by anyone, and what they wrote into it after the
            // rewrite must go nowhere. One that root made by hand (`tee -a` into a missing
            // store makes it 0644) is root's own append.
            let old = crate::fsutil::open_regular(&self.path)
                .ok()
                .flatten()
                .filter(|(_, meta)| {
                    Some(FileKey::of(meta)) == key && self.only_its_owner_or_root_writes(meta)
                });
            // Checked again once the new file is written: a hand append meanwhile would
            // otherwise be renamed away with the old file.
            let unchanged = || Ok(FileKey::stat_io(&self.path)? == key);
            if !file.replace_if(text.as_bytes(), unchanged)? {
                continue;
            }
            if let Some((old, meta)) = old {
                self.keep_replaced(old, meta.size());
            }
            match &kept_before {
                Some(Some(aside)) => tracing::warn!(
                    path = %self.path.display(),
                    damaged_blocks = dropped.0,
                    other_lines = dropped.1,
                    kept = %aside.path.display(),
                    "the trust store was rewritten without text that is not a certificate or its \
                     metadata; the version before is kept under another name"
                ),
                Some(None) => tracing::warn!(
                    path = %self.path.display(),
                    damaged_blocks = dropped.0,
                    other_lines = dropped.1,
                    "the trust store was rewritten without text that is not a certificate or its \
                     metadata; the version before was not kept (it could not be linked nor \
                     copied, or as many versions are kept already)"
                ),
                None => {}
            }
            bundle.as_written();
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
        if !self.is_ours(&meta) {
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
        // One `fstat` for both the size check and the key cached below: a hand append between
        // two would be in the key but not in the cache, and the next rewrite would drop it.
        let meta_now = file.metadata().ok();
        let size_now = meta_now.as_ref().map(|m| m.size());
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
            meta_now.as_ref().map(FileKey::of)
        } else {
            None
        }))
    }

    /// Whether only the store's owner or root could have written the file `meta` describes (a
    /// regular file, no write permission for its group or others).
    fn only_its_owner_or_root_writes(&self, meta: &std::fs::Metadata) -> bool {
        meta.file_type().is_file()
            && meta.mode() & 0o022 == 0
            && (meta.uid() == self.owner_uid() || meta.uid() == 0)
    }

    /// Whether a version of the file has the type, owner and mode that the store writes.
    fn is_ours(&self, meta: &std::fs::Metadata) -> bool {
        let owner_ok = meta.uid() == self.owner_uid()
            && self.mode.owner.is_none_or(|(_, gid)| meta.gid() == gid);
        meta.file_type().is_file() && meta.mode() & 0o7777 == self.mode.mode && owner_ok
    }

    /// The uid the store's files belong to: the one it was given, else this process's.
    fn owner_uid(&self) -> u32 {
        match self.mode.owner {
            Some((uid, _)) => uid,
            None => nix::unistd::geteuid().as_raw(),
        }
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
        read_file(file.path())
    }
}

/// Marks this thread as holding the writers' lock, until dropped.
struct Writing;

impl Writing {
    fn start() -> Writing {
        super::WRITING.with(|w| w.set(true));
        Writing
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        super::WRITING.with(|w| w.set(false));
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
