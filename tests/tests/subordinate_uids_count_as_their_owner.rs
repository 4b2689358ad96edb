//! A process running as one of a user's subordinate uids (`/etc/subuid`, which Debian's
//! `useradd` fills: 65,536 per user, usable through `newuidmap`) is counted as that user, so a
//! user cannot multiply the per-user bounds by moving from one of its uids to the next. Here the
//! clients one user may trust with the passphrase, counted over all of its uids, and the failure
//! limiter: wrong passphrases from one subordinate uid make another, and the owner, wait too.

use std::path::Path;
use std::process::Command;

use multipass_system_tests::process::{self, CliOutput, DEFAULT_TIMEOUT};
use multipass_system_tests::users::subordinate_range;
use multipass_system_tests::{clients, Daemon, Group, TestDir, User};

const PASSPHRASE: &str = "subordinate-pass";
const WAIT: &str = "Too many failed authentication attempts";
const FULL: &str = "This user has 100 clients trusted with the passphrase already";
/// `multipassd::admission::MAX_PASSPHRASE_CLIENTS`.
const BOUND: usize = 100;

/// `multipass args...` as `uid`, which has no entry in the user database, with its own home.
fn run_as_uid(daemon: &Daemon, uid: u32, home: &Path, args: &[&str], stdin: &str) -> CliOutput {
    std::fs::create_dir_all(home).unwrap();
    nix::unistd::chown(home, Some(uid.into()), Some(uid.into())).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
        .args(["--clear-groups", "env", "-i", "PATH=/usr/bin:/bin"])
        .arg(format!("HOME={}", home.display()));
    for (key, value) in daemon.client_env(&home.join("data")) {
        cmd.arg(format!("{key}={value}"));
    }
    cmd.arg(multipass_system_tests::bin("multipass"))
        .args(args)
        .current_dir(home)
        .env_clear();
    process::run(cmd, Some(stdin), DEFAULT_TIMEOUT)
}

fn subordinate_uids_count_as_their_owner() {
    let dir = TestDir::new();
    let homes = dir.subdir("homes");
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let u = User::create(&dir, None);
    let daemon = Daemon::start(&dir, &admins);
    clients::first_client_sets_passphrase(&daemon, &a, PASSPHRASE);
    let first = subordinate_range(&u.name);
    let (one, two, three) = (first + 1, first + 2, first + 3);

    // 100 clients trusted with the passphrase, half by the user, half by one of its uids: the
    // next, from a third, is one too many; given one place back, it is trusted.
    let scratch = dir.subdir("scratch");
    clients::trusted_by_passphrase_already(&daemon, &scratch, u.uid, BOUND / 2);
    clients::trusted_by_passphrase_already(&daemon, &scratch, one, BOUND / 2);
    let right = format!("{PASSPHRASE}\n");
    let authenticate = |uid: u32, secret: &str| {
        let home = homes.join(uid.to_string());
        run_as_uid(&daemon, uid, &home, &["authenticate"], secret)
    };
    let give_back = |name: String| {
        daemon
            .run_as(&a, &["trust", "remove", &name], None)
            .assert_code(0, "a place given back");
    };
    let full = authenticate(three, &right);
    give_back(format!("earlier-{one}-0"));
    let room = authenticate(three, &right);
    // Below the bound again, so that the passphrases below are checked.
    give_back(format!("earlier-{one}-1"));

    // Wrong passphrases from one subordinate uid until the limiter makes it wait.
    let mut tries = 0;
    let waited = loop {
        tries += 1;
        let out = authenticate(one, "wrong\n");
        assert_eq!(out.code, Some(2), "{out:?}");
        if out.stderr.contains(WAIT) || tries == 10 {
            break out.stderr.contains(WAIT);
        }
    };
    // Another of the user's uids, and the user itself, with the right passphrase: they wait.
    let other = authenticate(two, &right);
    let owner = daemon.run_as(&u, &["authenticate"], Some(&format!("{PASSPHRASE}\n")));
    // Another user is not held back by them.
    let b = User::create(&dir, None);
    let stranger = daemon.run_as(&b, &["authenticate"], Some(&format!("{PASSPHRASE}\n")));

    multipass_system_tests::figure(&format!(
        "subordinate_uids_count_as_their_owner: with {BOUND} clients over the user's uids, uid \
         {three}: exit {:?}, then {:?} once one was removed; uid {one} waited after {tries} wrong \
         passphrases: {waited}; uid {two}: exit {:?}; the owner: exit {:?}; another user: \
         exit {:?}",
        full.code, room.code, other.code, owner.code, stranger.code
    ));
    assert!(
        full.code == Some(2) && full.stderr.contains(FULL),
        "the user's clients over all its uids are at the bound: {full:?}"
    );
    room.assert_code(0, "a place given back is taken");
    assert!(waited, "the limiter never made uid {one} wait");
    assert!(
        other.code == Some(2) && other.stderr.contains(WAIT),
        "another subordinate uid of the same user must wait too: {other:?}"
    );
    assert!(
        owner.code == Some(2) && owner.stderr.contains(WAIT),
        "the owner must wait too: {owner:?}"
    );
    stranger.assert_code(0, "another user is not held back");
}

multipass_system_tests::process_tests! {
    root: [subordinate_uids_count_as_their_owner],
}
