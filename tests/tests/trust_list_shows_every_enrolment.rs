//! `multipass trust list` shows each way a client came to be trusted (first
//! client, passphrase, token, admin via the helper, added by hand) with the right metadata, in
//! every output format; the changes are audit events, and no secret reaches a log or an output.

use multipass_system_tests::{
    assert_secret_absent, audit_events, sha256_hex, token_in, CliOutput, Daemon, Fixture, User,
};
use serde_json::Value;

const PASSPHRASE: &str = "list-every-path-pass";
/// What the privileged helper writes before a certificate it trusts (`multipass authenticate
/// --admin`).
const ADMIN_METADATA: &str =
    "name: ops-laptop\nuid: 0\nuser: root\nhow: admin\nwhen: 2026-01-01T00:00:00Z\n";

fn client<'a>(clients: &'a [Value], user: &User) -> &'a Value {
    let fingerprint = sha256_hex(&user.cert_der());
    clients
        .iter()
        .find(|c| c["fingerprint"] == fingerprint.as_str())
        .unwrap_or_else(|| panic!("{} ({fingerprint}) is not listed: {clients:?}", user.name))
}

fn trust_list_shows_every_enrolment() {
    let Fixture(_dir, _admins, a, [b, c, d, e], daemon) = Fixture::open();
    let mut outputs: Vec<CliOutput> = Vec::new();

    // First client: A, an administrator.
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    // Passphrase: B.
    outputs.push(daemon.set_passphrase(&a, PASSPHRASE));
    let out = daemon.run_as(&b, &["authenticate"], Some(&format!("{PASSPHRASE}\n")));
    out.assert_code(0, "B `authenticate` with the passphrase");
    assert_eq!(
        out.stdout_after_prompt(),
        format!("This client is trusted as '{}'.", b.name),
        "authenticate should say which name B is trusted under\n{out}"
    );
    outputs.push(out);
    // Token: C, under the token's name.
    let created = daemon.run_as(
        &a,
        &["trust", "token", "create", "--name", "carol-laptop"],
        None,
    );
    created.assert_code(0, "A `trust token create`");
    let token = token_in(&created.stdout).unwrap_or_else(|| panic!("no token\n{created}"));
    let out = daemon.run_as(&c, &["authenticate"], Some(&format!("{token}\n")));
    out.assert_code(0, "C `authenticate` with the token");
    assert_eq!(
        out.stdout_after_prompt(),
        "This client is trusted as 'carol-laptop'.",
        "{out}"
    );
    outputs.push(out);
    // By hand: D. Admin via the helper: E (metadata written as the helper writes it).
    daemon.ensure_client_cert(&d, &["version"], None);
    daemon.ensure_client_cert(&e, &["version"], None);
    daemon.append_to_store_by_hand(&d);
    daemon.append_to_store_with_metadata(&e, ADMIN_METADATA);
    // A and D make a gated request, so have a last-seen time; B and C were seen when they
    // authenticated (a client that has just enrolled is not shown as never used); E never was.
    for (user, who) in [(&a, "A"), (&d, "D")] {
        daemon
            .run_as(user, &["list"], None)
            .assert_code(0, &format!("{who} `list` once trusted"));
    }

    let out = daemon.run_as(&a, &["trust", "list", "--format", "json"], None);
    out.assert_code(0, "A `trust list --format json`");
    let json: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let clients = json["clients"].as_array().expect("a list of clients");
    assert_eq!(clients.len(), 5, "five trusted clients\n{out}");
    outputs.push(out);

    for (user, how, name) in [
        (&a, "first-client", a.name.as_str()),
        (&b, "passphrase", b.name.as_str()),
        (&c, "token", "carol-laptop"),
    ] {
        let entry = client(clients, user);
        assert_eq!(entry["how"], how, "{entry}");
        assert_eq!(entry["name"], name, "{entry}");
        assert_eq!(entry["user"], user.name.as_str(), "{entry}");
        assert_eq!(entry["uid"], user.uid, "{entry}");
        assert!(
            entry["when"].as_str().is_some_and(|w| w.starts_with("20")),
            "enrolment time: {entry}"
        );
        assert!(entry["last_seen"].is_string(), "last seen: {entry}");
    }
    let by_hand = client(clients, &d);
    assert_eq!(by_hand["how"], "by-hand", "{by_hand}");
    for key in ["name", "uid", "user", "when"] {
        assert!(
            by_hand[key].is_null(),
            "{key} of a hand-added entry: {by_hand}"
        );
    }
    assert!(by_hand["last_seen"].is_string(), "{by_hand}");
    let admin = client(clients, &e);
    assert_eq!(admin["how"], "admin", "{admin}");
    assert_eq!(admin["name"], "ops-laptop", "{admin}");
    assert_eq!(admin["uid"], 0, "{admin}");
    assert_eq!(admin["user"], "root", "{admin}");
    assert_eq!(admin["when"], "2026-01-01T00:00:00Z", "{admin}");
    assert!(admin["last_seen"].is_null(), "E never connected: {admin}");
    assert_eq!(client(clients, &a)["this_client"], true);
    assert_eq!(client(clients, &b)["this_client"], false);

    // The table: a header, one row per client, the asking client marked.
    let out = daemon.run_as(&b, &["trust", "list"], None);
    out.assert_code(0, "B `trust list`");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("Name")
            && lines[0].contains("Fingerprint")
            && lines[0].contains("How"),
        "table header\n{out}"
    );
    assert_eq!(lines.len(), 7, "header, five rows, legend\n{out}");
    for how in ["first-client", "passphrase", "token", "admin", "by-hand"] {
        assert_eq!(
            lines[1..6].iter().filter(|l| l.contains(how)).count(),
            1,
            "one row enrolled by {how}\n{out}"
        );
    }
    let short = &sha256_hex(&b.cert_der())[..16];
    let b_row = lines.iter().find(|l| l.contains(short)).expect("B's row");
    assert!(b_row.starts_with(&format!("{} *", b.name)), "{b_row}");
    outputs.push(out);

    let out = daemon.run_as(&a, &["trust", "list", "--format", "csv"], None);
    out.assert_code(0, "`trust list --format csv`");
    assert_eq!(
        out.stdout.lines().count(),
        6,
        "CSV header and five rows\n{out}"
    );
    assert!(out.stdout.contains(",admin,"), "{out}");
    outputs.push(out);
    let out = daemon.run_as(&a, &["trust", "list", "--format", "yaml"], None);
    out.assert_code(0, "`trust list --format yaml`");
    let yaml: Value = yaml_serde::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let listed = yaml["clients"].as_array().expect("a list of clients");
    assert_eq!(listed.len(), 5, "{out}");
    assert!(listed.iter().any(|c| c["how"] == "by-hand"), "{out}");
    outputs.push(out);

    // Audit: each enrolment by the daemon, the token's life, the passphrase change.
    let log = daemon.log();
    let trusted = audit_events(&log, "trusted");
    for how in ["first-client", "passphrase", "token"] {
        assert_eq!(
            trusted
                .iter()
                .filter(|l| l.contains(&format!("how=\"{how}\"")))
                .count(),
            1,
            "one `trusted` audit event for {how}:\n{}",
            trusted.join("\n")
        );
    }
    assert_eq!(audit_events(&log, "passphrase-set").len(), 1, "{log}");
    let created_events = audit_events(&log, "token-created");
    assert!(
        created_events.len() == 1 && created_events[0].contains("token_name=carol-laptop"),
        "{created_events:?}"
    );
    assert_eq!(audit_events(&log, "token-redeemed").len(), 1);

    let token_hash = sha256_hex(token.as_bytes());
    let outs: Vec<&CliOutput> = outputs.iter().collect();
    assert_secret_absent(PASSPHRASE, "the passphrase", &log, &outs);
    assert_secret_absent(&token, "the token", &log, &outs);
    assert_secret_absent(&token_hash, "the token's hash", &log, &outs);
    assert!(
        !created.stderr.contains(&token),
        "the token belongs on stdout only"
    );
}

/// Append `n` clients to `daemon`'s store by hand. The entries are `like`'s certificate with the
/// last bytes of its signature changed, which the store never checks: distinct fingerprints at
/// the size of real entries, made in no time.
fn add_clients(daemon: &Daemon, like: &User, n: usize) {
    use trust::{Bundle, Enrolment, Entry, Metadata};
    let der = like.cert_der();
    let mut bundle = Bundle::default();
    for i in 0..n {
        let mut copy = der.clone();
        let end = copy.len();
        copy[end - 8..].copy_from_slice(&(i as u64).to_be_bytes());
        bundle.insert(Entry::new(
            copy.into(),
            Metadata {
                name: Some(format!("user{i}")),
                uid: Some(100_000 + i as u32),
                user: Some(format!("user{i}")),
                how: Some(Enrolment::Passphrase),
                when: Some("2026-01-01T00:00:00Z".into()),
            },
        ));
    }
    assert_eq!(bundle.len(), n);
    multipass_system_tests::clients::append_by_hand(&daemon.store_path(), &bundle.to_pem());
}

/// A store larger than one gRPC message may be by tonic's default (4 MiB): `trust list` of
/// 40,001 clients, about 4.7 MB on the wire, lists every one (it failed, "decoded message length
/// too large", from about 36,000).
fn a_large_store_is_listed_whole() {
    const CLIENTS: usize = 40_000;
    let Fixture(_dir, _admins, a, [], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    add_clients(&daemon, &a, CLIENTS);
    let out = daemon.run_as(&a, &["trust", "list", "--format", "csv"], None);
    out.assert_code(0, "`trust list` of a large store");
    let rows = out.stdout.lines().count() - 1;
    assert_eq!(rows, CLIENTS + 1, "every client, the caller's too");
    multipass_system_tests::figure(&format!(
        "`trust list --format csv` of {} clients: {} bytes in {:?}",
        CLIENTS + 1,
        out.stdout.len(),
        out.elapsed
    ));
}

/// A trusted client asks for the list of a large store on every stream it may open and reads
/// none of it. What the daemon holds for those answers must not grow with the store: pages are
/// made as the client reads them, and a user has few lists in flight at once.
fn unread_lists_bound_memory() {
    use multipass_system_tests::clients::connect_as;
    use multipass_system_tests::{grpc, procfs};
    use std::time::Duration;
    const CLIENTS: usize = 20_000;
    const CONNECTIONS: usize = 4;
    /// The per-connection stream limit (`daemon/src/server.rs`).
    const STREAMS: usize = 16;
    /// What the daemon may grow by (docs/SECURITY.md's bound for one user's requests).
    const BOUND_MIB: u64 = 16;
    let Fixture(dir, _admins, a, [], daemon) = Fixture::open();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "A `list` (first client)");
    add_clients(&daemon, &a, CLIENTS);
    // Once whole, so that the store is loaded and the figures compare the attack with a daemon
    // that has listed it.
    let listed = daemon.run_as(&a, &["trust", "list", "--format", "csv"], None);
    listed.assert_code(0, "`trust list` before");
    let reply_bytes = listed.stdout.len();
    let pid = daemon.pid();
    let hwm_before = procfs::peak_rss_kib(pid);

    let connections = connect_as(&a, daemon.socket(), CONNECTIONS, &dir.subdir("scratch"));
    let config = grpc::client_config(&daemon.root_cert(), Some((&a.cert_path(), &a.key_path())))
        .expect("client config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (held, answered, refused) = runtime.block_on(async {
        let (conns, mut streams) = grpc::open_calls(
            connections,
            config,
            STREAMS,
            || grpc::grpc_request_of("multipass.trust.Trust", "ListClients"),
            grpc::grpc_frame(0, &[]),
            true,
        )
        .await;
        // Let the daemon make what it will of the answers.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (mut answered, mut refused) = (0, 0);
        for (response, _) in streams.iter_mut() {
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_millis(100), response).await {
                match r.headers().get("grpc-status") {
                    None => answered += 1,
                    Some(status) if status == "8" => refused += 1,
                    Some(status) => panic!("a list answered {status:?}"),
                }
            }
        }
        ((streams, conns), answered, refused)
    });
    let hwm_during = procfs::peak_rss_kib(pid);
    // The user's own client is still served meanwhile.
    let during = daemon.run_as(&a, &["list"], None);
    drop(held);
    drop(runtime);
    let growth_kib = hwm_during.saturating_sub(hwm_before);
    multipass_system_tests::figure(&format!(
        "unread_lists_bound_memory: {} clients ({reply_bytes} bytes of CSV), {CONNECTIONS} \
         connections x {STREAMS} lists never read: {answered} answered, {refused} refused as too \
         many; peak RSS {hwm_before} KiB before, {hwm_during} KiB during: grew by {growth_kib} \
         KiB (bound {BOUND_MIB} MiB)",
        CLIENTS + 1
    ));
    assert_eq!(
        answered + refused,
        CONNECTIONS * STREAMS,
        "every list answered or refused"
    );
    assert!(
        growth_kib <= BOUND_MIB << 10,
        "the daemon's peak RSS grew by {growth_kib} KiB, above {BOUND_MIB} MiB"
    );
    during.assert_code(0, "`list` during the attack");
    // And lists every client once the lists are let go.
    let after = daemon.run_as(&a, &["trust", "list", "--format", "csv"], None);
    after.assert_code(0, "`trust list` after");
    assert_eq!(
        after.stdout.lines().count() - 1,
        CLIENTS + 1,
        "every client"
    );
}

multipass_system_tests::process_tests! {
    root: [
        trust_list_shows_every_enrolment,
        a_large_store_is_listed_whole,
        unread_lists_bound_memory,
    ],
}
