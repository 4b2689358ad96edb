//! Connections that never finish their TLS handshake cost their own user, and never keep root
//! out. A handshake is in progress once its client has sent something; each user may have 16
//! in progress (its others wait for one of them to end), and all users together 512, root's
//! aside. Here 32 users each open 20 connections that send the first byte of a handshake and no
//! more: 16 of each take a place and 4 wait, none is closed. The places are then full: a 33rd
//! user's handshake is closed at once, while a connection of its that has sent nothing waits,
//! holding no place, and root is served.

use std::io::Write;
use std::time::Duration;

use multipass_system_tests::clients::{self, closed_by_daemon, connect_as, count_closed};
use multipass_system_tests::{Group, TestDir, User};

const PASSPHRASE: &str = "handshakes-pass";
/// `IncomingOptions::max_handshakes_per_peer`.
const PER_USER: usize = 16;
/// `IncomingOptions::max_pending_handshakes`.
const IN_ALL: usize = 512;
/// Connections each user opens: its places, and some that wait.
const OPENED: usize = PER_USER + 4;
const USERS: usize = IN_ALL / PER_USER;
const FULL: &str = "too many TLS handshakes in progress";

fn handshakes_in_progress_bounded() {
    let dir = TestDir::new();
    let scratch = dir.subdir("scratch");
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let users: Vec<User> = (0..=USERS).map(|_| User::create(&dir, None)).collect();
    let daemon = clients::daemon_for_stalled_connections(&dir, &admins, &a, PASSPHRASE, None);
    let socket = daemon.socket().to_path_buf();

    let (stalling, late) = users.split_at(USERS);
    // The first byte of a TLS record (a handshake's), and no more.
    let speak = |streams: &mut Vec<std::os::unix::net::UnixStream>| {
        for stream in streams.iter_mut() {
            stream.write_all(&[0x16]).unwrap();
        }
    };
    let mut held: Vec<_> = stalling
        .iter()
        .map(|u| {
            let mut streams = connect_as(u, &socket, OPENED, &scratch);
            speak(&mut streams);
            streams
        })
        .collect();
    let closed: usize = held
        .iter_mut()
        .map(|streams| count_closed(streams, Duration::from_millis(200)))
        .sum();
    let before_late = daemon.log();
    let mut silent = connect_as(&late[0], &socket, 1, &scratch);
    let mut one = connect_as(&late[0], &socket, 1, &scratch);
    speak(&mut one);
    let late_closed = closed_by_daemon(&mut one[0], Duration::from_secs(2));
    let silent_closed = closed_by_daemon(&mut silent[0], Duration::from_millis(200));
    let root_list = daemon.run_as_root(&["list"], None);
    let log = daemon.log();

    multipass_system_tests::figure(&format!(
        "handshakes_in_progress_bounded: {USERS} users x {OPENED} stalled handshakes, closed: \
         {closed}; a further user's handshake closed: {late_closed}, its silent connection \
         closed: {silent_closed}; root served: {}",
        root_list.code == Some(0)
    ));
    assert_eq!(
        closed, 0,
        "a user's connections beyond its {PER_USER} places wait, and {USERS} users' places fit"
    );
    assert!(
        !before_late.contains(FULL),
        "the stalled connections fit the places in all"
    );
    assert!(
        late_closed,
        "with every place taken, a further user's connection is closed at once"
    );
    assert!(
        !silent_closed,
        "a connection that has sent nothing holds no place and is not refused one"
    );
    assert!(log.contains(FULL), "the refusal should be logged");
    root_list.assert_code(0, "root is served while the places are full");
    drop(held);
}

multipass_system_tests::process_tests! {
    root: [handshakes_in_progress_bounded],
}
