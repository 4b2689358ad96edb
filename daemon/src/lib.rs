//! `multipassd`: the Multipass-compatible daemon that authenticates clients.
//!
//! Request path: [`rpc::server`] accepts a connection and completes TLS (the client's certificate
//! is verified for key possession only), tonic routes the request to [`service`], which reads the
//! first message and asks the [`gate`] whether the peer is trusted; the gate consults the trust
//! store (`trust` crate) and, on the Unix socket with an empty store, may trust an administrator
//! as the first client. Errors become gRPC statuses in exactly one place ([`error`]).
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod error;
pub mod gate;
pub mod limits;
pub mod server;
pub mod service;
pub mod socket;
