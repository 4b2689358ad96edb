//! Start-up and serving, in the order privileges require:
//! 1. [`listen`] (still privileged): take the socket from systemd, or bind it with its policy's
//!    owner and mode;
//! 2. `privileges::drop_all` (in `main`, before any thread exists);
//! 3. [`serve`] (unprivileged, async): state directory, certificates, tonic, then the trust
//!    store (a large one once the first connection has been served, on a thread of its own) and
//!    READY=1, until a signal or the idle timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use libsystemd::daemon::NotifyState;
use rpc::proto::rpc_server::RpcServer;
use rpc::server::{incoming, Activity, IncomingOptions, Listener, RequestLimitLayer};
use rpc::trust_proto::trust_server::TrustServer;
use rpc::Address;
use tls::{ServerCertResolver, ServerPki, ServerPkiOptions};
use tower::layer::util::{Identity, Stack};
use trust::fsutil::{self, FileMode};
use trust::seen::LastSeen;
use trust::settings::SettingsFile;
use trust::tokens::TokenStore;
use trust::{DataDir, TrustStore};

use crate::activation;
use crate::args::Args;
use crate::descriptors;
use crate::gate::{Gate, Parts, PARALLEL_HASHES, QUEUED_HASHES, SOCKET_RETRY};
use crate::limits::{FailureLimiter, HashPool, LimiterConfig};
use crate::management::Management;
use crate::renewal;
use crate::service::Service;
use crate::socket::{self, Access, SocketPolicy};
use trust::access::AdminPolicy;

/// How long a SIGTERM waits for the connections accepted before it to end by themselves: a
/// command's connection takes well under a second; one held open longer is told to go away.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long it then waits for the requests in flight on the connections told to go away (with
/// the grace, within the unit's TimeoutStopSec=).
const SHUTDOWN_LAST: Duration = Duration::from_secs(10);
/// Largest request message accepted. Ours are small (a passphrase is at most 1 KiB); tonic's
/// default of 4 MiB let every stalled stream hold that much (160 streams announcing
/// 4 MiB grew the daemon by 330 MiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection (the CLI uses one).
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
/// HTTP/2 flow-control window of a stream: one largest request with its 5-byte gRPC frame
/// header, so a request never waits for a window update. hyper's default (1 MiB) let every
/// stream hold 1 MiB that its handler had not asked for.
const STREAM_WINDOW: u32 = MAX_REQUEST_BYTES as u32 + 5;
/// Flow-control window of a connection: two largest requests at once; more streams sending at
/// once share it (their handlers read as data arrives, which reopens it).
const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;
/// Requests in flight per peer (a local user but root, a TCP address), over all its
/// connections: as many as the connections it may hold, one each. Each may hold a half-sent
/// request of up to `MAX_REQUEST_BYTES` plus a window, and its headers: this cap, not the
/// number of connections times the number of streams, is what bounds one user's share of the
/// daemon's memory (docs/SECURITY.md).
pub const MAX_REQUESTS_PER_PEER: usize = 64;
/// Largest HTTP/2 header list accepted.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// A request not answered within this is answered `DEADLINE_EXCEEDED`, and a request whose
/// message has not arrived whole within it fails, so that a stream that never sends its request
/// does not hold a task forever (a handler, once its message has come, runs to its end). The
/// slowest legitimate request waits for its turn at the hash pool: seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP/2 and request limits every connection is served with. Public for the benchmark's
/// plaintext floor, which must do the same work minus TLS.
pub fn tonic_server() -> tonic::transport::Server<Stack<RequestLimitLayer, Identity>> {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .timeout(REQUEST_TIMEOUT)
        .layer(RequestLimitLayer::new(
            MAX_REQUESTS_PER_PEER,
            REQUEST_TIMEOUT,
        ))
}

/// A trust store at least this large (about 80 entries) is first read on a thread of its own
/// ([`first_read`]).
const READ_APART_FROM: u64 = 64 * 1024;
/// The longest a large store's first read waits for the connection that started the daemon to
/// be served: a cold `multipass list` takes about 10 ms here (docs/PERFORMANCE.md), and a daemon
/// started with no connection waiting (`systemctl start`) reads its store after this.
const FIRST_READ_WAIT: Duration = Duration::from_millis(100);

/// Exit status after an idle period: not an error. The unit lists it in `SuccessExitStatus=` and
/// `RestartPreventExitStatus=`; systemd keeps the listening socket and starts us again on the next
/// connection. (75 is EX_TEMPFAIL: "come back later".)
pub const IDLE_EXIT_STATUS: u8 = 75;

/// How serving ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// SIGTERM or SIGINT.
    Stopped,
    /// No connection for the idle timeout.
    Idle,
}

/// The listening socket, ready before privileges are dropped.
#[derive(Debug)]
pub struct Listening {
    listener: ListenerSource,
    /// The socket's path, for the socket policy.
    socket_path: Option<PathBuf>,
    /// Whether we created the socket file (and so remove it at exit). A socket systemd passed
    /// belongs to systemd.
    owns_socket_file: bool,
    /// A socket we bound, still under its temporary name.
    unpublished: Option<socket::Bound>,
    /// What `--address` or the inherited socket said, for logs.
    description: String,
    /// The trust store, when it was read to choose the socket's first mode: [`serve`] uses it
    /// (and what it loaded) instead of parsing the file a second time.
    store: Option<Arc<TrustStore>>,
}

#[derive(Debug)]
enum ListenerSource {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener),
}

/// Take the socket passed by systemd (`LISTEN_FDS`), or bind `--address` ourselves.
pub fn listen(args: &Args) -> anyhow::Result<Listening> {
    if let Some(inherited) = activation::inherited_socket(&args.fd_name)? {
        // Served anyway, it would be ignored without a word: a drop-in adding `--address` to
        // the service would seem to work while the daemon kept listening where it did.
        if let Some(address) = &args.address {
            anyhow::bail!(
                "--address {address} was given, but systemd passed a socket to serve (socket \
                 activation): remove --address to serve that socket, or start multipassd \
                 without its socket unit (LISTEN_FDS unset) to listen on {address}"
            );
        }
        let description = match &inherited.path {
            Some(p) => format!("unix:{} (socket activation)", p.display()),
            None => "an unnamed socket (socket activation)".to_string(),
        };
        return Ok(Listening {
            listener: ListenerSource::Unix(inherited.listener),
            socket_path: inherited.path,
            owns_socket_file: false,
            unpublished: None,
            description,
            store: None,
        });
    }
    let address = args.address.clone().unwrap_or_default();
    match &address {
        Address::Unix(path) => {
            // The socket's first mode depends on whether anybody is trusted yet.
            let store = TrustStore::new(
                DataDir::new(&args.data_dir).trust_store(),
                FileMode::PRIVATE,
            );
            let empty = store.current().map(|b| b.is_empty()).unwrap_or(true);
            let admin = AdminPolicy::new(args.admin_group.clone());
            let bound = socket::bind(path, Access::for_store(empty), &admin)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            Ok(Listening {
                listener: ListenerSource::Unix(bound.listener.try_clone()?),
                socket_path: Some(path.clone()),
                owns_socket_file: true,
                unpublished: Some(bound),
                description: address.to_string(),
                store: Some(Arc::new(store)),
            })
        }
        Address::Tcp(hostport) => {
            let listener = std::net::TcpListener::bind(hostport.as_str())
                .with_context(|| format!("cannot listen on {hostport}"))?;
            listener.set_nonblocking(true)?;
            Ok(Listening {
                listener: ListenerSource::Tcp(listener),
                socket_path: None,
                owns_socket_file: false,
                unpublished: None,
                description: address.to_string(),
                store: None,
            })
        }
    }
}

impl Listening {
    /// The trust store in `dir`, and whether it is large enough to be read on a thread of its own
    /// ([`first_read`]); not read yet unless [`listen`] read it. A large store is announced as
    /// read later ([`TrustStore::read_later`]), so that requests meanwhile look for their client's
    /// certificate in the file instead of reading it whole.
    pub fn trust_store(&mut self, dir: &DataDir) -> (Arc<TrustStore>, bool) {
        if let Some(store) = self.store.take() {
            return (store, false);
        }
        let store = Arc::new(TrustStore::new(dir.trust_store(), FileMode::PRIVATE));
        // A small store is read at once where it is needed: a thread would cost more.
        let size = std::fs::metadata(store.path()).map_or(0, |m| m.len());
        let apart = size >= READ_APART_FROM;
        if apart {
            store.read_later();
        }
        (store, apart)
    }

    /// Put a socket we bound at its final path now (before switching to a user that could not
    /// rename it); otherwise [`serve`] does it once ready.
    pub fn publish_now(&mut self) -> anyhow::Result<()> {
        if let Some(bound) = self.unpublished.take() {
            bound
                .publish()
                .context("cannot move the socket into place")?;
        }
        Ok(())
    }
}

/// The store's first whole read, which READY=1 waits for. A large store (`apart`) waits until
/// the connection that started the daemon has been served, or [`FIRST_READ_WAIT`], and is then
/// read on a thread of its own at a lower priority. Until then requests find their client's
/// certificate in the file ([`TrustStore::presence`]), so the first command neither waits for the
/// read nor shares the CPU with it (docs/PERFORMANCE.md: with 1,000 trusted the read is about
/// 4 ms of a fresh process's CPU, and run beside the first command it made it 0.8-0.9 ms
/// slower). What needs the whole store meanwhile reads it there and then, and this read then
/// finds it done. Call after privileges are dropped: the thread keeps whatever its creator had.
///
/// Blocking here holds up no request: `serve` runs on the thread that started the runtime, not
/// on one of its workers.
async fn first_read(
    store: &Arc<TrustStore>,
    apart: bool,
    activity: &Activity,
) -> trust::Result<Arc<trust::Bundle>> {
    if apart {
        let _ = tokio::time::timeout(FIRST_READ_WAIT, activity.served()).await;
        let reading = store.clone();
        let started = std::thread::Builder::new()
            .name("store-read".into())
            .spawn(move || {
                // Behind the requests that come meanwhile (measured when the read still ran
                // beside the first command: the cold start's ratio to a warm command went from
                // 2.21 to 2.13 and from 2.13 to 2.03 at nice 10). A thread's nice value is its
                // own on Linux; raising it needs no privilege.
                // SAFETY: setpriority only reads its integer arguments.
                #[allow(unsafe_code)]
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
                }
                // Errors are reported below: a read that failed leaves nothing cached.
                drop(reading.current())
            });
        match started {
            Ok(thread) => {
                let _ = thread.join();
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot start a thread to read the trust store; reading it here");
            }
        }
    }
    store.current()
}

/// Clear what writes interrupted by a crash left behind (each file's writers hold its
/// directory's lock from creating their temporary file to renaming it, so under that lock no
/// temporary file belongs to a live writer). Each file's own next write clears its own too, so
/// start-up does not wait for this: it runs beside serving.
fn remove_stale_state_temporaries(dir: &DataDir) -> anyhow::Result<()> {
    {
        let _lock = fsutil::DirLock::acquire(&dir.trust_store_dir())?;
        fsutil::remove_stale_temporaries(&dir.trust_store());
    }
    let _lock = fsutil::DirLock::acquire(dir.root())?;
    for file in [dir.settings(), dir.tokens(), dir.last_seen()] {
        fsutil::remove_stale_temporaries(&file);
    }
    Ok(())
}

/// Serve until a signal or the idle timeout.
pub async fn serve(args: Args, mut listening: Listening) -> anyhow::Result<Outcome> {
    let mut signals = ShutdownSignals::install()?;
    let dir = DataDir::new(&args.data_dir);
    fsutil::ensure_dir(dir.root(), 0o711).context("cannot prepare the state directory")?;
    fsutil::ensure_dir(&dir.trust_store_dir(), 0o700)
        .context("cannot prepare the trust store directory")?;
    // A margin as long as the validity would make every certificate due at once: a new one at
    // every handshake and every look at the files (and one as long as the root CA's, a new
    // root CA each time).
    anyhow::ensure!(
        args.server_cert_renew_before < args.server_cert_validity
            && args.server_cert_renew_before
                < tls::pki::ROOT_CA_VALIDITY.whole_seconds().unsigned_abs() / 2,
        "--server-cert-renew-before must be shorter than --server-cert-validity and than half \
         the root CA's validity"
    );
    let pki_options = ServerPkiOptions {
        server_validity: time::Duration::seconds(args.server_cert_validity as i64),
        renew_before: time::Duration::seconds(args.server_cert_renew_before as i64),
    };
    let pki = ServerPki::load_or_create(&dir, pki_options)
        .context("cannot load or create the server certificates")?;
    let (store, read_apart) = listening.trust_store(&dir);
    let certificates = ServerCertResolver::new(&pki)?;
    let tls = tls::server_config(certificates.clone())?;
    renewal::spawn(dir.clone(), pki_options, certificates, &pki);

    let admin = AdminPolicy::new(args.admin_group.clone());

    let listener = match listening.listener {
        ListenerSource::Unix(l) => Listener::Unix(tokio::net::UnixListener::from_std(l)?),
        ListenerSource::Tcp(l) => Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
    };

    let admin_policy = admin.clone();
    let socket_policy = SocketPolicy::new(listening.socket_path.clone(), admin.clone());
    let seen = Arc::new(LastSeen::new(dir.last_seen(), FileMode::PRIVATE));
    let tokens = Arc::new(TokenStore::new(dir.tokens(), FileMode::PRIVATE));
    let gate = Arc::new(Gate::new(Parts {
        store: store.clone(),
        admin: Arc::new(admin),
        socket: Arc::new(socket_policy),
        seen: Some(seen.clone()),
        settings: SettingsFile::new(dir.settings(), FileMode::PRIVATE),
        limiter: FailureLimiter::new(LimiterConfig {
            max_delay: Duration::from_secs(args.auth_max_delay.max(1)),
            ..LimiterConfig::default()
        }),
        hashes: HashPool::new(PARALLEL_HASHES, QUEUED_HASHES),
        tokens: tokens.clone(),
        socket_retry: SOCKET_RETRY,
    }));
    let service = Service::new(gate.clone());
    let management = Management::new(gate.clone(), tokens, seen);

    let wanted = IncomingOptions::default().max_connections;
    let descriptors = descriptors::budget(wanted);
    if descriptors.lowered(wanted) {
        tracing::warn!(
            open_files = descriptors.open_files,
            max_connections = descriptors.connections,
            "the open-file limit leaves room for {} connections from users other than root \
             (instead of {wanted})",
            descriptors.connections,
        );
    }
    let activity = Activity::default();
    let (stop_accepting, accept_stopped) = tokio::sync::watch::channel(false);
    let mut accept_stop = accept_stopped.clone();
    let connections = incoming(
        listener,
        tls,
        IncomingOptions {
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
            idle_timeout: Some(Duration::from_secs(args.connection_idle_timeout.max(1))),
            max_connections: descriptors.connections,
            ..IncomingOptions::default()
        },
        activity.clone(),
        async move {
            let _ = accept_stop.wait_for(|stop| *stop).await;
        },
    );

    // Everything a client needs exists (root CA included): let clients find the socket.
    if let Some(bound) = listening.unpublished.take() {
        bound
            .publish()
            .context("cannot move the socket into place")?;
    }

    // Serve from now on: a connection waiting since socket activation is accepted and answered
    // while the store is still being read. READY=1 (below) still waits for the whole store.
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic_server()
            .layer(crate::first_client::FirstClientLayer(gate.clone()))
            .add_service(RpcServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES))
            .add_service(TrustServer::new(management).max_decoding_message_size(MAX_REQUEST_BYTES))
            .serve_with_incoming_shutdown(connections, async move {
                let _ = shutdown_rx.await;
            }),
    );
    let trusted = first_read(&store, read_apart, &activity)
        .await
        .context("cannot read the trust store")?
        .len();
    // The store may have changed while no daemon ran (by hand, by the helper, a crash): the
    // socket's access follows the store as it is now. Nothing is done when it matches.
    gate.sync_socket().await;

    tracing::info!(
        address = %listening.description,
        data_dir = %args.data_dir.display(),
        trusted_clients = trusted,
        server_cert_expires = %pki.not_after,
        "listening"
    );
    let status = format!(
        // Said as of the start: the status is not updated as clients are trusted or removed
        // (`multipass trust list` says who is trusted now).
        "Serving on {}; {trusted} trusted client{} at start",
        listening.description,
        if trusted == 1 { "" } else { "s" }
    );
    activation::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    activation::spawn_watchdog();
    // Who the administrators are is looked up in the user database, which for a group missing
    // from /etc/group loads nss-systemd and searches its directories (0.5 ms of a fresh process
    // here): said once the connection that started the daemon has been served, not before.
    tokio::spawn({
        let (admin, activity) = (admin_policy.clone(), activity.clone());
        async move {
            let _ = tokio::time::timeout(FIRST_READ_WAIT, activity.served()).await;
            let _ = tokio::task::spawn_blocking(move || admin.announce()).await;
        }
    });
    if let Err(e) = remove_stale_state_temporaries(&dir) {
        tracing::warn!(error = %e, "cannot clear what interrupted writes left behind");
    }

    let idle = async {
        match args.idle_timeout.filter(|secs| *secs > 0) {
            Some(secs) => activity.idle_for(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };

    let outcome = tokio::select! {
        result = &mut server => {
            result.context("the gRPC server stopped")?.context("the gRPC server failed")?;
            Outcome::Stopped
        }
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down");
            activation::notify(&[NotifyState::Stopping, NotifyState::Status("Shutting down".into())]);
            // As for an idle exit: connections accepted so far are served to their end (a
            // command is one connection), and what is still queued on the socket waits for the
            // next start. Telling them to go away at once (HTTP/2 GOAWAY) failed a command whose
            // request crossed it (a package upgrade stops the daemon under its users).
            let _ = stop_accepting.send(true);
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
                let _ = shutdown_tx.send(());
                if tokio::time::timeout(SHUTDOWN_LAST, &mut server).await.is_err() {
                    tracing::warn!(
                        "requests still in flight {:?} after the signal; exiting anyway",
                        SHUTDOWN_GRACE + SHUTDOWN_LAST
                    );
                }
            }
            Outcome::Stopped
        }
        _ = idle => {
            // Stop accepting; the connection stream ends only after every connection accepted
            // before this point has been served and closed, and whatever is still queued on the
            // socket waits for the next activation.
            tracing::info!(idle_timeout = args.idle_timeout, "idle; exiting");
            activation::notify(&[NotifyState::Stopping, NotifyState::Status("Idle; exiting".into())]);
            let _ = stop_accepting.send(true);
            (&mut server)
                .await
                .context("the gRPC server stopped")?
                .context("the gRPC server failed")?;
            Outcome::Idle
        }
    };
    // A hand append into a version of the store that a removal replaced is carried over at the
    // next read; the last chance is now, before the replaced versions are closed.
    store.carry_late_appends();
    if listening.owns_socket_file {
        if let Some(path) = &listening.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(outcome)
}

/// SIGTERM and SIGINT, blocked from the start of `main` (see [`block_shutdown_signals`]) and
/// delivered only once these handlers exist, so a signal during start-up is a clean shutdown.
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = ShutdownSignals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        };
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
            Some(&shutdown_set()),
            None,
        )
        .context("cannot unblock SIGTERM")?;
        Ok(signals)
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

fn shutdown_set() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set
}

/// Hold SIGTERM and SIGINT pending until [`serve`] can handle them. Call first thing in `main`,
/// before any thread exists, so every thread inherits the mask.
pub fn block_shutdown_signals() -> anyhow::Result<()> {
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&shutdown_set()),
        None,
    )
    .context("cannot block SIGTERM")
}
