//! A change the daemon acknowledges is on disk, not only in the page cache: a process killed
//! after the reply loses nothing either way, so what shows it is the system calls themselves.
//! The running daemon is traced (`strace -f -y`: every thread, descriptors shown as paths) while
//! clients make each kind of change, and each change's thread is read back:
//! - a file replaced: the new file's data synced, then renamed over the old, then its directory
//!   synced (first client, passphrase, removal);
//! - an addition appended to the store: its data synced (a client authenticating).
//!
//! That they come before the reply is the code's order (the write returns once synced, and the
//! reply is made after it); the trace shows that they happen, and in which order.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multipass_system_tests::{sha256_hex, Daemon, Fixture};

/// `strace` attached to every thread of the daemon, writing to `log`.
struct Trace {
    child: Child,
    log: std::path::PathBuf,
}

impl Trace {
    fn attach(daemon: &Daemon, log: &Path) -> Trace {
        let attached = log.with_extension("attach");
        let child = Command::new("strace")
            .args(["-f", "-y", "-qq", "-e"])
            .arg("trace=fsync,fdatasync,rename,renameat,renameat2")
            .arg("-o")
            .arg(log)
            .arg("-p")
            .arg(daemon.pid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&attached).expect("strace's messages"))
            .spawn()
            .expect("strace (scripts/deps.sh installs it)");
        let mut trace = Trace {
            child,
            log: log.to_path_buf(),
        };
        // strace writes nothing until its first call; the daemon's threads are attached once
        // /proc says the daemon is traced.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !traced(daemon.pid()) {
            if let Ok(Some(status)) = trace.child.try_wait() {
                panic!(
                    "strace exited with {status}: {}",
                    std::fs::read_to_string(&attached).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "strace did not attach");
            std::thread::sleep(Duration::from_millis(20));
        }
        trace
    }

    /// The calls traced so far, each `(thread, call with its arguments)`; a call that another
    /// thread's line interrupted is taken from its first line (which has the arguments).
    fn calls(&self) -> Vec<(u32, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains(" resumed>"))
            .filter_map(|l| {
                let (tid, call) = l.split_once(' ')?;
                Some((tid.parse().ok()?, call.trim_start().to_string()))
            })
            .collect()
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        // SIGTERM detaches strace from the daemon, which runs on.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Whether a tracer is attached to `pid` (`TracerPid` in its status).
fn traced(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .is_some_and(|v| v.trim() != "0")
}

/// The path of the descriptor a call of `strace -y` names first, as in `fsync(9</a/b>)`.
fn fd_path(call: &str) -> Option<&str> {
    let start = call.find('<')? + 1;
    let end = start + call[start..].find('>')?;
    Some(&call[start..end])
}

/// How many times the trace since `from` replaces `target`, each checked: the thread that
/// renamed a file onto it synced that file before and the directory after.
fn replacements(calls: &[(u32, String)], from: usize, target: &Path) -> usize {
    let target = target.to_str().unwrap();
    let dir = Path::new(target).parent().unwrap().to_str().unwrap();
    let mut seen = 0;
    for (tid, call) in calls.iter().skip(from) {
        if !call.starts_with("rename") || !call.contains(&format!("\"{target}\"")) {
            continue;
        }
        let source = call
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("a rename without a source: {call}"));
        let thread: Vec<&String> = calls
            .iter()
            .filter(|(t, _)| t == tid)
            .map(|(_, c)| c)
            .collect();
        let at = thread.iter().position(|c| *c == call).unwrap();
        let before = thread[..at]
            .iter()
            .rev()
            .find(|c| c.starts_with("fsync") || c.starts_with("fdatasync"));
        assert!(
            before.is_some_and(|c| fd_path(c) == Some(source)),
            "{target} was replaced by {source} with no sync of it first (last sync of that \
             thread: {before:?}); trace from the change:\n{}",
            show(&calls[from..])
        );
        let after = thread[at + 1..].iter().find(|c| c.starts_with("fsync"));
        assert!(
            after.is_some_and(|c| fd_path(c) == Some(dir)),
            "{target}'s directory was not synced after its rename (next sync of that thread: \
             {after:?}); trace from the change:\n{}",
            show(&calls[from..])
        );
        seen += 1;
    }
    seen
}

fn show(calls: &[(u32, String)]) -> String {
    calls
        .iter()
        .map(|(t, c)| format!("  [{t}] {c}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn acknowledged_changes_are_synced() {
    let Fixture(dir, _admins, a, [b], daemon) = Fixture::open();
    let trace = Trace::attach(&daemon, &dir.path().join("daemon.strace"));
    let (store, conf) = (daemon.store_path(), daemon.conf_path());
    // That the calls traced since `from` replace `target` once, each step in its order.
    let replaced_once = |from: usize, target: &Path, what: &str| {
        let calls = trace.calls();
        assert_eq!(
            replacements(&calls, from, target),
            1,
            "{what}:\n{}",
            show(&calls[from..])
        );
    };

    // The first client: the store is made (written whole, then renamed into place).
    let from = trace.calls().len();
    daemon
        .run_as(&a, &["list"], None)
        .assert_code(0, "the first client");
    replaced_once(from, &store, "the store made for the first client");

    // The passphrase: the settings file replaced.
    let from = trace.calls().len();
    daemon
        .run_as(&a, &["set", "local.passphrase"], Some("synced\nsynced\n"))
        .assert_code(0, "set the passphrase");
    replaced_once(from, &conf, "the settings");

    // A client authenticating: its certificate appended to the store, then synced.
    let from = trace.calls().len();
    daemon
        .run_as(&b, &["authenticate"], Some("synced\n"))
        .assert_code(0, "authenticate");
    let calls = trace.calls();
    let store_text = store.to_str().unwrap();
    assert!(
        calls[from..]
            .iter()
            .any(|(_, c)| c.starts_with("fdatasync") && fd_path(c) == Some(store_text)),
        "no sync of the store after an append:\n{}",
        show(&calls[from..])
    );

    // A removal: the store rewritten without the client.
    let from = trace.calls().len();
    let b_prefix = sha256_hex(&b.cert_der())[..16].to_string();
    daemon
        .run_as(&a, &["trust", "remove", &b_prefix], None)
        .assert_code(0, "trust remove");
    replaced_once(from, &store, "the store after a removal");
    multipass_system_tests::figure(&format!(
        "acknowledged_changes_are_synced: {} sync and rename calls traced",
        trace.calls().len()
    ));
}

multipass_system_tests::process_tests! {
    root: [acknowledged_changes_are_synced],
}
