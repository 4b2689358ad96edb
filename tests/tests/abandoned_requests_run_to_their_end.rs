//! A client that gives up on a request (a deadline it sends, a reset stream, a closed
//! connection) does not cut the daemon's work short. An abandoned passphrase check still counts
//! as a failure, so that giving up before the answer is no way around the rate limit, and it
//! holds one of the two hashing places until its hash ends, so that the daemon's memory stays
//! bounded; an abandoned passphrase change is still made and still audited.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, connect_as, MemoryIdentity};
use multipass_system_tests::{audit_events, grpc, procfs, Fixture};

const PASSPHRASE: &str = "the-right-one";
const GUESSES: usize = 40;
/// Well before a hash ends (tens of milliseconds).
const GIVE_UP: Duration = Duration::from_millis(1);

fn abandoned_requests_run_to_their_end() {
    let Fixture(dir, _admins, a, [attacker], daemon) = Fixture::open_with(|dir, admins| {
        clients::quiet_daemon(dir, admins, &["--auth-max-delay", "2"])
    });
    clients::first_client_sets_passphrase(&daemon, &a, PASSPHRASE);
    let scratch = dir.subdir("scratch");
    let pid = daemon.pid();
    let peak_before = procfs::peak_rss_kib(pid);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Wrong guesses from another user, each given up on after a millisecond.
    let identity = MemoryIdentity::new(&daemon);
    let connection = connect_as(&attacker, daemon.socket(), 1, &scratch).remove(0);
    let channel = runtime
        .block_on(clients::channel_over(connection, identity.config.clone()))
        .expect("the attacker's connection");
    let mut answers = BTreeMap::new();
    for _ in 0..GUESSES {
        let answer = runtime.block_on(clients::authenticate_within(
            channel.clone(),
            "wrong-guess",
            Some(GIVE_UP),
        ));
        let code = answer.expect_err("a wrong guess").code();
        *answers.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    // The daemon's work for them ends; then the next guess, waited for, finds the failures
    // recorded: the penalty is running.
    let began = Instant::now();
    let next = loop {
        let answer = runtime.block_on(clients::authenticate(channel.clone(), "wrong-guess"));
        let status = answer.expect_err("a wrong guess");
        if status.message() != rpc::server::TOO_MANY_REQUESTS {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the abandoned guesses still hold their places after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let peak_after = procfs::peak_rss_kib(pid);

    // A passphrase change, given up on by its client.
    let settings_before = std::fs::read(daemon.conf_path()).expect("the settings file");
    let changes_before = audit_events(&daemon.log(), "passphrase-set").len();
    let admin = grpc::client_config(&daemon.root_cert(), Some((&a.cert_path(), &a.key_path())))
        .expect("the administrator's TLS configuration");
    let admin = runtime
        .block_on(grpc::channel(daemon.socket(), admin))
        .expect("the administrator's connection");
    let given_up = runtime.block_on(clients::set_within(
        admin,
        "local.passphrase",
        "changed-while-nobody-waited",
        Some(GIVE_UP),
    ));
    let began = Instant::now();
    let (changed, audited) = loop {
        let changed = std::fs::read(daemon.conf_path()).ok() != Some(settings_before.clone());
        let audited = audit_events(&daemon.log(), "passphrase-set").len() - changes_before;
        if (changed && audited > 0) || began.elapsed() > Duration::from_secs(10) {
            break (changed, audited);
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    multipass_system_tests::figure(&format!(
        "abandoned_requests_run_to_their_end: {GUESSES} wrong guesses given up on after \
         {GIVE_UP:?}, answered {answers:?}; the next guess: {:?} {:?}; daemon peak RSS {} KiB \
         before, {} KiB after; a passphrase change given up on ({:?}): settings file changed \
         {changed}, {audited} audit line(s)",
        next.code(),
        next.message(),
        peak_before,
        peak_after,
        given_up.as_ref().map_err(|s| s.code()),
    ));
    assert_eq!(
        next.code(),
        tonic::Code::ResourceExhausted,
        "the abandoned guesses were not counted as failures: {next:?}"
    );
    assert!(next.message().contains("try again in"), "{next:?}");
    // One Argon2id hash takes 19 MiB; at most two run at once.
    let growth_mib = peak_after.saturating_sub(peak_before) >> 10;
    assert!(
        growth_mib < 48,
        "peak RSS grew by {growth_mib} MiB: abandoned hashes ran beyond the two places"
    );
    assert!(
        given_up.is_err(),
        "the change was answered within {GIVE_UP:?}, so this test did not give up on it"
    );
    assert!(changed, "the abandoned change was not made");
    assert_eq!(audited, 1, "the change was made but not audited");
}

multipass_system_tests::process_tests! {
    root: [abandoned_requests_run_to_their_end],
}
