//! Subordinate uids (`/etc/subuid`, subuid(5)): the ranges of uids each user may run processes
//! as, in user namespaces of their own (through `newuidmap`). Debian's `useradd` gives every new
//! user 65,536 of them. A process running as one of them is its owner's, but the kernel reports
//! the subordinate uid in `SO_PEERCRED`; counted as it stands, one user would have 65,537
//! accounts for every per-user bound of the daemon. [`account`] gives the uid a peer is counted
//! as.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use nix::unistd::User;

/// Where the ranges are.
pub const SUBUID: &str = "/etc/subuid";

/// Subordinate ranges and their owners, sorted by their first uid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ranges(Vec<Range>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    first: u32,
    /// One past the last, so that a range reaching `u32::MAX` fits.
    end: u64,
    owner: u32,
}

impl Ranges {
    /// Parse `name_or_uid:first:count` lines, looking owners up by name with `resolve`. Lines
    /// that do not parse, and owners that do not resolve, are left out: the peer is then
    /// counted as its own uid, as without this file.
    pub fn parse(text: &str, resolve: impl Fn(&str) -> Option<u32>) -> Ranges {
        let mut ranges: Vec<Range> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.trim().split(':');
                let (owner, first, count) = (fields.next()?, fields.next()?, fields.next()?);
                let first: u32 = first.parse().ok()?;
                let count: u64 = count.parse().ok()?;
                let owner = match owner.parse::<u32>() {
                    Ok(uid) => uid,
                    Err(_) => resolve(owner)?,
                };
                Some(Range {
                    first,
                    end: u64::from(first) + count,
                    owner,
                })
            })
            .collect();
        ranges.sort_by_key(|r| r.first);
        Ranges(ranges)
    }

    /// The owner of the range that holds `uid`, if one does.
    pub fn owner(&self, uid: u32) -> Option<u32> {
        let after = self.0.partition_point(|r| r.first <= uid);
        self.0[..after]
            .iter()
            .rev()
            .find(|r| u64::from(uid) < r.end)
            .map(|r| r.owner)
    }

    /// The uid `uid` is counted as: the owner of its range, else itself. Root and root's
    /// ranges stay as they are: being counted as root would lift every bound, and nobody but
    /// root runs as root's subordinate uids anyway.
    pub fn account(&self, uid: u32) -> u32 {
        match self.owner(uid) {
            Some(owner) if uid != 0 && owner != 0 => owner,
            _ => uid,
        }
    }
}

/// The file as last read, known by its device, inode, size and modification time.
type Cached = Option<((u64, u64, u64, i64, i64), Arc<Ranges>)>;

static CACHE: Mutex<Cached> = Mutex::new(None);

/// The uid a peer running as `uid` is counted as, by [`SUBUID`] as it is now (read again when it
/// changes; a `stat` otherwise).
pub fn account(uid: u32) -> u32 {
    current().account(uid)
}

/// The ranges of [`SUBUID`] as it is now.
pub fn current() -> Arc<Ranges> {
    ranges_at(Path::new(SUBUID))
}

fn ranges_at(path: &Path) -> Arc<Ranges> {
    let stamp = std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(stamp), Some((cached, ranges))) = (stamp, cache.as_ref()) {
        if *cached == stamp {
            return ranges.clone();
        }
    }
    let Some(stamp) = stamp else {
        *cache = None;
        return Arc::default();
    };
    // A few kilobytes on any real host; bounded so that a damaged file cannot cost much.
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 20)]).into_owned())
        .unwrap_or_default();
    let ranges = Arc::new(Ranges::parse(&text, |name| {
        User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    }));
    *cache = Some((stamp, ranges.clone()));
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(name: &str) -> Option<u32> {
        match name {
            "alice" => Some(1000),
            "bob" => Some(1001),
            "root" => Some(0),
            _ => None,
        }
    }

    #[test]
    fn a_subordinate_uid_is_counted_as_its_owner() {
        let ranges = Ranges::parse(
            "alice:100000:65536\nbob:165536:65536\n1002:231072:10\n\
             root:300000:65536\nnobody-known:400000:5\nbroken line\nbob:x:1\n\
             carol:4294967290:6\n",
            resolve,
        );
        assert_eq!(ranges.account(100000), 1000);
        assert_eq!(ranges.account(165535), 1000);
        assert_eq!(ranges.account(165536), 1001);
        assert_eq!(ranges.account(231081), 1002);
        assert_eq!(ranges.account(231082), 231082);
        // Owners themselves, uids outside every range, unknown owners: as they are.
        assert_eq!(ranges.account(1000), 1000);
        assert_eq!(ranges.account(99999), 99999);
        assert_eq!(ranges.account(400001), 400001);
        assert_eq!(ranges.account(u32::MAX), u32::MAX);
        // Never root, whose account has no bounds.
        assert_eq!(ranges.account(300001), 300001);
        assert_eq!(ranges.account(0), 0);
    }

    #[test]
    fn the_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        assert_eq!(ranges_at(&path).account(100001), 100001);
        std::fs::write(&path, "1000:100000:65536\n").unwrap();
        assert_eq!(ranges_at(&path).account(100001), 1000);
        std::fs::write(&path, "1001:100000:65536\n1000:200000:10\n").unwrap();
        assert_eq!(ranges_at(&path).account(100001), 1001);
        assert_eq!(ranges_at(&path).account(200001), 1000);
    }
}
