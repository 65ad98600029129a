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

/// The usable Channels, by `(namespace, name)`; cheap to clone and share.
#[derive(Clone, Debug, Default)]
pub struct Registry(Arc<RwLock<HashMap<ChannelKey, Arc<Usable>>>>);

fn key(channel: &Channel) -> ChannelKey {
    (channel.namespace().unwrap_or_default(), channel.name_any())
}

impl Registry {
    /// Makes `channel` usable with `credentials` (replacing what was there).
    pub fn publish(&self, channel: &Channel, credentials: Credentials) {
        let usable = Usable {
            uid: channel.uid().unwrap_or_default(),
            generation: channel.metadata.generation,
            spec: channel.spec.clone(),
            credentials,
        };
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let key = key(channel);
        if map.get(&key).is_none_or(|known| **known != usable) {
            map.insert(key, Arc::new(usable));
        }
    }

    /// Makes `channel` unusable.
    pub fn withdraw(&self, channel: &Channel) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(channel));
    }

    /// The Channel `namespace/name`, if usable.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Usable>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}
