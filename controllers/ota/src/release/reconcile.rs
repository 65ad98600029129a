//! The imperative shell of the release controller: read the release and its counts from the
//! indexes, let the pure core decide, write status once (only if it changed), publish Events.

use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::{FirmwareRelease, FirmwareReleasePhase, FirmwareRollout, FirmwareRolloutPhase};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

use super::phase::{self, Observation};
use super::status;
use crate::index::{DevicesByVersion, LiveRolloutsByRelease};
use flotilla_runtime::context::Context;
use flotilla_runtime::error::{
    ControllerError, ErrorClass, classify_finalizer_error, classify_kube_error,
    finalizer_retry_after, kube_retry_after,
};
use flotilla_runtime::finalizer::{Cleanup, FinalizerError, reconcile_with_finalizer};
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::phase::IllegalTransition;
use flotilla_runtime::reconciler;
use flotilla_runtime::status::{StatusWrite, WriteThrottle, write_status};
use flotilla_runtime::users::Users;
use flotilla_runtime::watch::Synced;

/// How long a reconcile waits for the Device and rollout caches' first list: counting from an
/// empty cache would report zero.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Most writes per release that only refresh `status.devices`: a fleet moving to a version
/// changes the count with every Device.
pub const COUNT_INTERVAL: Duration = Duration::from_secs(5);

/// Page size of the authoritative rollout list made before releasing a deleted release.
const LIST_PAGE_SIZE: u32 = 500;

/// How many rollout names the status lists.
pub const MAX_LISTED_ROLLOUTS: usize =
    flotilla_crds::firmware_release::MAX_LISTED_ROLLOUTS as usize;

/// What the release controller keeps between reconciles.
pub struct ReleaseState {
    client: Client,
    /// Live rollouts per release, kept from the rollout watch.
    pub rollouts: SharedIndex<LiveRolloutsByRelease>,
    /// Devices per version, kept from the Device watch.
    pub devices: SharedIndex<DevicesByVersion>,
    /// Whether the rollout and Device caches (and so the indexes) have synced.
    pub synced: Vec<Synced>,
    rollouts_raw: ApiResource,
    throttle: WriteThrottle,
}

impl std::fmt::Debug for ReleaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseState").finish_non_exhaustive()
    }
}

impl ReleaseState {
    /// The state for a client and the indexes it reads.
    pub fn new(
        client: Client,
        rollouts: SharedIndex<LiveRolloutsByRelease>,
        devices: SharedIndex<DevicesByVersion>,
        synced: Vec<Synced>,
    ) -> Self {
        Self {
            client,
            rollouts,
            devices,
            synced,
            rollouts_raw: ApiResource::erase::<FirmwareRollout>(&()),
            throttle: WriteThrottle::new(COUNT_INTERVAL),
        }
    }

    fn releases(&self, namespace: &str) -> Api<FirmwareRelease> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The live rollouts that use `release`, from the index.
    pub fn cached_rollouts(&self, namespace: &str, release: &str) -> Users {
        let index = self.rollouts.lock();
        Users {
            count: index.count(namespace, release),
            first: index
                .rollouts(namespace, release)
                .take(MAX_LISTED_ROLLOUTS)
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The live rollouts that use `release` according to the API server. Untyped: only
    /// `spec.release` and `status.phase` are read, so a rollout that does not decode as the
    /// current type still holds its release.
    pub async fn listed_rollouts(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Users, kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &self.rollouts_raw);
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(LIST_PAGE_SIZE);
        loop {
            let page = api.list(&params).await?;
            names.extend(
                page.items
                    .iter()
                    .filter(|rollout| holds(rollout, release))
                    .map(ResourceExt::name_any),
            );
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        names.sort();
        Ok(Users::bounded(names, MAX_LISTED_ROLLOUTS))
    }
}

fn holds(rollout: &DynamicObject, release: &str) -> bool {
    let terminal = rollout.data["status"]["phase"]
        .as_str()
        .and_then(|phase| serde_json::from_value::<FirmwareRolloutPhase>(phase.into()).ok())
        .is_some_and(FirmwareRolloutPhase::is_terminal);
    rollout.data["spec"]["release"].as_str() == Some(release) && !terminal
}

/// Everything that can go wrong reconciling a FirmwareRelease.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The release does not decode as the operator's type (a version skew).
    #[error("FirmwareRelease {name} cannot be decoded: {message}")]
    Undecodable {
        /// The release.
        name: String,
        /// The decoding error.
        message: String,
    },
    /// The status records a phase the release cannot leave for the one it should be in.
    #[error("FirmwareRelease {name}: illegal phase transition")]
    IllegalTransition {
        /// The release.
        name: String,
        /// The refused move.
        #[source]
        source: IllegalTransition<FirmwareReleasePhase>,
    },
    /// Writing `status` failed.
    #[error("writing the status of FirmwareRelease {name}")]
    StatusWrite {
        /// The release.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing rollouts before releasing a deleted release failed.
    #[error("listing the FirmwareRollouts of FirmwareRelease {name}")]
    ListRollouts {
        /// The release.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Device or rollout cache did not fill in time.
    #[error("the Device and FirmwareRollout caches have not synced within {0:?}")]
    CacheNotSynced(Duration),
    /// Adding or removing the finalizer failed, or a step inside it did.
    #[error("finalizer of FirmwareRelease {name}")]
    Finalizer {
        /// The release.
        name: String,
        /// What failed.
        #[source]
        source: Box<FinalizerError<ReleaseError>>,
    },
}

impl ControllerError for ReleaseError {
    fn class(&self) -> ErrorClass {
        match self {
            ReleaseError::Undecodable { .. } | ReleaseError::IllegalTransition { .. } => {
                ErrorClass::Permanent
            }
            ReleaseError::StatusWrite { source, .. }
            | ReleaseError::ListRollouts { source, .. } => classify_kube_error(source),
            ReleaseError::CacheNotSynced(_) => ErrorClass::Transient,
            ReleaseError::Finalizer { source, .. } => classify_finalizer_error(source),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ReleaseError::Undecodable { .. } => "UndecodableObject",
            ReleaseError::IllegalTransition { .. } => "IllegalPhaseTransition",
            ReleaseError::StatusWrite { .. } => "StatusWriteFailed",
            ReleaseError::ListRollouts { .. } => "ListRolloutsFailed",
            ReleaseError::CacheNotSynced(_) => "CacheNotSynced",
            ReleaseError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerUpdateFailed",
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ReleaseError::StatusWrite { source, .. }
            | ReleaseError::ListRollouts { source, .. } => kube_retry_after(source),
            ReleaseError::Finalizer { source, .. } => finalizer_retry_after(source),
            _ => None,
        }
    }
}

/// Reconciles one FirmwareRelease (the controller's `reconcile`).
pub async fn reconcile(
    object: Arc<DeserializeGuard<FirmwareRelease>>,
    ctx: Arc<Context<ReleaseState>>,
) -> Result<Action, ReleaseError> {
    reconciler::observe(&ctx, object.as_ref(), reconcile_release(&object, &ctx)).await
}

async fn reconcile_release(
    object: &DeserializeGuard<FirmwareRelease>,
    ctx: &Context<ReleaseState>,
) -> Result<Action, ReleaseError> {
    let release = match &object.0 {
        Ok(release) => Arc::new(release.clone()),
        Err(invalid) => {
            return Err(ReleaseError::Undecodable {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                message: invalid.error.clone(),
            });
        }
    };
    if !Synced::wait_all(&ctx.state.synced, CACHE_SYNC_TIMEOUT).await {
        return Err(ReleaseError::CacheNotSynced(CACHE_SYNC_TIMEOUT));
    }
    let name = release.name_any();
    let api = ctx.state.releases(&release.namespace().unwrap_or_default());
    reconcile_with_finalizer(
        &api,
        release,
        |release| apply(release, ctx),
        |release| cleanup(release, ctx),
    )
    .await
    .map_err(|source| ReleaseError::Finalizer {
        name,
        source: Box::new(source),
    })
}

fn observe(release: &FirmwareRelease, ctx: &Context<ReleaseState>, deleting: bool) -> Observation {
    let namespace = release.namespace().unwrap_or_default();
    Observation {
        validation: release.spec.validate(),
        deleting,
        rollouts: ctx.state.cached_rollouts(&namespace, &release.name_any()),
        devices: ctx
            .state
            .devices
            .lock()
            .count(&namespace, &release.spec.version),
    }
}

/// The release lives: validate it, count its devices and rollouts, report.
async fn apply(
    release: Arc<FirmwareRelease>,
    ctx: &Context<ReleaseState>,
) -> Result<Action, ReleaseError> {
    let observed = observe(&release, ctx, false);
    let step = decide(&release, &observed)?;
    let held = report(&release, &observed, step.phase, ctx).await?;
    // An invalid spec waits for a new generation: its own watch wakes it; nothing loops.
    Ok(Action::requeue(held.unwrap_or(ctx.config.resync_interval)))
}

/// The release is being deleted: let it go only when no live rollout uses it.
async fn cleanup(
    release: Arc<FirmwareRelease>,
    ctx: &Context<ReleaseState>,
) -> Result<Cleanup, ReleaseError> {
    let name = release.name_any();
    let mut observed = observe(&release, ctx, true);
    // The cache may not have seen a rollout created a moment ago: the decision that lets the
    // release disappear is made from a fresh list.
    if observed.rollouts.is_empty() {
        let namespace = release.namespace().unwrap_or_default();
        observed.rollouts =
            ctx.state
                .listed_rollouts(&namespace, &name)
                .await
                .map_err(|source| ReleaseError::ListRollouts {
                    name: name.clone(),
                    source,
                })?;
    }
    let step = decide(&release, &observed)?;
    if step.release {
        status::release_event()
            .publish(&ctx.recorder, release.as_ref(), "Delete")
            .await;
        return Ok(Cleanup::Done);
    }
    let held = report(&release, &observed, step.phase, ctx).await?;
    if let Some(held) = held {
        return Ok(Cleanup::Wait(Action::requeue(held)));
    }
    // The rollout watch wakes this release when one of its rollouts ends, moves or goes.
    Ok(Cleanup::Wait(Action::requeue(ctx.config.resync_interval)))
}

fn decide(release: &FirmwareRelease, observed: &Observation) -> Result<phase::Step, ReleaseError> {
    let current = release
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .unwrap_or(FirmwareReleasePhase::Pending);
    phase::step(current, observed).map_err(|source| ReleaseError::IllegalTransition {
        name: release.name_any(),
        source,
    })
}

/// Writes the status (if it changed) and publishes the Events the change deserves. A change
/// of `status.devices` alone is written at most once per [`COUNT_INTERVAL`]; the returned
/// delay says when to come back for it.
async fn report(
    release: &FirmwareRelease,
    observed: &Observation,
    phase: FirmwareReleasePhase,
    ctx: &Context<ReleaseState>,
) -> Result<Option<Duration>, ReleaseError> {
    let name = release.name_any();
    let current = release.status.as_ref();
    let desired = status::desired_status(
        current,
        observed,
        phase,
        release.metadata.generation,
        ctx.now(),
    );
    let key = format!("{}/{}", release.namespace().unwrap_or_default(), name);
    let count_only = current.is_some_and(|current| {
        let mut recounted = current.clone();
        recounted.devices = desired.devices;
        recounted == desired
    });
    if current != Some(&desired)
        && let Some(held) = ctx.state.throttle.hold(&key, !count_only)
    {
        return Ok(Some(held));
    }
    let api = ctx.state.releases(&release.namespace().unwrap_or_default());
    let written = write_status(&api, &name, current, &desired)
        .await
        .map_err(|source| ReleaseError::StatusWrite {
            name: name.clone(),
            source,
        })?;
    if written == StatusWrite::Applied {
        ctx.state.throttle.wrote(&key);
        tracing::info!(
            ?phase,
            devices = desired.devices,
            rollouts = observed.rollouts.count,
            "status updated"
        );
        for event in status::transition_events(current, &desired) {
            event.publish(&ctx.recorder, release, "Reconcile").await;
        }
    }
    Ok(None)
}
