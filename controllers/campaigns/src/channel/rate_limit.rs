//! [`ChannelRateLimit`]: the `rateLimit` of one Channel, shared by every Campaign sending
//! through it (one value per Channel, behind an `Arc`): `messagesPerMinute` with `burst`
//! (governor's GCRA) and `maxInFlight` (a semaphore).
//!
//! # Guarantees
//! The rate holds across operator restarts without persisting anything: every limiter starts
//! with an empty bucket. GCRA keeps a theoretical arrival time (TAT) that is never more than
//! `burst · interval` ahead of now; draining the burst at construction sets the new TAT to
//! exactly `now + burst · interval`, at or beyond wherever the previous process had got to, so
//! the sends of both processes together conform to one limiter. The cost: after a restart the
//! first message waits one interval, and a burst builds up again only while idle.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::channel::RateLimit;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Gcra<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The rate and concurrency limit of one Channel.
pub struct ChannelRateLimit<C: Clock = DefaultClock> {
    rate: Option<Gcra<C>>,
    clock: C,
    in_flight: Option<Arc<Semaphore>>,
}

impl<C: Clock> std::fmt::Debug for ChannelRateLimit<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRateLimit")
            .field("rate_limited", &self.rate.is_some())
            .field(
                "free_in_flight",
                &self.in_flight.as_ref().map(|s| s.available_permits()),
            )
            .finish()
    }
}

/// Holding one lets one message be sent; dropping it frees its `maxInFlight` slot.
#[derive(Debug)]
#[must_use = "the in-flight slot is freed when the permit is dropped"]
pub struct SendPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

impl ChannelRateLimit {
    /// The limiter of a Channel with `limit` (`None`: no limit), on the real clock. Build it
    /// once per Channel and again when `spec.rateLimit` changes; share it with an `Arc`.
    pub fn new(limit: Option<&RateLimit>) -> Arc<Self> {
        Arc::new(Self::with_clock(limit, DefaultClock::default()))
    }

    /// Waits for an in-flight slot, then for the rate, and returns the permit to send one
    /// message with.
    ///
    /// The slot is taken first: a token taken while waiting for a slot would be spent late,
    /// and the waiting senders would then go out as one burst.
    pub async fn acquire(&self) -> SendPermit {
        let slot = match &self.in_flight {
            Some(semaphore) => Some(
                Arc::clone(semaphore)
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ),
            None => None,
        };
        while let Err(wait) = self.try_rate() {
            tokio::time::sleep(wait).await;
        }
        SendPermit { _slot: slot }
    }
}

impl<C: Clock + Clone> ChannelRateLimit<C> {
    /// The limiter of `limit` on `clock` (tests pass a fake one). Starts with an empty bucket.
    pub fn with_clock(limit: Option<&RateLimit>, clock: C) -> Self {
        Self::build(limit, clock, true)
    }

    fn build(limit: Option<&RateLimit>, clock: C, drained: bool) -> Self {
        let positive =
            |n: i32| NonZeroU32::new(u32::try_from(n).unwrap_or(1)).unwrap_or(NonZeroU32::MIN);
        let rate = limit.map(|limit| {
            let burst = positive(limit.effective_burst());
            let quota = Quota::per_minute(positive(limit.messages_per_minute)).allow_burst(burst);
            let gcra = RateLimiter::direct_with_clock(quota, clock.clone());
            if drained {
                // Empty bucket at start: see the module doc for why this is safe after a
                // restart. `burst` always fits a fresh limiter, so this cannot fail.
                let _ = gcra.check_n(burst);
            }
            gcra
        });
        let in_flight = limit
            .and_then(|limit| limit.max_in_flight)
            .map(|n| Arc::new(Semaphore::new(positive(n).get() as usize)));
        Self {
            rate,
            clock,
            in_flight,
        }
    }

    /// Takes one message's worth of the rate now, or says how long until one is free.
    pub fn try_rate(&self) -> Result<(), Duration> {
        match &self.rate {
            None => Ok(()),
            Some(gcra) => gcra
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(per_minute: i32, burst: i32) -> RateLimit {
        RateLimit {
            messages_per_minute: per_minute,
            burst: Some(burst),
            max_in_flight: None,
        }
    }

    /// A sender as greedy as possible for `seconds`, restarting (a new limiter on the same
    /// clock, as a new operator process) at each of `restarts`; returns when each send went.
    fn greedy_run(
        limit: &RateLimit,
        seconds: u64,
        restarts: &[u64],
        drained: bool,
    ) -> Vec<Duration> {
        let clock = FakeRelativeClock::default();
        let mut limiter = ChannelRateLimit::build(Some(limit), clock.clone(), drained);
        let mut restarts = restarts
            .iter()
            .map(|s| Duration::from_millis(s * 1000 + 500));
        let mut next_restart = restarts.next();
        let (mut now, end) = (Duration::ZERO, Duration::from_secs(seconds));
        let mut sent = Vec::new();
        while now < end {
            if next_restart.is_some_and(|at| now >= at) {
                limiter = ChannelRateLimit::build(Some(limit), clock.clone(), drained);
                next_restart = restarts.next();
            }
            let wait = match limiter.try_rate() {
                Ok(()) => {
                    sent.push(now);
                    continue;
                }
                Err(wait) => wait.max(Duration::from_millis(1)),
            };
            let wait = next_restart.map_or(wait, |at| {
                wait.min(at.saturating_sub(now))
                    .max(Duration::from_millis(1))
            });
            clock.advance(wait);
            now += wait;
        }
        sent
    }

    /// How far the busiest window of any length goes over the limit: for every pair of sends,
    /// the sends from the one to the other, less what GCRA allows in that span (the burst plus
    /// one per whole interval). The tightest windows start and end at a send, so this covers
    /// every sliding window.
    fn worst_excess(sent: &[Duration], burst: usize, interval: Duration) -> i64 {
        let mut worst = i64::MIN;
        for (i, first) in sent.iter().enumerate() {
            for (j, last) in sent.iter().enumerate().skip(i) {
                let allowed = burst as u128 + (*last - *first).as_nanos() / interval.as_nanos();
                worst = worst.max((j - i + 1) as i64 - allowed as i64);
            }
        }
        worst
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limit_even_across_restarts() {
        let limit = limit(60, 5); // one a second, bursts of 5
        let sent = greedy_run(&limit, 300, &[60, 61, 150], true);
        assert!(worst_excess(&sent, 5, Duration::from_secs(1)) <= 0);
        // In the Channel's own terms: never more than messagesPerMinute + burst a minute.
        let most_in_a_minute = (0..sent.len())
            .map(|i| {
                sent[i..]
                    .iter()
                    .take_while(|t| **t <= sent[i] + Duration::from_secs(60))
                    .count()
            })
            .max()
            .unwrap();
        assert!(most_in_a_minute <= 60 + 5, "{most_in_a_minute}");
        // The limit is also used: about one a second.
        assert!(sent.len() >= 290, "{}", sent.len());
    }

    #[test]
    fn a_full_bucket_after_a_restart_would_exceed_it() {
        // The same run with limiters that start full: this is what the draining prevents.
        let sent = greedy_run(&limit(60, 5), 300, &[60], false);
        // A whole second burst on top of what the first process had already spent.
        assert_eq!(worst_excess(&sent, 5, Duration::from_secs(1)), 5);
    }

    #[test]
    fn a_fresh_limiter_sends_after_one_interval() {
        let clock = FakeRelativeClock::default();
        let limiter = ChannelRateLimit::with_clock(Some(&limit(60, 5)), clock.clone());
        assert_eq!(limiter.try_rate(), Err(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.try_rate(), Ok(()));
        let unlimited = ChannelRateLimit::with_clock(None, clock);
        assert!((0..1000).all(|_| unlimited.try_rate().is_ok()));
    }
}
