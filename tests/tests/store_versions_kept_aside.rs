//! A removal rewrites the trust store from what it parsed, which leaves out what is neither a
//! certificate nor its metadata (an administrator's notes, a damaged block). The version it
//! replaced is then kept beside it, as it was: linked where the daemon may link it, copied where
//! it may not (a store restored by root, which `fs.protected_hardlinks` lets no other user link,
//! and which the daemon here, running as root without capabilities, cannot write either).

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use multipass_system_tests::Fixture;

/// The versions kept beside the store, with their content.
fn kept(store: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let name = store.file_name().unwrap().to_string_lossy().into_owned();
    let mut kept: Vec<_> = std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}.replaced-"))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    kept.sort();
    kept
}

fn a_store_of_another_owner_is_copied_aside_when_a_removal_drops_its_notes() {
    assert_eq!(
        std::fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .unwrap()
            .trim(),
        "1",
        "this test needs fs.protected_hardlinks = 1, as Debian sets it"
    );
    let Fixture(_dir, _admins, alice, [bob], daemon) = Fixture::open();
    daemon
        .run_as(&alice, &["list"], None)
        .assert_code(0, "the first client");
    daemon.ensure_client_cert(&bob, &["version"], None);
    daemon.append_to_store_by_hand(&bob);
    let store = daemon.store_path();
    // Restored by an administrator: another owner's file, with a note of theirs.
    let text = format!(
        "# restored from the backup of monday\n{}",
        std::fs::read_to_string(&store).unwrap()
    );
    std::fs::write(&store, &text).unwrap();
    std::os::unix::fs::chown(&store, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();

    let bob_fingerprint = multipass_system_tests::sha256_hex(&bob.cert_der());
    daemon
        .run_as(&alice, &["trust", "remove", &bob_fingerprint[..16]], None)
        .assert_code(0, "alice removes bob");
    let now = std::fs::read_to_string(&store).unwrap();
    assert!(
        !now.contains(&bob_fingerprint) && !now.contains("monday"),
        "{now}"
    );
    let kept = kept(&store);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, text, "the version before, as it was");
    let meta = std::fs::metadata(&kept[0].0).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o644, "with its mode");
    assert_ne!(
        meta.uid(),
        65534,
        "a copy, the daemon's (a link would be the restored file itself)"
    );
    let log = daemon.log();
    assert!(
        log.contains("the version before is kept under another name"),
        "{log}"
    );
}

multipass_system_tests::process_tests! {
    root: [a_store_of_another_owner_is_copied_aside_when_a_removal_drops_its_notes],
}
