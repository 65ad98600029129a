//! The Subscription lifecycle: the phase machine and the pure decision of each reconcile.
//!
//! | From | To |
//! |---|---|
//! | Pending | Provisioning |
//! | Provisioning | Trialing, Active |
//! | Trialing | Active, PastDue, Suspended |
//! | Active | PastDue, Suspended |
//! | PastDue | Active, Suspended |
//! | Suspended | Active, PastDue, Trialing |
//! | every phase but Cancelling and Cancelled | Cancelling |
//! | Cancelling | Cancelled |
//!
//! The machine is Pending → Provisioning → Trialing | Active → PastDue → Suspended →
//! Active, and any live phase → Cancelling → Cancelled. Because `spec.state: Suspended` can be
//! asked for at any time, suspension is also reachable from Trialing and Active, and leaving it
//! goes to where the subscription would be without the suspension: Trialing (trial still
//! running), PastDue (payment overdue, grace period not over) or Active. Those are the only
//! additions; everything else is refused by [`Phase::allows`].
//!
//! # Deciding
//! [`decide`] looks at the Subscription, its Plan, what exists in the cluster and the time, and
//! walks the machine one legal step at a time until no rule applies, so one reconcile can go
//! Pending → Provisioning → Active. The decision describes the world *once its actions have
//! succeeded*: the shell carries the actions out first and writes the status only if they
//! all did, so a failed apply never shows as Active.
//!
//! # Rules where the issue is silent (each has a test)
//! - **Payment absent** counts as Current (no billing integration).
//! - **Trial**: only when `spec.trial` is set *and* the plan's `trialDays > 0`; it starts when
//!   provisioning completes (not at creation, so a missing Plan does not eat the trial) and
//!   `status.trialEndsAt` is then fixed: later plan changes or toggling `spec.trial` do not
//!   move it. A Trialing subscription that lost `trialEndsAt` gets a fresh one from now.
//!   Payment standing is ignored during the trial (nothing is due).
//! - **Grace period** counts from `payment.since`, or from the end of the trial if that is
//!   later, and is over at exactly `start + gracePeriodDays × 24 h` (requeue at that instant).
//!   `status.pastDueSince` is that start.
//! - **State Suspended** suspends from Trialing, Active or PastDue (after provisioning if still
//!   Pending); the trial clock keeps running while suspended.
//! - **Leaving Suspended** needs both causes gone: `state` not Suspended and the payment not
//!   overdue beyond the grace period.
//! - **Deletion or `state: Cancelled`** wins over everything, including an invalid spec or a
//!   missing Plan, so an object can always be cancelled and deleted.
//! - **Reactivating** (`state` no longer Cancelled on a Cancelling/Cancelled subscription; the
//!   schema forbids it, an older API server may not) is refused: no transition, cleanup goes
//!   on, `Ready=False` with reason `InvalidSpec` says a new Subscription is needed.
//! - **Invalid spec** (after creation): the phase holds and nothing is applied until a valid
//!   generation (except cancellation).
//! - **Plan missing or invalid**: a new subscription stays Pending with `PlanFound=False`; a
//!   provisioned one holds its phase and leaves its children as they are (the previous plan's
//!   quota stays in force) until the Plan is back — trial expiry and suspension wait too,
//!   since the grace period and the quota come from the plan. A Plan being deleted still
//!   serves the subscriptions that use it, but no new subscription starts on it.
//! - **Namespace conflicts** keep a new subscription in Provisioning (the free namespaces are
//!   provisioned meanwhile); on a live subscription they only set `Provisioned=False`.
//! - **Namespaces dropped from `spec.namespaces`** are let go of as on cancellation: deleted
//!   or released per `deletionPolicy`.
//! - **`payment.since` in the future** is taken as written: PastDue now, grace counted from
//!   `since`.

use flotilla_crds::plan::PlanSpec;
use flotilla_crds::subscription::{PaymentState, SubscriptionState};
use flotilla_crds::{Plan, SpecError, Subscription, SubscriptionPhase};
use jiff::{SignedDuration, Timestamp};

use super::cancellation::{Retirement, retire};
use super::namespaces::{NamespaceClaims, TenantNamespaces};
use flotilla_runtime::phase::{IllegalTransition, Phase};

/// What became of the Plan a Subscription names.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanLookup<'a> {
    /// No Plan of that name.
    Missing,
    /// The Plan exists but its spec is invalid (`PlanSpec::validate`).
    Invalid(Vec<SpecError>),
    /// The Plan is valid and being deleted: it serves the subscriptions already on it, and
    /// no new one.
    Deleting(&'a PlanSpec),
    /// The Plan is valid.
    Valid(&'a PlanSpec),
}

impl<'a> PlanLookup<'a> {
    /// Classifies the Plan found under the Subscription's `spec.plan`.
    pub fn of(plan: Option<&'a Plan>) -> Self {
        let Some(plan) = plan else {
            return PlanLookup::Missing;
        };
        match plan.spec.validate() {
            Err(errors) => PlanLookup::Invalid(errors),
            Ok(()) if plan.metadata.deletion_timestamp.is_some() => {
                PlanLookup::Deleting(&plan.spec)
            }
            Ok(()) => PlanLookup::Valid(&plan.spec),
        }
    }

    /// The plan, if a provisioned subscription can go on using it.
    pub fn usable(&self) -> Option<&'a PlanSpec> {
        match self {
            PlanLookup::Valid(plan) | PlanLookup::Deleting(plan) => Some(plan),
            PlanLookup::Missing | PlanLookup::Invalid(_) => None,
        }
    }

    /// The plan, if a new subscription can start on it.
    pub fn open(&self) -> Option<&'a PlanSpec> {
        match self {
            PlanLookup::Valid(plan) => Some(plan),
            _ => None,
        }
    }
}

/// What the shell observed for one reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation<'a> {
    /// The Plan named by `spec.plan`.
    pub plan: PlanLookup<'a>,
    /// `TenantNamespaces::resolve` of the Subscription: its namespaces, or why its spec is
    /// invalid.
    pub tenant: Result<TenantNamespaces, Vec<SpecError>>,
    /// The namespaces sorted by what the Subscription may do with them (`namespaces::claim`,
    /// against `TenantNamespaces::none()` when the spec is invalid).
    pub namespaces: NamespaceClaims,
}

/// One phase change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The phase left.
    pub from: SubscriptionPhase,
    /// The phase entered.
    pub to: SubscriptionPhase,
}

/// What to do with the tenant's Deployments and StatefulSets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadAction {
    /// Nothing.
    Leave,
    /// Scale them to zero, recording their counts (`suspension::suspend`), in these
    /// namespaces.
    ScaleToZero {
        /// The namespaces whose workloads are scaled.
        namespaces: Vec<String>,
    },
    /// Put back the recorded counts of any suspended workload (`suspension::restore`), in
    /// these namespaces.
    Restore {
        /// The namespaces whose workloads are restored.
        namespaces: Vec<String>,
    },
}

/// Apply the children of these namespaces (`build::tenant_objects`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provision {
    /// The namespaces to create or keep in shape (the usable ones, in spec order).
    pub namespaces: Vec<String>,
    /// Build the children of a suspended tenant (`pods: 0`).
    pub suspended: bool,
}

/// What the shell must carry out, in this order: retire, provision, workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actions {
    /// Namespaces to let go of (cancellation, or dropped from the spec).
    pub retire: Retirement,
    /// Children to apply; `None` leaves every child as it is.
    pub provision: Option<Provision>,
    /// What to do with workloads.
    pub workloads: WorkloadAction,
}

/// Why the lifecycle is not moving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The Subscription's spec is invalid; it waits for a new generation.
    InvalidSpec(Vec<SpecError>),
    /// The Plan is missing, invalid, or (for a new subscription) being deleted.
    PlanUnavailable,
    /// A cancelled Subscription was asked to become active again.
    CannotReactivate,
}

/// Why a Suspended subscription is suspended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuspensionCause {
    /// `spec.state` is Suspended.
    pub requested: bool,
    /// The payment has been past due for longer than the grace period.
    pub overdue: Option<Overdue>,
}

/// An overdue payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overdue {
    /// Start of the grace period (`status.pastDueSince`).
    pub since: Timestamp,
    /// When the grace period ended.
    pub grace_ended_at: Timestamp,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The phase once the actions have succeeded.
    pub phase: SubscriptionPhase,
    /// The phase changes from the recorded phase to [`Decision::phase`], in order (one Event
    /// each).
    pub transitions: Vec<Transition>,
    /// What to do.
    pub actions: Actions,
    /// When the decision changes by time alone (trial end, grace period end): requeue then.
    pub requeue_at: Option<Timestamp>,
    /// Why the lifecycle is held, if it is.
    pub blocked: Option<Blocked>,
    /// Why the subscription is suspended, when it is.
    pub suspension: Option<SuspensionCause>,
    /// `status.trialEndsAt`.
    pub trial_ends_at: Option<Timestamp>,
    /// `status.pastDueSince`.
    pub past_due_since: Option<Timestamp>,
    /// While PastDue: when the subscription will be suspended.
    pub suspends_at: Option<Timestamp>,
    /// `status.plan`: the Plan whose entitlements are applied.
    pub applied_plan: Option<String>,
    /// `status.namespaces`.
    pub namespaces: Vec<String>,
}

impl Decision {
    /// Whether the Subscription's cleanup is finished, so a deletion may proceed (the
    /// finalizer is removed).
    pub fn cleanup_complete(&self) -> bool {
        self.phase == SubscriptionPhase::Cancelled && self.actions.retire.is_complete()
    }
}

/// Decides the next phase and what to do (see the module docs for the rules).
///
/// Refuses — rather than reports — a phase change the machine forbids; the rules only ever
/// ask for legal ones, so an error means a bug, which the caller reports as permanent.
pub fn decide(
    subscription: &Subscription,
    observed: &Observation<'_>,
    now: Timestamp,
) -> Result<Decision, IllegalTransition<SubscriptionPhase>> {
    use SubscriptionPhase::{Cancelled, Cancelling, Pending, Suspended};

    let status = subscription.status.as_ref();
    let current = status
        .and_then(|s| s.phase)
        .unwrap_or(<SubscriptionPhase as Phase>::INITIAL);
    let rules = Rules::new(subscription, observed, now);
    let cancelling = rules.cancel || matches!(current, Cancelling | Cancelled);

    let blocked = if matches!(current, Cancelling | Cancelled) && !rules.cancel {
        Some(Blocked::CannotReactivate)
    } else if rules.cancel {
        None
    } else if let Err(errors) = &observed.tenant {
        Some(Blocked::InvalidSpec(errors.clone()))
    } else if (current == Pending && rules.open_plan.is_none()) || rules.plan.is_none() {
        Some(Blocked::PlanUnavailable)
    } else {
        None
    };

    let claims = &observed.namespaces;
    let policy = subscription.spec.deletion_policy;
    let retirement = if cancelling {
        retire(policy, &claims.owned)
    } else if observed.tenant.is_ok() {
        retire(policy, &claims.orphaned)
    } else {
        Retirement::default()
    };

    // Walk the machine.
    let mut trial_ends_at = status.and_then(|s| s.trial_ends_at.as_ref()).map(|t| t.0);
    if current == SubscriptionPhase::Trialing
        && trial_ends_at.is_none()
        && let Some(days) = rules.trial_days()
    {
        trial_ends_at = Some(add_days(now, days));
    }
    let mut phase = current;
    let mut transitions = Vec::new();
    for _ in 0..SubscriptionPhase::ALL.len() {
        let Some(next) = rules.step(phase, trial_ends_at, retirement.is_complete()) else {
            break;
        };
        let next = phase.transition(next)?;
        if next == SubscriptionPhase::Trialing
            && trial_ends_at.is_none()
            && let Some(days) = rules.trial_days()
        {
            trial_ends_at = Some(add_days(now, days));
        }
        transitions.push(Transition {
            from: phase,
            to: next,
        });
        phase = next;
    }

    let live = !cancelling && phase != Pending;
    let provision = (blocked.is_none() && live).then(|| Provision {
        namespaces: claims.usable.clone(),
        suspended: phase == Suspended,
    });
    let workload_namespaces = || -> Vec<String> {
        claims
            .owned
            .iter()
            .filter(|ns| !ns.terminating && claims.usable.contains(&ns.name))
            .map(|ns| ns.name.clone())
            .collect()
    };
    let workloads = match blocked {
        Some(Blocked::InvalidSpec(_)) => WorkloadAction::Leave,
        _ if !live => WorkloadAction::Leave,
        _ if phase == Suspended => WorkloadAction::ScaleToZero {
            namespaces: workload_namespaces(),
        },
        _ => WorkloadAction::Restore {
            namespaces: workload_namespaces(),
        },
    };

    let held = blocked.is_some();
    let past_due_since = if held {
        status.and_then(|s| s.past_due_since.as_ref()).map(|t| t.0)
    } else if matches!(phase, SubscriptionPhase::PastDue | Suspended) {
        rules
            .grace_start(trial_ends_at)
            .filter(|start| *start <= now)
    } else {
        None
    };
    let suspends_at = (phase == SubscriptionPhase::PastDue)
        .then(|| rules.suspends_at(trial_ends_at))
        .flatten();
    let suspension = (phase == Suspended && !held).then(|| SuspensionCause {
        requested: rules.state_suspended,
        overdue: rules
            .grace_start(trial_ends_at)
            .zip(rules.suspends_at(trial_ends_at))
            .filter(|(_, ended)| *ended <= now)
            .map(|(since, grace_ended_at)| Overdue {
                since,
                grace_ended_at,
            }),
    });
    let requeue_at = match phase {
        _ if held => None,
        SubscriptionPhase::Trialing => trial_ends_at,
        SubscriptionPhase::PastDue => suspends_at,
        _ => None,
    };

    let namespaces = if cancelling {
        retirement.waiting_for.clone()
    } else if let Some(provision) = &provision {
        provision.namespaces.clone()
    } else {
        status.map(|s| s.namespaces.clone()).unwrap_or_default()
    };
    let applied_plan = if provision.is_some() {
        Some(subscription.spec.plan.clone())
    } else {
        status.and_then(|s| s.plan.clone())
    };

    Ok(Decision {
        phase,
        transitions,
        actions: Actions {
            retire: retirement,
            provision,
            workloads,
        },
        requeue_at,
        blocked,
        suspension,
        trial_ends_at,
        past_due_since,
        suspends_at,
        applied_plan,
        namespaces,
    })
}

/// The facts the step rules read, gathered once.
struct Rules<'a> {
    now: Timestamp,
    /// Deletion or `state: Cancelled`.
    cancel: bool,
    state_suspended: bool,
    /// `payment.since` when the payment is past due.
    past_due_since: Option<Timestamp>,
    wants_trial: bool,
    spec_valid: bool,
    /// The plan a provisioned subscription can use.
    plan: Option<&'a PlanSpec>,
    /// The plan a new subscription can start on.
    open_plan: Option<&'a PlanSpec>,
    namespaces_clear: bool,
}

impl<'a> Rules<'a> {
    fn new(subscription: &Subscription, observed: &Observation<'a>, now: Timestamp) -> Self {
        let spec = &subscription.spec;
        let past_due_since = spec
            .payment
            .as_ref()
            .filter(|p| p.state == PaymentState::PastDue)
            .and_then(|p| p.since.as_ref())
            .map(|since| since.0);
        Self {
            now,
            cancel: subscription.metadata.deletion_timestamp.is_some()
                || spec.state == SubscriptionState::Cancelled,
            state_suspended: spec.state == SubscriptionState::Suspended,
            past_due_since,
            wants_trial: spec.trial,
            spec_valid: observed.tenant.is_ok(),
            plan: observed.plan.usable(),
            open_plan: observed.plan.open(),
            namespaces_clear: observed.namespaces.is_clear(),
        }
    }

    /// The trial length, when this subscription gets one.
    fn trial_days(&self) -> Option<i32> {
        self.plan
            .map(|plan| plan.trial_days)
            .filter(|days| self.wants_trial && *days > 0)
    }

    fn trial_running(&self, trial_ends_at: Option<Timestamp>) -> bool {
        trial_ends_at.is_some_and(|end| self.now < end)
    }

    /// Start of the grace period: `payment.since`, or the end of the trial if later.
    fn grace_start(&self, trial_ends_at: Option<Timestamp>) -> Option<Timestamp> {
        self.past_due_since
            .map(|since| trial_ends_at.map_or(since, |end| since.max(end)))
    }

    fn suspends_at(&self, trial_ends_at: Option<Timestamp>) -> Option<Timestamp> {
        let grace = self.plan?.grace_period_days;
        Some(add_days(self.grace_start(trial_ends_at)?, grace))
    }

    fn overdue(&self, trial_ends_at: Option<Timestamp>) -> bool {
        self.suspends_at(trial_ends_at)
            .is_some_and(|at| self.now >= at)
    }

    /// The next phase from `phase`, or `None` when no rule applies.
    fn step(
        &self,
        phase: SubscriptionPhase,
        trial_ends_at: Option<Timestamp>,
        cleanup_complete: bool,
    ) -> Option<SubscriptionPhase> {
        use SubscriptionPhase::{
            Active, Cancelled, Cancelling, PastDue, Pending, Provisioning, Suspended, Trialing,
        };
        let past_due = self.past_due_since.is_some();
        match phase {
            Cancelled => None,
            Cancelling => cleanup_complete.then_some(Cancelled),
            _ if self.cancel => Some(Cancelling),
            Pending => (self.spec_valid && self.open_plan.is_some()).then_some(Provisioning),
            _ if !self.spec_valid || self.plan.is_none() => None,
            Provisioning => self.namespaces_clear.then(|| {
                if self.trial_days().is_some() {
                    Trialing
                } else {
                    Active
                }
            }),
            Trialing if self.state_suspended => Some(Suspended),
            Trialing if self.trial_running(trial_ends_at) => None,
            Trialing => Some(if past_due { PastDue } else { Active }),
            Active if self.state_suspended => Some(Suspended),
            Active => past_due.then_some(PastDue),
            PastDue if self.state_suspended || self.overdue(trial_ends_at) => Some(Suspended),
            PastDue => (!past_due).then_some(Active),
            Suspended if self.state_suspended || self.overdue(trial_ends_at) => None,
            Suspended if self.trial_running(trial_ends_at) => Some(Trialing),
            Suspended => Some(if past_due { PastDue } else { Active }),
        }
    }
}

/// `at` plus whole days of 24 hours, in whole seconds (as `metav1.Time` stores them), so
/// that a recomputed time equals the one read back from the status.
fn add_days(at: Timestamp, days: i32) -> Timestamp {
    let later = at
        .saturating_add(SignedDuration::from_hours(24 * i64::from(days)))
        .unwrap_or(Timestamp::MAX);
    Timestamp::from_second(later.as_second()).unwrap_or(later)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::namespaces::tests::{UID, created, namespace, subscription};
    use crate::subscription::namespaces::{Origin, OwnedNamespace, claim};
    use SubscriptionPhase::{
        Active, Cancelled, Cancelling, PastDue, Pending, Provisioning, Suspended, Trialing,
    };
    use flotilla_crds::SubscriptionStatus;
    use flotilla_crds::plan::PlanQuota;
    use flotilla_runtime::phase::assert_transition_table;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const NOW: &str = "2025-03-01T12:00:00Z";

    fn plan(trial_days: i32, grace_period_days: i32) -> PlanSpec {
        PlanSpec {
            display_name: "Team".into(),
            quota: Some(PlanQuota {
                hard: BTreeMap::from([("pods".into(), Quantity("20".into()))]),
            }),
            limit_range: None,
            features: BTreeMap::new(),
            trial_days,
            grace_period_days,
            network_isolation: false,
            price: None,
        }
    }

    /// A world to decide in: the subscription (spec as JSON), its recorded status, the
    /// plan, and the namespaces that exist.
    #[derive(Debug)]
    struct World {
        sub: Subscription,
        plan: Option<PlanSpec>,
        plan_deleting: bool,
        namespaces: Vec<Namespace>,
    }

    impl World {
        fn new(spec: serde_json::Value) -> Self {
            Self {
                sub: subscription("acme", spec),
                plan: Some(plan(14, 7)),
                plan_deleting: false,
                namespaces: Vec::new(),
            }
        }

        fn in_phase(mut self, phase: SubscriptionPhase) -> Self {
            self.status().phase = Some(phase);
            if phase != Pending {
                self.status().namespaces = vec!["acme".into()];
                self.status().plan = Some("team".into());
                self.namespaces.push(created("acme"));
            }
            self
        }

        fn status(&mut self) -> &mut SubscriptionStatus {
            self.sub
                .status
                .get_or_insert_with(SubscriptionStatus::default)
        }

        fn trial_ending(mut self, end: &str) -> Self {
            self.status().trial_ends_at = Some(Time(at(end)));
            self
        }

        fn deleting(mut self) -> Self {
            self.sub.metadata.deletion_timestamp = Some(Time(at(NOW)));
            self
        }

        fn decide_at(&self, now: &str) -> Decision {
            self.try_decide_at(now).expect("legal")
        }

        fn try_decide_at(
            &self,
            now: &str,
        ) -> Result<Decision, IllegalTransition<SubscriptionPhase>> {
            let lookup = match &self.plan {
                None => PlanLookup::Missing,
                Some(plan) if self.plan_deleting => PlanLookup::Deleting(plan),
                Some(plan) => PlanLookup::Valid(plan),
            };
            decide(
                &self.sub,
                &observe(&self.sub, lookup, &self.namespaces),
                at(now),
            )
        }
    }

    fn observe<'a>(
        sub: &Subscription,
        plan: PlanLookup<'a>,
        namespaces: &[Namespace],
    ) -> Observation<'a> {
        let tenant = TenantNamespaces::resolve(sub);
        let claims = claim(
            tenant.as_ref().unwrap_or(&TenantNamespaces::none()),
            namespaces,
            sub.metadata.name.as_deref().unwrap_or_default(),
            sub.metadata.uid.as_deref().unwrap_or_default(),
        );
        Observation {
            plan,
            tenant,
            namespaces: claims,
        }
    }

    fn path(decision: &Decision) -> Vec<SubscriptionPhase> {
        decision.transitions.iter().map(|t| t.to).collect()
    }

    fn past_due(since: &str) -> serde_json::Value {
        serde_json::json!({"state": "PastDue", "since": since})
    }

    // ---- the machine ----

    #[test]
    fn every_legal_and_illegal_transition() {
        let mut legal = vec![
            (Pending, Provisioning),
            (Provisioning, Trialing),
            (Provisioning, Active),
            (Trialing, Active),
            (Trialing, PastDue),
            (Trialing, Suspended),
            (Active, PastDue),
            (Active, Suspended),
            (PastDue, Active),
            (PastDue, Suspended),
            (Suspended, Active),
            (Suspended, PastDue),
            (Suspended, Trialing),
            (Cancelling, Cancelled),
        ];
        for live in [Pending, Provisioning, Trialing, Active, PastDue, Suspended] {
            legal.push((live, Cancelling));
        }
        assert_transition_table(&legal);
    }

    #[test]
    fn status_strings_match_the_api() {
        for phase in <SubscriptionPhase as Phase>::ALL {
            let wire = serde_json::to_value(phase).expect("serialize");
            assert_eq!(wire, Phase::as_str(*phase));
            assert_eq!(
                <SubscriptionPhase as Phase>::parse(Phase::as_str(*phase)),
                Some(*phase)
            );
        }
        assert_eq!(<SubscriptionPhase as Phase>::INITIAL, Pending);
    }

    // ---- provisioning ----

    #[test]
    fn a_new_subscription_is_provisioned_and_active_in_one_reconcile() {
        let world = World::new(serde_json::json!({"plan": "team"}));
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Provisioning, Active]);
        assert_eq!(decision.transitions[0].from, Pending);
        assert_eq!(
            decision.actions.provision,
            Some(Provision {
                namespaces: vec!["acme".into()],
                suspended: false
            })
        );
        assert_eq!(decision.applied_plan.as_deref(), Some("team"));
        assert_eq!(decision.namespaces, ["acme"]);
        assert_eq!(decision.requeue_at, None, "nothing is due by time");
        assert_eq!(decision.blocked, None);
        assert!(decision.actions.retire.is_empty());
        assert_eq!(decision.trial_ends_at, None);
    }

    #[test]
    fn a_trial_starts_when_provisioned_and_requeues_exactly_at_its_end() {
        let world = World::new(serde_json::json!({"plan": "team", "trial": true}));
        let decision = world.decide_at("2025-03-01T12:00:00.750Z");
        assert_eq!(path(&decision), [Provisioning, Trialing]);
        assert_eq!(decision.trial_ends_at, Some(at("2025-03-15T12:00:00Z")));
        assert_eq!(decision.requeue_at, decision.trial_ends_at);
    }

    #[test]
    fn a_plan_without_trial_days_gives_no_trial() {
        let mut world = World::new(serde_json::json!({"plan": "team", "trial": true}));
        world.plan = Some(plan(0, 7));
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Provisioning, Active]);
        assert_eq!(decision.trial_ends_at, None);
    }

    #[test]
    fn a_missing_plan_keeps_a_new_subscription_pending() {
        let mut world = World::new(serde_json::json!({"plan": "team"}));
        world.plan = None;
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Pending);
        assert!(decision.transitions.is_empty());
        assert_eq!(decision.blocked, Some(Blocked::PlanUnavailable));
        assert_eq!(decision.actions.provision, None);
        assert_eq!(decision.actions.workloads, WorkloadAction::Leave);
        assert_eq!(decision.applied_plan, None);
    }

    #[test]
    fn an_invalid_plan_keeps_a_new_subscription_pending() {
        let world = World::new(serde_json::json!({"plan": "team"}));
        let mut bad = plan(14, 7);
        bad.quota
            .as_mut()
            .unwrap()
            .hard
            .insert("pods".into(), Quantity("-1".into()));
        let invalid = Plan::new("team", bad);
        let lookup = PlanLookup::of(Some(&invalid));
        assert!(matches!(lookup, PlanLookup::Invalid(_)));
        let decision = decide(&world.sub, &observe(&world.sub, lookup, &[]), at(NOW)).unwrap();
        assert_eq!(decision.phase, Pending);
        assert_eq!(decision.blocked, Some(Blocked::PlanUnavailable));
    }

    #[test]
    fn plan_lookup_classifies_plans() {
        assert_eq!(PlanLookup::of(None), PlanLookup::Missing);
        let mut valid = Plan::new("team", plan(0, 7));
        assert!(matches!(PlanLookup::of(Some(&valid)), PlanLookup::Valid(_)));
        valid.metadata.deletion_timestamp = Some(Time(at(NOW)));
        let deleting = PlanLookup::of(Some(&valid));
        assert!(matches!(deleting, PlanLookup::Deleting(_)));
        assert!(deleting.usable().is_some());
        assert!(deleting.open().is_none());
    }

    #[test]
    fn a_plan_being_deleted_serves_existing_subscriptions_only() {
        let mut new = World::new(serde_json::json!({"plan": "team"}));
        new.plan_deleting = true;
        let decision = new.decide_at(NOW);
        assert_eq!(decision.phase, Pending);
        assert_eq!(decision.blocked, Some(Blocked::PlanUnavailable));

        let mut existing = World::new(serde_json::json!({"plan": "team"})).in_phase(Active);
        existing.plan_deleting = true;
        let decision = existing.decide_at(NOW);
        assert_eq!(decision.phase, Active);
        assert_eq!(decision.blocked, None);
        assert!(decision.actions.provision.is_some());
    }

    #[test]
    fn creating_the_plan_later_provisions_without_a_manual_step() {
        let mut world = World::new(serde_json::json!({"plan": "team"}));
        world.plan = None;
        let pending = world.decide_at(NOW);
        world.status().phase = Some(pending.phase);
        world.plan = Some(plan(0, 7));
        assert_eq!(path(&world.decide_at(NOW)), [Provisioning, Active]);
    }

    #[test]
    fn namespace_conflicts_hold_a_new_subscription_in_provisioning() {
        let mut world =
            World::new(serde_json::json!({"plan": "team", "namespaces": ["free", "taken"]}));
        world.namespaces.push(namespace("taken", Some("globex")));
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Provisioning]);
        assert_eq!(
            decision.actions.provision,
            Some(Provision {
                namespaces: vec!["free".into()],
                suspended: false
            }),
            "the free namespace is provisioned meanwhile, the taken one never"
        );
        assert_eq!(decision.requeue_at, None);
    }

    #[test]
    fn a_terminating_namespace_of_ours_is_waited_for() {
        let mut world = World::new(serde_json::json!({"plan": "team"}));
        let mut ns = created("acme");
        ns.metadata.deletion_timestamp = Some(Time(at(NOW)));
        world.namespaces.push(ns);
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Provisioning);
        assert_eq!(
            decision.actions.provision.unwrap().namespaces,
            Vec::<String>::new()
        );
    }

    #[test]
    fn conflicts_on_a_live_subscription_do_not_change_its_phase() {
        let mut world =
            World::new(serde_json::json!({"plan": "team", "namespaces": ["acme", "taken"]}))
                .in_phase(Active);
        world.namespaces.push(namespace("taken", None));
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Active);
        assert_eq!(decision.namespaces, ["acme"]);
    }

    #[test]
    fn an_invalid_spec_holds_everything_but_cancellation() {
        let world = World::new(serde_json::json!({"plan": "team", "namespaces": ["a", "a"]}));
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Pending);
        assert!(
            matches!(decision.blocked, Some(Blocked::InvalidSpec(ref errors)) if errors[0].field == "spec.namespaces[1]")
        );

        let live = World::new(serde_json::json!({"plan": "team", "namespaces": ["Bad!"], "payment": past_due("2025-01-01T00:00:00Z")}))
            .in_phase(Active);
        let decision = live.decide_at(NOW);
        assert_eq!(decision.phase, Active, "no PastDue from an invalid spec");
        assert_eq!(decision.actions.provision, None);
        assert_eq!(decision.actions.workloads, WorkloadAction::Leave);
        assert!(
            decision.actions.retire.is_empty(),
            "owned namespaces are not orphans of an unreadable list"
        );
        assert_eq!(
            decision.namespaces,
            ["acme"],
            "the status keeps what it had"
        );
        assert_eq!(decision.applied_plan.as_deref(), Some("team"));

        let cancelled = World::new(
            serde_json::json!({"plan": "team", "namespaces": ["Bad!"], "state": "Cancelled"}),
        )
        .in_phase(Active);
        assert_eq!(path(&cancelled.decide_at(NOW)), [Cancelling, Cancelled]);
    }

    #[test]
    fn a_missing_plan_holds_a_live_subscription() {
        let mut world = World::new(
            serde_json::json!({"plan": "gone", "payment": past_due("2025-01-01T00:00:00Z")}),
        )
        .in_phase(PastDue);
        world.plan = None;
        let decision = world.decide_at(NOW);
        assert_eq!(
            decision.phase, PastDue,
            "the grace period comes from the plan"
        );
        assert_eq!(decision.blocked, Some(Blocked::PlanUnavailable));
        assert_eq!(
            decision.actions.provision, None,
            "children stay as they are"
        );
        assert_eq!(
            decision.applied_plan.as_deref(),
            Some("team"),
            "the old plan stays applied"
        );
        assert_eq!(decision.requeue_at, None);
    }

    // ---- trial ----

    #[test]
    fn the_trial_ends_active_when_payment_is_current() {
        let world = World::new(
            serde_json::json!({"plan": "team", "trial": true, "payment": {"state": "Current"}}),
        )
        .in_phase(Trialing)
        .trial_ending("2025-03-15T12:00:00Z");
        let before = world.decide_at("2025-03-15T11:59:59Z");
        assert_eq!(before.phase, Trialing);
        assert_eq!(before.requeue_at, Some(at("2025-03-15T12:00:00Z")));
        let after = world.decide_at("2025-03-15T12:00:00Z");
        assert_eq!(path(&after), [Active]);
        assert_eq!(
            after.trial_ends_at,
            Some(at("2025-03-15T12:00:00Z")),
            "kept after the trial"
        );
        assert_eq!(after.requeue_at, None);
    }

    #[test]
    fn the_trial_ends_past_due_when_payment_is_overdue_and_grace_counts_from_its_end() {
        let world = World::new(serde_json::json!({"plan": "team", "trial": true, "payment": past_due("2025-03-10T00:00:00Z")}))
            .in_phase(Trialing)
            .trial_ending("2025-03-15T12:00:00Z");
        let during = world.decide_at("2025-03-12T00:00:00Z");
        assert_eq!(during.phase, Trialing, "nothing is due during a trial");
        assert_eq!(during.past_due_since, None);
        let after = world.decide_at("2025-03-16T00:00:00Z");
        assert_eq!(path(&after), [PastDue]);
        assert_eq!(after.past_due_since, Some(at("2025-03-15T12:00:00Z")));
        assert_eq!(after.suspends_at, Some(at("2025-03-22T12:00:00Z")));
        assert_eq!(after.requeue_at, after.suspends_at);
    }

    #[test]
    fn a_trial_long_over_with_payment_long_overdue_goes_straight_through() {
        let world = World::new(serde_json::json!({"plan": "team", "trial": true, "payment": past_due("2025-01-01T00:00:00Z")}))
            .in_phase(Trialing)
            .trial_ending("2025-01-15T00:00:00Z");
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [PastDue, Suspended]);
        assert_eq!(
            decision.suspension,
            Some(SuspensionCause {
                requested: false,
                overdue: Some(Overdue {
                    since: at("2025-01-15T00:00:00Z"),
                    grace_ended_at: at("2025-01-22T00:00:00Z"),
                })
            })
        );
    }

    #[test]
    fn trial_changes_after_the_start_are_ignored() {
        // The plan's trial got longer and spec.trial was switched off: the recorded end stands.
        let mut world = World::new(serde_json::json!({"plan": "team", "trial": false}))
            .in_phase(Trialing)
            .trial_ending("2025-03-05T00:00:00Z");
        world.plan = Some(plan(30, 7));
        assert_eq!(world.decide_at(NOW).phase, Trialing);
        assert_eq!(world.decide_at("2025-03-05T00:00:00Z").phase, Active);
    }

    #[test]
    fn a_lost_trial_end_is_recomputed_from_now() {
        let world =
            World::new(serde_json::json!({"plan": "team", "trial": true})).in_phase(Trialing);
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Trialing);
        assert_eq!(decision.trial_ends_at, Some(at("2025-03-15T12:00:00Z")));
    }

    // ---- payment ----

    #[test]
    fn past_due_then_suspended_after_the_grace_period() {
        let world = World::new(
            serde_json::json!({"plan": "team", "payment": past_due("2025-03-01T00:00:00Z")}),
        )
        .in_phase(Active);
        let first = world.decide_at("2025-03-01T06:00:00Z");
        assert_eq!(path(&first), [PastDue]);
        assert_eq!(first.past_due_since, Some(at("2025-03-01T00:00:00Z")));
        assert_eq!(first.requeue_at, Some(at("2025-03-08T00:00:00Z")));
        assert_eq!(
            first.actions.workloads,
            WorkloadAction::Restore {
                namespaces: vec!["acme".into()]
            }
        );

        let mut world = world;
        world.status().phase = Some(PastDue);
        assert_eq!(world.decide_at("2025-03-07T23:59:59Z").phase, PastDue);
        let suspended = world.decide_at("2025-03-08T00:00:00Z");
        assert_eq!(path(&suspended), [Suspended]);
        assert_eq!(
            suspended.actions.provision,
            Some(Provision {
                namespaces: vec!["acme".into()],
                suspended: true
            })
        );
        assert_eq!(
            suspended.actions.workloads,
            WorkloadAction::ScaleToZero {
                namespaces: vec!["acme".into()]
            }
        );
        assert_eq!(suspended.past_due_since, Some(at("2025-03-01T00:00:00Z")));
        assert_eq!(suspended.requeue_at, None);
    }

    #[test]
    fn a_zero_day_grace_period_suspends_at_once() {
        let mut world = World::new(
            serde_json::json!({"plan": "team", "payment": past_due("2025-03-01T00:00:00Z")}),
        )
        .in_phase(Active);
        world.plan = Some(plan(0, 0));
        assert_eq!(path(&world.decide_at(NOW)), [PastDue, Suspended]);
    }

    #[test]
    fn payment_current_reactivates_from_past_due_and_suspended() {
        for phase in [PastDue, Suspended] {
            let world =
                World::new(serde_json::json!({"plan": "team", "payment": {"state": "Current"}}))
                    .in_phase(phase);
            let decision = world.decide_at(NOW);
            assert_eq!(path(&decision), [Active], "from {phase:?}");
            assert_eq!(decision.past_due_since, None);
            assert_eq!(
                decision.actions.workloads,
                WorkloadAction::Restore {
                    namespaces: vec!["acme".into()]
                }
            );
            assert!(!decision.actions.provision.unwrap().suspended);
        }
    }

    #[test]
    fn a_future_since_is_taken_as_written() {
        let world = World::new(
            serde_json::json!({"plan": "team", "payment": past_due("2025-03-03T00:00:00Z")}),
        )
        .in_phase(Active);
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, PastDue);
        assert_eq!(
            decision.past_due_since, None,
            "not past due yet by the clock"
        );
        assert_eq!(decision.requeue_at, Some(at("2025-03-10T00:00:00Z")));
    }

    // ---- requested suspension ----

    #[test]
    fn state_suspended_suspends_and_state_active_resumes() {
        let world =
            World::new(serde_json::json!({"plan": "team", "state": "Suspended"})).in_phase(Active);
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Suspended]);
        assert_eq!(
            decision.suspension,
            Some(SuspensionCause {
                requested: true,
                overdue: None
            })
        );

        let resumed =
            World::new(serde_json::json!({"plan": "team", "state": "Active"})).in_phase(Suspended);
        assert_eq!(path(&resumed.decide_at(NOW)), [Active]);
    }

    #[test]
    fn a_subscription_created_suspended_is_provisioned_then_suspended() {
        let world = World::new(serde_json::json!({"plan": "team", "state": "Suspended"}));
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Provisioning, Active, Suspended]);
        assert!(decision.actions.provision.unwrap().suspended);
    }

    #[test]
    fn resuming_goes_back_to_where_the_subscription_would_be() {
        // Within the trial: back to Trialing, same end.
        let trial = World::new(serde_json::json!({"plan": "team", "trial": true}))
            .in_phase(Suspended)
            .trial_ending("2025-03-10T00:00:00Z");
        let decision = trial.decide_at(NOW);
        assert_eq!(path(&decision), [Trialing]);
        assert_eq!(decision.requeue_at, Some(at("2025-03-10T00:00:00Z")));

        // Payment overdue but within grace: PastDue, with the suspension still scheduled.
        let owing = World::new(
            serde_json::json!({"plan": "team", "payment": past_due("2025-02-28T00:00:00Z")}),
        )
        .in_phase(Suspended);
        let decision = owing.decide_at(NOW);
        assert_eq!(path(&decision), [PastDue]);
        assert_eq!(decision.requeue_at, Some(at("2025-03-07T00:00:00Z")));
    }

    #[test]
    fn resuming_needs_the_payment_cause_gone_too() {
        let world = World::new(serde_json::json!({"plan": "team", "state": "Active", "payment": past_due("2025-01-01T00:00:00Z")}))
            .in_phase(Suspended);
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Suspended);
        assert!(decision.transitions.is_empty());
        assert_eq!(
            decision.suspension.unwrap().overdue.unwrap().grace_ended_at,
            at("2025-01-08T00:00:00Z")
        );
    }

    #[test]
    fn requested_and_overdue_are_both_reported() {
        let world = World::new(serde_json::json!({"plan": "team", "state": "Suspended", "payment": past_due("2025-01-01T00:00:00Z")}))
            .in_phase(Suspended);
        let cause = world.decide_at(NOW).suspension.unwrap();
        assert!(cause.requested);
        assert!(cause.overdue.is_some());
    }

    #[test]
    fn suspension_holds_workloads_even_while_the_plan_is_missing() {
        let mut world = World::new(serde_json::json!({"plan": "team", "state": "Suspended"}))
            .in_phase(Suspended);
        world.plan = None;
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Suspended);
        assert_eq!(decision.actions.provision, None);
        assert_eq!(
            decision.actions.workloads,
            WorkloadAction::ScaleToZero {
                namespaces: vec!["acme".into()]
            }
        );
    }

    // ---- cancellation ----

    #[test]
    fn cancel_with_delete_deletes_and_waits_until_the_namespaces_are_gone() {
        let world = World::new(
            serde_json::json!({"plan": "team", "state": "Cancelled", "deletionPolicy": "Delete"}),
        )
        .in_phase(Active);
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Cancelling]);
        assert_eq!(decision.actions.retire.delete, ["acme"]);
        assert_eq!(decision.actions.provision, None);
        assert_eq!(decision.actions.workloads, WorkloadAction::Leave);
        assert_eq!(decision.namespaces, ["acme"]);
        assert!(!decision.cleanup_complete());

        let mut gone = world;
        gone.status().phase = Some(Cancelling);
        gone.namespaces.clear();
        let decision = gone.decide_at(NOW);
        assert_eq!(path(&decision), [Cancelled]);
        assert!(decision.cleanup_complete());
        assert!(decision.namespaces.is_empty());
    }

    #[test]
    fn cancel_with_retain_releases_and_is_done() {
        let world = World::new(
            serde_json::json!({"plan": "team", "state": "Cancelled", "deletionPolicy": "Retain"}),
        )
        .in_phase(Suspended);
        let decision = world.decide_at(NOW);
        assert_eq!(path(&decision), [Cancelling, Cancelled]);
        assert_eq!(decision.actions.retire.release, ["acme"]);
        assert!(decision.actions.retire.delete.is_empty());
        assert!(decision.cleanup_complete());
    }

    #[test]
    fn deletion_cancels_from_every_live_phase() {
        for phase in [Pending, Provisioning, Trialing, Active, PastDue, Suspended] {
            let world = World::new(serde_json::json!({"plan": "team", "deletionPolicy": "Delete"}))
                .in_phase(phase)
                .deleting();
            let decision = world.decide_at(NOW);
            assert_eq!(
                decision.transitions[0],
                Transition {
                    from: phase,
                    to: Cancelling
                },
                "{phase:?}"
            );
            let expected_done = phase == Pending; // nothing was created
            assert_eq!(decision.cleanup_complete(), expected_done, "{phase:?}");
        }
    }

    #[test]
    fn deletion_cancels_even_without_a_plan() {
        let mut world = World::new(serde_json::json!({"plan": "gone"}))
            .in_phase(Active)
            .deleting();
        world.plan = None;
        let decision = world.decide_at(NOW);
        assert_eq!(
            path(&decision),
            [Cancelling, Cancelled],
            "Retain by default"
        );
        assert_eq!(decision.blocked, None);
    }

    #[test]
    fn deleting_a_cancelled_subscription_finishes_at_once() {
        let mut world =
            World::new(serde_json::json!({"plan": "team", "state": "Cancelled"})).deleting();
        world.status().phase = Some(Cancelled);
        let decision = world.decide_at(NOW);
        assert!(decision.transitions.is_empty());
        assert!(decision.cleanup_complete());
    }

    #[test]
    fn only_owned_namespaces_are_ever_deleted() {
        let mut world = World::new(serde_json::json!({"plan": "team", "state": "Cancelled", "deletionPolicy": "Delete", "namespaces": ["acme", "shared"]}))
            .in_phase(Active);
        world.namespaces.push(namespace("shared", Some("globex")));
        let decision = world.decide_at(NOW);
        assert_eq!(decision.actions.retire.delete, ["acme"]);
    }

    #[test]
    fn a_cancelled_subscription_cannot_be_reactivated() {
        for phase in [Cancelling, Cancelled] {
            let mut world = World::new(
                serde_json::json!({"plan": "team", "state": "Active", "deletionPolicy": "Delete"}),
            );
            world.status().phase = Some(phase);
            world.namespaces.push(created("acme"));
            let decision = world.decide_at(NOW);
            assert_eq!(decision.phase, phase);
            assert!(decision.transitions.is_empty());
            assert_eq!(decision.blocked, Some(Blocked::CannotReactivate));
            assert_eq!(decision.actions.retire.delete, ["acme"], "cleanup goes on");
            assert_eq!(decision.actions.provision, None);
        }
    }

    #[test]
    fn namespaces_dropped_from_the_spec_are_let_go_of() {
        let mut world = World::new(
            serde_json::json!({"plan": "team", "namespaces": ["acme"], "deletionPolicy": "Delete"}),
        )
        .in_phase(Active);
        world.namespaces.push(created("old"));
        let decision = world.decide_at(NOW);
        assert_eq!(decision.phase, Active);
        assert_eq!(decision.actions.retire.delete, ["old"]);
        assert_eq!(
            decision.actions.workloads,
            WorkloadAction::Restore {
                namespaces: vec!["acme".into()]
            }
        );
    }

    // ---- properties ----

    fn arbitrary_phase() -> impl Strategy<Value = Option<SubscriptionPhase>> {
        prop::option::of(prop::sample::select(SubscriptionPhase::ALL.to_vec()))
    }

    prop_compose! {
        fn arbitrary_world()(
            phase in arbitrary_phase(),
            state in prop::sample::select(vec!["Active", "Suspended", "Cancelled"]),
            payment in prop::option::of(prop::option::of(-40i64..40)),
            trial in any::<bool>(),
            policy in prop::sample::select(vec!["Delete", "Retain"]),
            trial_end in prop::option::of(-40i64..40),
            plan_kind in 0u8..4,
            trial_days in 0i32..30,
            grace_days in 0i32..10,
            deleting in any::<bool>(),
            invalid_spec in any::<bool>(),
            existing in prop::collection::vec((0usize..5, any::<bool>()), 0..4),
        ) -> (World, u8) {
            let base = at(NOW);
            let day = |d: i64| Time(base.saturating_add(SignedDuration::from_hours(24 * d)).unwrap());
            let payment = match payment {
                None => serde_json::Value::Null,
                Some(None) => serde_json::json!({"state": "Current"}),
                Some(Some(d)) => serde_json::json!({"state": "PastDue", "since": day(d)}),
            };
            let namespaces = if invalid_spec { vec!["INVALID"] } else { vec!["acme", "acme-dev"] };
            let mut spec = serde_json::json!({
                "plan": "team", "state": state, "trial": trial, "deletionPolicy": policy,
                "namespaces": namespaces,
            });
            if !payment.is_null() {
                spec["payment"] = payment;
            }
            let mut world = World::new(spec);
            world.status().phase = phase;
            world.status().trial_ends_at = trial_end.map(day);
            world.plan = (plan_kind != 0).then(|| plan(trial_days, grace_days));
            world.plan_deleting = plan_kind == 3;
            if deleting {
                world = world.deleting();
            }
            // Created by Flotilla, handed over, another Subscription's, labelled for us but
            // never listed (a label is a request, not proof), unmanaged.
            let names = ["acme", "acme-dev", "other", "labelled", "old"];
            let owners = [Some("acme"), Some("acme"), Some("globex"), Some("acme"), None];
            for (i, terminating) in existing {
                let mut ns = if i == 0 { created(names[i]) } else { namespace(names[i], owners[i]) };
                if terminating {
                    ns.metadata.deletion_timestamp = Some(Time(base));
                }
                world.namespaces.push(ns);
            }
            (world, plan_kind)
        }
    }

    /// The recorded status after a decision whose actions succeeded.
    fn record(world: &mut World, decision: &Decision) {
        let status = world.status();
        status.phase = Some(decision.phase);
        status.trial_ends_at = decision.trial_ends_at.map(Time);
        status.past_due_since = decision.past_due_since.map(Time);
        status.plan = decision.applied_plan.clone();
        status.namespaces = decision.namespaces.clone();
    }

    proptest! {
        #[test]
        fn decisions_are_legal_settled_and_sane((mut world, _plan_kind) in arbitrary_world(), later in 0i64..100) {
            let decision = world.try_decide_at(NOW);
            prop_assert!(decision.is_ok(), "{:?}", decision);
            let decision = decision.unwrap();
            let start = world.sub.status.as_ref().and_then(|s| s.phase).unwrap_or(Pending);

            // The transitions chain from the recorded phase to the decided one, legally.
            let mut phase = start;
            for transition in &decision.transitions {
                prop_assert_eq!(transition.from, phase);
                prop_assert!(phase.allows(transition.to));
                phase = transition.to;
            }
            prop_assert_eq!(phase, decision.phase);

            // Cancellation wins and never goes back.
            let cancel = world.sub.metadata.deletion_timestamp.is_some() || world.sub.spec.state == SubscriptionState::Cancelled;
            if cancel || matches!(start, Cancelling | Cancelled) {
                prop_assert!(matches!(decision.phase, Cancelling | Cancelled));
                prop_assert_eq!(&decision.actions.provision, &None);
            }
            if start == Cancelled {
                prop_assert_eq!(decision.phase, Cancelled);
            }
            // Only the Subscription's namespaces are ever deleted or released, and only the
            // one Flotilla created is ever deleted.
            for name in decision.actions.retire.delete.iter().chain(&decision.actions.retire.release) {
                prop_assert!(name == "acme" || name == "acme-dev", "{}", name);
            }
            for name in &decision.actions.retire.delete {
                prop_assert_eq!(name.as_str(), "acme");
            }
            // Workloads are scaled only in the Subscription's own namespaces.
            if let WorkloadAction::ScaleToZero { namespaces } | WorkloadAction::Restore { namespaces } = &decision.actions.workloads {
                for name in namespaces {
                    prop_assert!(name == "acme" || name == "acme-dev", "{}", name);
                }
            }
            // Provisioning needs a valid spec and a usable plan, and never touches a conflict.
            if let Some(provision) = &decision.actions.provision {
                prop_assert!(world.plan.is_some());
                prop_assert!(!provision.namespaces.iter().any(|n| n == "other"));
            }
            // Time-based wake-ups are in the future.
            if let Some(requeue) = decision.requeue_at {
                prop_assert!(requeue > at(NOW));
            }

            // Deciding again in the world the actions produced moves no further.
            record(&mut world, &decision);
            let again = world.decide_at(NOW);
            prop_assert!(again.transitions.is_empty(), "{:?} then {:?}", decision.transitions, again.transitions);
            prop_assert_eq!(again.requeue_at, decision.requeue_at);

            // Later on, still only legal moves.
            let later = at(NOW).saturating_add(SignedDuration::from_hours(later)).unwrap();
            let observed = observe(&world.sub, match &world.plan {
                None => PlanLookup::Missing,
                Some(plan) if world.plan_deleting => PlanLookup::Deleting(plan),
                Some(plan) => PlanLookup::Valid(plan),
            }, &world.namespaces);
            prop_assert!(decide(&world.sub, &observed, later).is_ok());
        }
    }

    #[test]
    fn owned_namespace_helper_is_consistent() {
        // Guards the fixtures above: the default namespace is the one Flotilla created.
        let world = World::new(serde_json::json!({"plan": "team"})).in_phase(Active);
        let observed = observe(
            &world.sub,
            PlanLookup::Valid(world.plan.as_ref().unwrap()),
            &world.namespaces,
        );
        assert_eq!(
            observed.namespaces.owned,
            [OwnedNamespace {
                name: "acme".into(),
                terminating: false,
                origin: Origin::Created,
            }]
        );
        assert_eq!(UID, world.sub.metadata.uid.as_deref().unwrap());
    }
}
