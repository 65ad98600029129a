//! The progress of every started rollout, kept in memory and current with each Device event.
//!
//! [`Tracker`] holds the [`Fleet`] and one [`RolloutBook`] per started rollout, with the
//! claims (which rollout's plan holds each Device). The Device watch's handler applies an
//! event to the fleet, judges the changed Devices for the rollout that claims them
//! (O(log n) each) and wakes that rollout only when a target's progress changed — a
//! heartbeat wakes nobody. A rollout's reconcile then reads tallies and picks assignments
//! without looking at the other targets.
//!
//! Everything here is rebuilt from the plan's shards and the Devices after a restart
//! ([`progress`](super::progress) reads a Device alone), so it is a cache, not a record.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use flotilla_crds::Device;
use flotilla_crds::FirmwareReleaseSpec;
use jiff::Timestamp;
use kube::core::{DeserializeGuard, Selector};
use kube::runtime::watcher;

use super::assign::{Progress, ProgressBook};
use super::fleet::{DeviceKey, DeviceView, Fleet};
use super::plan::{Target, cohort_index};
use super::progress::{self, Judged, RollbackProgress, Terms};
use super::thresholds::CohortKey;
use flotilla_crds::firmware_rollout::MAX_LISTED_FAILED_DEVICES;

/// A rollout: `(namespace, name)`.
pub type RolloutKey = (Arc<str>, Arc<str>);

/// A device that failed, for `status.failedDevices`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedTarget {
    /// The Device.
    pub name: Arc<str>,
    /// Its error code.
    pub code: Arc<str>,
    /// Its wave, from 1.
    pub wave: u32,
    /// When it was found failed.
    pub at: Timestamp,
}

/// Who may join a running rollout (`includeNewDevices`).
#[derive(Clone, Debug)]
pub struct Joining {
    /// The rollout's selector.
    pub selector: Selector,
    /// The release (compatible models, minimum version).
    pub release: FirmwareReleaseSpec,
}

/// When targets must be judged again, by position and in time order, so that finding the due
/// ones costs the due ones, not every target.
#[derive(Clone, Debug, Default)]
struct Deadlines {
    by_position: HashMap<usize, Timestamp>,
    ordered: BTreeSet<(Timestamp, usize)>,
}

impl Deadlines {
    fn set(&mut self, position: usize, at: Option<Timestamp>) {
        if let Some(old) = self.by_position.remove(&position) {
            self.ordered.remove(&(old, position));
        }
        if let Some(at) = at {
            self.by_position.insert(position, at);
            self.ordered.insert((at, position));
        }
    }

    fn due(&self, now: Timestamp) -> impl Iterator<Item = usize> + '_ {
        self.ordered
            .iter()
            .take_while(move |(at, _)| *at <= now)
            .map(|(_, position)| *position)
    }

    fn first(&self) -> Option<Timestamp> {
        self.ordered.first().map(|(at, _)| *at)
    }
}

/// A touched target's rollback: the version and release it goes back to, and how far it is.
type RollbackTarget = (Arc<str>, Option<Arc<str>>, RollbackProgress);

/// The rollback of the touched devices.
#[derive(Clone, Debug, Default)]
pub struct Rollback {
    /// Each touched target and the version it goes back to.
    targets: BTreeMap<usize, RollbackTarget>,
    /// Touched targets not assigned their previous version yet.
    unassigned: BTreeSet<usize>,
    /// Targets back.
    pub back: u32,
    /// Targets that could not go back.
    pub failed: u32,
    /// Deadlines of the targets going back.
    going: Deadlines,
}

impl Rollback {
    /// Targets still to assign or going back.
    pub fn running(&self) -> usize {
        self.targets.len() - (self.back + self.failed) as usize
    }

    /// Touched targets.
    pub fn touched(&self) -> usize {
        self.targets.len()
    }

    /// Up to `limit` targets to assign their previous version: position, version, release.
    pub fn to_assign(&self, limit: usize) -> Vec<(usize, Arc<str>, Option<Arc<str>>)> {
        self.unassigned
            .iter()
            .take(limit)
            .map(|p| {
                let (version, release, _) = &self.targets[p];
                (*p, version.clone(), release.clone())
            })
            .collect()
    }

    fn set(&mut self, position: usize, progress: RollbackProgress) {
        let Some(entry) = self.targets.get_mut(&position) else {
            return;
        };
        let old = std::mem::replace(&mut entry.2, progress);
        for (state, delta) in [(old, -1i64), (progress, 1)] {
            match state {
                RollbackProgress::Back => self.back = (i64::from(self.back) + delta) as u32,
                RollbackProgress::Failed => self.failed = (i64::from(self.failed) + delta) as u32,
                _ => {}
            }
        }
        if progress == RollbackProgress::Unassigned {
            self.unassigned.insert(position);
        } else {
            self.unassigned.remove(&position);
        }
        let going = match progress {
            RollbackProgress::Going(at) => Some(at),
            _ => None,
        };
        self.going.set(position, going);
    }
}

/// The in-memory progress of one started rollout.
#[derive(Debug)]
pub struct RolloutBook {
    /// The rollout's UID: a book of a deleted and re-created rollout is not reused.
    pub uid: String,
    /// The plan hash.
    pub plan_hash: String,
    /// What judging a target needs.
    pub terms: Terms,
    /// The tallies and queues.
    pub book: ProgressBook,
    /// The cohorts, by cohort index.
    pub cohorts: Vec<CohortKey>,
    names: Vec<Arc<str>>,
    from_versions: Vec<Arc<str>>,
    positions: HashMap<Arc<str>, usize>,
    /// Failure code of targets that failed an attempt (retrying or failed).
    failure_of: HashMap<usize, Arc<str>>,
    /// Failed targets by code.
    pub failure_counts: BTreeMap<Arc<str>, u32>,
    /// The latest failed targets, newest first.
    pub failed_recent: VecDeque<FailedTarget>,
    /// Action ids written but not yet seen on the watch.
    expected: HashMap<usize, i64>,
    /// When in-flight or retrying targets must be judged again.
    deadlines: Deadlines,
    /// The rollback, once started.
    pub rollback: Option<Rollback>,
    /// `includeNewDevices`.
    pub joining: Option<Joining>,
}

impl RolloutBook {
    /// A book for the ordered `targets` of a plan, every target pending until judged.
    pub fn new(
        uid: &str,
        plan_hash: &str,
        terms: Terms,
        targets: &[Target],
        wave_ends: &[usize],
        fleet: &mut Fleet,
    ) -> Self {
        let (cohorts, cohort_of) = cohort_index(targets);
        let names: Vec<Arc<str>> = targets.iter().map(|t| fleet.intern(&t.name)).collect();
        let from_versions = targets
            .iter()
            .map(|t| fleet.intern(&t.from_version))
            .collect();
        let positions = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        Self {
            uid: uid.to_owned(),
            plan_hash: plan_hash.to_owned(),
            terms,
            book: ProgressBook::new(wave_ends, cohort_of),
            cohorts,
            names,
            from_versions,
            positions,
            failure_of: HashMap::new(),
            failure_counts: BTreeMap::new(),
            failed_recent: VecDeque::new(),
            expected: HashMap::new(),
            deadlines: Deadlines::default(),
            rollback: None,
            joining: None,
        }
    }

    /// The Device name of the target at `position`.
    pub fn name(&self, position: usize) -> &Arc<str> {
        &self.names[position]
    }

    /// The version the target at `position` ran when planned.
    pub fn from_version(&self, position: usize) -> &Arc<str> {
        &self.from_versions[position]
    }

    /// The position of Device `name`, if targeted.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.positions.get(name).copied()
    }

    /// The targets' names in plan order.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Judges the target at `position` from its Device; true when its progress changed.
    pub fn observe(&mut self, position: usize, view: Option<&DeviceView>, now: Timestamp) -> bool {
        if let Some(&expected) = self.expected.get(&position) {
            let seen = view.and_then(|v| v.assigned.as_ref()).map(|a| a.action_id);
            if view.is_some() && seen.is_none_or(|seen| seen < expected) {
                // The watch has not shown our assignment yet: it stays in flight.
                return false;
            }
            self.expected.remove(&position);
        }
        let mut changed = false;
        if let Some(rollback) = self.rollback.as_mut()
            && rollback.targets.contains_key(&position)
        {
            let version = rollback.targets[&position].0.clone();
            let progress = progress::rollback_progress(view, &self.terms, &version, now);
            if rollback.targets[&position].2 != progress {
                rollback.set(position, progress);
                changed = true;
            }
            // Its progress towards the release stays as it was when the rollback began, so
            // the counts and the crossing that caused the rollback stay visible.
            return changed;
        }
        let judged = progress::judge(view, &self.terms, now);
        changed |= self.record(position, judged, now);
        changed
    }

    fn record(&mut self, position: usize, judged: Judged, now: Timestamp) -> bool {
        let old = self.book.get(position);
        self.deadlines.set(position, judged.deadline);
        let was_failed = old == Progress::Failed;
        let failed = judged.progress == Progress::Failed;
        let old_code = match judged.failure {
            Some(code) => self.failure_of.insert(position, code),
            None => self.failure_of.remove(&position),
        };
        if was_failed && let Some(code) = &old_code {
            decrement(&mut self.failure_counts, code);
        }
        if failed && let Some(code) = self.failure_of.get(&position).cloned() {
            *self.failure_counts.entry(code.clone()).or_default() += 1;
            if !was_failed {
                self.failed_recent
                    .retain(|f| f.name != self.names[position]);
                self.failed_recent.push_front(FailedTarget {
                    name: self.names[position].clone(),
                    code,
                    wave: self.book.wave_of(position) as u32 + 1,
                    at: now,
                });
                self.failed_recent
                    .truncate(MAX_LISTED_FAILED_DEVICES as usize);
            }
        }
        if old == judged.progress {
            return false;
        }
        self.book.set(position, judged.progress);
        true
    }

    /// Marks the target at `position` assigned (attempt `attempt`, action `action_id`) once
    /// the write succeeded, before the watch shows it.
    pub fn assigned(&mut self, position: usize, attempt: u32, action_id: i64, deadline: Timestamp) {
        self.expected.insert(position, action_id);
        self.deadlines.set(position, Some(deadline));
        self.book.set(position, Progress::InFlight { attempt });
    }

    /// Marks a rollback assignment written.
    pub fn rollback_assigned(&mut self, position: usize, action_id: i64, deadline: Timestamp) {
        self.expected.insert(position, action_id);
        if let Some(rollback) = self.rollback.as_mut() {
            rollback.set(position, RollbackProgress::Going(deadline));
        }
    }

    /// Judges again every target whose deadline has passed (soak over, timeout, retry due);
    /// true when one changed. Costs the number of targets due.
    pub fn judge_due(&mut self, namespace: &str, fleet: &Fleet, now: Timestamp) -> bool {
        let mut due: Vec<usize> = self.deadlines.due(now).collect();
        if let Some(rollback) = &self.rollback {
            due.extend(rollback.going.due(now));
        }
        let mut changed = false;
        for position in due {
            let view = fleet.get(namespace, &self.names[position]);
            changed |= self.observe(position, view, now);
        }
        changed
    }

    /// The earliest instant at which a target's progress changes by the clock alone.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let rollback = self.rollback.as_ref().and_then(|r| r.going.first());
        self.deadlines.first().into_iter().chain(rollback).min()
    }

    /// Starts the rollback: every target the rollout assigned goes back to the version it had
    /// when assigned (`spec.firmware.previous`, else the plan's from-version).
    pub fn start_rollback(&mut self, namespace: &str, fleet: &Fleet, now: Timestamp) {
        if self.rollback.is_some() {
            return;
        }
        let mut rollback = Rollback::default();
        for (position, name) in self.names.iter().enumerate() {
            let Some(view) = fleet.get(namespace, name) else {
                continue;
            };
            let ours = view
                .assigned
                .as_ref()
                .filter(|a| a.rollout.as_deref() == Some(&*self.terms.rollout));
            let Some(assigned) = ours else {
                // Assigned by a write the watch has not shown yet: it is touched too, and goes
                // back to what it runs (the rollback's write waits for the watch by conflict).
                if self.expected.contains_key(&position) {
                    let version = view
                        .current_version
                        .clone()
                        .unwrap_or_else(|| self.from_versions[position].clone());
                    let release = view
                        .assigned
                        .as_ref()
                        .filter(|a| a.version == version)
                        .map(|a| a.release.clone());
                    rollback
                        .targets
                        .insert(position, (version, release, RollbackProgress::Unassigned));
                    rollback.unassigned.insert(position);
                }
                continue;
            };
            let (version, release) = if *assigned.version == *self.terms.version {
                (
                    assigned
                        .previous_version
                        .clone()
                        .unwrap_or_else(|| self.from_versions[position].clone()),
                    assigned.previous_release.clone(),
                )
            } else {
                // Already assigned its previous version (a rollback before a restart).
                (assigned.version.clone(), Some(assigned.release.clone()))
            };
            let progress = progress::rollback_progress(Some(view), &self.terms, &version, now);
            rollback
                .targets
                .insert(position, (version, release, RollbackProgress::Unassigned));
            rollback.unassigned.insert(position);
            rollback.set(position, progress);
        }
        self.rollback = Some(rollback);
    }

    /// Adds Device `name` to the last wave (`includeNewDevices`); returns its position.
    fn join(&mut self, name: Arc<str>, model: Arc<str>, from_version: Arc<str>) -> usize {
        let key = CohortKey {
            model: model.to_string(),
            from_version: from_version.to_string(),
        };
        let cohort = match self.cohorts.iter().position(|c| *c == key) {
            Some(index) => index,
            None => {
                self.cohorts.push(key);
                self.cohorts.len() - 1
            }
        };
        let position = self.book.join_last_wave(cohort as u32);
        self.names.push(name.clone());
        self.from_versions.push(from_version);
        self.positions.insert(name, position);
        position
    }

    /// Whether Device `view` may join: selected, admitted, compatible, on a known version
    /// that is neither the release's nor below its minimum.
    fn may_join(&self, view: &DeviceView) -> bool {
        let Some(joining) = &self.joining else {
            return false;
        };
        let Some(current) = view.current_version.as_deref() else {
            return false;
        };
        let Ok(current_version) = semver::Version::parse(current) else {
            return false;
        };
        let below_minimum = joining
            .release
            .minimum_from_version
            .as_deref()
            .and_then(|m| semver::Version::parse(m).ok())
            .is_some_and(|minimum| current_version < minimum);
        view.approved
            && current != &*self.terms.version
            && !below_minimum
            && joining.release.fits_model(&view.model)
            && view.selected_by(&joining.selector)
    }
}

fn decrement(counts: &mut BTreeMap<Arc<str>, u32>, code: &Arc<str>) {
    if let Some(count) = counts.get_mut(code) {
        *count -= 1;
        if *count == 0 {
            counts.remove(code);
        }
    }
}

/// The fleet and the books of every started rollout.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Every Device's view.
    pub fleet: Fleet,
    books: HashMap<RolloutKey, RolloutBook>,
    claims: HashMap<DeviceKey, RolloutKey>,
}

impl Tracker {
    /// Takes one Device watch event in; returns the rollouts whose progress changed.
    pub fn apply_device_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<Device>>,
        now: Timestamp,
    ) -> BTreeSet<RolloutKey> {
        let changed = self.fleet.apply_watcher_event(event);
        let mut woken = BTreeSet::new();
        for (namespace, name) in changed {
            let device = (namespace.clone(), name.clone());
            let view = self.fleet.get(&namespace, &name);
            if let Some(rollout) = self.claims.get(&device) {
                if let Some(book) = self.books.get_mut(rollout)
                    && let Some(position) = book.position(&name)
                    && book.observe(position, view, now)
                {
                    woken.insert(rollout.clone());
                }
                continue;
            }
            let Some(view) = view else { continue };
            // includeNewDevices: the first started rollout of the namespace that takes it.
            let joined = self
                .books
                .iter_mut()
                .filter(|((ns, _), _)| *ns == namespace)
                .find(|(_, book)| book.rollback.is_none() && book.may_join(view));
            if let Some((rollout, book)) = joined {
                let from = view.current_version.clone().expect("may_join checked it");
                let position = book.join(name.clone(), view.model.clone(), from);
                book.observe(position, Some(view), now);
                self.claims.insert(device, rollout.clone());
                woken.insert(rollout.clone());
            }
        }
        woken
    }

    /// The book of `rollout`, if it is loaded and belongs to the rollout with `uid`.
    pub fn book(&self, rollout: &RolloutKey, uid: &str) -> Option<&RolloutBook> {
        self.books.get(rollout).filter(|b| b.uid == uid)
    }

    /// The book of `rollout`, mutable.
    pub fn book_mut(&mut self, rollout: &RolloutKey, uid: &str) -> Option<&mut RolloutBook> {
        self.books.get_mut(rollout).filter(|b| b.uid == uid)
    }

    /// The fleet and the book of `rollout` together.
    pub fn fleet_and_book(
        &mut self,
        rollout: &RolloutKey,
        uid: &str,
    ) -> Option<(&Fleet, &mut RolloutBook)> {
        let book = self.books.get_mut(rollout).filter(|b| b.uid == uid)?;
        Some((&self.fleet, book))
    }

    /// Installs the book of a started rollout: claims its targets and judges each from its
    /// Device, then lets devices that became eligible join (`includeNewDevices`).
    pub fn install(&mut self, rollout: RolloutKey, mut book: RolloutBook, now: Timestamp) {
        self.forget(&rollout);
        let namespace = rollout.0.clone();
        for position in 0..book.names.len() {
            let name = book.names[position].clone();
            let view = self.fleet.get(&namespace, &name);
            book.observe(position, view, now);
            self.claims
                .insert((namespace.clone(), name), rollout.clone());
        }
        if book.joining.is_some() {
            let joiners: Vec<(Arc<str>, Arc<str>, Arc<str>)> = self
                .fleet
                .namespace(&namespace)
                .filter(|(name, view)| {
                    let unclaimed = !self
                        .claims
                        .contains_key(&(namespace.clone(), (*name).clone()));
                    // Joined before a restart (assigned by this rollout), or eligible now.
                    let assigned_here = view
                        .assigned
                        .as_ref()
                        .is_some_and(|a| a.rollout.as_deref() == Some(&*rollout.1));
                    unclaimed && (assigned_here || book.may_join(view))
                })
                .map(|(name, view)| {
                    let from = view
                        .assigned
                        .as_ref()
                        .and_then(|a| a.previous_version.clone())
                        .or_else(|| view.current_version.clone())
                        .unwrap_or_else(|| "0.0.0".into());
                    (name.clone(), view.model.clone(), from)
                })
                .collect();
            for (name, model, from) in joiners {
                let position = book.join(name.clone(), model, from);
                let view = self.fleet.get(&namespace, &name);
                book.observe(position, view, now);
                self.claims
                    .insert((namespace.clone(), name), rollout.clone());
            }
        }
        self.books.insert(rollout, book);
    }

    /// Drops the book of `rollout` and its claims.
    pub fn forget(&mut self, rollout: &RolloutKey) {
        if let Some(book) = self.books.remove(rollout) {
            for name in &book.names {
                self.claims.remove(&(rollout.0.clone(), name.clone()));
            }
        }
    }

    /// The rollout whose book claims Device `name` of `namespace`.
    pub fn claimant(&self, namespace: &str, name: &str) -> Option<&RolloutKey> {
        self.claims.get(&(Arc::from(namespace), Arc::from(name)))
    }

    /// Keys of the loaded books.
    pub fn loaded(&self) -> impl Iterator<Item = &RolloutKey> {
        self.books.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::FirmwareRolloutSpec;

    #[test]
    fn a_device_assigned_before_the_watch_showed_it_is_rolled_back_too() {
        let spec: FirmwareRolloutSpec = serde_json::from_value(serde_json::json!({
            "release": "fw-2", "selector": {"matchLabels": {"a": "b"}},
        }))
        .unwrap();
        let mut fleet = Fleet::default();
        for name in ["seen", "unseen", "untouched"] {
            fleet.apply_watcher_event(&watcher::Event::Apply(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
                    "metadata": {"name": name, "namespace": "fleet", "generation": 1},
                    "spec": {"model": "m"},
                    "status": {"currentVersion": "1.0.0"},
                }))
                .unwrap(),
            ));
        }
        let targets: Vec<Target> = ["seen", "unseen", "untouched"]
            .iter()
            .map(|name| Target {
                name: (*name).into(),
                model: "m".into(),
                from_version: "1.0.0".into(),
            })
            .collect();
        let now: Timestamp = "2030-01-01T10:00:00Z".parse().unwrap();
        let terms = Terms::new("spring", "2.0.0", &spec);
        let mut book = RolloutBook::new("uid", "hash", terms, &targets, &[3], &mut fleet);
        book.assigned(0, 1, 7, now);
        book.assigned(1, 1, 8, now);
        // Only the first assignment has come back on the watch.
        fleet.apply_watcher_event(&watcher::Event::Apply(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
                "metadata": {"name": "seen", "namespace": "fleet", "generation": 2},
                "spec": {"model": "m", "firmware": {
                    "version": "2.0.0", "release": "fw-2", "rollout": "spring", "actionId": 7,
                    "previous": {"version": "1.0.0", "release": "fw-1"},
                }},
                "status": {"currentVersion": "1.0.0"},
            }))
            .unwrap(),
        ));
        book.observe(0, fleet.get("fleet", "seen"), now);
        book.start_rollback("fleet", &fleet, now);
        let rollback = book.rollback.as_ref().unwrap();
        assert_eq!(rollback.touched(), 2);
        let going_back: Vec<_> = rollback
            .to_assign(10)
            .into_iter()
            .map(|(position, version, _)| (position, version.to_string()))
            .collect();
        assert_eq!(going_back, [(0, "1.0.0".into()), (1, "1.0.0".into())]);
    }
}
