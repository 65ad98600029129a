//! The imperative shell of the rollout controller: read the rollout, its release and its
//! book, let the pure core decide, carry the decision out (target shards, one write per
//! assigned Device), write status at most once per [`STATUS_INTERVAL`] unless the phase
//! changes, and publish Events.

use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::common::labels;
use flotilla_crds::condition::{ConditionStatus, find_condition, types};
use flotilla_crds::firmware_rollout::FirmwareRolloutPhase as P;
use flotilla_crds::{FirmwareRelease, FirmwareRollout, FirmwareRolloutStatus};
use futures::{StreamExt, stream};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::core::{DeserializeGuard, Selector};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use super::assign::Gate;
use super::book::{Joining, RolloutBook, RolloutKey, Tracker};
use super::fleet::DeviceView;
use super::phase::{
    self, Action as Step, Observation, Recorded, RollbackState, WaveState, WindowState,
};
use super::plan::{self, Candidate, PlanInput};
use super::progress::Terms;
use super::shards::{self, Shard};
use super::status::{self, Inputs, event_reasons};
use super::thresholds::{Crossing, Thresholds};
use super::window::Window;
use crate::index::ReleasesByVersion;
use flotilla_runtime::context::Context;
use flotilla_runtime::error::{
    ControllerError, ErrorClass, classify_finalizer_error, classify_kube_error,
    finalizer_retry_after, kube_retry_after,
};
use flotilla_runtime::finalizer::{Cleanup, FinalizerError, reconcile_with_finalizer};
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::phase::IllegalTransition;
use flotilla_runtime::reconciler;
use flotilla_runtime::status::{FIELD_MANAGER, StatusWrite, WriteThrottle, write_status};
use flotilla_runtime::watch::Synced;

/// Most status writes per rollout: one per interval, unless the phase changes.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// How often a rollout that has not started recomputes its plan (devices come and go).
pub const PLAN_REFRESH: Duration = Duration::from_secs(30);
/// The update time the timeline assumes (the plan's estimate, not a limit).
pub const ESTIMATED_UPDATE: Duration = Duration::from_secs(10 * 60);
/// Device writes in flight at once from one reconcile.
const WRITE_CONCURRENCY: usize = 32;
/// Most rollback assignments written by one reconcile.
const ROLLBACK_BATCH: usize = 500;
/// How long a reconcile waits for the Device and release caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// What the rollout controller keeps between reconciles.
pub struct RolloutState {
    client: Client,
    /// The fleet and the books, kept from the Device watch.
    pub tracker: SharedIndex<Tracker>,
    /// Releases, from their watch.
    pub releases: Store<DeserializeGuard<FirmwareRelease>>,
    /// Rollouts, from their watch (who is live, for holders).
    pub rollouts: Store<DeserializeGuard<FirmwareRollout>>,
    /// Releases per version (the release of a device's previous version).
    pub releases_by_version: SharedIndex<ReleasesByVersion>,
    /// Whether the Device and release caches have synced.
    pub synced: Vec<Synced>,
    /// One start at a time, so two rollouts never claim the same Device.
    starts: tokio::sync::Mutex<()>,
    throttle: WriteThrottle,
}

impl std::fmt::Debug for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutState").finish_non_exhaustive()
    }
}

impl RolloutState {
    /// The state for a client, the tracker and the stores it reads.
    pub fn new(
        client: Client,
        tracker: SharedIndex<Tracker>,
        releases: Store<DeserializeGuard<FirmwareRelease>>,
        rollouts: Store<DeserializeGuard<FirmwareRollout>>,
        releases_by_version: SharedIndex<ReleasesByVersion>,
        synced: Vec<Synced>,
    ) -> Self {
        Self {
            client,
            tracker,
            releases,
            rollouts,
            releases_by_version,
            synced,
            starts: tokio::sync::Mutex::new(()),
            throttle: WriteThrottle::new(STATUS_INTERVAL),
        }
    }

    fn rollouts_api(&self, namespace: &str) -> Api<FirmwareRollout> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn devices_api(&self, namespace: &str) -> Api<flotilla_crds::Device> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn config_maps(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Whether rollout `name` of `namespace` exists and has not finished.
    fn is_live(&self, namespace: &str, name: &str) -> bool {
        self.rollouts
            .get(&ObjectRef::new(name).within(namespace))
            .is_some_and(|guarded| match &guarded.0 {
                Ok(rollout) => !rollout
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(P::is_terminal),
                // An undecodable rollout still holds its devices.
                Err(_) => true,
            })
    }
}

/// Everything that can go wrong reconciling a FirmwareRollout.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The rollout does not decode as the operator's type.
    #[error("FirmwareRollout {name} cannot be decoded: {message}")]
    Undecodable {
        /// The rollout.
        name: String,
        /// The decoding error.
        message: String,
    },
    /// The recorded phase cannot reach the wanted one.
    #[error("FirmwareRollout {name}: illegal phase transition")]
    IllegalTransition {
        /// The rollout.
        name: String,
        /// The refused move.
        #[source]
        source: IllegalTransition<P>,
    },
    /// An API request failed.
    #[error("FirmwareRollout {name}: {what}")]
    Api {
        /// The rollout.
        name: String,
        /// What was being done.
        what: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The target shards of a started rollout do not decode.
    #[error("FirmwareRollout {name}: the target shards are unreadable: {message}")]
    Shards {
        /// The rollout.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A ConfigMap with a target shard's name exists and is not the rollout's.
    #[error(
        "FirmwareRollout {name}: ConfigMap {config_map} exists and is not this rollout's; rename or remove it"
    )]
    ShardNameTaken {
        /// The rollout.
        name: String,
        /// The ConfigMap in the way.
        config_map: String,
    },
    /// The caches did not fill in time.
    #[error("the Device and FirmwareRelease caches have not synced within {0:?}")]
    CacheNotSynced(Duration),
    /// Adding or removing the finalizer failed, or a step inside it did.
    #[error("finalizer of FirmwareRollout {name}")]
    Finalizer {
        /// The rollout.
        name: String,
        /// What failed.
        #[source]
        source: Box<FinalizerError<RolloutError>>,
    },
}

impl ControllerError for RolloutError {
    fn class(&self) -> ErrorClass {
        match self {
            RolloutError::Undecodable { .. }
            | RolloutError::IllegalTransition { .. }
            | RolloutError::ShardNameTaken { .. } => ErrorClass::Permanent,
            RolloutError::Api { source, .. } => classify_kube_error(source),
            RolloutError::Shards { .. } | RolloutError::CacheNotSynced(_) => ErrorClass::Transient,
            RolloutError::Finalizer { source, .. } => classify_finalizer_error(source),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            RolloutError::Undecodable { .. } => "UndecodableObject",
            RolloutError::IllegalTransition { .. } => "IllegalPhaseTransition",
            RolloutError::Api { .. } => "ApiRequestFailed",
            RolloutError::Shards { .. } => event_reasons::SHARDS_UNREADABLE,
            RolloutError::ShardNameTaken { .. } => "TargetShardNameTaken",
            RolloutError::CacheNotSynced(_) => "CacheNotSynced",
            RolloutError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerUpdateFailed",
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            RolloutError::Api { source, .. } => kube_retry_after(source),
            RolloutError::Finalizer { source, .. } => finalizer_retry_after(source),
            _ => None,
        }
    }
}

/// Reconciles one FirmwareRollout (the controller's `reconcile`).
pub async fn reconcile(
    object: Arc<DeserializeGuard<FirmwareRollout>>,
    ctx: Arc<Context<RolloutState>>,
) -> Result<Action, RolloutError> {
    reconciler::observe(&ctx, object.as_ref(), reconcile_rollout(&object, &ctx)).await
}

async fn reconcile_rollout(
    object: &DeserializeGuard<FirmwareRollout>,
    ctx: &Context<RolloutState>,
) -> Result<Action, RolloutError> {
    let rollout = match &object.0 {
        Ok(rollout) => Arc::new(rollout.clone()),
        Err(invalid) => {
            return Err(RolloutError::Undecodable {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                message: invalid.error.clone(),
            });
        }
    };
    if !Synced::wait_all(&ctx.state.synced, CACHE_SYNC_TIMEOUT).await {
        return Err(RolloutError::CacheNotSynced(CACHE_SYNC_TIMEOUT));
    }
    let name = rollout.name_any();
    let api = ctx
        .state
        .rollouts_api(&rollout.namespace().unwrap_or_default());
    reconcile_with_finalizer(
        &api,
        rollout,
        |rollout| apply(rollout, ctx),
        |rollout| cleanup(rollout, ctx),
    )
    .await
    .map_err(|source| RolloutError::Finalizer {
        name,
        source: Box::new(source),
    })
}

fn key_of(rollout: &FirmwareRollout) -> RolloutKey {
    (
        rollout.namespace().unwrap_or_default().into(),
        rollout.name_any().into(),
    )
}

fn api_error<'a>(
    name: &'a str,
    what: &'static str,
) -> impl FnOnce(kube::Error) -> RolloutError + 'a {
    move |source| RolloutError::Api {
        name: name.to_owned(),
        what,
        source,
    }
}

/// The release and whether it is Ready (`Err` says why not).
fn release_of(
    rollout: &FirmwareRollout,
    ctx: &Context<RolloutState>,
) -> (Option<Arc<FirmwareRelease>>, Result<(), String>) {
    let namespace = rollout.namespace().unwrap_or_default();
    let wanted = &rollout.spec.release;
    let found = ctx
        .state
        .releases
        .get(&ObjectRef::new(wanted).within(&namespace));
    let Some(guarded) = found else {
        return (None, Err(format!("FirmwareRelease {wanted} not found")));
    };
    let Ok(release) = &guarded.0 else {
        return (
            None,
            Err(format!("FirmwareRelease {wanted} cannot be decoded")),
        );
    };
    let ready = release
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, types::READY))
        .is_some_and(|c| c.status == ConditionStatus::True.as_str())
        && release.metadata.deletion_timestamp.is_none();
    let verdict = if ready {
        Ok(())
    } else {
        Err(format!("FirmwareRelease {wanted} is not Ready"))
    };
    (Some(Arc::new(release.clone())), verdict)
}

fn recorded(status: Option<&FirmwareRolloutStatus>) -> Recorded {
    let Some(status) = status else {
        return Recorded::default();
    };
    Recorded {
        phase: status.phase.unwrap_or_default(),
        current_wave: status
            .current_wave
            .and_then(|w| u32::try_from(w).ok())
            .unwrap_or(0),
        next_wave_at: status.next_wave_at.as_ref().map(|t| t.0),
        resume_at_pause: status.resume_at_pause.clone(),
        acknowledged_failures: status
            .acknowledged_failures
            .and_then(|n| u32::try_from(n).ok()),
    }
}

/// The rollout lives: plan or progress, decide, act, report.
async fn apply(
    rollout: Arc<FirmwareRollout>,
    ctx: &Context<RolloutState>,
) -> Result<Action, RolloutError> {
    let now = ctx.now();
    let key = key_of(&rollout);
    let name = rollout.name_any();
    let uid = rollout.uid().unwrap_or_default();
    let status_now = rollout.status.as_ref();
    let recorded = recorded(status_now);
    let validation = rollout.spec.validate();
    let (release, release_ready) = release_of(&rollout, ctx);

    if recorded.phase.is_terminal() {
        // Finished: the status stays as the last decision left it; only a new generation is
        // acknowledged.
        ctx.state.tracker.lock().forget(&key);
        if let Some(current) = status_now
            && current.observed_generation != rollout.metadata.generation
        {
            let desired = FirmwareRolloutStatus {
                observed_generation: rollout.metadata.generation,
                ..current.clone()
            };
            report(&rollout, status_now, &desired, None, true, ctx).await?;
        }
        return Ok(Action::await_change());
    }
    if let Err(errors) = &validation {
        let inputs = Inputs {
            current: status_now,
            generation: rollout.metadata.generation,
            validation: &validation,
            release: &release_ready,
            plan: None,
            book: None,
            crossing: None,
            holders: &[],
            approval_required: false,
            window: None,
            now,
        };
        let desired = status::desired_status(None, &inputs);
        tracing::info!(errors = errors.len(), "invalid spec");
        report(&rollout, status_now, &desired, None, true, ctx).await?;
        // A new generation wakes it; nothing loops.
        return Ok(Action::await_change());
    }
    let window = rollout
        .spec
        .maintenance_window
        .as_ref()
        .and_then(|w| Window::new(w).ok());
    let window_state = match &window {
        Some(window) if !window.is_open(now) => WindowState::Closed {
            opens_at: window.next_opening(now),
        },
        _ => WindowState::Open,
    };
    let started = !matches!(recorded.phase, P::Pending | P::AwaitingApproval);

    // Before the start the plan is proposed from the fleet; after it, the fixed plan's book.
    let _start_guard;
    let mut proposal = None;
    if started {
        ensure_book(&rollout, &key, &uid, ctx).await?;
        // Soaks that ended, timeouts and due retries count before deciding.
        let namespace = rollout.namespace().unwrap_or_default();
        let mut tracker = ctx.state.tracker.lock();
        if let Some((fleet, book)) = tracker.fleet_and_book(&key, &uid) {
            // A new generation may change timeouts, soak or retries; the version stays the
            // plan's.
            let terms = Terms::new(&name, &book.terms.version, &rollout.spec);
            if book.terms != terms {
                book.terms = terms;
            }
            book.judge_due(&namespace, fleet, now);
        }
    } else if let (Some(release), Ok(())) = (&release, &release_ready) {
        _start_guard = ctx.state.starts.lock().await;
        proposal = Some(propose(&rollout, release, ctx, now));
    }
    let proposal = match proposal {
        Some(Ok(plan)) => Some(plan),
        Some(Err(error)) => {
            // A window the validation accepted but the planner cannot use: say so.
            tracing::warn!(%error, "no plan");
            None
        }
        None => None,
    };

    let thresholds = Thresholds::new(&rollout.spec.failure_threshold);
    let (decision, crossing, waves_total) = {
        let tracker = ctx.state.tracker.lock();
        let book = tracker.book(&key, &uid);
        let crossing = book.and_then(|b| crossing_of(&thresholds, b));
        let waves = book.map(|b| wave_states(b, status_now)).unwrap_or_else(|| {
            proposal
                .as_ref()
                .map(|p| wave_states_of_plan(&p.wave_ends))
                .unwrap_or_default()
        });
        let rollback = match book.and_then(|b| b.rollback.as_ref()) {
            Some(r) if r.running() == 0 => RollbackState::Done { failed: r.failed },
            _ => RollbackState::Running,
        };
        let plan_hash = book
            .map(|b| b.plan_hash.clone())
            .or_else(|| proposal.as_ref().map(|p| p.hash.clone()));
        let observation = Observation {
            release_ready: release_ready.is_ok(),
            plan_hash: plan_hash.as_deref(),
            devices_contended: proposal.as_ref().is_some_and(|p| !p.holders.is_empty()),
            window: window_state,
            crossing: crossing.as_ref(),
            failed: book.map_or(0, |b| b.book.overall().failed),
            waves: &waves,
            rollback,
            now,
        };
        let decision = phase::decide(&rollout.spec, &recorded, &observation).map_err(|source| {
            RolloutError::IllegalTransition {
                name: name.clone(),
                source,
            }
        })?;
        (decision, crossing, waves.len())
    };
    tracing::debug!(?decision.phase, ?decision.actions, waves = waves_total, "decided");

    let approval_required = rollout.spec.approval.as_ref().is_some_and(|a| a.required);
    let shown_plan = proposal
        .as_ref()
        .map(|p| plan::shown(status_now.and_then(|s| s.plan.as_ref()), &p.status));
    let compose = |base: Option<&FirmwareRolloutStatus>| {
        let tracker = ctx.state.tracker.lock();
        let book = tracker.book(&key, &uid);
        let holders = proposal
            .as_ref()
            .map(|p| p.holders.clone())
            .unwrap_or_default();
        let inputs = Inputs {
            current: base,
            generation: rollout.metadata.generation,
            validation: &validation,
            release: &release_ready,
            plan: if started || decision.does(Step::Start) {
                None
            } else {
                shown_plan.as_ref()
            },
            book,
            crossing: crossing.as_ref(),
            holders: &holders,
            approval_required,
            window: window.as_ref().map(|_| window_state == WindowState::Open),
            now,
        };
        let mut desired = status::desired_status(Some(&decision), &inputs);
        if decision.does(Step::Start) {
            desired.plan = proposal.as_ref().map(|p| p.status.clone());
        }
        (desired, book.and_then(RolloutBook::next_deadline))
    };

    let mut started_status = None;
    if decision.does(Step::Start) {
        let plan = proposal.as_ref().expect("a start has a plan");
        let release = release.as_ref().expect("a start has a release");
        write_shards(&rollout, &shards::encode_shards(&plan.targets), ctx).await?;
        {
            let mut tracker = ctx.state.tracker.lock();
            let terms = Terms::new(&name, &release.spec.version, &rollout.spec);
            let mut book = RolloutBook::new(
                &uid,
                &plan.hash,
                terms,
                &plan.targets,
                &plan.wave_ends,
                &mut tracker.fleet,
            );
            book.joining = joining(&rollout, release);
            tracker.install(key.clone(), book, now);
        }
        // The start is recorded before anything is assigned: an assignment made under a
        // plan that was not recorded would be planned again.
        let (desired, _) = compose(status_now);
        report(
            &rollout,
            status_now,
            &desired,
            Some(&decision.reason),
            true,
            ctx,
        )
        .await?;
        started_status = Some(desired);
    }
    let mut failure = None;
    if decision.does(Step::Assign) {
        let gate = Gate {
            now,
            wave: decision.current_wave.saturating_sub(1) as usize,
            max_in_flight: u32::try_from(rollout.spec.max_in_flight)
                .unwrap_or(1)
                .max(1),
            window_open: window_state == WindowState::Open,
            paused: false,
        };
        if let Err(error) = assign(&rollout, &key, &uid, gate, ctx).await {
            failure = Some(error);
        }
    }
    if decision.does(Step::Rollback)
        && let Err(error) = roll_back(&rollout, &key, &uid, ctx).await
    {
        failure = Some(error);
    }

    let base = started_status.as_ref().or(status_now);
    let (desired, next_deadline) = compose(base);
    let phase_changed = base.and_then(|s| s.phase) != desired.phase;
    let flush = report(
        &rollout,
        base,
        &desired,
        Some(&decision.reason),
        phase_changed,
        ctx,
    )
    .await?;
    if let Some(error) = failure {
        return Err(error);
    }
    if decision.does(Step::Complete) && flush.is_none() {
        ctx.state.tracker.lock().forget(&key);
    }

    let mut wake = [
        decision.requeue_at.map(|at| ctx.clock.until(at)),
        next_deadline.map(|at| ctx.clock.until(at)),
        flush,
        (!started).then_some(PLAN_REFRESH),
        match (&window, window_state) {
            (Some(window), WindowState::Open) => window.closing(now).map(|at| ctx.clock.until(at)),
            _ => None,
        },
        Some(ctx.config.resync_interval),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(ctx.config.resync_interval);
    if wake.is_zero() {
        wake = Duration::from_millis(50);
    }
    Ok(Action::requeue(wake))
}

fn joining(rollout: &FirmwareRollout, release: &FirmwareRelease) -> Option<Joining> {
    if !rollout.spec.include_new_devices {
        return None;
    }
    let selector = Selector::try_from(rollout.spec.selector.clone()).ok()?;
    Some(Joining {
        selector,
        release: release.spec.clone(),
    })
}

fn crossing_of(thresholds: &Thresholds, book: &RolloutBook) -> Option<Crossing> {
    let progress = &book.book;
    thresholds.first_crossing(
        progress.overall(),
        progress
            .waves()
            .iter()
            .enumerate()
            .map(|(i, tally)| (i as u32 + 1, tally)),
        book.cohorts.iter().zip(progress.cohorts()),
    )
}

fn wave_states(book: &RolloutBook, status: Option<&FirmwareRolloutStatus>) -> Vec<WaveState> {
    book.book
        .waves()
        .iter()
        .enumerate()
        .map(|(i, tally)| WaveState {
            devices: tally.targeted,
            complete: book.book.wave_complete(i),
            completed_at: status
                .and_then(|s| s.waves.iter().find(|w| w.number == i as i32 + 1))
                .and_then(|w| w.completed_at.as_ref())
                .map(|t| t.0),
        })
        .collect()
}

fn wave_states_of_plan(wave_ends: &[usize]) -> Vec<WaveState> {
    let mut start = 0;
    wave_ends
        .iter()
        .map(|&end| {
            let devices = (end - start) as u32;
            start = end;
            WaveState {
                devices,
                complete: devices == 0,
                completed_at: None,
            }
        })
        .collect()
}

/// Proposes the plan from the fleet: the namespace's admitted Devices the selector picks.
/// Devices claimed by another started rollout, or labelled by one that is live, are held.
fn propose(
    rollout: &FirmwareRollout,
    release: &FirmwareRelease,
    ctx: &Context<RolloutState>,
    now: Timestamp,
) -> Result<plan::Plan, plan::PlanError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let selector = Selector::try_from(rollout.spec.selector.clone()).ok();
    let tracker = ctx.state.tracker.lock();
    let candidates = tracker
        .fleet
        .namespace(&namespace)
        .filter(|(_, view)| view.approved && selector.as_ref().is_some_and(|s| view.selected_by(s)))
        .map(|(device, view)| {
            let claimed = tracker
                .claimant(&namespace, device)
                .filter(|(_, holder)| **holder != *name)
                .map(|(_, holder)| holder.to_string());
            let labelled = view
                .rollout_label
                .as_deref()
                .filter(|&holder| holder != name && ctx.state.is_live(&namespace, holder))
                .map(str::to_owned);
            Candidate {
                name: device.to_string(),
                model: view.model.to_string(),
                current_version: view.current_version.as_deref().map(str::to_owned),
                last_seen: view.last_seen,
                rollout_label: claimed.or(labelled),
            }
        })
        .collect();
    drop(tracker);
    plan::plan(PlanInput {
        rollout_name: &name,
        rollout_uid: &rollout.uid().unwrap_or_default(),
        spec: &rollout.spec,
        release: &release.spec,
        candidates,
        now,
        update_duration: ESTIMATED_UPDATE,
    })
}

/// The names of shard `index` of a rollout: `<rollout>-targets-<index>`, or from the UID when
/// the rollout's name is too long for that.
pub fn shard_name(rollout: &FirmwareRollout, index: usize) -> String {
    let name = rollout.name_any();
    let candidate = format!("{name}-targets-{index}");
    if candidate.len() <= 253 {
        candidate
    } else {
        format!("fwro-{}-targets-{index}", rollout.uid().unwrap_or_default())
    }
}

fn owner_reference(rollout: &FirmwareRollout) -> OwnerReference {
    OwnerReference {
        api_version: FirmwareRollout::api_version(&()).into_owned(),
        kind: FirmwareRollout::kind(&()).into_owned(),
        name: rollout.name_any(),
        uid: rollout.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Writes the plan's target shards (ConfigMaps owned by the rollout, so they go with it).
async fn write_shards(
    rollout: &FirmwareRollout,
    shards: &[Shard],
    ctx: &Context<RolloutState>,
) -> Result<(), RolloutError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let api = ctx.state.config_maps(&namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut writes = Vec::with_capacity(shards.len());
    for shard in shards {
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(shard_name(rollout, shard.index)),
                namespace: Some(namespace.clone()),
                labels: Some(
                    [
                        (labels::ROLLOUT.to_owned(), name.clone()),
                        (
                            labels::MANAGED_BY.to_owned(),
                            labels::MANAGED_BY_VALUE.to_owned(),
                        ),
                    ]
                    .into(),
                ),
                owner_references: Some(vec![owner_reference(rollout)]),
                ..ObjectMeta::default()
            },
            data: Some(shard.data.clone()),
            ..ConfigMap::default()
        };
        writes.push(write_shard(
            api.clone(),
            params.clone(),
            config_map,
            rollout.uid().unwrap_or_default(),
        ));
    }
    let results: Vec<_> = stream::iter(writes)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    for result in results {
        match result {
            Ok(()) => {}
            Err(ShardWrite::Api(source)) => {
                return Err(api_error(&name, "writing the target shards")(source));
            }
            Err(ShardWrite::Taken(config_map)) => {
                return Err(RolloutError::ShardNameTaken { name, config_map });
            }
        }
    }
    Ok(())
}

enum ShardWrite {
    Api(kube::Error),
    /// A ConfigMap of the shard's name exists and is not this rollout's.
    Taken(String),
}

/// Creates one shard; if its name exists already, overwrites it only when the rollout owns it
/// (an earlier start that did not get as far as its status), never a ConfigMap of someone
/// else's.
async fn write_shard(
    api: Api<ConfigMap>,
    params: PatchParams,
    config_map: ConfigMap,
    uid: String,
) -> Result<(), ShardWrite> {
    let name = config_map.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &config_map).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(ShardWrite::Api(error)),
    }
    let existing = api.get(&name).await.map_err(ShardWrite::Api)?;
    let ours = existing
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid);
    if !ours {
        return Err(ShardWrite::Taken(name));
    }
    let mut value = serde_json::to_value(&config_map).expect("a ConfigMap serializes");
    value["apiVersion"] = "v1".into();
    value["kind"] = "ConfigMap".into();
    api.patch(&name, &params, &Patch::Apply(value))
        .await
        .map(drop)
        .map_err(ShardWrite::Api)
}

/// Loads the book of a started rollout from its shards, unless it is loaded.
async fn ensure_book(
    rollout: &FirmwareRollout,
    key: &RolloutKey,
    uid: &str,
    ctx: &Context<RolloutState>,
) -> Result<(), RolloutError> {
    if ctx.state.tracker.lock().book(key, uid).is_some() {
        return Ok(());
    }
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let api = ctx.state.config_maps(&namespace);
    let first = read_shard(api.clone(), shard_name(rollout, 0), uid.to_owned(), 0)
        .await
        .map_err(api_error(&name, "reading the target shards"))?;
    let bad = |error: shards::ShardError| RolloutError::Shards {
        name: name.clone(),
        message: error.to_string(),
    };
    let count = shards::shard_count(&first).map_err(bad)?;
    let reads: Vec<_> = (1..count)
        .map(|index| {
            read_shard(
                api.clone(),
                shard_name(rollout, index),
                uid.to_owned(),
                index,
            )
        })
        .collect();
    let rest: Vec<_> = stream::iter(reads)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await;
    let mut all = vec![first];
    for result in rest {
        all.push(result.map_err(api_error(&name, "reading the target shards"))?);
    }
    let targets = shards::decode_shards(&all).map_err(bad)?;
    let status = rollout.status.as_ref();
    let version = status
        .and_then(|s| s.plan.as_ref())
        .map(|p| p.version.clone())
        .unwrap_or_default();
    let plan_hash = status
        .and_then(|s| s.plan.as_ref())
        .map(|p| p.hash.clone())
        .unwrap_or_default();
    let wave_ends = plan::wave_ends(&rollout.spec.waves, targets.len());
    let (release, _) = release_of(rollout, ctx);
    let now = ctx.now();
    let mut tracker = ctx.state.tracker.lock();
    let terms = Terms::new(&name, &version, &rollout.spec);
    let mut book = RolloutBook::new(
        uid,
        &plan_hash,
        terms,
        &targets,
        &wave_ends,
        &mut tracker.fleet,
    );
    book.joining = release.as_deref().and_then(|r| joining(rollout, r));
    if rollout.status.as_ref().and_then(|s| s.phase) == Some(P::RollingBack) {
        let fleet = &tracker.fleet;
        book.start_rollback(&namespace, fleet, now);
    }
    tracker.install(key.clone(), book, now);
    tracing::info!(targets = targets.len(), "loaded the target shards");
    Ok(())
}

fn first_release(releases: &ReleasesByVersion, namespace: &str, version: &str) -> Option<String> {
    releases
        .releases(namespace, version)
        .into_iter()
        .next()
        .map(|release| release.name)
}

/// Reads shard `index`; a ConfigMap the rollout (`uid`) does not own reads as empty, so it
/// fails decoding instead of passing for the plan.
async fn read_shard(
    api: Api<ConfigMap>,
    name: String,
    uid: String,
    index: usize,
) -> Result<Shard, kube::Error> {
    let config_map = api.get(&name).await?;
    let owned = config_map
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid);
    Ok(Shard {
        index,
        data: if owned {
            config_map.data.unwrap_or_default()
        } else {
            Default::default()
        },
    })
}

/// The JSON patch of one assignment: `spec.firmware` and the rollout label, guarded by the
/// Device's generation (a test op), so a concurrent change of its spec — another rollout, a
/// person — makes the write fail with 422 instead of being overwritten, while a status report
/// does not.
fn assignment_patch(view: &DeviceView, rollout: &str, firmware: serde_json::Value) -> DevicePatch {
    let mut ops = Vec::new();
    // The API server always sets a custom resource's generation.
    if let Some(generation) = view.generation {
        ops.push(serde_json::json!(
            {"op": "test", "path": "/metadata/generation", "value": generation}
        ));
    }
    let label_path = format!("/metadata/labels/{}", labels::ROLLOUT.replace('/', "~1"));
    if view.labels.is_empty() {
        ops.push(serde_json::json!(
            {"op": "add", "path": "/metadata/labels", "value": {labels::ROLLOUT: rollout}}
        ));
    } else {
        ops.push(serde_json::json!({"op": "add", "path": label_path, "value": rollout}));
    }
    ops.push(serde_json::json!({"op": "add", "path": "/spec/firmware", "value": firmware}));
    DevicePatch::Json(serde_json::from_value(ops.into()).expect("a well-formed JSON patch"))
}

/// A write to a Device.
enum DevicePatch {
    /// An assignment.
    Json(json_patch::Patch),
    /// A release of the rollout label.
    Merge(serde_json::Value),
}

/// One write to a Device.
struct Write {
    position: usize,
    device: String,
    patch: DevicePatch,
    action_id: i64,
    attempt: u32,
}

fn action_id_after(previous: Option<i64>, now: Timestamp) -> i64 {
    now.as_millisecond().max(previous.unwrap_or(0) + 1)
}

/// Assigns the next devices: one write per device (desired firmware, the rollout label and
/// the Device's resourceVersion as precondition).
async fn assign(
    rollout: &FirmwareRollout,
    key: &RolloutKey,
    uid: &str,
    gate: Gate,
    ctx: &Context<RolloutState>,
) -> Result<(), RolloutError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let now = gate.now;
    let writes: Vec<Write> = {
        let mut tracker = ctx.state.tracker.lock();
        let Some((fleet, book)) = tracker.fleet_and_book(key, uid) else {
            return Ok(());
        };
        book.judge_due(&namespace, fleet, now);
        let release = rollout.spec.release.clone();
        let version = book.terms.version.to_string();
        let releases = ctx.state.releases_by_version.lock();
        book.book
            .next_assignments(&gate)
            .into_iter()
            .filter_map(|assignment| {
                let device = book.name(assignment.position).to_string();
                let view = fleet.get(&namespace, &device)?;
                let previous_version = view
                    .current_version
                    .clone()
                    .unwrap_or_else(|| book.from_version(assignment.position).clone());
                let previous_release = view
                    .assigned
                    .as_ref()
                    .filter(|a| a.version == previous_version)
                    .map(|a| a.release.to_string())
                    .or_else(|| first_release(&releases, &namespace, &previous_version));
                let action_id = action_id_after(view.assigned.as_ref().map(|a| a.action_id), now);
                let mut previous = serde_json::json!({"version": &*previous_version});
                if let Some(r) = previous_release {
                    previous["release"] = r.into();
                }
                let firmware = serde_json::json!({
                    "version": &version,
                    "release": &release,
                    "rollout": &name,
                    "actionId": action_id,
                    "attempt": assignment.attempt,
                    "assignedAt": now.to_string(),
                    "previous": previous,
                });
                let patch = assignment_patch(view, &name, firmware);
                Some(Write {
                    position: assignment.position,
                    device,
                    patch,
                    action_id,
                    attempt: assignment.attempt,
                })
            })
            .collect()
    };
    if writes.is_empty() {
        return Ok(());
    }
    let timeout = SignedDuration::try_from(rollout.spec.device_timeout.as_std())
        .unwrap_or(SignedDuration::MAX);
    let deadline = now.checked_add(timeout).unwrap_or(Timestamp::MAX);
    let results = send(&ctx.state.devices_api(&namespace), writes).await;
    let mut tracker = ctx.state.tracker.lock();
    let mut failure = None;
    let mut assigned = 0;
    if let Some(book) = tracker.book_mut(key, uid) {
        for (write, result) in results {
            match result {
                Ok(()) => {
                    book.assigned(write.position, write.attempt, write.action_id, deadline);
                    assigned += 1;
                }
                // Changed or gone meanwhile: the watch brings the news, the next reconcile
                // judges again.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
                Err(error) => failure = Some(error),
            }
        }
    }
    tracing::debug!(assigned, "assigned devices");
    match failure {
        Some(error) => Err(api_error(&name, "assigning devices")(error)),
        None => Ok(()),
    }
}

async fn send(
    api: &Api<flotilla_crds::Device>,
    writes: Vec<Write>,
) -> Vec<(Write, Result<(), kube::Error>)> {
    let mut sends = Vec::with_capacity(writes.len());
    for write in writes {
        let api = api.clone();
        sends.push(async move {
            let params = PatchParams::default();
            let result = match &write.patch {
                DevicePatch::Json(patch) => {
                    api.patch(&write.device, &params, &Patch::Json::<()>(patch.clone()))
                        .await
                }
                DevicePatch::Merge(patch) => {
                    api.patch(&write.device, &params, &Patch::Merge(patch))
                        .await
                }
            }
            .map(|_| ());
            (write, result)
        });
    }
    stream::iter(sends)
        .buffer_unordered(WRITE_CONCURRENCY)
        .collect()
        .await
}

/// Assigns every touched device the version it had when assigned.
async fn roll_back(
    rollout: &FirmwareRollout,
    key: &RolloutKey,
    uid: &str,
    ctx: &Context<RolloutState>,
) -> Result<(), RolloutError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let now = ctx.now();
    let writes: Vec<Write> = {
        let mut tracker = ctx.state.tracker.lock();
        let Some((fleet, book)) = tracker.fleet_and_book(key, uid) else {
            return Ok(());
        };
        book.start_rollback(&namespace, fleet, now);
        book.judge_due(&namespace, fleet, now);
        let releases = ctx.state.releases_by_version.lock();
        let version = book.terms.version.to_string();
        let batch = book
            .rollback
            .as_ref()
            .map(|r| r.to_assign(ROLLBACK_BATCH))
            .unwrap_or_default();
        batch
            .into_iter()
            .filter_map(|(position, previous, release)| {
                let device = book.name(position).to_string();
                let view = fleet.get(&namespace, &device)?;
                let release = release
                    .map(|r| r.to_string())
                    .or_else(|| first_release(&releases, &namespace, &previous))?;
                let action_id = action_id_after(view.assigned.as_ref().map(|a| a.action_id), now);
                let firmware = serde_json::json!({
                    "version": &*previous,
                    "release": release,
                    "rollout": &name,
                    "actionId": action_id,
                    "attempt": 1,
                    "assignedAt": now.to_string(),
                    "previous": {"version": &version, "release": &rollout.spec.release},
                });
                let patch = assignment_patch(view, &name, firmware);
                Some(Write {
                    position,
                    device,
                    patch,
                    action_id,
                    attempt: 1,
                })
            })
            .collect()
    };
    let timeout = SignedDuration::try_from(rollout.spec.device_timeout.as_std())
        .unwrap_or(SignedDuration::MAX);
    let deadline = now.checked_add(timeout).unwrap_or(Timestamp::MAX);
    let results = send(&ctx.state.devices_api(&namespace), writes).await;
    let mut tracker = ctx.state.tracker.lock();
    let mut failure = None;
    if let Some(book) = tracker.book_mut(key, uid) {
        for (write, result) in results {
            match result {
                Ok(()) => book.rollback_assigned(write.position, write.action_id, deadline),
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {}
                Err(error) => failure = Some(error),
            }
        }
    }
    match failure {
        Some(error) => Err(api_error(&name, "rolling devices back")(error)),
        None => Ok(()),
    }
}

/// Writes the status if it changed — at once when `urgent` (phase, spec), else at most once
/// per [`STATUS_INTERVAL`]. Returns when to come back for a held-back write.
async fn report(
    rollout: &FirmwareRollout,
    current: Option<&FirmwareRolloutStatus>,
    desired: &FirmwareRolloutStatus,
    reason: Option<&phase::Reason>,
    urgent: bool,
    ctx: &Context<RolloutState>,
) -> Result<Option<Duration>, RolloutError> {
    if current == Some(desired) {
        return Ok(None);
    }
    let key = format!(
        "{}/{}",
        rollout.namespace().unwrap_or_default(),
        rollout.name_any()
    );
    let generation_moved =
        current.and_then(|s| s.observed_generation) != desired.observed_generation;
    if let Some(wait) = ctx.state.throttle.hold(&key, urgent || generation_moved) {
        return Ok(Some(wait));
    }
    let name = rollout.name_any();
    let api = ctx
        .state
        .rollouts_api(&rollout.namespace().unwrap_or_default());
    let written = write_status(&api, &name, current, desired)
        .await
        .map_err(api_error(&name, "writing the status"))?;
    if written == StatusWrite::Applied {
        ctx.state.throttle.wrote(&key);
        tracing::info!(phase = ?desired.phase, wave = desired.current_wave, "status updated");
        for event in status::transition_events(current, desired, reason) {
            event.publish(&ctx.recorder, rollout, "Reconcile").await;
        }
    }
    Ok(None)
}

/// The rollout is being deleted: release its devices (drop the `flotilla.dev/rollout` label
/// where it names this rollout; desired versions stay), forget its book. The shards go with
/// it through their ownerReference.
async fn cleanup(
    rollout: Arc<FirmwareRollout>,
    ctx: &Context<RolloutState>,
) -> Result<Cleanup, RolloutError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let api = ctx.state.devices_api(&namespace);
    let mut params = ListParams::default()
        .labels(&format!("{}={name}", labels::ROLLOUT))
        .limit(500);
    let mut released = 0;
    loop {
        let page = api
            .list_metadata(&params)
            .await
            .map_err(api_error(&name, "listing the rollout's devices"))?;
        let writes: Vec<Write> = page
            .items
            .iter()
            .filter(|d| d.labels().get(labels::ROLLOUT) == Some(&name))
            .map(|d| Write {
                position: 0,
                device: d.name_any(),
                patch: DevicePatch::Merge(serde_json::json!({"metadata": {
                    "labels": {labels::ROLLOUT: null},
                    "resourceVersion": d.resource_version(),
                }})),
                action_id: 0,
                attempt: 0,
            })
            .collect();
        for (_, result) in send(&api, writes).await {
            match result {
                Ok(()) => released += 1,
                // Gone, or changed since the list: a conflict is retried by the next pass.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(api_error(&name, "releasing devices")(error)),
            }
        }
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    ctx.state.tracker.lock().forget(&key_of(&rollout));
    tracing::info!(released, "released the rollout's devices");
    Ok(Cleanup::Done)
}
