//! On a shared host, another user can make the directory where a client's certificate and key
//! are to go before the client does (`XDG_DATA_HOME` in a shared directory such as `/tmp`), or
//! a symbolic link there to a directory of the victim's. The real `multipass`, run as root,
//! refuses both: it neither uses a key another user can read or replace (and would then hold
//! trusted), nor changes the mode of the directory a link points at; nor uses a directory of its
//! own that others can write. In a directory of its own, closed to others, it goes on.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use multipass_system_tests::process::{self, CliOutput};
use multipass_system_tests::{TestDir, User};

const CERT_DIR: &str = "multipass-client-certificate";

/// `multipass list` with `XDG_DATA_HOME=data_home`, against a socket nobody listens on: the
/// client sets up its identity before it connects.
fn list_as_root(dir: &TestDir, data_home: &Path) -> CliOutput {
    let mut cmd = Command::new(multipass_system_tests::bin("multipass"));
    cmd.arg("list")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/root")
        .env("XDG_DATA_HOME", data_home)
        .env(
            "MULTIPASS_SERVER_ADDRESS",
            format!("unix:{}", dir.path().join("nobody-listens.sock").display()),
        );
    process::run(cmd, None, Duration::from_secs(30))
}

/// A directory every user may create files in, as `/tmp`: root's, mode 1777.
fn shared(dir: &TestDir, name: &str) -> std::path::PathBuf {
    let path = dir.subdir(name);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    path
}

fn a_client_directory_planted_by_another_user_is_refused() {
    let dir = TestDir::new();
    let bob = User::create(&dir, None);

    // bob's client made first in the shared directory: his directory, his key.
    let planted = shared(&dir, "pub");
    let mut cmd = bob.command(
        &multipass_system_tests::bin("multipass"),
        &[("XDG_DATA_HOME", planted.display().to_string())],
    );
    cmd.arg("list");
    let out = process::run(cmd, None, Duration::from_secs(30));
    let key = planted.join(CERT_DIR).join("multipass_cert_key.pem");
    assert!(key.exists(), "bob's client made its key\n{out}");
    let bobs_key = std::fs::read(&key).expect("bob's key");

    let out = list_as_root(&dir, &planted);
    out.assert_code(1, "root in a directory bob made");
    assert!(
        out.stderr
            .contains(&format!("it belongs to another user (uid {})", bob.uid)),
        "says why\n{out}"
    );
    assert_eq!(std::fs::read(&key).expect("the key"), bobs_key, "unchanged");
    let owner = std::fs::metadata(planted.join(CERT_DIR))
        .expect("dir")
        .uid();
    assert_eq!(owner, bob.uid, "still bob's");

    // A link of bob's to a directory of root's: refused before its mode is changed.
    let linked = shared(&dir, "pub2");
    let roots = dir.subdir("roots");
    std::fs::set_permissions(&roots, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = bob.command(Path::new("/bin/ln"), &[]);
    cmd.arg("-s").arg(&roots).arg(linked.join(CERT_DIR));
    process::run(cmd, None, Duration::from_secs(10)).assert_code(0, "bob's link");
    let out = list_as_root(&dir, &linked);
    out.assert_code(1, "root through a link bob made");
    assert!(
        out.stderr.contains("symbolic link made by another user"),
        "says why\n{out}"
    );
    let mode = std::fs::metadata(&roots).expect("roots").mode() & 0o7777;
    assert_eq!(mode, 0o755, "the linked directory's mode is unchanged");
    assert_eq!(
        std::fs::read_dir(&roots).expect("roots").count(),
        0,
        "nothing written through the link"
    );

    // Where nobody was first, root's client is made and goes on to connect (exit 3: nobody
    // listens).
    let clean = shared(&dir, "pub3");
    let out = list_as_root(&dir, &clean);
    out.assert_code(3, "root in a shared directory, first");
    let meta = std::fs::metadata(clean.join(CERT_DIR)).expect("root's directory");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));

    // Its own directory, left open to everyone (a lax umask, a hand `chmod`): anyone may have
    // put files in it, so it is refused with what to do, and nothing is written there.
    let lax = shared(&dir, "pub4");
    let own = lax.join(CERT_DIR);
    std::fs::create_dir(&own).expect("root's own directory");
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = list_as_root(&dir, &lax);
    out.assert_code(1, "root in its own directory left open");
    assert!(
        out.stderr
            .contains("others may write in it (mode 0777); if it is yours, `chmod 700` it"),
        "says what to do\n{out}"
    );
    assert_eq!(
        std::fs::read_dir(&own).expect("own").count(),
        0,
        "nothing written"
    );
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    list_as_root(&dir, &lax).assert_code(3, "once closed as told");
    let key = std::fs::metadata(own.join("multipass_cert_key.pem")).expect("root's key");
    assert_eq!(key.mode() & 0o7777, 0o600, "the key is private");
}

multipass_system_tests::process_tests! {
    root: [a_client_directory_planted_by_another_user_is_refused],
}
