//! The Subscription controller, through the real kube-runtime `Controller`, against the
//! sandbox: every lifecycle path of the Subscriptions issue, bad input, and injected faults.
//! Time is a `ManualClock` moved by the tests: trial ends and grace periods fire without
//! sleeping.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Harness, WAIT};
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Condition, Plan, Subscription, SubscriptionPhase};
use flotilla_runtime::ManualClock;
use flotilla_runtime::finalizer::FINALIZER;
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::registry::ResourceKey;
use flotilla_sandbox::store::{ChangeType, DeleteOptions, WatchStart};
use flotilla_sandbox::{FaultRule, Verb};
use http::Method;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Where every test's clock starts.
const START: &str = "2030-01-01T00:00:00Z";

fn start() -> Timestamp {
    START.parse().expect("timestamp")
}

fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(24 * n)
}

/// A harness whose operator reads time from the returned clock.
async fn harness() -> (Harness, ManualClock) {
    let clock = ManualClock::new(start());
    let h = Harness::start_with_clock(Arc::new(clock.clone())).await;
    (h, clock)
}

/// The Plan most tests use: a quota, container limits, features, a 14-day trial, a 7-day
/// grace period and network isolation.
fn team_plan(name: &str) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": name},
        "spec": {
            "displayName": "Team",
            "quota": {"hard": {"requests.cpu": "4", "limits.memory": "8Gi", "pods": "20"}},
            "limitRange": {
                "default": {"cpu": "500m", "memory": "512Mi"},
                "defaultRequest": {"cpu": "100m"},
                "max": {"cpu": "2", "memory": "4Gi"},
            },
            "features": {"sso": true, "audit-log": false},
            "trialDays": 14,
            "gracePeriodDays": 7,
            "networkIsolation": true,
        },
    })
}

/// A Subscription with `spec` merged over `{"plan": plan}`.
fn subscription(name: &str, plan: &str, spec: Value) -> Value {
    let mut full = json!({"plan": plan});
    if let (Some(full), Value::Object(extra)) = (full.as_object_mut(), spec) {
        full.extend(extra);
    }
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Subscription",
        "metadata": {"name": name},
        "spec": full,
    })
}

fn subscriptions(h: &Harness) -> Api<Subscription> {
    Api::all(h.client.clone())
}

fn phase(subscription: &Subscription) -> Option<SubscriptionPhase> {
    subscription.status.as_ref().and_then(|s| s.phase)
}

fn condition<'a>(subscription: &'a Subscription, type_: &str) -> Option<&'a Condition> {
    find_condition(&subscription.status.as_ref()?.conditions, type_)
}

/// `(status, reason)` of a condition.
fn state_of(subscription: &Subscription, type_: &str) -> Option<(String, String)> {
    condition(subscription, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

fn is_current(subscription: &Subscription) -> bool {
    subscription
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        == subscription.metadata.generation
}

/// Waits until the Subscription `name` satisfies `check`, returning it.
async fn wait_for_subscription(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&Subscription) -> bool,
) -> Subscription {
    let api = subscriptions(h);
    let found = wait_for(format!("Subscription {name}: {what}"), WAIT, || {
        let api = api.clone();
        let check = &check;
        async move { api.get_opt(name).await.ok().flatten().filter(|s| check(s)) }
    })
    .await;
    match found {
        Ok(subscription) => subscription,
        Err(error) => {
            let last = api.get_opt(name).await.ok().flatten();
            panic!(
                "{error}\nlast seen: {:#?}\nevents: {:?}",
                last.map(|s| s.status),
                event_reasons(h, name).await
            )
        }
    }
}

async fn wait_for_phase(h: &Harness, name: &str, wanted: SubscriptionPhase) -> Subscription {
    wait_for_subscription(h, name, &format!("phase {}", wanted.as_str()), |s| {
        phase(s) == Some(wanted) && is_current(s)
    })
    .await
}

async fn wait_until_gone(h: &Harness, name: &str) {
    let api = subscriptions(h);
    wait_for(format!("Subscription {name} to be gone"), WAIT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

fn namespaced<K>(h: &Harness, namespace: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(h.client.clone(), namespace)
}

/// Waits until the object `namespace/name` of kind `K` satisfies `check`, returning it.
async fn wait_for_child<K>(
    h: &Harness,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&K) -> bool,
) -> K
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = namespaced(h, namespace);
    wait_for(
        format!("{} {namespace}/{name}: {what}", K::kind(&())),
        WAIT,
        || {
            let api = api.clone();
            let check = &check;
            async move { api.get_opt(name).await.ok().flatten().filter(|k| check(k)) }
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

async fn namespace(h: &Harness, name: &str) -> Option<Namespace> {
    Api::<Namespace>::all(h.client.clone())
        .get_opt(name)
        .await
        .expect("get namespace")
}

async fn wait_for_namespace(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(Option<&Namespace>) -> bool,
) {
    wait_for(format!("Namespace {name}: {what}"), WAIT, || async {
        let found = namespace(h, name).await;
        check(found.as_ref()).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn hard(quota: &ResourceQuota) -> BTreeMap<String, Quantity> {
    quota
        .spec
        .as_ref()
        .and_then(|spec| spec.hard.clone())
        .unwrap_or_default()
}

fn label<'a, K: Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object.meta().labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether `object` is controlled by the Subscription with UID `uid`.
fn controlled_by<K: Resource>(object: &K, uid: &str) -> bool {
    object.owner_references().iter().any(|owner| {
        owner.uid == uid
            && owner.kind == "Subscription"
            && owner.controller == Some(true)
            && owner.block_owner_deletion == Some(true)
    })
}

async fn event_reasons(h: &Harness, name: &str) -> Vec<String> {
    h.events_about("Subscription", name)
        .await
        .into_iter()
        .filter_map(|event| event.reason)
        .collect()
}

async fn wait_for_event(
    h: &Harness,
    name: &str,
    reason: &str,
) -> k8s_openapi::api::events::v1::Event {
    let found = wait_for(format!("a {reason} Event about {name}"), WAIT, || async {
        h.events_about("Subscription", name)
            .await
            .into_iter()
            .find(|event| event.reason.as_deref() == Some(reason))
    })
    .await;
    match found {
        Ok(event) => event,
        Err(error) => panic!("{error}: {:?}", event_reasons(h, name).await),
    }
}

async fn merge_patch_subscription(h: &Harness, name: &str, patch: Value) -> Subscription {
    subscriptions(h)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|error| panic!("patch Subscription {name}: {error}"))
}

/// Waits until the Subscription controller has nothing running, queued or scheduled.
async fn wait_until_idle(h: &Harness) {
    h.quiet("subscription").await;
}

#[tokio::test]
async fn provisioning_creates_every_child_owned_and_labelled() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    let created = h
        .create::<Subscription>(subscription(
            "acme",
            "team",
            json!({
                "namespaces": ["acme-prod", "acme-dev"],
                "owners": [{"kind": "User", "name": "ada@acme.example"}, {"kind": "Group", "name": "acme-admins"}],
            }),
        ))
        .await;
    let uid = created.uid().expect("uid");

    let active = wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    let status = active.status.as_ref().expect("status");
    assert_eq!(status.plan.as_deref(), Some("team"));
    assert_eq!(status.namespaces, ["acme-prod", "acme-dev"]);
    assert_eq!(status.trial_ends_at, None, "no trial was asked for");
    for type_ in [
        types::READY,
        types::PLAN_FOUND,
        types::PROVISIONED,
        types::QUOTA_APPLIED,
    ] {
        assert_eq!(
            state_of(&active, type_),
            Some(("True".to_owned(), reasons::RECONCILED.to_owned())),
            "{type_}"
        );
    }
    assert!(active.finalizers().iter().any(|f| f == FINALIZER));

    for ns in ["acme-prod", "acme-dev"] {
        let namespace = namespace(&h, ns).await.expect("namespace exists");
        assert_eq!(label(&namespace, "flotilla.dev/subscription"), Some("acme"));
        assert_eq!(label(&namespace, "flotilla.dev/plan"), Some("team"));
        assert_eq!(
            label(&namespace, "app.kubernetes.io/managed-by"),
            Some("flotilla")
        );
        assert!(controlled_by(&namespace, &uid), "{ns}: ownerReference");

        let quota: ResourceQuota = namespaced(&h, ns)
            .get("flotilla-quota")
            .await
            .expect("quota");
        assert_eq!(
            hard(&quota),
            quantities(&[
                ("requests.cpu", "4"),
                ("limits.memory", "8Gi"),
                ("pods", "20")
            ])
        );
        let limits: LimitRange = namespaced(&h, ns)
            .get("flotilla-limits")
            .await
            .expect("limits");
        let item = &limits.spec.as_ref().expect("spec").limits[0];
        assert_eq!(item.type_, "Container");
        assert_eq!(
            item.default,
            Some(quantities(&[("cpu", "500m"), ("memory", "512Mi")]))
        );
        assert_eq!(item.default_request, Some(quantities(&[("cpu", "100m")])));
        assert_eq!(
            item.max,
            Some(quantities(&[("cpu", "2"), ("memory", "4Gi")]))
        );
        let binding: RoleBinding = namespaced(&h, ns)
            .get("flotilla-owners")
            .await
            .expect("binding");
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "admin");
        let subjects: Vec<(String, String)> = binding
            .subjects
            .iter()
            .flatten()
            .map(|s| (s.kind.clone(), s.name.clone()))
            .collect();
        assert_eq!(
            subjects,
            [
                ("User".to_owned(), "ada@acme.example".to_owned()),
                ("Group".to_owned(), "acme-admins".to_owned())
            ]
        );
        let policy: NetworkPolicy = namespaced(&h, ns)
            .get("flotilla-isolation")
            .await
            .expect("policy");
        assert_eq!(
            policy.spec.as_ref().and_then(|s| s.policy_types.clone()),
            Some(vec!["Ingress".to_owned()])
        );
        let entitlements: ConfigMap = namespaced(&h, ns)
            .get("flotilla-entitlements")
            .await
            .expect("entitlements");
        let data = entitlements.data.clone().unwrap_or_default();
        assert_eq!(data.get("plan").map(String::as_str), Some("team"));
        let features: Value = serde_json::from_str(&data["features.json"]).expect("json");
        assert_eq!(features, json!({"sso": true, "audit-log": false}));
        let limits: Value = serde_json::from_str(&data["limits.json"]).expect("json");
        assert_eq!(limits["quota"]["pods"], "20");

        for (kind, meta) in [
            ("ResourceQuota", quota.metadata.clone()),
            ("LimitRange", limits_meta(&h, ns).await),
            ("RoleBinding", binding.metadata.clone()),
            ("NetworkPolicy", policy.metadata.clone()),
            ("ConfigMap", entitlements.metadata.clone()),
        ] {
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get("flotilla.dev/subscription").map(String::as_str),
                Some("acme"),
                "{kind} in {ns}"
            );
            assert_eq!(
                labels
                    .get("app.kubernetes.io/managed-by")
                    .map(String::as_str),
                Some("flotilla"),
                "{kind} in {ns}"
            );
            let owned = meta
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true));
            assert!(owned, "{kind} in {ns}: ownerReference");
        }
    }

    // Transitions are announced, and counted by plan and phase.
    wait_for_event(&h, "acme", "Provisioning").await;
    let activated = wait_for_event(&h, "acme", "Activated").await;
    assert_eq!(activated.type_.as_deref(), Some("Normal"));
    h.ready().await;
    wait_for("the gauges to count the Subscription", WAIT, || async {
        let by_plan = h.metric(r#"flotilla_subscriptions{phase="Active",plan="team"}"#);
        let by_phase =
            h.metric(r#"flotilla_objects_by_phase{controller="subscription",phase="Active"}"#);
        (by_plan == 1.0 && by_phase == 1.0).then_some(())
    })
    .await
    .expect("gauges");
    assert_eq!(
        h.metric(r#"flotilla_subscriptions{phase="Pending",plan="team"}"#),
        0.0
    );
    h.stop().await;
}

async fn limits_meta(h: &Harness, ns: &str) -> kube::api::ObjectMeta {
    let limits: LimitRange = namespaced(h, ns)
        .get("flotilla-limits")
        .await
        .expect("limits");
    limits.metadata
}

#[tokio::test]
async fn drift_is_repaired() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({})))
        .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    h.ready().await;

    // Someone raises the quota by hand and deletes the limits.
    let quotas: Api<ResourceQuota> = namespaced(&h, "acme");
    let raise = json!({"spec": {"hard": {"requests.cpu": "64", "pods": "500"}}});
    let by_hand = PatchParams {
        field_manager: Some("kubectl-edit".to_owned()),
        ..PatchParams::default()
    };
    quotas
        .patch("flotilla-quota", &by_hand, &Patch::Merge(&raise))
        .await
        .expect("edit quota");
    let limits: Api<LimitRange> = namespaced(&h, "acme");
    limits
        .delete("flotilla-limits", &DeleteParams::default())
        .await
        .expect("delete limits");

    let quota = wait_for_child::<ResourceQuota>(&h, "acme", "flotilla-quota", "restored", |q| {
        hard(q)
            == quantities(&[
                ("requests.cpu", "4"),
                ("limits.memory", "8Gi"),
                ("pods", "20"),
            ])
    })
    .await;
    assert_eq!(quota.metadata.labels.as_ref().map(BTreeMap::len), Some(2));
    wait_for_child::<LimitRange>(&h, "acme", "flotilla-limits", "re-created", |_| true).await;

    // The same for the entitlements a tenant admin "corrected", and a NetworkPolicy deleted.
    let config_maps: Api<ConfigMap> = namespaced(&h, "acme");
    let tamper = json!({"data": {"features.json": "{\"sso\":true,\"audit-log\":true}"}});
    config_maps
        .patch(
            "flotilla-entitlements",
            &PatchParams::default(),
            &Patch::Merge(&tamper),
        )
        .await
        .expect("edit entitlements");
    namespaced::<NetworkPolicy>(&h, "acme")
        .delete("flotilla-isolation", &DeleteParams::default())
        .await
        .expect("delete policy");
    wait_for_child::<ConfigMap>(&h, "acme", "flotilla-entitlements", "restored", |cm| {
        cm.data
            .as_ref()
            .and_then(|d| d.get("features.json"))
            .map(String::as_str)
            == Some(r#"{"audit-log":false,"sso":true}"#)
    })
    .await;
    wait_for_child::<NetworkPolicy>(&h, "acme", "flotilla-isolation", "re-created", |_| true).await;
    h.stop().await;
}

/// Deletes the object `name` of `resource` (in API `group`) in `namespace` straight in the sandbox's store the
/// moment it is first created: before the operator's watch can have delivered it, most likely
/// while the operator still waits for the answer to its apply.
fn delete_on_creation(
    h: &Harness,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> tokio::task::JoinHandle<()> {
    let store = h.sandbox().store().clone();
    let key = ResourceKey::new(group, resource);
    let mut changes = store
        .watch(&key, Some(namespace), WatchStart::Now)
        .expect("watch the store")
        .receiver;
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("the store went away"),
            };
            let meta = &change.object["metadata"];
            if change.resource == key
                && change.change == ChangeType::Added
                && meta["namespace"] == namespace.as_str()
                && meta["name"] == name.as_str()
            {
                store
                    .delete(&key, &namespace, &name, &DeleteOptions::default())
                    .expect("delete right after creation");
                return;
            }
        }
    })
}

#[tokio::test]
async fn children_deleted_right_after_their_creation_are_created_again() {
    let (h, _clock) = harness().await;
    let limits = delete_on_creation(&h, "", "limitranges", "acme", "flotilla-limits");
    let policy = delete_on_creation(
        &h,
        "networking.k8s.io",
        "networkpolicies",
        "acme",
        "flotilla-isolation",
    );
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({})))
        .await;
    for deleter in [limits, policy] {
        tokio::time::timeout(WAIT, deleter)
            .await
            .expect("the children are created")
            .expect("deleted");
    }
    wait_for_child::<LimitRange>(&h, "acme", "flotilla-limits", "re-created", |_| true).await;
    wait_for_child::<NetworkPolicy>(&h, "acme", "flotilla-isolation", "re-created", |_| true).await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    h.stop().await;
}

#[tokio::test]
async fn a_trial_ends_in_active_when_the_payment_is_current() {
    let (h, clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({"trial": true})))
        .await;
    let trialing = wait_for_phase(&h, "acme", SubscriptionPhase::Trialing).await;
    let trial_end = start() + days(14);
    assert_eq!(
        trialing
            .status
            .as_ref()
            .and_then(|s| s.trial_ends_at.clone())
            .map(|t| t.0),
        Some(trial_end)
    );
    assert_eq!(
        state_of(&trialing, types::READY).map(|s| s.0),
        Some("True".to_owned())
    );
    wait_for_event(&h, "acme", "TrialStarted").await;

    // A day short of the end nothing happens; at the end the trial is over.
    clock.advance(days(13));
    h.reconcile_once_more("acme").await;
    let still = subscriptions(&h).get("acme").await.expect("get");
    assert_eq!(phase(&still), Some(SubscriptionPhase::Trialing));

    clock.advance(days(1));
    let active = wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    assert_eq!(
        active
            .status
            .as_ref()
            .and_then(|s| s.trial_ends_at.clone())
            .map(|t| t.0),
        Some(trial_end),
        "the trial end stays on record"
    );
    let ended = wait_for_event(&h, "acme", "TrialEnded").await;
    assert!(
        ended
            .note
            .as_deref()
            .unwrap_or("")
            .contains("Trialing → Active")
    );
    h.stop().await;
}

#[tokio::test]
async fn past_due_after_the_trial_is_suspended_when_the_grace_period_ends() {
    let (h, clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({"trial": true})))
        .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Trialing).await;

    // Billing reports a missed payment during the trial: nothing is due until it ends.
    let since = start() + days(3);
    merge_patch_subscription(
        &h,
        "acme",
        json!({"spec": {"payment": {"state": "PastDue", "since": since.to_string()}}}),
    )
    .await;
    wait_for_subscription(&h, "acme", "still trialing", |s| {
        is_current(s) && phase(s) == Some(SubscriptionPhase::Trialing)
    })
    .await;

    clock.advance(days(14));
    let past_due = wait_for_phase(&h, "acme", SubscriptionPhase::PastDue).await;
    let trial_end = start() + days(14);
    assert_eq!(
        past_due
            .status
            .as_ref()
            .and_then(|s| s.past_due_since.clone())
            .map(|t| t.0),
        Some(trial_end),
        "the grace period counts from the end of the trial"
    );
    let warning = wait_for_event(&h, "acme", "PastDue").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or("")
            .contains(&(trial_end + days(7)).to_string()),
        "{:?}",
        warning.note
    );

    // Grace period: 7 days. One second before, still PastDue; then suspended.
    clock.advance(days(7) - SignedDuration::from_secs(1));
    h.reconcile_once_more("acme").await;
    assert_eq!(
        phase(&subscriptions(&h).get("acme").await.expect("get")),
        Some(SubscriptionPhase::PastDue)
    );
    clock.advance(SignedDuration::from_secs(1));
    let suspended = wait_for_phase(&h, "acme", SubscriptionPhase::Suspended).await;
    assert_eq!(
        state_of(&suspended, types::READY),
        Some(("False".to_owned(), reasons::SUSPENDED.to_owned()))
    );
    let quota = wait_for_child::<ResourceQuota>(&h, "acme", "flotilla-quota", "pods: 0", |q| {
        hard(q).get("pods") == Some(&Quantity("0".to_owned()))
    })
    .await;
    assert_eq!(
        hard(&quota).get("requests.cpu"),
        Some(&Quantity("4".to_owned()))
    );
    wait_for_event(&h, "acme", "Suspended").await;
    h.stop().await;
}

/// Creates a Deployment (`replicas: None` leaves the field unset) in `namespace`.
async fn deployment(h: &Harness, namespace: &str, name: &str, replicas: Option<i32>) {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "app", "image": "nginx"}]},
        },
    });
    if let Some(replicas) = replicas {
        spec["replicas"] = json!(replicas);
    }
    let object: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("deployment");
    namespaced::<Deployment>(h, namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("create deployment");
}

async fn stateful_set(h: &Harness, namespace: &str, name: &str, replicas: i32) {
    let object: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "db", "image": "postgres"}]},
            },
        },
    }))
    .expect("stateful set");
    namespaced::<StatefulSet>(h, namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("create stateful set");
}

fn annotation<'a, K: Resource>(object: &'a K, key: &str) -> Option<&'a str> {
    object
        .meta()
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

const RECORD: &str = "flotilla.dev/replicas-before-suspend";

#[tokio::test]
async fn suspension_scales_to_zero_and_reactivation_restores_exact_counts() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"namespaces": ["acme-prod", "acme-dev"]}),
    ))
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    deployment(&h, "acme-prod", "web", Some(3)).await;
    deployment(&h, "acme-prod", "worker", None).await;
    stateful_set(&h, "acme-dev", "db", 2).await;

    // Ten days past due on a plan with seven days of grace: suspended at once.
    let since = start() - days(10);
    merge_patch_subscription(
        &h,
        "acme",
        json!({"spec": {"payment": {"state": "PastDue", "since": since.to_string()}}}),
    )
    .await;
    let suspended = wait_for_phase(&h, "acme", SubscriptionPhase::Suspended).await;
    let ready = condition(&suspended, types::READY).expect("Ready");
    assert!(
        ready.message.contains("grace period ended"),
        "{}",
        ready.message
    );
    assert_eq!(
        state_of(&suspended, types::QUOTA_APPLIED),
        Some(("True".to_owned(), reasons::SUSPENDED.to_owned()))
    );
    for ns in ["acme-prod", "acme-dev"] {
        let quota: ResourceQuota = namespaced(&h, ns)
            .get("flotilla-quota")
            .await
            .expect("quota");
        assert_eq!(
            hard(&quota).get("pods"),
            Some(&Quantity("0".to_owned())),
            "{ns}"
        );
    }
    let deployments: Api<Deployment> = namespaced(&h, "acme-prod");
    for (name, recorded) in [("web", "3"), ("worker", "1")] {
        let scaled = deployments.get(name).await.expect("deployment");
        assert_eq!(
            scaled.spec.as_ref().and_then(|s| s.replicas),
            Some(0),
            "{name}"
        );
        assert_eq!(annotation(&scaled, RECORD), Some(recorded), "{name}");
    }
    let db: StatefulSet = namespaced(&h, "acme-dev").get("db").await.expect("db");
    assert_eq!(db.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(annotation(&db, RECORD), Some("2"));
    assert!(h.sandbox().requests().count(Verb::List, "deployments") >= 2);
    // Both transitions were announced.
    wait_for_event(&h, "acme", "PastDue").await;
    wait_for_event(&h, "acme", "Suspended").await;

    // Paid: everything comes back exactly as it was.
    merge_patch_subscription(
        &h,
        "acme",
        json!({"spec": {"payment": {"state": "Current", "since": null}}}),
    )
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    for (name, replicas) in [("web", 3), ("worker", 1)] {
        let restored = deployments.get(name).await.expect("deployment");
        assert_eq!(
            restored.spec.as_ref().and_then(|s| s.replicas),
            Some(replicas),
            "{name}"
        );
        assert_eq!(annotation(&restored, RECORD), None, "{name}");
    }
    let db: StatefulSet = namespaced(&h, "acme-dev").get("db").await.expect("db");
    assert_eq!(db.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(annotation(&db, RECORD), None);
    let quota: ResourceQuota = namespaced(&h, "acme-prod")
        .get("flotilla-quota")
        .await
        .expect("quota");
    assert_eq!(hard(&quota).get("pods"), Some(&Quantity("20".to_owned())));
    wait_for_event(&h, "acme", "Resumed").await;
    h.stop().await;
}

#[tokio::test]
async fn a_requested_suspension_is_lifted_by_the_customer() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({})))
        .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    deployment(&h, "acme", "web", Some(4)).await;

    merge_patch_subscription(&h, "acme", json!({"spec": {"state": "Suspended"}})).await;
    let suspended = wait_for_phase(&h, "acme", SubscriptionPhase::Suspended).await;
    assert!(
        condition(&suspended, types::READY)
            .is_some_and(|c| c.message.contains("spec.state is Suspended"))
    );
    let web: Deployment = namespaced(&h, "acme").get("web").await.expect("web");
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(0));

    // Scaled up by hand meanwhile: suspended again, still restored to the first count.
    let manual = json!({"spec": {"replicas": 2}});
    namespaced::<Deployment>(&h, "acme")
        .patch("web", &PatchParams::default(), &Patch::Merge(&manual))
        .await
        .expect("scale up");
    // Deployments are not watched: the next reconcile, whatever wakes it, finds the change.
    h.reconcile_once_more("acme").await;
    wait_for_child::<Deployment>(&h, "acme", "web", "scaled down again", |d| {
        d.spec.as_ref().and_then(|s| s.replicas) == Some(0)
    })
    .await;

    merge_patch_subscription(&h, "acme", json!({"spec": {"state": "Active"}})).await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    let web: Deployment = namespaced(&h, "acme").get("web").await.expect("web");
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(4));
    h.stop().await;
}

/// Writes `used` into the status of the tenant quota, as the quota controller would for pods
/// that run (the sandbox runs none).
async fn report_usage(h: &Harness, namespace: &str, used: Value) {
    let quotas: Api<ResourceQuota> = namespaced(h, namespace);
    let status = json!({"status": {"used": used}});
    quotas
        .patch_status(
            "flotilla-quota",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("write quota status");
}

#[tokio::test]
async fn a_plan_change_reapplies_the_quota_and_reports_what_is_over() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    let mut small = team_plan("small");
    small["spec"]["quota"]["hard"] =
        json!({"requests.cpu": "1", "limits.memory": "2Gi", "pods": "20"});
    small["spec"]["networkIsolation"] = json!(false);
    h.create::<Plan>(small).await;
    h.create::<Subscription>(subscription("acme", "team", json!({})))
        .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    deployment(&h, "acme", "web", Some(3)).await;
    report_usage(
        &h,
        "acme",
        json!({"requests.cpu": "1500m", "limits.memory": "1Gi", "pods": "3"}),
    )
    .await;
    let within = wait_for_subscription(&h, "acme", "usage reported", |s| {
        s.status
            .as_ref()
            .and_then(|st| st.usage.get("requests.cpu"))
            == Some(&Quantity("1500m".to_owned()))
    })
    .await;
    assert_eq!(
        state_of(&within, types::OVER_QUOTA),
        Some(("False".to_owned(), reasons::WITHIN_QUOTA.to_owned()))
    );
    assert_eq!(
        within
            .status
            .as_ref()
            .and_then(|s| s.entitlements.get("pods").cloned()),
        Some(Quantity("20".to_owned()))
    );

    merge_patch_subscription(&h, "acme", json!({"spec": {"plan": "small"}})).await;
    let over = wait_for_subscription(&h, "acme", "OverQuota on the small plan", |s| {
        is_current(s) && state_of(s, types::OVER_QUOTA).is_some_and(|c| c.0 == "True")
    })
    .await;
    let status = over.status.as_ref().expect("status");
    assert_eq!(status.plan.as_deref(), Some("small"));
    assert_eq!(
        status.phase,
        Some(SubscriptionPhase::Active),
        "nothing is suspended"
    );
    let message = &condition(&over, types::OVER_QUOTA)
        .expect("OverQuota")
        .message;
    assert!(
        message.contains("requests.cpu uses 1500m of 1"),
        "{message}"
    );
    assert!(!message.contains("limits.memory"), "{message}");
    assert_eq!(
        condition(&over, types::OVER_QUOTA).map(|c| c.reason.as_str()),
        Some(reasons::USAGE_EXCEEDS_QUOTA)
    );
    let quota: ResourceQuota = namespaced(&h, "acme")
        .get("flotilla-quota")
        .await
        .expect("quota");
    assert_eq!(
        hard(&quota),
        quantities(&[
            ("requests.cpu", "1"),
            ("limits.memory", "2Gi"),
            ("pods", "20")
        ])
    );
    let namespace = namespace(&h, "acme").await.expect("namespace");
    assert_eq!(label(&namespace, "flotilla.dev/plan"), Some("small"));
    // The small plan has no isolation: its NetworkPolicy is gone; nothing of the tenant's is.
    wait_for("the NetworkPolicy to go", WAIT, || async {
        matches!(
            namespaced::<NetworkPolicy>(&h, "acme")
                .get_opt("flotilla-isolation")
                .await,
            Ok(None)
        )
        .then_some(())
    })
    .await
    .expect("policy removed");
    let web: Deployment = namespaced(&h, "acme")
        .get("web")
        .await
        .expect("web survives");
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(3));
    let warning = wait_for_event(&h, "acme", "OverQuota").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));

    // Usage drops below the plan: the condition clears.
    report_usage(
        &h,
        "acme",
        json!({"requests.cpu": "500m", "limits.memory": "1Gi", "pods": "3"}),
    )
    .await;
    wait_for_subscription(&h, "acme", "within quota again", |s| {
        state_of(s, types::OVER_QUOTA).is_some_and(|c| c.0 == "False")
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn deletion_with_the_delete_policy_waits_for_the_namespaces() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"namespaces": ["acme-prod", "acme-dev"], "deletionPolicy": "Delete"}),
    ))
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    // Something in acme-prod holds its own finalizer: the namespace cannot finish
    // terminating until it is released.
    let held: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "held", "namespace": "acme-prod", "finalizers": ["example.com/hold"]},
    }))
    .expect("config map");
    let config_maps: Api<ConfigMap> = namespaced(&h, "acme-prod");
    config_maps
        .create(&PostParams::default(), &held)
        .await
        .expect("create held");

    subscriptions(&h)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    // acme-dev is empty and goes at once; the decision that deleted it still waited for it,
    // the next one waits only for acme-prod.
    let cancelling = wait_for_subscription(&h, "acme", "Cancelling, waiting for acme-prod", |s| {
        phase(s) == Some(SubscriptionPhase::Cancelling)
            && s.status
                .as_ref()
                .is_some_and(|st| st.namespaces == ["acme-prod"])
    })
    .await;
    assert!(
        cancelling.finalizers().iter().any(|f| f == FINALIZER),
        "the finalizer waits"
    );
    let provisioned = condition(&cancelling, types::PROVISIONED).expect("Provisioned");
    assert_eq!(provisioned.reason, "Cancelling");
    assert!(
        provisioned.message.contains("acme-prod"),
        "{}",
        provisioned.message
    );
    wait_for_namespace(&h, "acme-dev", "gone", |ns| ns.is_none()).await;
    wait_for_namespace(&h, "acme-prod", "terminating", |ns| {
        ns.is_some_and(|ns| ns.metadata.deletion_timestamp.is_some())
    })
    .await;
    wait_for_event(&h, "acme", "Cancelling").await;

    // The last thing in the namespace lets go: the namespace, then the Subscription, go.
    let release = json!({"metadata": {"finalizers": null}});
    config_maps
        .patch("held", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("release");
    wait_until_gone(&h, "acme").await;
    assert!(namespace(&h, "acme-prod").await.is_none());
    wait_for_event(&h, "acme", "Cancelled").await;
    h.stop().await;
}

#[tokio::test]
async fn cancelling_with_the_delete_policy_keeps_the_subscription_as_a_record() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"deletionPolicy": "Delete"}),
    ))
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    merge_patch_subscription(&h, "acme", json!({"spec": {"state": "Cancelled"}})).await;
    let cancelled = wait_for_phase(&h, "acme", SubscriptionPhase::Cancelled).await;
    assert!(namespace(&h, "acme").await.is_none());
    assert!(
        cancelled
            .status
            .as_ref()
            .is_some_and(|s| s.namespaces.is_empty())
    );
    assert_eq!(
        state_of(&cancelled, types::READY),
        Some(("False".to_owned(), "Cancelled".to_owned()))
    );
    assert_eq!(condition(&cancelled, types::OVER_QUOTA), None);

    // The schema refuses to bring it back.
    let error = subscriptions(&h)
        .patch(
            "acme",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"state": "Active"}})),
        )
        .await
        .expect_err("reactivation refused");
    assert!(
        matches!(&error, kube::Error::Api(s) if s.code == 422),
        "{error}"
    );

    // Deleting the record is immediate: nothing is left to clean up.
    subscriptions(&h)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&h, "acme").await;
    h.stop().await;
}

#[tokio::test]
async fn deletion_with_the_retain_policy_releases_the_namespaces() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    let created = h
        .create::<Subscription>(subscription(
            "acme",
            "team",
            json!({"namespaces": ["acme-prod"], "deletionPolicy": "Retain"}),
        ))
        .await;
    let uid = created.uid().expect("uid");
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    deployment(&h, "acme-prod", "web", Some(2)).await;

    subscriptions(&h)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&h, "acme").await;

    let kept = namespace(&h, "acme-prod")
        .await
        .expect("the namespace stays");
    assert_eq!(kept.metadata.deletion_timestamp, None);
    assert!(
        kept.owner_references().is_empty(),
        "{:?}",
        kept.owner_references()
    );
    assert_eq!(label(&kept, "flotilla.dev/subscription"), None);
    assert_eq!(label(&kept, "flotilla.dev/plan"), None);
    assert_eq!(label(&kept, "app.kubernetes.io/managed-by"), None);
    assert!(
        label(&kept, "kubernetes.io/metadata.name").is_some(),
        "other labels stay"
    );
    let quota: ResourceQuota = namespaced(&h, "acme-prod")
        .get("flotilla-quota")
        .await
        .expect("the quota stays");
    assert!(!controlled_by(&quota, &uid) && quota.owner_references().is_empty());
    assert_eq!(label(&quota, "flotilla.dev/subscription"), None);
    let binding: RoleBinding = namespaced(&h, "acme-prod")
        .get("flotilla-owners")
        .await
        .expect("the owners keep access");
    assert!(binding.owner_references().is_empty());
    let entitlements: ConfigMap = namespaced(&h, "acme-prod")
        .get("flotilla-entitlements")
        .await
        .expect("entitlements stay");
    assert_eq!(annotation(&entitlements, "flotilla.dev/read-only"), None);
    let web: Deployment = namespaced(&h, "acme-prod").get("web").await.expect("web");
    assert_eq!(web.spec.as_ref().and_then(|s| s.replicas), Some(2));
    h.stop().await;
}

#[tokio::test]
async fn a_missing_plan_holds_the_subscription_until_it_is_created() {
    let (h, _clock) = harness().await;
    h.create::<Subscription>(subscription("acme", "later", json!({})))
        .await;
    let pending = wait_for_subscription(&h, "acme", "PlanFound=False", |s| {
        phase(s) == Some(SubscriptionPhase::Pending)
            && state_of(s, types::PLAN_FOUND).is_some_and(|c| c.0 == "False")
    })
    .await;
    assert_eq!(
        state_of(&pending, types::PLAN_FOUND),
        Some(("False".to_owned(), reasons::NOT_FOUND.to_owned()))
    );
    assert_eq!(
        condition(&pending, types::READY).map(|c| c.message.as_str()),
        Some("Plan later does not exist")
    );
    assert!(
        namespace(&h, "acme").await.is_none(),
        "nothing is provisioned"
    );
    let blocked = wait_for_event(&h, "acme", "Blocked").await;
    assert_eq!(blocked.type_.as_deref(), Some("Warning"));

    // No manual step: creating the Plan provisions the tenant.
    h.create::<Plan>(team_plan("later")).await;
    let active = wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    assert_eq!(
        state_of(&active, types::PLAN_FOUND),
        Some(("True".to_owned(), reasons::RECONCILED.to_owned()))
    );
    assert!(namespace(&h, "acme").await.is_some());
    h.stop().await;
}

#[tokio::test]
async fn an_invalid_plan_holds_the_subscription_and_says_why() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(common::invalid_plan("broken")).await;
    h.create::<Subscription>(subscription("acme", "broken", json!({})))
        .await;
    let pending = wait_for_subscription(&h, "acme", "PlanFound=False NotReady", |s| {
        state_of(s, types::PLAN_FOUND) == Some(("False".to_owned(), reasons::NOT_READY.to_owned()))
    })
    .await;
    assert_eq!(phase(&pending), Some(SubscriptionPhase::Pending));
    let message = &condition(&pending, types::PLAN_FOUND)
        .expect("PlanFound")
        .message;
    assert!(
        message.contains("spec.limitRange.defaultRequest[cpu]"),
        "{message}"
    );

    // Fixing the Plan (a new generation) provisions.
    let fix = json!({"spec": {"limitRange": {"defaultRequest": {"cpu": "100m"}}}});
    Api::<Plan>::all(h.client.clone())
        .patch("broken", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .expect("fix");
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    h.stop().await;
}

/// Asserts that creating `object` (sent as written, not through the Rust type, which could
/// not even hold some of it) is refused with `422 Invalid` mentioning `needle`.
async fn assert_rejected<K>(h: &Harness, object: Value, needle: &str)
where
    K: Resource<DynamicType = ()>,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::all_with(h.client.clone(), &resource);
    let raw: DynamicObject = serde_json::from_value(object).expect("well-formed JSON object");
    let error = api
        .create(&PostParams::default(), &raw)
        .await
        .expect_err("refused");
    match &error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{error}");
            assert!(
                status.message.contains(needle),
                "{needle:?} not in {}",
                status.message
            );
        }
        other => panic!("expected 422, got {other}"),
    }
}

#[tokio::test]
async fn bad_input_is_refused_at_the_door() {
    let (h, _clock) = harness().await;
    // Namespace names that are not DNS labels, and a namespace listed twice.
    assert_rejected::<Subscription>(
        &h,
        subscription("acme", "team", json!({"namespaces": ["Acme_Prod"]})),
        "spec.namespaces[0]",
    )
    .await;
    assert_rejected::<Subscription>(
        &h,
        subscription("acme", "team", json!({"namespaces": ["acme", "acme"]})),
        "Duplicate value",
    )
    .await;
    // Negative and unparsable quantities in a Plan.
    let mut negative = team_plan("negative");
    negative["spec"]["quota"]["hard"]["pods"] = json!("-1");
    assert_rejected::<Plan>(&h, negative, "spec.quota.hard.pods").await;
    let mut unparsable = team_plan("unparsable");
    unparsable["spec"]["limitRange"]["max"]["cpu"] = json!("two");
    assert_rejected::<Plan>(&h, unparsable, "spec.limitRange.max.cpu").await;
    // State and payment combinations that make no sense.
    assert_rejected::<Subscription>(
        &h,
        subscription("acme", "team", json!({"payment": {"state": "PastDue"}})),
        "payment.since is required",
    )
    .await;
    assert_rejected::<Subscription>(
        &h,
        subscription(
            "acme",
            "team",
            json!({"payment": {"state": "Current", "since": START}}),
        ),
        "payment.since",
    )
    .await;
    assert_rejected::<Subscription>(
        &h,
        subscription("acme", "team", json!({"state": "Paused"})),
        "Unsupported value",
    )
    .await;
    // Nothing got in, so nothing was provisioned.
    assert!(
        subscriptions(&h)
            .get_opt("acme")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        Api::<Plan>::all(h.client.clone())
            .get_opt("negative")
            .await
            .expect("get")
            .is_none()
    );
    h.stop().await;
}

#[tokio::test]
async fn an_invalid_spec_the_schema_cannot_see_is_reported_and_nothing_provisioned() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    // Shaped like a time zone, but not one.
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"contact": {"timeZone": "Mars/Olympus_Mons"}}),
    ))
    .await;
    let invalid = wait_for_subscription(&h, "acme", "Ready=False InvalidSpec", |s| {
        state_of(s, types::READY) == Some(("False".to_owned(), reasons::INVALID_SPEC.to_owned()))
    })
    .await;
    assert_eq!(phase(&invalid), Some(SubscriptionPhase::Pending));
    let message = &condition(&invalid, types::READY).expect("Ready").message;
    assert!(message.contains("spec.contact.timeZone"), "{message}");
    assert!(namespace(&h, "acme").await.is_none());

    merge_patch_subscription(
        &h,
        "acme",
        json!({"spec": {"contact": {"timeZone": "Europe/Berlin"}}}),
    )
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    h.stop().await;
}

#[tokio::test]
async fn a_namespace_of_another_subscription_is_never_taken_over() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    let first = h
        .create::<Subscription>(subscription(
            "acme",
            "team",
            json!({"namespaces": ["shared"], "deletionPolicy": "Delete"}),
        ))
        .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;

    h.create::<Subscription>(subscription(
        "globex",
        "team",
        json!({"namespaces": ["shared", "globex"]}),
    ))
    .await;
    let refused = wait_for_subscription(&h, "globex", "NamespaceConflict", |s| {
        state_of(s, types::READY).is_some_and(|c| c.1 == reasons::NAMESPACE_CONFLICT)
    })
    .await;
    assert_eq!(phase(&refused), Some(SubscriptionPhase::Provisioning));
    let message = &condition(&refused, types::READY).expect("Ready").message;
    assert!(
        message.contains("namespace shared belongs to Subscription acme"),
        "{message}"
    );
    assert_eq!(
        state_of(&refused, types::PROVISIONED).map(|c| c.0),
        Some("False".to_owned())
    );
    // The free namespace is provisioned meanwhile; the taken one is untouched.
    wait_for_child::<ResourceQuota>(&h, "globex", "flotilla-quota", "provisioned", |_| true).await;
    let shared = namespace(&h, "shared").await.expect("shared");
    assert_eq!(label(&shared, "flotilla.dev/subscription"), Some("acme"));
    assert!(controlled_by(&shared, &first.uid().expect("uid")));
    let binding: RoleBinding = namespaced(&h, "shared")
        .get("flotilla-owners")
        .await
        .expect("binding");
    assert_eq!(label(&binding, "flotilla.dev/subscription"), Some("acme"));
    wait_for_event(&h, "globex", "Blocked").await;

    // Namespaces nobody manages are not taken either.
    h.create::<Subscription>(subscription(
        "initech",
        "team",
        json!({"namespaces": ["default"]}),
    ))
    .await;
    let unmanaged = wait_for_subscription(&h, "initech", "NamespaceConflict", |s| {
        state_of(s, types::READY).is_some_and(|c| c.1 == reasons::NAMESPACE_CONFLICT)
    })
    .await;
    assert!(
        condition(&unmanaged, types::READY)
            .is_some_and(|c| c.message.contains("is not managed by Flotilla")),
    );
    let default = namespace(&h, "default").await.expect("default");
    assert_eq!(label(&default, "flotilla.dev/subscription"), None);

    // Once acme lets go of the namespace, globex gets it with no manual step.
    subscriptions(&h)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete acme");
    wait_until_gone(&h, "acme").await;
    let active = wait_for_phase(&h, "globex", SubscriptionPhase::Active).await;
    assert_eq!(
        active.status.as_ref().map(|s| s.namespaces.clone()),
        Some(vec!["shared".to_owned(), "globex".to_owned()])
    );
    let shared = namespace(&h, "shared").await.expect("shared");
    assert_eq!(label(&shared, "flotilla.dev/subscription"), Some("globex"));
    h.stop().await;
}

/// A Subscription "acme" on plan "team", Active with its usage reported, the operator idle and
/// the request log empty: the starting point of the steady-state cost tests.
async fn steady_subscription() -> (Harness, ManualClock) {
    let (h, clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({})))
        .await;
    wait_for_subscription(&h, "acme", "Active with usage", |s| {
        phase(s) == Some(SubscriptionPhase::Active)
            && state_of(s, types::OVER_QUOTA).is_some_and(|c| c.0 == "False")
    })
    .await;
    h.ready().await;
    wait_until_idle(&h).await;
    h.sandbox().requests().reset();
    (h, clock)
}

#[tokio::test]
async fn a_steady_subscription_costs_no_status_writes() {
    let (h, _clock) = steady_subscription().await;
    h.reconcile_once_more("acme").await;
    let requests = h.sandbox().requests();
    assert_eq!(requests.count(Verb::Patch, "subscriptions/status"), 0);
    assert_eq!(requests.count(Verb::Create, "namespaces"), 0);
    assert_eq!(
        requests.count(Verb::List, "deployments"),
        0,
        "an active tenant's workloads are not listed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_steady_subscription_costs_no_child_writes() {
    let (h, _clock) = steady_subscription().await;
    h.reconcile_once_more("acme").await;
    h.reconcile_once_more("acme").await;
    let requests = h.sandbox().requests();
    for resource in [
        "namespaces",
        "resourcequotas",
        "limitranges",
        "rolebindings",
        "networkpolicies",
        "configmaps",
    ] {
        for verb in [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete] {
            // The touches of `reconcile_once_more` are the test's own.
            let writes = requests
                .snapshot()
                .into_iter()
                .filter(|r| r.verb == verb && r.resource == resource)
                .filter(|r| r.name.as_deref() != Some("test-touch"))
                .count();
            assert_eq!(writes, 0, "{verb:?} {resource} on a steady Subscription");
        }
    }
    assert_eq!(requests.count(Verb::Patch, "subscriptions/status"), 0);

    // A write by someone else is still repaired, and costs exactly one apply.
    let by_hand = PatchParams {
        field_manager: Some("kubectl-edit".to_owned()),
        ..PatchParams::default()
    };
    namespaced::<LimitRange>(&h, "acme")
        .patch(
            "flotilla-limits",
            &by_hand,
            &Patch::Merge(
                &json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "someone"}}}),
            ),
        )
        .await
        .expect("edit limits");
    wait_for_child::<LimitRange>(&h, "acme", "flotilla-limits", "relabelled", |limits| {
        label(limits, "app.kubernetes.io/managed-by") == Some("flotilla")
    })
    .await;
    wait_until_idle(&h).await;
    assert_eq!(
        requests.count(Verb::Patch, "limitranges"),
        2,
        "the edit and one repair"
    );
    assert_eq!(requests.count(Verb::Patch, "resourcequotas"), 0);
    h.stop().await;
}

#[tokio::test]
async fn injected_faults_reach_the_controller_and_do_not_stop_convergence() {
    let (h, _clock) = harness().await;
    h.ready().await;
    let faults = h.sandbox().faults();
    // Each fault is one the controller must handle itself: the test client, unlike kube's
    // default one, does not retry 429, 503 or 504. At most one fault per group of requests
    // sent together (the children of a namespace are applied concurrently, and the first
    // failure abandons the others' requests).
    let injected = [
        (Verb::Patch, "subscriptions", Some("status"), 500, 1),
        (Verb::Patch, "subscriptions", Some("status"), 504, 1),
        (Verb::Patch, "resourcequotas", None, 409, 1),
        (Verb::Patch, "configmaps", None, 503, 1),
        (Verb::Create, "namespaces", None, 500, 1),
    ];
    for (verb, resource, subresource, status, times) in injected {
        let mut rule = FaultRule::new(verb, resource).status(status).times(times);
        if let Some(subresource) = subresource {
            rule = rule.subresource(subresource);
        }
        faults.inject(rule);
    }
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"namespaces": ["acme-prod", "acme-dev"]}),
    ))
    .await;
    faults.cut_watches();
    let active = wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    assert_eq!(
        state_of(&active, types::PROVISIONED).map(|c| c.0),
        Some("True".to_owned())
    );
    for ns in ["acme-prod", "acme-dev"] {
        wait_for_child::<ResourceQuota>(&h, ns, "flotilla-quota", "applied", |_| true).await;
        wait_for_child::<ConfigMap>(&h, ns, "flotilla-entitlements", "applied", |_| true).await;
    }
    assert_eq!(faults.pending(), 0, "every injected fault was hit");

    // Every failure came back to the controller, which retried the request later.
    let sent = [
        (Method::PATCH, "/subscriptions/acme/status", 500),
        (Method::PATCH, "/subscriptions/acme/status", 504),
        (Method::PATCH, "/resourcequotas/flotilla-quota", 409),
        (Method::PATCH, "/configmaps/flotilla-entitlements", 503),
        (Method::POST, "/api/v1/namespaces", 500),
    ];
    for (method, path, failure) in sent {
        let statuses = h.log.statuses(&method, path);
        let failed_at = statuses.iter().position(|s| *s == failure);
        let retried = failed_at.is_some_and(|at| statuses[at + 1..].iter().any(|s| *s < 300));
        assert!(retried, "{method} …{path}: {statuses:?}");
    }
    assert!(
        h.metric(r#"flotilla_reconcile_errors_total{class="transient",controller="subscription"}"#)
            >= 5.0,
        "one failed reconcile per fault"
    );
    assert_eq!(
        h.metric(r#"flotilla_reconcile_errors_total{class="permanent",controller="subscription"}"#),
        0.0
    );
    h.stop().await;
}

#[tokio::test]
async fn a_quota_refusing_a_child_is_reported_on_the_subscription() {
    let (h, _clock) = harness().await;
    h.ready().await;
    // A cluster admin's ResourceQuota in the tenant namespace allows no more ConfigMaps: the
    // API server's quota admission refuses Flotilla's entitlements twice, then usage drops.
    // (The sandbox has no quota admission, so the client gives the API server's answer.)
    let message = r#"configmaps "flotilla-entitlements" is forbidden: exceeded quota: tenant-limits, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"#;
    let refusal = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Forbidden",
        "details": {"name": "flotilla-entitlements", "kind": "configmaps"}, "code": 403,
    });
    let path = "/namespaces/acme/configmaps/flotilla-entitlements";
    h.log.respond(Method::PATCH, path, 403, refusal, 2);
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription("acme", "team", json!({})))
        .await;

    let refused = wait_for_subscription(&h, "acme", "Provisioned=False QuotaExceeded", |s| {
        state_of(s, types::PROVISIONED)
            .is_some_and(|c| c == ("False".to_owned(), "QuotaExceeded".to_owned()))
    })
    .await;
    let provisioned = condition(&refused, types::PROVISIONED).expect("Provisioned");
    assert!(
        provisioned
            .message
            .starts_with("applying ConfigMap acme/flotilla-entitlements was refused"),
        "{}",
        provisioned.message
    );
    assert!(
        provisioned.message.contains(message),
        "{}",
        provisioned.message
    );
    assert_eq!(
        state_of(&refused, types::READY),
        Some(("False".to_owned(), "QuotaExceeded".to_owned()))
    );
    let warning = wait_for_event(&h, "acme", "QuotaExceeded").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning.note.as_deref().unwrap_or("").contains(message),
        "{:?}",
        warning.note
    );

    // Retried (slowly by the error policy — its delay is pinned by the Plan tests — and
    // sooner when a watch event of the tenant arrives), and once the quota lets the
    // ConfigMap in, provisioned and Ready.
    let active = wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    assert_eq!(
        state_of(&active, types::PROVISIONED).map(|c| c.0),
        Some("True".to_owned())
    );
    assert_eq!(
        state_of(&active, types::READY).map(|c| c.0),
        Some("True".to_owned())
    );
    assert_eq!(h.log.canned_pending(), 0);
    let applies = h.log.requests(&Method::PATCH, path);
    let statuses: Vec<_> = applies.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses[..3],
        [Some(403), Some(403), Some(201)],
        "{applies:?}"
    );
    assert_eq!(
        h.metric(r#"flotilla_reconcile_errors_total{class="forbidden",controller="subscription"}"#),
        2.0
    );
    let warnings = h
        .events_about("Subscription", "acme")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("QuotaExceeded"))
        .count();
    assert_eq!(warnings, 1, "one Warning for the streak");
    h.stop().await;
}

#[tokio::test]
async fn a_child_deleted_while_its_watch_was_down_is_found_by_the_re_list() {
    let (h, _clock) = steady_subscription().await;
    // The LimitRange watch goes down and stays down (every re-watch fails); every other
    // watch resumes at once.
    let faults = h.sandbox().faults();
    faults.inject(
        FaultRule::new(Verb::Watch, "limitranges")
            .status(503)
            .times(1_000),
    );
    let before = h.watches_served();
    faults.cut_watches();
    h.wait_for_rewatches(
        &before,
        &[
            ("subscriptions", 1),
            ("plans", 1),
            ("namespaces", 1),
            ("resourcequotas", 1),
            ("rolebindings", 1),
            ("networkpolicies", 1),
            ("configmaps", 1),
        ],
    )
    .await;

    // Meanwhile the tenant drifts, and the history is compacted: resuming the LimitRange
    // watch gets 410 Gone.
    namespaced::<LimitRange>(&h, "acme")
        .delete("flotilla-limits", &DeleteParams::default())
        .await
        .expect("delete limits");
    h.sandbox().store().compact();
    let lists_before = h.sandbox().requests().count(Verb::List, "limitranges");
    wait_until_idle(&h).await;
    assert!(
        namespaced::<LimitRange>(&h, "acme")
            .get_opt("flotilla-limits")
            .await
            .expect("get")
            .is_none(),
        "nothing told the controller yet"
    );

    // The watch resumes, gets 410 Gone and re-lists; the index finds the missing child.
    faults.clear();
    wait_for_child::<LimitRange>(
        &h,
        "acme",
        "flotilla-limits",
        "re-created after a re-list",
        |_| true,
    )
    .await;
    assert!(
        h.sandbox().requests().count(Verb::List, "limitranges") > lists_before,
        "the watcher re-listed"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_subscription_that_never_provisioned_is_deleted_at_once() {
    let (h, _clock) = harness().await;
    h.create::<Subscription>(subscription(
        "acme",
        "missing",
        json!({"deletionPolicy": "Delete"}),
    ))
    .await;
    wait_for_subscription(&h, "acme", "Pending with the finalizer", |s| {
        phase(s) == Some(SubscriptionPhase::Pending)
            && s.finalizers().iter().any(|f| f == FINALIZER)
    })
    .await;
    subscriptions(&h)
        .delete("acme", &DeleteParams::default())
        .await
        .expect("delete");
    wait_until_gone(&h, "acme").await;
    h.stop().await;
}

#[tokio::test]
async fn a_namespace_dropped_from_the_spec_is_let_go_per_the_deletion_policy() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"namespaces": ["acme-prod", "acme-dev", "acme-qa"], "deletionPolicy": "Delete"}),
    ))
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;

    merge_patch_subscription(&h, "acme", json!({"spec": {"namespaces": ["acme-prod"]}})).await;
    let shrunk = wait_for_subscription(&h, "acme", "one namespace", |s| {
        is_current(s)
            && s.status
                .as_ref()
                .is_some_and(|st| st.namespaces == ["acme-prod"])
    })
    .await;
    assert_eq!(phase(&shrunk), Some(SubscriptionPhase::Active));
    wait_for_namespace(&h, "acme-dev", "deleted", |ns| ns.is_none()).await;
    wait_for_namespace(&h, "acme-qa", "deleted", |ns| ns.is_none()).await;
    assert!(namespace(&h, "acme-prod").await.is_some());

    // Under Retain, a dropped namespace is released instead.
    merge_patch_subscription(
        &h,
        "acme",
        json!({"spec": {"namespaces": ["acme-prod", "acme-dev"], "deletionPolicy": "Retain"}}),
    )
    .await;
    wait_for_child::<ResourceQuota>(
        &h,
        "acme-dev",
        "flotilla-quota",
        "provisioned again",
        |_| true,
    )
    .await;
    merge_patch_subscription(&h, "acme", json!({"spec": {"namespaces": ["acme-prod"]}})).await;
    wait_for_namespace(&h, "acme-dev", "released", |ns| {
        ns.is_some_and(|ns| {
            ns.owner_references().is_empty() && label(ns, "flotilla.dev/subscription").is_none()
        })
    })
    .await;
    let quota: ResourceQuota = namespaced(&h, "acme-dev")
        .get("flotilla-quota")
        .await
        .expect("kept");
    assert!(quota.owner_references().is_empty());
    h.stop().await;
}

/// One scenario through every path of the Plan and Subscription controllers that needs a
/// grant — provisioning with owners and isolation, suspension and resumption of Deployments
/// and StatefulSets, drift, a plan that stops asking for limits and isolation, a namespace
/// dropped under Retain (released), cancellation under Delete and Retain, a Plan deleted —
/// and then, by the sandbox's RBAC evaluator: each verb of each rule of `config/rbac/` on
/// these resources, taken out alone, would have refused one of the operator's requests.
#[tokio::test]
async fn the_operator_role_grants_exactly_what_the_subscription_controllers_use() {
    let (h, _clock) = harness().await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "keep",
        "team",
        json!({"namespaces": ["keep-a", "keep-b"], "deletionPolicy": "Retain",
               "owners": [{"kind": "User", "name": "ada@acme.example"}]}),
    ))
    .await;
    h.create::<Subscription>(subscription(
        "gone",
        "team",
        json!({"namespaces": ["gone-a"], "deletionPolicy": "Delete"}),
    ))
    .await;
    wait_for_phase(&h, "keep", SubscriptionPhase::Active).await;
    wait_for_phase(&h, "gone", SubscriptionPhase::Active).await;
    h.ready().await;

    // Suspended and resumed: Deployments and StatefulSets listed and scaled.
    deployment(&h, "keep-a", "web", Some(2)).await;
    stateful_set(&h, "keep-a", "db", 1).await;
    merge_patch_subscription(&h, "keep", json!({"spec": {"state": "Suspended"}})).await;
    wait_for_phase(&h, "keep", SubscriptionPhase::Suspended).await;
    merge_patch_subscription(&h, "keep", json!({"spec": {"state": null}})).await;
    wait_for_phase(&h, "keep", SubscriptionPhase::Active).await;

    // Drift: a child deleted by hand is created again.
    namespaced::<NetworkPolicy>(&h, "keep-a")
        .delete("flotilla-isolation", &DeleteParams::default())
        .await
        .expect("delete policy");
    wait_for_child::<NetworkPolicy>(&h, "keep-a", "flotilla-isolation", "re-created", |_| true)
        .await;

    // The plan stops asking for a quota, limits and isolation: all three are deleted.
    Api::<Plan>::all(h.client.clone())
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"quota": null, "limitRange": null, "networkIsolation": false}}),
            ),
        )
        .await
        .expect("plan change");
    wait_for(
        "the quota, the limits and the isolation deleted",
        WAIT,
        || async {
            let limits = namespaced::<LimitRange>(&h, "keep-a")
                .get_opt("flotilla-limits")
                .await
                .ok()?;
            let policy = namespaced::<NetworkPolicy>(&h, "keep-a")
                .get_opt("flotilla-isolation")
                .await
                .ok()?;
            let quota = namespaced::<ResourceQuota>(&h, "keep-a")
                .get_opt("flotilla-quota")
                .await
                .ok()?;
            (limits.is_none() && policy.is_none() && quota.is_none()).then_some(())
        },
    )
    .await
    .expect("deleted");

    // A namespace dropped under Retain is released.
    merge_patch_subscription(&h, "keep", json!({"spec": {"namespaces": ["keep-a"]}})).await;
    wait_for_namespace(&h, "keep-b", "released", |ns| {
        ns.is_some_and(|ns| label(ns, "flotilla.dev/subscription").is_none())
    })
    .await;

    // Cancelled under Delete, then under Retain, then the Plan goes.
    for name in ["gone", "keep"] {
        subscriptions(&h)
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        wait_until_gone(&h, name).await;
    }
    wait_for_namespace(&h, "gone-a", "deleted", |ns| ns.is_none()).await;
    let plans: Api<Plan> = Api::all(h.client.clone());
    plans
        .delete("team", &DeleteParams::default())
        .await
        .expect("delete plan");
    wait_for("the Plan to go", WAIT, || async {
        matches!(plans.get_opt("team").await, Ok(None)).then_some(())
    })
    .await
    .expect("gone");

    let subscriptions_resources = |group: &str, resource: &str| match group {
        "flotilla.dev" => resource.starts_with("plans") || resource.starts_with("subscriptions"),
        "" => matches!(
            resource,
            "namespaces" | "resourcequotas" | "limitranges" | "configmaps"
        ),
        // Leader election is leadership.rs's.
        "coordination.k8s.io" => false,
        _ => true,
    };
    let unneeded: Vec<_> = h
        .rbac_unneeded(subscriptions_resources)
        .into_iter()
        // ConfigMaps are also the OTA and Campaigns controllers' (create, get, update). `bind`
        // on the admin ClusterRole is asked by the escalation check of the owners'
        // RoleBinding, not by a request of its own, so the request log cannot show it:
        // `without_bind_on_admin_the_owners_binding_is_refused` runs without it instead.
        .filter(|g| {
            !matches!(
                g.to_string().as_str(),
                "create core/configmaps"
                    | "get core/configmaps"
                    | "update core/configmaps"
                    | "bind rbac.authorization.k8s.io/clusterroles"
            )
        })
        .collect();
    assert!(
        unneeded.is_empty(),
        "config/rbac grants the Plan and Subscription controllers did not need: {unneeded:#?}"
    );
    h.stop().await;
}

/// The enforcement path for real: with `bind` on the admin ClusterRole taken out of
/// `config/rbac/role.yaml`, the sandbox refuses the owners' RoleBinding as an escalation (403)
/// and the tenant's owners get no access.
#[tokio::test]
async fn without_bind_on_admin_the_owners_binding_is_refused() {
    use flotilla_testkit::rbac::{grants_of, operator_user};
    let grant = grants_of(&operator_user())
        .into_iter()
        .find(|g| g.to_string() == "bind rbac.authorization.k8s.io/clusterroles")
        .expect("role.yaml grants bind on admin");
    let h = Harness::start_without(&grant).await;
    h.create::<Plan>(team_plan("team")).await;
    h.create::<Subscription>(subscription(
        "acme",
        "team",
        json!({"owners": [{"kind": "User", "name": "ada@acme.example"}]}),
    ))
    .await;
    let refused = wait_for("the owners' binding refused", WAIT, || async {
        let refused = h.operator_denied();
        refused
            .iter()
            .any(|r| {
                r.starts_with("403 ") && r.contains(" rbac.authorization.k8s.io/rolebindings acme/")
            })
            .then_some(refused)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:#?}", h.operator_denied()));
    assert!(
        refused
            .iter()
            .all(|r| r.contains("rolebindings") && r.ends_with(&format!("({})", operator_user()))),
        "{refused:#?}"
    );
    assert!(
        namespaced::<RoleBinding>(&h, "acme")
            .get_opt("flotilla-owners")
            .await
            .expect("get")
            .is_none()
    );
    let subscription = subscriptions(&h).get("acme").await.expect("get");
    assert_ne!(phase(&subscription), Some(SubscriptionPhase::Active));
    h.stop().await;
}
