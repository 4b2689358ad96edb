//! `multipassd`: the Multipass-compatible daemon that authenticates clients.
//!
//! Request path: [`rpc::server`] accepts a connection and completes TLS (the client's certificate
//! is verified for key possession only), tonic routes the request to [`service`], which reads the
//! first message and asks the [`gate`] whether the peer is trusted; the gate consults the trust
//! store (`trust` crate) and, on the Unix socket with an empty store, may trust an administrator
//! as the first client. Errors become gRPC statuses in exactly one place ([`error`]).
//!
//! Next to `multipass.Rpc` the daemon serves our own `multipass.trust.Trust` ([`management`]:
//! list and remove trusted clients, one-time enrollment tokens) behind the same gate, and renews
//! its server certificate while it runs ([`renewal`]).
#![deny(unsafe_code)]

pub mod activation;
pub mod admission;
pub mod args;
pub mod audit;
pub mod descriptors;
pub mod doc;
pub mod error;
pub mod first_client;
pub mod gate;
pub mod limits;
pub mod logging;
pub mod management;
pub mod memory;
pub mod privileges;
pub mod renewal;
pub mod runtime;
pub mod server;
pub mod service;
pub mod socket;

/// As root with `--user`: create the state directory if missing and give it to `user`, so the
/// daemon can keep its files there after switching.
pub fn prepare_state_dir_for(user: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let account = nix::unistd::User::from_name(user)
        .with_context(|| format!("cannot look up user '{user}'"))?
        .with_context(|| format!("no such user '{user}'"))?;
    if !dir.exists() {
        trust::fsutil::ensure_dir(dir, 0o711)?;
        nix::unistd::chown(dir, Some(account.uid), Some(account.gid))
            .with_context(|| format!("cannot give {} to '{user}'", dir.display()))?;
    }
    Ok(())
}
