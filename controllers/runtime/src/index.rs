//! Relations between objects, kept up to date from watch events, so that no event and no
//! reconcile scans a cache to find which objects concern which.
//!
//! An [`Index`] remembers, for each watched object, a *version* (a predicate's hash: what must
//! change for the object to matter again) and the *owners* it concerns (the Plan a Subscription
//! references, the Subscription that controls a child). [`Index::apply_watcher_event`] returns
//! what an event touched:
//!
//! - a new version or other owners touch the object and its owners before and after (a
//!   namespace handed from one Subscription to another wakes both);
//! - the same version with the same owners touches nothing (a Plan whose status was rewritten);
//! - a re-list (after a `410 Gone`) is compared with what was known once it completes: objects
//!   changed or gone while the watch was down touch their owners, unchanged ones touch nobody.
//!
//! The reverse question — which objects concern an owner — is answered from the same
//! bookkeeping ([`Index::objects`], [`Index::count`]). The index stores keys, versions and
//! owners, never objects.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

/// An object's key in an index: `name` for a cluster-scoped object, `namespace/name` otherwise.
pub type Key = Arc<str>;

/// The key of `object` (see [`Key`]).
pub fn key_of<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(namespace) if !namespace.is_empty() => format!("{namespace}/{name}").into(),
        _ => name.into(),
    }
}

/// The version of a controller's own object whose reconcile reads, besides the status it writes
/// itself, only the object's identity, spec (through `generation`), whether it decodes, its
/// deletion and its finalizers (kube-runtime's predicate signature). The controller's status
/// writes do not change it, so they wake nobody; a deletion and a change of finalizers always
/// do. (Setting `deletionTimestamp` also bumps a positive `generation` on the API server —
/// `BeforeDelete` for graceful and `markAsDeleting` for other deletions — but this does not
/// rely on it.)
pub fn reconcile_inputs<K>(object: &DeserializeGuard<K>) -> Option<u64>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let meta = object.meta();
    let mut hasher = DefaultHasher::new();
    (
        &meta.uid,
        meta.generation,
        object.0.is_ok(),
        meta.deletion_timestamp.is_some(),
        &meta.finalizers,
    )
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// What an index knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known<C> {
    version: Option<u64>,
    owners: Box<[C]>,
}

/// What one watch event changed in an [`Index`]: the objects whose version or owners changed
/// (or that appeared or went), and the owners they concerned before or concern now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touched<C> {
    /// Keys of the objects that changed, sorted.
    pub objects: BTreeSet<Key>,
    /// The owners those objects concerned before or concern now, sorted.
    pub owners: BTreeSet<C>,
}

impl<C> Default for Touched<C> {
    fn default() -> Self {
        Self {
            objects: BTreeSet::new(),
            owners: BTreeSet::new(),
        }
    }
}

impl<C> Touched<C> {
    /// Whether the event changed nothing.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.owners.is_empty()
    }
}

type VersionOf<K> = Box<dyn Fn(&K) -> Option<u64> + Send + Sync>;
type OwnersOf<K, C> = Box<dyn Fn(&K) -> Vec<C> + Send + Sync>;

/// The version and owners of every watched object of kind `K`, and the objects of every owner
/// (see the module docs).
pub struct Index<K, C> {
    known: HashMap<Key, Known<C>>,
    by_owner: HashMap<C, Keys>,
    relisting: Option<HashMap<Key, Known<C>>>,
    version_of: VersionOf<K>,
    owners_of: OwnersOf<K, C>,
    /// Whether `by_owner` is kept (see [`Index::without_lookups`]).
    lookups: bool,
}

impl<K, C> std::fmt::Debug for Index<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("objects", &self.known.len())
            .field("owners", &self.by_owner.len())
            .finish_non_exhaustive()
    }
}

impl<K, C> Index<K, C>
where
    K: Resource,
    C: Clone + Ord + Hash,
{
    /// An empty index. `version_of` has kube-runtime's predicate signature
    /// (`kube::runtime::predicates::resource_version` is one); `owners_of` reads the owners an
    /// object concerns.
    pub fn new(
        version_of: impl Fn(&K) -> Option<u64> + Send + Sync + 'static,
        owners_of: impl Fn(&K) -> Vec<C> + Send + Sync + 'static,
    ) -> Self {
        Self {
            known: HashMap::new(),
            by_owner: HashMap::new(),
            relisting: None,
            version_of: Box::new(version_of),
            owners_of: Box::new(owners_of),
            lookups: true,
        }
    }

    /// Like [`new`](Self::new), for an index only asked whom an event touches: it keeps no
    /// reverse lookups ([`objects`](Self::objects) and [`count`](Self::count) find nothing),
    /// which halves its memory.
    pub fn without_lookups(
        version_of: impl Fn(&K) -> Option<u64> + Send + Sync + 'static,
        owners_of: impl Fn(&K) -> Vec<C> + Send + Sync + 'static,
    ) -> Self {
        Self {
            lookups: false,
            ..Self::new(version_of, owners_of)
        }
    }

    /// Takes one watch event in; returns what it touched.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<K>) -> Touched<C> {
        let mut touched = Touched::default();
        match event {
            watcher::Event::Apply(object) => self.apply_object(object, &mut touched),
            watcher::Event::Delete(object) => {
                let key = key_of(object);
                let previous = self.set(&key, None);
                touched.owners.extend((self.owners_of)(object));
                touched
                    .owners
                    .extend(previous.into_iter().flat_map(|p| p.owners.into_vec()));
                touched.objects.insert(key);
            }
            watcher::Event::Init => self.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(object) => match self.relisting.as_mut() {
                Some(relisting) => {
                    let known = Known {
                        version: (self.version_of)(object),
                        owners: owners(&self.owners_of, object),
                    };
                    relisting.insert(key_of(object), known);
                }
                // Not within a re-list (a watcher always sends `Init` first): as an update.
                None => self.apply_object(object, &mut touched),
            },
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    self.complete_relist(fresh, &mut touched);
                }
            }
        }
        touched
    }

    /// Keys of the objects that concern `owner`, sorted.
    pub fn objects<'a, Q>(&'a self, owner: &Q) -> impl Iterator<Item = &'a Key> + use<'a, K, C, Q>
    where
        C: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_owner.get(owner).into_iter().flat_map(Keys::iter)
    }

    /// How many objects concern `owner`.
    pub fn count<Q>(&self, owner: &Q) -> usize
    where
        C: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_owner.get(owner).map_or(0, Keys::len)
    }

    /// How many objects the index holds.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether the index holds no object.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    fn apply_object(&mut self, object: &K, touched: &mut Touched<C>) {
        let key = key_of(object);
        let known = Known {
            version: (self.version_of)(object),
            owners: owners(&self.owners_of, object),
        };
        if self.known.get(&key) == Some(&known) {
            return;
        }
        touched.owners.extend(known.owners.iter().cloned());
        let previous = self.set(&key, Some(known));
        touched
            .owners
            .extend(previous.into_iter().flat_map(|p| p.owners.into_vec()));
        touched.objects.insert(key);
    }

    fn complete_relist(&mut self, fresh: HashMap<Key, Known<C>>, touched: &mut Touched<C>) {
        let gone: Vec<Key> = self
            .known
            .keys()
            .filter(|key| !fresh.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(previous) = self.set(&key, None) {
                touched.owners.extend(previous.owners.into_vec());
            }
            touched.objects.insert(key);
        }
        for (key, known) in fresh {
            if self.known.get(&key) == Some(&known) {
                continue;
            }
            touched.owners.extend(known.owners.iter().cloned());
            if let Some(previous) = self.set(&key, Some(known)) {
                touched.owners.extend(previous.owners.into_vec());
            }
            touched.objects.insert(key);
        }
    }

    /// Replaces what is known about `key`, keeping the owners' side in step; returns what was
    /// known before.
    fn set(&mut self, key: &Key, known: Option<Known<C>>) -> Option<Known<C>> {
        if !self.lookups {
            return match known {
                Some(known) => self.known.insert(key.clone(), known),
                None => self.known.remove(key),
            };
        }
        let previous = match known {
            Some(known) => {
                for owner in known.owners.iter() {
                    self.by_owner
                        .entry(owner.clone())
                        .or_default()
                        .insert(key.clone());
                }
                self.known.insert(key.clone(), known)
            }
            None => self.known.remove(key),
        };
        if let Some(previous) = &previous {
            let current = self.known.get(key);
            for owner in previous.owners.iter() {
                if current.is_some_and(|c| c.owners.contains(owner)) {
                    continue;
                }
                if let Some(keys) = self.by_owner.get_mut(owner) {
                    keys.remove(key);
                    if keys.len() == 0 {
                        self.by_owner.remove(owner);
                    }
                }
            }
        }
        previous
    }
}

fn owners<K, C: Ord>(owners_of: &OwnersOf<K, C>, object: &K) -> Box<[C]> {
    let mut owners = owners_of(object);
    owners.sort();
    owners.dedup();
    owners.into_boxed_slice()
}

/// The keys of one owner's objects: most owners have one, a Plan may have thousands.
#[derive(Debug, Default)]
enum Keys {
    #[default]
    None,
    One(Key),
    Many(BTreeSet<Key>),
}

impl Keys {
    fn insert(&mut self, key: Key) {
        match self {
            Keys::None => *self = Keys::One(key),
            Keys::One(only) if *only == key => {}
            Keys::One(only) => *self = Keys::Many(BTreeSet::from([only.clone(), key])),
            Keys::Many(keys) => {
                keys.insert(key);
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        match self {
            Keys::One(only) if only == key => *self = Keys::None,
            Keys::Many(keys) => {
                keys.remove(key);
                if keys.len() == 1 {
                    let only = keys.pop_first().expect("one key");
                    *self = Keys::One(only);
                }
            }
            _ => {}
        }
    }

    fn len(&self) -> usize {
        match self {
            Keys::None => 0,
            Keys::One(_) => 1,
            Keys::Many(keys) => keys.len(),
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = &Key> + '_> {
        match self {
            Keys::None => Box::new(std::iter::empty()),
            Keys::One(only) => Box::new(std::iter::once(only)),
            Keys::Many(keys) => Box::new(keys.iter()),
        }
    }
}

/// An index shared between the watch that feeds it and the reconciles and other watches that
/// read it.
pub struct SharedIndex<I>(Arc<Mutex<I>>);

impl<I> Clone for SharedIndex<I> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<I> std::fmt::Debug for SharedIndex<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedIndex")
    }
}

impl<I> SharedIndex<I> {
    /// Shares `index`.
    pub fn new(index: I) -> Self {
        Self(Arc::new(Mutex::new(index)))
    }

    /// The index, for one read or one event. Hold it briefly: the watch that feeds it waits.
    pub fn lock(&self) -> MutexGuard<'_, I> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::predicates;
    use kube::runtime::watcher::Event;

    /// A ConfigMap in `tenant` at `version` whose `data.owner` names its owners (comma-separated).
    fn object(name: &str, owners: &str, version: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("tenant".into());
        cm.metadata.resource_version = Some(version.into());
        cm.data = Some([("owner".to_owned(), owners.to_owned())].into());
        cm
    }

    /// The owners named in `data.owner`.
    fn owners_of(cm: &ConfigMap) -> Vec<String> {
        cm.data
            .as_ref()
            .and_then(|data| data.get("owner"))
            .into_iter()
            .flat_map(|owners| owners.split(','))
            .filter(|owner| !owner.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn index() -> Index<ConfigMap, String> {
        Index::new(predicates::resource_version, owners_of)
    }

    fn owners(touched: &Touched<String>) -> Vec<&str> {
        touched.owners.iter().map(String::as_str).collect()
    }

    fn objects<'a>(index: &'a Index<ConfigMap, String>, owner: &str) -> Vec<&'a str> {
        index.objects(owner).map(|key| &**key).collect()
    }

    #[test]
    fn own_objects_change_with_their_inputs_not_with_their_status() {
        use flotilla_crds::Plan;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let plan = |generation: i64| -> Plan {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
                "metadata": {"name": "team", "uid": "u1", "generation": generation},
                "spec": {"displayName": "Team"},
            }))
            .expect("plan")
        };
        let version = |plan: &Plan| reconcile_inputs(&DeserializeGuard(Ok(plan.clone())));
        let base = plan(1);
        let mut status = base.clone();
        status.status = Some(Default::default());
        status.metadata.resource_version = Some("9".into());
        status.metadata.labels = Some([("x".to_owned(), "y".to_owned())].into());
        assert_eq!(
            version(&status),
            version(&base),
            "status, labels, resourceVersion"
        );
        assert_ne!(version(&plan(2)), version(&base), "spec");
        let mut finalized = base.clone();
        finalized.metadata.finalizers = Some(vec!["flotilla.dev/cleanup".into()]);
        assert_ne!(version(&finalized), version(&base), "finalizers");
        let mut deleted = base.clone();
        deleted.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_ne!(
            version(&deleted),
            version(&base),
            "deletion, even at the same generation"
        );
        let mut recreated = base.clone();
        recreated.metadata.uid = Some("u2".into());
        assert_ne!(
            version(&recreated),
            version(&base),
            "a new object of the same name"
        );
    }

    #[test]
    fn a_key_names_the_namespace_only_for_namespaced_objects() {
        assert_eq!(&*key_of(&object("quota", "", "1")), "tenant/quota");
        let mut cluster_scoped = object("acme", "", "1");
        cluster_scoped.metadata.namespace = None;
        assert_eq!(&*key_of(&cluster_scoped), "acme");
    }

    #[test]
    fn a_new_version_touches_its_owners_and_the_same_version_nobody() {
        let mut index = index();
        let touched = index.apply_watcher_event(&Event::Apply(object("quota", "acme", "1")));
        assert_eq!(owners(&touched), ["acme"]);
        assert_eq!(
            touched.objects.iter().map(|k| &**k).collect::<Vec<_>>(),
            ["tenant/quota"]
        );
        assert_eq!(
            owners(&index.apply_watcher_event(&Event::Apply(object("quota", "acme", "2")))),
            ["acme"]
        );
        assert!(
            index
                .apply_watcher_event(&Event::Apply(object("quota", "acme", "2")))
                .is_empty(),
            "the same version again is nothing new"
        );
        assert_eq!(objects(&index, "acme"), ["tenant/quota"]);
        assert_eq!(index.count("acme"), 1);
    }

    #[test]
    fn a_move_touches_both_owners_and_moves_the_reverse_entry() {
        let mut index = index();
        index.apply_watcher_event(&Event::Apply(object("quota", "acme", "1")));
        index.apply_watcher_event(&Event::Apply(object("limits", "acme", "1")));
        let touched = index.apply_watcher_event(&Event::Apply(object("quota", "globex", "2")));
        assert_eq!(owners(&touched), ["acme", "globex"]);
        assert_eq!(objects(&index, "acme"), ["tenant/limits"]);
        assert_eq!(objects(&index, "globex"), ["tenant/quota"]);
        // Owners without objects are forgotten.
        index.apply_watcher_event(&Event::Apply(object("limits", "", "2")));
        assert_eq!(index.count("acme"), 0);
        assert!(!index.by_owner.contains_key("acme"));
    }

    #[test]
    fn a_move_with_an_unchanged_version_still_touches_both_owners() {
        // A version that ignores the owners (a constant): only the change of owners counts.
        let mut index: Index<ConfigMap, String> = Index::new(
            |_: &ConfigMap| Some(0),
            |cm: &ConfigMap| {
                cm.data
                    .as_ref()
                    .and_then(|d| d.get("owner"))
                    .cloned()
                    .into_iter()
                    .collect()
            },
        );
        index.apply_watcher_event(&Event::Apply(object("sub", "team", "1")));
        assert!(
            index
                .apply_watcher_event(&Event::Apply(object("sub", "team", "2")))
                .is_empty()
        );
        assert_eq!(
            owners(&index.apply_watcher_event(&Event::Apply(object("sub", "pro", "3")))),
            ["pro", "team"]
        );
    }

    #[test]
    fn a_deletion_touches_the_owners_and_forgets_the_object() {
        let mut index = index();
        index.apply_watcher_event(&Event::Apply(object("quota", "acme,globex", "1")));
        assert_eq!(objects(&index, "globex"), ["tenant/quota"]);
        // The deleted object's last state may name other owners than the index knew.
        let touched = index.apply_watcher_event(&Event::Delete(object("quota", "initech", "2")));
        assert_eq!(owners(&touched), ["acme", "globex", "initech"]);
        assert!(index.is_empty());
        assert_eq!(index.count("acme"), 0);
    }

    #[test]
    fn a_relist_touches_what_changed_or_vanished_while_the_watch_was_down() {
        let mut index = index();
        for (name, owner) in [
            ("quota", "acme"),
            ("limits", "acme"),
            ("cm", "globex"),
            ("rb", "initech"),
            ("np", "hooli"),
        ] {
            index.apply_watcher_event(&Event::Apply(object(name, owner, "1")));
        }
        let mut touched = Touched::default();
        for event in [
            Event::Init,
            // Unchanged.
            Event::InitApply(object("quota", "acme", "1")),
            // Edited meanwhile.
            Event::InitApply(object("cm", "globex", "7")),
            // Moved meanwhile, same version.
            Event::InitApply(object("np", "umbrella", "1")),
            // New.
            Event::InitApply(object("new", "wayne", "8")),
            // `limits` and `rb` were deleted meanwhile: absent from the list.
            Event::InitDone,
        ] {
            let step = index.apply_watcher_event(&event);
            if !matches!(event, Event::InitDone) {
                assert!(
                    step.is_empty(),
                    "nothing is touched before the list completes"
                );
            }
            touched.owners.extend(step.owners);
            touched.objects.extend(step.objects);
        }
        assert_eq!(
            owners(&touched),
            ["acme", "globex", "hooli", "initech", "umbrella", "wayne"]
        );
        assert_eq!(
            touched.objects.iter().map(|k| &**k).collect::<Vec<_>>(),
            [
                "tenant/cm",
                "tenant/limits",
                "tenant/new",
                "tenant/np",
                "tenant/rb"
            ]
        );
        assert_eq!(objects(&index, "acme"), ["tenant/quota"]);
        assert_eq!(index.count("initech"), 0);
        assert_eq!(index.count("hooli"), 0);
        assert_eq!(objects(&index, "umbrella"), ["tenant/np"]);
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn an_unchanged_relist_touches_nobody() {
        let mut index = index();
        index.apply_watcher_event(&Event::Apply(object("quota", "acme", "1")));
        index.apply_watcher_event(&Event::Init);
        index.apply_watcher_event(&Event::InitApply(object("quota", "acme", "1")));
        assert!(index.apply_watcher_event(&Event::InitDone).is_empty());
        assert_eq!(objects(&index, "acme"), ["tenant/quota"]);
    }

    #[test]
    fn an_index_without_lookups_touches_the_same_owners() {
        let mut plain = index();
        let mut without = Index::without_lookups(predicates::resource_version, owners_of);
        for event in [
            Event::Apply(object("quota", "acme", "1")),
            Event::Apply(object("quota", "globex", "2")),
            Event::Apply(object("limits", "acme", "3")),
            Event::Init,
            Event::InitApply(object("quota", "globex", "2")),
            Event::InitDone,
        ] {
            assert_eq!(
                without.apply_watcher_event(&event),
                plain.apply_watcher_event(&event)
            );
        }
        assert_eq!(plain.count("globex"), 1);
        assert_eq!(without.count("globex"), 0, "no lookups");
    }

    #[test]
    fn many_objects_of_one_owner_are_listed_in_order() {
        let mut index = index();
        for name in ["c", "a", "b"] {
            index.apply_watcher_event(&Event::Apply(object(name, "team", "1")));
        }
        assert_eq!(
            objects(&index, "team"),
            ["tenant/a", "tenant/b", "tenant/c"]
        );
        index.apply_watcher_event(&Event::Delete(object("b", "team", "2")));
        index.apply_watcher_event(&Event::Delete(object("a", "team", "2")));
        assert_eq!(objects(&index, "team"), ["tenant/c"]);
        assert_eq!(index.count("team"), 1);
    }
}
