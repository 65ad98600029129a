//! Handing an existing namespace over to a Subscription, as an admin would, and cancelling it
//! with `deletionPolicy: Delete`: the namespace Flotilla created is deleted, the handed-over one
//! and the data in it survive, released. Also the reported data-loss case: a label on a
//! namespace the Subscription does not list does nothing.

use anyhow::Context as _;
use flotilla::testing::wait_for;
use flotilla_crds::{Plan, Subscription, SubscriptionPhase};
use flotilla_e2e::{Environment, step_timeout};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const SUBSCRIPTION_LABEL: &str = "flotilla.dev/subscription";

/// Whether `namespace` exists, is not being deleted, and still holds ConfigMap `data`.
async fn intact(env: &Environment, namespace: &str) -> anyhow::Result<Namespace> {
    let found = Api::<Namespace>::all(env.client.clone())
        .get(namespace)
        .await
        .with_context(|| format!("namespace {namespace}"))?;
    anyhow::ensure!(
        found.metadata.deletion_timestamp.is_none(),
        "namespace {namespace} is being deleted"
    );
    Api::<ConfigMap>::namespaced(env.client.clone(), namespace)
        .get("data")
        .await
        .with_context(|| format!("the data in {namespace}"))?;
    Ok(found)
}

#[tokio::test]
async fn a_handed_over_namespace_survives_cancellation_and_a_label_alone_does_nothing()
-> anyhow::Result<()> {
    let env = Environment::start().await?;
    let timeout = step_timeout(&env);
    let (plan, name) = (env.name("handover"), env.name("tenant"));
    let (given, labelled) = (env.name("given"), env.name("labelled"));

    env.apply::<Plan>(&json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
        "metadata": {"name": plan},
        "spec": {"displayName": "Handover", "quota": {"hard": {"pods": "10"}}},
    }))
    .await?;
    for namespace in [&given, &labelled] {
        env.apply::<Namespace>(&json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {SUBSCRIPTION_LABEL: name}},
        }))
        .await?;
        let data: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "data"}, "data": {"orders": "42"},
        }))?;
        Api::<ConfigMap>::namespaced(env.client.clone(), namespace)
            .create(&PostParams::default(), &data)
            .await?;
    }
    // `given` is labelled and listed: handed over. `labelled` is only labelled.
    env.apply::<Subscription>(&json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": name},
        "spec": {"plan": plan, "namespaces": [name, given], "deletionPolicy": "Delete"},
    }))
    .await?;
    let api: Api<Subscription> = Api::all(env.client.clone());
    wait_for(format!("Subscription {name} Active"), timeout, || async {
        let current = api.get_opt(&name).await.ok().flatten()?;
        (current.status.as_ref()?.phase == Some(SubscriptionPhase::Active)).then_some(())
    })
    .await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(env.client.clone(), &given);
    wait_for(format!("the quota in {given}"), timeout, || async {
        quotas.get_opt("flotilla-quota").await.ok().flatten()
    })
    .await?;
    let handed_over = intact(&env, &given).await?;
    anyhow::ensure!(
        handed_over.owner_references().is_empty(),
        "a handed-over namespace never gets an ownerReference"
    );
    // A user edit that Flotilla must not mistake for anything: relabel, then cancel.
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &labelled,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "payments"}}})),
        )
        .await?;

    api.delete(&name, &DeleteParams::default()).await?;
    env.wait_until_gone::<Subscription>(&name).await?;
    env.wait_until_gone::<Namespace>(&name).await?;
    let released = intact(&env, &given).await?;
    anyhow::ensure!(
        !released.labels().contains_key(SUBSCRIPTION_LABEL),
        "{given} is released"
    );
    intact(&env, &labelled).await?;

    for namespace in [&given, &labelled] {
        Api::<Namespace>::all(env.client.clone())
            .delete(namespace, &DeleteParams::default())
            .await?;
        env.wait_until_gone::<Namespace>(namespace).await?;
    }
    Api::<Plan>::all(env.client.clone())
        .delete(&plan, &DeleteParams::default())
        .await?;
    env.wait_until_gone::<Plan>(&plan).await?;
    env.stop().await
}
