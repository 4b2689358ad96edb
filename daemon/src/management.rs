//! The `multipass.trust.Trust` service: trust management that Multipass lacks. Listing and
//! removing trusted clients, creating, listing and revoking one-time enrollment tokens.
//!
//! Every method passes the same gate as `multipass.Rpc` (trusted clients only). Managing others'
//! trust is an administrator's right, decided at each request ([`Gate::manage`]): every trusted
//! client may list the clients and remove its own entry, but removing another client and creating,
//! listing or revoking tokens need a caller on the Unix socket whose uid is 0 or in the admin
//! group; over TCP nobody may. Every change, and every such refusal, is an audit event
//! (`trust::audit::AuditEvent`) naming the caller, and a token appears in exactly one place: the
//! reply to the request that created it. Redeeming a token is not here but in `authenticate`
//! (`gate::authenticate`), so stock Multipass clients can redeem one.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::Poll;

use rpc::server::{Pacing, Peer, Place, PlacesPerPeer};
use rpc::trust_proto::trust_server::Trust;
use rpc::trust_proto::{
    CreateTokenReply, CreateTokenRequest, Enrolment as WireEnrolment, ListClientsReply,
    ListClientsRequest, ListTokensReply, ListTokensRequest, RemoveClientReply, RemoveClientRequest,
    RevokeTokenReply, RevokeTokenRequest, TokenInfo, TokenStatus as WireTokenStatus, TrustedClient,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tls::VerifiedClient;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use trust::audit::AuditEvent;
use trust::seen::LastSeen;
use trust::tokens::{TokenError, TokenRecord, TokenStatus, TokenStore, DEFAULT_LIFETIME};
use trust::{Bundle, Entry, Fingerprint};

use crate::error::{Error, MIN_PREFIX};
use crate::gate::{Gate, MOST_PACED_WAIT};
use trust::access as admin;

/// What needs an administrator, as the refusal words it.
const REMOVE_OTHER: &str = "remove another client's trust";
const CREATE_TOKENS: &str = "create enrollment tokens";
const LIST_TOKENS: &str = "list enrollment tokens";
const REVOKE_TOKENS: &str = "revoke enrollment tokens";

/// Why a removal removed nothing.
enum Removal {
    /// The id matched another client's entry and the caller is not an administrator.
    NotAdministrator,
    /// The id matched no entry, or several.
    Refused(Error),
}

/// Shared state of the trust-management requests.
#[derive(Debug)]
pub struct Management {
    gate: Arc<Gate>,
    tokens: Arc<TokenStore>,
    seen: Arc<LastSeen>,
    /// Client lists being sent, per peer.
    lists: PlacesPerPeer,
    /// When each peer's next list starts ([`LIST_BURST`]).
    list_pace: Pacing,
    /// When each peer's next removal of its own client is made ([`OWN_REMOVAL_BURST`]).
    own_removal_pace: Pacing,
}

impl Management {
    /// Management of `gate`'s store, of `tokens`, showing times from `seen`.
    pub fn new(gate: Arc<Gate>, tokens: Arc<TokenStore>, seen: Arc<LastSeen>) -> Management {
        Management {
            gate,
            tokens,
            seen,
            lists: PlacesPerPeer::default(),
            list_pace: Pacing::new(LISTS_PER_SECOND, LIST_BURST),
            own_removal_pace: Pacing::every(OWN_REMOVAL_INTERVAL, OWN_REMOVAL_BURST),
        }
    }

    /// Whether `client` is trusted still: asked under a file's lock by a change admitted before
    /// it, so that a change whose client was removed meanwhile is not made after the removal.
    fn still_trusted(
        &self,
        client: &VerifiedClient,
    ) -> impl FnOnce() -> trust::Result<bool> + Send + 'static {
        let store = self.gate.store().clone();
        let fingerprint = client.fingerprint();
        move || store.is_trusted(&fingerprint)
    }

    /// Run `work` on the token file off the async threads.
    async fn on_tokens<T: Send + 'static>(
        &self,
        work: impl FnOnce(&TokenStore) -> Result<T, TokenError> + Send + 'static,
    ) -> Result<T, Error> {
        let tokens = self.tokens.clone();
        Ok(tokio::task::spawn_blocking(move || work(&tokens)).await??)
    }
}

/// `entry` as the wire shows a client to `caller`.
fn describe(entry: &Entry, seen: &LastSeen, caller: &Fingerprint) -> TrustedClient {
    let meta = &entry.metadata;
    TrustedClient {
        fingerprint: entry.fingerprint.to_hex(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid,
        user: meta.user.clone().unwrap_or_default(),
        how: WireEnrolment::from(entry.enrolment()) as i32,
        when: meta.when.clone().unwrap_or_default(),
        last_seen: seen
            .get(&entry.fingerprint)
            .map(rfc3339)
            .unwrap_or_default(),
        is_caller: entry.fingerprint == *caller,
    }
}

/// What a page of `trust list` holds at most, encoded: a few hundred clients.
const PAGE_BYTES: usize = 32 * 1024;

/// Client lists one peer may have in flight at once (a `trust list` has one). A page waits in
/// the connection's buffers until its client reads it; these few keep what one user's unread
/// lists hold to a few pages each, whatever the size of the store.
const LISTS_PER_PEER: usize = 4;

/// Lists of the trusted clients one peer (a user but root, a TCP address) gets at once, then
/// per second; the others wait their turn. Each reads the whole store: a trusted user listing in
/// a loop listed a store of a megabyte 6,600 times a second.
const LIST_BURST: u32 = 16;
/// See [`LIST_BURST`].
const LISTS_PER_SECOND: u32 = 4;

/// Removals of its own client a peer that is not an administrator gets at once, then one every
/// [`OWN_REMOVAL_INTERVAL`]. Enrolling a new client with the passphrase and removing it again,
/// in a loop, rewrote the store and wrote two audit lines each time; an administrator's removals
/// are not paced.
const OWN_REMOVAL_BURST: u32 = 5;
/// See [`OWN_REMOVAL_BURST`].
const OWN_REMOVAL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

const TOO_MANY_LISTS: &str = "Too many lists of the trusted clients from this user (or address) \
     are being sent; try again once they have been read.";

/// Why a list ended before its last page.
pub const LIST_CHANGED: &str =
    "The trusted clients changed while the list was being sent. Please list them again.";

/// The pages of one `trust list`, each made when its client is ready for it, from the store's
/// version the first was made of: the list holds that version only weakly, so that lists that
/// are never read keep no copy of a store that has changed since.
struct Pages {
    store: Arc<trust::TrustStore>,
    version: Weak<Bundle>,
    /// The entry the next page starts at; `None` once the last page (or an error) was sent.
    next: Option<usize>,
    seen: Arc<LastSeen>,
    caller: Fingerprint,
    _place: Place,
}

impl Pages {
    fn next_page(&mut self) -> Option<Result<ListClientsReply, Status>> {
        let start = self.next.take()?;
        // One `stat`: a changed file is not read again here (a large store's parse, on the
        // runtime's thread, for every page) but ends the list, and the next list reads it.
        let bundle = match self.store.current_if_unchanged() {
            Some(bundle) if std::ptr::eq(Arc::as_ptr(&bundle), self.version.as_ptr()) => bundle,
            _ => return Some(Err(Status::aborted(LIST_CHANGED))),
        };
        let (mut clients, mut bytes) = (Vec::new(), 0);
        for entry in bundle.iter().skip(start) {
            if bytes >= PAGE_BYTES {
                break;
            }
            let client = describe(entry, &self.seen, &self.caller);
            // With its field's tag and length: the page's size exactly.
            bytes += prost::encoding::message::encoded_len(1, &client);
            clients.push(client);
        }
        let end = start + clients.len();
        self.next = (end < bundle.len()).then_some(end);
        Some(Ok(ListClientsReply { clients }))
    }
}

impl Stream for Pages {
    type Item = Result<ListClientsReply, Status>;

    fn poll_next(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.get_mut().next_page())
    }
}

/// The one entry `id` designates: by name (exactly), or by fingerprint prefix (at least
/// [`MIN_PREFIX`] hex digits, any case). Names are unique among the clients the daemon trusts;
/// a name made of hex digits (a login name, a token's) that is also a prefix of the same
/// client's fingerprint designates that one client. An id that matches several entries (a name
/// and another client's fingerprint prefix, a prefix of several, a name given twice by hand) is
/// refused with the candidates rather than guessed at: a removal cannot be taken back.
pub fn resolve(bundle: &Bundle, id: &str) -> Result<Fingerprint, Error> {
    let id = id.trim();
    // A name and another client's fingerprint prefix at once designate two clients: refused
    // with both shown, rather than one picked, since a removal cannot be taken back.
    let hex = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit());
    // Shown back in refusals: with its invisible characters escaped.
    let shown = || trust::names::shown(id).to_string();
    let prefix = (hex && id.len() >= MIN_PREFIX).then(|| id.to_ascii_lowercase());
    let matches: Vec<&Entry> = bundle
        .iter()
        .filter(|e| {
            e.metadata.name.as_deref() == Some(id)
                || prefix
                    .as_deref()
                    .is_some_and(|p| e.fingerprint.to_hex().starts_with(p))
        })
        .collect();
    match matches[..] {
        [one] => Ok(one.fingerprint),
        [] if hex && prefix.is_none() => Err(Error::ClientIdTooShort(shown())),
        [] => Err(Error::NoSuchClient(shown())),
        _ => Err(Error::AmbiguousClient {
            id: shown(),
            candidates: matches
                .iter()
                .map(|e| {
                    format!(
                        "{} ({})",
                        trust::pki::short_hex(&e.fingerprint.to_hex()),
                        e.metadata.name.as_deref().unwrap_or("no name")
                    )
                })
                .collect(),
        }),
    }
}

fn token_info(record: &TokenRecord, now: OffsetDateTime) -> TokenInfo {
    TokenInfo {
        name: record.name.clone(),
        status: WireTokenStatus::from(record.status(now)) as i32,
        created: rfc3339(record.created),
        expires: rfc3339(record.expires),
        created_by_uid: record.created_by,
        created_by_user: record
            .created_by
            .and_then(admin::user_name)
            .unwrap_or_default(),
        used_by_uid: record.used_by.uid,
        used_by_user: record
            .used_by
            .uid
            .and_then(admin::user_name)
            .unwrap_or_default(),
        used_by_client: record
            .used_by
            .client
            .map(|f| f.to_hex())
            .unwrap_or_default(),
    }
}

/// Wait for `peer`'s turn in `pacing`, of `what` (in the plural, for the refusal); root's turns
/// are never held, and a turn more than [`MOST_PACED_WAIT`] off is refused instead.
async fn pace(pacing: &Pacing, peer: &Peer, what: &'static str) -> Result<(), Error> {
    pacing
        .wait_turn(peer, MOST_PACED_WAIT)
        .await
        .map_err(|retry_after| Error::Paced { what, retry_after })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Trust for Management {
    type ListClientsStream = Pin<Box<dyn Stream<Item = Result<ListClientsReply, Status>> + Send>>;

    async fn list_clients(
        &self,
        request: Request<ListClientsRequest>,
    ) -> Result<Response<Self::ListClientsStream>, Status> {
        let peer = Peer::of(&request);
        let caller = self.gate.admit(&peer).await?;
        let place = self
            .lists
            .claim(&peer, LISTS_PER_PEER)
            .ok_or_else(|| Status::resource_exhausted(TOO_MANY_LISTS))?;
        pace(&self.list_pace, &peer, "lists of the trusted clients").await?;
        let store = self.gate.store().clone();
        let version = Arc::downgrade(&store.current().map_err(Error::from)?);
        Ok(Response::new(Box::pin(Pages {
            store,
            version,
            next: Some(0),
            seen: self.seen.clone(),
            caller: caller.fingerprint(),
            _place: place,
        })))
    }

    async fn remove_client(
        &self,
        request: Request<RemoveClientRequest>,
    ) -> Result<Response<RemoveClientReply>, Status> {
        let peer = Peer::of(&request);
        let caller = self.gate.admit(&peer).await?;
        let id = request.into_inner().id;
        let store = self.gate.store().clone();
        // Anybody may remove their own entry; another's needs an administrator.
        let administrator = self.gate.may_manage(&peer).await?;
        if !administrator {
            pace(&self.own_removal_pace, &peer, "removals").await?;
        }
        let own = caller.fingerprint();
        // Resolved against the file as it is under the lock, so the id means what it means now.
        let outcome = tokio::task::spawn_blocking(move || {
            let mut refusal = None;
            let removed = store.modify(|bundle| match resolve(bundle, &id) {
                // Admitted before the lock: a caller removed since (its removal acknowledged)
                // removes nobody after it.
                _ if !bundle.contains(&own) => {
                    refusal = Some(Removal::Refused(Error::NotAuthenticated));
                    None
                }
                Ok(fingerprint) if fingerprint != own && !administrator => {
                    refusal = Some(Removal::NotAdministrator);
                    None
                }
                Ok(fingerprint) => {
                    refusal = None;
                    bundle.remove(&fingerprint).map(|e| (e, bundle.len()))
                }
                Err(e) => {
                    refusal = Some(Removal::Refused(e));
                    None
                }
            })?;
            Ok::<_, Error>(removed.ok_or(refusal.unwrap_or(Removal::Refused(Error::Internal))))
        })
        .await
        .map_err(Error::from)??;
        let (removed, remaining) = match outcome {
            Ok(removed) => removed,
            Err(Removal::NotAdministrator) => {
                return Err(self.gate.not_administrator(&peer, REMOVE_OTHER).into())
            }
            Err(Removal::Refused(e)) => return Err(e.into()),
        };
        let described = describe(&removed, &self.seen, &caller.fingerprint());
        let seen = self.seen.clone();
        let fingerprint = removed.fingerprint;
        tokio::task::spawn_blocking(move || {
            if let Err(e) = seen.forget(&fingerprint) {
                tracing::warn!(error = %e, "cannot write the last-seen times");
            }
        });
        AuditEvent::Removed {
            fingerprint: removed.fingerprint,
            name: removed.metadata.name.as_deref(),
            how: removed.enrolment(),
            by: crate::audit::who(&peer),
            remaining,
        }
        .emit();
        if remaining == 0 {
            // The last one gone: only administrators may reach the socket again.
            self.gate.sync_socket().await;
        }
        Ok(Response::new(RemoveClientReply {
            removed: Some(described),
            remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            socket_restricted: self.gate.socket_restricted(),
        }))
    }

    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenReply>, Status> {
        let peer = Peer::of(&request);
        let request_client = self.gate.manage(&peer, CREATE_TOKENS).await?;
        let message = request.into_inner();
        if !message.name.is_empty()
            && self
                .gate
                .store()
                .current()
                .map_err(Error::from)?
                .iter()
                .any(|e| e.metadata.name.as_deref() == Some(message.name.as_str()))
        {
            return Err(Error::ClientNameTaken(message.name).into());
        }
        let lifetime = match message.expires_in_seconds {
            0 => DEFAULT_LIFETIME,
            secs => Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX)),
        };
        let uid = peer.credentials.map(|c| c.uid);
        let now = OffsetDateTime::now_utc();
        let still_trusted = self.still_trusted(&request_client);
        let (token, record) = self
            .on_tokens(move |tokens| {
                let name = Some(message.name.as_str()).filter(|n| !n.is_empty());
                tokens.create_if(still_trusted, name, lifetime, uid, now)
            })
            .await?;
        AuditEvent::TokenCreated {
            name: &record.name,
            expires: &rfc3339(record.expires),
            by: crate::audit::who(&peer),
        }
        .emit();
        Ok(Response::new(CreateTokenReply {
            token: token.expose().to_string(),
            info: Some(token_info(&record, now)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensReply>, Status> {
        let peer = Peer::of(&request);
        self.gate.manage(&peer, LIST_TOKENS).await?;
        let records = self.on_tokens(|tokens| tokens.list()).await?;
        let now = OffsetDateTime::now_utc();
        Ok(Response::new(ListTokensReply {
            tokens: records.iter().map(|r| token_info(r, now)).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenReply>, Status> {
        let peer = Peer::of(&request);
        self.gate.manage(&peer, REVOKE_TOKENS).await?;
        let name = request.into_inner().name;
        let now = OffsetDateTime::now_utc();
        // Not asked again under the lock, unlike a creation: a revocation only takes access
        // away, and one refused would leave usable a token an administrator wanted ended.
        let revocation = self
            .on_tokens(move |tokens| tokens.revoke(&name, now))
            .await?;
        // Revoking what could not be used anyway changed nothing: no line in the audit log.
        if revocation.before == TokenStatus::Active {
            AuditEvent::TokenRevoked {
                name: &revocation.record.name,
                by: crate::audit::who(&peer),
            }
            .emit();
        }
        Ok(Response::new(RevokeTokenReply {
            info: Some(token_info(&revocation.record, now)),
            before: WireTokenStatus::from(revocation.before) as i32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use trust::Metadata;

    fn entry(der: &[u8], name: Option<&str>) -> Entry {
        Entry::new(
            CertificateDer::from(der.to_vec()),
            Metadata {
                name: name.map(str::to_string),
                ..Metadata::default()
            },
        )
    }

    /// Two byte strings whose fingerprints share their first `digits` hex digits.
    fn colliding(digits: usize) -> (Vec<u8>, Vec<u8>) {
        let mut seen = std::collections::HashMap::new();
        for i in 0u32.. {
            let der = i.to_le_bytes().to_vec();
            let prefix = Fingerprint::of(&der).to_hex()[..digits].to_string();
            if let Some(other) = seen.insert(prefix, der.clone()) {
                return (other, der);
            }
        }
        unreachable!()
    }

    /// A list is made of the store as it was at its first page: a change before its last page
    /// ends it with ABORTED, rather than with a list that is neither the old store nor the new.
    #[test]
    fn a_list_is_made_of_one_version_of_the_store() {
        const CLIENTS: u32 = 1000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.pem");
        let mut bundle = Bundle::default();
        for i in 0..CLIENTS {
            bundle.insert(entry(&i.to_le_bytes(), Some(&format!("client-{i}"))));
        }
        std::fs::write(&path, bundle.to_pem()).unwrap();
        let store = Arc::new(trust::TrustStore::new(
            &path,
            trust::fsutil::FileMode::PRIVATE,
        ));
        let seen = Arc::new(LastSeen::new(
            dir.path().join("seen"),
            trust::fsutil::FileMode::PRIVATE,
        ));
        let list = || Pages {
            store: store.clone(),
            version: Arc::downgrade(&store.current().unwrap()),
            next: Some(0),
            seen: seen.clone(),
            caller: Fingerprint::of(&0u32.to_le_bytes()),
            _place: PlacesPerPeer::default()
                .claim(&Peer::new(rpc::server::Transport::Unix, None, None), 1)
                .unwrap(),
        };

        let (mut whole, mut pages) = (list(), Vec::new());
        while let Some(page) = whole.next_page() {
            pages.push(page.unwrap());
        }
        assert!(pages.len() > 1, "{} clients in one page", CLIENTS);
        for page in &pages {
            // A page stops at the first client past its size.
            assert!(prost::Message::encoded_len(page) < PAGE_BYTES + 256);
        }
        let names: Vec<String> = pages
            .into_iter()
            .flat_map(|p| p.clients)
            .map(|c| c.name)
            .collect();
        let expected: Vec<String> = (0..CLIENTS).map(|i| format!("client-{i}")).collect();
        assert_eq!(names, expected, "every client once, in the store's order");

        let mut changed = list();
        changed.next_page().unwrap().unwrap();
        store
            .remove(&Fingerprint::of(&(CLIENTS - 1).to_le_bytes()))
            .unwrap()
            .expect("removed");
        let end = changed.next_page().unwrap().unwrap_err();
        assert_eq!(end.code(), tonic::Code::Aborted);
        assert_eq!(end.message(), LIST_CHANGED);
        assert!(changed.next_page().is_none(), "nothing after the end");
    }

    #[test]
    fn resolves_by_name_and_by_prefix() {
        let mut bundle = Bundle::default();
        bundle.insert(entry(b"a", Some("alice")));
        bundle.insert(entry(b"b", None));
        let b = Fingerprint::of(b"b");
        assert_eq!(resolve(&bundle, "alice").unwrap(), Fingerprint::of(b"a"));
        assert_eq!(resolve(&bundle, &b.to_hex()[..8]).unwrap(), b);
        assert_eq!(resolve(&bundle, &b.to_hex().to_uppercase()).unwrap(), b);
        assert!(matches!(
            resolve(&bundle, "nobody"),
            Err(Error::NoSuchClient(_))
        ));
        assert!(matches!(
            resolve(&bundle, &b.to_hex()[..3]),
            Err(Error::ClientIdTooShort(_))
        ));
    }

    #[test]
    fn a_name_that_is_also_another_clients_prefix_is_ambiguous() {
        let (x, y) = (b"x".to_vec(), b"y".to_vec());
        let x_prefix = Fingerprint::of(&x).to_hex()[..8].to_string();
        let mut bundle = Bundle::default();
        bundle.insert(entry(&x, Some("x")));
        // A client named like another's fingerprint prefix: both are shown, neither picked.
        bundle.insert(entry(&y, Some(&x_prefix)));
        match resolve(&bundle, &x_prefix) {
            Err(Error::AmbiguousClient { candidates, .. }) => {
                assert_eq!(candidates.len(), 2, "{candidates:?}")
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        // Each is designated by a prefix of its own fingerprint.
        let longer = &Fingerprint::of(&x).to_hex()[..9];
        assert_eq!(resolve(&bundle, longer).unwrap(), Fingerprint::of(&x));
        let own = &Fingerprint::of(&y).to_hex()[..8];
        assert_eq!(resolve(&bundle, own).unwrap(), Fingerprint::of(&y));
        // A name that is no other client's prefix designates its client.
        bundle.insert(entry(b"z", Some("deadbeef0")));
        assert_eq!(
            resolve(&bundle, "deadbeef0").unwrap(),
            Fingerprint::of(b"z")
        );
    }

    #[test]
    fn an_ambiguous_prefix_or_name_is_refused() {
        let (x, y) = colliding(MIN_PREFIX);
        let mut bundle = Bundle::default();
        bundle.insert(entry(&x, Some("x")));
        bundle.insert(entry(&y, Some("y")));
        let prefix = &Fingerprint::of(&x).to_hex()[..MIN_PREFIX];
        match resolve(&bundle, prefix) {
            Err(Error::AmbiguousClient { candidates, .. }) => {
                assert_eq!(candidates.len(), 2);
                assert!(
                    candidates.iter().any(|c| c.ends_with("(x)")),
                    "{candidates:?}"
                );
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        // A longer prefix picks one.
        let longer = &Fingerprint::of(&x).to_hex()[..32];
        assert_eq!(resolve(&bundle, longer).unwrap(), Fingerprint::of(&x));

        let mut twins = Bundle::default();
        twins.insert(entry(b"1", Some("same")));
        twins.insert(entry(b"2", Some("same")));
        assert!(matches!(
            resolve(&twins, "same"),
            Err(Error::AmbiguousClient { .. })
        ));
    }
}
