//! Status conditions: the `metav1.Condition` shape every Flotilla kind reports, the condition
//! types and reasons the controllers use, and the schema that makes `status.conditions` a
//! list-map keyed by `type` (so server-side apply merges conditions one by one).

use schemars::{Schema, SchemaGenerator, json_schema};

/// A status condition (`metav1.Condition`).
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell (yet).
    Unknown,
}

impl ConditionStatus {
    /// The wire form: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// Parses the wire form; anything else is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "True" => Some(ConditionStatus::True),
            "False" => Some(ConditionStatus::False),
            "Unknown" => Some(ConditionStatus::Unknown),
            _ => None,
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Condition types (`status.conditions[].type`).
///
/// `Ready` is on every kind and summarises the others; the rest belong to the kinds named.
pub mod types {
    /// Every kind: the object is valid and its controller has brought the world in line with it.
    pub const READY: &str = "Ready";
    /// Channel: its circuit breaker is closed, so campaigns send through it.
    pub const CIRCUIT_CLOSED: &str = "CircuitClosed";
    /// Plan: Subscriptions still reference the Plan, so its deletion waits (the message names them).
    pub const IN_USE: &str = "InUse";
    /// Subscription: the referenced Plan exists and is valid.
    pub const PLAN_FOUND: &str = "PlanFound";
    /// Subscription: every tenant namespace and its children exist and match the plan.
    pub const PROVISIONED: &str = "Provisioned";
    /// Subscription: the plan's ResourceQuota and LimitRange are applied in every namespace.
    pub const QUOTA_APPLIED: &str = "QuotaApplied";
    /// Subscription: usage exceeds the plan's quota (after a downgrade); the message says which
    /// resources. Nothing is deleted.
    pub const OVER_QUOTA: &str = "OverQuota";
    /// Channel, Campaign, FirmwareRollout: the referenced Secret exists and has the keys needed.
    pub const SECRET_FOUND: &str = "SecretFound";
    /// Campaign: every channel it uses exists and is Ready.
    pub const CHANNELS_READY: &str = "ChannelsReady";
    /// Campaign: the message and variant templates render with every known field.
    pub const TEMPLATES_VALID: &str = "TemplatesValid";
    /// Campaign, FirmwareRollout: work is under way (messages sending, waves advancing).
    pub const PROGRESSING: &str = "Progressing";
    /// Campaign, FirmwareRollout: the failure threshold was crossed.
    pub const FAILURE_THRESHOLD_EXCEEDED: &str = "FailureThresholdExceeded";
    /// FirmwareRollout: the referenced FirmwareRelease exists and is Ready.
    pub const RELEASE_READY: &str = "ReleaseReady";
    /// FirmwareRollout: approval is required and `spec.approvedPlanHash` matches the plan.
    pub const APPROVED: &str = "Approved";
    /// FirmwareRollout: devices it selects are held by another rollout (the message names it).
    pub const DEVICES_CONTENDED: &str = "DevicesContended";
    /// FirmwareRollout: the current time is inside the maintenance window.
    pub const IN_MAINTENANCE_WINDOW: &str = "InMaintenanceWindow";
    /// Device: the device has reported to the gateway within the rollout's `offlineAfter`.
    pub const ONLINE: &str = "Online";
    /// Device: the device runs the desired firmware version.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// Every kind but Device, present only while True: the controller is still bringing the
    /// world in line with the spec (kstatus's InProgress); reason and message as `Ready`'s
    /// or the phase's.
    pub const RECONCILING: &str = "Reconciling";
    /// Every kind but Device, present only while True: the object cannot progress until a
    /// person changes something (kstatus's Failed): an invalid spec, a missing reference, a
    /// failure threshold crossed, a rollout that failed.
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons (`status.conditions[].reason`): UpperCamelCase, stable, documented in
/// `docs/crd-reference.md`.
pub mod reasons {
    /// The object is valid and in its desired state.
    pub const RECONCILED: &str = "Reconciled";
    /// The spec is invalid in a way the schema cannot express; the message says which field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The controller has not reconciled this generation yet.
    pub const PENDING: &str = "Pending";
    /// The object is being deleted and waits for something (the message says what).
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
    /// Plan: referenced by Subscriptions.
    pub const REFERENCED_BY_SUBSCRIPTIONS: &str = "ReferencedBySubscriptions";
    /// Plan: referenced by no Subscription.
    pub const NOT_REFERENCED: &str = "NotReferenced";
    /// A referenced object does not exist.
    pub const NOT_FOUND: &str = "NotFound";
    /// A referenced object exists but is not Ready.
    pub const NOT_READY: &str = "NotReady";
    /// Subscription: a namespace is already owned by another Subscription or not by Flotilla.
    pub const NAMESPACE_CONFLICT: &str = "NamespaceConflict";
    /// Subscription: provisioning children is still in progress.
    pub const PROVISIONING: &str = "Provisioning";
    /// Subscription: usage exceeds the quota of the plan.
    pub const USAGE_EXCEEDS_QUOTA: &str = "UsageExceedsQuota";
    /// Subscription: usage is within the quota of the plan.
    pub const WITHIN_QUOTA: &str = "WithinQuota";
    /// Subscription: the tenant is suspended.
    pub const SUSPENDED: &str = "Suspended";
    /// Campaign, FirmwareRollout: paused by `spec.suspend` / `spec.paused`.
    pub const PAUSED_BY_USER: &str = "PausedByUser";
    /// Campaign, FirmwareRollout: paused because the failure threshold was crossed.
    pub const PAUSED_BY_FAILURE_THRESHOLD: &str = "PausedByFailureThreshold";
    /// FirmwareRollout: waiting for `spec.approvedPlanHash` to match the plan.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// FirmwareRollout: `spec.approvedPlanHash` does not match the plan in status.
    pub const PLAN_HASH_MISMATCH: &str = "PlanHashMismatch";
    /// FirmwareRollout: outside the maintenance window.
    pub const OUTSIDE_MAINTENANCE_WINDOW: &str = "OutsideMaintenanceWindow";
    /// FirmwareRollout: devices are held by another rollout.
    pub const HELD_BY_ANOTHER_ROLLOUT: &str = "HeldByAnotherRollout";
    /// Work finished successfully.
    pub const COMPLETED: &str = "Completed";
}

/// The condition of type `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present with status `True`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Maximum number of conditions on one object; every kind has far fewer condition types.
pub const MAX_CONDITIONS: u32 = 32;

/// Schema of `status.conditions`: the upstream `metav1.Condition` validation (as generated by
/// controller-gen for `[]metav1.Condition`) plus `x-kubernetes-list-type: map` keyed by `type`.
///
/// Used with `#[schemars(schema_with = "crate::condition::conditions_schema")]` on a
/// `Vec<Condition>` field.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Latest observations of the object's state, one per condition type \
            (metav1.Condition). `Ready` summarises the others.",
        "type": "array",
        "maxItems": MAX_CONDITIONS,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "Last time the condition transitioned from one status to another.",
                    "type": "string",
                    "format": "date-time",
                },
                "message": {
                    "description": "Human-readable details about the transition. May be empty.",
                    "type": "string",
                    "maxLength": 32768,
                },
                "observedGeneration": {
                    "description": "The .metadata.generation the condition was set based upon.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                },
                "reason": {
                    "description": "Programmatic identifier of the reason for the last transition, in CamelCase.",
                    "type": "string",
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "status": {
                    "description": "Status of the condition: True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                },
                "type": {
                    "description": "Type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn condition(type_: &str, status: ConditionStatus) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.as_str().into(),
            reason: reasons::RECONCILED.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn finds_conditions_by_type() {
        let conditions = vec![
            condition(types::READY, ConditionStatus::True),
            condition(types::IN_USE, ConditionStatus::False),
        ];
        assert!(is_condition_true(&conditions, types::READY));
        assert!(!is_condition_true(&conditions, types::IN_USE));
        assert!(!is_condition_true(&conditions, types::PLAN_FOUND));
        assert_eq!(
            find_condition(&conditions, types::IN_USE).unwrap().status,
            "False"
        );
    }

    #[test]
    fn condition_status_round_trips() {
        for s in [
            ConditionStatus::True,
            ConditionStatus::False,
            ConditionStatus::Unknown,
        ] {
            assert_eq!(ConditionStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ConditionStatus::parse("true"), None);
        assert_eq!(ConditionStatus::from(true), ConditionStatus::True);
    }

    #[test]
    fn conditions_schema_is_a_list_map_keyed_by_type() {
        let schema = conditions_schema(&mut SchemaGenerator::default()).to_value();
        assert_eq!(schema["x-kubernetes-list-type"], "map");
        assert_eq!(schema["x-kubernetes-list-map-keys"][0], "type");
        assert_eq!(
            schema["items"]["properties"]["status"]["enum"][2],
            "Unknown"
        );
    }
}
