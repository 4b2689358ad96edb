//! `TrustCertificate` calls at once over the real D-Bus system bus, each authorized by the real
//! polkitd, from two authorized users (and, among them, calls from a user polkit refuses), while
//! the daemon itself trusts clients that authenticate with the passphrase: every authorized
//! certificate ends up in the store exactly once, with its own metadata, no refused one does, the
//! file parses without a skipped block and keeps its owner and mode, and the running daemon
//! trusts every one of them. The direct mode is covered by `concurrency_without_loss`.

use std::sync::Barrier;
use std::time::Instant;

use multipass_system_tests::bus::{call_helper, HelperSetup};
use multipass_system_tests::clients::MemoryIdentity;
use multipass_system_tests::{figure, grpc, mode_owner, sha256_hex, User};

/// Helper calls made at once.
const CALLS: usize = 20;
/// Calls from a user polkit refuses, meanwhile.
const REFUSED_CALLS: usize = 4;
/// Clients authenticating with the passphrase meanwhile.
const PASSPHRASE_CLIENTS: usize = 4;
const PASSPHRASE: &str = "while-the-helper-writes";

fn concurrent_trust_certificate_calls_over_dbus_lose_nothing() {
    let setup = HelperSetup::new();
    let first = setup.user(&[&setup.admins]);
    let operators = [
        setup.user(&[&setup.operators]),
        setup.user(&[&setup.operators]),
    ];
    let others: Vec<User> = (0..PASSPHRASE_CLIENTS).map(|_| setup.user(&[])).collect();
    let stranger = setup.user(&[]);
    let _rules = setup.grant(&operators[0]);
    let (daemon, helper) = setup.serve();
    daemon
        .run_as(&first, &["list"], None)
        .assert_code(0, "first client");
    daemon.set_passphrase(&first, PASSPHRASE);
    for user in &others {
        daemon.ensure_client_cert(user, &["version"], None);
    }
    let store = daemon.store_path();
    let owner_before = mode_owner(&store).unwrap();
    let identities: Vec<MemoryIdentity> =
        (0..CALLS).map(|_| MemoryIdentity::new(&daemon)).collect();
    let refused: Vec<MemoryIdentity> = (0..REFUSED_CALLS)
        .map(|_| MemoryIdentity::new(&daemon))
        .collect();

    let barrier = Barrier::new(CALLS + REFUSED_CALLS + PASSPHRASE_CLIENTS);
    let start = Instant::now();
    let (replies, denials, logins) = std::thread::scope(|scope| {
        let calls: Vec<_> = identities
            .iter()
            .enumerate()
            .map(|(i, identity)| {
                let (barrier, operator) = (&barrier, &operators[i % operators.len()]);
                scope.spawn(move || {
                    barrier.wait();
                    let name = format!("concurrent-{i}");
                    call_helper(
                        Some(operator),
                        "TrustCertificate",
                        "ss",
                        &[&identity.pem, &name],
                    )
                })
            })
            .collect();
        let denials: Vec<_> = refused
            .iter()
            .map(|identity| {
                let (barrier, stranger) = (&barrier, &stranger);
                scope.spawn(move || {
                    barrier.wait();
                    call_helper(
                        Some(stranger),
                        "TrustCertificate",
                        "ss",
                        &[&identity.pem, "not-allowed"],
                    )
                })
            })
            .collect();
        let logins: Vec<_> = others
            .iter()
            .map(|user| {
                let (barrier, daemon) = (&barrier, &daemon);
                scope.spawn(move || {
                    barrier.wait();
                    daemon.run_as(user, &["authenticate"], Some(&format!("{PASSPHRASE}\n")))
                })
            })
            .collect();
        (
            calls
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>(),
            denials
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>(),
            logins
                .into_iter()
                .map(|c| c.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    let elapsed = start.elapsed();
    figure(&format!(
        "{CALLS} authorized and {REFUSED_CALLS} refused TrustCertificate calls at once over \
         D-Bus with polkit, and {PASSPHRASE_CLIENTS} passphrase logins: all done in {elapsed:.2?}"
    ));

    for ((ok, text), identity) in replies.iter().zip(&identities) {
        assert!(ok, "TrustCertificate failed: {text}\n{}", helper.log());
        let fingerprint = sha256_hex(&identity.der);
        assert_eq!(
            text.trim(),
            fingerprint,
            "the reply is the certificate's fingerprint"
        );
    }
    // Refused by polkit, or (its calls allow interaction, and polkit would ask it to
    // authenticate) beyond the two such checks a caller may have at once.
    for (ok, text) in &denials {
        assert!(
            !ok && (text.contains("Not authorized")
                || text.contains("waiting for an authentication to be answered")),
            "a call polkit should refuse: {text}"
        );
    }
    for out in &logins {
        out.assert_code(
            0,
            "authenticate with the passphrase during the helper's writes",
        );
    }

    // The file: every certificate once, nothing skipped, each with its own metadata.
    let bytes = std::fs::read(&store).unwrap();
    let bundle = trust::Bundle::parse(&bytes);
    assert_eq!(bundle.skipped(), 0, "unparsable blocks in the store");
    assert_eq!(
        bundle.len(),
        1 + CALLS + PASSPHRASE_CLIENTS,
        "first client, every helper import, every passphrase client"
    );
    assert_eq!(
        daemon.store_certs().len(),
        bundle.len(),
        "a certificate appears twice"
    );
    for (i, identity) in identities.iter().enumerate() {
        let entry = bundle
            .get(&trust::Fingerprint::of(&identity.der))
            .unwrap_or_else(|| panic!("import {i} is missing from the store"));
        let operator = &operators[i % operators.len()];
        assert_eq!(
            entry.metadata.name.as_deref(),
            Some(&*format!("concurrent-{i}"))
        );
        assert_eq!(entry.metadata.how, Some(trust::Enrolment::Admin));
        assert_eq!(entry.metadata.uid, Some(operator.uid));
    }
    for identity in &refused {
        assert!(
            !bundle.contains(&trust::Fingerprint::of(&identity.der)),
            "a refused call's certificate is in the store"
        );
    }
    for user in &others {
        assert!(
            bundle.contains(&trust::Fingerprint::of(&user.cert_der())),
            "{} authenticated but is not in the store",
            user.name
        );
    }
    assert_eq!(
        mode_owner(&store).unwrap(),
        owner_before,
        "the store's owner or mode changed"
    );

    // The running daemon trusts them all, without a restart.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listed = runtime.block_on(async {
        let mut client = grpc::trust_client(
            daemon.socket(),
            &daemon.root_cert(),
            (&first.cert_path(), &first.key_path()),
        )
        .await
        .expect("a Trust client");
        grpc::trusted_clients(&mut client)
            .await
            .expect("ListClients")
    });
    assert_eq!(listed.len(), bundle.len());
    for identity in &identities {
        let channel = runtime.block_on(async {
            let socket = daemon.socket().to_path_buf();
            grpc::channel(&socket, identity.config.clone()).await
        });
        runtime
            .block_on(grpc::list(channel.expect("connect")))
            .expect("an imported client is trusted by the running daemon");
    }
}

multipass_system_tests::process_tests! {
    root: [concurrent_trust_certificate_calls_over_dbus_lose_nothing],
}
