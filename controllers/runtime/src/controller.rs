//! One way to run a controller on the process's shared watches: the kind's watch feeds its
//! own changes (filtered by [`reconcile_inputs`], so a status write wakes nothing), other
//! watches and tasks feed `related` objects, every trigger goes through the operator's queue
//! (its depth is a metric), the kind's phases are counted at scrape time, errors go through
//! [`reconciler::error_policy`], and the controller stops on the operator's shutdown signal
//! after its in-flight reconciles finish.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, future, stream};
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::de::DeserializeOwned;

use crate::context::{Context, Operator};
use crate::error::ControllerError;
use crate::index::reconcile_inputs;
use crate::phase::{self, Phase};
use crate::reconciler;
use crate::watch::SharedWatch;

/// What a controller is made of.
pub struct Parts<K, S, P>
where
    K: Resource<DynamicType = ()>,
{
    /// Its name in metrics, spans and logs.
    pub name: &'static str,
    /// What its reconciles share.
    pub state: S,
    /// The recorded phase of an object, for `flotilla_objects_by_phase`.
    pub phase_of: fn(&K) -> Option<P>,
    /// Objects other watches (and tasks) wake.
    pub related: Vec<BoxStream<'static, ObjectRef<DeserializeGuard<K>>>>,
}

/// Builds the controller of `K` on `watch`; the returned future runs it until the operator's
/// shutdown signal. `reconcile` is the controller's reconcile function.
pub fn run<'a, K, S, P, E, R, Fut>(
    operator: &'a Operator,
    watch: &mut SharedWatch<DeserializeGuard<K>>,
    parts: Parts<K, S, P>,
    reconcile: R,
) -> BoxFuture<'a, ()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Send + Sync + 'static,
    P: Phase + Send + Sync + 'static,
    E: ControllerError + std::error::Error + Send + 'static,
    R: FnMut(Arc<DeserializeGuard<K>>, Arc<Context<S>>) -> Fut + Send + 'a,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let Parts {
        name,
        state,
        phase_of,
        related,
    } = parts;
    let census_source = watch.store();
    operator.metrics.track_phases(name, move || {
        phase::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(phase_of),
        )
    });
    let ctx = operator.context(name, state);
    let own = watch.changes(reconcile_inputs);
    let queue = ctx.queue.clone();
    let related = stream::select_all(related);
    let controller = Controller::for_stream(
        queue.own_objects(
            stream::pending::<Result<DeserializeGuard<K>, watcher::Error>>(),
            &watch.store(),
        ),
        watch.store(),
    )
    .with_config(controller::Config::default().concurrency(operator.config.concurrency))
    .reconcile_on(queue.triggers(own))
    .reconcile_on(queue.triggers(related))
    .graceful_shutdown_on(operator.shutdown.signalled());
    async move {
        controller
            .run(
                reconcile,
                |object, error: &E, ctx: Arc<Context<S>>| {
                    reconciler::error_policy(object, error, ctx)
                },
                ctx,
            )
            .for_each(|result| {
                match result {
                    Ok((object, action)) => {
                        tracing::trace!(controller = name, object = %object.name, ?action, "reconciled");
                    }
                    Err(
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_),
                    ) => {}
                    Err(error) => tracing::warn!(controller = name, %error, "controller"),
                }
                future::ready(())
            })
            .await;
        tracing::info!(controller = name, "stopped");
    }
    .boxed()
}
