//! The measurements, one function per item of issue #8. Each returns its rows; a harness error
//! (an RPC refused, a process that fails) is an `Err`, a missed target is only a row saying so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::AuthenticateRequest;
use trust::fsutil::FileMode;
use trust::settings::SettingsFile;
use trust::{
    ClientIdentity, DataDir, PassphraseHash, ServerPki, ServerPkiOptions, TrustStore,
    VerifiedClient,
};

use crate::client::{self, Target};
use crate::env::{self, Env, Server};
use crate::stats::{fmt_dur, fmt_mib, fmt_ms, Row, Samples};
use crate::tlsmem;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rounds of sequential pings, alternating daemon and floor.
    pub latency_rounds: usize,
    /// Pings per round and side.
    pub latency_per_round: usize,
    /// New connections per kind.
    pub connections: usize,
    /// Runs of each client command.
    pub cli_runs: usize,
    /// Cold starts under systemd-socket-activate.
    pub cold_runs: usize,
    /// Daemon starts to READY=1, per store size.
    pub start_runs: usize,
    /// Concurrency levels of the throughput test.
    pub concurrency: Vec<usize>,
    /// Rounds per level and side.
    pub throughput_rounds: usize,
    /// Length of one round.
    pub throughput_round: Duration,
    /// Trust store sizes.
    pub store_sizes: Vec<usize>,
    /// Gate checks per size.
    pub gate_checks: usize,
    /// Argon2id verifications timed.
    pub argon2_runs: usize,
}

impl Plan {
    /// The full benchmark (a few minutes on 2 cores).
    pub fn full() -> Plan {
        Plan {
            latency_rounds: 6,
            latency_per_round: 2000,
            connections: 300,
            cli_runs: 100,
            cold_runs: 30,
            start_runs: 20,
            concurrency: vec![1, 8, 64],
            throughput_rounds: 11,
            throughput_round: Duration::from_millis(600),
            store_sizes: vec![10, 1_000, 10_000, 100_000],
            gate_checks: 200_000,
            argon2_runs: 5,
        }
    }

    /// A few iterations of everything: seconds, for CI.
    pub fn smoke() -> Plan {
        Plan {
            latency_rounds: 2,
            latency_per_round: 100,
            connections: 10,
            cli_runs: 5,
            cold_runs: 2,
            start_runs: 2,
            concurrency: vec![1, 8, 64],
            throughput_rounds: 1,
            throughput_round: Duration::from_millis(200),
            store_sizes: vec![10, 1_000],
            gate_checks: 10_000,
            argon2_runs: 1,
        }
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

/// The daemon and the floor server, side by side over the same state.
pub struct Pair {
    /// The real `multipassd`.
    pub daemon: Server,
    /// The plaintext floor.
    pub floor: Server,
    /// How to reach the daemon.
    pub tls: Target,
    /// How to reach the floor.
    pub plain: Target,
    /// Daemon RSS right after READY=1, KiB.
    pub rss_fresh: u64,
}

impl Pair {
    /// Start both.
    pub fn start(env: &Env) -> Result<Pair> {
        let daemon = env::daemon(env, &env.path().join("d.sock"), &env.data, "daemon.log")?;
        let rss_fresh = daemon.rss_kib()?;
        let floor = env::floor(env, &env.path().join("f.sock"), &env.data)?;
        let tls = Target::Tls(daemon.socket.clone(), env.client_tls(&env.data)?);
        let plain = Target::Plain(floor.socket.clone());
        Ok(Pair {
            daemon,
            floor,
            tls,
            plain,
            rss_fresh,
        })
    }
}

fn current_thread() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Item 1: sequential unary RPCs on one established connection.
pub fn latency(plan: &Plan, pair: &Pair) -> Result<Vec<Row>> {
    current_thread()?.block_on(async {
        let mut tls = RpcClient::new(pair.tls.connect().await?);
        let mut plain = RpcClient::new(pair.plain.connect().await?);
        for _ in 0..plan.latency_per_round.min(500) {
            client::ping(&mut tls).await?;
            client::ping(&mut plain).await?;
        }
        let (mut t, mut p) = (Samples::default(), Samples::default());
        for round in 0..plan.latency_rounds {
            // Alternate which side goes first, so drift hits both alike.
            for side in [round % 2, 1 - round % 2] {
                let (client, samples) = if side == 0 {
                    (&mut tls, &mut t)
                } else {
                    (&mut plain, &mut p)
                };
                for _ in 0..plan.latency_per_round {
                    let start = Instant::now();
                    client::ping(client).await?;
                    samples.push(start.elapsed());
                }
            }
        }
        let mut rows = Vec::new();
        for (name, q) in [("p50", 50.0), ("p99", 99.0)] {
            let r = ratio(t.percentile(q), p.percentile(q));
            rows.push(
                Row::info(
                    1,
                    format!("unary RPC (`ping`) on an established connection, {name}"),
                    fmt_dur(t.percentile(q)),
                )
                .floor(format!("{} plaintext", fmt_dur(p.percentile(q))))
                .ratio(r)
                .target("ratio ≤ 1.3", r <= 1.3),
            );
        }
        Ok(rows)
    })
}

/// Item 2: a new connection (connect, full TLS 1.3 handshake, HTTP/2) and its first RPC.
pub fn new_connection(plan: &Plan, env: &Env, pair: &Pair) -> Result<Vec<Row>> {
    let Target::Tls(socket, tls) = &pair.tls else {
        bail!("daemon target is not TLS");
    };
    let (mut total, mut plain) = (Samples::default(), Samples::default());
    let mut phases = Vec::with_capacity(plan.connections);
    current_thread()?.block_on(async {
        for i in 0..plan.connections + 5 {
            let t = Instant::now();
            let mut c = RpcClient::new(pair.tls.connect().await?);
            client::ping(&mut c).await?;
            let d = t.elapsed();
            drop(c);
            let ph = client::phased(socket, tls.clone()).await?;
            let t = Instant::now();
            let mut c = RpcClient::new(pair.plain.connect().await?);
            client::ping(&mut c).await?;
            let dp = t.elapsed();
            if i >= 5 {
                total.push(d);
                phases.push(ph);
                plain.push(dp);
            }
        }
        anyhow::Ok(())
    })?;

    // The handshake's crypto alone: both real configurations, in memory, each side timed.
    let pki = ServerPki::load_or_create(&DataDir::new(&env.data), ServerPkiOptions::default())?;
    let server_config = trust::tls::server_config(trust::tls::ServerCertResolver::new(&pki)?)?;
    let (mut cc, mut sc) = (Samples::default(), Samples::default());
    for i in 0..plan.connections + 5 {
        let (cost, verified) = tlsmem::handshake(&server_config, tls)?;
        ensure!(verified.is_some(), "no client certificate in the handshake");
        if i >= 5 {
            cc.push(cost.client);
            sc.push(cost.server);
        }
    }

    let median_of = |f: fn(&client::Phases) -> Duration| {
        let mut s = Samples::default();
        for p in &phases {
            s.push(f(p));
        }
        s.median()
    };
    let crypto = cc.median() + sc.median();
    let p50 = total.median();
    let rows = vec![
        Row::info(
            2,
            "new connection + first RPC (`rpc::client` dial, TLS 1.3, HTTP/2, `ping`), p50",
            fmt_dur(p50),
        )
        .floor(format!("{} plaintext", fmt_dur(plain.median())))
        .ratio(ratio(p50, plain.median()))
        .target("≤ 2 ms", p50 <= Duration::from_millis(2)),
        Row::info(
            2,
            "new connection + first RPC, p99",
            fmt_dur(total.percentile(99.0)),
        )
        .floor(format!("{} plaintext", fmt_dur(plain.percentile(99.0))))
        .ratio(ratio(total.percentile(99.0), plain.percentile(99.0))),
        Row::info(
            2,
            "… phases (median): connect / TLS handshake / HTTP/2 / first RPC",
            format!(
                "{} / {} / {} / {}",
                fmt_dur(median_of(|p| p.connect)),
                fmt_dur(median_of(|p| p.tls)),
                fmt_dur(median_of(|p| p.http2)),
                fmt_dur(median_of(|p| p.first_rpc)),
            ),
        ),
        Row::info(
            2,
            "… handshake crypto, in memory (client + server CPU, median)",
            format!(
                "{} ({} + {})",
                fmt_dur(crypto),
                fmt_dur(cc.median()),
                fmt_dur(sc.median())
            ),
        )
        .floor(format!("{} whole connection", fmt_dur(p50)))
        .ratio(ratio(crypto, p50)),
        Row::info(
            2,
            "… the rest (I/O, scheduling, HTTP/2, RPC): p50 − crypto",
            fmt_dur(p50.saturating_sub(crypto)),
        ),
    ];
    Ok(rows)
}

/// One timed round of the throughput test.
struct Round {
    /// RPCs per second.
    rate: f64,
    /// CPU time per RPC of the server process and of this (the client's) process.
    server_cpu: Duration,
    client_cpu: Duration,
}

async fn rate(target: &Target, server: u32, conns: usize, round: Duration) -> Result<Round> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(RpcClient::new(target.connect().await?));
    }
    for c in &mut clients {
        client::ping(c).await?;
    }
    let (server0, client0) = (env::cpu_time(Some(server))?, env::cpu_time(None)?);
    let start = Instant::now();
    let deadline = start + round;
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in clients {
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                client::ping(&mut c).await?;
                n += 1;
            }
            anyhow::Ok((n, c))
        });
    }
    let mut total = 0;
    // The connections are dropped after the CPU times are read: closing is not an RPC.
    let mut open = Vec::with_capacity(conns);
    while let Some(done) = tasks.join_next().await {
        let (n, c) = done??;
        total += n;
        open.push(c);
    }
    let elapsed = start.elapsed();
    let (server1, client1) = (env::cpu_time(Some(server))?, env::cpu_time(None)?);
    let per_rpc = |d: Duration| d / (total.max(1) as u32);
    Ok(Round {
        rate: total as f64 / elapsed.as_secs_f64(),
        server_cpu: per_rpc(server1.saturating_sub(server0)),
        client_cpu: per_rpc(client1.saturating_sub(client0)),
    })
}

/// Samples a process's RSS in the background; the maximum seen.
struct RssSampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = env::rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssSampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// Item 5 (and the loaded half of item 7): RPCs per second over N connections, one RPC in
/// flight on each. Returns the rows and the daemon's largest RSS during the largest level.
///
/// The machine's speed drifts from second to second (other work shares the two cores), so each
/// daemon round is paired with the floor round next to it (their order alternates) and the
/// figure of merit is the median of the pairs' ratios; the rates shown are the medians of each
/// side. The CPU time per RPC of the server and the client processes is taken from /proc: it
/// does not depend on how much of the machine the benchmark got, so it says where TLS costs.
pub fn throughput(plan: &Plan, pair: &Pair) -> Result<(Vec<Row>, u64)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut rss_max = 0;
    let largest = plan.concurrency.iter().copied().max().unwrap_or(0);
    for &n in &plan.concurrency {
        let mut pairs = Vec::new();
        for round in 0..plan.throughput_rounds {
            let (mut tls, mut plain) = (None, None);
            for side in [round % 2, 1 - round % 2] {
                let (target, server, slot) = if side == 0 {
                    (&pair.tls, &pair.daemon, &mut tls)
                } else {
                    (&pair.plain, &pair.floor, &mut plain)
                };
                let sampler = (side == 0 && n == largest).then(|| RssSampler::start(server.pid()));
                *slot =
                    Some(runtime.block_on(rate(target, server.pid(), n, plan.throughput_round))?);
                if let Some(s) = sampler {
                    rss_max = rss_max.max(s.finish());
                }
            }
            pairs.push((tls.expect("ran"), plain.expect("ran")));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let r = median(pairs.iter().map(|(t, p)| t.rate / p.rate).collect());
        let t = median(pairs.iter().map(|(t, _)| t.rate).collect());
        let p = median(pairs.iter().map(|(_, p)| p.rate).collect());
        let plural = if n == 1 { "" } else { "s" };
        let mut row = Row::info(
            5,
            format!("throughput, {n} connection{plural} (ratio: median of paired rounds)"),
            format!("{t:.0} RPC/s"),
        )
        .floor(format!("{p:.0} RPC/s plaintext"))
        .ratio(r);
        if n == 64 {
            row = row.target("≥ 0.8 of the floor", r >= 0.8);
        }
        rows.push(row);
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        // Medians of the server's and the client's CPU per RPC over one side's rounds.
        let cpu = |rounds: Vec<&Round>| {
            (
                median(rounds.iter().map(|r| us(r.server_cpu)).collect()),
                median(rounds.iter().map(|r| us(r.client_cpu)).collect()),
            )
        };
        let (ts, tc) = cpu(pairs.iter().map(|(t, _)| t).collect());
        let (ps, pc) = cpu(pairs.iter().map(|(_, p)| p).collect());
        rows.push(
            Row::info(
                5,
                format!("… CPU per RPC at {n} connection{plural}: server + client (median)"),
                format!("{:.1} µs ({ts:.1} + {tc:.1})", ts + tc),
            )
            .floor(format!("{:.1} µs ({ps:.1} + {pc:.1}) plaintext", ps + pc))
            .ratio((ts + tc) / (ps + pc).max(1e-9)),
        );
    }
    Ok((rows, rss_max))
}

fn run_ok(mut cmd: Command) -> Result<Duration> {
    let t = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let d = t.elapsed();
    if !status.success() {
        // Once more with the output, to say why.
        let out = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()?;
        bail!(
            "{cmd:?} failed ({status}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(d)
}

/// Item 3: whole client processes against the warm daemon. Returns the rows and the median of
/// `multipass list` (the floor of the cold start).
pub fn cli(plan: &Plan, env: &Env, pair: &Pair) -> Result<(Vec<Row>, Duration)> {
    let socket = &pair.daemon.socket;
    let (mut t, mut list, mut version) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..plan.cli_runs + 3 {
        let dt = run_ok(Command::new("/bin/true"))?;
        let dl = run_ok(env.cli(socket, &env.data, &["list"]))?;
        let dv = run_ok(env.cli(socket, &env.data, &["version"]))?;
        if i >= 3 {
            t.push(dt);
            list.push(dl);
            version.push(dv);
        }
    }
    let mut rows = Vec::new();
    for (name, s) in [("list", &list), ("version", &version)] {
        rows.push(
            Row::info(
                3,
                format!("`multipass {name}`, exec to exit, warm daemon, median (p90)"),
                format!("{} ({})", fmt_ms(s.median()), fmt_ms(s.percentile(90.0))),
            )
            .floor(format!("{} `/bin/true`", fmt_ms(t.median())))
            .ratio(ratio(s.median(), t.median()))
            .target("≤ 15 ms", s.median() <= Duration::from_millis(15)),
        );
    }
    Ok((rows, list.median()))
}

/// Item 7: the daemon idle, and the helper.
pub fn memory(env: &Env, pair: &Pair, rss_load: u64) -> Result<Vec<Row>> {
    let idle_after = pair.daemon.rss_kib()?;
    let mib = |k: u64| k as f64 / 1024.0;
    let mut rows = vec![
        Row::info(
            7,
            "daemon RSS, idle (fresh, after READY=1)",
            fmt_mib(pair.rss_fresh),
        )
        .target("≤ 15 MiB", mib(pair.rss_fresh) <= 15.0),
        Row::info(
            7,
            "daemon RSS, idle again after the load",
            fmt_mib(idle_after),
        )
        .target("≤ 15 MiB", mib(idle_after) <= 15.0),
        Row::info(
            7,
            "daemon RSS, largest under 64-connection load",
            fmt_mib(rss_load),
        )
        .floor(format!(
            "{} floor server, idle",
            fmt_mib(pair.floor.rss_kib()?)
        )),
    ];
    rows.extend(helper_rss(env)?);
    Ok(rows)
}

/// The helper's RSS, serving `io.multipass.Helper1` on a private bus (a `dbus-daemon` of this
/// run, named to the helper as its system bus): once idle after it took its name, and after
/// answering one call. Without polkit on that bus the call is denied, which is the path every
/// unauthorized caller takes; an authorized call adds only the writer, a separate process.
fn helper_rss(env: &Env) -> Result<Vec<Row>> {
    let helper = env.bins.join("multipassd-helper");
    if !helper.exists() {
        return Ok(vec![Row::info(
            7,
            "helper RSS",
            format!("n/a: no {}", helper.display()),
        )]);
    }
    let address = format!("unix:path={}", env.path().join("bus").display());
    let mut bus = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
        .arg(format!("--address={address}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start dbus-daemon (package dbus)")?;
    // It prints its address once it listens.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(bus.stdout.take().expect("piped")),
        &mut line,
    )?;
    let result = (|| -> Result<Vec<Row>> {
        let mut child = Command::new(&helper)
            .args(["serve", "--idle-timeout", "0", "--data-dir"])
            .arg(&env.data)
            .arg("--socket")
            .arg(env.path().join("helper-bench.sock"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .env("MULTIPASSD_HELPER_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()?;
        let measured = (|| -> Result<(u64, u64)> {
            let has_name = || {
                Command::new("dbus-send")
                    .arg(format!("--bus={address}"))
                    .args([
                        "--print-reply",
                        "--dest=org.freedesktop.DBus",
                        "/org/freedesktop/DBus",
                        "org.freedesktop.DBus.NameHasOwner",
                        "string:io.multipass.Helper1",
                    ])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("true"))
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !has_name() {
                if Instant::now() > deadline {
                    bail!("multipassd-helper did not take its name on the private bus");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(300));
            let idle = env::rss_kib(child.id())?;
            let call = Command::new("dbus-send")
                .arg(format!("--bus={address}"))
                .args([
                    "--print-reply",
                    "--dest=io.multipass.Helper1",
                    "/io/multipass/Helper1",
                    "io.multipass.Helper1.SetSocketAccess",
                    "boolean:true",
                ])
                .output()?;
            // Denied: no polkit answers on this bus.
            if call.status.success() {
                bail!("the helper granted a call on a bus without polkit");
            }
            std::thread::sleep(Duration::from_millis(100));
            Ok((idle, env::rss_kib(child.id())?))
        })();
        let _ = child.kill();
        let _ = child.wait();
        let (idle, after) = measured?;
        Ok(vec![
            Row::info(7, "helper RSS, idle (serving, name taken)", fmt_mib(idle)),
            Row::info(7, "helper RSS, after answering a call", fmt_mib(after)),
        ])
    })();
    let _ = bus.kill();
    let _ = bus.wait();
    result
}

/// Item 4: the first `multipass list` while the daemon is not running, under
/// `systemd-socket-activate`, certificates persisted. `warm` is the same command's median
/// against a running daemon (the floor).
pub fn cold_start(plan: &Plan, env: &Env, warm: Duration) -> Result<Vec<Row>> {
    let socket = env.path().join("cold.sock");
    let mut samples = Samples::default();
    for i in 0..plan.cold_runs + 1 {
        let _ = std::fs::remove_file(&socket);
        let mut activator = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .arg("--fdname=multipass")
            .arg(env.bins.join("multipassd"))
            .arg("--data-dir")
            .arg(&env.data)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("systemd-socket-activate (package systemd) must be installed")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "systemd-socket-activate never listened"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The path exists from bind(2); listen(2) follows at once.
        std::thread::sleep(Duration::from_millis(20));
        let exe = std::fs::read_link(format!("/proc/{}/exe", activator.id()))?;
        ensure!(
            !exe.ends_with("multipassd"),
            "the daemon was running before the client"
        );
        let d = run_ok(env.cli(&socket, &env.data, &["list"]));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(activator.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = activator.wait();
        if i >= 1 {
            samples.push(d?);
        } else {
            d?;
        }
    }
    let m = samples.median();
    Ok(vec![Row::info(
        4,
        "cold start: first `multipass list`, daemon not running (systemd-socket-activate), median (p90)",
        format!("{} ({})", fmt_ms(m), fmt_ms(samples.percentile(90.0))),
    )
    .floor(format!("{} same command, warm daemon", fmt_ms(warm)))
    .ratio(ratio(m, warm))
    .target("≤ 60 ms", m <= Duration::from_millis(60))])
}

/// Item 4, the daemon alone: from exec to `READY=1` (listening, certificates loaded), with 1
/// and 1,000 trusted certificates.
pub fn start_to_ready(plan: &Plan, env: &Env) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let floor = {
        let mut s = Samples::default();
        for _ in 0..plan.start_runs {
            s.push(run_ok(Command::new("/bin/true"))?);
        }
        s.median()
    };
    for trusted in [1usize, 1000] {
        let data = env.path().join(format!("data-start-{trusted}"));
        env::prepare_data_dir(&data)?;
        let text = crate::synth::store_text(trusted - 1, std::slice::from_ref(&env.identity.cert))?;
        std::fs::write(DataDir::new(&data).trust_store(), text)?;
        let socket = env.path().join(format!("start-{trusted}.sock"));
        let mut s = Samples::default();
        for i in 0..plan.start_runs + 1 {
            let daemon = env::daemon(env, &socket, &data, "start.log")?;
            if i >= 1 {
                s.push(daemon.start_to_ready);
            }
            daemon.stop()?;
        }
        rows.push(
            Row::info(
                4,
                format!("daemon exec to READY=1 (listening), {trusted} trusted, median"),
                fmt_ms(s.median()),
            )
            .floor(format!("{} `/bin/true`", fmt_ms(floor))),
        );
    }
    Ok(rows)
}

/// Item 6: the gate's check and the store's load time against the number of trusted
/// certificates.
pub fn trust_scale(plan: &Plan, env: &Env) -> Result<Vec<Row>> {
    let pki = ServerPki::load_or_create(&DataDir::new(&env.data), ServerPkiOptions::default())?;
    let (_, client) = tlsmem::handshake(
        &trust::tls::server_config(trust::tls::ServerCertResolver::new(&pki)?)?,
        &env.client_tls(&env.data)?,
    )?;
    let client: VerifiedClient = client.context("no client certificate")?;
    let fp = client.fingerprint();

    struct Size {
        n: usize,
        file_mb: f64,
        made: Duration,
        load: Samples,
        read: Samples,
        gate: multipassd::gate::Gate,
        bundle: Arc<trust::Bundle>,
        check: Samples,
        lookup: Samples,
    }
    let mut sizes = Vec::new();
    for &n in &plan.store_sizes {
        let dir = env.path().join(format!("scale-{n}"));
        trust::fsutil::ensure_dir(&dir, 0o700)?;
        let path = dir.join("multipass_client_certs.pem");
        let t = Instant::now();
        let text = crate::synth::store_text(
            n.saturating_sub(1),
            std::slice::from_ref(&env.identity.cert),
        )?;
        std::fs::write(&path, &text)?;
        let made = t.elapsed();
        drop(text);

        // Load: a fresh store object parses the whole file; the floor is reading its bytes.
        let reps = if n >= 100_000 { 3 } else { 5 };
        let (mut load, mut read) = (Samples::default(), Samples::default());
        for _ in 0..reps {
            let t = Instant::now();
            let bytes = std::fs::read(&path)?;
            read.push(t.elapsed());
            drop(bytes);
            let store = TrustStore::new(&path, FileMode::PRIVATE);
            let t = Instant::now();
            let bundle = store.current()?;
            load.push(t.elapsed());
            ensure!(
                bundle.len() == n.max(1),
                "store holds {} of {n}",
                bundle.len()
            );
        }
        let store = Arc::new(TrustStore::new(&path, FileMode::PRIVATE));
        let bundle = store.current()?;
        let admin = trust::access::AdminPolicy::new(None);
        let gate = multipassd::gate::Gate::new(multipassd::gate::Parts::in_dir(
            store,
            &trust::DataDir::new(dir),
            std::sync::Arc::new(admin.clone()),
            std::sync::Arc::new(multipassd::socket::SocketPolicy::new(None, admin)),
        ));
        sizes.push(Size {
            n,
            file_mb: std::fs::metadata(&path)?.len() as f64 / 1e6,
            made,
            load,
            read,
            gate,
            bundle,
            check: Samples::default(),
            lookup: Samples::default(),
        });
    }

    // The gate's check as every gated RPC makes it, `Gate::is_trusted` (stat of the file, lock,
    // hash lookup), and the hash lookup alone; batches of every size interleaved, so that drift
    // on a shared machine hits all sizes alike.
    const BATCH: u32 = 1000;
    for _ in 0..(plan.gate_checks / BATCH as usize).max(1) {
        for size in &mut sizes {
            let t = Instant::now();
            for _ in 0..BATCH {
                ensure!(
                    size.gate.is_trusted(std::hint::black_box(&client))?,
                    "not trusted"
                );
            }
            size.check.push(t.elapsed() / BATCH);
            let t = Instant::now();
            for _ in 0..BATCH {
                ensure!(
                    size.bundle.contains(std::hint::black_box(&fp)),
                    "not trusted"
                );
            }
            size.lookup.push(t.elapsed() / BATCH);
        }
    }

    let mut rows = Vec::new();
    let base = sizes[0].check.median();
    for size in &sizes {
        let (check, lookup, n) = (size.check.median(), size.lookup.median(), size.n);
        let flat = ratio(check, base);
        rows.push(
            Row::info(
                6,
                format!("gate check, {n} trusted (stat + lock + lookup; lookup alone)"),
                format!("{} ({})", fmt_dur(check), fmt_dur(lookup)),
            )
            .floor(format!("{} at {}", fmt_dur(base), sizes[0].n))
            .ratio(flat)
            .target("flat (≤ 1.5× the smallest)", flat <= 1.5),
        );
        let mut row = Row::info(
            6,
            format!(
                "store load, {n} trusted ({:.1} MB file, synthesized in {})",
                size.file_mb,
                fmt_ms(size.made)
            ),
            fmt_ms(size.load.median()),
        )
        .floor(format!("{} reading the file", fmt_ms(size.read.median())))
        .ratio(ratio(size.load.median(), size.read.median()));
        if n == 100_000 {
            row = row.target("< 1 s", size.load.median() < Duration::from_secs(1));
        }
        rows.push(row);
    }
    drop(sizes);
    for &n in &plan.store_sizes {
        let _ = std::fs::remove_dir_all(env.path().join(format!("scale-{n}")));
    }
    Ok(rows)
}

/// What `argon2-probe` prints.
#[derive(Debug, Default)]
struct Probe {
    verify_us: Vec<u64>,
    base_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    parallel: usize,
}

/// `multipass-bench argon2-probe`: in a fresh process, `parallel` verifications at once (the
/// daemon's bound), the peak RSS they cause and what stays resident after, then `runs` timed
/// verifications one after another.
pub fn argon2_probe(phc: &str, parallel: usize, runs: usize) -> Result<()> {
    let hash = PassphraseHash::parse(phc)?;
    let me = std::process::id();
    // Reset the peak (VmHWM) to the current RSS (proc(5), clear_refs "5"). Where /proc does not
    // allow it the peak keeps the start-up's, and the figure is only less precise.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base = env::status_kib(me, "VmHWM")?;
    std::thread::scope(|s| {
        for _ in 0..parallel {
            let hash = &hash;
            s.spawn(move || hash.verify("not the passphrase"));
        }
    });
    let peak = env::status_kib(me, "VmHWM")?;
    let after = env::rss_kib(me)?;
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        ensure!(hash.verify("bench passphrase"), "verification failed");
        times.push(t.elapsed().as_micros() as u64);
    }
    println!(
        "parallel={parallel} base_kib={base} peak_kib={peak} after_kib={after} verify_us={}",
        times
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(())
}

fn parse_probe(text: &str) -> Result<Probe> {
    let mut p = Probe::default();
    for field in text.split_whitespace() {
        let (k, v) = field.split_once('=').context("probe output")?;
        match k {
            "parallel" => p.parallel = v.parse()?,
            "base_kib" => p.base_kib = v.parse()?,
            "peak_kib" => p.peak_kib = v.parse()?,
            "after_kib" => p.after_kib = v.parse()?,
            "verify_us" => {
                p.verify_us = v.split(',').map(|x| x.parse()).collect::<Result<_, _>>()?
            }
            _ => {}
        }
    }
    ensure!(!p.verify_us.is_empty(), "probe printed no timings: {text}");
    Ok(p)
}

/// Item 8: Argon2id's cost, measured in a fresh process; and what the daemon keeps resident
/// after a few passphrase checks.
pub fn passphrase(plan: &Plan, env: &Env, pair: &Pair) -> Result<Vec<Row>> {
    let hash = PassphraseHash::new("bench passphrase")?;
    let phc = hash.to_setting();
    let out = Command::new(std::env::current_exe()?)
        .args(["argon2-probe", "--parallel", "2", "--runs"])
        .arg(plan.argon2_runs.to_string())
        .env("MULTIPASS_BENCH_PHC", &phc)
        .output()?;
    ensure!(
        out.status.success(),
        "argon2-probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = parse_probe(&String::from_utf8_lossy(&out.stdout))?;
    let mut times = Samples::default();
    for us in &probe.verify_us {
        times.push(Duration::from_micros(*us));
    }
    let params = phc.split('$').nth(3).unwrap_or("?").to_string();
    let per_hash = probe.peak_kib.saturating_sub(probe.base_kib) / probe.parallel.max(1) as u64;

    // The real daemon: a passphrase set, then wrong attempts from an untrusted client, two at a
    // time (the pool's parallelism), as an attacker would; then its idle RSS.
    let rss_before = pair.daemon.rss_kib()?;
    SettingsFile::new(DataDir::new(&env.data).settings(), FileMode::PRIVATE)
        .update(|ini| ini.set_passphrase(Some(&hash)))?;
    let stranger = ClientIdentity::load_or_create(&env.path().join("stranger"))?;
    let root = std::fs::read(DataDir::new(&env.data).root_cert())?;
    let tls = trust::tls::client_config(&root, &stranger)?;
    let target = Target::Tls(pair.daemon.socket.clone(), tls);
    current_thread()?.block_on(async {
        for _ in 0..2 {
            let (a, b) = tokio::join!(wrong_passphrase(&target), wrong_passphrase(&target));
            a?;
            b?;
        }
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = pair.daemon.rss_kib()?;
    SettingsFile::new(DataDir::new(&env.data).settings(), FileMode::PRIVATE)
        .update(|ini| ini.set_passphrase(None))?;

    let ceiling_kib = per_hash * 2;
    Ok(vec![
        Row::info(8, "Argon2id parameters (argon2 crate defaults)", params),
        Row::info(
            8,
            "one verification (this build), median",
            fmt_ms(times.median()),
        ),
        Row::info(
            8,
            "peak RSS of one verification (2 at once, fresh process, ÷2)",
            fmt_mib(per_hash),
        ),
        Row::info(
            8,
            "memory ceiling of hashing: 2 parallel × peak (64 queued hold no hash memory)",
            fmt_mib(ceiling_kib),
        ),
        Row::info(
            8,
            "… resident after the 2 verifications ended (same probe)",
            fmt_mib(probe.after_kib.saturating_sub(probe.base_kib)),
        ),
        Row::info(
            8,
            "daemon RSS after 4 wrong passphrases, 2 at a time",
            fmt_mib(rss_after),
        )
        .floor(format!("{} before", fmt_mib(rss_before)))
        .target("≤ 15 MiB when idle", rss_after as f64 / 1024.0 <= 15.0),
    ])
}

/// One `authenticate` with a wrong passphrase on a new connection; it must be refused as such.
async fn wrong_passphrase(target: &Target) -> Result<()> {
    let mut c = RpcClient::new(target.connect().await?);
    let answer = c
        .authenticate(tokio_stream::once(AuthenticateRequest {
            passphrase: "wrong".into(),
            verbosity_level: 0,
        }))
        .await;
    match answer {
        Err(s) if s.code() == tonic::Code::InvalidArgument => Ok(()),
        other => bail!("expected 'Passphrase is not correct', got {other:?}"),
    }
}

/// Directory holding `multipassd` and `multipass`: `--bin-dir`, else this program's own.
pub fn bin_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    match given {
        Some(d) => Ok(d),
        None => Ok(std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .context("no directory of the executable")?),
    }
}
