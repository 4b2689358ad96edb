//! Connections that stall their handshake, send garbage, or come without a client certificate
//! neither block nor confuse the daemon: a trusted client is served promptly meanwhile, and the
//! certificate-less client is refused with UNAUTHENTICATED.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multipass_system_tests::{grpc, Fixture, NOT_AUTHENTICATED};

const STALLED: usize = 50;
const GARBAGE: usize = 20;

fn hostile_connections_do_not_disturb() {
    let Fixture(_dir, _admins, a, [], mut daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first admin client `list`");
    let baseline = daemon.run_as(&a, &["list"], None);
    baseline.assert_code(0, "A `list` (baseline)");

    // (a) Connections that never say anything.
    let stalled: Vec<UnixStream> = (0..STALLED)
        .map(|i| {
            UnixStream::connect(daemon.socket())
                .unwrap_or_else(|e| panic!("stalled connection {i}: {e}"))
        })
        .collect();
    // (b) Connections that send garbage, and then keep quiet.
    let garbled: Vec<UnixStream> = (0..GARBAGE)
        .map(|i| {
            let mut s = UnixStream::connect(daemon.socket())
                .unwrap_or_else(|e| panic!("garbage connection {i}: {e}"));
            // The daemon may already have closed it: that is fine.
            let _ = s.write_all(&multipass_system_tests::clients::garbage(i));
            s
        })
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        // (c) A real TLS client without a client certificate.
        let no_cert = grpc::client_config(&daemon.root_cert(), None).expect("client config");
        let channel = tokio::time::timeout(
            Duration::from_secs(10),
            grpc::channel(daemon.socket(), no_cert),
        )
        .await
        .expect("TLS handshake without client certificate timed out")
        .expect("TLS handshake without a client certificate should complete");
        let status = grpc::list(channel.clone())
            .await
            .expect_err("`list` without a client certificate must be refused");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "`list` without a client certificate: {status:?}"
        );
        assert_eq!(
            status.message(),
            NOT_AUTHENTICATED,
            "message of the refusal"
        );
        let status = grpc::ping(channel.clone())
            .await
            .expect_err("`ping` answers OK only to a trusted client (docs/CONTRACT.md)");
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "`ping` without a client certificate: {status:?}"
        );

        // Positive control: the same client code with A's certificate is served.
        let with_a =
            grpc::client_config(&daemon.root_cert(), Some((&a.cert_path(), &a.key_path())))
                .expect("client config with A's identity");
        let a_channel = grpc::channel(daemon.socket(), with_a)
            .await
            .expect("TLS handshake with A's certificate");
        let replies = grpc::list(a_channel.clone())
            .await
            .expect("`list` over our own client with A's certificate");
        let instances: usize = replies
            .iter()
            .map(|r| match &r.list_contents {
                Some(rpc::proto::list_reply::ListContents::InstanceList(l)) => l.instances.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(instances, 0, "this service manages no instances");
        grpc::ping(a_channel)
            .await
            .expect("`ping` from a trusted client");

        // While all of the above are open, the CLI as A is served promptly.
        let start = Instant::now();
        let out = tokio::task::block_in_place(|| daemon.run_as(&a, &["list"], None));
        let latency = start.elapsed();
        out.assert_code(0, "A `list` amid hostile connections");
        println!(
            "A `list` latency: {latency:?} amid {STALLED} stalled, {GARBAGE} garbage and 1 \
             certificate-less connections (baseline {:?})",
            baseline.elapsed
        );
        assert!(
            latency < Duration::from_secs(5),
            "A `list` took {latency:?} amid hostile connections"
        );
        // The certificate-less channel is still refused, not confused.
        let status = grpc::list(channel)
            .await
            .expect_err("`list` without a client certificate, again");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    });

    drop(stalled);
    drop(garbled);
    assert!(
        daemon.is_running(),
        "multipassd died under hostile connections"
    );
    assert_eq!(
        daemon.store_certs(),
        vec![a.cert_der()],
        "hostile connections must not change the store"
    );
}

multipass_system_tests::process_tests! {
    root: [hostile_connections_do_not_disturb],
}
