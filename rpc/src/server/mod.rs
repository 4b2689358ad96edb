//! The daemon's side of the transport.
//!
//! One task accepts; every accepted socket gets its own task for the TLS handshake, bounded by a
//! timeout, so a client that stalls its handshake (or sends garbage) costs one small task and
//! blocks nobody. Finished connections are handed to tonic through [`incoming`], each carrying a
//! [`Peer`] that handlers read from the request extensions.
//!
//! Per peer (a local user by uid, a TCP peer by address; root is not limited) the number of
//! connections is bounded at accept, and the number of requests in flight by
//! [`RequestLimitLayer`]; a connection with no request in flight for the idle limit is closed.
//!
//! Submodules: `peer`, `activity`, `bounds`, `requests`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tls::VerifiedClient;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use trust::collapse::Collapse;

mod activity;
mod bounds;
mod peer;
mod requests;

use activity::ActivityGuard;
pub use activity::{Activity, IdleClock, InFlight};
use bounds::{Handshaking, PeerSlot, PerPeer};
pub use bounds::{Pacing, Place, PlacesPerPeer};
pub use peer::{Peer, PeerCredentials, PeerKey, Transport};
pub use requests::{RequestLimit, RequestLimitLayer, TOO_MANY_REQUESTS};

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listening socket the daemon serves.
#[derive(Debug)]
pub enum Listener {
    /// A Unix stream socket.
    Unix(UnixListener),
    /// A TCP socket.
    Tcp(TcpListener),
}

/// Tuning of [`incoming`].
#[derive(Debug, Clone)]
pub struct IncomingOptions {
    /// A handshake not finished within this is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes allowed in progress at once, root's aside; connections beyond are closed at
    /// once, so a flood cannot grow memory without bound (OpenSSH's MaxStartups, without the
    /// randomness). A handshake takes its place once its client has sent something and its pace
    /// and its peer's share allow it to start, so connections that only wait hold none.
    pub max_pending_handshakes: usize,
    /// Handshakes one peer (as for `max_connections_per_peer`) may have in progress (its client
    /// has spoken) at once; its others wait for one of them to end, within the handshake
    /// timeout. Handshakes that never finish then cost their own peer's, not the other peers',
    /// which a few peers could otherwise keep from starting any by filling
    /// `max_pending_handshakes`.
    pub max_handshakes_per_peer: usize,
    /// Connections (in their handshake or established) one peer may hold at once: a local user
    /// by the uid of SO_PEERCRED (root is not limited), a TCP peer by its address. Beyond it that
    /// peer's new connections are closed at once, so one peer cannot take every handshake slot or
    /// file descriptor from the others.
    pub max_connections_per_peer: usize,
    /// Connections of every limited peer together (everyone but root). Beyond it new ones are
    /// closed at once, so that peers together cannot take the daemon's last file descriptor:
    /// once those are gone the daemon cannot even accept a connection to see who it is from, and
    /// root would be locked out with everyone else. The daemon sizes it below its open-file limit.
    pub max_connections: usize,
    /// An established connection with no request in flight for this long is closed (`None`:
    /// never). HTTP/2 keepalive pings do not count as requests.
    pub idle_timeout: Option<Duration>,
    /// TLS handshakes one peer (as for `max_connections_per_peer`) may start each second, after a
    /// burst of `handshake_burst_per_peer`. Beyond that its handshakes wait their turn, within the
    /// handshake timeout: a handshake is the costly part of a connection (a signature and a key
    /// exchange), and without a pace one user connecting in a loop keeps the daemon's cores busy.
    pub handshakes_per_second_per_peer: u32,
    /// See `handshakes_per_second_per_peer`.
    pub handshake_burst_per_peer: u32,
}

/// [`IncomingOptions::handshake_timeout`] by default (the daemon's `--handshake-timeout`).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// [`IncomingOptions::idle_timeout`] by default (the daemon's `--connection-idle-timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for IncomingOptions {
    fn default() -> Self {
        IncomingOptions {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_pending_handshakes: 512,
            max_handshakes_per_peer: 16,
            max_connections_per_peer: 64,
            max_connections: 1024,
            idle_timeout: Some(IDLE_TIMEOUT),
            handshakes_per_second_per_peer: 100,
            handshake_burst_per_peer: 64,
        }
    }
}

/// Warnings about refused connections or requests, collapsed per peer (`None`: about no peer in
/// particular) to at most one a second carrying the number they stand for: a flood of refusals
/// must not become a flood of log lines.
type Warnings = Collapse<(Option<PeerKey>, &'static str), (Option<PeerKey>, &'static str)>;

fn warnings() -> Warnings {
    Collapse::new(
        Duration::from_secs(1),
        Arc::new(
            |(peer, message): &(Option<PeerKey>, &'static str), occurrences| match peer {
                Some(peer) => tracing::warn!(%peer, occurrences, "{message} ({peer})"),
                None => tracing::warn!(occurrences, "{message}"),
            },
        ),
    )
}

fn warn(warnings: &Warnings, peer: Option<PeerKey>, message: &'static str) {
    warnings.note((peer, message), (peer, message));
}

/// Whether a handshake failed on the client's alert that it does not accept our certificate.
fn refuses_our_certificate(e: &io::Error) -> bool {
    use rustls::AlertDescription as A;
    crate::tls_error(e).is_some_and(|e| {
        matches!(
            e,
            rustls::Error::AlertReceived(
                A::BadCertificate
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::DecryptError
            )
        )
    })
}

/// A TLS connection with its [`Peer`], as tonic receives it.
#[derive(Debug)]
pub struct Connection {
    io: Io,
    peer: Peer,
    idle: Option<IdleLimit>,
    _held: Held,
}

/// What a connection holds from accept to close: its place in the daemon's count of open
/// connections, in its peer's, and among all limited peers' (`max_connections`).
#[derive(Debug)]
struct Held {
    _guard: ActivityGuard,
    _slot: Option<PeerSlot>,
    _place: Option<OwnedSemaphorePermit>,
}

/// Closes a connection that has had no request in flight for `limit`. hyper keeps a read
/// pending on every connection, so the read side is where the timer is polled; a connection
/// past its limit reads as closed by the client, and hyper ends it.
#[derive(Debug)]
struct IdleLimit {
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    expired: bool,
}

impl IdleLimit {
    /// Whether `clock` has been idle for the limit; otherwise the timer is armed to wake `cx`
    /// when it might be.
    fn expired(&mut self, clock: &IdleClock, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        loop {
            let now = Instant::now();
            let armed = self.timer.deadline().into_std();
            let deadline = match clock.idle_since() {
                Some(since) if since + self.limit <= now => {
                    self.expired = true;
                    tracing::debug!(limit = ?self.limit, "closing an idle connection");
                    return true;
                }
                Some(since) => since + self.limit,
                // A request is in flight: look again a whole limit later at the latest (its end
                // wakes the connection anyway: the answer is written).
                None if armed > now => armed,
                None => now + self.limit,
            };
            if armed != deadline {
                self.timer.as_mut().reset(deadline.into());
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }
}

#[derive(Debug)]
enum Io {
    Unix(Box<TlsStream<UnixStream>>),
    Tcp(Box<TlsStream<TcpStream>>),
}

impl Connected for Connection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

macro_rules! delegate {
    ($self:ident, $io:ident => $e:expr) => {
        match &mut $self.get_mut().io {
            Io::Unix(s) => {
                let $io = Pin::new(s.as_mut());
                $e
            }
            Io::Tcp(s) => {
                let $io = Pin::new(s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(idle) = &mut this.idle {
            if idle.expired(&this.peer.clock, cx) {
                // End of stream.
                return Poll::Ready(Ok(()));
            }
        }
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Unix(s) => s.is_write_vectored(),
            Io::Tcp(s) => s.is_write_vectored(),
        }
    }
}

/// Accept on `listener` and yield TLS connections for `tonic::transport::Server::
/// serve_with_incoming`. Accepting stops when `stop` resolves; the returned stream ends once every
/// connection accepted before that has closed, so a client that connected just before the stop
/// is served, not cut off (tonic shuts connections down as soon as its stream ends). Connections
/// still queued in the kernel stay there for whoever listens next.
pub fn incoming(
    listener: Listener,
    tls: Arc<rustls::ServerConfig>,
    options: IncomingOptions,
    activity: Activity,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReceiverStream<io::Result<Connection>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        options,
        activity,
        tx,
        stop,
    ));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: Listener,
    acceptor: TlsAcceptor,
    options: IncomingOptions,
    activity: Activity,
    tx: mpsc::Sender<io::Result<Connection>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let pending = Arc::new(Semaphore::new(options.max_pending_handshakes));
    let limited = Arc::new(Semaphore::new(options.max_connections));
    let pacing = Arc::new(Pacing::new(
        options.handshakes_per_second_per_peer,
        options.handshake_burst_per_peer,
    ));
    let per_peer = PerPeer::default();
    let handshaking = Handshaking::default();
    let warnings = Arc::new(warnings());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = accept(&listener) => accepted,
        };
        let raw = match accepted {
            Ok(raw) => raw,
            Err(e) => {
                // EMFILE and friends: back off rather than spin; the socket stays queued.
                warn(&warnings, None, accept_failure(&e));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let key = raw.limited_key();
        let (slot, place) = match key {
            Some(key) => {
                let Some(slot) = per_peer.claim(key, options.max_connections_per_peer) else {
                    warn(
                        &warnings,
                        Some(key),
                        "a peer holds too many connections; closing its new ones",
                    );
                    continue;
                };
                let Ok(place) = limited.clone().try_acquire_owned() else {
                    warn(
                        &warnings,
                        None,
                        "too many connections open; closing new ones from everyone but root",
                    );
                    continue;
                };
                (Some(slot), Some(place))
            }
            None => (None, None),
        };
        let guard = activity.guard();
        let root = raw.is_root();
        let pacing = pacing.clone();
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let (pending, handshaking, warnings) =
            (pending.clone(), handshaking.clone(), warnings.clone());
        let per_peer_handshakes = options.max_handshakes_per_peer;
        let timeout = options.handshake_timeout;
        let held = Held {
            _guard: guard,
            _slot: slot,
            _place: place,
        };
        let idle_timeout = options.idle_timeout;
        tokio::spawn(async move {
            let paced = async {
                // A handshake is in progress once its client has spoken. Until then the
                // connection takes no place: its client may open others before it speaks on
                // this one (and would wait for itself if this one held a place they need), or
                // never speak, or hang up, which gives the connection's slot back at once.
                if !raw.spoke().await {
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                // Its turn in the peer's pace, booked only now: a connection closed unspoken
                // books nothing, and no turn is booked further off than a handshake may take,
                // so a flood of connections (on TCP, from one address for many users) holds the
                // peer's handshakes back for that long at most once it stops.
                if let Some(key) = key {
                    let now = Instant::now();
                    match pacing.turn_within(key, now, timeout) {
                        Ok(turn) if turn > now => {
                            warn(
                                &warnings,
                                Some(key),
                                "a peer starts handshakes faster than its pace; they wait their turn",
                            );
                            tokio::time::sleep_until(turn.into()).await;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            warn(
                                &warnings,
                                Some(key),
                                "a peer starts handshakes far faster than its pace; closing them",
                            );
                            return Err(io::ErrorKind::ConnectionRefused.into());
                        }
                    }
                }
                let _own = match key {
                    Some(key) => Some(handshaking.turn(key, per_peer_handshakes).await),
                    None => None,
                };
                // Root's handshakes take no place: however the others fill them, root gets in.
                let _place = if root {
                    None
                } else {
                    let Ok(place) = pending.try_acquire_owned() else {
                        warn(
                            &warnings,
                            None,
                            "too many TLS handshakes in progress; closing new connections from \
                             everyone but root",
                        );
                        return Err(io::ErrorKind::ConnectionRefused.into());
                    };
                    Some(place)
                };
                handshake(raw, &acceptor, held, idle_timeout).await
            };
            let result = tokio::time::timeout(timeout, paced).await;
            match result {
                Ok(Ok(conn)) => {
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => {
                    // Said at the default level, collapsed: every client refusing the daemon's
                    // certificate is an outage that the log should show.
                    if refuses_our_certificate(&e) {
                        warn(
                            &warnings,
                            None,
                            "a client refused the daemon's certificate (not valid at its time, or \
                             not signed by the root CA it read)",
                        );
                    }
                    tracing::debug!(error = %e, "TLS handshake failed")
                }
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    // Keep the stream open until the connections accepted so far are done.
    drop(listener);
    activity.drained().await;
    drop(tx);
}

/// Bytes waiting on `fd` (0: its peer closed it), without taking them and without waiting.
fn peek(fd: std::os::fd::RawFd) -> io::Result<usize> {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

/// What the log says when `accept` fails: a fixed text per cause, so that the lines collapse.
fn accept_failure(e: &io::Error) -> &'static str {
    match e.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EMFILE) => "cannot accept connections: the daemon has no file descriptor left",
        Some(Errno::ENFILE) => "cannot accept connections: the system has no file descriptor left",
        Some(Errno::ENOBUFS | Errno::ENOMEM) => "cannot accept connections: out of memory",
        _ => "cannot accept a connection",
    }
}

enum Raw {
    Unix(UnixStream, Option<PeerCredentials>),
    Tcp(TcpStream, SocketAddr),
}

impl Raw {
    /// Waits until the peer has sent something (true), which the handshake then reads, or has
    /// closed or reset its end before that (false). The runtime may call a socket readable when
    /// it is not, so a byte is peeked at to tell.
    async fn spoke(&self) -> bool {
        loop {
            let peeked = match self {
                Raw::Unix(stream, _) => match stream.readable().await {
                    Ok(()) => stream.try_io(Interest::READABLE, || {
                        peek(std::os::fd::AsRawFd::as_raw_fd(stream))
                    }),
                    Err(e) => Err(e),
                },
                Raw::Tcp(stream, _) => match stream.readable().await {
                    Ok(()) => stream.try_io(Interest::READABLE, || {
                        peek(std::os::fd::AsRawFd::as_raw_fd(stream))
                    }),
                    Err(e) => Err(e),
                },
            };
            match peeked {
                Ok(0) => return false,
                Ok(_) => return true,
                // Not readable after all: the runtime has forgotten the readiness; wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return false,
            }
        }
    }

    /// Whether the peer is root on the Unix socket.
    fn is_root(&self) -> bool {
        matches!(self, Raw::Unix(_, Some(credentials)) if credentials.uid == 0)
    }

    fn limited_key(&self) -> Option<PeerKey> {
        let key = match self {
            Raw::Unix(_, credentials) => PeerKey::of(Transport::Unix, credentials.as_ref()),
            Raw::Tcp(_, addr) => PeerKey::of(Transport::Tcp(*addr), None),
        };
        key.filter(|k| *k != PeerKey::Uid(0))
    }
}

async fn accept(listener: &Listener) -> io::Result<Raw> {
    match listener {
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            // Taken now, at accept time: the credentials of the process that connected.
            let credentials = stream.peer_cred().ok().map(|c| PeerCredentials {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            });
            Ok(Raw::Unix(stream, credentials))
        }
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(Raw::Tcp(stream, addr))
        }
    }
}

async fn handshake(
    raw: Raw,
    acceptor: &TlsAcceptor,
    held: Held,
    idle_timeout: Option<Duration>,
) -> io::Result<Connection> {
    let (io, peer) = match raw {
        Raw::Unix(stream, credentials) => {
            let tls = acceptor.accept(stream).await?;
            let client = VerifiedClient::from_connection(tls.get_ref().1);
            let peer = Peer::new(Transport::Unix, credentials, client);
            (Io::Unix(Box::new(tls)), peer)
        }
        Raw::Tcp(stream, addr) => {
            let tls = acceptor.accept(stream).await?;
            let client = VerifiedClient::from_connection(tls.get_ref().1);
            (
                Io::Tcp(Box::new(tls)),
                Peer::new(Transport::Tcp(addr), None, client),
            )
        }
    };
    Ok(Connection {
        io,
        peer,
        idle: idle_timeout.map(|limit| IdleLimit {
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            expired: false,
        }),
        _held: held,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection as the daemon has it (accepted, so registered with the runtime as it is
    /// there) and the client's end.
    async fn accepted(dir: &std::path::Path) -> (Raw, std::os::unix::net::UnixStream) {
        let path = dir.join(format!("sock-{}", next_id()));
        let listener = UnixListener::bind(&path).unwrap();
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (Raw::Unix(ours, None), client)
    }

    fn next_id() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_waits_for_its_client_to_speak_or_hang_up() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, client) = accepted(dir.path()).await;
        let quiet = tokio::time::timeout(Duration::from_millis(200), raw.spoke()).await;
        assert!(quiet.is_err(), "a silent client is waited for");
        drop(client);
        let spoke = tokio::time::timeout(Duration::from_secs(5), raw.spoke()).await;
        assert_eq!(spoke.ok(), Some(false), "a closed client is noticed");

        let (raw, mut client) = accepted(dir.path()).await;
        std::io::Write::write_all(&mut client, b"hello").unwrap();
        let spoke = tokio::time::timeout(Duration::from_secs(5), raw.spoke()).await;
        assert_eq!(
            spoke.ok(),
            Some(true),
            "a client that sent something has spoken"
        );
        let Raw::Unix(ours, _) = raw else {
            unreachable!()
        };
        let mut buf = [0u8; 5];
        ours.try_read(&mut buf).unwrap();
        assert_eq!(&buf, b"hello", "nothing is taken from the client's bytes");
    }
}
