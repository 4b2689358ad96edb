//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the trust layer. Each variant names the operation that failed
/// and the object it failed on; messages never repeat their `source`, which callers print as a
/// chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("failed to read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing (or replacing) a file failed. The previous content is intact.
    #[error("failed to write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating a directory or setting its mode failed.
    #[error("failed to prepare directory {path}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Taking the writers' lock failed.
    #[error("failed to lock {path}")]
    Lock {
        /// What was locked.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path} holds no valid {what}")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// A certificate could not be parsed as X.509.
    #[error("not a valid X.509 certificate: {reason}")]
    InvalidCertificate {
        /// What the parser said.
        reason: String,
    },
    /// Input that should hold exactly one certificate holds another number, or other PEM items.
    #[error("expected exactly one PEM certificate, found {found}")]
    NotOneCertificate {
        /// What was found instead, for the message.
        found: String,
    },
    /// A stored passphrase value is neither an Argon2id PHC string nor a legacy scrypt hash.
    #[error("the stored passphrase hash is not in a known format")]
    UnknownHashFormat,
    /// Hashing a passphrase failed.
    #[error("failed to hash the passphrase: {0}")]
    Hash(String),
    /// A settings file line could not be understood.
    #[error("{path}:{line}: {reason}")]
    Settings {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The socket's directory cannot be opened (or is itself a symbolic link).
    #[error("cannot open the socket's directory {path}")]
    SocketDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket's directory could let someone else swap the socket for another file between
    /// the check and the change, so nothing was changed.
    #[error("refusing to change the socket {path}: its directory {reason}")]
    UnsafeSocketDirectory {
        /// The socket.
        path: PathBuf,
        /// What is wrong with the directory, e.g. "can be written by others (mode 1777)".
        reason: String,
    },
    /// The socket path names something else (a symbolic link, a regular file...), left alone.
    #[error("refusing to change {path}: it is {found}, not a socket")]
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        found: &'static str,
    },
    /// Changing the socket's owner or mode failed.
    #[error("cannot change the {what} of the socket {path}")]
    SocketAccess {
        /// The socket.
        path: PathBuf,
        /// "owner" or "mode".
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
