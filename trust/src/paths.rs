//! Default paths (docs/CONTRACT.md, Names and paths) and the layout of the daemon's state directory.

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
/// `$XDG_DATA_HOME` defaulting to `~/.local/share`. `None` when neither it nor `$HOME` is set.
pub fn client_cert_dir() -> Option<PathBuf> {
    client_cert_dir_in(env::var_os("XDG_DATA_HOME"), env::var_os("HOME"))
}

/// [`client_cert_dir`] for these values of `XDG_DATA_HOME` and `HOME`. A relative
/// `XDG_DATA_HOME` is ignored, as the XDG Base Directory specification says: it would put the
/// client's key wherever the command happens to run.
fn client_cert_dir_in(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let data_home = match xdg_data_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".local/share"),
    };
    Some(data_home.join(CLIENT_CERT_DIR_NAME))
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

    #[test]
    fn a_relative_xdg_data_home_is_ignored() {
        let dir = |xdg: Option<&str>, home: Option<&str>| {
            client_cert_dir_in(xdg.map(Into::into), home.map(Into::into))
        };
        let cert_dir = |p: &str| Some(Path::new(p).join(CLIENT_CERT_DIR_NAME));
        assert_eq!(dir(Some("/x/data"), Some("/home/a")), cert_dir("/x/data"));
        for ignored in ["", "relative", "./data"] {
            assert_eq!(
                dir(Some(ignored), Some("/home/a")),
                cert_dir("/home/a/.local/share")
            );
        }
        assert_eq!(dir(Some("relative"), None), None);
        assert_eq!(dir(None, Some("")), None);
    }
}
