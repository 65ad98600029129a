//! Tenants as a platform team provisions them: apply the sample Plans and Subscriptions from
//! `config/samples/`, see every Subscription become Active with its namespaces sized by its
//! Plan, then cancel them and clean up.

use std::collections::BTreeMap;

use anyhow::Context as _;
use flotilla::testing::wait_for;
use flotilla_crds::condition::{find_condition, types};
use flotilla_crds::subscription::DeletionPolicy;
use flotilla_crds::{ParsedQuantity, Plan, Subscription, SubscriptionPhase};
use flotilla_e2e::{Environment, samples_of_kind, step_timeout};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::DeleteParams;

/// A resource list with every quantity in canonical form, to compare what a Plan says with
/// what the API server stores (which canonicalises, e.g. `1000` → `1k`).
fn canonical(list: &BTreeMap<String, Quantity>) -> anyhow::Result<BTreeMap<String, String>> {
    list.iter()
        .map(|(name, quantity)| {
            let parsed = ParsedQuantity::from_quantity(quantity)
                .with_context(|| format!("{name}: {}", quantity.0))?;
            Ok((name.clone(), parsed.to_canonical_string()))
        })
        .collect()
}

#[tokio::test]
async fn the_sample_subscriptions_become_active_with_their_quotas() -> anyhow::Result<()> {
    let env = Environment::start().await?;
    let timeout = step_timeout(&env);

    // The sample Plans, under this run's names.
    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    for mut sample in samples_of_kind("Plan")? {
        let sample_name = sample["metadata"]["name"]
            .as_str()
            .unwrap_or("plan")
            .to_owned();
        sample["metadata"] = serde_json::json!({ "name": env.name(&sample_name) });
        plans.insert(sample_name, env.apply::<Plan>(&sample).await?);
    }

    // The sample Subscriptions, their plan and namespaces renamed the same way.
    let mut subscriptions: Vec<Subscription> = Vec::new();
    for mut sample in samples_of_kind("Subscription")? {
        let name = env.name(
            sample["metadata"]["name"]
                .as_str()
                .unwrap_or("subscription"),
        );
        sample["metadata"]["name"] = name.clone().into();
        let plan = sample["spec"]["plan"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        sample["spec"]["plan"] = env.name(&plan).into();
        // Read through a pointer: indexing `sample["spec"]["namespaces"]` mutably would insert
        // `"namespaces": null` into a sample without namespaces, and server-side apply refuses
        // a null in a non-nullable field (422), on a real cluster as in the sandbox.
        let renamed: Option<Vec<serde_json::Value>> = sample
            .pointer("/spec/namespaces")
            .and_then(serde_json::Value::as_array)
            .map(|namespaces| {
                namespaces
                    .iter()
                    .map(|namespace| env.name(namespace.as_str().unwrap_or_default()).into())
                    .collect()
            });
        if let Some(renamed) = renamed {
            sample["spec"]["namespaces"] = serde_json::Value::Array(renamed);
        }
        subscriptions.push(env.apply::<Subscription>(&sample).await?);
    }

    let api: Api<Subscription> = Api::all(env.client.clone());
    for subscription in &subscriptions {
        let name = subscription.metadata.name.clone().unwrap_or_default();
        let active = wait_for(format!("Subscription {name} Active"), timeout, || async {
            let current = api.get_opt(&name).await.ok().flatten()?;
            let status = current.status.as_ref()?;
            let ready = find_condition(&status.conditions, types::READY)?;
            (status.phase == Some(SubscriptionPhase::Active) && ready.status == "True")
                .then_some(current)
        })
        .await?;

        // Every tenant namespace carries its Plan's quota.
        let sample_plan = plans
            .iter()
            .find(|(_, plan)| plan.metadata.name.as_deref() == Some(active.spec.plan.as_str()))
            .map(|(_, plan)| plan)
            .context("the Subscription's Plan was applied")?;
        let wanted = canonical(
            &sample_plan
                .spec
                .quota
                .as_ref()
                .context("every sample Plan has a quota")?
                .hard,
        )?;
        let namespaces = active.desired_namespaces();
        assert_eq!(
            active.status.as_ref().map(|s| s.namespaces.clone()),
            Some(namespaces.clone())
        );
        for namespace in &namespaces {
            let quota: ResourceQuota = Api::namespaced(env.client.clone(), namespace)
                .get("flotilla-quota")
                .await
                .with_context(|| format!("the quota of namespace {namespace}"))?;
            let hard = quota.spec.and_then(|spec| spec.hard).unwrap_or_default();
            assert_eq!(canonical(&hard)?, wanted, "namespace {namespace}");
        }
    }

    // Clean up: cancel every Subscription (Delete policies remove their namespaces; Retain
    // policies leave them, released, for this scenario to remove), then the Plans.
    let namespaces_api: Api<Namespace> = Api::all(env.client.clone());
    for subscription in &subscriptions {
        let name = subscription.metadata.name.clone().unwrap_or_default();
        api.delete(&name, &DeleteParams::default()).await?;
        env.wait_until_gone::<Subscription>(&name).await?;
        for namespace in subscription.desired_namespaces() {
            if subscription.spec.deletion_policy == DeletionPolicy::Retain {
                let kept = namespaces_api
                    .get(&namespace)
                    .await
                    .with_context(|| format!("retained namespace {namespace}"))?;
                let labels = kept.metadata.labels.unwrap_or_default();
                assert!(
                    !labels.contains_key("flotilla.dev/subscription"),
                    "{namespace} was released"
                );
                namespaces_api
                    .delete(&namespace, &DeleteParams::default())
                    .await?;
            }
            env.wait_until_gone::<Namespace>(&namespace).await?;
        }
    }
    for plan in plans.values() {
        let name = plan.metadata.name.clone().unwrap_or_default();
        Api::<Plan>::all(env.client.clone())
            .delete(&name, &DeleteParams::default())
            .await?;
        env.wait_until_gone::<Plan>(&name).await?;
    }

    env.stop().await
}
