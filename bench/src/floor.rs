//! The floor: the daemon's own `RpcServer` (the same `Service`, `Gate`, trust store, limiter and
//! hash pool, built as `daemon/src/server.rs` builds them, and the same tonic server options),
//! served over a plain `UnixListener` without TLS.
//!
//! Every connection carries the `Peer` a TLS connection of the bench's client would carry:
//! kernel credentials read at accept (SO_PEERCRED, as the daemon does) and the client's
//! `VerifiedClient`, obtained once at start-up from a real in-memory handshake (the type can only
//! be made from a finished handshake). So each RPC does the daemon's work, gate check included,
//! and only TLS is missing: the ratio of the two is what TLS costs.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use multipassd::gate::{Gate, Parts};
use multipassd::server::MAX_REQUEST_BYTES;
use multipassd::service::Service;
use multipassd::socket::SocketPolicy;
use rpc::proto::rpc_server::RpcServer;
use rpc::server::{Peer, PeerCredentials, Transport};
use tls::{ClientIdentity, ServerPki, ServerPkiOptions, VerifiedClient};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use trust::access::AdminPolicy;
use trust::fsutil::FileMode;
use trust::{DataDir, TrustStore};

/// A plaintext connection that looks to the service like a TLS one from the bench's client.
struct PlainConnection {
    io: UnixStream,
    peer: Peer,
}

impl Connected for PlainConnection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for PlainConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// `multipass-bench floor-server`: serve until SIGTERM; `READY=1` to `$NOTIFY_SOCKET` once
/// listening.
pub fn run(socket: PathBuf, data_dir: PathBuf, client_dir: PathBuf) -> Result<()> {
    // As the daemon's main does first.
    multipassd::memory::keep_large_allocations_off_the_heap();
    multipassd::logging::init("info");
    // As the daemon's main builds it: multi-threaded, a worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(socket, data_dir, client_dir))
}

async fn serve(socket: PathBuf, data_dir: PathBuf, client_dir: PathBuf) -> Result<()> {
    let dir = DataDir::new(&data_dir);
    let pki = ServerPki::load_or_create(&dir, ServerPkiOptions::default())?;
    let identity = ClientIdentity::load_or_create(&client_dir)?;
    let client = verified_client(&pki, &identity, &dir)?;

    let store = Arc::new(TrustStore::new(dir.trust_store(), FileMode::PRIVATE));
    store.current().context("cannot read the trust store")?;
    let admin = AdminPolicy::new(None);
    let gate = Arc::new(Gate::new(Parts::in_dir(
        store,
        &dir,
        Arc::new(admin.clone()),
        Arc::new(SocketPolicy::new(None, admin)),
    )));
    let service = Service::new(gate);

    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).map(move |accepted| {
        accepted.map(|io| {
            let credentials = io.peer_cred().ok().map(|c| PeerCredentials {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            });
            PlainConnection {
                io,
                peer: Peer::new(Transport::Unix, credentials, Some(client.clone())),
            }
        })
    });

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        UnixDatagram::unbound()?.send_to(b"READY=1\n", path)?;
    }
    // The daemon's options and limits (daemon/src/server.rs, `serve`).
    multipassd::server::tonic_server()
        .add_service(RpcServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES))
        .serve_with_incoming_shutdown(incoming, async move {
            term.recv().await;
        })
        .await?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The server's view of `identity` after a real handshake with the daemon's configuration.
fn verified_client(
    pki: &ServerPki,
    identity: &ClientIdentity,
    dir: &DataDir,
) -> Result<VerifiedClient> {
    let server = tls::server_config(tls::ServerCertResolver::new(pki)?)?;
    let root = std::fs::read(dir.root_cert())?;
    let client = tls::client_config(&root, identity)?;
    let (_, verified) = crate::tlsmem::handshake(&server, &client)?;
    verified.context("the client presented no certificate")
}
