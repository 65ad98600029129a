//! The relations of the Subscriptions domain, each an [`Index`] fed by the watch of the kind that
//! holds the reference, and named after the question it answers:
//!
//! | Index | Fed by | Answers |
//! |---|---|---|
//! | [`SubscribersByPlan`] | Subscriptions | which Subscriptions use a Plan (the Plan's count; whom a Plan change wakes) |
//! | [`SubscriptionsByNamespace`] | Subscriptions | which Subscriptions ask for a namespace |
//! | [`NamespacesByClaim`] | Namespaces | which namespaces carry a Subscription's label, an ownerReference to its UID, or name it as controller |
//!
//! They store names and counts, never objects, so a reconcile or an event looks its relations
//! up instead of scanning a cache.

use std::collections::BTreeSet;

use flotilla_crds::Subscription;
use flotilla_crds::common::labels;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::{predicates, watcher};

use crate::subscription::triggers::controlling_subscription;
use flotilla_runtime::index::{Index, Touched};

/// The Subscriptions on each Plan, from the Subscription watch. A Subscription that does not
/// decode is on no Plan until it is fixed.
pub struct SubscribersByPlan(Index<DeserializeGuard<Subscription>, String>);

impl Default for SubscribersByPlan {
    fn default() -> Self {
        // Only a change of plan matters: no version.
        Self(Index::new(
            |_| None,
            |subscription: &DeserializeGuard<_>| plan_of(subscription).into_iter().collect(),
        ))
    }
}

impl SubscribersByPlan {
    /// Takes one Subscription watch event in; returns the Plans whose subscribers changed.
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<Subscription>>,
    ) -> BTreeSet<String> {
        self.0.apply_watcher_event(event).owners
    }

    /// How many Subscriptions use `plan`.
    pub fn count(&self, plan: &str) -> usize {
        self.0.count(plan)
    }

    /// The names of the Subscriptions that use `plan`, sorted.
    pub fn subscribers(&self, plan: &str) -> impl Iterator<Item = &str> {
        self.0.objects(plan).map(|key| &**key)
    }
}

fn plan_of(subscription: &DeserializeGuard<Subscription>) -> Option<String> {
    match &subscription.0 {
        Ok(subscription) => Some(subscription.spec.plan.clone()),
        Err(invalid) => {
            tracing::warn!(
                subscription = invalid.metadata.name.as_deref().unwrap_or(""),
                error = %invalid.error,
                "Subscription cannot be decoded; it is not counted until fixed"
            );
            None
        }
    }
}

/// The Subscriptions that ask for each namespace (`spec.namespaces`, or the one named after the
/// Subscription), from the Subscription watch.
pub struct SubscriptionsByNamespace(Index<DeserializeGuard<Subscription>, String>);

impl Default for SubscriptionsByNamespace {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |subscription: &DeserializeGuard<Subscription>| {
                subscription
                    .0
                    .as_ref()
                    .map(Subscription::desired_namespaces)
                    .unwrap_or_default()
            },
        ))
    }
}

impl SubscriptionsByNamespace {
    /// Takes one Subscription watch event in.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<DeserializeGuard<Subscription>>) {
        self.0.apply_watcher_event(event);
    }

    /// The names of the Subscriptions that ask for `namespace`, sorted.
    pub fn asking_for(&self, namespace: &str) -> impl Iterator<Item = &str> {
        self.0.objects(namespace).map(|key| &**key)
    }
}

/// A claim a namespace carries on Subscriptions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NamespaceClaim {
    /// Its controller ownerReference names this Subscription.
    Controller(String),
    /// Its `flotilla.dev/subscription` label has this value.
    Label(String),
    /// One of its ownerReferences has this UID.
    Owner(String),
}

/// Every namespace's claims, from the Namespace watch (versioned by `resourceVersion`: any
/// change to a namespace may matter to the Subscriptions it concerns).
pub struct NamespacesByClaim(Index<PartialObjectMeta<Namespace>, NamespaceClaim>);

impl Default for NamespacesByClaim {
    fn default() -> Self {
        Self(Index::new(
            predicates::resource_version,
            |namespace: &PartialObjectMeta<Namespace>| claims(namespace),
        ))
    }
}

fn claims(namespace: &PartialObjectMeta<Namespace>) -> Vec<NamespaceClaim> {
    let meta = &namespace.metadata;
    let mut claims: Vec<NamespaceClaim> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|owner| NamespaceClaim::Owner(owner.uid.clone()))
        .collect();
    claims.extend(controlling_subscription(meta).map(NamespaceClaim::Controller));
    claims.extend(
        meta.labels
            .as_ref()
            .and_then(|labels| labels.get(labels::SUBSCRIPTION))
            .filter(|value| !value.is_empty())
            .cloned()
            .map(NamespaceClaim::Label),
    );
    claims
}

impl NamespacesByClaim {
    /// Takes one Namespace watch event in; returns what it touched.
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<PartialObjectMeta<Namespace>>,
    ) -> Touched<NamespaceClaim> {
        self.0.apply_watcher_event(event)
    }

    /// The names of the namespaces whose `flotilla.dev/subscription` label is `value`, sorted.
    pub fn labelled(&self, value: &str) -> Vec<&str> {
        self.0
            .objects(&NamespaceClaim::Label(value.to_owned()))
            .map(|key| &**key)
            .collect()
    }

    /// The names of the namespaces with an ownerReference to `uid`, sorted.
    pub fn owned_by(&self, uid: &str) -> Vec<&str> {
        self.0
            .objects(&NamespaceClaim::Owner(uid.to_owned()))
            .map(|key| &**key)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::Event;

    fn subscription(name: &str, plan: &str, namespaces: &[&str]) -> DeserializeGuard<Subscription> {
        DeserializeGuard(Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": name},
            "spec": {"plan": plan, "namespaces": namespaces},
        }))
        .expect("subscription")))
    }

    fn undecodable(name: &str) -> DeserializeGuard<Subscription> {
        DeserializeGuard(Err(kube::core::error_boundary::InvalidObject {
            error: "bad".into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
        }))
    }

    #[test]
    fn subscribers_follow_moves_deletions_and_relists() {
        let mut index = SubscribersByPlan::default();
        assert_eq!(
            index.apply_watcher_event(&Event::Apply(subscription("b", "team", &[]))),
            BTreeSet::from(["team".to_owned()])
        );
        index.apply_watcher_event(&Event::Apply(subscription("a", "team", &[])));
        assert_eq!(index.subscribers("team").collect::<Vec<_>>(), ["a", "b"]);
        // A change that is not a change of plan concerns no Plan.
        assert!(
            index
                .apply_watcher_event(&Event::Apply(subscription("a", "team", &["x"])))
                .is_empty()
        );
        assert_eq!(
            index.apply_watcher_event(&Event::Apply(subscription("a", "pro", &[]))),
            BTreeSet::from(["pro".to_owned(), "team".to_owned()])
        );
        assert_eq!((index.count("team"), index.count("pro")), (1, 1));
        // Undecodable: on no Plan.
        assert_eq!(
            index.apply_watcher_event(&Event::Apply(undecodable("b"))),
            BTreeSet::from(["team".to_owned()])
        );
        assert_eq!(index.count("team"), 0);
        // A re-list without `a` (deleted while the watch was down).
        index.apply_watcher_event(&Event::Init);
        index.apply_watcher_event(&Event::InitApply(undecodable("b")));
        assert_eq!(
            index.apply_watcher_event(&Event::InitDone),
            BTreeSet::from(["pro".to_owned()])
        );
        assert_eq!(index.count("pro"), 0);
    }

    #[test]
    fn subscriptions_are_found_by_the_namespaces_they_ask_for() {
        let mut index = SubscriptionsByNamespace::default();
        index.apply_watcher_event(&Event::Apply(subscription(
            "acme",
            "team",
            &["shared", "acme-prod"],
        )));
        index.apply_watcher_event(&Event::Apply(subscription("globex", "team", &["shared"])));
        index.apply_watcher_event(&Event::Apply(subscription("initech", "team", &[])));
        assert_eq!(
            index.asking_for("shared").collect::<Vec<_>>(),
            ["acme", "globex"]
        );
        assert_eq!(
            index.asking_for("initech").collect::<Vec<_>>(),
            ["initech"],
            "named after it"
        );
        index.apply_watcher_event(&Event::Apply(subscription("globex", "team", &["other"])));
        assert_eq!(index.asking_for("shared").collect::<Vec<_>>(), ["acme"]);
        index.apply_watcher_event(&Event::Delete(subscription("acme", "team", &[])));
        assert_eq!(index.asking_for("shared").count(), 0);
    }

    fn owner(name: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "flotilla.dev/v1alpha1".into(),
            kind: "Subscription".into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    fn namespace(
        name: &str,
        label: Option<&str>,
        owners: Vec<OwnerReference>,
        version: &str,
    ) -> PartialObjectMeta<Namespace> {
        PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                resource_version: Some(version.into()),
                labels: label
                    .map(|value| [(labels::SUBSCRIPTION.to_owned(), value.to_owned())].into()),
                owner_references: Some(owners),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        }
    }

    #[test]
    fn namespaces_are_found_by_label_and_owner_uid() {
        let mut index = NamespacesByClaim::default();
        let touched = index.apply_watcher_event(&Event::Apply(namespace(
            "acme-prod",
            Some("acme"),
            vec![owner("acme", "uid-acme", true)],
            "1",
        )));
        assert_eq!(
            touched.owners,
            BTreeSet::from([
                NamespaceClaim::Controller("acme".into()),
                NamespaceClaim::Label("acme".into()),
                NamespaceClaim::Owner("uid-acme".into()),
            ])
        );
        index.apply_watcher_event(&Event::Apply(namespace(
            "handed-over",
            Some("acme"),
            vec![],
            "2",
        )));
        index.apply_watcher_event(&Event::Apply(namespace(
            "dependent",
            None,
            vec![owner("acme", "uid-acme", false)],
            "3",
        )));
        index.apply_watcher_event(&Event::Apply(namespace("default", None, vec![], "4")));
        assert_eq!(index.labelled("acme"), ["acme-prod", "handed-over"]);
        assert_eq!(index.owned_by("uid-acme"), ["acme-prod", "dependent"]);
        assert_eq!(index.labelled("").len(), 0);

        // Released: label and ownerReference removed.
        let touched =
            index.apply_watcher_event(&Event::Apply(namespace("acme-prod", None, vec![], "5")));
        assert!(
            touched
                .owners
                .contains(&NamespaceClaim::Controller("acme".into()))
        );
        assert_eq!(index.labelled("acme"), ["handed-over"]);
        assert_eq!(index.owned_by("uid-acme"), ["dependent"]);
    }
}
