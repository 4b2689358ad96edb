//! Writers merge with what is on disk: a certificate appended to the store by hand survives the
//! daemon's next write (Multipass rewrote the file from memory and lost it).

use multipass_system_tests::Fixture;

const PASSPHRASE: &str = "hand-append-pass";

fn hand_append_survives_authenticate() {
    let Fixture(_dir, _admins, a, [c, e], daemon) = Fixture::open();

    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first admin client `list`");
    daemon
        .run_as(
            &a,
            &["set", "local.passphrase"],
            Some(&format!("{PASSPHRASE}\n{PASSPHRASE}\n")),
        )
        .assert_code(0, "A `set local.passphrase`");

    // E gets a certificate (a gated command: refused, but the certificate is created).
    daemon.ensure_client_cert(&e, &["version"], None);
    daemon
        .run_as(&e, &["list"], None)
        .assert_not_authenticated("list", "E `list` before being trusted");

    // An administrator appends E's certificate by hand.
    daemon.append_to_store_by_hand(&e);

    // The daemon writes the store: C authenticates with the passphrase.
    daemon
        .run_as(&c, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
        .assert_code(0, "C `authenticate` with the passphrase");

    let store = daemon.store_certs();
    let (a_der, c_der, e_der) = (a.cert_der(), c.cert_der(), e.cert_der());
    assert!(
        store.contains(&a_der),
        "A's certificate lost from the store"
    );
    assert!(
        store.contains(&e_der),
        "the hand-appended certificate of E was lost when the daemon wrote the store"
    );
    assert!(
        store.contains(&c_der),
        "C's certificate is missing after a successful authenticate"
    );
    assert_eq!(
        store.len(),
        3,
        "the store should hold exactly A, E and C (no duplicates)"
    );

    for (user, who) in [(&e, "E"), (&c, "C"), (&a, "A")] {
        daemon
            .run_as(user, &["list"], None)
            .assert_code(0, &format!("{who} `list` after the merge"));
    }
}

/// The documented recovery, `cat cert.pem | sudo tee -a store.pem`, while a removal rewrites the
/// store: `tee` opens the file when it starts and writes when the certificate comes (here a
/// second later, as over a slow `ssh`), into the file the removal has replaced meanwhile. The
/// append succeeded, so the certificate must be trusted all the same.
fn a_slow_hand_append_survives_a_removal() {
    let Fixture(_dir, _admins, a, [c, e], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first admin client `list`");
    daemon.ensure_client_cert(&c, &["version"], None);
    daemon.append_to_store_by_hand(&c);
    daemon
        .run_as(&c, &["list"], None)
        .assert_code(0, "C, appended by hand, `list`");
    daemon.ensure_client_cert(&e, &["version"], None);

    let mut tee = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(r#"(sleep 1; cat "$1") | tee -a "$2" >/dev/null"#)
        .arg("sh")
        .arg(e.cert_path())
        .arg(daemon.store_path())
        .spawn()
        .expect("tee");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let c_prefix = multipass_system_tests::sha256_hex(&c.cert_der())[..16].to_string();
    daemon
        .run_as(&a, &["trust", "remove", &c_prefix], None)
        .assert_code(0, "A removes C while the append waits");
    assert!(tee.wait().unwrap().success(), "tee -a succeeded");

    daemon
        .run_as(&e, &["list"], None)
        .assert_code(0, "E, appended by hand during the removal, `list`");
    daemon
        .run_as(&c, &["list"], None)
        .assert_not_authenticated("list", "C, removed");
    let store = std::fs::read_to_string(daemon.store_path()).unwrap();
    let e_pem = std::fs::read_to_string(e.cert_path()).unwrap();
    assert_eq!(store.matches(e_pem.trim()).count(), 1, "E once in the file");
}

multipass_system_tests::process_tests! {
    root: [hand_append_survives_authenticate, a_slow_hand_append_survives_a_removal],
}
