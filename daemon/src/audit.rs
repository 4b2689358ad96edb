//! The daemon's side of the audit log: who a peer is, in the words of `trust::audit` (whose
//! [`AuditEvent`] is the one vocabulary of the daemon and the helper), and refusals collapsed.
//!
//! Refusals are collapsed per peer and reason ([`Refusals`]): a flood of refused requests
//! becomes at most one line a second carrying their count, so it can never push the events that
//! matter (`trusted`, `removed`, token events, which are never collapsed) out of a journal that
//! drops a service's messages past its rate limit.

use std::sync::Arc;
use std::time::Duration;

use rpc::server::{Peer, PeerKey, Transport};
use tls::VerifiedClient;
use trust::audit::{AuditEvent, Via, Who};
use trust::collapse::Collapse;
use trust::{Enrolment, Fingerprint};

use crate::admission::{Refusal, TokenRefusal};

/// At most one line per peer and reason in this period.
const REFUSAL_PERIOD: Duration = Duration::from_secs(1);

/// What a refusal's line says after the client and who it is.
fn says(refusal: Refusal, action: Option<&'static str>) -> String {
    match refusal {
        Refusal::NoCertificate => "no client certificate",
        Refusal::NotTrusted => "not trusted",
        Refusal::FirstClientNotAdmin => {
            "not an administrator, so it cannot become the first client"
        }
        Refusal::NoCredentials => "no kernel credentials, so nobody to hold responsible",
        Refusal::PassphraseNotSet => "no passphrase is set",
        Refusal::PassphraseIncorrect => "wrong passphrase",
        Refusal::RateLimited(_) => "too many failed attempts; must wait",
        Refusal::Token(TokenRefusal::Unknown) => "unknown enrollment token",
        Refusal::Token(TokenRefusal::Used) => "enrollment token already used",
        Refusal::Token(TokenRefusal::Expired) => "enrollment token expired",
        Refusal::Token(TokenRefusal::Revoked) => "enrollment token revoked",
        Refusal::TooManyClients => "its user has as many clients trusted by passphrase as allowed",
        Refusal::NotAdministrator | Refusal::OverTcp => {
            let action = action.unwrap_or("manage other clients' trust");
            return if refusal == Refusal::OverTcp {
                format!("over TCP nobody may {action}")
            } else {
                format!("not an administrator, so it may not {action}")
            };
        }
    }
    .to_string()
}

/// Who a peer is: its uid on the Unix socket, its address on TCP.
pub fn who(peer: &Peer) -> Who {
    match (peer.credentials, peer.transport) {
        (Some(credentials), _) => Who::Uid(credentials.uid),
        (None, Transport::Tcp(addr)) => Who::Address(addr.ip()),
        (None, Transport::Unix) => Who::Unknown,
    }
}

/// One refusal, as its line tells it.
#[derive(Debug, Clone)]
struct Refused {
    refusal: Refusal,
    action: Option<&'static str>,
    who: Who,
    fingerprint: Option<Fingerprint>,
    failures: Option<u32>,
}

/// Refusals collapsed per peer (uid on the Unix socket, address on TCP), reason and action: the
/// first is written at once, then at most one line a second with the number of refusals it stands
/// for (`refusals`), the latest one's certificate and failure count. Every refusal is counted in
/// exactly one line.
#[derive(Debug)]
pub struct Refusals(Collapse<RefusalKey, Refused>);

/// Refusals are collapsed per peer, reason and refused action.
type RefusalKey = (Option<PeerKey>, &'static str, Option<&'static str>);

impl Default for Refusals {
    fn default() -> Self {
        Refusals(Collapse::new(REFUSAL_PERIOD, Arc::new(write_refused)))
    }
}

impl Refusals {
    /// `peer` was refused for `refusal` (of `action`, where that is trust management);
    /// `failures` is its count of consecutive failed authentications, where that applies.
    pub fn note(
        &self,
        peer: &Peer,
        refusal: Refusal,
        action: Option<&'static str>,
        failures: Option<u32>,
    ) {
        let refused = Refused {
            refusal,
            action,
            who: who(peer),
            fingerprint: peer.client.as_ref().map(VerifiedClient::fingerprint),
            failures,
        };
        self.0.note((peer.key(), refusal.as_str(), action), refused);
    }
}

/// Writes a refusal's line. The user database is asked here, at most once a second per peer,
/// not for every refusal.
fn write_refused(refused: &Refused, refusals: u64) {
    AuditEvent::Refused {
        reason: refused.refusal.as_str(),
        says: &says(refused.refusal, refused.action),
        action: refused.action,
        who: refused.who,
        fingerprint: refused.fingerprint,
        failures: refused.failures,
        refusals,
    }
    .emit();
}

/// `client` is now trusted, having come as `peer` by `how`.
pub fn trusted(peer: &Peer, client: &VerifiedClient, how: Enrolment) {
    AuditEvent::Trusted {
        fingerprint: client.fingerprint(),
        how,
        who: who(peer),
        via: Via::Daemon,
    }
    .emit();
}
