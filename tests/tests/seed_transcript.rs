//! The seed's transcript end to end: the first admin client is trusted, others are refused until
//! trusted by hand or by passphrase, and neither the passphrase nor its hash ever shows up in a
//! log or in anything the CLI prints.

use multipass_system_tests::{
    ini_passphrase, CliOutput, DaemonConfig, Fixture, PASSPHRASE_NOT_CORRECT, PASSPHRASE_NOT_SET,
};
use std::time::{Duration, Instant};

const PASSPHRASE: &str = "s3cret-pass";
const WRONG: &str = "n0t-the-s3cret";

fn seed_transcript() {
    let Fixture(_dir, admins, a, [b, c], mut daemon) = Fixture::open_configured(DaemonConfig {
        verbosity: 3,
        ..DaemonConfig::default()
    });
    let mut outputs: Vec<CliOutput> = Vec::new();

    // Fresh service: restricted socket, state files in place.
    assert_eq!(
        daemon.first_socket_mode,
        Some((0o660, 0, admins.gid)),
        "a fresh socket should appear as root:{} 0660 (mode, uid, gid)",
        admins.name
    );
    assert_eq!(
        multipass_system_tests::mode_owner(&daemon.data_dir)
            .unwrap()
            .0,
        0o711,
        "data dir mode"
    );
    assert_eq!(
        multipass_system_tests::mode_owner(&daemon.root_cert())
            .unwrap_or_else(|e| panic!("root CA {}: {e}", daemon.root_cert().display()))
            .0,
        0o644,
        "root CA mode"
    );

    // A, an admin, is the first client.
    let out = daemon.run_as(&a, &["list"], None);
    out.assert_code(0, "first admin client `list`");
    assert!(
        out.stdout.contains("No instances found."),
        "`list` output\n{out}"
    );
    outputs.push(out);
    daemon.assert_socket_mode((0o666, 0, 0), "after the first client was trusted");
    assert_eq!(
        daemon.store_certs(),
        vec![a.cert_der()],
        "the store should hold exactly A's certificate"
    );
    assert_eq!(
        multipass_system_tests::mode_owner(&a.cert_dir()).unwrap().0,
        0o700,
        "client certificate dir mode"
    );
    assert_eq!(
        multipass_system_tests::mode_owner(&a.key_path()).unwrap().0,
        0o600,
        "client key mode"
    );

    // B is not trusted.
    let out = daemon.run_as(&b, &["list"], None);
    out.assert_not_authenticated("list", "untrusted B `list`");
    outputs.push(out);
    let out = daemon.run_as(&b, &["authenticate"], Some("anything\n"));
    out.assert_failure(
        2,
        &format!("authenticate failed: {PASSPHRASE_NOT_SET}"),
        "B `authenticate` with no passphrase set",
    );
    // Then the ways in that need no passphrase.
    assert!(
        out.stderr.contains("'multipass authenticate --admin'")
            && out.stderr.contains("'multipass trust token create'"),
        "{out}"
    );
    outputs.push(out);
    let out = daemon.run_as(
        &b,
        &["set", "local.passphrase"],
        Some("b-pass-123\nb-pass-123\n"),
    );
    out.assert_not_authenticated("set", "untrusted B `set local.passphrase`");
    outputs.push(out);

    // The documented recovery: append B's certificate by hand; no restart needed.
    daemon.append_to_store_by_hand(&b);
    let start = Instant::now();
    let out = loop {
        let out = daemon.run_as(&b, &["list"], None);
        if out.code == Some(0) || start.elapsed() > Duration::from_secs(3) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    out.assert_code(0, "B `list` after its certificate was appended by hand");
    println!(
        "hand-appended certificate honoured after {:?}",
        start.elapsed()
    );
    outputs.push(out);

    // And after a restart.
    daemon.restart();
    if let Some(first) = daemon.first_socket_mode {
        // The old socket file was gone, so this is the new one as it first appeared.
        assert_eq!(
            first,
            (0o666, 0, 0),
            "with a non-empty store the socket should appear as root:root 0666 (mode, uid, gid)"
        );
    }
    daemon.assert_socket_mode((0o666, 0, 0), "after a restart with a non-empty store");
    let out = daemon.run_as(&b, &["list"], None);
    out.assert_code(0, "B `list` after restart");
    outputs.push(out);
    let out = daemon.run_as(&a, &["list"], None);
    out.assert_code(0, "A `list` after restart");
    outputs.push(out);

    // A sets the passphrase (two lines on stdin: passphrase and confirmation).
    let out = daemon.run_as(
        &a,
        &["set", "local.passphrase"],
        Some(&format!("{PASSPHRASE}\n{PASSPHRASE}\n")),
    );
    out.assert_code(0, "A `set local.passphrase`");
    outputs.push(out);

    // C: wrong passphrase, then the right one.
    let out = daemon.run_as(&c, &["authenticate"], Some(&format!("{WRONG}\n")));
    out.assert_failure(
        2,
        &format!("authenticate failed: {PASSPHRASE_NOT_CORRECT}"),
        "C `authenticate` with a wrong passphrase",
    );
    outputs.push(out);
    let out = daemon.run_as(&c, &["authenticate"], Some(&format!("{PASSPHRASE}\n")));
    out.assert_code(0, "C `authenticate` with the right passphrase");
    outputs.push(out);
    let out = daemon.run_as(&c, &["list"], None);
    out.assert_code(0, "C `list` after authenticating");
    assert!(
        out.stdout.contains("No instances found."),
        "`list` output\n{out}"
    );
    outputs.push(out);

    // The passphrase is set; its hash stays in the daemon.
    let out = daemon.run_as(&a, &["get", "local.passphrase"], None);
    out.assert_code(0, "A `get local.passphrase`");
    assert_eq!(
        out.stdout_trimmed(),
        "true",
        "`get local.passphrase`\n{out}"
    );
    outputs.push(out);
    let out = daemon.run_as(&a, &["get", "--keys"], None);
    out.assert_code(0, "A `get --keys`");
    assert!(
        out.stdout.lines().any(|l| l.trim() == "local.passphrase"),
        "`get --keys` should list local.passphrase\n{out}"
    );
    outputs.push(out);

    let conf = std::fs::read_to_string(daemon.conf_path()).expect("read multipassd.conf");
    let hash = ini_passphrase(&conf)
        .unwrap_or_else(|| panic!("no local.passphrase in multipassd.conf:\n{conf}"));
    assert!(
        hash.starts_with("$argon2id$"),
        "the stored passphrase should be an Argon2id PHC string, is {hash:?}"
    );
    assert!(
        !conf.contains(PASSPHRASE),
        "plaintext passphrase in the conf"
    );
    // The whole PHC string, and its digest alone (in case a log prints only part of it).
    let digest = hash.rsplit('$').next().unwrap_or_default().to_string();
    assert!(digest.len() >= 16, "PHC digest {digest:?}");
    let log = daemon.log();
    assert!(
        log.lines().count() > 3,
        "the -vvv daemon log is suspiciously empty:\n{log}"
    );
    for (needle, what) in [
        (PASSPHRASE, "the passphrase"),
        (WRONG, "a wrong passphrase"),
        (hash.as_str(), "the passphrase hash"),
        (digest.as_str(), "the passphrase digest"),
    ] {
        assert!(!log.contains(needle), "{what} appears in the daemon log");
        for out in &outputs {
            assert!(
                !out.stdout.contains(needle) && !out.stderr.contains(needle),
                "{what} appears in the output of a CLI command\n{out}"
            );
        }
    }
}

multipass_system_tests::process_tests! {
    root: [seed_transcript],
}
