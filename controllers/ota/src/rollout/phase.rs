//! The FirmwareRollout lifecycle: the transition table (in `flotilla_crds`, beside the enum)
//! and the pure decision of each reconcile.
//!
//! | From | To |
//! |---|---|
//! | Pending | AwaitingApproval, Progressing, Aborted |
//! | AwaitingApproval | Pending, Progressing, Aborted |
//! | Progressing | Paused, WaitingForWindow, Succeeded, Failed, RollingBack, Aborted |
//! | Paused | Progressing, WaitingForWindow, Succeeded, Failed, RollingBack, Aborted |
//! | WaitingForWindow | Progressing, Paused, Succeeded, Failed, RollingBack, Aborted |
//! | RollingBack | RolledBack, Failed, Aborted |
//! | Succeeded, Failed, RolledBack, Aborted | — |
//!
//! [`decide`] walks the table one legal step at a time (Pending → Progressing → Paused in one
//! reconcile when `spec.paused` is set at creation), in this order of precedence:
//! 1. a terminal phase stays; `spec.abort` → Aborted;
//! 2. RollingBack → RolledBack once every touched device is back (Failed if some could not
//!    be rolled back);
//! 3. before the start: release not Ready, no plan yet, or devices held by other rollouts →
//!    Pending; approval required and `approvedPlanHash` ≠ plan hash → AwaitingApproval;
//!    else start (Progressing, wave 1);
//! 4. a failure threshold crossed, and not acknowledged → `onFailure` at once: Pause,
//!    Abort, or Rollback;
//! 5. completed waves: the last → Succeeded (Failed if a threshold is crossed, even
//!    acknowledged); otherwise the wave's pause (timed: `nextWaveAt`; `untilResumed`: until
//!    `spec.resume` differs from `resumeAtPause`), then the next wave. Empty waves do not
//!    pause;
//! 6. `spec.paused` → Paused; release not Ready → Paused (nothing new is assigned with a
//!    withdrawn release); window closed → WaitingForWindow; else Progressing, assign.
//!
//! **Resume after a threshold pause.** `resumeAtPause` records `spec.resume` (`""` when
//! unset) when a pause starts; a different `spec.resume` ends it. Ending a threshold pause
//! records the failed count in `acknowledgedFailures`: the threshold pauses again only when
//! more devices fail. One resume ends one pause: a wave pause that begins right after needs
//! its own.

use flotilla_crds::FirmwareRolloutPhase as P;
use flotilla_crds::firmware_rollout::{FailureAction, FirmwareRolloutSpec};
use flotilla_runtime::phase::{IllegalTransition, Phase};
use jiff::{SignedDuration, Timestamp};

use super::thresholds::Crossing;

/// The rollout's recorded state (from its status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// `status.phase` (Pending when unset).
    pub phase: P,
    /// `status.currentWave`: from 1; 0 before the start.
    pub current_wave: u32,
    /// `status.nextWaveAt`.
    pub next_wave_at: Option<Timestamp>,
    /// `status.resumeAtPause`.
    pub resume_at_pause: Option<String>,
    /// `status.acknowledgedFailures`.
    pub acknowledged_failures: Option<u32>,
}

/// One wave, as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaveState {
    /// Devices in the wave.
    pub devices: u32,
    /// Every device succeeded, failed or was skipped.
    pub complete: bool,
    /// When it completed, if known.
    pub completed_at: Option<Timestamp>,
}

/// The maintenance window now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowState {
    /// Open, or no window.
    Open,
    /// Closed; opens next at this instant, if ever.
    Closed {
        /// The next opening.
        opens_at: Option<Timestamp>,
    },
}

/// Progress of a rollback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackState {
    /// Not started, or touched devices are still going back.
    Running,
    /// Every touched device is done going back; `failed` could not.
    Done {
        /// Devices that failed to roll back.
        failed: u32,
    },
}

/// What the shell observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation<'a> {
    /// The FirmwareRelease exists and is Ready.
    pub release_ready: bool,
    /// The hash of the plan (the fixed plan once started); `None` while not computed.
    pub plan_hash: Option<&'a str>,
    /// Before the start: some matched devices are held by other rollouts, so the rollout
    /// waits for them.
    pub devices_contended: bool,
    /// The maintenance window.
    pub window: WindowState,
    /// A crossed failure threshold, if any (see `thresholds`).
    pub crossing: Option<&'a Crossing>,
    /// Failed devices overall.
    pub failed: u32,
    /// Every wave of the plan, in order.
    pub waves: &'a [WaveState],
    /// Rollback progress (read in RollingBack).
    pub rollback: RollbackState,
    /// The time.
    pub now: Timestamp,
}

/// What the shell carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fix the plan: persist the target shards, stamp `startedAt`.
    Start,
    /// Assign the next devices (`assign::ProgressBook::next_assignments`).
    Assign,
    /// Assign every touched device the version it had when assigned (continues while
    /// RollingBack).
    Rollback,
    /// Stamp `completedAt` and release the devices' rollout label.
    Complete,
}

/// Why a pause holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PauseReason {
    /// `spec.paused`.
    Spec,
    /// A timed pause after a wave (number from 1), until an instant.
    Wave {
        /// The wave that completed.
        wave: u32,
        /// When the next wave starts.
        until: Timestamp,
    },
    /// An `untilResumed` pause after a wave.
    UntilResumed {
        /// The wave that completed.
        wave: u32,
    },
    /// The failure threshold, with the crossing's message.
    Threshold(String),
    /// The release is no longer Ready.
    ReleaseNotReady,
}

/// Why the rollout is where it is (for conditions and Events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The release is missing or not Ready.
    ReleaseNotReady,
    /// The plan is not computed yet.
    Planning,
    /// Devices are held by other rollouts.
    DevicesContended,
    /// Waiting for `approvedPlanHash`; `mismatch` when one is set but differs.
    AwaitingApproval {
        /// An approved hash is set and does not match.
        mismatch: bool,
    },
    /// Assigning and watching.
    Progressing,
    /// Held.
    Paused(PauseReason),
    /// Outside the maintenance window.
    WaitingForWindow,
    /// Every wave completed.
    Succeeded,
    /// Completed with a crossed threshold, or the rollback left devices behind.
    Failed(String),
    /// Rolling back after a crossing.
    RollingBack(String),
    /// Every touched device is back.
    RolledBack,
    /// `spec.abort`.
    Aborted,
    /// The threshold, with `onFailure: Abort`.
    AbortedByThreshold(String),
    /// Already finished.
    Finished,
}

/// The outcome of one reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The phase to record.
    pub phase: P,
    /// The current wave to record (from 1; 0 before the start).
    pub current_wave: u32,
    /// `status.nextWaveAt` to record.
    pub next_wave_at: Option<Timestamp>,
    /// `status.resumeAtPause` to record.
    pub resume_at_pause: Option<String>,
    /// `status.acknowledgedFailures` to record.
    pub acknowledged_failures: Option<u32>,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Why.
    pub reason: Reason,
    /// When to look again regardless of events (pause end, window opening).
    pub requeue_at: Option<Timestamp>,
}

impl Decision {
    /// Whether `action` is part of the decision.
    pub fn does(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }
}

struct Walk {
    decision: Decision,
}

impl Walk {
    fn to(&mut self, next: P) -> Result<(), IllegalTransition<P>> {
        self.decision.phase = self.decision.phase.transition(next)?;
        Ok(())
    }

    fn end(
        mut self,
        next: P,
        reason: Reason,
        actions: &[Action],
    ) -> Result<Decision, IllegalTransition<P>> {
        self.to(next)?;
        self.decision.reason = reason;
        self.decision.actions.extend_from_slice(actions);
        Ok(self.decision)
    }
}

/// Decides the next phase and actions (see the module docs). Errs only if the recorded
/// phase cannot reach the wanted one, e.g. a hand-edited status.
pub fn decide(
    spec: &FirmwareRolloutSpec,
    recorded: &Recorded,
    observed: &Observation<'_>,
) -> Result<Decision, IllegalTransition<P>> {
    let mut walk = Walk {
        decision: Decision {
            phase: recorded.phase,
            current_wave: recorded.current_wave,
            next_wave_at: recorded.next_wave_at,
            resume_at_pause: recorded.resume_at_pause.clone(),
            acknowledged_failures: recorded.acknowledged_failures,
            actions: Vec::new(),
            reason: Reason::Finished,
            requeue_at: None,
        },
    };
    let phase = recorded.phase;
    if phase.is_terminal() {
        return Ok(walk.decision);
    }
    // A hand-edited or stale wave number never points outside the plan: 0 before the
    // start, a wave of the plan after it.
    let total = observed.waves.len() as u32;
    walk.decision.current_wave = match phase {
        P::Pending | P::AwaitingApproval => 0,
        _ => recorded.current_wave.clamp(1, total.max(1)),
    };
    if spec.abort {
        return walk.end(P::Aborted, Reason::Aborted, &[Action::Complete]);
    }
    if phase == P::RollingBack {
        return match observed.rollback {
            RollbackState::Running => {
                let reason = Reason::RollingBack(String::new());
                walk.end(P::RollingBack, reason, &[Action::Rollback])
            }
            RollbackState::Done { failed: 0 } => {
                walk.end(P::RolledBack, Reason::RolledBack, &[Action::Complete])
            }
            RollbackState::Done { failed } => walk.end(
                P::Failed,
                Reason::Failed(format!("{failed} devices could not be rolled back")),
                &[Action::Complete],
            ),
        };
    }
    let spec_resume = spec.resume.clone().unwrap_or_default();

    if matches!(phase, P::Pending | P::AwaitingApproval) {
        if !observed.release_ready {
            return walk.end(P::Pending, Reason::ReleaseNotReady, &[]);
        }
        let Some(hash) = observed.plan_hash else {
            return walk.end(P::Pending, Reason::Planning, &[]);
        };
        if observed.devices_contended {
            return walk.end(P::Pending, Reason::DevicesContended, &[]);
        }
        if spec.awaits_approval_of(hash) {
            let mismatch = spec.approved_plan_hash.is_some();
            return walk.end(
                P::AwaitingApproval,
                Reason::AwaitingApproval { mismatch },
                &[],
            );
        }
        walk.to(P::Progressing)?;
        walk.decision.actions.push(Action::Start);
        walk.decision.current_wave = 1;
    }

    let unacknowledged = observed.crossing.filter(|_| {
        walk.decision
            .acknowledged_failures
            .is_none_or(|acknowledged| observed.failed > acknowledged)
    });
    if let Some(crossing) = unacknowledged {
        let message = crossing.to_string();
        match spec.on_failure {
            FailureAction::Abort => {
                return walk.end(
                    P::Aborted,
                    Reason::AbortedByThreshold(message),
                    &[Action::Complete],
                );
            }
            FailureAction::Rollback => {
                return walk.end(
                    P::RollingBack,
                    Reason::RollingBack(message),
                    &[Action::Rollback],
                );
            }
            FailureAction::Pause => match &walk.decision.resume_at_pause {
                Some(at_pause) if *at_pause != spec_resume => {
                    walk.decision.acknowledged_failures = Some(observed.failed);
                    walk.decision.resume_at_pause = None;
                }
                _ => {
                    walk.decision.resume_at_pause = Some(spec_resume);
                    let reason = Reason::Paused(PauseReason::Threshold(message));
                    return walk.end(P::Paused, reason, &[]);
                }
            },
        }
    }

    loop {
        let number = walk.decision.current_wave;
        let Some(wave) = observed.waves.get(number as usize - 1) else {
            // A plan without waves has nothing to do.
            return walk.end(P::Succeeded, Reason::Succeeded, &[Action::Complete]);
        };
        if !wave.complete {
            break;
        }
        if number == total {
            return match observed.crossing {
                Some(crossing) => walk.end(
                    P::Failed,
                    Reason::Failed(crossing.to_string()),
                    &[Action::Complete],
                ),
                None => walk.end(P::Succeeded, Reason::Succeeded, &[Action::Complete]),
            };
        }
        let pause = spec
            .waves
            .get(number as usize - 1)
            .and_then(|w| w.pause.as_ref())
            .filter(|_| wave.devices > 0);
        match pause {
            Some(pause) if pause.until_resumed => match &walk.decision.resume_at_pause {
                Some(at_pause) if *at_pause != spec_resume => {
                    walk.decision.resume_at_pause = None;
                }
                Some(_) => {
                    let reason = Reason::Paused(PauseReason::UntilResumed { wave: number });
                    return walk.end(P::Paused, reason, &[]);
                }
                None => {
                    walk.decision.resume_at_pause = Some(spec_resume);
                    let reason = Reason::Paused(PauseReason::UntilResumed { wave: number });
                    return walk.end(P::Paused, reason, &[]);
                }
            },
            Some(pause) => {
                let length = pause
                    .duration
                    .as_ref()
                    .and_then(|d| SignedDuration::try_from(d.as_std()).ok())
                    .unwrap_or(SignedDuration::ZERO);
                let until = walk.decision.next_wave_at.unwrap_or_else(|| {
                    let since = wave.completed_at.unwrap_or(observed.now);
                    since.checked_add(length).unwrap_or(Timestamp::MAX)
                });
                if observed.now < until {
                    walk.decision.next_wave_at = Some(until);
                    walk.decision.requeue_at = Some(until);
                    let reason = Reason::Paused(PauseReason::Wave {
                        wave: number,
                        until,
                    });
                    return walk.end(P::Paused, reason, &[]);
                }
                walk.decision.next_wave_at = None;
            }
            None => {}
        }
        walk.decision.current_wave = number + 1;
    }

    if spec.paused {
        return walk.end(P::Paused, Reason::Paused(PauseReason::Spec), &[]);
    }
    if !observed.release_ready {
        let reason = Reason::Paused(PauseReason::ReleaseNotReady);
        return walk.end(P::Paused, reason, &[]);
    }
    match observed.window {
        WindowState::Closed { opens_at } => {
            walk.decision.requeue_at = opens_at;
            walk.end(P::WaitingForWindow, Reason::WaitingForWindow, &[])
        }
        WindowState::Open => walk.end(P::Progressing, Reason::Progressing, &[Action::Assign]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::thresholds::{Limit, Scope};
    use flotilla_runtime::phase::assert_transition_table;
    use proptest::prelude::*;

    const HASH: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn now() -> Timestamp {
        ts("2030-07-01T12:00:00Z")
    }

    fn spec(extra: serde_json::Value) -> FirmwareRolloutSpec {
        let mut base = serde_json::json!({
            "release": "fw",
            "selector": {"matchLabels": {"ring": "all"}},
            "waves": [{"percent": 10}, {"percent": 100}],
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn recorded(phase: P, wave: u32) -> Recorded {
        Recorded {
            phase,
            current_wave: wave,
            ..Recorded::default()
        }
    }

    fn wave(devices: u32, complete: bool) -> WaveState {
        WaveState {
            devices,
            complete,
            completed_at: complete.then(|| ts("2030-07-01T11:00:00Z")),
        }
    }

    const TWO_OPEN: &[WaveState] = &[
        WaveState {
            devices: 1,
            complete: false,
            completed_at: None,
        },
        WaveState {
            devices: 9,
            complete: false,
            completed_at: None,
        },
    ];

    fn observed(waves: &[WaveState]) -> Observation<'_> {
        Observation {
            release_ready: true,
            plan_hash: Some(HASH),
            devices_contended: false,
            window: WindowState::Open,
            crossing: None,
            failed: 0,
            waves,
            rollback: RollbackState::Running,
            now: now(),
        }
    }

    fn crossing() -> Crossing {
        Crossing {
            scope: Scope::Overall,
            failed: 3,
            finished: 10,
            limit: Limit::Percent(20),
        }
    }

    #[test]
    fn the_transition_table() {
        use P::*;
        let live_to_end = [Succeeded, Failed, RollingBack, Aborted];
        let mut legal = vec![
            (Pending, AwaitingApproval),
            (Pending, Progressing),
            (Pending, Aborted),
            (AwaitingApproval, Pending),
            (AwaitingApproval, Progressing),
            (AwaitingApproval, Aborted),
            (Progressing, Paused),
            (Progressing, WaitingForWindow),
            (Paused, Progressing),
            (Paused, WaitingForWindow),
            (WaitingForWindow, Progressing),
            (WaitingForWindow, Paused),
            (RollingBack, RolledBack),
            (RollingBack, Failed),
            (RollingBack, Aborted),
        ];
        for from in [Progressing, Paused, WaitingForWindow] {
            legal.extend(live_to_end.map(|to| (from, to)));
        }
        assert_transition_table(&legal);
    }

    #[test]
    fn starts_when_ready_planned_and_approved() {
        let d = decide(
            &spec(serde_json::json!({})),
            &recorded(P::Pending, 0),
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(d.phase, P::Progressing);
        assert_eq!(d.actions, [Action::Start, Action::Assign]);
        assert_eq!(d.current_wave, 1);
    }

    #[test]
    fn waits_in_pending_for_release_plan_and_contended_devices() {
        let s = spec(serde_json::json!({}));
        let r = recorded(P::Pending, 0);
        let mut o = observed(TWO_OPEN);
        o.release_ready = false;
        assert_eq!(decide(&s, &r, &o).unwrap().reason, Reason::ReleaseNotReady);
        let mut o = observed(TWO_OPEN);
        o.plan_hash = None;
        assert_eq!(decide(&s, &r, &o).unwrap().reason, Reason::Planning);
        let mut o = observed(TWO_OPEN);
        o.devices_contended = true;
        let d = decide(&s, &r, &o).unwrap();
        assert_eq!((d.phase, d.reason), (P::Pending, Reason::DevicesContended));
        assert!(d.actions.is_empty());
    }

    #[test]
    fn approval_gates_on_the_plan_hash() {
        let s = spec(serde_json::json!({"approval": {"required": true}}));
        let d = decide(&s, &recorded(P::Pending, 0), &observed(TWO_OPEN)).unwrap();
        assert_eq!(d.phase, P::AwaitingApproval);
        assert_eq!(d.reason, Reason::AwaitingApproval { mismatch: false });
        let wrong = spec(
            serde_json::json!({"approval": {"required": true}, "approvedPlanHash": "2".repeat(64)}),
        );
        let d = decide(
            &wrong,
            &recorded(P::AwaitingApproval, 0),
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(d.reason, Reason::AwaitingApproval { mismatch: true });
        assert!(d.actions.is_empty());
        let right =
            spec(serde_json::json!({"approval": {"required": true}, "approvedPlanHash": HASH}));
        let d = decide(
            &right,
            &recorded(P::AwaitingApproval, 0),
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(d.phase, P::Progressing);
        assert!(d.does(Action::Start));
        // The release going away before the start sends it back to Pending.
        let mut o = observed(TWO_OPEN);
        o.release_ready = false;
        let d = decide(&s, &recorded(P::AwaitingApproval, 0), &o).unwrap();
        assert_eq!(d.phase, P::Pending);
    }

    #[test]
    fn abort_from_every_live_phase() {
        let s = spec(serde_json::json!({"abort": true}));
        for phase in P::ALL.into_iter().filter(|p| !p.is_terminal()) {
            let d = decide(&s, &recorded(phase, 1), &observed(TWO_OPEN)).unwrap();
            assert_eq!(d.phase, P::Aborted, "from {phase:?}");
            assert_eq!(d.actions, [Action::Complete]);
        }
    }

    #[test]
    fn terminal_phases_stay_whatever_happens() {
        let s = spec(serde_json::json!({"abort": true, "paused": true}));
        for phase in P::ALL.into_iter().filter(|p| p.is_terminal()) {
            let mut o = observed(TWO_OPEN);
            let c = crossing();
            o.crossing = Some(&c);
            let d = decide(&s, &recorded(phase, 2), &o).unwrap();
            assert_eq!(d.phase, phase);
            assert!(d.actions.is_empty());
        }
    }

    #[test]
    fn threshold_crossed_mid_wave_applies_on_failure_at_once() {
        let c = crossing();
        let mut o = observed(TWO_OPEN);
        o.crossing = Some(&c);
        o.failed = 3;
        let r = recorded(P::Progressing, 1);
        let d = decide(&spec(serde_json::json!({"onFailure": "Abort"})), &r, &o).unwrap();
        assert_eq!(d.phase, P::Aborted);
        assert!(
            matches!(d.reason, Reason::AbortedByThreshold(ref m) if m.starts_with("overall: 3 of 10"))
        );
        let d = decide(&spec(serde_json::json!({"onFailure": "Rollback"})), &r, &o).unwrap();
        assert_eq!(d.phase, P::RollingBack);
        assert_eq!(d.actions, [Action::Rollback]);
        let d = decide(&spec(serde_json::json!({"onFailure": "Pause"})), &r, &o).unwrap();
        assert_eq!(d.phase, P::Paused);
        assert_eq!(d.resume_at_pause.as_deref(), Some(""));
        assert!(!d.does(Action::Assign));
        // Outside the window too.
        let mut closed = o.clone();
        closed.window = WindowState::Closed { opens_at: None };
        let d = decide(
            &spec(serde_json::json!({"onFailure": "Rollback"})),
            &recorded(P::WaitingForWindow, 1),
            &closed,
        )
        .unwrap();
        assert_eq!(d.phase, P::RollingBack);
    }

    #[test]
    fn resume_acknowledges_a_threshold_pause_until_the_next_failure() {
        let s = spec(serde_json::json!({"resume": "ticket-1"}));
        let c = crossing();
        let mut o = observed(TWO_OPEN);
        o.crossing = Some(&c);
        o.failed = 3;
        let mut r = recorded(P::Paused, 1);
        r.resume_at_pause = Some("ticket-1".into());
        let d = decide(&s, &r, &o).unwrap();
        assert_eq!(d.phase, P::Paused, "same resume: still paused");
        let resumed = spec(serde_json::json!({"resume": "ticket-2"}));
        let d = decide(&resumed, &r, &o).unwrap();
        assert_eq!(d.phase, P::Progressing);
        assert_eq!(d.acknowledged_failures, Some(3));
        assert_eq!(d.resume_at_pause, None);
        assert!(d.does(Action::Assign));
        // With the acknowledgement recorded, the same crossing does not pause again...
        let mut r = recorded(P::Progressing, 1);
        r.acknowledged_failures = Some(3);
        assert_eq!(decide(&resumed, &r, &o).unwrap().phase, P::Progressing);
        // ...one more failure does.
        o.failed = 4;
        let d = decide(&resumed, &r, &o).unwrap();
        assert_eq!(d.phase, P::Paused);
        assert_eq!(d.resume_at_pause.as_deref(), Some("ticket-2"));
    }

    #[test]
    fn waves_advance_and_the_last_completes() {
        let s = spec(serde_json::json!({}));
        let waves = [wave(1, true), wave(9, false)];
        let d = decide(&s, &recorded(P::Progressing, 1), &observed(&waves)).unwrap();
        assert_eq!((d.phase, d.current_wave), (P::Progressing, 2));
        let done = [wave(1, true), wave(9, true)];
        let d = decide(&s, &recorded(P::Progressing, 2), &observed(&done)).unwrap();
        assert_eq!(d.phase, P::Succeeded);
        assert_eq!(d.actions, [Action::Complete]);
        // Finished with an acknowledged crossing: Failed.
        let c = crossing();
        let mut o = observed(&done);
        o.crossing = Some(&c);
        o.failed = 3;
        let mut r = recorded(P::Progressing, 2);
        r.acknowledged_failures = Some(3);
        let d = decide(&s, &r, &o).unwrap();
        assert_eq!(d.phase, P::Failed);
    }

    #[test]
    fn an_empty_plan_succeeds_at_once() {
        let waves = [wave(0, true), wave(0, true)];
        let d = decide(
            &spec(serde_json::json!({})),
            &recorded(P::Pending, 0),
            &observed(&waves),
        )
        .unwrap();
        assert_eq!(d.phase, P::Succeeded);
        assert_eq!(d.actions, [Action::Start, Action::Complete]);
    }

    #[test]
    fn timed_wave_pause() {
        let s = spec(
            serde_json::json!({"waves": [{"percent": 10, "pause": {"duration": "2h"}}, {"percent": 100}]}),
        );
        let waves = [wave(1, true), wave(9, false)];
        let d = decide(&s, &recorded(P::Progressing, 1), &observed(&waves)).unwrap();
        assert_eq!(d.phase, P::Paused);
        let until = ts("2030-07-01T13:00:00Z");
        assert_eq!(d.next_wave_at, Some(until), "2h after the wave completed");
        assert_eq!(d.requeue_at, Some(until));
        assert_eq!(
            d.reason,
            Reason::Paused(PauseReason::Wave { wave: 1, until })
        );
        let mut r = recorded(P::Paused, 1);
        r.next_wave_at = Some(until);
        let mut o = observed(&waves);
        o.now = until;
        let d = decide(&s, &r, &o).unwrap();
        assert_eq!(
            (d.phase, d.current_wave, d.next_wave_at),
            (P::Progressing, 2, None)
        );
    }

    #[test]
    fn until_resumed_wave_pause() {
        let s = spec(
            serde_json::json!({"waves": [{"percent": 10, "pause": {"untilResumed": true}}, {"percent": 100}], "resume": "a"}),
        );
        let waves = [wave(1, true), wave(9, false)];
        let d = decide(&s, &recorded(P::Progressing, 1), &observed(&waves)).unwrap();
        assert_eq!(d.phase, P::Paused);
        assert_eq!(
            d.resume_at_pause.as_deref(),
            Some("a"),
            "a resume set before the pause does not end it"
        );
        let mut r = recorded(P::Paused, 1);
        r.resume_at_pause = Some("a".into());
        assert_eq!(decide(&s, &r, &observed(&waves)).unwrap().phase, P::Paused);
        let resumed = spec(
            serde_json::json!({"waves": [{"percent": 10, "pause": {"untilResumed": true}}, {"percent": 100}], "resume": "b"}),
        );
        let d = decide(&resumed, &r, &observed(&waves)).unwrap();
        assert_eq!(
            (d.phase, d.current_wave, d.resume_at_pause),
            (P::Progressing, 2, None)
        );
    }

    #[test]
    fn empty_waves_do_not_pause() {
        let s = spec(serde_json::json!({"waves": [
            {"percent": 10}, {"percent": 20, "pause": {"untilResumed": true}}, {"percent": 100}]}));
        let waves = [wave(1, true), wave(0, true), wave(1, false)];
        let d = decide(&s, &recorded(P::Progressing, 1), &observed(&waves)).unwrap();
        assert_eq!((d.phase, d.current_wave), (P::Progressing, 3));
    }

    #[test]
    fn spec_paused_release_and_window_hold_assignments() {
        let r = recorded(P::Progressing, 1);
        let d = decide(
            &spec(serde_json::json!({"paused": true})),
            &r,
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(
            (d.phase, d.reason.clone()),
            (P::Paused, Reason::Paused(PauseReason::Spec))
        );
        assert!(!d.does(Action::Assign));
        let d = decide(
            &spec(serde_json::json!({})),
            &recorded(P::Paused, 1),
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(d.phase, P::Progressing, "unpaused");
        let mut o = observed(TWO_OPEN);
        o.release_ready = false;
        let d = decide(&spec(serde_json::json!({})), &r, &o).unwrap();
        assert_eq!(d.reason, Reason::Paused(PauseReason::ReleaseNotReady));
        let opens = ts("2030-07-01T22:00:00Z");
        let mut o = observed(TWO_OPEN);
        o.window = WindowState::Closed {
            opens_at: Some(opens),
        };
        let d = decide(&spec(serde_json::json!({})), &r, &o).unwrap();
        assert_eq!((d.phase, d.requeue_at), (P::WaitingForWindow, Some(opens)));
        assert!(d.actions.is_empty());
        let d = decide(
            &spec(serde_json::json!({})),
            &recorded(P::WaitingForWindow, 1),
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(d.phase, P::Progressing);
        // Paused at creation: Pending -> Progressing -> Paused, plan fixed.
        let d = decide(
            &spec(serde_json::json!({"paused": true})),
            &recorded(P::Pending, 0),
            &observed(TWO_OPEN),
        )
        .unwrap();
        assert_eq!(d.phase, P::Paused);
        assert_eq!(d.actions, [Action::Start]);
    }

    #[test]
    fn rollback_completes() {
        let s = spec(serde_json::json!({"onFailure": "Rollback"}));
        let r = recorded(P::RollingBack, 1);
        let mut o = observed(TWO_OPEN);
        assert_eq!(decide(&s, &r, &o).unwrap().actions, [Action::Rollback]);
        o.rollback = RollbackState::Done { failed: 0 };
        let d = decide(&s, &r, &o).unwrap();
        assert_eq!(
            (d.phase, d.actions),
            (P::RolledBack, vec![Action::Complete])
        );
        o.rollback = RollbackState::Done { failed: 2 };
        assert_eq!(decide(&s, &r, &o).unwrap().phase, P::Failed);
    }

    #[test]
    fn illegal_recorded_moves_are_refused_not_taken() {
        // Moves decide could never be asked to make, refused by the table.
        for (from, to) in [
            (P::Succeeded, P::Progressing),
            (P::Progressing, P::Pending),
            (P::Pending, P::Paused),
            (P::Pending, P::Succeeded),
            (P::RolledBack, P::RollingBack),
            (P::RollingBack, P::Progressing),
            (P::Aborted, P::Progressing),
        ] {
            assert_eq!(from.transition(to), Err(IllegalTransition { from, to }));
        }
    }

    fn phases() -> impl Strategy<Value = P> {
        proptest::sample::select(P::ALL.to_vec())
    }

    proptest! {
        /// Whatever is recorded and observed, decide only walks legal steps, assigns only
        /// when Progressing, and never leaves a terminal phase.
        #[test]
        fn decisions_are_legal(
            phase in phases(),
            current_wave in 0u32..4,
            abort in any::<bool>(),
            paused in any::<bool>(),
            on_failure in 0u8..3,
            approval in any::<bool>(),
            approved in any::<bool>(),
            ready in any::<bool>(),
            planned in any::<bool>(),
            contended in any::<bool>(),
            open in any::<bool>(),
            crossed in any::<bool>(),
            failed in 0u32..5,
            acknowledged in proptest::option::of(0u32..5),
            complete in proptest::collection::vec((0u32..3, any::<bool>()), 1..4),
            rollback_done in proptest::option::of(0u32..2),
        ) {
            let mut s = spec(serde_json::json!({
                "onFailure": (["Pause", "Abort", "Rollback"][on_failure as usize]),
                "waves": complete.iter().enumerate().map(|(i, _)| serde_json::json!({"percent": if i + 1 == complete.len() { 100 } else { i as i32 + 1 }, "pause": {"untilResumed": true}})).collect::<Vec<_>>(),
            }));
            s.abort = abort;
            s.paused = paused;
            if approval {
                s.approval = Some(flotilla_crds::firmware_rollout::Approval { required: true });
                s.approved_plan_hash = approved.then(|| HASH.to_owned());
            }
            let waves: Vec<WaveState> = complete.iter().map(|&(d, c)| wave(d, c)).collect();
            let c = crossing();
            let o = Observation {
                release_ready: ready,
                plan_hash: planned.then_some(HASH),
                devices_contended: contended,
                window: if open { WindowState::Open } else { WindowState::Closed { opens_at: None } },
                crossing: crossed.then_some(&c),
                failed,
                waves: &waves,
                rollback: rollback_done.map_or(RollbackState::Running, |failed| RollbackState::Done { failed }),
                now: now(),
            };
            let r = Recorded { phase, current_wave, acknowledged_failures: acknowledged, ..Recorded::default() };
            let d = decide(&s, &r, &o).unwrap();
            if phase.is_terminal() {
                prop_assert_eq!(d.phase, phase);
            }
            if d.does(Action::Assign) {
                prop_assert_eq!(d.phase, P::Progressing);
                prop_assert!(open && !paused && ready && !abort);
            }
            if abort && !phase.is_terminal() {
                prop_assert_eq!(d.phase, P::Aborted);
            }
            if d.phase.is_terminal() && !phase.is_terminal() {
                prop_assert!(d.does(Action::Complete));
            }
            if !phase.is_terminal() {
                prop_assert!(d.current_wave as usize <= waves.len());
            }
        }
    }
}
