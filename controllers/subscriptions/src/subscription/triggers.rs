//! Which Subscriptions a watch event concerns, and which changes of an object matter.
//!
//! Every watch goes through a [`flotilla_runtime::index::Index`], which compares versions (so
//! an unchanged object wakes nobody, and a re-list after a `410 Gone` finds what changed while
//! the watch was down) and remembers owners (so an object handed from one Subscription to
//! another wakes both). The version functions here have kube-runtime's predicate signature:
//!
//! - [`flotilla_runtime::index::reconcile_inputs`] for the Subscriptions themselves: the
//!   controller's own status writes change nothing the reconcile reads, so they wake nobody;
//! - [`plan_version`] for Plans: the Plan controller rewrites a Plan's status for every new
//!   subscriber, which would otherwise make N Subscriptions on one Plan cost N² reconciles;
//! - `resourceVersion` for namespaces and children: any change may be drift to repair or usage
//!   to report.
//!
//! kube-runtime's `owns()` is not used: it builds namespaced references to the cluster-scoped
//! Subscription, which match nothing, and only sees the objects of a new list.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use flotilla_crds::{Plan, Subscription};
use kube::Resource;
use kube::api::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use crate::index::{NamespaceClaim, SubscriptionsByNamespace};
use flotilla_runtime::index::Touched;

/// A reference to a Subscription as the controller queues it.
pub type SubscriptionRef = ObjectRef<DeserializeGuard<Subscription>>;

fn hash(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What about a Plan can change a Subscription's decision: its spec (through `generation`),
/// whether it decodes, and whether it is being deleted. Its status and labels cannot.
pub fn plan_version(plan: &DeserializeGuard<Plan>) -> Option<u64> {
    let meta = plan.meta();
    Some(hash((
        &meta.uid,
        meta.generation,
        plan.0.is_ok(),
        meta.deletion_timestamp.is_some(),
    )))
}

/// The Subscriptions a namespace event concerns: the one that controls the namespace, the one
/// its `flotilla.dev/subscription` label names (a namespace handed over by an admin), and every
/// one whose spec lists it (a namespace in conflict that is released or deleted frees them) —
/// before and after the event.
pub fn claimants(
    touched: &Touched<NamespaceClaim>,
    asking: &SubscriptionsByNamespace,
) -> BTreeSet<String> {
    let mut claimants: BTreeSet<String> = touched
        .owners
        .iter()
        .filter_map(|claim| match claim {
            NamespaceClaim::Controller(name) | NamespaceClaim::Label(name) => Some(name.clone()),
            NamespaceClaim::Owner(_) => None,
        })
        .collect();
    for namespace in &touched.objects {
        claimants.extend(asking.asking_for(namespace).map(str::to_owned));
    }
    claimants
}

/// The name of the Subscription an object's controller ownerReference points to.
pub fn controlling_subscription(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| {
            owner.controller == Some(true)
                && owner.kind == Subscription::kind(&())
                && owner.api_version == Subscription::api_version(&())
        })
        .map(|owner| owner.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_runtime::index::Index;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use kube::runtime::watcher::Event;

    fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            controller: Some(controller),
            block_owner_deletion: None,
        }
    }

    #[test]
    fn plans_matter_only_when_their_spec_or_deletion_changes() {
        let plan = |generation: i64, deleting: bool, label: bool| {
            let mut plan: Plan = serde_json::from_value(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
                "metadata": {"name": "team", "generation": generation},
                "spec": {"displayName": "Team"},
            }))
            .expect("plan");
            if deleting {
                plan.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
            }
            if label {
                plan.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
            }
            DeserializeGuard(Ok(plan))
        };
        let mut index: Index<DeserializeGuard<Plan>, ()> = Index::new(plan_version, |_| Vec::new());
        let mut changed = |event| !index.apply_watcher_event(&event).is_empty();
        assert!(changed(Event::Apply(plan(1, false, false))));
        assert!(
            !changed(Event::Apply(plan(1, false, true))),
            "labels and status"
        );
        assert!(changed(Event::Apply(plan(2, false, true))), "a new spec");
        assert!(changed(Event::Apply(plan(2, true, true))), "being deleted");
        assert!(changed(Event::Delete(plan(2, true, true))), "gone");
    }

    #[test]
    fn only_the_controlling_subscription_owns_a_child() {
        let mut meta = ObjectMeta {
            owner_references: Some(vec![
                owner("Deployment", "apps/v1", "web", false),
                owner("Subscription", "flotilla.dev/v1alpha1", "acme", true),
            ]),
            ..ObjectMeta::default()
        };
        assert_eq!(controlling_subscription(&meta).as_deref(), Some("acme"));
        meta.owner_references = Some(vec![owner("Subscription", "other.io/v1", "acme", true)]);
        assert_eq!(controlling_subscription(&meta), None);
        meta.owner_references = Some(vec![owner(
            "Subscription",
            "flotilla.dev/v1alpha1",
            "acme",
            false,
        )]);
        assert_eq!(controlling_subscription(&meta), None);
    }

    #[test]
    fn namespaces_concern_their_owner_their_label_and_everyone_asking_for_them() {
        let mut asking = SubscriptionsByNamespace::default();
        for (name, namespaces) in [
            ("acme", serde_json::json!(["shared", "acme-prod"])),
            ("globex", serde_json::json!(["shared"])),
            ("initech", serde_json::json!([])),
        ] {
            let subscription: Subscription = serde_json::from_value(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
                "metadata": {"name": name},
                "spec": {"plan": "team", "namespaces": namespaces},
            }))
            .expect("subscription");
            asking.apply_watcher_event(&Event::Apply(DeserializeGuard(Ok(subscription))));
        }
        let mut claims = crate::index::NamespacesByClaim::default();
        let namespace = |name: &str, label: Option<&str>, owners: Vec<OwnerReference>| {
            kube::api::PartialObjectMeta::<k8s_openapi::api::core::v1::Namespace> {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    resource_version: Some("1".into()),
                    labels: label.map(|value| {
                        [(
                            flotilla_crds::common::labels::SUBSCRIPTION.to_owned(),
                            value.to_owned(),
                        )]
                        .into()
                    }),
                    owner_references: Some(owners),
                    ..ObjectMeta::default()
                },
                ..Default::default()
            }
        };
        let shared = namespace(
            "shared",
            Some("handed-over"),
            vec![owner("Subscription", "flotilla.dev/v1alpha1", "acme", true)],
        );
        let touched = claims.apply_watcher_event(&Event::Apply(shared));
        let names: Vec<String> = claimants(&touched, &asking).into_iter().collect();
        assert_eq!(names, ["acme", "globex", "handed-over"]);
        let touched = claims.apply_watcher_event(&Event::Apply(namespace("initech", None, vec![])));
        let names: Vec<String> = claimants(&touched, &asking).into_iter().collect();
        assert_eq!(names, ["initech"], "named after the Subscription");
        // Released by acme: acme still hears of it.
        let touched = claims.apply_watcher_event(&Event::Delete(namespace("shared", None, vec![])));
        let names: Vec<String> = claimants(&touched, &asking).into_iter().collect();
        assert_eq!(names, ["acme", "globex", "handed-over"]);
    }
}
