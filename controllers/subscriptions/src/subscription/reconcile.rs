//! The imperative shell of the Subscription controller: read the world, let the pure core
//! decide, carry the decision out (server-side apply of every child, namespace deletion or
//! release, workload scaling), write status once, publish Events for what changed.
//!
//! The order is fixed: actions first, status last, so the status never reports a world the
//! actions did not achieve (a failed apply leaves the recorded phase as it was, and the retry
//! decides again from there).

use std::collections::{BTreeSet, HashSet};
use std::fmt::{self, Debug};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flotilla_crds::common::labels;
use flotilla_crds::{Plan, SpecError, Subscription, SubscriptionPhase};
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota};
use kube::api::{ListParams, ObjectMeta, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::build::{self, Blueprint, NamespaceOrigin, QUOTA_NAME};
use super::namespaces::{self, TenantNamespaces};
use super::phase::{self, Decision, Observation, PlanLookup};
use super::status;
use super::tenant::Tenant;
use super::usage::{self, UsageReport};
use crate::index::NamespacesByClaim;
use flotilla_runtime::applied::AppliedChildren;
use flotilla_runtime::context::Context;
use flotilla_runtime::error::{
    ControllerError, ErrorClass, api_message, classify_finalizer_error, classify_kube_error,
    finalizer_retry_after, is_quota_exceeded, kube_retry_after,
};
use flotilla_runtime::finalizer::{Cleanup, FinalizerError, reconcile_with_finalizer};
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::phase::IllegalTransition;
use flotilla_runtime::reconciler;
use flotilla_runtime::status::{StatusWrite, write_status};
use flotilla_runtime::wakeups::Wakeups;
use flotilla_runtime::watch::Synced;

/// How long a reconcile waits for the caches' first lists before giving up (and retrying with
/// backoff): deciding from an empty namespace cache would see no namespace at all.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Page size of the authoritative namespace list made before a deleted Subscription lets go.
const LIST_PAGE_SIZE: u32 = 500;

/// The caches the controller reads. All are filled by the watches that also trigger it.
pub struct Caches {
    /// Every Plan.
    pub plans: Store<DeserializeGuard<Plan>>,
    /// Every Namespace (metadata only): the tenant's, and the ones it must not take over.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// The namespaces labelled with or owned by each Subscription, from the Namespace watch.
    pub namespace_claims: SharedIndex<NamespacesByClaim>,
    /// Flotilla's ResourceQuotas (whole objects: their status is the tenant's usage).
    pub quotas: Store<ResourceQuota>,
    /// The first-list signal of every cache the controller depends on.
    pub synced: Vec<Synced>,
}

/// What the Subscription controller keeps between reconciles.
pub struct SubscriptionState {
    /// Writes to Subscriptions (finalizer and status).
    pub subscriptions: Api<Subscription>,
    /// What the controller reads instead of asking the API server.
    pub caches: Caches,
    /// When each Subscription is next due by time alone (trial end, grace period end).
    pub wakeups: Wakeups<DeserializeGuard<Subscription>>,
    /// What was last applied to each tenant namespace and child, so unchanged ones are not
    /// sent again. The watches keep it in step with deletions.
    pub applied: Arc<AppliedChildren>,
    pub(super) client: Client,
    /// UIDs of Subscriptions that scaled workloads down in this process and have not
    /// restored them yet. The recorded phase `Suspended` says the same across restarts; this
    /// covers the gap where the scale-down succeeded but the status write that would record
    /// it did not, and the spec changed before the retry.
    restore_pending: Mutex<HashSet<String>>,
}

impl Debug for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionState")
            .field("cached_plans", &self.caches.plans.len())
            .field("cached_namespaces", &self.caches.namespaces.len())
            .field("applied_children", &self.applied.len())
            .field("wakeups", &self.wakeups)
            .finish_non_exhaustive()
    }
}

impl SubscriptionState {
    /// The state for a client, the caches, the wake-up schedule and the record of applied
    /// children.
    pub fn new(
        client: Client,
        caches: Caches,
        wakeups: Wakeups<DeserializeGuard<Subscription>>,
        applied: Arc<AppliedChildren>,
    ) -> Self {
        Self {
            subscriptions: Api::all(client.clone()),
            caches,
            wakeups,
            applied,
            client,
            restore_pending: Mutex::new(HashSet::new()),
        }
    }

    /// The UIDs whose workloads may still carry a suspension record (see the field).
    pub(super) fn restore_pending(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.restore_pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a request to a child object was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildOperation {
    /// Creating a tenant namespace.
    Create,
    /// Server-side applying a child.
    Apply,
    /// Deleting a namespace or a child the plan no longer asks for.
    Delete,
    /// Removing Flotilla's ownerReference, labels and annotations (`deletionPolicy: Retain`).
    Release,
    /// Reading an object.
    Read,
    /// Listing workloads.
    List,
    /// Scaling a workload to zero.
    Suspend,
    /// Scaling a workload back to its recorded replicas.
    Restore,
}

impl ChildOperation {
    fn reason(self) -> &'static str {
        match self {
            ChildOperation::Create => "CreateFailed",
            ChildOperation::Apply => "ApplyFailed",
            ChildOperation::Delete => "DeleteFailed",
            ChildOperation::Release => "ReleaseFailed",
            ChildOperation::Read => "ReadFailed",
            ChildOperation::List => "ListFailed",
            ChildOperation::Suspend => "SuspendFailed",
            ChildOperation::Restore => "RestoreFailed",
        }
    }
}

impl fmt::Display for ChildOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildOperation::Create => "creating",
            ChildOperation::Apply => "applying",
            ChildOperation::Delete => "deleting",
            ChildOperation::Release => "releasing",
            ChildOperation::Read => "reading",
            ChildOperation::List => "listing",
            ChildOperation::Suspend => "scaling to zero",
            ChildOperation::Restore => "restoring",
        })
    }
}

/// Everything that can go wrong reconciling a Subscription.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The Subscription does not decode as the operator's `Subscription` type, or lacks the
    /// identity the API server gives every stored object.
    #[error("Subscription {name} cannot be decoded: {message}")]
    Undecodable {
        /// The Subscription.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The status records a phase the Subscription cannot leave for the one it should be in.
    #[error("Subscription {name}: {source}")]
    IllegalTransition {
        /// The Subscription.
        name: String,
        /// The refused move.
        #[source]
        source: IllegalTransition<SubscriptionPhase>,
    },
    /// The caches did not fill in time.
    #[error("the caches of the Subscription controller have not synced within {0:?}")]
    CacheNotSynced(Duration),
    /// The Plan disappeared from the cache between deciding and provisioning.
    #[error("Subscription {name}: Plan {plan} is no longer available")]
    PlanUnavailable {
        /// The Subscription.
        name: String,
        /// The Plan.
        plan: String,
    },
    /// A tenant namespace the cache did not know yet turned out to exist and not be ours.
    #[error(
        "Subscription {name}: namespace {namespace} was created by someone else; it is not taken over"
    )]
    NamespaceTaken {
        /// The Subscription.
        name: String,
        /// The namespace.
        namespace: String,
    },
    /// A request about a namespace, a child or a workload failed.
    #[error("Subscription {name}: {operation} {object}: {source}")]
    Child {
        /// The Subscription.
        name: String,
        /// What the request was doing.
        operation: ChildOperation,
        /// Which object, e.g. `ResourceQuota acme-prod/flotilla-quota`.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing namespaces before a deleted Subscription lets go failed.
    #[error("listing the namespaces of Subscription {name}: {source}")]
    ListNamespaces {
        /// The Subscription.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing `status` failed.
    #[error("writing the status of Subscription {name}: {source}")]
    StatusWrite {
        /// The Subscription.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer failed, or a step inside it did.
    #[error("finalizer of Subscription {name}: {source}")]
    Finalizer {
        /// The Subscription.
        name: String,
        /// What failed.
        #[source]
        source: Box<FinalizerError<SubscriptionError>>,
    },
}

impl ControllerError for SubscriptionError {
    fn class(&self) -> ErrorClass {
        match self {
            SubscriptionError::Undecodable { .. } | SubscriptionError::IllegalTransition { .. } => {
                ErrorClass::Permanent
            }
            SubscriptionError::CacheNotSynced(_)
            | SubscriptionError::PlanUnavailable { .. }
            // The namespace cache catches up, and the claim then reports the conflict.
            | SubscriptionError::NamespaceTaken { .. } => ErrorClass::Transient,
            SubscriptionError::Child { source, .. }
            | SubscriptionError::ListNamespaces { source, .. }
            | SubscriptionError::StatusWrite { source, .. } => classify_kube_error(source),
            SubscriptionError::Finalizer { source, .. } => classify_finalizer_error(source),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            SubscriptionError::Undecodable { .. } => "UndecodableObject",
            SubscriptionError::IllegalTransition { .. } => "IllegalPhaseTransition",
            SubscriptionError::CacheNotSynced(_) => "CacheNotSynced",
            SubscriptionError::PlanUnavailable { .. } => "PlanUnavailable",
            SubscriptionError::NamespaceTaken { .. } => "NamespaceTaken",
            SubscriptionError::Child { source, .. } if is_quota_exceeded(source) => {
                status::subscription_reasons::QUOTA_EXCEEDED
            }
            SubscriptionError::Child { operation, .. } => operation.reason(),
            SubscriptionError::ListNamespaces { .. } => "ListNamespacesFailed",
            SubscriptionError::StatusWrite { .. } => "StatusWriteFailed",
            SubscriptionError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerUpdateFailed",
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            SubscriptionError::Child { source, .. }
            | SubscriptionError::ListNamespaces { source, .. }
            | SubscriptionError::StatusWrite { source, .. } => kube_retry_after(source),
            SubscriptionError::Finalizer { source, .. } => finalizer_retry_after(source),
            _ => None,
        }
    }

    fn event_note(&self) -> String {
        self.quota_refusal().unwrap_or_else(|| self.to_string())
    }
}

impl SubscriptionError {
    /// What a ResourceQuota refused, in words for the Subscription's conditions and Event,
    /// if this is such a refusal (see [`is_quota_exceeded`]).
    pub fn quota_refusal(&self) -> Option<String> {
        match self {
            SubscriptionError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.quota_refusal()
                }
                _ => None,
            },
            SubscriptionError::Child {
                operation,
                object,
                source,
                ..
            } if is_quota_exceeded(source) => Some(status::quota_refusal_message(
                &operation.to_string(),
                object,
                &api_message(source),
            )),
            _ => None,
        }
    }
}

/// Reconciles one Subscription (the controller's `reconcile`).
pub async fn reconcile(
    object: Arc<DeserializeGuard<Subscription>>,
    ctx: Arc<Context<SubscriptionState>>,
) -> Result<Action, SubscriptionError> {
    reconciler::observe(&ctx, object.as_ref(), reconcile_subscription(&object, &ctx)).await
}

async fn reconcile_subscription(
    object: &DeserializeGuard<Subscription>,
    ctx: &Context<SubscriptionState>,
) -> Result<Action, SubscriptionError> {
    let subscription = match &object.0 {
        Ok(subscription) => Arc::new(subscription.clone()),
        Err(invalid) => {
            return Err(SubscriptionError::Undecodable {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                message: invalid.error.clone(),
            });
        }
    };
    // Deciding from a namespace cache that has not listed yet would see every namespace as
    // free, and a Plan cache that has not listed yet would report the Plan missing.
    let synced = tokio::time::timeout(
        CACHE_SYNC_TIMEOUT,
        futures::future::join_all(ctx.state.caches.synced.iter().map(Synced::wait)),
    )
    .await;
    if !matches!(&synced, Ok(all) if all.iter().all(|synced| *synced)) {
        return Err(SubscriptionError::CacheNotSynced(CACHE_SYNC_TIMEOUT));
    }

    let name = subscription.name_any();
    reconcile_with_finalizer(
        &ctx.state.subscriptions,
        subscription,
        |subscription| apply(subscription, ctx),
        |subscription| cleanup(subscription, ctx),
    )
    .await
    .map_err(|source| SubscriptionError::Finalizer {
        name,
        source: Box::new(source),
    })
}

/// Where the namespaces a decision is made from come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Namespaces {
    /// The watch cache: cheap, and a moment behind at worst (the next event settles it).
    Cached,
    /// Fresh reads from the API server (see [`listed_namespaces`]): for the decision that lets
    /// a deleted Subscription go, after which the garbage collector deletes whatever still
    /// names it as owner.
    Listed,
}

/// The Subscription lives: converge and come back when time alone changes the decision.
async fn apply(
    subscription: Arc<Subscription>,
    ctx: &Context<SubscriptionState>,
) -> Result<Action, SubscriptionError> {
    let decision = converge(&subscription, Namespaces::Cached, ctx).await?;
    ctx.state.wakeups.schedule(
        ObjectRef::new(&subscription.name_any()),
        decision.requeue_at,
    );
    // The wake-up above covers trial and grace period ends; watches cover everything else.
    // This requeue is only the safety net against a missed event.
    Ok(Action::requeue(ctx.config.resync_interval))
}

/// The Subscription is being deleted: cancel it, and let it go once its namespaces are gone
/// (`Delete`) or released (`Retain`).
async fn cleanup(
    subscription: Arc<Subscription>,
    ctx: &Context<SubscriptionState>,
) -> Result<Cleanup, SubscriptionError> {
    let decision = converge(&subscription, Namespaces::Listed, ctx).await?;
    if decision.cleanup_complete() {
        ctx.state
            .wakeups
            .schedule(ObjectRef::new(&subscription.name_any()), None);
        if let Some(uid) = subscription.uid() {
            ctx.state.restore_pending().remove(&uid);
        }
        return Ok(Cleanup::Done);
    }
    // Namespace events (each carries the Subscription's ownerReference until it is gone)
    // wake the Subscription as the namespaces terminate.
    Ok(Cleanup::Wait(Action::requeue(ctx.config.resync_interval)))
}

/// One pass: observe, decide, act, report. Returns the decision it carried out.
async fn converge(
    subscription: &Subscription,
    source: Namespaces,
    ctx: &Context<SubscriptionState>,
) -> Result<Decision, SubscriptionError> {
    let name = subscription.name_any();
    let Some(uid) = subscription.uid() else {
        return Err(SubscriptionError::Undecodable {
            name,
            message: "metadata.uid is missing".to_owned(),
        });
    };

    let plan_entry = ctx
        .state
        .caches
        .plans
        .get(&ObjectRef::new(&subscription.spec.plan));
    let plan = plan_lookup(plan_entry.as_deref());
    let tenant = TenantNamespaces::resolve(subscription);
    let existing = match source {
        Namespaces::Cached => cached_namespaces(&ctx.state.caches, subscription, &uid),
        Namespaces::Listed => {
            listed_namespaces(&ctx.state.client, subscription, &uid, &ctx.state.caches)
                .await
                .map_err(|source| SubscriptionError::ListNamespaces {
                    name: name.clone(),
                    source,
                })?
        }
    };
    let relevant = relevant_namespaces(existing, subscription, &uid);
    let claims = namespaces::claim(
        tenant.as_ref().unwrap_or(&TenantNamespaces::none()),
        &relevant,
        &name,
        &uid,
    );
    let observed = Observation {
        plan,
        tenant,
        namespaces: claims,
    };
    let decision = phase::decide(subscription, &observed, ctx.now()).map_err(|source| {
        SubscriptionError::IllegalTransition {
            name: name.clone(),
            source,
        }
    })?;

    let tenant = Tenant {
        subscription,
        name: &name,
        uid: &uid,
        existing: &relevant,
        ctx,
    };
    tenant.retire(&decision).await?;
    // Namespaces whose ResourceQuota this pass wrote, or whose last write the cache has not
    // shown yet: either way, the quota's watch event is on its way.
    let mut quotas_written: Vec<String> = Vec::new();
    if let Some(provision) = &decision.actions.provision {
        let plan = observed
            .plan
            .usable()
            .ok_or_else(|| SubscriptionError::PlanUnavailable {
                name: name.clone(),
                plan: subscription.spec.plan.clone(),
            })?;
        let owner =
            build::owner_reference(subscription).ok_or_else(|| SubscriptionError::Undecodable {
                name: name.clone(),
                message: "the Subscription has no name or uid".to_owned(),
            })?;
        let blueprint = Blueprint {
            subscription: &name,
            owner,
            plan_name: &subscription.spec.plan,
            plan,
            owners: &subscription.spec.owners,
            suspended: provision.suspended,
        };
        for namespace in &provision.namespaces {
            let origin = if observed.namespaces.is_handed_over(namespace) {
                NamespaceOrigin::HandedOver
            } else {
                NamespaceOrigin::Created
            };
            let provisioned = match tenant
                .provision(&build::tenant_objects(&blueprint, namespace, origin))
                .await
            {
                Ok(provisioned) => provisioned,
                Err(error) => {
                    if let Some(refusal) = error.quota_refusal() {
                        report_quota_refusal(subscription, &refusal, ctx).await;
                    }
                    return Err(error);
                }
            };
            if provisioned.quota_applied {
                quotas_written.push(namespace.clone());
            }
        }
    }
    tenant.workloads(&decision).await?;

    let usage = decision.actions.provision.as_ref().and_then(|_| {
        let plan_quota = observed.plan.usable().and_then(|plan| plan.quota.as_ref());
        usage::summarize(
            &decision.namespaces,
            &tenant_quotas(&ctx.state.caches.quotas, &decision.namespaces),
            plan_quota,
        )
    });
    if awaits_quota(&quotas_written, usage.as_ref()) {
        // The quota's watch event is certain to reconcile the Subscription again, with the
        // usage the quota controller reports; writing now would only be overwritten.
        tracing::debug!(
            namespaces = ?quotas_written,
            "status deferred until the written quotas are observed"
        );
    } else {
        report(subscription, &decision, &observed, usage.as_ref(), ctx).await?;
    }
    Ok(decision)
}

/// Whether the status write waits for the next reconcile: this pass wrote the quota of a
/// namespace that has not reported usage yet (or the cache has not shown the quota's last
/// write yet). A quota whose write the cache has shown never holds the status back, so a quota
/// controller that never reports costs a deferral per write, not the status.
fn awaits_quota(quotas_written: &[String], usage: Option<&UsageReport>) -> bool {
    match usage {
        None => !quotas_written.is_empty(),
        Some(report) => quotas_written
            .iter()
            .any(|namespace| report.unreported.contains(namespace)),
    }
}

/// What became of the Plan named by `spec.plan`, from the cache. A Plan that does not decode
/// is as good as invalid.
fn plan_lookup(entry: Option<&DeserializeGuard<Plan>>) -> PlanLookup<'_> {
    match entry.map(|guarded| &guarded.0) {
        None => PlanLookup::Missing,
        Some(Ok(plan)) => PlanLookup::of(Some(plan)),
        Some(Err(invalid)) => PlanLookup::Invalid(vec![SpecError::new(
            "spec",
            format!("the Plan cannot be decoded: {}", invalid.error),
        )]),
    }
}

/// The cached metadata of the namespaces [`relevant_namespaces`] selects, found by lookups: the
/// ones the spec names, and those the index knows as labelled with the Subscription or owned
/// by its UID. Nothing else of the cache is read.
fn cached_namespaces(caches: &Caches, subscription: &Subscription, uid: &str) -> Vec<ObjectMeta> {
    let mut names: BTreeSet<String> = subscription.desired_namespaces().into_iter().collect();
    {
        let claims = caches.namespace_claims.lock();
        let label = build::label_value(&subscription.name_any());
        names.extend(claims.labelled(&label).into_iter().map(str::to_owned));
        names.extend(claims.owned_by(uid).into_iter().map(str::to_owned));
    }
    names
        .iter()
        .filter_map(|name| caches.namespaces.get(&ObjectRef::new(name)))
        .map(|namespace| namespace.metadata.clone())
        .collect()
}

/// The namespaces that may be the Subscription's, from the API server: every one labelled with
/// its name (what Flotilla creates and what an admin hands over carry the label), and each one
/// the spec names or the cache shows owned by its UID (a created namespace whose label someone
/// removed still has its ownerReference, and must be found to be released under `Retain`).
async fn listed_namespaces(
    client: &Client,
    subscription: &Subscription,
    uid: &str,
    caches: &Caches,
) -> Result<Vec<ObjectMeta>, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let selector = format!(
        "{}={}",
        labels::SUBSCRIPTION,
        build::label_value(&subscription.name_any())
    );
    let mut found = Vec::new();
    let mut params = ListParams::default()
        .labels(&selector)
        .limit(LIST_PAGE_SIZE);
    loop {
        let page = api.list_metadata(&params).await?;
        found.extend(page.items.into_iter().map(|namespace| namespace.metadata));
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    let listed: BTreeSet<String> = found.iter().filter_map(|m| m.name.clone()).collect();
    let mut others: BTreeSet<String> = subscription.desired_namespaces().into_iter().collect();
    others.extend(
        cached_namespaces(caches, subscription, uid)
            .into_iter()
            .filter_map(|namespace| namespace.name),
    );
    let reads = others
        .iter()
        .filter(|name| !listed.contains(*name))
        .map(|name| api.get_metadata_opt(name));
    for namespace in futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
    {
        found.push(namespace.metadata);
    }
    Ok(found)
}

/// The namespaces `namespaces::claim` needs: the ones the spec names, and every one labelled
/// with the Subscription's name or owned by its UID.
fn relevant_namespaces(
    all: Vec<ObjectMeta>,
    subscription: &Subscription,
    uid: &str,
) -> Vec<Namespace> {
    let desired: BTreeSet<String> = subscription.desired_namespaces().into_iter().collect();
    let label = build::label_value(&subscription.name_any());
    all.into_iter()
        .filter(|meta| {
            meta.name
                .as_ref()
                .is_some_and(|name| desired.contains(name))
                || meta
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(labels::SUBSCRIPTION))
                    .is_some_and(|value| *value == label)
                || meta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|owner| owner.uid == uid)
        })
        .map(|metadata| Namespace {
            metadata,
            ..Namespace::default()
        })
        .collect()
}

/// The cached `flotilla-quota` ResourceQuotas of `namespaces`.
fn tenant_quotas(store: &Store<ResourceQuota>, namespaces: &[String]) -> Vec<ResourceQuota> {
    namespaces
        .iter()
        .filter_map(|namespace| store.get(&ObjectRef::new(QUOTA_NAME).within(namespace)))
        .map(|quota| quota.as_ref().clone())
        .collect()
}

/// Records in the conditions that a ResourceQuota refused a child, so the person who can act
/// (free usage, raise the quota) sees it on the Subscription; the phase stays as recorded.
/// The Warning Event comes from the failed reconcile (`reconciler::observe`, once per
/// streak), and the error policy retries slowly. Best effort: the refusal is the error that
/// counts, so a failed status write is only logged.
async fn report_quota_refusal(
    subscription: &Subscription,
    refusal: &str,
    ctx: &Context<SubscriptionState>,
) {
    let name = subscription.name_any();
    let current = subscription.status.as_ref();
    let desired = status::quota_refused(
        current,
        refusal,
        subscription.metadata.generation,
        ctx.now(),
    );
    if let Err(error) = write_status(&ctx.state.subscriptions, &name, current, &desired).await {
        tracing::warn!(%error, "could not record the quota refusal in the status");
    }
}

/// Writes the status (if it changed) and publishes the Events the change deserves.
async fn report(
    subscription: &Subscription,
    decision: &Decision,
    observed: &Observation<'_>,
    usage: Option<&UsageReport>,
    ctx: &Context<SubscriptionState>,
) -> Result<(), SubscriptionError> {
    let name = subscription.name_any();
    let plan = &subscription.spec.plan;
    let current = subscription.status.as_ref();
    let desired = status::desired_status(
        current,
        plan,
        decision,
        observed,
        usage,
        subscription.metadata.generation,
        ctx.now(),
    );
    let written = write_status(&ctx.state.subscriptions, &name, current, &desired)
        .await
        .map_err(|source| SubscriptionError::StatusWrite {
            name: name.clone(),
            source,
        })?;
    if written == StatusWrite::Applied {
        tracing::info!(phase = ?decision.phase, "status updated");
        let events = status::transition_events(plan, decision)
            .into_iter()
            .chain(status::condition_events(current, &desired));
        for event in events {
            event
                .publish(&ctx.recorder, subscription, "Reconcile")
                .await;
        }
    }
    Ok(())
}
