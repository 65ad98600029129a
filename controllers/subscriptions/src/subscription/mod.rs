//! The Subscription controller: provisions each Subscription's tenant namespaces from its
//! Plan, keeps them in shape, and carries the Subscription through trial, payment trouble,
//! suspension and cancellation (finalizer `flotilla.dev/cleanup`).
//!
//! # The functional core
//! Every decision is a pure function over observed data, tested without a server. The
//! reconcile shell ([`reconcile`]: reading the world and writing status; [`tenant`]: the
//! requests that carry a decision out) calls them in this order:
//!
//! 1. [`namespaces`]: resolve the tenant namespaces from the spec and sort the observed
//!    namespaces into usable, terminating, conflicting, owned and orphaned.
//! 2. [`phase`]: decide the next phase and the actions from the spec, the recorded status,
//!    the Plan, the namespaces and the time.
//! 3. [`cancellation`]: let go of namespaces (delete, or release with [`cancellation::release_patch`]).
//! 4. [`build`]: the desired children of each namespace to apply.
//! 5. [`suspension`]: scale workloads to zero or restore them.
//! 6. [`usage`]: sum quota usage and find what is over the plan.
//! 7. [`status`]: the status to write, and the Events to publish.
//!
//! # Watches
//! The Subscription and Plan watches are the process's, shared with the Plan controller; the
//! others are this controller's. Each event reaches the controller through an index
//! ([`crate::index`], [`triggers`]), never a scan of a cache:
//! - Subscriptions: the controller's own objects, woken when what the reconcile reads changes
//!   (not by its own status writes).
//! - Plans, mapped to the Subscriptions on them ([`SubscribersByPlan`]), when a Plan appears,
//!   disappears, or changes its spec or deletion state — not when the Plan controller rewrites
//!   its status.
//! - Namespaces (metadata only, every namespace: a tenant namespace another party creates or
//!   gives up must wake the Subscriptions that ask for it), mapped to their controlling
//!   Subscription, the one their label names, and every Subscription that lists them
//!   ([`SubscriptionsByNamespace`]); [`NamespacesByClaim`] also gives the reconcile the
//!   namespaces labelled with or owned by a Subscription.
//! - The children in tenant namespaces — ResourceQuota (whole objects: their status is the
//!   usage), LimitRange, RoleBinding, NetworkPolicy, ConfigMap (cached as name and
//!   `resourceVersion` only, all the reconcile reads of them) — selected by
//!   `app.kubernetes.io/managed-by=flotilla`, so the operator does not cache every ConfigMap of
//!   the cluster, mapped to their controlling Subscription.
//! - [`Wakeups`]: the moments a Subscription's decision changes by time alone (trial end,
//!   grace period end), by the operator's clock.
//!
//! The Namespace and child watches also keep the [`AppliedChildren`] record in step: a
//! deleted child is forgotten, so its next apply is sent whatever the record says, and a
//! child applied but not shown yet is not applied again while its event is on its way.

pub mod build;
pub mod cancellation;
pub mod census;
pub mod namespaces;
pub mod phase;
pub mod reconcile;
pub mod status;
pub mod suspension;
pub mod tenant;
pub mod triggers;
pub mod usage;

use std::sync::Arc;

use flotilla_crds::common::labels;
use flotilla_crds::{Plan, Subscription};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, future, stream};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{predicates, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use crate::index::{NamespacesByClaim, SubscribersByPlan, SubscriptionsByNamespace};
use census::SubscriptionCensus;
use flotilla_runtime::applied::AppliedChildren;
use flotilla_runtime::context::Operator;
use flotilla_runtime::index::{Index, SharedIndex, reconcile_inputs};
use flotilla_runtime::wakeups::Wakeups;
use flotilla_runtime::watch::SharedWatch;
use flotilla_runtime::{phase as phases, reconciler, watch};
use reconcile::{Caches, SubscriptionError, SubscriptionState};
use triggers::SubscriptionRef;

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "subscription";

/// Builds the Subscription controller on the process's shared Subscription and Plan watches
/// (which must be run beside it) and its own watches of namespaces and children; the returned
/// future runs the controller and its own watches until the operator's shutdown signal, then
/// lets in-flight reconciles finish.
pub fn controller<'a>(
    operator: &'a Operator,
    subscriptions: &mut SharedWatch<DeserializeGuard<Subscription>>,
    plans: &mut SharedWatch<DeserializeGuard<Plan>>,
    subscribers: SharedIndex<SubscribersByPlan>,
) -> BoxFuture<'a, ()> {
    let client = operator.client.clone();
    let wc = watch::watcher_config(&operator.config);
    let managed = wc.clone().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let mut namespaces = SharedWatch::new(
        "namespaces",
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        wc,
    )
    .caching(namespace_kept);
    let mut quotas = SharedWatch::new(
        "resourcequotas",
        Api::<ResourceQuota>::all(client.clone()),
        managed.clone(),
    );
    let mut limit_ranges = SharedWatch::new(
        "limitranges",
        Api::<PartialObjectMeta<LimitRange>>::all(client.clone()),
        managed.clone(),
    )
    .uncached();
    let mut role_bindings = SharedWatch::new(
        "rolebindings",
        Api::<PartialObjectMeta<RoleBinding>>::all(client.clone()),
        managed.clone(),
    )
    .uncached();
    let mut network_policies = SharedWatch::new(
        "networkpolicies",
        Api::<PartialObjectMeta<NetworkPolicy>>::all(client.clone()),
        managed.clone(),
    )
    .uncached();
    let mut config_maps = SharedWatch::new(
        "configmaps",
        Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
        managed,
    )
    .uncached();
    let own_synced = [
        (namespaces.kind(), namespaces.synced()),
        (quotas.kind(), quotas.synced()),
        (limit_ranges.kind(), limit_ranges.synced()),
        (role_bindings.kind(), role_bindings.synced()),
        (network_policies.kind(), network_policies.synced()),
        (config_maps.kind(), config_maps.synced()),
    ];
    for (kind, synced) in &own_synced {
        operator.readiness.track(*kind, synced.clone());
    }
    register_metrics(operator, &subscriptions.store());

    let applied = Arc::new(AppliedChildren::new());
    let asking = SharedIndex::new(SubscriptionsByNamespace::default());
    let feed = asking.clone();
    subscriptions.on_event(move |event| feed.lock().apply_watcher_event(event));
    let own = subscriptions.changes(reconcile_inputs);
    let on_plan = plans.wakes(plan_subscribers(subscribers));
    let claims = SharedIndex::new(NamespacesByClaim::default());
    let on_namespace = namespaces.wakes({
        let (applied, claims, asking) = (applied.clone(), claims.clone(), asking);
        move |event: &watcher::Event<PartialObjectMeta<Namespace>>| {
            applied.observe(event);
            let touched = claims.lock().apply_watcher_event(event);
            let mut claimants = triggers::claimants(&touched, &asking.lock());
            // The echo of a Subscription's own create or apply tells it nothing new; others
            // that list the namespace still hear of it.
            if let watcher::Event::Apply(namespace) = event
                && applied.is_own_write(namespace)
            {
                let meta = &namespace.metadata;
                if let Some(owner) = triggers::controlling_subscription(meta) {
                    claimants.remove(&owner);
                }
                if let Some(owner) = meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(labels::SUBSCRIPTION))
                {
                    claimants.remove(owner);
                }
            }
            claimants
                .into_iter()
                .map(|name| ObjectRef::new(&name))
                .collect::<Vec<SubscriptionRef>>()
        }
    });
    let on_quota = children(&mut quotas, &applied);
    let on_limit_range = children(&mut limit_ranges, &applied);
    let on_role_binding = children(&mut role_bindings, &applied);
    let on_network_policy = children(&mut network_policies, &applied);
    let on_config_map = children(&mut config_maps, &applied);

    let wakeups = Wakeups::new(operator.clock.clone());
    let mut synced = vec![plans.synced()];
    synced.extend(own_synced.into_iter().map(|(_, synced)| synced));
    let caches = Caches {
        plans: plans.store(),
        namespaces: namespaces.store(),
        namespace_claims: claims,
        quotas: quotas.store(),
        // The Subscription cache is the Controller's own: it does not reconcile before it
        // has listed.
        synced,
    };
    let state = SubscriptionState::new(client, caches, wakeups.clone(), applied);
    let ctx = operator.context(CONTROLLER, state);

    // Every trigger goes through the queue, which counts what waits (runtime::queue).
    let queue = ctx.queue.clone();
    let controller = Controller::for_stream(
        queue.own_objects(
            stream::pending::<Result<DeserializeGuard<Subscription>, watcher::Error>>(),
            &subscriptions.store(),
        ),
        subscriptions.store(),
    )
    .with_config(
        controller::Config::default()
            .concurrency(operator.config.concurrency)
            // A reconcile's writes come back as events a request apart; the quota's usage
            // report follows the last. Waiting for a quiet moment folds them into one pass.
            .debounce(operator.config.debounce),
    )
    .reconcile_on(queue.triggers(own))
    .reconcile_on(queue.triggers(on_plan))
    .reconcile_on(queue.triggers(on_namespace))
    .reconcile_on(queue.triggers(on_quota))
    .reconcile_on(queue.triggers(on_limit_range))
    .reconcile_on(queue.triggers(on_role_binding))
    .reconcile_on(queue.triggers(on_network_policy))
    .reconcile_on(queue.triggers(on_config_map))
    .reconcile_on(queue.triggers(wakeups.due()))
    .graceful_shutdown_on(operator.shutdown.signalled());
    let stop = || operator.shutdown.signalled();
    async move {
        let running = controller
            .run(
                reconcile::reconcile,
                |subscription, error: &SubscriptionError, ctx: Arc<_>| {
                    reconciler::error_policy(subscription, error, ctx)
                },
                ctx,
            )
            .for_each(|result| {
                match result {
                    Ok((subscription, action)) => {
                        tracing::trace!(subscription = %subscription.name, ?action, "reconciled");
                    }
                    // Reconcile errors were logged with their object's span; a Subscription
                    // deleted while queued (or woken after it went) is normal.
                    Err(
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_),
                    ) => {}
                    Err(error) => tracing::warn!(%error, "subscription controller"),
                }
                future::ready(())
            });
        futures::join!(
            running,
            Box::pin(namespaces.run(stop())),
            Box::pin(quotas.run(stop())),
            Box::pin(limit_ranges.run(stop())),
            Box::pin(role_bindings.run(stop())),
            Box::pin(network_policies.run(stop())),
            Box::pin(config_maps.run(stop())),
        );
        tracing::info!(controller = CONTROLLER, "stopped");
    }
    .boxed()
}

/// Plan events → the Subscriptions on each Plan whose spec, decodability or deletion changed.
fn plan_subscribers(
    subscribers: SharedIndex<SubscribersByPlan>,
) -> impl FnMut(&watcher::Event<DeserializeGuard<Plan>>) -> Vec<SubscriptionRef> + Send + 'static {
    let mut versions: Index<DeserializeGuard<Plan>, ()> =
        Index::without_lookups(triggers::plan_version, |_| Vec::new());
    move |event| {
        let touched = versions.apply_watcher_event(event);
        if touched.objects.is_empty() {
            return Vec::new();
        }
        let index = subscribers.lock();
        touched
            .objects
            .iter()
            .flat_map(|plan| index.subscribers(plan).map(ObjectRef::new))
            .collect()
    }
}

/// `flotilla_objects_by_phase{controller="subscription"}` and `flotilla_subscriptions`.
fn register_metrics(operator: &Operator, subscriptions: &Store<DeserializeGuard<Subscription>>) {
    let census_source = subscriptions.clone();
    operator.metrics.track_phases(CONTROLLER, move || {
        phases::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(|subscription| subscription.status.as_ref().and_then(|s| s.phase)),
        )
    });
    let registered = SubscriptionCensus::new(subscriptions.clone())
        .and_then(|census| operator.metrics.registry().register(Box::new(census)));
    if let Err(error) = registered {
        // Only possible if the controller is started twice with one registry; the first
        // registration keeps counting.
        tracing::warn!(%error, metric = census::METRIC, "could not register the metric");
    }
}

/// What the Namespace cache keeps of each namespace (every namespace of the cluster, so its
/// size matters): identity, version, deletion, every ownerReference, and Flotilla's own
/// labels and annotations — what ownership, claims and the release patch read. Other
/// labels and annotations (`kubectl`'s last-applied configuration among them) are left out.
fn namespace_kept(namespace: &PartialObjectMeta<Namespace>) -> PartialObjectMeta<Namespace> {
    let meta = &namespace.metadata;
    let ours = |map: &Option<std::collections::BTreeMap<String, String>>, managed_by: bool| {
        let kept: std::collections::BTreeMap<String, String> = map
            .iter()
            .flatten()
            .filter(|(key, value)| {
                key.starts_with(cancellation::FLOTILLA_KEY_PREFIX)
                    || (managed_by
                        && key.as_str() == labels::MANAGED_BY
                        && value.as_str() == labels::MANAGED_BY_VALUE)
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        (!kept.is_empty()).then_some(kept)
    };
    PartialObjectMeta {
        types: None,
        metadata: kube::api::ObjectMeta {
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            deletion_timestamp: meta.deletion_timestamp.clone(),
            owner_references: meta.owner_references.clone(),
            labels: ours(&meta.labels, true),
            annotations: ours(&meta.annotations, false),
            ..kube::api::ObjectMeta::default()
        },
        _phantom: std::marker::PhantomData,
    }
}

/// The wake-ups of a watch of children: any new version wakes the Subscription that controls
/// the child, but for the echo of its own apply. Each event also goes to `applied`, which forgets deleted children (and keeps an
/// apply in flight from being recorded) and notes the ones the watch has shown.
fn children<K>(
    watch: &mut SharedWatch<K>,
    applied: &Arc<AppliedChildren>,
) -> impl Stream<Item = SubscriptionRef> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let applied = applied.clone();
    let mut index: Index<K, String> =
        Index::without_lookups(predicates::resource_version, |child: &K| {
            triggers::controlling_subscription(child.meta())
                .into_iter()
                .collect()
        });
    watch.wakes(move |event| {
        applied.observe(event);
        let owners = index.apply_watcher_event(event).owners;
        // The echo of the reconcile's own apply: that reconcile already knew the result.
        if let watcher::Event::Apply(child) = event
            && applied.is_own_write(child)
        {
            return Vec::new();
        }
        owners
            .into_iter()
            .map(|name| ObjectRef::new(&name))
            .collect::<Vec<SubscriptionRef>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    #[test]
    fn the_namespace_cache_keeps_what_ownership_and_release_read() {
        let mut full = PartialObjectMeta::<Namespace>::default();
        let meta = &mut full.metadata;
        meta.name = Some("acme".into());
        meta.uid = Some("ns-uid".into());
        meta.resource_version = Some("12".into());
        meta.labels = Some(
            [
                ("flotilla.dev/subscription", "acme"),
                ("flotilla.dev/plan", "team"),
                (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
                ("kubernetes.io/metadata.name", "acme"),
                ("team", "web"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
        meta.annotations = Some(
            [
                ("flotilla.dev/allow-deletion", "true"),
                ("kubectl.kubernetes.io/last-applied-configuration", "{...}"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        );
        meta.owner_references = Some(vec![
            OwnerReference {
                uid: "sub-uid".into(),
                controller: Some(true),
                ..OwnerReference::default()
            },
            OwnerReference {
                uid: "someone-else".into(),
                ..OwnerReference::default()
            },
        ]);
        let kept = namespace_kept(&full);
        for uid in ["sub-uid", "other-uid", ""] {
            assert_eq!(
                cancellation::release_patch(&kept.metadata, uid),
                cancellation::release_patch(&full.metadata, uid),
                "the release patch of {uid:?} is the same from the cache"
            );
        }
        let kept_labels = kept.metadata.labels.expect("labels");
        assert_eq!(kept_labels.len(), 3, "{kept_labels:?}");
        assert!(!kept_labels.contains_key("team"));
        assert_eq!(
            kept.metadata.annotations.expect("annotations").len(),
            1,
            "only Flotilla's annotations"
        );
        assert_eq!(kept.metadata.owner_references.map(|o| o.len()), Some(2));
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("12"));
        assert_eq!(kept.metadata.uid.as_deref(), Some("ns-uid"));
    }
}
