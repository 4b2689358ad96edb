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
    refusal: Refusal,
    action: Option<&'static str>,
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
pub struct Refusals(Collapse<(Option<PeerKey>, &'static str), Refused>);

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
            uid: peer.credentials.map(|c| c.uid),
            address: address_of(peer),
            fingerprint: peer.client.as_ref().map(VerifiedClient::fingerprint),
            failures,
        };
        self.0.note((peer.key(), refusal.as_str()), refused);
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
    let reason = says(refused.refusal, refused.action);
    let times = if refusals == 1 {
        String::new()
    } else {
        format!(" ({refusals} such refusals since the last line; the latest shown)")
    };
    tracing::info!(
        target: "audit",
        event = "refused",
        reason = refused.refusal.as_str(),
        action = refused.action,
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

/// Enrollment token `token_name` was redeemed by `client`, which came as `peer`.
pub fn token_redeemed(peer: &Peer, client: &VerifiedClient, token_name: &str) {
    let uid = peer.credentials.map(|c| c.uid);
    let fingerprint = client.fingerprint();
    tracing::info!(
        target: "audit",
        event = "token-redeemed",
        token_name,
        uid,
        user = uid.and_then(trust::access::user_name),
        fingerprint = %fingerprint,
        "enrollment token '{token_name}' was redeemed by client {fingerprint} ({})",
        who(peer)
    );
}

/// The legacy scrypt passphrase hash was replaced by Argon2id.
pub fn passphrase_upgraded() {
    tracing::info!(
        target: "audit",
        event = "passphrase-upgraded",
        "replaced the legacy scrypt passphrase hash with Argon2id"
    );
}
