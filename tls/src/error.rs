//! The one error type of this crate.

/// What can go wrong making certificates or TLS configurations. File and parsing errors are the
/// trust layer's, passed through unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or parsing a certificate or key file failed.
    #[error(transparent)]
    Trust(#[from] trust::Error),
    /// Certificate or key generation failed.
    #[error("failed to generate {what}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// The client's key is not the key of its certificate.
    #[error("the key {key} is not the key of the certificate {cert}")]
    KeyMismatch {
        /// The certificate.
        cert: std::path::PathBuf,
        /// The key.
        key: std::path::PathBuf,
    },
    /// The client's key holds no key that can sign.
    #[error("the key {key} cannot be used")]
    UnusableKey {
        /// The key.
        key: std::path::PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// Building a TLS configuration failed.
    #[error("failed to build the TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
