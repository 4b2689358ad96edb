//! systemd integration through `libsystemd`: the listening socket handed over by socket
//! activation, readiness and status notifications, the watchdog. Notification failures are
//! logged, never fatal: the daemon serves whether or not systemd hears of it.
//!
//! The socket is taken with `libsystemd::activation` and not `listenfd`: `listenfd` knows sockets
//! by position only (it ignores `LISTEN_FDNAMES`), and the daemon chooses its socket by name when
//! it is passed several (docs/ARCHITECTURE.md, "systemd, the helper and the socket policy").

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context};
use libsystemd::activation::{self, FileDescriptor};
use libsystemd::daemon::{self, NotifyState};
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, UnixAddr,
};

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
    // The environment is left as it is: the daemon starts no process, and changing the
    // environment of a process that may already run threads is not sound.
    let named = activation::receive_descriptors_with_names(false)
        .context("invalid socket activation environment")?;
    // Without LISTEN_FDNAMES the call above finds nothing; the descriptors are still there.
    let fds: Vec<(FileDescriptor, Option<String>)> = if named.is_empty() {
        activation::receive_descriptors(false)
            .context("invalid socket activation environment")?
            .into_iter()
            .map(|fd| (fd, None))
            .collect()
    } else {
        named.into_iter().map(|(fd, n)| (fd, Some(n))).collect()
    };
    let Some(index) = choose(
        &fds.iter().map(|(_, n)| n.as_deref()).collect::<Vec<_>>(),
        name,
    )?
    else {
        return Ok(None);
    };
    let fd = fds.into_iter().nth(index).map(|(fd, _)| fd.into_raw_fd());
    let Some(fd) = fd else {
        return Ok(None);
    };
    // SAFETY: `fd` comes from LISTEN_FDS for this very process (libsystemd checked LISTEN_PID and
    // set it close-on-exec), and nothing else in this process has taken ownership of it: this is
    // the only place that reads the activation environment.
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

/// Which of the passed sockets to serve, given their names (`None`: systemd passed no names):
/// none if none was passed, the only one whatever its name, else the one named `wanted`.
fn choose(names: &[Option<&str>], wanted: &str) -> anyhow::Result<Option<usize>> {
    match names {
        [] => Ok(None),
        [_] => Ok(Some(0)),
        several if several.iter().all(Option::is_some) => {
            match several.iter().position(|n| *n == Some(wanted)) {
                Some(index) => Ok(Some(index)),
                None => bail!(
                    "socket activation passed {} sockets and none named '{wanted}' (names: {})",
                    several.len(),
                    several
                        .iter()
                        .map(|n| n.unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        several => bail!(
            "socket activation passed {} sockets and no names; expected one",
            several.len()
        ),
    }
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
    if let Err(e) = daemon::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// Keep the watchdog fed, if the service manager enabled one.
pub fn spawn_watchdog() {
    if let Some(interval) = daemon::watchdog_enabled(false) {
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

#[cfg(test)]
mod tests {
    use super::choose;

    #[test]
    fn none_passed_means_bind_it_ourselves() {
        assert_eq!(choose(&[], "multipass").unwrap(), None);
    }

    #[test]
    fn a_single_socket_is_served_whatever_its_name() {
        for name in [Some("multipass"), Some("multipass.socket"), Some("x"), None] {
            assert_eq!(choose(&[name], "multipass").unwrap(), Some(0), "{name:?}");
        }
    }

    #[test]
    fn among_several_the_name_chooses() {
        let names = [Some("metrics"), Some("multipass"), Some("other")];
        assert_eq!(choose(&names, "multipass").unwrap(), Some(1));
        assert_eq!(choose(&names, "other").unwrap(), Some(2));
    }

    #[test]
    fn several_without_the_name_or_without_names_are_refused() {
        let error = choose(&[Some("a"), Some("b")], "multipass").unwrap_err();
        assert_eq!(
            error.to_string(),
            "socket activation passed 2 sockets and none named 'multipass' (names: a, b)"
        );
        let error = choose(&[None, None], "multipass").unwrap_err();
        assert_eq!(
            error.to_string(),
            "socket activation passed 2 sockets and no names; expected one"
        );
    }
}
