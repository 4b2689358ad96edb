//! Who the multipass service trusts, and the files that say so.
//!
//! This crate owns the facts every yes/no about a peer rests on (the daemon's `admission` module
//! decides): certificate fingerprints and PEM parsing ([`pki`]), the trust store ([`store`]),
//! passphrase hashes ([`passphrase`]), one-time enrollment tokens ([`tokens`]), last-seen times
//! ([`seen`]), the settings file ([`settings`]) and the default paths ([`paths`]); what a name
//! ([`names`]) and a new passphrase ([`passphrase::validate_new`]) may be; who is an
//! administrator and the socket's access ([`access`]); the audit log's events ([`audit`]), and
//! repeated ones collapsed with their count ([`collapse`]), for the daemon and the helper. It
//! does no networking and holds no policy about *when* to trust: the daemon decides that and
//! calls in here.
//!
//! It makes no certificates and speaks no TLS (that is the `multipass-tls` crate), because the
//! privileged helper links it: what runs as root holds no TLS stack, no key generation, no gRPC.
//!
//! Every file written here is written under a directory lock ([`fsutil`]): replaced atomically,
//! or, for additions to the trust store, appended in one write after a re-read; so the daemon
//! and the privileged helper can both write without losing each other's changes.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod collapse;
pub mod error;
pub mod fsutil;
pub mod logging;
pub mod names;
pub mod passphrase;
pub mod paths;
pub mod pki;
pub mod seen;
pub mod settings;
pub mod store;
pub mod subids;
pub mod tokens;

pub use error::{Error, Result};
pub use passphrase::PassphraseHash;
pub use paths::DataDir;
pub use pki::Fingerprint;
pub use store::{Bundle, Enrolled, Enrolment, Entry, Metadata, Presence, TrustStore};
