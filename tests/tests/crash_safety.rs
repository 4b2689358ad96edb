//! Crash safety. Writers are killed with SIGKILL at random moments during a
//! stream of trust changes; after each kill the store and the settings parse, and every change
//! acknowledged to a client before the kill is there.
//!
//! - `daemon_killed_mid_stream_loses_nothing`: `MPT_CRASH_KILLS` (default 200) cycles of: start
//!   the daemon, set a new passphrase, let clients authenticate (each a trust change) and
//!   re-set the passphrase concurrently, SIGKILL the daemon after a random delay, check the
//!   files as the crash left them.
//! - `helper_killed_mid_write_loses_nothing`: the helper's direct mode (`trust-certificate`,
//!   `set-passphrase`) killed at random moments, either the process that was started or the
//!   writer child it runs as the state directory's owner.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multipass_system_tests::clients::{self, MemoryIdentity};
use multipass_system_tests::{grpc, procfs, Daemon, Group, TestDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn random_below(max: u64) -> u64 {
    let r = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap());
    r % max.max(1)
}

/// Temporary files of interrupted writes in the state directory.
fn temporaries(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [data_dir.to_path_buf(), data_dir.join("authenticated-certs")] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".tmp.") {
                found.push(name);
            }
        }
    }
    found
}

/// The store on disk: every acknowledged certificate is there, and at most one block per kill so
/// far is damaged. An entry is appended in place with one `write`; Linux can end a buffered write
/// between two pages when the writer gets SIGKILL, so a writer killed inside it leaves its own
/// entry cut short, which readers skip (nothing acknowledged: the write never returned). The
/// entries and the damaged blocks.
fn check_store(
    daemon: &Daemon,
    acked: &HashSet<Vec<u8>>,
    kills: usize,
    when: &str,
) -> (usize, usize) {
    let bytes = std::fs::read(daemon.store_path()).unwrap_or_default();
    let bundle = trust::Bundle::parse(&bytes);
    assert!(
        bundle.skipped() <= kills,
        "{when}: {} damaged blocks in the store after {kills} kills",
        bundle.skipped()
    );
    let missing = acked
        .iter()
        .filter(|der| !bundle.contains(&trust::Fingerprint::of(der)))
        .count();
    assert_eq!(
        missing, 0,
        "{when}: {missing} acknowledged certificates missing from the store"
    );
    (bundle.len(), bundle.skipped())
}

/// The settings on disk parse, and the passphrase is one of `candidates`.
fn check_settings(daemon: &Daemon, candidates: &[String], when: &str) {
    let text = std::fs::read_to_string(daemon.conf_path())
        .unwrap_or_else(|e| panic!("{when}: cannot read the settings: {e}"));
    let ini = trust::settings::Ini::parse(&text, &daemon.conf_path())
        .unwrap_or_else(|e| panic!("{when}: the settings do not parse: {e}"));
    let hash = ini
        .passphrase()
        .unwrap_or_else(|e| panic!("{when}: the passphrase value does not parse: {e}"))
        .unwrap_or_else(|| panic!("{when}: the passphrase is gone"));
    assert!(
        candidates.iter().any(|c| hash.verify(c)),
        "{when}: the stored passphrase is none of the {} acknowledged-or-later values",
        candidates.len()
    );
}

fn daemon_killed_mid_stream_loses_nothing() {
    let kills = env_count("MPT_CRASH_KILLS", 200);
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let mut daemon = clients::quiet_daemon(&dir, &admins, &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root_ca = std::fs::read(daemon.root_cert()).unwrap();
    // Root (uid 0, an administrator) is the first client.
    let admin = MemoryIdentity::for_root(&root_ca);
    runtime.block_on(async {
        let channel = grpc::channel(daemon.socket(), admin.config.clone())
            .await
            .expect("connect");
        clients::list(channel).await.expect("first client");
    });
    let mut acked: HashSet<Vec<u8>> = HashSet::from([admin.der.clone()]);
    let (mut trust_acks, mut set_acks, mut temporaries_seen, mut largest, mut damaged) =
        (0, 0, 0, 0, 0);
    let start = Instant::now();

    for cycle in 0..kills {
        if cycle > 0 {
            daemon.start_again();
        }
        let passphrase = format!("crash-pass-{cycle}");
        let socket = daemon.socket().to_path_buf();
        let pid = daemon.pid();
        let delay = Duration::from_millis(random_below(400));
        let (new_acks, sets) = runtime.block_on(async {
            // A settings change, acknowledged before the stream starts.
            let channel = grpc::channel(&socket, admin.config.clone())
                .await
                .expect("connect after restart");
            clients::set(channel, "local.passphrase", &passphrase)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: set the passphrase: {e}"));
            let stop = Arc::new(AtomicBool::new(false));
            let acks = Arc::new(Mutex::new(Vec::new()));
            let sets = Arc::new(AtomicUsize::new(1));
            let mut tasks = Vec::new();
            for _ in 0..6 {
                let (stop, acks, socket, root_ca, passphrase) = (
                    stop.clone(),
                    acks.clone(),
                    socket.clone(),
                    root_ca.clone(),
                    passphrase.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let id = MemoryIdentity::for_root(&root_ca);
                        let Ok(channel) = grpc::channel(&socket, id.config.clone()).await else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        };
                        if clients::authenticate(channel, &passphrase).await.is_ok() {
                            acks.lock().unwrap().push(id.der);
                        }
                    }
                }));
            }
            {
                let (stop, sets, socket, config, passphrase) = (
                    stop.clone(),
                    sets.clone(),
                    socket.clone(),
                    admin.config.clone(),
                    passphrase.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(channel) = grpc::channel(&socket, config.clone()).await else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        };
                        if clients::set(channel, "local.passphrase", &passphrase)
                            .await
                            .is_ok()
                        {
                            sets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            tokio::time::sleep(delay).await;
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL the daemon");
            stop.store(true, Ordering::Relaxed);
            for task in tasks {
                tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .expect("client task stuck after the kill")
                    .expect("client task");
            }
            let acks = std::mem::take(&mut *acks.lock().unwrap());
            (acks, sets.load(Ordering::Relaxed))
        });
        let status = daemon.kill_hard();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "cycle {cycle}: the daemon should have died of SIGKILL, got {status}"
        );
        trust_acks += new_acks.len();
        set_acks += sets;
        acked.extend(new_acks);
        temporaries_seen += temporaries(&daemon.data_dir).len();
        // The files exactly as the crash left them.
        let when = format!("after kill {} ({delay:?} into the stream)", cycle + 1);
        (largest, damaged) = check_store(&daemon, &acked, cycle + 1, &when);
        check_settings(&daemon, std::slice::from_ref(&passphrase), &when);
    }
    let elapsed = start.elapsed();

    // One more start: the daemon serves the survivors, and its next writes clear what
    // interrupted writes left behind.
    daemon.start_again();
    runtime.block_on(async {
        let channel = grpc::channel(daemon.socket(), admin.config.clone())
            .await
            .unwrap();
        clients::set(channel, "local.passphrase", "after-the-crashes")
            .await
            .expect("set after the crashes");
        let id = MemoryIdentity::for_root(&root_ca);
        let channel = grpc::channel(daemon.socket(), id.config.clone())
            .await
            .unwrap();
        clients::authenticate(channel, "after-the-crashes")
            .await
            .expect("authenticate after the crashes");
    });
    // Stopped first: a request's last-seen time is written after its reply, off the request
    // path, and that live write's temporary file is no leftover. A stop waits for it.
    let status = daemon.stop();
    assert!(
        status.success(),
        "multipassd should exit 0 on SIGTERM, got {status}"
    );
    let left = temporaries(&daemon.data_dir);
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    multipass_system_tests::figure(&format!(
        "daemon_killed_mid_stream_loses_nothing: {kills} SIGKILLs in {elapsed:.1?}; {trust_acks} \
         acknowledged trust changes and {set_acks} acknowledged passphrase writes, none lost; \
         store {largest} certificates and {damaged} blocks cut short by a kill; \
         {temporaries_seen} temporary files of interrupted writes seen after kills, all removed \
         by the next write"
    ));
}

/// How one helper run was treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    None,
    Helper,
    Writer,
}

/// Run the helper's direct mode with `stdin`, maybe SIGKILL it or its writer child at a random
/// moment; (exit success, stdout, victim actually killed).
fn run_helper(mut cmd: Command, stdin: &str, victim: Victim) -> (bool, String, Victim) {
    use std::io::{Read, Write};
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn multipassd-helper");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let pid = child.id();
    let killed = match victim {
        Victim::None => Victim::None,
        Victim::Helper => {
            std::thread::sleep(Duration::from_millis(random_below(40)));
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Victim::Helper
        }
        Victim::Writer => {
            let deadline = Instant::now() + Duration::from_secs(5);
            let writer = loop {
                if let Some(&w) = procfs::children(pid).first() {
                    break Some(w);
                }
                if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                    break None;
                }
                std::thread::sleep(Duration::from_micros(200));
            };
            match writer {
                Some(w) => {
                    std::thread::sleep(Duration::from_millis(random_below(25)));
                    let _ = kill(Pid::from_raw(w as i32), Signal::SIGKILL);
                    Victim::Writer
                }
                None => Victim::None,
            }
        }
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let status = child.wait().expect("wait for the helper");
    (status.success(), out, killed)
}

/// Wait until no writer child of the helper for `data_dir` runs any more (a helper killed
/// while its writer runs leaves the writer to finish on its own).
fn wait_for_orphan_writers(data_dir: &Path) {
    let needle = format!("write-as-owner\0--data-dir\0{}", data_dir.display());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = procfs::pids().into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        });
        if !running {
            return;
        }
        assert!(Instant::now() < deadline, "a helper writer keeps running");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn helper_killed_mid_write_loses_nothing() {
    let trust_ops = env_count("MPT_HELPER_TRUST_OPS", 150);
    let passphrase_ops = env_count("MPT_HELPER_PASSPHRASE_OPS", 40);
    let dir = TestDir::new();
    let admins = Group::create_admin();
    let daemon = clients::quiet_daemon(&dir, &admins, &[]);
    let root_ca = std::fs::read(daemon.root_cert()).unwrap();
    let pick = || match random_below(3) {
        0 => Victim::None,
        1 => Victim::Helper,
        _ => Victim::Writer,
    };
    let start = Instant::now();
    let (trust_report, passphrase_report) = std::thread::scope(|scope| {
        let trust = scope.spawn(|| {
            let mut acked = HashSet::new();
            let (mut kills, mut applied_anyway, mut damaged) = (0, 0, 0);
            for i in 0..trust_ops {
                let id = MemoryIdentity::for_root(&root_ca);
                let cmd = clients::helper_command(
                    &daemon,
                    &admins.name,
                    &["trust-certificate", "--name", &format!("h{i}")],
                );
                let (ok, out, killed) = run_helper(cmd, &id.pem, pick());
                let fingerprint = trust::Fingerprint::of(&id.der);
                if ok && killed == Victim::None {
                    assert_eq!(out.trim(), fingerprint.to_hex(), "helper's answer");
                }
                if ok {
                    acked.insert(id.der.clone());
                }
                if killed != Victim::None {
                    kills += 1;
                }
                wait_for_orphan_writers(&daemon.data_dir);
                let _lock =
                    trust::fsutil::DirLock::acquire(&daemon.data_dir.join("authenticated-certs"))
                        .expect("lock the store");
                let bytes = std::fs::read(daemon.store_path()).unwrap_or_default();
                let bundle = trust::Bundle::parse(&bytes);
                if !ok && bundle.contains(&fingerprint) {
                    applied_anyway += 1;
                }
                drop(_lock);
                damaged = check_store(
                    &daemon,
                    &acked,
                    kills,
                    &format!("helper trust op {i} ({killed:?} killed)"),
                )
                .1;
            }
            (acked.len(), kills, applied_anyway, damaged)
        });
        let passphrase = scope.spawn(|| {
            // Every value since the last acknowledged one may be the stored one.
            let mut candidates: Vec<String> = Vec::new();
            let (mut kills, mut acks) = (0, 0);
            for i in 0..passphrase_ops {
                let value = format!("helper-pass-{i}");
                let cmd = clients::helper_command(&daemon, &admins.name, &["set-passphrase"]);
                let (ok, _, killed) = run_helper(cmd, &format!("{value}\n"), pick());
                if killed != Victim::None {
                    kills += 1;
                }
                if ok {
                    acks += 1;
                    candidates.clear();
                }
                candidates.push(value);
                wait_for_orphan_writers(&daemon.data_dir);
                if acks > 0 {
                    let _lock = trust::fsutil::DirLock::acquire(&daemon.data_dir)
                        .expect("lock the state directory");
                    check_settings(
                        &daemon,
                        &candidates,
                        &format!("helper passphrase op {i} ({killed:?} killed)"),
                    );
                }
            }
            (acks, kills)
        });
        (trust.join().unwrap(), passphrase.join().unwrap())
    });
    let elapsed = start.elapsed();
    let (trust_acked, trust_kills, applied_anyway, damaged) = trust_report;
    let (passphrase_acked, passphrase_kills) = passphrase_report;
    assert!(
        trust_kills + passphrase_kills >= (trust_ops + passphrase_ops) / 2,
        "too few kills to mean anything"
    );
    // A last write clears the temporaries of interrupted ones.
    let cmd = clients::helper_command(&daemon, &admins.name, &["set-passphrase"]);
    let (ok, _, _) = run_helper(cmd, "final-pass\n", Victim::None);
    assert!(ok, "a final set-passphrase");
    let left = temporaries(&daemon.data_dir);
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    multipass_system_tests::figure(&format!(
        "helper_killed_mid_write_loses_nothing: {} SIGKILLs ({trust_kills} during \
         trust-certificate, {passphrase_kills} during set-passphrase; helper or its writer) in \
         {elapsed:.1?}; {trust_acked} acknowledged certificates and {passphrase_acked} \
         acknowledged passphrases, none lost; {applied_anyway} killed imports had completed \
         anyway; {damaged} blocks cut short by a kill",
        trust_kills + passphrase_kills
    ));
}

multipass_system_tests::process_tests! {
    root: [daemon_killed_mid_stream_loses_nothing, helper_killed_mid_write_loses_nothing],
}
