//! Which Subscriptions a watch event concerns.
//!
//! Every watch other than the Subscriptions' own goes through a [`WatchIndex`]: it remembers,
//! for each watched object, a version and the Subscriptions the object concerns, so that
//!
//! - an event wakes the Subscriptions the object concerns now *and* those it concerned
//!   before (a namespace moving from one Subscription to another wakes both);
//! - an event that changes nothing that matters (same version: a Plan whose status the Plan
//!   controller rewrote) wakes nobody — otherwise every new Subscription on a Plan would, by
//!   the Plan's subscriber count, wake every other Subscription on it, N² reconciles for N
//!   Subscriptions;
//! - a re-list (after a `410 Gone`) is compared with what was known, so a child deleted or
//!   edited while the watch was down still wakes its Subscription, which restores it.
//!   kube-runtime's `owns()` and `watches()` only see the objects of the new list, and
//!   `owns()` would build namespaced references to the cluster-scoped Subscription, which
//!   match nothing.

use std::collections::{BTreeSet, HashMap};

use flotilla_crds::common::labels;
use flotilla_crds::{Plan, Subscription};
use kube::api::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

/// A reference to a Subscription as the controller queues it.
pub type SubscriptionRef = ObjectRef<DeserializeGuard<Subscription>>;

/// What an object is known as: a version, and the Subscriptions it concerns (by name).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    version: String,
    concerns: BTreeSet<String>,
}

/// Reads an object's version: what must change for the object to matter again.
type VersionOf<K> = Box<dyn Fn(&K) -> String + Send + Sync>;
/// Reads the names of the Subscriptions an object concerns.
type ConcernsOf<K> = Box<dyn Fn(&K) -> BTreeSet<String> + Send + Sync>;

/// The version and concerned Subscriptions of every watched object (see the module docs).
pub struct WatchIndex<K> {
    current: HashMap<String, Known>,
    relisting: Option<HashMap<String, Known>>,
    version_of: VersionOf<K>,
    concerns_of: ConcernsOf<K>,
}

impl<K: Resource> WatchIndex<K> {
    /// An empty index.
    pub fn new(
        version_of: impl Fn(&K) -> String + Send + Sync + 'static,
        concerns_of: impl Fn(&K) -> BTreeSet<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            current: HashMap::new(),
            relisting: None,
            version_of: Box::new(version_of),
            concerns_of: Box::new(concerns_of),
        }
    }

    /// Applies one watch event; returns the Subscriptions to wake, sorted, without duplicates.
    pub fn apply(&mut self, event: &watcher::Event<K>) -> Vec<SubscriptionRef> {
        let mut woken = BTreeSet::new();
        match event {
            watcher::Event::Apply(object) => {
                let known = self.known(object);
                let previous = self.current.insert(key_of(object), known.clone());
                if previous.as_ref().map(|p| &p.version) != Some(&known.version) {
                    woken.extend(known.concerns);
                    woken.extend(previous.into_iter().flat_map(|p| p.concerns));
                }
            }
            watcher::Event::Delete(object) => {
                woken.extend((self.concerns_of)(object));
                woken.extend(
                    self.current
                        .remove(&key_of(object))
                        .into_iter()
                        .flat_map(|p| p.concerns),
                );
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                let known = self.known(object);
                if let Some(relisting) = self.relisting.as_mut() {
                    relisting.insert(key_of(object), known);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    for (key, known) in &fresh {
                        match self.current.get(key) {
                            Some(previous) if previous.version == known.version => {}
                            previous => {
                                woken.extend(known.concerns.iter().cloned());
                                woken.extend(previous.into_iter().flat_map(|p| p.concerns.clone()));
                            }
                        }
                    }
                    for (key, previous) in &self.current {
                        if !fresh.contains_key(key) {
                            woken.extend(previous.concerns.iter().cloned());
                        }
                    }
                    self.current = fresh;
                }
            }
        }
        woken.iter().map(|name| ObjectRef::new(name)).collect()
    }

    fn known(&self, object: &K) -> Known {
        Known {
            version: (self.version_of)(object),
            concerns: (self.concerns_of)(object),
        }
    }
}

fn key_of<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The `resourceVersion`: any change to a child may be drift to repair, or usage to report.
pub fn resource_version<K: Resource>(object: &K) -> String {
    object.resource_version().unwrap_or_default()
}

/// What about a Plan can change a Subscription's decision: its spec (through `generation`),
/// whether it decodes, and whether it is being deleted. Its status and labels cannot.
pub fn plan_version(plan: &DeserializeGuard<Plan>) -> String {
    let meta = plan.meta();
    format!(
        "{}/{}/{}",
        meta.generation.unwrap_or_default(),
        plan.0.is_ok(),
        meta.deletion_timestamp.is_some()
    )
}

/// The cached Subscriptions whose `spec.plan` is `plan`.
pub fn subscriptions_on_plan(
    subscriptions: &Store<DeserializeGuard<Subscription>>,
    plan: &str,
) -> BTreeSet<String> {
    subscriptions
        .state()
        .iter()
        .filter_map(|guarded| guarded.0.as_ref().ok())
        .filter(|subscription| subscription.spec.plan == plan)
        .map(|subscription| subscription.name_any())
        .collect()
}

/// The Subscriptions a namespace concerns: the one that controls it, the one its
/// `flotilla.dev/subscription` label names (a namespace handed over by an admin), and every
/// one whose spec lists it (a namespace in conflict that is released or deleted frees them).
pub fn namespace_claimants(
    subscriptions: &Store<DeserializeGuard<Subscription>>,
    namespace: &ObjectMeta,
) -> BTreeSet<String> {
    let name = namespace.name.as_deref().unwrap_or_default();
    let mut claimants: BTreeSet<String> = subscriptions
        .state()
        .iter()
        .filter_map(|guarded| guarded.0.as_ref().ok())
        .filter(|subscription| subscription.desired_namespaces().iter().any(|n| n == name))
        .map(|subscription| subscription.name_any())
        .collect();
    claimants.extend(controlling_subscription(namespace));
    claimants.extend(
        namespace
            .labels
            .as_ref()
            .and_then(|labels| labels.get(labels::SUBSCRIPTION))
            .filter(|label| !label.is_empty())
            .cloned(),
    );
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
    use k8s_openapi::api::core::v1::ConfigMap;
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

    /// A child of `subscription` at `version`.
    fn child(name: &str, subscription: &str, version: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("tenant".into());
        cm.metadata.resource_version = Some(version.into());
        cm.metadata.owner_references = Some(vec![owner(
            "Subscription",
            "flotilla.dev/v1alpha1",
            subscription,
            true,
        )]);
        cm
    }

    fn children() -> WatchIndex<ConfigMap> {
        WatchIndex::new(resource_version, |cm: &ConfigMap| {
            controlling_subscription(&cm.metadata).into_iter().collect()
        })
    }

    fn names(refs: Vec<SubscriptionRef>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn changes_and_deletions_wake_the_owner() {
        let mut index = children();
        assert_eq!(
            names(index.apply(&Event::Apply(child("quota", "acme", "1")))),
            ["acme"]
        );
        assert_eq!(
            names(index.apply(&Event::Apply(child("quota", "acme", "2")))),
            ["acme"]
        );
        assert!(
            index
                .apply(&Event::Apply(child("quota", "acme", "2")))
                .is_empty(),
            "the same version again is nothing new"
        );
        // Taken over by another Subscription: both hear of it.
        assert_eq!(
            names(index.apply(&Event::Apply(child("quota", "globex", "3")))),
            ["acme", "globex"]
        );
        assert_eq!(
            names(index.apply(&Event::Delete(child("quota", "globex", "3")))),
            ["globex"]
        );
    }

    #[test]
    fn a_relist_finds_what_changed_or_vanished_while_the_watch_was_down() {
        let mut index = children();
        for (name, owner) in [
            ("quota", "acme"),
            ("limits", "acme"),
            ("cm", "globex"),
            ("rb", "initech"),
        ] {
            index.apply(&Event::Apply(child(name, owner, "1")));
        }
        let mut woken = Vec::new();
        for event in [
            Event::Init,
            // Unchanged.
            Event::InitApply(child("quota", "acme", "1")),
            // Edited by hand meanwhile.
            Event::InitApply(child("cm", "globex", "7")),
            // New.
            Event::InitApply(child("np", "umbrella", "8")),
            // `limits` and `rb` were deleted meanwhile: absent from the list.
            Event::InitDone,
        ] {
            woken.extend(names(index.apply(&event)));
        }
        assert_eq!(woken, ["acme", "globex", "initech", "umbrella"]);
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
        let mut index = WatchIndex::new(plan_version, |_: &DeserializeGuard<Plan>| {
            BTreeSet::from(["acme".to_owned()])
        });
        assert_eq!(index.apply(&Event::Apply(plan(1, false, false))).len(), 1);
        assert!(
            index.apply(&Event::Apply(plan(1, false, true))).is_empty(),
            "labels and status"
        );
        assert_eq!(
            index.apply(&Event::Apply(plan(2, false, true))).len(),
            1,
            "a new spec"
        );
        assert_eq!(
            index.apply(&Event::Apply(plan(2, true, true))).len(),
            1,
            "being deleted"
        );
        assert_eq!(
            index.apply(&Event::Delete(plan(2, true, true))).len(),
            1,
            "gone"
        );
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
        let (store, mut writer) = kube::runtime::reflector::store();
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
            writer.apply_watcher_event(&Event::Apply(DeserializeGuard(Ok(subscription))));
        }
        let shared = ObjectMeta {
            name: Some("shared".into()),
            labels: Some([(labels::SUBSCRIPTION.to_owned(), "handed-over".to_owned())].into()),
            owner_references: Some(vec![owner(
                "Subscription",
                "flotilla.dev/v1alpha1",
                "acme",
                true,
            )]),
            ..ObjectMeta::default()
        };
        let claimants: Vec<String> = namespace_claimants(&store, &shared).into_iter().collect();
        assert_eq!(claimants, ["acme", "globex", "handed-over"]);
        let default_named = ObjectMeta {
            name: Some("initech".into()),
            ..ObjectMeta::default()
        };
        let claimants: Vec<String> = namespace_claimants(&store, &default_named)
            .into_iter()
            .collect();
        assert_eq!(claimants, ["initech"], "named after the Subscription");
        assert_eq!(
            subscriptions_on_plan(&store, "team")
                .into_iter()
                .collect::<Vec<_>>(),
            ["acme", "globex", "initech"]
        );
    }
}
