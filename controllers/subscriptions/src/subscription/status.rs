//! The Subscription's status, conditions and Events, computed from the decision. Pure.
//!
//! | Condition | True | False / Unknown |
//! |---|---|---|
//! | `Ready` | `Reconciled` (Trialing, Active, PastDue with every namespace in shape) | `InvalidSpec`, `NotFound`, `NotReady` (plan), `Provisioning`, `NamespaceConflict`, `QuotaExceeded`, `Suspended`, `Cancelling`, `Cancelled` |
//! | `PlanFound` | `Reconciled` | `NotFound`, `NotReady` (invalid, or being deleted for a new subscription) |
//! | `Provisioned` | `Reconciled` | `Provisioning`, `NamespaceConflict`, `QuotaExceeded` (a ResourceQuota refused a child: [`quota_refused`]), `InvalidSpec`, `NotFound`, `NotReady`, `Cancelling`, `Cancelled` |
//! | `QuotaApplied` | `Reconciled`, `Suspended` (`pods: 0` in force) | as `Provisioned` |
//! | `OverQuota` | `UsageExceedsQuota` | `WithinQuota`; Unknown `Pending` until a quota reports usage; absent before provisioning and once cancelling |
//!
//! While the lifecycle is held on a provisioned subscription (invalid spec, plan gone), the
//! conditions it cannot re-evaluate keep their last value and `observedGeneration`, which is
//! how a reader tells they are stale. `Ready` stays True while over quota: the tenant is
//! served as its plan says, and `OverQuota` reports the excess separately.

use std::collections::BTreeMap;

use flotilla_crds::common::describe_spec_errors;
use flotilla_crds::condition::{ConditionStatus, find_condition, reasons, types};
use flotilla_crds::{Condition, SubscriptionPhase, SubscriptionStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use super::namespaces::NamespaceClaims;
use super::phase::{Blocked, Decision, Observation, PlanLookup, SuspensionCause, Transition};
use super::usage::UsageReport;
use flotilla_runtime::conditions::{
    ConditionUpdate, Standing, changed, remove_condition, set_condition, set_standing,
};
use flotilla_runtime::events::Planned;
use flotilla_runtime::events::bounded_list;

/// How many namespaces or overages a condition message or Event names before "and N more".
pub const MAX_NAMED: usize = 10;

/// Condition reasons of the Subscription controller that `flotilla_crds::condition::reasons`
/// does not have (yet).
pub mod subscription_reasons {
    /// The subscription is being cancelled: its namespaces are being deleted or released.
    pub const CANCELLING: &str = "Cancelling";
    /// The subscription is cancelled; nothing is provisioned any more.
    pub const CANCELLED: &str = "Cancelled";
    /// A ResourceQuota in a tenant namespace (the API server's quota admission) refused one of
    /// Flotilla's children; also the reason of the Warning Event.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
}

/// Event reasons of the Subscription controller.
pub mod event_reasons {
    /// Provisioning of the tenant began.
    pub const PROVISIONING: &str = "Provisioning";
    /// The free trial began.
    pub const TRIAL_STARTED: &str = "TrialStarted";
    /// The tenant became Active after provisioning.
    pub const ACTIVATED: &str = "Activated";
    /// The trial ended.
    pub const TRIAL_ENDED: &str = "TrialEnded";
    /// The payment became current again.
    pub const PAYMENT_CURRENT: &str = "PaymentCurrent";
    /// A payment is past due.
    pub const PAST_DUE: &str = "PastDue";
    /// The tenant was suspended.
    pub const SUSPENDED: &str = "Suspended";
    /// The tenant was resumed after a suspension.
    pub const RESUMED: &str = "Resumed";
    /// Cancellation began.
    pub const CANCELLING: &str = "Cancelling";
    /// Cancellation finished.
    pub const CANCELLED: &str = "Cancelled";
    /// The subscription cannot proceed (invalid spec, plan unavailable, namespace conflict,
    /// reactivation refused); the note says why.
    pub const BLOCKED: &str = "Blocked";
    /// Usage exceeds the plan's quota.
    pub const OVER_QUOTA: &str = "OverQuota";
    /// A workload's recorded replica count could not be read when resuming; it was left as
    /// it is.
    pub const REPLICAS_NOT_RESTORED: &str = "ReplicasNotRestored";
    /// A tenant namespace Flotilla created was deleted (`deletionPolicy: Delete`).
    pub const NAMESPACE_DELETED: &str = "NamespaceDeleted";
    /// A tenant namespace was released: kept, with Flotilla's labels and ownerReferences
    /// removed (`Retain`, or a handed-over namespace).
    pub const NAMESPACE_RELEASED: &str = "NamespaceReleased";
}

/// The status the Subscription should have once the decision's actions have succeeded.
/// Conditions keep their `lastTransitionTime` unless their status changes, so recomputing
/// an unchanged Subscription yields exactly its current status (and no write).
pub fn desired_status(
    current: Option<&SubscriptionStatus>,
    plan_name: &str,
    decision: &Decision,
    observed: &Observation<'_>,
    usage: Option<&UsageReport>,
    generation: Option<i64>,
    now: Timestamp,
) -> SubscriptionStatus {
    let mut conditions: Vec<Condition> = current.map(|s| s.conditions.clone()).unwrap_or_default();
    let ready = ready(plan_name, decision, observed);
    set_standing(
        &mut conditions,
        standing(decision, &ready),
        &ready,
        generation,
        now,
    );
    let updates = [
        Some(ready),
        Some(plan_found(plan_name, &observed.plan, decision)),
        provisioned(plan_name, decision, observed),
        quota_applied(plan_name, decision, observed),
    ];
    for update in updates.into_iter().flatten() {
        set_condition(&mut conditions, update, generation, now);
    }
    match over_quota(plan_name, decision, usage) {
        ConditionChange::Set(update) => set_condition(&mut conditions, update, generation, now),
        ConditionChange::Remove => remove_condition(&mut conditions, types::OVER_QUOTA),
        ConditionChange::Keep => {}
    }

    let cancelling = is_cancelling(decision.phase);
    let (usage_now, entitlements) = match usage {
        Some(report) if !cancelling => (report.usage.clone(), report.entitlements.clone()),
        _ if cancelling || decision.actions.provision.is_some() => {
            (BTreeMap::new(), BTreeMap::new())
        }
        // Held: nothing was re-measured.
        _ => current
            .map(|s| (s.usage.clone(), s.entitlements.clone()))
            .unwrap_or_default(),
    };

    SubscriptionStatus {
        phase: Some(decision.phase),
        conditions,
        observed_generation: generation,
        plan: decision.applied_plan.clone(),
        trial_ends_at: decision.trial_ends_at.map(Time),
        past_due_since: decision.past_due_since.map(Time),
        namespaces: decision.namespaces.clone(),
        usage: usage_now,
        entitlements,
    }
}

/// The words for a ResourceQuota refusing a child: what was being done to which object,
/// the API server's message (which names the quota and the amounts), and what to do.
pub fn quota_refusal_message(operation: &str, object: &str, api_message: &str) -> String {
    format!(
        "{operation} {object} was refused: {api_message}; free usage in that namespace or raise \
         the quota, and Flotilla retries"
    )
}

/// The status after a ResourceQuota refused a child: the recorded status (phase, usage,
/// other conditions, `observedGeneration`: the decision for this generation was not carried
/// out) kept, `Provisioned` and `Ready` False with reason `QuotaExceeded`. The next pass that
/// provisions everything replaces both.
pub fn quota_refused(
    current: Option<&SubscriptionStatus>,
    refusal: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> SubscriptionStatus {
    let mut status = current.cloned().unwrap_or_default();
    status.phase = status.phase.or(Some(SubscriptionPhase::Pending));
    // Retried, but it takes someone freeing usage or raising the quota.
    let refused = ConditionUpdate::new(
        types::READY,
        ConditionStatus::False,
        subscription_reasons::QUOTA_EXCEEDED,
        refusal,
    );
    set_standing(
        &mut status.conditions,
        Standing::Stalled,
        &refused,
        generation,
        now,
    );
    for type_ in [types::PROVISIONED, types::READY] {
        set_condition(
            &mut status.conditions,
            ConditionUpdate::new(
                type_,
                ConditionStatus::False,
                subscription_reasons::QUOTA_EXCEEDED,
                refusal,
            ),
            generation,
            now,
        );
    }
    status
}

/// What to do with one condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionChange {
    /// Set it.
    Set(ConditionUpdate),
    /// Remove it.
    Remove,
    /// Leave it as it is.
    Keep,
}

/// `Ready`: the one-line summary.
pub fn ready(plan_name: &str, decision: &Decision, observed: &Observation<'_>) -> ConditionUpdate {
    use SubscriptionPhase::{
        Active, Cancelled, Cancelling, PastDue, Pending, Provisioning, Suspended, Trialing,
    };
    let not_ready = |reason, message: String| {
        ConditionUpdate::new(types::READY, ConditionStatus::False, reason, message)
    };
    let claims = &observed.namespaces;
    match (&decision.blocked, decision.phase) {
        (Some(Blocked::CannotReactivate), _) => not_ready(
            reasons::INVALID_SPEC,
            "spec.state: a cancelled Subscription cannot be reactivated; create a new Subscription"
                .to_owned(),
        ),
        (_, Cancelling) => not_ready(
            subscription_reasons::CANCELLING,
            cancelling_message(decision),
        ),
        (_, Cancelled) => not_ready(
            subscription_reasons::CANCELLED,
            "the subscription is cancelled".to_owned(),
        ),
        (Some(Blocked::InvalidSpec(errors)), _) => {
            not_ready(reasons::INVALID_SPEC, describe_spec_errors(errors))
        }
        (Some(Blocked::PlanUnavailable), _) => {
            let (reason, message) = plan_problem(plan_name, &observed.plan);
            not_ready(reason, message)
        }
        (None, Suspended) => not_ready(
            reasons::SUSPENDED,
            suspension_message(decision.suspension.as_ref()),
        ),
        (None, Provisioning | Trialing | Active | PastDue) if !claims.is_clear() => {
            let (reason, message) = namespace_problem(claims);
            not_ready(reason, message)
        }
        (None, Trialing) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            match decision.trial_ends_at {
                Some(end) => format!("trialing Plan {plan_name} until {end}"),
                None => format!("trialing Plan {plan_name}"),
            },
        ),
        (None, Active) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            format!("active on Plan {plan_name}"),
        ),
        (None, PastDue) => ConditionUpdate::new(
            types::READY,
            ConditionStatus::True,
            reasons::RECONCILED,
            past_due_message(decision),
        ),
        // Unreachable with the rules (an unblocked subscription leaves Pending and a clear
        // Provisioning one leaves Provisioning), kept total rather than panicking.
        (None, Pending | Provisioning) => {
            not_ready(reasons::PROVISIONING, "provisioning the tenant".to_owned())
        }
    }
}

/// Where the Subscription stands for kstatus: blocked (a spec, a Plan or a namespace only a
/// person can fix) is Stalled; provisioning and cancelling are Reconciling; a tenant trialing,
/// active, past due, suspended or cancelled is settled.
fn standing(decision: &Decision, ready: &ConditionUpdate) -> Standing {
    use SubscriptionPhase::{
        Active, Cancelled, Cancelling, PastDue, Pending, Provisioning, Suspended, Trialing,
    };
    if decision.blocked.is_some() || ready.reason == reasons::NAMESPACE_CONFLICT {
        return Standing::Stalled;
    }
    match decision.phase {
        Pending | Provisioning | Cancelling => Standing::Reconciling,
        // Namespaces still terminating from an earlier owner: they go by themselves.
        Trialing | Active | PastDue if ready.status == ConditionStatus::False => {
            Standing::Reconciling
        }
        Trialing | Active | PastDue | Suspended | Cancelled => Standing::Current,
    }
}

/// `PlanFound`: whether the Plan exists and can be used.
pub fn plan_found(
    plan_name: &str,
    lookup: &PlanLookup<'_>,
    decision: &Decision,
) -> ConditionUpdate {
    let found = |message: String| {
        ConditionUpdate::new(
            types::PLAN_FOUND,
            ConditionStatus::True,
            reasons::RECONCILED,
            message,
        )
    };
    match lookup {
        PlanLookup::Valid(_) => found(format!("Plan {plan_name} is valid")),
        PlanLookup::Deleting(_) if decision.blocked != Some(Blocked::PlanUnavailable) => {
            found(format!(
                "Plan {plan_name} is valid (being deleted; it stays while subscriptions use it)"
            ))
        }
        _ => {
            let (reason, message) = plan_problem(plan_name, lookup);
            ConditionUpdate::new(types::PLAN_FOUND, ConditionStatus::False, reason, message)
        }
    }
}

/// `Provisioned`: every tenant namespace and its children exist and match the plan. `None`
/// keeps the condition as it is (a held, provisioned subscription).
pub fn provisioned(
    plan_name: &str,
    decision: &Decision,
    observed: &Observation<'_>,
) -> Option<ConditionUpdate> {
    let update = |status, reason, message: String| {
        Some(ConditionUpdate::new(
            types::PROVISIONED,
            status,
            reason,
            message,
        ))
    };
    let claims = &observed.namespaces;
    match decision.phase {
        SubscriptionPhase::Cancelling => update(
            ConditionStatus::False,
            subscription_reasons::CANCELLING,
            cancelling_message(decision),
        ),
        SubscriptionPhase::Cancelled => update(
            ConditionStatus::False,
            subscription_reasons::CANCELLED,
            "the subscription is cancelled; its namespaces were deleted or released".to_owned(),
        ),
        _ if decision.actions.provision.is_some() => {
            if claims.is_clear() {
                update(
                    ConditionStatus::True,
                    reasons::RECONCILED,
                    format!(
                        "namespaces {} are provisioned",
                        bounded_list(&decision.namespaces, MAX_NAMED)
                    ),
                )
            } else {
                let (reason, message) = namespace_problem(claims);
                update(ConditionStatus::False, reason, message)
            }
        }
        SubscriptionPhase::Pending => {
            let (reason, message) = waiting_message(plan_name, decision, observed);
            update(ConditionStatus::False, reason, message)
        }
        _ => None,
    }
}

/// `QuotaApplied`: the plan's ResourceQuota and LimitRange are applied in every namespace.
/// `None` keeps the condition as it is.
pub fn quota_applied(
    plan_name: &str,
    decision: &Decision,
    observed: &Observation<'_>,
) -> Option<ConditionUpdate> {
    let update = |status, reason, message: String| {
        Some(ConditionUpdate::new(
            types::QUOTA_APPLIED,
            status,
            reason,
            message,
        ))
    };
    let claims = &observed.namespaces;
    match (
        &decision.actions.provision,
        decision.phase,
        &decision.blocked,
    ) {
        (_, SubscriptionPhase::Cancelling, _) => update(
            ConditionStatus::False,
            subscription_reasons::CANCELLING,
            "the subscription is being cancelled".to_owned(),
        ),
        (_, SubscriptionPhase::Cancelled, _) => update(
            ConditionStatus::False,
            subscription_reasons::CANCELLED,
            "the subscription is cancelled".to_owned(),
        ),
        (Some(_), _, _) if !claims.is_clear() => {
            let (reason, _) = namespace_problem(claims);
            let mut missing: Vec<String> = claims
                .conflicts
                .iter()
                .map(|c| c.namespace.clone())
                .collect();
            missing.extend(claims.terminating.iter().cloned());
            update(
                ConditionStatus::False,
                reason,
                format!(
                    "not applied in namespaces {}",
                    bounded_list(&missing, MAX_NAMED)
                ),
            )
        }
        (Some(provision), _, _) if provision.suspended => update(
            ConditionStatus::True,
            reasons::SUSPENDED,
            format!(
                "the quota of Plan {plan_name} is applied with pods: 0 (suspended) in {} namespaces",
                provision.namespaces.len()
            ),
        ),
        (Some(provision), _, _) => {
            let plan = observed.plan.usable();
            let limits = plan.is_some_and(|p| p.quota.is_some() || p.limit_range.is_some());
            update(
                ConditionStatus::True,
                reasons::RECONCILED,
                if limits {
                    format!(
                        "the quota and limits of Plan {plan_name} are applied in {} namespaces",
                        provision.namespaces.len()
                    )
                } else {
                    format!("Plan {plan_name} sets no quota or limits")
                },
            )
        }
        (None, SubscriptionPhase::Pending, _) => {
            let (reason, message) = waiting_message(plan_name, decision, observed);
            update(ConditionStatus::False, reason, message)
        }
        (None, _, Some(Blocked::PlanUnavailable)) => {
            let (reason, problem) = plan_problem(plan_name, &observed.plan);
            let kept = match decision.applied_plan.as_deref() {
                Some(applied) => format!("; the quota of Plan {applied} stays in force"),
                None => String::new(),
            };
            update(ConditionStatus::False, reason, format!("{problem}{kept}"))
        }
        (None, _, _) => None,
    }
}

/// `OverQuota`: whether some namespace uses more than the plan allows.
pub fn over_quota(
    plan_name: &str,
    decision: &Decision,
    usage: Option<&UsageReport>,
) -> ConditionChange {
    if is_cancelling(decision.phase) || decision.phase == SubscriptionPhase::Pending {
        return ConditionChange::Remove;
    }
    if decision.actions.provision.is_none() {
        return ConditionChange::Keep;
    }
    ConditionChange::Set(match usage {
        None => ConditionUpdate::new(
            types::OVER_QUOTA,
            ConditionStatus::Unknown,
            reasons::PENDING,
            "no namespace has reported usage yet",
        ),
        Some(report) if report.is_over_quota() => {
            let lines: Vec<String> = report.overages.iter().map(ToString::to_string).collect();
            ConditionUpdate::new(
                types::OVER_QUOTA,
                ConditionStatus::True,
                reasons::USAGE_EXCEEDS_QUOTA,
                format!(
                    "usage exceeds Plan {plan_name}: {}; nothing is deleted, new resources are refused until usage drops",
                    bounded_list(&lines, MAX_NAMED)
                ),
            )
        }
        Some(_) => ConditionUpdate::new(
            types::OVER_QUOTA,
            ConditionStatus::False,
            reasons::WITHIN_QUOTA,
            format!("usage is within Plan {plan_name}"),
        ),
    })
}

/// One Event per phase transition of the decision.
pub fn transition_events(plan_name: &str, decision: &Decision) -> Vec<Planned> {
    decision
        .transitions
        .iter()
        .map(|transition| transition_event(plan_name, decision, *transition))
        .collect()
}

fn transition_event(plan_name: &str, decision: &Decision, transition: Transition) -> Planned {
    use SubscriptionPhase::{
        Active, Cancelled, Cancelling, PastDue, Pending, Provisioning, Suspended, Trialing,
    };
    let normal = |reason, detail: String| Planned {
        type_: EventType::Normal,
        reason,
        note: format!(
            "{} → {}: {detail}",
            transition.from.as_str(),
            transition.to.as_str()
        ),
    };
    let warning = |reason, detail: String| Planned {
        type_: EventType::Warning,
        ..normal(reason, detail)
    };
    let trial_end = || {
        decision
            .trial_ends_at
            .map_or_else(|| "unknown".to_owned(), |end| end.to_string())
    };
    match (transition.from, transition.to) {
        (_, Provisioning) => normal(
            event_reasons::PROVISIONING,
            format!(
                "provisioning namespaces {} on Plan {plan_name}",
                bounded_list(&decision.namespaces, MAX_NAMED)
            ),
        ),
        (Suspended, Trialing | Active | PastDue) => normal(
            event_reasons::RESUMED,
            "the suspension is lifted; workloads are scaled back to their previous replicas"
                .to_owned(),
        ),
        (_, Trialing) => normal(
            event_reasons::TRIAL_STARTED,
            format!("the trial ends at {}", trial_end()),
        ),
        (Trialing, Active) => normal(
            event_reasons::TRIAL_ENDED,
            "the trial ended; payment is current".to_owned(),
        ),
        (PastDue, Active) => normal(
            event_reasons::PAYMENT_CURRENT,
            "the payment is current again".to_owned(),
        ),
        (_, Active) => normal(
            event_reasons::ACTIVATED,
            format!("the tenant is active on Plan {plan_name}"),
        ),
        (_, PastDue) => warning(event_reasons::PAST_DUE, past_due_message(decision)),
        (_, Suspended) => warning(
            event_reasons::SUSPENDED,
            suspension_message(decision.suspension.as_ref()),
        ),
        (_, Cancelling) => normal(event_reasons::CANCELLING, cancelling_message(decision)),
        (_, Cancelled) => normal(
            event_reasons::CANCELLED,
            "the subscription is cancelled".to_owned(),
        ),
        (_, Pending) => normal(event_reasons::BLOCKED, "back to Pending".to_owned()),
    }
}

/// Warning Events for what newly went wrong between the previous and the next status: `Ready`
/// turning False (or changing why) for a reason a person must act on, and `OverQuota`
/// turning True (or changing what is over). An unchanged status yields none.
pub fn condition_events(
    previous: Option<&SubscriptionStatus>,
    next: &SubscriptionStatus,
) -> Vec<Planned> {
    let before = |type_: &str| previous.and_then(|s| find_condition(&s.conditions, type_));
    let after = |type_: &str| find_condition(&next.conditions, type_);
    let mut events = Vec::new();
    if let Some(ready) = after(types::READY)
        && ready.status == ConditionStatus::False.as_str()
        && [
            reasons::INVALID_SPEC,
            reasons::NOT_FOUND,
            reasons::NOT_READY,
            reasons::NAMESPACE_CONFLICT,
        ]
        .contains(&ready.reason.as_str())
        && changed(before(types::READY), ready)
    {
        events.push(Planned {
            type_: EventType::Warning,
            reason: event_reasons::BLOCKED,
            note: ready.message.clone(),
        });
    }
    if let Some(over) = after(types::OVER_QUOTA)
        && over.status == ConditionStatus::True.as_str()
        && changed(before(types::OVER_QUOTA), over)
    {
        events.push(Planned {
            type_: EventType::Warning,
            reason: event_reasons::OVER_QUOTA,
            note: over.message.clone(),
        });
    }
    events
}

fn is_cancelling(phase: SubscriptionPhase) -> bool {
    matches!(
        phase,
        SubscriptionPhase::Cancelling | SubscriptionPhase::Cancelled
    )
}

/// Reason and message for a plan that cannot be used.
fn plan_problem(plan_name: &str, lookup: &PlanLookup<'_>) -> (&'static str, String) {
    match lookup {
        PlanLookup::Missing => (
            reasons::NOT_FOUND,
            format!("Plan {plan_name} does not exist"),
        ),
        PlanLookup::Invalid(errors) => (
            reasons::NOT_READY,
            format!(
                "Plan {plan_name} is invalid: {}",
                describe_spec_errors(errors)
            ),
        ),
        PlanLookup::Deleting(_) => (
            reasons::NOT_READY,
            format!("Plan {plan_name} is being deleted; new subscriptions cannot start on it"),
        ),
        PlanLookup::Valid(_) => (reasons::RECONCILED, format!("Plan {plan_name} is valid")),
    }
}

/// Reason and message for namespaces that cannot be provisioned (conflicts first).
fn namespace_problem(claims: &NamespaceClaims) -> (&'static str, String) {
    if !claims.conflicts.is_empty() {
        let lines: Vec<String> = claims.conflicts.iter().map(ToString::to_string).collect();
        (
            reasons::NAMESPACE_CONFLICT,
            format!(
                "{}; such namespaces are never taken over",
                bounded_list(&lines, MAX_NAMED)
            ),
        )
    } else {
        (
            reasons::PROVISIONING,
            format!(
                "waiting for namespaces {} to finish terminating",
                bounded_list(&claims.terminating, MAX_NAMED)
            ),
        )
    }
}

/// Why a Pending subscription is not provisioned.
fn waiting_message(
    plan_name: &str,
    decision: &Decision,
    observed: &Observation<'_>,
) -> (&'static str, String) {
    match &decision.blocked {
        Some(Blocked::InvalidSpec(_)) => (
            reasons::INVALID_SPEC,
            "nothing is provisioned until the spec is valid".to_owned(),
        ),
        _ => {
            let (reason, problem) = plan_problem(plan_name, &observed.plan);
            (reason, format!("waiting for a usable Plan: {problem}"))
        }
    }
}

fn cancelling_message(decision: &Decision) -> String {
    let retire = &decision.actions.retire;
    if retire.waiting_for.is_empty() {
        "releasing the namespaces".to_owned()
    } else {
        format!(
            "waiting for namespaces {} to be deleted",
            bounded_list(&retire.waiting_for, MAX_NAMED)
        )
    }
}

fn past_due_message(decision: &Decision) -> String {
    let since = decision
        .past_due_since
        .map_or_else(|| "now".to_owned(), |t| t.to_string());
    match decision.suspends_at {
        Some(at) => {
            format!("payment past due since {since}; the tenant is suspended at {at} unless paid")
        }
        None => format!("payment past due since {since}"),
    }
}

fn suspension_message(cause: Option<&SuspensionCause>) -> String {
    let Some(cause) = cause else {
        return "suspended: pods quota 0, workloads scaled to zero; data is kept".to_owned();
    };
    let mut why = Vec::new();
    if cause.requested {
        why.push("spec.state is Suspended".to_owned());
    }
    if let Some(overdue) = &cause.overdue {
        why.push(format!(
            "payment past due since {} and the grace period ended at {}",
            overdue.since, overdue.grace_ended_at
        ));
    }
    format!(
        "suspended ({}): pods quota 0, workloads scaled to zero; data is kept",
        why.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::namespaces::tests::{created, namespace, subscription};
    use crate::subscription::namespaces::{TenantNamespaces, claim};
    use crate::subscription::phase::decide;
    use crate::subscription::usage::Overage;
    use flotilla_crds::Subscription;
    use flotilla_crds::condition::is_condition_true;
    use flotilla_crds::plan::{PlanQuota, PlanSpec};
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const NOW: &str = "2025-03-01T12:00:00Z";

    fn plan() -> PlanSpec {
        PlanSpec {
            display_name: "Team".into(),
            quota: Some(PlanQuota {
                hard: BTreeMap::from([("pods".into(), Quantity("20".into()))]),
            }),
            limit_range: None,
            features: BTreeMap::new(),
            trial_days: 14,
            grace_period_days: 7,
            network_isolation: false,
            price: None,
        }
    }

    /// Decides and computes the status for a subscription in a world.
    fn status_of(
        sub: &Subscription,
        lookup: PlanLookup<'_>,
        namespaces: &[Namespace],
        usage: Option<&UsageReport>,
    ) -> (Decision, SubscriptionStatus) {
        let tenant = TenantNamespaces::resolve(sub);
        let claims = claim(
            tenant.as_ref().unwrap_or(&TenantNamespaces::none()),
            namespaces,
            "acme",
            sub.metadata.uid.as_deref().unwrap(),
        );
        let observed = Observation {
            plan: lookup,
            tenant,
            namespaces: claims,
        };
        let decision = decide(sub, &observed, at(NOW)).unwrap();
        let status = desired_status(
            sub.status.as_ref(),
            &sub.spec.plan,
            &decision,
            &observed,
            usage,
            Some(3),
            at(NOW),
        );
        (decision, status)
    }

    fn condition<'a>(status: &'a SubscriptionStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = find_condition(&status.conditions, type_).unwrap_or_else(|| panic!("no {type_}"));
        (c.status.as_str(), c.reason.as_str(), c.message.as_str())
    }

    fn within(pods: &str) -> UsageReport {
        UsageReport {
            usage: BTreeMap::from([("pods".into(), Quantity(pods.into()))]),
            entitlements: BTreeMap::from([("pods".into(), Quantity("20".into()))]),
            ..UsageReport::default()
        }
    }

    #[test]
    fn an_active_subscription_reports_every_condition() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let plan = plan();
        let usage = within("3");
        let (_, status) = status_of(&sub, PlanLookup::Valid(&plan), &[], Some(&usage));
        assert_eq!(status.phase, Some(SubscriptionPhase::Active));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.plan.as_deref(), Some("team"));
        assert_eq!(status.namespaces, ["acme"]);
        assert_eq!(status.usage["pods"], Quantity("3".into()));
        assert_eq!(
            condition(&status, types::READY),
            ("True", reasons::RECONCILED, "active on Plan team")
        );
        assert_eq!(
            condition(&status, types::PLAN_FOUND),
            ("True", reasons::RECONCILED, "Plan team is valid")
        );
        assert_eq!(
            condition(&status, types::PROVISIONED),
            (
                "True",
                reasons::RECONCILED,
                "namespaces acme are provisioned"
            )
        );
        assert_eq!(condition(&status, types::QUOTA_APPLIED).0, "True");
        assert_eq!(
            condition(&status, types::OVER_QUOTA),
            ("False", reasons::WITHIN_QUOTA, "usage is within Plan team")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        let order: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            order,
            [
                types::READY,
                types::PLAN_FOUND,
                types::PROVISIONED,
                types::QUOTA_APPLIED,
                types::OVER_QUOTA
            ]
        );
    }

    #[test]
    fn recomputing_gives_the_same_status_and_no_events() {
        let mut sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let plan = plan();
        let usage = within("3");
        let (_, first) = status_of(&sub, PlanLookup::Valid(&plan), &[], Some(&usage));
        sub.status = Some(first.clone());
        let ns = [created("acme")];
        let (decision, again) = status_of(&sub, PlanLookup::Valid(&plan), &ns, Some(&usage));
        assert_eq!(first, again);
        assert!(decision.transitions.is_empty());
        assert!(condition_events(Some(&first), &again).is_empty());
    }

    #[test]
    fn a_missing_plan_says_so_everywhere() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let (_, status) = status_of(&sub, PlanLookup::Missing, &[], None);
        assert_eq!(status.phase, Some(SubscriptionPhase::Pending));
        assert_eq!(
            condition(&status, types::PLAN_FOUND),
            ("False", reasons::NOT_FOUND, "Plan team does not exist")
        );
        assert_eq!(condition(&status, types::READY).1, reasons::NOT_FOUND);
        assert_eq!(
            condition(&status, types::PROVISIONED),
            (
                "False",
                reasons::NOT_FOUND,
                "waiting for a usable Plan: Plan team does not exist"
            )
        );
        assert_eq!(condition(&status, types::QUOTA_APPLIED).0, "False");
        assert!(find_condition(&status.conditions, types::OVER_QUOTA).is_none());
        let events = condition_events(None, &status);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].type_, events[0].reason),
            (EventType::Warning, event_reasons::BLOCKED)
        );
    }

    #[test]
    fn an_invalid_plan_names_its_errors() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let errors = vec![flotilla_crds::SpecError::new(
            "spec.quota.hard[pods]",
            "\"-1\" must not be negative",
        )];
        let (_, status) = status_of(&sub, PlanLookup::Invalid(errors), &[], None);
        let (s, reason, message) = condition(&status, types::PLAN_FOUND);
        assert_eq!((s, reason), ("False", reasons::NOT_READY));
        assert_eq!(
            message,
            "Plan team is invalid: spec.quota.hard[pods]: \"-1\" must not be negative"
        );
    }

    #[test]
    fn an_invalid_spec_is_reported_on_ready() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["a", "a"]}),
        );
        let plan = plan();
        let (_, status) = status_of(&sub, PlanLookup::Valid(&plan), &[], None);
        let (s, reason, message) = condition(&status, types::READY);
        assert_eq!((s, reason), ("False", reasons::INVALID_SPEC));
        assert!(message.starts_with("spec.namespaces[1]"), "{message}");
        assert_eq!(
            condition(&status, types::PROVISIONED).1,
            reasons::INVALID_SPEC
        );
    }

    #[test]
    fn conflicts_are_named_and_never_taken_over() {
        let sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "namespaces": ["acme", "kube-system"]}),
        );
        let plan = plan();
        let (_, status) = status_of(
            &sub,
            PlanLookup::Valid(&plan),
            &[namespace("kube-system", None)],
            None,
        );
        assert_eq!(status.phase, Some(SubscriptionPhase::Provisioning));
        let (s, reason, message) = condition(&status, types::PROVISIONED);
        assert_eq!((s, reason), ("False", reasons::NAMESPACE_CONFLICT));
        assert!(
            message.contains("namespace kube-system exists and is not managed by Flotilla"),
            "{message}"
        );
        assert_eq!(
            condition(&status, types::READY).1,
            reasons::NAMESPACE_CONFLICT
        );
        assert_eq!(
            condition(&status, types::QUOTA_APPLIED),
            (
                "False",
                reasons::NAMESPACE_CONFLICT,
                "not applied in namespaces kube-system"
            )
        );
        assert_eq!(status.namespaces, ["acme"]);
        assert_eq!(condition(&status, types::OVER_QUOTA).0, "Unknown");
    }

    #[test]
    fn over_quota_names_the_resources_and_keeps_ready() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let plan = plan();
        let report = UsageReport {
            overages: vec![Overage {
                namespace: "acme".into(),
                resource: "pods".into(),
                used: Quantity("25".into()),
                allowed: Quantity("20".into()),
                excess: Quantity("5".into()),
            }],
            ..within("25")
        };
        let (_, status) = status_of(&sub, PlanLookup::Valid(&plan), &[], Some(&report));
        let (s, reason, message) = condition(&status, types::OVER_QUOTA);
        assert_eq!((s, reason), ("True", reasons::USAGE_EXCEEDS_QUOTA));
        assert!(
            message.contains("acme: pods uses 25 of 20 (over by 5)"),
            "{message}"
        );
        assert!(message.contains("nothing is deleted"));
        assert!(is_condition_true(&status.conditions, types::READY));
        let events = condition_events(None, &status);
        assert_eq!(events.last().unwrap().reason, event_reasons::OVER_QUOTA);
    }

    #[test]
    fn suspension_is_explained() {
        let mut sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "payment": {"state": "PastDue", "since": "2025-01-01T00:00:00Z"}}),
        );
        sub.status = Some(SubscriptionStatus {
            phase: Some(SubscriptionPhase::Active),
            ..SubscriptionStatus::default()
        });
        let plan = plan();
        let (decision, status) =
            status_of(&sub, PlanLookup::Valid(&plan), &[created("acme")], None);
        assert_eq!(status.phase, Some(SubscriptionPhase::Suspended));
        assert_eq!(
            status.past_due_since,
            Some(Time(at("2025-01-01T00:00:00Z")))
        );
        let (s, reason, message) = condition(&status, types::READY);
        assert_eq!((s, reason), ("False", reasons::SUSPENDED));
        assert!(
            message.contains("grace period ended at 2025-01-08T00:00:00Z"),
            "{message}"
        );
        assert_eq!(
            condition(&status, types::QUOTA_APPLIED).1,
            reasons::SUSPENDED
        );

        let events = transition_events("team", &decision);
        let reasons: Vec<_> = events.iter().map(|e| (e.type_, e.reason)).collect();
        assert_eq!(
            reasons,
            [
                (EventType::Warning, event_reasons::PAST_DUE),
                (EventType::Warning, event_reasons::SUSPENDED)
            ]
        );
        assert!(
            events[0]
                .note
                .starts_with("Active → PastDue: payment past due since 2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn past_due_stays_ready_and_says_when_it_suspends() {
        let mut sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "payment": {"state": "PastDue", "since": "2025-03-01T00:00:00Z"}}),
        );
        sub.status = Some(SubscriptionStatus {
            phase: Some(SubscriptionPhase::Active),
            ..SubscriptionStatus::default()
        });
        let plan = plan();
        let (_, status) = status_of(&sub, PlanLookup::Valid(&plan), &[created("acme")], None);
        assert_eq!(
            condition(&status, types::READY),
            (
                "True",
                reasons::RECONCILED,
                "payment past due since 2025-03-01T00:00:00Z; the tenant is suspended at 2025-03-08T00:00:00Z unless paid"
            )
        );
    }

    #[test]
    fn cancellation_is_reported_and_clears_usage() {
        let mut sub = subscription(
            "acme",
            serde_json::json!({"plan": "team", "state": "Cancelled", "deletionPolicy": "Delete"}),
        );
        sub.status = Some(SubscriptionStatus {
            phase: Some(SubscriptionPhase::Active),
            usage: BTreeMap::from([("pods".into(), Quantity("3".into()))]),
            ..SubscriptionStatus::default()
        });
        let plan = plan();
        let (decision, status) = status_of(
            &sub,
            PlanLookup::Valid(&plan),
            &[created("acme")],
            Some(&within("3")),
        );
        assert_eq!(status.phase, Some(SubscriptionPhase::Cancelling));
        assert_eq!(
            condition(&status, types::READY),
            (
                "False",
                subscription_reasons::CANCELLING,
                "waiting for namespaces acme to be deleted"
            )
        );
        assert!(status.usage.is_empty());
        assert!(find_condition(&status.conditions, types::OVER_QUOTA).is_none());
        assert_eq!(status.namespaces, ["acme"]);
        assert_eq!(
            transition_events("team", &decision)[0].reason,
            event_reasons::CANCELLING
        );

        let (_, done) = status_of(&sub, PlanLookup::Valid(&plan), &[], None);
        assert_eq!(done.phase, Some(SubscriptionPhase::Cancelled));
        assert_eq!(
            condition(&done, types::PROVISIONED).1,
            subscription_reasons::CANCELLED
        );
        assert!(done.namespaces.is_empty());
    }

    #[test]
    fn reactivation_is_refused_on_ready() {
        let mut sub = subscription("acme", serde_json::json!({"plan": "team"}));
        sub.status = Some(SubscriptionStatus {
            phase: Some(SubscriptionPhase::Cancelled),
            ..SubscriptionStatus::default()
        });
        let plan = plan();
        let (_, status) = status_of(&sub, PlanLookup::Valid(&plan), &[], None);
        assert_eq!(status.phase, Some(SubscriptionPhase::Cancelled));
        let (s, reason, message) = condition(&status, types::READY);
        assert_eq!((s, reason), ("False", reasons::INVALID_SPEC));
        assert!(message.contains("cannot be reactivated"));
    }

    #[test]
    fn a_held_subscription_keeps_what_it_cannot_reevaluate() {
        let mut sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let plan = plan();
        let usage = within("3");
        let (_, active) = status_of(&sub, PlanLookup::Valid(&plan), &[], Some(&usage));
        sub.status = Some(active.clone());
        sub.spec.plan = "enterprise".into();
        let ns = [created("acme")];
        let (_, held) = status_of(&sub, PlanLookup::Missing, &ns, None);
        assert_eq!(held.phase, Some(SubscriptionPhase::Active));
        assert_eq!(held.plan.as_deref(), Some("team"));
        assert_eq!(held.usage, active.usage);
        assert_eq!(
            find_condition(&held.conditions, types::PROVISIONED),
            find_condition(&active.conditions, types::PROVISIONED),
            "kept, generation and all"
        );
        assert_eq!(
            condition(&held, types::QUOTA_APPLIED),
            (
                "False",
                reasons::NOT_FOUND,
                "Plan enterprise does not exist; the quota of Plan team stays in force"
            )
        );
        assert_eq!(condition(&held, types::READY).1, reasons::NOT_FOUND);
    }

    #[test]
    fn the_trial_is_announced() {
        let sub = subscription("acme", serde_json::json!({"plan": "team", "trial": true}));
        let plan = plan();
        let (decision, status) = status_of(&sub, PlanLookup::Valid(&plan), &[], None);
        assert_eq!(
            condition(&status, types::READY).2,
            "trialing Plan team until 2025-03-15T12:00:00Z"
        );
        let events = transition_events("team", &decision);
        let reasons: Vec<_> = events.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [event_reasons::PROVISIONING, event_reasons::TRIAL_STARTED]
        );
        assert_eq!(
            events[1].note,
            "Provisioning → Trialing: the trial ends at 2025-03-15T12:00:00Z"
        );
        assert_eq!(status.trial_ends_at, Some(Time(at("2025-03-15T12:00:00Z"))));
    }

    #[test]
    fn a_quota_refusal_keeps_the_phase_and_says_what_to_do() {
        let sub = subscription("acme", serde_json::json!({"plan": "team"}));
        let plan = plan();
        let (_, active) = status_of(&sub, PlanLookup::Valid(&plan), &[], Some(&within("3")));
        let refusal = quota_refusal_message(
            "applying",
            "ConfigMap acme/flotilla-entitlements",
            "configmaps \"flotilla-entitlements\" is forbidden: exceeded quota: tenant-limits",
        );
        let refused = quota_refused(Some(&active), &refusal, Some(4), at(NOW));
        assert_eq!(refused.phase, active.phase, "the phase stays");
        assert_eq!(refused.observed_generation, active.observed_generation);
        for type_ in [types::PROVISIONED, types::READY] {
            let condition = find_condition(&refused.conditions, type_).expect(type_);
            assert_eq!(
                (condition.status.as_str(), condition.reason.as_str()),
                ("False", subscription_reasons::QUOTA_EXCEEDED)
            );
            assert!(condition.message.contains("exceeded quota: tenant-limits"));
            assert!(condition.message.contains("raise the quota"));
            assert_eq!(condition.observed_generation, Some(4));
        }
        let fresh = quota_refused(None, &refusal, Some(1), at(NOW));
        assert_eq!(fresh.phase, Some(SubscriptionPhase::Pending));
    }
}
