//! Messages the daemon and our client both say, so both take them from here: those of the
//! Multipass protocol that clients and scripts recognise by their text (docs/CONTRACT.md,
//! Messages), word for word, and ours for what this service does not do.

/// What stock Multipass clients show for an untrusted client.
pub const NOT_AUTHENTICATED: &str = "The client is not authenticated with the Multipass service.\nPlease use 'multipass authenticate' before proceeding.";
/// `authenticate` while no passphrase is set.
pub const PASSPHRASE_NOT_SET: &str =
    "Passphrase is not set. Please `multipass set local.passphrase` with a trusted client.";
/// `authenticate` with the wrong passphrase.
pub const PASSPHRASE_INCORRECT: &str = "Passphrase is not correct. Please try again.";

/// A Multipass method (or command) `name` this service does not provide: the daemon's answer to a
/// stock client, and our client's for a command it does not have.
pub fn not_available(name: &str) -> String {
    format!("This service manages no instances: '{name}' is not available.")
}
