//! The FirmwareRelease lifecycle: `Pending → Ready ⇄ Invalid`, and from any of them
//! `→ Terminating` once the release is deleted. Terminating is final.

use flotilla_crds::{FirmwareReleasePhase, SpecError};

use flotilla_runtime::phase::{IllegalTransition, Phase};
use flotilla_runtime::users::Users;

/// What the controller observed about a release and the world around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The outcome of `FirmwareReleaseSpec::validate`.
    pub validation: Result<(), Vec<SpecError>>,
    /// The release has a `deletionTimestamp`.
    pub deleting: bool,
    /// The live FirmwareRollouts that use the release.
    pub rollouts: Users,
    /// Devices in the namespace running the release's version.
    pub devices: usize,
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The phase to report.
    pub phase: FirmwareReleasePhase,
    /// Whether to remove the finalizer and let the deletion complete.
    pub release: bool,
}

/// The pure decision: the phase the release is in now, and whether its deletion may proceed
/// (only once no live rollout uses it). Refuses phase moves the lifecycle forbids.
pub fn step(
    current: FirmwareReleasePhase,
    observed: &Observation,
) -> Result<Step, IllegalTransition<FirmwareReleasePhase>> {
    let wanted = if observed.deleting {
        FirmwareReleasePhase::Terminating
    } else if observed.validation.is_ok() {
        FirmwareReleasePhase::Ready
    } else {
        FirmwareReleasePhase::Invalid
    };
    let phase = current.transition(wanted)?;
    Ok(Step {
        phase,
        release: phase == FirmwareReleasePhase::Terminating && observed.rollouts.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::reconcile::MAX_LISTED_ROLLOUTS;
    use FirmwareReleasePhase::{Invalid, Pending, Ready, Terminating};
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
        for phase in FirmwareReleasePhase::ALL {
            let wire = serde_json::to_value(phase).expect("serialize");
            assert_eq!(wire, phase.as_str());
        }
    }

    fn observed(valid: bool, deleting: bool, rollouts: &[&str]) -> Observation {
        Observation {
            validation: if valid {
                Ok(())
            } else {
                Err(vec![SpecError::new(
                    "spec.version",
                    "not a semantic version",
                )])
            },
            deleting,
            rollouts: Users::bounded(
                rollouts.iter().map(|s| (*s).to_owned()),
                MAX_LISTED_ROLLOUTS,
            ),
            devices: 0,
        }
    }

    #[test]
    fn validity_decides_ready_or_invalid() {
        assert_eq!(
            step(Pending, &observed(true, false, &[])).unwrap().phase,
            Ready
        );
        assert_eq!(
            step(Pending, &observed(false, false, &[])).unwrap().phase,
            Invalid
        );
        assert_eq!(
            step(Ready, &observed(false, false, &["r"])).unwrap().phase,
            Invalid
        );
        assert_eq!(
            step(Invalid, &observed(true, false, &[])).unwrap().phase,
            Ready
        );
    }

    #[test]
    fn deletion_waits_for_live_rollouts_then_releases() {
        let blocked = step(Ready, &observed(true, true, &["r1"])).unwrap();
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
        assert!(step(Invalid, &observed(false, true, &[])).unwrap().release);
    }

    #[test]
    fn a_terminating_release_never_comes_back_and_a_living_one_is_never_released() {
        assert_eq!(
            step(Terminating, &observed(true, false, &[])).unwrap_err(),
            IllegalTransition {
                from: Terminating,
                to: Ready
            }
        );
        for current in [Pending, Ready, Invalid] {
            for valid in [true, false] {
                assert!(!step(current, &observed(valid, false, &[])).unwrap().release);
            }
        }
    }
}
