//! Who may reach the daemon's socket: administrators (uid 0, or members of the admin group: SPEC
//! section 2, the first that exists of `multipass`, `sudo`, `admin`, `wheel`, unless configured),
//! and the socket access policy of SPEC section 5 (restricted root:<admin group> 0660 while
//! nobody is trusted, open root:root 0666 afterwards). Shared by the daemon and the helper.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::unistd::{chown, getgrouplist, Gid, Group, Uid, User};

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

/// Set owner, group and mode of the socket at `path` for `access`.
pub fn apply_to(path: &Path, access: Access, admin: &AdminPolicy) -> io::Result<()> {
    let (gid, mode) = match access {
        Access::Restricted => (
            admin.group().map(|g| g.gid).unwrap_or(Gid::from_raw(0)),
            0o660,
        ),
        Access::Open => (Gid::from_raw(0), 0o666),
    };
    // Narrow first, then chown, then widen: at no moment is the socket more open than either the
    // old or the new policy allows.
    let current = fs::metadata(path)?.permissions().mode() & 0o777;
    fs::set_permissions(path, fs::Permissions::from_mode(current & mode))?;
    chown(path, Some(Uid::from_raw(0)), Some(gid)).map_err(io::Error::from)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_without_any_group() {
        let policy = AdminPolicy::new(Some("no-such-group-for-sure".into()));
        assert!(policy.group().is_none());
        assert!(policy.is_admin(0));
        assert!(!policy.is_admin(65534));
    }
}
