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

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tls::VerifiedClient;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use trust::collapse::Collapse;

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
    /// The connection's requests in flight and since when it has had none.
    pub clock: IdleClock,
    /// [`Peer::key`], found once for the connection: finding a uid's account reads
    /// `/etc/subuid`'s metadata, which every request of the connection would otherwise repeat.
    key: Option<PeerKey>,
}

impl Peer {
    /// The other end of a new connection.
    pub fn new(
        transport: Transport,
        credentials: Option<PeerCredentials>,
        client: Option<VerifiedClient>,
    ) -> Peer {
        Peer {
            key: PeerKey::of(transport, credentials.as_ref()),
            transport,
            credentials,
            client,
            clock: IdleClock::default(),
        }
    }

    /// Whose account this peer's doings go on: its uid on the Unix socket, its address on TCP.
    /// `None` on a Unix socket without kernel credentials.
    pub fn key(&self) -> Option<PeerKey> {
        self.key
    }

    /// The peer of `request`, as [`incoming`] recorded it in the request's extensions. A request
    /// that did not come through it (none does in the daemon) is a Unix peer without credentials
    /// or certificate, which nothing trusts.
    pub fn of<T>(request: &tonic::Request<T>) -> Peer {
        request
            .extensions()
            .get::<Peer>()
            .cloned()
            .unwrap_or_else(|| Peer::new(Transport::Unix, None, None))
    }

    /// The key its connections and requests are limited by: [`Peer::key`], except for root,
    /// who is never limited.
    pub fn limited_key(&self) -> Option<PeerKey> {
        self.key().filter(|k| *k != PeerKey::Uid(0))
    }
}

/// Whose account a connection, a request or a failure goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A local user: the owner of the subordinate uid (`trust::subids`) the peer runs as, if it
    /// runs as one, else the peer's uid.
    Uid(u32),
    /// A TCP peer by its IPv4 address (IPv4-mapped IPv6 addresses as IPv4).
    Ip(IpAddr),
    /// TCP peers of one network, counted as one because one peer can take any address in it:
    /// loopback (127.0.0.0/8, which any local user may connect from) and an IPv6 /64 (what one
    /// host or link is usually given). The address is the network's first.
    Net(IpAddr, u8),
}

impl PeerKey {
    fn of(transport: Transport, credentials: Option<&PeerCredentials>) -> Option<PeerKey> {
        match (transport, credentials) {
            (Transport::Unix, Some(c)) => Some(PeerKey::Uid(trust::subids::account(c.uid))),
            (Transport::Tcp(addr), _) => Some(PeerKey::of_address(addr.ip())),
            (Transport::Unix, None) => None,
        }
    }

    /// The account of a TCP peer at `ip`.
    pub fn of_address(ip: IpAddr) -> PeerKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) if v4.is_loopback() => {
                PeerKey::Net(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 0)), 8)
            }
            IpAddr::V4(v4) => PeerKey::Ip(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !(u128::MAX >> 64);
                PeerKey::Net(IpAddr::V6(network.into()), 64)
            }
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Uid(uid) => write!(f, "uid {uid}"),
            PeerKey::Ip(ip) => write!(f, "address {ip}"),
            PeerKey::Net(ip, prefix) => write!(f, "addresses {ip}/{prefix}"),
        }
    }
}

/// Requests in flight on one connection, and when the last one started or ended: the
/// connection's idle clock. HTTP/2 keepalive pings do not move it (a client answers them while
/// idle); only requests do, through [`RequestLimitLayer`].
#[derive(Debug, Clone)]
pub struct IdleClock(Arc<Mutex<(usize, Instant)>>);

impl Default for IdleClock {
    fn default() -> Self {
        IdleClock(Arc::new(Mutex::new((0, Instant::now()))))
    }
}

impl IdleClock {
    /// A request starts; it ends when the returned guard is dropped.
    pub fn begin(&self) -> InFlight {
        let mut state = lock(&self.0);
        *state = (state.0 + 1, Instant::now());
        InFlight(self.clone())
    }

    /// Since when no request has been in flight; `None` while one is.
    pub fn idle_since(&self) -> Option<Instant> {
        let (in_flight, since) = *lock(&self.0);
        (in_flight == 0).then_some(since)
    }
}

/// One request in flight (see [`IdleClock::begin`]).
#[derive(Debug)]
pub struct InFlight(IdleClock);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0 .0);
        *state = (state.0.saturating_sub(1), Instant::now());
    }
}

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

/// Open connections, or requests in flight, per peer.
#[derive(Debug, Default, Clone)]
struct PerPeer(Arc<Mutex<std::collections::HashMap<PeerKey, usize>>>);

impl PerPeer {
    /// A slot for one more of `key`'s, unless it holds `max` already.
    fn claim(&self, key: PeerKey, max: usize) -> Option<PeerSlot> {
        let mut open = lock(&self.0);
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            key,
            peers: self.clone(),
        })
    }
}

/// Places of one kind of which each peer may hold a bounded number at once, given back when
/// dropped (e.g. the daemon's client lists being sent). Root, limited nowhere, is not limited here
/// either.
#[derive(Debug, Default, Clone)]
pub struct PlacesPerPeer(PerPeer);

impl PlacesPerPeer {
    /// A place for one more of `peer`'s, or `None` if it holds `max` already.
    pub fn claim(&self, peer: &Peer, max: usize) -> Option<Place> {
        match peer.limited_key() {
            Some(key) => self
                .0
                .claim(key, max)
                .map(|slot| Place { _slot: Some(slot) }),
            None => Some(Place { _slot: None }),
        }
    }
}

/// One of [`PlacesPerPeer`]'s places, given back on drop.
#[derive(Debug)]
pub struct Place {
    _slot: Option<PeerSlot>,
}

/// One connection or request of a peer, given back on drop.
#[derive(Debug)]
struct PeerSlot {
    key: PeerKey,
    peers: PerPeer,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.peers.0);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Handshakes in progress per peer, and those waiting to start. A peer's entry lives while any of
/// its connections holds or awaits a turn.
#[derive(Debug, Default, Clone)]
struct Handshaking(Arc<Mutex<std::collections::HashMap<PeerKey, PeerHandshakes>>>);

/// A peer's places for handshakes, and how many of its connections hold or await one.
type PeerHandshakes = (Arc<Semaphore>, usize);

impl Handshaking {
    /// Wait until `key` has fewer than `max` handshakes in progress, then hold one place of its
    /// own until the returned turn is dropped (a cancelled wait gives its claim back too).
    async fn turn(&self, key: PeerKey, max: usize) -> HandshakeTurn {
        let places = {
            let mut peers = lock(&self.0);
            let (places, users) = peers
                .entry(key)
                .or_insert_with(|| (Arc::new(Semaphore::new(max)), 0));
            *users += 1;
            places.clone()
        };
        let mut turn = HandshakeTurn {
            key,
            peers: self.clone(),
            place: None,
        };
        turn.place = Some(places.acquire_owned().await.expect("never closed"));
        turn
    }
}

/// One handshake's place among its peer's, given back on drop.
#[derive(Debug)]
struct HandshakeTurn {
    key: PeerKey,
    peers: Handshaking,
    place: Option<OwnedSemaphorePermit>,
}

impl Drop for HandshakeTurn {
    fn drop(&mut self) {
        self.place.take();
        let mut peers = lock(&self.peers.0);
        if let Some((_, users)) = peers.get_mut(&self.key) {
            *users -= 1;
            if *users == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

/// When each peer's next costly step (a TLS handshake, a passphrase change) may start: a generic
/// cell rate algorithm, one instant per peer (its theoretical arrival time), kept until it has
/// passed. A step whose turn has not come waits for it rather than being refused, so a user's
/// burst of commands is slowed, never failed.
#[derive(Debug)]
pub struct Pacing {
    interval: Duration,
    tolerance: Duration,
    peers: Mutex<(std::collections::HashMap<PeerKey, Instant>, usize)>,
}

impl Pacing {
    /// Entries kept before the passed ones are swept out; then twice what is left.
    const SWEEP_AT: usize = 1024;

    /// `burst` steps at once, then `per_second`.
    pub fn new(per_second: u32, burst: u32) -> Pacing {
        Pacing::every(Duration::from_secs(1) / per_second.max(1), burst)
    }

    /// `burst` steps at once, then one every `interval`.
    pub fn every(interval: Duration, burst: u32) -> Pacing {
        Pacing {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            peers: Mutex::new((std::collections::HashMap::new(), Self::SWEEP_AT)),
        }
    }

    /// [`Pacing::turn`], unless the turn would come more than `most` after `now`: then no place
    /// is taken, and the error says how long the wait would be. Without a ceiling, a peer's
    /// steps queued behind one another would each wait longer, past the time its client waits
    /// for an answer, and still take effect once their turn came.
    pub fn turn_within(
        &self,
        key: PeerKey,
        now: Instant,
        most: Duration,
    ) -> Result<Instant, Duration> {
        self.book(key, now, Some(most))
    }

    /// When `key`'s next step could start if it came at `now`, without taking a place: for
    /// steps that count only once they turn out to be of the paced kind (a passphrase that was
    /// right), which then take theirs with [`Pacing::turn`].
    pub fn ready(&self, key: PeerKey, now: Instant) -> Instant {
        self.next(&lock(&self.peers).0, key, now).1
    }

    /// Wait for `peer`'s turn, taking its place ([`Pacing::turn_within`]); root's turns are never
    /// held. The error is the wait, when it would be longer than `most` (nothing is taken then).
    pub async fn wait_turn(&self, peer: &Peer, most: Duration) -> Result<(), Duration> {
        if let Some(key) = peer.limited_key() {
            let turn = self.turn_within(key, Instant::now(), most)?;
            tokio::time::sleep_until(turn.into()).await;
        }
        Ok(())
    }

    /// Wait until `peer`'s next step could start, without taking a place ([`Pacing::ready`]);
    /// root is never held. The error is the wait, when it would be longer than `most`.
    pub async fn wait_ready(&self, peer: &Peer, most: Duration) -> Result<(), Duration> {
        if let Some(key) = peer.limited_key() {
            let now = Instant::now();
            let ready = self.ready(key, now);
            if ready - now > most {
                return Err(ready - now);
            }
            tokio::time::sleep_until(ready.into()).await;
        }
        Ok(())
    }

    /// For `key`'s step at `now`: when it arrives in the pace (the instant its place would be
    /// booked from), and when it may start.
    fn next(
        &self,
        peers: &std::collections::HashMap<PeerKey, Instant>,
        key: PeerKey,
        now: Instant,
    ) -> (Instant, Instant) {
        let arrival = peers.get(&key).map_or(now, |at| (*at).max(now));
        let start = arrival
            .checked_sub(self.tolerance)
            .map_or(now, |start| start.max(now));
        (arrival, start)
    }

    /// When `key`'s step that comes at `now` may start; its place is taken at once.
    pub fn turn(&self, key: PeerKey, now: Instant) -> Instant {
        // Without a ceiling a place is always taken.
        self.book(key, now, None).unwrap_or_else(|wait| now + wait)
    }

    /// Take `key`'s place for a step at `now` and say when it starts, unless that is more than
    /// `most` after `now` (then nothing is taken, and the error is the wait): under one hold of
    /// the lock, so that steps checked apart from their booking cannot all pass the check.
    fn book(
        &self,
        key: PeerKey,
        now: Instant,
        most: Option<Duration>,
    ) -> Result<Instant, Duration> {
        let mut guard = lock(&self.peers);
        let (peers, sweep_at) = &mut *guard;
        if peers.len() >= *sweep_at {
            peers.retain(|_, at| *at > now);
            *sweep_at = (2 * peers.len()).max(Self::SWEEP_AT);
        }
        let (arrival, start) = self.next(peers, key, now);
        if most.is_some_and(|most| start - now > most) {
            return Err(start - now);
        }
        peers.insert(key, arrival + self.interval);
        Ok(start)
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

/// Counts connections from accept (handshake included) to close, for the daemon's idle logic
/// and the first read of its trust store.
#[derive(Debug, Clone)]
pub struct Activity {
    counts: Arc<watch::Sender<Counts>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    open: usize,
    closed: u64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            counts: Arc::new(watch::channel(Counts::default()).0),
        }
    }
}

impl Activity {
    /// Connections accepted and not yet closed.
    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.counts.borrow().open
    }

    /// Resolves once no connection has been open for `idle` without interruption.
    pub async fn idle_for(&self, idle: Duration) {
        let mut rx = self.counts.subscribe();
        loop {
            let _ = rx.wait_for(|c| c.open == 0).await;
            match tokio::time::timeout(idle, rx.changed()).await {
                Err(_) if rx.borrow().open == 0 => return,
                _ => continue,
            }
        }
    }

    /// Resolves when no connection is open.
    pub async fn drained(&self) {
        let mut rx = self.counts.subscribe();
        let _ = rx.wait_for(|c| c.open == 0).await;
    }

    /// Resolves once a connection has closed and none is open: under socket activation, once
    /// the connection that started the daemon has been served.
    pub async fn served(&self) {
        let mut rx = self.counts.subscribe();
        let _ = rx.wait_for(|c| c.closed > 0 && c.open == 0).await;
    }

    fn guard(&self) -> ActivityGuard {
        self.counts.send_modify(|c| c.open += 1);
        ActivityGuard(self.clone())
    }
}

#[derive(Debug)]
struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.counts.send_modify(|c| {
            c.open -= 1;
            c.closed += 1;
        });
    }
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

/// What a peer is told when it has too many requests in flight.
pub const TOO_MANY_REQUESTS: &str =
    "Too many requests from this user (or address) are in flight; try again once some have \
     finished.";

/// Tower layer of the daemon's tonic server. At most `max_per_peer` requests are in flight per
/// peer (a local user but root by uid, a TCP peer by address); beyond that a request is refused
/// with `RESOURCE_EXHAUSTED` before any of its message is read, so the memory one peer can make
/// the daemon hold for half-sent messages is bounded whatever its number of connections. Every
/// request also moves its connection's [`IdleClock`]. A request's handler runs to its end
/// whatever its client does meanwhile, and keeps its place until then.
#[derive(Debug, Clone)]
pub struct RequestLimitLayer {
    max_per_peer: usize,
    /// How long a request's message may take to arrive whole.
    arrival: Duration,
    in_flight: PerPeer,
    warnings: Arc<Warnings>,
}

impl RequestLimitLayer {
    /// At most `max_per_peer` requests in flight per peer, each of which must have sent its
    /// whole message within `arrival` of its start.
    pub fn new(max_per_peer: usize, arrival: Duration) -> RequestLimitLayer {
        RequestLimitLayer {
            max_per_peer,
            arrival,
            in_flight: PerPeer::default(),
            warnings: Arc::new(warnings()),
        }
    }
}

impl<S> tower::Layer<S> for RequestLimitLayer {
    type Service = RequestLimit<S>;

    fn layer(&self, inner: S) -> RequestLimit<S> {
        RequestLimit {
            inner,
            limits: self.clone(),
        }
    }
}

/// The service of [`RequestLimitLayer`].
#[derive(Debug, Clone)]
pub struct RequestLimit<S> {
    inner: S,
    limits: RequestLimitLayer,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for RequestLimit<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = Reply>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let peer = request.extensions().get::<Peer>();
        let slot = match peer.and_then(Peer::limited_key) {
            Some(key) => match self.limits.in_flight.claim(key, self.limits.max_per_peer) {
                Some(slot) => Some(slot),
                None => {
                    warn(
                        &self.limits.warnings,
                        Some(key),
                        "a peer has too many requests in flight; refusing its new ones",
                    );
                    let refusal = tonic::Status::resource_exhausted(TOO_MANY_REQUESTS);
                    return Box::pin(std::future::ready(Ok(refusal.into_http())));
                }
            },
            None => None,
        };
        let in_flight = peer.map(|p| p.clock.begin());
        // The handler is not cut short (below), so the wait for a message that never comes is:
        // it fails once `arrival` has passed, and the handler with it.
        let arrival = self.limits.arrival;
        let request = request.map(|body| tonic::body::Body::new(Arriving::new(body, arrival)));
        let reply = self.inner.call(request);
        // A client cannot cut the handler short: if a deadline it sent (`grpc-timeout`), a reset
        // stream or a closed connection drops this future, the handler goes on to its end as a
        // task of its own, holding its request's place. Cut short, a handler could have left a
        // change on disk without its audit line, or let go of a passphrase check's place while
        // the hash went on running, unrecorded, on a blocking thread.
        let work = RunToEnd(Some(Box::pin(async move {
            let reply = reply.await;
            (reply, (slot, in_flight))
        })));
        Box::pin(async move {
            let (reply, held) = work.await;
            // Held until the answer has been sent (or abandoned), not only until the handler
            // returned: a streamed answer is still part of the request.
            Ok(reply?.map(|body| tonic::body::Body::new(Holding { body, _held: held })))
        })
    }
}

/// A future that, dropped before its end, is run to its end as a task of its own. Spawning only
/// then keeps the common case, a request answered while its client waits, free of a task and
/// of the wake-ups between two tasks (which doubled the daemon's CPU time per `ping`).
struct RunToEnd<F: Future + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future + Send + 'static> Future for RunToEnd<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(work) = self.0.as_mut() else {
            return Poll::Pending;
        };
        let done = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(done)
    }
}

impl<F: Future + Send + 'static> Drop for RunToEnd<F> {
    fn drop(&mut self) {
        if let Some(work) = self.0.take() {
            // Without a runtime (it is shutting down) the work is dropped with it.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    work.await;
                });
            }
        }
    }
}

/// A request's body that fails unless it has arrived whole within its deadline.
struct Arriving<B> {
    body: Pin<Box<B>>,
    deadline: Instant,
    /// Made only once the body has had to be waited for: a message that comes in one piece
    /// costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    ended: bool,
}

impl<B> Arriving<B> {
    fn new(body: B, within: Duration) -> Arriving<B> {
        Arriving {
            body: Box::pin(body),
            deadline: Instant::now() + within,
            timer: None,
            ended: false,
        }
    }
}

impl<B> http_body::Body for Arriving<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.body.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => {
                let deadline = self.deadline;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.ended = true;
                        let late = tonic::Status::deadline_exceeded(
                            "The request's message did not arrive in time.",
                        );
                        Poll::Ready(Some(Err(late.into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body, holding its request's place until it is dropped.
struct Holding {
    body: tonic::body::Body,
    _held: (Option<PeerSlot>, Option<InFlight>),
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_peer_is_counted_by_what_it_can_change_at_will() {
        let key = |ip: &str| PeerKey::of_address(ip.parse().unwrap());
        // Any local user can connect from any loopback address: one account for them all.
        assert_eq!(key("127.0.0.1"), key("127.0.0.2"));
        assert_eq!(key("127.255.1.9"), key("::ffff:127.0.0.1"));
        assert_eq!(key("127.0.0.1").to_string(), "addresses 127.0.0.0/8");
        // IPv6 by /64.
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("2001:db8::9").to_string(), "addresses 2001:db8::/64");
        assert_eq!(key("::1"), key("::2"));
        // Other IPv4 addresses one by one.
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1").to_string(), "address 192.0.2.1");
    }

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

    /// A body that sends nothing and never ends, as a client that opened a stream and went
    /// quiet.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    /// A handler runs to its end whatever its client does, so a request whose message never
    /// comes must fail by itself: its body does, once the time for it to arrive has passed.
    #[tokio::test]
    async fn a_message_that_never_arrives_fails_the_handler_in_time() {
        use http_body::Body as _;
        let handler = tower::service_fn(|request: http::Request<tonic::body::Body>| async move {
            let mut body = request.into_body();
            let read = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let failed = matches!(read, Some(Err(_)));
            let status = if failed {
                tonic::Status::deadline_exceeded("late")
            } else {
                tonic::Status::ok("read")
            };
            Ok::<_, std::convert::Infallible>(status.into_http())
        });
        let mut service = tower::Layer::layer(
            &RequestLimitLayer::new(4, Duration::from_millis(100)),
            handler,
        );
        let started = Instant::now();
        let request = http::Request::new(Silent);
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            tower::Service::call(&mut service, request),
        )
        .await
        .expect("the handler ended")
        .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));
        let status = tonic::Status::from_header_map(reply.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        // A message that arrives is read as it is.
        let request = http::Request::new(Full(Some(bytes::Bytes::from_static(b"x"))));
        let reply = tower::Service::call(&mut service, request).await.unwrap();
        let status = tonic::Status::from_header_map(reply.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
    }

    /// A body of one piece of data.
    struct Full(Option<bytes::Bytes>);

    impl http_body::Body for Full {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|d| Ok(http_body::Frame::data(d))))
        }
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

    #[test]
    fn a_burst_starts_at_once_then_handshakes_wait_their_turn() {
        let pacing = Pacing::new(100, 4);
        let (alice, bob) = (PeerKey::Uid(1000), PeerKey::Uid(1001));
        let now = Instant::now();
        let turns: Vec<Duration> = (0..7).map(|_| pacing.turn(alice, now) - now).collect();
        let ms = Duration::from_millis;
        assert_eq!(turns, [ms(0), ms(0), ms(0), ms(0), ms(10), ms(20), ms(30)]);
        // Another peer has its own pace.
        assert_eq!(pacing.turn(bob, now), now);
        // Once the turns taken have passed, the next starts at once; after a long pause the
        // whole burst does again.
        assert_eq!(pacing.turn(alice, now + ms(70)), now + ms(70));
        let later = now + Duration::from_secs(5);
        let turns: Vec<Instant> = (0..5).map(|_| pacing.turn(alice, later)).collect();
        assert_eq!(turns, [later, later, later, later, later + ms(10)]);
    }

    #[test]
    fn ready_says_when_without_taking_a_place() {
        let pacing = Pacing::every(Duration::from_secs(5), 2);
        let alice = PeerKey::Uid(1000);
        let now = Instant::now();
        assert_eq!(pacing.ready(alice, now), now);
        assert_eq!(pacing.ready(alice, now), now, "asking takes nothing");
        pacing.turn(alice, now);
        pacing.turn(alice, now);
        assert_eq!(pacing.ready(alice, now), now + Duration::from_secs(5));
        // Beyond the ceiling, no place is taken.
        let most = Duration::from_secs(3);
        assert_eq!(
            pacing.turn_within(alice, now, most),
            Err(Duration::from_secs(5))
        );
        assert_eq!(pacing.turn(alice, now), now + Duration::from_secs(5));
        assert_eq!(
            pacing.turn_within(alice, now + Duration::from_secs(8), most),
            Ok(now + Duration::from_secs(10))
        );
    }

    #[test]
    fn paces_of_peers_long_gone_are_swept_out() {
        let pacing = Pacing::new(100, 4);
        let now = Instant::now();
        for uid in 0..Pacing::SWEEP_AT as u32 {
            pacing.turn(PeerKey::Uid(uid), now);
        }
        pacing.turn(PeerKey::Uid(u32::MAX), now + Duration::from_secs(1));
        assert_eq!(lock(&pacing.peers).0.len(), 1);
    }

    /// Whether `activity.served()` resolves now (it never waits on a timer, only on the counts).
    async fn served_now(activity: &Activity) -> bool {
        tokio::time::timeout(Duration::from_millis(10), activity.served())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn served_once_a_connection_has_come_and_gone_and_none_is_open() {
        let activity = Activity::default();
        assert!(!served_now(&activity).await, "no connection yet");
        let first = activity.guard();
        assert!(!served_now(&activity).await, "the first connection is open");
        let second = activity.guard();
        drop(first);
        assert!(
            !served_now(&activity).await,
            "the second connection is open"
        );
        drop(second);
        assert!(served_now(&activity).await);
        assert_eq!(activity.open_connections(), 0);
    }
}
