//! The audit lines of trust events say who (user name and uid) and which certificate (its
//! fingerprint) in their message text, not only in structured fields that `journalctl` shows
//! only with `-o verbose`: in the daemon (first client, passphrase, token, refusals, removal) and
//! in the helper.

use multipass_system_tests::clients::{self, Identity};
use multipass_system_tests::{audit_events, sha256_hex, token_in, Fixture, User};

const PASSPHRASE: &str = "events-pass";

/// The message text of a log line of the `fmt` format (`TIME LEVEL target: TEXT field=...`),
/// without its fields.
fn text(line: &str) -> &str {
    let after_target = line.split_once(" audit: ").map_or(line, |(_, t)| t);
    after_target.split(" event=").next().unwrap_or(after_target)
}

/// The one line of `event` whose text names `fingerprint`; it must also name `who`.
#[track_caller]
fn assert_names<'a>(lines: &[&'a str], event: &str, fingerprint: &str, who: &str) -> &'a str {
    let line = lines
        .iter()
        .find(|l| text(l).contains(fingerprint))
        .unwrap_or_else(|| {
            panic!(
                "no `{event}` line names {fingerprint} in its text:\n{}",
                lines.join("\n")
            )
        });
    assert!(
        text(line).contains(who),
        "the text of the `{event}` line must name {who:?}: {line}"
    );
    line
}

fn who(user: &User) -> String {
    format!("user {}, uid {}", user.name, user.uid)
}

fn trust_events_name_who_in_their_text() {
    let Fixture(_dir, admins, admin, [bob, carol, dave], daemon) = Fixture::open();
    clients::first_client_sets_passphrase(&daemon, &admin, PASSPHRASE);
    daemon
        .run_as(&bob, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
        .assert_code(0, "bob authenticates");
    daemon
        .run_as(&carol, &["list"], None)
        .assert_not_authenticated("list", "carol, untrusted");
    daemon
        .run_as(&carol, &["authenticate"], Some("not-the-passphrase\n"))
        .assert_code(2, "carol with a wrong passphrase");
    let out = daemon.run_as(
        &admin,
        &["trust", "token", "create", "--name", "dave"],
        None,
    );
    out.assert_code(0, "create a token");
    let token = token_in(&out.stdout).expect("a token");
    daemon
        .run_as(&dave, &["authenticate"], Some(&format!("{token}\n")))
        .assert_code(0, "dave redeems the token");
    daemon
        .run_as(&bob, &["trust", "token", "list"], None)
        .assert_code(2, "bob, not an administrator, lists tokens");
    daemon
        .run_as(&admin, &["trust", "remove", &bob.name], None)
        .assert_code(0, "the administrator removes bob");
    // The helper's direct mode (root, as through pkexec) trusts a certificate too.
    let helped = Identity::create(&clients::user_dir(&carol, "helped"), Some(&carol));
    let out = clients::helper_trust(&daemon, &admins.name, &helped.cert_pem, "helped");
    out.assert_code(0, "the helper trusts a certificate");
    // The same certificate again changes nothing, says so, and is not audited as trusted.
    let again = clients::helper_trust(&daemon, &admins.name, &helped.cert_pem, "helped");
    again.assert_code(0, "the helper trusts the same certificate again");
    assert_eq!(again.stdout, out.stdout, "the same fingerprint\n{again}");
    assert!(again.stderr.contains("trusted already"), "{again}");
    assert!(
        !again.stderr.contains("event=\"trusted\""),
        "nothing was trusted\n{again}"
    );
    // A passphrase set through the direct mode is audited like one set through the bus.
    let cmd = clients::helper_command(&daemon, &admins.name, &["set-passphrase"]);
    let set = multipass_system_tests::process::run(
        cmd,
        Some("helper-passphrase\n"),
        multipass_system_tests::process::DEFAULT_TIMEOUT,
    );
    set.assert_code(0, "the helper sets the passphrase");
    let set_lines: Vec<&str> = set
        .stderr
        .lines()
        .filter(|l| l.contains(" audit: ") && l.contains("event=\"passphrase-set\""))
        .collect();
    assert_eq!(set_lines.len(), 1, "{set}");
    assert!(text(set_lines[0]).contains("user root, uid 0"), "{set}");
    assert!(!set.stderr.contains("helper-passphrase"), "{set}");
    // Through sudo it names the administrator who ran it, as through pkexec.
    let mut cmd = clients::helper_command(
        &daemon,
        &admins.name,
        &["trust-certificate", "--name", "sudoed"],
    );
    cmd.env("SUDO_UID", admin.uid.to_string());
    let sudoed = Identity::create(&clients::user_dir(&carol, "sudoed"), Some(&carol));
    let through_sudo = multipass_system_tests::process::run(
        cmd,
        Some(&sudoed.cert_pem),
        multipass_system_tests::process::DEFAULT_TIMEOUT,
    );
    through_sudo.assert_code(0, "the helper trusts a certificate through sudo");
    let store = std::fs::read(daemon.store_path()).expect("the store");
    let entry = trust::Bundle::parse(&store)
        .get(&trust::Fingerprint::of(&sudoed.der))
        .cloned()
        .expect("the certificate trusted through sudo");
    assert_eq!(entry.metadata.uid, Some(admin.uid), "{through_sudo}");
    assert_eq!(entry.metadata.user.as_deref(), Some(admin.name.as_str()));

    let fp = |user: &User| sha256_hex(&user.cert_der());
    let log = daemon.log();
    let trusted = audit_events(&log, "trusted");
    let refused = audit_events(&log, "refused");
    let removed = audit_events(&log, "removed");
    let redeemed = audit_events(&log, "token-redeemed");
    let samples = [
        assert_names(&trusted, "trusted", &fp(&admin), &who(&admin)),
        assert_names(&trusted, "trusted", &fp(&bob), &who(&bob)),
        assert_names(&trusted, "trusted", &fp(&dave), &who(&dave)),
        assert_names(&redeemed, "token-redeemed", &fp(&dave), &who(&dave)),
        assert_names(&removed, "removed", &fp(&bob), &who(&admin)),
    ];
    for (reason, user) in [
        ("not-trusted", &carol),
        ("wrong-passphrase", &carol),
        ("not-administrator", &bob),
    ] {
        let of_reason: Vec<&str> = refused
            .iter()
            .copied()
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .collect();
        assert_names(&of_reason, reason, &fp(user), &who(user));
    }
    let created = audit_events(&log, "token-created");
    assert!(
        created
            .iter()
            .any(|l| text(l).contains("'dave'") && text(l).contains(&who(&admin))),
        "the text of the token-created line must name the token and who made it:\n{}",
        created.join("\n")
    );
    for (line, how) in [
        (samples[0], "as the first client"),
        (samples[1], "by passphrase"),
        (samples[2], "by enrollment token"),
    ] {
        assert!(text(line).contains(how), "{line}");
    }
    let helper_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains(" audit: ") && l.contains("event=\"trusted\""))
        .collect();
    let root = "user root, uid 0";
    let helper_line = text(assert_names(
        &helper_lines,
        "trusted (helper)",
        &sha256_hex(&helped.der),
        root,
    ));
    multipass_system_tests::figure(&format!(
        "trust_events_name_who_in_their_text: e.g.\n  {}\n  {}\n  {}\n  {helper_line}",
        text(samples[1]),
        text(samples[4]),
        text(
            refused
                .iter()
                .find(|l| l.contains("wrong-passphrase"))
                .unwrap()
        ),
    ));
}

multipass_system_tests::process_tests! {
    root: [trust_events_name_who_in_their_text],
}
