//! Brute-force and resource limits for passphrase checks.
//!
//! - [`FailureLimiter`]: failed attempts per peer (uid on the Unix socket, IP address on TCP).
//!   The first few failures are free (people mistype); after that each failure doubles the wait
//!   before the next attempt, up to a ceiling. Attempts made while waiting are refused without
//!   hashing and do not extend the wait. A success clears the record.
//! - [`HashPool`]: Argon2id costs ~19 MiB and a core per check, so only a few run at once and only
//!   a bounded number may queue; beyond that callers are told the service is busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Whose failures are counted together: a local user, or a TCP peer's address.
pub use rpc::server::PeerKey;

/// Tuning of [`FailureLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct LimiterConfig {
    /// Failures allowed without delay.
    pub free_failures: u32,
    /// Delay after the first failure beyond the free ones; doubles with each further one.
    pub base_delay: Duration,
    /// Ceiling of the delay.
    pub max_delay: Duration,
    /// A record with no failure for this long is forgotten.
    pub forget_after: Duration,
    /// Records kept at most (oldest forgotten first).
    pub max_records: usize,
}

/// [`LimiterConfig::max_delay`] by default (the daemon's `--auth-max-delay`).
pub const MAX_DELAY: Duration = Duration::from_secs(60);

impl Default for LimiterConfig {
    fn default() -> Self {
        LimiterConfig {
            free_failures: 3,
            base_delay: Duration::from_secs(1),
            max_delay: MAX_DELAY,
            forget_after: Duration::from_secs(3600),
            max_records: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    blocked_until: Instant,
    last_failure: Instant,
}

/// Failed-attempt bookkeeping; cheap, in memory, shared by all requests.
#[derive(Debug)]
pub struct FailureLimiter {
    config: LimiterConfig,
    records: Mutex<HashMap<PeerKey, Record>>,
    turns: Mutex<HashMap<PeerKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// One peer's turn to have an attempt checked (see [`FailureLimiter::turn`]).
#[derive(Debug)]
pub struct Turn<'a> {
    limiter: &'a FailureLimiter,
    key: PeerKey,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.limiter.turns.lock().unwrap_or_else(|e| e.into_inner());
        // Nobody holds or awaits this peer's turn any more: forget it.
        if turns
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

impl FailureLimiter {
    /// A limiter with `config`.
    pub fn new(config: LimiterConfig) -> FailureLimiter {
        FailureLimiter {
            config,
            records: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    /// Wait until no other attempt of `key` is being checked. Attempts of one peer are checked
    /// one at a time, so that many at once (on many streams or connections) cannot all pass
    /// [`FailureLimiter::wait`] before the first failure is recorded. Others wait in turn; a
    /// flood from one peer delays only that peer.
    pub async fn turn(&self, key: PeerKey) -> Turn<'_> {
        let mutex = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            // Entries left by waiters that gave up (their request was cancelled) are unused.
            if turns.len() > self.config.max_records {
                turns.retain(|_, m| Arc::strong_count(m) > 1);
            }
            turns.entry(key).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        Turn {
            limiter: self,
            key,
            guard: Some(guard),
        }
    }

    /// How long `key` must still wait after its failures (`None`: it may try now).
    pub fn wait(&self, key: PeerKey) -> Option<Duration> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        records
            .get(&key)
            .filter(|r| r.blocked_until > now)
            .map(|r| r.blocked_until - now)
    }

    /// Count a failure of `key`; returns the number of consecutive failures.
    pub fn record_failure(&self, key: PeerKey) -> u32 {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if records.len() >= self.config.max_records && !records.contains_key(&key) {
            let forget_after = self.config.forget_after;
            records.retain(|_, r| now.duration_since(r.last_failure) < forget_after);
            if records.len() >= self.config.max_records {
                if let Some(oldest) = records
                    .iter()
                    .min_by_key(|(_, r)| r.last_failure)
                    .map(|(k, _)| *k)
                {
                    records.remove(&oldest);
                }
            }
        }
        let record = records.entry(key).or_insert(Record {
            failures: 0,
            blocked_until: now,
            last_failure: now,
        });
        if now.duration_since(record.last_failure) >= self.config.forget_after {
            record.failures = 0;
        }
        record.failures += 1;
        record.last_failure = now;
        record.blocked_until = now + self.delay_after(record.failures);
        record.failures
    }

    /// Forget `key`'s failures (after a success).
    pub fn record_success(&self, key: PeerKey) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Records held, for tests and figures.
    pub fn records(&self) -> usize {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn delay_after(&self, failures: u32) -> Duration {
        if failures <= self.config.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.config.free_failures - 1).min(16);
        self.config
            .base_delay
            .saturating_mul(1 << doublings)
            .min(self.config.max_delay)
    }
}

/// Bounds the passphrase hashes computed at once and the number waiting for a turn.
#[derive(Debug)]
pub struct HashPool {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A place in [`HashPool`]'s queue, given back however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HashPool {
    /// `parallel` hashes at once, `max_waiting` queued behind them.
    pub fn new(parallel: usize, max_waiting: usize) -> Arc<HashPool> {
        Arc::new(HashPool {
            running: Arc::new(Semaphore::new(parallel.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        })
    }

    /// Wait for a turn, or `Err(Busy)` if too many are already waiting.
    pub async fn turn(&self) -> Result<OwnedSemaphorePermit, Error> {
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let place = Waiting(&self.waiting);
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            return Err(Error::Busy);
        }
        let permit = self.running.clone().acquire_owned().await;
        drop(place);
        permit.map_err(|_| Error::Internal)
    }

    /// Run the blocking `hash` on a blocking thread once it is our turn. The turn goes with the
    /// hash, so it is held until the hash ends even if the caller stops waiting for it.
    pub async fn run<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let turn = self.turn().await?;
        Ok(tokio::task::spawn_blocking(move || {
            let _turn = turn;
            hash()
        })
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> FailureLimiter {
        FailureLimiter::new(LimiterConfig::default())
    }

    #[test]
    fn first_failures_are_free() {
        let l = limiter();
        for _ in 0..3 {
            l.record_failure(PeerKey::Uid(1));
            assert!(l.wait(PeerKey::Uid(1)).is_none());
        }
        l.record_failure(PeerKey::Uid(1));
        assert!(l.wait(PeerKey::Uid(1)).is_some());
        // Others are unaffected.
        assert!(l.wait(PeerKey::Uid(2)).is_none());
    }

    #[test]
    fn delay_doubles_up_to_the_ceiling() {
        let l = limiter();
        let d: Vec<u64> = (1..=12).map(|n| l.delay_after(n).as_secs()).collect();
        assert_eq!(d, vec![0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn success_clears() {
        let l = limiter();
        for _ in 0..5 {
            l.record_failure(PeerKey::Uid(7));
        }
        l.record_success(PeerKey::Uid(7));
        assert!(l.wait(PeerKey::Uid(7)).is_none());
        assert_eq!(l.records(), 0);
    }

    #[test]
    fn records_are_bounded() {
        let l = FailureLimiter::new(LimiterConfig {
            max_records: 100,
            ..LimiterConfig::default()
        });
        for uid in 0..1000 {
            l.record_failure(PeerKey::Uid(uid));
        }
        assert!(l.records() <= 100);
    }

    #[tokio::test]
    async fn one_attempt_per_peer_at_a_time() {
        let l = limiter();
        let first = l.turn(PeerKey::Uid(1)).await;
        // Another peer is not held up.
        drop(l.turn(PeerKey::Uid(2)).await);
        // The same peer waits.
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            l.turn(PeerKey::Uid(1)),
        );
        assert!(
            waiting.await.is_err(),
            "a second turn of the same peer did not wait"
        );
        drop(first);
        drop(l.turn(PeerKey::Uid(1)).await);
        assert!(
            l.turns.lock().unwrap().is_empty(),
            "turns are forgotten when unused"
        );
    }

    #[tokio::test]
    async fn pool_refuses_beyond_the_queue() {
        let pool = HashPool::new(1, 0);
        let held = pool.turn().await.unwrap();
        assert!(matches!(pool.turn().await, Err(Error::Busy)));
        drop(held);
        assert!(pool.turn().await.is_ok());
    }

    /// A caller that stops waiting gives its place in the queue back, and a hash it started
    /// keeps its turn until it ends.
    #[tokio::test]
    async fn abandoned_waits_and_hashes_keep_the_bounds() {
        let pool = HashPool::new(1, 1);
        let held = pool.turn().await.unwrap();
        for _ in 0..10 {
            let wait = tokio::time::timeout(Duration::from_millis(1), pool.turn()).await;
            assert!(wait.is_err(), "no turn while the only one is held");
        }
        // Had the abandoned waits kept their places, the queue of one would be full.
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.turn().await.map(drop) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert!(queued.await.unwrap().is_ok());

        let (started, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let abandoned = tokio::time::timeout(Duration::from_millis(50), {
            let (started, release) = (started.0, release.1);
            pool.run(move || {
                started.send(()).unwrap();
                release.recv().unwrap();
            })
        });
        assert!(abandoned.await.is_err(), "the caller stopped waiting");
        started.1.recv().unwrap();
        assert!(
            pool.running.available_permits() == 0,
            "the hash still running holds its turn"
        );
        release.0.send(()).unwrap();
        let turn = tokio::time::timeout(Duration::from_secs(5), pool.turn())
            .await
            .expect("the turn comes back when the hash ends");
        assert!(turn.is_ok());
    }
}
