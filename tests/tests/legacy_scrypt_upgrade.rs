//! A passphrase set by Multipass (its scrypt hash, 128 hex characters) still works, and is
//! replaced by an Argon2id hash on the first successful authentication.

use std::os::unix::fs::PermissionsExt;

use multipass_system_tests::{
    ini_passphrase, Daemon, Group, TestDir, User, LEGACY_PASSPHRASE_HASH, PASSPHRASE_NOT_CORRECT,
};

fn legacy_scrypt_upgrade() {
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let a = User::create(&dir, Some(&admins));
    let c = User::create(&dir, None);
    let f = User::create(&dir, None);
    let g = User::create(&dir, None);

    // The settings file of an existing Multipass installation.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
    let conf = data.join("multipassd.conf");
    std::fs::write(
        &conf,
        format!("[General]\nlocal.passphrase={LEGACY_PASSPHRASE_HASH}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();

    let daemon = Daemon::start(&dir, &admins);
    assert_eq!(daemon.conf_path(), conf, "the harness uses DIR/data");
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first admin client `list`");
    let out = daemon.run_as(&a, &["get", "local.passphrase"], None);
    out.assert_code(0, "A `get local.passphrase`");
    assert_eq!(
        out.stdout_trimmed(),
        "true",
        "a legacy passphrase is a set passphrase\n{out}"
    );

    // C authenticates with the legacy passphrase.
    daemon
        .run_as(&c, &["authenticate"], Some("passphrase\n"))
        .assert_code(0, "C `authenticate` with the legacy passphrase");
    daemon
        .run_as(&c, &["list"], None)
        .assert_code(0, "C `list` after authenticating");

    let text = std::fs::read_to_string(&conf).expect("read multipassd.conf");
    let value = ini_passphrase(&text)
        .unwrap_or_else(|| panic!("no local.passphrase left in multipassd.conf:\n{text}"));
    assert!(
        value.starts_with("$argon2id$"),
        "after a successful authenticate the legacy hash should be replaced by Argon2id, \
         the conf holds {value:?}"
    );
    assert!(
        !text.contains(LEGACY_PASSPHRASE_HASH),
        "the legacy scrypt hash is still in multipassd.conf:\n{text}"
    );

    // The new hash verifies the same passphrase.
    daemon
        .run_as(&f, &["authenticate"], Some("passphrase\n"))
        .assert_code(0, "F `authenticate` against the upgraded hash");
    daemon
        .run_as(&f, &["list"], None)
        .assert_code(0, "F `list` after authenticating");

    // And a wrong one is still refused.
    daemon
        .run_as(&g, &["authenticate"], Some("Passphrase\n"))
        .assert_failure(
            2,
            &format!("authenticate failed: {PASSPHRASE_NOT_CORRECT}"),
            "G `authenticate` with a wrong passphrase",
        );
    let after = std::fs::read_to_string(&conf).expect("read multipassd.conf");
    let after = ini_passphrase(&after).unwrap_or_default();
    assert!(
        after.starts_with("$argon2id$"),
        "the passphrase should still be an Argon2id hash, is {after:?}"
    );
}

multipass_system_tests::process_tests! {
    root: [legacy_scrypt_upgrade],
}
