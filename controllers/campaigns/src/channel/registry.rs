//! The Channels campaigns may send through right now: the Channel controller publishes a
//! Channel once its configuration and Secrets check out and withdraws it when they stop doing
//! so or it is deleted; senders look it up per batch, so a rotated Secret is used from the
//! next batch on.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use flotilla_crds::Channel;
use flotilla_crds::channel::ChannelSpec;
use kube::ResourceExt;

use super::secrets::Credentials;

/// One usable Channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Usable {
    /// The Channel's UID: a Channel deleted and created again is another channel.
    pub uid: String,
    /// The generation this was checked at.
    pub generation: Option<i64>,
    /// Its spec.
    pub spec: ChannelSpec,
    /// Its Secrets' values.
    pub credentials: Credentials,
}

/// A Channel's `(namespace, name)`.
type ChannelKey = (String, String);

/// Called with a Channel's `(namespace, name)` when it becomes usable, changes, or stops
/// being usable.
pub type OnChange = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The usable Channels, by `(namespace, name)`; cheap to clone and share.
#[derive(Clone, Default)]
pub struct Registry {
    usable: Arc<RwLock<HashMap<ChannelKey, Arc<Usable>>>>,
    on_change: Option<OnChange>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

fn key(channel: &Channel) -> ChannelKey {
    (channel.namespace().unwrap_or_default(), channel.name_any())
}

impl Registry {
    /// Calls `on_change` whenever what a Channel's campaigns can use changes. Campaigns read
    /// the registry when they reconcile, and a Channel published after that (after a restart
    /// its status is Ready already, so no watch event follows) would otherwise leave them
    /// waiting for their resync.
    #[must_use]
    pub fn on_change(mut self, on_change: OnChange) -> Self {
        self.on_change = Some(on_change);
        self
    }

    /// Makes `channel` usable with `credentials` (replacing what was there).
    pub fn publish(&self, channel: &Channel, credentials: Credentials) {
        let usable = Usable {
            uid: channel.uid().unwrap_or_default(),
            generation: channel.metadata.generation,
            spec: channel.spec.clone(),
            credentials,
        };
        let key = key(channel);
        let changed = {
            let mut map = self.usable.write().unwrap_or_else(PoisonError::into_inner);
            let changed = map.get(&key).is_none_or(|known| **known != usable);
            if changed {
                map.insert(key.clone(), Arc::new(usable));
            }
            changed
        };
        if changed {
            self.changed(&key);
        }
    }

    /// Makes `channel` unusable.
    pub fn withdraw(&self, channel: &Channel) {
        let key = key(channel);
        let removed = self
            .usable
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        if removed.is_some() {
            self.changed(&key);
        }
    }

    /// The Channel `namespace/name`, if usable.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Usable>> {
        self.usable
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn changed(&self, (namespace, name): &ChannelKey) {
        if let Some(on_change) = &self.on_change {
            on_change(namespace, name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn channel(name: &str, url: &str) -> Channel {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
            "metadata": {"name": name, "namespace": "news", "uid": format!("uid-{name}"), "generation": 1},
            "spec": {"type": "Webhook", "webhook": {"url": url}},
        }))
        .unwrap()
    }

    #[test]
    fn every_change_of_what_campaigns_can_use_is_told_and_nothing_else() {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        let registry = Registry::default().on_change(Arc::new(move |namespace, name| {
            sink.lock().unwrap().push(format!("{namespace}/{name}"));
        }));
        let hook = channel("hook", "https://a.example/");
        registry.publish(&hook, Credentials::default());
        registry.publish(&hook, Credentials::default());
        registry.publish(
            &channel("hook", "https://b.example/"),
            Credentials::default(),
        );
        registry.withdraw(&hook);
        registry.withdraw(&hook);
        registry.withdraw(&channel("other", "https://a.example/"));
        assert_eq!(*told.lock().unwrap(), ["news/hook"; 3]);
        assert!(registry.get("news", "hook").is_none());
    }
}
