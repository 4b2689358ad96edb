//! The gate: every request passes here, and here alone the daemon decides to trust a client.
//!
//! The decisions are the pure functions of [`crate::admission`]. The gate gathers their facts
//! (the peer, the trust store as it is now, the failure limiter), asks, and carries out what they
//! decide: the store write under its lock, the socket's access, last-seen times, audit events.
//! Handlers read their first message, ask the gate ([`Gate::admit`], [`Gate::manage`],
//! [`Gate::ping`], [`Gate::authenticate`]) and do their work.
//!
//! Two seams keep the gate testable in-process without root: [`AdminDirectory`] (who is an
//! administrator) and [`SocketAccess`] (the socket file's owner and mode).

mod authenticate;

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc::server::{Pacing, Peer, Transport as PeerTransport};
use time::OffsetDateTime;
use tls::VerifiedClient;
use trust::access::{Access, AdminPolicy};
use trust::seen::LastSeen;
use trust::settings::SettingsFile;
use trust::tokens::{TokenError, TokenStore};
use trust::{Enrolment, Entry, Fingerprint, Metadata, Presence, TrustStore};

pub use self::authenticate::Authenticated;
use crate::admission::{self, Decision, Facts, Presented, Refusal, Request};
use crate::audit::{self, Refusals};
use crate::error::Error;
use crate::limits::{FailureLimiter, HashPool};

/// Who is an administrator: uid 0 or a member of the admin group.
pub trait AdminDirectory: Debug + Send + Sync + 'static {
    /// Whether `uid` is an administrator now (asked at each request that needs it, so a
    /// membership granted or taken away counts at once). May block on the user database.
    fn is_admin(&self, uid: u32) -> bool;
    /// The admin group's name, for refusals that say who may.
    fn group_name(&self) -> Option<String>;
}

impl AdminDirectory for AdminPolicy {
    fn is_admin(&self, uid: u32) -> bool {
        AdminPolicy::is_admin(self, uid)
    }

    fn group_name(&self) -> Option<String> {
        self.group().map(|g| g.name)
    }
}

/// The socket file's access: restricted to administrators while nobody is trusted, open after.
#[tonic::async_trait]
pub trait SocketAccess: Debug + Send + Sync + 'static {
    /// The access the socket file has now; `None` when there is no socket file (TCP).
    fn current(&self) -> Option<Access>;
    /// Give the socket `access`. A failure is logged, not returned: the daemon serves on.
    async fn set(&self, access: Access);
}

/// When the socket's access, not set, is tried again.
#[derive(Debug, Default)]
struct SocketRetry {
    at: Option<Instant>,
    wait: Duration,
}

/// What a [`Gate`] is made of.
#[derive(Debug)]
pub struct Parts {
    /// The trust store.
    pub store: Arc<TrustStore>,
    /// Who is an administrator.
    pub admin: Arc<dyn AdminDirectory>,
    /// The socket's access.
    pub socket: Arc<dyn SocketAccess>,
    /// When each client was last seen, if kept.
    pub seen: Option<Arc<LastSeen>>,
    /// The settings file, which holds the passphrase's hash.
    pub settings: SettingsFile,
    /// Failed attempts per peer.
    pub limiter: FailureLimiter,
    /// Where passphrases are hashed.
    pub hashes: Arc<HashPool>,
    /// One-time enrollment tokens.
    pub tokens: Arc<TokenStore>,
    /// How long after a failure to set the socket's access it is tried again (doubling with
    /// each failure, up to [`SOCKET_RETRY_MAX`]).
    pub socket_retry: Duration,
}

/// The first wait before the socket's access, not set, is tried again.
pub const SOCKET_RETRY: Duration = Duration::from_secs(10);
/// The longest wait before it is tried again.
pub const SOCKET_RETRY_MAX: Duration = Duration::from_secs(3600);
/// Settings of the socket's access in one [`Gate::sync_socket`], each after reading the store
/// again: a store that keeps changing longer is left to the next request's sync (each request
/// compares the socket's access with the store).
const SOCKET_SETTINGS_PER_SYNC: usize = 3;

/// Passphrase hashes computed at once (each ~19 MiB and a core for ~50 ms).
pub const PARALLEL_HASHES: usize = 2;
/// Passphrase checks allowed to wait for a turn.
pub const QUEUED_HASHES: usize = 64;

/// Refused requests one peer (a user but root, a TCP address) gets answered at once, then per
/// second; the others wait their turn. A refusal costs little, but without a pace one untrusted
/// user's requests on a few open connections were refused 19,000 times a second, most of a
/// core, slowing everyone's commands; a client refused once stops.
pub const REFUSAL_BURST: u32 = 64;
/// See [`REFUSAL_BURST`].
pub const REFUSALS_PER_SECOND: u32 = 100;
/// Right passphrases one peer may have checked at once, then per second. Failures have the
/// failure limiter; a right passphrase had nothing, and every `authenticate` is hashed (even from
/// a client trusted already, as in Multipass): two trusted users in a loop kept both hashing
/// places busy, unlogged, and each new client a user enrols that way is a write and an audit line.
pub const RIGHT_PASSPHRASE_BURST: u32 = 10;
/// See [`RIGHT_PASSPHRASE_BURST`].
pub const RIGHT_PASSPHRASES_PER_SECOND: u32 = 2;

/// The longest a request waits for its turn in a pace; one whose turn is further off is
/// answered at once (a refusal as it is, anything else `RESOURCE_EXHAUSTED` with when to try
/// again), well before the 30 s within which every request is answered: a request given up on
/// by its client would otherwise still take effect once its turn came.
pub const MOST_PACED_WAIT: Duration = Duration::from_secs(10);

impl Parts {
    /// The parts of a daemon keeping its files in `dir` (the store's file is `store`'s), with the
    /// default limits.
    pub fn in_dir(
        store: Arc<TrustStore>,
        dir: &trust::DataDir,
        admin: Arc<dyn AdminDirectory>,
        socket: Arc<dyn SocketAccess>,
    ) -> Parts {
        use trust::fsutil::FileMode;
        Parts {
            store,
            admin,
            socket,
            seen: Some(Arc::new(LastSeen::new(dir.last_seen(), FileMode::PRIVATE))),
            settings: SettingsFile::new(dir.settings(), FileMode::PRIVATE),
            limiter: FailureLimiter::new(crate::limits::LimiterConfig::default()),
            hashes: HashPool::new(PARALLEL_HASHES, QUEUED_HASHES),
            tokens: Arc::new(TokenStore::new(dir.tokens(), FileMode::PRIVATE)),
            socket_retry: SOCKET_RETRY,
        }
    }
}

/// Trust decisions, shared by all requests.
#[derive(Debug)]
pub struct Gate {
    store: Arc<TrustStore>,
    admin: Arc<dyn AdminDirectory>,
    socket: Arc<dyn SocketAccess>,
    /// The access the socket was last given ([`encode`]d; 0: unknown or no socket file).
    socket_access: AtomicU8,
    /// Held while the socket's access is set: the later of two settings reads the later store.
    /// Holds when to try again after the access could not be set, and the wait after that.
    socket_turn: tokio::sync::Mutex<SocketRetry>,
    socket_retry: Duration,
    seen: Option<Arc<LastSeen>>,
    settings: SettingsFile,
    limiter: FailureLimiter,
    hashes: Arc<HashPool>,
    tokens: Arc<TokenStore>,
    refusals: Refusals,
    /// When each peer's next refused request is answered ([`REFUSAL_BURST`]).
    refusal_pace: Pacing,
    /// When each peer's next passphrase may be checked ([`RIGHT_PASSPHRASE_BURST`]).
    right_passphrase_pace: Pacing,
    /// The client that has just become the first, until its reply says so
    /// ([`Gate::first_client_news`]); `newly_first` is whether there is one, read without the
    /// lock by every reply.
    first_client: Mutex<Option<Fingerprint>>,
    newly_first: AtomicBool,
}

fn encode(access: Option<Access>) -> u8 {
    match access {
        None => 0,
        Some(Access::Restricted) => 1,
        Some(Access::Open) => 2,
    }
}

impl Gate {
    /// A gate made of `parts`.
    pub fn new(parts: Parts) -> Gate {
        Gate {
            socket_access: AtomicU8::new(encode(parts.socket.current())),
            socket_turn: tokio::sync::Mutex::new(SocketRetry::default()),
            socket_retry: parts.socket_retry,
            store: parts.store,
            admin: parts.admin,
            socket: parts.socket,
            seen: parts.seen,
            settings: parts.settings,
            limiter: parts.limiter,
            hashes: parts.hashes,
            tokens: parts.tokens,
            refusals: Refusals::default(),
            refusal_pace: Pacing::new(REFUSALS_PER_SECOND, REFUSAL_BURST),
            right_passphrase_pace: Pacing::new(
                RIGHT_PASSPHRASES_PER_SECOND,
                RIGHT_PASSPHRASE_BURST,
            ),
            first_client: Mutex::new(None),
            newly_first: AtomicBool::new(false),
        }
    }

    /// Whether `client` has become the first client since the last reply that said so: true
    /// once, for the reply to the request that made it the first (`first_client_layer`).
    pub fn first_client_news(&self, client: &Fingerprint) -> bool {
        if !self.newly_first.load(Ordering::Acquire) {
            return false;
        }
        let mut first = self.first_client.lock().unwrap_or_else(|e| e.into_inner());
        if first.as_ref() != Some(client) {
            return false;
        }
        *first = None;
        self.newly_first.store(false, Ordering::Release);
        true
    }

    /// The store, for handlers that read it.
    pub fn store(&self) -> &Arc<TrustStore> {
        &self.store
    }

    /// The settings file, for `get` and `set`.
    pub fn settings(&self) -> &SettingsFile {
        &self.settings
    }

    /// The pool passphrases are hashed in, for `set`.
    pub fn hashes(&self) -> &Arc<HashPool> {
        &self.hashes
    }

    /// Whether `client` is trusted now (the store is re-read if the file changed).
    pub fn is_trusted(&self, client: &VerifiedClient) -> Result<bool, Error> {
        Ok(self.store.is_trusted(&client.fingerprint())?)
    }

    /// The one-time enrollment tokens.
    pub fn tokens(&self) -> &Arc<TokenStore> {
        &self.tokens
    }

    /// A gated request (anything a trusted client may do): let `peer` through if its certificate
    /// is trusted, or if it becomes the first client now.
    pub async fn admit(&self, peer: &Peer) -> Result<VerifiedClient, Error> {
        let facts = self.facts(peer, Request::Use, None).await?;
        let admitted = match admission::decide(&facts, Request::Use) {
            Decision::Admit => true,
            Decision::TryFirstClient => self.try_first_client(peer, facts).await?,
            Decision::Refuse(refusal) => {
                self.pace_refusal(peer).await;
                return Err(self.refuse(peer, refusal, Request::Use, None, None));
            }
            other => unreachable!("{other:?} is no answer to a gated request"),
        };
        let client = peer.client.clone().filter(|_| admitted);
        let Some(client) = client else {
            self.pace_refusal(peer).await;
            return Err(self.refuse(peer, Refusal::NotTrusted, Request::Use, None, None));
        };
        self.note_seen(&client);
        Ok(client)
    }

    /// Managing others' trust (`action`, as a refusal words it): a trusted client whose peer is
    /// an administrator now, on the Unix socket.
    pub async fn manage(&self, peer: &Peer, action: &'static str) -> Result<VerifiedClient, Error> {
        let client = self.admit(peer).await?;
        let facts = self.facts(peer, Request::Manage, None).await?;
        match admission::decide(&facts, Request::Manage) {
            Decision::Admit => Ok(client),
            Decision::Refuse(refusal) => {
                self.pace_refusal(peer).await;
                Err(self.refuse(peer, refusal, Request::Manage, Some(action), None))
            }
            other => unreachable!("{other:?} is no answer to trust management"),
        }
    }

    /// Wait for `peer`'s turn to be refused ([`REFUSAL_BURST`]); root's are never held, nor one
    /// whose turn is more than [`MOST_PACED_WAIT`] off.
    async fn pace_refusal(&self, peer: &Peer) {
        // A refusal whose turn is too far off is answered at once: it is a refusal all the same.
        let _ = self.refusal_pace.wait_turn(peer, MOST_PACED_WAIT).await;
    }

    /// Whether `peer` may manage others' trust now ([`Gate::manage`] without the refusal).
    pub async fn may_manage(&self, peer: &Peer) -> Result<bool, Error> {
        let facts = self.facts(peer, Request::Manage, None).await?;
        Ok(admission::decide(&facts, Request::Manage) == Decision::Admit)
    }

    /// The refusal of `action` to `peer`, who may not manage others' trust, audited.
    pub fn not_administrator(&self, peer: &Peer, action: &'static str) -> Error {
        let refusal = match peer.transport {
            PeerTransport::Tcp(_) => Refusal::OverTcp,
            PeerTransport::Unix => Refusal::NotAdministrator,
        };
        self.refuse(peer, refusal, Request::Manage, Some(action), None)
    }

    /// `ping`: answered for trusted clients only; never trusts anybody, never audited.
    pub async fn ping(&self, peer: &Peer) -> Result<(), Error> {
        let facts = self.facts(peer, Request::Ping, None).await?;
        match admission::decide(&facts, Request::Ping) {
            Decision::Admit => Ok(()),
            _ => {
                self.pace_refusal(peer).await;
                Err(Error::NotAuthenticated)
            }
        }
    }

    /// The facts of `request` from `peer`, now.
    async fn facts(
        &self,
        peer: &Peer,
        request: Request,
        wait: Option<Duration>,
    ) -> Result<Facts, Error> {
        let mut facts = Facts {
            transport: match peer.transport {
                PeerTransport::Unix => admission::Transport::Unix,
                PeerTransport::Tcp(_) => admission::Transport::Tcp,
            },
            uid: peer.credentials.map(|c| c.uid),
            admin: false,
            presented: match peer.client {
                None => Presented::Nothing,
                Some(_) => Presented::Unknown,
            },
            store_empty: false,
            wait,
            passphrase_clients: 0,
        };
        if admission::needs_store(&facts, request) {
            let presence = match &peer.client {
                Some(client) => self
                    .store
                    .presence(client.certificate(), &client.fingerprint())?,
                None => Presence {
                    trusted: false,
                    empty: self.store.current()?.is_empty(),
                    whole: true,
                },
            };
            if presence.trusted {
                facts.presented = Presented::Trusted;
            }
            facts.store_empty = presence.empty;
            // The store was changed by someone else (by hand, by the helper) so that the
            // socket's access no longer matches it: set it now. Not from an answer given while
            // another thread still reads the store: setting the access reads the whole store,
            // which start-up does once its read ends, and otherwise the next request.
            let known = self.socket_now();
            if presence.whole
                && known != encode(None)
                && known != encode(Some(Access::for_store(facts.store_empty)))
            {
                self.sync_socket().await;
            }
        }
        if admission::needs_client_count(&facts, request) {
            if let Some(uid) = facts.uid {
                // A user's subordinate uids are the user's: their clients count together.
                let ranges = trust::subids::current();
                let account = ranges.account(uid);
                facts.passphrase_clients = self
                    .store
                    .current()?
                    .enrolled_by(|u| ranges.account(u) == account, Enrolment::Passphrase);
            }
        }
        if admission::needs_admin(&facts, request) {
            if let Some(uid) = facts.uid {
                facts.admin = self.is_admin(uid).await;
            }
        }
        Ok(facts)
    }

    async fn is_admin(&self, uid: u32) -> bool {
        let admin = self.admin.clone();
        // The user database may be remote (NSS): off the async threads.
        tokio::task::spawn_blocking(move || admin.is_admin(uid))
            .await
            .unwrap_or(false)
    }

    /// Decide the first client again under the store's lock, against the file as it is then,
    /// and write it if the decision stands: of simultaneous first clients exactly one wins.
    /// `true` if the peer is trusted now (it won, or its certificate won on another connection).
    async fn try_first_client(&self, peer: &Peer, facts: Facts) -> Result<bool, Error> {
        let Some(client) = peer.client.clone() else {
            return Ok(false);
        };
        let store = self.store.clone();
        let entry = entry_for(&client, facts.uid, Enrolment::FirstClient);
        let (won, trusted) = tokio::task::spawn_blocking(move || {
            let mut trusted = false;
            let won = store.modify(|bundle| {
                let under_lock = Facts {
                    presented: if bundle.get(&entry.fingerprint).is_some() {
                        Presented::Trusted
                    } else {
                        Presented::Unknown
                    },
                    store_empty: bundle.is_empty(),
                    ..facts
                };
                let decision = admission::decide(&under_lock, Request::Use);
                trusted = matches!(decision, Decision::Admit | Decision::TryFirstClient);
                decision == Decision::TryFirstClient && bundle.insert(entry.clone())
            })?;
            Ok::<_, trust::Error>((won, trusted))
        })
        .await??;
        if won {
            audit::trusted(peer, &client, Enrolment::FirstClient);
            *self.first_client.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(client.fingerprint());
            self.newly_first.store(true, Ordering::Release);
            self.sync_socket().await;
        }
        Ok(trusted)
    }

    /// Trust `client` as `how` (after a right passphrase or a redeemed token), under `name` (a
    /// token's) or else the user's login name, made unique among the trusted clients (`alice`,
    /// then `alice-2`) so that it designates one client for `trust remove`. A login name also
    /// gives way to the name of an active token, which its creator was told its client will
    /// have. Returns the name the client is trusted under (its existing entry's, if it was
    /// trusted already).
    async fn enrol(
        &self,
        peer: &Peer,
        client: &VerifiedClient,
        how: Enrolment,
        name: Option<String>,
    ) -> Result<Option<String>, Error> {
        let mut entry = entry_for(client, peer.credentials.map(|c| c.uid), how);
        if name.is_some() {
            entry.metadata.name = name;
        }
        let store = self.store.clone();
        let tokens = (how != Enrolment::Token).then(|| self.tokens.clone());
        let enrolled = tokio::task::spawn_blocking(move || {
            store.enrol(entry, tokens.as_deref(), OffsetDateTime::now_utc())
        })
        .await??;
        let trust::Enrolled {
            added,
            was_empty,
            name,
        } = enrolled;
        if added {
            audit::trusted(peer, client, how);
            // Only a write that filled the store changes the socket's access; others' changes
            // are noticed by the requests that read the store.
            if was_empty {
                self.sync_socket().await;
            }
        }
        Ok(name)
    }

    /// The socket's access as its file says now (one `stat`): the helper, or anyone with root,
    /// may have changed it since the daemon last set it. Over TCP, what the daemon last set.
    fn socket_now(&self) -> u8 {
        match self.socket.current() {
            Some(now) => encode(Some(now)),
            None => self.socket_access.load(Ordering::Acquire),
        }
    }

    /// Whether the Unix socket is restricted to administrators now, as far as the daemon set
    /// it (false over TCP, where there is no socket, and when its access could not be set).
    pub fn socket_restricted(&self) -> bool {
        self.socket_access.load(Ordering::Acquire) == encode(Some(Access::Restricted))
    }

    /// Give the socket the access that matches the store as it is now (restricted while it is
    /// empty, open otherwise), if its file does not have it already. Called at start-up, after a
    /// change that empties or fills the store, and at a request that finds the socket's access
    /// not matching the store (changed behind the daemon's back); serialized, and the store is
    /// read under the turn, so when several changes race the last setting matches the last
    /// store.
    ///
    /// When the access could not be set (the helper busy or unreachable; the failure is logged),
    /// it is tried again at a request after a wait that doubles with each failure: the access
    /// is not left wrong for good, and a helper that cannot be reached is not asked at every
    /// request.
    ///
    /// The store is read without its lock, so a writer outside the daemon (the helper trusting
    /// a certificate, which then opens the socket itself) can change it between the read and
    /// the setting, which would then undo the writer's. So the store is read again after each
    /// setting and the access set again if it no longer matches, up to three settings; a socket
    /// found, after a setting, with the access the store calls for (someone else set it
    /// meanwhile) is no failure.
    pub async fn sync_socket(&self) {
        let mut retry = self.socket_turn.lock().await;
        if self.socket.current().is_none() && self.socket_access.load(Ordering::Acquire) == 0 {
            return;
        }
        for settings in 0..=SOCKET_SETTINGS_PER_SYNC {
            let Some(access) = self.access_for_store() else {
                return;
            };
            if self.socket_now() == encode(Some(access)) {
                *retry = SocketRetry::default();
                self.socket_access
                    .store(encode(Some(access)), Ordering::Release);
                return;
            }
            if settings == SOCKET_SETTINGS_PER_SYNC {
                tracing::warn!(
                    settings,
                    "the trust store kept changing while the socket's access was set; the next \
                     request sets it again"
                );
                return;
            }
            if retry.at.is_some_and(|at| Instant::now() < at) {
                return;
            }
            self.socket.set(access).await;
            let now = self.socket.current();
            if now.is_some_and(|now| now != access && Some(now) != self.access_for_store()) {
                retry.wait = match retry.wait {
                    Duration::ZERO => self.socket_retry,
                    wait => (wait * 2).min(SOCKET_RETRY_MAX),
                };
                retry.at = Some(Instant::now() + retry.wait);
                self.socket_access.store(encode(now), Ordering::Release);
                return;
            }
            // Set, or set by someone else as the store now says: read the store again.
        }
    }

    /// The socket's access that the store as it is now calls for; `None` (logged) when the
    /// store cannot be read.
    fn access_for_store(&self) -> Option<Access> {
        match self.store.current() {
            Ok(bundle) => Some(Access::for_store(bundle.is_empty())),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the trust store to set the socket's access");
                None
            }
        }
    }

    /// Audit that `peer` was refused for `refusal` (collapsed per peer and reason) and return
    /// the error it is answered with. `action` names what was refused, where that is trust
    /// management; `failures` is the peer's count of consecutive failed attempts.
    fn refuse(
        &self,
        peer: &Peer,
        refusal: Refusal,
        request: Request,
        action: Option<&'static str>,
        failures: Option<u32>,
    ) -> Error {
        // `ping` answers untrusted clients without an audit line: it is how clients probe.
        if request != Request::Ping {
            self.refusals.note(peer, refusal, action, failures);
        }
        self.error_for(
            refusal,
            request,
            action,
            matches!(peer.transport, PeerTransport::Tcp(_)),
        )
    }

    /// Note that `client` was admitted now; when the file is a minute behind, write it off the
    /// request path.
    fn note_seen(&self, client: &VerifiedClient) {
        let Some(seen) = &self.seen else { return };
        if seen.record(client.fingerprint(), OffsetDateTime::now_utc()) {
            let seen = seen.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = seen.persist() {
                    tracing::warn!(error = %e, "cannot write the last-seen times");
                }
            });
        }
    }

    fn error_for(
        &self,
        refusal: Refusal,
        request: Request,
        action: Option<&'static str>,
        over_tcp: bool,
    ) -> Error {
        match refusal {
            Refusal::NoCertificate if matches!(request, Request::Authenticate(_)) => {
                Error::NoClientCertificate
            }
            Refusal::NoCertificate | Refusal::NoCredentials => Error::NotAuthenticated,
            Refusal::NotTrusted if request == Request::Ping => Error::NotAuthenticated,
            Refusal::FirstClientNotAdmin => Error::NotFirstClient {
                group: self.admin.group_name(),
            },
            Refusal::NotTrusted => Error::Untrusted {
                trusted: self.store.current().map(|b| b.len()).unwrap_or(0),
                over_tcp,
            },
            Refusal::NotAdministrator | Refusal::OverTcp => Error::NotAdministrator {
                action: action.unwrap_or("manage other clients' trust"),
                group: self.admin.group_name(),
                over_tcp: refusal == Refusal::OverTcp,
            },
            Refusal::RateLimited(retry_after) => Error::RateLimited { retry_after },
            Refusal::PassphraseNotSet => Error::PassphraseNotSet {
                first_client: false,
            },
            Refusal::PassphraseIncorrect => Error::PassphraseIncorrect,
            Refusal::TooManyClients => Error::TooManyClients {
                limit: admission::MAX_PASSPHRASE_CLIENTS,
            },
            Refusal::Token(why) => Error::Token(TokenError::Refused(why)),
        }
    }
}

fn entry_for(client: &VerifiedClient, uid: Option<u32>, how: Enrolment) -> Entry {
    let name = uid.map(trust::names::default_for_uid);
    Entry::new(
        client.certificate().clone(),
        Metadata::enrolled_now(name, uid, how),
    )
}
