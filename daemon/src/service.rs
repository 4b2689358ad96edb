//! The `multipass.Rpc` service: reads one request, applies the gate, answers.

mod redeem;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rpc::proto::rpc_server::Rpc;
use rpc::proto::*;
use rpc::server::{Peer, Transport};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use trust::passphrase::MAX_PASSPHRASE_LEN;
use trust::settings::{SettingsFile, PASSPHRASE_KEY};
use trust::tokens::{looks_like_token, TokenStore};
use trust::{Enrolment, PassphraseHash};
use zeroize::Zeroizing;

use crate::audit::Reason;
use crate::error::Error;
use crate::gate::Gate;
use crate::limits::{FailureLimiter, HashPool, PeerKey};

/// Settings keys this service has.
pub const SETTINGS_KEYS: [&str; 1] = [PASSPHRASE_KEY];

/// What a successful `authenticate` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checked {
    /// The client is trusted (now, or it was already).
    Trusted,
    /// An enrollment token from a client that is trusted already: left unused.
    TokenNotNeeded,
}

/// Shared state of all requests.
#[derive(Debug)]
pub struct Service {
    gate: Arc<Gate>,
    settings: SettingsFile,
    limiter: FailureLimiter,
    hashes: Arc<HashPool>,
    tokens: Arc<TokenStore>,
}

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn reply<T: Send + 'static>(message: T) -> Response<ReplyStream<T>> {
    Response::new(Box::pin(tokio_stream::once(Ok(message))))
}

/// The connection's peer and the first request of the stream.
async fn first<T>(request: Request<Streaming<T>>) -> Result<(Peer, T), Error> {
    let peer = peer_of(&request);
    let message = request
        .into_inner()
        .message()
        .await
        .map_err(|_| Error::NoRequest)?
        .ok_or(Error::NoRequest)?;
    Ok((peer, message))
}

/// The connection's peer, as the transport recorded it.
pub(crate) fn peer_of<T>(request: &Request<T>) -> Peer {
    request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_else(|| Peer::new(Transport::Unix, None, None))
}

fn peer_key(peer: &Peer) -> Option<PeerKey> {
    peer.key()
}

impl Service {
    /// A service deciding with `gate`, keeping settings in `settings`, redeeming `tokens`.
    pub fn new(
        gate: Arc<Gate>,
        settings: SettingsFile,
        limiter: FailureLimiter,
        hashes: Arc<HashPool>,
        tokens: Arc<TokenStore>,
    ) -> Service {
        Service {
            gate,
            settings,
            limiter,
            hashes,
            tokens,
        }
    }

    /// Check `passphrase` (or redeem it, if it is an enrollment token) and trust the peer's
    /// client if it is right. A client that is trusted already is checked all the same, as
    /// Multipass does: `authenticate` with a wrong passphrase never succeeds.
    async fn check_passphrase(
        &self,
        peer: &Peer,
        passphrase: Zeroizing<String>,
    ) -> Result<Checked, Error> {
        let client = peer.client.clone().ok_or(Error::NoClientCertificate)?;
        // Without kernel credentials there is no one to hold responsible; refuse rather than
        // share one bucket with every such peer.
        let key = peer_key(peer).ok_or(Error::NotAuthenticated)?;
        // One check at a time per peer: a flood queues behind itself, not in front of others.
        let _turn = self.limiter.turn(key).await;
        self.check_limiter(peer, key)?;
        // Told apart by shape, so a token is never hashed as a passphrase (nor the reverse).
        if looks_like_token(&passphrase) {
            // Redeeming would spend the token on a client that gains nothing from it; it is left
            // for the person it was made for, and not even looked up.
            if self.gate.is_trusted(&client)? {
                return Ok(Checked::TokenNotNeeded);
            }
            self.redeem_token(peer, &client, key, passphrase).await?;
            return Ok(Checked::Trusted);
        }
        let Some(hash) = self.settings.load()?.passphrase()? else {
            return Err(Error::PassphraseNotSet);
        };
        let verified = if passphrase.len() > MAX_PASSPHRASE_LEN || passphrase.is_empty() {
            false
        } else {
            let hash = hash.clone();
            let candidate = passphrase.clone();
            self.hashes.run(move || hash.verify(&candidate)).await?
        };
        if !verified {
            let failures = self.limiter.record_failure(key);
            self.gate
                .refused(peer, Reason::WrongPassphrase, Some(failures));
            return Err(Error::PassphraseIncorrect);
        }
        self.limiter.record_success(key);
        self.gate
            .trust(peer, &client, Enrolment::Passphrase)
            .await?;
        if hash.needs_upgrade() {
            self.upgrade_hash(&hash, passphrase).await;
        }
        Ok(Checked::Trusted)
    }

    /// Replace a legacy scrypt hash by Argon2id, unless the passphrase changed meanwhile.
    async fn upgrade_hash(&self, old: &PassphraseHash, passphrase: Zeroizing<String>) {
        let new = match self
            .hashes
            .run(move || PassphraseHash::new(&passphrase))
            .await
        {
            Ok(Ok(new)) => new,
            _ => return,
        };
        let settings = self.settings.clone();
        let old_value = old.to_setting();
        let result = tokio::task::spawn_blocking(move || {
            settings.update(|ini| {
                let current = ini.passphrase().ok().flatten().map(|h| h.to_setting());
                if current.as_deref() == Some(old_value.as_str()) {
                    ini.set_passphrase(Some(&new));
                    true
                } else {
                    false
                }
            })
        })
        .await;
        match result {
            Ok(Ok(true)) => tracing::info!(
                target: "audit",
                event = "passphrase-upgraded",
                "replaced the legacy scrypt passphrase hash with Argon2id"
            ),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not upgrade the passphrase hash"),
            Err(_) => tracing::warn!("could not upgrade the passphrase hash"),
        }
    }

    async fn store_setting(
        &self,
        peer: &Peer,
        key: &str,
        value: Zeroizing<String>,
    ) -> Result<(), Error> {
        if key != PASSPHRASE_KEY {
            return Err(Error::UnknownKey(key.to_string()));
        }
        // The helper's own rules: a passphrase refused here is refused there too.
        trust::passphrase::validate_new(&value).map_err(|e| Error::InvalidValue {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        let hash = if value.is_empty() {
            None
        } else {
            Some(
                self.hashes
                    .run(move || PassphraseHash::new(&value))
                    .await?
                    .map_err(Error::Storage)?,
            )
        };
        let settings = self.settings.clone();
        let cleared = hash.is_none();
        tokio::task::spawn_blocking(move || {
            settings.update(|ini| ini.set_passphrase(hash.as_ref()))
        })
        .await??;
        tracing::info!(
            target: "audit",
            event = if cleared { "passphrase-cleared" } else { "passphrase-set" },
            uid = peer.credentials.map(|c| c.uid),
            "the passphrase was changed"
        );
        Ok(())
    }

    fn read_setting(&self, key: &str) -> Result<String, Error> {
        if key != PASSPHRASE_KEY {
            return Err(Error::UnknownKey(key.to_string()));
        }
        // Whether one is set, never the hash.
        Ok(self.settings.load()?.passphrase()?.is_some().to_string())
    }
}

macro_rules! unimplemented_rpcs {
    ($($method:ident, $stream:ident, $req:ty, $rep:ty, $name:literal;)*) => {
        $(
            type $stream = ReplyStream<$rep>;
            // Spelled as `#[async_trait]` expands an `async fn`: the attribute does not see
            // methods that a macro inside the impl produces.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                request: Request<Streaming<$req>>,
            ) -> Pin<Box<dyn Future<Output = Result<Response<Self::$stream>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let (peer, _) = first(request).await?;
                    self.gate.admit(&peer).await?;
                    Err(Error::Unimplemented($name).into())
                })
            }
        )*
    };
}

#[tonic::async_trait]
impl Rpc for Service {
    type listStream = ReplyStream<ListReply>;
    async fn list(
        &self,
        request: Request<Streaming<ListRequest>>,
    ) -> Result<Response<Self::listStream>, Status> {
        let (peer, message) = first(request).await?;
        self.gate.admit(&peer).await?;
        // No instances, and so no snapshots either.
        let list_contents = if message.snapshots {
            list_reply::ListContents::SnapshotList(SnapshotsList { snapshots: vec![] })
        } else {
            list_reply::ListContents::InstanceList(InstancesList { instances: vec![] })
        };
        Ok(reply(ListReply {
            list_contents: Some(list_contents),
            log_line: String::new(),
        }))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        // Never trusts anybody: no first-client rule here.
        let peer = peer_of(&request);
        let client = peer.client.ok_or(Error::NotAuthenticated)?;
        if self.gate.is_trusted(&client)? {
            Ok(Response::new(PingReply {}))
        } else {
            Err(Error::NotAuthenticated.into())
        }
    }

    type authenticateStream = ReplyStream<AuthenticateReply>;
    async fn authenticate(
        &self,
        request: Request<Streaming<AuthenticateRequest>>,
    ) -> Result<Response<Self::authenticateStream>, Status> {
        let (peer, mut message) = first(request).await?;
        // A passphrase or an enrollment token.
        let passphrase = Zeroizing::new(std::mem::take(&mut message.passphrase));
        let checked = self.check_passphrase(&peer, passphrase).await?;
        let mut log_line = self.trusted_as(&peer)?;
        if checked == Checked::TokenNotNeeded {
            log_line.push_str(
                "The enrollment token was not used: this client did not need it, and it can \
                 still enroll another.\n",
            );
        }
        Ok(reply(AuthenticateReply { log_line }))
    }

    type versionStream = ReplyStream<VersionReply>;
    async fn version(
        &self,
        request: Request<Streaming<VersionRequest>>,
    ) -> Result<Response<Self::versionStream>, Status> {
        let (peer, _) = first(request).await?;
        self.gate.admit(&peer).await?;
        Ok(reply(VersionReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..VersionReply::default()
        }))
    }

    type getStream = ReplyStream<GetReply>;
    async fn get(
        &self,
        request: Request<Streaming<GetRequest>>,
    ) -> Result<Response<Self::getStream>, Status> {
        let (peer, message) = first(request).await?;
        self.gate.admit(&peer).await?;
        let value = self.read_setting(&message.key)?;
        Ok(reply(GetReply {
            value,
            log_line: String::new(),
        }))
    }

    type setStream = ReplyStream<SetReply>;
    async fn set(
        &self,
        request: Request<Streaming<SetRequest>>,
    ) -> Result<Response<Self::setStream>, Status> {
        let (peer, mut message) = first(request).await?;
        let value = Zeroizing::new(std::mem::take(&mut message.val));
        self.gate.admit(&peer).await?;
        self.store_setting(&peer, &message.key, value).await?;
        Ok(reply(SetReply::default()))
    }

    type keysStream = ReplyStream<KeysReply>;
    async fn keys(
        &self,
        request: Request<Streaming<KeysRequest>>,
    ) -> Result<Response<Self::keysStream>, Status> {
        let (peer, _) = first(request).await?;
        self.gate.admit(&peer).await?;
        Ok(reply(KeysReply {
            log_line: String::new(),
            settings_keys: SETTINGS_KEYS.iter().map(|k| k.to_string()).collect(),
        }))
    }

    unimplemented_rpcs! {
        create, createStream, LaunchRequest, LaunchReply, "create";
        launch, launchStream, LaunchRequest, LaunchReply, "launch";
        purge, purgeStream, PurgeRequest, PurgeReply, "purge";
        find, findStream, FindRequest, FindReply, "find";
        info, infoStream, InfoRequest, InfoReply, "info";
        networks, networksStream, NetworksRequest, NetworksReply, "networks";
        mount, mountStream, MountRequest, MountReply, "mount";
        recover, recoverStream, RecoverRequest, RecoverReply, "recover";
        ssh_info, ssh_infoStream, SshInfoRequest, SshInfoReply, "ssh_info";
        start, startStream, StartRequest, StartReply, "start";
        stop, stopStream, StopRequest, StopReply, "stop";
        suspend, suspendStream, SuspendRequest, SuspendReply, "suspend";
        restart, restartStream, RestartRequest, RestartReply, "restart";
        delet, deletStream, DeleteRequest, DeleteReply, "delete";
        umount, umountStream, UmountRequest, UmountReply, "umount";
        snapshot, snapshotStream, SnapshotRequest, SnapshotReply, "snapshot";
        restore, restoreStream, RestoreRequest, RestoreReply, "restore";
        clone, cloneStream, CloneRequest, CloneReply, "clone";
        daemon_info, daemon_infoStream, DaemonInfoRequest, DaemonInfoReply, "daemon_info";
        wait_ready, wait_readyStream, WaitReadyRequest, WaitReadyReply, "wait_ready";
    }
}
