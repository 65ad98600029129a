//! What the chaos tests share: a seeded generator for their moments, and the in-flight count
//! of a rollout as the Devices show it (to check `maxInFlight` from outside the operator).
//! Used by `controllers/ota/tests/rollout_chaos.rs` (in-process crashes) and `tests/chaos`
//! (the operator as its own process, SIGKILLed).

use std::time::Duration;

use flotilla_crds::Device;
use flotilla_crds::device::UpdateState;
use jiff::{SignedDuration, Timestamp};

/// The environment variable that repeats a chaos run: its seed.
pub const SEED_ENV: &str = "FLOTILLA_CHAOS_SEED";

/// SplitMix64: small, seedable, good enough to pick moments.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Seeded from [`SEED_ENV`], or from the clock when it is unset; prints the seed so that a
    /// failed run can be repeated.
    pub fn from_env() -> Self {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .map(|s| s.parse().expect("FLOTILLA_CHAOS_SEED is a number"))
            .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
        println!("chaos seed {seed} ({SEED_ENV}={seed} repeats this run)");
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number drawn evenly from `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A delay drawn evenly from `low..high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next_u64() % (high - low))
    }

    /// Shuffles `items` (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Devices in flight for `rollout` (assigning `version`) as the Devices show it at `now`:
/// assigned the release and not yet done — no final report on the assigned action, or a
/// success still soaking for `soak`. Read after the list returned, `now` is no earlier than
/// any assignment in it, so a device whose soak ended before a newer assignment never counts
/// together with it.
pub fn in_flight(
    devices: &[Device],
    rollout: &str,
    version: &str,
    soak: SignedDuration,
    now: Timestamp,
) -> u32 {
    devices
        .iter()
        .filter(|device| {
            let Some(firmware) = device.spec.firmware.as_ref() else {
                return false;
            };
            if firmware.rollout.as_deref() != Some(rollout) || firmware.version != version {
                return false;
            }
            let report = device
                .status
                .as_ref()
                .and_then(|s| s.update.as_ref())
                .filter(|u| u.action_id == Some(firmware.action_id));
            match report {
                Some(u) if u.state == UpdateState::Succeeded => u
                    .finished_at
                    .as_ref()
                    .is_none_or(|at| now < at.0.checked_add(soak).expect("in range")),
                Some(u) => !u.state.is_terminal(),
                None => true,
            }
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_repeats_its_sequence() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut c = Rng::new(43);
        assert_ne!(first, (0..5).map(|_| c.next_u64()).collect::<Vec<_>>());
        let delay = Rng::new(7).millis(100, 200);
        assert!((100..200).contains(&delay.as_millis()));
    }
}
