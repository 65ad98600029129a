//! What each controller has been asked to reconcile and has not started yet.
//!
//! kube-runtime's `Controller` keeps its queue (the scheduler) to itself, so the runtime counts
//! it from the outside. Every trigger handed to a Controller — its own objects' watch events,
//! each `reconcile_on` stream, the retry the error policy schedules — marks the object as
//! queued (due now, or at the retry's time), and the start of the object's reconcile clears the
//! mark. The scheduler's own rules give exactly that: one slot per object, the earliest time
//! wins, and an object triggered while it runs runs once more afterwards. Requeues after a
//! success (the resync safety net, hours away) are not marked; a reconcile that starts without
//! a mark clears nothing. Marks of objects that left the controller's cache are dropped, as
//! kube-runtime drops their triggers.
//!
//! This is what `flotilla_reconcile_queue_depth` and `flotilla_reconcile_retries_scheduled`
//! report, and what tests wait on before asserting that nothing (more) happens.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use tokio::time::Instant;

/// An object of the controller's kind: namespace (empty for cluster-scoped) and name.
type Key = (String, String);

type Exists = Box<dyn Fn(&Key) -> bool + Send + Sync>;

fn key_of<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// One controller's queued reconciles (see the module docs). Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct ReconcileQueue {
    inner: Arc<Mutex<Queued>>,
}

#[derive(Default)]
struct Queued {
    /// When each queued object is due.
    due: HashMap<Key, Instant>,
    /// Whether an object is still in the controller's cache.
    exists: Option<Exists>,
}

impl Queued {
    fn mark(&mut self, key: Key, at: Instant) {
        self.due
            .entry(key)
            .and_modify(|due| *due = (*due).min(at))
            .or_insert(at);
    }

    fn prune(&mut self) {
        if let Some(exists) = &self.exists {
            self.due.retain(|key, _| exists(key));
        }
    }
}

impl std::fmt::Debug for ReconcileQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconcileQueue")
            .field("depth", &self.depth())
            .field("retries_scheduled", &self.retries_scheduled())
            .finish()
    }
}

impl ReconcileQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Passes the Controller's own objects (the stream given to `Controller::for_stream`)
    /// through, marking each as queued; `store` is the Controller's cache, whose objects are
    /// the only ones kube-runtime reconciles.
    pub fn own_objects<K, E, S>(
        &self,
        objects: S,
        store: &Store<K>,
    ) -> impl Stream<Item = Result<K, E>> + Send + 'static
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
        E: Send + 'static,
        S: Stream<Item = Result<K, E>> + Send + 'static,
    {
        let store = store.clone();
        self.lock().exists = Some(Box::new(move |(namespace, name): &Key| {
            let reference = ObjectRef::<K>::new(name);
            let reference = if namespace.is_empty() {
                reference
            } else {
                reference.within(namespace)
            };
            store.get(&reference).is_some()
        }));
        let queue = self.clone();
        objects.inspect(move |object| {
            if let Ok(object) = object {
                queue.lock().mark(key_of(object), Instant::now());
            }
        })
    }

    /// Passes a `reconcile_on` stream through, marking each object it names as queued.
    pub fn triggers<K, S>(&self, triggers: S) -> impl Stream<Item = ObjectRef<K>> + Send + 'static
    where
        K: Resource + 'static,
        S: Stream<Item = ObjectRef<K>> + Send + 'static,
    {
        let queue = self.clone();
        triggers.inspect(move |reference| {
            let key = (
                reference.namespace.clone().unwrap_or_default(),
                reference.name.clone(),
            );
            queue.lock().mark(key, Instant::now());
        })
    }

    /// The reconcile of `object` starts: it leaves the queue.
    pub fn started<K: Resource>(&self, object: &K) {
        self.lock().due.remove(&key_of(object));
    }

    /// The error policy retries `object` after `delay`.
    pub fn retry<K: Resource>(&self, object: &K, delay: Duration) {
        self.lock().mark(key_of(object), Instant::now() + delay);
    }

    /// Reconciles that are due and have not started: waiting for a free slot (the
    /// concurrency limit), for the same object's running reconcile, or for the scheduler.
    pub fn depth(&self) -> usize {
        let now = Instant::now();
        let mut queued = self.lock();
        queued.prune();
        queued.due.values().filter(|due| **due <= now).count()
    }

    /// Objects whose failed reconcile is scheduled to be retried later.
    pub fn retries_scheduled(&self) -> usize {
        let now = Instant::now();
        let mut queued = self.lock();
        queued.prune();
        queued.due.values().filter(|due| **due > now).count()
    }

    /// Whether nothing is queued at all: nothing due, and no retry scheduled.
    pub fn is_empty(&self) -> bool {
        let mut queued = self.lock();
        queued.prune();
        queued.due.is_empty()
    }
}

/// The queue of every controller of the process, by controller name.
#[derive(Clone, Debug, Default)]
pub struct ReconcileQueues {
    queues: Arc<Mutex<BTreeMap<&'static str, ReconcileQueue>>>,
}

impl ReconcileQueues {
    /// The queue of `controller`, created on first use.
    pub fn of(&self, controller: &'static str) -> ReconcileQueue {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(controller)
            .or_default()
            .clone()
    }

    /// The queue of `controller`, if it has one.
    pub fn get(&self, controller: &str) -> Option<ReconcileQueue> {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(controller)
            .cloned()
    }

    /// The Prometheus collector of both queue gauges, read at scrape time.
    pub fn collector(&self) -> Result<QueueCollector, prometheus::Error> {
        Ok(QueueCollector {
            queues: self.clone(),
            depth: IntGaugeVec::new(
                Opts::new(
                    "flotilla_reconcile_queue_depth",
                    "Reconciles due and not started yet, by controller.",
                ),
                &["controller"],
            )?,
            retries: IntGaugeVec::new(
                Opts::new(
                    "flotilla_reconcile_retries_scheduled",
                    "Objects whose failed reconcile is scheduled to be retried, by controller.",
                ),
                &["controller"],
            )?,
        })
    }
}

/// `flotilla_reconcile_queue_depth` and `flotilla_reconcile_retries_scheduled`.
#[derive(Clone)]
pub struct QueueCollector {
    queues: ReconcileQueues,
    depth: IntGaugeVec,
    retries: IntGaugeVec,
}

impl Collector for QueueCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.depth
            .desc()
            .into_iter()
            .chain(self.retries.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let queues = self
            .queues
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (controller, queue) in queues {
            let depth = i64::try_from(queue.depth()).unwrap_or(i64::MAX);
            let retries = i64::try_from(queue.retries_scheduled()).unwrap_or(i64::MAX);
            self.depth.with_label_values(&[controller]).set(depth);
            self.retries.with_label_values(&[controller]).set(retries);
        }
        let mut families = self.depth.collect();
        families.extend(self.retries.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn config_map(name: &str, version: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("default".into());
        cm.metadata.resource_version = Some(version.into());
        cm
    }

    fn store_with(objects: &[ConfigMap]) -> Store<ConfigMap> {
        let (store, mut writer) = reflector::store();
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object.clone()));
        }
        store
    }

    #[tokio::test]
    async fn a_trigger_queues_its_object_until_its_reconcile_starts() {
        let queue = ReconcileQueue::default();
        let cm = config_map("a", "7");
        let store = store_with(std::slice::from_ref(&cm));
        let own = stream::iter([Ok::<_, ()>(cm.clone()), Ok(cm.clone())]);
        let passed: Vec<_> = queue.own_objects(own, &store).collect().await;
        assert_eq!(passed.len(), 2, "objects pass through");
        assert_eq!(queue.depth(), 1, "one slot per object");
        queue.started(&cm);
        assert_eq!(queue.depth(), 0);
        assert!(queue.is_empty());

        let refs = stream::iter([ObjectRef::<ConfigMap>::new("a").within("default")]);
        let _: Vec<_> = queue.triggers(refs).collect().await;
        assert_eq!(queue.depth(), 1);
    }

    #[tokio::test]
    async fn a_retry_is_scheduled_until_its_time_comes() {
        let queue = ReconcileQueue::default();
        let cm = config_map("a", "1");
        queue.retry(&cm, Duration::from_secs(3600));
        assert_eq!((queue.depth(), queue.retries_scheduled()), (0, 1));
        assert!(!queue.is_empty());
        // A trigger now wins over the later retry, as in kube-runtime's scheduler.
        let refs = stream::iter([ObjectRef::<ConfigMap>::new("a").within("default")]);
        let _: Vec<_> = queue.triggers(refs).collect().await;
        assert_eq!((queue.depth(), queue.retries_scheduled()), (1, 0));
        queue.started(&cm);
        queue.retry(&cm, Duration::ZERO);
        assert_eq!(queue.depth(), 1, "a retry whose time came is due");
    }

    #[tokio::test]
    async fn objects_gone_from_the_cache_leave_the_queue() {
        let queue = ReconcileQueue::default();
        let kept = config_map("kept", "1");
        let store = store_with(std::slice::from_ref(&kept));
        let _: Vec<_> = queue
            .own_objects(stream::iter([Ok::<_, ()>(kept.clone())]), &store)
            .collect()
            .await;
        let refs = stream::iter([ObjectRef::<ConfigMap>::new("gone").within("default")]);
        let _: Vec<_> = queue.triggers(refs).collect().await;
        assert_eq!(queue.depth(), 1, "only the cached object counts");
    }

    #[tokio::test]
    async fn the_gauges_report_every_controllers_queue() {
        let queues = ReconcileQueues::default();
        let plan = queues.of("plan");
        plan.retry(&config_map("a", "1"), Duration::from_secs(60));
        let registry = prometheus::Registry::new();
        registry
            .register(Box::new(queues.collector().expect("collector")))
            .expect("register");
        let families = registry.gather();
        let value = |name: &str| {
            families
                .iter()
                .find(|family| family.name() == name)
                .map(|family| family.get_metric()[0].get_gauge().get_value())
        };
        assert_eq!(value("flotilla_reconcile_queue_depth"), Some(0.0));
        assert_eq!(value("flotilla_reconcile_retries_scheduled"), Some(1.0));
        assert!(queues.get("plan").is_some());
        assert!(queues.get("other").is_none());
    }
}
