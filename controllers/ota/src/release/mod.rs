//! The FirmwareRelease controller: validates what the schema cannot, sets `Ready`, counts the
//! Devices running the release, and keeps a release that a live rollout uses from being
//! deleted (finalizer `flotilla.dev/cleanup`).
//!
//! Wakes, all from shared watches: its own releases (spec, deletion, finalizers — not its own
//! status writes); rollouts through [`LiveRolloutsByRelease`] (a rollout that starts, ends,
//! moves or goes wakes the releases it used and uses); Devices through [`DevicesByVersion`]
//! and [`ReleasesByVersion`] (only a change of `status.currentVersion` wakes the releases of
//! the old and new version; a heartbeat wakes nothing).

pub mod phase;
pub mod reconcile;
pub mod status;

use std::sync::Arc;

use flotilla_crds::FirmwareRelease;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, future, stream};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::index::{DevicesByVersion, LiveRolloutsByRelease};
use flotilla_runtime::context::Operator;
use flotilla_runtime::index::{SharedIndex, reconcile_inputs};
use flotilla_runtime::watch::{SharedWatch, Synced};
use flotilla_runtime::{phase as phases, reconciler};
use reconcile::{ReleaseError, ReleaseState};

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "release";

/// A release to reconcile.
pub type ReleaseRef = ObjectRef<DeserializeGuard<FirmwareRelease>>;

/// What the release controller reads besides its own watch.
pub struct Relations {
    /// Live rollouts per release (from the rollout watch).
    pub rollouts: SharedIndex<LiveRolloutsByRelease>,
    /// Devices per version (from the Device watch).
    pub devices: SharedIndex<DevicesByVersion>,
    /// Whether the rollout and Device watches have listed.
    pub synced: Vec<Synced>,
    /// Releases whose rollouts or device count changed.
    pub changed: Vec<futures::stream::BoxStream<'static, ReleaseRef>>,
}

/// Builds the release controller on the process's shared watches; the returned future runs it
/// until the operator's shutdown signal, then lets in-flight reconciles finish. The watches
/// must be run beside it.
pub fn controller<'a>(
    operator: &'a Operator,
    releases: &mut SharedWatch<DeserializeGuard<FirmwareRelease>>,
    relations: Relations,
) -> BoxFuture<'a, ()> {
    let census_source = releases.store();
    operator.metrics.track_phases(CONTROLLER, move || {
        phases::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(|release| release.status.as_ref().and_then(|status| status.phase)),
        )
    });
    let state = ReleaseState::new(
        operator.client.clone(),
        relations.rollouts,
        relations.devices,
        relations.synced,
    );
    let ctx = operator.context(CONTROLLER, state);
    let own = releases.changes(reconcile_inputs);
    let queue = ctx.queue.clone();
    let related: std::pin::Pin<Box<dyn Stream<Item = ReleaseRef> + Send>> =
        Box::pin(stream::select_all(relations.changed));
    let controller = Controller::for_stream(
        queue.own_objects(
            stream::pending::<Result<DeserializeGuard<FirmwareRelease>, watcher::Error>>(),
            &releases.store(),
        ),
        releases.store(),
    )
    .with_config(controller::Config::default().concurrency(operator.config.concurrency))
    .reconcile_on(queue.triggers(own))
    .reconcile_on(queue.triggers(related))
    .graceful_shutdown_on(operator.shutdown.signalled());
    async move {
        controller
            .run(
                reconcile::reconcile,
                |release, error: &ReleaseError, ctx: Arc<_>| {
                    reconciler::error_policy(release, error, ctx)
                },
                ctx,
            )
            .for_each(|result| {
                match result {
                    Ok((release, action)) => {
                        tracing::trace!(release = %release.name, ?action, "reconciled");
                    }
                    Err(
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_),
                    ) => {}
                    Err(error) => tracing::warn!(%error, "release controller"),
                }
                future::ready(())
            })
            .await;
        tracing::info!(controller = CONTROLLER, "stopped");
    }
    .boxed()
}
