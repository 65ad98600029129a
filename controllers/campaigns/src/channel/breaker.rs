//! The circuit breaker of one Channel: stop sending through a channel that keeps failing, and
//! find out cheaply when it is back. A pure state machine; the caller passes the time.
//!
//! | State | `allow(now)` | Goes to |
//! |---|---|---|
//! | Closed | yes | Open after `consecutiveFailures` channel failures in a row |
//! | Open | no | HalfOpen once `coolDown` has passed since it opened |
//! | HalfOpen | up to `halfOpenProbes` probes | Closed on a probe success, Open on a probe failure |
//!
//! Only failures of the channel count ([`counts_against_channel`]): timeouts, connection
//! errors, 5xx, 429, SMTP 4xx. A permanent answer about one recipient (HTTP 400, SMTP 550)
//! shows the channel is up, so it counts as a success.

use std::time::Duration;

use flotilla_crds::channel::{BreakerState, BreakerStatus, CircuitBreakerPolicy};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::campaign::retry::Outcome;

/// Whether `outcome` says the channel itself is failing.
pub fn counts_against_channel(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Transient { .. })
}

/// One channel's breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    failures_to_open: u32,
    cool_down: Duration,
    probes: u32,
    state: State,
    /// Channel failures in a row, reset by a success.
    consecutive_failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        since: Timestamp,
    },
    /// `let_through` probes have been allowed since it became half-open.
    HalfOpen {
        opened_at: Timestamp,
        let_through: u32,
    },
}

impl CircuitBreaker {
    /// A closed breaker with `policy` (the defaults when the Channel has none).
    pub fn new(policy: &CircuitBreakerPolicy) -> Self {
        Self {
            failures_to_open: u32::try_from(policy.consecutive_failures)
                .unwrap_or(1)
                .max(1),
            cool_down: policy.cool_down.as_std(),
            probes: u32::try_from(policy.half_open_probes).unwrap_or(1).max(1),
            state: State::Closed,
            consecutive_failures: 0,
        }
    }

    /// Whether a message may be sent now. In HalfOpen each `true` is one probe: call it only
    /// right before sending, and [`record`](Self::record) the outcome.
    pub fn allow(&mut self, now: Timestamp) -> bool {
        if let State::Open { since } = self.state
            && now >= self.reopens_at(since)
        {
            self.state = State::HalfOpen {
                opened_at: since,
                let_through: 0,
            };
        }
        match &mut self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { let_through, .. } if *let_through < self.probes => {
                *let_through += 1;
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// Takes the outcome of a send that [`allow`](Self::allow) let through.
    ///
    /// # Caveats
    /// Outcomes carry no ticket: in HalfOpen, a late answer to a send let through before the
    /// breaker opened counts as a probe's. That needs a send to outlast the cool-down, so keep
    /// `coolDown` longer than the Channel's `timeout` (the defaults are 30s and 10s).
    pub fn record(&mut self, outcome: &Outcome, now: Timestamp) {
        if counts_against_channel(outcome) {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            match self.state {
                State::Closed if self.consecutive_failures >= self.failures_to_open => {
                    self.state = State::Open { since: now };
                }
                State::HalfOpen { .. } => self.state = State::Open { since: now },
                // A late failure of a send from before it opened does not prolong the cool-down.
                State::Closed | State::Open { .. } => {}
            }
        } else {
            self.consecutive_failures = 0;
            // A late success while Open came from before the failures; only a probe closes.
            if matches!(self.state, State::HalfOpen { .. }) {
                self.state = State::Closed;
            }
        }
    }

    /// When the breaker lets messages through again: `None` while it does now (Closed, or
    /// HalfOpen with probes left).
    pub fn blocked_until(&self, now: Timestamp) -> Option<Timestamp> {
        match self.state {
            State::Closed => None,
            State::Open { since } => Some(self.reopens_at(since)).filter(|at| *at > now),
            State::HalfOpen { let_through, .. } if let_through < self.probes => None,
            // Probes are out; their outcomes decide. Ask again after one more cool-down.
            State::HalfOpen { .. } => Some(now + self.cool_down_span()),
        }
    }

    /// The state, as `status.breaker.state` shows it.
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// `status.breaker` of the Channel.
    pub fn status(&self) -> BreakerStatus {
        let opened_at = match self.state {
            State::Closed => None,
            State::Open { since } => Some(since),
            State::HalfOpen { opened_at, .. } => Some(opened_at),
        };
        BreakerStatus {
            state: self.state(),
            opened_at: opened_at.map(Time),
            consecutive_failures: i32::try_from(self.consecutive_failures).unwrap_or(i32::MAX),
        }
    }

    fn reopens_at(&self, since: Timestamp) -> Timestamp {
        since
            .saturating_add(self.cool_down_span())
            .unwrap_or(Timestamp::MAX)
    }

    fn cool_down_span(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.cool_down).unwrap_or(jiff::SignedDuration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }
    fn policy(failures: i32, cool_down: &str, probes: i32) -> CircuitBreakerPolicy {
        CircuitBreakerPolicy {
            consecutive_failures: failures,
            cool_down: cool_down.parse().unwrap(),
            half_open_probes: probes,
        }
    }
    fn timeout() -> Outcome {
        Outcome::unreachable("timeout")
    }
    fn rejected() -> Outcome {
        Outcome::of_smtp(550)
    }

    #[test]
    fn opens_after_n_failures_in_a_row_only() {
        let mut breaker = CircuitBreaker::new(&CircuitBreakerPolicy::default());
        for _ in 0..4 {
            assert!(breaker.allow(at(0)));
            breaker.record(&timeout(), at(0));
        }
        breaker.record(&Outcome::Delivered, at(0));
        assert_eq!(breaker.status().consecutive_failures, 0);
        for _ in 0..4 {
            breaker.record(&timeout(), at(1));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record(&Outcome::of_http(503, None, at(1)), at(1));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow(at(1)));
        assert_eq!(breaker.status().opened_at, Some(Time(at(1))));
        assert_eq!(breaker.blocked_until(at(1)), Some(at(31)));
    }

    #[test]
    fn rejected_recipients_do_not_open_it() {
        let mut breaker = CircuitBreaker::new(&policy(2, "30s", 1));
        for _ in 0..10 {
            breaker.record(&rejected(), at(0));
            breaker.record(&Outcome::of_http(400, None, at(0)), at(0));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        // ... and one between two failures breaks the run.
        breaker.record(&timeout(), at(0));
        breaker.record(&rejected(), at(0));
        breaker.record(&timeout(), at(0));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_probes_through_and_a_success_closes() {
        let mut breaker = CircuitBreaker::new(&policy(1, "30s", 2));
        breaker.record(&timeout(), at(0));
        assert!(!breaker.allow(at(29)));
        assert!(breaker.allow(at(30)));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.status().opened_at, Some(Time(at(0))));
        assert!(breaker.allow(at(30)));
        assert!(!breaker.allow(at(30)), "only two probes");
        assert_eq!(breaker.blocked_until(at(30)), Some(at(60)));
        breaker.record(&Outcome::Delivered, at(31));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(breaker.status(), BreakerStatus::default());
        assert!(breaker.allow(at(31)));
    }

    #[test]
    fn a_probe_failure_opens_it_again_for_a_full_cool_down() {
        let mut breaker = CircuitBreaker::new(&policy(3, "10s", 1));
        for _ in 0..3 {
            breaker.record(&timeout(), at(0));
        }
        assert!(breaker.allow(at(10)));
        breaker.record(&timeout(), at(12));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow(at(21)));
        assert!(breaker.allow(at(22)));
    }

    #[test]
    fn late_outcomes_while_open_change_nothing() {
        let mut breaker = CircuitBreaker::new(&policy(1, "10s", 1));
        breaker.record(&timeout(), at(0));
        breaker.record(&timeout(), at(9));
        breaker.record(&Outcome::Delivered, at(9));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(
            breaker.allow(at(10)),
            "the cool-down ran from the first failure"
        );
    }

    #[derive(Clone, Debug)]
    enum Step {
        Wait(u16),
        Send(u8),
    }

    fn outcome(kind: u8) -> Outcome {
        match kind % 3 {
            0 => Outcome::Delivered,
            1 => timeout(),
            _ => rejected(),
        }
    }

    proptest! {
        /// Whatever happens: nothing is let through while Open before the cool-down, at most
        /// `halfOpenProbes` per half-open spell, and the reported failures are the real run.
        #[test]
        fn never_allows_while_open_and_bounds_probes(
            failures in 1i32..6,
            cool_down in 1u64..120,
            probes in 1i32..4,
            steps in proptest::collection::vec(
                prop_oneof![(0u16..200).prop_map(Step::Wait), any::<u8>().prop_map(Step::Send)],
                0..200,
            ),
        ) {
            let mut breaker = CircuitBreaker::new(&policy(failures, &format!("{cool_down}s"), probes));
            let mut now = at(0);
            let mut run = 0;
            let mut probes_this_spell = 0;
            for step in steps {
                match step {
                    Step::Wait(seconds) => now += jiff::SignedDuration::from_secs(i64::from(seconds)),
                    Step::Send(kind) => {
                        let before = breaker.state;
                        let allowed = breaker.allow(now);
                        if let State::Open { since } = before {
                            let cooled = now.duration_since(since).as_secs() >= cool_down as i64;
                            prop_assert!(!allowed || cooled, "allowed while open");
                        }
                        if breaker.state() == BreakerState::HalfOpen {
                            if !matches!(before, State::HalfOpen { .. }) {
                                probes_this_spell = 0;
                            }
                            probes_this_spell += u32::from(allowed);
                            prop_assert!(probes_this_spell <= probes as u32);
                        }
                        if allowed {
                            let outcome = outcome(kind);
                            run = if counts_against_channel(&outcome) { run + 1 } else { 0 };
                            breaker.record(&outcome, now);
                            prop_assert_eq!(breaker.status().consecutive_failures, run);
                            if breaker.state() == BreakerState::Closed {
                                prop_assert!(run < failures);
                            }
                        }
                    }
                }
            }
        }
    }
}
