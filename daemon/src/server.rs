//! Start-up and serving: state directory, certificates, listener, tonic.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rpc::proto::rpc_server::RpcServer;
use rpc::server::{incoming, Activity, IncomingOptions, Listener};
use rpc::Address;
use trust::fsutil::{self, FileMode};
use trust::settings::SettingsFile;
use trust::{DataDir, ServerPki, ServerPkiOptions, TrustStore};

use crate::admin::AdminPolicy;
use crate::args::Args;
use crate::gate::Gate;
use crate::limits::{FailureLimiter, HashPool, LimiterConfig};
use crate::service::Service;
use crate::socket::{self, Access, SocketPolicy};

/// Passphrase hashes computed at once (each ~19 MiB and a core for ~50 ms).
const PARALLEL_HASHES: usize = 2;
/// Passphrase checks allowed to wait for a turn.
const QUEUED_HASHES: usize = 64;

/// Serve until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = DataDir::new(&args.data_dir);
    fsutil::ensure_dir(dir.root(), 0o711).context("cannot prepare the state directory")?;
    fsutil::ensure_dir(&dir.trust_store_dir(), 0o700)
        .context("cannot prepare the trust store directory")?;
    let pki = ServerPki::load_or_create(
        &dir,
        ServerPkiOptions {
            server_validity: time::Duration::seconds(args.server_cert_validity as i64),
            ..ServerPkiOptions::default()
        },
    )
    .context("cannot load or create the server certificates")?;
    let tls = trust::tls::server_config(&pki)?;

    let store = Arc::new(TrustStore::new(dir.trust_store(), FileMode::PRIVATE));
    let trusted = store
        .current()
        .context("cannot read the trust store")?
        .len();
    let admin = AdminPolicy::new(args.admin_group.clone());

    let (listener, socket_path) = match &args.address {
        Address::Unix(path) => {
            let std_listener = socket::bind(path, Access::for_store(trusted == 0), &admin)
                .with_context(|| format!("cannot listen on {}", path.display()))?;
            let listener = tokio::net::UnixListener::from_std(std_listener)?;
            (Listener::Unix(listener), Some(path.clone()))
        }
        Address::Tcp(hostport) => {
            let listener = tokio::net::TcpListener::bind(hostport.as_str())
                .await
                .with_context(|| format!("cannot listen on {hostport}"))?;
            (Listener::Tcp(listener), None)
        }
    };

    let socket_policy = SocketPolicy::new(socket_path.clone(), admin.clone());
    let gate = Gate::new(store, admin, socket_policy);
    let settings = SettingsFile::new(dir.settings(), FileMode::PRIVATE);
    let service = Service::new(
        gate,
        settings,
        FailureLimiter::new(LimiterConfig::default()),
        HashPool::new(PARALLEL_HASHES, QUEUED_HASHES),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_stop = stop_rx.clone();
    let connections = incoming(
        listener,
        tls,
        IncomingOptions {
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
            ..IncomingOptions::default()
        },
        Activity::default(),
        async move {
            let _ = accept_stop.wait_for(|stop| *stop).await;
        },
    );

    tracing::info!(
        address = %args.address,
        data_dir = %args.data_dir.display(),
        trusted_clients = trusted,
        server_cert_expires = %pki.not_after,
        "listening"
    );

    let mut serve_stop = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(64))
        .add_service(RpcServer::new(service))
        .serve_with_incoming_shutdown(connections, async move {
            let _ = serve_stop.wait_for(|stop| *stop).await;
        });

    tokio::select! {
        result = server => result.context("the gRPC server failed")?,
        signal = shutdown_signal() => {
            tracing::info!(signal, "shutting down");
            let _ = stop_tx.send(true);
        }
    }
    if let Some(path) = socket_path {
        // Only when we bound it ourselves; a socket systemd owns stays.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        unreachable!()
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
