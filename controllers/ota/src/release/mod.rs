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

use flotilla_crds::FirmwareRelease;
use futures::future::BoxFuture;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use crate::index::{DevicesByVersion, LiveRolloutsByRelease};
use flotilla_runtime::context::Operator;
use flotilla_runtime::controller::Parts;
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::watch::{SharedWatch, Synced};
use reconcile::ReleaseState;

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
    let state = ReleaseState::new(
        operator.client.clone(),
        relations.rollouts,
        relations.devices,
        relations.synced,
    );
    flotilla_runtime::controller::run(
        operator,
        releases,
        Parts {
            name: CONTROLLER,
            state,
            phase_of: |release: &FirmwareRelease| release.status.as_ref().and_then(|s| s.phase),
            related: relations.changed,
        },
        reconcile::reconcile,
    )
}
