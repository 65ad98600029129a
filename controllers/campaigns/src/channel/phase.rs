//! The Channel lifecycle's decision: `Pending → Ready ⇄ NotReady`, and `→ Terminating` once
//! deleted; the deletion completes only when no live Campaign uses the Channel.

use flotilla_crds::{ChannelPhase, SpecError};

use super::secrets::SecretProblem;
use flotilla_runtime::phase::{IllegalTransition, Phase};
use flotilla_runtime::users::Users;

/// Most campaign names a Channel's condition lists.
pub const MAX_LISTED_CAMPAIGNS: usize = 5;

/// What the controller observed about a Channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// `ChannelSpec::validate`.
    pub validation: Result<(), Vec<SpecError>>,
    /// What is wrong with its Secrets (empty when they are usable).
    pub secret_problems: Vec<SecretProblem>,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
    /// Live campaigns that use it.
    pub campaigns: Users,
    /// Its circuit breaker as the senders see it, once a campaign has sent through it.
    pub breaker: Option<flotilla_crds::channel::BreakerStatus>,
}

impl Observation {
    /// Whether campaigns can send through the Channel.
    pub fn usable(&self) -> bool {
        self.validation.is_ok() && self.secret_problems.is_empty()
    }
}

/// What to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// The phase to report.
    pub phase: ChannelPhase,
    /// Remove the finalizer: the deletion may complete.
    pub release: bool,
}

/// The phase the Channel is in now and whether its deletion may proceed.
pub fn step(
    current: ChannelPhase,
    observed: &Observation,
) -> Result<Step, IllegalTransition<ChannelPhase>> {
    let wanted = if observed.deleting {
        ChannelPhase::Terminating
    } else if observed.usable() {
        ChannelPhase::Ready
    } else {
        ChannelPhase::NotReady
    };
    let phase = current.transition(wanted)?;
    Ok(Step {
        phase,
        release: phase == ChannelPhase::Terminating && observed.campaigns.count == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(usable: bool, deleting: bool, campaigns: &[&str]) -> Observation {
        Observation {
            validation: Ok(()),
            secret_problems: if usable {
                Vec::new()
            } else {
                vec![SecretProblem::Missing("s".into())]
            },
            deleting,
            breaker: None,
            campaigns: Users::bounded(
                campaigns.iter().map(|c| (*c).to_owned()),
                MAX_LISTED_CAMPAIGNS,
            ),
        }
    }

    #[test]
    fn readiness_follows_the_secrets() {
        let ready = step(ChannelPhase::Pending, &seen(true, false, &[])).unwrap();
        assert_eq!(ready.phase, ChannelPhase::Ready);
        let lost = step(ChannelPhase::Ready, &seen(false, false, &[])).unwrap();
        assert_eq!(lost.phase, ChannelPhase::NotReady);
        let back = step(ChannelPhase::NotReady, &seen(true, false, &[])).unwrap();
        assert_eq!(back.phase, ChannelPhase::Ready);
    }

    #[test]
    fn a_deletion_waits_for_the_live_campaigns() {
        let held = step(ChannelPhase::Ready, &seen(true, true, &["launch"])).unwrap();
        assert_eq!(
            (held.phase, held.release),
            (ChannelPhase::Terminating, false)
        );
        let free = step(ChannelPhase::Terminating, &seen(false, true, &[])).unwrap();
        assert_eq!(
            (free.phase, free.release),
            (ChannelPhase::Terminating, true)
        );
        // Terminating is final even if the Secret comes back.
        assert!(step(ChannelPhase::Terminating, &seen(true, false, &[])).is_err());
    }
}
