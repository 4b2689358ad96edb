//! A connection with no request in flight is closed after the idle limit (hidden flag
//! `--connection-idle-timeout`; 60 s by default, documented in docs/SECURITY.md), even while its
//! client answers and sends HTTP/2 keepalive pings; a connection that keeps making requests is
//! not.

use std::time::{Duration, Instant};

use multipass_system_tests::{clients, grpc, DaemonConfig, Fixture};

/// The idle limit the daemon is started with, seconds.
const IDLE: u64 = 3;

fn idle_connections_are_closed() {
    let Fixture(_dir, _admins, admin, [], daemon) = Fixture::open_configured(DaemonConfig {
        extra_args: vec!["--connection-idle-timeout".into(), IDLE.to_string()],
        ..DaemonConfig::default()
    });
    daemon
        .run_as(&admin, &["list"], None)
        .assert_code(0, "the first client");
    let trusted = grpc::client_config(
        &daemon.root_cert(),
        Some((&admin.cert_path(), &admin.key_path())),
    )
    .unwrap();
    let idle = Duration::from_secs(IDLE);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connect = || async {
            let stream = tokio::net::UnixStream::connect(daemon.socket())
                .await
                .expect("connect");
            grpc::h2_over(stream, trusted.clone())
                .await
                .expect("an HTTP/2 connection")
        };
        // An authenticated connection that makes one request, then only answers and sends
        // pings.
        let mut quiet = connect().await;
        let request_sent = Instant::now();
        let status = grpc::h2_call(&mut quiet.send, "list", &[]).await.unwrap();
        assert_eq!(status, "0", "the trusted client's `list`");
        let last_request = Instant::now();
        let mut pings = quiet.pings;
        let pinger = tokio::spawn(async move {
            let mut answered = 0u32;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                match pings.ping(h2::Ping::opaque()).await {
                    Ok(_) => answered += 1,
                    Err(_) => return answered,
                }
            }
        });
        // One that never makes a request at all.
        let silent_connecting = Instant::now();
        let silent = connect().await;
        let silent_since = Instant::now();
        // One that makes a request every half second, over more than twice the limit.
        let mut busy = connect().await;
        let busy_since = Instant::now();
        let mut busy_calls = 0;
        while busy_since.elapsed() < idle * 5 / 2 {
            let status = grpc::h2_call(&mut busy.send, "list", &[])
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "a connection making requests was cut after {:.1?}: {e}",
                        busy_since.elapsed()
                    )
                });
            assert_eq!(status, "0");
            busy_calls += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(!busy.ended.is_finished(), "the busy connection was closed");

        let quiet_closed = tokio::time::timeout(Duration::from_secs(5), quiet.ended)
            .await
            .expect("the idle connection was never closed")
            .unwrap();
        let silent_closed = tokio::time::timeout(Duration::from_secs(5), silent.ended)
            .await
            .expect("the connection that never made a request was never closed")
            .unwrap();
        let pongs = pinger.await.unwrap();
        let quiet_after = quiet_closed - last_request;
        let silent_after = silent_closed - silent_since;
        multipass_system_tests::figure(&format!(
            "idle_connections_are_closed: limit {IDLE} s; closed {quiet_after:.1?} after its \
             last request (answering {pongs} pings meanwhile), {silent_after:.1?} after \
             connecting without a request; a connection with a request every 0.5 s served \
             {busy_calls} calls over {:.1?} and stayed open",
            busy_since.elapsed()
        ));
        // The daemon's clock starts between the request's sending and the client's reading the
        // answer (between connecting and the end of the handshake, for the silent one): the
        // lower bound is taken from before, the upper from after.
        for (what, from_before, after) in [
            ("idle", quiet_closed - request_sent, quiet_after),
            ("silent", silent_closed - silent_connecting, silent_after),
        ] {
            assert!(
                from_before >= idle && after < idle + Duration::from_secs(2),
                "the {what} connection was closed {from_before:.1?} after the client began, \
                 {after:.1?} after it was done, limit {idle:?}"
            );
        }
        assert!(
            pongs >= 4,
            "the idle connection answered only {pongs} pings: keepalive was not exercised"
        );
        // The daemon still serves a new connection of the same client.
        let channel = grpc::channel(daemon.socket(), trusted.clone())
            .await
            .unwrap();
        clients::list(channel)
            .await
            .expect("list after the idle close");
    });
}

multipass_system_tests::process_tests! {
    root: [idle_connections_are_closed],
}
