//! Where controllers get the time from.
//!
//! Every decision that depends on "now" (condition transition times, trial expiry, quiet hours,
//! maintenance windows, requeue-at computations) reads a [`Clock`] instead of the system time, so
//! tests move time forward with a [`ManualClock`] instead of sleeping.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

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
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// A clock frozen at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock forward (or backward, for a negative duration) by `by`.
    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.saturating_add(by).unwrap_or(*now);
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
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

    #[test]
    fn system_clock_is_close_to_now() {
        let before = Timestamp::now();
        let now = SystemClock.now();
        assert!(now >= before);
    }
}
