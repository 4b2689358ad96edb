//! The state directory on a small tmpfs that fills up, then goes read-only. A
//! trust change or a passphrase change fails with a clear error to the client, the previous files
//! are intact (byte for byte, no temporary file left), the daemon keeps serving, and the same
//! change succeeds once there is room again, without a restart.

use std::path::Path;

use multipass_system_tests::clients;
use multipass_system_tests::mount::Tmpfs;
use multipass_system_tests::{CliOutput, Daemon, Group, TestDir, User};

const PASSPHRASE: &str = "full-disk-pass";

fn snapshot(daemon: &Daemon) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(daemon.store_path()).expect("read the store"),
        std::fs::read(daemon.conf_path()).expect("read the settings"),
    )
}

fn temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for d in [dir.to_path_buf(), dir.join("authenticated-certs")] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp.") {
                found.push(name);
            }
        }
    }
    found
}

#[track_caller]
fn assert_refused(out: &CliOutput, command: &str, reason: &str) {
    out.assert_code(2, command);
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "{command} failed: The service could not complete the request: failed to write "
        )) && first.ends_with(reason),
        "{command}: expected a clear '{reason}' error\n{out}"
    );
    assert!(
        !out.stderr.contains(PASSPHRASE),
        "the passphrase in an error text"
    );
    multipass_system_tests::figure(&format!(
        "disk_full_and_read_only: {command} refused: {first}"
    ));
}

/// Make the store end near a 4 KiB boundary with explanatory text (which PEM readers skip), so
/// that the next certificate appended needs a new page: a change that needs space.
fn pad_store_to_page_end(daemon: &Daemon) {
    let size = std::fs::metadata(daemon.store_path()).unwrap().len() as usize;
    let room = 4096 - size % 4096;
    let mut pad = String::new();
    while pad.len() + 64 < room.saturating_sub(100) {
        pad.push_str(&format!("{}\n", "#".repeat(63)));
    }
    clients::append_by_hand(&daemon.store_path(), &pad);
}

fn disk_full_and_read_only() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let b = User::create(&dir, None);
    let c = User::create(&dir, None);
    let fs = Tmpfs::mount(&dir.path().join("data"), "1m");
    let daemon = Daemon::start(&dir, &admins);
    assert_eq!(
        daemon.data_dir,
        fs.path(),
        "the daemon's state lives on the tmpfs"
    );
    clients::first_client_sets_passphrase(&daemon, &a, PASSPHRASE);
    for user in [&b, &c] {
        daemon.ensure_client_cert(user, &["version"], None);
    }
    pad_store_to_page_end(&daemon);

    // Disk full.
    let filled = fs.fill("filler");
    multipass_system_tests::figure(&format!(
        "disk_full_and_read_only: tmpfs of 1 MiB filled with {filled} bytes"
    ));
    let before = snapshot(&daemon);
    let out = daemon.run_as(&b, &["authenticate"], Some(&format!("{PASSPHRASE}\n")));
    assert_refused(
        &out,
        "authenticate",
        "No space left on device (os error 28)",
    );
    let out = daemon.run_as(&a, &["set", "local.passphrase"], Some("other\nother\n"));
    assert_refused(&out, "set", "No space left on device (os error 28)");
    assert!(
        before == snapshot(&daemon),
        "a failed change altered the files"
    );
    assert_eq!(temporaries(fs.path()), Vec::<String>::new());
    // Still serving: trusted clients are served, the passphrase is still the old one.
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "list on a full disk");
    let out = daemon.run_as(&a, &["get", "local.passphrase"], None);
    assert_eq!(out.stdout_trimmed(), "true", "{out}");
    daemon
        .run_as(&b, &["list"], None)
        .assert_code(2, "B is not trusted after the failed authenticate");

    // Room again: the same change succeeds, no restart.
    std::fs::remove_file(fs.path().join("filler")).unwrap();
    daemon
        .run_as(&b, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
        .assert_code(0, "authenticate once there is room");
    daemon.run_as(&b, &["list"], None).assert_code(0, "B after");

    // Read-only.
    fs.set_read_only(true);
    let before = snapshot(&daemon);
    let out = daemon.run_as(&c, &["authenticate"], Some(&format!("{PASSPHRASE}\n")));
    assert_refused(&out, "authenticate", "Read-only file system (os error 30)");
    let out = daemon.run_as(&a, &["set", "local.passphrase"], Some("other\nother\n"));
    assert_refused(&out, "set", "Read-only file system (os error 30)");
    assert!(
        before == snapshot(&daemon),
        "a failed change altered the files"
    );
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "list read-only");
    daemon
        .run_as(&b, &["list"], None)
        .assert_code(0, "B read-only");
    fs.set_read_only(false);
    daemon
        .run_as(&c, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
        .assert_code(0, "authenticate once writable");

    let store = daemon.store_certs();
    assert_eq!(store.len(), 3, "A, B and C, each once");
    for user in [&a, &b, &c] {
        assert!(store.contains(&user.cert_der()), "{} missing", user.name);
    }
    let (mode, _, _) = multipass_system_tests::mode_owner(&daemon.store_path()).unwrap();
    assert_eq!(mode, 0o600);
    let log = daemon.log();
    assert!(
        !log.contains(PASSPHRASE),
        "the passphrase in the daemon's log"
    );
    drop(daemon);
    drop(fs);
}

multipass_system_tests::process_tests! {
    root: [disk_full_and_read_only],
}
