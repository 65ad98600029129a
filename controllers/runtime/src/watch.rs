//! How every controller watches the API server.
//!
//! - bookmarks on and a bounded page size, so re-lists after a dropped watch are cheap;
//! - `managedFields` stripped before objects reach a cache: no controller reads them and they
//!   are often half of an object's size;
//! - watched types wrapped in `kube::core::DeserializeGuard` by the controllers, so one object
//!   that does not decode (a hand-edited status, a version skew) reaches the reconciler as an
//!   error to report instead of failing the whole watch;
//! - watch errors retried with kube-runtime's default backoff.

use std::fmt::Debug;
use std::hash::Hash;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::config::Config;

/// The watcher configuration every controller uses.
pub fn watcher_config(config: &Config) -> watcher::Config {
    let mut wc = watcher::Config::default().page_size(config.watch_page_size);
    wc.bookmarks = true;
    wc
}

/// Drops `metadata.managedFields`, which only the API server needs.
pub fn strip_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A cache of `K`, the signal that it has synced, and the watch stream that fills it.
pub struct Cache<K, S>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    /// The objects, as last seen.
    pub store: Store<K>,
    /// Set once the first full list has been applied to the store.
    pub synced: Synced,
    /// The watcher events, each yielded after the store applied it. Must be polled (usually by
    /// handing it to a `Controller`) for the cache to fill.
    pub events: S,
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
}

/// Builds the cache of `K` that a controller watches (see the module docs for what every
/// watch does).
pub fn reflect<K>(
    api: Api<K>,
    wc: watcher::Config,
) -> Cache<K, impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let (synced_tx, synced_rx) = watch::channel(false);
    let events = watcher(api, wc)
        .default_backoff()
        .modify(strip_managed_fields::<K>)
        .reflect(writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                synced_tx.send_replace(true);
            }
        });
    Cache {
        store,
        synced: Synced(synced_rx),
        events,
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
