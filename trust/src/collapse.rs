//! Repeated log events collapsed per key, so that a flood of them (refused connections, refused
//! requests) becomes at most one line per key and period, carrying the number of events it
//! stands for. Nothing is lost from the count: events held back are reported by the next line of
//! their key, which a timer writes one period after the previous line even if no further event
//! comes, or when the collapse is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Writes the line for `event`, standing for `count` events (at least 1) of its key since the
/// previous line.
pub type Emit<E> = Arc<dyn Fn(&E, u64) + Send + Sync>;

/// Keys remembered at most; beyond this, keys without held-back events and without a line in the
/// current period are forgotten (a forgotten key's next event is written at once, as a new key's).
const MAX_KEYS: usize = 10_000;

/// Events collapsed per key `K`; `E` is what the line of an event says.
pub struct Collapse<K, E> {
    period: Duration,
    emit: Emit<E>,
    keys: Arc<Mutex<HashMap<K, Slot<E>>>>,
}

impl<K, E> std::fmt::Debug for Collapse<K, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collapse")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

struct Slot<E> {
    /// When the last line of this key was written.
    written: Option<Instant>,
    /// Events held back since, and the latest of them.
    held: u64,
    latest: Option<E>,
    /// Whether a timer will write the held-back events.
    flush_due: bool,
}

impl<K, E> Collapse<K, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    E: Send + 'static,
{
    /// At most one line per key and `period`, written by `emit`.
    pub fn new(period: Duration, emit: Emit<E>) -> Collapse<K, E> {
        Collapse {
            period,
            emit,
            keys: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// One more event of `key`. Written at once if no line of `key` was written within the
    /// period; otherwise counted, and written with the others held back when the period is over.
    /// Inside a tokio runtime a timer writes them even if `key` goes quiet; outside one, the next
    /// event of `key` after the period does.
    pub fn note(&self, key: K, event: E) {
        let now = Instant::now();
        let mut keys = lock(&self.keys);
        if keys.len() >= MAX_KEYS && !keys.contains_key(&key) {
            let period = self.period;
            keys.retain(|_, s| s.held > 0 || s.written.is_some_and(|w| now - w < period));
        }
        let slot = keys.entry(key.clone()).or_insert(Slot {
            written: None,
            held: 0,
            latest: None,
            flush_due: false,
        });
        let quiet = slot.written.is_none_or(|w| now - w >= self.period);
        if quiet && !slot.flush_due {
            let count = std::mem::take(&mut slot.held) + 1;
            slot.latest = None;
            slot.written = Some(now);
            drop(keys);
            (self.emit)(&event, count);
            return;
        }
        slot.held += 1;
        slot.latest = Some(event);
        if slot.flush_due {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        slot.flush_due = true;
        let at = slot.written.unwrap_or(now) + self.period;
        drop(keys);
        let (keys, emit) = (self.keys.clone(), self.emit.clone());
        runtime.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let held = {
                let mut keys = lock(&keys);
                keys.get_mut(&key).and_then(|slot| {
                    slot.flush_due = false;
                    slot.written = Some(Instant::now());
                    let count = std::mem::take(&mut slot.held);
                    slot.latest.take().map(|event| (event, count))
                })
            };
            if let Some((event, count)) = held {
                emit(&event, count);
            }
        });
    }
}

impl<K, E> Drop for Collapse<K, E> {
    /// Writes what is still held back (at a clean shutdown, say), so that nothing is lost.
    fn drop(&mut self) {
        let held: Vec<(E, u64)> = lock(&self.keys)
            .values_mut()
            .filter_map(|slot| {
                let count = std::mem::take(&mut slot.held);
                slot.latest.take().map(|event| (event, count))
            })
            .collect();
        for (event, count) in held {
            (self.emit)(&event, count);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Arc<Mutex<Vec<(u32, u64, Instant)>>>;

    fn recorder() -> (Collapse<&'static str, u32>, Lines) {
        let lines: Lines = Arc::default();
        let sink = lines.clone();
        let collapse = Collapse::new(
            Duration::from_millis(200),
            Arc::new(move |event: &u32, count| {
                sink.lock().unwrap().push((*event, count, Instant::now()))
            }),
        );
        (collapse, lines)
    }

    /// The lines once `done` holds for them, looked at every 10 ms for at most 5 s: a test thread
    /// that stalls can wake when the flush timer is due too, and run before the flush does.
    async fn lines_once(
        lines: &Lines,
        done: impl Fn(&[(u32, u64, Instant)]) -> bool,
    ) -> Vec<(u32, u64, Instant)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = lines.lock().unwrap().clone();
            if done(&now) || Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_flood_becomes_one_line_a_period_and_no_event_is_lost() {
        let (collapse, lines) = recorder();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_millis(1000) {
            collapse.note("a", sent as u32);
            sent += 1;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // The last held-back events are written by the timer, a period after the last line.
        let lines = lines_once(&lines, |l| l.iter().map(|l| l.1).sum::<u64>() >= sent).await;
        assert_eq!(lines.iter().map(|l| l.1).sum::<u64>(), sent);
        assert!(lines.len() <= 7, "{} lines for a 1 s flood", lines.len());
        for pair in lines.windows(2) {
            assert!(pair[1].2 - pair[0].2 >= Duration::from_millis(190));
        }
        // Each line carries the latest event it stands for.
        assert_eq!(lines.last().unwrap().0 as u64, sent - 1);
    }

    #[tokio::test]
    async fn keys_are_collapsed_apart() {
        let (collapse, lines) = recorder();
        collapse.note("a", 1);
        collapse.note("b", 2);
        collapse.note("a", 3);
        assert_eq!(
            lines.lock().unwrap().len(),
            2,
            "the first of each key at once"
        );
        let lines = lines_once(&lines, |l| l.len() >= 3).await;
        assert_eq!(
            lines.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 1), (3, 1)]
        );
        // Quiet again: the next one is written at once.
        collapse.note("a", 4);
    }

    #[test]
    fn what_is_held_back_is_written_when_dropped() {
        let (collapse, lines) = recorder();
        for i in 0..3 {
            collapse.note("a", i);
        }
        drop(collapse);
        let lines = lines.lock().unwrap().clone();
        assert_eq!(
            lines.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            vec![(0, 1), (2, 2)]
        );
    }

    #[test]
    fn without_a_runtime_the_next_event_carries_the_count() {
        let (collapse, lines) = recorder();
        for i in 0..5 {
            collapse.note("a", i);
        }
        std::thread::sleep(Duration::from_millis(250));
        collapse.note("a", 5);
        let lines = lines.lock().unwrap().clone();
        assert_eq!(
            lines.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            vec![(0, 1), (5, 5)]
        );
    }
}
