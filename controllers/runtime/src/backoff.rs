//! Per-object retry delays for transient reconcile errors.
//!
//! kube-runtime backs off its watches but leaves reconcile errors to the `error_policy`. A flat
//! requeue either hammers a broken API server or makes recovery slow; a single global backoff
//! lets one broken object slow down all the others. So every object (by UID) gets its own
//! exponential sequence with jitter, built with `backon`, and a success resets it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use jiff::{SignedDuration, Timestamp};

use super::clock::SharedClock;

/// Retry delays for objects whose last reconcile failed transiently.
///
/// The `n`-th consecutive failure of one object waits `d·(1 + u)` with `u` uniform in `[0, 1)`
/// and `d = min(base·2ⁿ, cap/2)`: growth is exponential, jitter spreads objects that failed
/// together, and no delay exceeds `cap`.
#[derive(Debug)]
pub struct ErrorBackoff {
    builder: ExponentialBuilder,
    cap: Duration,
    clock: SharedClock,
    objects: Mutex<HashMap<String, Tracked>>,
}

#[derive(Debug)]
struct Tracked {
    delays: ExponentialBackoff,
    attempts: u32,
    last_failure: Timestamp,
}

impl ErrorBackoff {
    /// Delays start at `base` and never exceed `cap`.
    pub fn new(base: Duration, cap: Duration, clock: SharedClock) -> Self {
        let cap = cap.max(base);
        // backon's jitter adds up to one more delay on top, so the un-jittered delay stops at
        // half the cap to keep the jittered one below it.
        let ceiling = (cap / 2).max(base);
        let builder = ExponentialBuilder::new()
            .with_min_delay(base)
            .with_max_delay(ceiling)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            cap,
            clock,
            objects: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the jitter reproducible (tests only: in production every object must draw its own
    /// jitter, or objects that failed together retry together).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.builder = self.builder.with_jitter_seed(seed);
        self
    }

    /// Records one more failure of the object `key` (its UID) and returns how long to wait
    /// before retrying it.
    pub fn next_delay(&self, key: &str) -> Duration {
        let now = self.clock.now();
        let mut objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        self.forget_idle(&mut objects, now);
        let tracked = objects.entry(key.to_owned()).or_insert_with(|| Tracked {
            delays: self.builder.build(),
            attempts: 0,
            last_failure: now,
        });
        tracked.attempts = tracked.attempts.saturating_add(1);
        tracked.last_failure = now;
        // The builder has no attempt limit, so the sequence never ends; the fallback only
        // guards against a future backon changing that.
        let delay = tracked.delays.next().unwrap_or(self.cap);
        delay.min(self.cap)
    }

    /// Consecutive failures recorded for `key` since its last success.
    pub fn attempts(&self, key: &str) -> u32 {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |tracked| tracked.attempts)
    }

    /// Forgets the failures of `key`: the next failure starts again at the base delay.
    pub fn reset(&self, key: &str) {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// How many objects currently have a failure streak.
    pub fn tracked_objects(&self) -> usize {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drops streaks that have not failed for a long time: their objects were deleted or stopped
    /// being retried, and keeping them would leak memory over the operator's lifetime. Any
    /// object still being retried fails again within `cap`.
    fn forget_idle(&self, objects: &mut HashMap<String, Tracked>, now: Timestamp) {
        let idle =
            SignedDuration::try_from(self.cap.saturating_mul(4)).unwrap_or(SignedDuration::MAX);
        objects.retain(|_, tracked| now.duration_since(tracked.last_failure) < idle);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn clock() -> ManualClock {
        ManualClock::new("2025-01-01T00:00:00Z".parse().expect("timestamp"))
    }

    fn backoff(clock: &ManualClock) -> ErrorBackoff {
        ErrorBackoff::new(
            Duration::from_secs(1),
            Duration::from_secs(64),
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn delays_grow_exponentially_within_jitter_bounds() {
        let backoff = backoff(&clock());
        for attempt in 0..5u32 {
            let floor = Duration::from_secs(1 << attempt);
            let delay = backoff.next_delay("uid-1");
            assert!(delay >= floor, "attempt {attempt}: {delay:?} < {floor:?}");
            assert!(
                delay < floor * 2,
                "attempt {attempt}: {delay:?} >= {:?}",
                floor * 2
            );
        }
        assert_eq!(backoff.attempts("uid-1"), 5);
    }

    #[test]
    fn delays_never_exceed_the_cap_and_keep_jitter_there() {
        let backoff = backoff(&clock());
        let delays: Vec<_> = (0..40).map(|_| backoff.next_delay("uid-1")).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(64)));
        let saturated = &delays[10..];
        assert!(saturated.iter().all(|d| *d >= Duration::from_secs(32)));
        // Jitter keeps saturated retries from all landing on the same instant.
        let distinct: std::collections::HashSet<_> = saturated.iter().collect();
        assert!(distinct.len() > 1, "no jitter at the cap: {saturated:?}");
    }

    #[test]
    fn success_resets_the_streak() {
        let backoff = backoff(&clock());
        for _ in 0..6 {
            backoff.next_delay("uid-1");
        }
        backoff.reset("uid-1");
        assert_eq!(backoff.attempts("uid-1"), 0);
        let delay = backoff.next_delay("uid-1");
        assert!(
            delay < Duration::from_secs(2),
            "not back at the base: {delay:?}"
        );
    }

    #[test]
    fn objects_back_off_independently() {
        let backoff = backoff(&clock());
        for _ in 0..6 {
            backoff.next_delay("uid-broken");
        }
        let fresh = backoff.next_delay("uid-fresh");
        assert!(fresh < Duration::from_secs(2));
        assert_eq!(backoff.attempts("uid-broken"), 6);
        assert_eq!(backoff.attempts("uid-fresh"), 1);
    }

    #[test]
    fn seeded_jitter_is_reproducible() {
        let clock = clock();
        let a = backoff(&clock).with_jitter_seed(7);
        let b = backoff(&clock).with_jitter_seed(7);
        let da: Vec<_> = (0..8).map(|_| a.next_delay("k")).collect();
        let db: Vec<_> = (0..8).map(|_| b.next_delay("k")).collect();
        assert_eq!(da, db);
    }

    #[test]
    fn idle_streaks_are_forgotten() {
        let clock = clock();
        let backoff = backoff(&clock);
        backoff.next_delay("uid-deleted");
        clock.advance(SignedDuration::from_secs(64 * 4 + 1));
        backoff.next_delay("uid-other");
        assert_eq!(backoff.attempts("uid-deleted"), 0);
        assert_eq!(backoff.tracked_objects(), 1);
    }

    #[test]
    fn a_cap_below_the_base_is_raised_to_the_base() {
        let backoff = ErrorBackoff::new(
            Duration::from_secs(10),
            Duration::from_secs(1),
            Arc::new(clock()),
        );
        assert_eq!(backoff.next_delay("k"), Duration::from_secs(10));
    }
}
