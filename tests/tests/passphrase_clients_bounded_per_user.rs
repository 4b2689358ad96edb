//! One user may have at most 100 clients trusted with the passphrase. Each new key is a new
//! client, so without a bound a user who knows the passphrase could grow the store and the audit
//! log for as long as they liked. The next client is refused before its passphrase is hashed,
//! with a message that says how to go on, and the refusal is audited (collapsed). Clients trusted
//! already keep working, a token still enrols, a place given back can be taken again, and root
//! is not bounded.

use multipass_system_tests::clients;
use multipass_system_tests::{audit_events, log_field, Daemon, Fixture, User};

/// `multipassd::admission::MAX_PASSPHRASE_CLIENTS`.
const BOUND: usize = 100;
const PASSPHRASE: &str = "one-too-many";
const REFUSED: &str = "This user has 100 clients trusted with the passphrase already";

/// `multipass authenticate` as `user` from the client in `user`'s directory `client`.
fn authenticate(daemon: &Daemon, user: &User, client: &str, secret: &str) -> (i32, String) {
    let out = clients::cli(
        daemon,
        user,
        &clients::user_dir(user, client),
        &["authenticate"],
        Some(&format!("{secret}\n")),
    );
    (out.code.unwrap_or(-1), out.stderr)
}

fn passphrase_clients_bounded_per_user() {
    let Fixture(dir, _admins, admin, [user], daemon) = Fixture::open();
    clients::first_client_sets_passphrase(&daemon, &admin, PASSPHRASE);
    clients::trusted_by_passphrase_already(&daemon, &dir.subdir("earlier"), user.uid, BOUND - 1);

    let (code, stderr) = authenticate(&daemon, &user, "the-hundredth", PASSPHRASE);
    assert_eq!(code, 0, "the hundredth client: {stderr}");

    // The next, with the right passphrase or a wrong one: refused, saying how to go on.
    for secret in [PASSPHRASE, "a wrong one"] {
        let (code, stderr) = authenticate(&daemon, &user, "one-too-many", secret);
        assert_eq!(code, 2, "one client too many ({secret}): {stderr}");
        assert!(
            stderr.contains(REFUSED)
                && stderr.contains("multipass trust remove")
                && stderr.contains("one-time token, which 'multipass authenticate' asks for"),
            "one client too many ({secret}): {stderr}"
        );
    }
    let list = |client: &str| {
        let xdg = clients::user_dir(&user, client);
        clients::cli(&daemon, &user, &xdg, &["list"], None)
    };
    list("one-too-many").assert_code(2, "the client refused is not trusted");
    list("the-hundredth").assert_code(0, "the hundredth client");
    let (code, stderr) = authenticate(&daemon, &user, "the-hundredth", PASSPHRASE);
    assert_eq!(code, 0, "a trusted client authenticates again: {stderr}");

    // Audited, with who and why.
    let log = daemon.log();
    let refused: Vec<_> = audit_events(&log, "refused")
        .into_iter()
        .filter(|l| log_field(l, "reason") == Some("\"too-many-clients\""))
        .collect();
    assert!(!refused.is_empty(), "no refusal audited:\n{log}");
    let uid = user.uid.to_string();
    assert!(
        refused
            .iter()
            .all(|l| log_field(l, "uid") == Some(uid.as_str())),
        "{refused:#?}"
    );

    // A token is an administrator's decision, and is not counted.
    let out = daemon.run_as(&admin, &["trust", "token", "create"], None);
    out.assert_code(0, "`trust token create`");
    let (code, stderr) = authenticate(&daemon, &user, "one-too-many", out.stdout_trimmed());
    assert_eq!(code, 0, "a token beyond the bound: {stderr}");

    // A place given back is taken again.
    let name = format!("earlier-{}-0", user.uid);
    daemon
        .run_as(&admin, &["trust", "remove", &name], None)
        .assert_code(0, "remove one of the user's clients");
    let (code, stderr) = authenticate(&daemon, &user, "in-its-place", PASSPHRASE);
    assert_eq!(code, 0, "a client in the place given back: {stderr}");

    // Root is not bounded.
    clients::trusted_by_passphrase_already(&daemon, &dir.subdir("earlier"), 0, BOUND);
    daemon
        .run_as_root(&["authenticate"], Some(&format!("{PASSPHRASE}\n")))
        .assert_code(0, "root's client beyond the bound");
}

multipass_system_tests::process_tests! {
    root: [passphrase_clients_bounded_per_user],
}
