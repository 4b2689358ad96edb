//! Keeping the server certificate the daemon presents in step with the clock and with the files.
//!
//! At start `ServerPki::load_or_create` replaces what is missing, damaged, inconsistent, not yet
//! valid or close to expiry. A daemon that runs for months, or through a change under it, needs
//! the same without a restart: its certificate enters its renewal margin; the clock is set back
//! before the certificate's start (a clock that ran ahead, corrected), which no client accepts;
//! or the files change on disk (the root CA deleted, or restored from a backup), so that clients
//! verify against a root CA the daemon no longer presents a certificate of. Any of these kept
//! every client out, root's too, until someone restarted the daemon.
//!
//! So [`Watch::check`] looks at the clock before every handshake takes the chain, and at the
//! clock and the files every [`FILES_EVERY`] on a timer (a client that finds the root CA missing
//! waits for it without making a handshake). When something is out of step it
//! runs `load_or_create` again (which keeps the root CA whenever it is usable, so clients that
//! read it notice nothing) and swaps the result into the TLS configuration's
//! [`ServerCertResolver`], before the handshake that noticed presents anything. Connections
//! already open keep going.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration as StdDuration, Instant};

use time::OffsetDateTime;
use tls::{ServerCertResolver, ServerPki, ServerPkiOptions};
use trust::{DataDir, Fingerprint};

/// How often the files are looked at (four `stat`s), on a timer: a handshake does not look, to
/// cost nothing more. A client waits up to 2 s for a missing root CA to appear, so one deleted
/// while the daemon runs is made again before it gives up.
const FILES_EVERY: StdDuration = StdDuration::from_secs(1);
/// Pause before trying again after a failed reload: each failure is a warning.
const RETRY_AFTER_FAILURE: StdDuration = StdDuration::from_secs(60);

/// What identifies one version of a file, cheaply: device, inode, size, modification and change
/// times. `None`: missing or unreadable.
type FileKey = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn file_key(path: &PathBuf) -> FileKey {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// What the presented chain was made of, and when it is good.
struct Served {
    files: Vec<FileKey>,
    /// The certificate's start, and when it enters its renewal margin.
    valid_from: OffsetDateTime,
    due: OffsetDateTime,
    /// No reload before this, after one failed.
    retry_at: Option<Instant>,
}

/// Keeps `resolver` presenting a chain that clients accept (the module's comment).
pub struct Watch {
    dir: DataDir,
    opts: ServerPkiOptions,
    resolver: Weak<ServerCertResolver>,
    served: Mutex<Served>,
}

/// Why a chain is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Due,
    BeforeStart,
    FilesChanged,
}

impl Watch {
    fn paths(dir: &DataDir) -> [PathBuf; 4] {
        [
            dir.root_cert(),
            dir.root_key(),
            dir.server_cert(),
            dir.server_key(),
        ]
    }

    fn served(dir: &DataDir, opts: ServerPkiOptions, pki: &ServerPki) -> Served {
        Served {
            files: Watch::paths(dir).iter().map(file_key).collect(),
            valid_from: pki.not_before,
            due: pki.not_after - opts.renew_before,
            retry_at: None,
        }
    }

    /// Replace the chain if the clock, or with `files` the files, say it is out of step.
    pub fn check(&self, files: bool) {
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let now = OffsetDateTime::now_utc();
        let reason = if now < served.valid_from {
            Some(Reason::BeforeStart)
        } else if now >= served.due {
            Some(Reason::Due)
        } else if files {
            let keys: Vec<FileKey> = Watch::paths(&self.dir).iter().map(file_key).collect();
            (keys != served.files).then_some(Reason::FilesChanged)
        } else {
            None
        };
        let Some(reason) = reason else { return };
        if served.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let Some(resolver) = self.resolver.upgrade() else {
            return;
        };
        // On the thread of the check, under the lock: the handshake that noticed waits the few
        // milliseconds of a new key and certificate, and then presents them, and other checks
        // meanwhile wait and find everything in step.
        let old = resolver.fingerprint();
        match ServerPki::load_or_create(&self.dir, self.opts)
            .map_err(anyhow::Error::new)
            .and_then(|pki| {
                resolver.replace(&pki).map_err(anyhow::Error::new)?;
                Ok(pki)
            }) {
            Ok(pki) => {
                *served = Watch::served(&self.dir, self.opts, &pki);
                announce(reason, old, &pki);
            }
            Err(e) => {
                served.retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?RETRY_AFTER_FAILURE,
                    why = reason.words(),
                    "cannot load or make the server certificate again; the current one stays in use"
                );
            }
        }
    }
}

/// Say that the chain `old` was replaced by `pki`'s, and why; nothing if the files were touched,
/// not changed (the same chain).
fn announce(reason: Reason, old: Fingerprint, pki: &ServerPki) {
    let new = Fingerprint::of(&pki.chain[0]);
    if old == new {
        return;
    }
    if reason != Reason::Due {
        tracing::warn!(
            why = reason.words(),
            "the server certificate was out of step; presenting the one the files hold now"
        );
    }
    trust::audit::AuditEvent::ServerCertificateRenewed {
        old,
        new,
        not_after: &pki.not_after.to_string(),
    }
    .emit();
}

impl Reason {
    fn words(self) -> &'static str {
        match self {
            Reason::Due => "the certificate enters its renewal margin",
            Reason::BeforeStart => {
                "the clock is before the certificate's start (was the clock set back?)"
            }
            Reason::FilesChanged => "the certificate files changed on disk",
        }
    }
}

/// Keep `resolver`, which presents `pki`, in step: before each handshake and every
/// [`FILES_EVERY`] until the runtime shuts down.
pub fn spawn(
    dir: DataDir,
    opts: ServerPkiOptions,
    resolver: Arc<ServerCertResolver>,
    pki: &ServerPki,
) {
    let watch = Arc::new(Watch {
        served: Mutex::new(Watch::served(&dir, opts, pki)),
        dir,
        opts,
        resolver: Arc::downgrade(&resolver),
    });
    let before_handshakes = Arc::downgrade(&watch);
    resolver.check_with(move || {
        if let Some(watch) = before_handshakes.upgrade() {
            watch.check(false);
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FILES_EVERY).await;
            let watch = watch.clone();
            if tokio::task::spawn_blocking(move || watch.check(true))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}
