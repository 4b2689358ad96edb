//! Item 3: whole client processes against the warm daemon, and where a `multipass list`'s time
//! goes.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use rpc::proto::rpc_client::RpcClient;
use rpc::proto::ListRequest;
use rpc::Address;
use tls::ClientIdentity;
use trust::DataDir;

use super::{current_thread, run_ok, Pair, Plan};
use crate::env::Env;
use crate::stats::{fmt_dur, fmt_ms, Ratios, Row, Samples};

/// Item 3: whole client processes against the warm daemon. `multipass list` and `/bin/true` are
/// launched the same way (spawn, wait for exit) in alternating pairs, so that drift on a shared
/// machine hits both alike; the ratio is the median of the pairs' ratios. Returns the rows and
/// the median of `multipass list` (the floor of the cold start).
pub fn cli(plan: &Plan, env: &Env, pair: &Pair) -> Result<(Vec<Row>, Duration)> {
    let socket = &pair.daemon.socket;
    let launch = || Command::new("/bin/true");
    let list_cmd = || env.cli(socket, &env.data, &["list"]);
    let (mut t, mut list, mut version, mut bare) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut ratios = Ratios::default();
    for i in 0..plan.cli_runs + 3 {
        let (dt, dl) = if i % 2 == 0 {
            let dt = run_ok(launch())?;
            (dt, run_ok(list_cmd())?)
        } else {
            let dl = run_ok(list_cmd())?;
            (run_ok(launch())?, dl)
        };
        let dv = run_ok(env.cli(socket, &env.data, &["version"]))?;
        let db = run_ok(env.cli(socket, &env.data, &["--version"]))?;
        if i >= 3 {
            t.push(dt);
            list.push(dl);
            ratios.push(dl, dt);
            version.push(dv);
            bare.push(db);
        }
    }
    let mut rows = vec![Row::info(
        3,
        "`multipass list`, warm daemon, paired with `/bin/true` (same launch, alternating): ratio",
        format!("{:.2} ({})", ratios.median(), ratios.spread()),
    )
    .floor(format!("{} `/bin/true`", fmt_ms(t.median())))
    .ratio(ratios.median())
    .target("≤ 2× `/bin/true`", ratios.median() <= 2.0)];
    for (name, s) in [("list", &list), ("version", &version)] {
        rows.push(
            Row::info(
                3,
                format!("`multipass {name}`, exec to exit, warm daemon, median (p90)"),
                format!("{} ({})", fmt_ms(s.median()), fmt_ms(s.percentile(90.0))),
            )
            .floor(format!("{} `/bin/true`", fmt_ms(t.median())))
            .ratio(super::ratio(s.median(), t.median()))
            .target("≤ 15 ms", s.median() <= Duration::from_millis(15)),
        );
    }
    rows.extend(breakdown(plan, env, pair, &t, &bare, &list)?);
    Ok((rows, list.median()))
}

/// Where a `multipass list` process's time goes: the launch (`/bin/true`), what the binary costs
/// before it does any work (`multipass --version`: loading, relocation, argument parsing,
/// output, exit), and, timed in this process on the CLI's own code path, reading the client's
/// files and building its TLS configuration, the connection (connect, TLS handshake, HTTP/2)
/// and the `list` RPC. The rest is what none of those measure: the runtime, wake-ups, exit.
fn breakdown(
    plan: &Plan,
    env: &Env,
    pair: &Pair,
    launch: &Samples,
    bare: &Samples,
    list: &Samples,
) -> Result<Vec<Row>> {
    let root_path = DataDir::new(&env.data).root_cert();
    let address = Address::Unix(pair.daemon.socket.clone());
    let (mut files, mut connection, mut rpc) =
        (Samples::default(), Samples::default(), Samples::default());
    current_thread()?.block_on(async {
        for i in 0..plan.cli_runs + 3 {
            let t0 = Instant::now();
            let identity = ClientIdentity::load_or_create(&env.client_dir())?;
            let root = std::fs::read(&root_path)?;
            let config = tls::client_config(&root, &identity)?;
            let t1 = Instant::now();
            let channel = rpc::client::dial(&address).await?.handshake(config).await?;
            let t2 = Instant::now();
            let mut client = RpcClient::new(channel);
            let mut replies = client
                .list(tokio_stream::once(ListRequest::default()))
                .await?
                .into_inner();
            while replies.message().await?.is_some() {}
            let t3 = Instant::now();
            if i >= 3 {
                files.push(t1 - t0);
                connection.push(t2 - t1);
                rpc.push(t3 - t2);
            }
        }
        anyhow::Ok(())
    })?;
    let whole = list.median();
    let share = |d: Duration| format!("{:.0} %", 100.0 * d.as_secs_f64() / whole.as_secs_f64());
    let before_work = bare.median();
    let parts = [
        ("launch (`/bin/true`)", launch.median()),
        (
            "the binary before any work: loading, relocation, argument parsing, exit (`multipass --version` − launch)",
            before_work.saturating_sub(launch.median()),
        ),
        (
            "reading certificate, key and root CA, TLS configuration (in-process)",
            files.median(),
        ),
        (
            "connect, TLS handshake, HTTP/2 (in-process, `rpc::client`)",
            connection.median(),
        ),
        ("the `list` RPC (in-process)", rpc.median()),
    ];
    let accounted: Duration = parts.iter().map(|(_, d)| *d).sum();
    let mut rows: Vec<Row> = parts
        .iter()
        .map(|(name, d)| {
            Row::info(
                3,
                format!("… `multipass list` breakdown: {name}"),
                fmt_dur(*d),
            )
            .floor(format!("{} whole `list`", fmt_ms(whole)))
            .ratio(d.as_secs_f64() / whole.as_secs_f64())
        })
        .collect();
    rows.push(
        Row::info(
            3,
            "… `multipass list` breakdown: the rest (runtime, wake-ups, process exit; whole − the above)",
            format!("{} ({})", fmt_dur(whole.saturating_sub(accounted)), share(whole.saturating_sub(accounted))),
        ),
    );
    Ok(rows)
}
