//! Default paths (docs/CONTRACT.md, Names and paths) and the layout of the daemon's state
//! directory.

use std::env;
use std::path::{Path, PathBuf};

/// The daemon's socket when nothing overrides it.
pub const DEFAULT_SOCKET: &str = "/run/multipass_socket";
/// The daemon's state directory when nothing overrides it.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/multipassd";
/// Client environment variable naming the daemon's address (`unix:PATH` or `HOST:PORT`).
pub const ENV_SERVER_ADDRESS: &str = "MULTIPASS_SERVER_ADDRESS";
/// Client environment variable naming the root CA file.
pub const ENV_ROOT_CERT: &str = "MULTIPASS_ROOT_CERT";
/// Directory, under `$XDG_DATA_HOME`, of the client's certificate and key.
pub const CLIENT_CERT_DIR_NAME: &str = "multipass-client-certificate";
/// File name of the client certificate.
pub const CLIENT_CERT_FILE: &str = "multipass_cert.pem";
/// File name of the client key.
pub const CLIENT_KEY_FILE: &str = "multipass_cert_key.pem";

/// Where everything the daemon keeps lives, relative to its state directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// A layout rooted at `root` (the daemon's `--data-dir`).
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The state directory itself (mode 0711).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the trust store; the writers' lock is taken on it.
    pub fn trust_store_dir(&self) -> PathBuf {
        self.root.join("authenticated-certs")
    }

    /// The trust store: a bundle of PEM certificates.
    pub fn trust_store(&self) -> PathBuf {
        self.trust_store_dir().join("multipass_client_certs.pem")
    }

    /// The settings file (INI, section `[General]`).
    pub fn settings(&self) -> PathBuf {
        self.root.join("multipassd.conf")
    }

    /// One-time enrollment tokens (their hashes), mode 0600.
    pub fn tokens(&self) -> PathBuf {
        self.root.join("enrollment-tokens")
    }

    /// When each trusted client was last seen, mode 0600.
    pub fn last_seen(&self) -> PathBuf {
        self.root.join("last-seen")
    }

    /// Directory of the server's keys and certificates (mode 0700).
    pub fn certificates_dir(&self) -> PathBuf {
        self.root.join("certificates")
    }

    /// The root CA certificate that clients read (mode 0644).
    pub fn root_cert(&self) -> PathBuf {
        self.root.join("multipass_root_cert.pem")
    }

    /// The root CA's private key.
    pub fn root_key(&self) -> PathBuf {
        self.certificates_dir().join("multipass_root_cert_key.pem")
    }

    /// The server certificate, signed by the root CA.
    pub fn server_cert(&self) -> PathBuf {
        self.certificates_dir().join("localhost.pem")
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.certificates_dir().join("localhost_key.pem")
    }
}

impl Default for DataDir {
    fn default() -> Self {
        DataDir::new(DEFAULT_DATA_DIR)
    }
}

/// The client's certificate directory: `$XDG_DATA_HOME/multipass-client-certificate`, with
/// `$XDG_DATA_HOME` defaulting to `$HOME/.local/share`. `None` when neither it nor a home
/// directory can be found.
///
/// A relative `XDG_DATA_HOME` or `HOME` is ignored (the XDG Base Directory specification says so
/// of the first): it would put the client's key wherever the command happens to run. A relative,
/// empty or unset `HOME` (a cron job, `env -i`, a systemd unit) gives way to the home directory of
/// the password database.
///
/// root running with another user's `HOME` or `XDG_DATA_HOME` (`su` without `-`, `sudo -E`)
/// would create root-owned directories in that user's home, which then lock the user out of
/// their own client. When the effective user is root and the directory those name lies in a tree
/// another user owns, root's home from the password database is used instead, as `sudo` does.
pub fn client_cert_dir() -> Option<PathBuf> {
    client_cert_dir_in(env::var_os("XDG_DATA_HOME"), env::var_os("HOME"), &System)
}

/// What [`client_cert_dir`] asks of the system, so that tests can answer for it.
trait Accounts {
    /// The effective user id.
    fn euid(&self) -> u32;
    /// The home directory of `uid` in the password database.
    fn home(&self, uid: u32) -> Option<PathBuf>;
    /// The owner of `path`, if it exists.
    fn owner(&self, path: &Path) -> Option<u32>;
}

/// The running system.
struct System;

impl Accounts for System {
    fn euid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn home(&self, uid: u32) -> Option<PathBuf> {
        nix::unistd::User::from_uid(uid.into())
            .ok()
            .flatten()
            .map(|user| user.dir)
            .filter(|dir| dir.is_absolute())
    }

    fn owner(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|meta| meta.uid())
    }
}

/// [`client_cert_dir`] for these values of `XDG_DATA_HOME` and `HOME`, on `accounts`.
fn client_cert_dir_in(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
    accounts: &impl Accounts,
) -> Option<PathBuf> {
    let euid = accounts.euid();
    let home = match home.map(PathBuf::from) {
        Some(home) if home.is_absolute() => Some(home),
        _ => accounts.home(euid),
    };
    let data_home = match xdg_data_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => home?.join(".local/share"),
    };
    let data_home = if euid == 0 && owned_by_another(&data_home, accounts) {
        accounts.home(0)?.join(".local/share")
    } else {
        data_home
    };
    Some(data_home.join(CLIENT_CERT_DIR_NAME))
}

/// Whether `dir` lies in a tree another user than root owns: some existing directory at or above
/// it belongs to them, so what root creates there would be theirs to stumble on. Any of them, not
/// only the nearest: a directory that root already created in the user's home must not make that
/// home root's.
fn owned_by_another(dir: &Path, accounts: &impl Accounts) -> bool {
    dir.ancestors()
        .any(|d| accounts.owner(d).is_some_and(|uid| uid != 0))
}

/// The root CA file a client verifies the daemon against: `$MULTIPASS_ROOT_CERT`, or the default
/// state directory's.
pub fn client_root_cert() -> PathBuf {
    match env::var_os(ENV_ROOT_CERT) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => DataDir::default().root_cert(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    /// A system where `euid` runs, with these owners of existing directories.
    struct Fake {
        euid: u32,
        owners: HashMap<PathBuf, u32>,
    }

    impl Fake {
        fn new(euid: u32, owners: &[(&str, u32)]) -> Fake {
            Fake {
                euid,
                owners: owners.iter().map(|(p, u)| (PathBuf::from(p), *u)).collect(),
            }
        }
    }

    impl Accounts for Fake {
        fn euid(&self) -> u32 {
            self.euid
        }

        fn home(&self, uid: u32) -> Option<PathBuf> {
            Some(PathBuf::from(if uid == 0 { "/root" } else { "/home/me" }))
        }

        fn owner(&self, path: &Path) -> Option<u32> {
            self.owners.get(path).copied()
        }
    }

    fn cert_dir(p: &str) -> Option<PathBuf> {
        Some(Path::new(p).join(CLIENT_CERT_DIR_NAME))
    }

    #[test]
    fn a_relative_xdg_data_home_is_ignored() {
        let system = Fake::new(1000, &[]);
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            client_cert_dir_in(xdg.map(Into::into), home.map(Into::into), &system)
        };
        assert_eq!(dir(Some("/x/data"), Some("/home/a")), cert_dir("/x/data"));
        for ignored in ["", "relative", "./data"] {
            assert_eq!(
                dir(Some(ignored), Some("/home/a")),
                cert_dir("/home/a/.local/share")
            );
        }
        assert_eq!(
            dir(Some("relative"), None),
            cert_dir("/home/me/.local/share")
        );
        assert_eq!(dir(None, Some("")), cert_dir("/home/me/.local/share"));
    }

    #[test]
    fn a_relative_or_missing_home_gives_way_to_the_password_database() {
        let system = Fake::new(1000, &[]);
        for relative in ["foo", "./foo", ".", ""] {
            assert_eq!(
                client_cert_dir_in(None, Some(relative.into()), &system),
                cert_dir("/home/me/.local/share"),
                "{relative}"
            );
        }
        assert_eq!(
            client_cert_dir_in(None, None, &system),
            cert_dir("/home/me/.local/share")
        );
    }

    #[test]
    fn root_with_another_users_home_uses_its_own() {
        let alice = [("/", 0), ("/home", 0), ("/home/alice", 1000)];
        let root = Fake::new(0, &alice);
        // `env HOME=/home/alice multipass list` as root, and `sudo -E` with alice's XDG_DATA_HOME.
        assert_eq!(
            client_cert_dir_in(None, Some("/home/alice".into()), &root),
            cert_dir("/root/.local/share")
        );
        assert_eq!(
            client_cert_dir_in(Some("/home/alice/.local/share".into()), None, &root),
            cert_dir("/root/.local/share")
        );
        // A directory root created there before does not make alice's home root's.
        let created = Fake::new(
            0,
            &[
                ("/", 0),
                ("/home", 0),
                ("/home/alice", 1000),
                ("/home/alice/.local", 0),
                ("/home/alice/.local/share", 0),
            ],
        );
        assert_eq!(
            client_cert_dir_in(None, Some("/home/alice".into()), &created),
            cert_dir("/root/.local/share")
        );
        // root's own directories, existing or not, are used as given.
        let own = Fake::new(0, &[("/", 0), ("/tmp", 0), ("/tmp/t", 0)]);
        assert_eq!(
            client_cert_dir_in(Some("/tmp/t/data".into()), Some("/tmp/t".into()), &own),
            cert_dir("/tmp/t/data")
        );
        assert_eq!(
            client_cert_dir_in(None, Some("/nonexistent".into()), &own),
            cert_dir("/nonexistent/.local/share")
        );
        // Anyone else keeps what they are given: the directories are theirs or refuse them.
        let alice_herself = Fake::new(1000, &alice);
        assert_eq!(
            client_cert_dir_in(None, Some("/home/alice".into()), &alice_herself),
            cert_dir("/home/alice/.local/share")
        );
    }
}
