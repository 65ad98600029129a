//! The imperative shell of the Plan controller: read the Plan and the Subscriptions that use
//! it, let the pure core decide, write status once, publish Events for what changed.

use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::{Plan, PlanPhase, Subscription};
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

use super::phase::{self, Observation};
use super::status;
use super::status::MAX_NAMED_SUBSCRIPTIONS;
use crate::index::SubscribersByPlan;
use flotilla_runtime::context::Context;
use flotilla_runtime::error::{
    ControllerError, ErrorClass, classify_finalizer_error, classify_kube_error,
    finalizer_retry_after, kube_retry_after,
};
use flotilla_runtime::finalizer::{Cleanup, FinalizerError, reconcile_with_finalizer};
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::phase::IllegalTransition;
use flotilla_runtime::reconciler;
use flotilla_runtime::status::{StatusWrite, write_status};
use flotilla_runtime::users::Users;
use flotilla_runtime::watch::Synced;

/// How long a reconcile waits for the Subscription cache's first list before giving up (and
/// retrying with backoff): counting from an empty cache would report zero Subscriptions.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Page size of the authoritative Subscription list made before releasing a Plan.
const LIST_PAGE_SIZE: u32 = 500;

/// What the Plan controller keeps between reconciles.
pub struct PlanState {
    /// Writes to Plans (finalizer and status).
    pub plans: Api<Plan>,
    /// Which Subscriptions use each Plan, kept from the Subscription watch.
    pub subscribers: SharedIndex<SubscribersByPlan>,
    /// Whether the Subscription cache (and so the index) has synced.
    pub subscriptions_synced: Synced,
    /// Untyped Subscriptions, for the fresh list before a release: only `spec.plan` is read,
    /// so a Subscription that does not decode as the current type still holds its Plan.
    subscriptions_raw: Api<DynamicObject>,
}

impl std::fmt::Debug for PlanState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanState")
            .field("subscribers", &self.subscribers)
            .finish_non_exhaustive()
    }
}

impl PlanState {
    /// The state for a client and the index of subscribers.
    pub fn new(
        client: Client,
        subscribers: SharedIndex<SubscribersByPlan>,
        subscriptions_synced: Synced,
    ) -> Self {
        let resource = ApiResource::erase::<Subscription>(&());
        Self {
            plans: Api::all(client.clone()),
            subscribers,
            subscriptions_synced,
            subscriptions_raw: Api::all_with(client, &resource),
        }
    }

    /// The Subscriptions that reference `plan`, from the index (no scan of the cache).
    pub fn cached_subscribers(&self, plan: &str) -> Users {
        let index = self.subscribers.lock();
        Users {
            count: index.count(plan),
            first: index
                .subscribers(plan)
                .take(MAX_NAMED_SUBSCRIPTIONS)
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Names of the Subscriptions that reference `plan` according to the API server, sorted.
    pub async fn listed_subscribers(&self, plan: &str) -> Result<Users, kube::Error> {
        let mut names = Vec::new();
        let mut params = ListParams::default().limit(LIST_PAGE_SIZE);
        loop {
            let page = self.subscriptions_raw.list(&params).await?;
            names.extend(
                page.items
                    .iter()
                    .filter(|object| object.data["spec"]["plan"].as_str() == Some(plan))
                    .map(ResourceExt::name_any),
            );
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        names.sort();
        Ok(Users::bounded(names, MAX_NAMED_SUBSCRIPTIONS))
    }
}

/// Everything that can go wrong reconciling a Plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The Plan does not decode as the operator's `Plan` type (a version skew).
    #[error("Plan {name} cannot be decoded: {message}")]
    Undecodable {
        /// The Plan.
        name: String,
        /// The decoding error.
        message: String,
    },
    /// The status records a phase the Plan cannot leave for the one it should be in.
    #[error("Plan {name}: {source}")]
    IllegalTransition {
        /// The Plan.
        name: String,
        /// The refused move.
        #[source]
        source: IllegalTransition<PlanPhase>,
    },
    /// Writing `status` failed.
    #[error("writing the status of Plan {name}: {source}")]
    StatusWrite {
        /// The Plan.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing Subscriptions before releasing a deleted Plan failed.
    #[error("listing the Subscriptions that use Plan {name}: {source}")]
    ListSubscriptions {
        /// The Plan.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Subscription cache did not fill in time.
    #[error("the Subscription cache has not synced within {0:?}")]
    CacheNotSynced(Duration),
    /// Adding or removing the finalizer failed, or a step inside it did.
    #[error("finalizer of Plan {name}: {source}")]
    Finalizer {
        /// The Plan.
        name: String,
        /// What failed.
        #[source]
        source: Box<FinalizerError<PlanError>>,
    },
}

impl ControllerError for PlanError {
    fn class(&self) -> ErrorClass {
        match self {
            PlanError::Undecodable { .. } | PlanError::IllegalTransition { .. } => {
                ErrorClass::Permanent
            }
            PlanError::StatusWrite { source, .. } | PlanError::ListSubscriptions { source, .. } => {
                classify_kube_error(source)
            }
            PlanError::CacheNotSynced(_) => ErrorClass::Transient,
            PlanError::Finalizer { source, .. } => classify_finalizer_error(source),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            PlanError::Undecodable { .. } => "UndecodableObject",
            PlanError::IllegalTransition { .. } => "IllegalPhaseTransition",
            PlanError::StatusWrite { .. } => "StatusWriteFailed",
            PlanError::ListSubscriptions { .. } => "ListSubscriptionsFailed",
            PlanError::CacheNotSynced(_) => "CacheNotSynced",
            PlanError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerUpdateFailed",
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            PlanError::StatusWrite { source, .. } | PlanError::ListSubscriptions { source, .. } => {
                kube_retry_after(source)
            }
            PlanError::Finalizer { source, .. } => finalizer_retry_after(source),
            _ => None,
        }
    }
}

/// Reconciles one Plan (the controller's `reconcile`).
pub async fn reconcile(
    object: Arc<DeserializeGuard<Plan>>,
    ctx: Arc<Context<PlanState>>,
) -> Result<Action, PlanError> {
    reconciler::observe(&ctx, object.as_ref(), reconcile_plan(&object, &ctx)).await
}

async fn reconcile_plan(
    object: &DeserializeGuard<Plan>,
    ctx: &Context<PlanState>,
) -> Result<Action, PlanError> {
    let plan = match &object.0 {
        Ok(plan) => Arc::new(plan.clone()),
        Err(invalid) => {
            return Err(PlanError::Undecodable {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                message: invalid.error.clone(),
            });
        }
    };
    // Counting from a cache that has not listed yet would report zero Subscriptions.
    let synced =
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, ctx.state.subscriptions_synced.wait()).await;
    if !matches!(synced, Ok(true)) {
        return Err(PlanError::CacheNotSynced(CACHE_SYNC_TIMEOUT));
    }

    let name = plan.name_any();
    reconcile_with_finalizer(
        &ctx.state.plans,
        plan,
        |plan| apply(plan, ctx),
        |plan| cleanup(plan, ctx),
    )
    .await
    .map_err(|source| PlanError::Finalizer {
        name,
        source: Box::new(source),
    })
}

/// The Plan lives: validate it, count its Subscriptions, report.
async fn apply(plan: Arc<Plan>, ctx: &Context<PlanState>) -> Result<Action, PlanError> {
    let name = plan.name_any();
    let observed = Observation {
        validation: plan.spec.validate(),
        deleting: false,
        subscribers: ctx.state.cached_subscribers(&name),
    };
    let step = decide(&plan, &observed)?;
    report(&plan, &observed, step.phase, ctx).await?;
    Ok(Action::requeue(ctx.config.resync_interval))
}

/// The Plan is being deleted: let it go only when no Subscription references it.
async fn cleanup(plan: Arc<Plan>, ctx: &Context<PlanState>) -> Result<Cleanup, PlanError> {
    let name = plan.name_any();
    // While the index counts subscribers the Plan stays; their watch events wake it as they
    // go. The cache may not have seen a Subscription created a moment ago, so the decision
    // that lets the Plan disappear is made from a fresh list.
    let cached = ctx.state.cached_subscribers(&name);
    let subscribers = if cached.is_empty() {
        ctx.state
            .listed_subscribers(&name)
            .await
            .map_err(|source| PlanError::ListSubscriptions {
                name: name.clone(),
                source,
            })?
    } else {
        cached
    };
    let observed = Observation {
        validation: plan.spec.validate(),
        deleting: true,
        subscribers,
    };
    let step = decide(&plan, &observed)?;
    if step.release {
        status::release_event()
            .publish(&ctx.recorder, plan.as_ref(), "Delete")
            .await;
        return Ok(Cleanup::Done);
    }
    report(&plan, &observed, step.phase, ctx).await?;
    // The Subscription watch wakes this Plan when one of its Subscriptions changes or goes.
    Ok(Cleanup::Wait(Action::requeue(ctx.config.resync_interval)))
}

fn decide(plan: &Plan, observed: &Observation) -> Result<phase::Step, PlanError> {
    let current = plan
        .status
        .as_ref()
        .and_then(|status| status.phase)
        .unwrap_or(PlanPhase::Pending);
    phase::step(current, observed).map_err(|source| PlanError::IllegalTransition {
        name: plan.name_any(),
        source,
    })
}

/// Writes the status (if it changed) and publishes the Events the change deserves.
async fn report(
    plan: &Plan,
    observed: &Observation,
    phase: PlanPhase,
    ctx: &Context<PlanState>,
) -> Result<(), PlanError> {
    let name = plan.name_any();
    let current = plan.status.as_ref();
    let desired = status::desired_status(
        current,
        observed,
        phase,
        plan.metadata.generation,
        ctx.now(),
    );
    let written = write_status(&ctx.state.plans, &name, current, &desired)
        .await
        .map_err(|source| PlanError::StatusWrite {
            name: name.clone(),
            source,
        })?;
    if written == StatusWrite::Applied {
        tracing::info!(phase = ?phase, subscriptions = desired.subscriptions, "status updated");
        for event in status::transition_events(current, &desired) {
            event.publish(&ctx.recorder, plan, "Reconcile").await;
        }
    }
    Ok(())
}
