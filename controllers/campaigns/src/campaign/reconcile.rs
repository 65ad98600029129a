//! The imperative shell of the Campaign controller: check the campaign (spec, templates,
//! Channels), read its sender's progress, let [`super::phase::decide`] pick the phase, keep one
//! sender running exactly while the decision says Send, write the status once if it changed
//! and publish the Events the change deserves.
//!
//! The preview of a Draft or Scheduled campaign is one pass over the Subscription cache; it is
//! recomputed when the spec changes and otherwise at most every [`PREVIEW_INTERVAL`], so a
//! campaign waiting for review costs one scan a minute, not one per event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flotilla_crds::campaign::{CampaignPreview, VariantShare};
use flotilla_crds::common::describe_spec_errors;
use flotilla_crds::{Campaign, CampaignPhase, Plan, Subscription};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use super::allocation::Group;
use super::audience::{AudienceFilter, SubscriptionCache, SubscriptionView};
use super::content::Content;
use super::phase::{self, Action as Step, Observation};
use super::preview::{self, Schedule};
use super::quiet_hours::{QuietHours, time_zone};
use super::sender::{self, Acknowledged, Progress, Sender, SenderInputs};
use super::status::{self, Findings};
use crate::channel::deliveries::Deliveries;
use crate::ledger::{FlushPolicy, LedgerStore};
use flotilla_runtime::context::Context;
use flotilla_runtime::error::{
    ControllerError, ErrorClass, classify_finalizer_error, classify_kube_error,
    finalizer_retry_after, kube_retry_after,
};
use flotilla_runtime::finalizer::{Cleanup, FinalizerError, reconcile_with_finalizer};
use flotilla_runtime::phase::IllegalTransition;
use flotilla_runtime::reconciler;
use flotilla_runtime::status::{StatusWrite, write_status};
use flotilla_runtime::watch::Synced;

/// How long a reconcile waits for the Subscription, Plan and Channel caches' first list.
const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the preview of a waiting campaign is recomputed when its spec did not change.
pub const PREVIEW_INTERVAL: Duration = Duration::from_secs(60);
/// How long a deleted campaign's sender gets to finish what is in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the unsubscribe link of a message: `(campaign, Subscription name) → URL`.
pub type UnsubscribeLinks = Arc<dyn Fn(&Campaign, &str) -> String + Send + Sync>;

/// What the Campaign controller keeps between reconciles.
pub struct CampaignState {
    client: Client,
    /// Subscriptions (trimmed): audience, opt-outs, template fields.
    pub subscriptions: SubscriptionCache,
    /// Plans: display names.
    pub plans: Store<Plan>,
    /// The Channels' deliveries (and the registry of usable Channels behind them).
    pub deliveries: Deliveries,
    /// Whether those caches have listed.
    pub synced: Vec<Synced>,
    /// Unsubscribe links.
    pub unsubscribe: UnsubscribeLinks,
    /// How outcomes are batched into ledger writes.
    pub flush: FlushPolicy,
    wake: Arc<dyn Fn(ObjectRef<DeserializeGuard<Campaign>>) + Send + Sync>,
    senders: Mutex<HashMap<String, Sender>>,
    previews: Mutex<HashMap<String, CachedPreview>>,
}

struct CachedPreview {
    generation: Option<i64>,
    at: Instant,
    preview: CampaignPreview,
}

impl std::fmt::Debug for CampaignState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignState").finish_non_exhaustive()
    }
}

impl CampaignState {
    /// The state for a client and the caches it reads; `wake` requeues a campaign (its
    /// sender calls it when there is progress to write).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        subscriptions: SubscriptionCache,
        plans: Store<Plan>,
        deliveries: Deliveries,
        synced: Vec<Synced>,
        unsubscribe: UnsubscribeLinks,
        flush: FlushPolicy,
        wake: Arc<dyn Fn(ObjectRef<DeserializeGuard<Campaign>>) + Send + Sync>,
    ) -> Self {
        Self {
            client,
            subscriptions,
            plans,
            deliveries,
            synced,
            unsubscribe,
            flush,
            wake,
            senders: Mutex::default(),
            previews: Mutex::default(),
        }
    }

    fn campaigns(&self, namespace: &str) -> Api<Campaign> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn senders(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sender>> {
        self.senders.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn progress(&self, uid: &str) -> Option<Progress> {
        self.senders().get(uid).map(Sender::progress)
    }

    /// Keeps a sender for this generation and acknowledgement running.
    fn ensure_sender(
        &self,
        campaign: &Arc<Campaign>,
        content: Arc<Content>,
        started_at: Timestamp,
        acknowledged: Acknowledged,
    ) {
        let uid = campaign.uid().unwrap_or_default();
        let mut senders = self.senders();
        if let Some(running) = senders.get(&uid)
            && running.generation == campaign.metadata.generation
        {
            let progress = running.progress();
            // A running sender keeps going; one that ended for good stays ended until a
            // resume accepts the failures that stopped it.
            let ended_for_good = (progress.finished || progress.threshold_crossed)
                && running.acknowledged == acknowledged;
            if !progress.stopped || ended_for_good {
                return;
            }
        }
        let previous = senders.remove(&uid);
        let reference = ObjectRef::from_obj(campaign.as_ref());
        let wake = Arc::clone(&self.wake);
        let reference = ObjectRef::<DeserializeGuard<Campaign>>::new(&reference.name)
            .within(reference.namespace.as_deref().unwrap_or_default());
        let inputs = SenderInputs {
            campaign: Arc::clone(campaign),
            store: LedgerStore::new(self.client.clone(), campaign, self.flush),
            content,
            deliveries: self.deliveries.clone(),
            subscriptions: self.subscriptions.clone(),
            plans: self.plans.clone(),
            started_at,
            acknowledged,
            unsubscribe_url: Arc::clone(&self.unsubscribe),
            wake: Arc::new(move || wake(reference.clone())),
            flush: self.flush,
        };
        tracing::info!(campaign = %campaign.name_any(), "sender started");
        senders.insert(uid, Sender::spawn(inputs, previous));
    }

    /// Tells the campaign's sender, if any, to stop (it finishes what is in flight).
    fn stop_sender(&self, uid: &str) {
        if let Some(sender) = self.senders().get(uid) {
            sender.stop();
        }
    }

    /// The campaign's preview, recomputed when due.
    fn preview(&self, campaign: &Campaign, now: Timestamp) -> Option<CampaignPreview> {
        let uid = campaign.uid().unwrap_or_default();
        let mut previews = self.previews.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = previews.get(&uid)
            && cached.generation == campaign.metadata.generation
            && cached.at.elapsed() < PREVIEW_INTERVAL
        {
            return Some(cached.preview.clone());
        }
        let preview = compute_preview(campaign, &self.subscriptions.store, &self.deliveries, now)?;
        previews.insert(
            uid,
            CachedPreview {
                generation: campaign.metadata.generation,
                at: Instant::now(),
                preview: preview.clone(),
            },
        );
        Some(preview)
    }

    fn forget(&self, uid: &str) -> Option<Sender> {
        self.previews
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(uid);
        self.senders().remove(uid)
    }
}

/// What a Draft or Scheduled campaign would do now: one pass over the Subscription cache.
fn compute_preview(
    campaign: &Campaign,
    subscriptions: &Store<Subscription>,
    deliveries: &Deliveries,
    now: Timestamp,
) -> Option<CampaignPreview> {
    let spec = &campaign.spec;
    let filter = AudienceFilter::new(&sender::trigger_audience(spec)).ok()?;
    let allocation = sender::allocation(campaign).ok()?;
    let mut preview = CampaignPreview::default();
    let mut variants = vec![0i64; spec.variants.len().max(1)];
    let mut zones: Vec<Option<String>> = Vec::new();
    for subscription in subscriptions.state() {
        let view = SubscriptionView::of(&subscription);
        if !filter.matches(&view) || !sender::triggered(spec.trigger.as_ref(), &view, now) {
            continue;
        }
        preview.audience_size += 1;
        match allocation.group(&view.name) {
            Group::HeldOut => preview.held_out += 1,
            Group::Variant(index) => {
                if view.opted_out {
                    preview.opted_out += 1;
                } else {
                    if let Some(count) = variants.get_mut(index) {
                        *count += 1;
                    }
                    zones.push(view.time_zone.clone());
                }
            }
        }
    }
    preview.variants = spec
        .variants
        .iter()
        .zip(&variants)
        .map(|(variant, recipients)| VariantShare {
            name: variant.name.clone(),
            recipients: *recipients,
        })
        .collect();
    let quiet_hours = spec
        .quiet_hours
        .as_ref()
        .and_then(|q| QuietHours::new(&q.start, &q.end).ok());
    let default_zone = spec
        .quiet_hours
        .as_ref()
        .and_then(|q| TimeZone::get(&q.default_time_zone).ok())
        .unwrap_or(TimeZone::UTC);
    let start_at = spec
        .schedule
        .as_ref()
        .and_then(|s| s.start_at.as_ref())
        .map_or(now, |t| t.0);
    let schedule = Schedule {
        start_at,
        not_before: now,
        local_time: spec.schedule.as_ref().is_some_and(|s| s.local_time),
        quiet_hours: quiet_hours.as_ref(),
        per_minute: per_minute(campaign, deliveries),
    };
    let groups = preview::group_by_zone(zones.iter().map(Option::as_deref), &default_zone);
    // Without a start time the estimate would move with the clock and rewrite the status
    // every minute; it is given once there is a start.
    let starts = spec.schedule.as_ref().is_some_and(|s| s.start_at.is_some());
    preview.estimated_finish_at = preview::estimated_finish(&schedule, &groups)
        .filter(|_| starts)
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
    Some(preview)
}

/// The rate the campaign can send at: its throttle, or its first usable Channel's rate limit,
/// whichever is lower.
fn per_minute(campaign: &Campaign, deliveries: &Deliveries) -> Option<u64> {
    let namespace = campaign.namespace().unwrap_or_default();
    let throttle = campaign
        .spec
        .throttle
        .as_ref()
        .and_then(|t| t.messages_per_minute)
        .and_then(|n| u64::try_from(n).ok());
    let channel = campaign
        .spec
        .channels
        .names
        .iter()
        .find_map(|name| deliveries.registry().get(&namespace, name))
        .and_then(|usable| {
            usable
                .spec
                .rate_limit
                .as_ref()
                .map(|r| r.messages_per_minute)
        })
        .and_then(|n| u64::try_from(n).ok());
    match (throttle, channel) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Everything that can go wrong reconciling a Campaign.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// The Campaign does not decode as the operator's type (a version skew).
    #[error("Campaign {name} cannot be decoded: {message}")]
    Undecodable {
        /// The Campaign.
        name: String,
        /// The decoding error.
        message: String,
    },
    /// The status records a phase the Campaign cannot leave for the one it should be in.
    #[error("Campaign {name}: illegal phase transition")]
    IllegalTransition {
        /// The Campaign.
        name: String,
        /// The refused move.
        #[source]
        source: IllegalTransition<CampaignPhase>,
    },
    /// Writing `status` failed.
    #[error("writing the status of Campaign {name}")]
    StatusWrite {
        /// The Campaign.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Subscription, Plan or Channel cache did not fill in time.
    #[error("the Subscription, Plan and Channel caches have not synced within {0:?}")]
    CacheNotSynced(Duration),
    /// Adding or removing the finalizer failed, or a step inside it did.
    #[error("finalizer of Campaign {name}")]
    Finalizer {
        /// The Campaign.
        name: String,
        /// What failed.
        #[source]
        source: Box<FinalizerError<CampaignError>>,
    },
}

impl ControllerError for CampaignError {
    fn class(&self) -> ErrorClass {
        match self {
            CampaignError::Undecodable { .. } | CampaignError::IllegalTransition { .. } => {
                ErrorClass::Permanent
            }
            CampaignError::StatusWrite { source, .. } => classify_kube_error(source),
            CampaignError::CacheNotSynced(_) => ErrorClass::Transient,
            CampaignError::Finalizer { source, .. } => classify_finalizer_error(source),
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            CampaignError::Undecodable { .. } => "UndecodableObject",
            CampaignError::IllegalTransition { .. } => "IllegalPhaseTransition",
            CampaignError::StatusWrite { .. } => "StatusWriteFailed",
            CampaignError::CacheNotSynced(_) => "CacheNotSynced",
            CampaignError::Finalizer { source, .. } => match source.as_ref() {
                FinalizerError::ApplyFailed(inner) | FinalizerError::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerUpdateFailed",
            },
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CampaignError::StatusWrite { source, .. } => kube_retry_after(source),
            CampaignError::Finalizer { source, .. } => finalizer_retry_after(source),
            _ => None,
        }
    }
}

/// Reconciles one Campaign (the controller's `reconcile`).
pub async fn reconcile(
    object: Arc<DeserializeGuard<Campaign>>,
    ctx: Arc<Context<CampaignState>>,
) -> Result<Action, CampaignError> {
    reconciler::observe(&ctx, object.as_ref(), reconcile_campaign(&object, &ctx)).await
}

async fn reconcile_campaign(
    object: &DeserializeGuard<Campaign>,
    ctx: &Context<CampaignState>,
) -> Result<Action, CampaignError> {
    let campaign = match &object.0 {
        Ok(campaign) => Arc::new(campaign.clone()),
        Err(invalid) => {
            return Err(CampaignError::Undecodable {
                name: invalid.metadata.name.clone().unwrap_or_default(),
                message: invalid.error.clone(),
            });
        }
    };
    if !Synced::wait_all(&ctx.state.synced, CACHE_SYNC_TIMEOUT).await {
        return Err(CampaignError::CacheNotSynced(CACHE_SYNC_TIMEOUT));
    }
    let name = campaign.name_any();
    let api = ctx
        .state
        .campaigns(&campaign.namespace().unwrap_or_default());
    reconcile_with_finalizer(
        &api,
        campaign,
        |campaign| apply(campaign, ctx),
        |campaign| cleanup(campaign, ctx),
    )
    .await
    .map_err(|source| CampaignError::Finalizer {
        name,
        source: Box::new(source),
    })
}

/// Spec, template and time-zone problems, and the compiled templates when there are none.
fn check(campaign: &Campaign) -> (Vec<String>, Option<String>, Option<Arc<Content>>) {
    let spec = &campaign.spec;
    let mut invalid = Vec::new();
    if let Err(errors) = spec.validate() {
        invalid.push(describe_spec_errors(&errors));
    }
    if let Err(error) = AudienceFilter::new(&spec.audience) {
        invalid.push(error.to_string());
    }
    if let Err(error) = sender::allocation(campaign) {
        invalid.push(error.to_string());
    }
    if let Some(quiet) = &spec.quiet_hours {
        if let Err(error) = QuietHours::new(&quiet.start, &quiet.end) {
            invalid.push(error.to_string());
        }
        if let Err(error) = time_zone("spec.quietHours.defaultTimeZone", &quiet.default_time_zone) {
            invalid.push(error.to_string());
        }
    }
    match Content::new(spec) {
        Ok(content) if invalid.is_empty() => (invalid, None, Some(Arc::new(content))),
        Ok(_) => (invalid, None, None),
        Err(error) => {
            let error = error.to_string();
            invalid.push(error.clone());
            (invalid, Some(error), None)
        }
    }
}

async fn apply(
    campaign: Arc<Campaign>,
    ctx: &Context<CampaignState>,
) -> Result<Action, CampaignError> {
    let now = ctx.now();
    let state = &ctx.state;
    let uid = campaign.uid().unwrap_or_default();
    let namespace = campaign.namespace().unwrap_or_default();
    let current = campaign.status.as_ref();
    let recorded = current.and_then(|s| s.phase).unwrap_or_default();
    let (invalid, template_error, content) = check(&campaign);
    let channels_not_ready: Vec<String> = campaign
        .spec
        .channels
        .names
        .iter()
        .filter(|name| state.deliveries.registry().get(&namespace, name).is_none())
        .cloned()
        .collect();
    let channel_ready = channels_not_ready.len() < campaign.spec.channels.names.len();
    let progress = state.progress(&uid);
    let counts = progress.as_ref().and_then(|p| p.counts.clone());
    let resumed = status::resume_requested(&campaign);
    let acknowledged = match (&counts, resumed) {
        (Some(counts), true) => Acknowledged {
            failed: counts.all.failed,
            finished: counts.all.sent + counts.all.failed,
        },
        _ => status::acknowledged(current),
    };
    let threshold_crossed = counts.as_ref().is_some_and(|c| {
        sender::threshold_crossed(campaign.spec.failure_threshold.as_ref(), c, acknowledged)
    });
    let started_at = current.and_then(|s| s.started_at.as_ref()).map(|t| t.0);
    let trigger = campaign.spec.trigger.is_some();
    let pending = match &progress {
        Some(p) if p.finished => 0,
        // A trigger campaign never completes; nothing pending means listening.
        Some(p) if trigger => p.counts.as_ref().map_or(0, |c| c.all.pending),
        Some(p) => p.counts.as_ref().map_or(1, |c| c.all.pending.max(1)),
        None => 1,
    };
    let seen = Observation {
        started: started_at.is_some(),
        templates_valid: invalid.is_empty(),
        channel_ready,
        pending,
        sent: counts.as_ref().map_or(0, |c| c.all.sent),
        failed: counts.as_ref().map_or(0, |c| c.all.failed),
        threshold_crossed,
        now,
    };
    let decision = phase::decide(&campaign.spec, recorded, &seen).map_err(|source| {
        CampaignError::IllegalTransition {
            name: campaign.name_any(),
            source,
        }
    })?;
    match content {
        Some(content) if decision.does(Step::Send) => {
            state.ensure_sender(&campaign, content, started_at.unwrap_or(now), acknowledged)
        }
        _ => state.stop_sender(&uid),
    }
    let waiting = matches!(
        decision.phase,
        CampaignPhase::Draft | CampaignPhase::Scheduled
    ) || (decision.phase == CampaignPhase::Paused && started_at.is_none());
    let findings = Findings {
        invalid,
        template_error,
        channels_not_ready,
        channels: campaign.spec.channels.names.len(),
        next_send_at: progress.as_ref().and_then(|p| p.next_send_at),
        sender_problem: progress.as_ref().and_then(|p| p.problem.clone()),
        counts,
        preview: if waiting {
            state.preview(&campaign, now)
        } else {
            None
        },
        acknowledged,
        resumed: resumed && progress.as_ref().is_some_and(|p| p.counts.is_some()),
    };
    report(&campaign, &decision, &findings, ctx).await?;
    let requeue = if waiting {
        let until_start = decision
            .requeue_at
            .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO));
        until_start.map_or(PREVIEW_INTERVAL, |d| d.min(PREVIEW_INTERVAL))
    } else {
        // The sender wakes it on progress; Channels and own changes wake it too.
        ctx.config.resync_interval
    };
    Ok(Action::requeue(requeue))
}

/// The campaign is being deleted: its sender finishes what is in flight, then it goes (its
/// ledger ConfigMaps are owned by it and garbage-collected).
async fn cleanup(
    campaign: Arc<Campaign>,
    ctx: &Context<CampaignState>,
) -> Result<Cleanup, CampaignError> {
    if let Some(sender) = ctx.state.forget(&campaign.uid().unwrap_or_default())
        && tokio::time::timeout(STOP_TIMEOUT, sender.stop_and_wait())
            .await
            .is_err()
    {
        tracing::warn!(campaign = %campaign.name_any(), "sender did not stop in time");
    }
    Ok(Cleanup::Done)
}

/// Writes the status if it changed, with the Events the change deserves.
async fn report(
    campaign: &Campaign,
    decision: &phase::Decision,
    findings: &Findings,
    ctx: &Context<CampaignState>,
) -> Result<(), CampaignError> {
    let name = campaign.name_any();
    let current = campaign.status.as_ref();
    let desired = status::desired_status(campaign, decision, findings, ctx.now());
    let api = ctx
        .state
        .campaigns(&campaign.namespace().unwrap_or_default());
    let written = write_status(&api, &name, current, &desired)
        .await
        .map_err(|source| CampaignError::StatusWrite {
            name: name.clone(),
            source,
        })?;
    if written == StatusWrite::Applied {
        tracing::info!(phase = ?decision.phase, "status updated");
        for event in status::transition_events(current, &desired) {
            event.publish(&ctx.recorder, campaign, "Reconcile").await;
        }
    }
    Ok(())
}
