//! Item 7: the resident memory of the idle daemon and of the helper.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::Pair;
use crate::env::{self, Env};
use crate::stats::{fmt_mib, Row};

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
