//! The Campaign's status and Events, from the decision and what the shell observed. Pure.

use flotilla_crds::campaign::{CampaignPreview, CampaignStatus};
use flotilla_crds::common::FailureReasonCount;
use flotilla_crds::condition::{ConditionStatus, find_condition, reasons, types};
use flotilla_crds::{Campaign, CampaignPhase};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use super::phase::{Action, Decision, Reason};
use super::sender::Acknowledged;
use crate::ledger::LedgerCounts;
use flotilla_runtime::conditions::{
    ConditionUpdate, Standing, changed, set_conditions, set_standing,
};
use flotilla_runtime::events::Planned;
use flotilla_runtime::events::bounded_list;

/// Reasons of the Campaign's conditions beyond the shared ones.
pub mod campaign_reasons {
    /// No start time and no trigger.
    pub const DRAFT: &str = "Draft";
    /// Waiting for `schedule.startAt`.
    pub const SCHEDULED: &str = "Scheduled";
    /// Sending.
    pub const SENDING: &str = "Sending";
    /// A trigger campaign waiting for Subscriptions to enter its trigger.
    pub const LISTENING: &str = "Listening";
    /// A template does not compile or reads an unknown field.
    pub const TEMPLATES_INVALID: &str = "TemplatesInvalid";
    /// None of the campaign's Channels is Ready.
    pub const NO_CHANNEL_READY: &str = "NoChannelReady";
    /// Every finished message failed.
    pub const ALL_FAILED: &str = "AllFailed";
    /// `spec.cancel`.
    pub const CANCELLED: &str = "Cancelled";
    /// Some of the campaign's Channels are not Ready.
    pub const CHANNELS_NOT_READY: &str = "ChannelsNotReady";
    /// The delivery ledger cannot be read or written right now.
    pub const LEDGER_UNAVAILABLE: &str = "LedgerUnavailable";
}

/// Event reasons of the Campaign controller.
pub mod event_reasons {
    /// The campaign fixed its audience and started sending.
    pub const STARTED: &str = "CampaignStarted";
    /// The campaign is waiting for its start time.
    pub const SCHEDULED: &str = "CampaignScheduled";
    /// Paused by `spec.suspend`.
    pub const PAUSED: &str = "CampaignPaused";
    /// Paused by the failure threshold.
    pub const AUTO_PAUSED: &str = "CampaignAutoPaused";
    /// Sending again after a pause.
    pub const RESUMED: &str = "CampaignResumed";
    /// Every recipient was handled.
    pub const COMPLETED: &str = "CampaignCompleted";
    /// Every finished message failed.
    pub const FAILED: &str = "CampaignFailed";
    /// Cancelled.
    pub const CANCELLED: &str = "CampaignCancelled";
    /// A template is invalid; nothing is sent.
    pub const TEMPLATES_INVALID: &str = "TemplatesInvalid";
    /// The campaign waits for a Channel.
    pub const CHANNELS_NOT_READY: &str = "ChannelsNotReady";
}

/// What the shell found, beyond the phase decision.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    /// Spec problems and template errors, each a sentence; empty when valid.
    pub invalid: Vec<String>,
    /// The first template error, when templates are the problem.
    pub template_error: Option<String>,
    /// The campaign's Channels that are not Ready.
    pub channels_not_ready: Vec<String>,
    /// How many Channels the campaign names.
    pub channels: usize,
    /// The sender's ledger counts, once it has them.
    pub counts: Option<LedgerCounts>,
    /// When the next waiting recipient is due.
    pub next_send_at: Option<Timestamp>,
    /// Why the sender cannot go on right now.
    pub sender_problem: Option<String>,
    /// The preview to show (Draft, Scheduled).
    pub preview: Option<CampaignPreview>,
    /// Failures accepted so far (after a resume, the new ones).
    pub acknowledged: Acknowledged,
    /// A resume ended a failure-threshold pause in this reconcile.
    pub resumed: bool,
}

fn ready(decision: &Decision, findings: &Findings) -> ConditionUpdate {
    use campaign_reasons as r;
    let (status, reason, message): (ConditionStatus, &str, String) = match decision.reason {
        Reason::Draft => (
            ConditionStatus::False,
            r::DRAFT,
            "no schedule.startAt and no trigger: set one to send".into(),
        ),
        Reason::Scheduled => (
            ConditionStatus::False,
            r::SCHEDULED,
            "waiting for schedule.startAt".into(),
        ),
        Reason::Suspended => (
            ConditionStatus::False,
            reasons::PAUSED_BY_USER,
            "spec.suspend is true; set it to false to resume where it stopped".into(),
        ),
        Reason::TemplatesInvalid => (
            ConditionStatus::False,
            if findings.template_error.is_some() {
                r::TEMPLATES_INVALID
            } else {
                reasons::INVALID_SPEC
            },
            format!(
                "nothing is sent until this is fixed: {}",
                findings.invalid.join("; ")
            ),
        ),
        Reason::NoChannelReady => (
            ConditionStatus::False,
            r::NO_CHANNEL_READY,
            format!(
                "waiting for a Channel to be Ready: {}",
                bounded_list(&findings.channels_not_ready, 5)
            ),
        ),
        Reason::FailureThreshold => (
            ConditionStatus::False,
            reasons::PAUSED_BY_FAILURE_THRESHOLD,
            "too many deliveries failed; fix the cause, then set spec.resume to a new value".into(),
        ),
        Reason::Sending => match &findings.sender_problem {
            Some(problem) => (
                ConditionStatus::False,
                r::LEDGER_UNAVAILABLE,
                format!("sending is held up, retrying: {problem}"),
            ),
            None => (ConditionStatus::True, r::SENDING, "sending".into()),
        },
        Reason::Listening => (
            ConditionStatus::True,
            r::LISTENING,
            "sends to each Subscription as it enters the trigger".into(),
        ),
        Reason::Completed => (
            ConditionStatus::True,
            reasons::COMPLETED,
            "every recipient was handled".into(),
        ),
        Reason::AllFailed => (
            ConditionStatus::False,
            r::ALL_FAILED,
            "every message failed; see status.failureReasons".into(),
        ),
        Reason::Cancelled => (
            ConditionStatus::False,
            r::CANCELLED,
            "cancelled; nothing more is sent".into(),
        ),
    };
    ConditionUpdate::new(types::READY, status, reason, message)
}

/// Where the campaign stands for kstatus: scheduled or sending is Reconciling, and so is
/// waiting for a Channel (which has its own standing); invalid templates or spec, the failure
/// threshold crossed or every message failed is Stalled; a draft, a suspended, a completed or
/// cancelled campaign and an always-on one listening for its trigger are settled.
fn standing(reason: &Reason) -> Standing {
    match reason {
        Reason::Scheduled | Reason::Sending | Reason::NoChannelReady => Standing::Reconciling,
        Reason::TemplatesInvalid | Reason::FailureThreshold | Reason::AllFailed => {
            Standing::Stalled
        }
        Reason::Draft
        | Reason::Suspended
        | Reason::Listening
        | Reason::Completed
        | Reason::Cancelled => Standing::Current,
    }
}

fn templates_valid(findings: &Findings) -> ConditionUpdate {
    match &findings.template_error {
        Some(error) => ConditionUpdate::new(
            types::TEMPLATES_VALID,
            ConditionStatus::False,
            campaign_reasons::TEMPLATES_INVALID,
            error.clone(),
        ),
        None => ConditionUpdate::new(
            types::TEMPLATES_VALID,
            ConditionStatus::True,
            reasons::RECONCILED,
            "every template compiles and reads only known fields",
        ),
    }
}

fn channels_ready(findings: &Findings) -> ConditionUpdate {
    if findings.channels_not_ready.is_empty() {
        return ConditionUpdate::new(
            types::CHANNELS_READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            "every Channel is Ready",
        );
    }
    ConditionUpdate::new(
        types::CHANNELS_READY,
        ConditionStatus::False,
        campaign_reasons::CHANNELS_NOT_READY,
        format!(
            "{} of {} Channels not Ready (not found, or see their status): {}",
            findings.channels_not_ready.len(),
            findings.channels,
            bounded_list(&findings.channels_not_ready, 5)
        ),
    )
}

fn failure_threshold(decision: &Decision) -> ConditionUpdate {
    if decision.reason == Reason::FailureThreshold {
        ConditionUpdate::new(
            types::FAILURE_THRESHOLD_EXCEEDED,
            ConditionStatus::True,
            reasons::PAUSED_BY_FAILURE_THRESHOLD,
            "the failure rate crossed spec.failureThreshold; the campaign is paused",
        )
    } else {
        ConditionUpdate::new(
            types::FAILURE_THRESHOLD_EXCEEDED,
            ConditionStatus::False,
            reasons::RECONCILED,
            "the failure rate is within spec.failureThreshold",
        )
    }
}

/// The status the campaign should have; recomputing an unchanged campaign yields its status.
pub fn desired_status(
    campaign: &Campaign,
    decision: &Decision,
    findings: &Findings,
    now: Timestamp,
) -> CampaignStatus {
    let mut status = campaign.status.clone().unwrap_or_default();
    let generation = campaign.metadata.generation;
    let ready = ready(decision, findings);
    set_standing(
        &mut status.conditions,
        standing(&decision.reason),
        &ready,
        generation,
        now,
    );
    set_conditions(
        &mut status.conditions,
        [
            ready,
            templates_valid(findings),
            channels_ready(findings),
            failure_threshold(decision),
        ],
        generation,
        now,
    );
    status.phase = Some(decision.phase);
    status.observed_generation = generation;
    if decision.does(Action::Start) && status.started_at.is_none() {
        status.started_at = Some(Time(now));
    }
    if decision.does(Action::Complete) && status.completed_at.is_none() {
        status.completed_at = Some(Time(now));
    }
    if let Some(counts) = &findings.counts {
        let spec = &campaign.spec;
        let variants: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
        status.audience_size = Some(i64::try_from(counts.audience).unwrap_or(i64::MAX));
        status.counts = Some(counts.delivery_counts());
        status.variants = counts.variant_counts(&variants);
        status.channels = counts.channel_counts(&spec.channels.names);
        status.failure_reasons = failure_reasons(counts);
    } else if let Some(preview) = &findings.preview {
        status.audience_size = Some(preview.audience_size);
    }
    status.preview = match decision.phase {
        CampaignPhase::Draft | CampaignPhase::Scheduled => findings.preview.clone(),
        CampaignPhase::Paused if status.started_at.is_none() => findings.preview.clone(),
        _ => None,
    };
    status.next_send_at = match decision.phase {
        CampaignPhase::Running => findings.next_send_at.map(Time),
        CampaignPhase::Scheduled => decision.requeue_at.map(Time),
        _ => None,
    };
    if decision.reason == Reason::FailureThreshold {
        if status.resume_at_pause.is_none() {
            status.resume_at_pause = Some(campaign.spec.resume.clone().unwrap_or_default());
        }
    } else {
        status.resume_at_pause = None;
    }
    if findings.resumed {
        let n = |v: u64| Some(i64::try_from(v).unwrap_or(i64::MAX));
        status.acknowledged_failures = n(findings.acknowledged.failed);
        status.acknowledged_finished = n(findings.acknowledged.finished);
    }
    status
}

/// The acknowledged failures a status records.
pub fn acknowledged(status: Option<&CampaignStatus>) -> Acknowledged {
    let n = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Acknowledged {
        failed: n(status.and_then(|s| s.acknowledged_failures)),
        finished: n(status.and_then(|s| s.acknowledged_finished)),
    }
}

/// Whether a `spec.resume` ends a failure-threshold pause: it differs from the value the
/// pause recorded.
pub fn resume_requested(campaign: &Campaign) -> bool {
    campaign
        .status
        .as_ref()
        .and_then(|s| s.resume_at_pause.as_deref())
        .is_some_and(|at_pause| campaign.spec.resume.as_deref().unwrap_or_default() != at_pause)
}

fn failure_reasons(counts: &LedgerCounts) -> Vec<FailureReasonCount> {
    let mut reasons: Vec<FailureReasonCount> = counts
        .reasons
        .iter()
        .map(|(reason, count)| FailureReasonCount {
            reason: reason.clone(),
            count: i64::try_from(*count).unwrap_or(i64::MAX),
        })
        .collect();
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    reasons.truncate(flotilla_crds::common::MAX_FAILURE_REASONS as usize);
    reasons
}

/// Events for what changed: the phase, and templates or channels becoming a problem.
pub fn transition_events(previous: Option<&CampaignStatus>, next: &CampaignStatus) -> Vec<Planned> {
    use event_reasons as e;
    let mut events = Vec::new();
    let before_phase = previous.and_then(|s| s.phase);
    let ready_message = find_condition(&next.conditions, types::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    if next.phase != before_phase
        && let Some(phase) = next.phase
    {
        let counts = next.counts.clone().unwrap_or_default();
        let summary = format!(
            "{} sent, {} failed, {} opted out, {} held out",
            counts.sent, counts.failed, counts.opted_out, counts.held_out
        );
        let threshold = next.resume_at_pause.is_some();
        let event = match phase {
            CampaignPhase::Scheduled => {
                Some((EventType::Normal, e::SCHEDULED, ready_message.clone()))
            }
            CampaignPhase::Running if before_phase == Some(CampaignPhase::Paused) => {
                Some((EventType::Normal, e::RESUMED, "sending again".to_owned()))
            }
            CampaignPhase::Running => Some((
                EventType::Normal,
                e::STARTED,
                "the audience is fixed; sending".to_owned(),
            )),
            CampaignPhase::Paused if threshold => Some((
                EventType::Warning,
                e::AUTO_PAUSED,
                format!("{ready_message} ({summary})"),
            )),
            CampaignPhase::Paused => Some((EventType::Normal, e::PAUSED, ready_message.clone())),
            CampaignPhase::Completed => Some((EventType::Normal, e::COMPLETED, summary)),
            CampaignPhase::Failed => Some((EventType::Warning, e::FAILED, summary)),
            CampaignPhase::Cancelled => Some((EventType::Normal, e::CANCELLED, summary)),
            CampaignPhase::Draft => None,
        };
        if let Some((type_, reason, note)) = event {
            events.push(Planned {
                type_,
                reason,
                note,
            });
        }
    }
    let before = |type_: &str| previous.and_then(|s| find_condition(&s.conditions, type_));
    for (type_, reason) in [
        (types::TEMPLATES_VALID, e::TEMPLATES_INVALID),
        (types::CHANNELS_READY, e::CHANNELS_NOT_READY),
    ] {
        if let Some(condition) = find_condition(&next.conditions, type_)
            && condition.status == ConditionStatus::False.as_str()
            && changed(before(type_), condition)
        {
            events.push(Planned {
                type_: EventType::Warning,
                reason,
                note: condition.message.clone(),
            });
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::condition::is_condition_true;

    fn campaign() -> Campaign {
        let mut campaign = Campaign::new(
            "launch",
            serde_json::from_value(serde_json::json!({
                "audience": {},
                "channels": {"names": ["log", "mail"]},
                "message": {"body": "hi"},
                "failureThreshold": {"percent": 50},
            }))
            .unwrap(),
        );
        campaign.metadata.generation = Some(3);
        campaign
    }

    fn decision(phase: CampaignPhase, reason: Reason, actions: Vec<Action>) -> Decision {
        Decision {
            phase,
            actions,
            reason,
            requeue_at: None,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_invalid_template_names_the_field_and_warns_once() {
        let findings = Findings {
            invalid: vec!["spec.message.body: line 2: unknown field \"x\"".into()],
            template_error: Some("spec.message.body: line 2: unknown field \"x\"".into()),
            channels: 2,
            ..Findings::default()
        };
        let status = desired_status(
            &campaign(),
            &decision(CampaignPhase::Draft, Reason::TemplatesInvalid, Vec::new()),
            &findings,
            at("2030-01-01T00:00:00Z"),
        );
        let ready = find_condition(&status.conditions, types::READY).unwrap();
        assert_eq!(ready.reason, campaign_reasons::TEMPLATES_INVALID);
        assert!(ready.message.contains("line 2"), "{}", ready.message);
        assert!(!is_condition_true(
            &status.conditions,
            types::TEMPLATES_VALID
        ));
        assert_eq!(status.observed_generation, Some(3));
        let events = transition_events(None, &status);
        assert!(
            events
                .iter()
                .any(|e| e.reason == event_reasons::TEMPLATES_INVALID)
        );
        let mut again = campaign();
        again.status = Some(status.clone());
        let next = desired_status(
            &again,
            &decision(CampaignPhase::Draft, Reason::TemplatesInvalid, Vec::new()),
            &findings,
            at("2030-01-01T00:05:00Z"),
        );
        assert_eq!(next, status, "recomputing changes nothing");
        assert!(transition_events(Some(&status), &next).is_empty());
    }

    #[test]
    fn a_threshold_pause_records_the_resume_value_and_a_resume_accepts_the_failures() {
        let mut paused = campaign();
        paused.spec.resume = Some("first".into());
        let status = desired_status(
            &paused,
            &decision(CampaignPhase::Paused, Reason::FailureThreshold, Vec::new()),
            &Findings::default(),
            at("2030-01-01T00:00:00Z"),
        );
        assert_eq!(status.resume_at_pause.as_deref(), Some("first"));
        assert!(is_condition_true(
            &status.conditions,
            types::FAILURE_THRESHOLD_EXCEEDED
        ));
        let events = transition_events(None, &status);
        assert_eq!(events[0].reason, event_reasons::AUTO_PAUSED);
        paused.status = Some(status);
        assert!(!resume_requested(&paused));
        paused.spec.resume = Some("second".into());
        assert!(resume_requested(&paused));
        let resumed = desired_status(
            &paused,
            &decision(CampaignPhase::Running, Reason::Sending, vec![Action::Send]),
            &Findings {
                resumed: true,
                acknowledged: Acknowledged {
                    failed: 12,
                    finished: 20,
                },
                ..Findings::default()
            },
            at("2030-01-01T00:10:00Z"),
        );
        assert_eq!(resumed.resume_at_pause, None);
        assert_eq!(resumed.acknowledged_failures, Some(12));
        assert_eq!(resumed.acknowledged_finished, Some(20));
        assert_eq!(
            acknowledged(Some(&resumed)),
            Acknowledged {
                failed: 12,
                finished: 20
            }
        );
        let events = transition_events(paused.status.as_ref(), &resumed);
        assert_eq!(events[0].reason, event_reasons::RESUMED);
    }

    #[test]
    fn start_and_completion_are_stamped_once() {
        let mut running = campaign();
        let started = desired_status(
            &running,
            &decision(
                CampaignPhase::Running,
                Reason::Sending,
                vec![Action::Start, Action::Send],
            ),
            &Findings::default(),
            at("2030-01-01T00:00:00Z"),
        );
        assert_eq!(started.started_at, Some(Time(at("2030-01-01T00:00:00Z"))));
        running.status = Some(started);
        let done = desired_status(
            &running,
            &decision(
                CampaignPhase::Completed,
                Reason::Completed,
                vec![Action::Complete],
            ),
            &Findings::default(),
            at("2030-01-01T01:00:00Z"),
        );
        assert_eq!(done.started_at, Some(Time(at("2030-01-01T00:00:00Z"))));
        assert_eq!(done.completed_at, Some(Time(at("2030-01-01T01:00:00Z"))));
        assert!(is_condition_true(&done.conditions, types::READY));
    }
}
