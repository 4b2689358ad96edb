//! Requests in flight on a connection (its idle clock), and connections open in the daemon.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::lock;
#[cfg(doc)]
use super::RequestLimitLayer;

/// Requests in flight on one connection, and when the last one started or ended: the
/// connection's idle clock. HTTP/2 keepalive pings do not move it (a client answers them while
/// idle); only requests do, through [`RequestLimitLayer`].
#[derive(Debug, Clone)]
pub struct IdleClock(Arc<Mutex<(usize, Instant)>>);

impl Default for IdleClock {
    fn default() -> Self {
        IdleClock(Arc::new(Mutex::new((0, Instant::now()))))
    }
}

impl IdleClock {
    /// A request starts; it ends when the returned guard is dropped.
    pub fn begin(&self) -> InFlight {
        let mut state = lock(&self.0);
        *state = (state.0 + 1, Instant::now());
        InFlight(self.clone())
    }

    /// Since when no request has been in flight; `None` while one is.
    pub fn idle_since(&self) -> Option<Instant> {
        let (in_flight, since) = *lock(&self.0);
        (in_flight == 0).then_some(since)
    }
}

/// One request in flight (see [`IdleClock::begin`]).
#[derive(Debug)]
pub struct InFlight(IdleClock);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = lock(&self.0 .0);
        *state = (state.0.saturating_sub(1), Instant::now());
    }
}

/// Counts connections from accept (handshake included) to close, for the daemon's idle logic
/// and the first read of its trust store.
#[derive(Debug, Clone)]
pub struct Activity {
    counts: Arc<watch::Sender<Counts>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    open: usize,
    closed: u64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            counts: Arc::new(watch::channel(Counts::default()).0),
        }
    }
}

impl Activity {
    /// Connections accepted and not yet closed.
    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.counts.borrow().open
    }

    /// Resolves once no connection has been open for `idle` without interruption.
    pub async fn idle_for(&self, idle: Duration) {
        let mut rx = self.counts.subscribe();
        loop {
            let _ = rx.wait_for(|c| c.open == 0).await;
            match tokio::time::timeout(idle, rx.changed()).await {
                Err(_) if rx.borrow().open == 0 => return,
                _ => continue,
            }
        }
    }

    /// Resolves when no connection is open.
    pub async fn drained(&self) {
        let mut rx = self.counts.subscribe();
        let _ = rx.wait_for(|c| c.open == 0).await;
    }

    /// Resolves once a connection has closed and none is open: under socket activation, once
    /// the connection that started the daemon has been served.
    pub async fn served(&self) {
        let mut rx = self.counts.subscribe();
        let _ = rx.wait_for(|c| c.closed > 0 && c.open == 0).await;
    }

    pub(super) fn guard(&self) -> ActivityGuard {
        self.counts.send_modify(|c| c.open += 1);
        ActivityGuard(self.clone())
    }
}

#[derive(Debug)]
pub(super) struct ActivityGuard(Activity);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.counts.send_modify(|c| {
            c.open -= 1;
            c.closed += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `activity.served()` resolves now (it never waits on a timer, only on the counts).
    async fn served_now(activity: &Activity) -> bool {
        tokio::time::timeout(Duration::from_millis(10), activity.served())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn served_once_a_connection_has_come_and_gone_and_none_is_open() {
        let activity = Activity::default();
        assert!(!served_now(&activity).await, "no connection yet");
        let first = activity.guard();
        assert!(!served_now(&activity).await, "the first connection is open");
        let second = activity.guard();
        drop(first);
        assert!(
            !served_now(&activity).await,
            "the second connection is open"
        );
        drop(second);
        assert!(served_now(&activity).await);
        assert_eq!(activity.open_connections(), 0);
    }
}
