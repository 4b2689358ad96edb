//! The daemon's side of the transport.
//!
//! One task accepts; every accepted socket gets its own task for the TLS handshake, bounded by a
//! timeout, so a client that stalls its handshake (or sends garbage) costs one small task and
//! blocks nobody. Finished connections are handed to tonic through [`incoming`], each carrying a
//! [`Peer`] that handlers read from the request extensions.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use trust::VerifiedClient;

/// The credentials the kernel reports for the other end of a Unix socket (SO_PEERCRED), taken
/// when the connection was accepted. Never re-parsed from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id at connect time.
    pub pid: Option<i32>,
}

/// Which kind of listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The local Unix socket.
    Unix,
    /// TCP, from this address.
    Tcp(SocketAddr),
}

/// Everything the daemon knows about the other end of a connection. Available to handlers as a
/// request extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Unix socket or TCP.
    pub transport: Transport,
    /// Kernel-reported credentials (Unix sockets only).
    pub credentials: Option<PeerCredentials>,
    /// The client certificate, if one was presented (its handshake signature is verified).
    pub client: Option<VerifiedClient>,
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
    /// Handshakes allowed in progress at once; connections beyond are closed at once, so a flood
    /// cannot grow memory without bound (OpenSSH's MaxStartups, without the randomness).
    pub max_pending_handshakes: usize,
    /// Connections (in their handshake or established) one local user may hold at once, by the
    /// uid of SO_PEERCRED; root is not limited. Beyond it that user's new connections are closed
    /// at once, so one user cannot take every handshake slot or file descriptor from the others.
    pub max_connections_per_user: usize,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        IncomingOptions {
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 512,
            max_connections_per_user: 64,
        }
    }
}

/// Open connections per local user.
#[derive(Debug, Default, Clone)]
struct PerUser(Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>);

impl PerUser {
    /// A slot for one more connection of `uid`, unless it holds `max` already.
    fn claim(&self, uid: u32, max: usize) -> Option<UserSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(uid).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            uid,
            users: self.clone(),
        })
    }
}

/// One connection of a user, given back on drop.
#[derive(Debug)]
struct UserSlot {
    uid: u32,
    users: PerUser,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut open = self.users.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// A warning logged at most once a second, with the number of occurrences it stands for: a
/// flood of refused connections must not become a flood of log lines.
#[derive(Debug, Default)]
struct Throttled(std::sync::Mutex<(Option<std::time::Instant>, u64)>);

impl Throttled {
    fn warn(&self, uid: Option<u32>, message: &'static str) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        if state
            .0
            .is_none_or(|last| last.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(uid, occurrences = state.1, "{message}");
            *state = (Some(std::time::Instant::now()), 0);
        }
    }
}

/// Counts connections from accept (handshake included) to close, for the daemon's idle logic.
#[derive(Debug, Clone)]
pub struct Activity {
    open: Arc<watch::Sender<usize>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: Arc::new(watch::channel(0).0),
        }
    }
}

impl Activity {
    /// Connections accepted and not yet closed.
    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves once no connection has been open for `idle` without interruption.
    pub async fn idle_for(&self, idle: Duration) {
        let mut rx = self.open.subscribe();
        loop {
            let _ = rx.wait_for(|open| *open == 0).await;
            match tokio::time::timeout(idle, rx.changed()).await {
                Err(_) if *rx.borrow() == 0 => return,
                _ => continue,
            }
        }
    }

    /// Resolves when no connection is open.
    pub async fn drained(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open == 0).await;
    }

    fn guard(&self) -> ActivityGuard {
        self.open.send_modify(|open| *open += 1);
        ActivityGuard(self.clone())
    }
}

#[derive(Debug)]
struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|open| *open -= 1);
    }
}

/// A TLS connection with its [`Peer`], as tonic receives it.
#[derive(Debug)]
pub struct Connection {
    io: Io,
    peer: Peer,
    _guard: ActivityGuard,
    _slot: Option<UserSlot>,
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
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
    let pending = Arc::new(tokio::sync::Semaphore::new(options.max_pending_handshakes));
    let per_user = PerUser::default();
    let (too_many_handshakes, too_many_for_user) = (Throttled::default(), Throttled::default());
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
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match &raw {
            Raw::Unix(_, Some(c)) if c.uid != 0 => {
                match per_user.claim(c.uid, options.max_connections_per_user) {
                    Some(slot) => Some(slot),
                    None => {
                        too_many_for_user.warn(
                            Some(c.uid),
                            "a user holds too many connections; closing its new ones",
                        );
                        continue;
                    }
                }
            }
            _ => None,
        };
        let guard = activity.guard();
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            too_many_handshakes.warn(
                None,
                "too many TLS handshakes in progress; closing new connections",
            );
            continue;
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let timeout = options.handshake_timeout;
        tokio::spawn(async move {
            let result =
                tokio::time::timeout(timeout, handshake(raw, &acceptor, guard, slot)).await;
            drop(permit);
            match result {
                Ok(Ok(conn)) => {
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
    // Keep the stream open until the connections accepted so far are done.
    drop(listener);
    activity.drained().await;
    drop(tx);
}

enum Raw {
    Unix(UnixStream, Option<PeerCredentials>),
    Tcp(TcpStream, SocketAddr),
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
    guard: ActivityGuard,
    slot: Option<UserSlot>,
) -> io::Result<Connection> {
    Ok(match raw {
        Raw::Unix(stream, credentials) => {
            let tls = acceptor.accept(stream).await?;
            let client = VerifiedClient::from_connection(tls.get_ref().1);
            Connection {
                io: Io::Unix(Box::new(tls)),
                peer: Peer {
                    transport: Transport::Unix,
                    credentials,
                    client,
                },
                _guard: guard,
                _slot: slot,
            }
        }
        Raw::Tcp(stream, addr) => {
            let tls = acceptor.accept(stream).await?;
            let client = VerifiedClient::from_connection(tls.get_ref().1);
            Connection {
                io: Io::Tcp(Box::new(tls)),
                peer: Peer {
                    transport: Transport::Tcp(addr),
                    credentials: None,
                    client,
                },
                _guard: guard,
                _slot: slot,
            }
        }
    })
}
