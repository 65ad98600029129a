//! The Channel's status and Events, computed from the observation. Pure.

use flotilla_crds::channel::{BreakerState, BreakerStatus};
use flotilla_crds::common::describe_spec_errors;
use flotilla_crds::condition::{ConditionStatus, find_condition, reasons, types};
use flotilla_crds::{ChannelPhase, ChannelStatus};
use jiff::Timestamp;

use super::phase::{MAX_LISTED_CAMPAIGNS, Observation};
use super::secrets::SecretProblem;
use flotilla_runtime::conditions::{
    ConditionUpdate, Standing, changed, set_conditions, set_standing,
};
use flotilla_runtime::events::Planned;
use flotilla_runtime::users::{self, Wording};

/// Reasons of the Channel's conditions beyond the shared ones.
pub mod channel_reasons {
    /// A referenced Secret or key is not there.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A Secret exists without the channel-secret label.
    pub const SECRET_NOT_LABELLED: &str = "SecretNotLabelled";
    /// A Secret's value is unusable.
    pub const SECRET_INVALID: &str = "SecretInvalid";
    /// Live campaigns send through the Channel.
    pub const REFERENCED_BY_CAMPAIGNS: &str = "ReferencedByCampaigns";
    /// The breaker is closed.
    pub const BREAKER_CLOSED: &str = "BreakerClosed";
    /// The breaker is open: nothing is sent through the Channel until its cool-down passes.
    pub const BREAKER_OPEN: &str = "BreakerOpen";
    /// The breaker lets probe messages through.
    pub const BREAKER_HALF_OPEN: &str = "BreakerHalfOpen";
}

/// Event reasons of the Channel controller.
pub mod event_reasons {
    pub use flotilla_runtime::users::{DELETION_ALLOWED, DELETION_BLOCKED};
    /// The Channel became usable.
    pub const CHANNEL_READY: &str = "ChannelReady";
    /// The Channel stopped being usable (or never was).
    pub const CHANNEL_NOT_READY: &str = "ChannelNotReady";
    /// The circuit breaker opened: the Channel keeps failing.
    pub const BREAKER_OPENED: &str = "CircuitBreakerOpened";
    /// The circuit breaker closed again after a successful probe.
    pub const BREAKER_CLOSED: &str = "CircuitBreakerClosed";
}

/// The status the Channel should have; recomputing an unchanged Channel yields its status.
pub fn desired_status(
    current: Option<&ChannelStatus>,
    observed: &Observation,
    phase: ChannelPhase,
    generation: Option<i64>,
    now: Timestamp,
) -> ChannelStatus {
    let mut status = current.cloned().unwrap_or_default();
    if let Some(breaker) = &observed.breaker {
        status.breaker = Some(breaker.clone());
    }
    let breaker = breaker_condition(status.breaker.as_ref());
    let ready = ready_condition(observed);
    // Not Ready means its settings or Secrets are wrong: someone has to fix them.
    let standing = if ready.status == ConditionStatus::False {
        Standing::Stalled
    } else {
        Standing::Current
    };
    set_standing(&mut status.conditions, standing, &ready, generation, now);
    set_conditions(
        &mut status.conditions,
        [
            ready,
            secret_condition(observed),
            in_use_condition(observed),
            breaker,
        ],
        generation,
        now,
    );
    status.phase = Some(phase);
    status.observed_generation = generation;
    status
}

fn ready_condition(observed: &Observation) -> ConditionUpdate {
    if let Err(errors) = &observed.validation {
        return ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            reasons::INVALID_SPEC,
            describe_spec_errors(errors),
        );
    }
    if let Some(first) = observed.secret_problems.first() {
        return ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            secret_reason(first),
            describe(&observed.secret_problems),
        );
    }
    ConditionUpdate::new(
        types::READY,
        ConditionStatus::True,
        reasons::RECONCILED,
        "campaigns can send through this channel",
    )
}

fn breaker_condition(breaker: Option<&BreakerStatus>) -> ConditionUpdate {
    let state = breaker.map_or(BreakerState::Closed, |b| b.state);
    let failures = breaker.map_or(0, |b| b.consecutive_failures);
    match state {
        BreakerState::Closed => ConditionUpdate::new(
            types::CIRCUIT_CLOSED,
            ConditionStatus::True,
            channel_reasons::BREAKER_CLOSED,
            "messages go through",
        ),
        BreakerState::Open => ConditionUpdate::new(
            types::CIRCUIT_CLOSED,
            ConditionStatus::False,
            channel_reasons::BREAKER_OPEN,
            format!(
                "opened after {failures} failures in a row{}; nothing is sent until the \
                 cool-down passes, and campaigns in fallback mode use their next Channel",
                breaker
                    .and_then(|b| b.opened_at.as_ref())
                    .map(|at| format!(" at {}", at.0))
                    .unwrap_or_default()
            ),
        ),
        BreakerState::HalfOpen => ConditionUpdate::new(
            types::CIRCUIT_CLOSED,
            ConditionStatus::False,
            channel_reasons::BREAKER_HALF_OPEN,
            "the cool-down passed; probe messages test whether the channel is back",
        ),
    }
}

fn secret_condition(observed: &Observation) -> ConditionUpdate {
    match observed.secret_problems.first() {
        Some(first) => ConditionUpdate::new(
            types::SECRET_FOUND,
            ConditionStatus::False,
            secret_reason(first),
            describe(&observed.secret_problems),
        ),
        None => ConditionUpdate::new(
            types::SECRET_FOUND,
            ConditionStatus::True,
            reasons::RECONCILED,
            "every referenced Secret and key is there",
        ),
    }
}

/// How the `InUse` condition words a Channel's campaigns.
pub const USERS: Wording = Wording {
    one: "live Campaign",
    many: "live Campaigns",
    object: "channel",
    used_by: "used by",
    unused: "no live Campaign uses this channel",
    referenced: channel_reasons::REFERENCED_BY_CAMPAIGNS,
    named: MAX_LISTED_CAMPAIGNS,
};

fn in_use_condition(observed: &Observation) -> ConditionUpdate {
    users::in_use_condition(&observed.campaigns, observed.deleting, &USERS)
}

fn secret_reason(problem: &SecretProblem) -> &'static str {
    match problem {
        SecretProblem::Missing(_) | SecretProblem::MissingKey { .. } => {
            channel_reasons::SECRET_NOT_FOUND
        }
        SecretProblem::Unlabelled(_) => channel_reasons::SECRET_NOT_LABELLED,
        SecretProblem::BadValue { .. } => channel_reasons::SECRET_INVALID,
    }
}

fn describe(problems: &[SecretProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Events for what changed: readiness flipping or why it is not ready changing, the breaker
/// opening or closing again, a deletion becoming blocked.
pub fn transition_events(previous: Option<&ChannelStatus>, next: &ChannelStatus) -> Vec<Planned> {
    let mut events = Vec::new();
    let before = |type_: &str| previous.and_then(|s| find_condition(&s.conditions, type_));
    let after = |type_: &str| find_condition(&next.conditions, type_);
    if let Some(ready) = after(types::READY)
        && changed(before(types::READY), ready)
    {
        events.push(if ready.status == ConditionStatus::True.as_str() {
            Planned::normal(event_reasons::CHANNEL_READY, ready.message.clone())
        } else {
            Planned::warning(event_reasons::CHANNEL_NOT_READY, ready.message.clone())
        });
    }
    if let Some(circuit) = after(types::CIRCUIT_CLOSED)
        && changed(before(types::CIRCUIT_CLOSED), circuit)
    {
        match circuit.reason.as_str() {
            channel_reasons::BREAKER_OPEN => events.push(Planned::warning(
                event_reasons::BREAKER_OPENED,
                circuit.message.clone(),
            )),
            channel_reasons::BREAKER_CLOSED if before(types::CIRCUIT_CLOSED).is_some() => {
                events.push(Planned::normal(
                    event_reasons::BREAKER_CLOSED,
                    "a probe succeeded; messages go through again",
                ));
            }
            _ => {}
        }
    }
    let conditions_before = previous.map_or(&[][..], |s| &s.conditions[..]);
    events.extend(users::deletion_blocked_event(
        conditions_before,
        &next.conditions,
    ));
    events
}

/// The Event published when the last live campaign let go of a deleted Channel.
pub fn release_event() -> Planned {
    users::deletion_allowed_event(&USERS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::condition::is_condition_true;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn seen(problems: Vec<SecretProblem>, deleting: bool, campaigns: &[&str]) -> Observation {
        Observation {
            validation: Ok(()),
            secret_problems: problems,
            deleting,
            campaigns: flotilla_runtime::users::Users::bounded(
                campaigns.iter().map(|c| (*c).to_owned()),
                MAX_LISTED_CAMPAIGNS,
            ),
            breaker: None,
        }
    }

    #[test]
    fn a_missing_key_makes_it_not_ready_naming_secret_and_key() {
        let problems = vec![SecretProblem::MissingKey {
            secret: "mail".into(),
            key: "password".into(),
        }];
        let status = desired_status(
            None,
            &seen(problems, false, &[]),
            ChannelPhase::NotReady,
            Some(2),
            at("2026-12-01T00:00:00Z"),
        );
        let ready = find_condition(&status.conditions, types::READY).unwrap();
        assert_eq!(ready.reason, channel_reasons::SECRET_NOT_FOUND);
        assert_eq!(ready.message, r#"Secret "mail" has no key "password""#);
        assert!(!is_condition_true(&status.conditions, types::SECRET_FOUND));
        assert_eq!(status.observed_generation, Some(2));
        let events = transition_events(None, &status);
        assert_eq!(events[0].reason, event_reasons::CHANNEL_NOT_READY);
    }

    #[test]
    fn recomputing_changes_nothing_and_publishes_nothing() {
        let first = desired_status(
            None,
            &seen(Vec::new(), false, &["launch"]),
            ChannelPhase::Ready,
            Some(1),
            at("2026-12-01T00:00:00Z"),
        );
        assert!(is_condition_true(&first.conditions, types::READY));
        let again = desired_status(
            Some(&first),
            &seen(Vec::new(), false, &["launch"]),
            ChannelPhase::Ready,
            Some(1),
            at("2026-12-02T00:00:00Z"),
        );
        assert_eq!(first, again);
        assert!(transition_events(Some(&first), &again).is_empty());
    }

    #[test]
    fn a_blocked_deletion_names_the_campaigns() {
        let status = desired_status(
            None,
            &seen(Vec::new(), true, &["a", "b"]),
            ChannelPhase::Terminating,
            Some(1),
            at("2026-12-01T00:00:00Z"),
        );
        let in_use = find_condition(&status.conditions, types::IN_USE).unwrap();
        assert_eq!(
            in_use.message,
            "deletion waits for 2 live Campaigns that use this channel: a, b"
        );
        let events = transition_events(None, &status);
        assert!(
            events
                .iter()
                .any(|e| e.reason == event_reasons::DELETION_BLOCKED)
        );
    }
}
