//! Which Plan each Subscription references, kept from the Subscription watch.
//!
//! `Controller::watches` maps a changed object to the objects to reconcile, but only sees the
//! object's *new* state: a Subscription that moves from plan A to plan B would wake B and
//! leave A's count stale. This index remembers the previous reference, so every event wakes
//! both the old and the new Plan — including Subscriptions that vanished while the watch was
//! down, found by comparing the state before and after a re-list.

use std::collections::{BTreeSet, HashMap};

use kube::Resource;
use kube::runtime::watcher;

/// Reads the name an object references, if any.
type TargetOf<K> = Box<dyn Fn(&K) -> Option<String> + Send + Sync>;

/// The referenced name of every watched object, and what a watch event changes about it.
pub struct ReferenceIndex<K> {
    current: HashMap<String, String>,
    relisting: Option<HashMap<String, String>>,
    target_of: TargetOf<K>,
}

impl<K: Resource> ReferenceIndex<K> {
    /// An empty index; `target_of` reads the referenced name from an object.
    pub fn new(target_of: impl Fn(&K) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            current: HashMap::new(),
            relisting: None,
            target_of: Box::new(target_of),
        }
    }

    /// Applies one watch event and returns the names whose set of referrers may have changed,
    /// sorted and without duplicates.
    pub fn apply(&mut self, event: &watcher::Event<K>) -> Vec<String> {
        let mut touched = BTreeSet::new();
        match event {
            watcher::Event::Apply(object) => {
                let key = key_of(object);
                let new = (self.target_of)(object);
                let old = match &new {
                    Some(target) => self.current.insert(key, target.clone()),
                    None => self.current.remove(&key),
                };
                touched.extend(old);
                touched.extend(new);
            }
            watcher::Event::Delete(object) => {
                touched.extend(self.current.remove(&key_of(object)));
                touched.extend((self.target_of)(object));
            }
            watcher::Event::Init => {
                self.relisting = Some(HashMap::new());
            }
            watcher::Event::InitApply(object) => {
                if let (Some(relisting), Some(target)) =
                    (self.relisting.as_mut(), (self.target_of)(object))
                {
                    relisting.insert(key_of(object), target);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    for (key, target) in &fresh {
                        if self.current.get(key) != Some(target) {
                            touched.insert(target.clone());
                        }
                    }
                    for (key, target) in &self.current {
                        if fresh.get(key) != Some(target) {
                            touched.insert(target.clone());
                        }
                    }
                    self.current = fresh;
                }
            }
        }
        touched.into_iter().collect()
    }

    /// How many objects reference something.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no object references anything.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::collections::BTreeMap;

    /// A stand-in referrer: a ConfigMap whose `data.plan` names a plan.
    fn referrer(name: &str, plan: Option<&str>) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.to_owned());
        cm.data = plan.map(|p| BTreeMap::from([("plan".to_owned(), p.to_owned())]));
        cm
    }

    fn index() -> ReferenceIndex<ConfigMap> {
        ReferenceIndex::new(|cm: &ConfigMap| cm.data.as_ref()?.get("plan").cloned())
    }

    fn initial_list(index: &mut ReferenceIndex<ConfigMap>, objects: &[ConfigMap]) -> Vec<String> {
        index.apply(&watcher::Event::Init);
        for object in objects {
            assert!(
                index
                    .apply(&watcher::Event::InitApply(object.clone()))
                    .is_empty()
            );
        }
        index.apply(&watcher::Event::InitDone)
    }

    #[test]
    fn the_first_list_touches_every_referenced_plan() {
        let mut index = index();
        let touched = initial_list(
            &mut index,
            &[
                referrer("a", Some("team")),
                referrer("b", Some("pro")),
                referrer("c", None),
            ],
        );
        assert_eq!(touched, ["pro", "team"]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn moving_to_another_plan_touches_both() {
        let mut index = index();
        initial_list(&mut index, &[referrer("a", Some("team"))]);
        let touched = index.apply(&watcher::Event::Apply(referrer("a", Some("pro"))));
        assert_eq!(touched, ["pro", "team"]);
        let unchanged = index.apply(&watcher::Event::Apply(referrer("a", Some("pro"))));
        assert_eq!(unchanged, ["pro"], "an update still wakes its plan");
    }

    #[test]
    fn deleting_touches_the_plan_it_referenced() {
        let mut index = index();
        initial_list(&mut index, &[referrer("a", Some("team"))]);
        assert_eq!(
            index.apply(&watcher::Event::Delete(referrer("a", Some("team")))),
            ["team"]
        );
        assert!(index.is_empty());
    }

    #[test]
    fn dropping_the_reference_touches_the_old_plan() {
        let mut index = index();
        initial_list(&mut index, &[referrer("a", Some("team"))]);
        assert_eq!(
            index.apply(&watcher::Event::Apply(referrer("a", None))),
            ["team"]
        );
    }

    #[test]
    fn a_relist_finds_what_changed_while_the_watch_was_down() {
        let mut index = index();
        initial_list(
            &mut index,
            &[
                referrer("a", Some("team")),
                referrer("b", Some("pro")),
                referrer("c", Some("free")),
            ],
        );
        // While disconnected: `a` was deleted, `b` moved to `team`, `c` is unchanged, `d` is new.
        let touched = initial_list(
            &mut index,
            &[
                referrer("b", Some("team")),
                referrer("c", Some("free")),
                referrer("d", Some("enterprise")),
            ],
        );
        assert_eq!(touched, ["enterprise", "pro", "team"]);
        assert_eq!(index.len(), 3);
    }
}
