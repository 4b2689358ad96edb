//! One validation of a new passphrase and one of a name, the same in the daemon and in the helper
//! (over D-Bus and in its direct mode, as through pkexec), and for names in the client too:
//! - a passphrase of a token's shape (`mpt_` and 40 hex digits), which `authenticate` would take
//!   for a token and so could never be used, and an over-long one are refused, and the settings
//!   file is not touched (the client refuses an over-long one itself, before connecting);
//! - a name holding a line or paragraph separator (U+2028, U+2029) or a bidirectional control
//!   (U+202E and the others), which would make `multipass trust list` show something else than
//!   what is stored, is refused, and neither the trust store nor the token file is touched; a
//!   hand-edited entry is listed without them.

use multipass_system_tests::bus::{call_helper, HelperSetup};
use multipass_system_tests::clients::{self, MemoryIdentity};
use multipass_system_tests::grpc;
use multipass_system_tests::process::{self, CliOutput, DEFAULT_TIMEOUT};
use multipass_system_tests::{Daemon, TOKEN_PREFIX};

fn read(path: &std::path::Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// `multipassd-helper ARGS...` as root with `stdin`: the direct mode pkexec runs.
fn helper_direct(daemon: &Daemon, admin_group: &str, args: &[&str], stdin: &str) -> CliOutput {
    let cmd = clients::helper_command(daemon, admin_group, args);
    process::run(cmd, Some(stdin), DEFAULT_TIMEOUT)
}

fn token_shaped_and_overlong_passphrases_are_refused_by_daemon_and_helper() {
    let setup = HelperSetup::new();
    let serving = setup.serve_first_and_operator();
    let (daemon, first, operator) = (&serving.daemon, &serving.first, &serving.operator);
    daemon.set_passphrase(first, "the-real-one");
    let conf = daemon.conf_path();
    let before = read(&conf).expect("the settings file");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let token_shaped = format!("{TOKEN_PREFIX}{}", &"0123456789abcdef".repeat(3)[..40]);
    let overlong = "p".repeat(1025);
    for (value, why) in [
        (
            token_shaped.as_str(),
            "the passphrase has the shape of an enrollment token (mpt_ and 40 hex digits), \
             which `multipass authenticate` would take for one, so it could never be used",
        ),
        (
            overlong.as_str(),
            "the passphrase is longer than 1024 bytes",
        ),
    ] {
        // The daemon, from a trusted client, as any client may send it.
        let refusal = runtime
            .block_on(async {
                let config = grpc::client_config(
                    &daemon.root_cert(),
                    Some((&first.cert_path(), &first.key_path())),
                )?;
                let channel = grpc::channel(daemon.socket(), config).await?;
                Ok::<_, grpc::BoxError>(clients::set(channel, "local.passphrase", value).await)
            })
            .expect("a channel with the first client's certificate")
            .expect_err("`set local.passphrase` of a refused value");
        assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal:?}");
        assert_eq!(
            refusal.message(),
            format!("Invalid setting 'local.passphrase': {why}")
        );
        // Through the client, which refuses an over-long one itself, before connecting.
        let out = daemon.run_as(
            first,
            &["set", "local.passphrase"],
            Some(&format!("{value}\n{value}\n")),
        );
        let (code, prefix) = if value.len() > 1024 {
            (1, "")
        } else {
            (2, "set failed: ")
        };
        out.assert_failure(
            code,
            &format!("{prefix}Invalid setting 'local.passphrase': {why}"),
            "`set local.passphrase` of a refused value",
        );
        // The helper over D-Bus, from an authorized caller: directly, and through the client.
        let (ok, text) = call_helper(Some(operator), "SetPassphrase", "s", &[value]);
        assert!(
            !ok && text.contains(why),
            "SetPassphrase of a refused value: {text}"
        );
        let out = daemon.run_as(
            operator,
            &["set", "local.passphrase", "--admin"],
            Some(&format!("{value}\n{value}\n")),
        );
        if value.len() > 1024 {
            out.assert_failure(
                1,
                &format!("Invalid setting 'local.passphrase': {why}"),
                "`set local.passphrase --admin` of an over-long value",
            );
        } else {
            out.assert_failure(
                2,
                &format!("set failed: {why}"),
                "`set local.passphrase --admin` of a refused value",
            );
        }
        // The helper's direct mode (root, as through pkexec).
        let out = helper_direct(
            daemon,
            &setup.admins.name,
            &["set-passphrase"],
            &format!("{value}\n"),
        );
        assert!(
            out.code == Some(1) && out.stderr.contains(why),
            "direct set-passphrase of a refused value\n{out}"
        );
        assert!(!out.stderr.contains(value), "the value is echoed\n{out}");
        assert_eq!(
            read(&conf).as_deref(),
            Some(&before[..]),
            "a refused passphrase changed the settings file"
        );
    }
    // The passphrase set before still works: nothing was replaced.
    let other = setup.user(&[]);
    daemon
        .run_as(&other, &["authenticate"], Some("the-real-one\n"))
        .assert_code(
            0,
            "authenticate with the passphrase set before the refusals",
        );
}

/// Bidirectional controls (every one Unicode has), separators and invisible format characters.
const BAD_NAMES: [(&str, &str); 9] = [
    ("evil\u{202E}gpj.exe", "U+202E"),
    ("two\u{2028}lines", "U+2028"),
    ("two\u{2029}paragraphs", "U+2029"),
    ("\u{2066}isolated\u{2069}", "U+2066"),
    ("\u{2067}rtl-isolate", "U+2067"),
    ("embed\u{202A}ded", "U+202A"),
    ("mark\u{200F}", "U+200F"),
    ("arabic\u{061C}mark", "U+061C"),
    ("zero\u{FEFF}width", "U+FEFF"),
];

fn names_with_bidi_controls_or_separators_are_refused_everywhere() {
    let setup = HelperSetup::new();
    let serving = setup.serve_first_and_operator();
    let (daemon, first, operator) = (&serving.daemon, &serving.first, &serving.operator);
    let store = daemon.store_path();
    let tokens = daemon.tokens_path();
    let before = (read(&store), read(&tokens));
    let newcomer = MemoryIdentity::new(daemon);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut trust_client = runtime
        .block_on(grpc::trust_client(
            daemon.socket(),
            &daemon.root_cert(),
            (&first.cert_path(), &first.key_path()),
        ))
        .expect("a Trust client with the first client's certificate");

    for (name, code_point) in BAD_NAMES {
        // The daemon: a token's name becomes the enrolled client's name.
        let refusal = runtime
            .block_on(
                trust_client.create_token(rpc::trust_proto::CreateTokenRequest {
                    name: name.to_string(),
                    expires_in_seconds: 0,
                }),
            )
            .expect_err("a token name with an unprintable character");
        assert_eq!(refusal.code(), tonic::Code::InvalidArgument, "{refusal:?}");
        assert!(
            refusal.message().starts_with("Invalid token name '")
                && refusal
                    .message()
                    .contains(&format!("it contains {code_point}")),
            "{name:?}: {refusal:?}"
        );
        assert!(
            !refusal.message().contains(name),
            "the refusal shows the name unescaped: {refusal:?}"
        );
        // The client, before sending anything.
        let out = daemon.run_as(first, &["trust", "token", "create", "--name", name], None);
        assert!(
            out.code == Some(1)
                && out.stderr.starts_with("Invalid token name '")
                && out.stderr.contains(code_point),
            "{name:?}\n{out}"
        );
        // The helper over D-Bus, from an authorized caller...
        let (ok, text) = call_helper(
            Some(operator),
            "TrustCertificate",
            "ss",
            &[&newcomer.pem, name],
        );
        assert!(
            !ok && text.contains("Invalid client name") && text.contains(code_point),
            "TrustCertificate named {name:?}: {text}"
        );
        // ...and in its direct mode.
        let out = helper_direct(
            daemon,
            &setup.admins.name,
            &["trust-certificate", "--name", name],
            &newcomer.pem,
        );
        assert!(
            out.code == Some(1) && out.stderr.contains("Invalid client name"),
            "direct trust-certificate named {name:?}\n{out}"
        );
        // Said as a person reads it, without the D-Bus error name.
        assert!(!out.stderr.contains("io.multipass."), "{out}");
    }
    assert!(
        (read(&store), read(&tokens)) == before,
        "a refused name changed the trust store or the token file"
    );
    assert!(
        !daemon.log().contains("token-created"),
        "a token was created after all"
    );

    // Printable names, not only ASCII ones, pass.
    let (ok, text) = call_helper(
        Some(operator),
        "TrustCertificate",
        "ss",
        &[&newcomer.pem, "Zoë's laptop"],
    );
    assert!(ok, "TrustCertificate with a printable name: {text}");
    assert!(
        std::fs::read_to_string(&store)
            .unwrap()
            .contains("name: Zoë's laptop\n"),
        "the name as given"
    );

    // A hand-edited entry is listed without its bidi and separator characters.
    let by_hand = MemoryIdentity::new(daemon);
    clients::append_by_hand(
        &store,
        &format!("name: admin\u{202E}\u{2066}x\u{2028}y\n{}", by_hand.pem),
    );
    let listed = runtime
        .block_on(grpc::trusted_clients(&mut trust_client))
        .expect("ListClients");
    let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"adminxy"), "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| !n.contains(['\u{202E}', '\u{2066}', '\u{2028}'])),
        "{names:?}"
    );
}

multipass_system_tests::process_tests! {
    root: [token_shaped_and_overlong_passphrases_are_refused_by_daemon_and_helper, names_with_bidi_controls_or_separators_are_refused_everywhere],
}
