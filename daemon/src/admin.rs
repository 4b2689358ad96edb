//! Who counts as an administrator: uid 0, or a member of the admin group (SPEC section 2: the
//! first that exists of `multipass`, `sudo`, `admin`, `wheel`, unless the daemon was told one).

use nix::unistd::{getgrouplist, Gid, Group, Uid, User};
use std::ffi::CString;

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

/// The gid of the admin group, or root's group when there is none.
pub fn gid_or_root(group: Option<&Group>) -> Gid {
    group.map(|g| g.gid).unwrap_or(Gid::from_raw(0))
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
