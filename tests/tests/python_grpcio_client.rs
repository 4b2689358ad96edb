//! A gRPC stack other than ours (Python grpcio, the C core that stock Multipass clients also use)
//! talks to the daemon: it is refused before authenticating, authenticates with the passphrase,
//! and is then served an empty instance list.

use multipass_system_tests::python::{step, PythonClient};
use multipass_system_tests::{Fixture, NOT_AUTHENTICATED};

const PASSPHRASE: &str = "py-grpc-pass";

fn python_grpcio_client() {
    let Fixture(dir, _admins, a, [c], daemon) = Fixture::open();
    let python = PythonClient::prepare(&dir);
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "first admin client `list`");
    daemon.set_passphrase(&a, PASSPHRASE);
    // C's certificate and key, as the CLI creates them.
    daemon.ensure_client_cert(&c, &["version"], None);

    let out = python.run(&c, &daemon, PASSPHRASE);
    println!("{}", out.stdout);

    // The two lines of Multipass's message, exactly, then the daemon's one line of advice.
    let not_authenticated = format!(
        "LIST1 UNAUTHENTICATED \"{}\\n",
        NOT_AUTHENTICATED.replace('\n', "\\n")
    );
    let list1 = step(&out, "LIST1");
    assert!(
        list1.starts_with(&not_authenticated),
        "grpcio `list` before authenticating: {list1}\n{out}"
    );
    assert_eq!(
        list1.matches("\\n").count(),
        2,
        "the refusal should have exactly three lines: {list1}"
    );
    assert!(
        step(&out, "AUTH").starts_with("AUTH OK "),
        "grpcio `authenticate` with the passphrase\n{out}"
    );
    let list2 = step(&out, "LIST2");
    assert!(
        list2.starts_with("LIST2 OK "),
        "grpcio `list` after authenticating\n{out}"
    );
    assert!(
        list2.contains("\"instances\": 0") && list2.contains("\"instance_list\""),
        "`list` should answer an empty instance list: {list2}"
    );

    // The CLI agrees that C is now trusted.
    daemon
        .run_as(&c, &["list"], None)
        .assert_code(0, "C `list` (CLI) after authenticating with grpcio");
    assert!(
        daemon.store_certs().contains(&c.cert_der()),
        "C's certificate should be in the store"
    );
}

multipass_system_tests::process_tests! {
    root: [python_grpcio_client],
}
