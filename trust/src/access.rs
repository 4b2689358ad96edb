//! Who may reach the daemon's socket: administrators (uid 0, or members of the admin group:
//! docs/CONTRACT.md, the first that exists of `multipass`, `sudo`, `admin`, `wheel`, unless
//! configured), and the socket access policy of docs/CONTRACT.md (restricted root:<admin group>
//! 0660 while nobody is trusted, open root:root 0666 afterwards). Shared by the daemon and the
//! helper.

use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstat, fstatat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, geteuid, getgrouplist, Gid, Group, Uid, User};

use crate::error::{Error, Result};

/// Groups tried, in order, when none is configured.
pub const DEFAULT_ADMIN_GROUPS: [&str; 4] = ["multipass", "sudo", "admin", "wheel"];

/// How to find the admin group.
#[derive(Debug, Clone)]
pub struct AdminPolicy {
    configured: Option<String>,
}

impl AdminPolicy {
    /// `configured` overrides the default search (tests, unusual hosts).
    pub fn new(configured: Option<String>) -> AdminPolicy {
        AdminPolicy { configured }
    }

    /// The admin group as it exists now, if any. Looked up each time: groups can be created while
    /// the daemon runs.
    pub fn group(&self) -> Option<Group> {
        let candidates: Vec<&str> = match &self.configured {
            Some(name) => vec![name.as_str()],
            None => DEFAULT_ADMIN_GROUPS.to_vec(),
        };
        candidates
            .into_iter()
            .find_map(|name| Group::from_name(name).ok().flatten())
    }

    /// Who the administrators are now, in words, and whether that is less than was asked for:
    /// a group named on the command line that does not exist (a typo, say, which would otherwise
    /// go unnoticed until an administrator is refused).
    pub fn describe(&self) -> (String, bool) {
        match (self.group(), &self.configured) {
            (Some(group), _) => (format!("root and the members of '{}'", group.name), false),
            (None, Some(name)) => (
                format!("root alone: the admin group '{name}' does not exist (yet)"),
                true,
            ),
            (None, None) => (
                format!(
                    "root alone: none of the groups {} exists",
                    DEFAULT_ADMIN_GROUPS.map(|g| format!("'{g}'")).join(", ")
                ),
                false,
            ),
        }
    }

    /// Log who the administrators are, at start: a warning when a configured group is missing.
    pub fn announce(&self) {
        match self.describe() {
            (who, true) => tracing::warn!("administrators: {who}"),
            (who, false) => tracing::info!("administrators: {who}"),
        }
    }

    /// Whether the user `uid` is an administrator. Membership comes from the user database (the
    /// peer's supplementary groups are not part of SO_PEERCRED). Any lookup failure is a "no".
    pub fn is_admin(&self, uid: u32) -> bool {
        if uid == 0 {
            return true;
        }
        let Some(group) = self.group() else {
            return false;
        };
        let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
            return false;
        };
        if user.gid == group.gid {
            return true;
        }
        let Ok(name) = CString::new(user.name.as_str()) else {
            return false;
        };
        match getgrouplist(&name, user.gid) {
            Ok(groups) => groups.contains(&group.gid),
            Err(_) => false,
        }
    }
}

/// Login name of `uid`, for metadata and logs.
pub fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// `user NAME, uid N` (or `uid N` for a uid without a name): who, in the words of a log line.
pub fn describe_user(uid: u32) -> String {
    match user_name(uid) {
        Some(name) => format!("user {name}, uid {uid}"),
        None => format!("uid {uid}"),
    }
}

/// Which access the socket should give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// root:<admin group> 0660: only administrators can reach the daemon (store empty).
    Restricted,
    /// root:root 0666: everybody can connect and authenticate (store non-empty).
    Open,
}

impl Access {
    /// The access matching a store with or without trusted clients.
    pub fn for_store(empty: bool) -> Access {
        if empty {
            Access::Restricted
        } else {
            Access::Open
        }
    }
}

/// Set owner, group and mode of the socket at `path` for `access` (see [`SocketEntry`]).
pub fn apply_to(path: &Path, access: Access, admin: &AdminPolicy) -> Result<()> {
    SocketEntry::open(path)?.apply(access, admin)
}

/// The socket file at a path, checked so that its owner and mode can be changed safely by root.
///
/// The helper runs as root, and changing the owner or mode of whatever a path names is only safe
/// if nobody else can put something else there: a symbolic link planted in the socket's place
/// would hand its target to root's `chown`/`chmod` (a root-owned file made 0666). So:
/// - the directory is opened without following a symbolic link (`O_PATH|O_DIRECTORY|O_NOFOLLOW`)
///   and refused unless it is owned by root (or by the caller, who could swap entries anyway)
///   and nobody else may write to it (no group or other write bit, sticky or not): then nobody
///   but root can replace the entry between the check and the change;
/// - the entry must be a socket, looked at without following a symbolic link
///   (`fstatat(AT_SYMLINK_NOFOLLOW)`), so a link, a regular file or a directory is left alone;
/// - the owner and mode are changed by name relative to that directory's descriptor
///   (`fchownat`/`fchmodat`), so the path is not resolved again.
///
/// A socket cannot be opened (`open` gives ENXIO), and `fchmod` on an `O_PATH` descriptor fails;
/// hence the directory's descriptor.
#[derive(Debug)]
pub struct SocketEntry {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
    mode: u32,
}

impl SocketEntry {
    /// Check `path` as described on [`SocketEntry`].
    pub fn open(path: &Path) -> Result<SocketEntry> {
        let unsafe_dir = |reason: String| Error::UnsafeSocketDirectory {
            path: path.to_path_buf(),
            reason,
        };
        let name = match path.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => {
                return Err(Error::NotASocket {
                    path: path.to_path_buf(),
                    found: "not a file name",
                })
            }
        };
        let dir_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = nix::fcntl::open(
            &dir_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::SocketDirectory {
            path: dir_path.clone(),
            source: e.into(),
        })?;
        let dir_stat = fstat(&dir).map_err(|e| Error::SocketDirectory {
            path: dir_path.clone(),
            source: e.into(),
        })?;
        let owner = dir_stat.st_uid;
        if owner != 0 && owner != geteuid().as_raw() {
            return Err(unsafe_dir(format!(
                "{} is owned by uid {owner}, not by root",
                dir_path.display()
            )));
        }
        let dir_mode = dir_stat.st_mode & 0o7777;
        if dir_mode & 0o022 != 0 {
            return Err(unsafe_dir(format!(
                "{} can be written by others than its owner (mode {dir_mode:04o})",
                dir_path.display()
            )));
        }
        let stat = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
            Error::SocketAccess {
                path: path.to_path_buf(),
                what: "mode",
                source: e.into(),
            }
        })?;
        let found = match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFSOCK => None,
            SFlag::S_IFLNK => Some("a symbolic link"),
            SFlag::S_IFREG => Some("a regular file"),
            SFlag::S_IFDIR => Some("a directory"),
            _ => Some("a device or pipe"),
        };
        if let Some(found) = found {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
                found,
            });
        }
        Ok(SocketEntry {
            dir,
            name,
            path: path.to_path_buf(),
            mode: stat.st_mode & 0o7777,
        })
    }

    /// Give the socket mode `mode`.
    pub fn set_mode(&mut self, mode: u32) -> Result<()> {
        // Following a link here is harmless: the entry was a socket and nobody but root can
        // replace it (see above); Linux's fchmodat cannot refuse links anyway.
        fchmodat(
            &self.dir,
            self.name.as_os_str(),
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| self.failed("mode", e))?;
        self.mode = mode;
        Ok(())
    }

    /// Give the socket owner `uid` and group `gid`.
    pub fn set_owner(&self, uid: u32, gid: u32) -> Result<()> {
        fchownat(
            &self.dir,
            self.name.as_os_str(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.failed("owner", e))
    }

    /// Give the socket the owner, group and mode of `access`.
    pub fn apply(&mut self, access: Access, admin: &AdminPolicy) -> Result<()> {
        let (gid, mode) = match access {
            Access::Restricted => (admin.group().map(|g| g.gid.as_raw()).unwrap_or(0), 0o660),
            Access::Open => (0, 0o666),
        };
        // Narrow first, then chown, then widen: at no moment is the socket more open than either
        // the old or the new policy allows.
        let before = self.mode;
        self.set_mode(self.mode & mode)?;
        if let Err(e) = self.set_owner(0, gid) {
            // Without its owner the new mode would mean something else. Open is still open
            // (anybody may connect whoever owns it), so it is given. Restricted, on a socket
            // whose group is not the admin group, would keep the administrators out, who could
            // then not be the first client again; the old mode is put back instead, and the
            // gate still lets only an administrator become the first client.
            let fallback = match access {
                Access::Open => mode,
                Access::Restricted => before,
            };
            self.set_mode(fallback)?;
            return Err(e);
        }
        self.set_mode(mode)
    }

    fn failed(&self, what: &'static str, e: nix::Error) -> Error {
        Error::SocketAccess {
            path: self.path.clone(),
            what,
            source: e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_admin_group_is_said() {
        let (who, missing) = AdminPolicy::new(Some("no-such-group-xyz".into())).describe();
        assert!(missing);
        assert_eq!(
            who,
            "root alone: the admin group 'no-such-group-xyz' does not exist (yet)"
        );
        let (who, missing) = AdminPolicy::new(Some("root".into())).describe();
        assert!(!missing);
        assert_eq!(who, "root and the members of 'root'");
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_symlink_in_the_sockets_place_is_left_alone() {
        let dir = private_dir();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = SocketEntry::open(&link).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotASocket {
                    found: "a symbolic link",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "refusing to change {}: it is a symbolic link, not a socket",
                link.display()
            )
        );
        let err = SocketEntry::open(&target).unwrap_err();
        assert!(matches!(
            err,
            Error::NotASocket {
                found: "a regular file",
                ..
            }
        ));
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    }

    #[test]
    fn a_directory_others_can_write_is_refused() {
        let dir = private_dir();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let path = shared.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        for mode in [0o777, 0o1777, 0o775] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SocketEntry::open(&path).unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "can be written by others than its owner (mode {mode:04o})"
                )),
                "{err}"
            );
        }
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // A linked directory is not followed either.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        let err = SocketEntry::open(&link.join("sock")).unwrap_err();
        assert!(matches!(err, Error::SocketDirectory { .. }), "{err}");
        // The directory itself as it should be: the mode changes.
        let mut entry = SocketEntry::open(&path).unwrap();
        entry.set_mode(0o660).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o660);
    }

    #[test]
    fn root_is_admin_without_any_group() {
        let policy = AdminPolicy::new(Some("no-such-group-for-sure".into()));
        assert!(policy.group().is_none());
        assert!(policy.is_admin(0));
        assert!(!policy.is_admin(65534));
    }
}
