//! `kubectl flotilla subscription usage NAME`: a tenant's quota usage against its plan's
//! entitlements, in total (the Subscription's `status.usage` and `status.entitlements`) and
//! per tenant namespace (each namespace's `flotilla-quota` ResourceQuota). [`render`] is pure.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use flotilla_crds::{ParsedQuantity, Subscription};
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;

use super::table::Table;

/// The ResourceQuota the Subscription controller keeps in each tenant namespace.
const QUOTA_NAME: &str = "flotilla-quota";

/// `used / hard` as a whole percentage, when both parse and `hard` is not zero.
fn percent(used: Option<&Quantity>, hard: Option<&Quantity>) -> String {
    let parse = |q: Option<&Quantity>| q.and_then(|q| ParsedQuantity::from_quantity(q).ok());
    match (parse(used), parse(hard)) {
        (Some(used), Some(hard)) if !hard.is_zero() => {
            format!("{}%", used.nanos() * 100 / hard.nanos())
        }
        _ => String::new(),
    }
}

fn rows(
    table: &mut Table,
    namespace: &str,
    used: &BTreeMap<String, Quantity>,
    hard: &BTreeMap<String, Quantity>,
) {
    let mut resources: Vec<&String> = hard.keys().chain(used.keys()).collect();
    resources.sort();
    resources.dedup();
    for resource in resources {
        let (u, h) = (used.get(resource), hard.get(resource));
        table.row([
            namespace.to_owned(),
            resource.clone(),
            u.map(|q| q.0.clone()).unwrap_or_default(),
            h.map(|q| q.0.clone()).unwrap_or_default(),
            percent(u, h),
        ]);
    }
}

/// The usage table of `subscription`, with the quotas of its namespaces (name → quota).
pub fn render(subscription: &Subscription, quotas: &BTreeMap<String, ResourceQuota>) -> String {
    let name = subscription.metadata.name.as_deref().unwrap_or_default();
    let status = subscription.status.clone().unwrap_or_default();
    let mut out = format!(
        "Subscription {name}: plan {}, {}\n\n",
        subscription.spec.plan,
        status.phase.map_or("Pending", |p| p.as_str())
    );
    let mut table = Table::new(["NAMESPACE", "RESOURCE", "USED", "ENTITLED", "USE"]);
    rows(&mut table, "(total)", &status.usage, &status.entitlements);
    for (namespace, quota) in quotas {
        let quota_status = quota.status.clone().unwrap_or_default();
        rows(
            &mut table,
            namespace,
            &quota_status.used.unwrap_or_default(),
            &quota_status.hard.unwrap_or_default(),
        );
    }
    if status.usage.is_empty() && status.entitlements.is_empty() && quotas.is_empty() {
        out.push_str("No quota: the plan sets none, or the tenant is not provisioned yet.\n");
    } else {
        out.push_str(&table.render(""));
    }
    out
}

/// `subscription usage NAME`.
pub async fn usage(client: &kube::Client, name: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let subscriptions: Api<Subscription> = Api::all(client.clone());
    let subscription = subscriptions
        .get_opt(name)
        .await
        .with_context(|| format!("reading subscription.{}/{name}", flotilla_crds::GROUP))?
        .with_context(|| {
            format!(
                "subscriptions.{} \"{name}\" not found",
                flotilla_crds::GROUP
            )
        })?;
    let namespaces = subscription
        .status
        .as_ref()
        .map(|s| s.namespaces.clone())
        .unwrap_or_default();
    let mut quotas = BTreeMap::new();
    for namespace in namespaces {
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &namespace);
        // A namespace the caller may not read is left out of the detail; the total stays.
        if let Ok(Some(quota)) = api.get_opt(QUOTA_NAME).await {
            quotas.insert(namespace, quota);
        }
    }
    write!(out, "{}", render(&subscription, &quotas)).context("writing to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_shown_against_entitlements_in_total_and_per_namespace() {
        let subscription: Subscription = serde_json::from_value(serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": "acme"},
            "spec": {"plan": "team", "owners": [{"kind": "User", "name": "ada"}]},
            "status": {
                "phase": "Active",
                "namespaces": ["acme-prod"],
                "usage": {"requests.cpu": "1500m", "pods": "3"},
                "entitlements": {"requests.cpu": "4", "pods": "20"},
            },
        }))
        .unwrap();
        let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": QUOTA_NAME, "namespace": "acme-prod"},
            "status": {"used": {"pods": "3"}, "hard": {"pods": "20"}},
        }))
        .unwrap();
        let text = render(
            &subscription,
            &BTreeMap::from([("acme-prod".to_owned(), quota)]),
        );
        assert!(
            text.starts_with("Subscription acme: plan team, Active\n"),
            "{text}"
        );
        assert!(
            text.contains("(total)    requests.cpu  1500m  4         37%"),
            "{text}"
        );
        assert!(
            text.contains("(total)    pods          3      20        15%"),
            "{text}"
        );
        assert!(
            text.contains("acme-prod  pods          3      20        15%"),
            "{text}"
        );
    }
}
