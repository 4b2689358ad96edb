//! Admission: every trust decision of the daemon, as pure functions over facts.
//!
//! Nothing here reads a file, looks up a user or talks to a socket. The gate
//! ([`crate::gate::Gate`]) gathers the [`Facts`] of a request (how the peer reached us, who it is,
//! whether its certificate is in the store as the store is now), asks [`decide`], and carries out
//! the [`Decision`]: the store write under its lock, the socket's access, last-seen times, the
//! audit event. Because the decisions are pure, the same functions are driven by the model check
//! in `daemon/tests/admission_model.rs`, which explores every interleaving of several peers, the
//! store's writers and crashes (see docs/ARCHITECTURE.md, "The admission model").
//!
//! The rules, in one place:
//! - a trusted certificate passes the gate; `ping` answers only trusted clients and never trusts;
//! - the first client: on the Unix socket only, while the store is empty, only an administrator
//!   (uid 0 or the admin group); decided again under the store's lock against the file as it is
//!   then, so of simultaneous first clients exactly one wins;
//! - `authenticate` checks the secret even for a trusted client (as Multipass does), after the
//!   per-peer failure limiter; a token is told from a passphrase by its shape and redeemed once;
//! - a user other than root, on the Unix socket, may have at most [`MAX_PASSPHRASE_CLIENTS`]
//!   clients trusted by the passphrase; the next one is refused before the passphrase is hashed;
//! - managing others' trust (removing another client, tokens) needs a trusted client whose peer
//!   is an administrator at the time of the request, on the Unix socket; never over TCP.

use std::time::Duration;

pub use trust::tokens::TokenRefusal;

/// Clients one user but root (by uid, over the Unix socket) may have trusted with the
/// passphrase, at most. Each new key is a new client, so without a bound a user who knows the
/// passphrase could add a client every time it is checked (14 a second from a shell loop of
/// `authenticate` with a fresh `XDG_DATA_HOME`), each about 750 bytes of store and a `trusted`
/// line, which is never collapsed. Far above what one person uses; a script that makes a new
/// identity at every run reaches it, and is told how to go on. Clients trusted by token, by an
/// administrator or by hand do not count, and neither do clients over TCP, which have no uid.
/// Root is not bounded: it could write the store itself.
pub const MAX_PASSPHRASE_CLIENTS: usize = 100;

/// How the peer reached the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The local Unix socket: the kernel tells who the peer is.
    Unix,
    /// TCP: nobody vouches for the peer but its certificate.
    Tcp,
}

/// What the peer's certificate is, against the store as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presented {
    /// No client certificate (only possible from clients that are not ours).
    Nothing,
    /// A certificate the store does not hold.
    Unknown,
    /// A trusted certificate.
    Trusted,
}

/// Everything a decision depends on, gathered by the gate at the time of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Facts {
    /// Unix socket or TCP.
    pub transport: Transport,
    /// The peer's uid from SO_PEERCRED (Unix socket only).
    pub uid: Option<u32>,
    /// Whether that uid is an administrator now (uid 0 or a member of the admin group).
    pub admin: bool,
    /// The certificate against the store.
    pub presented: Presented,
    /// Whether the store holds no certificate at all.
    pub store_empty: bool,
    /// How long the peer must still wait after failed attempts (`None`: it may try now).
    pub wait: Option<Duration>,
    /// How many clients the peer's user has trusted by the passphrase (the store's `uid` and
    /// `how` lines). Gathered only where [`needs_client_count`] says it counts; 0 elsewhere.
    pub passphrase_clients: usize,
}

/// What the peer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// `ping`: answered for trusted clients, never trusts anybody.
    Ping,
    /// Any gated call a trusted client may make: `list`, `version`, settings, listing trusted
    /// clients, removing its own entry.
    Use,
    /// Managing others' trust: removing another client's entry, creating, listing or revoking
    /// enrollment tokens.
    Manage,
    /// `authenticate` with a secret of this kind.
    Authenticate(Secret),
}

/// What `authenticate` carries, told apart by shape so that neither is ever checked as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secret {
    /// A passphrase.
    Passphrase,
    /// A one-time enrollment token (`mpt_` and 40 hex digits).
    Token,
}

/// How a client came to be trusted.
pub use trust::Enrolment;

/// What the gate must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Go on with the request.
    Admit,
    /// The peer may become the first client: take the store's lock and call [`decide`] again
    /// with the facts read under it; write only if it says [`Decision::TryFirstClient`] again.
    TryFirstClient,
    /// Verify the passphrase, then call [`checked`].
    CheckPassphrase,
    /// Redeem the token, then call [`checked`].
    RedeemToken,
    /// No.
    Refuse(Refusal),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The client presented no certificate.
    NoCertificate,
    /// The certificate is not trusted (and the peer cannot become the first client).
    NotTrusted,
    /// The store is empty but the peer is not an administrator: it cannot be the first client.
    FirstClientNotAdmin,
    /// Managing others' trust needs an administrator's peer.
    NotAdministrator,
    /// Managing others' trust is never allowed over TCP.
    OverTcp,
    /// A Unix-socket peer without kernel credentials: nobody to hold responsible.
    NoCredentials,
    /// Too many failed attempts: wait this long.
    RateLimited(Duration),
    /// No passphrase is set.
    PassphraseNotSet,
    /// The passphrase is wrong.
    PassphraseIncorrect,
    /// The token was refused.
    Token(TokenRefusal),
    /// The user has as many clients trusted by the passphrase as one user may.
    TooManyClients,
}

impl Refusal {
    /// The `reason` of the audit event.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no-certificate",
            Refusal::NotTrusted => "not-trusted",
            Refusal::FirstClientNotAdmin => "first-client-not-admin",
            Refusal::NotAdministrator => "not-administrator",
            Refusal::OverTcp => "over-tcp",
            Refusal::NoCredentials => "no-credentials",
            Refusal::RateLimited(_) => "rate-limited",
            Refusal::PassphraseNotSet => "passphrase-not-set",
            Refusal::PassphraseIncorrect => "wrong-passphrase",
            Refusal::Token(TokenRefusal::Unknown) => "token-unknown",
            Refusal::Token(TokenRefusal::Used) => "token-used",
            Refusal::Token(TokenRefusal::Expired) => "token-expired",
            Refusal::Token(TokenRefusal::Revoked) => "token-revoked",
            Refusal::TooManyClients => "too-many-clients",
        }
    }

    /// Whether this refusal counts as a failed attempt against the peer's limiter.
    pub fn is_failed_attempt(self) -> bool {
        matches!(self, Refusal::PassphraseIncorrect | Refusal::Token(_))
    }
}

/// The decision for `request` given `facts`.
pub fn decide(facts: &Facts, request: Request) -> Decision {
    if facts.presented == Presented::Nothing {
        return Decision::Refuse(Refusal::NoCertificate);
    }
    let trusted = facts.presented == Presented::Trusted;
    match request {
        Request::Ping if trusted => Decision::Admit,
        Request::Ping => Decision::Refuse(Refusal::NotTrusted),
        Request::Use if trusted => Decision::Admit,
        Request::Use => first_client(facts),
        Request::Manage if !trusted => Decision::Refuse(Refusal::NotTrusted),
        Request::Manage if facts.transport == Transport::Tcp => Decision::Refuse(Refusal::OverTcp),
        Request::Manage if facts.admin && facts.uid.is_some() => Decision::Admit,
        Request::Manage => Decision::Refuse(Refusal::NotAdministrator),
        Request::Authenticate(secret) => {
            if facts.transport == Transport::Unix && facts.uid.is_none() {
                return Decision::Refuse(Refusal::NoCredentials);
            }
            if let Some(wait) = facts.wait {
                return Decision::Refuse(Refusal::RateLimited(wait));
            }
            match secret {
                // Before the hash, which could not change the answer.
                Secret::Passphrase if passphrase_bounded(facts) && at_client_limit(facts) => {
                    Decision::Refuse(Refusal::TooManyClients)
                }
                Secret::Passphrase => Decision::CheckPassphrase,
                Secret::Token => Decision::RedeemToken,
            }
        }
    }
}

fn first_client(facts: &Facts) -> Decision {
    if facts.transport != Transport::Unix || facts.uid.is_none() || !facts.store_empty {
        return Decision::Refuse(Refusal::NotTrusted);
    }
    if !facts.admin {
        return Decision::Refuse(Refusal::FirstClientNotAdmin);
    }
    Decision::TryFirstClient
}

/// Whether the peer's passphrase clients are bounded: a user other than root on the Unix socket.
fn passphrase_bounded(facts: &Facts) -> bool {
    facts.transport == Transport::Unix && matches!(facts.uid, Some(uid) if uid != 0)
}

/// Whether trusting the peer's client by the passphrase would be one client too many for its
/// user. A client trusted already adds none.
fn at_client_limit(facts: &Facts) -> bool {
    facts.presented != Presented::Trusted && facts.passphrase_clients >= MAX_PASSPHRASE_CLIENTS
}

/// What checking a secret found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checked {
    /// The passphrase matched the stored hash.
    RightPassphrase,
    /// It did not.
    WrongPassphrase,
    /// No passphrase is set.
    NoPassphrase,
    /// The token was valid and is now used up.
    TokenRedeemed,
    /// The token was refused.
    TokenRefused(TokenRefusal),
}

/// The outcome of a secret check: trust the client as [`Verdict::Enrol`] says, or refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Add the client to the store (a no-op if it is there already), how it got in.
    Enrol(Enrolment),
    /// No.
    Refuse(Refusal),
}

/// What to do after checking the secret of an `authenticate`.
pub fn checked(outcome: Checked) -> Verdict {
    match outcome {
        Checked::RightPassphrase => Verdict::Enrol(Enrolment::Passphrase),
        Checked::TokenRedeemed => Verdict::Enrol(Enrolment::Token),
        Checked::WrongPassphrase => Verdict::Refuse(Refusal::PassphraseIncorrect),
        Checked::NoPassphrase => Verdict::Refuse(Refusal::PassphraseNotSet),
        Checked::TokenRefused(why) => Verdict::Refuse(Refusal::Token(why)),
    }
}

/// Whether the store's facts (`presented` beyond whether there is a certificate at all,
/// `store_empty`) can change the decision for `request`. A passphrase is checked whoever
/// presents it, so `authenticate` with one reads the store before the check only where the
/// bound on passphrase clients applies: under a crowd of enrolments the file changes at every
/// write, and each read would parse it again.
pub fn needs_store(facts: &Facts, request: Request) -> bool {
    request != Request::Authenticate(Secret::Passphrase) || passphrase_bounded(facts)
}

/// Whether the `passphrase_clients` fact can change the decision for `request`, given the store's
/// facts: counting reads every entry of the store.
pub fn needs_client_count(facts: &Facts, request: Request) -> bool {
    request == Request::Authenticate(Secret::Passphrase)
        && facts.wait.is_none()
        && facts.presented == Presented::Unknown
        && passphrase_bounded(facts)
}

/// Whether the `admin` fact can change the decision for `request`: looking a user up in the
/// group database costs a lookup (remote, with some NSS setups), so the gate asks only then.
pub fn needs_admin(facts: &Facts, request: Request) -> bool {
    let trusted = facts.presented == Presented::Trusted;
    facts.transport == Transport::Unix
        && facts.uid.is_some()
        && facts.presented != Presented::Nothing
        && match request {
            Request::Manage => trusted,
            Request::Use => !trusted && facts.store_empty,
            Request::Ping | Request::Authenticate(_) => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, admin: bool, presented: Presented, store_empty: bool) -> Facts {
        Facts {
            transport: Transport::Unix,
            uid: Some(uid),
            admin,
            presented,
            store_empty,
            wait: None,
            passphrase_clients: 0,
        }
    }

    fn tcp(presented: Presented, store_empty: bool) -> Facts {
        Facts {
            transport: Transport::Tcp,
            uid: None,
            admin: false,
            presented,
            store_empty,
            wait: None,
            passphrase_clients: 0,
        }
    }

    #[test]
    fn a_trusted_client_passes_and_an_unknown_one_does_not() {
        let trusted = unix(1000, false, Presented::Trusted, false);
        assert_eq!(decide(&trusted, Request::Use), Decision::Admit);
        assert_eq!(decide(&trusted, Request::Ping), Decision::Admit);
        let unknown = unix(1000, false, Presented::Unknown, false);
        assert_eq!(
            decide(&unknown, Request::Use),
            Decision::Refuse(Refusal::NotTrusted)
        );
        assert_eq!(
            decide(&unknown, Request::Ping),
            Decision::Refuse(Refusal::NotTrusted)
        );
        let nothing = unix(1000, true, Presented::Nothing, true);
        assert_eq!(
            decide(&nothing, Request::Use),
            Decision::Refuse(Refusal::NoCertificate)
        );
    }

    #[test]
    fn only_an_administrator_on_the_unix_socket_can_be_the_first_client() {
        let admin = unix(0, true, Presented::Unknown, true);
        assert_eq!(decide(&admin, Request::Use), Decision::TryFirstClient);
        let user = unix(1000, false, Presented::Unknown, true);
        assert_eq!(
            decide(&user, Request::Use),
            Decision::Refuse(Refusal::FirstClientNotAdmin)
        );
        assert_eq!(
            decide(&tcp(Presented::Unknown, true), Request::Use),
            Decision::Refuse(Refusal::NotTrusted)
        );
        let no_credentials = Facts { uid: None, ..admin };
        assert_eq!(
            decide(&no_credentials, Request::Use),
            Decision::Refuse(Refusal::NotTrusted)
        );
        // Once anybody is trusted, nobody else becomes the first client.
        let late = unix(0, true, Presented::Unknown, false);
        assert_eq!(
            decide(&late, Request::Use),
            Decision::Refuse(Refusal::NotTrusted)
        );
        // Ping never trusts.
        assert_eq!(
            decide(&admin, Request::Ping),
            Decision::Refuse(Refusal::NotTrusted)
        );
    }

    #[test]
    fn managing_others_needs_an_administrator_on_the_unix_socket() {
        let admin = unix(1000, true, Presented::Trusted, false);
        assert_eq!(decide(&admin, Request::Manage), Decision::Admit);
        let user = unix(1001, false, Presented::Trusted, false);
        assert_eq!(
            decide(&user, Request::Manage),
            Decision::Refuse(Refusal::NotAdministrator)
        );
        let untrusted_admin = unix(0, true, Presented::Unknown, false);
        assert_eq!(
            decide(&untrusted_admin, Request::Manage),
            Decision::Refuse(Refusal::NotTrusted)
        );
        assert_eq!(
            decide(&tcp(Presented::Trusted, false), Request::Manage),
            Decision::Refuse(Refusal::OverTcp)
        );
    }

    #[test]
    fn authenticate_checks_the_secret_even_for_a_trusted_client() {
        for presented in [Presented::Trusted, Presented::Unknown] {
            let facts = unix(1000, false, presented, false);
            assert_eq!(
                decide(&facts, Request::Authenticate(Secret::Passphrase)),
                Decision::CheckPassphrase
            );
            assert_eq!(
                decide(&facts, Request::Authenticate(Secret::Token)),
                Decision::RedeemToken
            );
        }
        assert_eq!(
            decide(
                &tcp(Presented::Unknown, false),
                Request::Authenticate(Secret::Passphrase)
            ),
            Decision::CheckPassphrase
        );
    }

    #[test]
    fn a_peer_that_must_wait_is_refused_before_any_check() {
        let facts = Facts {
            wait: Some(Duration::from_secs(4)),
            ..unix(1000, false, Presented::Unknown, false)
        };
        for secret in [Secret::Passphrase, Secret::Token] {
            assert_eq!(
                decide(&facts, Request::Authenticate(secret)),
                Decision::Refuse(Refusal::RateLimited(Duration::from_secs(4)))
            );
        }
        let anonymous = Facts {
            uid: None,
            ..unix(0, true, Presented::Unknown, false)
        };
        assert_eq!(
            decide(&anonymous, Request::Authenticate(Secret::Passphrase)),
            Decision::Refuse(Refusal::NoCredentials)
        );
    }

    #[test]
    fn each_checked_secret_has_one_verdict() {
        assert_eq!(
            checked(Checked::RightPassphrase),
            Verdict::Enrol(Enrolment::Passphrase)
        );
        assert_eq!(
            checked(Checked::TokenRedeemed),
            Verdict::Enrol(Enrolment::Token)
        );
        assert_eq!(
            checked(Checked::WrongPassphrase),
            Verdict::Refuse(Refusal::PassphraseIncorrect)
        );
        assert_eq!(
            checked(Checked::NoPassphrase),
            Verdict::Refuse(Refusal::PassphraseNotSet)
        );
        for why in [
            TokenRefusal::Unknown,
            TokenRefusal::Used,
            TokenRefusal::Expired,
            TokenRefusal::Revoked,
        ] {
            let verdict = checked(Checked::TokenRefused(why));
            assert_eq!(verdict, Verdict::Refuse(Refusal::Token(why)));
            let Verdict::Refuse(refusal) = verdict else {
                unreachable!()
            };
            assert!(refusal.is_failed_attempt());
        }
        assert!(!Refusal::PassphraseNotSet.is_failed_attempt());
    }

    #[test]
    fn the_store_is_read_only_where_it_counts() {
        let request = Request::Authenticate(Secret::Passphrase);
        for (transport, uid) in [
            (Transport::Unix, Some(0)),
            (Transport::Unix, None),
            (Transport::Tcp, None),
        ] {
            for presented in [Presented::Unknown, Presented::Trusted] {
                for store_empty in [false, true] {
                    let facts = Facts {
                        transport,
                        uid,
                        admin: false,
                        presented,
                        store_empty,
                        wait: None,
                        passphrase_clients: MAX_PASSPHRASE_CLIENTS,
                    };
                    assert!(!needs_store(&facts, request));
                    let unread = Facts {
                        presented: Presented::Unknown,
                        store_empty: false,
                        ..facts
                    };
                    assert_eq!(decide(&facts, request), decide(&unread, request));
                }
            }
        }
        // A user's passphrase clients are bounded: whether this one is among them counts.
        let user = unix(1000, false, Presented::Unknown, false);
        assert!(needs_store(&user, request));
    }

    #[test]
    fn a_user_at_the_bound_gets_no_further_client_by_the_passphrase() {
        let request = Request::Authenticate(Secret::Passphrase);
        let full = Facts {
            passphrase_clients: MAX_PASSPHRASE_CLIENTS,
            ..unix(1000, false, Presented::Unknown, false)
        };
        assert_eq!(
            decide(&full, request),
            Decision::Refuse(Refusal::TooManyClients)
        );
        assert!(!Refusal::TooManyClients.is_failed_attempt());
        let below = Facts {
            passphrase_clients: MAX_PASSPHRASE_CLIENTS - 1,
            ..full
        };
        assert_eq!(decide(&below, request), Decision::CheckPassphrase);
        // A client trusted already is checked as before: it adds none.
        let trusted = Facts {
            presented: Presented::Trusted,
            ..full
        };
        assert_eq!(decide(&trusted, request), Decision::CheckPassphrase);
        // Root is not bounded, tokens are not bounded, and a peer that must wait hears that.
        let root = Facts {
            uid: Some(0),
            ..full
        };
        assert_eq!(decide(&root, request), Decision::CheckPassphrase);
        assert_eq!(
            decide(&full, Request::Authenticate(Secret::Token)),
            Decision::RedeemToken
        );
        let waiting = Facts {
            wait: Some(Duration::from_secs(2)),
            ..full
        };
        assert_eq!(
            decide(&waiting, request),
            Decision::Refuse(Refusal::RateLimited(Duration::from_secs(2)))
        );
    }

    #[test]
    fn the_admin_fact_and_the_client_count_are_looked_up_only_where_they_count() {
        let requests = [
            Request::Ping,
            Request::Use,
            Request::Manage,
            Request::Authenticate(Secret::Passphrase),
            Request::Authenticate(Secret::Token),
        ];
        let presented = [Presented::Nothing, Presented::Unknown, Presented::Trusted];
        for transport in [Transport::Unix, Transport::Tcp] {
            for uid in [None, Some(0), Some(1000)] {
                for presented in presented {
                    for (store_empty, wait) in [false, true]
                        .into_iter()
                        .flat_map(|e| [(e, None), (e, Some(Duration::from_secs(1)))])
                    {
                        let facts = Facts {
                            transport,
                            uid,
                            admin: false,
                            presented,
                            store_empty,
                            wait,
                            passphrase_clients: 0,
                        };
                        let admin = Facts {
                            admin: true,
                            ..facts
                        };
                        let full = Facts {
                            passphrase_clients: MAX_PASSPHRASE_CLIENTS,
                            ..facts
                        };
                        for request in requests {
                            if !needs_admin(&facts, request) {
                                assert_eq!(
                                    decide(&facts, request),
                                    decide(&admin, request),
                                    "{facts:?} {request:?}"
                                );
                            }
                            if !needs_client_count(&facts, request) {
                                assert_eq!(
                                    decide(&facts, request),
                                    decide(&full, request),
                                    "{facts:?} {request:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
