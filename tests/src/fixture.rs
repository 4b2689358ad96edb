//! The opening most process tests share, in one statement: a test directory, the daemon's admin
//! group, an administrator in it, `N` users outside it, and the daemon started for them.
//!
//! ```text
//! let Fixture(_dir, admins, a, [b, c], daemon) = Fixture::open();
//! ```
//!
//! The fields, in order: the directory, the admin group, the administrator, the other users, the
//! daemon. Bind every one to a name (`_dir`, not `_`): a field left to `_` is dropped at once, and
//! the test directory with it. Bindings drop in reverse order, so the daemon stops first and the
//! directory goes last, as with the hand-written opening.

use crate::{Daemon, DaemonConfig, Group, TestDir, User};

/// See the module documentation. The helper tests have their own: [`crate::bus::HelperSetup`].
pub struct Fixture<const N: usize>(
    /// Where the socket, the data directory and the users' homes live.
    pub TestDir,
    /// The daemon's admin group (who may become the first client).
    pub Group,
    /// A member of the admin group, created first.
    pub User,
    /// Users in no group of the test.
    pub [User; N],
    /// The daemon, started after the users.
    pub Daemon,
);

impl<const N: usize> Fixture<N> {
    /// With the daemon of [`Daemon::start`].
    pub fn open() -> Fixture<N> {
        Fixture::open_with(Daemon::start)
    }

    /// With the daemon `start` returns for the directory and the admin group, e.g.
    /// `|dir, admins| Daemon::start_with(dir, admins, config)`.
    pub fn open_with(start: impl FnOnce(&TestDir, &Group) -> Daemon) -> Fixture<N> {
        let dir = TestDir::new();
        let admins = Group::create_admin();
        let admin = User::create(&dir, Some(&admins));
        let users = std::array::from_fn(|_| User::create(&dir, None));
        let daemon = start(&dir, &admins);
        Fixture(dir, admins, admin, users, daemon)
    }

    /// [`Fixture::open_with`] the daemon started with `config`.
    pub fn open_configured(config: DaemonConfig) -> Fixture<N> {
        Fixture::open_with(|dir, admins| Daemon::start_with(dir, admins, config))
    }
}
