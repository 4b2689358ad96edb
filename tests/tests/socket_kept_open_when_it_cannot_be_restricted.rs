//! A daemon that may not give its socket to the admin group (it runs with no capability, as it
//! does by hand, and no helper answers) keeps the socket open when the last client is removed,
//! instead of restricting it to a group that is not the admin group. Restricted that way
//! (root:root 0660), it would keep every administrator but root out, so none could become the
//! first client again. The gate still lets only an administrator be the first client.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use multipass_system_tests::{DaemonConfig, Fixture};

fn socket_kept_open_when_it_cannot_be_restricted() {
    let Fixture(_dir, admins, a, [b], daemon) = Fixture::open_configured(DaemonConfig::default());
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "the first client");
    let mode = |daemon: &multipass_system_tests::Daemon| {
        let meta = std::fs::metadata(daemon.socket()).unwrap();
        (meta.permissions().mode() & 0o777, meta.gid())
    };
    let open = mode(&daemon);
    let fingerprint = &multipass_system_tests::sha256_hex(&daemon.store_certs()[0])[..16];
    let removal = daemon.run_as(&a, &["trust", "remove", fingerprint], None);
    removal.assert_code(0, "removing the last client");
    // The removal does not claim that only administrators can reach the service now.
    assert!(
        removal
            .stdout
            .contains("The daemon's socket is not restricted to administrators"),
        "{removal}"
    );
    assert!(!removal.stdout.contains("only administrators"), "{removal}");
    let after = mode(&daemon);
    let log = daemon.log();
    let refused = daemon.run_as(&b, &["list"], None);
    let again = daemon.run_as(&a, &["list"], None);

    multipass_system_tests::figure(&format!(
        "socket_kept_open_when_it_cannot_be_restricted: socket {:o} (gid {}) with a client, \
         {:o} (gid {}) after the last was removed; a non-administrator: exit {:?}; the \
         administrator again: exit {:?}",
        open.0, open.1, after.0, after.1, refused.code, again.code
    ));
    assert_eq!(open.0, 0o666, "open once a client is trusted");
    assert_eq!(
        after, open,
        "the socket keeps its access when it cannot be restricted"
    );
    assert!(
        log.contains(&format!(
            "administrators: root and the members of '{}'",
            admins.name
        )),
        "the daemon says who the administrators are"
    );
    assert!(
        log.contains("cannot change the socket's access"),
        "the daemon says it could not restrict the socket"
    );
    assert_eq!(refused.code, Some(2), "{refused:?}");
    assert!(
        refused.stderr.contains("not authenticated"),
        "the gate refuses a non-administrator as the first client: {refused:?}"
    );
    again.assert_code(0, "the administrator becomes the first client again");
}

multipass_system_tests::process_tests! {
    root: [socket_kept_open_when_it_cannot_be_restricted],
}
