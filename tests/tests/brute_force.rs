//! 1,500 wrong passphrases from one user, on several connections at once (refusals are paced:
//! 64 at once, then 100 a second, so 10,000 would take 100 s and prove no more). The
//! rate limit slows that user (only a handful of attempts are ever hashed), other users are
//! unaffected meanwhile, the daemon's memory stays bounded, the right passphrase is refused
//! while the penalty runs and accepted once it expires.
//!
//! The daemon runs with the hidden `--auth-max-delay 2` (ceiling of the penalty, 60 s by
//! default) so that the penalty's expiry fits in a test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, connect_as, MemoryIdentity};
use multipass_system_tests::{procfs, Fixture, PASSPHRASE_NOT_CORRECT};

const PASSPHRASE: &str = "the-right-one";
const ATTEMPTS: usize = 1_500;
const CONNECTIONS: usize = 8;
const MAX_DELAY_SECS: u64 = 2;

fn brute_force() {
    let max_delay = MAX_DELAY_SECS.to_string();
    let Fixture(dir, _admins, a, [attacker, newcomer, typo], daemon) =
        Fixture::open_with(|dir, admins| {
            clients::quiet_daemon(dir, admins, &["--auth-max-delay", &max_delay])
        });
    let scratch = dir.subdir("scratch");
    clients::first_client_sets_passphrase(&daemon, &a, PASSPHRASE);
    for user in [&newcomer, &typo] {
        daemon.ensure_client_cert(user, &["version"], None);
    }
    let pid = daemon.pid();
    let (hwm_before, fd_before) = (procfs::peak_rss_kib(pid), procfs::fd_count(pid));
    let identity = MemoryIdentity::new(&daemon);
    let connections = connect_as(&attacker, daemon.socket(), CONNECTIONS, &scratch);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let channels: Vec<_> = runtime.block_on(async {
        let mut channels = Vec::new();
        for c in connections {
            channels.push(
                clients::channel_over(c, identity.config.clone())
                    .await
                    .expect("attacker connection"),
            );
        }
        channels
    });

    let hashed = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let attack = {
        let (channels, hashed, limited, next) = (
            channels.clone(),
            hashed.clone(),
            limited.clone(),
            next.clone(),
        );
        runtime.spawn(async move {
            let mut tasks = Vec::new();
            for channel in channels {
                let (hashed, limited, next) = (hashed.clone(), limited.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while next.fetch_add(1, Ordering::Relaxed) < ATTEMPTS {
                        match clients::authenticate(channel.clone(), "wrong-guess").await {
                            Err(s) if s.code() == tonic::Code::InvalidArgument => {
                                assert_eq!(s.message(), PASSPHRASE_NOT_CORRECT);
                                hashed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                                limited.fetch_add(1, Ordering::Relaxed);
                            }
                            other => panic!("a wrong passphrase got {other:?}"),
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.expect("attack task");
            }
        })
    };

    // Meanwhile, other users.
    std::thread::sleep(Duration::from_millis(300));
    let newcomer_auth = daemon
        .run_as(
            &newcomer,
            &["authenticate"],
            Some(&format!("{PASSPHRASE}\n")),
        )
        .assert_code(0, "another user authenticates during the attack")
        .elapsed;
    let out = daemon.run_as(&typo, &["authenticate"], Some("typo\n"));
    out.assert_failure(
        2,
        &format!("authenticate failed: {PASSPHRASE_NOT_CORRECT}"),
        "another user's typo is checked, not rate-limited",
    );
    let list = daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "the trusted client during the attack")
        .elapsed;
    let (rss_during, hwm_during) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));

    runtime.block_on(attack).expect("attack");
    let duration = start.elapsed();
    let (hashed, limited) = (
        hashed.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
    );
    assert_eq!(hashed + limited, ATTEMPTS);

    // Make sure a penalty is running (a hashed failure just happened), then the right passphrase.
    let (refused, retry_after, wait) = runtime.block_on(async {
        let channel = channels[0].clone();
        loop {
            match clients::authenticate(channel.clone(), "wrong-guess").await {
                Err(s) if s.code() == tonic::Code::InvalidArgument => break,
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("{other:?}"),
            }
        }
        let refused = clients::authenticate(channel.clone(), PASSPHRASE)
            .await
            .expect_err("the right passphrase during the penalty");
        let began = Instant::now();
        let accepted = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match clients::authenticate(channel.clone(), PASSPHRASE).await {
                Ok(()) => break began.elapsed(),
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {}
                Err(s) => panic!("the right passphrase after the penalty: {s:?}"),
            }
            assert!(
                began.elapsed() < Duration::from_secs(MAX_DELAY_SECS + 5),
                "the penalty does not expire"
            );
        };
        (refused.code(), refused.message().to_string(), accepted)
    });
    assert_eq!(
        refused,
        tonic::Code::ResourceExhausted,
        "the right passphrase must not be checked during the penalty"
    );
    assert!(retry_after.contains("try again in"), "{retry_after}");

    let hwm_after = procfs::peak_rss_kib(pid);
    drop(channels);
    drop(runtime);
    let fd_after = procfs::wait_fd_count(pid, fd_before, Duration::from_secs(5));
    let log_lines = daemon.log().lines().count();
    multipass_system_tests::figure(&format!(
        "brute_force: {ATTEMPTS} wrong passphrases from one user on {CONNECTIONS} connections in \
         {duration:.1?} ({:.0}/s): {hashed} hashed, {limited} refused by the rate limit; \
         meanwhile another user authenticated in {newcomer_auth:.1?}, another's typo was \
         checked normally, the trusted client's `list` took {list:.1?}; right passphrase refused \
         during the penalty ({retry_after:?}), accepted {wait:.1?} later; daemon peak RSS \
         {hwm_before} KiB before, {hwm_during} KiB during (RSS {rss_during} KiB), {hwm_after} \
         KiB after; descriptors {fd_before} before, {fd_after} after; daemon log {log_lines} \
         lines",
        ATTEMPTS as f64 / duration.as_secs_f64()
    ));

    // Every attempt is refused at its pace (`multipassd::gate::REFUSAL_BURST`, 64 at once, then
    // `REFUSALS_PER_SECOND`, 100 a second), the hashed ones too.
    let least = Duration::from_millis((ATTEMPTS as u64 - 64) * 10);
    assert!(
        duration >= least,
        "{ATTEMPTS} attempts in {duration:?}: not paced"
    );
    // At most the free failures, then one per expiry of a penalty (each at least 1 s).
    let bound = 3 + 1 + duration.as_secs() as usize;
    assert!(
        hashed <= bound,
        "{hashed} wrong passphrases were hashed in {duration:?} (at most {bound} expected)"
    );
    // One Argon2id hash takes 19 MiB; at most two run at once.
    let growth_mib = hwm_after.saturating_sub(hwm_before) >> 10;
    assert!(growth_mib < 48, "peak RSS grew by {growth_mib} MiB");
    assert!(
        fd_after <= fd_before,
        "descriptors: {fd_before} before, {fd_after} after"
    );
    assert!(
        log_lines < 500,
        "the attack flooded the log ({log_lines} lines)"
    );
    let store = daemon.store_certs();
    assert_eq!(
        store.len(),
        3,
        "A, the newcomer and finally the attacker's client"
    );
}

multipass_system_tests::process_tests! {
    root: [brute_force],
}
