//! A real D-Bus system bus and a real polkitd for the helper's tests, with our bus policy, polkit
//! actions and rules installed where the Debian package puts them.
//!
//! pkexec and GLib ignore `DBUS_SYSTEM_BUS_ADDRESS` in setuid programs, and polkitd is one per
//! bus, so the tests use *the* system bus at its standard path: started here when no bus runs
//! (no systemd on this machine), reused when one does. Tests that use it run one at a time
//! ([`SystemBus::lock`]), across test processes too, since the helper's name is unique on the bus.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::users::{Group, User};

/// The standard system bus socket.
pub const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
/// The helper's bus name.
pub const HELPER_NAME: &str = helper_api::BUS_NAME;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Exclusive use of the system bus, polkitd and the helper's name for one test.
pub struct SystemBus {
    _lock: Flock<File>,
}

impl SystemBus {
    /// Take the lock, install our files, make sure a bus and polkitd run and that the daemon's
    /// system user exists.
    pub fn lock() -> SystemBus {
        std::fs::create_dir_all("/run/lock").expect("create /run/lock");
        let file = File::create("/run/lock/multipass-helper-tests.lock").expect("lock file");
        let lock = Flock::lock(file, FlockArg::LockExclusive).expect("lock");
        install(
            &repo().join("dbus/io.multipass.Helper1.conf"),
            "/usr/share/dbus-1/system.d/io.multipass.Helper1.conf",
        );
        install(
            &repo().join("polkit/io.multipass.policy"),
            "/usr/share/polkit-1/actions/io.multipass.policy",
        );
        install(
            &repo().join("polkit/io.multipass.rules"),
            "/usr/share/polkit-1/rules.d/io.multipass.rules",
        );
        ensure_daemon_user();
        ensure_bus();
        ensure_polkitd();
        SystemBus { _lock: lock }
    }
}

fn install(from: &Path, to: &str) {
    let text = std::fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&text[..]) {
        std::fs::create_dir_all(Path::new(to).parent().unwrap()).expect("create dir");
        std::fs::write(to, &text).unwrap_or_else(|e| panic!("install {to}: {e}"));
    }
}

/// The `multipassd` system user (the package's sysusers.d entry creates it).
pub fn ensure_daemon_user() {
    if nix::unistd::User::from_name("multipassd")
        .ok()
        .flatten()
        .is_none()
    {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/var/lib/multipassd",
            ])
            .args(["--shell", "/usr/sbin/nologin", "multipassd"])
            .status()
            .expect("useradd");
        assert!(
            status.success()
                || nix::unistd::User::from_name("multipassd")
                    .ok()
                    .flatten()
                    .is_some(),
            "cannot create the multipassd user"
        );
    }
}

fn bus_answers() -> bool {
    Command::new("busctl")
        .args(["--system", "status", "org.freedesktop.DBus"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn ensure_bus() {
    if bus_answers() {
        // Our policy file may be new: have the bus read it.
        let _ = Command::new("busctl")
            .args([
                "--system",
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
            ])
            .args(["org.freedesktop.DBus", "ReloadConfig"])
            .status();
        return;
    }
    std::fs::create_dir_all("/run/dbus").expect("create /run/dbus");
    let _ = std::fs::remove_file(SYSTEM_BUS_SOCKET);
    let status = Command::new("dbus-daemon")
        .args(["--system", "--fork", "--nopidfile"])
        .status()
        .expect("dbus-daemon (package dbus) must be installed");
    assert!(status.success(), "dbus-daemon --system failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bus_answers() {
        assert!(Instant::now() < deadline, "system bus did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// polkitd is bus-activated; a check by root starts it.
fn ensure_polkitd() {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new("pkcheck")
            .args([
                "--action-id",
                helper_api::actions::TRUST_CLIENT,
                "--process",
            ])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "polkitd does not answer (package polkitd must be installed)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A polkit rules file that grants `actions` to members of `group`; removed on drop.
pub struct TestRules {
    path: PathBuf,
}

impl TestRules {
    /// Install the rules and wait until polkitd applies them to `member`.
    pub fn grant(group: &Group, actions: &[&str], member: &User) -> TestRules {
        let path = PathBuf::from(format!("/etc/polkit-1/rules.d/10-{}.rules", group.name));
        let list = actions
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "// Test rules of the multipass helper tests.\n\
             polkit.addRule(function(action, subject) {{\n\
             \x20   if ([{list}].indexOf(action.id) >= 0 && subject.isInGroup({:?})) {{\n\
             \x20       return polkit.Result.YES;\n\
             \x20   }}\n\
             }});\n",
            group.name
        );
        std::fs::create_dir_all("/etc/polkit-1/rules.d").expect("rules dir");
        std::fs::write(&path, text).expect("write rules");
        let rules = TestRules { path };
        // polkitd reloads rules on change, asynchronously: wait until they apply.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !authorized(member, actions[0]) {
            assert!(
                Instant::now() < deadline,
                "polkitd did not pick up the test rules"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        rules
    }
}

impl Drop for TestRules {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What `pkcheck` says about a process of `user` for `action`.
pub fn authorized(user: &User, action: &str) -> bool {
    let mut sleeper = Command::new("setpriv")
        .args([
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
        ])
        .args(["--init-groups", "sleep", "10"])
        .spawn()
        .expect("spawn sleeper");
    // Until `setpriv` has exec'd `sleep`, the process may still be root's, which polkit allows.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read(format!("/proc/{}/cmdline", sleeper.id()))
        .map_or(true, |c| !c.starts_with(b"sleep\0"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "setpriv did not exec sleep as {}",
            user.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let ok = Command::new("pkcheck")
        .args(["--action-id", action, "--process"])
        .arg(sleeper.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    ok
}

/// A running `multipassd-helper serve` for one daemon's socket and data directory.
pub struct Helper {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Helper {
    /// Start it (as root) and wait until it owns its name.
    pub fn start(socket: &Path, data_dir: &Path, admin_group: &str, log_dir: &Path) -> Helper {
        Helper::start_with(socket, data_dir, admin_group, log_dir, &[])
    }

    /// [`Helper::start`] with more options of `serve` (`serve_args`, e.g. `--max-calls 8`).
    pub fn start_with(
        socket: &Path,
        data_dir: &Path,
        admin_group: &str,
        log_dir: &Path,
        serve_args: &[&str],
    ) -> Helper {
        let program = crate::bin("multipassd-helper");
        Helper::start_from(&program, socket, data_dir, admin_group, log_dir, serve_args)
    }

    /// [`Helper::start_with`] the helper's program at `program` (e.g. a copy, to replace).
    pub fn start_from(
        program: &Path,
        socket: &Path,
        data_dir: &Path,
        admin_group: &str,
        log_dir: &Path,
        serve_args: &[&str],
    ) -> Helper {
        wait_name(false);
        let log = log_dir.join("helper.log");
        let file = File::create(&log).expect("helper log");
        let mut command = Command::new(program);
        command
            .arg("--socket")
            .arg(socket)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--admin-group")
            .arg(admin_group)
            .args(["serve", "--idle-timeout", "0"])
            .args(serve_args)
            // Every line it can write, so that a secret in any of them is seen.
            .env("MULTIPASSD_HELPER_LOG", "trace")
            .stdout(Stdio::null())
            .stderr(file);
        // The program may be a copy the test has just written.
        let child = crate::process::spawn_written(&mut command).expect("spawn multipassd-helper");
        let mut helper = Helper { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !name_owned() {
            if let Some(status) = helper.child.try_wait().expect("wait for multipassd-helper") {
                panic!(
                    "multipassd-helper {serve_args:?} exited during start-up with {status}\n\
                     --- log ---\n{}",
                    helper.log()
                );
            }
            assert!(Instant::now() < deadline, "{HELPER_NAME} still not owned");
            std::thread::sleep(Duration::from_millis(20));
        }
        helper
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status once it has exited by itself within `within`, else `None`.
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        crate::process::wait_within(&mut self.child, within)
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_name(false);
    }
}

/// Whether the helper's name has an owner on the bus.
fn name_owned() -> bool {
    let out = Command::new("busctl")
        .args([
            "--system",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
        ])
        .args(["org.freedesktop.DBus", "NameHasOwner", "s", HELPER_NAME])
        .output()
        .expect("busctl");
    String::from_utf8_lossy(&out.stdout).trim() == "b true"
}

fn wait_name(owned: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if name_owned() == owned {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{HELPER_NAME} still {}owned",
            if owned { "not " } else { "" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Call `method` of the helper through its typed proxy (`helper_api::Helper1Proxy`), as `user`
/// (or root with `None`), with `args` of D-Bus `signature`; (success, output). On failure the
/// output is the D-Bus error's name and text.
pub fn call_helper(
    user: Option<&User>,
    method: &str,
    signature: &str,
    args: &[&str],
) -> (bool, String) {
    call_helper_as(user.map(|u| (u.uid, u.gid)), method, signature, args)
}

/// [`call_helper`] as the uid and gid `ids` (with that user's groups), or root with `None`.
pub fn call_helper_as(
    ids: Option<(u32, u32)>,
    method: &str,
    signature: &str,
    args: &[&str],
) -> (bool, String) {
    let out = helper_caller(ids)
        .arg(method)
        .arg(signature)
        .args(args)
        .output()
        .expect("multipass-test-helper-call");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `multipass-test-helper-call`, to be run as the uid and gid `ids` (with that user's groups), or
/// as root with `None`.
fn helper_caller(ids: Option<(u32, u32)>) -> Command {
    let caller = crate::bin("multipass-test-helper-call");
    match ids {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()])
                .arg("--init-groups")
                .arg(&caller);
            c
        }
        None => Command::new(&caller),
    }
}

/// What [`flood_helper`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flood {
    /// Calls made.
    pub calls: u64,
    /// Refused as not authorized (polkit's answer).
    pub denied: u64,
    /// Refused for too many calls in flight, before polkit was asked.
    pub busy: u64,
    /// Anything else.
    pub other: u64,
}

/// As `user`, call `SetPassphrase` for `seconds` on `connections` connections at once, with
/// `in_flight` calls at a time on each.
pub fn flood_helper(user: &User, seconds: u64, connections: usize, in_flight: usize) -> Flood {
    flood_helper_with(user, None, seconds, connections, in_flight)
}

/// [`flood_helper`], each passphrase `bytes` long (`None`: a short one).
pub fn flood_helper_with(
    user: &User,
    bytes: Option<usize>,
    seconds: u64,
    connections: usize,
    in_flight: usize,
) -> Flood {
    let (seconds, in_flight) = (seconds.to_string(), in_flight.to_string());
    let one = || {
        let mut caller = helper_caller(Some((user.uid, user.gid)));
        match bytes {
            Some(bytes) => caller.args(["--flood-bytes", &bytes.to_string(), &seconds, &in_flight]),
            None => caller.args([
                "--flood",
                &seconds,
                &in_flight,
                "SetPassphrase",
                "s",
                "flood",
            ]),
        };
        let out = caller.output().expect("multipass-test-helper-call --flood");
        let text = String::from_utf8_lossy(&out.stdout);
        let numbers: Vec<u64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match (out.status.success(), numbers.as_slice()) {
            (true, [calls, denied, busy, other]) => Flood {
                calls: *calls,
                denied: *denied,
                busy: *busy,
                other: *other,
            },
            _ => panic!(
                "multipass-test-helper-call --flood: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    std::thread::scope(|scope| {
        let floods: Vec<_> = (0..connections).map(|_| scope.spawn(one)).collect();
        floods
            .into_iter()
            .map(|f| f.join().expect("a flooding thread"))
            .fold(Flood::default(), |sum, f| Flood {
                calls: sum.calls + f.calls,
                denied: sum.denied + f.denied,
                busy: sum.busy + f.busy,
                other: sum.other + f.other,
            })
    })
}

/// As `user`, `calls` calls of the helper's `member` (with one string argument), each carrying
/// `descriptors` Unix file descriptors, written on the bus socket by a client of our own
/// (`dbus_descriptors.py`): no D-Bus library attaches descriptors a signature does not name. The
/// kinds of reply (`error NAME` or `return`) with their counts.
pub fn calls_carrying_descriptors(
    user: &User,
    member: &str,
    calls: usize,
    descriptors: usize,
) -> std::collections::BTreeMap<String, usize> {
    let out = user
        .command(Path::new("/usr/bin/python3"), &[])
        .arg("-c")
        .arg(concat!(
            include_str!("dbus_wire.py"),
            include_str!("dbus_descriptors.py")
        ))
        .args([SYSTEM_BUS_SOCKET, HELPER_NAME, helper_api::OBJECT_PATH])
        .args([helper_api::INTERFACE, member])
        .args([calls.to_string(), descriptors.to_string()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dbus_descriptors.py: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter_map(|line| {
            let (kind, count) = line.rsplit_once(' ')?;
            Some((kind.to_string(), count.parse().ok()?))
        })
        .collect()
}

/// One reply to a call of [`RawCalls`].
#[derive(Debug, Clone)]
pub struct RawReply {
    /// How long after the calls were sent it came (as the caller measured it).
    pub after: Duration,
    /// When the test read it.
    pub at: Instant,
    /// `None` for a method return; else the error's name and text, `NAME: TEXT`.
    pub error: Option<String>,
}

impl RawReply {
    /// Whether it is the error `io.multipass.Helper1.Error.<name>`.
    pub fn is_error(&self, name: &str) -> bool {
        self.error.as_deref().is_some_and(|e| {
            e.strip_prefix("io.multipass.Helper1.Error.")
                .and_then(|e| e.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with(':'))
        })
    }
}

/// A process of one user that calls the helper on one bus connection of its own, written on the
/// socket (`dbus_held_calls.py`), as an attacker could: optionally after registering, for its own
/// process, a polkit authentication agent that never answers, and with the message flag
/// ALLOW_INTERACTIVE_AUTHORIZATION or without. polkitd asks that agent about each interactive
/// call (BeginAuthentication) and waits for it. Killed when dropped.
pub struct RawCalls {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// The caller's login name.
    pub user: String,
    /// Calls made.
    pub calls: usize,
    /// When they were all sent (as the test saw it).
    pub sent: Instant,
    /// The calls polkitd made to the agent, by member (`BeginAuthentication`, ...).
    pub asked: Vec<String>,
    /// The replies so far, as they came.
    pub replies: Vec<RawReply>,
    /// Whether the process said it gave up waiting (see [`RawCalls::start`]'s `limit`).
    pub gave_up: bool,
}

impl RawCalls {
    /// As `user`, register a never-answering polkit agent for the process if `agent`; return once
    /// it is ready to call the helper's `member` (with one string argument) `calls` times on one
    /// connection, with ALLOW_INTERACTIVE_AUTHORIZATION if `interactive`, which
    /// [`RawCalls::send`] has it do. The process waits for their replies, at most `limit` after
    /// sending (then exits, which ends its agent).
    pub fn start(
        user: &User,
        member: &str,
        calls: usize,
        agent: bool,
        interactive: bool,
        limit: Duration,
    ) -> RawCalls {
        let python = user.command(Path::new("/usr/bin/python3"), &[]);
        RawCalls::spawn(python, &user.name, member, calls, agent, interactive, limit)
    }

    fn spawn(
        mut python: Command,
        user: &str,
        member: &str,
        calls: usize,
        agent: bool,
        interactive: bool,
        limit: Duration,
    ) -> RawCalls {
        const ALLOW_INTERACTIVE_AUTHORIZATION: u8 = 0x4;
        let flags = if interactive {
            ALLOW_INTERACTIVE_AUTHORIZATION
        } else {
            0
        };
        let mut child = python
            .arg("-c")
            .arg(concat!(
                include_str!("dbus_wire.py"),
                include_str!("dbus_held_calls.py")
            ))
            .args([SYSTEM_BUS_SOCKET, HELPER_NAME, helper_api::OBJECT_PATH])
            .args([helper_api::INTERFACE, member])
            .args([calls.to_string(), flags.to_string()])
            .arg(if agent { "1" } else { "0" })
            .arg(limit.as_secs_f64().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let (send, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut from, into) = (child.stderr.take().expect("stderr"), stderr.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&text);
        });
        let mut raw = RawCalls {
            child,
            lines,
            stderr,
            user: user.to_string(),
            calls,
            sent: Instant::now(),
            asked: Vec::new(),
            replies: Vec::new(),
            gave_up: false,
        };
        raw.expect_until("ready", &["agent registered"]);
        raw
    }

    /// Have it send its calls; return once they are sent.
    pub fn send(&mut self) {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().expect("calls not sent yet");
        stdin.write_all(b"\n").expect("tell the caller to send");
        self.expect_until("sent ", &[]);
        self.sent = Instant::now();
    }

    /// Read its lines until one that starts with `wanted`, any before it being one of `allowed`.
    fn expect_until(&mut self, wanted: &str, allowed: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self.next_line(deadline).unwrap_or_else(|| {
                panic!(
                    "{}: no `{wanted}` line: {}",
                    self.user,
                    self.stderr.lock().unwrap_or_else(|e| e.into_inner())
                )
            });
            if line.starts_with(wanted) {
                return;
            }
            assert!(
                allowed.contains(&line.as_str()),
                "{}: {line}\n{}",
                self.user,
                self.stderr.lock().unwrap_or_else(|e| e.into_inner())
            );
        }
    }

    /// Its next line, read before `deadline`.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.lines.recv_timeout(left).ok()
    }

    /// Read what it says until `done` holds for it or `deadline` passes, or it stops saying
    /// anything; whether `done` held.
    pub fn read_until(&mut self, deadline: Instant, done: impl Fn(&RawCalls) -> bool) -> bool {
        while !done(self) {
            let Some(line) = self.next_line(deadline) else {
                return done(self);
            };
            let at = Instant::now();
            if let Some(member) = line.strip_prefix("asked ") {
                self.asked.push(member.to_string());
            } else if let Some(reply) = line.strip_prefix("reply ") {
                // SERIAL SECONDS (return | error NAME: TEXT)
                let mut words = reply.splitn(3, ' ');
                let (_, after, what) = (words.next(), words.next(), words.next());
                let after = after
                    .and_then(|a| a.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("{}: {line}", self.user));
                self.replies.push(RawReply {
                    after: Duration::from_secs_f64(after),
                    at,
                    error: what
                        .and_then(|w| w.strip_prefix("error "))
                        .map(str::to_string),
                });
            } else if line.starts_with("unanswered ") {
                self.gave_up = true;
            } else {
                panic!("{}: unexpected line {line}", self.user);
            }
        }
        true
    }

    /// The number of `BeginAuthentication` calls polkitd made to the agent.
    pub fn challenges(&self) -> usize {
        self.asked
            .iter()
            .filter(|m| *m == "BeginAuthentication")
            .count()
    }
}

impl Drop for RawCalls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The set-up every helper test shares: the system bus (locked for this test), a scratch
/// directory, the daemon's admin group and an "operators" group that test rules may authorize.
/// Users are made with [`HelperSetup::user`], then [`HelperSetup::serve`] starts the daemon and
/// the helper for its socket. Fields drop in declaration order: the bus lock last.
pub struct HelperSetup {
    /// Where the daemon, the users' homes and the logs live.
    pub dir: crate::TestDir,
    /// The daemon's admin group (who may become the first client).
    pub admins: Group,
    /// A group the test's rules file may authorize (see [`HelperSetup::grant`]).
    pub operators: Group,
    _bus: SystemBus,
}

/// The polkit actions the operators group may be granted.
pub const OPERATOR_ACTIONS: [&str; 2] = [
    helper_api::actions::SET_PASSPHRASE,
    helper_api::actions::TRUST_CLIENT,
];

impl HelperSetup {
    /// Lock the system bus and make the directory and groups (root only: see [`crate::harness`]).
    pub fn new() -> HelperSetup {
        let bus = SystemBus::lock();
        HelperSetup {
            dir: crate::TestDir::new(),
            admins: Group::create_admin(),
            operators: Group::create_admin(),
            _bus: bus,
        }
    }

    /// A user in `groups`.
    pub fn user(&self, groups: &[&Group]) -> User {
        User::create_in(&self.dir, groups)
    }

    /// Authorize the operators group for [`OPERATOR_ACTIONS`] (until dropped); `member` is one of
    /// them, to wait on until polkitd applies the rules.
    pub fn grant(&self, member: &User) -> TestRules {
        TestRules::grant(&self.operators, &OPERATOR_ACTIONS, member)
    }

    /// Start the daemon (as [`crate::Daemon::start`]) and a helper for its socket and data
    /// directory.
    pub fn serve(&self) -> (crate::Daemon, Helper) {
        self.helper_for(crate::Daemon::start(&self.dir, &self.admins))
    }

    /// [`HelperSetup::serve`] with the daemon's `config`.
    pub fn serve_with(&self, config: crate::DaemonConfig) -> (crate::Daemon, Helper) {
        self.helper_for(crate::Daemon::start_with(&self.dir, &self.admins, config))
    }

    /// The start most helper tests share: an administrator `first` and an `operator` the rules
    /// authorize, the daemon and the helper serving, `first` trusted as the first client.
    pub fn serve_first_and_operator(&self) -> Serving {
        let first = self.user(&[&self.admins]);
        let operator = self.user(&[&self.operators]);
        let rules = self.grant(&operator);
        let (daemon, helper) = self.serve();
        daemon
            .run_as(&first, &["list"], None)
            .assert_code(0, "first client");
        Serving {
            daemon,
            helper,
            first,
            operator,
            _rules: rules,
        }
    }

    /// [`HelperSetup::serve_with`], the helper started with more options of `serve`
    /// (`serve_args`, e.g. `--max-calls 8`).
    pub fn serve_with_helper_args(
        &self,
        config: crate::DaemonConfig,
        serve_args: &[&str],
    ) -> (crate::Daemon, Helper) {
        let daemon = crate::Daemon::start_with(&self.dir, &self.admins, config);
        self.helper_with(daemon, serve_args)
    }

    fn helper_for(&self, daemon: crate::Daemon) -> (crate::Daemon, Helper) {
        self.helper_with(daemon, &[])
    }

    fn helper_with(&self, daemon: crate::Daemon, serve_args: &[&str]) -> (crate::Daemon, Helper) {
        let helper = Helper::start_with(
            daemon.socket.as_ref().expect("unix socket"),
            &daemon.data_dir,
            &self.admins.name,
            self.dir.path(),
            serve_args,
        );
        (daemon, helper)
    }
}

impl Default for HelperSetup {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`HelperSetup::serve_first_and_operator`]. Drop it before its [`HelperSetup`].
pub struct Serving {
    /// The daemon.
    pub daemon: crate::Daemon,
    /// The helper serving the daemon's socket and data directory.
    pub helper: Helper,
    /// An administrator, trusted as the first client.
    pub first: User,
    /// A member of the operators group, authorized for [`OPERATOR_ACTIONS`].
    pub operator: User,
    _rules: TestRules,
}
