//! The Multipass wire protocol and the TLS transport that carries it, shared by daemon and client.
//!
//! - [`proto`]: the `multipass.Rpc` service and its messages, generated from
//!   `proto/multipass.proto` (docs/CONTRACT.md, Wire protocol), and our own `multipass.trust.Trust` service
//!   ([`trust_proto`], `proto/trust.proto`).
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
pub mod server;

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

pub use address::Address;
