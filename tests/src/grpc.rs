//! A gRPC client of our own over TLS over the daemon's Unix socket, for tests that must control
//! what the client presents (e.g. no client certificate at all).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::{ListReply, ListRequest, PingRequest};
use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UnixStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Any error of setting up a channel.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A rustls client configuration trusting the daemon's root CA (`root_ca`), ALPN `h2`,
/// presenting `identity` (certificate and key PEM files) or no client certificate.
pub fn client_config(
    root_ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root_ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_file(key)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A tonic channel to the daemon on `socket`: each connection is a Unix stream, TLS with server
/// name `localhost`, HTTP/2. Fails if the first TLS handshake fails.
pub async fn channel(
    socket: &Path,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    let connector = TlsConnector::from(config);
    let service = tower::service_fn(move |_: http::Uri| {
        let socket = socket.clone();
        let connector = connector.clone();
        async move {
            let stream = UnixStream::connect(&socket).await?;
            let name = ServerName::try_from("localhost").expect("valid server name");
            let tls = connector.connect(name, stream).await?;
            Ok::<_, io::Error>(TokioIo::new(tls))
        }
    });
    Endpoint::from_static("http://localhost")
        .connect_with_connector(service)
        .await
}

/// Complete a TLS handshake with the daemon on `socket` and return the server certificate it
/// presented (DER), verified against the root CA in `config`.
pub async fn served_leaf(
    socket: &Path,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, BoxError> {
    let stream = UnixStream::connect(socket).await?;
    let name = ServerName::try_from("localhost")?;
    let tls = TlsConnector::from(config).connect(name, stream).await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("the server presented no certificate")?;
    Ok(leaf.to_vec())
}

/// Call `list` (one request, then read every reply).
pub async fn list(channel: Channel) -> Result<Vec<ListReply>, tonic::Status> {
    let mut client = RpcClient::new(channel);
    let request = ListRequest::default();
    let mut replies = client
        .list(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let mut all = Vec::new();
    while let Some(reply) = replies.message().await? {
        all.push(reply);
    }
    Ok(all)
}

/// Call `ping`.
pub async fn ping(channel: Channel) -> Result<(), tonic::Status> {
    RpcClient::new(channel)
        .ping(PingRequest {})
        .await
        .map(|_| ())
}

/// A client of our `multipass.trust.Trust` service on `socket`, presenting the certificate and
/// key files of `identity`, verifying the daemon against `root_ca`. The daemon sees this test
/// process's credentials (root), whoever's certificate it presents.
pub async fn trust_client(
    socket: &Path,
    root_ca: &Path,
    identity: (&Path, &Path),
) -> Result<rpc::trust_proto::trust_client::TrustClient<Channel>, BoxError> {
    let config = client_config(root_ca, Some(identity))?;
    Ok(rpc::trust_proto::trust_client::TrustClient::new(
        channel(socket, config).await?,
    ))
}
