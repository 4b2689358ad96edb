//! On TCP, as on the Unix socket per user, one peer may hold at most 64 connections: beyond
//! that its new connections are closed at once. A peer is an address, but loopback counts as one
//! peer (any local user may connect from any of 127.0.0.0/8), so moving to 127.0.0.2 does not get
//! past the cap. A connection given back makes room for another; its handshake then waits
//! behind the address's stalled ones (16 in progress per peer), which is why that is checked
//! on the connection and not with a TLS client.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use multipass_system_tests::clients::{closed_by_daemon, count_closed};
use multipass_system_tests::{grpc, Daemon, DaemonConfig, Group, TestDir};

/// `IncomingOptions::max_connections_per_peer`.
const CAP: usize = 64;
const OVER: usize = 8;

/// Whether a new TLS connection from `from` is served: `ping` without a client certificate is
/// answered UNAUTHENTICATED.
fn served_from(
    from: &str,
    daemon: &SocketAddr,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let attempt = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(format!("{from}:0").parse()?)?;
            let stream = socket.connect(*daemon).await?;
            let mut conn = grpc::h2_over(stream, config.clone()).await?;
            grpc::h2_call(&mut conn.send, "ping", &[]).await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(status)) => status == "16",
            _ => false,
        }
    })
}

fn tcp_connections_capped_per_address() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let daemon = Daemon::start_with(
        &dir,
        &admins,
        DaemonConfig {
            tcp: true,
            // Connections that never start TLS must outlive the test.
            extra_args: vec!["--handshake-timeout".into(), "120".into()],
            ..DaemonConfig::default()
        },
    );
    let addr: SocketAddr = daemon.address.parse().unwrap();
    let config = grpc::client_config(&daemon.root_cert(), None).unwrap();

    // Up to the cap, connections from 127.0.0.1 stay open (they never start TLS)...
    let mut held: Vec<TcpStream> = (0..CAP)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let held_closed = count_closed(&mut held, Duration::from_millis(300));
    // ...and beyond it they are closed at once.
    let mut over: Vec<TcpStream> = (0..OVER)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let over_closed = count_closed(&mut over, Duration::from_secs(2));
    let same_address = served_from("127.0.0.1", &addr, &config);
    // Another loopback address is the same peer.
    let other_address = served_from("127.0.0.2", &addr, &config);
    // A connection given back makes room for one more.
    // The place comes back once the daemon has seen the close; tried until then, for 5 s.
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let after_one_closed = loop {
        let mut one = TcpStream::connect(addr).unwrap();
        if !closed_by_daemon(&mut one, Duration::from_millis(300)) {
            held.push(one);
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
    };
    multipass_system_tests::figure(&format!(
        "tcp_connections_capped_per_address: {CAP} connections from 127.0.0.1 held \
         ({held_closed} closed), {over_closed} of {OVER} more closed at once, a TLS client from \
         127.0.0.1 served: {same_address}, from 127.0.0.2: {other_address}, a connection from \
         127.0.0.1 kept once one closed: {after_one_closed}"
    ));
    assert_eq!(held_closed, 0, "connections within the cap were closed");
    assert_eq!(
        over_closed, OVER,
        "connections beyond the cap must be closed at once"
    );
    assert!(!same_address, "a client beyond the cap was served");
    assert!(
        !other_address,
        "another loopback address is the same peer, beyond the cap too"
    );
    assert!(
        after_one_closed,
        "a closed connection must give its place back"
    );
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("too many connections") && l.contains("addresses 127.0.0.0/8")),
        "the refusals should be logged with the address"
    );
}

multipass_system_tests::process_tests! {
    root: [tcp_connections_capped_per_address],
}
