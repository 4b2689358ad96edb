//! Messages of the Multipass protocol that clients and scripts recognise by their text
//! (docs/CONTRACT.md, Messages): the daemon sends them word for word, and our client tells the
//! refusals apart by them, so both sides take them from here.

/// What stock Multipass clients show for an untrusted client.
pub const NOT_AUTHENTICATED: &str = "The client is not authenticated with the Multipass service.\nPlease use 'multipass authenticate' before proceeding.";
/// `authenticate` while no passphrase is set.
pub const PASSPHRASE_NOT_SET: &str =
    "Passphrase is not set. Please `multipass set local.passphrase` with a trusted client.";
/// `authenticate` with the wrong passphrase.
pub const PASSPHRASE_INCORRECT: &str = "Passphrase is not correct. Please try again.";
