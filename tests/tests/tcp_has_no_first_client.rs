//! On TCP there is no first client: nobody is trusted automatically, not even root. Nor is anybody
//! an administrator there: trust management that needs one is refused to every TCP client.

use multipass_system_tests::clients::{self, Identity};
use multipass_system_tests::{sha256_hex, Daemon, DaemonConfig, Group, TestDir};

fn tcp_daemon(dir: &TestDir, admins: &Group) -> Daemon {
    Daemon::start_with(
        dir,
        admins,
        DaemonConfig {
            verbosity: 1,
            tcp: true,
            ..DaemonConfig::default()
        },
    )
}

fn tcp_has_no_first_client() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let daemon = tcp_daemon(&dir, &admins);
    assert!(
        daemon.address.starts_with("127.0.0.1:"),
        "{}",
        daemon.address
    );

    let out = daemon.run_as_root(&["list"], None);
    out.assert_not_authenticated("list", "root `list` over TCP on a fresh daemon");
    // Not told that running a command makes an administrator the first client: not over TCP.
    assert!(
        out.stderr.contains("over TCP no client becomes the first"),
        "{out}"
    );
    assert!(
        daemon.store_certs().is_empty(),
        "nobody may be trusted over TCP without a passphrase"
    );
    // Not on a second try either.
    daemon
        .run_as_root(&["list"], None)
        .assert_not_authenticated("list", "root `list` over TCP, again");
    assert!(
        daemon.store_certs().is_empty(),
        "store after the second try"
    );
}

/// Over TCP there are no kernel credentials, so nobody is an administrator there: even root,
/// trusted, may list the clients and remove its own entry, but not remove another client nor
/// create, list or revoke enrollment tokens.
fn over_tcp_nobody_manages_trust() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let daemon = tcp_daemon(&dir, &admins);
    // Root's client and another one, trusted by hand (there is no other way in over TCP).
    daemon.run_as_root(&["version"], None);
    let root_identity = Identity::create(&daemon.root_xdg_data_home(), None);
    let other = Identity::create(&dir.subdir("other"), None);
    clients::append_by_hand(&daemon.store_path(), &root_identity.cert_pem);
    clients::append_by_hand(
        &daemon.store_path(),
        &format!("name: other\n{}", other.cert_pem),
    );
    let tokens_before = std::fs::read(daemon.tokens_path()).ok();

    daemon
        .run_as_root(&["trust", "list"], None)
        .assert_code(0, "root `trust list` over TCP");
    let group = &admins.name;
    for (args, command, action) in [
        (
            &["trust", "remove", "other"][..],
            "trust remove",
            "remove another client's trust",
        ),
        (
            &["trust", "token", "create"],
            "trust token create",
            "create enrollment tokens",
        ),
        (
            &["trust", "token", "list"],
            "trust token list",
            "list enrollment tokens",
        ),
        (
            &["trust", "token", "revoke", "any"],
            "trust token revoke",
            "revoke enrollment tokens",
        ),
    ] {
        daemon.run_as_root(args, None).assert_failure(
            2,
            &format!(
                "{command} failed: Nobody can {action} over TCP: it needs an administrator's \
                 client on the local socket, run by root or by a member of the '{group}' group."
            ),
            &format!("root `{}` over TCP", args.join(" ")),
        );
    }
    assert_eq!(daemon.store_certs().len(), 2, "nothing was removed");
    assert_eq!(std::fs::read(daemon.tokens_path()).ok(), tokens_before);

    // Its own entry, though, any trusted client may remove.
    let own = &sha256_hex(&root_identity.der)[..12];
    daemon
        .run_as_root(&["trust", "remove", own], None)
        .assert_code(0, "root removes its own entry over TCP");
    assert_eq!(daemon.store_certs(), vec![other.der.clone()]);
}

multipass_system_tests::process_tests! {
    root: [tcp_has_no_first_client, over_tcp_nobody_manages_trust],
}
