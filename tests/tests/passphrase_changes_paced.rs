//! A trusted user changing the passphrase in a loop cannot flood the audit log: each change is a
//! hash, a write of the settings file and an audit line that is never collapsed, so a user's
//! changes are paced (5 at once, then 2 a second; the others wait their turn), and clearing a
//! passphrase that is not set changes nothing and writes nothing.

use std::time::{Duration, Instant};

use multipass_system_tests::{audit_events, clients, Daemon, Group, TestDir, User};

const PASSPHRASE: &str = "paced-changes-pass";
/// `multipassd::service::CHANGE_BURST` and `CHANGES_PER_SECOND`.
const BURST: u32 = 5;
const PER_SECOND: u32 = 2;
const CHANGES: u32 = 12;

fn changes(log: &str) -> usize {
    audit_events(log, "passphrase-set").len() + audit_events(log, "passphrase-cleared").len()
}

fn passphrase_changes_paced() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let daemon = Daemon::start(&dir, &admins);
    clients::first_client_sets_passphrase(&daemon, &a, PASSPHRASE);
    let out = daemon.run_as(&a, &["set", "local.passphrase="], None);
    out.assert_code(0, "clearing");
    assert!(
        out.stdout.starts_with("The passphrase was cleared"),
        "{out}"
    );
    let before_noops = changes(&daemon.log());

    // Clearing what is clear: answered, nothing written.
    let settings = daemon.conf_path();
    let written = std::fs::metadata(&settings).and_then(|m| m.modified()).ok();
    let noops = Instant::now();
    for _ in 0..20 {
        let out = daemon.run_as(&a, &["set", "local.passphrase="], None);
        out.assert_code(0, "clearing again");
        // Said as it is: nothing was cleared.
        assert_eq!(
            out.stdout.trim(),
            "No passphrase was set; nothing was changed.",
            "{out}"
        );
    }
    let noops = noops.elapsed();
    let after_noops = changes(&daemon.log());
    let still = std::fs::metadata(&settings).and_then(|m| m.modified()).ok();

    // Real changes, back to back: the first few at once, then at the pace.
    let started = Instant::now();
    for i in 0..CHANGES {
        let value = format!("changed-{i}");
        daemon
            .run_as(
                &a,
                &["set", "local.passphrase"],
                Some(&format!("{value}\n{value}\n")),
            )
            .assert_code(0, "a change");
    }
    let paced = started.elapsed();
    let log = daemon.log();

    multipass_system_tests::figure(&format!(
        "passphrase_changes_paced: 20 clears of a clear passphrase in {noops:.1?}, audit lines \
         {before_noops} before and {after_noops} after; {CHANGES} changes of one user in \
         {paced:.2?} (the pace's least: {:.2}s), {} audit lines",
        f64::from(CHANGES - BURST) / f64::from(PER_SECOND),
        changes(&log) - after_noops,
    ));
    assert_eq!(
        before_noops, 2,
        "the first client's passphrase and its clearing"
    );
    assert_eq!(
        after_noops, before_noops,
        "clearing a clear passphrase is not a change"
    );
    assert_eq!(still, written, "clearing a clear passphrase writes nothing");
    assert_eq!(
        changes(&log) - after_noops,
        CHANGES as usize,
        "each change is audited"
    );
    // The earlier changes took places of the burst too, so at least this much.
    let least = Duration::from_secs_f64(f64::from(CHANGES - BURST) / f64::from(PER_SECOND));
    assert!(
        paced >= least - Duration::from_millis(100),
        "{CHANGES} changes took {paced:?}, under the pace's least of {least:?}"
    );
    // The last change is the one in force.
    daemon
        .run_as(
            &a,
            &["authenticate", &format!("changed-{}", CHANGES - 1)],
            None,
        )
        .assert_code(0, "the last passphrase set");
}

multipass_system_tests::process_tests! {
    root: [passphrase_changes_paced],
}
