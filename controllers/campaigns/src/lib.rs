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
pub mod unsubscribe;

use std::sync::Arc;

use flotilla_crds::channel::BreakerState;
use flotilla_crds::{Campaign, Channel, Plan, Subscription};
use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio_stream::wrappers::UnboundedReceiverStream;

use campaign::CampaignRef;
use campaign::reconcile::UnsubscribeLinks;
use channel::ChannelRef;
use channel::deliveries::Deliveries;
use channel::registry::Registry;
use channel::secrets::CHANNEL_SECRET_LABEL;
use flotilla_runtime::Operator;
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::watch::{self, SharedWatch};
use index::{ChannelsBySecret, LiveCampaignsByChannel};
use ledger::FlushPolicy;

/// Which Campaigns controllers run. The Campaign controller sends through the Channels the
/// Channel controller publishes in the same process, so it needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The Channel controller.
    pub channel: bool,
    /// The Campaign controller.
    pub campaign: bool,
}

/// How the Campaign controller is set up.
#[derive(Clone)]
pub struct Settings {
    /// Unsubscribe links: `(campaign, Subscription name) → URL`.
    pub unsubscribe: UnsubscribeLinks,
    /// How delivery outcomes are batched into ledger writes.
    pub flush: FlushPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            unsubscribe: Arc::new(|_, _| String::new()),
            flush: FlushPolicy::default(),
        }
    }
}

/// `flotilla_channel_breaker_state{namespace, channel}`: 0 closed, 1 half-open, 2 open, for
/// every Channel sent through since the start, read from its breaker at scrape time.
fn register_breaker_census(operator: &Operator, deliveries: Deliveries) {
    let census = move || {
        deliveries
            .breakers()
            .into_iter()
            .map(|((namespace, name), breaker)| {
                let state = match breaker.state {
                    BreakerState::Closed => 0,
                    BreakerState::HalfOpen => 1,
                    BreakerState::Open => 2,
                };
                (vec![namespace, name], state)
            })
            .collect()
    };
    if let Err(error) = operator.metrics.register_census(
        "flotilla_channel_breaker_state",
        "State of each Channel's circuit breaker: 0 closed, 1 half-open, 2 open.",
        &["namespace", "channel"],
        census,
    ) {
        tracing::warn!(%error, "registering flotilla_channel_breaker_state");
    }
}

/// `flotilla_campaign_messages_total{namespace, channel, result}`: every delivery attempt.
fn messages_counter(operator: &Operator) -> Option<prometheus::IntCounterVec> {
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "flotilla_campaign_messages_total",
            "Delivery attempts through each Channel, by result: delivered, transient (failed, retried), permanent (failed for good), held (breaker open, not sent).",
        ),
        &["namespace", "channel", "result"],
    )
    .ok()?;
    register(operator, counter)
}

fn register<C>(operator: &Operator, collector: C) -> Option<C>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    match operator
        .metrics
        .registry()
        .register(Box::new(collector.clone()))
    {
        Ok(()) => Some(collector),
        Err(error) => {
            tracing::warn!(%error, "registering a metric");
            None
        }
    }
}

/// `flotilla_campaign_recipients{namespace, campaign, state}`: each Campaign's recipients by
/// state, from its `status.counts` in the cache at scrape time.
fn register_recipient_census(operator: &Operator, campaigns: Store<DeserializeGuard<Campaign>>) {
    let census = move || {
        let mut rows = Vec::new();
        for campaign in campaigns.state() {
            let Ok(campaign) = &campaign.0 else { continue };
            let Some(counts) = campaign.status.as_ref().and_then(|s| s.counts.as_ref()) else {
                continue;
            };
            let namespace = campaign.metadata.namespace.clone().unwrap_or_default();
            let name = campaign.metadata.name.clone().unwrap_or_default();
            for (state, count) in [
                ("sent", counts.sent),
                ("failed", counts.failed),
                ("pending", counts.pending),
                ("held_out", counts.held_out),
                ("opted_out", counts.opted_out),
            ] {
                rows.push((
                    vec![namespace.clone(), name.clone(), state.to_owned()],
                    count,
                ));
            }
        }
        rows
    };
    if let Err(error) = operator.metrics.register_census(
        "flotilla_campaign_recipients",
        "Recipients of each Campaign by state (sent, failed, pending, held_out, opted_out), from its status.",
        &["namespace", "campaign", "state"],
        census,
    ) {
        tracing::warn!(%error, "registering flotilla_campaign_recipients");
    }
}

/// Keeps what a campaign reads of a Subscription ([`campaign::audience::SubscriptionView`]:
/// identity, labels, plan, contact, namespaces, phase, trial end), so 100,000 of them stay
/// small in memory: conditions, usage, entitlements and owners go.
fn subscription_fields(subscription: &Subscription) -> Subscription {
    let meta = &subscription.metadata;
    let mut kept = Subscription::new(
        meta.name.as_deref().unwrap_or_default(),
        flotilla_crds::subscription::SubscriptionSpec {
            owners: Vec::new(),
            payment: None,
            ..subscription.spec.clone()
        },
    );
    kept.metadata.uid.clone_from(&meta.uid);
    kept.metadata.labels.clone_from(&meta.labels);
    kept.metadata
        .resource_version
        .clone_from(&meta.resource_version);
    kept.status = subscription.status.as_ref().map(|status| {
        flotilla_crds::subscription::SubscriptionStatus {
            phase: status.phase,
            trial_ends_at: status.trial_ends_at.clone(),
            namespaces: status.namespaces.clone(),
            ..Default::default()
        }
    });
    kept
}

/// Runs the selected Campaigns controllers on one watch per kind — Channels, Campaigns and
/// the Secrets labelled [`CHANNEL_SECRET_LABEL`] — until the operator's shutdown signal.
pub fn run(operator: &Operator, selection: Selection, settings: Settings) -> BoxFuture<'_, ()> {
    Box::pin(async move {
        if !selection.channel {
            if selection.campaign {
                tracing::error!(
                    "the campaign controller sends through the channel controller; enable both"
                );
            }
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
            wc.clone().labels(&format!("{CHANNEL_SECRET_LABEL}=true")),
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
            touched(event)
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
        // A breaker changing state wakes its Channel, which writes it into its status.
        let (breaker_tx, breaker_rx) = tokio::sync::mpsc::unbounded_channel::<ChannelRef>();
        let breakers_changed = UnboundedReceiverStream::new(breaker_rx);
        // A Channel becoming usable or unusable wakes the live campaigns that use it (below).
        let (usable_tx, usable_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let registry = Registry::default().on_change(Arc::new(move |namespace, name| {
            let _ = usable_tx.send((namespace.to_owned(), name.to_owned()));
        }));
        let mut deliveries =
            Deliveries::new(registry).on_breaker_change(Arc::new(move |namespace, name| {
                let _ = breaker_tx.send(ObjectRef::new(name).within(namespace));
            }));
        if let Some(messages) = messages_counter(operator) {
            deliveries = deliveries.counting(messages);
        }
        let state = channel::reconcile::ChannelState::new(
            client.clone(),
            secrets.store(),
            live.clone(),
            vec![secrets.synced(), campaigns.synced()],
            deliveries.clone(),
        );
        register_breaker_census(operator, deliveries.clone());
        let channel_controller = channel::controller(
            operator,
            &mut channels,
            state,
            vec![
                secret_changed.boxed(),
                campaigns_changed.boxed(),
                breakers_changed.boxed(),
            ],
        );
        let stop = || operator.shutdown.signalled();
        if !selection.campaign {
            futures::join!(
                Box::pin(channels.run(stop())),
                Box::pin(campaigns.run(stop())),
                Box::pin(secrets.run(stop())),
                channel_controller,
            );
            return;
        }
        let mut subscriptions = SharedWatch::new(
            "subscriptions",
            Api::<Subscription>::all(client.clone()),
            wc.clone(),
        )
        .caching(subscription_fields);
        let subscription_changes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let by_phase = SharedIndex::new(index::SubscriptionsByPhase::default());
        let (bump, feed) = (Arc::clone(&subscription_changes), by_phase.clone());
        subscriptions.on_event(move |event| {
            feed.lock().apply_watcher_event(event);
            bump.fetch_add(1, std::sync::atomic::Ordering::Release);
        });
        let plans = SharedWatch::new("plans", Api::<Plan>::all(client.clone()), wc.clone());
        for (kind, synced) in [
            (subscriptions.kind(), subscriptions.synced()),
            (plans.kind(), plans.synced()),
        ] {
            operator.readiness.track(kind, synced);
        }
        // A Channel's readiness changing wakes the live campaigns that use it.
        let users = live.clone();
        let channel_changed = channels.wakes(move |event| {
            let users = users.lock();
            touched(event)
                .iter()
                .flat_map(|(namespace, channel)| campaigns_using(&users, namespace, channel))
                .collect::<Vec<_>>()
        });
        let users = live.clone();
        let usability_changed =
            UnboundedReceiverStream::new(usable_rx).flat_map(move |(namespace, channel)| {
                futures::stream::iter(campaigns_using(&users.lock(), &namespace, &channel))
            });
        register_recipient_census(operator, campaigns.store());
        let (wake, woken) = tokio::sync::mpsc::unbounded_channel::<CampaignRef>();
        let senders_woke = UnboundedReceiverStream::new(woken);
        let state = campaign::reconcile::CampaignState::new(
            client,
            campaign::audience::SubscriptionCache {
                store: subscriptions.store(),
                changes: subscription_changes,
                by_phase,
            },
            plans.store(),
            deliveries,
            vec![subscriptions.synced(), plans.synced(), channels.synced()],
            settings.unsubscribe,
            settings.flush,
            Arc::new(move |campaign| {
                let _ = wake.send(campaign);
            }),
        );
        let campaign_controller = campaign::controller(
            operator,
            &mut campaigns,
            state,
            vec![
                channel_changed.boxed(),
                usability_changed.boxed(),
                senders_woke.boxed(),
            ],
        );
        futures::join!(
            Box::pin(channels.run(stop())),
            Box::pin(campaigns.run(stop())),
            Box::pin(secrets.run(stop())),
            Box::pin(subscriptions.run(stop())),
            Box::pin(plans.run(stop())),
            channel_controller,
            campaign_controller,
        );
    })
}

/// The live campaigns that send through Channel `namespace/channel`.
fn campaigns_using(
    users: &LiveCampaignsByChannel,
    namespace: &str,
    channel: &str,
) -> Vec<CampaignRef> {
    users
        .campaigns(namespace, channel)
        .map(|name| ObjectRef::new(name).within(namespace))
        .collect()
}

/// The `(namespace, name)` of the object an event is about.
fn touched<K: kube::Resource>(event: &watcher::Event<K>) -> Vec<(String, String)> {
    match event {
        watcher::Event::Apply(object) | watcher::Event::Delete(object) => {
            let meta = object.meta();
            meta.namespace
                .clone()
                .zip(meta.name.clone())
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}
