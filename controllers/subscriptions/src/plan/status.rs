//! The Plan's status and Events, computed from the observation. Pure.

use flotilla_crds::common::describe_spec_errors;
use flotilla_crds::condition::{ConditionStatus, reasons, types};
use flotilla_crds::{Condition, PlanPhase, PlanStatus};
use jiff::Timestamp;

use super::phase::Observation;
use flotilla_runtime::conditions::{ConditionUpdate, Standing, set_conditions, set_standing};
use flotilla_runtime::events::Planned;
use flotilla_runtime::users::{self, Wording};

/// How many Subscription names a condition message or Event names before "and N more".
pub const MAX_NAMED_SUBSCRIPTIONS: usize = 10;

/// Event reasons of the Plan controller.
pub mod event_reasons {
    pub use flotilla_runtime::users::{DELETION_ALLOWED, DELETION_BLOCKED};
    /// The Plan became (or is again) valid.
    pub const VALIDATED: &str = "Validated";
    /// The Plan's spec is invalid.
    pub const INVALID_SPEC: &str = "InvalidSpec";
}

/// How the `InUse` condition words a Plan's Subscriptions.
pub const USERS: Wording = Wording {
    one: "Subscription",
    many: "Subscriptions",
    object: "plan",
    used_by: "referenced by",
    unused: "no Subscription references this plan",
    referenced: reasons::REFERENCED_BY_SUBSCRIPTIONS,
    named: MAX_NAMED_SUBSCRIPTIONS,
};

/// The status the Plan should have. Conditions keep their `lastTransitionTime` unless their
/// status changes, so recomputing an unchanged Plan yields exactly its current status.
pub fn desired_status(
    current: Option<&PlanStatus>,
    observed: &Observation,
    phase: PlanPhase,
    generation: Option<i64>,
    now: Timestamp,
) -> PlanStatus {
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
    PlanStatus {
        phase: Some(phase),
        conditions,
        observed_generation: generation,
        subscriptions: i32::try_from(observed.subscribers.count).unwrap_or(i32::MAX),
    }
}

fn ready_condition(observed: &Observation) -> ConditionUpdate {
    match &observed.validation {
        Ok(()) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            "the plan is valid",
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
    users::in_use_condition(&observed.subscribers, observed.deleting, &USERS)
}

/// Events for what changed between the previous and the next status: validity flipping or its
/// errors changing, and a deletion becoming blocked or its list of blockers changing. An
/// unchanged status yields no Event, so steady-state reconciles stay silent.
pub fn transition_events(previous: Option<&PlanStatus>, next: &PlanStatus) -> Vec<Planned> {
    users::transition_events(
        previous.map_or(&[][..], |s| &s.conditions[..]),
        &next.conditions,
        (
            event_reasons::VALIDATED,
            "the plan is valid and can be used by Subscriptions",
        ),
        event_reasons::INVALID_SPEC,
    )
}

/// The Event published when the last Subscription let go of a deleted Plan.
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

    fn observed(errors: &[(&str, &str)], deleting: bool, subscribers: &[&str]) -> Observation {
        Observation {
            validation: if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.iter().map(|(f, m)| SpecError::new(*f, *m)).collect())
            },
            deleting,
            subscribers: flotilla_runtime::users::Users::bounded(
                subscribers.iter().map(|s| (*s).to_owned()),
                MAX_NAMED_SUBSCRIPTIONS,
            ),
        }
    }

    #[test]
    fn a_valid_unused_plan_is_ready_and_not_in_use() {
        let status = desired_status(
            None,
            &observed(&[], false, &[]),
            PlanPhase::Ready,
            Some(1),
            at("2025-01-01T00:00:00Z"),
        );
        assert_eq!(status.phase, Some(PlanPhase::Ready));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(status.subscriptions, 0);
        assert!(is_condition_true(&status.conditions, types::READY));
        let in_use = find_condition(&status.conditions, types::IN_USE).unwrap();
        assert_eq!(
            (in_use.status.as_str(), in_use.reason.as_str()),
            ("False", reasons::NOT_REFERENCED)
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
    }

    #[test]
    fn an_invalid_plan_says_which_field() {
        let errors = [("spec.quota.hard[pods]", "must not be negative, got -1")];
        let status = desired_status(
            None,
            &observed(&errors, false, &[]),
            PlanPhase::Invalid,
            Some(2),
            at("2025-01-01T00:00:00Z"),
        );
        let ready = find_condition(&status.conditions, types::READY).unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason, reasons::INVALID_SPEC);
        assert_eq!(
            ready.message,
            "spec.quota.hard[pods]: must not be negative, got -1"
        );
    }

    #[test]
    fn subscribers_are_counted_and_named_with_a_bound() {
        let names: Vec<String> = (1..=12).map(|i| format!("tenant-{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let status = desired_status(
            None,
            &observed(&[], false, &refs),
            PlanPhase::Ready,
            Some(1),
            at("2025-01-01T00:00:00Z"),
        );
        assert_eq!(status.subscriptions, 12);
        let in_use = find_condition(&status.conditions, types::IN_USE).unwrap();
        assert_eq!(in_use.reason, reasons::REFERENCED_BY_SUBSCRIPTIONS);
        assert!(
            in_use
                .message
                .starts_with("referenced by 12 Subscriptions: tenant-01, tenant-02")
        );
        assert!(
            in_use.message.ends_with("tenant-10 and 2 more"),
            "{}",
            in_use.message
        );
    }

    #[test]
    fn a_blocked_deletion_names_the_subscriptions() {
        let status = desired_status(
            None,
            &observed(&[], true, &["acme"]),
            PlanPhase::Terminating,
            Some(1),
            at("2025-01-01T00:00:00Z"),
        );
        let in_use = find_condition(&status.conditions, types::IN_USE).unwrap();
        assert_eq!(in_use.reason, reasons::DELETION_BLOCKED);
        assert_eq!(
            in_use.message,
            "deletion waits for 1 Subscription that use this plan: acme"
        );
    }

    #[test]
    fn recomputing_an_unchanged_plan_gives_the_same_status() {
        let first = desired_status(
            None,
            &observed(&[], false, &["a"]),
            PlanPhase::Ready,
            Some(1),
            at("2025-01-01T00:00:00Z"),
        );
        let again = desired_status(
            Some(&first),
            &observed(&[], false, &["a"]),
            PlanPhase::Ready,
            Some(1),
            at("2025-01-02T00:00:00Z"),
        );
        assert_eq!(first, again);
        assert!(transition_events(Some(&first), &again).is_empty());
    }

    #[test]
    fn transition_times_survive_unrelated_changes() {
        let first = desired_status(
            None,
            &observed(&[], false, &[]),
            PlanPhase::Ready,
            Some(1),
            at("2025-01-01T00:00:00Z"),
        );
        let later = desired_status(
            Some(&first),
            &observed(&[], false, &["a"]),
            PlanPhase::Ready,
            Some(1),
            at("2025-01-03T00:00:00Z"),
        );
        let ready = find_condition(&later.conditions, types::READY).unwrap();
        assert_eq!(ready.last_transition_time, Time(at("2025-01-01T00:00:00Z")));
        let in_use = find_condition(&later.conditions, types::IN_USE).unwrap();
        assert_eq!(
            in_use.last_transition_time,
            Time(at("2025-01-03T00:00:00Z"))
        );
    }

    #[test]
    fn events_follow_validity_changes() {
        let now = at("2025-01-01T00:00:00Z");
        let ready = desired_status(
            None,
            &observed(&[], false, &[]),
            PlanPhase::Ready,
            Some(1),
            now,
        );
        let events = transition_events(None, &ready);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].type_, events[0].reason),
            (EventType::Normal, event_reasons::VALIDATED)
        );

        let invalid = desired_status(
            Some(&ready),
            &observed(&[("spec.trialDays", "bad")], false, &[]),
            PlanPhase::Invalid,
            Some(2),
            now,
        );
        let events = transition_events(Some(&ready), &invalid);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].type_, events[0].reason),
            (EventType::Warning, event_reasons::INVALID_SPEC)
        );
        assert_eq!(events[0].note, "spec.trialDays: bad");

        let still_invalid = desired_status(
            Some(&invalid),
            &observed(&[("spec.quota.hard[x]", "worse")], false, &[]),
            PlanPhase::Invalid,
            Some(3),
            now,
        );
        let events = transition_events(Some(&invalid), &still_invalid);
        assert_eq!(events.len(), 1, "a different error is worth a new Event");
    }

    #[test]
    fn events_follow_blocked_deletions() {
        let now = at("2025-01-01T00:00:00Z");
        let used = desired_status(
            None,
            &observed(&[], false, &["a", "b"]),
            PlanPhase::Ready,
            Some(1),
            now,
        );
        assert!(transition_events(Some(&used), &used).is_empty());
        let blocked = desired_status(
            Some(&used),
            &observed(&[], true, &["a", "b"]),
            PlanPhase::Terminating,
            Some(1),
            now,
        );
        let events = transition_events(Some(&used), &blocked);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, event_reasons::DELETION_BLOCKED);
        assert!(events[0].note.contains("a, b"), "{}", events[0].note);
        let fewer = desired_status(
            Some(&blocked),
            &observed(&[], true, &["b"]),
            PlanPhase::Terminating,
            Some(1),
            now,
        );
        assert_eq!(transition_events(Some(&blocked), &fewer).len(), 1);
        assert_eq!(release_event().reason, event_reasons::DELETION_ALLOWED);
    }
}
