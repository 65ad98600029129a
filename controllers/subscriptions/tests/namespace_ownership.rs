//! Flotilla deletes or scales only what it can prove is its own. A label asks for a namespace to
//! be handed over; it proves nothing. These tests run the real controllers against the sandbox
//! and check, with each deletion policy and in both orders of a handover, that what Flotilla did
//! not create survives: namespaces, the data in them, and objects that merely look like Flotilla's.

mod common;

use common::{Harness, WAIT, plan};
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Plan, Subscription, SubscriptionPhase};
use flotilla_runtime::testing::wait_for;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const SUBSCRIPTION_LABEL: &str = "flotilla.dev/subscription";

fn subscription(name: &str, spec: Value) -> Value {
    let mut full = json!({"plan": "team"});
    if let (Some(full), Value::Object(extra)) = (full.as_object_mut(), spec) {
        full.extend(extra);
    }
    json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": name},
        "spec": full,
    })
}

fn phase(subscription: &Subscription) -> Option<SubscriptionPhase> {
    subscription.status.as_ref().and_then(|s| s.phase)
}

async fn wait_for_subscription(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&Subscription) -> bool,
) -> Subscription {
    let api: Api<Subscription> = Api::all(h.client.clone());
    wait_for(format!("Subscription {name}: {what}"), WAIT, || {
        let api = api.clone();
        let check = &check;
        async move { api.get_opt(name).await.ok().flatten().filter(|s| check(s)) }
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"))
}

async fn wait_for_phase(h: &Harness, name: &str, wanted: SubscriptionPhase) -> Subscription {
    wait_for_subscription(h, name, wanted.as_str(), |s| {
        phase(s) == Some(wanted)
            && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
    })
    .await
}

async fn delete_subscription(h: &Harness, name: &str) {
    let api: Api<Subscription> = Api::all(h.client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete Subscription");
    wait_for(format!("Subscription {name} to be gone"), WAIT, || async {
        matches!(api.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
    .unwrap_or_else(|error| panic!("{error}"));
}

async fn merge_patch<K>(api: &Api<K>, name: &str, patch: Value)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|error| panic!("patch {name}: {error}"));
}

fn namespaces(h: &Harness) -> Api<Namespace> {
    Api::all(h.client.clone())
}

async fn namespace(h: &Harness, name: &str) -> Option<Namespace> {
    namespaces(h).get_opt(name).await.expect("get namespace")
}

/// Someone's namespace with data in it, Flotilla's nowhere.
async fn precious_namespace(h: &Harness, name: &str) {
    namespaces(h)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace"),
        )
        .await
        .expect("create namespace");
    Api::<ConfigMap>::namespaced(h.client.clone(), name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "data"}, "data": {"orders": "42"},
            }))
            .expect("config map"),
        )
        .await
        .expect("create data");
}

/// The namespace still exists, is not terminating, and still holds its data.
async fn assert_intact(h: &Harness, name: &str) -> Namespace {
    let found = namespace(h, name)
        .await
        .unwrap_or_else(|| panic!("namespace {name} was deleted"));
    assert!(
        found.metadata.deletion_timestamp.is_none(),
        "namespace {name} is being deleted"
    );
    let data = Api::<ConfigMap>::namespaced(h.client.clone(), name)
        .get_opt("data")
        .await
        .expect("get data")
        .unwrap_or_else(|| panic!("the data in {name} was deleted"));
    assert_eq!(
        data.data.and_then(|d| d.get("orders").cloned()).as_deref(),
        Some("42")
    );
    found
}

async fn label_namespace(h: &Harness, name: &str, subscription: &str) {
    merge_patch(
        &namespaces(h),
        name,
        json!({"metadata": {"labels": {SUBSCRIPTION_LABEL: subscription}}}),
    )
    .await;
}

async fn replicas(h: &Harness, namespace: &str, name: &str) -> Option<i32> {
    Api::<Deployment>::namespaced(h.client.clone(), namespace)
        .get(name)
        .await
        .expect("deployment")
        .spec
        .and_then(|s| s.replicas)
}

async fn deployment(h: &Harness, namespace: &str, name: &str, replicas: i32) {
    let object: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx"}]},
            },
        },
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(h.client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .expect("create deployment");
}

/// The reported case: with `deletionPolicy: Delete`, labelling an unrelated namespace with the
/// Subscription's name got it deleted within seconds. Now the label is only a request for a
/// handover that the spec never made: the namespace is neither retired, nor scaled on
/// suspension, nor deleted on cancellation.
#[tokio::test]
async fn a_label_alone_never_gets_a_namespace_deleted_or_scaled() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    h.create::<Subscription>(subscription("victim", json!({"deletionPolicy": "Delete"})))
        .await;
    wait_for_phase(&h, "victim", SubscriptionPhase::Active).await;
    precious_namespace(&h, "precious").await;
    deployment(&h, "precious", "shop", 2).await;
    deployment(&h, "victim", "app", 3).await;

    label_namespace(&h, "precious", "victim").await;
    h.reconcile_once_more("victim").await;
    assert_intact(&h, "precious").await;

    // Suspension scales the tenant's own workloads, and nothing in the labelled namespace.
    merge_patch(
        &Api::<Subscription>::all(h.client.clone()),
        "victim",
        json!({"spec": {"state": "Suspended"}}),
    )
    .await;
    wait_for_phase(&h, "victim", SubscriptionPhase::Suspended).await;
    assert_eq!(replicas(&h, "victim", "app").await, Some(0));
    assert_eq!(replicas(&h, "precious", "shop").await, Some(2));

    delete_subscription(&h, "victim").await;
    let precious = assert_intact(&h, "precious").await;
    assert!(precious.owner_references().is_empty());
    assert_eq!(replicas(&h, "precious", "shop").await, Some(2));
    let own = namespace(&h, "victim").await;
    assert!(
        own.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
        "the namespace Flotilla created is deleted"
    );
    h.stop().await;
}

#[derive(Clone, Copy, Debug)]
enum Order {
    LabelThenSpec,
    SpecThenLabel,
}

/// A namespace handed over to a Subscription is provisioned like its own, but it never gets
/// an ownerReference and is released, never deleted, on cancellation: in both orders of the
/// handover and with either deletion policy. The namespace Flotilla created beside it follows
/// the policy.
#[tokio::test]
async fn a_handed_over_namespace_survives_cancellation_in_either_order_and_policy() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    let cases = [
        (Order::LabelThenSpec, "Delete"),
        (Order::LabelThenSpec, "Retain"),
        (Order::SpecThenLabel, "Delete"),
        (Order::SpecThenLabel, "Retain"),
    ];
    for (i, (order, policy)) in cases.into_iter().enumerate() {
        let name = format!("tenant-{i}");
        let given = format!("given-{i}");
        precious_namespace(&h, &given).await;
        let both = json!([name, given]);
        match order {
            Order::LabelThenSpec => {
                // The reported sequence: label first, then list it in the spec.
                h.create::<Subscription>(subscription(
                    &name,
                    json!({"namespaces": [name], "deletionPolicy": policy}),
                ))
                .await;
                wait_for_phase(&h, &name, SubscriptionPhase::Active).await;
                label_namespace(&h, &given, &name).await;
                h.reconcile_once_more(&name).await;
                // The label waits for the spec: neither retired nor stripped.
                let waiting = assert_intact(&h, &given).await;
                assert_eq!(
                    waiting.labels().get(SUBSCRIPTION_LABEL).map(String::as_str),
                    Some(name.as_str())
                );
                merge_patch(
                    &Api::<Subscription>::all(h.client.clone()),
                    &name,
                    json!({"spec": {"namespaces": both}}),
                )
                .await;
            }
            Order::SpecThenLabel => {
                h.create::<Subscription>(subscription(
                    &name,
                    json!({"namespaces": both, "deletionPolicy": policy}),
                ))
                .await;
                let refused = wait_for_subscription(&h, &name, "NamespaceConflict", |s| {
                    s.status
                        .as_ref()
                        .and_then(|st| find_condition(&st.conditions, types::READY))
                        .is_some_and(|c| c.reason == reasons::NAMESPACE_CONFLICT)
                })
                .await;
                let message = &refused
                    .status
                    .as_ref()
                    .and_then(|st| find_condition(&st.conditions, types::READY))
                    .expect("Ready")
                    .message;
                assert!(message.contains("to hand it over"), "{message}");
                label_namespace(&h, &given, &name).await;
            }
        }
        wait_for_phase(&h, &name, SubscriptionPhase::Active).await;
        let quotas: Api<ResourceQuota> = Api::namespaced(h.client.clone(), &given);
        wait_for(format!("the quota in {given}"), WAIT, || async {
            quotas.get_opt("flotilla-quota").await.ok().flatten()
        })
        .await
        .expect("provisioned");
        let provisioned = assert_intact(&h, &given).await;
        assert!(
            provisioned.owner_references().is_empty(),
            "{order:?}/{policy}: a handed-over namespace never gets an ownerReference"
        );

        delete_subscription(&h, &name).await;
        let released = assert_intact(&h, &given).await;
        assert!(
            !released
                .labels()
                .keys()
                .any(|key| key.starts_with("flotilla.dev/")),
            "{order:?}/{policy}: released: {:?}",
            released.labels()
        );
        let reasons: Vec<String> = h
            .events_about("Subscription", &name)
            .await
            .into_iter()
            .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(&given)))
            .filter_map(|e| e.reason)
            .filter(|reason| reason.starts_with("Namespace"))
            .collect();
        assert_eq!(reasons, ["NamespaceReleased"], "{order:?}/{policy}");
        let quota = quotas.get("flotilla-quota").await.expect("the quota stays");
        assert!(
            quota.owner_references().is_empty(),
            "{order:?}/{policy}: the quota is released with its namespace"
        );
        let own = namespace(&h, &name).await;
        match policy {
            "Delete" => assert!(
                own.is_none_or(|ns| ns.metadata.deletion_timestamp.is_some()),
                "{order:?}: the namespace Flotilla created is deleted"
            ),
            _ => assert!(
                own.is_some_and(|ns| ns.metadata.deletion_timestamp.is_none()),
                "{order:?}: Retain keeps the namespace Flotilla created"
            ),
        }
    }
    h.stop().await;
}

/// A handed-over namespace the spec stops listing is released, not deleted, under `Delete`;
/// one whose owner set `flotilla.dev/allow-deletion: "true"` is deleted.
#[tokio::test]
async fn a_handed_over_namespace_is_deleted_only_when_opted_in() {
    let h = Harness::start().await;
    h.create::<Plan>(plan("team")).await;
    for given in ["kept", "disposable"] {
        precious_namespace(&h, given).await;
        label_namespace(&h, given, "acme").await;
    }
    merge_patch(
        &namespaces(&h),
        "disposable",
        json!({"metadata": {"annotations": {"flotilla.dev/allow-deletion": "true"}}}),
    )
    .await;
    h.create::<Subscription>(subscription(
        "acme",
        json!({"namespaces": ["acme", "kept", "disposable"], "deletionPolicy": "Delete"}),
    ))
    .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;

    merge_patch(
        &Api::<Subscription>::all(h.client.clone()),
        "acme",
        json!({"spec": {"namespaces": ["acme"]}}),
    )
    .await;
    wait_for("kept released and disposable deleted", WAIT, || async {
        let kept = namespace(&h, "kept").await?;
        let gone = namespace(&h, "disposable")
            .await
            .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some());
        (gone && !kept.labels().contains_key(SUBSCRIPTION_LABEL)).then_some(())
    })
    .await
    .expect("let go");
    assert_intact(&h, "kept").await;
    h.stop().await;
}

/// Objects that only look like Flotilla's (its name and its managed-by label, but no
/// ownerReference to the Subscription) are neither deleted when the plan stops asking for
/// them nor stripped of their labels when the Subscription is released.
#[tokio::test]
async fn look_alike_children_are_never_deleted_or_released() {
    let h = Harness::start().await;
    // The plan does not isolate the network, so Flotilla wants no NetworkPolicy.
    h.create::<Plan>(plan("team")).await;
    h.create::<Subscription>(subscription("acme", json!({"deletionPolicy": "Retain"})))
        .await;
    wait_for_phase(&h, "acme", SubscriptionPhase::Active).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(h.client.clone(), "acme");
    let look_alike: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {
            "name": "flotilla-isolation",
            "labels": {
                "app.kubernetes.io/managed-by": "flotilla",
                SUBSCRIPTION_LABEL: "acme",
            },
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
    .expect("network policy");
    policies
        .create(&PostParams::default(), &look_alike)
        .await
        .expect("create");
    h.reconcile_once_more("acme").await;
    let kept = policies
        .get("flotilla-isolation")
        .await
        .expect("not deleted");

    delete_subscription(&h, "acme").await;
    let after = policies
        .get("flotilla-isolation")
        .await
        .expect("still there");
    assert_eq!(
        after.labels(),
        kept.labels(),
        "not released: not Flotilla's"
    );
    assert_eq!(after.resource_version(), kept.resource_version());
    h.stop().await;
}
