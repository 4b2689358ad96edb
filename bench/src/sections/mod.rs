//! The measurements, one module per measurement. Each returns its rows; a harness error (an RPC
//! refused, a process that fails) is an `Err`, a missed target is only a row saying so. Here: the
//! plan, the two servers side by side, and what several measurements share.

mod cli;
mod connection;
mod memory;
mod passphrase;
mod startup;
mod throughput;
mod trust_scale;

pub use cli::cli;
pub use connection::{latency, new_connection};
pub use memory::memory;
pub use passphrase::{argon2_probe, passphrase};
pub use startup::{cold_start, start_to_ready};
pub use throughput::throughput;
pub use trust_scale::trust_scale;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::Target;
use crate::env::{self, Env, Server};

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
            latency_rounds: 24,
            latency_per_round: 500,
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
