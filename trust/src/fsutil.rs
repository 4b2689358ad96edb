//! Crash-safe file replacement and the writers' lock shared by the daemon and the helper.
//!
//! A file the service owns is replaced, not edited in place: write a temporary file in the same
//! directory, fsync it, rename it over the old name, fsync the directory. A crash at any point
//! leaves either the old or the new file, both complete. The one exception is an addition to the
//! trust store, appended in one write under the same lock (`store::write`), so that a
//! certificate appended by hand meanwhile is never lost with a replaced file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// Owner and mode a replaced file must carry.
#[derive(Debug, Clone, Copy)]
pub struct FileMode {
    /// Permission bits, e.g. `0o600`.
    pub mode: u32,
    /// `(uid, gid)` to give the file, or `None` to keep the writer's.
    pub owner: Option<(u32, u32)>,
}

impl FileMode {
    /// Private to its owner: `0600`, the writer's owner.
    pub const PRIVATE: FileMode = FileMode {
        mode: 0o600,
        owner: None,
    };
}

/// Replace `path` with `contents` atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8], mode: FileMode) -> Result<()> {
    write_atomic_if(path, contents, mode, || Ok(true)).map(|_| ())
}

/// [`write_atomic`], but only if `still_valid` says so once the new content is durable and just
/// before it takes the file's place; otherwise nothing changes and the answer is `false`. Writing
/// and syncing take the most time of a replacement, so a check made before them leaves a window
/// for a writer that takes no lock (a `tee -a` by hand); checked here, the window is one
/// `rename`.
pub fn write_atomic_if(
    path: &Path,
    contents: &[u8],
    mode: FileMode,
    still_valid: impl FnOnce() -> io::Result<bool>,
) -> Result<bool> {
    let dir = parent(path);
    let write_err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = temp_name(path);
    let result = (|| -> io::Result<bool> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode.mode))?;
        if let Some((uid, gid)) = mode.owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        if !still_valid()? {
            fs::remove_file(&tmp)?;
            return Ok(false);
        }
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()?;
        Ok(true)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

/// Make `dir` (and its parents) if missing, and make sure it is a private directory (0700) of
/// the effective user's own, or refuse it. On a shared host another user can make the directory,
/// or a symbolic link, in advance where the caller's private files are to go (`XDG_DATA_HOME` in
/// a shared directory such as `/tmp`): the caller would then keep its key where they can read or
/// replace it, or change the mode of whatever the link points at. So the directory is made 0700
/// from the start, then opened without following a link (a link is followed only if the user or
/// root made it), and checked and set through that descriptor: owned by the effective user,
/// writable by nobody else. Nothing is changed in a directory refused.
pub fn ensure_own_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir_err = |source| Error::Directory {
        path: dir.to_path_buf(),
        source,
    };
    let refuse = |why: String| dir_err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    let euid = nix::unistd::geteuid().as_raw();
    create_durably(dir, |dir| {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Already there but no directory (`XDG_DATA_HOME=/dev/null`): said as mkdir says it.
            fs::create_dir_all(parent).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => io::Error::from_raw_os_error(libc::ENOTDIR),
                _ => e,
            })?;
        }
        fs::DirBuilder::new().mode(0o700).create(dir)
    })
    .map_err(dir_err)?;
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | flags)
            .open(dir)
    };
    // A link is refused as ELOOP, or as ENOTDIR with `O_DIRECTORY`, as a file is.
    let is_link = || fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink());
    let opened = match open(libc::O_NOFOLLOW) {
        Ok(opened) => opened,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) && is_link() => {
            let link = fs::symlink_metadata(dir).map_err(dir_err)?;
            if link.uid() != euid && link.uid() != 0 {
                return Err(refuse(format!(
                    "it is a symbolic link made by another user (uid {})",
                    link.uid()
                )));
            }
            open(0).map_err(dir_err)?
        }
        Err(e) => return Err(dir_err(e)),
    };
    let meta = opened.metadata().map_err(dir_err)?;
    if meta.uid() != euid {
        return Err(refuse(format!(
            "it belongs to another user (uid {}), who could read or replace what is kept there",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "others may write in it (mode {:04o}); if it is yours, `chmod 700` it",
            meta.mode() & 0o7777
        )));
    }
    if meta.mode() & 0o7777 != 0o700 {
        opened
            .set_permissions(fs::Permissions::from_mode(0o700))
            .map_err(dir_err)?;
    }
    Ok(())
}

/// Make `path` and the directories above it that are missing with `create` (a directory
/// already there is no error), each made durable in its parent: a file written durably into a
/// directory whose own entry was lost in a crash is lost too.
fn create_durably(path: &Path, create: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    match create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for made in missing {
        File::open(parent(made)).and_then(|dir| dir.sync_all())?;
    }
    Ok(())
}

/// Create `path` (and parents) if missing and give it exactly `mode`.
pub fn ensure_dir(path: &Path, mode: u32) -> Result<()> {
    let dir_err = |source| Error::Directory {
        path: path.to_path_buf(),
        source,
    };
    create_durably(path, |path| fs::create_dir_all(path)).map_err(dir_err)?;
    let meta = fs::metadata(path).map_err(dir_err)?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(dir_err)?;
    }
    Ok(())
}

/// An exclusive advisory lock on a directory, held until dropped.
///
/// Locking the directory rather than the file survives the file being replaced by rename, and
/// leaves no lock file behind. The daemon and the helper lock the same directory.
///
/// Two are held at once in one order only: the state directory's (the settings and token
/// files), then the trust store's, when a change to one of those files asks under its lock
/// whether its client is still trusted (a read of the store that may carry a late hand append
/// over, under the store's lock). Nothing takes the state directory's lock while holding the
/// store's, so no two writers wait for each other.
pub struct DirLock {
    _lock: Flock<File>,
}

impl DirLock {
    /// Block until the lock on `dir` is ours.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let lock_err = |source| Error::Lock {
            path: dir.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(lock_err)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| lock_err(io::Error::from(errno)))?;
        Ok(DirLock { _lock: lock })
    }
}

/// Remove temporary files of `path` that a writer killed mid-write left behind (a crash between
/// creating the temporary file and renaming it). Call only while holding the lock that every
/// writer of `path` takes: then no temporary file of `path` belongs to a live writer. Best effort.
pub fn remove_stale_temporaries(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.tmp.");
    let Ok(entries) = fs::read_dir(parent(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(
                    file = %entry.path().display(),
                    "removed a temporary file left by an interrupted write"
                ),
                Err(e) => {
                    tracing::debug!(file = %entry.path().display(), error = %e, "cannot remove")
                }
            }
        }
    }
}

/// The name a file is kept under when it is set aside rather than lost: `NAME.WHY-STAMP` beside
/// it, `WHY` saying why (`damaged`, `replaced`, `orphaned`) and `STAMP` the time in nanoseconds
/// since the epoch, so that a listing sorts them by age; `-2`, `-3`... after it if a file of that
/// name exists already (a clock coarser than a nanosecond), so that one kept earlier is never
/// overwritten. Its callers hold the lock of the file's writers, so no other writer takes the
/// same name meanwhile. The service deletes none of them: they are the administrator's.
pub fn aside_name(path: &Path, why: &str) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let base = format!("{}{stamp}", aside_prefix(path, why));
    (1..)
        .map(|n| match n {
            1 => parent(path).join(&base),
            n => parent(path).join(format!("{base}-{n}")),
        })
        .find(|name| fs::symlink_metadata(name).is_err())
        .expect("some suffix is free")
}

/// What every name [`aside_name`] gives `path` for `why` starts with.
pub fn aside_prefix(path: &Path, why: &str) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!("{name}.{why}-")
}

/// Keep `path` under a second name, [`aside_name`]`(path, why)`, before it is replaced: a hard
/// link, so that the file stays in place, for whoever reads it, until its replacement is
/// written (which may fail: the disk full), and the version replaced stays as it was; a copy
/// with its mode where no link can be made (a file of root's, which `fs.protected_hardlinks`
/// lets no other user link). The name it is kept under: the one it has already if this very
/// file was linked before (a replacement that failed and is tried again), so that repeats do
/// not pile names up; `None` if it cannot be kept, or `at_most` other files are kept already.
/// Best effort: a file that cannot be kept is replaced anyway.
pub fn keep_aside(path: &Path, why: &str, at_most: usize) -> Option<Kept> {
    let meta = fs::symlink_metadata(path).ok()?;
    let prefix = aside_prefix(path, why);
    let kept: Vec<(PathBuf, fs::Metadata)> = fs::read_dir(parent(path))
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|entry| Some((entry.path(), entry.metadata().ok()?)))
        .collect();
    if let Some((name, _)) = kept
        .iter()
        .find(|(_, m)| (m.dev(), m.ino()) == (meta.dev(), meta.ino()))
    {
        return Some(Kept {
            path: name.clone(),
            linked_now: false,
        });
    }
    if kept.len() >= at_most {
        return None;
    }
    let aside = aside_name(path, why);
    if fs::hard_link(path, &aside).is_ok() {
        return Some(Kept {
            path: aside,
            linked_now: true,
        });
    }
    // The mode of the file read (not of a link to it), never writable by others.
    let (bytes, read) = read_with_metadata(path).ok()??;
    let mode = FileMode {
        mode: read.mode() & 0o7755,
        owner: None,
    };
    write_atomic(&aside, &bytes, mode).ok()?;
    Some(Kept {
        path: aside,
        linked_now: false,
    })
}

/// Where [`keep_aside`] kept a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The name it is kept under.
    pub path: PathBuf,
    /// Whether it was linked by this call: the file itself, whose ctime the link changed (not
    /// copied, nor linked before by a replacement tried earlier).
    pub linked_now: bool,
}

/// Open a file the service owns for reading; `Ok(None)` when it does not exist. Only a regular
/// file: a FIFO or a device put in its place (by whoever can write the state directory) is
/// refused at once, opened without blocking, rather than blocking the thread that reads it (a
/// FIFO as the settings file stopped the daemon serving anyone).
pub fn open_regular(path: &Path) -> Result<Option<(File, fs::Metadata)>> {
    use std::os::unix::fs::OpenOptionsExt;
    let read_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_err(source)),
    };
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(io::Error::other("not a regular file")));
    }
    Ok(Some((file, meta)))
}

/// Read a whole file; `Ok(None)` when it does not exist. A regular file only ([`open_regular`]).
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    Ok(read_with_metadata(path)?.map(|(bytes, _)| bytes))
}

/// Read a whole file with the metadata of the same open file, so that both describe one version
/// of it; `Ok(None)` when it does not exist. A regular file only ([`open_regular`]).
pub fn read_with_metadata(path: &Path) -> Result<Option<(Vec<u8>, fs::Metadata)>> {
    use std::io::Read;
    let Some((mut file, meta)) = open_regular(path)? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some((bytes, meta)))
}

/// A file the service owns, held for a change: the writers' lock on its directory is taken and
/// the temporary files an interrupted write of it left are gone. Every change of such a file is
/// this sequence (lock, clear temporary files, read, write); the lock is released on drop.
///
/// [`update`] is the whole sequence for files rewritten whole; the trust store, which also
/// appends, re-reads and checks owner and mode, takes the steps one by one.
pub struct LockedFile<'a> {
    path: &'a Path,
    mode: FileMode,
    _lock: DirLock,
}

impl<'a> LockedFile<'a> {
    /// Take the lock of `path`'s directory (blocking) and remove stale temporary files of `path`.
    /// Files written later get `mode`.
    pub fn lock(path: &'a Path, mode: FileMode) -> Result<LockedFile<'a>> {
        let lock = DirLock::acquire(&parent(path))?;
        remove_stale_temporaries(path);
        Ok(LockedFile {
            path,
            mode,
            _lock: lock,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// The mode a replaced file gets.
    pub fn mode(&self) -> FileMode {
        self.mode
    }

    /// Its whole content; `None` when it does not exist.
    pub fn read(&self) -> Result<Option<Vec<u8>>> {
        read_optional(self.path)
    }

    /// Replace it with `contents` (see [`write_atomic`]).
    pub fn replace(&self, contents: &[u8]) -> Result<()> {
        write_atomic(self.path, contents, self.mode)
    }

    /// Replace it with `contents` if `still_valid` (see [`write_atomic_if`]).
    pub fn replace_if(
        &self,
        contents: &[u8],
        still_valid: impl FnOnce() -> io::Result<bool>,
    ) -> Result<bool> {
        write_atomic_if(self.path, contents, self.mode, still_valid)
    }
}

/// Change a file rewritten whole: lock, clear temporary files, read (`None`: missing), then
/// `change` returns its result and the new content, which replaces the file. When `change`
/// fails, nothing is written.
pub fn update<T, E: From<Error>>(
    path: &Path,
    mode: FileMode,
    change: impl FnOnce(Option<Vec<u8>>) -> std::result::Result<(T, Vec<u8>), E>,
) -> std::result::Result<T, E> {
    let file = LockedFile::lock(path, mode)?;
    let (result, contents) = change(file.read()?)?;
    file.replace(&contents)?;
    Ok(result)
}

pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    parent(path).join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_in_place_of_a_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("multipassd.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_optional(&fifo).unwrap_err();
        assert!(err.to_string().contains("multipassd.conf"), "{err}");
        assert!(read_with_metadata(&fifo).is_err());
        assert!(read_optional(&dir.path().join("missing"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn write_atomic_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", FileMode::PRIVATE).unwrap();
        write_atomic(
            &path,
            b"two",
            FileMode {
                mode: 0o644,
                owner: None,
            },
        )
        .unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_replacement_no_longer_valid_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"read").unwrap();
        let written = write_atomic_if(&path, b"new", FileMode::PRIVATE, || {
            // A hand append while the new content was being written.
            let mut f = OpenOptions::new().append(true).open(&path)?;
            f.write_all(b" and appended")?;
            Ok(false)
        })
        .unwrap();
        assert!(!written);
        assert_eq!(fs::read(&path).unwrap(), b"read and appended");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary");
        assert!(write_atomic_if(&path, b"new", FileMode::PRIVATE, || Ok(true)).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn stale_temporaries_of_one_file_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"kept").unwrap();
        fs::write(temp_name(&path), b"left by a crash").unwrap();
        fs::write(dir.path().join(".other.tmp.1.x"), b"another file's").unwrap();
        remove_stale_temporaries(&path);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![".other.tmp.1.x".to_string(), "f".to_string()]);
    }

    #[test]
    fn update_clears_temporaries_and_a_failed_change_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(temp_name(&path), b"left by a crash").unwrap();
        let seen = update(&path, FileMode::PRIVATE, |old| {
            Ok::<_, Error>((old, b"one".to_vec()))
        })
        .unwrap();
        assert_eq!(seen, None);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        let refused = update(&path, FileMode::PRIVATE, |old| {
            assert_eq!(old.as_deref(), Some(&b"one"[..]));
            Err::<((), Vec<u8>), _>(Error::Write {
                path: path.clone(),
                source: io::Error::other("refused"),
            })
        });
        assert!(refused.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
    }

    #[test]
    fn a_private_directory_is_made_or_taken_only_when_it_is_the_users_own() {
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let made = dir.path().join("a/b");
        ensure_own_private_dir(&made).unwrap();
        assert_eq!(mode(&made), 0o700);
        // The user's own, made open to read: made private again.
        fs::set_permissions(&made, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_own_private_dir(&made).unwrap();
        assert_eq!(mode(&made), 0o700);
        // Writable by others: refused, and left as it is.
        fs::set_permissions(&made, fs::Permissions::from_mode(0o770)).unwrap();
        let e = ensure_own_private_dir(&made).unwrap_err();
        let why = std::error::Error::source(&e).unwrap().to_string();
        assert!(why.contains("others may write in it (mode 0770)"), "{why}");
        assert_eq!(mode(&made), 0o770);
        // Through the user's own link: taken, the target made private.
        fs::set_permissions(&made, fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        ensure_own_private_dir(&link).unwrap();
        assert_eq!(mode(&made), 0o700);
        // A file where the directory should be.
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let Err(Error::Directory { source, .. }) = ensure_own_private_dir(&file) else {
            panic!("a file taken as the directory");
        };
        assert_eq!(source.kind(), io::ErrorKind::NotADirectory);
    }

    #[test]
    fn ensure_dir_sets_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        ensure_dir(&sub, 0o711).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o7777,
            0o711
        );
    }
}
