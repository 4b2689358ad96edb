//! Small mistakes an administrator makes in the first minutes are said, once, and nothing is
//! done on a wrong guess:
//! - `apply-socket-policy` with a state directory that does not exist refuses, instead of
//!   reading it as an empty store and restricting the socket;
//! - `multipassd` that cannot start says why once (not a log line and the same line again);
//! - `multipassd --idle-timeout 0` means never, as for the helper, not "exit at once";
//! - `multipass-docgen --help` prints its usage instead of writing into `./--help`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use multipass_system_tests::process::{self, DEFAULT_TIMEOUT};
use multipass_system_tests::{bin, mode_owner, Daemon, DaemonConfig, Group, TestDir};

fn mistakes_are_said_not_acted_on() {
    let dir = TestDir::new();
    let admins = Group::create_admin();

    // A socket open to all, and a mistyped state directory.
    let socket = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = mode_owner(&socket).unwrap();
    let mut cmd = Command::new(bin("multipassd-helper"));
    cmd.arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("no-such-state"))
        .arg("--admin-group")
        .arg(&admins.name)
        .arg("apply-socket-policy");
    let policy = process::run(cmd, None, DEFAULT_TIMEOUT);

    // A daemon that cannot start: its state directory is a file.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let mut cmd = Command::new(bin("multipassd"));
    cmd.arg("--address")
        .arg(format!("unix:{}", dir.path().join("other-sock").display()))
        .arg("--data-dir")
        .arg(&file)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    let failed = process::run(cmd, None, DEFAULT_TIMEOUT);
    let said = failed
        .stderr
        .lines()
        .filter(|l| l.contains("a-file"))
        .count();

    // No timeout to speak of: still serving after a while with no connection.
    let daemon = Daemon::start_with(
        &dir,
        &admins,
        DaemonConfig {
            extra_args: vec!["--idle-timeout".into(), "0".into()],
            ..DaemonConfig::default()
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    let serving = Path::new(&format!("/proc/{}", daemon.pid())).exists()
        && !daemon.log().contains("idle; exiting");

    let cwd = dir.subdir("docgen");
    let mut cmd = Command::new(bin("multipass-docgen"));
    cmd.arg("--help").current_dir(&cwd).env_clear();
    let docgen = process::run(cmd, None, DEFAULT_TIMEOUT);
    let created = std::fs::read_dir(&cwd).unwrap().count();

    multipass_system_tests::figure(&format!(
        "mistakes_are_said_not_acted_on: apply-socket-policy with no state directory: exit \
         {:?}, socket {:o} -> {:o}; a daemon that cannot start said why in {said} line(s); \
         --idle-timeout 0 still serving after 1.5 s: {serving}; docgen --help: exit {:?}, \
         {created} entries created",
        policy.code,
        before.0,
        mode_owner(&socket).unwrap().0,
        docgen.code
    ));
    assert_eq!(policy.code, Some(1), "{policy}");
    assert!(
        policy.stderr.contains("is not a directory") && policy.stderr.contains("--data-dir"),
        "{policy}"
    );
    assert_eq!(
        mode_owner(&socket).unwrap(),
        before,
        "the socket was not touched"
    );
    assert_eq!(failed.code, Some(1), "{failed}");
    assert_eq!(said, 1, "the reason is said once: {failed}");
    assert!(serving, "--idle-timeout 0 means never");
    docgen.assert_code(0, "multipass-docgen --help");
    assert!(
        docgen.stdout.contains("usage: multipass-docgen OUTDIR"),
        "{docgen}"
    );
    assert_eq!(created, 0, "nothing is written for --help");
}

multipass_system_tests::process_tests! {
    root: [mistakes_are_said_not_acted_on],
}
