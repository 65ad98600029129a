//! How every controller watches the API server: one [`SharedWatch`] per kind in the process,
//! whose cache, indexes and wake-ups every controller that reads the kind shares.
//!
//! - bookmarks on and a bounded page size, so re-lists after a dropped watch are cheap;
//! - `managedFields` stripped before objects reach a cache: no controller reads them and they
//!   are often half of an object's size;
//! - watched types wrapped in `kube::core::DeserializeGuard` by the controllers, so one object
//!   that does not decode (a hand-edited status, a version skew) reaches the reconciler as an
//!   error to report instead of failing the whole watch;
//! - watch errors retried with kube-runtime's default backoff.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::config::Config;
use super::index::Index;

/// The watcher configuration every controller uses.
pub fn watcher_config(config: &Config) -> watcher::Config {
    let mut wc = watcher::Config::default().page_size(config.watch_page_size);
    wc.bookmarks = true;
    wc
}

/// What a Secret cache keeps ([`SharedWatch::caching`]): the Secret's identity,
/// `resourceVersion` and `data` — no labels, annotations or managed fields.
pub fn secret_data_only(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> k8s_openapi::api::core::v1::Secret {
    let mut kept = k8s_openapi::api::core::v1::Secret::default();
    kept.metadata.name = secret.metadata.name.clone();
    kept.metadata.namespace = secret.metadata.namespace.clone();
    kept.metadata.resource_version = secret.metadata.resource_version.clone();
    kept.data = secret.data.clone();
    kept
}

/// Drops `metadata.managedFields`, which only the API server needs.
pub fn strip_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Whether a cache has received its first full list. Any number of tasks may wait on it.
///
/// kube-runtime's `Store::wait_until_ready()` wakes only the most recent of several concurrent
/// waiters (it wraps a oneshot channel), and the `Controller` itself waits on its store, so a
/// second waiter — the readiness check, a reconcile — could starve the controller or itself.
/// This signal is a `tokio::sync::watch` channel instead.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl Synced {
    /// Whether the first list has been applied.
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }

    /// A signal driven by `receiver` (for tests of code that waits on caches).
    pub fn from_receiver(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    /// Waits for the first list; `false` if the watch stream was dropped before.
    pub async fn wait(&self) -> bool {
        let mut receiver = self.0.clone();
        receiver.wait_for(|synced| *synced).await.is_ok()
    }

    /// Waits up to `timeout` for every one of `all` to have listed; `false` if one did not.
    pub async fn wait_all(all: &[Synced], timeout: std::time::Duration) -> bool {
        let every = futures::future::join_all(all.iter().map(Synced::wait));
        matches!(tokio::time::timeout(timeout, every).await, Ok(done) if done.iter().all(|d| *d))
    }
}

/// The reference of the object with index key `key` (`name` or `namespace/name`).
pub fn object_ref<K>(key: &str) -> reflector::ObjectRef<K>
where
    K: Resource,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    match key.split_once('/') {
        Some((namespace, name)) => reflector::ObjectRef::new(name).within(namespace),
        None => reflector::ObjectRef::new(key),
    }
}

/// `event` with `keep` applied to its object.
fn event_of<K>(event: &watcher::Event<K>, keep: impl Fn(&K) -> K) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(object) => watcher::Event::Apply(keep(object)),
        watcher::Event::Delete(object) => watcher::Event::Delete(keep(object)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(object) => watcher::Event::InitApply(keep(object)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// A handler of every event of a [`SharedWatch`].
type Handler<K> = Box<dyn FnMut(&watcher::Event<K>) + Send>;

/// The one watch of `K` in the process: a cache, its [`Synced`] signal, and the handlers of
/// every controller that reads the kind (its indexes, its records, its wake-ups).
///
/// # Guarantees
/// - Each event is applied to the store first, then given to every handler in the order they
///   were registered, before the next event is taken: a reconcile woken by a handler sees the
///   store with that event, and a handler sees the indexes registered before it up to date.
/// - Handlers are registered before [`run`](Self::run), so none misses the first list.
///
/// # Caveats
/// Handlers run on the watch's task: they must be quick (index updates, channel sends), never
/// block.
pub struct SharedWatch<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    store: Store<K>,
    synced_tx: watch::Sender<bool>,
    synced: Synced,
    handlers: Vec<Handler<K>>,
    kept: Option<Kept<K>>,
    cached: bool,
}

/// What of each object a [`SharedWatch`]'s cache keeps.
type Kept<K> = Box<dyn Fn(&K) -> K + Send>;

impl<K> SharedWatch<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// A watch of `api` with `config`, named `kind` in logs and readiness (`namespaces`).
    pub fn new(kind: &'static str, api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let (synced_tx, synced_rx) = watch::channel(false);
        Self {
            kind,
            api,
            config,
            writer,
            store,
            synced_tx,
            synced: Synced(synced_rx),
            handlers: Vec::new(),
            kept: None,
            cached: true,
        }
    }

    /// Caches only what `keep` keeps of each object (what the controllers read from the cache),
    /// while handlers still see the whole object: for kinds with many objects of which the
    /// cache needs a few fields.
    #[must_use]
    pub fn caching(mut self, keep: impl Fn(&K) -> K + Send + 'static) -> Self {
        self.kept = Some(Box::new(keep));
        self
    }

    /// Keeps no objects at all (the store stays empty; [`synced`](Self::synced) still says
    /// when the first list is through): for kinds whose handlers keep all the controllers
    /// read, e.g. [`AppliedChildren::apply_watched`](crate::applied::AppliedChildren::apply_watched).
    #[must_use]
    pub fn uncached(mut self) -> Self {
        self.cached = false;
        self
    }

    /// The kind's name, as given to [`new`](Self::new).
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The cache: every object as last seen, `managedFields` stripped.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Set once the first full list has been applied to the store.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }

    /// Calls `handler` with every event, after the store and the handlers registered before.
    pub fn on_event(&mut self, handler: impl FnMut(&watcher::Event<K>) + Send + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// A stream of what `wake` picks from each event (the objects to reconcile), for a
    /// `Controller::reconcile_on`. It ends when the watch stops; once it is dropped, `wake`
    /// still runs but its picks go nowhere.
    pub fn wakes<T, I>(
        &mut self,
        mut wake: impl FnMut(&watcher::Event<K>) -> I + Send + 'static,
    ) -> impl Stream<Item = T> + Send + 'static
    where
        T: Send + 'static,
        I: IntoIterator<Item = T>,
    {
        let (tx, rx) = mpsc::unbounded();
        self.on_event(move |event| {
            for item in wake(event) {
                if tx.unbounded_send(item).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// A stream of the objects whose `version` (a predicate, e.g.
    /// [`reconcile_inputs`](crate::index::reconcile_inputs)) changed: the trigger of a
    /// controller's own objects. Deleted objects are not yielded (there is nothing left to
    /// reconcile); an object first seen is.
    pub fn changes(
        &mut self,
        version: impl Fn(&K) -> Option<u64> + Send + Sync + 'static,
    ) -> impl Stream<Item = reflector::ObjectRef<K>> + Send + 'static {
        let mut index: Index<K, ()> = Index::without_lookups(version, |_| Vec::new());
        self.wakes(move |event| {
            let touched = index.apply_watcher_event(event);
            if matches!(event, watcher::Event::Delete(_)) {
                return Vec::new();
            }
            touched.objects.iter().map(|key| object_ref(key)).collect()
        })
    }

    /// Runs the watch until `stop` completes: watcher with kube-runtime's default backoff,
    /// `managedFields` stripped, the store, then every handler.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let events = watcher(self.api.clone(), self.config.clone())
            .default_backoff()
            .modify(strip_managed_fields::<K>)
            .take_until(stop);
        self.consume(events).await;
    }

    /// Applies `events` to the store and the handlers until the stream ends.
    async fn consume(self, events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>) {
        let Self {
            kind,
            mut writer,
            synced_tx,
            mut handlers,
            kept,
            cached,
            ..
        } = self;
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => {
                    match &kept {
                        _ if !cached => {}
                        Some(keep) => writer.apply_watcher_event(&event_of(&event, keep)),
                        None => writer.apply_watcher_event(&event),
                    }
                    for handler in &mut handlers {
                        handler(&event);
                    }
                    // After the handlers: an uncached kind's indexes take the first list in
                    // at InitDone, and a reconcile let through by `Synced` must find it there.
                    if matches!(event, watcher::Event::InitDone) {
                        synced_tx.send_replace(true);
                    }
                }
                // The watcher retries with backoff by itself.
                Err(error) => tracing::warn!(%error, kind, "watch failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn watchers_use_bookmarks_and_pages() {
        let config = Config {
            watch_page_size: 250,
            ..Config::default()
        };
        let wc = watcher_config(&config);
        assert!(wc.bookmarks);
        assert_eq!(wc.page_size, Some(250));
    }

    #[tokio::test]
    async fn every_waiter_sees_the_sync() {
        let (tx, rx) = watch::channel(false);
        let synced = Synced(rx);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let synced = synced.clone();
                tokio::spawn(async move { synced.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!synced.is_synced());
        tx.send_replace(true);
        for waiter in waiters {
            assert!(waiter.await.expect("joined"));
        }
        assert!(synced.is_synced());
    }

    fn named(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("default".into());
        cm
    }

    #[tokio::test]
    async fn handlers_see_each_event_after_the_store_in_order() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        crate::crypto::use_ring();
        let client = kube::Client::try_from(config).expect("client");
        let mut shared = SharedWatch::new(
            "configmaps",
            Api::<ConfigMap>::all(client),
            watcher::Config::default(),
        );
        let store = shared.store();
        let synced = shared.synced();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let first = seen.clone();
        let reader = store.clone();
        shared.on_event(move |event| {
            if let watcher::Event::Apply(cm) = event {
                // The store already holds what the event says.
                let cached = reader.get(&reflector::ObjectRef::from_obj(cm));
                first
                    .lock()
                    .expect("lock")
                    .push(format!("first {}", cached.is_some()));
            }
        });
        let second = seen.clone();
        shared.on_event(move |_| second.lock().expect("lock").push("second".to_owned()));
        // Synced is signalled only once every handler has taken InitDone in.
        let at_init_done = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (record, watching) = (at_init_done.clone(), synced.clone());
        shared.on_event(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                *record.lock().expect("lock") = Some(watching.is_synced());
            }
        });
        let wakes = shared.wakes(|event| match event {
            watcher::Event::Apply(cm) => vec![cm.metadata.name.clone().unwrap_or_default()],
            _ => Vec::new(),
        });
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(named("a"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(named("b"))),
        ]);
        assert!(!synced.is_synced());
        shared.consume(events).await;
        assert!(synced.is_synced());
        assert_eq!(*at_init_done.lock().expect("lock"), Some(false));
        assert_eq!(store.len(), 2);
        assert_eq!(
            *seen.lock().expect("lock"),
            ["second", "second", "second", "first true", "second"]
        );
        assert_eq!(
            wakes.collect::<Vec<_>>().await,
            ["b"],
            "ends with the watch"
        );
    }

    #[tokio::test]
    async fn the_cache_keeps_what_it_is_told_and_handlers_see_everything() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        crate::crypto::use_ring();
        let client = kube::Client::try_from(config).expect("client");
        let mut shared = SharedWatch::new(
            "configmaps",
            Api::<ConfigMap>::all(client),
            watcher::Config::default(),
        )
        .caching(|cm: &ConfigMap| {
            let mut kept = ConfigMap::default();
            kept.metadata.name = cm.metadata.name.clone();
            kept.metadata.namespace = cm.metadata.namespace.clone();
            kept
        });
        let store = shared.store();
        let seen = shared.wakes(|event| match event {
            watcher::Event::Apply(cm) => vec![cm.data.clone()],
            _ => Vec::new(),
        });
        let mut full = named("a");
        full.data = Some([("k".to_owned(), "v".to_owned())].into());
        let events = futures::stream::iter([Ok(watcher::Event::Apply(full.clone()))]);
        shared.consume(events).await;
        let cached = store
            .get(&reflector::ObjectRef::from_obj(&full))
            .expect("cached");
        assert_eq!(cached.data, None);
        assert_eq!(seen.collect::<Vec<_>>().await, [full.data]);
    }

    #[tokio::test]
    async fn an_uncached_watch_keeps_nothing_and_still_syncs_and_hands_over_everything() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        crate::crypto::use_ring();
        let client = kube::Client::try_from(config).expect("client");
        let mut shared = SharedWatch::new(
            "configmaps",
            Api::<ConfigMap>::all(client),
            watcher::Config::default(),
        )
        .uncached();
        let (store, synced) = (shared.store(), shared.synced());
        let seen = shared.wakes(|event| match event {
            watcher::Event::InitApply(cm) | watcher::Event::Apply(cm) => {
                vec![cm.metadata.name.clone()]
            }
            _ => Vec::new(),
        });
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(named("a"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(named("b"))),
        ]);
        shared.consume(events).await;
        assert!(synced.is_synced());
        assert_eq!(store.len(), 0);
        assert_eq!(
            seen.collect::<Vec<_>>().await,
            [Some("a".to_owned()), Some("b".to_owned())]
        );
    }

    #[tokio::test]
    async fn changes_yield_objects_whose_version_changed_and_not_deletions() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        crate::crypto::use_ring();
        let client = kube::Client::try_from(config).expect("client");
        let mut shared = SharedWatch::new(
            "configmaps",
            Api::<ConfigMap>::all(client),
            watcher::Config::default(),
        );
        let changes = shared
            .changes(|cm: &ConfigMap| cm.metadata.generation.map(|generation| generation as u64));
        let at = |name: &str, generation: i64| {
            let mut cm = named(name);
            cm.metadata.generation = Some(generation);
            cm
        };
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(at("a", 1))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(at("a", 1))),
            Ok(watcher::Event::Apply(at("a", 2))),
            Ok(watcher::Event::Delete(at("a", 2))),
        ]);
        shared.consume(events).await;
        let a = reflector::ObjectRef::<ConfigMap>::new("a").within("default");
        assert_eq!(changes.collect::<Vec<_>>().await, [a.clone(), a]);
    }

    #[test]
    fn managed_fields_are_stripped_and_nothing_else() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("x".into());
        cm.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..ManagedFieldsEntry::default()
        }]);
        strip_managed_fields(&mut cm);
        assert_eq!(cm.metadata.managed_fields, None);
        assert_eq!(cm.metadata.name.as_deref(), Some("x"));
    }
}
