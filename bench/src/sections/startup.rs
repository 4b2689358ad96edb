//! Item 4: the cold start under socket activation, and the daemon's time to ready.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use trust::DataDir;

use super::{ratio, run_ok, Plan};
use crate::env::{self, Env};
use crate::stats::{fmt_ms, Ratios, Row, Samples};

/// Item 4: the first `multipass list` while the daemon is not running, under
/// `systemd-socket-activate`, certificates persisted. `warm` is the same command's median
/// against a running daemon (item 3). With 1,000 trusted clients, each cold command is paired
/// with the same command run against the daemon it started, once that daemon said `READY=1`.
pub fn cold_start(plan: &Plan, env: &Env, warm: Duration) -> Result<Vec<Row>> {
    let (one, _, _) = cold_rounds(plan, env, &env.data, "cold.sock")?;
    let m = one.median();
    let mut rows = vec![Row::info(
        4,
        "cold start: first `multipass list`, daemon not running (systemd-socket-activate), median (p90)",
        format!("{} ({})", fmt_ms(m), fmt_ms(one.percentile(90.0))),
    )
    .floor(format!("{} same command, warm daemon", fmt_ms(warm)))
    .ratio(ratio(m, warm))
    .target("≤ 60 ms", m <= Duration::from_millis(60))];

    let data = env.path().join("data-cold-1000");
    env::prepare_data_dir(&data)?;
    let text = crate::synth::store_text(999, std::slice::from_ref(&env.identity.cert))?;
    std::fs::write(DataDir::new(&data).trust_store(), text)?;
    let (cold, warm_after, ratios) = cold_rounds(plan, env, &data, "cold1000.sock")?;
    rows.push(
        Row::info(
            4,
            "cold start, 1,000 trusted, paired with the same command once the daemon is ready (warm): ratio",
            format!(
                "{:.2} ({}; cold {} median)",
                ratios.median(),
                ratios.spread(),
                fmt_ms(cold.median())
            ),
        )
        .floor(format!("{} warm", fmt_ms(warm_after.median())))
        .ratio(ratios.median())
        .target("≤ 2× warm", ratios.median() <= 2.0),
    );
    Ok(rows)
}

/// Cold starts against `data`: each round starts `systemd-socket-activate` on a fresh socket,
/// runs `multipass list` (which starts the daemon), waits for the daemon's `READY=1`, runs the
/// command again (warm), and stops both.
fn cold_rounds(
    plan: &Plan,
    env: &Env,
    data: &std::path::Path,
    socket_name: &str,
) -> Result<(Samples, Samples, Ratios)> {
    let socket = env.path().join(socket_name);
    let (mut cold, mut warm, mut ratios) =
        (Samples::default(), Samples::default(), Ratios::default());
    // The warm command runs once the daemon has finished starting (READY=1): a large store is
    // read after the first connection has been served, and a command run beside that read would
    // not be a warm one.
    let notify_path = env.path().join(format!("{socket_name}.notify"));
    for i in 0..plan.cold_runs + 1 {
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&notify_path);
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut activator = Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&socket)
            .arg("--fdname=multipass")
            .arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
            .arg(env.bins.join("multipassd"))
            .arg("--data-dir")
            .arg(data)
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
        let first = run_ok(env.cli(&socket, data, &["list"])).and_then(|first| {
            env::wait_for_ready(&notify).context("no READY=1 after the first command")?;
            Ok(first)
        });
        let second = first
            .as_ref()
            .ok()
            .map(|_| run_ok(env.cli(&socket, data, &["list"])));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(activator.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = activator.wait();
        let (first, second) = (first?, second.expect("set when the first ran")?);
        if i >= 1 {
            cold.push(first);
            warm.push(second);
            ratios.push(first, second);
        }
    }
    Ok((cold, warm, ratios))
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
