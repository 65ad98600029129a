//! The Plan lifecycle: `Pending → Ready ⇄ Invalid`, and from any of them `→ Terminating` once
//! the Plan is deleted. Terminating is final (a deletion cannot be undone) and nothing goes
//! back to Pending.

use flotilla_crds::{PlanPhase, SpecError};

use flotilla_runtime::phase::{IllegalTransition, Phase};
use flotilla_runtime::users::Users;

/// What the controller observed about a Plan and the world around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The outcome of `PlanSpec::validate`.
    pub validation: Result<(), Vec<SpecError>>,
    /// The Plan has a `deletionTimestamp`.
    pub deleting: bool,
    /// The Subscriptions that reference the Plan.
    pub subscribers: Users,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The phase to report.
    pub phase: PlanPhase,
    /// Whether to remove the finalizer and let the deletion complete.
    pub release: bool,
}

/// The pure decision: which phase the Plan is in now, and whether its deletion may proceed
/// (only once no Subscription references it). Refuses phase moves the lifecycle forbids.
pub fn step(
    current: PlanPhase,
    observed: &Observation,
) -> Result<Step, IllegalTransition<PlanPhase>> {
    let wanted = if observed.deleting {
        PlanPhase::Terminating
    } else if observed.validation.is_ok() {
        PlanPhase::Ready
    } else {
        PlanPhase::Invalid
    };
    let phase = current.transition(wanted)?;
    Ok(Step {
        phase,
        release: phase == PlanPhase::Terminating && observed.subscribers.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::status::MAX_NAMED_SUBSCRIPTIONS;
    use PlanPhase::{Invalid, Pending, Ready, Terminating};
    use flotilla_runtime::phase::assert_transition_table;

    #[test]
    fn every_legal_and_illegal_transition() {
        assert_transition_table(&[
            (Pending, Ready),
            (Pending, Invalid),
            (Pending, Terminating),
            (Ready, Invalid),
            (Ready, Terminating),
            (Invalid, Ready),
            (Invalid, Terminating),
        ]);
    }

    #[test]
    fn status_strings_match_the_api() {
        for phase in PlanPhase::ALL {
            let wire = serde_json::to_value(phase).expect("serialize");
            assert_eq!(wire, phase.as_str());
            assert_eq!(PlanPhase::parse(phase.as_str()), Some(*phase));
        }
    }

    fn observed(valid: bool, deleting: bool, subscribers: &[&str]) -> Observation {
        Observation {
            validation: if valid {
                Ok(())
            } else {
                Err(vec![SpecError::new(
                    "spec.quota.hard[pods]",
                    "must not be negative",
                )])
            },
            deleting,
            subscribers: Users::bounded(
                subscribers.iter().map(|s| (*s).to_owned()),
                MAX_NAMED_SUBSCRIPTIONS,
            ),
        }
    }

    #[test]
    fn a_valid_plan_becomes_ready_and_an_invalid_one_invalid() {
        assert_eq!(
            step(Pending, &observed(true, false, &[])).unwrap().phase,
            Ready
        );
        assert_eq!(
            step(Pending, &observed(false, false, &[])).unwrap().phase,
            Invalid
        );
        assert_eq!(
            step(Ready, &observed(false, false, &["acme"]))
                .unwrap()
                .phase,
            Invalid
        );
        assert_eq!(
            step(Invalid, &observed(true, false, &[])).unwrap().phase,
            Ready
        );
    }

    #[test]
    fn deletion_waits_for_subscribers_then_releases() {
        let blocked = step(Ready, &observed(true, true, &["acme"])).unwrap();
        assert_eq!(
            blocked,
            Step {
                phase: Terminating,
                release: false
            }
        );
        let free = step(Terminating, &observed(true, true, &[])).unwrap();
        assert_eq!(
            free,
            Step {
                phase: Terminating,
                release: true
            }
        );
        // An invalid plan can be deleted too, under the same rule.
        assert!(step(Invalid, &observed(false, true, &[])).unwrap().release);
    }

    #[test]
    fn a_terminating_plan_never_comes_back() {
        let refused = step(Terminating, &observed(true, false, &[])).unwrap_err();
        assert_eq!(
            refused,
            IllegalTransition {
                from: Terminating,
                to: Ready
            }
        );
    }

    #[test]
    fn nothing_is_released_while_the_plan_lives() {
        for current in PlanPhase::ALL.iter().copied().filter(|p| *p != Terminating) {
            for valid in [true, false] {
                assert!(!step(current, &observed(valid, false, &[])).unwrap().release);
            }
        }
    }
}
