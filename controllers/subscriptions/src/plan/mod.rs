//! The Plan controller: validates a Plan's entitlements, reports how many Subscriptions use
//! it, and holds its deletion (finalizer `flotilla.dev/cleanup`) while any still do.
//!
//! Watches: Plans (the controller's own objects) and Subscriptions, mapped to the Plan they
//! reference — old and new — through [`references::ReferenceIndex`], so that counts stay
//! current and a blocked deletion proceeds as soon as the last Subscription lets go.

pub mod phase;
pub mod reconcile;
pub mod references;
pub mod status;

use std::sync::Arc;

use flotilla_crds::{Plan, Subscription};
use futures::{Stream, StreamExt, future, stream};
use kube::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};

use flotilla_runtime::context::Operator;
use flotilla_runtime::{phase as phases, reconciler, watch};
use reconcile::{PlanError, PlanState};
use references::ReferenceIndex;

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "plan";

/// Runs the Plan controller until the operator's shutdown signal, then lets in-flight
/// reconciles finish.
pub async fn run(operator: &Operator) {
    let client = operator.client.clone();
    let wc = watch::watcher_config(&operator.config);
    let plans = watch::reflect(
        Api::<DeserializeGuard<Plan>>::all(client.clone()),
        wc.clone(),
    );
    let subscriptions = watch::reflect(
        Api::<DeserializeGuard<Subscription>>::all(client.clone()),
        wc,
    );

    operator.readiness.track("plan/plans", plans.synced.clone());
    operator
        .readiness
        .track("plan/subscriptions", subscriptions.synced.clone());
    let census_source = plans.store.clone();
    operator.metrics.track_phases(CONTROLLER, move || {
        phases::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(|plan| plan.status.as_ref().and_then(|status| status.phase)),
        )
    });

    let state = PlanState::new(client, subscriptions.store, subscriptions.synced);
    let ctx = operator.context(CONTROLLER, state);
    // Every trigger goes through the queue, which counts what waits (runtime::queue).
    let queue = ctx.queue.clone();
    let own = queue.own_objects(plans.events.applied_objects(), &plans.store);
    Controller::for_stream(own, plans.store)
        .with_config(controller::Config::default().concurrency(operator.config.concurrency))
        .reconcile_on(queue.triggers(plans_to_wake(subscriptions.events)))
        .graceful_shutdown_on(operator.shutdown.signalled())
        .run(
            reconcile::reconcile,
            |plan, error: &PlanError, ctx: Arc<_>| reconciler::error_policy(plan, error, ctx),
            ctx,
        )
        .for_each(|result| {
            match result {
                Ok((plan, action)) => tracing::trace!(plan = %plan.name, ?action, "reconciled"),
                // Reconcile errors were logged with their object's span; a Plan deleted
                // while queued is normal.
                Err(
                    controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(_),
                ) => {}
                Err(error) => tracing::warn!(%error, "plan controller"),
            }
            future::ready(())
        })
        .await;
    tracing::info!(controller = CONTROLLER, "stopped");
}

/// Turns Subscription watch events into the Plans to reconcile: the Plan a Subscription
/// references now and the one it referenced before.
fn plans_to_wake<S>(
    subscription_events: S,
) -> impl Stream<Item = ObjectRef<DeserializeGuard<Plan>>> + Send + 'static
where
    S: Stream<Item = Result<watcher::Event<DeserializeGuard<Subscription>>, watcher::Error>>
        + Send
        + 'static,
{
    let mut index = ReferenceIndex::new(|subscription: &DeserializeGuard<Subscription>| {
        match &subscription.0 {
            Ok(subscription) => Some(subscription.spec.plan.clone()),
            Err(invalid) => {
                tracing::warn!(
                    subscription = invalid.metadata.name.as_deref().unwrap_or(""),
                    error = %invalid.error,
                    "Subscription cannot be decoded; it is not counted until fixed"
                );
                None
            }
        }
    });
    subscription_events
        .filter_map(move |event| {
            future::ready(match event {
                Ok(event) => Some(index.apply(&event)),
                Err(error) => {
                    // The watcher retries with backoff by itself.
                    tracing::warn!(%error, "Subscription watch failed");
                    None
                }
            })
        })
        .flat_map(|plans| stream::iter(plans.into_iter().map(|plan| ObjectRef::new(&plan))))
}
