//! The Multipass wire protocol and the TLS transport that carries it, shared by daemon and client.
//!
//! - [`proto`]: the `multipass.Rpc` service and its messages, generated from
//!   `proto/multipass.proto` (docs/CONTRACT.md, Wire protocol), and our own `multipass.trust.Trust`
//!   service ([`trust_proto`], `proto/trust.proto`).
//! - [`server`]: accepts connections on a Unix or TCP listener, runs each TLS handshake in its
//!   own task with a timeout, and hands finished connections to tonic together with the typed
//!   [`server::Peer`] (kernel-reported credentials and the verified client certificate).
//! - [`client`]: dials the daemon, does the TLS handshake, and returns a tonic channel; failures
//!   are typed so the CLI can say *why* it could not connect.
//!
//! This crate holds no trust policy: certificates and verifiers come from the `tls` crate,
//! and whether a peer may do something is the daemon's decision.
#![warn(missing_docs)]

pub mod address;
pub mod client;
pub mod messages;
pub mod server;

/// A response header of our own, on the reply to the request that made its client the service's
/// first trusted client (which Multipass's replies have no field for). Stock clients ignore it;
/// ours says so on stderr.
pub const FIRST_CLIENT_HEADER: &str = "multipass-first-client";

/// Generated protocol types and service stubs (`package multipass`).
#[allow(missing_docs, non_camel_case_types, clippy::all)]
pub mod proto {
    tonic::include_proto!("multipass");
}

/// Trust management of our own (`package multipass.trust`, `proto/trust.proto`): not part of the
/// Multipass protocol, so stock clients are unaffected. Kept out of [`proto`] so that its names
/// (`Enrolment`, `trust`) do not collide with glob imports of the Multipass messages.
#[allow(missing_docs, clippy::all)]
pub mod trust_proto {
    tonic::include_proto!("multipass.trust");
}

/// The trust crate's enums on the wire and back, one for one, so that the words people read
/// for them (`first-client`, `expired`) come from the trust crate on both sides of the wire.
mod trust_words {
    use super::trust_proto::{Enrolment as Wire, TokenStatus as WireStatus};
    use trust::tokens::TokenStatus;
    use trust::Enrolment;

    impl From<Enrolment> for Wire {
        fn from(how: Enrolment) -> Wire {
            match how {
                Enrolment::FirstClient => Wire::FirstClient,
                Enrolment::Passphrase => Wire::Passphrase,
                Enrolment::Token => Wire::Token,
                Enrolment::Admin => Wire::Admin,
                Enrolment::ByHand => Wire::ByHand,
            }
        }
    }

    impl Wire {
        /// What the wire's value stands for; `None` for `UNSPECIFIED`.
        pub fn known(self) -> Option<Enrolment> {
            Some(match self {
                Wire::FirstClient => Enrolment::FirstClient,
                Wire::Passphrase => Enrolment::Passphrase,
                Wire::Token => Enrolment::Token,
                Wire::Admin => Enrolment::Admin,
                Wire::ByHand => Enrolment::ByHand,
                Wire::Unspecified => return None,
            })
        }
    }

    impl From<TokenStatus> for WireStatus {
        fn from(status: TokenStatus) -> WireStatus {
            match status {
                TokenStatus::Active => WireStatus::Active,
                TokenStatus::Expired => WireStatus::Expired,
                TokenStatus::Used => WireStatus::Used,
                TokenStatus::Revoked => WireStatus::Revoked,
            }
        }
    }

    impl WireStatus {
        /// What the wire's value stands for; `None` for `UNSPECIFIED`.
        pub fn known(self) -> Option<TokenStatus> {
            Some(match self {
                WireStatus::Active => TokenStatus::Active,
                WireStatus::Expired => TokenStatus::Expired,
                WireStatus::Used => TokenStatus::Used,
                WireStatus::Revoked => TokenStatus::Revoked,
                WireStatus::Unspecified => return None,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_value_goes_there_and_back() {
            for how in [
                Enrolment::FirstClient,
                Enrolment::Passphrase,
                Enrolment::Token,
                Enrolment::Admin,
                Enrolment::ByHand,
            ] {
                assert_eq!(Wire::from(how).known(), Some(how));
            }
            for status in [
                TokenStatus::Active,
                TokenStatus::Expired,
                TokenStatus::Used,
                TokenStatus::Revoked,
            ] {
                assert_eq!(WireStatus::from(status).known(), Some(status));
            }
            assert_eq!(Wire::Unspecified.known(), None);
            assert_eq!(WireStatus::Unspecified.known(), None);
        }
    }
}

pub use address::Address;

/// The TLS error inside an I/O error of a handshake (tokio-rustls wraps rustls's errors so).
pub fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}
