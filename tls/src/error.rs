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
    /// Building a TLS configuration failed.
    #[error("failed to build the TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
