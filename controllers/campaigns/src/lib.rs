//! Flotilla's Campaigns domain: a `Campaign` sends messages to Subscriptions over `Channel`s.
//!
//! This crate starts with the pure core every delivery decision is made of — who gets which
//! variant or is held out ([`campaign::allocation`]), when a recipient may be messaged
//! ([`campaign::quiet_hours`]) and what the message says ([`campaign::template`]) — so each is
//! tested without a server before the controllers are built on it. [`channel`] is how a
//! message goes out: the transports, each Channel's rate limit and its circuit breaker, and the
//! Channel controller; [`ledger`] makes sending survive crashes without skipping or repeating
//! anyone.

pub mod campaign;
pub mod channel;
pub mod index;
pub mod ledger;

use flotilla_crds::{Campaign, Channel};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use channel::registry::Registry;
use channel::secrets::CHANNEL_SECRET_LABEL;
use flotilla_runtime::Operator;
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::watch::{self, SharedWatch};
use index::{ChannelsBySecret, LiveCampaignsByChannel};

/// Which Campaigns controllers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The Channel controller.
    pub channel: bool,
}

/// Runs the selected Campaigns controllers on one watch per kind — Channels, Campaigns and
/// the Secrets labelled [`CHANNEL_SECRET_LABEL`] — until the operator's shutdown signal.
pub fn run(operator: &Operator, selection: Selection) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        if !selection.channel {
            return;
        }
        let client = operator.client.clone();
        let wc = watch::watcher_config(&operator.config);
        let mut channels = SharedWatch::new(
            "channels",
            Api::<DeserializeGuard<Channel>>::all(client.clone()),
            wc.clone(),
        );
        let mut campaigns = SharedWatch::new(
            "campaigns",
            Api::<DeserializeGuard<Campaign>>::all(client.clone()),
            wc.clone(),
        );
        let mut secrets = SharedWatch::new(
            "secrets",
            Api::<Secret>::all(client.clone()),
            wc.labels(&format!("{CHANNEL_SECRET_LABEL}=true")),
        )
        .caching(watch::secret_data_only);
        for (kind, synced) in [
            (channels.kind(), channels.synced()),
            (campaigns.kind(), campaigns.synced()),
            (secrets.kind(), secrets.synced()),
        ] {
            operator.readiness.track(kind, synced);
        }

        let by_secret = SharedIndex::new(ChannelsBySecret::default());
        let feed = by_secret.clone();
        channels.on_event(move |event| feed.lock().apply_watcher_event(event));
        let readers = by_secret.clone();
        let secret_changed = secrets.wakes(move |event| {
            let readers = readers.lock();
            touched_secrets(event)
                .iter()
                .flat_map(|(namespace, name)| readers.channels(namespace, name))
                .collect::<Vec<_>>()
        });
        let live = SharedIndex::new(LiveCampaignsByChannel::default());
        let feed = live.clone();
        let campaigns_changed = campaigns.wakes(move |event| {
            feed.lock()
                .apply_watcher_event(event)
                .into_iter()
                .map(|(namespace, channel)| ObjectRef::new(&channel).within(&namespace))
                .collect::<Vec<_>>()
        });
        let registry = Registry::default();
        let state = channel::reconcile::ChannelState::new(
            client,
            secrets.store(),
            live,
            vec![secrets.synced(), campaigns.synced()],
            registry,
        );
        let channel_controller = channel::controller(
            operator,
            &mut channels,
            state,
            vec![secret_changed.boxed(), campaigns_changed.boxed()],
        );
        let stop = || operator.shutdown.signalled();
        futures::join!(
            Box::pin(channels.run(stop())),
            Box::pin(campaigns.run(stop())),
            Box::pin(secrets.run(stop())),
            channel_controller,
        );
    })
}

/// The `(namespace, name)` of the Secrets an event is about.
fn touched_secrets(event: &watcher::Event<Secret>) -> Vec<(String, String)> {
    match event {
        watcher::Event::Apply(secret) | watcher::Event::Delete(secret) => secret
            .metadata
            .namespace
            .clone()
            .zip(secret.metadata.name.clone())
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}
