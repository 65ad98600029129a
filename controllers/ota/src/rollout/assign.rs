//! Which devices to assign next.
//!
//! [`ProgressBook`] holds the progress of every target by its position in the plan order and
//! keeps the tallies (overall, per wave, per cohort), the queue of unassigned devices and the
//! retry queue up to date on each change, so a device event costs O(log n) and choosing the
//! next assignments costs O(k log n) for k assignments — never a scan of the fleet.
//!
//! Rules of [`ProgressBook::next_assignments`]:
//! - nothing while paused or outside the maintenance window (updates in flight go on);
//! - never more than `maxInFlight` devices in flight, counting those already in flight;
//! - only devices up to the current wave's boundary (earlier waves' stragglers included);
//! - due retries first (oldest due first), then unassigned devices in plan order;
//! - a retry only once its backoff is over: `initialBackoff × 2^(n-1)` after the n-th failed
//!   attempt, capped at `maxBackoff`.

use std::collections::BTreeSet;

use flotilla_crds::firmware_rollout::DeviceRetries;
use jiff::{SignedDuration, Timestamp};

use super::thresholds::Tally;

/// Where one target stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not assigned yet.
    Pending,
    /// Not assigned, offline under `offlinePolicy: Wait`: assignable once it is back.
    Waiting,
    /// Assigned, updating or soaking; `attempt` from 1.
    InFlight {
        /// Attempt number.
        attempt: u32,
    },
    /// Attempt `attempt` failed; the next one may start at `due`.
    RetryAt {
        /// When the backoff is over.
        due: Timestamp,
        /// The attempt that failed.
        attempt: u32,
    },
    /// Updated and soaked.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Left out while running.
    Skipped,
}

impl Progress {
    /// Whether the device is done with (succeeded, failed or skipped).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Progress::Succeeded | Progress::Failed | Progress::Skipped
        )
    }
}

/// What comes after failed attempt `attempt` (from 1) at `failed_at`: a retry after the
/// backoff while `retries.limit` allows another attempt, else Failed.
pub fn after_failed_attempt(
    retries: &DeviceRetries,
    attempt: u32,
    failed_at: Timestamp,
) -> Progress {
    let limit = u32::try_from(retries.limit).unwrap_or(0);
    if attempt == 0 || attempt > limit {
        return Progress::Failed;
    }
    let delay = retry_backoff(retries, attempt);
    let due = failed_at
        .checked_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    Progress::RetryAt { due, attempt }
}

/// The delay after failed attempt `attempt` (from 1): doubling from `initialBackoff`, capped
/// at `maxBackoff`.
pub fn retry_backoff(retries: &DeviceRetries, attempt: u32) -> std::time::Duration {
    let initial = retries.initial_backoff.as_std();
    let cap = retries.max_backoff.as_std().max(initial);
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    initial.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// What may be assigned now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// The time, for due retries.
    pub now: Timestamp,
    /// The current wave, from 0.
    pub wave: usize,
    /// Most devices in flight.
    pub max_in_flight: u32,
    /// Whether the maintenance window is open (true without a window).
    pub window_open: bool,
    /// Whether the rollout is held (spec.paused, a pause, a threshold).
    pub paused: bool,
}

/// One device to assign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// Position in the plan order.
    pub position: usize,
    /// The attempt this assignment starts, from 1.
    pub attempt: u32,
}

/// The progress of every target of a rollout, with its tallies kept current.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgressBook {
    states: Vec<Progress>,
    /// Cumulative end position of each wave.
    wave_ends: Vec<usize>,
    cohort_of: Vec<u32>,
    overall: Tally,
    waves: Vec<Tally>,
    cohorts: Vec<Tally>,
    pending: BTreeSet<usize>,
    retries: BTreeSet<(Timestamp, usize)>,
}

impl ProgressBook {
    /// Every target pending. `wave_ends` are the plan's cumulative wave boundaries (the last
    /// one is the number of targets); `cohort_of[position]` indexes the target's cohort.
    pub fn new(wave_ends: &[usize], cohort_of: Vec<u32>) -> Self {
        let n = cohort_of.len();
        assert_eq!(
            wave_ends.last().copied().unwrap_or(0),
            n,
            "the last wave ends at the number of targets"
        );
        let cohort_count = cohort_of.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
        let mut book = Self {
            states: vec![Progress::Pending; n],
            wave_ends: wave_ends.to_vec(),
            cohort_of,
            overall: Tally::default(),
            waves: vec![Tally::default(); wave_ends.len()],
            cohorts: vec![Tally::default(); cohort_count],
            pending: (0..n).collect(),
            retries: BTreeSet::new(),
        };
        for position in 0..n {
            let wave = book.wave_of(position);
            let cohort = book.cohort_of[position] as usize;
            for tally in [
                &mut book.overall,
                &mut book.waves[wave],
                &mut book.cohorts[cohort],
            ] {
                tally.targeted += 1;
                tally.pending += 1;
            }
        }
        book
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// The progress of the target at `position`.
    pub fn get(&self, position: usize) -> Progress {
        self.states[position]
    }

    /// The wave (from 0) of the target at `position`.
    pub fn wave_of(&self, position: usize) -> usize {
        self.wave_ends.partition_point(|&end| end <= position)
    }

    /// Tally of the whole rollout.
    pub fn overall(&self) -> &Tally {
        &self.overall
    }

    /// Tallies per wave, from wave 0.
    pub fn waves(&self) -> &[Tally] {
        &self.waves
    }

    /// Tallies per cohort, by cohort index.
    pub fn cohorts(&self) -> &[Tally] {
        &self.cohorts
    }

    /// Whether every device of `wave` (from 0) succeeded, failed or was skipped. An empty
    /// wave is complete.
    pub fn wave_complete(&self, wave: usize) -> bool {
        self.waves
            .get(wave)
            .is_none_or(|t| t.succeeded + t.failed + t.skipped == t.targeted)
    }

    /// Records the progress of the target at `position`.
    pub fn set(&mut self, position: usize, progress: Progress) {
        let old = std::mem::replace(&mut self.states[position], progress);
        if old == progress {
            return;
        }
        match old {
            Progress::Pending | Progress::Waiting => {
                self.pending.remove(&position);
            }
            Progress::RetryAt { due, .. } => {
                self.retries.remove(&(due, position));
            }
            _ => {}
        }
        match progress {
            Progress::Pending => {
                self.pending.insert(position);
            }
            Progress::RetryAt { due, .. } => {
                self.retries.insert((due, position));
            }
            _ => {}
        }
        let wave = self.wave_of(position);
        let cohort = self.cohort_of[position] as usize;
        for tally in [
            &mut self.overall,
            &mut self.waves[wave],
            &mut self.cohorts[cohort],
        ] {
            *field(tally, old) -= 1;
            *field(tally, progress) += 1;
        }
    }

    /// Adds a device that started matching during the rollout (`includeNewDevices`) to the
    /// last wave, pending, and returns its position. `cohort` may be a new index.
    pub fn join_last_wave(&mut self, cohort: u32) -> usize {
        let position = self.states.len();
        self.states.push(Progress::Pending);
        self.cohort_of.push(cohort);
        if self.cohorts.len() <= cohort as usize {
            self.cohorts.resize(cohort as usize + 1, Tally::default());
        }
        if self.wave_ends.is_empty() {
            self.wave_ends.push(0);
            self.waves.push(Tally::default());
        }
        *self.wave_ends.last_mut().expect("at least one wave") += 1;
        self.pending.insert(position);
        let wave = self.waves.len() - 1;
        for tally in [
            &mut self.overall,
            &mut self.waves[wave],
            &mut self.cohorts[cohort as usize],
        ] {
            tally.targeted += 1;
            tally.pending += 1;
        }
        position
    }

    /// The devices to assign now (see the module rules). Pure: the shell marks each one
    /// [`Progress::InFlight`] once its assignment is written.
    pub fn next_assignments(&self, gate: &Gate) -> Vec<Assignment> {
        if gate.paused || !gate.window_open {
            return Vec::new();
        }
        let free = (gate.max_in_flight as usize).saturating_sub(self.overall.in_flight as usize);
        let boundary = self.wave_ends.get(gate.wave).copied().unwrap_or(self.len());
        let retries = self
            .retries
            .iter()
            .take_while(|(due, _)| *due <= gate.now)
            .filter(|(_, position)| *position < boundary)
            .map(|&(_, position)| {
                let attempt = match self.states[position] {
                    Progress::RetryAt { attempt, .. } => attempt + 1,
                    _ => unreachable!("the retry queue holds retrying devices only"),
                };
                Assignment { position, attempt }
            });
        let fresh = self.pending.range(..boundary).map(|&position| Assignment {
            position,
            attempt: 1,
        });
        retries.chain(fresh).take(free).collect()
    }
}

fn field(tally: &mut Tally, progress: Progress) -> &mut u32 {
    match progress {
        Progress::Pending | Progress::Waiting => &mut tally.pending,
        Progress::InFlight { .. } => &mut tally.in_flight,
        Progress::RetryAt { .. } => &mut tally.retrying,
        Progress::Succeeded => &mut tally.succeeded,
        Progress::Failed => &mut tally.failed,
        Progress::Skipped => &mut tally.skipped,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2030-01-01T00:00:00Z";

    fn gate(wave: usize, max_in_flight: u32) -> Gate {
        Gate {
            now: t(NOW),
            wave,
            max_in_flight,
            window_open: true,
            paused: false,
        }
    }

    fn positions(assignments: &[Assignment]) -> Vec<usize> {
        assignments.iter().map(|a| a.position).collect()
    }

    fn retries(limit: i32, initial: &str, max: &str) -> DeviceRetries {
        DeviceRetries {
            limit,
            initial_backoff: initial.parse().unwrap(),
            max_backoff: max.parse().unwrap(),
        }
    }

    #[test]
    fn assigns_in_plan_order_up_to_max_in_flight_and_the_wave_boundary() {
        let mut book = ProgressBook::new(&[2, 5, 10], vec![0; 10]);
        assert_eq!(positions(&book.next_assignments(&gate(0, 10))), [0, 1]);
        assert_eq!(positions(&book.next_assignments(&gate(1, 2))), [0, 1]);
        book.set(0, Progress::InFlight { attempt: 1 });
        assert_eq!(positions(&book.next_assignments(&gate(1, 3))), [1, 2]);
        book.set(1, Progress::InFlight { attempt: 1 });
        book.set(2, Progress::InFlight { attempt: 1 });
        assert!(book.next_assignments(&gate(1, 3)).is_empty(), "3 in flight");
        book.set(0, Progress::Succeeded);
        assert_eq!(positions(&book.next_assignments(&gate(1, 3))), [3]);
    }

    #[test]
    fn nothing_while_paused_or_outside_the_window() {
        let book = ProgressBook::new(&[3], vec![0; 3]);
        let mut g = gate(0, 3);
        g.paused = true;
        assert!(book.next_assignments(&g).is_empty());
        g.paused = false;
        g.window_open = false;
        assert!(book.next_assignments(&g).is_empty());
    }

    #[test]
    fn waiting_devices_are_not_assigned_until_back() {
        let mut book = ProgressBook::new(&[3], vec![0; 3]);
        book.set(0, Progress::Waiting);
        assert_eq!(positions(&book.next_assignments(&gate(0, 3))), [1, 2]);
        assert!(!book.wave_complete(0));
        book.set(0, Progress::Pending);
        assert_eq!(positions(&book.next_assignments(&gate(0, 3))), [0, 1, 2]);
    }

    #[test]
    fn retries_wait_for_their_backoff_and_come_first() {
        let mut book = ProgressBook::new(&[4], vec![0; 4]);
        let policy = retries(2, "1m", "30m");
        book.set(3, Progress::InFlight { attempt: 1 });
        book.set(3, after_failed_attempt(&policy, 1, t(NOW)));
        let mut g = gate(0, 2);
        assert_eq!(positions(&book.next_assignments(&g)), [0, 1], "not due");
        g.now = t("2030-01-01T00:01:00Z");
        assert_eq!(
            book.next_assignments(&g),
            [
                Assignment {
                    position: 3,
                    attempt: 2
                },
                Assignment {
                    position: 0,
                    attempt: 1
                }
            ]
        );
        assert_eq!(book.overall().retrying, 1);
        assert_eq!(
            book.overall().in_flight,
            0,
            "a retrying device is not in flight"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = retries(10, "1m", "5m");
        let minutes = |n| retry_backoff(&policy, n).as_secs() / 60;
        assert_eq!([1, 2, 3, 4, 40].map(minutes), [1, 2, 4, 5, 5]);
        let at = t(NOW);
        assert_eq!(
            after_failed_attempt(&policy, 2, at),
            Progress::RetryAt {
                due: t("2030-01-01T00:02:00Z"),
                attempt: 2
            }
        );
    }

    #[test]
    fn retries_are_limited() {
        let policy = retries(2, "1m", "30m");
        let at = t(NOW);
        assert!(matches!(
            after_failed_attempt(&policy, 2, at),
            Progress::RetryAt { .. }
        ));
        assert_eq!(after_failed_attempt(&policy, 3, at), Progress::Failed);
        assert_eq!(
            after_failed_attempt(&retries(0, "1m", "1m"), 1, at),
            Progress::Failed
        );
    }

    #[test]
    fn wave_completes_when_all_succeeded_failed_or_skipped() {
        let mut book = ProgressBook::new(&[3, 3, 4], vec![0, 0, 1, 1]);
        assert!(!book.wave_complete(0));
        assert!(book.wave_complete(1), "an empty wave is complete");
        book.set(0, Progress::Succeeded);
        book.set(1, Progress::Failed);
        book.set(2, Progress::InFlight { attempt: 1 });
        assert!(!book.wave_complete(0));
        book.set(
            2,
            Progress::RetryAt {
                due: t(NOW),
                attempt: 1,
            },
        );
        assert!(!book.wave_complete(0), "a retrying device is not finished");
        book.set(2, Progress::Skipped);
        assert!(book.wave_complete(0));
        assert_eq!(book.waves()[0].failed, 1);
        assert_eq!(book.cohorts()[0].succeeded, 1);
        assert_eq!(book.cohorts()[1].skipped, 1);
        assert_eq!(book.cohorts()[1].pending, 1);
    }

    #[test]
    fn new_devices_join_the_last_wave() {
        let mut book = ProgressBook::new(&[1, 2], vec![0, 0]);
        book.set(0, Progress::Succeeded);
        book.set(1, Progress::Succeeded);
        assert!(book.wave_complete(1));
        let position = book.join_last_wave(1);
        assert_eq!(position, 2);
        assert_eq!(book.wave_of(position), 1);
        assert!(!book.wave_complete(1));
        assert_eq!(book.cohorts()[1].targeted, 1);
        assert_eq!(positions(&book.next_assignments(&gate(1, 5))), [2]);
    }

    fn recount(book: &ProgressBook) -> Tally {
        let mut tally = Tally {
            targeted: book.len() as u32,
            ..Tally::default()
        };
        for position in 0..book.len() {
            *field(&mut tally, book.get(position)) += 1;
        }
        tally
    }

    #[derive(Clone, Debug)]
    enum Outcome {
        Succeed,
        Fail,
        Skip,
        GoOffline,
    }

    proptest! {
        /// Driven like the controller drives it: never more than maxInFlight in flight, each
        /// (device, attempt) assigned once, tallies equal a recount, and it finishes.
        #[test]
        fn never_more_than_max_in_flight_and_each_attempt_once(
            n in 0usize..120,
            cuts in proptest::collection::vec(0usize..=120, 0..4),
            max_in_flight in 1u32..8,
            limit in 0i32..3,
            outcomes in proptest::collection::vec(
                prop_oneof![
                    6 => Just(Outcome::Succeed),
                    3 => Just(Outcome::Fail),
                    1 => Just(Outcome::Skip),
                    1 => Just(Outcome::GoOffline),
                ],
                1..64,
            ),
        ) {
            let mut ends: Vec<usize> = cuts.into_iter().map(|c| c.min(n)).collect();
            ends.sort();
            ends.push(n);
            let policy = retries(limit, "1m", "4m");
            let mut book = ProgressBook::new(&ends, (0..n).map(|p| (p % 3) as u32).collect());
            let mut assigned = HashSet::new();
            let mut now = t(NOW);
            let mut wave = 0;
            let mut step = 0;
            let mut offline = Vec::new();
            let mut offline_budget = 20;
            for _round in 0..10_000 {
                if book.overall().succeeded + book.overall().failed + book.overall().skipped
                    == n as u32
                {
                    break;
                }
                let g = Gate { now, wave, max_in_flight, window_open: true, paused: false };
                for a in book.next_assignments(&g) {
                    prop_assert!(a.position < ends[wave]);
                    prop_assert!(assigned.insert((a.position, a.attempt)), "assigned twice: {a:?}");
                    book.set(a.position, Progress::InFlight { attempt: a.attempt });
                }
                prop_assert!(book.overall().in_flight <= max_in_flight);
                prop_assert_eq!(*book.overall(), recount(&book));
                // Settle the in-flight devices one outcome each.
                let flying: Vec<_> = (0..book.len())
                    .filter_map(|p| match book.get(p) {
                        Progress::InFlight { attempt } => Some((p, attempt)),
                        _ => None,
                    })
                    .collect();
                for (p, attempt) in flying {
                    let outcome = &outcomes[step % outcomes.len()];
                    step += 1;
                    let next = match outcome {
                        Outcome::Succeed => Progress::Succeeded,
                        Outcome::Fail => after_failed_attempt(&policy, attempt, now),
                        Outcome::Skip => Progress::Skipped,
                        Outcome::GoOffline => Progress::Succeeded,
                    };
                    book.set(p, next);
                }
                // Devices come back online; an offline pending device waits.
                for p in offline.drain(..) {
                    if book.get(p) == Progress::Waiting {
                        book.set(p, Progress::Pending);
                    }
                }
                step += 1;
                if let Some(&p) = book.pending.iter().next()
                    && matches!(outcomes[step % outcomes.len()], Outcome::GoOffline)
                    && offline_budget > 0
                {
                    offline_budget -= 1;
                    book.set(p, Progress::Waiting);
                    offline.push(p);
                }
                while book.wave_complete(wave) && wave + 1 < ends.len() {
                    wave += 1;
                }
                now = now.checked_add(SignedDuration::from_secs(30)).unwrap();
            }
            let done = book.overall();
            prop_assert_eq!(done.succeeded + done.failed + done.skipped, n as u32, "finishes");
            prop_assert!(book.wave_complete(ends.len() - 1));
        }
    }
}
