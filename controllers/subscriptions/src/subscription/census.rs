//! `flotilla_subscriptions`: Subscriptions by plan and phase, counted at scrape time from the
//! controller's cache, so the gauge is exact without bookkeeping on every transition.

use std::collections::BTreeMap;

use flotilla_crds::{Subscription, SubscriptionPhase};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

/// The metric's name.
pub const METRIC: &str = "flotilla_subscriptions";

/// Counts the cached Subscriptions by `spec.plan` and `status.phase` whenever it is collected.
#[derive(Clone)]
pub struct SubscriptionCensus {
    gauge: IntGaugeVec,
    subscriptions: Store<DeserializeGuard<Subscription>>,
}

impl SubscriptionCensus {
    /// A census over the Subscription cache.
    pub fn new(subscriptions: Store<DeserializeGuard<Subscription>>) -> prometheus::Result<Self> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                METRIC,
                "Subscriptions in the operator's cache, by spec.plan and status.phase.",
            ),
            &["plan", "phase"],
        )?;
        Ok(Self {
            gauge,
            subscriptions,
        })
    }
}

/// Counts by `(plan, phase)`. Every phase of every plan that has a Subscription is present
/// (zero when empty), so `rate()` and alerts see a series before its first member; objects
/// not reconciled yet count as `Pending`. Subscriptions that do not decode are left out (the
/// reconcile error counter reports them).
pub fn count<'a>(
    subscriptions: impl IntoIterator<Item = &'a Subscription>,
) -> BTreeMap<(String, &'static str), i64> {
    let mut counts = BTreeMap::new();
    for subscription in subscriptions {
        let plan = &subscription.spec.plan;
        for phase in SubscriptionPhase::ALL {
            counts.entry((plan.clone(), phase.as_str())).or_insert(0);
        }
        let phase = subscription
            .status
            .as_ref()
            .and_then(|status| status.phase)
            .unwrap_or_default();
        *counts.entry((plan.clone(), phase.as_str())).or_insert(0) += 1;
    }
    counts
}

impl Collector for SubscriptionCensus {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let cached = self.subscriptions.state();
        let counts = count(cached.iter().filter_map(|guarded| guarded.0.as_ref().ok()));
        // Start from scratch so that a plan nobody is on any more disappears.
        self.gauge.reset();
        for ((plan, phase), value) in counts {
            self.gauge
                .with_label_values(&[plan.as_str(), phase])
                .set(value);
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription(plan: &str, phase: Option<&str>) -> Subscription {
        let mut value = serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": "Subscription",
            "metadata": {"name": "s"},
            "spec": {"plan": plan},
        });
        if let Some(phase) = phase {
            value["status"] = serde_json::json!({ "phase": phase });
        }
        serde_json::from_value(value).expect("subscription")
    }

    #[test]
    fn subscriptions_are_counted_by_plan_and_phase() {
        let subscriptions = [
            subscription("team", Some("Active")),
            subscription("team", Some("Active")),
            subscription("team", None),
            subscription("starter", Some("Suspended")),
        ];
        let counts = count(&subscriptions);
        assert_eq!(counts[&("team".to_owned(), "Active")], 2);
        assert_eq!(counts[&("team".to_owned(), "Pending")], 1);
        assert_eq!(counts[&("team".to_owned(), "Suspended")], 0);
        assert_eq!(counts[&("starter".to_owned(), "Suspended")], 1);
        assert_eq!(
            counts.len(),
            2 * SubscriptionPhase::ALL.len(),
            "every phase of every plan"
        );
    }

    #[test]
    fn the_gauge_follows_the_cache() {
        let (store, mut writer) = kube::runtime::reflector::store();
        let census = SubscriptionCensus::new(store).expect("census");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(DeserializeGuard(Ok(
            subscription("team", Some("Trialing")),
        ))));
        let families = census.collect();
        let trialing = families[0]
            .get_metric()
            .iter()
            .find(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.value() == "Trialing")
            })
            .expect("Trialing series");
        assert_eq!(trialing.get_gauge().get_value(), 1.0);
    }
}
