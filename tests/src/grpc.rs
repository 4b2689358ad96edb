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

/// Every trusted client, read from all the pages of one `ListClients` call.
pub async fn trusted_clients(
    client: &mut rpc::trust_proto::trust_client::TrustClient<Channel>,
) -> Result<Vec<rpc::trust_proto::TrustedClient>, tonic::Status> {
    let mut pages = client
        .list_clients(rpc::trust_proto::ListClientsRequest {})
        .await?
        .into_inner();
    let mut clients = Vec::new();
    while let Some(page) = pages.message().await? {
        clients.extend(page.clients);
    }
    Ok(clients)
}

/// TLS over any connected `stream`, server name `localhost`.
pub async fn tls_over<S>(
    stream: S,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let name = ServerName::try_from("localhost").expect("valid server name");
    TlsConnector::from(config).connect(name, stream).await
}

/// An HTTP/2 connection of our own over TLS: full control over streams, frames, headers and
/// pings, and the moment the daemon closes it.
pub struct H2Connection {
    /// Opens streams.
    pub send: h2::client::SendRequest<bytes::Bytes>,
    /// Sends pings and awaits their answers.
    pub pings: h2::PingPong,
    /// Resolves when the connection has ended (closed by either side), with the time it did.
    pub ended: tokio::task::JoinHandle<std::time::Instant>,
}

/// [`H2Connection`] over TLS over `stream`.
pub async fn h2_over<S>(
    stream: S,
    config: Arc<rustls::ClientConfig>,
) -> Result<H2Connection, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls = tls_over(stream, config).await?;
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .handshake::<_, bytes::Bytes>(tls)
        .await?;
    let pings = connection.ping_pong().ok_or("no ping handle")?;
    let ended = tokio::spawn(async move {
        let _ = connection.await;
        std::time::Instant::now()
    });
    Ok(H2Connection {
        send: send.ready().await?,
        pings,
        ended,
    })
}

/// [`h2_over`] a connected Unix stream of the standard library (e.g. one made as another user).
pub async fn h2_over_unix(
    stream: std::os::unix::net::UnixStream,
    config: Arc<rustls::ClientConfig>,
) -> Result<H2Connection, BoxError> {
    stream.set_nonblocking(true)?;
    h2_over(UnixStream::from_std(stream)?, config).await
}

/// A call opened on an [`H2Connection`] and left as it is: its answer to come, and the rest of
/// its request body.
pub type OpenCall = (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>);

/// Makes an [`H2Connection`] over each of `connections` (connected Unix streams, e.g. made as
/// another user) and opens up to `per_connection` calls on each: headers from `request`, then the
/// data frame `first`, the request ended after it if `end`. A connection's opening stops at the
/// first stream it refuses. The connections (the caller keeps them open for as long as the calls
/// are to be held) and the calls whose first frame was sent.
pub async fn open_calls(
    connections: Vec<std::os::unix::net::UnixStream>,
    config: Arc<rustls::ClientConfig>,
    per_connection: usize,
    request: impl Fn() -> http::Request<()>,
    first: bytes::Bytes,
    end: bool,
) -> (Vec<H2Connection>, Vec<OpenCall>) {
    let (mut conns, mut calls) = (Vec::new(), Vec::new());
    for stream in connections {
        let mut conn = h2_over_unix(stream, config.clone())
            .await
            .expect("an HTTP/2 connection within the user's limits");
        for _ in 0..per_connection {
            let Ok((response, mut body)) = conn.send.send_request(request(), false) else {
                break;
            };
            if body.send_data(first.clone(), end).is_ok() {
                calls.push((response, body));
            }
            // Wait until the connection takes another stream, as a client within the
            // daemon's stream limit would.
            match conn.send.clone().ready().await {
                Ok(send) => conn.send = send,
                Err(_) => break,
            }
        }
        conns.push(conn);
    }
    (conns, calls)
}

/// The headers of a gRPC call of `method` of `multipass.Rpc` (e.g. `list`).
pub fn grpc_request(method: &str) -> http::Request<()> {
    grpc_request_of("multipass.Rpc", method)
}

/// The headers of a gRPC call of `method` of `service` (e.g. `multipass.trust.Trust`).
pub fn grpc_request_of(service: &str, method: &str) -> http::Request<()> {
    http::Request::post(format!("http://localhost/{service}/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request")
}

/// A gRPC message frame announcing `announced` bytes of message and carrying `body` (all of the
/// message, or only its beginning).
pub fn grpc_frame(announced: u32, body: &[u8]) -> bytes::Bytes {
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&announced.to_be_bytes());
    frame.extend_from_slice(body);
    frame.into()
}

/// One whole call of `method` of `multipass.Rpc` on `send`: the request `message` (encoded
/// protobuf), then the answer read to its end. The call's `grpc-status` (`"0"` is OK).
pub async fn h2_call(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    method: &str,
    message: &[u8],
) -> Result<String, BoxError> {
    *send = send.clone().ready().await?;
    let (response, mut body) = send.send_request(grpc_request(method), false)?;
    body.send_data(grpc_frame(message.len() as u32, message), true)?;
    let response = response.await?;
    // A refusal before any message comes as headers only.
    if let Some(status) = response.headers().get("grpc-status") {
        return Ok(status.to_str()?.to_string());
    }
    let mut replies = response.into_body();
    while let Some(data) = replies.data().await {
        let data = data?;
        let _ = replies.flow_control().release_capacity(data.len());
    }
    let trailers = replies.trailers().await?.ok_or("no trailers")?;
    let status = trailers.get("grpc-status").ok_or("no grpc-status")?;
    Ok(status.to_str()?.to_string())
}
