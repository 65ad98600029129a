//! The FirmwareRelease's status and Events, computed from the observation. Pure.

use flotilla_crds::common::describe_spec_errors;
use flotilla_crds::condition::{ConditionStatus, reasons, types};
use flotilla_crds::{Condition, FirmwareReleasePhase, FirmwareReleaseStatus};
use jiff::Timestamp;

use super::phase::Observation;
use flotilla_runtime::conditions::{ConditionUpdate, Standing, set_conditions, set_standing};
use flotilla_runtime::events::Planned;
use flotilla_runtime::users::{self, Wording};

/// How many rollout names a condition message or Event names before "and N more" (status
/// lists more, up to `MAX_LISTED_ROLLOUTS`).
pub const MAX_NAMED_ROLLOUTS: usize = 5;

/// Condition reasons of the release controller beyond the shared ones.
pub mod release_reasons {
    /// `InUse`: live rollouts use the release, which is not being deleted.
    pub const REFERENCED_BY_ROLLOUTS: &str = "ReferencedByRollouts";
}

/// Event reasons of the release controller.
pub mod event_reasons {
    pub use flotilla_runtime::users::{DELETION_ALLOWED, DELETION_BLOCKED};
    /// The release became (or is again) valid.
    pub const VALIDATED: &str = "Validated";
    /// The release's spec is invalid.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// How the `InUse` condition words a release's rollouts.
pub const USERS: Wording = Wording {
    one: "running FirmwareRollout",
    many: "running FirmwareRollouts",
    object: "release",
    used_by: "used by",
    unused: "no running FirmwareRollout uses this release",
    referenced: release_reasons::REFERENCED_BY_ROLLOUTS,
    named: MAX_NAMED_ROLLOUTS,
};

/// The status the release should have. Conditions keep their `lastTransitionTime` unless their
/// status changes, so recomputing an unchanged release yields exactly its current status.
pub fn desired_status(
    current: Option<&FirmwareReleaseStatus>,
    observed: &Observation,
    phase: FirmwareReleasePhase,
    generation: Option<i64>,
    now: Timestamp,
) -> FirmwareReleaseStatus {
    let mut conditions: Vec<Condition> = current.map(|s| s.conditions.clone()).unwrap_or_default();
    let ready = ready_condition(observed);
    // Not Ready means an invalid spec: only a person can fix it.
    let standing = if ready.status == ConditionStatus::False {
        Standing::Stalled
    } else {
        Standing::Current
    };
    set_standing(&mut conditions, standing, &ready, generation, now);
    set_conditions(
        &mut conditions,
        [ready, in_use_condition(observed)],
        generation,
        now,
    );
    FirmwareReleaseStatus {
        phase: Some(phase),
        conditions,
        observed_generation: generation,
        rollouts: observed.rollouts.first.clone(),
        devices: i64::try_from(observed.devices).unwrap_or(i64::MAX),
    }
}

fn ready_condition(observed: &Observation) -> ConditionUpdate {
    match &observed.validation {
        Ok(()) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            "the release is valid",
        ),
        Err(errors) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            reasons::INVALID_SPEC,
            describe_spec_errors(errors),
        ),
    }
}

fn in_use_condition(observed: &Observation) -> ConditionUpdate {
    users::in_use_condition(&observed.rollouts, observed.deleting, &USERS)
}

/// Events for what changed between the previous and the next status: validity flipping or its
/// errors changing, and a deletion becoming blocked or its blockers changing. A new device
/// count alone is no Event.
pub fn transition_events(
    previous: Option<&FirmwareReleaseStatus>,
    next: &FirmwareReleaseStatus,
) -> Vec<Planned> {
    users::transition_events(
        previous.map_or(&[][..], |s| &s.conditions[..]),
        &next.conditions,
        (
            event_reasons::VALIDATED,
            "the release is valid and can be rolled out",
        ),
        event_reasons::INVALID_SPEC,
    )
}

/// The Event published when the last live rollout let go of a deleted release.
pub fn release_event() -> Planned {
    users::deletion_allowed_event(&USERS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::SpecError;
    use flotilla_crds::condition::find_condition;
    use flotilla_crds::condition::is_condition_true;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::events::EventType;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn observed(
        errors: &[(&str, &str)],
        deleting: bool,
        rollouts: &[&str],
        devices: usize,
    ) -> Observation {
        Observation {
            validation: if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.iter().map(|(f, m)| SpecError::new(*f, *m)).collect())
            },
            deleting,
            rollouts: flotilla_runtime::users::Users::bounded(
                rollouts.iter().map(|s| (*s).to_owned()),
                crate::release::reconcile::MAX_LISTED_ROLLOUTS,
            ),
            devices,
        }
    }

    fn status(observed: &Observation, phase: FirmwareReleasePhase) -> FirmwareReleaseStatus {
        desired_status(None, observed, phase, Some(1), at("2026-01-01T00:00:00Z"))
    }

    #[test]
    fn a_valid_unused_release_is_ready_and_counts_its_devices() {
        let status = status(&observed(&[], false, &[], 7), FirmwareReleasePhase::Ready);
        assert_eq!(status.phase, Some(FirmwareReleasePhase::Ready));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.devices, 7);
        assert!(status.rollouts.is_empty());
        assert!(is_condition_true(&status.conditions, types::READY));
        let in_use = find_condition(&status.conditions, types::IN_USE).unwrap();
        assert_eq!(in_use.reason, reasons::NOT_REFERENCED);
    }

    #[test]
    fn an_invalid_release_names_the_field() {
        let errors = [("spec.minimumFromVersion", "must be below spec.version")];
        let status = status(
            &observed(&errors, false, &[], 0),
            FirmwareReleasePhase::Invalid,
        );
        let ready = find_condition(&status.conditions, types::READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::INVALID_SPEC)
        );
        assert_eq!(
            ready.message,
            "spec.minimumFromVersion: must be below spec.version"
        );
    }

    #[test]
    fn a_blocked_deletion_names_a_bounded_list_of_rollouts() {
        let names: Vec<String> = (1..=8).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let status = status(
            &observed(&[], true, &refs, 0),
            FirmwareReleasePhase::Terminating,
        );
        let in_use = find_condition(&status.conditions, types::IN_USE).unwrap();
        assert_eq!(in_use.reason, reasons::DELETION_BLOCKED);
        assert_eq!(
            in_use.message,
            "deletion waits for 8 running FirmwareRollouts that use this release: r1, r2, r3, r4, r5 and 3 more"
        );
        assert_eq!(status.rollouts, names);
    }

    #[test]
    fn recomputing_an_unchanged_release_gives_the_same_status_and_no_event() {
        let first = status(
            &observed(&[], false, &["r"], 3),
            FirmwareReleasePhase::Ready,
        );
        let again = desired_status(
            Some(&first),
            &observed(&[], false, &["r"], 3),
            FirmwareReleasePhase::Ready,
            Some(1),
            at("2026-01-02T00:00:00Z"),
        );
        assert_eq!(first, again);
        assert!(transition_events(Some(&first), &again).is_empty());
    }

    #[test]
    fn a_new_device_count_changes_status_but_publishes_nothing() {
        let first = status(&observed(&[], false, &[], 3), FirmwareReleasePhase::Ready);
        let later = desired_status(
            Some(&first),
            &observed(&[], false, &[], 4),
            FirmwareReleasePhase::Ready,
            Some(1),
            at("2026-01-02T00:00:00Z"),
        );
        assert_ne!(first, later);
        assert_eq!(later.devices, 4);
        let ready = find_condition(&later.conditions, types::READY).unwrap();
        assert_eq!(ready.last_transition_time, Time(at("2026-01-01T00:00:00Z")));
        assert!(transition_events(Some(&first), &later).is_empty());
    }

    #[test]
    fn events_follow_validity_and_blocked_deletions() {
        let ready = status(
            &observed(&[], false, &["r1"], 0),
            FirmwareReleasePhase::Ready,
        );
        let events = transition_events(None, &ready);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].type_, events[0].reason),
            (EventType::Normal, event_reasons::VALIDATED)
        );
        let invalid = status(
            &observed(&[("spec.version", "bad")], false, &[], 0),
            FirmwareReleasePhase::Invalid,
        );
        let events = transition_events(Some(&ready), &invalid);
        assert_eq!(
            (events[0].type_, events[0].reason),
            (EventType::Warning, event_reasons::INVALID_SPEC)
        );
        assert_eq!(events[0].note, "spec.version: bad");
        let blocked = desired_status(
            Some(&ready),
            &observed(&[], true, &["r1"], 0),
            FirmwareReleasePhase::Terminating,
            Some(1),
            at("2026-01-01T00:00:00Z"),
        );
        let events = transition_events(Some(&ready), &blocked);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, event_reasons::DELETION_BLOCKED);
        assert!(events[0].note.ends_with(": r1"), "{}", events[0].note);
    }
}
