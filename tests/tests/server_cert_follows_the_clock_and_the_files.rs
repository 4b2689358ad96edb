//! The certificate the daemon presents follows the clock and the files while it runs, so that
//! none of these keeps every client out until someone restarts it: the root CA deleted (it is
//! made again), the certificates restored from a backup (the daemon presents the restored ones),
//! the root CA made unreadable to users (its mode is set back), the clock set back before the
//! certificate's start (a new certificate is made before the next handshake presents the old).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use multipass_system_tests::{DaemonConfig, Fixture};

/// Longer than the daemon's look at the files (every second).
const NOTICED: Duration = Duration::from_millis(1500);

fn copy_certificates(data_dir: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("certificates")).unwrap();
    let root_cert = "multipass_root_cert.pem";
    std::fs::copy(data_dir.join(root_cert), to.join(root_cert)).unwrap();
    for entry in std::fs::read_dir(data_dir.join("certificates")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(
                entry.path(),
                to.join("certificates").join(entry.file_name()),
            )
            .unwrap();
        }
    }
}

fn a_root_ca_deleted_while_running_is_made_again() {
    let Fixture(_dir, _admins, a, [], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    let before = std::fs::read(daemon.root_cert()).unwrap();
    std::fs::remove_file(daemon.root_cert()).unwrap();
    // The client waits up to 2 s for the file to appear.
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "`list` after the root CA was deleted");
    let after = std::fs::read(daemon.root_cert()).expect("a root CA again");
    assert_ne!(before, after, "a new root CA");
    assert!(daemon.log().contains("changed on disk"), "{}", daemon.log());
}

fn certificates_restored_from_a_backup_are_presented() {
    let Fixture(dir, _admins, a, [], mut daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    let backup = dir.subdir("backup");
    copy_certificates(&daemon.data_dir, &backup);
    // The daemon starts again without them and makes new ones.
    daemon.stop();
    std::fs::remove_file(daemon.root_cert()).unwrap();
    std::fs::remove_dir_all(daemon.data_dir.join("certificates")).unwrap();
    daemon.start_again();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "`list` with the new certificates");
    // Then the backup is restored under it.
    copy_certificates(&backup, &daemon.data_dir);
    std::thread::sleep(NOTICED);
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "`list` with the restored certificates");
}

fn a_root_ca_made_unreadable_is_made_readable_again() {
    let Fixture(_dir, _admins, a, [], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    std::fs::set_permissions(daemon.root_cert(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::thread::sleep(NOTICED);
    let mode = std::fs::metadata(daemon.root_cert())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644, "the root CA's mode set back");
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "`list` with the root CA readable again");
}

fn a_clock_set_back_is_followed() {
    const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's libfaketime (scripts/deps.sh)"
    );
    let offset = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(offset.path(), "+10d\n").unwrap();
    let Fixture(_dir, _admins, a, [], daemon) = Fixture::open_configured(DaemonConfig {
        verbosity: 1,
        env: vec![
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                offset.path().display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            // The runtime's timers keep the real monotonic clock.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ],
        ..DaemonConfig::default()
    });
    // The daemon's clock runs ten days ahead: it made its certificates then, which no client
    // accepts now.
    let ahead = daemon.run_as(&a, &["list"], None);
    ahead.assert_code(3, "`list` against a daemon ten days ahead");
    assert!(
        ahead.stderr.contains("not valid at this machine's time")
            && ahead.stderr.contains("timedatectl"),
        "{}",
        ahead.stderr
    );
    // Which the daemon's log says at its default level (once it has read the client's alert,
    // which may be after the client has exited).
    let said = std::time::Instant::now() + Duration::from_secs(5);
    while !daemon
        .log()
        .contains("a client refused the daemon's certificate")
    {
        assert!(std::time::Instant::now() < said, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The clock is set right.
    std::fs::write(offset.path(), "+0\n").unwrap();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "`list` once the daemon's clock is right");
    assert!(
        daemon.log().contains("before the certificate's start"),
        "{}",
        daemon.log()
    );
}

multipass_system_tests::process_tests! {
    root: [
        a_root_ca_deleted_while_running_is_made_again,
        certificates_restored_from_a_backup_are_presented,
        a_root_ca_made_unreadable_is_made_readable_again,
        a_clock_set_back_is_followed,
    ],
}
