//! Failure thresholds, judged overall, per wave and per cohort (model × from-version), so one
//! bad hardware model stops a rollout even when the fleet-wide rate looks fine.
//!
//! A [`ThresholdLimit`] is crossed when (the crds say "reach", so both are `≥`):
//! - `count` is set and failed ≥ count, or
//! - `percent` is set, at least `minFinished` devices of the scope finished (succeeded or
//!   failed), and failed × 100 ≥ percent × finished.
//!
//! A scope with no failure never crosses, so `count: 0` or `percent: 0` mean "the first
//! failure stops it" rather than "stop at once".

use std::fmt;

use flotilla_crds::firmware_rollout::{DeviceCounts, FailureThreshold, ThresholdLimit};

/// Device counts of one scope. Every targeted device is in exactly one of the other fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Devices of the scope.
    pub targeted: u32,
    /// Not assigned yet (including offline devices waiting under `offlinePolicy: Wait`).
    pub pending: u32,
    /// Assigned and not finished, soaking included.
    pub in_flight: u32,
    /// Failed an attempt and waiting for the retry's backoff.
    pub retrying: u32,
    /// Succeeded (soak passed).
    pub succeeded: u32,
    /// Failed for good (retries used up, or timed out).
    pub failed: u32,
    /// Left out while running.
    pub skipped: u32,
}

impl Tally {
    /// Devices that succeeded or failed: what a percentage is taken of.
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed
    }

    /// The status form. Retrying devices count as updating: they were assigned and are not
    /// finished.
    pub fn to_counts(&self) -> DeviceCounts {
        let n = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        DeviceCounts {
            targeted: n(self.targeted),
            pending: n(self.pending),
            updating: n(self.in_flight + self.retrying),
            succeeded: n(self.succeeded),
            failed: n(self.failed),
            skipped: n(self.skipped),
        }
    }
}

/// A cohort: devices of one model updating from one version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CohortKey {
    /// Device model.
    pub model: String,
    /// Version updated from.
    pub from_version: String,
}

/// Where a threshold was judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole rollout.
    Overall,
    /// One wave, numbered from 1.
    Wave(u32),
    /// One cohort.
    Cohort(CohortKey),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Overall => f.write_str("overall"),
            Scope::Wave(number) => write!(f, "wave {number}"),
            Scope::Cohort(key) => write!(f, "cohort model={} from={}", key.model, key.from_version),
        }
    }
}

/// Which part of a limit was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `count` failed devices.
    Count(u32),
    /// `percent` of finished devices.
    Percent(u32),
}

/// A crossed threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crossing {
    /// Where.
    pub scope: Scope,
    /// Failed devices of the scope.
    pub failed: u32,
    /// Finished devices of the scope.
    pub finished: u32,
    /// The limit reached.
    pub limit: Limit,
}

impl fmt::Display for Crossing {
    /// E.g. `cohort model=gw-200 from=1.2.0: 3 of 10 finished failed, limit 20%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} finished failed, limit ",
            self.scope, self.failed, self.finished
        )?;
        match self.limit {
            Limit::Count(count) => write!(f, "{count} failed"),
            Limit::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// The limits of a rollout, with the per-wave and per-cohort defaults resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thresholds {
    overall: ThresholdLimit,
    per_wave: ThresholdLimit,
    per_cohort: ThresholdLimit,
    min_finished: u32,
}

impl Thresholds {
    /// From the spec: `perWave` and `perCohort` default to `overall.percent`.
    pub fn new(spec: &FailureThreshold) -> Self {
        Self {
            overall: spec.overall.clone(),
            per_wave: spec.effective_per_wave(),
            per_cohort: spec.effective_per_cohort(),
            min_finished: u32::try_from(spec.min_finished).unwrap_or(0),
        }
    }

    /// Whether `tally` crosses the limit of `scope`. Cheap: the shell can judge just the
    /// scopes a device event changed.
    pub fn check(&self, scope: Scope, tally: &Tally) -> Option<Crossing> {
        let limit = match scope {
            Scope::Overall => &self.overall,
            Scope::Wave(_) => &self.per_wave,
            Scope::Cohort(_) => &self.per_cohort,
        };
        let reached = reached(limit, self.min_finished, tally)?;
        Some(Crossing {
            scope,
            failed: tally.failed,
            finished: tally.finished(),
            limit: reached,
        })
    }

    /// The first crossing: overall, then waves, then cohorts, each in the order given.
    pub fn first_crossing<'a>(
        &self,
        overall: &Tally,
        waves: impl IntoIterator<Item = (u32, &'a Tally)>,
        cohorts: impl IntoIterator<Item = (&'a CohortKey, &'a Tally)>,
    ) -> Option<Crossing> {
        self.check(Scope::Overall, overall)
            .or_else(|| {
                waves
                    .into_iter()
                    .find_map(|(number, tally)| self.check(Scope::Wave(number), tally))
            })
            .or_else(|| {
                cohorts
                    .into_iter()
                    .find_map(|(key, tally)| self.check(Scope::Cohort(key.clone()), tally))
            })
    }
}

fn reached(limit: &ThresholdLimit, min_finished: u32, tally: &Tally) -> Option<Limit> {
    if tally.failed == 0 {
        return None;
    }
    let count = limit
        .count
        .and_then(|c| u32::try_from(c).ok())
        .filter(|&c| tally.failed >= c)
        .map(Limit::Count);
    let percent = || {
        let percent = u32::try_from(limit.percent?).ok()?;
        let finished = tally.finished();
        (finished >= min_finished
            && u64::from(tally.failed) * 100 >= u64::from(percent) * u64::from(finished))
        .then_some(Limit::Percent(percent))
    };
    count.or_else(percent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(percent: Option<i32>, count: Option<i32>) -> ThresholdLimit {
        ThresholdLimit { percent, count }
    }

    fn spec(overall: ThresholdLimit, min_finished: i32) -> FailureThreshold {
        FailureThreshold {
            overall,
            per_wave: None,
            per_cohort: None,
            min_finished,
        }
    }

    fn tally(succeeded: u32, failed: u32) -> Tally {
        Tally {
            targeted: succeeded + failed,
            succeeded,
            failed,
            ..Tally::default()
        }
    }

    fn cohort(model: &str, from: &str) -> CohortKey {
        CohortKey {
            model: model.into(),
            from_version: from.into(),
        }
    }

    #[test]
    fn percent_boundary_is_inclusive() {
        let t = Thresholds::new(&spec(limit(Some(20), None), 10));
        assert_eq!(t.check(Scope::Overall, &tally(9, 1)), None, "10%");
        assert_eq!(
            t.check(Scope::Overall, &tally(8, 2)).map(|c| c.limit),
            Some(Limit::Percent(20)),
            "exactly 20% reaches the limit"
        );
        assert_eq!(t.check(Scope::Overall, &tally(9, 2)), None, "18.2%");
    }

    #[test]
    fn min_finished_holds_a_percentage_back() {
        let t = Thresholds::new(&spec(limit(Some(5), None), 10));
        assert_eq!(t.check(Scope::Overall, &tally(1, 1)), None, "50% of 2");
        assert_eq!(t.check(Scope::Overall, &tally(8, 1)), None, "9 finished");
        assert!(
            t.check(Scope::Overall, &tally(9, 1)).is_some(),
            "10 finished"
        );
        // In-flight devices are not finished and do not count.
        let mut busy = tally(1, 1);
        busy.in_flight = 50;
        assert_eq!(t.check(Scope::Overall, &busy), None);
    }

    #[test]
    fn count_limits_ignore_min_finished() {
        let t = Thresholds::new(&spec(limit(None, Some(3)), 100));
        assert_eq!(t.check(Scope::Overall, &tally(0, 2)), None);
        let crossing = t.check(Scope::Overall, &tally(0, 3)).unwrap();
        assert_eq!(crossing.limit, Limit::Count(3));
        assert_eq!(
            crossing.to_string(),
            "overall: 3 of 3 finished failed, limit 3 failed"
        );
    }

    #[test]
    fn zero_limits_stop_at_the_first_failure_not_before() {
        for zero in [limit(Some(0), None), limit(None, Some(0))] {
            let t = Thresholds::new(&spec(zero, 1));
            assert_eq!(t.check(Scope::Overall, &tally(5, 0)), None);
            assert!(t.check(Scope::Overall, &tally(5, 1)).is_some());
        }
    }

    #[test]
    fn count_is_reported_before_percent() {
        let t = Thresholds::new(&spec(limit(Some(10), Some(2)), 1));
        assert_eq!(
            t.check(Scope::Overall, &tally(0, 2)).unwrap().limit,
            Limit::Count(2)
        );
    }

    #[test]
    fn one_cohort_failing_stops_while_the_fleet_rate_is_fine() {
        let t = Thresholds::new(&FailureThreshold {
            overall: limit(Some(20), None),
            per_wave: None,
            per_cohort: Some(limit(Some(20), None)),
            min_finished: 10,
        });
        let healthy = cohort("sensor-v2", "2.3.0");
        let broken = cohort("gw-200", "1.2.0");
        let cohorts = [
            (healthy.clone(), tally(90, 0)),
            (broken.clone(), tally(7, 3)),
        ];
        let overall = tally(97, 3);
        assert_eq!(t.check(Scope::Overall, &overall), None, "3% overall");
        let crossing = t
            .first_crossing(
                &overall,
                [(1, &overall)],
                cohorts.iter().map(|(k, t)| (k, t)),
            )
            .unwrap();
        assert_eq!(crossing.scope, Scope::Cohort(broken));
        assert_eq!(
            crossing.to_string(),
            "cohort model=gw-200 from=1.2.0: 3 of 10 finished failed, limit 20%"
        );
    }

    #[test]
    fn per_wave_and_per_cohort_default_to_overall_percent() {
        let t = Thresholds::new(&spec(limit(Some(30), Some(1000)), 1));
        // The overall count does not carry over to waves and cohorts: only the percent.
        let wave = tally(7, 3);
        let crossing = t.check(Scope::Wave(2), &wave).unwrap();
        assert_eq!(crossing.limit, Limit::Percent(30));
        assert_eq!(
            crossing.to_string(),
            "wave 2: 3 of 10 finished failed, limit 30%"
        );
        assert_eq!(
            t.check(Scope::Cohort(cohort("m", "1.0.0")), &tally(8, 2)),
            None
        );
        assert!(
            t.check(Scope::Cohort(cohort("m", "1.0.0")), &tally(7, 3))
                .is_some()
        );
    }

    #[test]
    fn own_per_wave_limit_wins() {
        let t = Thresholds::new(&FailureThreshold {
            overall: limit(Some(50), None),
            per_wave: Some(limit(None, Some(2))),
            per_cohort: None,
            min_finished: 1,
        });
        assert_eq!(
            t.check(Scope::Wave(1), &tally(100, 2)).unwrap().limit,
            Limit::Count(2)
        );
        assert_eq!(t.check(Scope::Overall, &tally(100, 2)), None);
    }

    #[test]
    fn overall_is_reported_first() {
        let t = Thresholds::new(&spec(limit(None, Some(1)), 1));
        let bad = tally(0, 1);
        let key = cohort("m", "1.0.0");
        let crossing = t.first_crossing(&bad, [(1, &bad)], [(&key, &bad)]).unwrap();
        assert_eq!(crossing.scope, Scope::Overall);
    }

    #[test]
    fn counts_map_retrying_to_updating() {
        let t = Tally {
            targeted: 10,
            pending: 1,
            in_flight: 2,
            retrying: 3,
            succeeded: 2,
            failed: 1,
            skipped: 1,
        };
        let counts = t.to_counts();
        assert_eq!(counts.updating, 5);
        assert_eq!(counts.targeted, 10);
        assert_eq!(counts.skipped, 1);
    }

    proptest! {
        /// More failures (with the same finished count) never un-cross a limit.
        #[test]
        fn crossing_is_monotone_in_failures(
            percent in proptest::option::of(0i32..=100),
            count in proptest::option::of(0i32..50),
            min_finished in 1i32..50,
            finished in 0u32..200,
            failed_a in 0u32..200,
            failed_b in 0u32..200,
        ) {
            prop_assume!(percent.is_some() || count.is_some());
            let (low, high) = (failed_a.min(failed_b).min(finished), failed_a.max(failed_b).min(finished));
            let t = Thresholds::new(&spec(limit(percent, count), min_finished));
            let crossed = |failed| t.check(Scope::Overall, &tally(finished - failed, failed)).is_some();
            prop_assert!(!crossed(low) || crossed(high));
        }
    }
}
