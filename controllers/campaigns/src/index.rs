//! Relations the Campaigns controllers keep from their watches, so that no event and no
//! reconcile scans a cache:
//!
//! | index | fed by | answers |
//! |---|---|---|
//! | [`ChannelsBySecret`] | Channels | which Channels read a Secret |
//! | [`LiveCampaignsByChannel`] | Campaigns | which live (not terminal) Campaigns use a Channel |
//! | [`SubscriptionsByPhase`] | Subscriptions | which Subscriptions are in a phase (trigger campaigns) |

use std::collections::BTreeSet;
use std::sync::Arc;

use flotilla_crds::subscription::SubscriptionPhase;
use flotilla_crds::{Campaign, Channel, Subscription};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::channel::secrets;
use flotilla_runtime::index::{Index, Key};

/// A value within one namespace: `(namespace, value)`.
pub type Namespaced = (Arc<str>, Arc<str>);

fn namespaced(namespace: &str, value: &str) -> Namespaced {
    (namespace.into(), value.into())
}

/// The name part of a `namespace/name` key.
fn name_of(key: &Key) -> &str {
    key.split_once('/').map_or(&**key, |(_, name)| name)
}

/// The Secrets each Channel reads, from the Channel watch.
pub struct ChannelsBySecret(Index<DeserializeGuard<Channel>, Namespaced>);

impl Default for ChannelsBySecret {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |channel: &DeserializeGuard<Channel>| {
                let Ok(channel) = &channel.0 else {
                    return Vec::new();
                };
                let namespace = channel.metadata.namespace.as_deref().unwrap_or_default();
                secrets::referenced(&channel.spec)
                    .into_iter()
                    .map(|secret| namespaced(namespace, secret))
                    .collect()
            },
        ))
    }
}

impl ChannelsBySecret {
    /// Takes one Channel watch event in.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<DeserializeGuard<Channel>>) {
        self.0.apply_watcher_event(event);
    }

    /// The Channels in `namespace` that read Secret `secret`.
    pub fn channels(
        &self,
        namespace: &str,
        secret: &str,
    ) -> Vec<ObjectRef<DeserializeGuard<Channel>>> {
        self.0
            .objects(&namespaced(namespace, secret))
            .map(|key| ObjectRef::new(name_of(key)).within(namespace))
            .collect()
    }
}

/// The Channels each live Campaign sends through, from the Campaign watch.
pub struct LiveCampaignsByChannel(Index<DeserializeGuard<Campaign>, Namespaced>);

impl Default for LiveCampaignsByChannel {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |campaign: &DeserializeGuard<Campaign>| {
                let Ok(campaign) = &campaign.0 else {
                    return Vec::new();
                };
                let terminal = campaign
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_terminal());
                if terminal {
                    return Vec::new();
                }
                let namespace = campaign.metadata.namespace.as_deref().unwrap_or_default();
                campaign
                    .spec
                    .channels
                    .names
                    .iter()
                    .map(|channel| namespaced(namespace, channel))
                    .collect()
            },
        ))
    }
}

impl LiveCampaignsByChannel {
    /// Takes one Campaign watch event in; returns the Channels whose live campaigns changed.
    pub fn apply_watcher_event(
        &mut self,
        event: &watcher::Event<DeserializeGuard<Campaign>>,
    ) -> BTreeSet<Namespaced> {
        self.0.apply_watcher_event(event).owners
    }

    /// How many live campaigns in `namespace` use `channel`.
    pub fn count(&self, namespace: &str, channel: &str) -> usize {
        self.0.count(&namespaced(namespace, channel))
    }

    /// The names of the live campaigns in `namespace` that use `channel`, sorted.
    pub fn campaigns<'a>(
        &'a self,
        namespace: &str,
        channel: &str,
    ) -> impl Iterator<Item = &'a str> + use<'a> {
        self.0.objects(&namespaced(namespace, channel)).map(name_of)
    }
}

/// The Subscriptions in each phase, from the Subscription watch: a trigger campaign looks for
/// new matches among those in its trigger's phase only, not the whole cache.
pub struct SubscriptionsByPhase(Index<Subscription, SubscriptionPhase>);

impl Default for SubscriptionsByPhase {
    fn default() -> Self {
        Self(Index::new(
            |_| None,
            |subscription: &Subscription| {
                subscription
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .into_iter()
                    .collect()
            },
        ))
    }
}

impl SubscriptionsByPhase {
    /// Takes one Subscription watch event in.
    pub fn apply_watcher_event(&mut self, event: &watcher::Event<Subscription>) {
        self.0.apply_watcher_event(event);
    }

    /// The names of the Subscriptions in `phase`.
    pub fn subscriptions(&self, phase: SubscriptionPhase) -> Vec<Key> {
        self.0.objects(&phase).cloned().collect()
    }
}
