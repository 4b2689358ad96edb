//! The TLS posture of the Unix socket.
//! - TLS 1.3 only: a client offering only TLS 1.2 is refused.
//! - Without a client certificate only `authenticate` is served (and it has nothing to trust);
//!   every other method, `ping` included, answers UNAUTHENTICATED.
//! - A client that presents a trusted certificate but signs the handshake with another key (a
//!   copied certificate without its key) is refused: the handshake signature is verified.

use std::sync::Arc;

use multipass_system_tests::clients::{self, MemoryIdentity};
use multipass_system_tests::{grpc, Daemon, Fixture, NOT_AUTHENTICATED};
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::*;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::Channel;
use tonic::Code;

/// Presents one certificate and signs with whatever key it was given.
#[derive(Debug)]
struct Forged(Arc<CertifiedKey>);

impl ResolvesClientCert for Forged {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn roots(daemon: &Daemon) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(daemon.root_cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A client presenting `cert` while signing with `key`.
fn forged_config(
    daemon: &Daemon,
    cert: CertificateDer<'static>,
    key: &PrivateKeyDer<'_>,
) -> Arc<rustls::ClientConfig> {
    let signer = rustls::crypto::ring::sign::any_ecdsa_type(key).expect("an ECDSA key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(daemon))
        .with_client_cert_resolver(Arc::new(Forged(Arc::new(CertifiedKey::new(
            vec![cert],
            signer,
        )))));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Whether `list` succeeds over a fresh connection with `config`; the error otherwise.
async fn list_with(daemon: &Daemon, config: Arc<rustls::ClientConfig>) -> Result<(), String> {
    let channel = grpc::channel(daemon.socket(), config)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    clients::list(channel)
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

macro_rules! call_each {
    ($client:expr, $($method:ident($request:ty)),* $(,)?) => {{
        let mut results: Vec<(&'static str, Result<(), tonic::Status>)> = Vec::new();
        $(
            // Spelled out: `clone` would otherwise be `Clone::clone`.
            let outcome = match RpcClient::<Channel>::$method(
                &mut $client,
                tokio_stream::iter(vec![<$request>::default()]),
            )
            .await
            {
                Ok(response) => {
                    let mut replies = response.into_inner();
                    let mut end = Ok(());
                    loop {
                        match replies.message().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => break,
                            Err(s) => {
                                end = Err(s);
                                break;
                            }
                        }
                    }
                    end
                }
                Err(s) => Err(s),
            };
            results.push((stringify!($method), outcome));
        )*
        results
    }};
}

async fn every_method(channel: Channel) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut client = RpcClient::new(channel);
    let mut results = call_each!(
        client,
        create(LaunchRequest),
        launch(LaunchRequest),
        purge(PurgeRequest),
        find(FindRequest),
        info(InfoRequest),
        list(ListRequest),
        networks(NetworksRequest),
        mount(MountRequest),
        recover(RecoverRequest),
        ssh_info(SshInfoRequest),
        start(StartRequest),
        stop(StopRequest),
        suspend(SuspendRequest),
        restart(RestartRequest),
        delet(DeleteRequest),
        umount(UmountRequest),
        version(VersionRequest),
        get(GetRequest),
        set(SetRequest),
        keys(KeysRequest),
        snapshot(SnapshotRequest),
        restore(RestoreRequest),
        clone(CloneRequest),
        daemon_info(DaemonInfoRequest),
        wait_ready(WaitReadyRequest),
    );
    results.push(("ping", client.ping(PingRequest {}).await.map(|_| ())));
    results
}

fn tls_posture() {
    let Fixture(_dir, _admins, a, [], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first client");
    daemon
        .run_as(&a, &["set", "local.passphrase"], Some("posture\nposture\n"))
        .assert_code(0, "passphrase");
    let store_before = daemon.store_certs();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let a_cert = CertificateDer::from_pem_file(a.cert_path()).unwrap();
    let a_key = PrivateKeyDer::from_pem_file(a.key_path()).unwrap();

    runtime.block_on(async {
        // Positive control: A's own certificate and key, TLS 1.3.
        list_with(&daemon, forged_config(&daemon, a_cert.clone(), &a_key))
            .await
            .expect("A with its own key (the control)");

        // TLS 1.2 only: refused during the handshake.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls12 = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots(&daemon))
            .with_client_auth_cert(vec![a_cert.clone()], a_key.clone_key())
            .unwrap();
        tls12.alpn_protocols = vec![b"h2".to_vec()];
        let refused = list_with(&daemon, Arc::new(tls12))
            .await
            .expect_err("a TLS 1.2-only client must be refused");
        multipass_system_tests::figure(&format!("tls_posture: TLS 1.2-only client: {refused}"));

        // A trusted certificate, signed for with another key: refused.
        let other = MemoryIdentity::new(&daemon);
        let (_, other_key) = tls::pki::new_client_cert(time::OffsetDateTime::now_utc()).unwrap();
        let b_key = PrivateKeyDer::try_from(other_key.serialize_der()).unwrap();
        let forged = list_with(&daemon, forged_config(&daemon, a_cert.clone(), &b_key))
            .await
            .expect_err("A's certificate with another key must be refused");
        multipass_system_tests::figure(&format!(
            "tls_posture: A's trusted certificate signed for with another key: {forged}"
        ));
        // And an untrusted certificate with the key of a trusted one: just untrusted.
        let swapped = list_with(
            &daemon,
            forged_config(&daemon, CertificateDer::from(other.der.clone()), &a_key),
        )
        .await
        .expect_err("another certificate with A's key must be refused");
        multipass_system_tests::figure(&format!(
            "tls_posture: an untrusted certificate signed for with A's key: {swapped}"
        ));

        // No client certificate: only `authenticate` is reachable.
        let no_cert = grpc::client_config(&daemon.root_cert(), None).unwrap();
        let channel = grpc::channel(daemon.socket(), no_cert)
            .await
            .expect("TLS without a certificate");
        let results = every_method(channel.clone()).await;
        assert_eq!(results.len(), 26, "every method but authenticate");
        for (method, result) in &results {
            let status = result.as_ref().expect_err(method);
            assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
            assert_eq!(status.message(), NOT_AUTHENTICATED, "{method}");
        }
        // `authenticate` is served, even with the right passphrase there is nothing to trust.
        let status = clients::authenticate(channel.clone(), "posture")
            .await
            .expect_err("authenticate without a certificate");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status
                .message()
                .starts_with("No client certificate was presented"),
            "authenticate was not served: {status:?}"
        );
        multipass_system_tests::figure(&format!(
            "tls_posture: without a client certificate, {} methods answered UNAUTHENTICATED \
             ({}); authenticate answered {:?}",
            results.len(),
            results
                .iter()
                .map(|(m, _)| *m)
                .collect::<Vec<_>>()
                .join(", "),
            status.message()
        ));
    });
    assert_eq!(daemon.store_certs(), store_before, "nothing was trusted");
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A after all that");
    let log = daemon.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("TLS handshake failed"))
        .collect();
    multipass_system_tests::figure(&format!(
        "tls_posture: the daemon's log of the refusals:\n  {}",
        refusals.join("\n  ")
    ));
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("Tls12NotOfferedOrEnabled")),
        "the TLS 1.2 refusal should be logged at -v"
    );
    // Each forged client tries at least once (tonic's channel may dial again).
    assert!(
        refusals
            .iter()
            .filter(|l| l.contains("BadSignature"))
            .count()
            >= 2,
        "both forged handshakes should be refused for their signature"
    );
}

multipass_system_tests::process_tests! {
    root: [tls_posture],
}
