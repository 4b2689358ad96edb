//! The daemon's errors, and the one place that decides what a client sees of them.

use std::time::Duration;

use tonic::Status;

/// The message stock Multipass clients show for an untrusted client (SPEC section 4).
pub const NOT_AUTHENTICATED: &str = "The client is not authenticated with the Multipass service.\nPlease use 'multipass authenticate' before proceeding.";
/// Authenticate while no passphrase is set.
pub const PASSPHRASE_NOT_SET: &str =
    "Passphrase is not set. Please `multipass set local.passphrase` with a trusted client.";
/// Authenticate with the wrong passphrase.
pub const PASSPHRASE_INCORRECT: &str = "Passphrase is not correct. Please try again.";

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's certificate is not trusted (or it presented none).
    #[error("{NOT_AUTHENTICATED}")]
    NotAuthenticated,
    /// Authenticate without a client certificate: there is nothing to trust.
    #[error("No client certificate was presented, so there is nothing to authenticate. Please use a client that presents its certificate.")]
    NoClientCertificate,
    /// Authenticate while no passphrase is set.
    #[error("{PASSPHRASE_NOT_SET}")]
    PassphraseNotSet,
    /// Authenticate with the wrong passphrase.
    #[error("{PASSPHRASE_INCORRECT}")]
    PassphraseIncorrect,
    /// Too many failed attempts from this user.
    #[error("Too many failed authentication attempts. Please try again in {} seconds.", .retry_after.as_secs().max(1))]
    RateLimited {
        /// How long until the next attempt is accepted.
        retry_after: Duration,
    },
    /// More passphrase checks are queued than the daemon accepts at once.
    #[error("The service is busy checking other passphrases. Please try again.")]
    Busy,
    /// `get`/`set` of a key this service does not have.
    #[error("Unrecognized settings key: '{0}'")]
    UnknownKey(String),
    /// A settings value that cannot be stored.
    #[error("Invalid setting '{key}': {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// What is wrong with the value (never the value itself).
        reason: String,
    },
    /// The client closed its request stream without sending a request.
    #[error("No request received.")]
    NoRequest,
    /// A Multipass method this service does not provide.
    #[error("This service manages no instances: '{0}' is not available.")]
    Unimplemented(&'static str),
    /// Storage failed (disk full, read-only, permissions...).
    #[error("The service could not complete the request: {0}")]
    Storage(#[from] trust::Error),
    /// A blocking task died.
    #[error("The service could not complete the request: internal error")]
    Internal,
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let message = match &err {
            // The whole chain, so a failing write says why ("No space left on device"); trust
            // errors carry paths, never secrets.
            Error::Storage(inner) => {
                let mut text = format!("The service could not complete the request: {inner}");
                let mut source = std::error::Error::source(inner);
                while let Some(s) = source {
                    text.push_str(&format!(": {s}"));
                    source = s.source();
                }
                text
            }
            other => other.to_string(),
        };
        match err {
            Error::NotAuthenticated => Status::unauthenticated(message),
            Error::NoClientCertificate => Status::unauthenticated(message),
            Error::PassphraseNotSet => Status::failed_precondition(message),
            Error::PassphraseIncorrect => Status::invalid_argument(message),
            Error::RateLimited { .. } | Error::Busy => Status::resource_exhausted(message),
            Error::UnknownKey(_) | Error::InvalidValue { .. } | Error::NoRequest => {
                Status::invalid_argument(message)
            }
            Error::Unimplemented(_) => Status::unimplemented(message),
            Error::Storage(_) | Error::Internal => Status::internal(message),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(_: tokio::task::JoinError) -> Error {
        Error::Internal
    }
}
