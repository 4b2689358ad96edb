//! The polkit-guarded helper, against a real system bus and a real polkitd, with our bus
//! policy, polkit actions and rules installed where the package puts them, and a test rules file
//! that authorizes one test group for the passphrase and trust actions.

use std::time::{Duration, Instant};

use multipass_system_tests::bus::{
    call_helper, call_helper_as, calls_carrying_descriptors, flood_helper, flood_helper_with,
    Flood, HelperSetup, TestRules,
};
use multipass_system_tests::{
    audit_events, bin, collapsed_counts, mode_owner, procfs, read_until, sha256_hex, DaemonConfig,
    Fixture, Group, NOT_AUTHENTICATED, PASSPHRASE_NOT_SET,
};

fn read(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

fn authorized_user_sets_passphrase_and_trusts_itself_through_the_helper() {
    let setup = HelperSetup::new();
    let first = setup.user(&[&setup.admins]);
    let operator = setup.user(&[&setup.operators]);
    let other = setup.user(&[]);
    let _rules = setup.grant(&operator);
    let (daemon, helper) = setup.serve();

    daemon
        .run_as(&first, &["list"], None)
        .assert_code(0, "first client");
    daemon.run_as(&operator, &["list"], None).assert_failure(
        2,
        &format!("list failed: {NOT_AUTHENTICATED}"),
        "operator before",
    );

    // Clearing a passphrase that is not set changes nothing: no write, no audit line.
    let before = read(&daemon.conf_path());
    let (ok, text) = call_helper(Some(&operator), "SetPassphrase", "s", &[""]);
    assert!(ok, "clearing nothing: {text}");
    assert_eq!(
        read(&daemon.conf_path()),
        before,
        "the settings were written"
    );
    // And the command says what is true either way.
    let out = daemon.run_as(&operator, &["set", "local.passphrase=", "--admin"], None);
    out.assert_code(0, "set local.passphrase= --admin, none set");
    assert!(
        out.stdout
            .starts_with("No passphrase is set now: nobody can authenticate"),
        "{out}"
    );
    assert_eq!(
        read(&daemon.conf_path()),
        before,
        "the settings were written"
    );
    assert!(
        !helper.log().contains("passphrase-cleared"),
        "{}",
        helper.log()
    );

    // The passphrase, through the helper, honoured by the running daemon.
    daemon
        .run_as(
            &operator,
            &["set", "local.passphrase", "--admin"],
            Some("helper-pass\nhelper-pass\n"),
        )
        .assert_code(0, "set --admin");
    daemon
        .run_as(&other, &["authenticate"], Some("helper-pass\n"))
        .assert_code(0, "authenticate with the passphrase set through the helper");
    daemon
        .run_as(&other, &["list"], None)
        .assert_code(0, "other after");

    // Its own certificate, through the helper, honoured without a restart.
    let out = daemon.run_as(&operator, &["authenticate", "--admin"], None);
    out.assert_code(0, "authenticate --admin");
    daemon
        .run_as(&operator, &["list"], None)
        .assert_code(0, "operator after --admin");
    let store = std::fs::read_to_string(daemon.store_path()).unwrap();
    assert!(store.contains("how: admin"), "store:\n{store}");
    assert!(
        store.contains(&format!("user: {}", operator.name)),
        "store:\n{store}"
    );
    // A second client of the same user is named as the daemon would name it, not after the
    // first one: two clients of one name could not be removed by it.
    let second = multipass_system_tests::clients::MemoryIdentity::new(&daemon);
    let (ok, text) = call_helper(
        Some(&operator),
        "TrustCertificate",
        "ss",
        &[&second.pem, ""],
    );
    assert!(ok, "a second certificate: {text}");
    let store = std::fs::read_to_string(daemon.store_path()).unwrap();
    assert!(
        store.contains(&format!("name: {}-2\n", operator.name)),
        "store:\n{store}"
    );
    assert!(
        !helper.log().contains("helper-pass"),
        "passphrase in the helper's log"
    );
    assert!(
        helper.log().contains(" TRACE "),
        "the helper did not log at its most verbose, so not every line it can write was \
         looked at:\n{}",
        helper.log()
    );
    // Its audit line says who and which certificate in its text.
    let (fingerprint, who) = (
        sha256_hex(&operator.cert_der()),
        format!("user {}, uid {}", operator.name, operator.uid),
    );
    assert!(
        helper.log().lines().any(|l| {
            let text = l.split(" event=").next().unwrap_or_default();
            l.contains("event=\"trusted\"") && text.contains(&fingerprint) && text.contains(&who)
        }),
        "no `trusted` line of the helper names {fingerprint} and {who}:\n{}",
        helper.log()
    );
}

fn unauthorized_user_is_denied_and_nothing_changes() {
    let setup = HelperSetup::new();
    let first = setup.user(&[&setup.admins]);
    let stranger = setup.user(&[]);
    let (daemon, _helper) = setup.serve();
    daemon
        .run_as(&first, &["list"], None)
        .assert_code(0, "first client");
    daemon
        .run_as(&first, &["set", "local.passphrase"], Some("p1\np1\n"))
        .assert_code(0, "passphrase");
    daemon.run_as(&stranger, &["version"], None);
    let before = (read(&daemon.store_path()), read(&daemon.conf_path()));

    let out = daemon.run_as(
        &stranger,
        &["set", "local.passphrase", "--admin"],
        Some("mine\nmine\n"),
    );
    out.assert_code(2, "set --admin by a stranger");
    assert!(out.stderr.contains("Not authorized"), "{out}");
    let out = daemon.run_as(&stranger, &["authenticate", "--admin"], None);
    out.assert_code(2, "authenticate --admin by a stranger");
    assert!(out.stderr.contains("Not authorized"), "{out}");
    // Without a terminal the CLI says what to run instead, and polkit's answer what was missing.
    assert!(out.stderr.contains("pkexec"), "{out}");
    assert!(
        out.stderr
            .contains("no administrator's authentication was given"),
        "{out}"
    );
    // A client trusted already is told so, without asking polkit (which would refuse `first`).
    let out = daemon.run_as(&first, &["authenticate", "--admin"], None);
    out.assert_code(0, "authenticate --admin by a trusted client");
    // Named, since the test's daemon is not the packaged one whose store the helper writes.
    assert_eq!(
        out.stdout_trimmed(),
        format!(
            "This client is trusted already by the daemon at {}; nothing was changed.",
            daemon.address
        ),
        "{out}"
    );
    let (ok, text) = call_helper(Some(&stranger), "SetPassphrase", "s", &["x"]);
    assert!(!ok && text.contains("Not authorized"), "{text}");
    // A call's input is checked before polkit is asked, the name as well as the certificate.
    let pem = std::fs::read_to_string(stranger.cert_path()).expect("the stranger's certificate");
    let (ok, text) = call_helper(
        Some(&stranger),
        "TrustCertificate",
        "ss",
        &[&pem, "a name\nwith a newline"],
    );
    assert!(!ok && text.contains("InvalidInput"), "{text}");
    let (ok, text) = call_helper(Some(&stranger), "TrustCertificate", "ss", &[&pem, ""]);
    assert!(!ok && text.contains("Not authorized"), "{text}");

    let after = (read(&daemon.store_path()), read(&daemon.conf_path()));
    assert!(before == after, "files changed after denied calls");
    daemon.run_as(&stranger, &["list"], None).assert_failure(
        2,
        &format!("list failed: {NOT_AUTHENTICATED}"),
        "still untrusted",
    );
}

/// The `helper-denied` lines of `uid`.
fn denials_of(log: &str, uid: u32) -> Vec<&str> {
    let uid = format!(" uid={uid} ");
    audit_events(log, "helper-denied")
        .into_iter()
        .filter(|l| l.contains(&uid))
        .collect()
}

/// A user whom polkit denies everything calls the helper as fast as the bus lets it, for 4 s: 16
/// connections with 128 calls in flight on each. The helper answers at most 64 calls at once and
/// 16 of one user's, and refuses the others as soon as it reads them; it writes at most one
/// `helper-denied` line a second for that user and action, whose counts add up to the calls
/// polkit denied; its memory stays within a few MiB; and an operator's call made meanwhile gets
/// through, retried while it is refused as one too many.
fn a_flood_of_denied_calls_is_collapsed() {
    const SECONDS: u64 = 4;
    const CONNECTIONS: usize = 16;
    const IN_FLIGHT: usize = 128;
    let setup = HelperSetup::new();
    let stranger = setup.user(&[]);
    let operator = setup.user(&[&setup.operators]);
    let _rules = setup.grant(&operator);
    let (daemon, helper) = setup.serve();
    let pid = helper.pid();
    let conf_before = read(&daemon.conf_path());
    let (rss_before, hwm_before) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    let flood_began = Instant::now();
    let (flood, (operator_in, tries)) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| flood_helper(&stranger, SECONDS, CONNECTIONS, IN_FLIGHT));
        std::thread::sleep(Duration::from_secs(1));
        let began = Instant::now();
        let mut tries = 0;
        loop {
            tries += 1;
            let (ok, text) = call_helper(Some(&operator), "SetPassphrase", "s", &["in-a-flood"]);
            if ok {
                break;
            }
            assert!(
                text.contains("Too many calls in flight")
                    && began.elapsed() < Duration::from_secs(30),
                "the operator's call during the flood, try {tries}: {text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (flood.join().expect("the flood"), (began.elapsed(), tries))
    });
    let flooding = flood_began.elapsed();
    let (rss_after, hwm_after) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    assert_ne!(
        read(&daemon.conf_path()),
        conf_before,
        "the operator's passphrase was not written"
    );
    let Flood {
        calls,
        denied: refused,
        busy,
        other,
    } = flood;

    // The last denials held back are written a second after the previous line.
    let log = read_until(
        Duration::from_secs(5),
        || helper.log(),
        |log| collapsed_counts(&denials_of(log, stranger.uid)).0 >= refused,
    );
    let lines = denials_of(&log, stranger.uid);
    let (counted, shortest) = collapsed_counts(&lines);
    multipass_system_tests::figure(&format!(
        "a_flood_of_denied_calls_is_collapsed: {calls} calls in {flooding:.1?} on \
         {CONNECTIONS} connections, {IN_FLIGHT} in flight on each: {refused} denied by polkit, \
         {busy} refused as too many in flight, {other} otherwise; {} helper-denied lines \
         counting {counted}, the shortest gap between two {:.2?}; helper RSS {rss_before} -> \
         {rss_after} KiB, peak {hwm_before} -> {hwm_after} KiB; the operator's call got through \
         in {operator_in:.1?}, at try {tries}",
        lines.len(),
        shortest.unwrap_or_default()
    ));
    assert!(calls > 1000, "only {calls} calls: no flood");
    assert!(refused > 0, "no call reached polkit");
    assert!(busy > 0, "no call refused as one too many in flight");
    assert_eq!(other, 0, "calls neither denied nor refused as too many");
    assert_eq!(
        counted, refused,
        "every denial must be counted in exactly one line"
    );
    assert!(
        shortest.is_none_or(|g| g >= Duration::from_millis(900)),
        "two lines for the same caller within a second: {shortest:?}"
    );
    assert!(
        lines.len() as f64 <= flooding.as_secs_f64().ceil() + 2.0,
        "{} helper-denied lines for a flood of {flooding:.1?}",
        lines.len()
    );
    // Each line says who in its text.
    let who = format!("user {}, uid {}", stranger.name, stranger.uid);
    for line in &lines {
        let text = line.split(" event=").next().unwrap_or_default();
        assert!(
            text.contains(&who),
            "a helper-denied line without {who}: {line}"
        );
    }
    let grown_mib = hwm_after.saturating_sub(hwm_before) >> 10;
    assert!(
        grown_mib < 8,
        "the helper's peak RSS grew by {grown_mib} MiB"
    );
}

/// A user sends the helper the largest calls the bus passes on (16 MiB passphrases, half the
/// bus's message limit) for 4 s on 8 connections, 4 in flight on each: the helper drops each body
/// as it reads it (the bus's own copy is the bus's), so its peak memory grows by less than one
/// such message, each call is answered with an error, and an ordinary call is answered after.
/// (Held whole, as before, they grew it by about 47 MiB.)
fn large_calls_are_dropped_as_they_are_read() {
    const BYTES: usize = 16 << 20;
    let setup = HelperSetup::new();
    let stranger = setup.user(&[]);
    let (_daemon, helper) = setup.serve();
    let pid = helper.pid();
    let (rss_before, hwm_before) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    let flood = flood_helper_with(&stranger, Some(BYTES), 4, 8, 4);
    let (rss_after, hwm_after) = (procfs::rss_kib(pid), procfs::peak_rss_kib(pid));
    multipass_system_tests::figure(&format!(
        "large_calls_are_dropped_as_they_are_read: {} calls of {} MiB ({} refused as too many in \
         flight, {} otherwise); helper RSS {rss_before} -> {rss_after} KiB, peak {hwm_before} \
         -> {hwm_after} KiB",
        flood.calls,
        BYTES >> 20,
        flood.busy,
        flood.other + flood.denied
    ));
    assert!(flood.calls >= 8, "only {} calls: no flood", flood.calls);
    let grown_kib = hwm_after.saturating_sub(hwm_before);
    assert!(
        grown_kib < (BYTES >> 10) as u64,
        "the helper's peak RSS grew by {grown_kib} KiB, more than one call's message"
    );
    let (ok, text) = call_helper(Some(&stranger), "SetPassphrase", "s", &["after-a-flood"]);
    assert!(
        !ok && text.contains("Not authorized"),
        "a call after the flood: {text}"
    );
}

/// Each passphrase set through the helper is hashed (Argon2id, 19 MiB) in a writer process of
/// its own. An operator may have 16 calls in flight, and all callers 64, but the helper runs at
/// most [`WRITERS`] writers at once: the others wait their turn, and none is lost.
fn writers_run_a_few_at_a_time() {
    const CALLS: usize = 16;
    const WRITERS: usize = 2;
    let setup = HelperSetup::new();
    let operator = setup.user(&[&setup.operators]);
    let _rules = setup.grant(&operator);
    let (daemon, helper) = setup.serve();
    let pid = helper.pid();
    let began = Instant::now();
    let writers = || {
        let writers = procfs::children(pid);
        let memory: u64 = writers.iter().map(|&w| procfs::rss_kib_if_alive(w)).sum();
        (writers.len(), memory)
    };
    let (results, samples) = procfs::sampled_while(Duration::from_millis(2), writers, || {
        std::thread::scope(|scope| {
            let calls: Vec<_> = (0..CALLS)
                .map(|i| {
                    let operator = &operator;
                    scope.spawn(move || {
                        let passphrase = format!("pass-{i}");
                        call_helper(Some(operator), "SetPassphrase", "s", &[&passphrase])
                    })
                })
                .collect();
            let results: Vec<_> = calls
                .into_iter()
                .map(|c| c.join().expect("a call"))
                .collect();
            results
        })
    });
    let most = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let memory = samples.iter().map(|s| s.1).max().unwrap_or(0);
    multipass_system_tests::figure(&format!(
        "writers_run_a_few_at_a_time: {CALLS} passphrases set at once by one operator in {:.1?}: \
         at most {most} writer processes at once, {} MiB between them",
        began.elapsed(),
        memory >> 10
    ));
    for (ok, text) in &results {
        assert!(ok, "a call failed: {text}");
    }
    assert!(most >= 1, "no writer process seen");
    assert!(
        most <= WRITERS,
        "{most} writer processes at once, more than {WRITERS}"
    );
    assert!(read(&daemon.conf_path()).is_some(), "no passphrase written");
}

/// Any caller may attach Unix file descriptors to a D-Bus message, up to 16 each. None of the
/// helper's methods takes one, and the helper does not offer to receive them, so the bus refuses
/// such calls to their sender and the helper's descriptors stay as they were however many come.
/// (When it did offer, four connections of one unprivileged user ran it up to 8,204 open
/// descriptors, against its soft limit of 1,024 under systemd.)
fn calls_carrying_descriptors_never_reach_the_helper() {
    const CONNECTIONS: usize = 4;
    const CALLS: usize = 2000;
    const PER_CALL: usize = 16;
    const NOT_SUPPORTED: &str = "error org.freedesktop.DBus.Error.NotSupported";
    let setup = HelperSetup::new();
    let stranger = setup.user(&[]);
    let (_daemon, helper) = setup.serve();
    let pid = helper.pid();
    let before = procfs::fd_count(pid);
    let (floods, samples) = procfs::sampled_while(
        Duration::from_millis(5),
        || procfs::fd_count(pid),
        || {
            std::thread::scope(|scope| {
                let floods: Vec<_> = (0..CONNECTIONS)
                    .map(|_| {
                        scope.spawn(|| {
                            calls_carrying_descriptors(&stranger, "SetPassphrase", CALLS, PER_CALL)
                        })
                    })
                    .collect();
                let floods: Vec<_> = floods.into_iter().map(|f| f.join().unwrap()).collect();
                floods
            })
        },
    );
    let most = samples.into_iter().max().unwrap_or(before);
    // The same call without descriptors reaches the helper, which refuses the stranger.
    let plain = calls_carrying_descriptors(&stranger, "SetPassphrase", 1, 0);
    multipass_system_tests::figure(&format!(
        "calls_carrying_descriptors_never_reach_the_helper: {CONNECTIONS} connections of \
         {CALLS} calls with {PER_CALL} descriptors each: replies {floods:?}; the helper's open \
         descriptors {before} before, at most {most} during; the same call without: {plain:?}"
    ));
    // The bus refuses them as unsupported by the helper or, once the caller has sent more
    // descriptors than it lets one connection have in flight, as over its limits; it may
    // disconnect a caller that goes on.
    for replies in &floods {
        assert!(
            replies.values().sum::<usize>() == CALLS
                && replies.keys().all(|k| {
                    k.starts_with("error org.freedesktop.DBus.Error.")
                        || k.starts_with("unanswered")
                }),
            "every call carrying descriptors must be refused by the bus: {replies:?}"
        );
    }
    assert!(
        floods.iter().any(|r| r.contains_key(NOT_SUPPORTED)),
        "the bus should have said the helper takes no descriptors: {floods:?}"
    );
    assert!(
        most <= before + 4,
        "the helper's descriptors went from {before} to {most}"
    );
    assert!(
        plain.len() == 1
            && plain
                .keys()
                .all(|k| k.starts_with("error io.multipass.Helper1.Error.")),
        "a call without descriptors should reach the helper and be refused there: {plain:?}"
    );
}

/// Each method is guarded by its own action: a user granted one of the two operator actions
/// cannot do what the other one guards (the other tests grant both at once).
fn each_action_grants_its_own_method_alone() {
    let setup = HelperSetup::new();
    let (setters, trusters) = (Group::create_admin(), Group::create_admin());
    let setter = setup.user(&[&setters]);
    let truster = setup.user(&[&trusters]);
    let _set_rules = TestRules::grant(&setters, &[helper_api::actions::SET_PASSPHRASE], &setter);
    let _trust_rules = TestRules::grant(&trusters, &[helper_api::actions::TRUST_CLIENT], &truster);
    let (daemon, _helper) = setup.serve();
    for user in [&setter, &truster] {
        daemon.run_as(user, &["version"], None);
    }
    let pem_of = |user: &multipass_system_tests::User| {
        std::fs::read_to_string(user.cert_path()).expect("a client certificate")
    };
    let (store, conf) = (daemon.store_path(), daemon.conf_path());

    // Granted the passphrase alone: it cannot trust itself.
    let before = read(&store);
    let (ok, text) = call_helper(
        Some(&setter),
        "TrustCertificate",
        "ss",
        &[&pem_of(&setter), ""],
    );
    assert!(!ok && text.contains("Not authorized"), "{text}");
    assert!(read(&store) == before, "the store changed");
    let (ok, text) = call_helper(Some(&setter), "SetPassphrase", "s", &["set by the setter"]);
    assert!(ok, "{text}");
    assert!(read(&conf).is_some(), "no passphrase written");

    // Granted trust alone: it cannot set the passphrase.
    let before = read(&conf);
    let (ok, text) = call_helper(
        Some(&truster),
        "SetPassphrase",
        "s",
        &["set by the truster"],
    );
    assert!(!ok && text.contains("Not authorized"), "{text}");
    assert!(read(&conf) == before, "the settings changed");
    let (ok, text) = call_helper(
        Some(&truster),
        "TrustCertificate",
        "ss",
        &[&pem_of(&truster), ""],
    );
    assert!(ok, "{text}");
    daemon
        .run_as(&truster, &["list"], None)
        .assert_code(0, "trusted through the helper");
    daemon.run_as(&setter, &["list"], None).assert_failure(
        2,
        &format!("list failed: {NOT_AUTHENTICATED}"),
        "the setter is not trusted",
    );
}

fn only_the_daemon_user_manages_the_socket() {
    let setup = HelperSetup::new();
    let operator = setup.user(&[&setup.operators]);
    let stranger = setup.user(&[]);
    let _rules = setup.grant(&operator);
    let (daemon, _helper) = setup.serve();
    let socket = daemon.socket.clone().unwrap();
    let restricted = (0o660, 0, setup.admins.gid);
    assert_eq!(mode_owner(&socket).unwrap(), restricted);

    for (who, user) in [("a stranger", &stranger), ("an operator", &operator)] {
        let (ok, text) = call_helper(Some(user), "SetSocketAccess", "b", &["true"]);
        assert!(!ok && text.contains("Not authorized"), "{who}: {text}");
        assert_eq!(mode_owner(&socket).unwrap(), restricted, "{who} changed it");
    }

    let multipassd = nix::unistd::User::from_name("multipassd").unwrap().unwrap();
    let as_daemon = |open: &str| {
        call_helper_as(
            Some((multipassd.uid.as_raw(), multipassd.gid.as_raw())),
            "SetSocketAccess",
            "b",
            &[open],
        )
    };
    let (ok, text) = as_daemon("true");
    assert!(ok, "{text}");
    assert_eq!(mode_owner(&socket).unwrap(), (0o666, 0, 0));
    let (ok, text) = as_daemon("false");
    assert!(ok, "{text}");
    assert_eq!(mode_owner(&socket).unwrap(), restricted);
}

/// The standard interfaces that answer with what they were sent (an unknown property's name,
/// an unknown object's path, as large as the bus lets a message be: a review held 3.4 GB of the
/// helper's memory with them) are root's alone, and the helper's own interface is reachable on
/// its one object only: the bus refuses the rest before the helper reads it.
fn echoing_interfaces_and_other_paths_are_refused_by_the_bus() {
    let setup = HelperSetup::new();
    let stranger = setup.user(&[]);
    let (_daemon, _helper) = setup.serve();
    let send =
        |user: Option<&multipass_system_tests::User>, path: &str, method: &str, args: &[&str]| {
            let mut cmd = match user {
                Some(user) => user.command(std::path::Path::new("/usr/bin/dbus-send"), &[]),
                None => std::process::Command::new("/usr/bin/dbus-send"),
            };
            let out = cmd
                .args([
                    "--system",
                    "--print-reply",
                    "--dest=io.multipass.Helper1",
                    path,
                    method,
                ])
                .args(args)
                .output()
                .expect("dbus-send");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
    let object = helper_api::OBJECT_PATH;
    for (path, method, args) in [
        (
            object,
            "org.freedesktop.DBus.Properties.Get",
            &["string:io.multipass.Helper1", "string:anything"][..],
        ),
        (
            object,
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[][..],
        ),
        (
            "/elsewhere",
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[][..],
        ),
        (
            "/elsewhere",
            "io.multipass.Helper1.SetPassphrase",
            &["string:x"][..],
        ),
    ] {
        let text = send(Some(&stranger), path, method, args);
        assert!(
            text.contains("AccessDenied"),
            "a stranger's {method} on {path} reached the helper: {text}"
        );
    }
    // Its own methods on its object still reach it (which refuses the stranger itself).
    let text = send(
        Some(&stranger),
        object,
        "io.multipass.Helper1.SetPassphrase",
        &["string:x"],
    );
    assert!(
        !text.contains("AccessDenied") && text.contains("io.multipass.Helper1.Error"),
        "{text}"
    );
    // Root may introspect, for debugging.
    let text = send(
        None,
        object,
        "org.freedesktop.DBus.Introspectable.Introspect",
        &[],
    );
    assert!(text.contains("io.multipass.Helper1"), "{text}");
}

fn unprivileged_daemon_opens_its_socket_through_the_helper() {
    let setup = HelperSetup::new();
    let first = setup.user(&[&setup.admins]);
    let (daemon, _helper) = setup.serve_with(DaemonConfig {
        verbosity: 1,
        extra_args: vec!["--user".into(), "multipassd".into()],
        ..DaemonConfig::default()
    });
    let socket = daemon.socket.clone().unwrap();
    assert_eq!(mode_owner(&socket).unwrap(), (0o660, 0, setup.admins.gid));
    daemon
        .run_as(&first, &["list"], None)
        .assert_code(0, "first client");
    // The daemon (user multipassd, no capabilities) cannot chmod a root-owned socket itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mode_owner(&socket).unwrap() != (0o666, 0, 0) {
        assert!(
            Instant::now() < deadline,
            "socket not opened: {:o}\n{}",
            mode_owner(&socket).unwrap().0,
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon
            .log()
            .contains("socket access set by multipassd-helper"),
        "{}",
        daemon.log()
    );
}

fn invalid_inputs_are_refused_without_writes() {
    let setup = HelperSetup::new();
    let serving = setup.serve_first_and_operator();
    let (daemon, first, operator) = (&serving.daemon, &serving.first, &serving.operator);
    daemon
        .run_as(first, &["set", "local.passphrase"], Some("p1\np1\n"))
        .assert_code(0, "passphrase");
    daemon.run_as(operator, &["version"], None);
    let cert = std::fs::read_to_string(operator.cert_path()).unwrap();
    let key = std::fs::read_to_string(operator.key_path()).unwrap();
    let other_cert = std::fs::read_to_string(first.cert_path()).unwrap();
    let before = (read(&daemon.store_path()), read(&daemon.conf_path()));

    let two = format!("{cert}{other_cert}");
    let with_key = format!("{cert}{key}");
    let oversized = format!("{cert}{}", "#".repeat(20_000));
    let cases: [(&str, &str, Vec<&str>); 6] = [
        ("two certificates", "TrustCertificate", vec![&two, "x"]),
        ("a private key", "TrustCertificate", vec![&key, "x"]),
        (
            "certificate plus key",
            "TrustCertificate",
            vec![&with_key, "x"],
        ),
        (
            "garbage",
            "TrustCertificate",
            vec!["not a certificate", "x"],
        ),
        ("oversized", "TrustCertificate", vec![&oversized, "x"]),
        (
            "name with a newline",
            "TrustCertificate",
            vec![&cert, "a\nb"],
        ),
    ];
    for (what, method, args) in cases {
        let (ok, text) = call_helper(Some(operator), method, "ss", &args);
        assert!(!ok, "{what} accepted: {text}");
        assert!(
            text.contains("InvalidInput")
                || text.contains("expected exactly one")
                || text.contains("not a valid")
                || text.contains("client name"),
            "{what}: {text}"
        );
    }
    let long = "p".repeat(1025);
    let (ok, text) = call_helper(Some(operator), "SetPassphrase", "s", &[&long]);
    assert!(
        !ok && text.contains("longer than"),
        "passphrase over the limit: {text}"
    );

    // Direct mode (root, as through pkexec): an empty passphrase is refused, not a silent clear.
    let out = std::process::Command::new(bin("multipassd-helper"))
        .arg("--data-dir")
        .arg(&daemon.data_dir)
        .arg("--socket")
        .arg(daemon.socket.as_ref().unwrap())
        .arg("set-passphrase")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No passphrase given"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let after = (read(&daemon.store_path()), read(&daemon.conf_path()));
    assert!(before == after, "a refused input changed the files");
}

fn apply_socket_policy_follows_the_store() {
    let Fixture(_dir, admins, first, [], daemon) = Fixture::open();
    let socket = daemon.socket.clone().unwrap();
    let apply = || {
        let out = std::process::Command::new(bin("multipassd-helper"))
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(&daemon.data_dir)
            .arg("--admin-group")
            .arg(&admins.name)
            .arg("apply-socket-policy")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Empty store, socket left open by hand: restricted again.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    apply();
    assert_eq!(mode_owner(&socket).unwrap(), (0o660, 0, admins.gid));
    // Non-empty store: open.
    daemon
        .run_as(&first, &["list"], None)
        .assert_code(0, "first client");
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    apply();
    assert_eq!(mode_owner(&socket).unwrap(), (0o666, 0, 0));
}

fn stuck_administrator_gets_out_without_editing_files() {
    let setup = HelperSetup::new();
    let admin = setup.user(&[&setup.admins, &setup.operators]);
    let _rules = setup.grant(&admin);
    let (daemon, _helper) = setup.serve();

    // Root (say, `sudo multipass list`) became the first client.
    daemon
        .run_as_root(&["list"], None)
        .assert_code(0, "root first");
    // The reference document's stuck administrator.
    daemon.run_as(&admin, &["list"], None).assert_failure(
        2,
        &format!("list failed: {NOT_AUTHENTICATED}"),
        "stuck list",
    );
    daemon
        .run_as(&admin, &["authenticate"], Some("guess\n"))
        .assert_failure(
            2,
            &format!("authenticate failed: {PASSPHRASE_NOT_SET}"),
            "stuck auth",
        );
    let out = daemon.run_as(&admin, &["set", "local.passphrase"], Some("a\na\n"));
    out.assert_failure(2, &format!("set failed: {NOT_AUTHENTICATED}"), "stuck set");
    assert!(out.stderr.contains("--admin"), "no way out offered: {out}");

    let store_before = std::fs::metadata(daemon.store_path()).unwrap();
    daemon
        .run_as(&admin, &["authenticate", "--admin"], None)
        .assert_code(0, "authenticate --admin");
    daemon
        .run_as(&admin, &["list"], None)
        .assert_code(0, "unstuck");
    // Same daemon process all along (no restart), and the helper's writer added the certificate
    // to the store by appending (additions are appended, so that an unlocked hand append is
    // never lost), keeping the file's owner and mode.
    assert!(
        daemon.log().matches("listening").count() == 1,
        "daemon restarted"
    );
    let store_after = std::fs::metadata(daemon.store_path()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(store_before.ino(), store_after.ino());
    assert!(store_after.len() > store_before.len());
    assert_eq!(
        (store_after.mode() & 0o777, store_after.uid()),
        (0o600, store_before.uid())
    );
}

multipass_system_tests::process_tests! {
    root: [authorized_user_sets_passphrase_and_trusts_itself_through_the_helper, unauthorized_user_is_denied_and_nothing_changes, a_flood_of_denied_calls_is_collapsed, large_calls_are_dropped_as_they_are_read, writers_run_a_few_at_a_time, calls_carrying_descriptors_never_reach_the_helper, each_action_grants_its_own_method_alone, only_the_daemon_user_manages_the_socket, echoing_interfaces_and_other_paths_are_refused_by_the_bus, unprivileged_daemon_opens_its_socket_through_the_helper, invalid_inputs_are_refused_without_writes, apply_socket_policy_follows_the_store, stuck_administrator_gets_out_without_editing_files],
}
