//! `Subscription` (cluster-scoped): one customer on one Plan. The operator provisions its
//! tenant namespaces (quota, limits, owners' RoleBinding, network isolation, entitlements
//! ConfigMap) and carries it through trial, payment trouble, suspension and cancellation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN, SpecError, TIME_ZONE_PATTERN, into_result,
    is_dns1123_label, validate_time_zone,
};
use crate::condition::Condition;
use crate::phase::Phase;

/// Most namespaces one Subscription may have.
pub const MAX_NAMESPACES: u32 = 32;
/// Most owners (users and groups) of one Subscription.
pub const MAX_OWNERS: u32 = 64;

/// A customer's subscription to a Plan, and the tenant namespaces that come with it.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Subscription",
    plural = "subscriptions",
    singular = "subscription",
    shortname = "fsub",
    category = "flotilla",
    status = "SubscriptionStatus",
    derive = "PartialEq",
    doc = "A Subscription is one customer on one Plan. Flotilla provisions its tenant namespaces \
           (ResourceQuota, LimitRange, owners' RoleBinding, NetworkPolicy, entitlements ConfigMap) \
           and carries it through trial, payment trouble, suspension and cancellation.",
    validation = Rule::new("(has(self.spec.namespaces) && size(self.spec.namespaces) > 0) || self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("without spec.namespaces the tenant namespace is named after the Subscription, so metadata.name must be a valid namespace name (lower-case letters, digits and '-', at most 63 characters); otherwise list spec.namespaces"),
    validation = Rule::new("self.metadata.name.size() <= 63 || (has(self.spec.namespaces) && size(self.spec.namespaces) > 0)")
        .message("metadata.name is longer than 63 characters, so it cannot be the namespace name: list spec.namespaces"),
    printcolumn(name = "Plan", type_ = "string", json_path = ".spec.plan", description = "Plan requested"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Lifecycle phase"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".status.namespaces", description = "Namespaces provisioned", priority = 1),
    printcolumn(name = "Trial Ends", type_ = "date", json_path = ".status.trialEndsAt", priority = 1),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("oldSelf.state != 'Cancelled' || self.state == 'Cancelled'").message("a Cancelled subscription cannot be reactivated; create a new Subscription"))]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// Name of the Plan this subscription is on. Changing it re-applies quotas and limits;
    /// usage above the new plan is reported by the OverQuota condition, nothing is deleted.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub plan: String,

    /// Users and groups bound to the `admin` ClusterRole in every tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_OWNERS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind", "name"])
    )]
    pub owners: Vec<Owner>,

    /// Who to contact about this subscription; Campaigns address their messages with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,

    /// Names of the tenant namespaces (DNS labels, unique). Empty means one namespace named
    /// after the Subscription. A namespace that exists and belongs to something else is never
    /// taken over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_NAMESPACES),
        inner(length(min = 1, max = 63), pattern(DNS1123_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub namespaces: Vec<String>,

    /// The state the customer or billing system asks for: Active, Suspended (stop new work,
    /// keep data) or Cancelled (final; namespaces are deleted or kept per `deletionPolicy`).
    #[serde(default)]
    pub state: SubscriptionState,

    /// Payment standing, set by the billing integration. PastDue for longer than the plan's
    /// `gracePeriodDays` suspends the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,

    /// Whether the subscription starts with the plan's free trial (`trialDays`).
    #[serde(default)]
    pub trial: bool,

    /// What happens to the tenant namespaces on cancellation: Delete them (and wait until they
    /// are gone), or Retain them with Flotilla's labels and ownerReferences removed.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A user or group that administers the tenant namespaces.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// User or Group, as in a RoleBinding subject.
    pub kind: OwnerKind,
    /// User or group name as the cluster's authenticator reports it.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
}

/// The kind of an owner.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[schemars(transform = crate::common::drop_description)]
pub enum OwnerKind {
    /// A user.
    User,
    /// A group of users.
    Group,
}

impl OwnerKind {
    /// The RoleBinding subject kind.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::User => "User",
            OwnerKind::Group => "Group",
        }
    }
}

/// How to reach the customer.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// Name to address the customer by, e.g. "Ada Lovelace".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub name: Option<String>,
    /// E-mail address messages are sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254), pattern("^[^@\\s]+@[^@\\s]+$"))]
    pub email: Option<String>,
    /// The customer's IANA time zone, e.g. "Europe/Berlin"; Campaigns honour quiet hours and
    /// local send times in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(TIME_ZONE_PATTERN))]
    pub time_zone: Option<String>,
    /// The customer asked for no Campaign messages (set by hand or by the one-click unsubscribe
    /// link). Campaigns send them nothing and count them as opted out, also when this is set
    /// while a campaign is running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opted_out: bool,
}

/// State requested for a subscription.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum SubscriptionState {
    /// In use.
    #[default]
    Active,
    /// Stop new work and keep data: pods quota 0, workloads scaled to zero.
    Suspended,
    /// End the subscription for good.
    Cancelled,
}

/// Payment standing reported by the billing integration.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.state == 'PastDue' ? has(self.since) : !has(self.since)").message("payment.since is required when payment.state is PastDue, and only then"))]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// Current or PastDue.
    pub state: PaymentState,
    /// When the payment became past due (required with PastDue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Payment standing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum PaymentState {
    /// Paid up.
    #[default]
    Current,
    /// A payment is overdue.
    PastDue,
}

/// What happens to tenant namespaces on cancellation.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum DeletionPolicy {
    /// Delete the namespaces and everything in them.
    Delete,
    /// Keep the namespaces; only Flotilla's labels and ownerReferences are removed.
    #[default]
    Retain,
}

/// Observed state of a Subscription, written by the Subscription controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    /// Lifecycle phase: Pending (plan missing or invalid), Provisioning, Trialing, Active,
    /// PastDue, Suspended, Cancelling, Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SubscriptionPhase>,

    /// Conditions: Ready, PlanFound, Provisioned, QuotaApplied, OverQuota.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// The Plan whose entitlements are currently applied (differs from `spec.plan` while a
    /// plan change is being applied or the new plan is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub plan: Option<String>,

    /// When the trial ends (only while Trialing or after a trial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<Time>,

    /// Since when the subscription has been PastDue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub past_due_since: Option<Time>,

    /// Namespaces provisioned and kept in shape for this subscription.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_NAMESPACES), inner(length(max = 63)), extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<String>,

    /// Resource usage summed over the ResourceQuota `status.used` of every tenant namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::quantity::observed_resource_list_schema")]
    pub usage: BTreeMap<String, Quantity>,

    /// Entitlements summed over the ResourceQuota `status.hard` of every tenant namespace, to
    /// compare `usage` against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::quantity::observed_resource_list_schema")]
    pub entitlements: BTreeMap<String, Quantity>,
}

/// Lifecycle phase of a Subscription.
#[derive(
    Serialize,
    Deserialize,
    JsonSchema,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[schemars(transform = crate::common::drop_description)]
pub enum SubscriptionPhase {
    /// Waiting for a valid Plan (PlanFound=False) or for the first reconcile.
    #[default]
    Pending,
    /// Creating the tenant namespaces and their children.
    Provisioning,
    /// Provisioned, in the free trial.
    Trialing,
    /// Provisioned and paid up.
    Active,
    /// A payment is overdue; suspended after the plan's grace period.
    PastDue,
    /// New work stopped (pods quota 0, workloads scaled to zero); data kept.
    Suspended,
    /// Cancellation in progress (namespaces being deleted or released).
    Cancelling,
    /// Cancelled; nothing left to do.
    Cancelled,
}

impl SubscriptionPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [SubscriptionPhase; 8] = [
        SubscriptionPhase::Pending,
        SubscriptionPhase::Provisioning,
        SubscriptionPhase::Trialing,
        SubscriptionPhase::Active,
        SubscriptionPhase::PastDue,
        SubscriptionPhase::Suspended,
        SubscriptionPhase::Cancelling,
        SubscriptionPhase::Cancelled,
    ];

    /// The wire form (as in `status.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionPhase::Pending => "Pending",
            SubscriptionPhase::Provisioning => "Provisioning",
            SubscriptionPhase::Trialing => "Trialing",
            SubscriptionPhase::Active => "Active",
            SubscriptionPhase::PastDue => "PastDue",
            SubscriptionPhase::Suspended => "Suspended",
            SubscriptionPhase::Cancelling => "Cancelling",
            SubscriptionPhase::Cancelled => "Cancelled",
        }
    }
}

impl Subscription {
    /// The tenant namespaces this subscription asks for: `spec.namespaces`, or one namespace
    /// named after the subscription when that list is empty.
    pub fn desired_namespaces(&self) -> Vec<String> {
        if self.spec.namespaces.is_empty() {
            self.metadata.name.iter().cloned().collect()
        } else {
            self.spec.namespaces.clone()
        }
    }

    /// Checks the spec like [`SubscriptionSpec::validate`], plus that the default namespace
    /// (the subscription's own name) is a valid namespace name when `spec.namespaces` is empty.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = self.spec.validate().err().unwrap_or_default();
        if self.spec.namespaces.is_empty() {
            let name = self.metadata.name.as_deref().unwrap_or_default();
            if !is_dns1123_label(name) {
                errors.push(SpecError::new(
                    "metadata.name",
                    format!("{name:?} is not a valid namespace name; list spec.namespaces"),
                ));
            }
        }
        into_result(errors)
    }
}

impl SubscriptionSpec {
    /// Checks what the schema cannot (or what an older apiserver might not have enforced):
    /// namespace names are DNS labels and listed once, owners are listed once, the contact's
    /// time zone exists, and `payment.since` accompanies PastDue and only PastDue.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        if self.plan.is_empty() {
            errors.push(SpecError::new("spec.plan", "must name a Plan"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, namespace) in self.namespaces.iter().enumerate() {
            if !is_dns1123_label(namespace) {
                errors.push(SpecError::new(
                    format!("spec.namespaces[{i}]"),
                    format!("{namespace:?} is not a valid namespace name (lower-case letters, digits and '-', at most 63 characters)"),
                ));
            }
            if !seen.insert(namespace) {
                errors.push(SpecError::new(
                    format!("spec.namespaces[{i}]"),
                    format!("{namespace:?} is listed more than once"),
                ));
            }
        }
        let mut owners = std::collections::BTreeSet::new();
        for (i, owner) in self.owners.iter().enumerate() {
            if owner.name.is_empty() {
                errors.push(SpecError::new(
                    format!("spec.owners[{i}].name"),
                    "must not be empty",
                ));
            }
            if !owners.insert((owner.kind, &owner.name)) {
                errors.push(SpecError::new(
                    format!("spec.owners[{i}]"),
                    format!(
                        "{} {:?} is listed more than once",
                        owner.kind.as_str(),
                        owner.name
                    ),
                ));
            }
        }
        if let Some(zone) = self.contact.as_ref().and_then(|c| c.time_zone.as_deref())
            && let Err(error) = validate_time_zone("spec.contact.timeZone", zone)
        {
            errors.push(error);
        }
        if let Some(payment) = &self.payment {
            match (payment.state, &payment.since) {
                (PaymentState::PastDue, None) => errors.push(SpecError::new(
                    "spec.payment.since",
                    "required when payment.state is PastDue",
                )),
                (PaymentState::Current, Some(_)) => errors.push(SpecError::new(
                    "spec.payment.since",
                    "only allowed when payment.state is PastDue",
                )),
                _ => {}
            }
        }
        into_result(errors)
    }
}

/// The legal moves of the lifecycle (see the CRD reference).
impl Phase for SubscriptionPhase {
    const ALL: &'static [Self] = &SubscriptionPhase::ALL;
    const INITIAL: Self = SubscriptionPhase::Pending;

    fn as_str(self) -> &'static str {
        SubscriptionPhase::as_str(self)
    }

    fn allows(self, next: Self) -> bool {
        use SubscriptionPhase::{
            Active, Cancelled, Cancelling, PastDue, Pending, Provisioning, Suspended, Trialing,
        };
        matches!(
            (self, next),
            (Pending, Provisioning)
                | (Provisioning, Trialing | Active)
                | (Trialing, Active | PastDue | Suspended)
                | (Active, PastDue | Suspended)
                | (PastDue, Active | Suspended)
                | (Suspended, Active | PastDue | Trialing)
                | (
                    Pending | Provisioning | Trialing | Active | PastDue | Suspended,
                    Cancelling
                )
                | (Cancelling, Cancelled)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SubscriptionSpec {
        serde_json::from_value(serde_json::json!({
            "plan": "team",
            "owners": [{"kind": "User", "name": "ada@example.com"}, {"kind": "Group", "name": "acme-admins"}],
            "contact": {"name": "Ada", "email": "ada@example.com", "timeZone": "Europe/London"},
            "namespaces": ["acme-prod", "acme-dev"],
        }))
        .unwrap()
    }

    #[test]
    fn defaults() {
        let spec: SubscriptionSpec =
            serde_json::from_value(serde_json::json!({"plan": "starter"})).unwrap();
        assert_eq!(spec.state, SubscriptionState::Active);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert!(!spec.trial);
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn a_sensible_subscription_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn duplicate_and_invalid_namespaces_are_refused() {
        let mut spec = spec();
        spec.namespaces = vec!["acme".into(), "Acme_Prod".into(), "acme".into()];
        let errors = spec.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.namespaces[1]", "spec.namespaces[2]"]);
    }

    #[test]
    fn duplicate_owners_and_unknown_time_zones_are_refused() {
        let mut spec = spec();
        spec.owners.push(Owner {
            kind: OwnerKind::User,
            name: "ada@example.com".into(),
        });
        spec.contact.as_mut().unwrap().time_zone = Some("Europe/Atlantis".into());
        let errors = spec.validate().unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn past_due_needs_since_and_current_refuses_it() {
        let mut spec = spec();
        spec.payment = Some(Payment {
            state: PaymentState::PastDue,
            since: None,
        });
        assert_eq!(spec.validate().unwrap_err()[0].field, "spec.payment.since");
        spec.payment = Some(Payment {
            state: PaymentState::Current,
            since: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
        });
        assert_eq!(spec.validate().unwrap_err()[0].field, "spec.payment.since");
    }

    #[test]
    fn default_namespace_is_the_subscription_name() {
        let mut sub = Subscription::new(
            "acme",
            serde_json::from_value(serde_json::json!({"plan": "team"})).unwrap(),
        );
        assert_eq!(sub.desired_namespaces(), ["acme"]);
        assert_eq!(sub.validate(), Ok(()));
        sub.metadata.name = Some("acme.example.com".into());
        assert_eq!(sub.validate().unwrap_err()[0].field, "metadata.name");
        sub.spec.namespaces = vec!["acme".into()];
        assert_eq!(sub.validate(), Ok(()));
        assert_eq!(sub.desired_namespaces(), ["acme"]);
    }
}
