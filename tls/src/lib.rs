//! The multipass service's certificates and TLS: what the daemon and the client need to speak
//! TLS 1.3 to each other.
//!
//! It makes the daemon's root CA and server certificate and the client's self-signed certificate
//! ([`pki`]), and builds both TLS configurations with the client-certificate verifier and the
//! renewable server certificate ([`config`]). A [`VerifiedClient`] comes only out of a finished
//! handshake.
//!
//! It does not decide whom to trust (the `multipass-trust` crate's store and the daemon do), and
//! the privileged helper does not link it: that is why certificate generation and rustls live here
//! and not in `multipass-trust`.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
#[cfg(feature = "danger-test-client")]
pub mod danger;
pub mod error;
pub mod pki;

pub use config::{client_config, server_config, ServerCertResolver, VerifiedClient};
pub use error::{Error, Result};
pub use pki::{ClientIdentity, ServerPki, ServerPkiOptions};
