//! The daemon and the helper keep their secrets out of core files and away from same-user
//! introspection (non-dumpable, `LimitCORE=0`), and the daemon started as root with `--user`
//! gives up its capability bounding set before it changes user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multipass_system_tests::{bin, TestDir};

/// `nobody` and `nogroup`, which exist on every Debian system.
const NOBODY: u32 = 65534;

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"))
        .lines()
        .find_map(|l| Some(l.strip_prefix(key)?.strip_prefix(':')?.trim().to_string()))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Owner of `/proc/PID`'s files: the process's uid, or root for a non-dumpable process.
fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/status"))
        .expect("stat /proc/PID/status")
        .uid()
}

/// `args` run as root without CAP_SYS_PTRACE (and so, through exec, with every other one).
fn without_ptrace(args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--inh-caps", "-sys_ptrace", "--bounding-set", "-sys_ptrace"])
        .args(args);
    cmd
}

/// Whether root without CAP_SYS_PTRACE may resolve `/proc/PID/exe`. For a process of root with
/// no more capabilities than that, the one thing that decides it is whether the process is
/// dumpable.
fn introspectable(pid: u32) -> bool {
    without_ptrace(&["readlink", &format!("/proc/{pid}/exe")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("setpriv readlink")
        .success()
}

struct Running(Child);

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        Running(
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Wait until the process has exec'd `exe` (it may start as `setpriv`).
    fn wait_exec(&mut self, exe: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                panic!("{exe} exited early with {status}");
            }
            let cmdline =
                std::fs::read(format!("/proc/{}/cmdline", self.pid())).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            if Path::new(std::str::from_utf8(argv0).unwrap_or_default()).ends_with(exe) {
                return;
            }
            assert!(Instant::now() < deadline, "{exe} never started");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Running {
    /// Wait until the process's main thread is blocked reading its standard input (`read(0,
    /// ...)`, from `/proc/PID/syscall`): past whatever it does first.
    fn wait_reading_stdin(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                panic!("exited early with {status}");
            }
            let syscall = std::fs::read_to_string(format!("/proc/{}/syscall", self.pid()))
                .unwrap_or_default();
            if syscall.starts_with("0 0x0 ") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never came to read its standard input: {syscall:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(dir: &TestDir, extra: &[&str]) -> Running {
    daemon_under(dir, &[], extra)
}

/// [`daemon`], exec'd by the command `wrapper` (`setpriv` and its options) when not empty.
fn daemon_under(dir: &TestDir, wrapper: &[&str], extra: &[&str]) -> Running {
    let data = dir.path().join("data");
    let mut command = match wrapper {
        [] => Command::new(bin("multipassd")),
        [program, options @ ..] => {
            let mut command = Command::new(program);
            command.args(options).arg(bin("multipassd"));
            command
        }
    };
    let mut daemon = Running::spawn(
        command
            .arg("--address")
            .arg(format!("unix:{}", dir.path().join("sock").display()))
            .arg("--data-dir")
            .arg(&data)
            .args(extra),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.join("multipass_root_cert.pem").exists() {
        if let Some(status) = daemon.0.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = daemon.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("multipassd exited {status}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "multipassd never created its state"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

fn daemon_started_as_root_with_a_user_gives_up_the_bounding_set() {
    let dir = TestDir::new();
    let daemon = daemon(&dir, &["--user", "nobody"]);
    let pid = daemon.pid();
    assert!(status_field(pid, "Uid").starts_with(&NOBODY.to_string()));
    assert_eq!(
        status_field(pid, "CapBnd"),
        "0000000000000000",
        "the bounding set of the daemon started with --user"
    );
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status_field(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
}

/// Capabilities handed down through exec (inheritable and ambient, as a careless unit or
/// wrapper could give them) are given up with the rest.
fn daemon_started_with_ambient_capabilities_gives_them_up() {
    let dir = TestDir::new();
    let caps = "+net_bind_service,+sys_ptrace";
    let daemon = daemon_under(
        &dir,
        &["setpriv", "--inh-caps", caps, "--ambient-caps", caps],
        &[],
    );
    let pid = daemon.pid();
    // The control: the same setpriv hands them down to another program.
    let control = Command::new("setpriv")
        .args(["--inh-caps", caps, "--ambient-caps", caps])
        .args(["grep", "^CapAmb:", "/proc/self/status"])
        .output()
        .expect("setpriv");
    let control = String::from_utf8_lossy(&control.stdout);
    assert_eq!(
        control.trim(),
        "CapAmb:\t0000000000080400",
        "setpriv's ambient set"
    );
    assert_eq!(
        status_field(pid, "Uid").split_whitespace().next(),
        Some("0")
    );
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
        assert_eq!(status_field(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
}

fn daemon_and_helper_are_not_dumpable() {
    let dir = TestDir::new();

    // Controls: what an ordinary process of each kind looks like.
    let mut plain = Running::spawn(Command::new("setpriv").args([
        "--reuid",
        "nobody",
        "--regid",
        "nogroup",
        "--clear-groups",
        "sleep",
        "30",
    ]));
    plain.wait_exec("sleep");
    assert_eq!(
        proc_owner(plain.pid()),
        NOBODY,
        "control: /proc/PID of a dumpable process belongs to its user"
    );
    let mut plain_root = Running::spawn(&mut without_ptrace(&["sleep", "30"]));
    plain_root.wait_exec("sleep");
    assert!(
        introspectable(plain_root.pid()),
        "control: a dumpable process of root with the same capabilities can be looked into"
    );

    // The daemon, as another user and as root.
    let as_user = daemon(&dir, &["--user", "nobody"]);
    assert!(status_field(as_user.pid(), "Uid").starts_with(&NOBODY.to_string()));
    assert_eq!(
        proc_owner(as_user.pid()),
        0,
        "/proc/PID of the daemon running as nobody must belong to root (non-dumpable)"
    );
    let root_dir = TestDir::new();
    let as_root = daemon(&root_dir, &[]);
    assert!(
        !introspectable(as_root.pid()),
        "the daemon running as root (without capabilities) is dumpable"
    );

    // The helper's writer child runs as the state directory's owner: it reads its request from
    // standard input, so it waits while we look.
    let helper = bin("multipassd-helper");
    let data = dir.subdir("helper-data");
    let mut writer = Running::spawn(
        Command::new("setpriv")
            .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
            .arg(&helper)
            .arg("write-as-owner")
            .arg("--data-dir")
            .arg(&data),
    );
    writer.wait_exec("multipassd-helper");
    writer.wait_reading_stdin();
    assert!(status_field(writer.pid(), "Uid").starts_with(&NOBODY.to_string()));
    assert_eq!(
        proc_owner(writer.pid()),
        0,
        "/proc/PID of the helper's writer (running as nobody) must belong to root"
    );

    // The helper as root (direct mode, waiting for the passphrase on standard input), with the
    // capabilities of the control above.
    let helper = helper.display().to_string();
    let socket = dir.path().join("sock").display().to_string();
    let data = data.display().to_string();
    let mut direct = Running::spawn(&mut without_ptrace(&[
        &helper,
        "--data-dir",
        &data,
        "--socket",
        &socket,
        "set-passphrase",
    ]));
    direct.wait_exec("multipassd-helper");
    direct.wait_reading_stdin();
    assert!(
        !introspectable(direct.pid()),
        "the helper running as root is dumpable"
    );
}

/// A helper started under a tracer (which a process of the writer's user could attach in the
/// moment between `exec` and the helper making itself non-dumpable) refuses to go on.
// Reaped by `waitpid`, which a tracer must call itself to see the tracee's stops.
#[allow(clippy::zombie_processes)]
fn helper_refuses_to_run_traced() {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bin("multipassd-helper"));
    command
        .arg("--help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start the helper traced");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Let it run past the stop at `exec` and every signal-delivery stop, as a tracer would.
    loop {
        match nix::sys::wait::waitpid(pid, None).expect("wait for the traced helper") {
            nix::sys::wait::WaitStatus::Stopped(_, signal) => {
                let pass = match signal {
                    nix::sys::signal::Signal::SIGTRAP => 0,
                    other => other as libc::c_int,
                };
                // SAFETY: PTRACE_CONT of our own stopped tracee.
                let done = unsafe { libc::ptrace(libc::PTRACE_CONT, pid.as_raw(), 0, pass) };
                assert_eq!(done, 0, "continue the traced helper");
            }
            nix::sys::wait::WaitStatus::Exited(_, code) => {
                // Reaped above already; only its output is read.
                let mut stderr = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
                    .expect("the helper's standard error");
                assert_eq!(code, 1, "a traced helper ran on: {stderr}");
                assert!(
                    stderr.contains("refusing to run under a tracer"),
                    "{stderr}"
                );
                break;
            }
            other => panic!("the traced helper: {other:?}"),
        }
    }
}

fn units_forbid_core_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    for unit in ["multipass.service", "multipassd-helper.service"] {
        let text = std::fs::read_to_string(root.join("systemd").join(unit)).unwrap();
        let service = text
            .split("[Service]")
            .nth(1)
            .unwrap_or_else(|| panic!("{unit} has no [Service] section"));
        let service = service.split("\n[").next().unwrap();
        assert!(
            service.lines().any(|l| l.trim() == "LimitCORE=0"),
            "{unit} must set LimitCORE=0 in [Service]"
        );
    }
}

multipass_system_tests::process_tests! {
    root: [daemon_started_as_root_with_a_user_gives_up_the_bounding_set, daemon_started_with_ambient_capabilities_gives_them_up, daemon_and_helper_are_not_dumpable, helper_refuses_to_run_traced],
    plain: [units_forbid_core_files],
}
