//! Least privilege among trusted clients: a client enrolled with the shared passphrase by a user
//! who is not an administrator may list the trusted clients and remove its own entry, but not
//! remove another client nor create, list or revoke enrollment tokens; it is told who may and how
//! (exit 2). An administrator's client (uid 0 or the admin group, by SO_PEERCRED at the time of
//! the request) may do all of it. The refusals and the changes are audit events naming the caller.

use std::process::Command;

use multipass_system_tests::{
    audit_events, sha256_hex, token_in, CliOutput, Daemon, Fixture, Group, User,
};
use serde_json::Value;

const PASSPHRASE: &str = "least-privilege-pass";

/// `gpasswd ARGS...` (group membership changes while the daemon runs).
fn gpasswd(args: &[&str]) {
    let out = Command::new("gpasswd")
        .args(args)
        .output()
        .expect("gpasswd");
    assert!(
        out.status.success(),
        "gpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Panics unless `out` is the refusal of `action` to a non-administrator, naming the group, `sudo`
/// and `--admin`.
#[track_caller]
fn assert_needs_admin(out: &CliOutput, command: &str, action: &str, group: &Group) {
    out.assert_failure(
        2,
        &format!(
            "{command} failed: Only an administrator can {action}: a client run by root or by a \
             member of the '{}' group. Run the command with `sudo`, or as a member of '{}'; if \
             that client is not trusted yet, `multipass authenticate --admin` trusts it.",
            group.name, group.name
        ),
        &format!("`{command}` by a client that is not an administrator's"),
    );
}

fn token_status(daemon: &Daemon, admin: &User, name: &str) -> String {
    let out = daemon.run_as(admin, &["trust", "token", "list", "--format", "json"], None);
    out.assert_code(0, "`trust token list --format json` by the administrator");
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    json["tokens"]
        .as_array()
        .expect("a list of tokens")
        .iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["status"].as_str())
        .unwrap_or_else(|| panic!("token {name} not listed\n{out}"))
        .to_string()
}

fn trust_management_needs_an_administrator() {
    let Fixture(_dir, admins, a, [b, c, d], daemon) = Fixture::open();

    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client, an administrator)");
    daemon.set_passphrase(&a, PASSPHRASE);
    for (user, who) in [(&b, "B"), (&c, "C"), (&d, "D")] {
        daemon
            .run_as(user, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
            .assert_code(0, &format!("{who} `authenticate` with the passphrase"));
    }
    let out = daemon.run_as(&a, &["trust", "token", "create", "--name", "keep-me"], None);
    out.assert_code(0, "A `trust token create`");
    assert!(token_in(&out.stdout).is_some(), "{out}");
    let store_before = std::fs::read(daemon.store_path()).unwrap();
    let tokens_before = std::fs::read(daemon.tokens_path()).unwrap();

    // B, trusted through the passphrase, may see who is trusted...
    let out = daemon.run_as(&b, &["trust", "list", "--format", "json"], None);
    out.assert_code(0, "B `trust list`");
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(json["clients"].as_array().map(Vec::len), Some(4), "{out}");

    // ...but not remove another client, by name or by fingerprint prefix...
    let c_prefix = sha256_hex(&c.cert_der())[..12].to_string();
    for id in [c.name.as_str(), c_prefix.as_str(), a.name.as_str()] {
        let out = daemon.run_as(&b, &["trust", "remove", id], None);
        assert_needs_admin(
            &out,
            "trust remove",
            "remove another client's trust",
            &admins,
        );
    }
    // ...nor manage tokens.
    for (args, command, action) in [
        (
            &["trust", "token", "create", "--name", "for-a-friend"][..],
            "trust token create",
            "create enrollment tokens",
        ),
        (
            &["trust", "token", "list"],
            "trust token list",
            "list enrollment tokens",
        ),
        (
            &["trust", "token", "revoke", "keep-me"],
            "trust token revoke",
            "revoke enrollment tokens",
        ),
    ] {
        let out = daemon.run_as(&b, args, None);
        assert_needs_admin(&out, command, action, &admins);
        assert!(token_in(&out.stdout).is_none(), "{out}");
    }
    assert_eq!(std::fs::read(daemon.store_path()).unwrap(), store_before);
    assert_eq!(std::fs::read(daemon.tokens_path()).unwrap(), tokens_before);
    assert_eq!(token_status(&daemon, &a, "keep-me"), "active");
    for (user, who) in [(&a, "A"), (&c, "C")] {
        daemon
            .run_as(user, &["list"], None)
            .assert_code(0, &format!("{who} `list` after B's refused attempts"));
    }

    // Administrator is what the user is at the time of the request: B in the admin group may,
    // B taken out of it again may not.
    gpasswd(&["-a", &b.name, &admins.name]);
    daemon
        .run_as(&b, &["trust", "token", "list"], None)
        .assert_code(0, "B `trust token list` once in the admin group");
    gpasswd(&["-d", &b.name, &admins.name]);
    let out = daemon.run_as(&b, &["trust", "token", "list"], None);
    assert_needs_admin(&out, "trust token list", "list enrollment tokens", &admins);

    // A, the administrator, may do all of it.
    let out = daemon.run_as(&a, &["trust", "token", "create", "--name", "for-c2"], None);
    out.assert_code(0, "A `trust token create`");
    daemon
        .run_as(&a, &["trust", "token", "revoke", "keep-me"], None)
        .assert_code(0, "A `trust token revoke`");
    assert_eq!(token_status(&daemon, &a, "keep-me"), "revoked");
    let out = daemon.run_as(&a, &["trust", "remove", &c.name], None);
    out.assert_code(0, "A `trust remove <C>`");
    daemon
        .run_as(&c, &["list"], None)
        .assert_not_authenticated("list", "C right after A removed it");

    // B may remove itself (by name), D by fingerprint prefix.
    let out = daemon.run_as(&b, &["trust", "remove", &b.name], None);
    out.assert_code(0, "B `trust remove <B>` (itself)");
    assert!(out.stdout.contains("the client you used"), "{out}");
    daemon
        .run_as(&b, &["list"], None)
        .assert_not_authenticated("list", "B after removing itself");
    let d_prefix = sha256_hex(&d.cert_der())[..12].to_string();
    daemon
        .run_as(&d, &["trust", "remove", &d_prefix], None)
        .assert_code(0, "D `trust remove <its own prefix>`");
    let remaining = daemon.store_certs();
    assert_eq!(remaining, vec![a.cert_der()], "only A is left");

    // Audit: every refusal names the caller and what it asked; every change names who made it.
    let log = daemon.log();
    let refused: Vec<&str> = audit_events(&log, "refused")
        .into_iter()
        .filter(|l| l.contains("reason=\"not-administrator\""))
        .collect();
    for action in [
        "remove another client's trust",
        "create enrollment tokens",
        "list enrollment tokens",
        "revoke enrollment tokens",
    ] {
        assert!(
            refused.iter().any(|l| l.contains(action)
                && l.contains(&format!("uid={}", b.uid))
                && l.contains(&format!("user=\"{}\"", b.name))),
            "no audited refusal of {action:?} naming B:\n{}",
            refused.join("\n")
        );
    }
    let removed = audit_events(&log, "removed");
    for (target, by) in [(&c, &a), (&b, &b), (&d, &d)] {
        assert!(
            removed
                .iter()
                .any(|l| l.contains(&format!("name=\"{}\"", target.name))
                    && l.contains(&format!("by_uid={}", by.uid))
                    && l.contains(&format!("by_user=\"{}\"", by.name))),
            "removal of {} by {} not audited with the caller:\n{}",
            target.name,
            by.name,
            removed.join("\n")
        );
    }
    let created = audit_events(&log, "token-created");
    assert!(
        created.len() == 2
            && created
                .iter()
                .all(|l| l.contains(&format!("by_uid={}", a.uid))),
        "tokens created by A only:\n{}",
        created.join("\n")
    );
    assert!(
        audit_events(&log, "token-revoked")
            .iter()
            .any(|l| l.contains(&format!("by_uid={}", a.uid))),
        "{log}"
    );
}

multipass_system_tests::process_tests! {
    root: [trust_management_needs_an_administrator],
}
