//! The audit vocabulary: every trust event of the daemon and the helper, with the same fields
//! whoever sends it. Events go to the tracing target `audit`; under systemd their fields become
//! journal fields, and their message text says the same to a reader of plain `journalctl`: who
//! (user and uid, or TCP address), which certificate, what happened.

use std::net::IpAddr;

use crate::access::{describe_user, user_name};
use crate::{Enrolment, Fingerprint};

/// Who asked, or who was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A local user, by the kernel's word (SO_PEERCRED, or the D-Bus sender's uid).
    Uid(u32),
    /// A TCP peer: nobody vouches for it but its address.
    Address(IpAddr),
    /// A local peer without kernel credentials.
    Unknown,
}

impl Who {
    fn uid(self) -> Option<u32> {
        match self {
            Who::Uid(uid) => Some(uid),
            _ => None,
        }
    }

    fn address(self) -> Option<IpAddr> {
        match self {
            Who::Address(ip) => Some(ip),
            _ => None,
        }
    }

    /// For the text of a line: `user alice, uid 1001`, `address 192.0.2.7`.
    pub fn describe(self) -> String {
        match self {
            Who::Uid(uid) => describe_user(uid),
            Who::Address(ip) => format!("address {ip}"),
            Who::Unknown => "a local peer without credentials".to_string(),
        }
    }
}

/// Which program, and which way into it, did what an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The daemon, for a client's request.
    Daemon,
    /// The helper, for a D-Bus caller polkit authorized.
    Helper,
    /// The helper's direct mode (root on the command line, or pkexec).
    HelperDirect,
}

impl Via {
    /// The `via` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Daemon => "daemon",
            Via::Helper => "helper",
            Via::HelperDirect => "direct",
        }
    }

    fn says(self) -> &'static str {
        match self {
            Via::Daemon => "",
            Via::Helper => " through the helper",
            Via::HelperDirect => " through the helper's direct mode",
        }
    }
}

/// One audit event.
#[derive(Debug, Clone)]
pub enum AuditEvent<'a> {
    /// A client certificate is now trusted.
    Trusted {
        /// The certificate.
        fingerprint: Fingerprint,
        /// How it got in.
        how: Enrolment,
        /// Who it came as (the enrolling peer, or the administrator who asked the helper).
        who: Who,
        /// Through which program.
        via: Via,
    },
    /// A request or an attempt to be trusted was refused (collapsed: `refusals` such refusals
    /// since the last line for this peer and reason, this one the latest).
    Refused {
        /// The `reason` field (`not-trusted`, `wrong-passphrase`, ...).
        reason: &'static str,
        /// The reason, in words.
        says: &'a str,
        /// The trust-management action refused, if that is what was refused.
        action: Option<&'static str>,
        /// Who.
        who: Who,
        /// The certificate presented, if any.
        fingerprint: Option<Fingerprint>,
        /// The peer's consecutive failed attempts, where that applies.
        failures: Option<u32>,
        /// How many refusals this line stands for.
        refusals: u64,
    },
    /// A client is no longer trusted.
    Removed {
        /// The certificate.
        fingerprint: Fingerprint,
        /// Its name.
        name: Option<&'a str>,
        /// How it had got in.
        how: Enrolment,
        /// Who asked.
        by: Who,
        /// Clients still trusted.
        remaining: usize,
    },
    /// An enrollment token was created.
    TokenCreated {
        /// Its name.
        name: &'a str,
        /// Its expiry (RFC 3339).
        expires: &'a str,
        /// Who asked.
        by: Who,
    },
    /// An enrollment token was revoked.
    TokenRevoked {
        /// Its name.
        name: &'a str,
        /// Who asked.
        by: Who,
    },
    /// An enrollment token was redeemed.
    TokenRedeemed {
        /// Its name.
        name: &'a str,
        /// The certificate it enrols.
        fingerprint: Fingerprint,
        /// Who redeemed it.
        who: Who,
    },
    /// The passphrase was set, or cleared.
    PassphraseChanged {
        /// Cleared rather than set.
        cleared: bool,
        /// Who asked.
        by: Who,
        /// Through which program.
        via: Via,
    },
    /// A legacy scrypt passphrase hash was replaced by Argon2id.
    PassphraseUpgraded,
    /// The daemon renewed its server certificate.
    ServerCertificateRenewed {
        /// The certificate replaced.
        old: Fingerprint,
        /// The new one.
        new: Fingerprint,
        /// The new one's expiry.
        not_after: &'a str,
    },
    /// The socket's access was changed through the helper.
    SocketAccess {
        /// `open` or `restricted`.
        access: &'static str,
        /// Who asked.
        by: Who,
    },
    /// polkit refused a helper call (collapsed: `refusals` such refusals since the last line for
    /// this caller and action, this one the latest).
    HelperDenied {
        /// The polkit action.
        action: &'a str,
        /// Who called, by the uid the bus knows for the sender.
        who: Who,
        /// The D-Bus sender.
        sender: &'a str,
        /// polkit's answer.
        reason: &'a str,
        /// How many refusals this line stands for.
        refusals: u64,
    },
}

/// What a collapsed line adds when it stands for more than one refusal.
fn times(refusals: u64) -> String {
    if refusals == 1 {
        String::new()
    } else {
        format!(" ({refusals} such refusals since the last line; the latest shown)")
    }
}

fn how_text(how: Enrolment) -> &'static str {
    match how {
        Enrolment::FirstClient => "as the first client",
        Enrolment::Passphrase => "by passphrase",
        Enrolment::Token => "by enrollment token",
        Enrolment::Admin => "by an administrator",
        Enrolment::ByHand => "by hand",
    }
}

impl AuditEvent<'_> {
    /// The `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            AuditEvent::Trusted { .. } => "trusted",
            AuditEvent::Refused { .. } => "refused",
            AuditEvent::Removed { .. } => "removed",
            AuditEvent::TokenCreated { .. } => "token-created",
            AuditEvent::TokenRevoked { .. } => "token-revoked",
            AuditEvent::TokenRedeemed { .. } => "token-redeemed",
            AuditEvent::PassphraseChanged { cleared: true, .. } => "passphrase-cleared",
            AuditEvent::PassphraseChanged { cleared: false, .. } => "passphrase-set",
            AuditEvent::PassphraseUpgraded => "passphrase-upgraded",
            AuditEvent::ServerCertificateRenewed { .. } => "server-certificate-renewed",
            AuditEvent::SocketAccess { .. } => "socket-access",
            AuditEvent::HelperDenied { .. } => "helper-denied",
        }
    }

    /// Write the event to the audit log.
    pub fn emit(&self) {
        let event = self.name();
        match *self {
            AuditEvent::Trusted {
                fingerprint,
                how,
                who,
                via,
            } => tracing::info!(
                target: "audit",
                event,
                how = how.as_str(),
                via = via.as_str(),
                uid = who.uid(),
                user = who.uid().and_then(user_name),
                address = who.address().map(tracing::field::display),
                fingerprint = %fingerprint,
                "trusted client {fingerprint} ({}) {}{}",
                who.describe(),
                how_text(how),
                via.says()
            ),
            AuditEvent::Refused {
                reason,
                says,
                action,
                who,
                fingerprint,
                failures,
                refusals,
            } => {
                let client = match &fingerprint {
                    Some(fingerprint) => format!("client {fingerprint}"),
                    None => "a client without a certificate".to_string(),
                };
                tracing::info!(
                    target: "audit",
                    event,
                    reason,
                    action,
                    uid = who.uid(),
                    user = who.uid().and_then(user_name),
                    address = who.address().map(tracing::field::display),
                    fingerprint = fingerprint.map(tracing::field::display),
                    failures,
                    refusals,
                    "refused {client} ({}): {says}{}",
                    who.describe(),
                    times(refusals)
                )
            }
            AuditEvent::Removed {
                fingerprint,
                name,
                how,
                by,
                remaining,
            } => tracing::info!(
                target: "audit",
                event,
                fingerprint = %fingerprint,
                name,
                how = how.as_str(),
                by_uid = by.uid(),
                by_user = by.uid().and_then(user_name),
                remaining,
                "stopped trusting client {fingerprint} ('{}') at the request of {}",
                name.unwrap_or("unnamed"),
                by.describe()
            ),
            AuditEvent::TokenCreated { name, expires, by } => tracing::info!(
                target: "audit",
                event,
                token_name = %name,
                expires = %expires,
                by_uid = by.uid(),
                by_user = by.uid().and_then(user_name),
                "created enrollment token '{name}', valid until {expires}, at the request of {}",
                by.describe()
            ),
            AuditEvent::TokenRevoked { name, by } => tracing::info!(
                target: "audit",
                event,
                token_name = %name,
                by_uid = by.uid(),
                by_user = by.uid().and_then(user_name),
                "revoked enrollment token '{name}' at the request of {}",
                by.describe()
            ),
            AuditEvent::TokenRedeemed {
                name,
                fingerprint,
                who,
            } => tracing::info!(
                target: "audit",
                event,
                token_name = %name,
                uid = who.uid(),
                user = who.uid().and_then(user_name),
                fingerprint = %fingerprint,
                "enrollment token '{name}' was redeemed by client {fingerprint} ({})",
                who.describe()
            ),
            AuditEvent::PassphraseChanged { cleared, by, via } => tracing::info!(
                target: "audit",
                event,
                via = via.as_str(),
                uid = by.uid(),
                user = by.uid().and_then(user_name),
                "the passphrase was {} at the request of {}{}",
                if cleared { "cleared" } else { "changed" },
                by.describe(),
                via.says()
            ),
            AuditEvent::PassphraseUpgraded => tracing::info!(
                target: "audit",
                event,
                "replaced the legacy scrypt passphrase hash with Argon2id"
            ),
            AuditEvent::ServerCertificateRenewed {
                old,
                new,
                not_after,
            } => tracing::info!(
                target: "audit",
                event,
                old_fingerprint = %old,
                fingerprint = %new,
                not_after = %not_after,
                "renewed the server certificate: {new} replaces {old}, valid until {not_after}"
            ),
            AuditEvent::SocketAccess { access, by } => tracing::info!(
                target: "audit",
                event,
                access,
                via = Via::Helper.as_str(),
                uid = by.uid(),
                user = by.uid().and_then(user_name),
                "socket access set to {access} through the helper at the request of {}",
                by.describe()
            ),
            AuditEvent::HelperDenied {
                action,
                who,
                sender,
                reason,
                refusals,
            } => tracing::info!(
                target: "audit",
                event,
                action,
                uid = who.uid(),
                user = who.uid().and_then(user_name),
                sender,
                reason,
                refusals,
                "polkit refused {action} to {} on {sender}: {reason}{}",
                who.describe(),
                times(refusals)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_has_one_name_whoever_sends_it() {
        let fingerprint = Fingerprint::of(b"client");
        for via in [Via::Daemon, Via::Helper, Via::HelperDirect] {
            let event = AuditEvent::Trusted {
                fingerprint,
                how: Enrolment::Admin,
                who: Who::Uid(0),
                via,
            };
            assert_eq!(event.name(), "trusted");
            event.emit();
        }
        assert_eq!(
            Who::Address("192.0.2.7".parse().unwrap()).describe(),
            "address 192.0.2.7"
        );
        assert!(Who::Uid(0).describe().contains("uid 0"));
    }
}
