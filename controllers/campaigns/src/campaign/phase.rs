//! The campaign's phase machine: `(spec, recorded phase, what the shell observed, now) →
//! (next phase, actions)`. No I/O. The table of legal moves is the API's
//! (`flotilla_crds::CampaignPhase`); [`decide`] picks one, in this order of precedence:
//! 1. a terminal phase stays; `spec.cancel` → Cancelled;
//! 2. before the start: no `schedule.startAt` and no trigger → Draft; `spec.suspend` →
//!    Paused; `startAt` in the future → Scheduled (woken then); templates invalid or no
//!    channel ready → stay, saying why (nothing is lost by waiting); else start → Running
//!    (a `startAt` in the past starts now);
//! 3. after it: `spec.suspend` → Paused; a crossed failure threshold not yet acknowledged →
//!    Paused; a one-off campaign with nobody left pending → Completed (Failed when every
//!    finished message failed); else Running, sending while templates and a channel allow.
//!
//! A trigger campaign is never complete: it runs, listening, until cancelled.

use flotilla_crds::CampaignPhase as P;
use flotilla_crds::campaign::CampaignSpec;
use flotilla_crds::phase::{IllegalTransition, Phase};
use jiff::Timestamp;

/// What the shell observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The audience is fixed (the campaign started; its ledger exists).
    pub started: bool,
    /// Every template compiled and reads only known fields.
    pub templates_valid: bool,
    /// At least one of the campaign's channels is Ready.
    pub channel_ready: bool,
    /// Recipients not yet sent to, failed, or skipped (one-off campaigns).
    pub pending: u64,
    /// Messages sent (delivered on at least one channel).
    pub sent: u64,
    /// Messages failed for good.
    pub failed: u64,
    /// The failure threshold is crossed and the crossing not acknowledged by a resume.
    pub threshold_crossed: bool,
    /// The time.
    pub now: Timestamp,
}

/// What the shell carries out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fix the audience and its allocation in the ledger; stamp `startedAt`.
    Start,
    /// Send to due recipients (within throttle, quiet hours and channel limits).
    Send,
    /// Stamp `completedAt`.
    Complete,
}

/// Why the campaign is where it is (the Ready condition's reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No start time and no trigger.
    Draft,
    /// Waiting for `schedule.startAt`.
    Scheduled,
    /// `spec.suspend`.
    Suspended,
    /// A template is invalid; nothing is sent until it is fixed.
    TemplatesInvalid,
    /// None of the campaign's channels is Ready.
    NoChannelReady,
    /// Failed deliveries crossed `failureThreshold`.
    FailureThreshold,
    /// Sending.
    Sending,
    /// A trigger campaign waiting for Subscriptions to enter its trigger.
    Listening,
    /// Every recipient was handled.
    Completed,
    /// Every finished message failed.
    AllFailed,
    /// `spec.cancel`.
    Cancelled,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub phase: P,
    pub actions: Vec<Action>,
    pub reason: Reason,
    /// Reconcile again at this instant (the start time).
    pub requeue_at: Option<Timestamp>,
}

impl Decision {
    /// Whether `action` is among the decision's.
    pub fn does(&self, action: Action) -> bool {
        self.actions.contains(&action)
    }
}

fn stay(phase: P, reason: Reason) -> Decision {
    Decision {
        phase,
        actions: Vec::new(),
        reason,
        requeue_at: None,
    }
}

/// The next phase and what to do; refuses nothing the table allows.
pub fn decide(
    spec: &CampaignSpec,
    recorded: P,
    seen: &Observation,
) -> Result<Decision, IllegalTransition<P>> {
    let decision = choose(spec, recorded, seen);
    recorded.transition(decision.phase)?;
    Ok(decision)
}

fn choose(spec: &CampaignSpec, recorded: P, seen: &Observation) -> Decision {
    if matches!(recorded, P::Completed | P::Cancelled | P::Failed) {
        let reason = match recorded {
            P::Completed => Reason::Completed,
            P::Cancelled => Reason::Cancelled,
            _ => Reason::AllFailed,
        };
        return stay(recorded, reason);
    }
    if spec.cancel {
        return stay(P::Cancelled, Reason::Cancelled);
    }
    if !seen.started {
        return before_start(spec, seen);
    }
    if spec.suspend {
        return stay(P::Paused, Reason::Suspended);
    }
    if seen.threshold_crossed {
        return stay(P::Paused, Reason::FailureThreshold);
    }
    let trigger = spec.trigger.is_some();
    if !trigger && seen.pending == 0 {
        let (phase, reason) = if seen.sent == 0 && seen.failed > 0 {
            (P::Failed, Reason::AllFailed)
        } else {
            (P::Completed, Reason::Completed)
        };
        return Decision {
            phase,
            actions: vec![Action::Complete],
            reason,
            requeue_at: None,
        };
    }
    let blocked = if !seen.templates_valid {
        Some(Reason::TemplatesInvalid)
    } else if !seen.channel_ready {
        Some(Reason::NoChannelReady)
    } else {
        None
    };
    match blocked {
        Some(reason) => stay(P::Running, reason),
        None => Decision {
            phase: P::Running,
            actions: vec![Action::Send],
            reason: if trigger && seen.pending == 0 {
                Reason::Listening
            } else {
                Reason::Sending
            },
            requeue_at: None,
        },
    }
}

fn before_start(spec: &CampaignSpec, seen: &Observation) -> Decision {
    let start_at = spec
        .schedule
        .as_ref()
        .and_then(|s| s.start_at.as_ref())
        .map(|t| t.0);
    if start_at.is_none() && spec.trigger.is_none() {
        return stay(P::Draft, Reason::Draft);
    }
    if spec.suspend {
        return stay(P::Paused, Reason::Suspended);
    }
    let waiting = if start_at.is_some_and(|at| at > seen.now) {
        Some(Reason::Scheduled)
    } else if !seen.templates_valid {
        Some(Reason::TemplatesInvalid)
    } else if !seen.channel_ready {
        Some(Reason::NoChannelReady)
    } else {
        None
    };
    match waiting {
        Some(reason) => Decision {
            phase: if start_at.is_some() || reason == Reason::Scheduled {
                P::Scheduled
            } else {
                P::Draft
            },
            actions: Vec::new(),
            reason,
            requeue_at: start_at.filter(|at| *at > seen.now),
        },
        None => Decision {
            phase: P::Running,
            actions: vec![Action::Start, Action::Send],
            reason: Reason::Sending,
            requeue_at: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2030-07-01T12:00:00Z";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn spec(extra: serde_json::Value) -> CampaignSpec {
        let mut base = serde_json::json!({
            "audience": {},
            "channels": {"names": ["log"]},
            "message": {"body": "hi"},
        });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn seen() -> Observation {
        Observation {
            started: false,
            templates_valid: true,
            channel_ready: true,
            pending: 10,
            sent: 0,
            failed: 0,
            threshold_crossed: false,
            now: ts(NOW),
        }
    }

    fn scheduled(at: &str) -> CampaignSpec {
        spec(serde_json::json!({"schedule": {"startAt": at}}))
    }

    #[test]
    fn without_a_start_or_trigger_it_is_a_draft() {
        let d = decide(&spec(serde_json::json!({})), P::Draft, &seen()).unwrap();
        assert_eq!((d.phase, d.reason), (P::Draft, Reason::Draft));
        assert!(d.actions.is_empty());
        // Removing the start of a scheduled campaign makes it a draft again.
        let d = decide(&spec(serde_json::json!({})), P::Scheduled, &seen()).unwrap();
        assert_eq!(d.phase, P::Draft);
    }

    #[test]
    fn a_future_start_waits_and_wakes_then_a_past_one_starts_now() {
        let d = decide(&scheduled("2030-07-01T13:00:00Z"), P::Draft, &seen()).unwrap();
        assert_eq!((d.phase, d.reason), (P::Scheduled, Reason::Scheduled));
        assert_eq!(d.requeue_at, Some(ts("2030-07-01T13:00:00Z")));
        let d = decide(&scheduled("2030-07-01T11:00:00Z"), P::Scheduled, &seen()).unwrap();
        assert_eq!(d.phase, P::Running);
        assert_eq!(d.actions, [Action::Start, Action::Send]);
        let trigger = spec(serde_json::json!({"trigger": {"phaseEntered": "PastDue"}}));
        let d = decide(&trigger, P::Draft, &seen()).unwrap();
        assert!(d.does(Action::Start));
    }

    #[test]
    fn an_unready_campaign_waits_before_and_after_the_start_saying_why() {
        let due = scheduled("2030-07-01T11:00:00Z");
        let bad = Observation {
            templates_valid: false,
            ..seen()
        };
        let d = decide(&due, P::Scheduled, &bad).unwrap();
        assert_eq!(
            (d.phase, d.reason),
            (P::Scheduled, Reason::TemplatesInvalid)
        );
        assert!(d.actions.is_empty(), "nothing fixed, nothing sent");
        let no_channel = Observation {
            channel_ready: false,
            started: true,
            ..seen()
        };
        let d = decide(&due, P::Running, &no_channel).unwrap();
        assert_eq!((d.phase, d.reason), (P::Running, Reason::NoChannelReady));
        assert!(!d.does(Action::Send));
    }

    #[test]
    fn suspend_and_threshold_pause_and_resume() {
        let mut running = scheduled("2030-07-01T11:00:00Z");
        let started = Observation {
            started: true,
            ..seen()
        };
        running.suspend = true;
        let d = decide(&running, P::Running, &started).unwrap();
        assert_eq!((d.phase, d.reason), (P::Paused, Reason::Suspended));
        running.suspend = false;
        let d = decide(&running, P::Paused, &started).unwrap();
        assert_eq!(d.phase, P::Running);
        assert!(d.does(Action::Send) && !d.does(Action::Start));
        let crossed = Observation {
            threshold_crossed: true,
            ..started
        };
        let d = decide(&running, P::Running, &crossed).unwrap();
        assert_eq!((d.phase, d.reason), (P::Paused, Reason::FailureThreshold));
        // Suspended before the start: paused, and back to Scheduled when unsuspended.
        let mut later = scheduled("2030-07-02T00:00:00Z");
        later.suspend = true;
        assert_eq!(
            decide(&later, P::Scheduled, &seen()).unwrap().phase,
            P::Paused
        );
        later.suspend = false;
        assert_eq!(
            decide(&later, P::Paused, &seen()).unwrap().phase,
            P::Scheduled
        );
    }

    #[test]
    fn one_off_campaigns_complete_trigger_campaigns_listen() {
        let due = scheduled("2030-07-01T11:00:00Z");
        let done = Observation {
            started: true,
            pending: 0,
            sent: 9,
            failed: 1,
            ..seen()
        };
        let d = decide(&due, P::Running, &done).unwrap();
        assert_eq!(
            (d.phase, d.actions.as_slice()),
            (P::Completed, &[Action::Complete][..])
        );
        let all_failed = Observation {
            sent: 0,
            failed: 10,
            ..done
        };
        assert_eq!(
            decide(&due, P::Running, &all_failed).unwrap().phase,
            P::Failed
        );
        let nobody = Observation {
            failed: 0,
            ..all_failed
        };
        assert_eq!(
            decide(&due, P::Running, &nobody).unwrap().phase,
            P::Completed
        );
        let trigger = spec(serde_json::json!({"trigger": {"daysBeforeTrialEnd": 3}}));
        let d = decide(&trigger, P::Running, &done).unwrap();
        assert_eq!((d.phase, d.reason), (P::Running, Reason::Listening));
        assert!(d.does(Action::Send));
    }

    #[test]
    fn cancel_ends_every_live_phase_and_terminal_phases_stay() {
        let mut cancelled = scheduled("2030-07-01T11:00:00Z");
        cancelled.cancel = true;
        for phase in [P::Draft, P::Scheduled, P::Running, P::Paused] {
            let d = decide(&cancelled, phase, &seen()).unwrap();
            assert_eq!(d.phase, P::Cancelled, "{phase:?}");
        }
        let due = scheduled("2030-07-01T11:00:00Z");
        for phase in [P::Completed, P::Cancelled, P::Failed] {
            assert_eq!(decide(&due, phase, &seen()).unwrap().phase, phase);
        }
    }

    proptest::proptest! {
        #[test]
        fn every_decision_is_a_legal_move(
            recorded in 0usize..7, started: bool, templates_valid: bool, channel_ready: bool,
            pending in 0u64..3, sent in 0u64..3, failed in 0u64..3, threshold_crossed: bool,
            suspend: bool, cancel: bool, schedule in 0usize..4,
        ) {
            let mut s = match schedule {
                0 => spec(serde_json::json!({})),
                1 => scheduled("2030-07-01T11:00:00Z"),
                2 => scheduled("2030-07-01T13:00:00Z"),
                _ => spec(serde_json::json!({"trigger": {"phaseEntered": "PastDue"}})),
            };
            s.suspend = suspend;
            s.cancel = cancel;
            let recorded = P::ALL[recorded];
            // Running and the ends of a one-off campaign come only after the start.
            let started = match recorded {
                P::Draft | P::Scheduled => false,
                P::Running | P::Completed | P::Failed => true,
                P::Paused | P::Cancelled => started,
            };
            let seen = Observation {
                started, templates_valid, channel_ready, pending, sent, failed,
                threshold_crossed, now: ts(NOW),
            };
            let d = decide(&s, recorded, &seen);
            proptest::prop_assert!(d.is_ok(), "{recorded:?} → {d:?}");
            let d = d.unwrap();
            proptest::prop_assert!(!d.does(Action::Start) || !started);
            proptest::prop_assert!(!d.does(Action::Send) || (templates_valid && channel_ready));
        }
    }
}
