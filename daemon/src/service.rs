//! The `multipass.Rpc` service: reads one request, applies the gate, answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rpc::proto::rpc_server::Rpc;
use rpc::proto::*;
use rpc::server::{Pacing, Peer};
use tls::VerifiedClient;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use trust::passphrase::NOTHING_TO_CLEAR;
use trust::settings::PASSPHRASE_KEY;
use trust::PassphraseHash;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::gate::{Authenticated, Gate};

/// Settings keys this service has.
pub const SETTINGS_KEYS: [&str; 1] = [PASSPHRASE_KEY];

/// Shared state of all requests.
#[derive(Debug)]
pub struct Service {
    gate: Arc<Gate>,
    /// Passphrase changes per peer: each is a hash, a write of the settings file and an audit
    /// line, which is never collapsed.
    changes: Pacing,
}

/// Passphrase changes one peer (a user but root, a TCP address) may make at once, then
/// [`CHANGES_PER_SECOND`]; the others wait their turn. Far above what a person or a set-up
/// script does; a loop of changes writes at most two audit lines a second per user instead of
/// hundreds (journald drops a service's lines beyond 10,000 in 30 s, others' trust changes with
/// them).
pub const CHANGE_BURST: u32 = 5;
/// See [`CHANGE_BURST`].
pub const CHANGES_PER_SECOND: u32 = 2;

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn reply<T: Send + 'static>(message: T) -> Response<ReplyStream<T>> {
    Response::new(Box::pin(tokio_stream::once(Ok(message))))
}

/// The connection's peer and the first request of the stream.
async fn first<T>(request: Request<Streaming<T>>) -> Result<(Peer, T), Error> {
    let peer = Peer::of(&request);
    let message = request
        .into_inner()
        .message()
        .await
        .map_err(|_| Error::NoRequest)?
        .ok_or(Error::NoRequest)?;
    Ok((peer, message))
}

/// The `log_line` of a successful `authenticate`: which name the client is trusted under.
fn trusted_as(name: Option<String>) -> String {
    match name {
        Some(name) => format!("This client is trusted as '{name}'.\n"),
        None => "This client is trusted.\n".to_string(),
    }
}

/// Whether a `set` changed the setting.
enum Stored {
    Changed,
    /// It was already so (a passphrase cleared that was not set).
    Unchanged,
}

impl Service {
    /// A service deciding with `gate`.
    pub fn new(gate: Arc<Gate>) -> Service {
        Service {
            gate,
            changes: Pacing::new(CHANGES_PER_SECOND, CHANGE_BURST),
        }
    }

    async fn store_setting(
        &self,
        peer: &Peer,
        client: &VerifiedClient,
        key: &str,
        value: Zeroizing<String>,
    ) -> Result<Stored, Error> {
        if key != PASSPHRASE_KEY {
            return Err(Error::UnknownKey(key.to_string()));
        }
        // The helper's own rules: a passphrase refused here is refused there too.
        trust::passphrase::validate_new(&value).map_err(|e| Error::InvalidValue {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        // Clearing what is clear changes nothing: no write, no audit line.
        if value.is_empty() && self.gate.settings().load()?.passphrase()?.is_none() {
            return Ok(Stored::Unchanged);
        }
        self.changes
            .wait_turn(peer, crate::gate::MOST_PACED_WAIT)
            .await
            .map_err(|retry_after| Error::Paced {
                what: "passphrase changes",
                retry_after,
            })?;
        let hash = if value.is_empty() {
            None
        } else {
            Some(
                self.gate
                    .hashes()
                    .run(move || PassphraseHash::new(&value))
                    .await?
                    .map_err(Error::Storage)?,
            )
        };
        // Admitted before the pacing wait and the hash, which can take half a minute for a
        // client with many changes queued: a client removed meanwhile changes nothing, or it
        // could set a passphrase after an administrator removed it and changed the passphrase.
        // Asked under the settings file's lock, so that a removal acknowledged before the
        // administrator's own change is seen here if this change would come after it.
        let settings = self.gate.settings().clone();
        let store = self.gate.store().clone();
        let fingerprint = client.fingerprint();
        let cleared = hash.is_none();
        let changed = tokio::task::spawn_blocking(move || {
            settings.update_if(
                || store.is_trusted(&fingerprint),
                |ini| ini.set_passphrase(hash.as_ref()),
            )
        })
        .await??;
        if changed.is_none() {
            return Err(Error::NotAuthenticated);
        }
        trust::audit::AuditEvent::PassphraseChanged {
            cleared,
            by: crate::audit::who(peer),
            via: trust::audit::Via::Daemon,
        }
        .emit();
        Ok(Stored::Changed)
    }

    fn read_setting(&self, key: &str) -> Result<String, Error> {
        if key != PASSPHRASE_KEY {
            return Err(Error::UnknownKey(key.to_string()));
        }
        // Whether one is set, never the hash.
        Ok(self
            .gate
            .settings()
            .load()?
            .passphrase()?
            .is_some()
            .to_string())
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
        self.gate.ping(&Peer::of(&request)).await?;
        Ok(Response::new(PingReply {}))
    }

    type authenticateStream = ReplyStream<AuthenticateReply>;
    async fn authenticate(
        &self,
        request: Request<Streaming<AuthenticateRequest>>,
    ) -> Result<Response<Self::authenticateStream>, Status> {
        let (peer, mut message) = first(request).await?;
        // A passphrase or an enrollment token.
        let secret = Zeroizing::new(std::mem::take(&mut message.passphrase));
        // Stock clients show the log line too, which is why it is a sentence.
        let log_line =
            match self.gate.authenticate(&peer, secret).await? {
                Authenticated::Trusted(name) => trusted_as(name),
                Authenticated::TokenNotNeeded(name) => trusted_as(name)
                    + "The enrollment token was not used: this client did not need it, and it can \
                   still enroll another.\n",
            };
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
        let client = self.gate.admit(&peer).await?;
        let reply_message = match self
            .store_setting(&peer, &client, &message.key, value)
            .await?
        {
            Stored::Changed => String::new(),
            Stored::Unchanged => NOTHING_TO_CLEAR.to_string(),
        };
        Ok(reply(SetReply {
            reply_message,
            ..SetReply::default()
        }))
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
