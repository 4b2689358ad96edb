//! The socket policy is applied by root (the helper's `apply-socket-policy` and `SetSocketAccess`)
//! and by the daemon itself when it may; both go through one implementation that never follows a
//! symbolic link, changes only a socket, and refuses a directory others can write:
//! - a symbolic link planted where the socket should be, pointing at a root-owned file, is left
//!   alone (the file keeps its owner, mode and content) with a clear error, whether the policy
//!   is applied by `apply-socket-policy` or asked for over D-Bus;
//! - a socket in a directory that others can write is not touched, by the helper or the daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use multipass_system_tests::bus::{call_helper_as, Helper, HelperSetup};
use multipass_system_tests::clients::Identity;
use multipass_system_tests::process::{self, CliOutput};
use multipass_system_tests::{bin, mode_owner, Group, TestDir, User};

/// `multipassd-helper --socket SOCKET --data-dir DATA --admin-group GROUP apply-socket-policy`.
fn apply_socket_policy(socket: &Path, data: &Path, group: &Group) -> CliOutput {
    let mut cmd = Command::new(bin("multipassd-helper"));
    cmd.arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data)
        .arg("--admin-group")
        .arg(&group.name)
        .arg("apply-socket-policy");
    process::run(cmd, None, Duration::from_secs(30))
}

/// A state directory whose trust store holds one certificate: the policy is then "open"
/// (root:root 0666), what the planted link would have handed to its target.
fn data_dir_with_a_trusted_client(dir: &TestDir) -> std::path::PathBuf {
    let data = dir.subdir("data");
    let identity = Identity::create(&dir.subdir("client"), None);
    let store_dir = data.join("authenticated-certs");
    std::fs::create_dir_all(&store_dir).unwrap();
    std::fs::write(
        store_dir.join("multipass_client_certs.pem"),
        &identity.cert_pem,
    )
    .unwrap();
    data
}

/// A root-owned file with mode 0600 and known content.
fn precious_file(dir: &TestDir) -> std::path::PathBuf {
    let target = dir.path().join("precious");
    std::fs::write(&target, "root's own, 0600\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    target
}

#[track_caller]
fn assert_untouched(target: &Path) {
    assert_eq!(
        mode_owner(target).unwrap(),
        (0o600, 0, 0),
        "the link's target"
    );
    assert_eq!(
        std::fs::read_to_string(target).unwrap(),
        "root's own, 0600\n",
        "the link's target"
    );
}

fn apply_socket_policy_leaves_a_planted_symlink_alone() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let data = data_dir_with_a_trusted_client(&dir);
    let target = precious_file(&dir);
    let socket = dir.path().join("multipass_socket");
    std::os::unix::fs::symlink(&target, &socket).unwrap();

    let out = apply_socket_policy(&socket, &data, &admins);
    assert!(
        out.code == Some(1)
            && out.stderr.contains(&format!(
                "multipassd-helper: refusing to change {}: it is a symbolic link, not a socket",
                socket.display()
            )),
        "{out}"
    );
    assert_untouched(&target);
    assert_eq!(
        std::fs::read_link(&socket).unwrap(),
        target,
        "the link itself"
    );

    // A regular file in the socket's place is not a socket either.
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, "").unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = apply_socket_policy(&socket, &data, &admins);
    assert!(
        out.code == Some(1) && out.stderr.contains("it is a regular file, not a socket"),
        "{out}"
    );
    assert_eq!(mode_owner(&socket).unwrap(), (0o600, 0, 0));
}

fn set_socket_access_over_dbus_leaves_a_planted_symlink_alone() {
    let setup = HelperSetup::new();
    let data = data_dir_with_a_trusted_client(&setup.dir);
    let target = precious_file(&setup.dir);
    let socket = setup.dir.path().join("multipass_socket");
    std::os::unix::fs::symlink(&target, &socket).unwrap();
    let _helper = Helper::start(&socket, &data, &setup.admins.name, setup.dir.path());

    // As the daemon's user, the only caller polkit lets manage the socket.
    let multipassd = nix::unistd::User::from_name("multipassd").unwrap().unwrap();
    for open in ["true", "false"] {
        let (ok, text) = call_helper_as(
            Some((multipassd.uid.as_raw(), multipassd.gid.as_raw())),
            "SetSocketAccess",
            "b",
            &[open],
        );
        assert!(
            !ok && text.contains(&format!(
                "refusing to change {}: it is a symbolic link, not a socket",
                socket.display()
            )),
            "SetSocketAccess({open}) through a planted link: {text}"
        );
        assert_untouched(&target);
    }
}

/// The store is read as root to decide the socket's access; its directory belongs to the
/// daemon's user, who could put a link there to another directory's store: not followed.
fn the_store_is_not_read_through_a_link() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let elsewhere = data_dir_with_a_trusted_client(&dir);
    let data = dir.subdir("linked-data");
    std::os::unix::fs::symlink(
        elsewhere.join("authenticated-certs"),
        data.join("authenticated-certs"),
    )
    .unwrap();
    let socket = dir.path().join("multipass_socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::os::unix::fs::chown(&socket, Some(0), Some(admins.gid)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();

    let out = apply_socket_policy(&socket, &data, &admins);
    assert!(
        out.code == Some(1) && out.stderr.contains("cannot open"),
        "{out}"
    );
    assert_eq!(
        mode_owner(&socket).unwrap(),
        (0o660, 0, admins.gid),
        "the socket was opened after reading the store through the link"
    );
}

fn a_socket_directory_others_can_write_is_refused() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let data = data_dir_with_a_trusted_client(&dir);
    let shared = dir.subdir("shared");
    let socket = shared.join("multipass_socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();

    for mode in [0o777, 0o1777, 0o775] {
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = apply_socket_policy(&socket, &data, &admins);
        assert!(
            out.code == Some(1)
                && out.stderr.contains(&format!(
                    "multipassd-helper: refusing to change the socket {}: its directory {} can \
                     be written by others than its owner (mode {mode:04o})",
                    socket.display(),
                    shared.display()
                )),
            "{out}"
        );
        assert_eq!(mode_owner(&socket).unwrap(), (0o600, 0, 0), "mode {mode:o}");
    }

    // The daemon shares the implementation: it will not set up its socket there either.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let own = shared.join("daemon_socket");
    let mut cmd = Command::new(bin("multipassd"));
    cmd.arg("--address")
        .arg(format!("unix:{}", own.display()))
        .arg("--data-dir")
        .arg(&data)
        .arg("--admin-group")
        .arg(&admins.name);
    let out = process::run(cmd, None, Duration::from_secs(30));
    assert!(
        out.code == Some(1)
            && out
                .stderr
                .contains(&format!("cannot listen on {}", own.display()))
            && out
                .stderr
                .contains("can be written by others than its owner"),
        "{out}"
    );
    assert!(!own.exists(), "the daemon left a socket behind");
    let leftovers: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "multipass_socket")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary sockets left: {leftovers:?}"
    );

    // A directory another user owns, even one only its owner can write: that user could swap
    // the socket for a link between the check and the change.
    let owner = User::create(&dir, None);
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&shared, Some(owner.uid), Some(owner.gid)).unwrap();
    let out = apply_socket_policy(&socket, &data, &admins);
    assert!(
        out.code == Some(1)
            && out.stderr.contains(&format!(
                "{} is owned by uid {}, not by root",
                shared.display(),
                owner.uid
            )),
        "{out}"
    );
    assert_eq!(mode_owner(&socket).unwrap(), (0o600, 0, 0), "another's dir");
    std::os::unix::fs::chown(&shared, Some(0), Some(0)).unwrap();

    // The same socket, once only root can write its directory: the policy applies.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = apply_socket_policy(&socket, &data, &admins);
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(mode_owner(&socket).unwrap(), (0o666, 0, 0));
}

/// The helper reads the store and sets the socket's access under the store's lock, as the
/// store's writers take it: a removal that empties the store comes before or after both, never
/// between them, where it would leave the socket open with nobody trusted.
fn the_socket_policy_is_applied_under_the_stores_lock() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let data = data_dir_with_a_trusted_client(&dir);
    let socket = dir.path().join("multipass_socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).unwrap();

    // A writer of the store (the daemon removing the last client) holds its lock.
    let store_dir = data.join("authenticated-certs");
    let lock = nix::fcntl::Flock::lock(
        std::fs::File::open(&store_dir).unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .unwrap();
    let mut helper = Command::new(bin("multipassd-helper"))
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data)
        .arg("--admin-group")
        .arg(&admins.name)
        .arg("apply-socket-policy")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let waited = helper.try_wait().unwrap();
    // The writer empties the store, then lets go.
    std::fs::write(store_dir.join("multipass_client_certs.pem"), "").unwrap();
    drop(lock);
    let status = multipass_system_tests::process::wait_within(&mut helper, Duration::from_secs(10))
        .expect("the helper did not end");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut helper.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        waited, None,
        "the helper did not wait for the lock: {stderr}"
    );
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("Restricted"), "{stderr}");
    assert_eq!(
        mode_owner(&socket).unwrap(),
        (0o660, 0, admins.gid),
        "restricted, as the store it read under the lock is empty"
    );
}

multipass_system_tests::process_tests! {
    root: [apply_socket_policy_leaves_a_planted_symlink_alone, set_socket_access_over_dbus_leaves_a_planted_symlink_alone, the_store_is_not_read_through_a_link, a_socket_directory_others_can_write_is_refused, the_socket_policy_is_applied_under_the_stores_lock],
}
