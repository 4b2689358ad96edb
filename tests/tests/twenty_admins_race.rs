//! Twenty admins race to be the first client: the decision is taken under a lock, so exactly one
//! wins and the store holds exactly its certificate.

use std::sync::{Arc, Barrier};

use multipass_system_tests::{Daemon, Group, TestDir, User};

const RACERS: usize = 20;

fn twenty_admins_race() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let users: Vec<User> = (0..RACERS)
        .map(|_| User::create(&dir, Some(&admins)))
        .collect();
    let daemon = Daemon::start(&dir, &admins);

    // Create every client certificate beforehand, so that the race is on the RPC. `authenticate`
    // is not gated, so it cannot make anyone the first client (no passphrase is set: it fails).
    for user in &users {
        daemon.ensure_client_cert(user, &["authenticate"], Some("cert-bootstrap\n"));
    }
    assert!(
        daemon.store_certs().is_empty(),
        "creating certificates must not trust anybody"
    );

    let barrier = Arc::new(Barrier::new(RACERS));
    let outputs = std::thread::scope(|scope| {
        let handles: Vec<_> = users
            .iter()
            .map(|user| {
                let barrier = barrier.clone();
                let daemon = &daemon;
                scope.spawn(move || {
                    barrier.wait();
                    daemon.run_as(user, &["list"], None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer thread"))
            .collect::<Vec<_>>()
    });

    let winners: Vec<usize> = (0..RACERS)
        .filter(|&i| outputs[i].code == Some(0))
        .collect();
    let report = outputs
        .iter()
        .zip(&users)
        .map(|(o, u)| format!("{}:\n{o}", u.name))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} simultaneous admins should be trusted\n{report}"
    );
    let winner = winners[0];
    for (i, out) in outputs.iter().enumerate() {
        if i != winner {
            out.assert_not_authenticated("list", "a losing racer");
        }
    }
    println!(
        "winner: racer {winner} ({}) after {:?}",
        users[winner].name, outputs[winner].elapsed
    );

    let store = daemon.store_certs();
    assert_eq!(
        store.len(),
        1,
        "the store should hold exactly one certificate"
    );
    assert_eq!(
        store[0],
        users[winner].cert_der(),
        "the store should hold the winner's certificate"
    );
    daemon.assert_socket_mode((0o666, 0, 0), "after the first client was trusted");

    // The decision sticks: the winner is in, a loser is still out.
    daemon
        .run_as(&users[winner], &["list"], None)
        .assert_code(0, "winner `list` again");
    let loser = (winner + 1) % RACERS;
    daemon
        .run_as(&users[loser], &["list"], None)
        .assert_not_authenticated("list", "loser `list` again");
}

multipass_system_tests::process_tests! {
    root: [twenty_admins_race],
}
