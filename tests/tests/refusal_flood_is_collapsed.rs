//! A local user floods the daemon with requests from an untrusted certificate (one TLS
//! connection, 16 streams of `list`, for seconds). The audit log gets at most about one
//! `refused` line a second for that user, the `refusals` counts of those lines add up to exactly
//! the refusals the client received, and an event that matters (`trusted`, meanwhile) is logged
//! as always.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, connect_as, MemoryIdentity};
use multipass_system_tests::{audit_events, collapsed_counts, read_until, Fixture};

const PASSPHRASE: &str = "flood-test-pass";
const STREAMS: usize = 16;
const FLOOD: Duration = Duration::from_secs(4);

/// The `refused` lines of `uid` for an untrusted certificate.
fn refused_lines(log: &str, uid: u32) -> Vec<&str> {
    audit_events(log, "refused")
        .into_iter()
        .filter(|l| l.contains("reason=\"not-trusted\"") && l.contains(&format!(" uid={uid} ")))
        .collect()
}

fn refusal_flood_is_collapsed() {
    let Fixture(dir, _admins, admin, [intruder, newcomer], daemon) =
        Fixture::open_with(|dir, admins| clients::quiet_daemon(dir, admins, &[]));
    let scratch = dir.subdir("scratch");
    clients::first_client_sets_passphrase(&daemon, &admin, PASSPHRASE);
    daemon.ensure_client_cert(&newcomer, &["version"], None);
    let identity = MemoryIdentity::new(&daemon);
    let stream = connect_as(&intruder, daemon.socket(), 1, &scratch)
        .pop()
        .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let refused = Arc::new(AtomicU64::new(0));
    let newcomer_in = runtime.block_on(async {
        let channel = clients::channel_over(stream, identity.config.clone())
            .await
            .expect("TLS with an untrusted certificate");
        let deadline = Instant::now() + FLOOD;
        let flood: Vec<_> = (0..STREAMS)
            .map(|_| {
                let (channel, refused) = (channel.clone(), refused.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let status = clients::list(channel.clone())
                            .await
                            .expect_err("an untrusted certificate's `list`");
                        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Halfway through, a newcomer is trusted.
        tokio::time::sleep(FLOOD / 2).await;
        let newcomer_in = tokio::task::block_in_place(|| {
            daemon
                .run_as(
                    &newcomer,
                    &["authenticate"],
                    Some(&format!("{PASSPHRASE}\n")),
                )
                .assert_code(0, "the newcomer authenticates amid the flood")
                .elapsed
        });
        for task in flood {
            task.await.unwrap();
        }
        newcomer_in
    });
    let refused = refused.load(Ordering::Relaxed);
    // The last refusals held back are written a second after the previous line: the log is
    // read until they are all counted, for at most 5 s.
    let log = read_until(
        Duration::from_secs(5),
        || daemon.log(),
        |log| collapsed_counts(&refused_lines(log, intruder.uid)).0 >= refused,
    );
    let lines = refused_lines(&log, intruder.uid);
    let (counted, shortest) = collapsed_counts(&lines);
    multipass_system_tests::figure(&format!(
        "refusal_flood_is_collapsed: {refused} refusals of one user in {FLOOD:?} on one \
         connection with {STREAMS} streams became {} audit lines (counts adding up to \
         {counted}), the shortest gap between two {:.2?}; a newcomer authenticated meanwhile in \
         {newcomer_in:.1?}",
        lines.len(),
        shortest.unwrap_or_default()
    ));
    assert!(
        refused > 100,
        "only {refused} refusals: no flood to collapse"
    );
    // And paced (`multipassd::gate::REFUSAL_BURST`, `REFUSALS_PER_SECOND`): 64 at once, then 100
    // a second (the streams' last requests end after the flood).
    let most = 64 + 100 * (FLOOD.as_secs() + 1) + STREAMS as u64;
    assert!(
        refused <= most,
        "{refused} refusals in {FLOOD:?}: not paced"
    );
    assert_eq!(
        counted, refused,
        "every refusal must be counted in exactly one line"
    );
    assert!(
        lines.len() as u64 <= FLOOD.as_secs() + 2,
        "{} refused lines for a {FLOOD:?} flood",
        lines.len()
    );
    assert!(
        shortest.is_none_or(|g| g >= Duration::from_millis(900)),
        "two lines for the same user within a second: {shortest:?}"
    );
    // Each line says who and which certificate in its text.
    let fingerprint = multipass_system_tests::sha256_hex(&identity.der);
    for line in &lines {
        let text = line.split(" event=").next().unwrap();
        assert!(
            text.contains(&format!("user {}, uid {}", intruder.name, intruder.uid))
                && text.contains(&fingerprint),
            "the text of a refused line must name the user and the certificate: {line}"
        );
    }
    let trusted = audit_events(&log, "trusted");
    assert!(
        trusted
            .iter()
            .any(|l| l.contains(&format!(" uid={} ", newcomer.uid))
                && l.contains("how=\"passphrase\"")),
        "the newcomer's `trusted` event is missing:\n{}",
        trusted.join("\n")
    );
}

multipass_system_tests::process_tests! {
    root: [refusal_flood_is_collapsed],
}
