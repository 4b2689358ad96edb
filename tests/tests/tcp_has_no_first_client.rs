//! On TCP there is no first client: nobody is trusted automatically, not even root.

use multipass_system_tests::{require_root, Daemon, DaemonConfig, Group, TestDir};

#[test]
fn tcp_has_no_first_client() {
    if !require_root() {
        return;
    }
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let daemon = Daemon::start_with(
        &dir,
        &admins,
        DaemonConfig {
            verbosity: 1,
            tcp: true,
            ..DaemonConfig::default()
        },
    );
    assert!(
        daemon.address.starts_with("127.0.0.1:"),
        "{}",
        daemon.address
    );

    let out = daemon.run_as_root(&["list"], None);
    out.assert_not_authenticated("list", "root `list` over TCP on a fresh daemon");
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
