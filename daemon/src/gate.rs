//! The gate: every RPC but `ping` and `authenticate` passes here, and here alone the daemon
//! decides to trust a client (first client, passphrase). The trust store itself lives in the
//! `trust` crate; this module holds the policy of *when*.

use std::sync::Arc;

use rpc::server::{Peer, Transport};
use trust::seen::LastSeen;
use trust::{Enrolment, Entry, Metadata, TrustStore, VerifiedClient};

use crate::audit::{self, Reason, Refusals};
use crate::error::Error;
use crate::socket::{Access, SocketPolicy};
use trust::access::{self as admin, AdminPolicy};

/// Trust decisions, shared by all requests.
#[derive(Debug)]
pub struct Gate {
    store: Arc<TrustStore>,
    admin: AdminPolicy,
    socket: SocketPolicy,
    seen: Option<Arc<LastSeen>>,
    refusals: Refusals,
}

impl Gate {
    /// A gate over `store`.
    pub fn new(store: Arc<TrustStore>, admin: AdminPolicy, socket: SocketPolicy) -> Gate {
        Gate {
            store,
            admin,
            socket,
            seen: None,
            refusals: Refusals::default(),
        }
    }

    /// Audit that `peer` was refused for `reason` (collapsed per peer and reason: see
    /// [`Refusals`]).
    pub fn refused(&self, peer: &Peer, reason: Reason, failures: Option<u32>) {
        self.refusals.note(peer, reason, failures);
    }

    /// Record in `seen` when each admitted client was last seen.
    pub fn with_last_seen(mut self, seen: Arc<LastSeen>) -> Gate {
        self.seen = Some(seen);
        self
    }

    /// The socket's access policy, for handlers that change who is trusted.
    pub fn socket_policy(&self) -> &SocketPolicy {
        &self.socket
    }

    /// Whether `peer` is an administrator now: on the Unix socket, with a SO_PEERCRED uid that
    /// is 0 or a member of the admin group (looked up at each request, so a membership granted
    /// or taken away counts at once). Never over TCP, where there are no kernel credentials.
    pub async fn is_administrator(&self, peer: &Peer) -> bool {
        let (Transport::Unix, Some(credentials)) = (peer.transport, peer.credentials) else {
            return false;
        };
        let admin = self.admin.clone();
        // The user database may be remote (NSS): off the async threads.
        tokio::task::spawn_blocking(move || admin.is_admin(credentials.uid))
            .await
            .unwrap_or(false)
    }

    /// The refusal of `action` to `peer`, who is not an administrator: it says who may, and how.
    pub fn not_administrator(&self, peer: &Peer, action: &'static str) -> Error {
        Error::NotAdministrator {
            action,
            group: self.admin.group().map(|g| g.name),
            over_tcp: matches!(peer.transport, Transport::Tcp(_)),
        }
    }

    /// The store, for handlers that read it.
    pub fn store(&self) -> &Arc<TrustStore> {
        &self.store
    }

    /// Let `peer` through if its certificate is trusted, or if it qualifies as the first client:
    /// on the Unix socket, store empty, peer uid 0 or in the admin group. Otherwise
    /// `NotAuthenticated`.
    pub async fn admit(&self, peer: &Peer) -> Result<VerifiedClient, Error> {
        let client = peer.client.clone().ok_or(Error::NotAuthenticated)?;
        if self.is_trusted(&client)? {
            crate::management::note_seen(self.seen.as_ref(), &client);
            return Ok(client);
        }
        // Re-checked after a lost first-client race: the winner may have been this same
        // certificate, on another connection.
        if self.try_first_client(peer, &client).await? || self.is_trusted(&client)? {
            crate::management::note_seen(self.seen.as_ref(), &client);
            return Ok(client);
        }
        self.refused(peer, Reason::NotTrusted, None);
        Err(Error::Untrusted {
            trusted: self.store.current()?.len(),
        })
    }

    /// Whether `client` is trusted now (the store is re-read if the file changed).
    pub fn is_trusted(&self, client: &VerifiedClient) -> Result<bool, Error> {
        Ok(self.store.is_trusted(&client.fingerprint())?)
    }

    async fn try_first_client(&self, peer: &Peer, client: &VerifiedClient) -> Result<bool, Error> {
        if peer.transport != Transport::Unix {
            return Ok(false);
        }
        let Some(credentials) = peer.credentials else {
            return Ok(false);
        };
        // Cheap test first, so untrusted clients of a service in use never take the lock.
        if !self.store.current()?.is_empty() {
            return Ok(false);
        }
        let admin = self.admin.clone();
        let store = self.store.clone();
        let entry = entry_for(client, Some(credentials.uid), Enrolment::FirstClient);
        // `None`: not an administrator.
        let won = tokio::task::spawn_blocking(move || -> Result<Option<bool>, Error> {
            if !admin.is_admin(credentials.uid) {
                return Ok(None);
            }
            // The decision and the write happen under the store's lock, against the file as it
            // is now: of simultaneous first clients exactly one finds it empty.
            let won = store.modify(|bundle| {
                if bundle.is_empty() {
                    bundle.insert(entry.clone())
                } else {
                    false
                }
            })?;
            Ok(Some(won))
        })
        .await??;
        let Some(won) = won else {
            self.refused(peer, Reason::FirstClientNotAdmin, None);
            return Ok(false);
        };
        if won {
            audit::trusted(peer, client, Enrolment::FirstClient);
            self.socket.apply(Access::Open).await;
        }
        Ok(won)
    }

    /// Trust `client` (after a passphrase or token check) and open the socket if it was the first.
    pub async fn trust(
        &self,
        peer: &Peer,
        client: &VerifiedClient,
        how: Enrolment,
    ) -> Result<(), Error> {
        self.trust_as(peer, client, how, None).await
    }

    /// [`Gate::trust`], under `name` rather than the user's login name (a token's name). Either
    /// name is made unique among the trusted clients (`alice`, then `alice-2`), so that it
    /// designates one client for `trust remove`.
    pub async fn trust_as(
        &self,
        peer: &Peer,
        client: &VerifiedClient,
        how: Enrolment,
        name: Option<String>,
    ) -> Result<(), Error> {
        let uid = peer.credentials.map(|c| c.uid);
        let mut entry = entry_for(client, uid, how);
        if name.is_some() {
            entry.metadata.name = name;
        }
        let store = self.store.clone();
        let added = tokio::task::spawn_blocking(move || {
            store.modify(|bundle| {
                let was_empty = bundle.is_empty();
                let mut entry = entry.clone();
                if let Some(name) = &entry.metadata.name {
                    entry.metadata.name = Some(bundle.unique_name(name));
                }
                bundle.insert(entry).then_some(was_empty)
            })
        })
        .await??;
        if let Some(was_empty) = added {
            audit::trusted(peer, client, how);
            if was_empty {
                self.socket.apply(Access::Open).await;
            }
        }
        Ok(())
    }
}

fn entry_for(client: &VerifiedClient, uid: Option<u32>, how: Enrolment) -> Entry {
    let user = uid.and_then(admin::user_name);
    let when = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .ok();
    Entry::new(
        client.certificate().clone(),
        Metadata {
            name: uid.map(trust::names::default_for_uid),
            uid,
            user,
            how: Some(how),
            when,
        },
    )
}
