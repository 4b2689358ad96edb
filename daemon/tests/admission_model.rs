//! Model check of the admission protocol: the daemon's real decision functions
//! (`multipassd::admission`) and the real store parser (`trust::Bundle::parse`), driven by
//! stateright through every interleaving of several peers, the store's writers (the daemon, the
//! helper, an administrator appending by hand), torn writes, crashes and restarts.
//!
//! What is modelled, what is not, and the bounds: docs/ARCHITECTURE.md, "The admission model".

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use multipassd::admission::{
    self, Checked, Decision, Facts, Presented, Request, Secret, TokenRefusal, Transport, Verdict,
};
use rustls::pki_types::CertificateDer;
use stateright::{Checker, Model, Property};
use trust::{Bundle, Enrolment, Entry, Fingerprint, Metadata};

/// Who can connect. Each peer holds one client certificate: client `i` is peer `i`'s.
#[derive(Debug, Clone, Copy)]
struct PeerSpec {
    name: &'static str,
    transport: Transport,
    uid: Option<u32>,
    admin: bool,
    knows_passphrase: bool,
    holds_token: bool,
}

/// Which decision the daemon takes under the store's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// As the daemon does: decide again against the file read under the lock.
    Real,
    /// A deliberately broken daemon: the first-client decision taken on the snapshot read
    /// before the lock is trusted under it (the emptiness test outside the lock).
    EmptinessOutsideLock,
    /// The socket policy of earlier releases: the access is decided from the write (opened by
    /// the write that filled the store, restricted by the removal that emptied it) rather than
    /// read from the store when it is set.
    AccessFromTheWrite,
    /// The daemon sets the access it read the store for, without reading the store again
    /// after setting it: a writer outside the daemon (the helper) that lands between the read
    /// and the setting is undone.
    StaleRead,
}

/// The settings of the socket's access in one sync of the daemon (`SOCKET_SETTINGS_PER_SYNC`
/// in `daemon::gate`), each after reading the store again.
const SETTINGS_PER_SYNC: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tear {
    /// The block was written whole.
    Whole,
    /// Cut after its metadata lines, before its `BEGIN` line.
    AfterMetadata,
    /// Cut in the middle of its base64.
    InBase64,
}

/// One block of the store file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Block {
    client: u8,
    how: Enrolment,
    tear: Tear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Intent {
    /// Become the first client.
    First(u8),
    /// Add a client, enrolled this way.
    Enrol(u8, Enrolment),
    /// Remove a client.
    Remove(u8),
}

impl Intent {
    fn client(self) -> u8 {
        match self {
            Intent::First(c) | Intent::Enrol(c, _) | Intent::Remove(c) => c,
        }
    }
}

/// Where an actor (a peer's request, or the helper's call) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pc {
    Idle,
    /// Waiting for the store's lock.
    WantLock(Intent),
    /// Holds the lock, read the file when it had `read_len` blocks, and will write.
    Locked {
        intent: Intent,
        read_len: u8,
    },
    /// Written (or found nothing to do); the socket's access follows the store, then the reply.
    /// The access is what a write that emptied or filled the store would set, for
    /// [`Variant::AccessFromTheWrite`].
    Syncing(Intent, Option<Access>),
    /// A daemon request's sync of the socket (`Gate::sync_socket`), holding the daemon's socket
    /// turn: it read the store (without its lock) and will set this access; the number of
    /// settings made in this sync so far.
    Setting(Intent, Access, u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TokenState {
    Active,
    Used(u8),
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Access {
    Restricted,
    Open,
}

impl Access {
    fn for_store(empty: bool) -> Access {
        if empty {
            Access::Restricted
        } else {
            Access::Open
        }
    }
}

/// Violations seen on a transition (the properties read them).
mod bad {
    pub const FIRST_CLIENT: u8 = 1;
    pub const UNJUSTIFIED: u8 = 2;
    pub const ADMITTED_UNTRUSTED: u8 = 4;
    pub const ADMITTED_REMOVED: u8 = 8;
    pub const NOT_AN_ADMINISTRATOR: u8 = 16;
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct State {
    file: Vec<Block>,
    /// The actor holding the store's lock.
    lock: Option<u8>,
    /// Peers' requests, then the helper.
    actors: Vec<Pc>,
    token: TokenState,
    socket: Access,
    /// Whether the store was empty when the daemon last read it to set the socket's access;
    /// `None` after a (re)start, before it looked.
    daemon_seen: Option<bool>,
    /// The daemon's socket turn (its syncs are serialized): the actor holding it, or
    /// [`DAEMON`] for the daemon's own sync.
    turn: Option<u8>,
    /// The daemon's own sync (at start-up, or at a request that finds the socket not matching
    /// the store) under way: the access it read the store for, and the settings made so far.
    own_sync: Option<(Access, u8)>,
    /// A change the daemon is not told of (a hand append, a restart) since its last sync ended.
    excused: bool,
    /// Whether a sync ever read the store again after a setting and found it changed.
    reread: bool,
    /// Clients whose enrolment was acknowledged (a reply was sent, or a hand append finished),
    /// and that were not removed since.
    acked: u8,
    /// Clients whose removal was acknowledged, and not enrolled again since.
    removed: u8,
    /// Clients removed from the file whose removal is not acknowledged yet, and not enrolled
    /// again since.
    removing: u8,
    /// Clients written (or found already there) by a request not yet answered, and not removed
    /// since: its reply acknowledges them.
    pending: u8,
    /// Clients enrolled with the token.
    token_enrolled: u8,
    /// Hand appends made (a bit per client).
    hand_appended: u8,
    helper_done: bool,
    crashes: u8,
    removals: u8,
    /// Requests that changed something (the model's main bound).
    requests: u8,
    /// Whether two actors ever waited for the lock to become the first client at once.
    contended: bool,
    violations: u8,
}

struct AdmissionModel {
    peers: Vec<PeerSpec>,
    /// The client the helper trusts (an administrator's polkit-authorized call).
    helper_target: u8,
    /// Clients an administrator may append by hand.
    hand_appends: Vec<u8>,
    max_crashes: u8,
    max_removals: u8,
    max_requests: u8,
    variant: Variant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    /// A gated request (`list`).
    Use(u8),
    /// `authenticate` with the passphrase the peer knows (or a wrong one).
    Passphrase(u8),
    /// `authenticate` with the token.
    Token(u8),
    /// `trust remove` of a client.
    Remove {
        by: u8,
        client: u8,
    },
    /// `trust token revoke`.
    Revoke(u8),
    /// The helper's `TrustCertificate`, for an administrator.
    HelperTrust,
    Lock(u8),
    Write(u8),
    /// The machine crashes while an actor's append is half written.
    CrashMidWrite(u8, Tear),
    /// Set the socket's access from the store as it is now, then reply.
    Finish(u8),
    /// `cat cert.pem | sudo tee -a STORE`, no lock.
    HandAppend(u8),
    /// The machine crashes; everything in flight is lost.
    Crash,
    /// The daemon takes its socket turn and reads the store, to set the socket's access.
    DaemonSync,
    /// A daemon request's sync sets the access it read for, then reads the store again.
    Apply(u8),
    /// The daemon's own sync sets the access it read for, then reads the store again.
    DaemonApply,
}

/// The daemon's own sync, as holder of the socket turn.
const DAEMON: u8 = u8::MAX;

// The store file's text comes from the real serialiser, and is read back by the real parser.

fn der(client: u8) -> Vec<u8> {
    format!("model client certificate {client}")
        .into_bytes()
        .repeat(8)
}

fn block_text(block: &Block) -> String {
    let mut bundle = Bundle::default();
    let how = (block.how != Enrolment::ByHand).then_some(block.how);
    bundle.insert(Entry::new(
        CertificateDer::from(der(block.client)),
        Metadata {
            name: how.map(|_| format!("client-{}", block.client)),
            uid: how.map(|_| 1000 + u32::from(block.client)),
            how,
            ..Metadata::default()
        },
    ));
    let text = bundle.to_pem();
    match block.tear {
        Tear::Whole => text,
        Tear::AfterMetadata => text[..text.find("-----BEGIN").unwrap_or(0)].to_string(),
        Tear::InBase64 => {
            let body = text.find("-----BEGIN").unwrap_or(0) + 40;
            text[..body.min(text.len())].to_string()
        }
    }
}

fn fingerprints() -> &'static Vec<Fingerprint> {
    static ALL: OnceLock<Vec<Fingerprint>> = OnceLock::new();
    ALL.get_or_init(|| (0..8).map(|c| Fingerprint::of(&der(c))).collect())
}

/// The store as the daemon reads it: (client, how) of each entry, in order. Memoized: the model
/// reaches the same few files again and again.
type Parsed = Vec<(u8, Enrolment)>;

fn parse(file: &[Block]) -> Parsed {
    thread_local! {
        static PARSED: std::cell::RefCell<HashMap<Vec<Block>, Parsed>> =
            std::cell::RefCell::new(HashMap::new());
    }
    if let Some(hit) = PARSED.with(|p| p.borrow().get(file).cloned()) {
        return hit;
    }
    let parsed = parse_text(file);
    PARSED.with(|p| p.borrow_mut().insert(file.to_vec(), parsed.clone()));
    parsed
}

fn parse_text(file: &[Block]) -> Vec<(u8, Enrolment)> {
    let text: String = file.iter().map(block_text).collect();
    let bundle = Bundle::parse(text.as_bytes());
    bundle
        .iter()
        .map(|entry| {
            let client = fingerprints()
                .iter()
                .position(|f| *f == entry.fingerprint)
                .expect("only model clients are written") as u8;
            (client, entry.enrolment())
        })
        .collect()
}

fn holds(parsed: &[(u8, Enrolment)], client: u8) -> bool {
    parsed.iter().any(|(c, _)| *c == client)
}

fn bit(client: u8) -> u8 {
    1 << client
}

impl AdmissionModel {
    fn helper(&self) -> u8 {
        self.peers.len() as u8
    }

    fn facts(&self, peer: u8, parsed: &[(u8, Enrolment)]) -> Facts {
        let spec = self.peers[peer as usize];
        Facts {
            transport: spec.transport,
            uid: spec.uid,
            admin: spec.admin,
            presented: if holds(parsed, peer) {
                Presented::Trusted
            } else {
                Presented::Unknown
            },
            store_empty: parsed.is_empty(),
            wait: None,
            // Counted as the gate counts, though no peer of the model comes near the bound.
            passphrase_clients: parsed
                .iter()
                .filter(|&&(client, how)| {
                    how == Enrolment::Passphrase && self.peers[client as usize].uid == spec.uid
                })
                .count(),
        }
    }

    /// The lock is held by `actor`: read the file and decide again, as `TrustStore::modify` does
    /// each time it (re)reads the file.
    fn locked_read(&self, state: &mut State, actor: u8, intent: Intent) {
        let parsed = parse(&state.file);
        let read_len = state.file.len() as u8;
        let next = match intent {
            Intent::First(client) => {
                let decision = admission::decide(&self.facts(client, &parsed), Request::Use);
                if decision == Decision::TryFirstClient
                    || self.variant == Variant::EmptinessOutsideLock
                {
                    Pc::Locked { intent, read_len }
                } else {
                    // Lost the race: the request is answered as the store now says.
                    Pc::Idle
                }
            }
            Intent::Enrol(client, _) if holds(&parsed, client) => {
                state.pending |= bit(client);
                Pc::Syncing(intent, None)
            }
            Intent::Enrol(..) => Pc::Locked { intent, read_len },
            Intent::Remove(client) if holds(&parsed, client) => {
                // A removal rewrites the file atomically (rename) from what was parsed: damaged
                // blocks are dropped with it.
                state.file = parsed
                    .iter()
                    .filter(|(c, _)| *c != client)
                    .map(|&(c, how)| Block {
                        client: c,
                        how,
                        tear: Tear::Whole,
                    })
                    .collect();
                state.acked &= !bit(client);
                state.pending &= !bit(client);
                state.removing |= bit(client);
                state.removals += 1;
                Pc::Syncing(intent, state.file.is_empty().then_some(Access::Restricted))
            }
            Intent::Remove(_) => Pc::Idle,
        };
        if !matches!(next, Pc::Locked { .. }) {
            state.lock = None;
        }
        state.actors[actor as usize] = next;
    }

    /// Check that what is about to be written has a reason (from the model's ground truth, not
    /// from the decision functions under test).
    fn justify(&self, state: &mut State, actor: u8, intent: Intent) {
        let parsed = parse(&state.file);
        match intent {
            Intent::First(client) => {
                let spec = self.peers[client as usize];
                if !parsed.is_empty() || !spec.admin || spec.transport != Transport::Unix {
                    state.violations |= bad::FIRST_CLIENT;
                }
            }
            Intent::Enrol(client, Enrolment::Passphrase) => {
                if !self.peers[client as usize].knows_passphrase {
                    state.violations |= bad::UNJUSTIFIED;
                }
            }
            Intent::Enrol(client, Enrolment::Token) => {
                if state.token != TokenState::Used(actor) || actor != client {
                    state.violations |= bad::UNJUSTIFIED;
                }
            }
            Intent::Enrol(_, Enrolment::Admin) if actor == self.helper() => {}
            Intent::Enrol(..) | Intent::Remove(_) => state.violations |= bad::UNJUSTIFIED,
        }
    }

    fn crash(&self, state: &mut State) {
        for pc in state.actors.iter_mut() {
            *pc = Pc::Idle;
        }
        state.lock = None;
        state.daemon_seen = None;
        state.turn = None;
        state.own_sync = None;
        state.excused = true;
        state.pending = 0;
        state.removing = 0;
        state.crashes += 1;
    }

    /// What the decision says about a gated request, checked against the model's ground truth.
    fn answer(&self, state: &mut State, peer: u8, request: Request) -> Option<Decision> {
        let parsed = parse(&state.file);
        let decision = admission::decide(&self.facts(peer, &parsed), request);
        if decision == Decision::Admit {
            let spec = self.peers[peer as usize];
            if request == Request::Manage && !(spec.admin && spec.transport == Transport::Unix) {
                state.violations |= bad::NOT_AN_ADMINISTRATOR;
            }
            if !holds(&parsed, peer) {
                state.violations |= bad::ADMITTED_UNTRUSTED;
            }
            if state.removed & bit(peer) != 0 {
                state.violations |= bad::ADMITTED_REMOVED;
            }
        }
        Some(decision)
    }

    /// The reply to `actor`'s request, once its sync (if any) is done: it acknowledges what the
    /// request wrote or removed.
    fn reply(&self, state: &mut State, actor: u8, intent: Intent) {
        match intent {
            Intent::Remove(client) => {
                if state.removing & bit(client) != 0 {
                    state.removed |= bit(client);
                }
                state.removing &= !bit(client);
            }
            _ => {
                let client = bit(intent.client());
                state.acked |= state.pending & client;
                state.pending &= !client;
            }
        }
        if actor == self.helper() {
            state.helper_done = true;
        }
        state.actors[actor as usize] = Pc::Idle;
    }

    /// A daemon's sync sets `access` (its `settings`-th setting in this sync), then reads the
    /// store again: the access to set next, or `None` when the sync is done.
    fn set_socket(&self, state: &mut State, access: Access, settings: u8) -> Option<Access> {
        state.socket = access;
        state.daemon_seen = Some(access == Access::Restricted);
        let now = Access::for_store(parse(&state.file).is_empty());
        if now != access && self.variant != Variant::StaleRead {
            state.reread = true;
            if settings + 1 < SETTINGS_PER_SYNC {
                return Some(now);
            }
        }
        // The daemon has looked at the store since the last change it was not told of.
        state.excused = false;
        None
    }
}

impl Model for AdmissionModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            file: Vec::new(),
            lock: None,
            actors: vec![Pc::Idle; self.peers.len() + 1],
            token: TokenState::Active,
            socket: Access::Restricted,
            daemon_seen: Some(true),
            turn: None,
            own_sync: None,
            excused: false,
            reread: false,
            acked: 0,
            removed: 0,
            removing: 0,
            pending: 0,
            token_enrolled: 0,
            hand_appended: 0,
            helper_done: false,
            crashes: 0,
            removals: 0,
            requests: 0,
            contended: false,
            violations: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        let parsed = parse(&state.file);
        for (i, spec) in self.peers.iter().enumerate() {
            let p = i as u8;
            if state.actors[i] != Pc::Idle || state.requests >= self.max_requests {
                continue;
            }
            actions.push(Action::Use(p));
            actions.push(Action::Passphrase(p));
            if spec.holds_token {
                actions.push(Action::Token(p));
            }
            if state.token == TokenState::Active && spec.admin {
                actions.push(Action::Revoke(p));
            }
            if state.removals < self.max_removals {
                for &(client, _) in &parsed {
                    actions.push(Action::Remove { by: p, client });
                }
            }
        }
        let helper = self.helper();
        if !state.helper_done && state.actors[helper as usize] == Pc::Idle {
            actions.push(Action::HelperTrust);
        }
        for (i, pc) in state.actors.iter().enumerate() {
            let a = i as u8;
            match pc {
                Pc::Idle => {}
                Pc::WantLock(_) if state.lock.is_none() => actions.push(Action::Lock(a)),
                Pc::WantLock(_) => {}
                Pc::Locked { .. } => {
                    actions.push(Action::Write(a));
                    if state.crashes < self.max_crashes {
                        actions.push(Action::CrashMidWrite(a, Tear::AfterMetadata));
                        actions.push(Action::CrashMidWrite(a, Tear::InBase64));
                    }
                }
                // A daemon request's sync waits for the socket turn; the helper's, made under
                // the store's lock, does not.
                Pc::Syncing(_, Some(_)) if a != helper && state.turn.is_some() => {}
                Pc::Syncing(..) => actions.push(Action::Finish(a)),
                Pc::Setting(..) => actions.push(Action::Apply(a)),
            }
        }
        for &client in &self.hand_appends {
            if state.hand_appended & bit(client) == 0 {
                actions.push(Action::HandAppend(client));
            }
        }
        if state.crashes < self.max_crashes {
            actions.push(Action::Crash);
        }
        match state.own_sync {
            Some(_) => actions.push(Action::DaemonApply),
            None if state.turn.is_none()
                && (state.excused || state.daemon_seen != Some(parsed.is_empty())) =>
            {
                actions.push(Action::DaemonSync)
            }
            None => {}
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Use(p) => match self.answer(&mut state, p, Request::Use)? {
                Decision::TryFirstClient => {
                    state.actors[p as usize] = Pc::WantLock(Intent::First(p));
                    state.contended |= state
                        .actors
                        .iter()
                        .filter(|pc| matches!(pc, Pc::WantLock(Intent::First(_))))
                        .count()
                        > 1;
                }
                Decision::Admit | Decision::Refuse(_) => {}
                other => panic!("a gated request decided {other:?}"),
            },
            Action::Passphrase(p) => {
                let parsed = parse(&state.file);
                let request = Request::Authenticate(Secret::Passphrase);
                match admission::decide(&self.facts(p, &parsed), request) {
                    Decision::CheckPassphrase => {}
                    Decision::Refuse(_) => return None,
                    other => panic!("a passphrase decided {other:?}"),
                }
                let outcome = if self.peers[p as usize].knows_passphrase {
                    Checked::RightPassphrase
                } else {
                    Checked::WrongPassphrase
                };
                match admission::checked(outcome) {
                    Verdict::Enrol(how) => {
                        state.actors[p as usize] = Pc::WantLock(Intent::Enrol(p, how))
                    }
                    Verdict::Refuse(_) => return None,
                }
            }
            Action::Token(p) => {
                let parsed = parse(&state.file);
                let request = Request::Authenticate(Secret::Token);
                match admission::decide(&self.facts(p, &parsed), request) {
                    Decision::RedeemToken => {}
                    Decision::Refuse(_) => return None,
                    other => panic!("a token decided {other:?}"),
                }
                // The token file: marked used under its own lock, before the client is trusted.
                let outcome = match state.token {
                    TokenState::Active => {
                        state.token = TokenState::Used(p);
                        Checked::TokenRedeemed
                    }
                    TokenState::Used(_) => Checked::TokenRefused(TokenRefusal::Used),
                    TokenState::Revoked => Checked::TokenRefused(TokenRefusal::Revoked),
                };
                match admission::checked(outcome) {
                    Verdict::Enrol(how) => {
                        state.actors[p as usize] = Pc::WantLock(Intent::Enrol(p, how))
                    }
                    Verdict::Refuse(_) => {}
                }
            }
            Action::Remove { by, client } => {
                let request = if by == client {
                    Request::Use
                } else {
                    Request::Manage
                };
                if self.answer(&mut state, by, request)? != Decision::Admit {
                    return None;
                }
                state.actors[by as usize] = Pc::WantLock(Intent::Remove(client));
            }
            Action::Revoke(p) => {
                if self.answer(&mut state, p, Request::Manage)? != Decision::Admit {
                    return None;
                }
                state.token = TokenState::Revoked;
            }
            Action::HelperTrust => {
                state.actors[self.helper() as usize] =
                    Pc::WantLock(Intent::Enrol(self.helper_target, Enrolment::Admin));
            }
            Action::Lock(a) => {
                let Pc::WantLock(intent) = state.actors[a as usize] else {
                    unreachable!()
                };
                state.lock = Some(a);
                self.locked_read(&mut state, a, intent);
            }
            Action::Write(a) => {
                let Pc::Locked { intent, read_len } = state.actors[a as usize] else {
                    unreachable!()
                };
                if state.file.len() as u8 != read_len {
                    // The file changed since it was read (a hand append takes no lock): read it
                    // again and decide again, still holding the lock.
                    self.locked_read(&mut state, a, intent);
                    return Some(state);
                }
                self.justify(&mut state, a, intent);
                let (client, how) = match intent {
                    Intent::First(c) => (c, Enrolment::FirstClient),
                    Intent::Enrol(c, how) => (c, how),
                    Intent::Remove(_) => unreachable!("removals are written when read"),
                };
                let filled = parse(&state.file).is_empty();
                state.file.push(Block {
                    client,
                    how,
                    tear: Tear::Whole,
                });
                if how == Enrolment::Token {
                    state.token_enrolled |= bit(client);
                }
                state.removed &= !bit(client);
                state.removing &= !bit(client);
                state.pending |= bit(client);
                state.lock = None;
                state.actors[a as usize] = Pc::Syncing(intent, filled.then_some(Access::Open));
            }
            Action::CrashMidWrite(a, tear) => {
                let Pc::Locked { intent, .. } = state.actors[a as usize] else {
                    unreachable!()
                };
                let (client, how) = match intent {
                    Intent::First(c) => (c, Enrolment::FirstClient),
                    Intent::Enrol(c, how) => (c, how),
                    Intent::Remove(_) => unreachable!(),
                };
                state.file.push(Block { client, how, tear });
                self.crash(&mut state);
            }
            Action::Finish(a) => {
                let Pc::Syncing(intent, from_the_write) = state.actors[a as usize] else {
                    unreachable!()
                };
                let empty = parse(&state.file).is_empty();
                // Only a write that filled or emptied the store sets the socket's access.
                match from_the_write {
                    Some(access) if self.variant == Variant::AccessFromTheWrite => {
                        state.socket = access;
                        if a != self.helper() {
                            state.daemon_seen = Some(empty);
                        }
                    }
                    // The helper reads the store and sets the access under the store's lock.
                    Some(_) if a == self.helper() => state.socket = Access::for_store(empty),
                    // The daemon: under its socket turn, from the store as it is now, not as
                    // the write left it; set in a step of its own.
                    Some(_) => {
                        state.turn = Some(a);
                        state.actors[a as usize] = Pc::Setting(intent, Access::for_store(empty), 0);
                        return Some(state);
                    }
                    None => {}
                }
                self.reply(&mut state, a, intent);
            }
            Action::Apply(a) => {
                let Pc::Setting(intent, access, settings) = state.actors[a as usize] else {
                    unreachable!()
                };
                match self.set_socket(&mut state, access, settings) {
                    Some(again) => {
                        state.actors[a as usize] = Pc::Setting(intent, again, settings + 1)
                    }
                    None => {
                        state.turn = None;
                        self.reply(&mut state, a, intent);
                    }
                }
            }
            Action::DaemonApply => {
                let (access, settings) = state.own_sync.expect("a sync under way");
                match self.set_socket(&mut state, access, settings) {
                    Some(again) => state.own_sync = Some((again, settings + 1)),
                    None => {
                        state.turn = None;
                        state.own_sync = None;
                    }
                }
            }
            Action::HandAppend(client) => {
                state.file.push(Block {
                    client,
                    how: Enrolment::ByHand,
                    tear: Tear::Whole,
                });
                state.hand_appended |= bit(client);
                state.excused = true;
                state.acked |= bit(client);
                state.removed &= !bit(client);
                state.removing &= !bit(client);
            }
            Action::Crash => self.crash(&mut state),
            Action::DaemonSync => {
                let empty = parse(&state.file).is_empty();
                state.turn = Some(DAEMON);
                state.own_sync = Some((Access::for_store(empty), 0));
            }
        }
        if state == *last {
            return None;
        }
        if matches!(
            action,
            Action::Use(_)
                | Action::Passphrase(_)
                | Action::Token(_)
                | Action::Remove { .. }
                | Action::Revoke(_)
        ) {
            state.requests += 1;
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(
                "at most one first client, and only an administrator",
                |_, s: &State| {
                    s.violations & bad::FIRST_CLIENT == 0
                        && parse(&s.file)
                            .iter()
                            .filter(|(_, how)| *how == Enrolment::FirstClient)
                            .count()
                            <= 1
                },
            ),
            Property::always(
                "nobody is trusted without being first, a right secret, a valid token or an administrator's action",
                |_, s: &State| s.violations & bad::UNJUSTIFIED == 0,
            ),
            Property::always("only trusted clients pass the gate", |_, s: &State| {
                s.violations & bad::ADMITTED_UNTRUSTED == 0
            }),
            Property::always(
                "only an administrator on the Unix socket manages others' trust",
                |_, s: &State| s.violations & bad::NOT_AN_ADMINISTRATOR == 0,
            ),
            Property::always("a token enrols at most one client", |_, s: &State| {
                s.token_enrolled.count_ones() <= 1
            }),
            Property::always(
                "acknowledged trust survives any crash",
                |_, s: &State| {
                    let parsed = parse(&s.file);
                    (0..8u8).all(|c| s.acked & bit(c) == 0 || holds(&parsed, c))
                },
            ),
            Property::always(
                "each entry reads back with the metadata its writer wrote",
                |_, s: &State| {
                    parse(&s.file).iter().all(|&(client, how)| {
                        s.file
                            .iter()
                            .any(|b| b.client == client && b.how == how && b.tear == Tear::Whole)
                    })
                },
            ),
            Property::always(
                "a removed client is refused from the next request on",
                |_, s: &State| s.violations & bad::ADMITTED_REMOVED == 0,
            ),
            Property::always(
                "at rest, the socket is open exactly when the store is not empty",
                |_, s: &State| {
                    let empty = parse(&s.file).is_empty();
                    // The daemon is excused only for what it is not told of (a hand append, a
                    // restart) until its next sync ends.
                    let at_rest = s.actors.iter().all(|pc| *pc == Pc::Idle)
                        && s.own_sync.is_none()
                        && !s.excused;
                    !at_rest || s.socket == Access::for_store(empty)
                },
            ),
            // Guards: the model reaches the states the properties are about.
            Property::sometimes("two first clients wait for the lock at once", |_, s: &State| {
                s.contended
            }),
            Property::sometimes("a crash tears an append", |_, s: &State| {
                s.file.iter().any(|b| b.tear != Tear::Whole)
            }),
            Property::sometimes("a hand append follows a torn append", |_, s: &State| {
                s.file
                    .windows(2)
                    .any(|w| w[0].tear != Tear::Whole && w[1].how == Enrolment::ByHand)
            }),
            Property::sometimes("a token enrols a client", |_, s: &State| {
                s.token_enrolled != 0
            }),
            Property::sometimes(
                "the last client is removed and the socket restricted again",
                |_, s: &State| {
                    s.removals > 0 && s.file.is_empty() && s.socket == Access::Restricted
                },
            ),
            Property::sometimes(
                "a sync finds the store changed after its setting",
                |_, s: &State| s.reread,
            ),
            Property::sometimes("a removed client asks again", |_, s: &State| {
                s.removed != 0 && s.actors.iter().all(|pc| *pc == Pc::Idle)
            }),
        ]
    }
}

impl fmt::Debug for AdmissionModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionModel")
            .field(
                "peers",
                &self.peers.iter().map(|p| p.name).collect::<Vec<_>>(),
            )
            .field("variant", &self.variant)
            .finish()
    }
}

fn model(variant: Variant) -> AdmissionModel {
    AdmissionModel {
        peers: vec![
            PeerSpec {
                name: "root",
                transport: Transport::Unix,
                uid: Some(0),
                admin: true,
                knows_passphrase: false,
                holds_token: false,
            },
            PeerSpec {
                name: "alice (admin group)",
                transport: Transport::Unix,
                uid: Some(1000),
                admin: true,
                knows_passphrase: false,
                holds_token: true,
            },
            PeerSpec {
                name: "bob (knows the passphrase)",
                transport: Transport::Unix,
                uid: Some(1001),
                admin: false,
                knows_passphrase: true,
                holds_token: true,
            },
            PeerSpec {
                name: "carol (over TCP)",
                transport: Transport::Tcp,
                uid: None,
                admin: false,
                knows_passphrase: false,
                holds_token: false,
            },
        ],
        helper_target: 3,
        hand_appends: vec![2],
        max_crashes: 1,
        max_removals: 2,
        max_requests: std::env::var("MAX_REQUESTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
        variant,
    }
}

#[test]
fn the_admission_protocol_holds_in_every_interleaving() {
    let started = Instant::now();
    let model = model(Variant::Real);
    println!("admission model: {model:?}");
    let checker = model.checker().threads(2).spawn_bfs().join();
    println!(
        "admission model: {} states ({} unique), max depth {}, in {:.1?}",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    for property in checker.model().properties() {
        let found = checker.discovery(property.name).is_some();
        let verdict = match property.expectation {
            stateright::Expectation::Always | stateright::Expectation::Eventually => {
                if found {
                    "VIOLATED"
                } else {
                    "holds"
                }
            }
            stateright::Expectation::Sometimes => {
                if found {
                    "reached"
                } else {
                    "NEVER REACHED"
                }
            }
        };
        println!("  {verdict}: {}", property.name);
    }
    checker.assert_properties();
}

/// Explore `variant` until a property fails; the path that breaks `property`, and the number of
/// distinct states seen until then.
fn caught(model: AdmissionModel, property: &'static str, why: &str) -> (usize, Vec<Action>) {
    let checker = model
        .checker()
        .threads(2)
        .finish_when(stateright::HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let path = checker.discovery(property).expect(why);
    (checker.unique_state_count(), path.into_actions())
}

fn without_hand_appends(variant: Variant) -> AdmissionModel {
    AdmissionModel {
        hand_appends: Vec::new(),
        ..model(variant)
    }
}

#[test]
fn deciding_the_first_client_outside_the_lock_is_caught() {
    // What is caught is requests racing to be first, not a hand append.
    let (states, path) = caught(
        without_hand_appends(Variant::EmptinessOutsideLock),
        "at most one first client, and only an administrator",
        "the broken variant must let a first client into a store another request filled",
    );
    println!("broken variant caught after {states} states: {path:?}");
}

#[test]
fn setting_the_socket_from_the_write_is_caught() {
    let (states, path) = caught(
        model(Variant::AccessFromTheWrite),
        "at rest, the socket is open exactly when the store is not empty",
        "the earlier socket policy must be caught",
    );
    println!("earlier socket policy caught after {states} states: {path:?}");
}

#[test]
fn setting_the_socket_from_a_stale_read_is_caught() {
    // What is caught is the helper's write landing between the daemon's read and its setting,
    // not a hand append.
    let (states, path) = caught(
        without_hand_appends(Variant::StaleRead),
        "at rest, the socket is open exactly when the store is not empty",
        "a setting from a read made before the helper's write must be caught",
    );
    println!("setting from a stale read caught after {states} states: {path:?}");
}
