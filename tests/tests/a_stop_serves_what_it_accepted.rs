//! A daemon told to stop (SIGTERM: `systemctl stop`, a package upgrade) serves the connections
//! it had accepted, as an idle exit does: a command whose connection was made just before the
//! signal, and whose request comes just after, is answered rather than told to go away. What
//! is still queued on the socket waits for the next start.

use std::time::{Duration, Instant};

use multipass_system_tests::clients::connect_as;
use multipass_system_tests::{grpc, Fixture};

fn a_stop_serves_what_it_accepted() {
    let Fixture(dir, _admins, a, [], mut daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "the first client");
    let connections = connect_as(&a, daemon.socket(), 1, &dir.subdir("scratch"));
    let config = grpc::client_config(&daemon.root_cert(), Some((&a.cert_path(), &a.key_path())))
        .expect("a client configuration");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conn = runtime.block_on(async {
        grpc::h2_over_unix(connections.into_iter().next().unwrap(), config)
            .await
            .expect("a connection, TLS and HTTP/2 set up")
    });

    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // The signal is seen before the request comes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("shutting down") {
        assert!(
            Instant::now() < deadline,
            "SIGTERM not seen:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Whatever the daemon sends on the stop (a GOAWAY, if it told its connections to go away)
    // has reached the client once a ping sent after it is answered.
    std::thread::sleep(Duration::from_millis(300));
    let pong = runtime.block_on(conn.pings.ping(h2::Ping::opaque()));
    assert!(pong.is_ok(), "no answer to a ping: {pong:?}");
    let status = runtime.block_on(grpc::h2_call(&mut conn.send, "ping", &[]));
    assert_eq!(
        status.as_deref().ok(),
        Some("0"),
        "a request on a connection accepted before the stop: {status:?}\n{}",
        daemon.log()
    );
    drop(conn);
    drop(runtime);
    let exit = daemon.stop();
    assert!(exit.success(), "{exit}\n{}", daemon.log());
}

multipass_system_tests::process_tests! {
    root: [a_stop_serves_what_it_accepted],
}
