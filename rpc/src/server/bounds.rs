//! What each peer may hold at once (connections, requests, handshakes) and the pace of its
//! costly steps.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{lock, Peer, PeerKey};

/// Open connections, or requests in flight, per peer.
#[derive(Debug, Default, Clone)]
pub(super) struct PerPeer(Arc<Mutex<std::collections::HashMap<PeerKey, usize>>>);

impl PerPeer {
    /// A slot for one more of `key`'s, unless it holds `max` already.
    pub(super) fn claim(&self, key: PeerKey, max: usize) -> Option<PeerSlot> {
        let mut open = lock(&self.0);
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            key,
            peers: self.clone(),
        })
    }
}

/// Places of one kind of which each peer may hold a bounded number at once, given back when
/// dropped (e.g. the daemon's client lists being sent). Root, limited nowhere, is not limited here
/// either.
#[derive(Debug, Default, Clone)]
pub struct PlacesPerPeer(PerPeer);

impl PlacesPerPeer {
    /// A place for one more of `peer`'s, or `None` if it holds `max` already.
    pub fn claim(&self, peer: &Peer, max: usize) -> Option<Place> {
        match peer.limited_key() {
            Some(key) => self
                .0
                .claim(key, max)
                .map(|slot| Place { _slot: Some(slot) }),
            None => Some(Place { _slot: None }),
        }
    }
}

/// One of [`PlacesPerPeer`]'s places, given back on drop.
#[derive(Debug)]
pub struct Place {
    _slot: Option<PeerSlot>,
}

/// One connection or request of a peer, given back on drop.
#[derive(Debug)]
pub(super) struct PeerSlot {
    key: PeerKey,
    peers: PerPeer,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.peers.0);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Handshakes in progress per peer, and those waiting to start. A peer's entry lives while any of
/// its connections holds or awaits a turn.
#[derive(Debug, Default, Clone)]
pub(super) struct Handshaking(Arc<Mutex<std::collections::HashMap<PeerKey, PeerHandshakes>>>);

/// A peer's places for handshakes, and how many of its connections hold or await one.
type PeerHandshakes = (Arc<Semaphore>, usize);

impl Handshaking {
    /// Wait until `key` has fewer than `max` handshakes in progress, then hold one place of its
    /// own until the returned turn is dropped (a cancelled wait gives its claim back too).
    pub(super) async fn turn(&self, key: PeerKey, max: usize) -> HandshakeTurn {
        let places = {
            let mut peers = lock(&self.0);
            let (places, users) = peers
                .entry(key)
                .or_insert_with(|| (Arc::new(Semaphore::new(max)), 0));
            *users += 1;
            places.clone()
        };
        let mut turn = HandshakeTurn {
            key,
            peers: self.clone(),
            place: None,
        };
        turn.place = Some(places.acquire_owned().await.expect("never closed"));
        turn
    }
}

/// One handshake's place among its peer's, given back on drop.
#[derive(Debug)]
pub(super) struct HandshakeTurn {
    key: PeerKey,
    peers: Handshaking,
    place: Option<OwnedSemaphorePermit>,
}

impl Drop for HandshakeTurn {
    fn drop(&mut self) {
        self.place.take();
        let mut peers = lock(&self.peers.0);
        if let Some((_, users)) = peers.get_mut(&self.key) {
            *users -= 1;
            if *users == 0 {
                peers.remove(&self.key);
            }
        }
    }
}

/// When each peer's next costly step (a TLS handshake, a passphrase change) may start: a generic
/// cell rate algorithm, one instant per peer (its theoretical arrival time), kept until it has
/// passed. A step whose turn has not come waits for it rather than being refused, so a user's
/// burst of commands is slowed, never failed.
#[derive(Debug)]
pub struct Pacing {
    interval: Duration,
    tolerance: Duration,
    peers: Mutex<(std::collections::HashMap<PeerKey, Instant>, usize)>,
}

impl Pacing {
    /// Entries kept before the passed ones are swept out; then twice what is left.
    const SWEEP_AT: usize = 1024;

    /// `burst` steps at once, then `per_second`.
    pub fn new(per_second: u32, burst: u32) -> Pacing {
        Pacing::every(Duration::from_secs(1) / per_second.max(1), burst)
    }

    /// `burst` steps at once, then one every `interval`.
    pub fn every(interval: Duration, burst: u32) -> Pacing {
        Pacing {
            interval,
            tolerance: interval * burst.saturating_sub(1),
            peers: Mutex::new((std::collections::HashMap::new(), Self::SWEEP_AT)),
        }
    }

    /// [`Pacing::turn`], unless the turn would come more than `most` after `now`: then no place
    /// is taken, and the error says how long the wait would be. Without a ceiling, a peer's
    /// steps queued behind one another would each wait longer, past the time its client waits
    /// for an answer, and still take effect once their turn came.
    pub fn turn_within(
        &self,
        key: PeerKey,
        now: Instant,
        most: Duration,
    ) -> Result<Instant, Duration> {
        self.book(key, now, Some(most))
    }

    /// When `key`'s next step could start if it came at `now`, without taking a place: for
    /// steps that count only once they turn out to be of the paced kind (a passphrase that was
    /// right), which then take theirs with [`Pacing::turn`].
    pub fn ready(&self, key: PeerKey, now: Instant) -> Instant {
        self.next(&lock(&self.peers).0, key, now).1
    }

    /// Wait for `peer`'s turn, taking its place ([`Pacing::turn_within`]); root's turns are never
    /// held. The error is the wait, when it would be longer than `most` (nothing is taken then).
    pub async fn wait_turn(&self, peer: &Peer, most: Duration) -> Result<(), Duration> {
        if let Some(key) = peer.limited_key() {
            let turn = self.turn_within(key, Instant::now(), most)?;
            tokio::time::sleep_until(turn.into()).await;
        }
        Ok(())
    }

    /// Wait until `peer`'s next step could start, without taking a place ([`Pacing::ready`]);
    /// root is never held. The error is the wait, when it would be longer than `most`.
    pub async fn wait_ready(&self, peer: &Peer, most: Duration) -> Result<(), Duration> {
        if let Some(key) = peer.limited_key() {
            let now = Instant::now();
            let ready = self.ready(key, now);
            if ready - now > most {
                return Err(ready - now);
            }
            tokio::time::sleep_until(ready.into()).await;
        }
        Ok(())
    }

    /// For `key`'s step at `now`: when it arrives in the pace (the instant its place would be
    /// booked from), and when it may start.
    fn next(
        &self,
        peers: &std::collections::HashMap<PeerKey, Instant>,
        key: PeerKey,
        now: Instant,
    ) -> (Instant, Instant) {
        let arrival = peers.get(&key).map_or(now, |at| (*at).max(now));
        let start = arrival
            .checked_sub(self.tolerance)
            .map_or(now, |start| start.max(now));
        (arrival, start)
    }

    /// When `key`'s step that comes at `now` may start; its place is taken at once.
    pub fn turn(&self, key: PeerKey, now: Instant) -> Instant {
        // Without a ceiling a place is always taken.
        self.book(key, now, None).unwrap_or_else(|wait| now + wait)
    }

    /// Take `key`'s place for a step at `now` and say when it starts, unless that is more than
    /// `most` after `now` (then nothing is taken, and the error is the wait): under one hold of
    /// the lock, so that steps checked apart from their booking cannot all pass the check.
    fn book(
        &self,
        key: PeerKey,
        now: Instant,
        most: Option<Duration>,
    ) -> Result<Instant, Duration> {
        let mut guard = lock(&self.peers);
        let (peers, sweep_at) = &mut *guard;
        if peers.len() >= *sweep_at {
            peers.retain(|_, at| *at > now);
            *sweep_at = (2 * peers.len()).max(Self::SWEEP_AT);
        }
        let (arrival, start) = self.next(peers, key, now);
        if most.is_some_and(|most| start - now > most) {
            return Err(start - now);
        }
        peers.insert(key, arrival + self.interval);
        Ok(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_starts_at_once_then_handshakes_wait_their_turn() {
        let pacing = Pacing::new(100, 4);
        let (alice, bob) = (PeerKey::Uid(1000), PeerKey::Uid(1001));
        let now = Instant::now();
        let turns: Vec<Duration> = (0..7).map(|_| pacing.turn(alice, now) - now).collect();
        let ms = Duration::from_millis;
        assert_eq!(turns, [ms(0), ms(0), ms(0), ms(0), ms(10), ms(20), ms(30)]);
        // Another peer has its own pace.
        assert_eq!(pacing.turn(bob, now), now);
        // Once the turns taken have passed, the next starts at once; after a long pause the
        // whole burst does again.
        assert_eq!(pacing.turn(alice, now + ms(70)), now + ms(70));
        let later = now + Duration::from_secs(5);
        let turns: Vec<Instant> = (0..5).map(|_| pacing.turn(alice, later)).collect();
        assert_eq!(turns, [later, later, later, later, later + ms(10)]);
    }

    #[test]
    fn ready_says_when_without_taking_a_place() {
        let pacing = Pacing::every(Duration::from_secs(5), 2);
        let alice = PeerKey::Uid(1000);
        let now = Instant::now();
        assert_eq!(pacing.ready(alice, now), now);
        assert_eq!(pacing.ready(alice, now), now, "asking takes nothing");
        pacing.turn(alice, now);
        pacing.turn(alice, now);
        assert_eq!(pacing.ready(alice, now), now + Duration::from_secs(5));
        // Beyond the ceiling, no place is taken.
        let most = Duration::from_secs(3);
        assert_eq!(
            pacing.turn_within(alice, now, most),
            Err(Duration::from_secs(5))
        );
        assert_eq!(pacing.turn(alice, now), now + Duration::from_secs(5));
        assert_eq!(
            pacing.turn_within(alice, now + Duration::from_secs(8), most),
            Ok(now + Duration::from_secs(10))
        );
    }

    #[test]
    fn paces_of_peers_long_gone_are_swept_out() {
        let pacing = Pacing::new(100, 4);
        let now = Instant::now();
        for uid in 0..Pacing::SWEEP_AT as u32 {
            pacing.turn(PeerKey::Uid(uid), now);
        }
        pacing.turn(PeerKey::Uid(u32::MAX), now + Duration::from_secs(1));
        assert_eq!(lock(&pacing.peers).0.len(), 1);
    }
}
