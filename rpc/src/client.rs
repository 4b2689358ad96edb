//! The client's side of the transport.
//!
//! Connecting is split in two so that the CLI can tell failures apart and so that, under socket
//! activation, it can read the root CA *after* its connection started the daemon: [`dial`] opens
//! the socket (typed I/O error: missing, refused, permission denied), then
//! [`Dialed::handshake`] runs TLS and sets up HTTP/2.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::address::Address;

/// Why the client could not reach the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The socket could not be opened.
    #[error("cannot connect to {address}")]
    Dial {
        /// Where we tried.
        address: Address,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },
    /// The TLS handshake failed (wrong root CA, refused certificate, not a TLS server).
    #[error("TLS handshake with {address} failed")]
    Tls {
        /// Where we tried.
        address: Address,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// HTTP/2 could not be set up over the TLS connection.
    #[error("cannot set up gRPC with {address}")]
    Http2 {
        /// Where we tried.
        address: Address,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// How long opening the socket may take, and then the TLS handshake. The daemon gives up on a
/// handshake after 10 s, the wait for its turn included, so one that has not answered by then is
/// stopped, or is no daemon: without a bound, a command would wait for it for ever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `step` of connecting, bounded by [`CONNECT_TIMEOUT`]: past it, a `TimedOut` error.
async fn bounded<T>(step: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(CONNECT_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            ))
        })
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// An open socket to the daemon, before TLS.
pub struct Dialed {
    address: Address,
    stream: Stream,
}

/// Open a socket to `address`.
pub async fn dial(address: &Address) -> Result<Dialed, ConnectError> {
    let stream = open(address).await.map_err(|source| ConnectError::Dial {
        address: address.clone(),
        source,
    })?;
    Ok(Dialed {
        address: address.clone(),
        stream,
    })
}

async fn open(address: &Address) -> io::Result<Stream> {
    bounded(open_unbounded(address)).await
}

async fn open_unbounded(address: &Address) -> io::Result<Stream> {
    Ok(match address {
        Address::Unix(path) => Stream::Unix(UnixStream::connect(path).await?),
        Address::Tcp(hostport) => {
            let s = TcpStream::connect(hostport.as_str()).await?;
            let _ = s.set_nodelay(true);
            Stream::Tcp(s)
        }
    })
}

type Tls = TlsStream<Box<dyn IoStream>>;

trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> IoStream for T {}

async fn tls_handshake(stream: Stream, connector: &TlsConnector) -> io::Result<Tls> {
    let io: Box<dyn IoStream> = match stream {
        Stream::Unix(s) => Box::new(s),
        Stream::Tcp(s) => Box::new(s),
    };
    bounded(connector.connect(ServerName::try_from("localhost").expect("valid name"), io)).await
}

impl Dialed {
    /// Run the TLS handshake with `tls` and set up a gRPC channel over it. Should the channel need
    /// to reconnect later, it dials the same address again.
    pub async fn handshake(self, tls: Arc<rustls::ClientConfig>) -> Result<Channel, ConnectError> {
        self.handshake_then(tls, |_| ()).await
    }

    /// [`Dialed::handshake`], showing `negotiated` the TLS connection once its handshake is done
    /// (what the client's `-vv` reports).
    pub async fn handshake_then(
        self,
        tls: Arc<rustls::ClientConfig>,
        negotiated: impl FnOnce(&rustls::ClientConnection),
    ) -> Result<Channel, ConnectError> {
        let connector = TlsConnector::from(tls);
        let address = self.address;
        let first = tls_handshake(self.stream, &connector)
            .await
            .map_err(|source| ConnectError::Tls {
                address: address.clone(),
                source,
            })?;
        negotiated(first.get_ref().1);
        let first = Arc::new(Mutex::new(Some(first)));
        let redial = address.clone();
        let connector_fn = tower::service_fn(move |_: http::Uri| {
            let first = first.lock().unwrap_or_else(|e| e.into_inner()).take();
            let connector = connector.clone();
            let address = redial.clone();
            async move {
                let tls = match first {
                    Some(tls) => tls,
                    None => tls_handshake(open(&address).await?, &connector).await?,
                };
                Ok::<_, io::Error>(TokioIo::new(tls))
            }
        });
        Endpoint::from_static("http://localhost")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connector_fn)
            .await
            .map_err(|source| ConnectError::Http2 { address, source })
    }
}
