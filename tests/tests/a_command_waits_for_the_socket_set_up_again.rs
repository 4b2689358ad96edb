//! When the socket's unit is restarted (a package upgrade, a change of the admin group), systemd
//! removes the socket file, makes it again for root alone (0600), and the start hook then gives
//! it its group and mode. A trusted user's command that comes meanwhile waits for the socket
//! instead of failing with a message that no client is trusted; a refusal that is final (a socket
//! of a group the user is not in) is said at once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use multipass_system_tests::{CliOutput, Fixture};

/// What the client says (at `-vv`) when it waits for the socket.
const WAITING: &str = "waiting for it";

fn a_command_waits_for_the_socket_set_up_again() {
    let Fixture(_dir, admins, a, [b], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "the first client");
    daemon
        .run_as(&b, &["list"], None)
        .assert_not_authenticated("list", "b, untrusted");
    let socket = daemon.socket.clone().expect("a unix socket");
    let away = socket.with_extension("away");
    let set_mode = |mode: u32| {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    // Set to what it is once a client is trusted (the daemon in this test cannot open it).
    set_mode(0o666);

    // `change` made to the socket, then undone once a trusted `list -vv` says it waits for the
    // socket (it exits with an error instead if it does not wait): its exit status and stderr.
    let list_during = |change: &dyn Fn(), undo: &dyn Fn()| -> (Option<i32>, String) {
        use std::io::{BufRead, Read};
        change();
        let mut cmd = a.command(
            &multipass_system_tests::bin("multipass"),
            &daemon.client_env(&a.xdg_data_home()),
        );
        cmd.args(["list", "-vv"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("multipass");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).expect("stderr") == 0 || line.contains(WAITING) {
                text.push_str(&line);
                break;
            }
            text.push_str(&line);
        }
        undo();
        stderr.read_to_string(&mut text).expect("stderr");
        (child.wait().expect("multipass").code(), text)
    };

    // The file removed (systemd stopping the socket), then back.
    let (code, text) = list_during(
        &|| std::fs::rename(&socket, &away).expect("move the socket away"),
        &|| std::fs::rename(&away, &socket).expect("move the socket back"),
    );
    assert!(
        code == Some(0) && text.contains(WAITING),
        "a list while the socket was missing: {code:?}\n{text}"
    );

    // Root's alone, as systemd makes it, until the start hook runs.
    let (code, text) = list_during(&|| set_mode(0o600), &|| set_mode(0o666));
    assert!(
        code == Some(0) && text.contains(WAITING),
        "a list while the socket was root's alone: {code:?}\n{text}"
    );

    // A trusted `list -vv` against a listener of the test's at `path`, which takes the first
    // connection and closes it unanswered once `then` has run.
    let list_dropped_at = |path: &Path, then: &dyn Fn()| -> CliOutput {
        let listener = std::os::unix::net::UnixListener::bind(path).expect("a listener");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let mut env = daemon.client_env(&a.xdg_data_home());
        for (key, value) in env.iter_mut() {
            if *key == "MULTIPASS_SERVER_ADDRESS" {
                *value = format!("unix:{}", path.display());
            }
        }
        std::thread::scope(|scope| {
            let command = scope.spawn(|| {
                let mut cmd = a.command(&multipass_system_tests::bin("multipass"), &env);
                cmd.args(["list", "-vv"]);
                multipass_system_tests::process::run(cmd, None, Duration::from_secs(30))
            });
            let (dropped, _) = listener.accept().expect("the first connection");
            then();
            drop(dropped);
            command.join().expect("the command's thread")
        })
    };

    // Connected, then dropped before the daemon took the connection (a socket stopping drops
    // what is queued on it): connected again. The daemon's socket is moved to where the first
    // connection was taken before that connection is closed.
    let restarting = socket.with_extension("restarting");
    let out = list_dropped_at(&restarting, &|| {
        std::fs::rename(&socket, &restarting).expect("the daemon's socket moved")
    });
    out.assert_code(0, "a list whose first connection was dropped");
    assert!(
        out.stderr.contains("dropped before the daemon took it"),
        "it did not connect again:\n{out}"
    );
    std::fs::rename(&restarting, &socket).expect("the daemon's socket moved back");

    // Dropped by whoever listens there, the socket file the same (the daemon closing a
    // connection over its limits): said at once, not tried again.
    let out = list_dropped_at(&socket.with_extension("closing"), &|| {});
    out.assert_code(3, "a list whose connection the listener closed");
    assert!(
        !out.stderr.contains("connecting again"),
        "it tried again where the socket had not changed:\n{out}"
    );

    // A socket of the admin group refuses the others for good: said at once, without waiting.
    std::os::unix::fs::chown(&socket, Some(0), Some(admins.gid)).expect("chgrp");
    set_mode(0o660);
    let out = daemon.run_as(&b, &["list", "-vv"], None);
    out.assert_code(3, "a user outside the socket's group");
    assert!(
        out.stderr.contains("permission denied") && !out.stderr.contains(WAITING),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("Anyone else: ask an administrator to run a multipass command first"),
        "{out}"
    );

    // Added to the group after logging in (the group database lists the user, the process has
    // only the groups of its login): told to log in again, not to ask an administrator.
    let added = std::process::Command::new("gpasswd")
        .args(["-a", &b.name, &admins.name])
        .output()
        .expect("gpasswd");
    assert!(added.status.success(), "{added:?}");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid", &b.uid.to_string(), "--regid", &b.gid.to_string()])
        .args(["--clear-groups", "env", "-i", "PATH=/usr/bin:/bin"])
        .arg(format!("HOME={}", b.home.display()));
    for (key, value) in daemon.client_env(&b.xdg_data_home()) {
        cmd.arg(format!("{key}={value}"));
    }
    cmd.arg(multipass_system_tests::bin("multipass"))
        .arg("list");
    let out = multipass_system_tests::process::run(cmd, None, Duration::from_secs(30));
    out.assert_code(3, "a user added to the socket's group since logging in");
    let expected = format!(
        "This user was added to '{}' after this login began, so it is not in it yet: log in \
         again (or run `newgrp {}`).",
        admins.name, admins.name
    );
    assert!(out.stderr.contains(&expected), "{out}");
    assert!(!out.stderr.contains("Anyone else"), "{out}");
}

multipass_system_tests::process_tests! {
    root: [a_command_waits_for_the_socket_set_up_again],
}
