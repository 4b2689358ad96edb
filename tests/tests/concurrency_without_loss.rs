//! 200 distinct clients authenticate with the passphrase at once, while
//! certificates are appended to the store by hand (`tee -a`, no lock) and imported through the
//! helper's direct mode. Every one of them ends up in the store exactly once and the file stays
//! valid. Repeated `MPT_CONCURRENCY_ROUNDS` times (default 3, at most 5) against one daemon.
//!
//! Clients are distinct certificates (distinct `XDG_DATA_HOME`s) of ten real users; the
//! rate limiter only counts failures, so correct passphrases from one uid are fine. A client told
//! "busy" (more passphrase checks queued than the daemon accepts) tries again, as the message
//! asks; the retries are counted and printed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, Identity};
use multipass_system_tests::Fixture;

const CLIENTS: usize = 200;
/// Enough users that none has more clients trusted with the passphrase than the daemon lets one
/// user have (100, `multipassd::admission::MAX_PASSPHRASE_CLIENTS`) over the rounds.
const USERS: usize = 10;
const PASSPHRASE_CLIENTS_PER_USER: usize = 100;
const HAND_APPENDS: usize = 20;
const IMPORTS: usize = 20;
const PASSPHRASE: &str = "many-clients-at-once";

fn rounds() -> usize {
    std::env::var("MPT_CONCURRENCY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn jitter(max_ms: u64) -> Duration {
    let r = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
    Duration::from_millis(r % max_ms.max(1))
}

fn concurrency_without_loss() {
    // This is about writes lost or doubled, not about handshake timing: 200 processes starting
    // at once on two cores, beside the hashing, may take a straggler past the default 10 s.
    let Fixture::<USERS>(dir, admins, admin, users, daemon) =
        Fixture::open_configured(multipass_system_tests::DaemonConfig {
            extra_args: vec!["--handshake-timeout".into(), "60".into()],
            ..Default::default()
        });
    clients::first_client_sets_passphrase(&daemon, &admin, PASSPHRASE);

    let mut expected: Vec<Vec<u8>> = vec![admin.cert_der()];
    let rounds = rounds();
    assert!(
        rounds * CLIENTS / USERS <= PASSPHRASE_CLIENTS_PER_USER,
        "{rounds} rounds would give each of the {USERS} users more clients than the daemon \
         trusts with the passphrase for one user ({PASSPHRASE_CLIENTS_PER_USER})"
    );
    for round in 0..rounds {
        // Clients: CLIENTS / USERS per user, each its own XDG_DATA_HOME (its own certificate,
        // made by the CLI on first use, in the storm itself).
        let slots: Vec<(usize, std::path::PathBuf)> = (0..CLIENTS)
            .map(|i| {
                let u = i % USERS;
                (u, clients::user_dir(&users[u], &format!("r{round}c{i}")))
            })
            .collect();
        let hand: Vec<Identity> = (0..HAND_APPENDS)
            .map(|i| Identity::create(&dir.subdir(&format!("hand/r{round}-{i}")), None))
            .collect();
        let imports: Vec<Identity> = (0..IMPORTS)
            .map(|i| Identity::create(&dir.subdir(&format!("import/r{round}-{i}")), None))
            .collect();

        let busy = AtomicUsize::new(0);
        let barrier = Barrier::new(CLIENTS + 3);
        let start = Instant::now();
        let latencies = std::thread::scope(|scope| {
            let clients_done: Vec<_> = slots
                .iter()
                .map(|(u, xdg)| {
                    let (barrier, busy, daemon, user) = (&barrier, &busy, &daemon, &users[*u]);
                    scope.spawn(move || {
                        barrier.wait();
                        let began = Instant::now();
                        loop {
                            let out = clients::cli(
                                daemon,
                                user,
                                xdg,
                                &["authenticate"],
                                Some(&format!("{PASSPHRASE}\n")),
                            );
                            if out.code == Some(0) {
                                return began.elapsed();
                            }
                            // "busy" is the daemon's bounded hash queue saying "try again".
                            assert!(
                                out.code == Some(2) && out.stderr.contains("busy"),
                                "authenticate of a client of {} failed:\n{out}",
                                user.name
                            );
                            busy.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(50) + jitter(200));
                        }
                    })
                })
                .collect();
            let store = daemon.store_path();
            let (barrier_h, hand_ref) = (&barrier, &hand);
            scope.spawn(move || {
                barrier_h.wait();
                for identity in hand_ref {
                    std::thread::sleep(jitter(300));
                    clients::append_by_hand(&store, &identity.cert_pem);
                }
            });
            for half in [&imports[..IMPORTS / 2], &imports[IMPORTS / 2..]] {
                let (barrier, daemon, admins) = (&barrier, &daemon, &admins);
                scope.spawn(move || {
                    barrier.wait();
                    for (i, identity) in half.iter().enumerate() {
                        std::thread::sleep(jitter(200));
                        let out = clients::helper_trust(
                            daemon,
                            &admins.name,
                            &identity.cert_pem,
                            &format!("import-{i}"),
                        );
                        out.assert_code(0, "helper trust-certificate (direct mode)");
                        let fingerprint = trust::Fingerprint::of(&identity.der).to_hex();
                        assert_eq!(out.stdout_trimmed(), fingerprint, "helper's answer");
                    }
                });
            }
            let mut latencies: Vec<Duration> = clients_done
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect();
            latencies.sort();
            latencies
        });
        let wall = start.elapsed();

        for (_, xdg) in &slots {
            let cert = xdg.join("multipass-client-certificate/multipass_cert.pem");
            let bytes = std::fs::read(&cert).unwrap_or_else(|e| panic!("{}: {e}", cert.display()));
            let certs = multipass_system_tests::pem::certificates(&bytes);
            assert_eq!(certs.len(), 1, "{}", cert.display());
            expected.extend(certs);
        }
        expected.extend(hand.iter().map(|i| i.der.clone()));
        expected.extend(imports.iter().map(|i| i.der.clone()));

        // Exactly once each, and nothing else; and the file is valid for our parser (no damaged
        // block) and for a plain PEM reader (`pem::certificates` panics on a malformed block).
        let bytes = std::fs::read(daemon.store_path()).expect("read the store");
        let bundle = trust::Bundle::parse(&bytes);
        assert_eq!(bundle.skipped(), 0, "damaged blocks in the store");
        let in_file = multipass_system_tests::pem::certificates(&bytes);
        let mut counts: HashMap<&[u8], usize> = HashMap::new();
        for der in &in_file {
            *counts.entry(der.as_slice()).or_default() += 1;
        }
        let kind = |i: usize| {
            let fresh = expected.len() - (CLIENTS + HAND_APPENDS + IMPORTS);
            match i.checked_sub(fresh) {
                None => "an earlier round's client",
                Some(j) if j < CLIENTS => "an authenticated client",
                Some(j) if j < CLIENTS + HAND_APPENDS => "a hand-appended certificate",
                Some(_) => "a helper import",
            }
        };
        let mut wrong: HashMap<(&str, usize), usize> = HashMap::new();
        for (i, der) in expected.iter().enumerate() {
            let n = counts.get(der.as_slice()).copied().unwrap_or(0);
            if n != 1 {
                *wrong.entry((kind(i), n)).or_default() += 1;
            }
        }
        assert!(
            wrong.is_empty(),
            "round {round}: (kind, times in the store) -> how many: {wrong:?}"
        );
        assert_eq!(
            in_file.len(),
            expected.len(),
            "round {round}: unexpected certificates"
        );
        assert_eq!(bundle.len(), expected.len());

        let median = latencies[latencies.len() / 2];
        let worst = latencies[latencies.len() - 1];
        multipass_system_tests::figure(&format!(
            "round {}/{rounds}: {CLIENTS} clients ({USERS} users) + {HAND_APPENDS} hand appends + \
             {IMPORTS} helper imports in {wall:.1?}; authenticate median {median:.1?}, slowest \
             {worst:.1?}; {} \"busy\" retries; store {} certificates, {} bytes, 0 lost, 0 duplicated",
            round + 1,
            busy.load(Ordering::Relaxed),
            in_file.len(),
            bytes.len()
        ));
    }
    multipass_system_tests::figure(&format!(
        "concurrency_without_loss: {rounds} rounds, {} certificates checked, none lost or duplicated",
        expected.len()
    ));

    // Still serving, and the store kept its mode.
    daemon
        .run_as(&admin, &["list"], None)
        .assert_code(0, "admin `list` after the storms");
    let (mode, _, _) = multipass_system_tests::mode_owner(&daemon.store_path()).unwrap();
    assert_eq!(mode, 0o600, "trust store mode");
}

multipass_system_tests::process_tests! {
    root: [concurrency_without_loss],
}
