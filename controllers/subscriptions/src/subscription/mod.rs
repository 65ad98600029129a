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
//! - Subscriptions: the controller's own objects.
//! - Plans, mapped to the Subscriptions on them, when a Plan appears, disappears, or changes
//!   its spec or deletion state — not when the Plan controller rewrites its status.
//! - Namespaces (metadata only, every namespace: a tenant namespace another party creates or
//!   gives up must wake the Subscriptions that ask for it), mapped to their controlling
//!   Subscription and to every Subscription that lists them.
//! - The children in tenant namespaces — ResourceQuota (whole objects: their status is the
//!   usage), LimitRange, RoleBinding, NetworkPolicy, ConfigMap (metadata only) — selected by
//!   `app.kubernetes.io/managed-by=flotilla`, so the operator does not cache every ConfigMap of
//!   the cluster, mapped to their controlling Subscription.
//! - [`Wakeups`]: the moments a Subscription's decision changes by time alone (trial end,
//!   grace period end), by the operator's clock.
//!
//! Each mapping goes through a [`triggers::WatchIndex`], which also finds what changed while
//! a watch was down (see there for why kube-runtime's `owns()` / `watches()` do not fit).
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

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use flotilla_crds::common::labels;
use flotilla_crds::{Plan, Subscription};
use futures::{Stream, StreamExt, future, stream};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::PartialObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};

use census::SubscriptionCensus;
use flotilla_runtime::applied::AppliedChildren;
use flotilla_runtime::context::Operator;
use flotilla_runtime::wakeups::Wakeups;
use flotilla_runtime::{phase as phases, reconciler, watch};
use reconcile::{Caches, SubscriptionError, SubscriptionState};
use triggers::{SubscriptionRef, WatchIndex};

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "subscription";

/// Runs the Subscription controller until the operator's shutdown signal, then lets in-flight
/// reconciles finish.
pub async fn run(operator: &Operator) {
    let client = operator.client.clone();
    let wc = watch::watcher_config(&operator.config);
    let managed = wc.clone().labels(&format!(
        "{}={}",
        labels::MANAGED_BY,
        labels::MANAGED_BY_VALUE
    ));
    let subscriptions = watch::reflect(
        Api::<DeserializeGuard<Subscription>>::all(client.clone()),
        wc.clone(),
    );
    let plans = watch::reflect(
        Api::<DeserializeGuard<Plan>>::all(client.clone()),
        wc.clone(),
    );
    let namespaces = watch::reflect(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), wc);
    let quotas = watch::reflect(Api::<ResourceQuota>::all(client.clone()), managed.clone());
    let limit_ranges = watch::reflect(
        Api::<PartialObjectMeta<LimitRange>>::all(client.clone()),
        managed.clone(),
    );
    let role_bindings = watch::reflect(
        Api::<PartialObjectMeta<RoleBinding>>::all(client.clone()),
        managed.clone(),
    );
    let network_policies = watch::reflect(
        Api::<PartialObjectMeta<NetworkPolicy>>::all(client.clone()),
        managed.clone(),
    );
    let config_maps = watch::reflect(
        Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()),
        managed,
    );

    let synced = [
        ("subscription/subscriptions", &subscriptions.synced),
        ("subscription/plans", &plans.synced),
        ("subscription/namespaces", &namespaces.synced),
        ("subscription/resourcequotas", &quotas.synced),
        ("subscription/limitranges", &limit_ranges.synced),
        ("subscription/rolebindings", &role_bindings.synced),
        ("subscription/networkpolicies", &network_policies.synced),
        ("subscription/configmaps", &config_maps.synced),
    ];
    for (component, signal) in &synced {
        operator.readiness.track(*component, (*signal).clone());
    }
    register_metrics(operator, &subscriptions.store);

    let wakeups = Wakeups::new(operator.clock.clone());
    let caches = Caches {
        plans: plans.store,
        namespaces: namespaces.store,
        quotas: quotas.store,
        limit_ranges: limit_ranges.store,
        network_policies: network_policies.store,
        role_bindings: role_bindings.store,
        config_maps: config_maps.store,
        // The Subscription cache is the Controller's own: it does not reconcile before it
        // has listed.
        synced: synced[1..]
            .iter()
            .map(|(_, signal)| (*signal).clone())
            .collect(),
    };
    let applied = Arc::new(AppliedChildren::new());
    let state = SubscriptionState::new(client, caches, wakeups.clone(), applied.clone());
    let ctx = operator.context(CONTROLLER, state);

    let on_plan = subscriptions.store.clone();
    let in_namespace = subscriptions.store.clone();
    // Every trigger goes through the queue, which counts what waits (runtime::queue).
    let queue = ctx.queue.clone();
    let own = queue.own_objects(subscriptions.events.applied_objects(), &subscriptions.store);
    Controller::for_stream(own, subscriptions.store)
        .with_config(controller::Config::default().concurrency(operator.config.concurrency))
        .reconcile_on(queue.triggers(to_wake(
            "Plan",
            plans.events,
            WatchIndex::new(
                triggers::plan_version,
                move |plan: &DeserializeGuard<Plan>| {
                    triggers::subscriptions_on_plan(&on_plan, &plan.name_any())
                },
            ),
        )))
        .reconcile_on(queue.triggers(to_wake(
            "Namespace",
            forgetting_deleted(namespaces.events, &applied),
            WatchIndex::new(
                triggers::resource_version,
                move |namespace: &PartialObjectMeta<Namespace>| {
                    triggers::namespace_claimants(&in_namespace, &namespace.metadata)
                },
            ),
        )))
        .reconcile_on(queue.triggers(to_wake(
            "ResourceQuota",
            forgetting_deleted(quotas.events, &applied),
            children(),
        )))
        .reconcile_on(queue.triggers(to_wake(
            "LimitRange",
            forgetting_deleted(limit_ranges.events, &applied),
            children(),
        )))
        .reconcile_on(queue.triggers(to_wake(
            "RoleBinding",
            forgetting_deleted(role_bindings.events, &applied),
            children(),
        )))
        .reconcile_on(queue.triggers(to_wake(
            "NetworkPolicy",
            forgetting_deleted(network_policies.events, &applied),
            children(),
        )))
        .reconcile_on(queue.triggers(to_wake(
            "ConfigMap",
            forgetting_deleted(config_maps.events, &applied),
            children(),
        )))
        .reconcile_on(queue.triggers(wakeups.due()))
        .graceful_shutdown_on(operator.shutdown.signalled())
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
                    controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(_),
                ) => {}
                Err(error) => tracing::warn!(%error, "subscription controller"),
            }
            future::ready(())
        })
        .await;
    tracing::info!(controller = CONTROLLER, "stopped");
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

/// An index of children: any new version wakes the Subscription that controls the child.
fn children<K: Resource + 'static>() -> WatchIndex<K> {
    WatchIndex::new(triggers::resource_version, |child: &K| {
        triggers::controlling_subscription(child.meta())
            .into_iter()
            .collect::<BTreeSet<_>>()
    })
}

/// Passes a watch of children through `applied`, which forgets the deleted ones (and keeps
/// an apply in flight from being recorded) and notes the ones the watch has shown. The cache
/// has taken the event in before, so the reconcile it triggers sees the child gone.
fn forgetting_deleted<K, S>(
    events: S,
    applied: &Arc<AppliedChildren>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let applied = applied.clone();
    events.inspect(move |event| {
        if let Ok(event) = event {
            applied.observe(event);
        }
    })
}

/// Turns a watch into the Subscriptions to reconcile, through `index`.
fn to_wake<K, S>(
    kind: &'static str,
    events: S,
    mut index: WatchIndex<K>,
) -> impl Stream<Item = SubscriptionRef> + Send + 'static
where
    K: Resource + Debug + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events
        .filter_map(move |event| {
            future::ready(match event {
                Ok(event) => Some(index.apply(&event)),
                Err(error) => {
                    // The watcher retries with backoff by itself.
                    tracing::warn!(%error, kind, "watch failed");
                    None
                }
            })
        })
        .flat_map(stream::iter)
}
