//! The Unix socket's file: binding it so that it appears with its final mode, and the socket
//! policy (restricted root:<admin> 0660 while nobody is trusted, open root:root 0666 afterwards).
//!
//! Changing the socket's owner needs privileges the daemon does not have under systemd; there the
//! privileged helper applies the policy. The daemon tries, and says clearly when it may not.
//! Both change the socket through `trust::access::SocketEntry`: never through a symbolic link,
//! only a socket, only in a directory nobody else can write.

use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use helper_api::HelperError;

pub use trust::access::Access;
use trust::access::{apply_to, AdminPolicy, SocketEntry};

/// Applies [`Access`] to a socket path.
#[derive(Debug, Clone)]
pub struct SocketPolicy {
    path: Option<PathBuf>,
    admin: AdminPolicy,
}

impl SocketPolicy {
    /// Policy for the socket at `path`; `None` (TCP) makes every call a no-op.
    pub fn new(path: Option<PathBuf>, admin: AdminPolicy) -> SocketPolicy {
        SocketPolicy { path, admin }
    }

    /// Give the socket `access`, logging (not failing) when the daemon is not allowed to.
    pub async fn apply(&self, access: Access) {
        let Some(path) = &self.path else { return };
        let direct = match apply_to(path, access, &self.admin) {
            Ok(()) => {
                tracing::info!(socket = %path.display(), ?access, "socket access set");
                return;
            }
            Err(e) => e,
        };
        // Without privileges (under systemd, always): the helper does it, if polkit lets us.
        match ask_helper(access).await {
            Ok(()) => tracing::info!(
                socket = %path.display(),
                ?access,
                "socket access set by multipassd-helper"
            ),
            Err(e) => tracing::warn!(
                socket = %path.display(),
                ?access,
                direct_error = %direct,
                helper_error = %e,
                "cannot change the socket's access, neither directly nor through multipassd-helper; \
                 `multipassd-helper apply-socket-policy` (as root) fixes it"
            ),
        }
    }
}

#[tonic::async_trait]
impl crate::gate::SocketAccess for SocketPolicy {
    /// What the file's mode says: others may connect (open) or not (restricted).
    fn current(&self) -> Option<Access> {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(self.path.as_ref()?).ok()?.permissions().mode();
        Some(if mode & 0o006 == 0o006 {
            Access::Open
        } else {
            Access::Restricted
        })
    }

    async fn set(&self, access: Access) {
        self.apply(access).await
    }
}

/// How long the daemon asks again while the helper is busy (a local user flooding it, say).
const HELPER_PATIENCE: Duration = Duration::from_secs(5);

/// `SetSocketAccess` on the helper, over the system bus, [`patiently`].
async fn ask_helper(access: Access) -> Result<(), HelperError> {
    let connection = zbus::Connection::system().await?;
    let helper = helper_api::proxy(&connection).await?;
    patiently(HELPER_PATIENCE, || {
        helper.set_socket_access(access == Access::Open)
    })
    .await
}

/// Make `call` again, at doubling intervals from 20 ms, while the helper answers that it is
/// busy and `patience` has not run out.
async fn patiently<F: Future<Output = Result<(), HelperError>>>(
    patience: Duration,
    mut call: impl FnMut() -> F,
) -> Result<(), HelperError> {
    let give_up = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(20);
    loop {
        match call().await {
            Err(HelperError::Busy(_)) if tokio::time::Instant::now() + wait < give_up => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            result => return result,
        }
    }
}

/// A listening Unix socket bound under a temporary name next to its final path, already carrying
/// its access; [`Bound::publish`] renames it into place once the daemon is ready to serve, so
/// the socket never exists with the wrong mode and never before the root CA that clients read.
#[derive(Debug)]
pub struct Bound {
    /// The listening socket.
    pub listener: std::os::unix::net::UnixListener,
    temporary: PathBuf,
    path: PathBuf,
}

impl Bound {
    /// Move the socket to its final path.
    pub fn publish(&self) -> io::Result<()> {
        fs::rename(&self.temporary, &self.path)
    }
}

/// Bind a listening Unix socket for `path` with `access` (see [`Bound`]). A stale socket left by
/// a dead daemon is replaced; a live one is an error. The owner and mode are set through
/// [`SocketEntry`], the helper's own checks: a directory that others can write is refused.
pub fn bind(path: &Path, access: Access, admin: &AdminPolicy) -> anyhow::Result<Bound> {
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => anyhow::bail!("another daemon is listening on {}", path.display()),
            Err(_) => fs::remove_file(path)?,
        }
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    remove_stale_bind_sockets(&dir, &name);
    let temporary = dir.join(format!(".{name}.{}.bind", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let listener = std::os::unix::net::UnixListener::bind(&temporary)?;
    let mut entry = match SocketEntry::open(&temporary) {
        Ok(entry) => entry,
        Err(e) => {
            let _ = fs::remove_file(&temporary);
            return Err(e.into());
        }
    };
    // Nobody may connect through the temporary name while its access is being set.
    entry.set_mode(0o600)?;
    if let Err(e) = entry.apply(access, admin) {
        // Without privileges (development): keep it usable by its owner and say so.
        tracing::warn!(
            socket = %path.display(),
            ?access,
            error = %e,
            "cannot give the socket its policy's owner; it stays owned by the daemon's user"
        );
        entry.set_mode(if access == Access::Open { 0o666 } else { 0o660 })?;
    }
    listener.set_nonblocking(true)?;
    Ok(Bound {
        listener,
        temporary,
        path: path.to_path_buf(),
    })
}

/// Remove the temporary sockets (`.NAME.PID.bind`) of daemons killed between binding and
/// publishing, which nothing else would: only sockets, and only of processes that are gone.
fn remove_stale_bind_sockets(dir: &Path, name: &str) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix)?.strip_suffix(".bind"))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone && entry.file_type().is_ok_and(|t| t.is_socket()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn temporary_sockets_of_dead_daemons_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's largest is never alive.
        let dead = dir.path().join(".sock.99999999.bind");
        let alive = dir
            .path()
            .join(format!(".sock.{}.bind", std::process::id()));
        let not_a_socket = dir.path().join(".sock.99999998.bind");
        let _a = std::os::unix::net::UnixListener::bind(&dead).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(&alive).unwrap();
        fs::write(&not_a_socket, "").unwrap();
        remove_stale_bind_sockets(dir.path(), "sock");
        assert!(!dead.exists());
        assert!(alive.exists());
        assert!(not_a_socket.exists());
    }

    fn busy() -> HelperError {
        HelperError::Busy("Too many calls in flight".into())
    }

    #[tokio::test]
    async fn a_busy_helper_is_asked_again() {
        let calls = AtomicUsize::new(0);
        let result = patiently(Duration::from_secs(5), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(busy()),
                _ => Ok(()),
            }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn patience_runs_out_and_other_errors_are_not_retried() {
        let calls = AtomicUsize::new(0);
        let began = std::time::Instant::now();
        let result = patiently(Duration::from_millis(300), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(busy())
        })
        .await;
        assert!(matches!(result, Err(HelperError::Busy(_))), "{result:?}");
        // Waits of 20, 40 and 80 ms fit in 300 ms (fewer on a stalled machine); one of 160 ms
        // would end past it, so the busy answer is given up on rather than waited out.
        assert!((2..=4).contains(&calls.load(Ordering::SeqCst)));
        assert!(began.elapsed() < Duration::from_secs(2));

        let calls = AtomicUsize::new(0);
        let result = patiently(Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(HelperError::NotAuthorized("no".into()))
        })
        .await;
        assert!(matches!(result, Err(HelperError::NotAuthorized(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
