//! `Plan` (cluster-scoped): what a customer on this plan is entitled to — quota, container
//! limits, features, trial and grace periods, network isolation, and an informational price.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SpecError, into_result};
use crate::condition::Condition;
use crate::phase::Phase;
use crate::quantity::{ParsedQuantity, validate_resource_list};

/// Default of `spec.gracePeriodDays`.
pub const DEFAULT_GRACE_PERIOD_DAYS: i32 = 7;
/// Upper bound of `spec.trialDays` and `spec.gracePeriodDays` (ten years).
pub const MAX_PERIOD_DAYS: i32 = 3650;
/// Most entries in `spec.features`.
pub const MAX_FEATURES: u32 = 64;

/// The entitlements of a plan. Subscriptions reference a Plan by name; each tenant namespace
/// gets a ResourceQuota and a LimitRange built from it.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Plan",
    plural = "plans",
    singular = "plan",
    shortname = "fplan",
    category = "flotilla",
    status = "PlanStatus",
    derive = "PartialEq",
    doc = "A Plan is a sellable set of entitlements (quota, container limits, features, trial and \
           grace periods). Subscriptions reference Plans by name; deleting a Plan waits until no \
           Subscription uses it.",
    printcolumn(
        name = "Display",
        type_ = "string",
        json_path = ".spec.displayName",
        description = "Name shown to customers"
    ),
    printcolumn(
        name = "Trial",
        type_ = "integer",
        json_path = ".spec.trialDays",
        description = "Trial length in days"
    ),
    printcolumn(
        name = "Grace",
        type_ = "integer",
        json_path = ".spec.gracePeriodDays",
        description = "Days past due before suspension",
        priority = 1
    ),
    printcolumn(
        name = "Subscriptions",
        type_ = "integer",
        json_path = ".status.subscriptions",
        description = "Subscriptions referencing this plan"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct PlanSpec {
    /// Name of the plan shown to customers and in `kubectl get plans`, e.g. "Team".
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,

    /// Hard limits for each tenant namespace, copied into a ResourceQuota named
    /// `flotilla-quota`. Omit for no quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<PlanQuota>,

    /// Defaults and maxima for each container in a tenant namespace, copied into a LimitRange
    /// named `flotilla-limits`. Omit for no LimitRange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<PlanLimitRange>,

    /// Feature flags of the plan (feature name → enabled), published to tenants in the
    /// ConfigMap `flotilla-entitlements`. Names use letters, digits, `-`, `_` and `.`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_FEATURES))]
    pub features: BTreeMap<String, bool>,

    /// Length of the free trial in days for Subscriptions that start with a trial; 0 offers
    /// no trial.
    #[serde(default)]
    #[schemars(range(min = 0, max = MAX_PERIOD_DAYS))]
    pub trial_days: i32,

    /// Days a Subscription may stay PastDue before it is suspended.
    #[serde(default = "default_grace_period_days")]
    #[schemars(range(min = 0, max = MAX_PERIOD_DAYS))]
    pub grace_period_days: i32,

    /// When true, each tenant namespace gets a NetworkPolicy that denies ingress from other
    /// namespaces.
    #[serde(default)]
    pub network_isolation: bool,

    /// List price, for display only; Flotilla does not bill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
}

fn default_grace_period_days() -> i32 {
    DEFAULT_GRACE_PERIOD_DAYS
}

/// ResourceQuota limits of a plan.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanQuota {
    /// Hard limit per resource name, exactly as in a ResourceQuota's `spec.hard`, e.g.
    /// `requests.cpu: "4"`, `limits.memory: 8Gi`, `pods: 20`, `requests.storage: 100Gi`,
    /// `count/services.loadbalancers: 1`. Quantities must not be negative.
    #[schemars(schema_with = "crate::quantity::resource_list_schema")]
    pub hard: BTreeMap<String, Quantity>,
}

/// Per-container defaults and maxima of a plan (a LimitRange item of type `Container`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanLimitRange {
    /// Limits given to containers that set none, e.g. `cpu: 500m`, `memory: 512Mi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::quantity::resource_list_schema")]
    pub default: BTreeMap<String, Quantity>,

    /// Requests given to containers that set none, e.g. `cpu: 100m`, `memory: 128Mi`. Each
    /// must not exceed the matching `default` or `max`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::quantity::resource_list_schema")]
    pub default_request: BTreeMap<String, Quantity>,

    /// Largest limit any single container may set, e.g. `cpu: "2"`, `memory: 4Gi`. Each must
    /// be at least the matching `default`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::quantity::resource_list_schema")]
    pub max: BTreeMap<String, Quantity>,
}

/// Informational list price of a plan.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Amount as a decimal string with at most 4 decimal places, e.g. "49.00".
    #[schemars(
        length(min = 1, max = 20),
        pattern("^(0|[1-9][0-9]{0,14})(\\.[0-9]{1,4})?$")
    )]
    pub amount: String,
    /// ISO 4217 currency code, e.g. "EUR".
    #[schemars(length(equal = 3), pattern("^[A-Z]{3}$"))]
    pub currency: String,
    /// Billing period the amount is charged for.
    pub interval: BillingInterval,
}

/// The period a price is charged for.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::common::drop_description)]
pub enum BillingInterval {
    /// Charged every month.
    Month,
    /// Charged every year.
    Year,
}

/// Observed state of a Plan, written by the Plan controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Where the plan is in its lifecycle: Pending (not yet validated), Ready (valid and
    /// usable), Invalid (see the Ready condition's message), Terminating (deleted, waiting for
    /// the Subscriptions that still use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PlanPhase>,

    /// Conditions: Ready, InUse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// How many Subscriptions reference this plan.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub subscriptions: i32,
}

/// Lifecycle phase of a Plan.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum PlanPhase {
    /// Not validated yet.
    #[default]
    Pending,
    /// Valid; Subscriptions can use it.
    Ready,
    /// The spec is invalid (e.g. an unparsable quantity); the Ready condition says why.
    Invalid,
    /// Deleted, and waiting until no Subscription references it.
    Terminating,
}

impl PlanSpec {
    /// Checks what the schema cannot: every quantity parses and is not negative, resource
    /// and feature names are well-formed, each container default request is within its
    /// default limit and the maximum, and each default limit is within the maximum.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        if self.display_name.trim().is_empty() {
            errors.push(SpecError::new("spec.displayName", "must not be empty"));
        }
        for (field, days) in [
            ("spec.trialDays", self.trial_days),
            ("spec.gracePeriodDays", self.grace_period_days),
        ] {
            if !(0..=MAX_PERIOD_DAYS).contains(&days) {
                errors.push(SpecError::new(
                    field,
                    format!("must be between 0 and {MAX_PERIOD_DAYS}, got {days}"),
                ));
            }
        }
        if let Some(quota) = &self.quota {
            validate_resource_list("spec.quota.hard", &quota.hard, &mut errors);
        }
        if let Some(limits) = &self.limit_range {
            limits.validate_into(&mut errors);
        }
        for name in self.features.keys() {
            if !is_feature_name(name) {
                errors.push(SpecError::new(
                    format!("spec.features[{name}]"),
                    "feature names are 1-253 characters of letters, digits, '-', '_' and '.'",
                ));
            }
        }
        if self.features.len() > MAX_FEATURES as usize {
            errors.push(SpecError::new(
                "spec.features",
                format!("at most {MAX_FEATURES} features"),
            ));
        }
        into_result(errors)
    }
}

impl PlanLimitRange {
    fn validate_into(&self, errors: &mut Vec<SpecError>) {
        let default = validate_resource_list("spec.limitRange.default", &self.default, errors);
        let request = validate_resource_list(
            "spec.limitRange.defaultRequest",
            &self.default_request,
            errors,
        );
        let max = validate_resource_list("spec.limitRange.max", &self.max, errors);

        let mut exceeds = |field: &str,
                           name: &str,
                           value: &ParsedQuantity,
                           bound_field: &str,
                           bound: Option<&ParsedQuantity>| {
            if let Some(bound) = bound
                && value > bound
            {
                errors.push(SpecError::new(
                    format!("{field}[{name}]"),
                    format!("{value} exceeds {bound_field}[{name}] {bound}"),
                ));
            }
        };
        for (name, value) in &request {
            exceeds(
                "spec.limitRange.defaultRequest",
                name,
                value,
                "spec.limitRange.default",
                default.get(name),
            );
            exceeds(
                "spec.limitRange.defaultRequest",
                name,
                value,
                "spec.limitRange.max",
                max.get(name),
            );
        }
        for (name, value) in &default {
            exceeds(
                "spec.limitRange.default",
                name,
                value,
                "spec.limitRange.max",
                max.get(name),
            );
        }
    }
}

/// ConfigMap-key-safe feature names, so features can be published to tenants one key each.
fn is_feature_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The legal moves of the lifecycle (see the CRD reference).
impl Phase for PlanPhase {
    const ALL: &'static [Self] = &[
        PlanPhase::Pending,
        PlanPhase::Ready,
        PlanPhase::Invalid,
        PlanPhase::Terminating,
    ];
    const INITIAL: Self = PlanPhase::Pending;

    fn as_str(self) -> &'static str {
        match self {
            PlanPhase::Pending => "Pending",
            PlanPhase::Ready => "Ready",
            PlanPhase::Invalid => "Invalid",
            PlanPhase::Terminating => "Terminating",
        }
    }

    fn allows(self, next: Self) -> bool {
        use PlanPhase::{Invalid, Pending, Ready, Terminating};
        matches!(
            (self, next),
            (Pending, Ready | Invalid | Terminating)
                | (Ready, Invalid | Terminating)
                | (Invalid, Ready | Terminating)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    fn team() -> PlanSpec {
        PlanSpec {
            display_name: "Team".into(),
            quota: Some(PlanQuota {
                hard: BTreeMap::from([
                    ("requests.cpu".into(), q("4")),
                    ("limits.memory".into(), q("8Gi")),
                    ("pods".into(), q("20")),
                ]),
            }),
            limit_range: Some(PlanLimitRange {
                default: BTreeMap::from([("cpu".into(), q("500m")), ("memory".into(), q("512Mi"))]),
                default_request: BTreeMap::from([("cpu".into(), q("100m"))]),
                max: BTreeMap::from([("cpu".into(), q("2")), ("memory".into(), q("4Gi"))]),
            }),
            features: BTreeMap::from([("sso".into(), true)]),
            trial_days: 14,
            grace_period_days: 7,
            network_isolation: true,
            price: Some(Price {
                amount: "49.00".into(),
                currency: "EUR".into(),
                interval: BillingInterval::Month,
            }),
        }
    }

    #[test]
    fn a_sensible_plan_is_valid() {
        assert_eq!(team().validate(), Ok(()));
    }

    #[test]
    fn negative_and_unparsable_quantities_are_reported_with_their_path() {
        let mut plan = team();
        let hard = &mut plan.quota.as_mut().unwrap().hard;
        hard.insert("pods".into(), q("-1"));
        hard.insert("requests.cpu".into(), q("four"));
        let errors = plan.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.quota.hard[pods]", "spec.quota.hard[requests.cpu]"]
        );
    }

    #[test]
    fn negative_periods_are_refused() {
        let mut plan = team();
        plan.trial_days = -1;
        plan.grace_period_days = -3;
        let errors = plan.validate().unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "spec.trialDays");
        assert_eq!(errors[1].field, "spec.gracePeriodDays");
    }

    #[test]
    fn default_request_must_fit_under_default_and_max() {
        let mut plan = team();
        let limits = plan.limit_range.as_mut().unwrap();
        limits.default_request.insert("cpu".into(), q("3"));
        let errors = plan.validate().unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .message
                .contains("exceeds spec.limitRange.default[cpu]")
        );
        assert!(
            errors[1]
                .message
                .contains("exceeds spec.limitRange.max[cpu]")
        );
    }

    #[test]
    fn bad_resource_and_feature_names_are_refused() {
        let mut plan = team();
        plan.quota
            .as_mut()
            .unwrap()
            .hard
            .insert("requests cpu".into(), q("1"));
        plan.features.insert("single sign-on".into(), true);
        let errors = plan.validate().unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn defaults_apply_when_fields_are_omitted() {
        let plan: PlanSpec =
            serde_json::from_value(serde_json::json!({"displayName": "Starter"})).unwrap();
        assert_eq!(plan.trial_days, 0);
        assert_eq!(plan.grace_period_days, DEFAULT_GRACE_PERIOD_DAYS);
        assert!(!plan.network_isolation);
        assert_eq!(plan.validate(), Ok(()));
    }

    #[test]
    fn integer_quantities_deserialize() {
        let quota: PlanQuota =
            serde_json::from_value(serde_json::json!({"hard": {"pods": 10}})).unwrap();
        assert_eq!(quota.hard["pods"], q("10"));
    }
}
