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
//! clock and the files every [`FILES_EVERY`] on a timer (files changing are loaded once they
//! have stopped changing) (a client that finds the root CA missing
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
/// cost nothing more. Files are loaded once two looks in a row find them changed the same way,
/// 0.5 to 1 s after their last change; a client waits up to 2 s for a missing root CA to
/// appear, so one deleted while the daemon runs is made again before it gives up.
const FILES_EVERY: StdDuration = StdDuration::from_millis(500);
/// Pause before trying again after a failed reload: each failure is a warning.
const RETRY_AFTER_FAILURE: StdDuration = StdDuration::from_secs(10);

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
    /// The files as the last look found them, when they differed from `files`: they are loaded
    /// once a second look finds them the same, so that a restore copying them one by one is
    /// not caught half done (a root key without its certificate would make a new root CA).
    changing: Option<Vec<FileKey>>,
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

/// Where [`Watch::check`] is called from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Before a handshake takes the chain: the clock only, and never waiting for another check.
    Handshake,
    /// The timer, off the runtime's threads: the clock and the files.
    Timer,
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
            changing: None,
            valid_from: pki.not_before,
            due: pki.not_after - opts.renew_before,
            retry_at: None,
        }
    }

    /// Replace the chain if the clock, or on the timer the files, say it is out of step.
    pub fn check(&self, from: Caller) {
        let mut served = match from {
            Caller::Timer => self.served.lock().unwrap_or_else(|e| e.into_inner()),
            // A handshake never waits for a reload that another thread runs (on a slow disk,
            // or behind a second daemon's lock): it presents the current chain.
            Caller::Handshake => match self.served.try_lock() {
                Ok(served) => served,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return,
            },
        };
        let now = OffsetDateTime::now_utc();
        let reason = if now < served.valid_from {
            Some(Reason::BeforeStart)
        } else if now >= served.due {
            Some(Reason::Due)
        } else if from == Caller::Timer {
            let keys: Vec<FileKey> = Watch::paths(&self.dir).iter().map(file_key).collect();
            if keys == served.files {
                served.changing = None;
                None
            } else if served.changing.as_ref() == Some(&keys) {
                Some(Reason::FilesChanged)
            } else {
                served.changing = Some(keys);
                None
            }
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
        // Under the lock: the handshake that noticed presents the new chain, and other checks
        // meanwhile find everything in step. On a handshake's runtime thread, the runtime is
        // told that this thread blocks (a new key, up to four files written and flushed), so
        // that the thread's other tasks move to another.
        let old = resolver.fingerprint();
        // Swapped in before a new root CA is published, so that no client reads it while the
        // old chain is still presented.
        let reload = || {
            ServerPki::load_or_create_then(&self.dir, self.opts, |pki| resolver.replace(pki))
                .map_err(anyhow::Error::new)
        };
        let on_runtime_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let reloaded = if from == Caller::Handshake && on_runtime_thread {
            tokio::task::block_in_place(reload)
        } else {
            reload()
        };
        match reloaded {
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
            watch.check(Caller::Handshake);
        }
    });
    tokio::spawn(async move {
        // Until the TLS configuration, and with it the resolver, is gone.
        while watch.resolver.strong_count() > 0 {
            tokio::time::sleep(FILES_EVERY).await;
            let watch = watch.clone();
            if tokio::task::spawn_blocking(move || watch.check(Caller::Timer))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}
