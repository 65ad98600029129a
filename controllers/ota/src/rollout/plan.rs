//! The rollout plan, fixed at start: which devices, in which order, in which wave, and a
//! hash of it for approval.
//!
//! - **Exclusions** (each device counted once, under the first reason that applies, in this
//!   order): incompatible model; already on the release's version; unknown version (none
//!   reported, or not a semantic version — the rollout could neither compare it with
//!   `minimumFromVersion` nor roll back to it); below `minimumFromVersion`; offline with
//!   `offlinePolicy: Skip` (never seen, or not seen for `offlineAfter`); held by another
//!   rollout (its `flotilla.dev/rollout` label names another rollout).
//! - **Order**: by SHA-256(rollout UID, 0, device name), ties by name. Stable across
//!   restarts and leader changes (nothing depends on list order), different per rollout, and
//!   spreading sites and name prefixes over the waves.
//! - **Waves** are cumulative boundaries: `percent` → ⌈p·N/100⌉, `count` → min(count, N),
//!   made non-decreasing, the last = N, the first ≥ 1 when N ≥ 1. A wave may be empty.
//! - **Hash**: SHA-256 over a canonical text of what approval approves: release version,
//!   ordered targets (name, model, from-version), boundaries, maxInFlight, window.
//! - **Timeline**: each wave takes ⌈devices/maxInFlight⌉ rounds of (update duration + soak
//!   time); a round starts only while the window is open; a timed pause adds its duration;
//!   an `untilResumed` pause is assumed to be resumed at once (the estimate is of the
//!   machine's time, not of people's); empty waves take no time and do not pause.
//!
//! Cost: O(n log n) for the sort, everything else linear.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use flotilla_crds::firmware_release::FirmwareReleaseSpec;
use flotilla_crds::firmware_rollout::{
    Exclusions, FirmwareRolloutSpec, MaintenanceWindow, OfflinePolicy, PlannedWave, RolloutPlan,
    Wave,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sha2::{Digest, Sha256};

use super::thresholds::CohortKey;
use super::window::{Window, WindowError};

/// Most holder names kept for the `DevicesContended` condition.
pub const MAX_LISTED_HOLDERS: usize = 10;

/// A Device as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Device name.
    pub name: String,
    /// `spec.model`.
    pub model: String,
    /// `status.currentVersion`.
    pub current_version: Option<String>,
    /// `status.lastSeen`.
    pub last_seen: Option<Timestamp>,
    /// The `flotilla.dev/rollout` label, if set.
    pub rollout_label: Option<String>,
}

/// A device the rollout updates, with its cohort (model × version updated from).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Device name.
    pub name: String,
    /// Device model.
    pub model: String,
    /// The version it ran when the plan was made.
    pub from_version: String,
}

impl Target {
    /// The cohort the device belongs to.
    pub fn cohort(&self) -> CohortKey {
        CohortKey {
            model: self.model.clone(),
            from_version: self.from_version.clone(),
        }
    }
}

/// Everything the plan depends on.
#[derive(Clone, Debug)]
pub struct PlanInput<'a> {
    /// The FirmwareRollout's name (a device labelled with it is not held by another).
    pub rollout_name: &'a str,
    /// The FirmwareRollout's UID: seeds the order.
    pub rollout_uid: &'a str,
    /// The rollout spec.
    pub spec: &'a FirmwareRolloutSpec,
    /// The release spec.
    pub release: &'a FirmwareReleaseSpec,
    /// The Devices the selector matched.
    pub candidates: Vec<Candidate>,
    /// The time of planning: offline is judged and the timeline starts from it.
    pub now: Timestamp,
    /// Expected time for one device to download and install (soak time is added).
    pub update_duration: Duration,
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The release's version does not parse.
    #[error("release version {0:?} is not a semantic version")]
    ReleaseVersion(String),
    /// The release's minimumFromVersion does not parse.
    #[error("release minimumFromVersion {0:?} is not a semantic version")]
    MinimumVersion(String),
    /// The maintenance window is unusable.
    #[error("maintenance window: {0}")]
    Window(#[from] WindowError),
}

/// How far a waiting rollout's estimated completion may drift before the shown plan is
/// replaced: estimates move with the clock while nothing else changes, and a status rewritten
/// every refresh for that alone is churn (GitOps tools and watchers see every write).
pub const ESTIMATE_DRIFT: SignedDuration = SignedDuration::from_mins(5);

/// The plan to show in status before the start: `previous` while it still describes the
/// proposal — everything but the time estimates equal, and the estimated completion within
/// [`ESTIMATE_DRIFT`] — else the proposal.
pub fn shown(previous: Option<&RolloutPlan>, proposed: &RolloutPlan) -> RolloutPlan {
    let Some(previous) = previous else {
        return proposed.clone();
    };
    let untimed = |plan: &RolloutPlan| RolloutPlan {
        waves: plan
            .waves
            .iter()
            .map(|w| PlannedWave {
                estimated_start_at: None,
                estimated_finish_at: None,
                ..w.clone()
            })
            .collect(),
        estimated_completion_at: None,
        computed_at: None,
        ..plan.clone()
    };
    let close = match (
        &previous.estimated_completion_at,
        &proposed.estimated_completion_at,
    ) {
        (None, None) => true,
        (Some(a), Some(b)) => a.0.duration_since(b.0).abs() < ESTIMATE_DRIFT,
        _ => false,
    };
    if close && untimed(previous) == untimed(proposed) {
        previous.clone()
    } else {
        proposed.clone()
    }
}

/// A computed plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The targets in rollout order.
    pub targets: Vec<Target>,
    /// Cumulative end position of each wave; the last is `targets.len()`.
    pub wave_ends: Vec<usize>,
    /// The plan's hash (64 hex digits).
    pub hash: String,
    /// Other rollouts holding candidates (sorted, at most [`MAX_LISTED_HOLDERS`]).
    pub holders: Vec<String>,
    /// The plan as written to `status.plan`.
    pub status: RolloutPlan,
}

impl Plan {
    /// The cohorts (sorted) and each target's index into them, for
    /// [`ProgressBook::new`](super::assign::ProgressBook::new).
    pub fn cohorts(&self) -> (Vec<CohortKey>, Vec<u32>) {
        cohort_index(&self.targets)
    }
}

/// Makes the plan.
pub fn plan(input: PlanInput<'_>) -> Result<Plan, PlanError> {
    let spec = input.spec;
    let version = semver::Version::parse(&input.release.version)
        .map_err(|_| PlanError::ReleaseVersion(input.release.version.clone()))?;
    let minimum = input
        .release
        .minimum_from_version
        .as_deref()
        .map(|m| semver::Version::parse(m).map_err(|_| PlanError::MinimumVersion(m.to_owned())))
        .transpose()?;
    let window = spec
        .maintenance_window
        .as_ref()
        .map(Window::new)
        .transpose()?;
    let offline_after =
        SignedDuration::try_from(spec.offline_after.as_std()).unwrap_or(SignedDuration::MAX);

    let mut exclusions = Exclusions::default();
    let mut holders = BTreeSet::new();
    let mut targets = Vec::with_capacity(input.candidates.len());
    for candidate in input.candidates {
        let current = candidate
            .current_version
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok());
        let offline = candidate
            .last_seen
            .is_none_or(|seen| input.now.duration_since(seen) > offline_after);
        let holder = candidate
            .rollout_label
            .as_deref()
            .filter(|&label| label != input.rollout_name);
        let slot = if !input.release.fits_model(&candidate.model) {
            &mut exclusions.incompatible_model
        } else if current.as_ref() == Some(&version)
            || candidate.current_version.as_deref() == Some(input.release.version.as_str())
        {
            &mut exclusions.already_on_version
        } else if current.is_none() {
            &mut exclusions.unknown_version
        } else if minimum
            .as_ref()
            .is_some_and(|min| current.as_ref().is_some_and(|c| c < min))
        {
            &mut exclusions.below_minimum_version
        } else if offline && spec.offline_policy == OfflinePolicy::Skip {
            &mut exclusions.offline
        } else if let Some(holder) = holder {
            if holders.len() < MAX_LISTED_HOLDERS || holders.contains(holder) {
                holders.insert(holder.to_owned());
            }
            &mut exclusions.held_by_another_rollout
        } else {
            targets.push(Target {
                name: candidate.name,
                model: candidate.model,
                from_version: candidate
                    .current_version
                    .expect("a parsed version was present"),
            });
            continue;
        };
        *slot += 1;
    }

    order(&mut targets, input.rollout_uid);
    let wave_ends = wave_ends(&spec.waves, targets.len());
    let max_in_flight = u32::try_from(spec.max_in_flight).unwrap_or(1).max(1);
    let hash = plan_hash(
        &input.release.version,
        &targets,
        &wave_ends,
        max_in_flight,
        spec.maintenance_window.as_ref(),
    );
    let per_device = input.update_duration + spec.soak_time.as_std();
    let timeline = estimate(
        &wave_ends,
        &spec.waves,
        max_in_flight,
        per_device,
        window.as_ref(),
        input.now,
    );
    let mut previous_end = 0;
    let waves = wave_ends
        .iter()
        .enumerate()
        .map(|(i, &end)| {
            let devices = end - previous_end;
            previous_end = end;
            let times = timeline.waves.get(i).copied().flatten();
            PlannedWave {
                number: i as i32 + 1,
                devices: devices as i32,
                estimated_start_at: times.map(|(start, _)| Time(start)),
                estimated_finish_at: times.map(|(_, finish)| Time(finish)),
            }
        })
        .collect();
    let status = RolloutPlan {
        hash: hash.clone(),
        version: input.release.version.clone(),
        targeted: targets.len() as i32,
        waves,
        excluded: exclusions,
        estimated_completion_at: timeline.completion.map(Time),
        computed_at: Some(Time(input.now)),
    };
    Ok(Plan {
        targets,
        wave_ends,
        hash,
        holders: holders.into_iter().collect(),
        status,
    })
}

/// Sorts targets into rollout order: SHA-256(uid, 0, name), ties by name.
pub fn order(targets: &mut [Target], rollout_uid: &str) {
    targets.sort_by_cached_key(|target| {
        let mut hasher = Sha256::new();
        hasher.update(rollout_uid.as_bytes());
        hasher.update([0]);
        hasher.update(target.name.as_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        (digest, target.name.clone())
    });
}

/// Cumulative wave boundaries over `n` targets (see the module docs).
pub fn wave_ends(waves: &[Wave], n: usize) -> Vec<usize> {
    let mut ends = Vec::with_capacity(waves.len().max(1));
    let mut previous = 0;
    for wave in waves {
        let end = match (wave.percent, wave.count) {
            (Some(percent), _) => {
                let percent = percent.clamp(0, 100) as u64;
                (percent * n as u64).div_ceil(100) as usize
            }
            (None, Some(count)) => (count.max(0) as usize).min(n),
            (None, None) => n,
        };
        previous = end.max(previous).max(usize::from(n > 0));
        ends.push(previous);
    }
    match ends.last_mut() {
        Some(last) => *last = n,
        None => ends.push(n),
    }
    ends
}

/// The plan hash: SHA-256 (hex) of a canonical text of what approval approves.
pub fn plan_hash(
    version: &str,
    targets: &[Target],
    wave_ends: &[usize],
    max_in_flight: u32,
    window: Option<&MaintenanceWindow>,
) -> String {
    let mut hasher = Sha256::new();
    // Fields are written as lines with fixed names; names, models and versions cannot hold
    // tabs or newlines, so the encoding is unambiguous.
    hasher.update(b"flotilla.dev/rollout-plan v1\n");
    hasher.update(format!("version\t{version}\n"));
    hasher.update(format!("maxInFlight\t{max_in_flight}\n"));
    let ends: Vec<String> = wave_ends.iter().map(usize::to_string).collect();
    hasher.update(format!("waves\t{}\n", ends.join(",")));
    match window {
        Some(w) => {
            let mut days: Vec<String> = w.days.iter().map(|d| d.to_string()).collect();
            days.sort();
            days.dedup();
            hasher.update(format!(
                "window\t{}\t{}\t{}\t{}\n",
                days.join(","),
                w.start,
                w.end,
                w.time_zone
            ));
        }
        None => hasher.update(b"window\tnone\n"),
    }
    hasher.update(format!("targets\t{}\n", targets.len()));
    for target in targets {
        hasher.update(target.name.as_bytes());
        hasher.update(b"\t");
        hasher.update(target.model.as_bytes());
        hasher.update(b"\t");
        hasher.update(target.from_version.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The cohorts of `targets` (sorted) and each target's index into them.
pub fn cohort_index(targets: &[Target]) -> (Vec<CohortKey>, Vec<u32>) {
    let keys: BTreeMap<CohortKey, u32> = targets
        .iter()
        .map(|t| (t.cohort(), 0))
        .collect::<BTreeMap<_, _>>()
        .into_keys()
        .enumerate()
        .map(|(i, key)| (key, i as u32))
        .collect();
    let of = targets.iter().map(|t| keys[&t.cohort()]).collect();
    let mut cohorts: Vec<(CohortKey, u32)> = keys.into_iter().collect();
    cohorts.sort_by_key(|(_, i)| *i);
    (cohorts.into_iter().map(|(k, _)| k).collect(), of)
}

/// The estimated timeline of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    /// Per wave: estimated start and finish; `None` when it cannot be estimated (a window
    /// that never opens, or times beyond the representable range).
    pub waves: Vec<Option<(Timestamp, Timestamp)>>,
    /// The finish of the last wave.
    pub completion: Option<Timestamp>,
}

/// Estimates when each wave starts and finishes (see the module docs). `per_device` is the
/// time a device stays in flight.
pub fn estimate(
    wave_ends: &[usize],
    waves: &[Wave],
    max_in_flight: u32,
    per_device: Duration,
    window: Option<&Window>,
    start: Timestamp,
) -> Timeline {
    let per_device = SignedDuration::try_from(per_device).unwrap_or(SignedDuration::MAX);
    let mut at = Some(start);
    let mut previous_end = 0;
    let mut times = Vec::with_capacity(wave_ends.len());
    for (i, &end) in wave_ends.iter().enumerate() {
        let devices = end - previous_end;
        previous_end = end;
        let rounds = devices.div_ceil(max_in_flight.max(1) as usize);
        let wave = at.and_then(|t| run_rounds(t, rounds, per_device, window));
        times.push(wave);
        at = wave.map(|(_, finish)| finish);
        let pause = waves
            .get(i)
            .and_then(|w| w.pause.as_ref())
            .and_then(|p| p.duration.as_ref());
        if let (Some(pause), true) = (pause, devices > 0) {
            at = at.and_then(|t| {
                t.checked_add(SignedDuration::try_from(pause.as_std()).ok()?)
                    .ok()
            });
        }
    }
    Timeline {
        completion: times.last().copied().flatten().map(|(_, finish)| finish),
        waves: times,
    }
}

/// Start and finish of `rounds` consecutive rounds of `length`, each starting while the
/// window is open.
fn run_rounds(
    at: Timestamp,
    rounds: usize,
    length: SignedDuration,
    window: Option<&Window>,
) -> Option<(Timestamp, Timestamp)> {
    let after = |t: Timestamp, n: usize| t.checked_add(length.checked_mul(n as i32)?).ok();
    let Some(window) = window else {
        return Some((at, after(at, rounds)?));
    };
    if rounds == 0 {
        return Some((at, at));
    }
    let mut remaining = rounds;
    let mut t = window.next_opening(at)?;
    let first = t;
    loop {
        let close = window.closing(t)?;
        // Rounds that start before the window closes; each may run past it.
        let fit = if length.is_zero() {
            remaining
        } else {
            let nanos = |d: SignedDuration| u128::try_from(d.as_nanos()).unwrap_or(0);
            let open = nanos(close.duration_since(t));
            usize::try_from(open.div_ceil(nanos(length).max(1))).unwrap_or(usize::MAX)
        };
        let taken = fit.clamp(1, remaining);
        t = after(t, taken)?;
        remaining -= taken;
        if remaining == 0 {
            return Some((first, t));
        }
        t = window.next_opening(t)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::common::Weekday;
    use flotilla_crds::firmware_rollout::WavePause;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2030-07-01T12:00:00Z";

    fn rollout_spec(extra: serde_json::Value) -> FirmwareRolloutSpec {
        let mut base = serde_json::json!({
            "release": "fw-2-4-1",
            "selector": {"matchLabels": {"ring": "all"}},
            "soakTime": "0s",
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn release(minimum: Option<&str>) -> FirmwareReleaseSpec {
        serde_json::from_value(serde_json::json!({
            "version": "2.4.1",
            "artifact": {"url": "https://fw.example.com/2.4.1.bin", "sha256": "0".repeat(64), "sizeBytes": 1},
            "compatibleModels": ["sensor-v2", "gw-200"],
            "minimumFromVersion": minimum,
        }))
        .unwrap()
    }

    fn device(name: &str, model: &str, version: Option<&str>) -> Candidate {
        Candidate {
            name: name.into(),
            model: model.into(),
            current_version: version.map(Into::into),
            last_seen: Some(ts(NOW)),
            rollout_label: None,
        }
    }

    fn fleet(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| device(&format!("dev-{i:06}"), "sensor-v2", Some("2.3.0")))
            .collect()
    }

    fn input<'a>(
        spec: &'a FirmwareRolloutSpec,
        release: &'a FirmwareReleaseSpec,
        candidates: Vec<Candidate>,
    ) -> PlanInput<'a> {
        PlanInput {
            rollout_name: "spring",
            rollout_uid: "8d3e0a52-0000-4000-8000-000000000001",
            spec,
            release,
            candidates,
            now: ts(NOW),
            update_duration: Duration::from_secs(600),
        }
    }

    #[test]
    fn exclusions_by_reason_each_counted_once() {
        let spec = rollout_spec(serde_json::json!({}));
        let release = release(Some("2.0.0"));
        let mut offline = device("offline", "sensor-v2", Some("2.3.0"));
        offline.last_seen = Some(ts("2030-06-29T12:00:00Z"));
        let mut never_seen = device("never-seen", "sensor-v2", Some("2.3.0"));
        never_seen.last_seen = None;
        let mut held = device("held", "gw-200", Some("2.3.0"));
        held.rollout_label = Some("autumn".into());
        let mut ours = device("ours", "gw-200", Some("2.3.0"));
        ours.rollout_label = Some("spring".into());
        let mut incompatible_and_held = device("other-model", "cam-1", Some("1.0.0"));
        incompatible_and_held.rollout_label = Some("autumn".into());
        let candidates = vec![
            incompatible_and_held,
            device("current", "sensor-v2", Some("2.4.1")),
            device("no-version", "sensor-v2", None),
            device("garbage", "sensor-v2", Some("v2-beta")),
            device("old", "sensor-v2", Some("1.9.9")),
            offline,
            never_seen,
            held,
            ours,
            device("fine", "sensor-v2", Some("2.0.0")),
        ];
        let plan = plan(input(&spec, &release, candidates)).unwrap();
        assert_eq!(
            plan.status.excluded,
            Exclusions {
                incompatible_model: 1,
                below_minimum_version: 1,
                already_on_version: 1,
                offline: 2,
                held_by_another_rollout: 1,
                unknown_version: 2,
            }
        );
        let mut names: Vec<_> = plan.targets.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["fine", "ours"]);
        assert_eq!(plan.holders, ["autumn"]);
        assert_eq!(plan.status.targeted, 2);
    }

    #[test]
    fn offline_devices_are_kept_with_wait() {
        let spec = rollout_spec(serde_json::json!({"offlinePolicy": "Wait"}));
        let release = release(None);
        let mut offline = device("offline", "sensor-v2", Some("2.3.0"));
        offline.last_seen = None;
        let plan = plan(input(&spec, &release, vec![offline])).unwrap();
        assert_eq!(plan.targets.len(), 1);
        assert_eq!(plan.status.excluded.offline, 0);
    }

    #[test]
    fn invalid_release_or_window_is_an_error_not_a_panic() {
        let spec = rollout_spec(serde_json::json!({}));
        let mut bad = release(None);
        bad.version = "two".into();
        assert_eq!(
            plan(input(&spec, &bad, vec![])).unwrap_err(),
            PlanError::ReleaseVersion("two".into())
        );
        let spec = rollout_spec(serde_json::json!({
            "maintenanceWindow": {"start": "01:00", "end": "02:00", "timeZone": "Mars/Olympus"}
        }));
        assert!(matches!(
            plan(input(&spec, &release(None), vec![])).unwrap_err(),
            PlanError::Window(WindowError::TimeZone(_))
        ));
    }

    #[test]
    fn order_ignores_list_order_and_depends_on_the_uid() {
        let spec = rollout_spec(serde_json::json!({}));
        let release = release(None);
        let forward = plan(input(&spec, &release, fleet(50))).unwrap();
        let mut reversed = fleet(50);
        reversed.reverse();
        let backward = plan(input(&spec, &release, reversed)).unwrap();
        assert_eq!(forward.targets, backward.targets);
        assert_eq!(forward.hash, backward.hash);
        let mut other = input(&spec, &release, fleet(50));
        other.rollout_uid = "another-uid";
        let other = plan(other).unwrap();
        assert_ne!(forward.targets, other.targets, "order is per rollout");
        // Not name order: the hash spreads them.
        let mut by_name = forward.targets.clone();
        by_name.sort_by(|a, b| a.name.cmp(&b.name));
        assert_ne!(forward.targets, by_name);
    }

    fn percents(p: &[i32]) -> Vec<Wave> {
        p.iter().copied().map(Wave::percent).collect()
    }

    #[test]
    fn wave_boundaries() {
        let default = percents(&[1, 10, 50, 100]);
        assert_eq!(wave_ends(&default, 0), [0, 0, 0, 0]);
        assert_eq!(wave_ends(&default, 1), [1, 1, 1, 1]);
        assert_eq!(wave_ends(&default, 2), [1, 1, 1, 2]);
        assert_eq!(wave_ends(&default, 3), [1, 1, 2, 3]);
        assert_eq!(wave_ends(&default, 7), [1, 1, 4, 7]);
        assert_eq!(wave_ends(&default, 199), [2, 20, 100, 199], "ceil");
        assert_eq!(
            wave_ends(&default, 100_000),
            [1_000, 10_000, 50_000, 100_000]
        );
        let mixed = vec![
            Wave::count(5),
            Wave::percent(10),
            Wave::count(20),
            Wave::percent(100),
        ];
        assert_eq!(wave_ends(&mixed, 100), [5, 10, 20, 100]);
        assert_eq!(wave_ends(&mixed, 30), [5, 5, 20, 30], "non-decreasing");
        assert_eq!(wave_ends(&mixed, 3), [3, 3, 3, 3], "count capped at N");
        assert_eq!(wave_ends(&mixed, 1000), [5, 100, 100, 1000]);
        // A last wave that is not 100% (refused by validation) still ends at N.
        assert_eq!(wave_ends(&percents(&[10, 50]), 10), [1, 10]);
        assert_eq!(wave_ends(&[], 10), [10]);
    }

    #[test]
    fn hash_covers_what_is_approved() {
        let spec = rollout_spec(serde_json::json!({}));
        let release = release(None);
        let base = plan(input(&spec, &release, fleet(20))).unwrap();
        assert_eq!(base.hash.len(), 64);
        assert!(
            base.hash
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            base.hash,
            plan(input(&spec, &release, fleet(20))).unwrap().hash
        );
        assert_ne!(
            base.hash,
            plan(input(&spec, &release, fleet(21))).unwrap().hash
        );
        let mut moved = fleet(20);
        moved[3].current_version = Some("2.2.0".into());
        assert_ne!(
            base.hash,
            plan(input(&spec, &release, moved)).unwrap().hash,
            "a cohort change"
        );
        let wider = rollout_spec(serde_json::json!({"maxInFlight": 11}));
        assert_ne!(
            base.hash,
            plan(input(&wider, &release, fleet(20))).unwrap().hash
        );
        let waves = rollout_spec(serde_json::json!({"waves": [{"percent": 50}, {"percent": 100}]}));
        assert_ne!(
            base.hash,
            plan(input(&waves, &release, fleet(20))).unwrap().hash
        );
        let windowed = rollout_spec(serde_json::json!({
            "maintenanceWindow": {"start": "01:00", "end": "05:00", "timeZone": "UTC"}
        }));
        assert_ne!(
            base.hash,
            plan(input(&windowed, &release, fleet(20))).unwrap().hash
        );
        let mut newer = release.clone();
        newer.version = "2.4.2".into();
        assert_ne!(
            base.hash,
            plan(input(&spec, &newer, fleet(20))).unwrap().hash
        );
        // Not part of the approval: when it was computed.
        let mut later = input(&spec, &release, fleet(20));
        later.now = ts("2030-07-01T12:05:00Z");
        assert_eq!(base.hash, plan(later).unwrap().hash);
    }

    #[test]
    fn a_waiting_plan_is_shown_unchanged_until_it_or_its_estimate_moves() {
        let spec = rollout_spec(serde_json::json!({"maxInFlight": 5}));
        let release = release(None);
        let first = plan(input(&spec, &release, fleet(20))).unwrap().status;
        let mut later = input(&spec, &release, fleet(20));
        later.now = ts("2030-07-01T12:01:00Z");
        let later = plan(later).unwrap().status;
        assert_ne!(first, later, "the estimates moved with the clock");
        assert_eq!(shown(Some(&first), &later), first, "a minute of drift");
        let mut much_later = input(&spec, &release, fleet(20));
        much_later.now = ts("2030-07-01T12:06:00Z");
        let much_later = plan(much_later).unwrap().status;
        assert_eq!(shown(Some(&first), &much_later), much_later, "six minutes");
        let bigger = plan(input(&spec, &release, fleet(21))).unwrap().status;
        assert_eq!(shown(Some(&first), &bigger), bigger, "another plan");
        assert_eq!(shown(None, &first), first);
    }

    #[test]
    fn timeline_without_a_window() {
        let spec = rollout_spec(serde_json::json!({
            "maxInFlight": 10,
            "soakTime": "5m",
            "waves": [
                {"percent": 10, "pause": {"duration": "1h"}},
                {"percent": 50, "pause": {"untilResumed": true}},
                {"percent": 100},
            ],
        }));
        let plan = plan(input(&spec, &release(None), fleet(100))).unwrap();
        // 15 minutes per round (10m update + 5m soak); waves of 10, 40, 50 devices.
        let waves: Vec<_> = plan
            .status
            .waves
            .iter()
            .map(|w| {
                (
                    w.devices,
                    w.estimated_start_at.as_ref().unwrap().0.to_string(),
                    w.estimated_finish_at.as_ref().unwrap().0.to_string(),
                )
            })
            .collect();
        assert_eq!(
            waves,
            [
                (
                    10,
                    "2030-07-01T12:00:00Z".into(),
                    "2030-07-01T12:15:00Z".into()
                ),
                (
                    40,
                    "2030-07-01T13:15:00Z".into(),
                    "2030-07-01T14:15:00Z".into()
                ),
                (
                    50,
                    "2030-07-01T14:15:00Z".into(),
                    "2030-07-01T15:30:00Z".into()
                ),
            ]
        );
        assert_eq!(
            plan.status.estimated_completion_at,
            Some(Time(ts("2030-07-01T15:30:00Z")))
        );
        assert_eq!(plan.status.computed_at, Some(Time(ts(NOW))));
    }

    #[test]
    fn timeline_respects_the_window() {
        // Window 13:00-14:00 UTC daily; rounds of 25 minutes; 5 rounds. Rounds start at
        // 13:00, 13:25, 13:50 (runs past the close), then the next day 13:00, 13:25.
        let window = Window::new(&MaintenanceWindow {
            days: vec![],
            start: "13:00".into(),
            end: "14:00".into(),
            time_zone: "UTC".into(),
        })
        .unwrap();
        let timeline = estimate(
            &[5],
            &[Wave::percent(100)],
            1,
            Duration::from_secs(25 * 60),
            Some(&window),
            ts(NOW),
        );
        assert_eq!(
            timeline.waves,
            [Some((
                ts("2030-07-01T13:00:00Z"),
                ts("2030-07-02T13:50:00Z")
            ))]
        );
        // A Saturday-only window pushes the start to Saturday.
        let saturday = Window::new(&MaintenanceWindow {
            days: vec![Weekday::Saturday],
            start: "22:00".into(),
            end: "04:00".into(),
            time_zone: "Europe/Berlin".into(),
        })
        .unwrap();
        let timeline = estimate(
            &[1],
            &[Wave::percent(100)],
            1,
            Duration::from_secs(600),
            Some(&saturday),
            ts(NOW),
        );
        assert_eq!(timeline.waves[0].unwrap().0, ts("2030-07-06T20:00:00Z"));
    }

    #[test]
    fn empty_waves_take_no_time_and_do_not_pause() {
        let waves = vec![
            Wave {
                pause: Some(WavePause {
                    duration: Some("1h".parse().unwrap()),
                    until_resumed: false,
                }),
                ..Wave::percent(10)
            },
            Wave {
                pause: Some(WavePause {
                    duration: Some("1h".parse().unwrap()),
                    until_resumed: false,
                }),
                ..Wave::percent(20)
            },
            Wave::percent(100),
        ];
        let timeline = estimate(
            &[1, 1, 2],
            &waves,
            1,
            Duration::from_secs(60),
            None,
            ts(NOW),
        );
        assert_eq!(
            timeline.completion,
            Some(ts("2030-07-01T13:02:00Z")),
            "1m, 1h pause, empty wave without its pause, 1m"
        );
    }

    #[test]
    fn plans_a_hundred_thousand_devices() {
        let spec = rollout_spec(serde_json::json!({"maxInFlight": 500}));
        let release = release(Some("2.0.0"));
        let mut candidates: Vec<Candidate> = (0..100_000)
            .map(|i| {
                let model = if (i / 4) % 2 == 0 {
                    "sensor-v2"
                } else {
                    "gw-200"
                };
                let version = ["2.3.0", "2.2.0", "1.0.0", "2.4.1"][i % 4];
                device(
                    &format!("site-{:03}-device-{i:06}", i % 500),
                    model,
                    Some(version),
                )
            })
            .collect();
        candidates[4].model = "cam-1".into();
        let plan = plan(input(&spec, &release, candidates)).unwrap();
        let excluded = &plan.status.excluded;
        assert_eq!(excluded.already_on_version, 25_000);
        assert_eq!(excluded.below_minimum_version, 25_000);
        assert_eq!(excluded.incompatible_model, 1);
        assert_eq!(plan.targets.len(), 49_999);
        assert_eq!(plan.wave_ends, [500, 5_000, 25_000, 49_999]);
        let names: BTreeSet<_> = plan.targets.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), plan.targets.len(), "each device once");
        let (cohorts, of) = plan.cohorts();
        assert_eq!(cohorts.len(), 4, "2 models × 2 from-versions");
        assert_eq!(of.len(), plan.targets.len());
        let sizes: i32 = plan.status.waves.iter().map(|w| w.devices).sum();
        assert_eq!(sizes, 49_999);
        // 100 rounds of 10 minutes.
        assert_eq!(
            plan.status.estimated_completion_at,
            Some(Time(ts("2030-07-02T04:40:00Z")))
        );
        // Sites spread: the first wave holds devices of many sites.
        let sites: BTreeSet<_> = plan.targets[..500].iter().map(|t| &t.name[..8]).collect();
        assert!(sites.len() > 200, "{} sites in wave 1", sites.len());
    }

    proptest! {
        #[test]
        fn wave_boundaries_invariants(
            n in 0usize..200_000,
            raw in proptest::collection::vec((any::<bool>(), 1i32..=100, 1i32..300_000), 0..20),
        ) {
            let mut waves: Vec<Wave> = raw
                .into_iter()
                .map(|(is_percent, p, c)| if is_percent { Wave::percent(p) } else { Wave::count(c) })
                .collect();
            waves.push(Wave::percent(100));
            let ends = wave_ends(&waves, n);
            prop_assert_eq!(ends.len(), waves.len());
            prop_assert_eq!(*ends.last().unwrap(), n);
            prop_assert!(ends.windows(2).all(|w| w[0] <= w[1]));
            if n > 0 {
                prop_assert!(ends[0] >= 1);
            }
        }

        #[test]
        fn same_input_same_plan_and_any_target_change_changes_the_hash(
            n in 1usize..60,
            drop in 0usize..60,
            shuffle_seed in any::<u64>(),
        ) {
            let spec = rollout_spec(serde_json::json!({}));
            let release = release(None);
            let a = plan(input(&spec, &release, fleet(n))).unwrap();
            let mut shuffled = fleet(n);
            let len = shuffled.len();
            shuffled.rotate_left((shuffle_seed as usize) % len);
            let b = plan(input(&spec, &release, shuffled)).unwrap();
            prop_assert_eq!(&a.targets, &b.targets);
            prop_assert_eq!(&a.hash, &b.hash);
            let mut fewer = fleet(n);
            fewer.remove(drop % n);
            let c = plan(input(&spec, &release, fewer)).unwrap();
            prop_assert_ne!(&a.hash, &c.hash);
        }
    }
}
