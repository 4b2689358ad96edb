//! Local users together cannot take the daemon's last file descriptor. Each user may hold 64
//! connections, and there may be many users: the daemon caps the connections of everyone but
//! root below its open-file limit, so that root's connections and its own files always find a
//! descriptor. Run with a limit of 256, four users try 256 connections: the first two fill the cap
//! (128), the other two are closed at once, and root is served meanwhile. Root, who is not
//! limited, can still exhaust the descriptors: the daemon then says so once a second, not once
//! per retry of `accept`, and serves again when they come back.

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, closed_by_daemon, connect_as, count_closed};
use multipass_system_tests::{Group, TestDir, User};

const PASSPHRASE: &str = "descriptor-cap-pass";
/// The daemon's open-file limit, soft and hard.
const OPEN_FILES: u64 = 256;
/// What the daemon leaves for connections of everyone but root: the limit less
/// `multipassd::descriptors::RESERVED` (128).
const CAP: usize = 128;
/// `IncomingOptions::max_connections_per_peer`.
const PER_USER: usize = 64;
const USERS: usize = 4;
const OUT_OF_DESCRIPTORS: &str = "the daemon has no file descriptor left";

fn connections_capped_in_all() {
    let dir = TestDir::new();
    let scratch = dir.subdir("scratch");
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let users: Vec<User> = (0..USERS).map(|_| User::create(&dir, None)).collect();
    let daemon =
        clients::daemon_for_stalled_connections(&dir, &admins, &a, PASSPHRASE, Some(OPEN_FILES));
    let socket = daemon.socket().to_path_buf();
    let lowered = daemon
        .log()
        .lines()
        .find(|l| l.contains("the open-file limit leaves room for"))
        .map(str::to_owned);

    // Users in turn: the first two fill the cap, the others are closed at once.
    let mut per_user: Vec<Vec<UnixStream>> = users
        .iter()
        .map(|u| connect_as(u, &socket, PER_USER, &scratch))
        .collect();
    let closed: Vec<usize> = per_user
        .iter_mut()
        .map(|streams| count_closed(streams, Duration::from_secs(1)))
        .collect();
    let fds_held = multipass_system_tests::procfs::fd_count(daemon.pid());
    // Root is served meanwhile: it is not limited, and descriptors are left for it.
    let root_list = daemon.run_as_root(&["list"], None);

    // A connection given back makes room for one more of another user's.
    per_user[0].pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    let room_again = loop {
        let mut one = connect_as(&users[USERS - 1], &socket, 1, &scratch);
        if !closed_by_daemon(&mut one[0], Duration::from_millis(300)) {
            per_user[USERS - 1].extend(one);
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    let before_root = daemon.log();

    // Root is not limited: enough of its connections exhaust the descriptors. The daemon backs
    // off and retries `accept`, logging it collapsed, and serves again once they are closed.
    let root_flood: Vec<UnixStream> = (0..OPEN_FILES as usize - CAP)
        .map(|i| UnixStream::connect(&socket).unwrap_or_else(|e| panic!("root's {i}: {e}")))
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    drop(root_flood);
    let after_flood = Instant::now();
    let served_again = loop {
        let out = daemon.run_as_root(&["list"], None);
        if out.code == Some(0) || after_flood.elapsed() > Duration::from_secs(10) {
            break out;
        }
    };
    let log = daemon.log();
    let exhausted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(OUT_OF_DESCRIPTORS))
        .collect();

    multipass_system_tests::figure(&format!(
        "connections_capped_in_all: open-file limit {OPEN_FILES}; of {PER_USER} connections per \
         user, closed at once: {closed:?}; daemon descriptors held: {fds_held}; root served: {}; \
         room again after one closed: {room_again}; root's flood of {}: {} lines saying so over \
         3 s, served again {:.1?} after",
        root_list.code == Some(0),
        OPEN_FILES as usize - CAP,
        exhausted.len(),
        after_flood.elapsed(),
    ));
    let lowered = lowered.expect("the daemon should say the limit lowered its connection cap");
    assert!(
        lowered.contains(&format!("room for {CAP} connections")),
        "{lowered}"
    );
    assert_eq!(
        closed,
        vec![0, 0, PER_USER, PER_USER],
        "the first two users fill the cap; the others' connections are closed at once"
    );
    assert!(
        fds_held < OPEN_FILES as usize - 64,
        "the users' connections left too few descriptors: {fds_held} of {OPEN_FILES}"
    );
    root_list.assert_code(0, "root is served while the users hold the cap");
    assert!(room_again, "a closed connection must give its place back");
    assert!(
        before_root
            .lines()
            .any(|l| l.contains("too many connections open")),
        "the refusals should be logged"
    );
    assert!(
        !before_root.contains(OUT_OF_DESCRIPTORS),
        "users other than root must not exhaust the descriptors"
    );
    assert!(
        !exhausted.is_empty(),
        "root's flood should have exhausted the descriptors (the test's premise)"
    );
    assert!(
        exhausted.len() <= 5,
        "running out of descriptors is logged at most once a second: {} lines in about 3 s",
        exhausted.len()
    );
    served_again.assert_code(0, "root is served once its flood is gone");
}

multipass_system_tests::process_tests! {
    root: [connections_capped_in_all],
}
