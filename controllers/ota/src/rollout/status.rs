//! The FirmwareRollout's status and Events, from the decision and the book. Pure: recomputing
//! an unchanged rollout gives exactly its current status, so nothing is written.

use flotilla_crds::common::{FailureReasonCount, MAX_FAILURE_REASONS, describe_spec_errors};
use flotilla_crds::condition::{ConditionStatus, reasons, types};
use flotilla_crds::firmware_rollout::{
    CohortStatus, FailedDevice, FirmwareRolloutPhase as P, FirmwareRolloutStatus, MAX_COHORTS,
    RolloutPlan, WaveStatus,
};
use flotilla_crds::{Condition, common::SpecError};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use super::book::RolloutBook;
use super::phase::{Decision, PauseReason, Reason};
use super::thresholds::Crossing;
use flotilla_runtime::conditions::{ConditionUpdate, Standing, set_conditions, set_standing};
use flotilla_runtime::events::Planned;

/// Event and condition reasons of the rollout controller beyond the shared ones.
pub mod event_reasons {
    /// The rollout fixed its plan and started.
    pub const STARTED: &str = "Started";
    /// A wave started.
    pub const WAVE_STARTED: &str = "WaveStarted";
    /// The phase changed.
    pub const PHASE_CHANGED: &str = "PhaseChanged";
    /// A failure threshold was crossed.
    pub const THRESHOLD_CROSSED: &str = "FailureThresholdCrossed";
    /// The rollout finished.
    pub const COMPLETED: &str = "Completed";
    /// The spec is invalid.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The rollout's FirmwareRelease is missing or not Ready.
    pub const RELEASE_NOT_READY: &str = "ReleaseNotReady";
    /// The target shards could not be read.
    pub const SHARDS_UNREADABLE: &str = "TargetShardsUnreadable";
}

/// What the status is computed from besides the decision.
pub struct Inputs<'a> {
    /// The status now.
    pub current: Option<&'a FirmwareRolloutStatus>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The spec's validation.
    pub validation: &'a Result<(), Vec<SpecError>>,
    /// The release: `Ok` when Ready, else why not.
    pub release: &'a Result<(), String>,
    /// The plan to show (before the start: the current proposal; after: the fixed plan).
    pub plan: Option<&'a RolloutPlan>,
    /// The progress, once started.
    pub book: Option<&'a RolloutBook>,
    /// A crossed threshold.
    pub crossing: Option<&'a Crossing>,
    /// Rollouts holding devices this one wants.
    pub holders: &'a [String],
    /// Whether approval is required.
    pub approval_required: bool,
    /// Whether a maintenance window is set, and whether it is open.
    pub window: Option<bool>,
    /// The time.
    pub now: Timestamp,
}

/// The status the rollout should have.
pub fn desired_status(decision: Option<&Decision>, inputs: &Inputs<'_>) -> FirmwareRolloutStatus {
    let current = inputs.current.cloned().unwrap_or_default();
    let now = inputs.now;
    let phase = decision.map_or(current.phase.unwrap_or_default(), |d| d.phase);
    let mut status = FirmwareRolloutStatus {
        phase: Some(phase),
        observed_generation: inputs.generation,
        plan: inputs.plan.cloned().or(current.plan.clone()),
        ..current.clone()
    };
    if let Some(decision) = decision {
        status.current_wave = (decision.current_wave > 0).then_some(decision.current_wave as i32);
        status.next_wave_at = decision.next_wave_at.map(Time);
        status.resume_at_pause = decision.resume_at_pause.clone();
        status.acknowledged_failures = decision.acknowledged_failures.map(|n| n as i32);
        let started = !matches!(phase, P::Pending | P::AwaitingApproval);
        if started && status.started_at.is_none() {
            status.started_at = Some(Time(now));
        }
        if phase.is_terminal() && status.completed_at.is_none() {
            status.completed_at = Some(Time(now));
        }
    }
    if let Some(book) = inputs.book {
        fill_progress(&mut status, &current, book, now);
    }
    let mut conditions: Vec<Condition> = current.conditions.clone();
    let reason = decision.map(|d| &d.reason);
    let updates = conditions_for(phase, reason, inputs);
    let standing = standing(phase, reason, inputs.validation.is_err());
    // Stalled says why with Ready where Ready says it (invalid, failed), else with the phase.
    let cause = updates
        .iter()
        .find(|u| {
            u.type_ == types::READY
                && u.status == ConditionStatus::False
                && standing == Standing::Stalled
        })
        .or_else(|| updates.iter().find(|u| u.type_ == types::PROGRESSING))
        .cloned();
    if let Some(cause) = cause {
        set_standing(&mut conditions, standing, &cause, inputs.generation, now);
    }
    set_conditions(&mut conditions, updates, inputs.generation, now);
    status.conditions = conditions;
    status
}

/// Where the rollout stands for kstatus: running (or pausing between waves for a set time)
/// is Reconciling; failed, rolled back, held by the failure threshold or a release no longer
/// Ready, or invalid, is Stalled;
/// done, aborted, or waiting on purpose for a person (`spec.paused`, an `untilResumed` pause,
/// approval) is settled.
fn standing(phase: P, reason: Option<&Reason>, invalid: bool) -> Standing {
    if invalid {
        return Standing::Stalled;
    }
    match (phase, reason) {
        (P::Failed | P::RolledBack, _)
        | (
            P::Paused,
            Some(Reason::Paused(PauseReason::Threshold(_) | PauseReason::ReleaseNotReady)),
        ) => Standing::Stalled,
        (P::Paused, Some(Reason::Paused(PauseReason::Wave { .. })))
        | (P::Pending | P::Progressing | P::RollingBack | P::WaitingForWindow, _) => {
            Standing::Reconciling
        }
        (P::Paused | P::AwaitingApproval | P::Succeeded | P::Aborted, _) => Standing::Current,
    }
}

fn fill_progress(
    status: &mut FirmwareRolloutStatus,
    current: &FirmwareRolloutStatus,
    book: &RolloutBook,
    now: Timestamp,
) {
    let progress = &book.book;
    status.counts = Some(progress.overall().to_counts());
    let current_wave = status.current_wave.unwrap_or(0);
    status.waves = progress
        .waves()
        .iter()
        .enumerate()
        .map(|(i, tally)| {
            let number = i as i32 + 1;
            let before = current.waves.iter().find(|w| w.number == number);
            let complete = progress.wave_complete(i);
            let begun = number <= current_wave || complete;
            WaveStatus {
                number,
                counts: tally.to_counts(),
                started_at: before
                    .and_then(|w| w.started_at.clone())
                    .or_else(|| begun.then_some(Time(now))),
                completed_at: before
                    .and_then(|w| w.completed_at.clone())
                    .or_else(|| (complete && begun).then_some(Time(now))),
            }
        })
        .collect();
    status.cohorts = book
        .cohorts
        .iter()
        .zip(progress.cohorts())
        .take(MAX_COHORTS as usize)
        .map(|(key, tally)| CohortStatus {
            model: key.model.clone(),
            from_version: key.from_version.clone(),
            counts: tally.to_counts(),
        })
        .collect();
    let mut reasons: Vec<FailureReasonCount> = book
        .failure_counts
        .iter()
        .map(|(code, count)| FailureReasonCount {
            reason: code.to_string(),
            count: i64::from(*count),
        })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    reasons.truncate(MAX_FAILURE_REASONS as usize);
    status.failure_reasons = reasons;
    status.failed_devices = book
        .failed_recent
        .iter()
        .map(|f| {
            let before = current.failed_devices.iter().find(|d| *d.name == *f.name);
            FailedDevice {
                name: f.name.to_string(),
                reason: f.code.to_string(),
                wave: Some(f.wave as i32),
                failed_at: before
                    .and_then(|d| d.failed_at.clone())
                    .or(Some(Time(f.at))),
            }
        })
        .collect();
}

fn conditions_for(phase: P, reason: Option<&Reason>, inputs: &Inputs<'_>) -> Vec<ConditionUpdate> {
    let mut updates = Vec::new();
    updates.push(match (inputs.validation, phase) {
        (Err(errors), _) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            reasons::INVALID_SPEC,
            describe_spec_errors(errors),
        ),
        (Ok(()), P::Failed) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            "Failed",
            reason.map_or_else(String::new, describe),
        ),
        (Ok(()), _) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            "the rollout's spec is valid",
        ),
    });
    let progressing = matches!(phase, P::Progressing | P::RollingBack | P::WaitingForWindow);
    updates.push(ConditionUpdate::new(
        types::PROGRESSING,
        if progressing {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        phase.as_str(),
        reason.map_or_else(|| phase.as_str().to_owned(), describe),
    ));
    updates.push(match inputs.release {
        Ok(()) => ConditionUpdate::new(
            types::RELEASE_READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            "the FirmwareRelease is Ready",
        ),
        Err(why) => ConditionUpdate::new(
            types::RELEASE_READY,
            ConditionStatus::False,
            reasons::NOT_READY,
            why.clone(),
        ),
    });
    if inputs.approval_required {
        let hash = inputs.plan.map(|p| p.hash.as_str()).unwrap_or("");
        updates.push(match reason {
            Some(Reason::AwaitingApproval { mismatch: true }) => ConditionUpdate::new(
                types::APPROVED,
                ConditionStatus::False,
                reasons::PLAN_HASH_MISMATCH,
                format!("spec.approvedPlanHash does not match the plan; the plan's hash is {hash}"),
            ),
            Some(Reason::AwaitingApproval { mismatch: false }) => ConditionUpdate::new(
                types::APPROVED,
                ConditionStatus::False,
                reasons::AWAITING_APPROVAL,
                format!("set spec.approvedPlanHash to {hash} to start"),
            ),
            _ if matches!(phase, P::Pending) => ConditionUpdate::new(
                types::APPROVED,
                ConditionStatus::False,
                reasons::PENDING,
                "no plan yet",
            ),
            _ => ConditionUpdate::new(
                types::APPROVED,
                ConditionStatus::True,
                reasons::RECONCILED,
                "the plan was approved",
            ),
        });
    }
    updates.push(if inputs.holders.is_empty() {
        ConditionUpdate::new(
            types::DEVICES_CONTENDED,
            ConditionStatus::False,
            reasons::RECONCILED,
            "no other rollout holds a selected device",
        )
    } else {
        ConditionUpdate::new(
            types::DEVICES_CONTENDED,
            ConditionStatus::True,
            reasons::HELD_BY_ANOTHER_ROLLOUT,
            format!(
                "selected devices are held by {}; this rollout waits for them",
                inputs.holders.join(", ")
            ),
        )
    });
    updates.push(match inputs.crossing {
        Some(crossing) => ConditionUpdate::new(
            types::FAILURE_THRESHOLD_EXCEEDED,
            ConditionStatus::True,
            reasons::PAUSED_BY_FAILURE_THRESHOLD,
            crossing.to_string(),
        ),
        None => ConditionUpdate::new(
            types::FAILURE_THRESHOLD_EXCEEDED,
            ConditionStatus::False,
            reasons::RECONCILED,
            "failures are within every threshold",
        ),
    });
    if let Some(open) = inputs.window {
        updates.push(if open {
            ConditionUpdate::new(
                types::IN_MAINTENANCE_WINDOW,
                ConditionStatus::True,
                reasons::RECONCILED,
                "the maintenance window is open",
            )
        } else {
            ConditionUpdate::new(
                types::IN_MAINTENANCE_WINDOW,
                ConditionStatus::False,
                reasons::OUTSIDE_MAINTENANCE_WINDOW,
                "outside the maintenance window: nothing new is assigned",
            )
        });
    }
    updates
}

/// A reason in words (condition messages and Events).
pub fn describe(reason: &Reason) -> String {
    match reason {
        Reason::ReleaseNotReady => "the FirmwareRelease is missing or not Ready".into(),
        Reason::Planning => "computing the plan".into(),
        Reason::DevicesContended => "selected devices are held by another rollout".into(),
        Reason::AwaitingApproval { mismatch: false } => "waiting for spec.approvedPlanHash".into(),
        Reason::AwaitingApproval { mismatch: true } => {
            "spec.approvedPlanHash does not match the plan".into()
        }
        Reason::Progressing => "assigning devices".into(),
        Reason::Paused(PauseReason::Spec) => "paused by spec.paused".into(),
        Reason::Paused(PauseReason::Wave { wave, until }) => {
            format!("wave {wave} completed; the next wave starts at {until}")
        }
        Reason::Paused(PauseReason::UntilResumed { wave }) => {
            format!("wave {wave} completed; waiting for spec.resume to change")
        }
        Reason::Paused(PauseReason::Threshold(message)) => {
            format!("paused by the failure threshold ({message}); change spec.resume to go on")
        }
        Reason::Paused(PauseReason::ReleaseNotReady) => {
            "paused: the FirmwareRelease is no longer Ready".into()
        }
        Reason::WaitingForWindow => "outside the maintenance window".into(),
        Reason::Succeeded => "every wave completed".into(),
        Reason::Failed(message) => format!("failed: {message}"),
        Reason::RollingBack(message) if message.is_empty() => "rolling back".into(),
        Reason::RollingBack(message) => format!("rolling back: {message}"),
        Reason::RolledBack => "every touched device is back on its previous version".into(),
        Reason::Aborted => "aborted by spec.abort".into(),
        Reason::AbortedByThreshold(message) => {
            format!("aborted by the failure threshold: {message}")
        }
        Reason::Finished => "finished".into(),
    }
}

/// Events for what changed between the status before and after: start, new waves, phase
/// changes, crossed thresholds, completion.
pub fn transition_events(
    before: Option<&FirmwareRolloutStatus>,
    after: &FirmwareRolloutStatus,
    reason: Option<&Reason>,
) -> Vec<Planned> {
    let mut events = Vec::new();
    let invalid = |s: &FirmwareRolloutStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == types::READY && c.reason == reasons::INVALID_SPEC)
            .map(|c| c.message.clone())
    };
    if let Some(message) = invalid(after)
        && before.and_then(invalid).as_ref() != Some(&message)
    {
        events.push(Planned {
            type_: EventType::Warning,
            reason: event_reasons::INVALID_SPEC,
            note: message,
        });
    }
    // A rollout waiting for its release says so once per cause, not only in its condition.
    let release_not_ready = |s: &FirmwareRolloutStatus| {
        s.conditions
            .iter()
            .find(|c| {
                c.type_ == types::RELEASE_READY && c.status == ConditionStatus::False.as_str()
            })
            .map(|c| c.message.clone())
    };
    if let Some(message) = release_not_ready(after)
        && before.and_then(release_not_ready).as_ref() != Some(&message)
    {
        events.push(Planned {
            type_: EventType::Warning,
            reason: event_reasons::RELEASE_NOT_READY,
            note: message,
        });
    }
    let was = before.and_then(|s| s.phase).unwrap_or_default();
    let is = after.phase.unwrap_or_default();
    let note = reason.map_or_else(|| is.as_str().to_owned(), describe);
    if before.is_none_or(|s| s.started_at.is_none()) && after.started_at.is_some() {
        let targeted = after.plan.as_ref().map_or(0, |p| p.targeted);
        events.push(Planned {
            type_: EventType::Normal,
            reason: event_reasons::STARTED,
            note: format!("started with {targeted} devices"),
        });
    }
    let wave_before = before.and_then(|s| s.current_wave).unwrap_or(0);
    if let Some(wave) = after.current_wave
        && wave > wave_before
        && !is.is_terminal()
    {
        events.push(Planned {
            type_: EventType::Normal,
            reason: event_reasons::WAVE_STARTED,
            note: format!("wave {wave} started"),
        });
    }
    let crossed = |s: &FirmwareRolloutStatus| {
        s.conditions.iter().any(|c| {
            c.type_ == types::FAILURE_THRESHOLD_EXCEEDED
                && c.status == ConditionStatus::True.as_str()
        })
    };
    if crossed(after) && !before.is_some_and(crossed) {
        let message = after
            .conditions
            .iter()
            .find(|c| c.type_ == types::FAILURE_THRESHOLD_EXCEEDED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push(Planned {
            type_: EventType::Warning,
            reason: event_reasons::THRESHOLD_CROSSED,
            note: message,
        });
    }
    if was != is {
        let warning = matches!(is, P::Failed | P::Aborted | P::RollingBack | P::RolledBack)
            || matches!(reason, Some(Reason::Paused(PauseReason::Threshold(_))));
        events.push(Planned {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: if is.is_terminal() {
                event_reasons::COMPLETED
            } else {
                event_reasons::PHASE_CHANGED
            },
            note: format!("{} → {}: {note}", was.as_str(), is.as_str()),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_release_ready(status: &str, message: &str) -> FirmwareRolloutStatus {
        FirmwareRolloutStatus {
            phase: Some(P::Pending),
            conditions: vec![Condition {
                type_: types::RELEASE_READY.into(),
                status: status.into(),
                reason: reasons::NOT_READY.into(),
                message: message.into(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..FirmwareRolloutStatus::default()
        }
    }

    #[test]
    fn a_release_that_is_not_ready_is_an_event_once_per_cause() {
        let missing = with_release_ready("False", "FirmwareRelease fw not found");
        let events = transition_events(None, &missing, None);
        assert_eq!(
            events.len(),
            1,
            "{:?}",
            events.iter().map(|e| e.reason).collect::<Vec<_>>()
        );
        assert_eq!(events[0].reason, event_reasons::RELEASE_NOT_READY);
        assert!(matches!(events[0].type_, EventType::Warning));
        assert_eq!(events[0].note, "FirmwareRelease fw not found");
        assert!(transition_events(Some(&missing), &missing, None).is_empty());
        let not_ready = with_release_ready("False", "FirmwareRelease fw is not Ready");
        assert_eq!(
            transition_events(Some(&missing), &not_ready, None)[0].reason,
            event_reasons::RELEASE_NOT_READY
        );
        let ready = with_release_ready("True", "the FirmwareRelease is Ready");
        assert!(transition_events(Some(&not_ready), &ready, None).is_empty());
    }
}
