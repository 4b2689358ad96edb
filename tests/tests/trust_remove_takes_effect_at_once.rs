//! `multipass trust remove` makes that client's next request fail as not
//! authenticated, without a restart, and leaves the others alone; an ambiguous or too short id
//! removes nothing; removing the last trusted client restricts the socket again
//! (root:<admin group> 0660). Every removal is an audit event.

use multipass_system_tests::{audit_events, sha256_hex, DaemonConfig, Fixture};

const PASSPHRASE: &str = "remove-at-once-pass";

fn trust_remove_takes_effect_at_once() {
    let Fixture(_dir, admins, a, [b, c, d, e], daemon) = Fixture::open_configured(DaemonConfig {
        verbosity: 1,
        admin_group_member: true,
        ..DaemonConfig::default()
    });

    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    daemon.set_passphrase(&a, PASSPHRASE);
    daemon
        .run_as(&b, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
        .assert_code(0, "B `authenticate`");
    daemon.ensure_client_cert(&c, &["version"], None);
    daemon.append_to_store_by_hand(&c);
    // Two clients with the same name: a name that means two clients must not pick one.
    daemon.ensure_client_cert(&d, &["version"], None);
    daemon.ensure_client_cert(&e, &["version"], None);
    daemon.append_to_store_with_metadata(&d, "name: twin\nhow: admin\n");
    daemon.append_to_store_with_metadata(&e, "name: twin\nhow: admin\n");
    for (user, who) in [(&a, "A"), (&b, "B"), (&c, "C"), (&d, "D"), (&e, "E")] {
        daemon
            .run_as(user, &["list"], None)
            .assert_code(0, &format!("{who} `list` while trusted"));
    }
    assert_eq!(daemon.store_certs().len(), 5);

    // Ambiguous or too short: refused, nothing removed.
    let out = daemon.run_as(&a, &["trust", "remove", "twin"], None);
    out.assert_code(2, "`trust remove twin` (two clients are named so)");
    assert!(
        out.stderr
            .starts_with("trust remove failed: 'twin' matches 2 trusted clients"),
        "{out}"
    );
    assert!(out.stderr.contains("nothing was removed"), "{out}");
    let short = &sha256_hex(&c.cert_der())[..3];
    let out = daemon.run_as(&a, &["trust", "remove", short], None);
    out.assert_code(2, "`trust remove` with a 3-digit prefix");
    assert!(out.stderr.contains("at least 4 hex digits"), "{out}");
    let out = daemon.run_as(&a, &["trust", "remove", "nobody-at-all"], None);
    out.assert_code(2, "`trust remove` of an unknown name");
    assert!(
        out.stderr
            .contains("No trusted client is named 'nobody-at-all'"),
        "{out}"
    );
    assert_eq!(
        daemon.store_certs().len(),
        5,
        "nothing may have been removed"
    );

    // By name: B is out at once; the others are untouched.
    let out = daemon.run_as(&a, &["trust", "remove", &b.name], None);
    out.assert_code(0, "A `trust remove <B's name>`");
    assert!(
        out.stdout.starts_with(&format!("Removed '{}' (", b.name))
            && out.stdout.contains("4 clients are still trusted."),
        "{out}"
    );
    daemon
        .run_as(&b, &["list"], None)
        .assert_not_authenticated("list", "B `list` right after its removal");
    for (user, who) in [(&a, "A"), (&c, "C"), (&d, "D")] {
        daemon
            .run_as(user, &["list"], None)
            .assert_code(0, &format!("{who} `list` after B's removal"));
    }
    assert!(!daemon.store_certs().contains(&b.cert_der()));

    // By fingerprint prefix (upper case works too): C, then D and E.
    for user in [&c, &d, &e] {
        let prefix = sha256_hex(&user.cert_der())[..12].to_uppercase();
        daemon
            .run_as(&a, &["trust", "remove", &prefix], None)
            .assert_code(0, &format!("`trust remove {prefix}`"));
        daemon
            .run_as(user, &["list"], None)
            .assert_not_authenticated("list", "a client right after its removal");
    }
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` after removing the others");
    daemon.assert_socket_mode((0o666, 0, 0), "while A is still trusted");

    // A client appended by hand has no name, which the removal says.
    let by_hand = multipass_system_tests::clients::MemoryIdentity::new(&daemon);
    multipass_system_tests::clients::append_by_hand(&daemon.store_path(), &by_hand.pem);
    let prefix = sha256_hex(&by_hand.der)[..16].to_string();
    let out = daemon.run_as(&a, &["trust", "remove", &prefix], None);
    out.assert_code(0, "removing a client appended by hand");
    assert!(
        out.stdout
            .starts_with(&format!("Removed the client {prefix}, which had no name.")),
        "{out}"
    );

    // The last one: the socket is restricted to the admin group again.
    let out = daemon.run_as(&a, &["trust", "remove", &a.name], None);
    out.assert_code(0, "A removes itself, the last trusted client");
    assert!(
        out.stdout
            .contains("No client is trusted now: only administrators can reach the service"),
        "{out}"
    );
    assert!(out.stdout.contains("the client you used"), "{out}");
    assert!(daemon.store_certs().is_empty(), "the store should be empty");
    daemon.assert_socket_mode((0o660, 0, admins.gid), "after the last client was removed");
    let out = daemon.run_as(&b, &["list"], None);
    assert_eq!(
        out.code,
        Some(3),
        "a non-admin cannot reach the restricted socket\n{out}"
    );
    // An administrator still can, and becomes the first client again.
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` on the restricted socket");
    daemon.assert_socket_mode((0o666, 0, 0), "after A was trusted again");

    let log = daemon.log();
    let removed = audit_events(&log, "removed");
    assert_eq!(
        removed.len(),
        6,
        "one audit event per removal:\n{}",
        removed.join("\n")
    );
    assert!(
        removed
            .iter()
            .any(|l| l.contains(&format!("name=\"{}\"", b.name)) && l.contains("remaining=4")),
        "{removed:?}"
    );
    assert!(
        removed.last().unwrap().contains("remaining=0"),
        "{removed:?}"
    );
    assert!(
        audit_events(&log, "refused")
            .iter()
            .any(|l| l.contains("reason=\"not-trusted\"") && l.contains(&format!("uid={}", b.uid))),
        "B's refusal should be audited"
    );
    assert!(
        !log.contains(PASSPHRASE),
        "the passphrase appears in the log"
    );
}

multipass_system_tests::process_tests! {
    root: [trust_remove_takes_effect_at_once],
}
