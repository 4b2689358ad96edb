//! File descriptors: every connection holds one, from accept to close.
//!
//! Connections from everyone but root are capped (`IncomingOptions::max_connections`) below the
//! open-file limit, so that peers together can never take the last descriptors: without one the
//! daemon cannot accept a connection (not even root's, and the kernel keeps it waiting in the
//! listen queue) nor open the trust store to write it. The descriptors above the cap are kept for
//! root's connections and for the daemon's own files.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept out of the connection cap: the daemon's own files (listener, epoll, the
/// trust store, its lock and temporary file, the directory, journald, the helper's bus
/// connection: about a dozen at a time) and root's connections.
pub const RESERVED: u64 = 128;

/// How many connections of everyone but root fit under the open-file limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The connection cap to use.
    pub connections: usize,
    /// The soft open-file limit the daemon runs with.
    pub open_files: u64,
}

impl Budget {
    /// Whether the limit forced a cap below `wanted`.
    pub fn lowered(&self, wanted: usize) -> bool {
        self.connections < wanted
    }

    fn fit(wanted: usize, open_files: u64) -> Budget {
        let room = usize::try_from(open_files.saturating_sub(RESERVED)).unwrap_or(usize::MAX);
        Budget {
            connections: wanted.min(room),
            open_files,
        }
    }
}

/// Raises the soft open-file limit to the hard one (allowed without privileges; the soft default
/// of 1,024 is kept by the service manager for programs that use `select`, which the daemon does
/// not), then fits `wanted` under it with [`RESERVED`] to spare.
pub fn budget(wanted: usize) -> Budget {
    let open_files = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        // Not expected on Linux; the cap then stays as asked.
        Err(_) => return Budget::fit(wanted, u64::MAX),
    };
    Budget::fit(wanted, open_files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_limit_by_the_reserve() {
        assert_eq!(Budget::fit(1024, 524_288).connections, 1024);
        assert_eq!(Budget::fit(1024, 1024).connections, 896);
        assert!(Budget::fit(1024, 1024).lowered(1024));
        assert_eq!(Budget::fit(1024, 256).connections, 128);
        assert_eq!(Budget::fit(1024, 100).connections, 0);
        assert_eq!(Budget::fit(1024, u64::MAX).connections, 1024);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let budget = budget(1024);
        assert_eq!(budget.open_files, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, hard);
    }
}
