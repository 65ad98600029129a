//! The FirmwareRollout controller: a fixed plan of waves over the targeted Devices, at most
//! `maxInFlight` updating at once, stopped by itself when failures cross a threshold.
//!
//! Functional core (pure, unit-tested): `plan` (exclusions, order, waves, hash, timeline),
//! `shards` (the target set in ConfigMap-sized pieces), `window` (maintenance windows),
//! `thresholds` (overall, per wave, per cohort), `assign` (which devices next), `progress`
//! (where a target stands, from its Device alone), `phase` (the lifecycle and each
//! reconcile's decision), `status` (status and Events).
//!
//! Shell: `fleet` (a compact view of every Device from the uncached Device watch), `book`
//! (the progress of each started rollout, current with every Device event), `reconcile`.
//!
//! Wakes: its own rollouts (spec, deletion, finalizers — not its own status writes); a Device
//! event only when it changes the progress of a target (a heartbeat wakes nobody); releases
//! (a rollout waits for its release to become Ready, and pauses when it stops being Ready).

pub mod assign;
pub mod book;
pub mod fleet;
pub mod phase;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod shards;
pub mod status;
pub mod thresholds;
pub mod window;

use flotilla_crds::{FirmwareRelease, FirmwareRollout};
use futures::future::BoxFuture;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use book::Tracker;
use flotilla_runtime::context::Operator;
use flotilla_runtime::controller::Parts;
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::watch::{SharedWatch, Synced};
use reconcile::RolloutState;

use crate::index::ReleasesByVersion;

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "rollout";

/// A rollout to reconcile.
pub type RolloutRef = ObjectRef<DeserializeGuard<FirmwareRollout>>;

/// What the rollout controller reads besides its own watch.
pub struct Relations {
    /// The fleet and the books (fed by the Device watch).
    pub tracker: SharedIndex<Tracker>,
    /// The releases' watch cache.
    pub releases: kube::runtime::reflector::Store<DeserializeGuard<FirmwareRelease>>,
    /// Releases per version.
    pub releases_by_version: SharedIndex<ReleasesByVersion>,
    /// Whether the Device and release watches have listed.
    pub synced: Vec<Synced>,
    /// Rollouts whose inputs changed (Device progress, releases).
    pub changed: Vec<futures::stream::BoxStream<'static, RolloutRef>>,
}

/// Builds the rollout controller on the process's shared watches; the returned future runs
/// it until the operator's shutdown signal, then lets in-flight reconciles finish.
pub fn controller<'a>(
    operator: &'a Operator,
    rollouts: &mut SharedWatch<DeserializeGuard<FirmwareRollout>>,
    relations: Relations,
) -> BoxFuture<'a, ()> {
    let state = RolloutState::new(
        operator.client.clone(),
        relations.tracker,
        relations.releases,
        rollouts.store(),
        relations.releases_by_version,
        relations.synced,
    );
    flotilla_runtime::controller::run(
        operator,
        rollouts,
        Parts {
            name: CONTROLLER,
            state,
            phase_of: |rollout: &FirmwareRollout| rollout.status.as_ref().and_then(|s| s.phase),
            related: relations.changed,
        },
        reconcile::reconcile,
    )
}
