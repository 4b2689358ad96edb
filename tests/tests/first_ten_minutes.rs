//! What a new user does in the first ten minutes, with real users against the real daemon: the
//! flows that used to surprise (root under sudo is a client of its own, empty answers at the
//! passphrase prompt, a key the service does not have, a passphrase that is not UTF-8 or far too
//! long, `authenticate` from a trusted client, tokens without a name, no controlling terminal, the
//! wrong root certificate, `list --snapshots`), each answered clearly.

use std::time::Duration;

use multipass_system_tests::pty::PtySession;
use multipass_system_tests::{
    clients, ini_passphrase, token_in, CliOutput, Daemon, Fixture, Group, TestDir, User,
    NOT_AUTHENTICATED, PASSPHRASE_NOT_CORRECT, PASSPHRASE_NOT_SET,
};
use serde_json::Value;

/// The passphrase prompt, as the CLI writes it to stdout when stdin is not a terminal.
const PROMPT: &str = "Please enter passphrase: ";

/// A daemon whose first client is administrator alice's, and bob, who is nobody special.
/// Fields drop in order: the daemon, then the users, then their group, then the directory.
struct Scene {
    daemon: Daemon,
    alice: User,
    bob: User,
    _admins: Group,
    dir: TestDir,
}

impl Scene {
    /// Start the daemon with `extra_args`; alice becomes the first client.
    fn new(extra_args: &[&str]) -> Scene {
        let Fixture(dir, admins, alice, [bob], daemon) =
            Fixture::open_configured(multipass_system_tests::DaemonConfig {
                verbosity: 1,
                extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            });
        daemon
            .run_as(&alice, &["list"], None)
            .assert_code(0, "the administrator's first `list`");
        Scene {
            daemon,
            alice,
            bob,
            _admins: admins,
            dir,
        }
    }
}

/// The hash in the settings file, if any.
fn stored_hash(daemon: &Daemon) -> Option<String> {
    std::fs::read_to_string(daemon.conf_path())
        .ok()
        .and_then(|text| ini_passphrase(&text))
}

/// `multipass trust list --format json` as `user`: the clients.
fn trusted_clients(daemon: &Daemon, user: &User) -> Vec<Value> {
    let out = daemon.run_as(user, &["trust", "list", "--format", "json"], None);
    out.assert_code(0, "`trust list --format json`");
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    json["clients"].as_array().cloned().unwrap_or_default()
}

fn sudo_set_passphrase_fails_before_prompting_and_says_why() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let bob = &scene.bob;

    // `sudo multipass set local.passphrase`, typed by alice: root's own client asks.
    let alice_uid = alice.uid.to_string();
    let mut out = daemon.run_as_root_with(
        &["set", "local.passphrase"],
        Some("typed-for-nothing\ntyped-for-nothing\n"),
        &[("SUDO_USER", &alice.name), ("SUDO_UID", &alice_uid)],
    );
    take_sudo_note(&mut out, &alice.name, true);
    out.assert_not_authenticated("set", "`sudo multipass set local.passphrase`");
    assert_eq!(out.stdout, "", "no prompt before the refusal\n{out}");
    assert_advice(
        &out,
        &[
            "root",
            "sudo",
            &alice.name,
            "without sudo",
            "sudo multipass set local.passphrase --admin",
        ],
        "`sudo multipass set local.passphrase`",
    );
    assert_eq!(stored_hash(daemon), None, "nothing was set");

    // root without sudo, and an ordinary untrusted user: refused before the prompt too.
    let out = daemon.run_as_root(&["set", "local.passphrase"], Some("x\nx\n"));
    out.assert_not_authenticated("set", "root's `set local.passphrase`");
    assert_eq!(out.stdout, "", "{out}");
    assert!(out.stderr.contains("root is a client of its own"), "{out}");
    let out = daemon.run_as(bob, &["set", "local.passphrase"], Some("x\nx\n"));
    out.assert_not_authenticated("set", "bob's `set local.passphrase`");
    assert_eq!(out.stdout, "", "{out}");
    assert!(
        out.stderr
            .contains("`multipass set local.passphrase --admin`"),
        "{out}"
    );
    assert!(!out.stderr.contains("root"), "{out}");

    // From the trusted client the same command asks, twice, and sets it.
    let out = daemon.run_as(alice, &["set", "local.passphrase"], Some("right\nright\n"));
    out.assert_code(0, "alice's `set local.passphrase`");
    assert_eq!(
        out.stdout,
        "Please enter passphrase: Please re-enter passphrase: "
    );
    assert!(stored_hash(daemon).is_some());
    let out = daemon.run_as(alice, &["set", "local.passphrase"], Some("one\ntwo\n"));
    out.assert_failure(1, "Passphrases do not match", "a mismatch");
    // One line where two are asked for: said as a mismatch, as Multipass does, and why.
    let out = daemon.run_as(alice, &["set", "local.passphrase"], Some("only-once\n"));
    out.assert_failure(
        1,
        "Passphrases do not match\nThe second answer was empty; nothing was changed. The \
         passphrase is asked for twice: on standard input, give it on two lines.",
        "a single line",
    );
    assert!(!out.stderr.contains("only-once"), "{out}");
}

/// Any command refused under sudo says that root is a client of its own, not only `set`.
fn sudo_anything_refused_says_root_is_a_client_of_its_own() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let alice_uid = alice.uid.to_string();
    for (args, command) in [
        (&["list"][..], "list"),
        (&["get", "local.passphrase"], "get"),
        (&["trust", "list"], "trust list"),
        (&["trust", "token", "create"], "trust token create"),
    ] {
        let mut out = daemon.run_as_root_with(
            args,
            None,
            &[("SUDO_USER", &alice.name), ("SUDO_UID", &alice_uid)],
        );
        // Said once, when root's client is made.
        take_sudo_note(&mut out, &alice.name, command == "list");
        let what = format!("`sudo multipass {}`", args.join(" "));
        out.assert_not_authenticated(command, &what);
        assert_advice(
            &out,
            &[
                "root is a client of its own",
                &format!("separate from {}'s", alice.name),
                "without sudo",
                "sudo multipass authenticate --admin",
            ],
            &what,
        );
    }
}

/// Check that `out` begins with the note a command run through sudo gives when it made root's
/// client (`made`), or has none, and take the note out.
#[track_caller]
fn take_sudo_note(out: &mut CliOutput, user: &str, made: bool) {
    let note = format!("Through sudo, this command is root's client, not {user}'s: root's certificate was made now, in ");
    let (first, rest) = out.stderr.split_once('\n').unwrap_or((&out.stderr, ""));
    if made {
        assert!(
            first.starts_with(&note),
            "no note that root's client was made:\n{out}"
        );
        assert!(
            first.ends_with(&format!(
                "A service that trusts nobody yet trusts root's client as the first one; run \
                 multipass without sudo for {user}'s own."
            )),
            "{out}"
        );
        out.stderr = rest.to_string();
    } else {
        assert!(!out.stderr.contains("Through sudo"), "{out}");
    }
}

/// Panics unless the advice after a not-authenticated refusal (its first three lines are
/// Multipass's message) says each of `needed`.
#[track_caller]
fn assert_advice(out: &CliOutput, needed: &[&str], what: &str) {
    let advice = out
        .stderr_trimmed()
        .lines()
        .skip(3)
        .collect::<Vec<_>>()
        .join(" ");
    for needed in needed {
        assert!(
            advice.contains(needed),
            "{what}: {needed:?} missing from the advice\n{out}"
        );
    }
}

fn empty_answers_do_not_clear_the_passphrase() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let bob = &scene.bob;
    daemon.set_passphrase(alice, "kept");
    let before = stored_hash(daemon).expect("a passphrase is set");

    // Enter, Enter: nothing changes, and the user is told how to clear it on purpose.
    let out = daemon.run_as(alice, &["set", "local.passphrase"], Some("\n\n"));
    out.assert_failure(
        1,
        "No passphrase given; nothing was changed. To clear the passphrase, run `multipass set \
         local.passphrase=`.",
        "two empty answers",
    );
    assert_eq!(stored_hash(daemon).as_deref(), Some(before.as_str()));
    let out = daemon.run_as(alice, &["get", "local.passphrase"], None);
    assert_eq!(out.stdout_trimmed(), "true", "{out}");
    daemon
        .run_as(bob, &["authenticate"], Some("kept\n"))
        .assert_code(0, "bob with the passphrase that was kept");

    // The explicit empty value clears it, and says so.
    let out = daemon.run_as(alice, &["set", "local.passphrase="], None);
    out.assert_code(0, "`set local.passphrase=`");
    assert!(
        out.stdout
            .starts_with("The passphrase was cleared: nobody can authenticate"),
        "{out}"
    );
    assert_eq!(stored_hash(daemon), None);
    let out = daemon.run_as(alice, &["get", "local.passphrase"], None);
    assert_eq!(out.stdout_trimmed(), "false", "{out}");

    // `set --help` documents both.
    let help = daemon.run_as(alice, &["set", "--help"], None);
    help.assert_code(0, "`set --help`");
    let text = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(text.contains("An empty answer changes nothing"), "{help}");
    assert!(text.contains("`multipass set local.passphrase=`"), "{help}");
}

fn set_of_an_unknown_key_asks_for_nothing() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);

    // The service's own refusal, before any prompt; with the value given, the service says it.
    let out = daemon.run_as(alice, &["set", "foo.bar"], None);
    out.assert_failure(
        2,
        "set failed: Unrecognized settings key: 'foo.bar'",
        "`set foo.bar`",
    );
    assert_eq!(
        out.stdout, "",
        "a prompt for a key the service does not have\n{out}"
    );
    let out = daemon.run_as(alice, &["set", "foo.bar=baz"], None);
    out.assert_failure(
        2,
        "set failed: Unrecognized settings key: 'foo.bar'",
        "`set foo.bar=baz`",
    );
}

fn set_local_passphrase_refuses_what_it_cannot_send() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    daemon.set_passphrase(alice, "kept");
    let before = stored_hash(daemon).expect("a passphrase is set");

    // Not UTF-8: an input error, said as such, with no remedy telling to do what was done.
    let out = daemon.run_as_bytes(
        alice,
        &["set", "local.passphrase"],
        Some(b"\xff\xfe\n\xff\xfe\n"),
    );
    out.assert_failure(
        1,
        "The passphrase must be UTF-8 text.",
        "a passphrase not UTF-8",
    );
    assert_eq!(out.stderr_trimmed().lines().count(), 1, "{out}");

    // Far more than the service takes, or even decodes: refused by the client, read in part.
    let long = "a".repeat(5_000_000);
    let out = daemon.run_as(
        alice,
        &["set", "local.passphrase"],
        Some(&format!("{long}\n")),
    );
    out.assert_failure(
        1,
        "Invalid setting 'local.passphrase': the passphrase is longer than 1024 bytes",
        "a passphrase of 5 MB",
    );
    assert_eq!(stored_hash(daemon).as_deref(), Some(before.as_str()));
}

/// What `authenticate` reads at its prompt (asked once the daemon is reached) and cannot send is
/// refused by the client, as a wrong input (exit 1), and standard input is not read much beyond
/// the limit.
fn authenticate_refuses_what_it_cannot_send() {
    let scene = Scene::new(&[]);
    let (daemon, bob) = (&scene.daemon, &scene.bob);

    for empty in ["", "\n"] {
        let out = daemon.run_as(bob, &["authenticate"], Some(empty));
        out.assert_failure(1, "No passphrase given", "an empty answer");
        assert_eq!(out.stdout, PROMPT, "{out}");
    }
    let out = daemon.run_as_bytes(bob, &["authenticate"], Some(b"\xff\xfe\n"));
    out.assert_failure(
        1,
        "The passphrase must be UTF-8 text.",
        "a passphrase not UTF-8",
    );
    let refused = "The passphrase is longer than 1024 bytes, the most the service accepts.";
    for length in [1025, 65536] {
        let long = "a".repeat(length);
        daemon
            .run_as(bob, &["authenticate"], Some(&format!("{long}\n")))
            .assert_failure(1, refused, "an overlong passphrase");
    }

    // A line that never ends: refused once the limit is passed, not read to the end.
    let env = daemon.client_env(&bob.xdg_data_home());
    let mut cmd = bob.command(&multipass_system_tests::bin("multipass"), &env);
    cmd.arg("authenticate")
        .stdin(std::fs::File::open("/dev/zero").expect("open /dev/zero"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start multipass");
    let (status, killed) =
        multipass_system_tests::process::wait_or_kill(&mut child, Duration::from_secs(20));
    assert!(
        !killed,
        "`multipass authenticate < /dev/zero` still reading after 20 s"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end(), refused);
    daemon
        .run_as(bob, &["list"], None)
        .assert_not_authenticated("list", "bob, after all that");
}

/// `authenticate` makes no first client (only gated requests do, as in Multipass), so an
/// administrator who starts with it on a fresh service is told which command does.
fn an_administrators_first_authenticate_names_the_command_that_trusts() {
    let Fixture(_dir, _admins, alice, [bob], daemon) = Fixture::open();
    const FIRST: &str = "No client is trusted yet, and this user is an administrator: any other \
                         command (e.g. 'multipass list') trusts the client that runs it as the \
                         first one (under sudo, root's client, not the user's); then set the \
                         passphrase for the others ('multipass set local.passphrase').";
    const OTHERS: &str = "An administrator can trust a client without a passphrase ('multipass \
                          authenticate --admin'); anyone else can be given a one-time token by \
                          an administrator ('multipass trust token create'), which 'multipass \
                          authenticate' takes.";
    let out = daemon.run_as(&alice, &["authenticate", "anything"], None);
    out.assert_failure(
        2,
        &format!("authenticate failed: {PASSPHRASE_NOT_SET}\n{FIRST}"),
        "an administrator's first command",
    );
    daemon
        .run_as(&alice, &["list"], None)
        .assert_code(0, "alice's `list`, as the hint says");
    // Not once a client is trusted (before, only administrators reach the socket).
    for user in [&alice, &bob] {
        let out = daemon.run_as(user, &["authenticate", "anything"], None);
        out.assert_failure(
            2,
            &format!("authenticate failed: {PASSPHRASE_NOT_SET}\n{OTHERS}"),
            "a client is trusted",
        );
    }
}

/// The command that makes an administrator's client the first says so on stderr, once, and
/// what others need; its own output is unchanged. (A new-user review: the first client was
/// trusted without a word.)
fn the_first_client_is_told_it_is_trusted_and_how_others_get_in() {
    let Fixture(_dir, _admins, alice, [bob], daemon) = Fixture::open();
    const NOTE: &str = "This client is now trusted: it is the first the multipass service \
                        trusts, as an administrator's. Other clients get in with a passphrase \
                        (`multipass set local.passphrase`, then `multipass authenticate` on \
                        theirs) or a one-time token (`multipass trust token create`).\n";
    let first = daemon.run_as(&alice, &["version"], None);
    first.assert_code(0, "alice's first command");
    assert_eq!(first.stderr, NOTE, "{first}");
    assert!(first.stdout.starts_with("multipass "), "{first}");
    let again = daemon.run_as(&alice, &["version"], None);
    again.assert_code(0, "alice's second command");
    assert_eq!(again.stderr, "", "said once: {again}");
    let refused = daemon.run_as(&bob, &["list"], None);
    assert!(!refused.stderr.contains("now trusted"), "{refused}");
}

fn authenticate_from_a_trusted_client_checks_the_passphrase() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let bob = &scene.bob;

    daemon
        .run_as(alice, &["authenticate", "anything"], None)
        .assert_failure(
            2,
            &format!("authenticate failed: {PASSPHRASE_NOT_SET}"),
            "a trusted client, no passphrase set",
        );
    daemon.set_passphrase(alice, "s3cret");

    // A token is not spent on a client that is trusted already.
    let out = daemon.run_as(alice, &["trust", "token", "create"], None);
    out.assert_code(0, "`trust token create`");
    let token = token_in(&out.stdout).expect("a token");
    let out = daemon.run_as(alice, &["authenticate"], Some(&format!("{token}\n")));
    out.assert_code(0, "alice (trusted) presents a token");
    assert!(
        out.stdout.contains("The enrollment token was not used"),
        "{out}"
    );
    daemon
        .run_as(bob, &["authenticate"], Some(&format!("{token}\n")))
        .assert_code(0, "bob redeems the token alice did not spend");

    let out = daemon.run_as(alice, &["authenticate", "wrong"], None);
    out.assert_failure(
        2,
        &format!("authenticate failed: {PASSPHRASE_NOT_CORRECT}"),
        "a trusted client with a wrong passphrase",
    );
    assert!(!out.stdout.contains("trusted as"), "{out}");
    let out = daemon.run_as(alice, &["authenticate"], Some("s3cret\n"));
    out.assert_code(0, "a trusted client with the right passphrase");
    assert_eq!(
        out.stdout_trimmed().trim_start_matches(PROMPT),
        format!("This client is trusted as '{}'.", alice.name)
    );

    // The failure limiter counts a trusted client's wrong passphrases too: three free, then a
    // wait that doubles with each failure.
    let limited = daemon.authenticate_until_limited(alice, "wrong", 8);
    assert!(
        limited.is_some_and(|attempt| attempt > 3),
        "the limiter refused attempt {limited:?} of 8"
    );
    // Wrong passphrases take nothing away: alice is still trusted.
    daemon
        .run_as(alice, &["list"], None)
        .assert_code(0, "alice after wrong passphrases");
}

fn a_token_without_a_name_enrols_the_login_name() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let bob = &scene.bob;

    let redeem = |xdg: Option<&std::path::Path>| -> CliOutput {
        let out = daemon.run_as(alice, &["trust", "token", "create"], None);
        out.assert_code(0, "`trust token create` without --name");
        let token = token_in(&out.stdout).expect("a token");
        match xdg {
            None => daemon.run_as(bob, &["authenticate"], Some(&format!("{token}\n"))),
            Some(xdg) => clients::cli(
                daemon,
                bob,
                xdg,
                &["authenticate"],
                Some(&format!("{token}\n")),
            ),
        }
    };
    let out = redeem(None);
    out.assert_code(0, "bob redeems an unnamed token");
    assert_eq!(
        out.stdout_trimmed().trim_start_matches(PROMPT),
        format!("This client is trusted as '{}'.", bob.name)
    );
    // Bob's second client (another certificate) gets a name of its own.
    let laptop = clients::user_dir(bob, "laptop");
    let out = redeem(Some(&laptop));
    out.assert_code(0, "bob's second client redeems an unnamed token");
    let second = format!("{}-2", bob.name);
    assert_eq!(
        out.stdout_trimmed().trim_start_matches(PROMPT),
        format!("This client is trusted as '{second}'.")
    );

    let clients = trusted_clients(daemon, alice);
    let by_name = |name: &str| {
        clients
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no client named {name}: {clients:?}"))
            .clone()
    };
    for name in [&bob.name, &second] {
        let c = by_name(name);
        assert_eq!(c["how"], "token");
        assert_eq!(c["user"], bob.name.as_str());
    }

    // The login name designates one client, so `trust remove` by name works.
    let out = daemon.run_as(alice, &["trust", "remove", &bob.name], None);
    out.assert_code(0, "`trust remove` by the login name");
    daemon
        .run_as(bob, &["list"], None)
        .assert_not_authenticated("list", "bob's removed client");
    clients::cli(daemon, bob, &laptop, &["list"], None)
        .assert_code(0, "bob's second client stays trusted");
}

/// `su USER -c COMMAND` on a terminal, as an administrator types it; the command runs with the
/// daemon's client environment. `su` runs the command in a new session, without a controlling
/// terminal, but with the terminal as its standard input.
fn su_on_a_terminal(daemon: &Daemon, user: &User, multipass_args: &str) -> PtySession {
    let env: Vec<String> = daemon
        .client_env(&user.xdg_data_home())
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let command = format!(
        "env {} {} {multipass_args}",
        env.join(" "),
        multipass_system_tests::bin("multipass").display()
    );
    let mut su = std::process::Command::new("su");
    su.args(["--shell", "/bin/sh", &user.name, "--command", &command])
        .current_dir(&user.home)
        .env_clear()
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .env("TERM", "dumb");
    PtySession::spawn(su)
}

/// Ctrl-C at the passphrase prompt ends the command and leaves the terminal echoing again, as
/// the shell that gets the terminal back expects.
fn ctrl_c_at_the_passphrase_prompt_leaves_the_terminal_echoing() {
    let scene = Scene::new(&[]);
    let (daemon, bob) = (&scene.daemon, &scene.bob);
    let wait = Duration::from_secs(30);

    let env = daemon.client_env(&bob.xdg_data_home());
    let mut authenticate = bob.command(&multipass_system_tests::bin("multipass"), &env);
    authenticate.arg("authenticate");
    let mut session = PtySession::spawn(authenticate);
    session.wait_for(PROMPT, 1, wait);
    // Echo goes off before the prompt is written, so Ctrl-C comes while the line is awaited.
    assert!(!session.echoes(), "echo is on at the prompt");
    session.type_text("\x03");
    let start = std::time::Instant::now();
    while !session.echoes() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let echoes = session.echoes();
    let (code, screen) = session.finish(wait);
    assert_eq!(code, None, "Ctrl-C should end it by its signal:\n{screen}");
    assert!(echoes, "Ctrl-C left the terminal without echo:\n{screen}");
}

/// Ctrl-D at a prompt on a terminal: what the command says next starts a line of its own, and
/// advice meant for piped input is not given.
fn ctrl_d_at_a_prompt_ends_its_line() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let wait = Duration::from_secs(30);
    let env = daemon.client_env(&alice.xdg_data_home());
    let mut set = alice.command(&multipass_system_tests::bin("multipass"), &env);
    set.args(["set", "local.passphrase"]);
    let mut session = PtySession::spawn(set);
    session.wait_for(PROMPT, 1, wait);
    session.type_text("abc\n");
    session.wait_for("Please re-enter passphrase: ", 1, wait);
    session.type_text("\x04");
    let (code, screen) = session.finish(wait);
    assert_eq!(code, Some(1), "{screen}");
    assert!(
        screen.contains(
            "Please re-enter passphrase: \r\nPassphrases do not match\r\nThe second answer was \
             empty; nothing was changed.\r\n"
        ),
        "{screen:?}"
    );
    assert!(!screen.contains("standard input"), "{screen}");
    assert_eq!(stored_hash(daemon), None, "nothing was set");
}

fn without_a_controlling_terminal_the_passphrase_is_read_from_standard_input() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let bob = &scene.bob;
    let carol = User::create(&scene.dir, None);
    daemon.set_passphrase(alice, "over-su");
    let wait = Duration::from_secs(30);

    let mut session = su_on_a_terminal(daemon, bob, "authenticate");
    session.wait_for(PROMPT, 1, wait);
    session.type_text("over-su\n");
    let (code, screen) = session.finish(wait);
    assert_eq!(
        code,
        Some(0),
        "`su bob -c 'multipass authenticate'`:\n{screen}"
    );
    assert!(
        screen.contains(&format!("This client is trusted as '{}'.", bob.name)),
        "{screen}"
    );
    assert!(
        !screen.contains("over-su"),
        "the passphrase was echoed:\n{screen}"
    );
    daemon
        .run_as(bob, &["list"], None)
        .assert_code(0, "bob after authenticating over su");

    // Setting it the same way: asked twice, never echoed.
    let mut session = su_on_a_terminal(daemon, bob, "set local.passphrase");
    session.wait_for(PROMPT, 1, wait);
    session.type_text("changed-over-su\n");
    session.wait_for("Please re-enter passphrase: ", 1, wait);
    session.type_text("changed-over-su\n");
    let (code, screen) = session.finish(wait);
    assert_eq!(
        code,
        Some(0),
        "`su bob -c 'multipass set local.passphrase'`:\n{screen}"
    );
    assert!(!screen.contains("changed-over-su"), "echoed:\n{screen}");
    daemon
        .run_as(&carol, &["authenticate"], Some("changed-over-su\n"))
        .assert_code(0, "carol with the passphrase bob set over su");

    // Without a terminal at all, one line of standard input, as before.
    daemon
        .run_as(&carol, &["authenticate"], Some("changed-over-su\n"))
        .assert_code(0, "carol again, from a pipe");
}

fn a_wrong_root_certificate_names_multipass_root_cert() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);

    // A perfectly good root CA certificate, of another daemon.
    let other = trust::DataDir::new(scene.dir.subdir("other-daemon"));
    tls::ServerPki::load_or_create(&other, tls::ServerPkiOptions::default())
        .expect("another daemon's certificates");
    let wrong = other.root_cert();
    let env = [
        ("XDG_DATA_HOME", alice.xdg_data_home().display().to_string()),
        ("MULTIPASS_SERVER_ADDRESS", daemon.address.clone()),
        ("MULTIPASS_ROOT_CERT", wrong.display().to_string()),
    ];
    let mut cmd = alice.command(&multipass_system_tests::bin("multipass"), &env);
    cmd.arg("list");
    let out = multipass_system_tests::process::run(
        cmd,
        None,
        multipass_system_tests::process::DEFAULT_TIMEOUT,
    );
    out.assert_code(3, "`list` with another daemon's root certificate");
    let lines: Vec<&str> = out.stderr_trimmed().lines().collect();
    assert!(
        lines[0].starts_with("list failed: TLS handshake with")
            && lines[0].contains("invalid peer certificate"),
        "{out}"
    );
    let advice = lines[1..].join(" ");
    assert!(
        advice.contains(&format!(
            "{} that MULTIPASS_ROOT_CERT names",
            wrong.display()
        )) && advice.contains("Check that MULTIPASS_ROOT_CERT names the multipass_root_cert.pem"),
        "{out}"
    );
}

fn list_snapshots_answers_as_multipass_does() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);
    let bob = &scene.bob;

    let out = daemon.run_as(alice, &["list", "--snapshots"], None);
    out.assert_code(0, "`list --snapshots`");
    assert_eq!(out.stdout, "No snapshots found.\n", "{out}");
    let out = daemon.run_as(alice, &["list", "--snapshots", "--format", "json"], None);
    out.assert_code(0, "`list --snapshots --format json`");
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(json, serde_json::json!({"errors": [], "info": {}}));
    let out = daemon.run_as(alice, &["list", "--snapshots", "--format", "csv"], None);
    assert_eq!(out.stdout, "Instance,Snapshot,Parent,Comment\n", "{out}");
    let out = daemon.run_as(alice, &["ls"], None);
    assert_eq!(out.stdout, "No instances found.\n", "{out}");

    daemon
        .run_as(bob, &["list", "--snapshots"], None)
        .assert_failure(2, &format!("list failed: {NOT_AUTHENTICATED}"), "bob");
}

/// `-v` says on stderr which daemon, client certificate and root CA a command used, so that a
/// user can see which client they are (root's, under sudo, is not theirs); `-vv` adds what TLS
/// negotiated and the time of each step. What stdout shows is the same, and no key is shown.
fn verbose_says_which_client_and_daemon() {
    let scene = Scene::new(&[]);
    let (daemon, alice) = (&scene.daemon, &scene.alice);

    let plain = daemon.run_as(alice, &["list"], None);
    let out = daemon.run_as(alice, &["-v", "list"], None);
    out.assert_code(0, "`multipass -v list`");
    assert_eq!(out.stdout, plain.stdout, "{out}");
    let own = trusted_clients(daemon, alice)
        .into_iter()
        .find(|c| c["this_client"] == true)
        .expect("alice's client is listed as this client");
    let fingerprint = own["fingerprint"].as_str().unwrap_or_default().to_string();
    let cert = alice
        .xdg_data_home()
        .join("multipass-client-certificate/multipass_cert.pem");
    for needed in [
        format!(
            "[client] daemon: unix:{} (from MULTIPASS_SERVER_ADDRESS)\n",
            daemon.socket().display()
        ),
        format!(
            "[client] this client: {}, fingerprint {fingerprint}\n",
            cert.display()
        ),
        format!(
            "[client] daemon's root CA: {} (from MULTIPASS_ROOT_CERT)\n",
            daemon.root_cert().display()
        ),
        "[client] connected\n".to_string(),
    ] {
        assert!(out.stderr.contains(&needed), "no {needed:?}\n{out}");
    }
    assert!(!out.stderr.contains("TLS"), "-vv's details at -v\n{out}");
    assert!(!out.stderr.contains("PRIVATE KEY"), "{out}");

    let out = daemon.run_as(alice, &["-vv", "list"], None);
    out.assert_code(0, "`multipass -vv list`");
    assert_eq!(out.stdout, plain.stdout, "{out}");
    assert!(
        out.stderr.contains("TLS handshake done: TLSv1_3, TLS13_"),
        "{out}"
    );
    assert!(out.stderr.contains(" ms] connected\n"), "{out}");

    // Under sudo the command is root's client: another certificate, which `-v` shows.
    let out = daemon.run_as_root(&["-v", "list"], None);
    out.assert_code(2, "root's `-v list`");
    assert!(out.stderr.contains(NOT_AUTHENTICATED), "{out}");
    let root_cert = daemon
        .root_xdg_data_home()
        .join("multipass-client-certificate/multipass_cert.pem");
    assert!(
        out.stderr
            .contains(&format!("[client] this client: {}", root_cert.display())),
        "{out}"
    );
    assert!(!out.stderr.contains(&fingerprint), "{out}");
}

multipass_system_tests::process_tests! {
    root: [sudo_set_passphrase_fails_before_prompting_and_says_why, an_administrators_first_authenticate_names_the_command_that_trusts, the_first_client_is_told_it_is_trusted_and_how_others_get_in, sudo_anything_refused_says_root_is_a_client_of_its_own, empty_answers_do_not_clear_the_passphrase, set_of_an_unknown_key_asks_for_nothing, set_local_passphrase_refuses_what_it_cannot_send, authenticate_refuses_what_it_cannot_send, authenticate_from_a_trusted_client_checks_the_passphrase, a_token_without_a_name_enrols_the_login_name, without_a_controlling_terminal_the_passphrase_is_read_from_standard_input, ctrl_c_at_the_passphrase_prompt_leaves_the_terminal_echoing, ctrl_d_at_a_prompt_ends_its_line, a_wrong_root_certificate_names_multipass_root_cert, list_snapshots_answers_as_multipass_does, verbose_says_which_client_and_daemon],
}
