//! Item 8: Argon2id's cost in a fresh process, and what passphrase checks leave resident.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::AuthenticateRequest;
use tls::ClientIdentity;
use trust::fsutil::FileMode;
use trust::settings::SettingsFile;
use trust::{DataDir, PassphraseHash};

use super::{current_thread, Pair, Plan};
use crate::client::Target;
use crate::env::{self, Env};
use crate::stats::{fmt_mib, fmt_ms, Row, Samples};

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
    let tls = tls::client_config(&root, &stranger)?;
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
