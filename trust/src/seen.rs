//! When each trusted client was last seen, for `multipass trust list`.
//!
//! Kept apart from the trust store on purpose: the store changes only when trust changes, which is
//! what administrators (and `tee -a`) expect of it, while last-seen times change on every request.
//! The times live in memory and reach the file (`DATA/last-seen`, 0600, one
//! `<fingerprint> <RFC 3339 time>` line per client) at most once per client per
//! [`PERSIST_GRANULARITY`], so a busy client costs one small write a minute, and a daemon that
//! exits when idle (socket activation) does not forget them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::error::Result;
use crate::fsutil::{self, FileMode, LockedFile};
use crate::pki::Fingerprint;

/// A newer time is written to the file only when the stored one is at least this old.
pub const PERSIST_GRANULARITY: Duration = Duration::minutes(1);

#[derive(Debug, Default)]
struct State {
    loaded: bool,
    /// The freshest time of each client.
    latest: HashMap<Fingerprint, OffsetDateTime>,
    /// What the file holds (or will once the pending write lands).
    persisted: HashMap<Fingerprint, OffsetDateTime>,
}

/// Last-seen times, shared by every request of the daemon.
#[derive(Debug)]
pub struct LastSeen {
    path: PathBuf,
    mode: FileMode,
    state: Mutex<State>,
    /// Serialises writers, so an older snapshot never replaces a newer one.
    writing: Mutex<()>,
}

impl LastSeen {
    /// Times kept in `path`, written with `mode`. Nothing is read yet.
    pub fn new(path: impl Into<PathBuf>, mode: FileMode) -> LastSeen {
        LastSeen {
            path: path.into(),
            mode,
            state: Mutex::new(State::default()),
            writing: Mutex::new(()),
        }
    }

    /// Note that `client` was seen at `now`. Returns whether the file is now behind by more than
    /// [`PERSIST_GRANULARITY`] and the caller should [`LastSeen::persist`] (off the request path).
    pub fn record(&self, client: Fingerprint, now: OffsetDateTime) -> bool {
        let mut state = self.lock_loaded();
        state.latest.insert(client, now);
        let behind = state
            .persisted
            .get(&client)
            .is_none_or(|&stored| now - stored >= PERSIST_GRANULARITY);
        if behind {
            // Claimed now, so concurrent requests of the same client do not all ask to write.
            state.persisted.insert(client, now);
        }
        behind
    }

    /// When `client` was last seen, if ever (since the file was started).
    pub fn get(&self, client: &Fingerprint) -> Option<OffsetDateTime> {
        self.lock_loaded().latest.get(client).copied()
    }

    /// Forget `client` (it is no longer trusted) and write the file.
    pub fn forget(&self, client: &Fingerprint) -> Result<()> {
        {
            let mut state = self.lock_loaded();
            state.latest.remove(client);
            state.persisted.remove(client);
        }
        self.persist()
    }

    /// Write every time known to the file, atomically, under its directory's lock.
    pub fn persist(&self) -> Result<()> {
        let _writer = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let text = {
            let state = self.lock_loaded();
            let mut lines: Vec<String> = state
                .latest
                .iter()
                .filter_map(|(fp, at)| Some(format!("{fp} {}\n", at.format(&Rfc3339).ok()?)))
                .collect();
            lines.sort();
            lines.concat()
        };
        // Nothing to read under the lock: the times in memory are the newest, the file's were
        // read when first needed.
        LockedFile::lock(&self.path, self.mode)?.replace(text.as_bytes())
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.loaded {
            state.loaded = true;
            match fsutil::read_optional(&self.path) {
                Ok(Some(bytes)) => {
                    let times = parse(&String::from_utf8_lossy(&bytes));
                    state.persisted = times.clone();
                    state.latest = times;
                }
                Ok(None) => {}
                // Only informative: start afresh rather than fail requests.
                Err(e) => tracing::warn!(error = %e, "cannot read the last-seen times"),
            }
        }
        state
    }
}

fn parse(text: &str) -> HashMap<Fingerprint, OffsetDateTime> {
    text.lines()
        .filter_map(|line| {
            let (fp, at) = line.split_once(' ')?;
            Some((
                Fingerprint::from_hex(fp)?,
                OffsetDateTime::parse(at.trim(), &Rfc3339).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(dir: &std::path::Path) -> LastSeen {
        LastSeen::new(dir.join("last-seen"), FileMode::PRIVATE)
    }

    #[test]
    fn times_are_written_once_a_minute_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = seen(dir.path());
        let fp = Fingerprint::of(b"client");
        let t0 = OffsetDateTime::now_utc();
        assert!(s.record(fp, t0), "first sight must be written");
        assert!(!s.record(fp, t0 + Duration::seconds(30)));
        assert!(s.record(fp, t0 + Duration::seconds(61)));
        s.persist().unwrap();
        let again = seen(dir.path());
        assert_eq!(
            again.get(&fp).map(|t| t.unix_timestamp()),
            Some((t0 + Duration::seconds(61)).unix_timestamp())
        );
    }

    #[test]
    fn forgotten_clients_leave_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = seen(dir.path());
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        let now = OffsetDateTime::now_utc();
        s.record(a, now);
        s.record(b, now);
        s.persist().unwrap();
        s.forget(&a).unwrap();
        let again = seen(dir.path());
        assert_eq!(again.get(&a), None);
        assert!(again.get(&b).is_some());
    }
}
