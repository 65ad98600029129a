//! Where controllers get the time from.
//!
//! Every decision that depends on "now" (condition transition times, trial expiry, quiet hours,
//! maintenance windows, requeue-at computations) reads a [`Clock`] instead of the system time, so
//! tests move time forward with a [`ManualClock`] instead of sleeping. Waiting for a moment
//! goes through the clock too ([`Clock::sleep_until`]), so that moving a `ManualClock` past a
//! scheduled wake-up fires it (see [`super::wakeups`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A future returned by [`Clock::sleep_until`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;

    /// How long from now until `at`; zero when `at` is already past. Controllers turn this into
    /// `Action::requeue(..)` to wake up exactly when something is due instead of polling.
    fn until(&self, at: Timestamp) -> Duration {
        let remaining = at.duration_since(self.now());
        Duration::try_from(remaining).unwrap_or(Duration::ZERO)
    }

    /// Completes once the clock reads `at` or later.
    ///
    /// The default waits on the runtime's timer and checks the clock again when it fires, so a
    /// wall clock that was adjusted meanwhile is still honoured. A clock that moves by other
    /// means (a [`ManualClock`]) completes as soon as it has been moved far enough.
    fn sleep_until(&self, at: Timestamp) -> Sleep<'_> {
        Box::pin(async move {
            loop {
                let remaining = self.until(at);
                if remaining.is_zero() {
                    return;
                }
                tokio::time::sleep(remaining).await;
            }
        })
    }
}

/// The real wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when a test moves it. Clones share the same time.
///
/// Moving it wakes every [`Clock::sleep_until`] whose moment has come, which is how a test
/// fires trial expiries and grace-period ends without waiting for them.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<watch::Sender<Timestamp>>,
}

impl ManualClock {
    /// A clock frozen at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(start)),
        }
    }

    /// Moves the clock forward (or backward, for a negative duration) by `by`.
    pub fn advance(&self, by: SignedDuration) {
        self.now
            .send_modify(|now| *now = now.saturating_add(by).unwrap_or(*now));
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.now.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep<'_> {
        let mut moves = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, which this future borrows: the wait only
            // ends when the clock reaches `at`.
            if moves.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// The clock shared by a process's controllers.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(ts("2025-01-01T00:00:00Z"));
        assert_eq!(clock.now(), ts("2025-01-01T00:00:00Z"));
        clock.advance(SignedDuration::from_hours(36));
        assert_eq!(clock.now(), ts("2025-01-02T12:00:00Z"));
        clock.set(ts("2030-06-01T08:30:00Z"));
        assert_eq!(clock.now(), ts("2030-06-01T08:30:00Z"));
    }

    #[test]
    fn clones_share_one_time() {
        let clock = ManualClock::new(ts("2025-01-01T00:00:00Z"));
        let shared: SharedClock = Arc::new(clock.clone());
        clock.advance(SignedDuration::from_mins(5));
        assert_eq!(shared.now(), ts("2025-01-01T00:05:00Z"));
    }

    #[test]
    fn until_counts_down_and_floors_at_zero() {
        let clock = ManualClock::new(ts("2025-01-01T00:00:00Z"));
        let due = ts("2025-01-01T00:10:00Z");
        assert_eq!(clock.until(due), Duration::from_secs(600));
        clock.advance(SignedDuration::from_mins(7));
        assert_eq!(clock.until(due), Duration::from_secs(180));
        clock.advance(SignedDuration::from_mins(30));
        assert_eq!(clock.until(due), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_gets_there() {
        let clock = ManualClock::new(ts("2025-01-01T00:00:00Z"));
        let waiting = clock.clone();
        let sleeper = tokio::spawn(async move {
            waiting.sleep_until(ts("2025-01-15T00:00:00Z")).await;
        });
        clock.advance(SignedDuration::from_hours(24));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "one day is not two weeks");
        clock.advance(SignedDuration::from_hours(24 * 13));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken by the move")
            .expect("joined");
        // A moment already past does not wait at all.
        clock.sleep_until(ts("2025-01-02T00:00:00Z")).await;
    }

    #[tokio::test]
    async fn a_system_sleep_waits_for_the_wall_clock() {
        let at = Timestamp::now() + SignedDuration::from_millis(30);
        SystemClock.sleep_until(at).await;
        assert!(Timestamp::now() >= at);
    }

    #[test]
    fn system_clock_is_close_to_now() {
        let before = Timestamp::now();
        let now = SystemClock.now();
        assert!(now >= before);
    }
}
