//! The first-client rule is for admins only: a non-admin peer is not trusted automatically even
//! when it can reach the socket.

use std::os::unix::fs::PermissionsExt;

use multipass_system_tests::Fixture;

fn non_admin_cannot_be_first() {
    let Fixture(_dir, admins, a, [d], daemon) = Fixture::open();
    assert_eq!(
        daemon.first_socket_mode,
        Some((0o660, 0, admins.gid)),
        "a fresh socket should appear as root:{} 0660 (mode, uid, gid)",
        admins.name
    );

    // Without help D cannot even connect.
    let out = daemon.run_as(&d, &["list"], None);
    assert_eq!(
        out.code,
        Some(3),
        "non-admin D on the restricted socket should get 'daemon unreachable'\n{out}"
    );

    // Open the socket by hand: D reaches the daemon but is still not trusted.
    std::fs::set_permissions(daemon.socket(), std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let out = daemon.run_as(&d, &["list"], None);
    out.assert_not_authenticated("list", "non-admin D `list` as would-be first client");
    // It is told why: not that an administrator becomes the first client, which it could take
    // for itself, but that it is not one, and who is.
    assert!(
        out.stderr.contains(&format!(
            "only an administrator's client becomes the first: one run by root or a member of \
             the '{}' group, which this user is not",
            admins.name
        )),
        "{out}"
    );
    assert!(
        daemon.store_certs().is_empty(),
        "the store should still be empty after D's attempt"
    );

    // The admin is still the first client.
    let out = daemon.run_as(&a, &["list"], None);
    out.assert_code(0, "admin A `list` after D's attempt");
    assert_eq!(
        daemon.store_certs(),
        vec![a.cert_der()],
        "the store should hold exactly A's certificate"
    );

    // And D is still refused.
    let out = daemon.run_as(&d, &["list"], None);
    out.assert_not_authenticated("list", "non-admin D `list` after A was trusted");
    assert_eq!(
        daemon.store_certs().len(),
        1,
        "store after D's second attempt"
    );
}

multipass_system_tests::process_tests! {
    root: [non_admin_cannot_be_first],
}
