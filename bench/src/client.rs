//! The bench's client side: channels to the daemon (TLS, through the library the CLI uses) and
//! to the floor (plaintext, same tonic), and a connection set up phase by phase.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::PingRequest;
use rpc::Address;
use rustls::pki_types::ServerName;
use tokio::net::UnixStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Where and how to connect.
#[derive(Clone)]
pub enum Target {
    /// The daemon: TLS with this configuration.
    Tls(PathBuf, Arc<rustls::ClientConfig>),
    /// The floor server: plaintext.
    Plain(PathBuf),
}

impl Target {
    /// A new connection (one socket, one HTTP/2 connection).
    pub async fn connect(&self) -> Result<Channel> {
        match self {
            Target::Tls(socket, tls) => {
                let dialed = rpc::client::dial(&Address::Unix(socket.clone())).await?;
                Ok(dialed.handshake(tls.clone()).await?)
            }
            Target::Plain(socket) => plain(socket).await,
        }
    }
}

async fn plain(socket: &Path) -> Result<Channel> {
    let socket = socket.to_path_buf();
    let connector = tower::service_fn(move |_: http::Uri| {
        let socket = socket.clone();
        async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(&socket).await?)) }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .context("plaintext connection")
}

/// One authenticated unary RPC (`ping` passes only for a trusted client).
pub async fn ping(client: &mut RpcClient<Channel>) -> Result<()> {
    client
        .ping(PingRequest {})
        .await
        .context("ping was refused")?;
    Ok(())
}

/// Wall time of each phase of a new TLS connection and its first RPC.
#[derive(Debug, Clone, Copy, Default)]
pub struct Phases {
    /// `connect(2)` on the socket.
    pub connect: Duration,
    /// The TLS handshake, as the client sees it.
    pub tls: Duration,
    /// HTTP/2 set-up (tonic `Endpoint::connect_with_connector`).
    pub http2: Duration,
    /// The first `ping`.
    pub first_rpc: Duration,
}

/// A new connection made as `rpc::client` makes it, timed phase by phase.
pub async fn phased(socket: &Path, tls: Arc<rustls::ClientConfig>) -> Result<Phases> {
    let t = Instant::now();
    let stream = UnixStream::connect(socket).await?;
    let connect = t.elapsed();
    let t = Instant::now();
    let stream = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost")?, stream)
        .await?;
    let tls = t.elapsed();
    let t = Instant::now();
    let slot = Arc::new(Mutex::new(Some(stream)));
    let connector = tower::service_fn(move |_: http::Uri| {
        let stream = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        async move {
            stream
                .map(TokioIo::new)
                .ok_or_else(|| io::Error::other("no reconnection in this measurement"))
        }
    });
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await?;
    let http2 = t.elapsed();
    let t = Instant::now();
    ping(&mut RpcClient::new(channel)).await?;
    let first_rpc = t.elapsed();
    Ok(Phases {
        connect,
        tls,
        http2,
        first_rpc,
    })
}
