//! What the operator last applied to each child object, so a reconcile sends an apply only
//! when it would change something.
//!
//! Controllers repair drift by server-side applying every child on every reconcile. Without a
//! record, that costs one write per child per reconcile — and each write's own watch event
//! triggers the next reconcile, which writes everything again. [`AppliedChildren`] remembers,
//! per child (kind, namespace, name), a hash of the desired object last applied and the
//! version the API server returned for that apply. A child is skipped when the desired object
//! is unchanged and the controller's cache still shows that very version:
//!
//! - any other writer (a person editing the child, another controller) makes a new
//!   `resourceVersion`, the cache no longer matches, and the next reconcile (which the watch
//!   event triggers) applies again — drift is still repaired;
//! - a child missing from the cache is always applied: deleted, or not seen yet;
//! - versions are compared for equality only: `resourceVersion` is opaque, and nothing here
//!   assumes an order between two of them;
//! - the record lives in memory: a restarted operator applies everything once;
//! - entries are forgotten when the watch reports the child deleted, or a re-list no longer
//!   holds it, so the record does not grow with children that are gone.
//!
//! [`Versioning::Content`] serves children whose status another controller writes and whose
//! whole object the controller caches (a ResourceQuota's `status.used`, written by the quota
//! controller on every pod change): it compares everything but `status`, so a status update
//! does not cost a re-apply, while any change of spec or metadata still does.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::api::Patch;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::status::apply_params;

/// A child object: its kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildKey {
    /// The kind, e.g. `ResourceQuota`.
    pub kind: String,
    /// The namespace, empty for a cluster-scoped object.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ChildKey {
    /// The key of `object`. A metadata-only object (`PartialObjectMeta<K>`) has the key of the
    /// whole object, so cache entries and desired objects meet.
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }
}

/// How the version of a child is read, from the cache and from the apply's response alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Versioning {
    /// `metadata.resourceVersion`: any write by anyone is a new version. For children cached
    /// as metadata only.
    ResourceVersion,
    /// Everything but `status`, `metadata.resourceVersion` and `metadata.managedFields`: a
    /// status update by another controller is not a new version. Needs the whole object in
    /// the cache.
    Content,
}

impl Versioning {
    /// The version of `object`, or `None` if it has none (an object that was never stored).
    pub fn of<K: Resource + Serialize>(self, object: &K) -> Option<String> {
        match self {
            Versioning::ResourceVersion => object.meta().resource_version.clone(),
            Versioning::Content => {
                let mut value = serde_json::to_value(object).ok()?;
                let fields = value.as_object_mut()?;
                fields.remove("status");
                if let Some(metadata) = fields
                    .get_mut("metadata")
                    .and_then(serde_json::Value::as_object_mut)
                {
                    metadata.remove("resourceVersion");
                    metadata.remove("managedFields");
                }
                Some(format!("content:{:016x}", fingerprint(&value)?))
            }
        }
    }
}

/// What [`AppliedChildren::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildApply {
    /// The child was applied.
    Applied,
    /// The cache shows the version the last apply of the same desired object returned.
    Unchanged,
}

/// A hash of a desired object's JSON: equal hashes mean the same object to apply.
///
/// 64 bits of SipHash: the chance that a changed desired object hashes like the one applied
/// before is 2⁻⁶⁴ per change. The hasher's keys are fixed, and the record never leaves the
/// process, so the hash need not be stable across Rust releases.
fn fingerprint(value: &impl Serialize) -> Option<u64> {
    let bytes = serde_json::to_vec(value).ok()?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

/// What was last applied to one child.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Applied {
    desired: u64,
    version: String,
}

/// The record of what a controller last applied to each of its children (see the module
/// docs). One per controller; shared between its reconciles and its watches.
#[derive(Debug, Default)]
pub struct AppliedChildren {
    entries: Mutex<HashMap<ChildKey, Applied>>,
    /// Per kind, the children a re-list in progress has shown so far.
    relisting: Mutex<HashMap<String, HashSet<ChildKey>>>,
}

impl AppliedChildren {
    /// An empty record: everything is applied once.
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<ChildKey, Applied>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many children the record holds.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether the record holds no child.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether applying `desired` can be skipped: the last apply of `key` was of the same
    /// desired object (by hash), and `observed` — the child's version in the cache — is the
    /// version that apply returned. A child the cache does not hold is never current.
    pub fn is_current(
        &self,
        key: &ChildKey,
        desired: &impl Serialize,
        observed: Option<&str>,
    ) -> bool {
        let (Some(observed), Some(desired)) = (observed, fingerprint(desired)) else {
            return false;
        };
        self.entries()
            .get(key)
            .is_some_and(|applied| applied.desired == desired && applied.version == observed)
    }

    /// Records that `desired` was applied to `key` and the API server answered with a child
    /// of version `returned`. Without a version, the entry is dropped: the next reconcile
    /// applies again.
    pub fn record(&self, key: ChildKey, desired: &impl Serialize, returned: Option<String>) {
        match (fingerprint(desired), returned) {
            (Some(desired), Some(version)) => {
                self.entries().insert(key, Applied { desired, version });
            }
            _ => self.forget(&key),
        }
    }

    /// Forgets `key`: its next apply is sent whatever the cache shows.
    pub fn forget(&self, key: &ChildKey) {
        self.entries().remove(key);
    }

    /// Server-side applies `desired` (field manager `flotilla`, forced) unless it
    /// [is current](Self::is_current) against `cached`, the controller's cached copy of the
    /// child, read with `versioning`; records the result. A failed apply forgets the child,
    /// since whether it reached the server is unknown.
    pub async fn apply<K, C>(
        &self,
        api: &Api<K>,
        desired: &K,
        cached: Option<&C>,
        versioning: Versioning,
    ) -> Result<ChildApply, kube::Error>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
        C: Resource + Serialize,
    {
        let key = ChildKey::of(desired);
        let observed = cached.and_then(|cached| versioning.of(cached));
        if self.is_current(&key, desired, observed.as_deref()) {
            return Ok(ChildApply::Unchanged);
        }
        match api
            .patch(&desired.name_any(), &apply_params(), &Patch::Apply(desired))
            .await
        {
            Ok(returned) => {
                self.record(key, desired, versioning.of(&returned));
                Ok(ChildApply::Applied)
            }
            Err(error) => {
                self.forget(&key);
                Err(error)
            }
        }
    }

    /// Keeps the record in step with a watch of the children of kind `K`: a deleted child is
    /// forgotten, and so is every child of the kind that a completed re-list no longer holds
    /// (deleted while the watch was down). Call it for every event of the watch.
    pub fn observe<K: Resource<DynamicType = ()>>(&self, event: &watcher::Event<K>) {
        let kind = K::kind(&());
        let mut relisting = self
            .relisting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(_) => {}
            watcher::Event::Delete(object) => self.forget(&ChildKey::of(object)),
            watcher::Event::Init => {
                relisting.insert(kind.into_owned(), HashSet::new());
            }
            watcher::Event::InitApply(object) => {
                if let Some(seen) = relisting.get_mut(kind.as_ref()) {
                    seen.insert(ChildKey::of(object));
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relisting.remove(kind.as_ref()) {
                    self.entries()
                        .retain(|key, _| key.kind != kind || seen.contains(key));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, ResourceQuota, ResourceQuotaStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use kube::api::{ObjectMeta, PartialObjectMeta};

    fn config_map(namespace: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some([("key".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn stored(mut object: ConfigMap, version: &str) -> ConfigMap {
        object.metadata.resource_version = Some(version.to_owned());
        object
    }

    fn quota(hard: &str, used: Option<&str>, version: &str) -> ResourceQuota {
        let list = |value: &str| [("pods".to_owned(), Quantity(value.to_owned()))].into();
        ResourceQuota {
            metadata: ObjectMeta {
                name: Some("flotilla-quota".to_owned()),
                namespace: Some("acme".to_owned()),
                resource_version: Some(version.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ResourceQuotaSpec {
                hard: Some(list(hard)),
                ..Default::default()
            }),
            status: used.map(|used| ResourceQuotaStatus {
                hard: Some(list(hard)),
                used: Some(list(used)),
            }),
        }
    }

    #[test]
    fn a_key_names_kind_namespace_and_name_also_for_metadata_only_objects() {
        let desired = config_map("acme", "settings", "a");
        let key = ChildKey::of(&desired);
        assert_eq!(
            key,
            ChildKey {
                kind: "ConfigMap".into(),
                namespace: "acme".into(),
                name: "settings".into(),
            }
        );
        let cached = PartialObjectMeta::<ConfigMap> {
            metadata: desired.metadata.clone(),
            ..Default::default()
        };
        assert_eq!(ChildKey::of(&cached), key);
    }

    #[test]
    fn nothing_is_current_before_it_was_applied() {
        let record = AppliedChildren::new();
        let desired = config_map("acme", "settings", "a");
        assert!(!record.is_current(&ChildKey::of(&desired), &desired, Some("7")));
    }

    #[test]
    fn the_same_desired_object_at_the_returned_version_is_current() {
        let record = AppliedChildren::new();
        let desired = config_map("acme", "settings", "a");
        let key = ChildKey::of(&desired);
        record.record(key.clone(), &desired, Some("7".into()));
        assert!(record.is_current(&key, &desired, Some("7")));
        assert_eq!(record.len(), 1);
    }

    #[test]
    fn another_writer_a_deletion_or_a_new_desired_object_means_apply() {
        let record = AppliedChildren::new();
        let desired = config_map("acme", "settings", "a");
        let key = ChildKey::of(&desired);
        record.record(key.clone(), &desired, Some("7".into()));
        // Someone else wrote: a new version, whatever its order.
        assert!(!record.is_current(&key, &desired, Some("8")));
        assert!(!record.is_current(&key, &desired, Some("6")));
        // Gone from the cache.
        assert!(!record.is_current(&key, &desired, None));
        // The desired object changed.
        let changed = config_map("acme", "settings", "b");
        assert!(!record.is_current(&key, &changed, Some("7")));
    }

    #[test]
    fn versions_are_opaque_strings() {
        let record = AppliedChildren::new();
        let desired = config_map("acme", "settings", "a");
        let key = ChildKey::of(&desired);
        record.record(key.clone(), &desired, Some("0010".into()));
        assert!(!record.is_current(&key, &desired, Some("10")));
        assert!(record.is_current(&key, &desired, Some("0010")));
    }

    #[test]
    fn an_answer_without_a_version_forgets_the_child() {
        let record = AppliedChildren::new();
        let desired = config_map("acme", "settings", "a");
        let key = ChildKey::of(&desired);
        record.record(key.clone(), &desired, Some("7".into()));
        record.record(key.clone(), &desired, None);
        assert!(record.is_empty());
    }

    #[test]
    fn resource_versioning_reads_the_resource_version_of_metadata_only_objects() {
        let cached = PartialObjectMeta::<LimitRange> {
            metadata: ObjectMeta {
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        };
        assert_eq!(
            Versioning::ResourceVersion.of(&cached).as_deref(),
            Some("42")
        );
        assert_eq!(Versioning::ResourceVersion.of(&LimitRange::default()), None);
    }

    #[test]
    fn content_versioning_ignores_status_and_resource_version_only() {
        let applied = quota("20", None, "5");
        let version = Versioning::Content.of(&applied);
        assert!(version.is_some());
        // The quota controller reported usage: same content.
        assert_eq!(
            Versioning::Content.of(&quota("20", Some("3"), "6")),
            version
        );
        // Someone raised the quota: new content.
        assert_ne!(
            Versioning::Content.of(&quota("500", Some("3"), "7")),
            version
        );
        // Someone labelled it: new content.
        let mut labelled = quota("20", Some("3"), "8");
        labelled.metadata.labels = Some([("team".to_owned(), "x".to_owned())].into());
        assert_ne!(Versioning::Content.of(&labelled), version);
    }

    #[test]
    fn a_deletion_event_forgets_the_child() {
        let record = AppliedChildren::new();
        let desired = config_map("acme", "settings", "a");
        let other = config_map("acme", "other", "a");
        record.record(ChildKey::of(&desired), &desired, Some("7".into()));
        record.record(ChildKey::of(&other), &other, Some("8".into()));
        record.observe(&watcher::Event::Apply(stored(desired.clone(), "7")));
        assert_eq!(record.len(), 2);
        record.observe(&watcher::Event::Delete(stored(desired.clone(), "9")));
        assert_eq!(record.len(), 1);
        assert!(record.is_current(&ChildKey::of(&other), &other, Some("8")));
    }

    #[test]
    fn a_relist_forgets_the_children_of_its_kind_it_no_longer_holds() {
        let record = AppliedChildren::new();
        let kept = config_map("acme", "kept", "a");
        let gone = config_map("acme", "gone", "a");
        let limits = LimitRange {
            metadata: ObjectMeta {
                name: Some("limits".into()),
                namespace: Some("acme".into()),
                ..ObjectMeta::default()
            },
            ..LimitRange::default()
        };
        record.record(ChildKey::of(&kept), &kept, Some("7".into()));
        record.record(ChildKey::of(&gone), &gone, Some("8".into()));
        record.record(ChildKey::of(&limits), &limits, Some("9".into()));

        record.observe::<ConfigMap>(&watcher::Event::Init);
        record.observe(&watcher::Event::InitApply(stored(kept.clone(), "7")));
        // Nothing is forgotten before the list is complete.
        assert_eq!(record.len(), 3);
        record.observe::<ConfigMap>(&watcher::Event::InitDone);

        assert!(record.is_current(&ChildKey::of(&kept), &kept, Some("7")));
        assert!(!record.is_current(&ChildKey::of(&gone), &gone, Some("8")));
        // Another kind's children are not the ConfigMap list's business.
        assert!(record.is_current(&ChildKey::of(&limits), &limits, Some("9")));
        assert_eq!(record.len(), 2);
    }
}
