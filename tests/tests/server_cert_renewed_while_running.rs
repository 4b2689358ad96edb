//! A server certificate made to expire quickly (valid 4 s, renewed 2 s
//! before expiry) is renewed while the daemon runs. New handshakes get the new certificate, which
//! verifies against the unchanged root CA; a connection made before the renewal keeps working; and
//! `multipass list` works after the first certificate has expired. The renewal is an audit event.

use std::time::{Duration, Instant};

use multipass_system_tests::{audit_events, grpc, read_until, sha256_hex, DaemonConfig, Fixture};

fn server_cert_renewed_while_running() {
    let Fixture(_dir, _admins, a, [], daemon) = Fixture::open_configured(DaemonConfig {
        verbosity: 1,
        extra_args: [
            "--server-cert-validity",
            "4",
            "--server-cert-renew-before",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..DaemonConfig::default()
    });
    let started = Instant::now();
    let root_ca = std::fs::read(daemon.root_cert()).expect("read the root CA");
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let config =
            grpc::client_config(&daemon.root_cert(), Some((&a.cert_path(), &a.key_path())))
                .expect("client config with A's identity");
        let before = grpc::served_leaf(daemon.socket(), config.clone())
            .await
            .expect("handshake before the renewal");
        // A connection made now, used again after the renewal.
        let early = grpc::channel(daemon.socket(), config.clone())
            .await
            .expect("channel before the renewal");
        grpc::list(early.clone())
            .await
            .expect("`list` on the early connection");

        // Every handshake verifies the server against the root CA (and its validity period).
        let deadline = Instant::now() + Duration::from_secs(15);
        let after = loop {
            let leaf = grpc::served_leaf(daemon.socket(), config.clone())
                .await
                .expect("handshake while the certificate is being renewed");
            if leaf != before {
                break leaf;
            }
            assert!(
                Instant::now() < deadline,
                "the server certificate was not renewed within 15 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!(
            "renewed after {:?}: {} -> {}",
            started.elapsed(),
            &sha256_hex(&before)[..16],
            &sha256_hex(&after)[..16]
        );
        grpc::list(early)
            .await
            .expect("`list` on the connection made before the renewal");

        // Past the first certificate's expiry, new handshakes still succeed.
        let first_expired = started + Duration::from_secs(5);
        tokio::time::sleep(first_expired.saturating_duration_since(Instant::now())).await;
        let later = grpc::served_leaf(daemon.socket(), config.clone())
            .await
            .expect("handshake after the first certificate expired");
        assert_ne!(later, before, "the expired certificate is still served");
    });
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` after the first certificate expired");
    assert_eq!(
        std::fs::read(daemon.root_cert()).expect("read the root CA"),
        root_ca,
        "renewal must keep the root CA that clients verify against"
    );

    // The second renewal is due about 4 s after the start; it writes files with fsync, so it is
    // looked for until it has been logged, not at one moment.
    let log = read_until(
        Duration::from_secs(15),
        || daemon.log(),
        |log| audit_events(log, "server-certificate-renewed").len() >= 2,
    );
    let renewed = audit_events(&log, "server-certificate-renewed");
    assert!(
        renewed.len() >= 2,
        "a 4-second certificate renewed 2 s early is renewed repeatedly (looked for 15 s after \
         the first expired):\n{}",
        renewed.join("\n")
    );
}

multipass_system_tests::process_tests! {
    root: [server_cert_renewed_while_running],
}
