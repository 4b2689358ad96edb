//! `multipassd-helper`: the few privileged operations of the multipass service, so the daemon
//! needs no privileges. It runs as root, is started by D-Bus activation and exits when idle.
//!
//! - [`bus`]: the D-Bus interface `io.multipass.Helper1`; every method asks polkit first.
//! - [`ops`]: the operations themselves (set the passphrase, trust a certificate, set the
//!   socket's access), also reachable directly by root (`pkexec`, the socket unit's hook).
//! - [`writer`]: the typed messages between root and its writer child.
//! - [`config`]: paths, from the helper's own command line only.
//!
//! Its D-Bus names, polkit actions and errors are defined once, with the callers' proxy, in
//! `helper_api`.
//!
//! It deliberately depends on neither tonic nor rustls nor the daemon.
#![forbid(unsafe_code)]

pub mod bus;
mod bus_socket;
pub mod cli;
pub mod config;
pub mod doc;
pub mod ops;
pub mod writer;

/// Audit that a certificate with `fingerprint` (hex) was trusted at the request of `uid`, `via`
/// the bus or the direct mode: the same event, with the same fields, as the daemon's.
pub fn trusted(uid: u32, fingerprint: &str, via: trust::audit::Via) {
    let Some(fingerprint) = trust::Fingerprint::from_hex(fingerprint) else {
        return;
    };
    trust::audit::AuditEvent::Trusted {
        fingerprint,
        how: trust::Enrolment::Admin,
        who: trust::audit::Who::Uid(uid),
        via,
    }
    .emit();
}
