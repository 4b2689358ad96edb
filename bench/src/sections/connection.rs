//! Items 1 and 2: the latency of unary RPCs on one connection, and of a new connection.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use rpc::proto::rpc_client::RpcClient;
use tls::{ServerPki, ServerPkiOptions};
use trust::DataDir;

use super::{current_thread, ratio, Pair, Plan};
use crate::client::{self, Target};
use crate::env::Env;
use crate::stats::{fmt_dur, Ratios, Row, Samples};
use crate::tlsmem;

/// Item 1: sequential unary RPCs on one established connection, in paired rounds: each round
/// times a block on the daemon's connection next to a block on the floor's (which one goes first
/// alternating), and the ratio is the median of the rounds' ratios, printed with its spread. Where
/// the two processes' threads wake up moves the absolute figures from round to round (and run to
/// run) by more than TLS costs, so each round is compared with its own floor.
pub fn latency(plan: &Plan, pair: &Pair) -> Result<Vec<Row>> {
    current_thread()?.block_on(async {
        let mut tls = RpcClient::new(pair.tls.connect().await?);
        let mut plain = RpcClient::new(pair.plain.connect().await?);
        for _ in 0..plan.latency_per_round.min(500) {
            client::ping(&mut tls).await?;
            client::ping(&mut plain).await?;
        }
        let (mut t, mut p) = (Samples::default(), Samples::default());
        let (mut median_ratios, mut tail_ratios) = (Ratios::default(), Ratios::default());
        for round in 0..plan.latency_rounds {
            let (mut round_t, mut round_p) = (Samples::default(), Samples::default());
            // Alternate which side goes first, so drift hits both alike.
            for side in [round % 2, 1 - round % 2] {
                let (client, samples) = if side == 0 {
                    (&mut tls, &mut round_t)
                } else {
                    (&mut plain, &mut round_p)
                };
                for _ in 0..plan.latency_per_round {
                    let start = Instant::now();
                    client::ping(client).await?;
                    samples.push(start.elapsed());
                }
            }
            median_ratios.push(round_t.percentile(50.0), round_p.percentile(50.0));
            tail_ratios.push(round_t.percentile(99.0), round_p.percentile(99.0));
            t.extend(&round_t);
            p.extend(&round_p);
        }
        let mut rows = Vec::new();
        for (name, q, ratios) in [("p50", 50.0, median_ratios), ("p99", 99.0, tail_ratios)] {
            let r = ratios.median();
            rows.push(
                Row::info(
                    1,
                    format!(
                        "unary RPC (`ping`) on an established connection, {name} (ratio: median \
                         of paired rounds)"
                    ),
                    format!(
                        "{} ({}; all samples pooled: {:.2})",
                        fmt_dur(t.percentile(q)),
                        ratios.spread(),
                        ratio(t.percentile(q), p.percentile(q))
                    ),
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
    let mut ratios = Ratios::default();
    let mut phases = Vec::with_capacity(plan.connections);
    current_thread()?.block_on(async {
        for i in 0..plan.connections + 5 {
            // Alternate which side goes first, so drift hits both alike.
            let (d, dp) = if i % 2 == 0 {
                let d = connect_and_ping(&pair.tls).await?;
                (d, connect_and_ping(&pair.plain).await?)
            } else {
                let dp = connect_and_ping(&pair.plain).await?;
                (connect_and_ping(&pair.tls).await?, dp)
            };
            let ph = client::phased(socket, tls.clone()).await?;
            if i >= 5 {
                total.push(d);
                phases.push(ph);
                plain.push(dp);
                ratios.push(d, dp);
            }
        }
        anyhow::Ok(())
    })?;

    // The handshake's crypto alone: both real configurations, in memory, each side timed.
    let pki = ServerPki::load_or_create(&DataDir::new(&env.data), ServerPkiOptions::default())?;
    let server_config = tls::server_config(tls::ServerCertResolver::new(&pki)?)?;
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
            "new connection + first RPC on the CLI's path, paired with plaintext (alternating): ratio",
            format!("{:.2} ({})", ratios.median(), ratios.spread()),
        )
        .floor(format!("{} plaintext", fmt_dur(plain.median())))
        .ratio(ratios.median())
        .target("≤ 1.5× plaintext", ratios.median() <= 1.5),
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

/// Connect (a new connection, as each `multipass` process makes one), then one `ping`.
async fn connect_and_ping(target: &Target) -> Result<Duration> {
    let t = Instant::now();
    let mut c = RpcClient::new(target.connect().await?);
    client::ping(&mut c).await?;
    Ok(t.elapsed())
}
