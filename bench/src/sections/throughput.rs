//! Item 5: RPCs per second over many connections, paired with the floor server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rpc::proto::rpc_client::RpcClient;

use super::{Pair, Plan};
use crate::client::{self, Target};
use crate::env::{self};
use crate::stats::Row;

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
