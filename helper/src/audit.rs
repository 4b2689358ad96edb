//! The helper's audit events (tracing target `audit`), worded as the daemon's: the message text
//! names who and which certificate, as the structured fields do.

/// A certificate with `fingerprint` was trusted at the request of `uid`, `via` the bus
/// (`helper`) or the direct mode (`direct`: root, pkexec).
pub fn trusted(uid: u32, fingerprint: &str, via: &'static str) {
    tracing::info!(
        target: "audit",
        event = "trusted",
        how = "admin",
        via,
        uid,
        user = trust::access::user_name(uid),
        fingerprint,
        "trusted client {fingerprint} ({}) by an administrator through the helper{}",
        trust::access::describe_user(uid),
        if via == "direct" { "'s direct mode" } else { "" }
    );
}
