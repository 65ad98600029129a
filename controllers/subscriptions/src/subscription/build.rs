//! The desired objects of each tenant namespace, built from the Subscription and its Plan.
//!
//! Every object is a complete k8s-openapi typed object (type meta, name, namespace, labels,
//! controller ownerReference to the Subscription) ready for server-side apply under the field
//! manager `flotilla`. Names are fixed, so the same inputs always give the same objects and an
//! object the plan no longer asks for is found by name. Quantities are written in canonical
//! form, so what the API server stores compares equal to what was built.

use std::collections::BTreeMap;

use flotilla_crds::ParsedQuantity;
use flotilla_crds::Subscription;
use flotilla_crds::common::labels;
use flotilla_crds::plan::{PlanLimitRange, PlanSpec};
use flotilla_crds::subscription::Owner;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota,
    ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::Resource;

/// Name of the ResourceQuota in each tenant namespace.
pub const QUOTA_NAME: &str = "flotilla-quota";
/// Name of the LimitRange in each tenant namespace.
pub const LIMIT_RANGE_NAME: &str = "flotilla-limits";
/// Name of the RoleBinding of the owners in each tenant namespace.
pub const ROLE_BINDING_NAME: &str = "flotilla-owners";
/// Name of the NetworkPolicy isolating each tenant namespace.
pub const NETWORK_POLICY_NAME: &str = "flotilla-isolation";
/// Name of the ConfigMap publishing the plan's entitlements in each tenant namespace.
pub const ENTITLEMENTS_NAME: &str = "flotilla-entitlements";

/// The ClusterRole the owners are bound to.
pub const OWNER_CLUSTER_ROLE: &str = "admin";
/// The RBAC API group (RoleRef and User/Group subjects).
pub const RBAC_API_GROUP: &str = "rbac.authorization.k8s.io";
/// The quota resource that suspension sets to zero.
pub const PODS: &str = "pods";

/// Annotation marking the entitlements ConfigMap as read-only for tenants.
pub const READ_ONLY_ANNOTATION: &str = "flotilla.dev/read-only";
/// The well-known annotation holding a human description of an object.
pub const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";

/// Entitlements ConfigMap key: the Plan's name.
pub const ENTITLEMENTS_PLAN_KEY: &str = "plan";
/// Entitlements ConfigMap key: the Plan's features as a JSON object (name → bool).
pub const ENTITLEMENTS_FEATURES_KEY: &str = "features.json";
/// Entitlements ConfigMap key: the Plan's quota and container limits as a JSON object
/// `{"quota": {...}, "limitRange": {"default": {...}, "defaultRequest": {...}, "max": {...}}}`.
pub const ENTITLEMENTS_LIMITS_KEY: &str = "limits.json";

/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;
/// Hex digits of the hash that keeps shortened label values distinct.
const LABEL_HASH_DIGITS: usize = 16;

/// What the children of a tenant are built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Blueprint<'a> {
    /// The Subscription's name.
    pub subscription: &'a str,
    /// The controller ownerReference to the Subscription (see [`owner_reference`]).
    pub owner: OwnerReference,
    /// The Plan's name.
    pub plan_name: &'a str,
    /// The Plan (validated).
    pub plan: &'a PlanSpec,
    /// The Subscription's owners (`spec.owners`).
    pub owners: &'a [Owner],
    /// Whether the tenant is suspended (`pods: 0` in the quota).
    pub suspended: bool,
}

/// The desired objects of one tenant namespace. An absent optional object is one the
/// plan does not ask for: the shell deletes it if it exists (by its fixed name).
#[derive(Clone, Debug, PartialEq)]
pub struct TenantObjects {
    /// The Namespace itself.
    pub namespace: Namespace,
    /// `flotilla-quota`: the plan's quota, with `pods: 0` while suspended.
    pub quota: Option<ResourceQuota>,
    /// `flotilla-limits`: the plan's per-container defaults and maxima.
    pub limit_range: Option<LimitRange>,
    /// `flotilla-owners`: the owners bound to the `admin` ClusterRole.
    pub role_binding: RoleBinding,
    /// `flotilla-isolation`: denies ingress from other namespaces when the plan asks for it.
    pub network_policy: Option<NetworkPolicy>,
    /// `flotilla-entitlements`: the plan's features and limits, for the tenant to read.
    pub entitlements: ConfigMap,
}

/// The controller ownerReference every child carries: controller (so that other
/// controllers and `kubectl` know who manages it) and blocking owner deletion (so that
/// foreground deletion of the Subscription waits for it). `None` for a Subscription that
/// has no name or UID yet (never stored).
pub fn owner_reference(subscription: &Subscription) -> Option<OwnerReference> {
    Some(OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..subscription.owner_ref(&())?
    })
}

/// Every desired object of the tenant namespace `namespace`.
pub fn tenant_objects(
    blueprint: &Blueprint<'_>,
    namespace: &str,
    origin: NamespaceOrigin,
) -> TenantObjects {
    TenantObjects {
        namespace: tenant_namespace(blueprint, namespace, origin),
        quota: resource_quota(blueprint, namespace),
        limit_range: limit_range(blueprint, namespace),
        role_binding: role_binding(blueprint, namespace),
        network_policy: network_policy(blueprint, namespace),
        entitlements: entitlements(blueprint, namespace),
    }
}

/// Whether a tenant namespace is (to be) created by Flotilla or was handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceOrigin {
    /// Created by Flotilla: it carries the controller ownerReference, the proof that
    /// `deletionPolicy: Delete` may delete it.
    Created,
    /// Handed over by label: it never gets an ownerReference, so neither Flotilla's policy
    /// nor the garbage collector can delete it.
    HandedOver,
}

/// The Namespace, labelled with the Subscription and the Plan.
pub fn tenant_namespace(
    blueprint: &Blueprint<'_>,
    namespace: &str,
    origin: NamespaceOrigin,
) -> Namespace {
    let mut labels = child_labels(blueprint.subscription);
    labels.insert(labels::PLAN.to_owned(), label_value(blueprint.plan_name));
    Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: (origin == NamespaceOrigin::Created)
                .then(|| vec![blueprint.owner.clone()]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The ResourceQuota: the plan's `quota.hard`, with `pods: 0` added (or overriding) while
/// suspended. `None` when there is nothing to limit (no plan quota and not suspended).
pub fn resource_quota(blueprint: &Blueprint<'_>, namespace: &str) -> Option<ResourceQuota> {
    let mut hard = blueprint
        .plan
        .quota
        .as_ref()
        .map(|quota| canonical(&quota.hard))
        .unwrap_or_default();
    if blueprint.suspended {
        hard.insert(PODS.to_owned(), Quantity("0".to_owned()));
    }
    if hard.is_empty() {
        return None;
    }
    Some(ResourceQuota {
        metadata: child_meta(blueprint, namespace, QUOTA_NAME),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    })
}

/// The LimitRange: one `Container` item with the plan's default, default request and max.
/// `None` when the plan sets none of them.
pub fn limit_range(blueprint: &Blueprint<'_>, namespace: &str) -> Option<LimitRange> {
    let limits = blueprint.plan.limit_range.as_ref()?;
    if limits.default.is_empty() && limits.default_request.is_empty() && limits.max.is_empty() {
        return None;
    }
    let non_empty = |list: &BTreeMap<String, Quantity>| (!list.is_empty()).then(|| canonical(list));
    Some(LimitRange {
        metadata: child_meta(blueprint, namespace, LIMIT_RANGE_NAME),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_owned(),
                default: non_empty(&limits.default),
                default_request: non_empty(&limits.default_request),
                max: non_empty(&limits.max),
                ..LimitRangeItem::default()
            }],
        }),
    })
}

/// The RoleBinding of the owners to the `admin` ClusterRole. Always present (with no
/// subjects when there are no owners) so that removing the last owner revokes access.
/// Subjects are sorted and listed once, so reordering `spec.owners` changes nothing.
pub fn role_binding(blueprint: &Blueprint<'_>, namespace: &str) -> RoleBinding {
    let mut owners: Vec<&Owner> = blueprint.owners.iter().collect();
    owners.sort();
    owners.dedup();
    let subjects = owners
        .into_iter()
        .map(|owner| Subject {
            // Users and groups are not API objects: their subjects name the RBAC group and
            // no namespace (unlike ServiceAccounts).
            api_group: Some(RBAC_API_GROUP.to_owned()),
            kind: owner.kind.as_str().to_owned(),
            name: owner.name.clone(),
            namespace: None,
        })
        .collect();
    RoleBinding {
        metadata: child_meta(blueprint, namespace, ROLE_BINDING_NAME),
        role_ref: RoleRef {
            api_group: RBAC_API_GROUP.to_owned(),
            kind: "ClusterRole".to_owned(),
            name: OWNER_CLUSTER_ROLE.to_owned(),
        },
        subjects: Some(subjects),
    }
}

/// The NetworkPolicy isolating the namespace, when the plan asks for isolation: it selects
/// every pod and allows ingress only from pods of the same namespace. Everything else is
/// denied, which includes other namespaces (ingress controllers too) and traffic from
/// outside the cluster; platform teams open more with their own policies, which add up.
pub fn network_policy(blueprint: &Blueprint<'_>, namespace: &str) -> Option<NetworkPolicy> {
    if !blueprint.plan.network_isolation {
        return None;
    }
    Some(NetworkPolicy {
        metadata: child_meta(blueprint, namespace, NETWORK_POLICY_NAME),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                // A peer with only an (empty) pod selector means "any pod in this namespace".
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector::default()),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: None,
            }]),
            egress: None,
        }),
    })
}

/// The ConfigMap `flotilla-entitlements` publishing the plan to the tenant's applications:
/// keys [`ENTITLEMENTS_PLAN_KEY`], [`ENTITLEMENTS_FEATURES_KEY`] and
/// [`ENTITLEMENTS_LIMITS_KEY`]. JSON keeps every feature and resource name intact (resource
/// names such as `count/services.loadbalancers` are not valid ConfigMap keys).
///
/// Not `immutable`: it changes with the plan. Read-only by intent, which the
/// [`READ_ONLY_ANNOTATION`] and the description say; a tenant admin can edit it, and the
/// operator puts it back.
pub fn entitlements(blueprint: &Blueprint<'_>, namespace: &str) -> ConfigMap {
    let plan = blueprint.plan;
    let mut meta = child_meta(blueprint, namespace, ENTITLEMENTS_NAME);
    meta.annotations = Some(BTreeMap::from([
        (READ_ONLY_ANNOTATION.to_owned(), "true".to_owned()),
        (
            DESCRIPTION_ANNOTATION.to_owned(),
            format!(
                "Entitlements of Plan {} for Subscription {}, published by Flotilla for the \
                 tenant's applications to read. Read-only: changes are overwritten.",
                blueprint.plan_name, blueprint.subscription
            ),
        ),
    ]));
    let empty = PlanLimitRange::default();
    let limit_range = plan.limit_range.as_ref().unwrap_or(&empty);
    let limits = serde_json::json!({
        "quota": plan.quota.as_ref().map(|q| canonical(&q.hard)).unwrap_or_default(),
        "limitRange": {
            "default": canonical(&limit_range.default),
            "defaultRequest": canonical(&limit_range.default_request),
            "max": canonical(&limit_range.max),
        },
    });
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([
            (
                ENTITLEMENTS_PLAN_KEY.to_owned(),
                blueprint.plan_name.to_owned(),
            ),
            (
                ENTITLEMENTS_FEATURES_KEY.to_owned(),
                serde_json::Value::from(serde_json::Map::from_iter(
                    plan.features
                        .iter()
                        .map(|(name, enabled)| (name.clone(), serde_json::Value::Bool(*enabled))),
                ))
                .to_string(),
            ),
            (ENTITLEMENTS_LIMITS_KEY.to_owned(), limits.to_string()),
        ])),
        ..ConfigMap::default()
    }
}

/// The labels of every child: `app.kubernetes.io/managed-by: flotilla` and
/// `flotilla.dev/subscription: <name>`.
pub fn child_labels(subscription: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
        (labels::SUBSCRIPTION.to_owned(), label_value(subscription)),
    ])
}

/// A Subscription or Plan name as a label value.
///
/// Names of cluster-scoped objects may be up to 253 characters but label values only 63, so
/// a longer name keeps its first 46 characters followed by `-` and 16 hex digits of its
/// FNV-1a hash: still readable, still distinct, and the same on every run (the hash does not
/// depend on the Rust version, unlike `std`'s).
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_owned();
    }
    let keep = MAX_LABEL_VALUE - LABEL_HASH_DIGITS - 1;
    // Names are ASCII (DNS subdomains), so any byte index is a character boundary.
    format!("{}-{:016x}", &name[..keep], fnv1a(name.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

fn child_meta(blueprint: &Blueprint<'_>, namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(child_labels(blueprint.subscription)),
        owner_references: Some(vec![blueprint.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The resource list with each quantity in canonical form (`1000m` → `1`, `2048Mi` → `2Gi`).
/// A quantity that does not parse is kept as written; validated plans have none.
pub fn canonical(list: &BTreeMap<String, Quantity>) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(name, quantity)| {
            let quantity = ParsedQuantity::from_quantity(quantity)
                .map(|parsed| parsed.to_quantity())
                .unwrap_or_else(|_| quantity.clone());
            (name.clone(), quantity)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::plan::PlanQuota;
    use flotilla_crds::subscription::OwnerKind;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    fn team() -> PlanSpec {
        PlanSpec {
            display_name: "Team".into(),
            quota: Some(PlanQuota {
                hard: BTreeMap::from([
                    ("requests.cpu".into(), q("4000m")),
                    ("limits.memory".into(), q("8Gi")),
                    ("pods".into(), q("20")),
                    ("count/services.loadbalancers".into(), q("1")),
                ]),
            }),
            limit_range: Some(PlanLimitRange {
                default: BTreeMap::from([("cpu".into(), q("0.5")), ("memory".into(), q("512Mi"))]),
                default_request: BTreeMap::from([("cpu".into(), q("100m"))]),
                max: BTreeMap::from([("cpu".into(), q("2")), ("memory".into(), q("4096Mi"))]),
            }),
            features: BTreeMap::from([("sso".into(), true), ("audit-log".into(), false)]),
            trial_days: 14,
            grace_period_days: 7,
            network_isolation: true,
            price: None,
        }
    }

    fn owner() -> OwnerReference {
        let mut sub = Subscription::new(
            "acme",
            serde_json::from_value(serde_json::json!({"plan": "team"})).unwrap(),
        );
        sub.metadata.uid = Some("uid-1".into());
        owner_reference(&sub).expect("stored subscriptions have a UID")
    }

    fn blueprint<'a>(plan: &'a PlanSpec, owners: &'a [Owner], suspended: bool) -> Blueprint<'a> {
        Blueprint {
            subscription: "acme",
            owner: owner(),
            plan_name: "team",
            plan,
            owners,
            suspended,
        }
    }

    fn user(name: &str) -> Owner {
        Owner {
            kind: OwnerKind::User,
            name: name.into(),
        }
    }

    fn group(name: &str) -> Owner {
        Owner {
            kind: OwnerKind::Group,
            name: name.into(),
        }
    }

    #[test]
    fn the_owner_reference_is_a_blocking_controller_reference() {
        let reference = owner();
        assert_eq!(reference.api_version, "flotilla.dev/v1alpha1");
        assert_eq!(reference.kind, "Subscription");
        assert_eq!(reference.name, "acme");
        assert_eq!(reference.uid, "uid-1");
        assert_eq!(reference.controller, Some(true));
        assert_eq!(reference.block_owner_deletion, Some(true));
        let unsaved = Subscription::new(
            "acme",
            serde_json::from_value(serde_json::json!({"plan": "team"})).unwrap(),
        );
        assert_eq!(owner_reference(&unsaved), None);
    }

    #[test]
    fn the_namespace_carries_subscription_and_plan_labels() {
        let plan = team();
        let ns = tenant_namespace(
            &blueprint(&plan, &[], false),
            "acme-prod",
            NamespaceOrigin::Created,
        );
        let json = serde_json::to_value(&ns).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": "acme-prod",
                    "labels": {
                        "app.kubernetes.io/managed-by": "flotilla",
                        "flotilla.dev/plan": "team",
                        "flotilla.dev/subscription": "acme",
                    },
                    "ownerReferences": [{
                        "apiVersion": "flotilla.dev/v1alpha1",
                        "kind": "Subscription",
                        "name": "acme",
                        "uid": "uid-1",
                        "controller": true,
                        "blockOwnerDeletion": true,
                    }],
                },
            })
        );
        let handed_over = tenant_namespace(
            &blueprint(&plan, &[], false),
            "acme-prod",
            NamespaceOrigin::HandedOver,
        );
        assert_eq!(
            handed_over.metadata.owner_references, None,
            "a handed-over namespace never gets an ownerReference"
        );
        assert_eq!(handed_over.metadata.labels, ns.metadata.labels);
    }

    #[test]
    fn every_child_is_named_namespaced_labelled_and_owned() {
        let plan = team();
        let owners = [user("ada@example.com")];
        let objects = tenant_objects(
            &blueprint(&plan, &owners, false),
            "acme-prod",
            NamespaceOrigin::Created,
        );
        let metas = [
            (&objects.quota.as_ref().unwrap().metadata, QUOTA_NAME),
            (
                &objects.limit_range.as_ref().unwrap().metadata,
                LIMIT_RANGE_NAME,
            ),
            (&objects.role_binding.metadata, ROLE_BINDING_NAME),
            (
                &objects.network_policy.as_ref().unwrap().metadata,
                NETWORK_POLICY_NAME,
            ),
            (&objects.entitlements.metadata, ENTITLEMENTS_NAME),
        ];
        for (meta, name) in metas {
            assert_eq!(meta.name.as_deref(), Some(name));
            assert_eq!(meta.namespace.as_deref(), Some("acme-prod"));
            assert_eq!(meta.labels.as_ref(), Some(&child_labels("acme")));
            assert_eq!(meta.owner_references.as_deref(), Some(&[owner()][..]));
        }
    }

    #[test]
    fn the_quota_is_the_plans_in_canonical_form() {
        let plan = team();
        let quota = resource_quota(&blueprint(&plan, &[], false), "acme").unwrap();
        let hard = quota.spec.unwrap().hard.unwrap();
        assert_eq!(
            hard,
            BTreeMap::from([
                ("count/services.loadbalancers".into(), q("1")),
                ("limits.memory".into(), q("8Gi")),
                ("pods".into(), q("20")),
                ("requests.cpu".into(), q("4")),
            ])
        );
    }

    #[test]
    fn suspension_zeroes_pods_even_without_a_plan_quota() {
        let plan = team();
        let quota = resource_quota(&blueprint(&plan, &[], true), "acme").unwrap();
        let hard = quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["pods"], q("0"));
        assert_eq!(hard["requests.cpu"], q("4"), "the rest of the plan stays");

        let mut bare = team();
        bare.quota = None;
        assert_eq!(resource_quota(&blueprint(&bare, &[], false), "acme"), None);
        let quota = resource_quota(&blueprint(&bare, &[], true), "acme").unwrap();
        assert_eq!(
            quota.spec.unwrap().hard.unwrap(),
            BTreeMap::from([("pods".into(), q("0"))])
        );
    }

    #[test]
    fn the_limit_range_is_one_container_item() {
        let plan = team();
        let range = limit_range(&blueprint(&plan, &[], false), "acme").unwrap();
        let items = range.spec.unwrap().limits;
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(
            item.default.as_ref().unwrap(),
            &BTreeMap::from([("cpu".into(), q("500m")), ("memory".into(), q("512Mi"))])
        );
        assert_eq!(
            item.default_request.as_ref().unwrap(),
            &BTreeMap::from([("cpu".into(), q("100m"))])
        );
        assert_eq!(
            item.max.as_ref().unwrap(),
            &BTreeMap::from([("cpu".into(), q("2")), ("memory".into(), q("4Gi"))])
        );
        assert_eq!(item.min, None);
        assert_eq!(item.max_limit_request_ratio, None);
    }

    #[test]
    fn a_limit_range_with_nothing_in_it_is_not_built() {
        let mut plan = team();
        plan.limit_range = Some(PlanLimitRange::default());
        assert_eq!(limit_range(&blueprint(&plan, &[], false), "acme"), None);
        plan.limit_range = None;
        assert_eq!(limit_range(&blueprint(&plan, &[], false), "acme"), None);
        plan.limit_range = Some(PlanLimitRange {
            max: BTreeMap::from([("memory".into(), q("1Gi"))]),
            ..PlanLimitRange::default()
        });
        let item = &limit_range(&blueprint(&plan, &[], false), "acme")
            .unwrap()
            .spec
            .unwrap()
            .limits[0];
        assert_eq!(item.default, None, "no empty maps are sent");
        assert!(item.max.is_some());
    }

    #[test]
    fn owners_are_bound_to_admin_with_rbac_subjects() {
        let plan = team();
        let owners = [
            group("acme-admins"),
            user("ada@example.com"),
            user("ada@example.com"),
        ];
        let binding = role_binding(&blueprint(&plan, &owners, false), "acme");
        assert_eq!(
            serde_json::to_value(&binding).unwrap()["roleRef"],
            serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"})
        );
        assert_eq!(
            serde_json::to_value(&binding).unwrap()["subjects"],
            serde_json::json!([
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ada@example.com"},
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "acme-admins"},
            ])
        );
        let nobody = role_binding(&blueprint(&plan, &[], false), "acme");
        assert_eq!(nobody.subjects, Some(vec![]));
    }

    #[test]
    fn isolation_allows_only_same_namespace_ingress() {
        let mut plan = team();
        let policy = network_policy(&blueprint(&plan, &[], false), "acme").unwrap();
        assert_eq!(
            serde_json::to_value(&policy).unwrap()["spec"],
            serde_json::json!({
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
            })
        );
        plan.network_isolation = false;
        assert_eq!(network_policy(&blueprint(&plan, &[], false), "acme"), None);
    }

    #[test]
    fn entitlements_publish_features_and_limits_as_json() {
        let plan = team();
        let map = entitlements(&blueprint(&plan, &[], false), "acme");
        let data = map.data.as_ref().unwrap();
        assert_eq!(data[ENTITLEMENTS_PLAN_KEY], "team");
        assert_eq!(
            data[ENTITLEMENTS_FEATURES_KEY],
            r#"{"audit-log":false,"sso":true}"#
        );
        let limits: serde_json::Value =
            serde_json::from_str(&data[ENTITLEMENTS_LIMITS_KEY]).unwrap();
        assert_eq!(limits["quota"]["requests.cpu"], "4");
        assert_eq!(limits["quota"]["count/services.loadbalancers"], "1");
        assert_eq!(limits["limitRange"]["default"]["cpu"], "500m");
        assert_eq!(limits["limitRange"]["max"]["memory"], "4Gi");
        assert_eq!(map.immutable, None, "it changes with the plan");
        let annotations = map.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[READ_ONLY_ANNOTATION], "true");
        assert!(annotations[DESCRIPTION_ANNOTATION].contains("Read-only"));
    }

    #[test]
    fn entitlements_of_a_bare_plan_are_still_complete() {
        let plan = PlanSpec {
            display_name: "Free".into(),
            quota: None,
            limit_range: None,
            features: BTreeMap::new(),
            trial_days: 0,
            grace_period_days: 7,
            network_isolation: false,
            price: None,
        };
        let map = entitlements(&blueprint(&plan, &[], false), "acme");
        let data = map.data.unwrap();
        assert_eq!(data[ENTITLEMENTS_FEATURES_KEY], "{}");
        assert_eq!(
            data[ENTITLEMENTS_LIMITS_KEY],
            r#"{"limitRange":{"default":{},"defaultRequest":{},"max":{}},"quota":{}}"#
        );
    }

    #[test]
    fn building_is_deterministic() {
        let plan = team();
        let owners = [user("b"), user("a")];
        let reversed = [user("a"), user("b")];
        assert_eq!(
            tenant_objects(
                &blueprint(&plan, &owners, false),
                "acme",
                NamespaceOrigin::Created
            ),
            tenant_objects(
                &blueprint(&plan, &reversed, false),
                "acme",
                NamespaceOrigin::Created
            )
        );
    }

    #[test]
    fn long_names_become_valid_distinct_label_values() {
        assert_eq!(label_value("acme"), "acme");
        let exact = "a".repeat(63);
        assert_eq!(label_value(&exact), exact);
        let long_a = format!("{}.example.com", "a".repeat(60));
        let long_b = format!("{}.example.org", "a".repeat(60));
        let (a, b) = (label_value(&long_a), label_value(&long_b));
        assert_eq!(a.len(), 63);
        assert_ne!(a, b);
        assert!(a.starts_with(&long_a[..46]));
        assert_eq!(a, label_value(&long_a), "stable");
        // FNV-1a reference value, so the encoding never changes across releases.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
