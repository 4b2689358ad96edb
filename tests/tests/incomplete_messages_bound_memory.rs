//! One local user opens as many connections as the daemon lets it (64), as many streams on each
//! as HTTP/2 lets it (16), and on every stream sends all but the last byte of a 64 KiB request
//! (the largest the daemon accepts), then waits. The daemon's memory must not grow by more than
//! the bound docs/SECURITY.md states, while a trusted client is still served.

use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, connect_as};
use multipass_system_tests::{grpc, procfs, Fixture};

/// The per-user connection limit (`rpc::server::IncomingOptions`).
const CONNECTIONS: usize = 64;
/// The per-connection stream limit (`daemon/src/server.rs`).
const STREAMS: usize = 16;
/// Requests one user may have in flight (`daemon::server::MAX_REQUESTS_PER_PEER`): the streams
/// the daemon holds, each with its incomplete message; it refuses the others at once.
const IN_FLIGHT: usize = 64;
/// The largest request message the daemon accepts (`daemon::server::MAX_REQUEST_BYTES`).
const MESSAGE: usize = 64 * 1024;
/// The bound of docs/SECURITY.md ("Hostile connections cost little"): growth of the daemon's
/// peak RSS under this attack.
const BOUND_MIB: u64 = 16;

fn incomplete_messages_bound_memory() {
    // The 64 connections are accepted at once and their handshakes made one after another,
    // each followed by its streams: on a loaded machine that may outlast the default 10 s
    // handshake timeout, which this test is not about.
    let Fixture(dir, _admins, admin, [hog], daemon) = Fixture::open_with(|dir, admins| {
        clients::quiet_daemon(dir, admins, &["--handshake-timeout", "60"])
    });
    let scratch = dir.subdir("scratch");
    daemon
        .run_as(&admin, &["list"], None)
        .assert_code(0, "the first client");
    let pid = daemon.pid();
    let idle_fds = procfs::fd_count(pid);
    // Warm up the paths every connection takes (TLS, HTTP/2, a refused request), so that the
    // figures compare the attack with a daemon that has served, not with a fresh one.
    daemon.run_as(&hog, &["list"], None);
    // That connection counts against the hog's 64 until the daemon has closed it.
    procfs::wait_fd_count(pid, idle_fds, Duration::from_secs(5));
    let (rss_before, hwm_before) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));

    let connections = connect_as(&hog, daemon.socket(), CONNECTIONS, &scratch);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = grpc::client_config(&daemon.root_cert(), None).unwrap();
    let started = Instant::now();
    let (held, opened, refused) = runtime.block_on(async {
        let (conns, mut streams) = grpc::open_calls(
            connections,
            config,
            STREAMS,
            || grpc::grpc_request("authenticate"),
            grpc::grpc_frame(MESSAGE as u32, &vec![b'x'; MESSAGE - 1]),
            false,
        )
        .await;
        let (opened, mut refused) = (streams.len(), 0);
        // Let the daemon read what it will of the messages.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (response, _) in streams.iter_mut() {
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(1), response).await {
                if r.headers().get("grpc-status").is_some_and(|v| v != "0") {
                    refused += 1;
                }
            }
        }
        ((streams, conns), opened, refused)
    });
    let (rss_during, hwm_during) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    let attack = started.elapsed();

    // A trusted client is still served meanwhile.
    daemon
        .run_as(&admin, &["list"], None)
        .assert_code(0, "the trusted client during the attack");

    drop(held);
    drop(runtime);
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = procfs::rss_kib(pid);
    let growth_kib = hwm_during.saturating_sub(hwm_before);
    multipass_system_tests::figure(&format!(
        "incomplete_messages_bound_memory: one user, {CONNECTIONS} connections x {STREAMS} \
         streams, {opened} streams sending {MESSAGE} bytes less one ({refused} refused by the \
         daemon) over {attack:.1?}: RSS {rss_before} KiB before, {rss_during} KiB during, \
         {rss_after} KiB 2 s after; peak RSS (VmHWM) {hwm_before} KiB before, {hwm_during} KiB \
         during: grew by {} KiB (bound {BOUND_MIB} MiB)",
        growth_kib
    ));
    // The bound means something only if the daemon held messages while it was measured.
    assert!(
        opened >= CONNECTIONS * (STREAMS - 1),
        "only {opened} streams were opened"
    );
    let held = opened - refused;
    assert!(
        (IN_FLIGHT / 2..=IN_FLIGHT).contains(&held),
        "the daemon held {held} incomplete requests, where it holds up to {IN_FLIGHT} of one user"
    );
    assert!(
        growth_kib <= BOUND_MIB << 10,
        "the daemon's peak RSS grew by {growth_kib} KiB, above the documented {BOUND_MIB} MiB"
    );
}

multipass_system_tests::process_tests! {
    root: [incomplete_messages_bound_memory],
}
