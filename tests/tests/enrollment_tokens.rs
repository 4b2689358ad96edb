//! A one-time enrollment token enrolls exactly one client; a second
//! redemption, an expired token, a revoked one and one that never existed fail with clear messages;
//! wrong tokens count against the same rate limit as wrong passphrases; a stock-protocol client
//! (Python grpcio) can redeem a token. Every step is an audit event, and
//! neither a token nor its hash reaches a log or any output but the one that creates it.

use std::time::Duration;

use multipass_system_tests::python::{step, PythonClient};
use multipass_system_tests::{
    assert_secret_absent, audit_events, mode_owner, sha256_hex, token_in, CliOutput, Daemon,
    DaemonConfig, Fixture, User, PASSPHRASE_NOT_SET, TOKEN_PREFIX,
};
use serde_json::Value;

/// `multipass trust token create args...` as `admin`; the token it printed.
fn create_token(daemon: &Daemon, admin: &User, args: &[&str]) -> String {
    let mut all = vec!["trust", "token", "create"];
    all.extend_from_slice(args);
    let out = daemon.run_as(admin, &all, None);
    out.assert_code(0, "`trust token create`");
    let token = token_in(&out.stdout).unwrap_or_else(|| panic!("no token printed\n{out}"));
    assert!(
        out.stderr
            .contains("runs `multipass authenticate` and enters it at the passphrase prompt"),
        "stderr should say where the token goes\n{out}"
    );
    assert_eq!(
        out.stdout_trimmed(),
        token,
        "stdout should be the token alone\n{out}"
    );
    token
}

/// The daemon at its most verbose (`-vvv`), so that a token in any line it can write is seen.
fn at_trace_level<const N: usize>() -> Fixture<N> {
    Fixture::open_configured(DaemonConfig {
        verbosity: 3,
        ..DaemonConfig::default()
    })
}

/// That `log` has lines of every level, so that looking for a secret in it proves something.
fn assert_traced(log: &str) {
    assert!(
        log.contains(" TRACE "),
        "the daemon did not log at trace level:\n{log}"
    );
}

fn enrollment_tokens() {
    let Fixture(dir, _admins, a, [b, c, d, e, f], daemon) = at_trace_level();
    let python = PythonClient::prepare(&dir);
    let mut outputs: Vec<CliOutput> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();

    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");

    // One token, one client.
    let first = create_token(&daemon, &a, &["--name", "bob-laptop", "--expires", "1h"]);
    tokens.push(first.clone());
    let stored = std::fs::read_to_string(daemon.tokens_path()).expect("read the token file");
    assert!(
        !stored.contains(&first),
        "the token file holds the token itself"
    );
    assert!(
        stored.contains(&sha256_hex(first.as_bytes())),
        "the token file holds its hash"
    );
    assert_eq!(
        mode_owner(&daemon.tokens_path()).unwrap().0,
        0o600,
        "token file mode"
    );

    let out = daemon.run_as(&b, &["authenticate"], Some(&format!("{first}\n")));
    out.assert_code(0, "B `authenticate` with the token");
    assert_eq!(
        out.stdout_after_prompt(),
        "This client is trusted as 'bob-laptop'.",
        "{out}"
    );
    outputs.push(out);
    daemon
        .run_as(&b, &["list"], None)
        .assert_code(0, "B `list` after redeeming the token");
    let out = daemon.run_as(&c, &["authenticate"], Some(&format!("{first}\n")));
    out.assert_failure(
        2,
        "authenticate failed: This enrollment token has already been used. Please ask an \
         administrator for a new one.",
        "C `authenticate` with the used token",
    );
    outputs.push(out);
    daemon
        .run_as(&c, &["list"], None)
        .assert_not_authenticated("list", "C `list` after the refused token");
    let store = daemon.store_certs();
    assert_eq!(store.len(), 2, "exactly A and B are trusted");
    assert!(store.contains(&b.cert_der()) && !store.contains(&c.cert_der()));

    // Expired (the token given as the argument, as `multipass authenticate TOKEN`).
    let short = create_token(&daemon, &a, &["--name", "short-lived", "--expires", "2s"]);
    tokens.push(short.clone());
    std::thread::sleep(Duration::from_millis(2500));
    let out = daemon.run_as(&c, &["authenticate", &short], None);
    out.assert_failure(
        2,
        "authenticate failed: This enrollment token has expired. Please ask an administrator \
         for a new one.",
        "C `authenticate` with an expired token",
    );
    outputs.push(out);
    // Revoking it changes nothing (the list below still says expired; no audit line).
    let out = daemon.run_as(&a, &["trust", "token", "revoke", "short-lived"], None);
    out.assert_code(0, "A `trust token revoke` of an expired token");
    assert_eq!(
        out.stdout.trim(),
        "Enrollment token 'short-lived' had expired already: it cannot be used.",
        "{out}"
    );

    // Revoked.
    let revoked = create_token(&daemon, &a, &["--name", "changed-my-mind"]);
    tokens.push(revoked.clone());
    let out = daemon.run_as(&a, &["trust", "token", "revoke", "changed-my-mind"], None);
    out.assert_code(0, "A `trust token revoke`");
    assert_eq!(
        out.stdout.trim(),
        "Revoked enrollment token 'changed-my-mind': it can no longer be used.",
        "{out}"
    );
    outputs.push(out);
    // Again: it succeeds for scripts, says that nothing changed, and leaves no second audit line
    // (checked with the audit below).
    let out = daemon.run_as(&a, &["trust", "token", "revoke", "changed-my-mind"], None);
    out.assert_code(0, "A second `trust token revoke`");
    assert_eq!(
        out.stdout.trim(),
        "Enrollment token 'changed-my-mind' was already revoked: it cannot be used.",
        "{out}"
    );
    outputs.push(out);
    let out = daemon.run_as(&c, &["authenticate"], Some(&format!("{revoked}\n")));
    out.assert_failure(
        2,
        "authenticate failed: This enrollment token has been revoked. Please ask an \
         administrator for a new one.",
        "C `authenticate` with a revoked token",
    );
    outputs.push(out);
    let out = daemon.run_as(&a, &["trust", "token", "revoke", "no-such-token"], None);
    out.assert_failure(
        2,
        "trust token revoke failed: There is no enrollment token named 'no-such-token'.",
        "revoking a token that does not exist",
    );

    // The list tells them apart.
    let out = daemon.run_as(&a, &["trust", "token", "list", "--format", "json"], None);
    out.assert_code(0, "A `trust token list --format json`");
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let status = |name: &str| {
        json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("token {name} not listed\n{out}"))
    };
    assert_eq!(status("bob-laptop"), "used");
    assert_eq!(status("short-lived"), "expired");
    assert_eq!(status("changed-my-mind"), "revoked");
    // A used token says who redeemed it and which client it enrolled.
    let bob_client = sha256_hex(&b.cert_der());
    let used = json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bob-laptop")
        .unwrap();
    assert_eq!(used["used_by_user"], b.name.as_str(), "{out}");
    assert_eq!(used["used_by_uid"], b.uid, "{out}");
    assert_eq!(used["used_by_client"], bob_client.as_str(), "{out}");
    outputs.push(out);
    let out = daemon.run_as(&a, &["trust", "token", "list"], None);
    out.assert_code(0, "A `trust token list`");
    assert!(out.stdout.starts_with("Name"), "{out}");
    assert!(
        out.stdout
            .contains(&format!("{} ({})", b.name, &bob_client[..16])),
        "{out}"
    );
    outputs.push(out);
    // Revoking it says how to undo what it did, by the client's fingerprint.
    let out = daemon.run_as(&a, &["trust", "token", "revoke", "bob-laptop"], None);
    out.assert_failure(
        2,
        &format!(
            "trust token revoke failed: The enrollment token 'bob-laptop' was already used; to \
             undo that, remove the client it enrolled: `multipass trust remove {}`.",
            &bob_client[..16]
        ),
        "revoking a used token",
    );

    // Wrong tokens and wrong passphrases share one limiter: three free failures, then a wait
    // that doubles with each failure (from 1 s; up to 60 s, the default).
    let never = format!("{TOKEN_PREFIX}{}", "0".repeat(40));
    for attempt in 1..=4 {
        let out = daemon.run_as(&d, &["authenticate"], Some(&format!("{never}\n")));
        out.assert_failure(
            2,
            "authenticate failed: The enrollment token is not valid. Please check it, or ask an \
             administrator for a new one.",
            &format!("D `authenticate` with an unknown token, attempt {attempt}"),
        );
    }
    // A passphrase attempt within that wait is refused. One that comes late (a slow machine)
    // finds no passphrase set, which is no failure; another wrong token then doubles the wait
    // for the next attempt.
    let mut refused = false;
    for _ in 0..4 {
        let out = daemon.run_as(&d, &["authenticate"], Some("a-wrong-passphrase\n"));
        out.assert_code(2, "D `authenticate` with a passphrase after wrong tokens");
        if out
            .stderr
            .contains("Too many failed authentication attempts")
        {
            refused = true;
            break;
        }
        assert!(out.stderr.contains(PASSPHRASE_NOT_SET), "{out}");
        daemon
            .run_as(&d, &["authenticate"], Some(&format!("{never}\n")))
            .assert_code(2, "D `authenticate` with another unknown token");
    }
    assert!(
        refused,
        "wrong tokens should count against the passphrase limiter"
    );

    // A passphrase cannot take the shape of a token.
    let out = daemon.run_as(
        &a,
        &["set", "local.passphrase"],
        Some(&format!("{never}\n{never}\n")),
    );
    out.assert_code(2, "a token-shaped passphrase");
    assert!(out.stderr.contains("shape of an enrollment token"), "{out}");

    // A stock-protocol client (Python grpcio) redeems a token.
    daemon.ensure_client_cert(&f, &["version"], None);
    let for_python = create_token(&daemon, &a, &["--name", "py-client"]);
    tokens.push(for_python.clone());
    let out = python.run(&f, &daemon, &for_python);
    assert!(
        step(&out, "LIST1").starts_with("LIST1 UNAUTHENTICATED "),
        "grpcio before redeeming\n{out}"
    );
    let auth = step(&out, "AUTH");
    assert!(
        auth.starts_with("AUTH OK ") && auth.contains("This client is trusted as 'py-client'."),
        "grpcio `authenticate` with a token: {auth}"
    );
    assert!(
        step(&out, "LIST2").starts_with("LIST2 OK "),
        "grpcio after redeeming\n{out}"
    );
    outputs.push(out);
    daemon
        .run_as(&f, &["list"], None)
        .assert_code(0, "F (CLI, same certificate) after redeeming with grpcio");
    // E never got a token: still out.
    daemon
        .run_as(&e, &["list"], None)
        .assert_not_authenticated("list", "E, who redeemed nothing");

    // Audit: creation, redemption, revocation and every refusal, with its reason.
    let log = daemon.log();
    assert_eq!(audit_events(&log, "token-created").len(), 4, "{log}");
    let redeemed = audit_events(&log, "token-redeemed");
    assert_eq!(redeemed.len(), 2, "{redeemed:?}");
    assert!(redeemed.iter().any(|l| l.contains("token_name=bob-laptop")));
    assert!(redeemed.iter().any(|l| l.contains("token_name=py-client")));
    let revoked_events = audit_events(&log, "token-revoked");
    assert!(
        revoked_events.len() == 1 && revoked_events[0].contains("token_name=changed-my-mind"),
        "{revoked_events:?}"
    );
    let refused = audit_events(&log, "refused");
    for reason in [
        "token-used",
        "token-expired",
        "token-revoked",
        "token-unknown",
        "rate-limited",
    ] {
        assert!(
            refused
                .iter()
                .any(|l| l.contains(&format!("reason=\"{reason}\""))),
            "no refusal audited with reason {reason}:\n{}",
            refused.join("\n")
        );
    }
    assert!(
        audit_events(&log, "trusted")
            .iter()
            .filter(|l| l.contains("how=\"token\""))
            .count()
            == 2,
        "two clients trusted by token"
    );

    let outs: Vec<&CliOutput> = outputs.iter().collect();
    assert_traced(&log);
    for token in &tokens {
        assert_secret_absent(token, "a token", &log, &outs);
        assert_secret_absent(&sha256_hex(token.as_bytes()), "a token's hash", &log, &outs);
    }
}

/// A token pasted with the blanks or quotes around it is still redeemed as a token, and a token
/// cut short is refused as a passphrase with a line saying what a whole token looks like.
fn a_pasted_token_with_blanks_or_quotes_is_a_token() {
    let Fixture(_dir, _admins, a, [b, c, d], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");

    let token = create_token(&daemon, &a, &["--name", "spaced"]);
    daemon
        .run_as(&b, &["authenticate"], Some(&format!("  {token} \n")))
        .assert_code(0, "B `authenticate` with blanks around the token");
    let token = create_token(&daemon, &a, &["--name", "quoted"]);
    daemon
        .run_as(&c, &["authenticate"], Some(&format!("\"{token}\"\n")))
        .assert_code(0, "C `authenticate` with the token in quotes");

    let token = create_token(&daemon, &a, &[]);
    let out = daemon.run_as(&d, &["authenticate"], Some(&format!("{}\n", &token[..30])));
    out.assert_code(2, "D `authenticate` with half a token");
    let mut lines = out.stderr_trimmed().lines();
    assert_eq!(
        lines.next(),
        Some(format!("authenticate failed: {PASSPHRASE_NOT_SET}").as_str()),
        "{out}"
    );
    assert!(
        lines.collect::<String>().contains(&format!(
            "`{TOKEN_PREFIX}` followed by 40 lowercase hexadecimal digits"
        )),
        "{out}"
    );
}

/// A token is revoked from the prompt, so that it never has to be on the command line, where
/// every user can read it while the command runs (and redeem it before the revocation lands);
/// one given there anyway is revoked, with a warning that says so.
fn a_token_is_revoked_without_the_command_line() {
    let Fixture(_dir, _admins, a, [b], daemon) = at_trace_level();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");

    let token = create_token(&daemon, &a, &["--name", "typed-in"]);
    let out = daemon.run_as(
        &a,
        &["trust", "token", "revoke"],
        Some(&format!(" '{token}'\n")),
    );
    out.assert_code(0, "`trust token revoke` with the token at the prompt");
    assert!(
        out.stdout.contains("Revoked enrollment token 'typed-in'"),
        "{out}"
    );
    assert!(!out.stderr.contains("command line"), "{out}");
    daemon
        .run_as(&b, &["authenticate"], Some(&format!("{token}\n")))
        .assert_code(2, "B `authenticate` with the revoked token");

    let by_name = create_token(&daemon, &a, &["--name", "by-name"]);
    let out = daemon.run_as(&a, &["trust", "token", "revoke"], Some(" by-name \r\n"));
    out.assert_code(0, "`trust token revoke` with the name at the prompt");
    assert!(!out.stderr.contains("command line"), "{out}");

    let in_argv = create_token(&daemon, &a, &["--name", "in-argv"]);
    let out = daemon.run_as(&a, &["trust", "token", "revoke", &in_argv], None);
    out.assert_code(0, "`trust token revoke TOKEN`");
    assert!(
        out.stderr.contains("The token was on the command line"),
        "{out}"
    );

    let out = daemon.run_as(&a, &["trust", "token", "revoke"], Some("\n"));
    out.assert_code(1, "`trust token revoke` with nothing at the prompt");
    assert!(out.stderr.contains("No token given"), "{out}");
    let log = daemon.log();
    assert_traced(&log);
    for token in [&token, &by_name, &in_argv] {
        assert!(!log.contains(token.as_str()), "a token in the log");
        assert!(
            !log.contains(&sha256_hex(token.as_bytes())),
            "a token's hash in the log"
        );
    }
}

multipass_system_tests::process_tests! {
    root: [
        enrollment_tokens,
        a_pasted_token_with_blanks_or_quotes_is_a_token,
        a_token_is_revoked_without_the_command_line,
    ],
}
