//! `multipass-bench`: the performance figures of docs/PERFORMANCE.md, each printed with a floor
//! measured in the same run (absolute times on shared machines drift; ratios much less). Run it
//! through `scripts/bench.sh` (release build) or `scripts/bench.sh --smoke` (seconds, any build;
//! checks that the harness works and never fails on a missed target).
//!
//! It starts the real `multipassd` from the directory it lives in (or `--bin-dir`), a plaintext
//! floor server made of the daemon's own service (`floor-server`, this binary), and real
//! `multipass` processes. Neither root nor the first-client rule is needed: the client's
//! certificate is put into the trust store before the daemon starts.

mod client;
mod env;
mod floor;
mod sections;
mod stats;
mod synth;
mod tlsmem;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::sections::Plan;
use crate::stats::Row;

/// Benchmarks of the multipass service against floors measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "multipass-bench")]
struct Cli {
    /// Few iterations and small sizes: checks the harness in seconds; the figures mean little.
    #[arg(long)]
    smoke: bool,

    /// Directory holding `multipassd` and `multipass` [default: this program's directory].
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// Only these parts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Part>,

    #[command(subcommand)]
    internal: Option<Internal>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// 1: unary RPC latency.
    Latency,
    /// 2: new connection.
    Connect,
    /// 3: client processes.
    Cli,
    /// 4: cold start and daemon start-up.
    Cold,
    /// 5 and 7: throughput and memory.
    Throughput,
    /// 6: trust store scale.
    Scale,
    /// 8: passphrase hashing.
    Passphrase,
}

#[derive(Debug, Subcommand)]
enum Internal {
    /// The plaintext floor server (started by the bench itself).
    #[command(hide = true)]
    FloorServer {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        client_dir: PathBuf,
    },
    /// Argon2id cost in a fresh process (started by the bench itself); the hash comes in
    /// `$MULTIPASS_BENCH_PHC`.
    #[command(hide = true)]
    Argon2Probe {
        #[arg(long)]
        parallel: usize,
        #[arg(long)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.internal {
        Some(Internal::FloorServer {
            socket,
            data_dir,
            client_dir,
        }) => floor::run(socket, data_dir, client_dir),
        Some(Internal::Argon2Probe { parallel, runs }) => std::env::var("MULTIPASS_BENCH_PHC")
            .context("MULTIPASS_BENCH_PHC not set")
            .and_then(|phc| sections::argon2_probe(&phc, parallel, runs)),
        None => bench(cli.smoke, cli.bin_dir, &cli.only),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("multipass-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(smoke: bool, bin_dir: Option<PathBuf>, only: &[Part]) -> Result<()> {
    let started = Instant::now();
    let plan = if smoke { Plan::smoke() } else { Plan::full() };
    let want = |p: Part| only.is_empty() || only.contains(&p);
    let bins = sections::bin_dir(bin_dir)?;
    eprintln!(
        "multipass-bench: {} run, binaries from {}",
        if smoke { "smoke" } else { "full" },
        bins.display()
    );
    let load_before = loadavg();
    let env = env::Env::new(bins)?;
    let mut rows: Vec<Row> = Vec::new();
    let step = |name: &str| eprintln!("  [{:5.1} s] {name}", started.elapsed().as_secs_f64());

    let needs_pair = [
        Part::Latency,
        Part::Connect,
        Part::Throughput,
        Part::Cli,
        Part::Cold,
        Part::Passphrase,
    ]
    .into_iter()
    .any(want);
    let mut warm_list = None;
    if needs_pair {
        let pair = sections::Pair::start(&env)?;
        if want(Part::Latency) {
            step("1 unary RPC latency");
            rows.extend(sections::latency(&plan, &pair)?);
        }
        if want(Part::Connect) {
            step("2 new connection");
            rows.extend(sections::new_connection(&plan, &env, &pair)?);
        }
        if want(Part::Throughput) {
            step("5 throughput (and 7 memory under load)");
            let (r, rss_load) = sections::throughput(&plan, &pair)?;
            rows.extend(r);
            std::thread::sleep(std::time::Duration::from_millis(300));
            rows.extend(sections::memory(&env, &pair, rss_load)?);
        }
        if want(Part::Cli) || want(Part::Cold) {
            step("3 client processes");
            let (r, warm) = sections::cli(&plan, &env, &pair)?;
            if want(Part::Cli) {
                rows.extend(r);
            }
            warm_list = Some(warm);
        }
        if want(Part::Passphrase) {
            step("8 passphrase cost");
            rows.extend(sections::passphrase(&plan, &env, &pair)?);
        }
        pair.daemon.stop()?;
        pair.floor.stop()?;
    }
    if want(Part::Cold) {
        step("4 cold start");
        if let Some(warm) = warm_list {
            rows.extend(sections::cold_start(&plan, &env, warm)?);
        }
        rows.extend(sections::start_to_ready(&plan, &env)?);
    }
    if want(Part::Scale) {
        step("6 scale of trust");
        rows.extend(sections::trust_scale(&plan, &env)?);
    }
    rows.sort_by_key(|r| r.item);
    step("done");
    println!();
    println!("{}", machine());
    println!(
        "load average (1 min) at start {load_before}, at end {}",
        loadavg()
    );
    println!();
    stats::print_table(&rows);
    let missed = rows.iter().filter(|r| r.met == Some(false)).count();
    println!();
    println!(
        "{} targets met, {missed} missed ({} run, {:.0} s)",
        rows.iter().filter(|r| r.met == Some(true)).count(),
        if smoke { "smoke" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    if smoke {
        println!(
            "smoke run: few iterations, any build; it checks that the harness works and does not \
             judge the targets (use scripts/bench.sh for figures)"
        );
    }
    Ok(())
}

/// The 1-minute load average: other work competing for the cores during the run.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// CPU, cores, memory and kernel, for the record.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("machine: {cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {kernel}")
}
