//! Audit events of trust decisions (tracing target `audit`): their structured fields become
//! journal fields under systemd, and their message text says the same to a reader of plain
//! `journalctl`: who (user and uid, or TCP address), which certificate, what happened.
//!
//! Refusals are collapsed per peer and reason ([`Refusals`]): a flood of refused requests
//! becomes at most one line a second carrying their count, so it can never push the events that
//! matter (`trusted`, `removed`, token events, which are never collapsed) out of a journal that
//! drops a service's messages past its rate limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rpc::collapse::Collapse;
use rpc::server::{Peer, PeerKey, Transport};
use trust::{Enrolment, Fingerprint, VerifiedClient};

/// At most one line per peer and reason in this period.
const REFUSAL_PERIOD: Duration = Duration::from_secs(1);

/// Why a request or an attempt to be trusted was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A gated request from a certificate that is not trusted.
    NotTrusted,
    /// First-client trust asked by a peer that is not an administrator.
    FirstClientNotAdmin,
    /// `authenticate` with a wrong passphrase.
    WrongPassphrase,
    /// `authenticate` while the peer must wait after failures.
    RateLimited,
    /// An enrollment token nobody issued.
    TokenUnknown,
    /// An enrollment token already redeemed.
    TokenUsed,
    /// An enrollment token past its expiry.
    TokenExpired,
    /// A revoked enrollment token.
    TokenRevoked,
    /// Trust management (the action asked) by a trusted client that is not an administrator.
    NotAdministrator(&'static str),
}

impl Reason {
    /// The `reason` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotTrusted => "not-trusted",
            Reason::FirstClientNotAdmin => "first-client-not-admin",
            Reason::WrongPassphrase => "wrong-passphrase",
            Reason::RateLimited => "rate-limited",
            Reason::TokenUnknown => "token-unknown",
            Reason::TokenUsed => "token-used",
            Reason::TokenExpired => "token-expired",
            Reason::TokenRevoked => "token-revoked",
            Reason::NotAdministrator(_) => "not-administrator",
        }
    }

    /// The action asked, for refusals of one.
    fn action(self) -> Option<&'static str> {
        match self {
            Reason::NotAdministrator(action) => Some(action),
            _ => None,
        }
    }

    fn says(self) -> String {
        match self {
            Reason::NotTrusted => "not trusted",
            Reason::FirstClientNotAdmin => {
                "not an administrator, so it cannot become the first client"
            }
            Reason::WrongPassphrase => "wrong passphrase",
            Reason::RateLimited => "too many failed attempts; must wait",
            Reason::TokenUnknown => "unknown enrollment token",
            Reason::TokenUsed => "enrollment token already used",
            Reason::TokenExpired => "enrollment token expired",
            Reason::TokenRevoked => "enrollment token revoked",
            Reason::NotAdministrator(action) => {
                return format!("not an administrator, so it may not {action}")
            }
        }
        .to_string()
    }
}

/// Who a peer is, for the text of a log line: `user alice, uid 1001`, `address 192.0.2.7`.
pub fn who(peer: &Peer) -> String {
    describe(peer.credentials.map(|c| c.uid), address_of(peer))
}

fn describe(uid: Option<u32>, address: Option<IpAddr>) -> String {
    match (uid, address) {
        (Some(uid), _) => trust::access::describe_user(uid),
        (None, Some(ip)) => format!("address {ip}"),
        (None, None) => "a local peer without credentials".to_string(),
    }
}

fn address_of(peer: &Peer) -> Option<IpAddr> {
    match peer.transport {
        Transport::Tcp(addr) => Some(addr.ip()),
        Transport::Unix => None,
    }
}

/// One refusal, as its line tells it.
#[derive(Debug, Clone)]
struct Refused {
    reason: Reason,
    uid: Option<u32>,
    address: Option<IpAddr>,
    fingerprint: Option<Fingerprint>,
    failures: Option<u32>,
}

/// Refusals collapsed per peer (uid on the Unix socket, address on TCP) and reason: the first
/// is written at once, then at most one line a second with the number of refusals it stands for
/// (`refusals`), the latest one's certificate and failure count. Every refusal is counted in
/// exactly one line.
#[derive(Debug)]
pub struct Refusals(Collapse<(Option<PeerKey>, Reason), Refused>);

impl Default for Refusals {
    fn default() -> Self {
        Refusals(Collapse::new(REFUSAL_PERIOD, Arc::new(write_refused)))
    }
}

impl Refusals {
    /// `peer` was refused for `reason`; `failures` is its count of consecutive failed
    /// authentications, where that applies.
    pub fn note(&self, peer: &Peer, reason: Reason, failures: Option<u32>) {
        let refused = Refused {
            reason,
            uid: peer.credentials.map(|c| c.uid),
            address: address_of(peer),
            fingerprint: peer.client.as_ref().map(VerifiedClient::fingerprint),
            failures,
        };
        self.0.note((peer.key(), reason), refused);
    }
}

/// Writes a refusal's line. The user database is asked here, at most once a second per peer,
/// not for every refusal.
fn write_refused(refused: &Refused, refusals: u64) {
    let who = describe(refused.uid, refused.address);
    let client = match &refused.fingerprint {
        Some(fingerprint) => format!("client {fingerprint}"),
        None => "a client without a certificate".to_string(),
    };
    let reason = refused.reason.says();
    let times = if refusals == 1 {
        String::new()
    } else {
        format!(" ({refusals} such refusals since the last line; the latest shown)")
    };
    tracing::info!(
        target: "audit",
        event = "refused",
        reason = refused.reason.as_str(),
        action = refused.reason.action(),
        uid = refused.uid,
        user = refused.uid.and_then(trust::access::user_name),
        address = refused.address.map(tracing::field::display),
        fingerprint = refused.fingerprint.map(tracing::field::display),
        failures = refused.failures,
        refusals,
        "refused {client} ({who}): {reason}{times}"
    );
}

/// `client` is now trusted, having come as `peer` by `how`.
pub fn trusted(peer: &Peer, client: &VerifiedClient, how: Enrolment) {
    let uid = peer.credentials.map(|c| c.uid);
    let fingerprint = client.fingerprint();
    let how_text = match how {
        Enrolment::FirstClient => "as the first client",
        Enrolment::Passphrase => "by passphrase",
        Enrolment::Token => "by enrollment token",
        Enrolment::Admin => "by an administrator",
        Enrolment::ByHand => "by hand",
    };
    tracing::info!(
        target: "audit",
        event = "trusted",
        how = how.as_str(),
        uid,
        user = uid.and_then(trust::access::user_name),
        fingerprint = %fingerprint,
        "trusted client {fingerprint} ({}) {how_text}",
        who(peer)
    );
}
