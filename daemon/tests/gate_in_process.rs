//! The gate in-process, without root: the daemon's real services, TLS and transport on a Unix
//! socket and a TCP port in a temporary directory, with the two seams replaced: who is an
//! administrator ([`AdminDirectory`]: a set of uids the test chooses) and the socket file's
//! access ([`SocketAccess`]: recorded, not applied). Every peer is this process's own user, so
//! being an administrator is what the test says it is.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use multipassd::error::Error;
use multipassd::gate::{AdminDirectory, Gate, Parts, SocketAccess};
use multipassd::management::Management;
use multipassd::service::Service;
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::rpc_server::RpcServer;
use rpc::proto::{AuthenticateRequest, ListRequest, PingRequest, SetRequest};
use rpc::server::{incoming, Activity, IncomingOptions, Listener};
use rpc::trust_proto::trust_client::TrustClient;
use rpc::trust_proto::trust_server::TrustServer;
use rpc::trust_proto::{CreateTokenRequest, ListTokensRequest, RemoveClientRequest};
use rpc::Address;
use rustls::client::{Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};
use tls::{ClientIdentity, ServerCertResolver, ServerPki};
use tonic::transport::Channel;
use tonic::Code;
use trust::access::Access;
use trust::fsutil::{self, FileMode};
use trust::{DataDir, PassphraseHash, TrustStore};

/// This process's uid: the uid of every peer.
fn me() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[derive(Debug, Default)]
struct Admins(Mutex<HashSet<u32>>);

impl AdminDirectory for Admins {
    fn is_admin(&self, uid: u32) -> bool {
        self.0.lock().unwrap().contains(&uid)
    }

    fn group_name(&self) -> Option<String> {
        Some("sudo".into())
    }
}

/// A socket file's access, as the gate set it, and how many times it was set; while `refusing`,
/// a setting changes nothing (as when the helper is busy or cannot be reached). A certificate
/// put in the third field is appended to the store (the path with it) by the next setting,
/// which also opens the socket: the helper trusting a client between the gate's read of the
/// store and its setting (`Landing::Before`), or right after its setting (`Landing::After`).
#[derive(Debug)]
struct Socket(
    Mutex<(Access, usize)>,
    std::sync::atomic::AtomicBool,
    Mutex<Option<(PathBuf, String, Landing)>>,
);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Landing {
    Before,
    After,
}

impl Socket {
    /// The helper's trust of `pem` into `store`, and its opening of the socket.
    fn helper_trusts(&self, store: &Path, pem: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(store)
            .unwrap();
        file.write_all(pem.as_bytes()).unwrap();
        self.0.lock().unwrap().0 = Access::Open;
    }
}

#[tonic::async_trait]
impl SocketAccess for Socket {
    fn current(&self) -> Option<Access> {
        Some(self.0.lock().unwrap().0)
    }

    async fn set(&self, access: Access) {
        let landing = self.2.lock().unwrap().take();
        if let Some((store, pem, Landing::Before)) = &landing {
            self.helper_trusts(store, pem);
        }
        {
            let mut state = self.0.lock().unwrap();
            if self.1.load(std::sync::atomic::Ordering::SeqCst) {
                state.1 += 1;
            } else {
                *state = (access, state.1 + 1);
            }
        }
        if let Some((store, pem, Landing::After)) = &landing {
            self.helper_trusts(store, pem);
        }
    }
}

/// How long the gate waits before it tries again to set a socket's access it could not set.
const SOCKET_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

struct Daemon {
    dir: tempfile::TempDir,
    data: DataDir,
    gate: Arc<Gate>,
    admins: Arc<Admins>,
    socket: Arc<Socket>,
    unix: PathBuf,
    tcp: SocketAddr,
}

impl Daemon {
    /// A daemon whose administrators are `admins`, with an empty store.
    async fn start(admins: &[u32]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("data"));
        fsutil::ensure_dir(data.root(), 0o711).unwrap();
        fsutil::ensure_dir(&data.trust_store_dir(), 0o700).unwrap();
        let pki = ServerPki::load_or_create(&data, Default::default()).unwrap();
        let tls = tls::server_config(ServerCertResolver::new(&pki).unwrap()).unwrap();
        let store = Arc::new(TrustStore::new(data.trust_store(), FileMode::PRIVATE));
        let admin_set = Arc::new(Admins(Mutex::new(admins.iter().copied().collect())));
        let socket = Arc::new(Socket(
            Mutex::new((Access::Restricted, 0)),
            Default::default(),
            Default::default(),
        ));
        let gate = Arc::new(Gate::new(Parts {
            socket_retry: SOCKET_RETRY,
            ..Parts::in_dir(store, &data, admin_set.clone(), socket.clone())
        }));
        let unix = dir.path().join("multipass_socket");
        let unix_listener = tokio::net::UnixListener::bind(&unix).unwrap();
        let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = tcp_listener.local_addr().unwrap();
        for listener in [Listener::Unix(unix_listener), Listener::Tcp(tcp_listener)] {
            let connections = incoming(
                listener,
                tls.clone(),
                IncomingOptions::default(),
                Activity::default(),
                std::future::pending(),
            );
            let management = Management::new(
                gate.clone(),
                gate.tokens().clone(),
                Arc::new(trust::seen::LastSeen::new(
                    data.last_seen(),
                    FileMode::PRIVATE,
                )),
            );
            let server = multipassd::server::tonic_server()
                .add_service(RpcServer::new(Service::new(gate.clone())))
                .add_service(TrustServer::new(management))
                .serve_with_incoming(connections);
            tokio::spawn(server);
        }
        Daemon {
            dir,
            data,
            gate,
            admins: admin_set,
            socket,
            unix,
            tcp,
        }
    }

    /// A new client identity (its own certificate and key).
    fn identity(&self, name: &str) -> ClientIdentity {
        let dir = self.dir.path().join("clients").join(name);
        ClientIdentity::load_or_create(&dir).unwrap()
    }

    /// The certificate of [`Daemon::identity`] `name`, PEM, as a hand edit would append it.
    fn certificate_pem(&self, name: &str) -> String {
        let dir = self.dir.path().join("clients").join(name);
        std::fs::read_to_string(dir.join(trust::paths::CLIENT_CERT_FILE)).unwrap()
    }

    /// `identity`'s client configuration, as the CLI builds it.
    fn client_config(&self, identity: &ClientIdentity) -> Arc<rustls::ClientConfig> {
        let root = std::fs::read(self.data.root_cert()).unwrap();
        tls::client_config(&root, identity).unwrap()
    }

    async fn channel(&self, identity: &ClientIdentity, over_tcp: bool) -> Channel {
        self.channel_with(self.client_config(identity), over_tcp)
            .await
    }

    async fn channel_with(&self, tls: Arc<rustls::ClientConfig>, over_tcp: bool) -> Channel {
        let address = if over_tcp {
            Address::Tcp(self.tcp.to_string())
        } else {
            Address::Unix(self.unix.clone())
        };
        rpc::client::dial(&address)
            .await
            .unwrap()
            .handshake(tls)
            .await
            .unwrap()
    }

    async fn rpc(&self, identity: &ClientIdentity) -> RpcClient<Channel> {
        RpcClient::new(self.channel(identity, false).await)
    }

    async fn rpc_tcp(&self, identity: &ClientIdentity) -> RpcClient<Channel> {
        RpcClient::new(self.channel(identity, true).await)
    }

    async fn trust(&self, identity: &ClientIdentity) -> TrustClient<Channel> {
        TrustClient::new(self.channel(identity, false).await)
    }

    /// `by` removes `client` from the trust store (it must be allowed to).
    async fn remove(
        &self,
        by: &ClientIdentity,
        client: &ClientIdentity,
    ) -> rpc::trust_proto::RemoveClientReply {
        self.trust(by)
            .await
            .remove_client(RemoveClientRequest {
                id: client.fingerprint().to_hex(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    fn trusted(&self) -> usize {
        self.gate.store().current().unwrap().len()
    }

    fn is_trusted(&self, identity: &ClientIdentity) -> bool {
        self.gate
            .store()
            .is_trusted(&identity.fingerprint())
            .unwrap()
    }

    fn set_passphrase(&self, passphrase: &str) {
        let hash = PassphraseHash::new(passphrase).unwrap();
        self.gate
            .settings()
            .update(|ini| ini.set_passphrase(Some(&hash)))
            .unwrap();
    }

    /// The socket's access and how many times the gate set it.
    fn socket(&self) -> (Access, usize) {
        *self.socket.0.lock().unwrap()
    }
}

/// Wait until something waits for the lock on `dir` (a `->` line of /proc/locks on its inode):
/// the request under test, admitted, has reached the file that the test holds the lock of.
async fn until_the_lock_is_awaited(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(dir).unwrap().ino().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        let awaited = locks.lines().any(|line| {
            line.contains("->")
                && line
                    .split_whitespace()
                    .any(|field| field.contains(':') && field.rsplit(':').next() == Some(&inode))
        });
        if awaited {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing waited for the lock on {} within 30 s:\n{locks}",
            dir.display()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn list(client: &mut RpcClient<Channel>) -> Result<(), tonic::Status> {
    let request = ListRequest::default();
    let mut replies = client.list(tokio_stream::once(request)).await?.into_inner();
    replies.message().await?;
    Ok(())
}

async fn authenticate(
    client: &mut RpcClient<Channel>,
    secret: &str,
) -> Result<String, tonic::Status> {
    let request = AuthenticateRequest {
        passphrase: secret.to_string(),
        ..AuthenticateRequest::default()
    };
    let mut replies = client
        .authenticate(tokio_stream::once(request))
        .await?
        .into_inner();
    Ok(replies.message().await?.unwrap_or_default().log_line)
}

fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, error: Error) {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), error.to_string(), "{status:?}");
}

/// A daemon whose first client is `admin`, trusted.
async fn with_first_client() -> (Daemon, ClientIdentity) {
    let daemon = Daemon::start(&[me()]).await;
    let admin = daemon.identity("admin");
    list(&mut daemon.rpc(&admin).await).await.unwrap();
    assert!(daemon.is_trusted(&admin));
    // Its last-seen time is written off the request path (once a minute at most), under the
    // state directory's lock: done before a test holds that lock and waits for its own request.
    let seen = daemon.data.last_seen();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !seen.exists() {
        assert!(std::time::Instant::now() < deadline, "no last-seen file");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    (daemon, admin)
}

#[tokio::test]
async fn an_unknown_client_is_refused_once_somebody_is_trusted() {
    let (daemon, _) = with_first_client().await;
    let stranger = daemon.identity("stranger");
    let mut client = daemon.rpc(&stranger).await;
    refused(
        list(&mut client).await,
        Code::Unauthenticated,
        Error::Untrusted {
            trusted: 1,
            over_tcp: false,
        },
    );
    refused(
        client.ping(PingRequest {}).await,
        Code::Unauthenticated,
        Error::NotAuthenticated,
    );
    assert_eq!(daemon.trusted(), 1);
}

#[tokio::test]
async fn a_non_administrator_cannot_be_the_first_client() {
    let daemon = Daemon::start(&[]).await;
    let user = daemon.identity("user");
    // Told that it is not an administrator, not that an administrator becomes the first client.
    let status = list(&mut daemon.rpc(&user).await)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .starts_with(&Error::NotAuthenticated.to_string())
            && status
                .message()
                .contains("only an administrator's client becomes the first"),
        "{status:?}"
    );
    assert_eq!(daemon.trusted(), 0);
    assert_eq!(daemon.socket(), (Access::Restricted, 0));
    // Made an administrator, the same user becomes the first client at its next request.
    daemon.admins.0.lock().unwrap().insert(me());
    list(&mut daemon.rpc(&user).await).await.unwrap();
    assert!(daemon.is_trusted(&user));
    assert_eq!(daemon.socket(), (Access::Open, 1));
}

#[tokio::test]
async fn nobody_becomes_the_first_client_over_tcp() {
    let daemon = Daemon::start(&[me()]).await;
    let admin = daemon.identity("admin");
    refused(
        list(&mut daemon.rpc_tcp(&admin).await).await,
        Code::Unauthenticated,
        Error::Untrusted {
            trusted: 0,
            over_tcp: true,
        },
    );
    assert_eq!(daemon.trusted(), 0);
    // Ping never trusts either.
    refused(
        daemon.rpc(&admin).await.ping(PingRequest {}).await,
        Code::Unauthenticated,
        Error::NotAuthenticated,
    );
    assert_eq!(daemon.trusted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_simultaneous_first_clients_one_wins() {
    let daemon = Arc::new(Daemon::start(&[me()]).await);
    let identities: Vec<ClientIdentity> = (0..20)
        .map(|i| daemon.identity(&format!("admin-{i}")))
        .collect();
    let mut clients = Vec::new();
    for identity in &identities {
        clients.push(daemon.rpc(identity).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                list(&mut client).await.is_ok()
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap());
    }
    assert_eq!(admitted, 1);
    assert_eq!(daemon.trusted(), 1);
    assert_eq!(
        identities.iter().filter(|i| daemon.is_trusted(i)).count(),
        1
    );
    assert_eq!(daemon.socket(), (Access::Open, 1));
}

#[tokio::test]
async fn a_removed_client_is_refused_from_its_next_request_on() {
    let (daemon, admin) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let bob = daemon.identity("bob");
    let mut bob_rpc = daemon.rpc(&bob).await;
    authenticate(&mut bob_rpc, "correct horse").await.unwrap();
    list(&mut bob_rpc).await.unwrap();
    let removed = daemon.remove(&admin, &bob).await;
    assert_eq!(removed.remaining, 1);
    // On the same connection, at once.
    refused(
        list(&mut bob_rpc).await,
        Code::Unauthenticated,
        Error::Untrusted {
            trusted: 1,
            over_tcp: false,
        },
    );
    // The last client gone, the socket is restricted again.
    daemon.remove(&admin, &admin).await;
    assert_eq!(daemon.trusted(), 0);
    assert_eq!(daemon.socket(), (Access::Restricted, 2));
}

async fn set_passphrase(
    client: &mut RpcClient<Channel>,
    passphrase: &str,
) -> Result<(), tonic::Status> {
    let request = SetRequest {
        key: trust::settings::PASSPHRASE_KEY.to_string(),
        val: passphrase.to_string(),
        ..SetRequest::default()
    };
    let mut replies = client.set(tokio_stream::once(request)).await?.into_inner();
    replies.message().await?;
    Ok(())
}

/// A passphrase change admitted before its client was removed, but still waiting for its turn
/// (a peer's changes are paced), changes nothing when the turn comes: otherwise a removed client
/// could set a passphrase after an administrator changed it, and come back in with it.
#[tokio::test]
async fn a_change_queued_by_a_removed_client_is_not_made() {
    let (daemon, admin) = with_first_client().await;
    daemon.set_passphrase("first");
    let bob = daemon.identity("bob");
    // Over TCP the peer is its address, whose changes are paced (five at once, then two a
    // second) whoever runs the test.
    let mut bob_tcp = daemon.rpc_tcp(&bob).await;
    authenticate(&mut bob_tcp, "first").await.unwrap();
    let queued: Vec<_> = (0..9)
        .map(|i| {
            let mut client = bob_tcp.clone();
            tokio::spawn(async move { set_passphrase(&mut client, &format!("bob-{i}")).await })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    daemon.remove(&admin, &bob).await;
    daemon.set_passphrase("rotated");
    let mut refused = 0;
    for change in queued {
        if let Err(status) = change.await.unwrap() {
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
            refused += 1;
        }
    }
    assert!(refused >= 2, "only {refused} changes were still queued");
    let hash = daemon
        .gate
        .settings()
        .load()
        .unwrap()
        .passphrase()
        .unwrap()
        .expect("a passphrase");
    assert!(
        hash.verify("rotated"),
        "a change queued by the removed client replaced the administrator's passphrase"
    );
}

/// The last step of that window: a change past its turn and its hash, waiting for the settings
/// file's lock (held here, as by another writer), whose client is removed meanwhile, is refused
/// once it has the lock: whether its client is trusted is asked under the lock, not before it.
#[tokio::test]
async fn a_change_whose_client_is_removed_while_it_waits_for_the_lock_is_refused() {
    let (daemon, admin) = with_first_client().await;
    daemon.set_passphrase("first");
    let settings = daemon.data.settings();
    let before = std::fs::read(&settings).unwrap();
    let lock = fsutil::LockedFile::lock(&settings, FileMode::PRIVATE).unwrap();
    let mut client = daemon.rpc(&admin).await;
    let change = tokio::spawn(async move { set_passphrase(&mut client, "after").await });
    until_the_lock_is_awaited(daemon.data.root()).await;
    std::fs::write(daemon.data.trust_store(), "").unwrap();
    assert!(!daemon.is_trusted(&admin));
    drop(lock);
    refused(
        change.await.unwrap(),
        Code::Unauthenticated,
        Error::NotAuthenticated,
    );
    assert_eq!(
        std::fs::read(&settings).unwrap(),
        before,
        "the settings file changed"
    );
}

#[tokio::test]
async fn enrolment_by_passphrase_and_by_token_names_the_client() {
    let (daemon, _) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let login = trust::names::default_for_uid(me());

    let by_passphrase = daemon.identity("by-passphrase");
    let line = authenticate(&mut daemon.rpc(&by_passphrase).await, "correct horse")
        .await
        .unwrap();
    // The first client has the login name already: the next one is made unique.
    assert_eq!(line, format!("This client is trusted as '{login}-2'.\n"));
    assert!(daemon.is_trusted(&by_passphrase));

    let (token, _) = daemon
        .gate
        .tokens()
        .create(
            Some("laptop"),
            Duration::hours(1),
            None,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
    let by_token = daemon.identity("by-token");
    let line = authenticate(&mut daemon.rpc(&by_token).await, token.expose())
        .await
        .unwrap();
    assert_eq!(line, "This client is trusted as 'laptop'.\n");
    assert!(daemon.is_trusted(&by_token));

    // A trusted client's authenticate still checks the passphrase.
    refused(
        authenticate(&mut daemon.rpc(&by_passphrase).await, "wrong").await,
        Code::InvalidArgument,
        Error::PassphraseIncorrect,
    );
}

#[tokio::test]
async fn a_token_and_a_login_never_get_the_same_name() {
    let (daemon, admin) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let login = trust::names::default_for_uid(me());
    let mut trust = daemon.trust(&admin).await;
    let create = |name: String| CreateTokenRequest {
        name,
        ..CreateTokenRequest::default()
    };
    // The first client has the login name: a token may not promise it to another client.
    let status = trust
        .create_token(create(login.clone()))
        .await
        .expect_err("the name is taken");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(
        status.message(),
        Error::ClientNameTaken(login.clone()).to_string()
    );
    assert!(
        status.message().contains("choose another name"),
        "{status:?}"
    );
    // A name kept by an active token is skipped by a login enrolled meanwhile.
    let kept = format!("{login}-2");
    let token = trust
        .create_token(create(kept.clone()))
        .await
        .unwrap()
        .into_inner()
        .token;
    let by_passphrase = daemon.identity("by-passphrase");
    let line = authenticate(&mut daemon.rpc(&by_passphrase).await, "correct horse")
        .await
        .unwrap();
    assert_eq!(line, format!("This client is trusted as '{login}-3'.\n"));
    let by_token = daemon.identity("by-token");
    let line = authenticate(&mut daemon.rpc(&by_token).await, &token)
        .await
        .unwrap();
    assert_eq!(line, format!("This client is trusted as '{kept}'.\n"));
    // Used, the token keeps the name no longer; the client has it.
    let status = trust
        .create_token(create(kept))
        .await
        .expect_err("the name is taken");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
}

#[tokio::test]
async fn each_refused_token_state_has_its_answer_and_enrols_nobody() {
    let (daemon, _) = with_first_client().await;
    let tokens = daemon.gate.tokens().clone();
    let now = OffsetDateTime::now_utc();
    let (used, _) = tokens
        .create(Some("used"), Duration::hours(1), None, now)
        .unwrap();
    let (expired, _) = tokens
        .create(
            Some("expired"),
            Duration::minutes(1),
            None,
            now - Duration::hours(1),
        )
        .unwrap();
    let (revoked, _) = tokens
        .create(Some("revoked"), Duration::hours(1), None, now)
        .unwrap();
    tokens.revoke("revoked", now).unwrap();
    let first = daemon.identity("first");
    authenticate(&mut daemon.rpc(&first).await, used.expose())
        .await
        .unwrap();
    let unknown = format!("mpt_{}", "0".repeat(40));
    for (secret, error) in [
        (used.expose().to_string(), trust::tokens::TokenRefusal::Used),
        (
            expired.expose().to_string(),
            trust::tokens::TokenRefusal::Expired,
        ),
        (
            revoked.expose().to_string(),
            trust::tokens::TokenRefusal::Revoked,
        ),
        (unknown, trust::tokens::TokenRefusal::Unknown),
    ] {
        let second = daemon.identity(&format!("second-{error:?}"));
        let status = authenticate(&mut daemon.rpc(&second).await, &secret)
            .await
            .expect_err("refused");
        assert_eq!(status.message(), error.to_string());
        assert!(!daemon.is_trusted(&second));
    }
    assert_eq!(daemon.trusted(), 2);
}

#[tokio::test]
async fn failed_attempts_make_the_peer_wait_even_with_the_right_passphrase() {
    let (daemon, _) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let guesser = daemon.identity("guesser");
    let mut client = daemon.rpc(&guesser).await;
    // The first failures are free; the fourth makes the peer wait.
    for _ in 0..4 {
        refused(
            authenticate(&mut client, "wrong").await,
            Code::InvalidArgument,
            Error::PassphraseIncorrect,
        );
    }
    let status = authenticate(&mut client, "correct horse")
        .await
        .expect_err("must wait");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("Too many failed"),
        "{status:?}"
    );
    assert!(!daemon.is_trusted(&guesser));
}

#[tokio::test]
async fn managing_others_trust_needs_an_administrator_on_the_unix_socket() {
    let (daemon, admin) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let user = daemon.identity("user");
    authenticate(&mut daemon.rpc(&user).await, "correct horse")
        .await
        .unwrap();
    // The administrator's client may.
    daemon
        .trust(&admin)
        .await
        .list_tokens(ListTokensRequest {})
        .await
        .unwrap();
    // The same user, no longer an administrator, may not: neither tokens nor others' entries.
    daemon.admins.0.lock().unwrap().clear();
    let mut trust = daemon.trust(&user).await;
    let status = trust
        .create_token(CreateTokenRequest::default())
        .await
        .expect_err("not an administrator");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = trust
        .remove_client(RemoveClientRequest {
            id: admin.fingerprint().to_hex(),
        })
        .await
        .expect_err("not an administrator");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(daemon.is_trusted(&admin));
    // Its own entry, it may remove.
    trust
        .remove_client(RemoveClientRequest {
            id: user.fingerprint().to_hex(),
        })
        .await
        .unwrap();
    assert!(!daemon.is_trusted(&user));
}

#[tokio::test]
async fn the_socket_follows_a_store_changed_behind_the_daemons_back() {
    let (daemon, admin) = with_first_client().await;
    assert_eq!(daemon.socket(), (Access::Open, 1));
    // Emptied by hand: the next request notices and restricts the socket.
    std::fs::write(daemon.data.trust_store(), "").unwrap();
    let mut client = daemon.rpc(&admin).await;
    // The empty store lets the administrator in again as the first client.
    list(&mut client).await.unwrap();
    assert_eq!(daemon.socket(), (Access::Open, 3));
    assert!(has_socket_file(&daemon.unix));
}

/// The socket's access changed behind the daemon's back (the helper setting it from a store it
/// read before a removal, root by hand) is noticed from its file at the next request and set
/// again: an empty store does not keep an open socket.
#[tokio::test]
async fn the_socket_follows_its_store_whatever_set_it_last() {
    let (daemon, admin) = with_first_client().await;
    daemon.remove(&admin, &admin).await;
    assert_eq!(daemon.socket(), (Access::Restricted, 2));
    // Opened again by someone else.
    daemon.socket.0.lock().unwrap().0 = Access::Open;
    let stranger = daemon.identity("stranger");
    refused(
        daemon.rpc(&stranger).await.ping(PingRequest {}).await,
        Code::Unauthenticated,
        Error::NotAuthenticated,
    );
    assert_eq!(daemon.socket(), (Access::Restricted, 3));
}

/// An administrator's removal of another client, admitted and then waiting for the store's lock
/// (held here, as by another writer), while the administrator's own entry is removed: once it
/// has the lock it removes nobody, since its caller is no longer trusted.
#[tokio::test]
async fn a_removal_whose_caller_is_removed_while_it_waits_for_the_lock_removes_nobody() {
    let (daemon, admin) = with_first_client().await;
    let bob = daemon.identity("bob");
    let bob_pem = daemon.certificate_pem("bob");
    let store = daemon.data.trust_store();
    let mut with_bob = std::fs::read_to_string(&store).unwrap();
    with_bob.push_str(&bob_pem);
    std::fs::write(&store, &with_bob).unwrap();
    assert!(daemon.is_trusted(&bob));
    let lock = fsutil::LockedFile::lock(&store, FileMode::PRIVATE).unwrap();
    let mut trust = daemon.trust(&admin).await;
    let id = bob.fingerprint().to_hex();
    let removal =
        tokio::spawn(async move { trust.remove_client(RemoveClientRequest { id }).await });
    until_the_lock_is_awaited(&daemon.data.trust_store_dir()).await;
    // The administrator removed (by hand here; the lock is ours), bob left as he was.
    std::fs::write(&store, &bob_pem).unwrap();
    drop(lock);
    refused(
        removal.await.unwrap(),
        Code::Unauthenticated,
        Error::NotAuthenticated,
    );
    assert!(daemon.is_trusted(&bob) && !daemon.is_trusted(&admin));
}

/// The same for an administrator's token: created by a request admitted before its client was
/// removed but reaching the token file (its lock held here) after, no token is made.
#[tokio::test]
async fn a_token_whose_caller_is_removed_while_it_waits_for_the_lock_is_not_made() {
    let (daemon, admin) = with_first_client().await;
    let tokens = daemon.data.tokens();
    let lock = fsutil::LockedFile::lock(&tokens, FileMode::PRIVATE).unwrap();
    let mut trust = daemon.trust(&admin).await;
    let creation = tokio::spawn(async move {
        trust
            .create_token(CreateTokenRequest::default())
            .await
            .map(|_| ())
    });
    until_the_lock_is_awaited(daemon.data.root()).await;
    std::fs::write(daemon.data.trust_store(), "").unwrap();
    drop(lock);
    refused(
        creation.await.unwrap(),
        Code::Unauthenticated,
        Error::NotAuthenticated,
    );
    assert!(
        daemon.gate.tokens().list().unwrap().is_empty(),
        "a token was made"
    );
}

/// The helper trusting a certificate (and opening the socket) between the gate's read of an
/// emptied store and its restricting of the socket: the gate reads the store again after the
/// setting and opens the socket again, instead of leaving it restricted with a client trusted,
/// which would lock every non-administrator out until an administrator's request.
#[tokio::test]
async fn a_trust_landing_while_the_socket_is_set_is_followed() {
    let (daemon, admin) = with_first_client().await;
    assert_eq!(daemon.socket(), (Access::Open, 1));
    let other = daemon.identity("other");
    let pem = daemon.certificate_pem("other");
    *daemon.socket.2.lock().unwrap() = Some((daemon.data.trust_store(), pem, Landing::Before));
    daemon.remove(&admin, &admin).await;
    assert!(daemon.is_trusted(&other) && !daemon.is_trusted(&admin));
    assert_eq!(
        daemon.socket(),
        (Access::Open, 3),
        "restricted, then opened again once the store was read again"
    );
}

/// The helper's trust landing right after the gate restricted the socket: the gate finds the
/// socket open, which is what the store now calls for, and takes that for no failure of its
/// own (a failure would put the next settings off for a while): the next removal of the last
/// client restricts the socket at once.
#[tokio::test]
async fn a_socket_set_by_the_helper_as_the_store_says_is_no_failure() {
    let (daemon, admin) = with_first_client().await;
    let other = daemon.identity("other");
    let pem = daemon.certificate_pem("other");
    *daemon.socket.2.lock().unwrap() = Some((daemon.data.trust_store(), pem, Landing::After));
    daemon.remove(&admin, &admin).await;
    assert!(daemon.is_trusted(&other));
    assert_eq!(
        daemon.socket(),
        (Access::Open, 2),
        "restricted, then opened by the helper"
    );
    assert!(
        !daemon.gate.socket_restricted(),
        "the gate knows the socket is open"
    );
    std::fs::write(daemon.data.trust_store(), "").unwrap();
    daemon.gate.sync_socket().await;
    assert_eq!(
        daemon.socket(),
        (Access::Restricted, 3),
        "the emptied store's sync was not put off"
    );
}

/// When the socket's access cannot be set (the helper busy, say), it is tried again at a later
/// request, once a wait has passed that doubles with each failure; not at every request.
#[tokio::test]
async fn a_socket_access_not_set_is_tried_again_later() {
    let daemon = Daemon::start(&[me()]).await;
    daemon
        .socket
        .1
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let admin = daemon.identity("admin");
    let mut client = daemon.rpc(&admin).await;
    list(&mut client).await.unwrap();
    assert!(daemon.is_trusted(&admin));
    assert_eq!(
        daemon.socket(),
        (Access::Restricted, 1),
        "tried once, not set"
    );
    for _ in 0..5 {
        list(&mut client).await.unwrap();
    }
    assert_eq!(
        daemon.socket(),
        (Access::Restricted, 1),
        "not at every request"
    );
    tokio::time::sleep(SOCKET_RETRY).await;
    list(&mut client).await.unwrap();
    assert_eq!(
        daemon.socket(),
        (Access::Restricted, 2),
        "tried again after the wait"
    );
    // The wait doubled.
    tokio::time::sleep(SOCKET_RETRY).await;
    list(&mut client).await.unwrap();
    assert_eq!(daemon.socket(), (Access::Restricted, 2), "the wait doubles");
    // Once the helper answers again, the next try sets it, and then nothing more is tried.
    daemon
        .socket
        .1
        .store(false, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(SOCKET_RETRY).await;
    list(&mut client).await.unwrap();
    assert_eq!(daemon.socket(), (Access::Open, 3));
    list(&mut client).await.unwrap();
    assert_eq!(daemon.socket(), (Access::Open, 3));
}

fn has_socket_file(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).unwrap().file_type().is_socket()
}

/// A client session store that counts the session tickets given to it, around rustls's own.
#[derive(Debug)]
struct CountedSessions {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl rustls::client::ClientSessionStore for CountedSessions {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

impl Daemon {
    /// `identity`'s client configuration, resuming sessions from `sessions` when it can, as a
    /// long-lived gRPC client would (ours does not).
    fn resuming_config(
        &self,
        identity: &ClientIdentity,
        sessions: &Arc<CountedSessions>,
    ) -> Arc<rustls::ClientConfig> {
        let mut config = (*self.client_config(identity)).clone();
        config.resumption = rustls::client::Resumption::store(sessions.clone());
        Arc::new(config)
    }
}

fn session_store() -> Arc<CountedSessions> {
    Arc::new(CountedSessions {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        tickets: Default::default(),
    })
}

/// The daemon gives no session tickets, so no connection is resumed: each one is a full handshake
/// in which the client proves the key of the certificate it presents, and a client that would
/// resume is identified afresh. Shown: a client that keeps sessions is given no ticket over
/// several connections; a second client using the first one's session store is identified by
/// its own certificate (refused, as it is not trusted), and so is the first client once
/// removed, reconnecting with its store.
#[tokio::test]
async fn no_session_is_resumed_so_every_connection_identifies_its_client() {
    let (daemon, admin) = with_first_client().await;
    let sessions = session_store();
    let admin_tls = daemon.resuming_config(&admin, &sessions);
    for _ in 0..3 {
        let mut client = RpcClient::new(daemon.channel_with(admin_tls.clone(), false).await);
        list(&mut client).await.unwrap();
        client.ping(PingRequest {}).await.unwrap();
    }
    for _ in 0..2 {
        let mut client = RpcClient::new(daemon.channel_with(admin_tls.clone(), true).await);
        list(&mut client).await.unwrap();
    }
    assert_eq!(
        sessions.tickets.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the daemon gave a session ticket"
    );

    // Another client with the first one's sessions is still itself.
    let stranger = daemon.identity("stranger");
    let mut client = RpcClient::new(
        daemon
            .channel_with(daemon.resuming_config(&stranger, &sessions), false)
            .await,
    );
    refused(
        list(&mut client).await,
        Code::Unauthenticated,
        Error::Untrusted {
            trusted: 1,
            over_tcp: false,
        },
    );

    // The first client, removed, reconnecting with its sessions: refused.
    daemon.set_passphrase("correct horse");
    let bob = daemon.identity("bob");
    let bob_tls = daemon.resuming_config(&bob, &sessions);
    let mut bob_rpc = RpcClient::new(daemon.channel_with(bob_tls.clone(), false).await);
    authenticate(&mut bob_rpc, "correct horse").await.unwrap();
    list(&mut bob_rpc).await.unwrap();
    drop(bob_rpc);
    daemon.remove(&admin, &bob).await;
    let mut bob_rpc = RpcClient::new(daemon.channel_with(bob_tls, false).await);
    refused(
        list(&mut bob_rpc).await,
        Code::Unauthenticated,
        Error::Untrusted {
            trusted: 1,
            over_tcp: false,
        },
    );
    assert_eq!(
        sessions.tickets.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// A daemon whose first client is an administrator's, with `n` more clients trusted over TCP by
/// the passphrase (all of one peer, loopback).
async fn trusted_over_tcp(n: usize) -> (Daemon, Vec<ClientIdentity>) {
    let (daemon, _) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let users: Vec<ClientIdentity> = (0..n).map(|i| daemon.identity(&format!("u{i}"))).collect();
    for user in &users {
        authenticate(&mut daemon.rpc_tcp(user).await, "correct horse")
            .await
            .unwrap();
    }
    (daemon, users)
}

/// Over TCP, where the peer (loopback) is paced: root's requests on the Unix socket never are.
async fn trust_tcp(daemon: &Daemon, identity: &ClientIdentity) -> TrustClient<Channel> {
    TrustClient::new(daemon.channel(identity, true).await)
}

/// How long `n` calls of `call`, one after the other, took.
async fn timed<F: std::future::Future<Output = ()>>(
    n: usize,
    mut call: impl FnMut() -> F,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    for _ in 0..n {
        call().await;
    }
    start.elapsed()
}

#[tokio::test]
async fn refusals_are_paced_per_peer() {
    use multipassd::gate::{REFUSALS_PER_SECOND, REFUSAL_BURST};
    let (daemon, _) = with_first_client().await;
    let stranger = daemon.identity("stranger");
    let client = daemon.rpc_tcp(&stranger).await;
    let refuse = || {
        let mut client = client.clone();
        async move {
            let status = list(&mut client).await.expect_err("refused");
            assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        }
    };
    // The burst, then more at the pace: the last comes at least their intervals after the first.
    let extra = 40;
    let took = timed(REFUSAL_BURST as usize + extra, refuse).await;
    let least = std::time::Duration::from_secs(1) * extra as u32 / REFUSALS_PER_SECOND;
    eprintln!(
        "figure: {} refusals of one peer in {took:?}",
        REFUSAL_BURST as usize + extra
    );
    assert!(took >= least, "{extra} refusals past the burst in {took:?}");
}

#[tokio::test]
async fn right_passphrases_are_paced_per_peer() {
    use multipassd::gate::{RIGHT_PASSPHRASES_PER_SECOND, RIGHT_PASSPHRASE_BURST};
    let (daemon, _) = with_first_client().await;
    daemon.set_passphrase("correct horse");
    let client = daemon.rpc_tcp(&daemon.identity("again")).await;
    let right = || {
        let mut client = client.clone();
        async move {
            authenticate(&mut client, "correct horse").await.unwrap();
        }
    };
    let took = timed(RIGHT_PASSPHRASE_BURST as usize + 3, right).await;
    let least = std::time::Duration::from_secs(3) / RIGHT_PASSPHRASES_PER_SECOND;
    eprintln!("figure: 13 right passphrases of one peer in {took:?}");
    assert!(
        took >= least,
        "3 right passphrases past the burst in {took:?}"
    );
}

#[tokio::test]
async fn lists_and_own_removals_of_a_non_administrator_are_paced() {
    let (daemon, users) = trusted_over_tcp(6).await;
    // 16 lists at once, then 4 a second.
    let mut lister = trust_tcp(&daemon, &users[0]).await;
    let took = timed(16 + 4, || {
        let mut lister = lister.clone();
        async move {
            let mut pages = lister
                .list_clients(rpc::trust_proto::ListClientsRequest::default())
                .await
                .unwrap()
                .into_inner();
            while pages.message().await.unwrap().is_some() {}
        }
    })
    .await;
    eprintln!("figure: 20 lists of one peer in {took:?}");
    assert!(
        took >= std::time::Duration::from_millis(900),
        "20 lists in {took:?}"
    );
    let _ = &mut lister;
    // Five removals of one's own client at once, then one every 5 s.
    let start = std::time::Instant::now();
    for user in &users {
        let reply = trust_tcp(&daemon, user)
            .await
            .remove_client(RemoveClientRequest {
                id: user.fingerprint().to_hex(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.removed.is_some());
    }
    let took = start.elapsed();
    eprintln!("figure: 6 removals of their own clients by one peer in {took:?}");
    assert!(
        took >= std::time::Duration::from_millis(4500),
        "6 removals in {took:?}"
    );
}

/// A turn further off than `MOST_PACED_WAIT` is not waited for: answered at once, with when to
/// try again, instead of taking effect after its client gave up.
#[tokio::test]
async fn a_turn_too_far_off_is_answered_at_once() {
    let (daemon, users) = trusted_over_tcp(8).await;
    // Five at once, the sixth in 5 s, the seventh in 10 s; the eighth's turn would be 15 s off.
    let start = std::time::Instant::now();
    let mut removals = Vec::new();
    for user in &users {
        let mut trust = trust_tcp(&daemon, user).await;
        let id = user.fingerprint().to_hex();
        removals.push(tokio::spawn(async move {
            let answer = trust
                .remove_client(RemoveClientRequest { id })
                .await
                .map(|_| ());
            (answer, start.elapsed())
        }));
    }
    let mut refused = Vec::new();
    for removal in removals {
        let (answer, after) = removal.await.unwrap();
        if let Err(status) = answer {
            refused.push((status, after));
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    let (status, after) = &refused[0];
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("Too many removals from this user (or address). Please try again in "),
        "{status:?}"
    );
    assert!(
        *after < std::time::Duration::from_secs(2),
        "answered after {after:?}"
    );
    assert_eq!(daemon.trusted(), 2, "the admin and the one refused");
}
