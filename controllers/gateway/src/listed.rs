//! A watch cache by namespace and name that keeps each object in a compact form of the
//! gateway's choosing (a Device's JSON, a token Secret's hashes), instead of kube-runtime's
//! `Store` of whole decoded objects.
//!
//! A re-list (after the watch fell too far behind) overwrites each object in place and, once
//! the list is through, drops those it did not deliver: kube-runtime's store would build the
//! whole set a second time and swap, doubling the cache for as long as the list takes.

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

use flotilla_runtime::watch::SharedWatch;
use kube::Resource;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

#[derive(Debug)]
struct Listed<V> {
    /// The list that last delivered it.
    list: u32,
    value: V,
}

/// Objects of one kind, kept as `V`.
#[derive(Debug)]
pub struct ListedCache<V> {
    by_namespace: HashMap<Box<str>, HashMap<Box<str>, Listed<V>>>,
    /// The number of the list in progress or last done.
    list: u32,
}

impl<V> Default for ListedCache<V> {
    fn default() -> Self {
        Self {
            by_namespace: HashMap::new(),
            list: 0,
        }
    }
}

impl<V: Send + Sync + 'static> ListedCache<V> {
    /// A cache fed by `watch`'s events, each object kept as `keep` makes it.
    pub fn fed_by<K>(
        watch: &mut SharedWatch<K>,
        keep: impl Fn(&K) -> V + Send + 'static,
    ) -> Arc<RwLock<Self>>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
    {
        let cache = Arc::new(RwLock::new(Self::default()));
        let kept = cache.clone();
        watch.on_event(move |event| {
            kept.write()
                .unwrap_or_else(PoisonError::into_inner)
                .apply(event, &keep);
        });
        cache
    }
}

impl<V> ListedCache<V> {
    /// Applies a watch event, keeping each delivered object as `keep` makes it.
    pub fn apply<K: Resource>(&mut self, event: &watcher::Event<K>, keep: impl Fn(&K) -> V) {
        match event {
            watcher::Event::Init => self.list = self.list.wrapping_add(1),
            watcher::Event::InitApply(object) | watcher::Event::Apply(object) => {
                let meta = object.meta();
                let namespace = meta.namespace.as_deref().unwrap_or_default();
                let name = meta.name.as_deref().unwrap_or_default();
                let listed = Listed {
                    list: self.list,
                    value: keep(object),
                };
                match self.by_namespace.get_mut(namespace) {
                    Some(objects) => {
                        objects.insert(name.into(), listed);
                    }
                    None => {
                        self.by_namespace
                            .insert(namespace.into(), HashMap::from([(name.into(), listed)]));
                    }
                }
            }
            watcher::Event::Delete(object) => {
                let meta = object.meta();
                let namespace = meta.namespace.as_deref().unwrap_or_default();
                if let Some(objects) = self.by_namespace.get_mut(namespace) {
                    objects.remove(meta.name.as_deref().unwrap_or_default());
                }
            }
            watcher::Event::InitDone => {
                let list = self.list;
                for objects in self.by_namespace.values_mut() {
                    objects.retain(|_, listed| listed.list == list);
                }
                self.by_namespace.retain(|_, objects| !objects.is_empty());
            }
        }
    }

    /// The object `namespace/name`, as kept.
    pub fn get(&self, namespace: &str, name: &str) -> Option<&V> {
        Some(&self.by_namespace.get(namespace)?.get(name)?.value)
    }

    /// The kept objects' `namespace/name`s, sorted.
    #[cfg(test)]
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .by_namespace
            .iter()
            .flat_map(|(ns, objects)| objects.keys().map(move |name| format!("{ns}/{name}")))
            .collect();
        names.sort();
        names
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(namespace: &str, name: &str, version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.namespace = Some(namespace.to_owned());
        object.metadata.name = Some(name.to_owned());
        object.metadata.resource_version = Some(version.to_owned());
        object
    }

    fn version(object: &ConfigMap) -> String {
        object.metadata.resource_version.clone().unwrap_or_default()
    }

    #[test]
    fn events_add_replace_and_delete_objects() {
        let mut cache = ListedCache::default();
        cache.apply(&watcher::Event::Init, version);
        cache.apply(&watcher::Event::InitApply(object("a", "x", "1")), version);
        cache.apply(&watcher::Event::InitApply(object("b", "x", "2")), version);
        cache.apply(&watcher::Event::InitDone, version);
        assert_eq!(cache.names(), ["a/x", "b/x"]);
        cache.apply(&watcher::Event::Apply(object("a", "x", "3")), version);
        assert_eq!(cache.get("a", "x").map(String::as_str), Some("3"));
        cache.apply(&watcher::Event::Delete(object("b", "x", "4")), version);
        assert_eq!(cache.names(), ["a/x"]);
        assert!(cache.get("b", "x").is_none());
        assert!(cache.get("a", "y").is_none());
    }

    #[test]
    fn a_relist_updates_in_place_and_drops_what_it_did_not_deliver() {
        let mut cache = ListedCache::default();
        cache.apply(&watcher::Event::Init, version);
        for (name, rv) in [("a", "1"), ("b", "2"), ("c", "3")] {
            cache.apply(&watcher::Event::InitApply(object("ns", name, rv)), version);
        }
        cache.apply(&watcher::Event::InitDone, version);
        // The watch fell behind: b was deleted and d created meanwhile.
        cache.apply(&watcher::Event::Init, version);
        cache.apply(&watcher::Event::InitApply(object("ns", "a", "5")), version);
        // Mid-list, what is not re-listed yet is still served.
        assert_eq!(cache.names(), ["ns/a", "ns/b", "ns/c"]);
        assert_eq!(cache.get("ns", "a").map(String::as_str), Some("5"));
        cache.apply(&watcher::Event::InitApply(object("ns", "c", "3")), version);
        cache.apply(&watcher::Event::InitApply(object("ns", "d", "6")), version);
        cache.apply(&watcher::Event::InitDone, version);
        assert_eq!(cache.names(), ["ns/a", "ns/c", "ns/d"]);
        // A list that delivers nothing empties the cache.
        cache.apply(&watcher::Event::Init, version);
        cache.apply(&watcher::Event::InitDone, version);
        assert!(cache.is_empty());
    }
}
