//! Setting `status.conditions` the way Kubernetes API conventions ask.
//!
//! `lastTransitionTime` records when the condition's *status* last changed, so it is kept when
//! only the reason or message change; `observedGeneration` says which spec the condition was
//! computed from. Times are truncated to whole seconds because `metav1.Time` serialises that
//! way: a freshly computed condition then compares equal to the one read back from the server,
//! which is what lets the status writer skip writes that would change nothing.

use flotilla_crds::condition::{Condition, ConditionStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The parts of a condition a controller decides; the helper fills in the bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type, e.g. `Ready`.
    pub type_: &'static str,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// UpperCamelCase reason, e.g. `InvalidSpec`.
    pub reason: &'static str,
    /// Human-readable detail; may be empty.
    pub message: String,
}

impl ConditionUpdate {
    /// A condition update.
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Whether `after` says something new against `before` (absent, or another status, reason
/// or message): what deserves an Event. A new `lastTransitionTime` or generation alone does not.
pub fn changed(before: Option<&Condition>, after: &Condition) -> bool {
    before.is_none_or(|b| {
        b.status != after.status || b.reason != after.reason || b.message != after.message
    })
}

/// Sets one condition in `conditions`: replaces the condition of the same type in place
/// (keeping its `lastTransitionTime` unless the status changes) or appends it.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    let existing = conditions.iter().position(|c| c.type_ == update.type_);
    let last_transition_time = match existing.map(|i| &conditions[i]) {
        Some(previous) if previous.status == update.status.as_str() => {
            previous.last_transition_time.clone()
        }
        _ => Time(truncate_to_seconds(now)),
    };
    let condition = Condition {
        type_: update.type_.to_owned(),
        status: update.status.as_str().to_owned(),
        reason: update.reason.to_owned(),
        message: update.message,
        observed_generation,
        last_transition_time,
    };
    match existing {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Sets several conditions at once (see [`set_condition`]).
pub fn set_conditions(
    conditions: &mut Vec<Condition>,
    updates: impl IntoIterator<Item = ConditionUpdate>,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    for update in updates {
        set_condition(conditions, update, observed_generation, now);
    }
}

/// Where an object stands for kstatus (Flux's health checks, `kubectl wait`, cli-utils), which
/// reads a custom resource by its `Reconciling` and `Stalled` conditions and
/// `observedGeneration` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Settled: what the spec asks for is done, or it waits for a person on purpose (paused,
    /// awaiting approval, a draft).
    Current,
    /// Work is under way.
    Reconciling,
    /// It cannot progress until a person changes something.
    Stalled,
}

/// Writes `standing` as kstatus expects its "abnormal-true" conditions: `Reconciling` or
/// `Stalled` True (with `cause`'s reason and message) and the other absent; neither when
/// [`Standing::Current`].
pub fn set_standing(
    conditions: &mut Vec<Condition>,
    standing: Standing,
    cause: &ConditionUpdate,
    observed_generation: Option<i64>,
    now: Timestamp,
) {
    use flotilla_crds::condition::types::{RECONCILING, STALLED};
    let (set, clear) = match standing {
        Standing::Current => {
            remove_condition(conditions, RECONCILING);
            remove_condition(conditions, STALLED);
            return;
        }
        Standing::Reconciling => (RECONCILING, STALLED),
        Standing::Stalled => (STALLED, RECONCILING),
    };
    remove_condition(conditions, clear);
    set_condition(
        conditions,
        ConditionUpdate::new(
            set,
            ConditionStatus::True,
            cause.reason,
            cause.message.clone(),
        ),
        observed_generation,
        now,
    );
}

/// Removes the condition of type `type_`, if present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// `metav1.Time` has whole-second precision on the wire.
fn truncate_to_seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::condition::{reasons, types};

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn ready(status: ConditionStatus, reason: &'static str, message: &str) -> ConditionUpdate {
        ConditionUpdate::new(types::READY, status, reason, message)
    }

    #[test]
    fn a_standing_is_one_true_kstatus_condition_or_none() {
        let now = at("2026-12-01T10:00:00Z");
        let mut conditions = Vec::new();
        let cause = ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            reasons::INVALID_SPEC,
            "spec.x: bad",
        );
        set_standing(&mut conditions, Standing::Reconciling, &cause, Some(2), now);
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            (types::RECONCILING, "True")
        );
        set_standing(&mut conditions, Standing::Stalled, &cause, Some(2), now);
        assert_eq!(conditions.len(), 1, "{conditions:?}");
        assert_eq!(conditions[0].type_, types::STALLED);
        assert_eq!(conditions[0].reason, reasons::INVALID_SPEC);
        assert_eq!(conditions[0].message, "spec.x: bad");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_standing(&mut conditions, Standing::Current, &cause, Some(3), now);
        assert!(conditions.is_empty(), "{conditions:?}");
    }

    #[test]
    fn a_new_condition_is_appended_with_the_current_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, reasons::RECONCILED, ""),
            Some(3),
            at("2025-01-01T10:00:00.750Z"),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].observed_generation, Some(3));
        assert_eq!(
            conditions[0].last_transition_time,
            Time(at("2025-01-01T10:00:00Z"))
        );
    }

    #[test]
    fn the_transition_time_is_kept_while_the_status_stays() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, reasons::INVALID_SPEC, "a"),
            Some(1),
            at("2025-01-01T10:00:00Z"),
        );
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, reasons::INVALID_SPEC, "b"),
            Some(2),
            at("2025-01-01T11:00:00Z"),
        );
        assert_eq!(
            conditions[0].last_transition_time,
            Time(at("2025-01-01T10:00:00Z"))
        );
        assert_eq!(
            conditions[0].message, "b",
            "message and generation still update"
        );
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn the_transition_time_moves_when_the_status_changes() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, reasons::INVALID_SPEC, ""),
            Some(1),
            at("2025-01-01T10:00:00Z"),
        );
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, reasons::RECONCILED, ""),
            Some(2),
            at("2025-01-01T12:00:00Z"),
        );
        assert_eq!(conditions.len(), 1, "replaced, not duplicated");
        assert_eq!(
            conditions[0].last_transition_time,
            Time(at("2025-01-01T12:00:00Z"))
        );
        assert_eq!(conditions[0].reason, reasons::RECONCILED);
    }

    #[test]
    fn other_conditions_keep_their_place() {
        let mut conditions = Vec::new();
        let now = at("2025-01-01T10:00:00Z");
        set_conditions(
            &mut conditions,
            [
                ready(ConditionStatus::True, reasons::RECONCILED, ""),
                ConditionUpdate::new(
                    types::IN_USE,
                    ConditionStatus::False,
                    reasons::NOT_REFERENCED,
                    "",
                ),
            ],
            Some(1),
            now,
        );
        set_condition(
            &mut conditions,
            ready(ConditionStatus::False, reasons::INVALID_SPEC, "x"),
            Some(2),
            now,
        );
        let order: Vec<_> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(order, [types::READY, types::IN_USE]);
        remove_condition(&mut conditions, types::READY);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, types::IN_USE);
    }

    #[test]
    fn recomputing_the_same_condition_changes_nothing() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, reasons::RECONCILED, ""),
            Some(1),
            at("2025-01-01T10:00:00.5Z"),
        );
        let before = conditions.clone();
        set_condition(
            &mut conditions,
            ready(ConditionStatus::True, reasons::RECONCILED, ""),
            Some(1),
            at("2025-01-01T10:05:00Z"),
        );
        assert_eq!(conditions, before);
    }
}
