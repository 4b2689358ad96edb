//! The real `multipass` binary with no daemon to answer it: command-line errors, prompts that
//! come before connecting, and every way of not reaching the daemon. Each test has its own
//! directory for the socket, the root CA and `XDG_DATA_HOME`.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `multipass` pointed at `socket` in this directory, with its data in here too.
    fn command(&self, socket: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_multipass"));
        cmd.env(
            "MULTIPASS_SERVER_ADDRESS",
            format!("unix:{}", socket.display()),
        )
        .env("XDG_DATA_HOME", self.dir.path())
        .env("HOME", self.dir.path())
        .env("MULTIPASS_ROOT_CERT", self.path("root.pem"))
        .stdin(Stdio::null());
        cmd
    }

    fn run(&self, socket: &Path, args: &[&str]) -> Output {
        self.command(socket).args(args).output().unwrap()
    }

    fn run_with_input(&self, socket: &Path, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The command may stop reading and exit before all of it is written.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    fn cert_dir(&self) -> PathBuf {
        self.path("multipass-client-certificate")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// What a missing socket of one's own (not the default one, which systemd provides) is told.
const START_HINT: &str = "Check that multipassd listens there, or set MULTIPASS_SERVER_ADDRESS.\n";

#[test]
fn missing_socket_exits_3_and_leaves_an_identity() {
    let env = Env::new();
    let socket = env.path("nonexistent");
    let out = env.run(&socket, &["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "list failed: cannot connect to the multipass socket at {}: \
             the daemon is not running (No such file or directory)\n{START_HINT}",
            socket.display()
        )
    );
    assert_eq!(stdout(&out), "");

    let dir = env.cert_dir();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("multipass_cert_key.pem")), 0o600);
    let cert = std::fs::read_to_string(dir.join("multipass_cert.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));

    // The same identity is used next time, and the alias reports the canonical name.
    let out = env.run(&socket, &["ls"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).starts_with("list failed: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("multipass_cert.pem")).unwrap(),
        cert
    );
}

#[test]
fn refused_socket_exits_3() {
    let env = Env::new();
    let socket = env.path("stale");
    drop(UnixListener::bind(&socket).unwrap());
    let out = env.run(&socket, &["get", "local.passphrase"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "get failed: cannot connect to the multipass socket at {}: \
             the daemon is not running (Connection refused)\n{START_HINT}",
            socket.display()
        )
    );
}

#[test]
fn missing_root_cert_exits_3_after_waiting() {
    let env = Env::new();
    let socket = env.path("sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    let started = std::time::Instant::now();
    let out = env.run(&socket, &["get", "--keys"]);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.starts_with(&format!(
            "get failed: cannot read the daemon's root certificate {}: \
             No such file or directory (os error 2)\n",
            env.path("root.pem").display()
        )),
        "{text}"
    );
    assert!(text.contains("MULTIPASS_ROOT_CERT"), "{text}");
}

#[test]
fn invalid_root_cert_exits_3() {
    let env = Env::new();
    let socket = env.path("sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    std::fs::write(env.path("root.pem"), "not a certificate\n").unwrap();
    let out = env.run(&socket, &["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "list failed: cannot read the daemon's root certificate {}: ",
            env.path("root.pem").display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tls_failure_exits_3() {
    let env = Env::new();
    let data = trust::DataDir::new(env.path("daemon"));
    tls::ServerPki::load_or_create(&data, Default::default()).unwrap();
    std::fs::copy(data.root_cert(), env.path("root.pem")).unwrap();

    // Not a TLS server: read a little of the ClientHello, then hang up.
    let socket = env.path("sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let _ = conn.read(&mut [0; 16]);
    });
    let out = env.run(&socket, &["list"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(&format!(
            "list failed: TLS handshake with unix:{} failed: ",
            socket.display()
        )),
        "{}",
        stderr(&out)
    );
}

/// `multipass list` with `MULTIPASS_SERVER_ADDRESS` set to `address`.
fn list_at(env: &Env, address: &str) -> Output {
    env.command(Path::new("unused"))
        .env("MULTIPASS_SERVER_ADDRESS", address)
        .arg("list")
        .output()
        .unwrap()
}

#[test]
fn invalid_address_exits_1() {
    let env = Env::new();
    let out = list_at(&env, "nowhere");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "list failed: invalid MULTIPASS_SERVER_ADDRESS: \
         invalid address 'nowhere': expected unix:PATH or HOST:PORT\n"
    );
}

/// Empty is unset, as Multipass reads it (and as `MULTIPASS_ROOT_CERT` is read).
#[test]
fn an_empty_address_is_the_default_socket() {
    let env = Env::new();
    let out = env
        .command(Path::new("unused"))
        .env("MULTIPASS_SERVER_ADDRESS", "")
        .args(["-v", "list"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("daemon: unix:/run/multipass_socket (the default)"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("invalid"), "{}", stderr(&out));
}

/// Multipass's instance commands are said to be unavailable, not "did you mean 'auth'".
#[test]
fn multipass_commands_this_client_lacks_say_so() {
    let env = Env::new();
    for name in ["launch", "info", "shell", "delete"] {
        let out = env.run(&env.path("nonexistent"), &[name, "foo"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            format!(
                "{name} failed: This service manages no instances: '{name}' is not available.\n\
                 Its commands are listed by 'multipass --help'.\n"
            )
        );
    }
    // Another unknown command is clap's, with its suggestion.
    let out = env.run(&env.path("nonexistent"), &["lst"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unrecognized subcommand 'lst'"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_url_as_the_address_or_an_empty_client_id_exits_1() {
    let env = Env::new();
    let out = list_at(&env, "tcp://127.0.0.1:50051");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid address 'tcp://127.0.0.1:50051'"),
        "{}",
        stderr(&out)
    );
    let out = env.run(&env.path("nonexistent"), &["trust", "remove", ""]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!env.cert_dir().exists(), "nothing was done");
}

/// `authenticate` asks for the passphrase only once the daemon is reached: with the daemon down,
/// nobody types a secret for nothing, and nothing typed ahead is read.
#[test]
fn authenticate_fails_before_prompting_when_the_daemon_is_down() {
    let env = Env::new();
    for args in [&["authenticate"][..], &["auth"]] {
        let out = env.run_with_input(&env.path("nonexistent"), args, b"secret\n");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?} prompted");
        assert!(stderr(&out).starts_with("authenticate failed: cannot connect"));
        assert!(!stderr(&out).contains("secret"));
    }
}

/// A passphrase argument longer than the service takes is refused before connecting: the
/// service would refuse it, or, past 64 KiB, not even decode the request and say only "No request
/// received." (A prompted one is read only once the daemon is reached: see the process tests.)
#[test]
fn an_overlong_passphrase_exits_1_before_connecting() {
    let env = Env::new();
    let socket = env.path("nonexistent");
    let refused = "The passphrase is longer than 1024 bytes, the most the service accepts.\n";
    for length in [1025, 65536] {
        let long = "a".repeat(length);
        let out = env.run(&socket, &["authenticate", &long]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(stderr(&out), refused);
        let out = env.run(&socket, &["set", &format!("local.passphrase={long}")]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "Invalid setting 'local.passphrase': the passphrase is longer than 1024 bytes\n"
        );
    }
    // The longest one goes on to connect.
    let out = env.run(&socket, &["authenticate", &"a".repeat(1024)]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

/// `set` asks for a value only once the daemon said this client may set it: with the daemon
/// down, nobody types anything.
#[test]
fn set_fails_before_prompting_when_the_daemon_is_down() {
    let env = Env::new();
    for args in [&["set", "local.passphrase"][..], &["set", "local.driver"]] {
        let out = env.run_with_input(&env.path("nonexistent"), args, b"same\nsame\n");
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?} prompted");
        assert!(stderr(&out).starts_with("set failed: cannot connect"));
    }
}

/// `get KEY=VALUE` (a `set` typed as `get`) is refused before connecting, and the value, maybe
/// a passphrase, is neither sent nor shown back.
#[test]
fn get_with_a_value_is_refused_without_showing_it() {
    let env = Env::new();
    let out = env.run(
        &env.path("nonexistent"),
        &["get", "local.passphrase=Sup3rSecret"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "get failed: Unrecognized settings key: 'local.passphrase=...'\n`get` takes a key \
         alone; to change a setting: `multipass set KEY`\n"
    );
}

#[test]
fn set_with_a_value_goes_on_to_connect() {
    let env = Env::new();
    let out = env.run(&env.path("nonexistent"), &["set", "local.passphrase=given"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("set failed: cannot connect"));
    assert!(!stderr(&out).contains("given"));
}

#[test]
fn version_without_daemon_prints_the_client_line() {
    let env = Env::new();
    let out = env.run(&env.path("nonexistent"), &["version"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("multipass  {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(stderr(&out), "");

    let out = env.run(&env.path("nonexistent"), &["version", "-v"]);
    assert_eq!(out.status.code(), Some(0));
    // It did not fail, so it does not say so: it says why the daemon's line is missing, after
    // `-v`'s lines on which daemon and client it tried.
    let text = stderr(&out);
    let mut lines = text.lines().skip_while(|l| l.starts_with("[client] "));
    assert!(
        lines
            .next()
            .is_some_and(|l| l.starts_with("cannot get the daemon's version: cannot connect")),
        "{text}"
    );
    assert!(text.starts_with("[client] daemon: unix:"), "{text}");
}

#[test]
fn closed_stdout_is_not_an_error() {
    let env = Env::new();
    let mut child = env
        .command(&env.path("nonexistent"))
        .arg("version")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn help_exits_0() {
    let env = Env::new();
    let out = env.run(&env.path("nonexistent"), &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for needle in ["authenticate", "Exit status:", "MULTIPASS_SERVER_ADDRESS"] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    for sub in ["authenticate", "set", "get", "list", "version"] {
        let out = env.run(&env.path("nonexistent"), &[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub}");
    }
    let out = env.run(&env.path("nonexistent"), &["--version"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn usage_errors_exit_1() {
    let env = Env::new();
    for args in [
        &["bogus"][..],
        &[],
        &["get"],
        &["get", "--keys", "local.passphrase"],
        &["set"],
        &["list", "--format", "xml"],
    ] {
        let out = env.run(&env.path("nonexistent"), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
}

/// A data home where the client certificate directory cannot be made is an unusable client
/// environment: exit 1, as the help's exit statuses say, naming the variables to fix.
#[test]
fn an_unusable_data_home_exits_1() {
    let env = Env::new();
    let file = env.path("a-file");
    std::fs::write(&file, b"").unwrap();
    for (variable, value) in [("XDG_DATA_HOME", Path::new("/dev/null")), ("HOME", &file)] {
        let out = env
            .command(&env.path("nonexistent"))
            .env_remove("XDG_DATA_HOME")
            .env(variable, value)
            .arg("list")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{variable}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.starts_with("list failed: cannot use the client certificate directory")
                && text.contains("Not a directory")
                && text.contains("HOME or XDG_DATA_HOME"),
            "{variable}: {text}"
        );
    }
}

/// A certificate and key that do not make an identity are said to be this client's, not the
/// daemon's root certificate's, with the way to a new client: exit 2, the client failed locally.
#[test]
fn a_broken_client_identity_is_said_to_be_the_clients() {
    let env = Env::new();
    let other = Env::new();
    for e in [&env, &other] {
        e.run(&e.path("nonexistent"), &["list"]);
    }
    let cert = env.cert_dir().join("multipass_cert.pem");
    let key = env.cert_dir().join("multipass_cert_key.pem");
    // Someone is listening and the root certificate file is a certificate: only the client's own
    // files are wrong.
    std::fs::copy(&cert, env.path("root.pem")).unwrap();
    let socket = env.path("listening");
    let _listener = UnixListener::bind(&socket).unwrap();

    let expect = |what: &str, problem: &str| {
        let out = env.run(&socket, &["list"]);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {text}");
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            first.starts_with("list failed: this client's certificate and key cannot be used: ")
                && first.contains(problem),
            "{what}: {text}"
        );
        let advice = lines.collect::<Vec<_>>().join(" ");
        for needed in [
            &format!("mv {}", env.cert_dir().display()),
            "multipass authenticate",
            "multipass trust remove",
        ] {
            assert!(
                advice.contains(needed),
                "{what}: {needed:?} missing: {text}"
            );
        }
        assert!(!text.contains("root certificate"), "{what}: {text}");
    };

    std::fs::copy(other.cert_dir().join("multipass_cert_key.pem"), &key).unwrap();
    expect(
        "another client's key",
        &format!(
            "the key {} is not the key of the certificate {}",
            key.display(),
            cert.display()
        ),
    );
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    expect(
        "a corrupt key",
        &format!("the key {} cannot be used", key.display()),
    );
    std::fs::write(&key, "not a key").unwrap();
    expect(
        "a key file without a key",
        &format!("{} holds no valid private key", key.display()),
    );
    // A certificate without its key: perhaps trusted, and of no use without it.
    std::fs::copy(other.cert_dir().join("multipass_cert.pem"), &cert).unwrap();
    std::fs::remove_file(&key).unwrap();
    expect(
        "a certificate without its key",
        &format!(
            "{} is missing: the certificate is there without it",
            key.display()
        ),
    );
    // A key without its certificate (a first command stopped between the two) was never this
    // client's trusted identity: it is moved aside and a new one made.
    std::fs::copy(other.cert_dir().join("multipass_cert_key.pem"), &key).unwrap();
    std::fs::remove_file(&cert).unwrap();
    let out = env.run(&socket, &["list"]);
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "{} had no certificate (a first command was stopped before it made one): it was \
             moved aside to {}.orphaned-",
            key.display(),
            key.display()
        )),
        "{text}"
    );
    assert!(cert.exists() && key.exists(), "a new identity: {text}");
}

/// An empty answer to `set local.passphrase --admin` suggests clearing it the same way, with
/// --admin: without it, the command would need a trusted client the administrator may not have.
#[test]
fn an_empty_answer_to_set_admin_suggests_clearing_with_admin() {
    let env = Env::new();
    let out = env.run(
        &env.path("nonexistent"),
        &["set", "local.passphrase", "--admin"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "No passphrase given; nothing was changed. To clear the passphrase, run `multipass set \
         local.passphrase= --admin`.\n"
    );
}

#[test]
fn without_the_system_bus_the_admin_path_names_the_direct_command() {
    let env = Env::new();
    let out = env
        .command(&env.path("sock"))
        .args(["authenticate", "--admin"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("cannot reach the system bus"), "{text}");
    let cert = env.cert_dir().join("multipass_cert.pem");
    // Named after this user, not after the administrator who runs it.
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("this user in the user database")
        .name;
    assert!(
        text.contains(&format!(
            "sudo /usr/libexec/multipassd-helper trust-certificate --name {me} < {}",
            cert.display()
        )),
        "{text}"
    );
    // Another user's file is not readable in the administrator's shell: a copy, or a token.
    if !nix::unistd::getuid().is_root() {
        assert!(
            text.contains("another administrator needs a copy"),
            "{text}"
        );
        assert!(text.contains("multipass trust token create"), "{text}");
    }

    let out = env
        .command(&env.path("sock"))
        .args(["set", "local.passphrase", "--admin"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a passphrase\na passphrase\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stderr(&out);
    assert!(
        text.contains("sudo /usr/libexec/multipassd-helper set-passphrase"),
        "{text}"
    );
}
