//! What /proc says about a process: memory high-water mark, open file descriptors, children,
//! command lines. For the figures of the reliability tests.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status_field_kib(&text, field).unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size now (`VmRSS`), KiB, of a process that may be gone or exiting (a zombie has
/// none): 0 then.
pub fn rss_kib_if_alive(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| status_field_kib(&status, "VmRSS"))
        .unwrap_or(0)
}

/// `work`'s result, and what `sample` said before it began and then every `every` until it
/// ended (also if it panicked): for the most a process held while something was done to it.
pub fn sampled_while<T, S: Send>(
    every: Duration,
    sample: impl Fn() -> S + Sync,
    work: impl FnOnce() -> T,
) -> (T, Vec<S>) {
    /// Tells the sampler to stop when dropped, so that a panicking `work` does not leave it
    /// running and the scope waiting for it.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut samples = vec![sample()];
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(every);
                samples.push(sample());
            }
            samples
        });
        let result = {
            let _done = Done(&done);
            work()
        };
        (result, sampler.join().expect("the sampler"))
    })
}

/// Peak resident set size (`VmHWM`), KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM")
}

/// Resident set size now (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Open file descriptors (entries of /proc/PID/fd).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .count()
}

/// Wait up to `limit` for the descriptor count of `pid` to fall to `at_most`; the last count.
pub fn wait_fd_count(pid: u32, at_most: usize, limit: Duration) -> usize {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let now = fd_count(pid);
        if now <= at_most || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait up to `limit` until no connection accepted on the IPv4 TCP socket `listening` is open
/// on the server's side (`/proc/net/tcp`: none with that local port in a state other than
/// listening or TIME_WAIT); whether that happened.
pub fn wait_tcp_connections_closed(listening: std::net::SocketAddr, limit: Duration) -> bool {
    let port = format!(":{:04X}", listening.port());
    let open = || {
        std::fs::read_to_string("/proc/net/tcp")
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3
                    && fields[1].ends_with(&port)
                    && fields[3] != "0A"
                    && fields[3] != "06"
            })
            .count()
    };
    let deadline = std::time::Instant::now() + limit;
    loop {
        if open() == 0 {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            all.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    all
}

/// Every process's pid.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A background thread that reads `/proc/*/cmdline` and `/proc/*/environ` of every process, as
/// fast as it can, and records each process whose command line or environment holds one of the
/// needles. Secrets must never be in either: any user can read every command line.
pub struct SecretWatch {
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<BTreeSet<String>>>,
    scans: Arc<Mutex<u64>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl SecretWatch {
    /// Start watching for `needles`.
    pub fn start(needles: Vec<String>) -> SecretWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let hits = Arc::new(Mutex::new(BTreeSet::new()));
        let scans = Arc::new(Mutex::new(0));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let thread = {
            let (stop, hits, scans, seen) =
                (stop.clone(), hits.clone(), scans.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for pid in pids() {
                        let dir = format!("/proc/{pid}");
                        let cmdline =
                            std::fs::read(Path::new(&dir).join("cmdline")).unwrap_or_default();
                        let environ =
                            std::fs::read(Path::new(&dir).join("environ")).unwrap_or_default();
                        let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                        if let Some(name) = shown.split_whitespace().next() {
                            let base = name.rsplit('/').next().unwrap_or(name);
                            if base.starts_with("multipass") {
                                seen.lock().unwrap().insert(shown.trim().to_string());
                            }
                        }
                        for needle in &needles {
                            if contains(&cmdline, needle.as_bytes()) {
                                hits.lock()
                                    .unwrap()
                                    .insert(format!("pid {pid} argv: {shown}"));
                            }
                            if contains(&environ, needle.as_bytes()) {
                                hits.lock()
                                    .unwrap()
                                    .insert(format!("pid {pid} environment ({shown})"));
                            }
                        }
                    }
                    *scans.lock().unwrap() += 1;
                }
            })
        };
        SecretWatch {
            stop,
            hits,
            scans,
            seen,
            thread: Some(thread),
        }
    }

    /// Stop; (processes that showed a needle, number of full scans of /proc, distinct command
    /// lines of our programs seen).
    pub fn finish(mut self) -> (Vec<String>, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let hits = self.hits.lock().unwrap().iter().cloned().collect();
        let seen = self.seen.lock().unwrap().iter().cloned().collect();
        let scans = *self.scans.lock().unwrap();
        (hits, scans, seen)
    }
}
