//! Item 3: whole client processes against the warm daemon.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::{ratio, run_ok, Pair, Plan};
use crate::env::Env;
use crate::stats::{fmt_ms, Row, Samples};

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
