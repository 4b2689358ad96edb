//! No passphrase and no hash in any log at the highest verbosity (`-vvv`), in
//! the command line or environment of any process we start (daemon, CLI, helper, the helper's
//! writer child; /proc/*/cmdline and /proc/*/environ are watched throughout), or in any error
//! text; and every file has the owner and mode of docs/CONTRACT.md, with the daemon running as
//! its own user and the helper writing as that user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use multipass_system_tests::bus::ensure_daemon_user;
use multipass_system_tests::procfs::SecretWatch;
use multipass_system_tests::{
    clients, mode_owner, process, CliOutput, Daemon, DaemonConfig, Fixture, PASSPHRASE_NOT_CORRECT,
};

fn hash_in(daemon: &Daemon) -> String {
    let text = std::fs::read_to_string(daemon.conf_path()).unwrap();
    multipass_system_tests::ini_passphrase(&text).expect("a passphrase hash")
}

fn secrets_and_permissions() {
    ensure_daemon_user();
    let daemon_user = nix::unistd::User::from_name("multipassd")
        .unwrap()
        .expect("the multipassd user");
    let tag = multipass_system_tests::random_suffix();
    let p1 = format!("sekrit-one-{tag}");
    let p2 = format!("sekrit-two-{tag}");
    let wrong = format!("sekrit-wrong-{tag}");
    let long = format!("sekrit-long-{tag}").repeat(100);

    let watch = SecretWatch::start(vec![p1.clone(), p2.clone(), wrong.clone(), long.clone()]);
    let Fixture(_dir, admins, a, [b, c, d], daemon) = Fixture::open_configured(DaemonConfig {
        verbosity: 3,
        extra_args: vec!["--user".into(), "multipassd".into()],
        ..DaemonConfig::default()
    });
    let mut outputs: Vec<CliOutput> = Vec::new();
    let mut run = |out: CliOutput| -> CliOutput {
        outputs.push(out.clone());
        out
    };
    run(daemon.run_as(&a, &["list"], None)).assert_code(0, "first client");
    // The daemon (no privileges) cannot open the root-owned socket itself; the helper's hook
    // does, as under systemd.
    let policy = clients::helper_command(&daemon, &admins.name, &["apply-socket-policy"]);
    run(process::run(policy, None, process::DEFAULT_TIMEOUT)).assert_code(0, "apply-socket-policy");
    run(daemon.run_as(
        &a,
        &["set", "local.passphrase"],
        Some(&format!("{p1}\n{p1}\n")),
    ))
    .assert_code(0, "set the passphrase");
    let hash1 = hash_in(&daemon);
    let out = run(daemon.run_as(&b, &["authenticate"], Some(&format!("{wrong}\n"))));
    out.assert_failure(
        2,
        &format!("authenticate failed: {PASSPHRASE_NOT_CORRECT}"),
        "wrong passphrase",
    );
    run(daemon.run_as(&b, &["authenticate"], Some(&format!("{p1}\n"))))
        .assert_code(0, "authenticate");
    let out = run(daemon.run_as(&a, &["get", "local.passphrase"], None));
    assert_eq!(
        out.stdout_trimmed(),
        "true",
        "`get` says whether, never what"
    );
    let out = run(daemon.run_as(
        &a,
        &["set", "local.passphrase"],
        Some(&format!("{long}\n{long}\n")),
    ));
    out.assert_code(1, "an overlong passphrase is refused, by the client");
    assert!(out.stderr.contains("longer than"), "{out}");

    // The helper's direct mode (as through pkexec): the passphrase on standard input, the
    // writer child running as the state directory's owner.
    let cmd = clients::helper_command(&daemon, &admins.name, &["set-passphrase"]);
    run(process::run(
        cmd,
        Some(&format!("{p2}\n")),
        process::DEFAULT_TIMEOUT,
    ))
    .assert_code(0, "helper set-passphrase");
    let hash2 = hash_in(&daemon);
    assert_ne!(hash1, hash2);
    run(daemon.run_as(&c, &["authenticate"], Some(&format!("{p2}\n"))))
        .assert_code(0, "authenticate with the helper's passphrase");
    daemon.ensure_client_cert(&d, &["version"], None);
    let pem = std::fs::read_to_string(d.cert_path()).unwrap();
    run(clients::helper_trust(&daemon, &admins.name, &pem, "d")).assert_code(0, "helper import");
    run(daemon.run_as(&d, &["list"], None)).assert_code(0, "imported client");

    let (hits, scans, seen) = watch.finish();
    // Ours only (other daemons may run on the machine).
    let bin_dir = multipass_system_tests::bin("multipass")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let seen: Vec<String> = seen
        .into_iter()
        .filter(|s| s.starts_with(&bin_dir))
        .collect();
    let daemon_log = daemon.log();
    multipass_system_tests::figure(&format!(
        "secrets_and_permissions: {scans} scans of every /proc/*/cmdline and /proc/*/environ, \
         {} command lines of ours seen:\n  {}",
        seen.len(),
        seen.join("\n  ")
    ));
    assert!(
        hits.is_empty(),
        "secrets visible to other processes:\n{}",
        hits.join("\n")
    );
    for (what, needle) in [
        ("the daemon", "multipassd --address"),
        ("the CLI", "multipass authenticate"),
        ("the helper", "multipassd-helper --data-dir"),
        ("the helper's writer", "multipassd-helper write-as-owner"),
    ] {
        assert!(
            seen.iter().any(|s| s.contains(needle)),
            "the watch never saw {what} running, so it proves nothing about it"
        );
    }
    assert!(
        daemon_log.contains(" TRACE "),
        "the daemon did not log at trace level"
    );
    // The hash: whole, and its salt and output alone.
    let mut needles = vec![p1.clone(), p2.clone(), wrong.clone(), long.clone()];
    for hash in [&hash1, &hash2] {
        needles.push(hash.clone());
        needles.extend(hash.rsplit('$').take(2).map(str::to_string));
    }
    let cli_text: String = outputs
        .iter()
        .map(|o| format!("{}{}", o.stdout, o.stderr))
        .collect();
    for needle in &needles {
        assert!(
            !daemon_log.contains(needle.as_str()),
            "a secret in the daemon's log"
        );
        assert!(
            !cli_text.contains(needle.as_str()),
            "a secret in a client's or helper's output"
        );
    }
    multipass_system_tests::figure(&format!(
        "secrets_and_permissions: {} lines of daemon log at -vvv, {} client and helper outputs: \
         no passphrase, no hash",
        daemon_log.lines().count(),
        outputs.len()
    ));

    // docs/CONTRACT.md, Names and paths, with the daemon as its own user.
    let du = daemon_user.uid.as_raw();
    let data = &daemon.data_dir;
    let expect: Vec<(&str, std::path::PathBuf, u32, u32)> = vec![
        ("state directory", data.clone(), 0o711, du),
        (
            "trust store directory",
            data.join("authenticated-certs"),
            0o700,
            du,
        ),
        ("trust store", daemon.store_path(), 0o600, du),
        ("settings", daemon.conf_path(), 0o600, du),
        (
            "certificates directory",
            data.join("certificates"),
            0o700,
            du,
        ),
        (
            "root CA key",
            data.join("certificates/multipass_root_cert_key.pem"),
            0o600,
            du,
        ),
        (
            "server key",
            data.join("certificates/localhost_key.pem"),
            0o600,
            du,
        ),
        (
            "server certificate",
            data.join("certificates/localhost.pem"),
            0o644,
            du,
        ),
        ("root CA certificate", daemon.root_cert(), 0o644, du),
        ("client certificate directory", a.cert_dir(), 0o700, a.uid),
        ("client key", a.key_path(), 0o600, a.uid),
        ("client certificate", a.cert_path(), 0o644, a.uid),
        ("socket (open)", daemon.socket().to_path_buf(), 0o666, 0),
    ];
    let mut report = Vec::new();
    for (what, path, mode, uid) in &expect {
        let (m, u, _) =
            mode_owner(path).unwrap_or_else(|e| panic!("{what} {}: {e}", path.display()));
        report.push(format!("{what} {m:o} uid {u}"));
        assert_eq!((m, u), (*mode, *uid), "{what} ({})", path.display());
    }
    multipass_system_tests::figure(&format!("secrets_and_permissions: {}", report.join("; ")));
    // Nothing in the state directory is readable by others except the two certificates.
    for entry in walk(data) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        let public = entry.ends_with("multipass_root_cert.pem") || entry.ends_with("localhost.pem");
        if meta.is_file() && !public {
            assert_eq!(
                meta.mode() & 0o077,
                0,
                "{} is readable by others",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(walk(&path));
        }
        all.push(path);
    }
    all
}

multipass_system_tests::process_tests! {
    root: [secrets_and_permissions],
}
