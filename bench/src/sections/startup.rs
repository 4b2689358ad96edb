//! Item 4: the cold start under socket activation, and the daemon's time to ready.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use trust::DataDir;

use super::{ratio, run_ok, Plan};
use crate::env::{self, Env};
use crate::stats::{fmt_ms, Row, Samples};

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
