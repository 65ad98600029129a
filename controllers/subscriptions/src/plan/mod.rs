//! The Plan controller: validates a Plan's entitlements, reports how many Subscriptions use
//! it, and holds its deletion (finalizer `flotilla.dev/cleanup`) while any still do.
//!
//! Watches, shared with the Subscription controller: Plans (the controller's own objects, woken
//! when their spec, deletion or finalizers change — not by the controller's own status writes)
//! and Subscriptions, through [`SubscribersByPlan`]: a Plan is woken when a Subscription starts
//! or stops using it (old and new plan alike), so counts stay current and a blocked deletion
//! proceeds as soon as the last Subscription lets go; the counts come from the same index.

pub mod phase;
pub mod reconcile;
pub mod status;

use std::sync::Arc;

use flotilla_crds::{Plan, Subscription};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, future, stream};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::index::SubscribersByPlan;
use flotilla_runtime::context::Operator;
use flotilla_runtime::index::{SharedIndex, reconcile_inputs};
use flotilla_runtime::watch::SharedWatch;
use flotilla_runtime::{phase as phases, reconciler};
use reconcile::{PlanError, PlanState};

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "plan";

/// Builds the Plan controller on the process's shared watches; the returned future runs it
/// until the operator's shutdown signal, then lets in-flight reconciles finish. The watches
/// must be run beside it.
///
/// `subscribers_changed` yields the Plans whose subscribers changed (from `subscribers`).
pub fn controller<'a>(
    operator: &'a Operator,
    plans: &mut SharedWatch<DeserializeGuard<Plan>>,
    subscriptions: &SharedWatch<DeserializeGuard<Subscription>>,
    subscribers: SharedIndex<SubscribersByPlan>,
    subscribers_changed: impl Stream<Item = String> + Send + 'static,
) -> BoxFuture<'a, ()> {
    let census_source = plans.store();
    operator.metrics.track_phases(CONTROLLER, move || {
        phases::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(|plan| plan.status.as_ref().and_then(|status| status.phase)),
        )
    });
    let state = PlanState::new(operator.client.clone(), subscribers, subscriptions.synced());
    let ctx = operator.context(CONTROLLER, state);
    let own = plans.changes(reconcile_inputs);
    // Every trigger goes through the queue, which counts what waits (runtime::queue).
    let queue = ctx.queue.clone();
    let controller = Controller::for_stream(
        queue.own_objects(
            stream::pending::<Result<DeserializeGuard<Plan>, watcher::Error>>(),
            &plans.store(),
        ),
        plans.store(),
    )
    .with_config(controller::Config::default().concurrency(operator.config.concurrency))
    .reconcile_on(queue.triggers(own))
    .reconcile_on(queue.triggers(subscribers_changed.map(|plan| ObjectRef::new(&plan))))
    .graceful_shutdown_on(operator.shutdown.signalled());
    async move {
        controller
            .run(
                reconcile::reconcile,
                |plan, error: &PlanError, ctx: Arc<_>| reconciler::error_policy(plan, error, ctx),
                ctx,
            )
            .for_each(|result| {
                match result {
                    Ok((plan, action)) => {
                        tracing::trace!(plan = %plan.name, ?action, "reconciled");
                    }
                    // Reconcile errors were logged with their object's span; a Plan deleted
                    // while queued is normal.
                    Err(
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_),
                    ) => {}
                    Err(error) => tracing::warn!(%error, "plan controller"),
                }
                future::ready(())
            })
            .await;
        tracing::info!(controller = CONTROLLER, "stopped");
    }
    .boxed()
}
