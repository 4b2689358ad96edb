//! Who is at the other end of a connection, and whose account its doings go on.

use std::net::{IpAddr, SocketAddr};

use tls::VerifiedClient;

#[cfg(doc)]
use super::incoming;
use super::IdleClock;

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
    pub(super) fn of(
        transport: Transport,
        credentials: Option<&PeerCredentials>,
    ) -> Option<PeerKey> {
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
}
