//! A package upgrade replaces the helper's program while a helper runs. A helper serving on the
//! bus must leave, so that D-Bus starts the new program for the next call, rather than serve on
//! as root from the old one; a helper in the middle of an operation must finish it, although the
//! file it was started from is gone; and one told to stop exits cleanly.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use multipass_system_tests::bus::{Helper, HelperSetup};
use multipass_system_tests::{bin, clients, Daemon, Fixture, TestDir};

/// A copy of the helper's program in `dir`, to replace or remove.
fn program_copy(dir: &TestDir) -> PathBuf {
    let copy = dir.subdir("program").join("multipassd-helper");
    std::fs::copy(bin("multipassd-helper"), &copy).expect("copy the helper");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    copy
}

/// Replace `program` the way dpkg does: a new file renamed over it.
fn replace(program: &Path) {
    let new = program.with_extension("dpkg-new");
    std::fs::copy(bin("multipassd-helper"), &new).expect("the new program");
    std::fs::rename(&new, program).expect("rename over the old program");
}

/// The writer child the helper starts for a change comes from the program running, not from the
/// path it was started from: here that path is gone by the time the change is asked for.
fn a_change_is_made_after_the_program_was_removed() {
    let Fixture(dir, admins, a, [b], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "the first client");
    daemon.ensure_client_cert(&b, &["version"], None);
    let pem = std::fs::read_to_string(b.cert_path()).expect("b's certificate");

    let program = program_copy(&dir);
    let mut command = clients::helper_command_from(
        &program,
        &daemon,
        &admins.name,
        &["trust-certificate", "--name", "b"],
    );
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child =
        multipass_system_tests::process::spawn_written(&mut command).expect("the helper's copy");
    // `spawn` returns once the program is running; it waits for its standard input.
    std::fs::remove_file(&program).expect("remove the program");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(pem.as_bytes()).expect("the certificate");
    drop(stdin);
    let out = child.wait_with_output().expect("the helper");
    assert!(
        out.status.success(),
        "trust-certificate from a removed program: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    daemon
        .run_as(&b, &["list"], None)
        .assert_code(0, "b, trusted by the helper");
}

/// A helper serving on the bus leaves soon after its program is replaced (it runs with no idle
/// timeout here, so nothing else would end it), and says why.
fn a_serving_helper_leaves_once_its_program_is_replaced() {
    let setup = HelperSetup::new();
    let daemon = Daemon::start(&setup.dir, &setup.admins);
    let program = program_copy(&setup.dir);
    let mut helper = Helper::start_from(
        &program,
        daemon.socket.as_ref().expect("a unix socket"),
        &daemon.data_dir,
        &setup.admins.name,
        setup.dir.path(),
        &[],
    );
    // Not while its program is the same.
    assert!(
        helper.exit_within(Duration::from_millis(2500)).is_none(),
        "the helper left with its program unchanged:\n{}",
        helper.log()
    );
    replace(&program);
    let status = helper.exit_within(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the helper did not leave (or failed) once its program was replaced: {status:?}\n{}",
        helper.log()
    );
    assert!(
        helper.log().contains("the helper's program was replaced"),
        "{}",
        helper.log()
    );
}

/// systemd stops a helper that gave its name back (`Type=dbus`) with SIGTERM: it finishes what
/// is in flight and exits 0, rather than dying by the signal.
fn a_serving_helper_told_to_stop_exits_cleanly() {
    let setup = HelperSetup::new();
    let daemon = Daemon::start(&setup.dir, &setup.admins);
    let mut helper = Helper::start_with(
        daemon.socket.as_ref().expect("a unix socket"),
        &daemon.data_dir,
        &setup.admins.name,
        setup.dir.path(),
        &[],
    );
    let pid = nix::unistd::Pid::from_raw(helper.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = helper.exit_within(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the helper did not exit 0 on SIGTERM: {status:?}\n{}",
        helper.log()
    );
    assert!(helper.log().contains("told to stop"), "{}", helper.log());
}

multipass_system_tests::process_tests! {
    root: [a_change_is_made_after_the_program_was_removed, a_serving_helper_leaves_once_its_program_is_replaced, a_serving_helper_told_to_stop_exits_cleanly],
}
