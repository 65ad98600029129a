//! [`Pacer`]: a campaign's `throttle.messagesPerMinute`, as evenly spaced send slots.
//!
//! Written by hand because a token bucket with a burst of one (governor's GCRA, whose
//! tolerance is whole messages) loses the timer's lateness on every message: a waiter woken
//! 1 ms late at 100 messages a second sends 10 % slow, and a burst of two lets two messages
//! go back to back. Here each waiter reserves the next slot — one interval after the last one,
//! or now when the campaign was idle — and the slot may lie up to [`LATENESS`] in the past, so
//! a waiter that woke late does not push every later slot back. The interval is the rate's
//! stretched by [`LATENESS`] per second (0.2 %): a second's worth of slots then spans more
//! than a second plus the lateness, so no whole second (and no minute) ever holds more than
//! the rate, wherever its boundaries fall — the price is sending 0.2 % under it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How late a waiter may wake without the rate suffering: tokio's timer rounds to the next
/// millisecond, plus scheduling.
pub const LATENESS: Duration = Duration::from_millis(2);

/// Evenly spaced send slots at one rate, shared by every send of one campaign.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    /// Slots a little more than `60 s / per_minute` apart ([`interval`]); the first one
    /// interval from now (an empty bucket, so a restarted operator does not add a burst to
    /// what the previous process just sent).
    pub fn per_minute(per_minute: u32) -> Self {
        let interval = interval(per_minute);
        Self {
            interval,
            next: Mutex::new(Instant::now() + interval),
        }
    }

    /// Waits for this caller's slot.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            reserve(&mut next, Instant::now(), self.interval)
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The time between slots at `per_minute`: the rate's interval plus [`LATENESS`] per second
/// of it.
pub fn interval(per_minute: u32) -> Duration {
    let exact = Duration::from_secs(60) / per_minute.max(1);
    exact + exact.mul_f64(LATENESS.as_secs_f64())
}

/// The slot for a caller asking at `now`, given the `next` free one; moves `next` on.
fn reserve(next: &mut Instant, now: Instant, interval: Duration) -> Instant {
    let earliest = now.checked_sub(LATENESS).unwrap_or(now);
    let slot = (*next).max(earliest);
    *next = slot + interval;
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_wakes_do_not_slow_the_rate_and_no_second_holds_more_than_it() {
        let interval = interval(6000);
        assert_eq!(interval, Duration::from_micros(10_020));
        let start = Instant::now();
        let mut next = start + interval;
        let mut now = start;
        let mut sent = Vec::new();
        let mut last_slot: Option<Instant> = None;
        for k in 0..10_000u32 {
            let slot = reserve(&mut next, now, interval);
            if let Some(last) = last_slot {
                assert!(slot - last >= interval, "at {k}");
            }
            last_slot = Some(slot);
            // Every waiter wakes up to 1.5 ms after its slot, and sends then.
            let late = Duration::from_micros(u64::from(k * 7 % 16) * 100);
            now = now.max(slot) + late;
            sent.push(now);
        }
        let span = *sent.last().unwrap() - sent[0];
        let rate = f64::from(9_999) / span.as_secs_f64();
        assert!((rate - 100.0 / 1.002).abs() < 0.02, "{rate}/s");
        // Whole seconds of the actual sends, from several starting points: never above the
        // rate, never more than 1 % under it.
        for offset_ms in [0, 3, 5, 9] {
            let origin = sent[0] + Duration::from_millis(offset_ms);
            let mut per_second = std::collections::BTreeMap::<u64, u32>::new();
            for at in sent.iter().filter(|&&at| at >= origin) {
                *per_second.entry((*at - origin).as_secs()).or_default() += 1;
            }
            let full: Vec<u32> = per_second.values().copied().take(90).collect();
            assert!(full.iter().all(|&n| (99..=100).contains(&n)), "{full:?}");
        }
    }

    #[test]
    fn an_idle_campaign_starts_again_now_without_a_burst() {
        let interval = Duration::from_millis(100);
        let start = Instant::now();
        let mut next = start + interval;
        // Idle for 10 s: the next slot is now (within LATENESS), not ten seconds' worth of
        // slots in the past.
        let later = start + Duration::from_secs(10);
        let first = reserve(&mut next, later, interval);
        assert_eq!(first, later - LATENESS);
        let second = reserve(&mut next, later, interval);
        assert_eq!(second - first, interval);
    }
}
