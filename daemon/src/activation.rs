//! systemd integration: the listening socket handed over by socket activation, and readiness
//! notifications. Notification failures are logged, never fatal (zincati's habit).

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::{bail, Context};
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, UnixAddr,
};
use sd_notify::NotifyState;

/// A listening socket received from the service manager.
#[derive(Debug)]
pub struct Inherited {
    /// The socket.
    pub listener: std::os::unix::net::UnixListener,
    /// The path it is bound to, if it has one.
    pub path: Option<PathBuf>,
}

/// The listening socket passed with `LISTEN_FDS`, if any. A single socket is served whatever
/// its name: `multipass` in our socket unit, the unit's own name (`multipass.socket`) in a unit
/// without `FileDescriptorName=`, whatever a `systemd-socket-activate` user typed. The name only
/// chooses among several sockets. The fd must be a listening Unix stream socket.
pub fn inherited_socket(name: &str) -> anyhow::Result<Option<Inherited>> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .context("invalid socket activation environment")?
        .collect();
    let named = std::env::var_os("LISTEN_FDNAMES").is_some();
    let fd = match fds.as_slice() {
        [] => return Ok(None),
        [(fd, _)] => *fd,
        several if named => match several.iter().find(|(_, n)| n == name) {
            Some((fd, _)) => *fd,
            None => bail!(
                "socket activation passed {} sockets and none named '{name}' (names: {})",
                several.len(),
                several
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        several => bail!(
            "socket activation passed {} sockets and no names; expected one",
            several.len()
        ),
    };
    // SAFETY: `fd` comes from LISTEN_FDS for this very process (sd_notify checked LISTEN_PID),
    // was set close-on-exec by sd_notify, and nothing else in this process has taken ownership of
    // it: this is the only place that reads the activation environment.
    #[allow(unsafe_code)]
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    check_unix_stream_listener(&owned)?;
    let path = getsockname::<UnixAddr>(std::os::fd::AsRawFd::as_raw_fd(&owned))
        .ok()
        .and_then(|addr| addr.path().map(PathBuf::from));
    let listener = std::os::unix::net::UnixListener::from(owned);
    listener.set_nonblocking(true)?;
    Ok(Some(Inherited { listener, path }))
}

fn check_unix_stream_listener(fd: &OwnedFd) -> anyhow::Result<()> {
    let kind = getsockopt(fd, sockopt::SockType).context("the inherited fd is not a socket")?;
    if kind != SockType::Stream {
        bail!("the inherited socket is not a stream socket ({kind:?})");
    }
    if !getsockopt(fd, sockopt::AcceptConn).unwrap_or(false) {
        bail!("the inherited socket is not listening");
    }
    let addr = getsockname::<UnixAddr>(std::os::fd::AsRawFd::as_raw_fd(fd));
    match addr {
        Ok(a) if a.family() == Some(AddressFamily::Unix) => Ok(()),
        _ => bail!("the inherited socket is not a Unix socket"),
    }
}

/// Tell the service manager something; a failure is logged and otherwise ignored.
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Keep the watchdog fed, if the service manager enabled one.
pub fn spawn_watchdog() {
    if let Some(interval) = sd_notify::watchdog_enabled() {
        tracing::debug!(?interval, "watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            loop {
                tick.tick().await;
                notify(&[NotifyState::Watchdog]);
            }
        });
    }
}
