//! The sender of one running campaign: a task that claims recipients from the delivery ledger,
//! sends each claim through the campaign's Channels and records the outcome, until every
//! recipient is finished, the failure threshold is crossed, or it is told to stop.
//!
//! | Step | Where the guarantee comes from |
//! |---|---|
//! | claim a batch | [`LedgerStore::claim`] persists the claim before anything is sent |
//! | per claim, before sending | the Subscription now: gone → Skipped, opted out → OptedOut; quiet hours and local time → Deferred (no attempt counted) |
//! | send | at most `throttle.maxInFlight` at once, each after a `throttle` permit and then its Channel's own rate limit and breaker ([`ChannelDelivery::deliver`]) |
//! | record | in memory; written with the next claim of the shard, or when [`FlushPolicy`] says; sends go on while a write is under way, and what finishes meanwhile is recorded after it |
//! | stop | no new claims; what is in flight finishes and is written |
//!
//! Channels, `mode: fallback`: a recipient stays on its Channel while that one fails
//! transiently (retried with backoff, up to `retry.maxAttempts` there) and moves to the next
//! when it fails permanently or exhausts its retries — or at once, for this attempt, while its
//! breaker is open or it is not Ready. How far it got is in the ledger, so a restart does not
//! go back to a Channel that failed for good. Nothing usable left → deferred without counting
//! an attempt; every Channel failed for good → failed. `mode: all` sends on every Channel, is
//! delivered when at least one took it, and is retried as a whole while a failure was
//! transient.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flotilla_crds::campaign::{
    Audience as CampaignAudience, CampaignFailureThreshold, CampaignRetry, DeliveryMode, Throttle,
    Trigger,
};
use flotilla_crds::subscription::SubscriptionPhase;
use flotilla_crds::{Campaign, Plan};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::allocation::{Allocation, Group};
use super::audience::{AudienceFilter, SubscriptionCache, SubscriptionView};
use super::content::{Content, recipient_fields};
use super::pacer::Pacer;
use super::preview::{self, Schedule};
use super::quiet_hours::QuietHours;
use super::retry::{Next, Outcome, after_failure};
use crate::channel::deliveries::Deliveries;
use crate::channel::{Addressee, Attempt, Message};
use crate::ledger::{
    Audience, Claim, DeliveryLedger, DeliveryResult, FlushPolicy, LedgerCounts, LedgerError,
    LedgerStore, Recipient,
};

/// In flight at once when the campaign sets no `throttle.maxInFlight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Most recipients claimed (one ledger write) at a time.
const MAX_BATCH: usize = 500;
/// Fewest recipients claimed at a time, so a small `maxInFlight` does not mean a write per
/// message.
const MIN_BATCH: usize = 50;
/// How long a recipient waits when none of its Channels is usable now.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(30);
/// How often a trigger campaign looks for Subscriptions newly meeting its trigger.
pub const TRIGGER_POLL: Duration = Duration::from_secs(5);
/// How often a trial-ending trigger rescans with no Subscription changed (time alone moves
/// a trial's end into the window).
pub const TIME_TRIGGER_RESCAN: Duration = Duration::from_secs(60);
/// How often progress is published to the reconciler while sending.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Backoff after a ledger error, doubled up to the cap.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Failures already accepted by a `spec.resume` (see `status.acknowledgedFailures`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acknowledged {
    /// Failed messages accepted.
    pub failed: u64,
    /// Finished (sent or failed) messages when they were.
    pub finished: u64,
}

/// Whether the failures after those `acknowledged` cross `threshold`: at least `minFinished`
/// messages finished since, and at least `percent` of them failed.
pub fn threshold_crossed(
    threshold: Option<&CampaignFailureThreshold>,
    counts: &LedgerCounts,
    acknowledged: Acknowledged,
) -> bool {
    let Some(threshold) = threshold else {
        return false;
    };
    let finished = (counts.all.sent + counts.all.failed).saturating_sub(acknowledged.finished);
    let failed = counts.all.failed.saturating_sub(acknowledged.failed);
    finished >= u64::try_from(threshold.min_finished).unwrap_or(1).max(1)
        && failed * 100 >= u64::try_from(threshold.percent).unwrap_or(0) * finished
}

/// What a sender has done, for the reconciler to write into the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The ledger's counts (exact), once it is open.
    pub counts: Option<LedgerCounts>,
    /// Every recipient is finished.
    pub finished: bool,
    /// The failure threshold is crossed; the sender stopped claiming.
    pub threshold_crossed: bool,
    /// When the next recipient waiting (quiet hours, a retry) becomes due.
    pub next_send_at: Option<Timestamp>,
    /// Why it cannot go on right now (a ledger error it retries), if it cannot.
    pub problem: Option<String>,
    /// The task has ended.
    pub stopped: bool,
}

/// Everything a sender reads.
#[derive(Clone)]
pub struct SenderInputs {
    /// The Campaign as read (UID, spec).
    pub campaign: Arc<Campaign>,
    /// Its ledger.
    pub store: LedgerStore,
    /// Its compiled templates.
    pub content: Arc<Content>,
    /// The Channels' deliveries, shared by every campaign.
    pub deliveries: Deliveries,
    /// Subscriptions now (opt-outs, template fields, trigger matches).
    pub subscriptions: SubscriptionCache,
    /// Plans now (display names).
    pub plans: Store<Plan>,
    /// When the campaign started (`status.startedAt`): local-time sending counts from it.
    pub started_at: Timestamp,
    /// Failures accepted by a resume.
    pub acknowledged: Acknowledged,
    /// The unsubscribe link of a message.
    pub unsubscribe_url: super::reconcile::UnsubscribeLinks,
    /// Called when there is progress worth a status write.
    pub wake: Arc<dyn Fn() + Send + Sync>,
    /// How outcomes are batched into ledger writes.
    pub flush: FlushPolicy,
}

/// A running (or finished) sender.
pub struct Sender {
    /// The Campaign generation it sends.
    pub generation: Option<i64>,
    /// The acknowledged failures it judges the threshold by.
    pub acknowledged: Acknowledged,
    stop: watch::Sender<bool>,
    progress: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("generation", &self.generation)
            .field("progress", &self.progress())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Starts sending; a `previous` sender of the same campaign is stopped and awaited first,
    /// so two never write the ledger at once.
    pub fn spawn(inputs: SenderInputs, previous: Option<Sender>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let generation = inputs.campaign.metadata.generation;
        let acknowledged = inputs.acknowledged;
        let shared = Arc::clone(&progress);
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                previous.stop_and_wait().await;
            }
            run(inputs, shared, stopped).await;
        });
        Self {
            generation,
            acknowledged,
            stop,
            progress,
            task,
        }
    }

    /// What it has done so far.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tells it to stop: no new claims; what is in flight finishes and is written.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops it and waits until it has.
    pub async fn stop_and_wait(self) {
        self.stop();
        let _ = self.task.await;
    }
}

fn publish(shared: &Mutex<Progress>, update: impl FnOnce(&mut Progress)) {
    update(&mut shared.lock().unwrap_or_else(PoisonError::into_inner));
}

async fn run(inputs: SenderInputs, shared: Arc<Mutex<Progress>>, mut stop: watch::Receiver<bool>) {
    let mut backoff = ERROR_BACKOFF;
    loop {
        match send_all(&inputs, &shared, &mut stop).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(campaign = %inputs.campaign.name_any(), %error, "campaign ledger; retrying");
                publish(&shared, |p| p.problem = Some(describe(&error)));
                (inputs.wake)();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
                backoff = (backoff * 2).min(ERROR_BACKOFF_CAP);
            }
        }
    }
    publish(&shared, |p| p.stopped = true);
    (inputs.wake)();
}

fn describe(error: &LedgerError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Sends the campaign: its one ledger, or round after round for a trigger campaign.
async fn send_all(
    inputs: &SenderInputs,
    shared: &Mutex<Progress>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), LedgerError> {
    if inputs.campaign.spec.trigger.is_some() {
        return send_rounds(inputs, shared, stop).await;
    }
    let mut ledger = inputs
        .store
        .open(|| snapshot(inputs, &HashSet::new()))
        .await?;
    publish(shared, |p| p.problem = None);
    let base = LedgerCounts::default();
    let result = send_ledger(inputs, &inputs.store, &mut ledger, &base, shared, stop).await;
    publish(shared, |p| p.finished = ledger.is_finished());
    (inputs.wake)();
    result
}

/// A trigger campaign: rounds, each a ledger of the Subscriptions that newly match the
/// trigger, one after the other; between rounds it looks for new matches every
/// [`TRIGGER_POLL`] — scanning the Subscription cache only when a Subscription changed (or,
/// for a trial-ending trigger, which time alone can meet, every [`TIME_TRIGGER_RESCAN`]).
/// A Subscription is in at most one round, so it gets one message.
async fn send_rounds(
    inputs: &SenderInputs,
    shared: &Mutex<Progress>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), LedgerError> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut base = LedgerCounts::default();
    let mut round = 0;
    // The round known not to be persisted yet (this sender is its only writer), so it is
    // not read again at every poll.
    let mut absent: Option<usize> = None;
    let mut scanned: Option<(u64, tokio::time::Instant)> = None;
    let time_based = inputs
        .campaign
        .spec
        .trigger
        .as_ref()
        .is_some_and(|t| t.days_before_trial_end.is_some());
    loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            return Ok(());
        }
        let store = inputs.store.clone().round(round);
        let persisted = if absent == Some(round) {
            None
        } else {
            let loaded = store.load().await?;
            if loaded.is_none() {
                absent = Some(round);
            }
            loaded
        };
        let ledger = match persisted {
            Some(ledger) => Some(ledger),
            None => {
                let changes = inputs.subscriptions.changes.load(Ordering::Acquire);
                let due = scanned.is_none_or(|(at_changes, at)| {
                    at_changes != changes || (time_based && at.elapsed() >= TIME_TRIGGER_RESCAN)
                });
                let (audience, shards) = if due {
                    scanned = Some((changes, tokio::time::Instant::now()));
                    snapshot(inputs, &seen)
                } else {
                    Audience::from_recipients(Vec::new())
                };
                if audience.recipients().is_empty() {
                    None
                } else {
                    tracing::info!(
                        campaign = %inputs.campaign.name_any(),
                        round,
                        recipients = audience.recipients().len(),
                        "trigger round starts"
                    );
                    Some(store.start(audience, shards).await?)
                }
            }
        };
        publish(shared, |p| p.problem = None);
        match ledger {
            Some(mut ledger) => {
                send_ledger(inputs, &store, &mut ledger, &base, shared, stop).await?;
                if !ledger.is_finished() {
                    // Stopped or paused: the next sender resumes this round.
                    return Ok(());
                }
                seen.extend(ledger.audience().recipients().iter().map(|r| r.uid.clone()));
                base.merge(&ledger.counts());
                round += 1;
            }
            None => {
                let changed = {
                    let mut progress = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    let changed = progress.counts.as_ref() != Some(&base);
                    progress.counts = Some(base.clone());
                    progress.next_send_at = None;
                    changed
                };
                if changed {
                    (inputs.wake)();
                }
                tokio::select! {
                    () = tokio::time::sleep(TRIGGER_POLL) => {}
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                }
            }
        }
    }
}

/// Sends one ledger until finished, crossed, or stopped (`Ok`), or until the ledger fails
/// (`Err`, with whatever was in flight recorded and, if the API lets it, written). `base`
/// holds the counts of earlier rounds (a trigger campaign), added to what it publishes.
async fn send_ledger(
    inputs: &SenderInputs,
    store: &LedgerStore,
    ledger: &mut DeliveryLedger,
    base: &LedgerCounts,
    shared: &Mutex<Progress>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), LedgerError> {
    let spec = &inputs.campaign.spec;
    let plan = Arc::new(Run::new(inputs));
    let threshold = spec.failure_threshold.as_ref();
    // Sent and failed so far, kept per outcome so the threshold is judged after each one.
    let mut tally = Tally::of(&with_base(base, ledger));
    let mut window = Window {
        recipients: ledger.audience().shared_recipients(),
        plan,
        tasks: JoinSet::new(),
        backlog: VecDeque::new(),
        finished: Vec::new(),
    };
    let mut last_publish: Option<tokio::time::Instant> = None;
    let result = loop {
        // A dropped handle stops it too.
        let stopping = *stop.borrow() || stop.has_changed().is_err();
        let crossed = tally.crossed(threshold, inputs.acknowledged);
        let now = Timestamp::now();
        let sending = !(stopping || crossed);
        // Claimed and not sent when it stops: the next sender sends them (same ids).
        if sending {
            window.top_up();
        }
        // The next batch is claimed (and persisted) while a window's worth is still waiting,
        // so the sends never wait for that write.
        if sending && window.backlog.len() < window.plan.max_in_flight {
            let batch = window.plan.batch;
            let limits = (&tally, threshold, inputs.acknowledged);
            let claimed = window
                .during(store.claim(ledger, batch, now), stop, limits)
                .await;
            window.record_finished(ledger, &mut tally);
            match claimed {
                Ok(claims) if !claims.is_empty() => {
                    window.backlog.extend(claims);
                    continue;
                }
                Ok(_) => {}
                Err(error) => break Err(error),
            }
        }
        let due = ledger.flush_due_at();
        if window.tasks.is_empty() && !sending {
            break Ok(());
        }
        if window.tasks.is_empty() && window.backlog.is_empty() {
            if ledger.is_finished() {
                break Ok(());
            }
            // Nothing to send until a retry or deferral is due.
            let wake_at = [ledger.next_attempt_at(), due].into_iter().flatten().min();
            publish_progress(inputs, shared, ledger, base, &mut last_publish, true);
            tokio::select! {
                () = sleep_until(wake_at) => {}
                _ = stop.changed(), if !stopping => {}
            }
        } else {
            tokio::select! {
                Some(done) = window.tasks.join_next() => match done {
                    Ok(done) => record(ledger, &mut tally, done),
                    Err(error) => tracing::error!(%error, "a campaign send task failed"),
                },
                () = sleep_until(due) => {}
                _ = stop.changed(), if !stopping => {}
            }
        }
        let limits = (&tally, threshold, inputs.acknowledged);
        let flushed = window
            .during(store.flush_if_due(ledger, Timestamp::now()), stop, limits)
            .await;
        window.record_finished(ledger, &mut tally);
        if let Err(error) = flushed {
            break Err(error);
        }
        publish_progress(inputs, shared, ledger, base, &mut last_publish, false);
    };
    // What is in flight finishes and is recorded; then everything recorded is written.
    window.record_finished(ledger, &mut tally);
    while let Some(done) = window.tasks.join_next().await {
        if let Ok(done) = done {
            record(ledger, &mut tally, done);
        }
    }
    let flushed = store.flush(ledger).await;
    let counts = with_base(base, ledger);
    let crossed = threshold_crossed(threshold, &counts, inputs.acknowledged);
    publish(shared, |p| {
        p.threshold_crossed = crossed;
        p.next_send_at = ledger.next_attempt_at();
        p.counts = Some(counts);
    });
    (inputs.wake)();
    result.and(flushed.map(|_| ()))
}

/// The sends of one ledger in flight, and the claims waiting for a slot.
struct Window {
    plan: Arc<Run>,
    recipients: Arc<[Recipient]>,
    tasks: JoinSet<Done>,
    backlog: VecDeque<Claim>,
    /// Finished while a ledger write was under way, to record once it is done.
    finished: Vec<Done>,
}

impl Window {
    /// Sends waiting claims until `maxInFlight` are in flight.
    fn top_up(&mut self) {
        while self.tasks.len() < self.plan.max_in_flight
            && let Some(claim) = self.backlog.pop_front()
        {
            let send = Arc::clone(&self.plan).send(claim, Arc::clone(&self.recipients));
            // Boxed: the task then moves a pointer, not the whole (kilobytes) send future,
            // when it is spawned, completes and is joined.
            self.tasks.spawn(Box::pin(send));
        }
    }

    /// Awaits a ledger `write` while the sends go on: claims already persisted keep being
    /// sent (until it is told to stop or the failures, `tally` and those finished meanwhile,
    /// cross `limits`' threshold), and what finishes meanwhile waits in `finished`, so a
    /// write's round trip does not drain the window.
    async fn during<T>(
        &mut self,
        write: impl std::future::Future<Output = T>,
        stop: &watch::Receiver<bool>,
        limits: (&Tally, Option<&CampaignFailureThreshold>, Acknowledged),
    ) -> T {
        let (tally, threshold, acknowledged) = limits;
        let mut write = std::pin::pin!(write);
        let mut meanwhile = *tally;
        loop {
            if !*stop.borrow() && !meanwhile.crossed(threshold, acknowledged) {
                self.top_up();
            }
            tokio::select! {
                biased;
                out = &mut write => return out,
                Some(joined) = self.tasks.join_next() => match joined {
                    Ok(done) => {
                        meanwhile.count(&done.result);
                        self.finished.push(done);
                    }
                    Err(error) => tracing::error!(%error, "a campaign send task failed"),
                },
            }
        }
    }

    /// Records what finished during a write.
    fn record_finished(&mut self, ledger: &mut DeliveryLedger, tally: &mut Tally) {
        for done in self.finished.drain(..) {
            record(ledger, tally, done);
        }
    }
}

/// The ledger's counts plus those of earlier rounds.
fn with_base(base: &LedgerCounts, ledger: &DeliveryLedger) -> LedgerCounts {
    let mut counts = base.clone();
    counts.merge(&ledger.counts());
    counts
}

/// Sent and failed messages, for the failure threshold.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    sent: u64,
    failed: u64,
}

impl Tally {
    fn count(&mut self, result: &DeliveryResult) {
        match result {
            DeliveryResult::Sent { .. } => self.sent += 1,
            DeliveryResult::Failed { .. } => self.failed += 1,
            _ => {}
        }
    }

    fn of(counts: &LedgerCounts) -> Self {
        Self {
            sent: counts.all.sent,
            failed: counts.all.failed,
        }
    }

    fn crossed(
        self,
        threshold: Option<&CampaignFailureThreshold>,
        acknowledged: Acknowledged,
    ) -> bool {
        let mut counts = LedgerCounts::default();
        counts.all.sent = self.sent;
        counts.all.failed = self.failed;
        threshold_crossed(threshold, &counts, acknowledged)
    }
}

/// Publishes the counts when the interval has passed (or `now`).
fn publish_progress(
    inputs: &SenderInputs,
    shared: &Mutex<Progress>,
    ledger: &DeliveryLedger,
    base: &LedgerCounts,
    last: &mut Option<tokio::time::Instant>,
    now: bool,
) {
    let due = last.is_none_or(|at| at.elapsed() >= PUBLISH_INTERVAL);
    if !(now || due) {
        return;
    }
    *last = Some(tokio::time::Instant::now());
    let counts = with_base(base, ledger);
    let crossed = threshold_crossed(
        inputs.campaign.spec.failure_threshold.as_ref(),
        &counts,
        inputs.acknowledged,
    );
    let changed = {
        let mut progress = shared.lock().unwrap_or_else(PoisonError::into_inner);
        let next = ledger.next_attempt_at();
        let changed = progress.counts.as_ref() != Some(&counts)
            || progress.threshold_crossed != crossed
            || progress.next_send_at != next;
        progress.counts = Some(counts);
        progress.threshold_crossed = crossed;
        progress.next_send_at = next;
        changed
    };
    if changed {
        (inputs.wake)();
    }
}

async fn sleep_until(at: Option<Timestamp>) {
    match at {
        Some(at) => {
            let wait = at.duration_since(Timestamp::now());
            tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await;
        }
        None => std::future::pending().await,
    }
}

fn record(ledger: &mut DeliveryLedger, tally: &mut Tally, done: Done) {
    let Done {
        recipient,
        result,
        moved_to,
        channels,
    } = done;
    if let Some(channel) = moved_to {
        ledger.move_to_channel(recipient, channel);
    }
    for channel in channels.failed {
        ledger.record_channel_failure(recipient, channel);
    }
    for channel in channels.also_sent {
        ledger.record_channel_delivery(recipient, channel);
    }
    tally.count(&result);
    if let Err(error) = ledger.record(recipient, result, Timestamp::now()) {
        // Only a claim handed out by this ledger is recorded; anything else is a bug here.
        tracing::error!(%error, "recording a delivery");
    }
}

/// The audience now, as the campaign's audience, trigger and allocation select it, leaving
/// out the Subscriptions (by UID) in `seen` (earlier rounds).
fn snapshot(
    inputs: &SenderInputs,
    seen: &HashSet<String>,
) -> (Audience, Vec<flotilla_runtime::shards::Shard>) {
    let campaign = &inputs.campaign;
    let allocation = allocation(campaign).expect("validated before the start");
    let filter =
        AudienceFilter::new(&trigger_audience(&campaign.spec)).expect("validated before the start");
    let now = Timestamp::now();
    // A trigger matches only in one phase: its Subscriptions are all that need a look.
    let subscriptions = match trigger_phase(campaign.spec.trigger.as_ref()) {
        Some(phase) => inputs.subscriptions.in_phase(phase),
        None => inputs.subscriptions.store.state(),
    };
    let members = subscriptions
        .iter()
        .filter(|s| {
            !s.metadata
                .uid
                .as_ref()
                .is_some_and(|uid| seen.contains(uid))
        })
        .filter(|s| {
            let view = SubscriptionView::of(s);
            filter.matches(&view) && triggered(campaign.spec.trigger.as_ref(), &view, now)
        })
        .map(AsRef::as_ref);
    Audience::snapshot(members, &allocation)
}

/// The audience a campaign selects from: a `phaseEntered` trigger with no phases of its own
/// selects that phase.
pub fn trigger_audience(spec: &flotilla_crds::campaign::CampaignSpec) -> CampaignAudience {
    let mut audience = spec.audience.clone();
    if let Some(phase) = spec.trigger.as_ref().and_then(|t| t.phase_entered)
        && audience.phases.is_empty()
    {
        audience.phases = vec![phase];
    }
    audience
}

/// The one phase a Subscription must be in to meet `trigger`.
fn trigger_phase(trigger: Option<&Trigger>) -> Option<SubscriptionPhase> {
    let trigger = trigger?;
    match (trigger.phase_entered, trigger.days_before_trial_end) {
        (Some(phase), _) => Some(phase),
        (None, Some(_)) => Some(SubscriptionPhase::Trialing),
        (None, None) => None,
    }
}

/// Whether `subscription` meets `trigger` at `now` (every Subscription does without one).
pub fn triggered(
    trigger: Option<&Trigger>,
    subscription: &SubscriptionView,
    now: Timestamp,
) -> bool {
    let Some(trigger) = trigger else {
        return true;
    };
    if let Some(phase) = trigger.phase_entered {
        return subscription.phase == Some(phase);
    }
    let Some(days) = trigger.days_before_trial_end else {
        return false;
    };
    let window = jiff::SignedDuration::from_hours(24 * i64::from(days));
    subscription.phase == Some(SubscriptionPhase::Trialing)
        && subscription
            .trial_ends_at
            .is_some_and(|end| end > now && end.duration_since(now) <= window)
}

/// The campaign's allocation: keyed by `namespace/name`, so a re-run allocates alike.
pub fn allocation(campaign: &Campaign) -> Result<Allocation, super::allocation::AllocationError> {
    let spec = &campaign.spec;
    let weights: Vec<i32> = spec.variants.iter().map(|v| v.weight).collect();
    Allocation::new(
        format!(
            "{}/{}",
            campaign.namespace().unwrap_or_default(),
            campaign.name_any()
        ),
        spec.audience.holdout_percent,
        &weights,
    )
}

/// A campaign's throttle as evenly spaced send slots (in flight is bounded by the sender
/// itself), or `None` without a rate.
pub fn throttle_pacer(throttle: Option<&Throttle>) -> Option<Arc<Pacer>> {
    let per_minute = throttle?.messages_per_minute?;
    Some(Arc::new(Pacer::per_minute(
        u32::try_from(per_minute).unwrap_or(1),
    )))
}

/// What every claim of one sender run shares.
struct Run {
    namespace: String,
    campaign: String,
    max_in_flight: usize,
    batch: usize,
    channels: Arc<Vec<(u8, String)>>,
    mode: DeliveryMode,
    retry: Arc<CampaignRetry>,
    throttle: Option<Arc<Pacer>>,
    quiet_hours: Option<QuietHours>,
    default_zone: TimeZone,
    start_at: Timestamp,
    local_time: bool,
    inputs: SenderInputs,
}

impl Run {
    fn new(inputs: &SenderInputs) -> Self {
        let campaign = &inputs.campaign;
        let spec = &campaign.spec;
        let max_in_flight = spec
            .throttle
            .as_ref()
            .and_then(|t| t.max_in_flight)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT)
            .max(1);
        let quiet_hours = spec
            .quiet_hours
            .as_ref()
            .and_then(|q| QuietHours::new(&q.start, &q.end).ok());
        let default_zone = spec
            .quiet_hours
            .as_ref()
            .and_then(|q| TimeZone::get(&q.default_time_zone).ok())
            .unwrap_or(TimeZone::UTC);
        let schedule = spec.schedule.as_ref();
        Self {
            namespace: campaign.namespace().unwrap_or_default(),
            campaign: campaign.name_any(),
            max_in_flight,
            // Two windows: the next batch is claimed while one window of this one waits.
            batch: max_in_flight.saturating_mul(2).clamp(MIN_BATCH, MAX_BATCH),
            channels: Arc::new(
                spec.channels
                    .names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (u8::try_from(i).unwrap_or(u8::MAX), name.clone()))
                    .collect(),
            ),
            mode: spec.channels.mode,
            retry: Arc::new(spec.retry.clone()),
            throttle: throttle_pacer(spec.throttle.as_ref()),
            quiet_hours,
            default_zone,
            start_at: schedule
                .and_then(|s| s.start_at.as_ref())
                .map_or(inputs.started_at, |t| t.0),
            local_time: schedule.is_some_and(|s| s.local_time),
            inputs: inputs.clone(),
        }
    }

    /// Sends `claim` to its recipient (of `recipients`), or — without sending — says what
    /// became of it.
    async fn send(self: Arc<Self>, claim: Claim, recipients: Arc<[Recipient]>) -> Done {
        let index = claim.recipient;
        match self.prepare(&claim, &recipients[index], Timestamp::now()) {
            Ok(job) => job.run().await,
            Err(result) => Done {
                recipient: index,
                result,
                moved_to: None,
                channels: ChannelTally::default(),
            },
        }
    }

    /// The message of `claim`, or — without sending — what became of it.
    fn prepare(
        &self,
        claim: &Claim,
        recipient: &Recipient,
        now: Timestamp,
    ) -> Result<Job, DeliveryResult> {
        let Group::Variant(variant) = recipient.group else {
            return Err(DeliveryResult::Skipped {
                reason: "HeldOut".into(),
            });
        };
        let current = self
            .inputs
            .subscriptions
            .store
            .get(&ObjectRef::new(&recipient.subscription));
        let Some(current) = current.filter(|s| s.uid().as_deref() == Some(&*recipient.uid)) else {
            return Err(DeliveryResult::Skipped {
                reason: "SubscriptionGone".into(),
            });
        };
        let view = SubscriptionView::for_message(&current);
        if view.opted_out {
            return Err(DeliveryResult::OptedOut);
        }
        let zone = recipient
            .time_zone
            .as_deref()
            .and_then(|z| TimeZone::get(z).ok())
            .unwrap_or_else(|| self.default_zone.clone());
        let schedule = Schedule {
            start_at: self.start_at,
            not_before: self.inputs.started_at,
            local_time: self.local_time,
            quiet_hours: self.quiet_hours.as_ref(),
            per_minute: None,
        };
        let earliest = preview::earliest(&schedule, &zone);
        if earliest > now {
            return Err(DeliveryResult::Deferred { until: earliest });
        }
        let variant_name = self.inputs.content.variant_name(variant).to_owned();
        let unsubscribe_url =
            (self.inputs.unsubscribe_url)(&self.inputs.campaign, &recipient.subscription);
        let plan = self.inputs.plans.get(&ObjectRef::new(&view.plan));
        let fields = recipient_fields(
            view,
            plan.as_deref(),
            &self.campaign,
            &variant_name,
            unsubscribe_url.clone(),
        );
        let rendered = self
            .inputs
            .content
            .render(variant, fields)
            .map_err(|error| {
                tracing::warn!(campaign = %self.campaign, %error, "rendering a message");
                DeliveryResult::Failed {
                    reason: "TemplateError".into(),
                }
            })?;
        Ok(Job {
            recipient: claim.recipient,
            attempt: claim.attempt,
            start_channel: claim.channel,
            message: Message {
                id: claim.message_id.clone(),
                campaign: self.campaign.clone(),
                variant: variant_name,
                recipient: Addressee {
                    name: recipient.name.clone(),
                    email: recipient.email.clone(),
                },
                subject: rendered.subject,
                body: rendered.body,
                unsubscribe_url,
            },
            namespace: self.namespace.clone(),
            channels: Arc::clone(&self.channels),
            mode: self.mode,
            retry: Arc::clone(&self.retry),
            throttle: self.throttle.clone(),
            deliveries: self.inputs.deliveries.clone(),
        })
    }
}

/// One message to send.
struct Job {
    recipient: usize,
    /// Attempts on `start_channel`, this one included.
    attempt: u16,
    /// `mode: fallback`: the first Channel not failed for good.
    start_channel: u8,
    message: Message,
    namespace: String,
    channels: Arc<Vec<(u8, String)>>,
    mode: DeliveryMode,
    retry: Arc<CampaignRetry>,
    throttle: Option<Arc<Pacer>>,
    deliveries: Deliveries,
}

/// What became of one [`Job`].
struct Done {
    recipient: usize,
    result: DeliveryResult,
    /// `mode: fallback`: the Channel the recipient moved on to (this attempt its first there).
    moved_to: Option<u8>,
    /// Per channel, what the attempt did there besides the result (counted per channel).
    channels: ChannelTally,
}

/// The channels of one attempt that failed, and those that delivered after the first
/// (`mode: All`).
#[derive(Default)]
struct ChannelTally {
    failed: Vec<u8>,
    also_sent: Vec<u8>,
}

impl Job {
    async fn run(self) -> Done {
        if let Some(pacer) = &self.throttle {
            pacer.acquire().await;
        }
        match self.mode {
            DeliveryMode::Fallback => self.fallback().await,
            DeliveryMode::All => self.all().await,
        }
    }

    /// Sends on Channel `name`, or `None` while it is not usable.
    async fn send_on(&self, name: &str) -> Option<Attempt> {
        let delivery = match self.deliveries.get(&self.namespace, name) {
            Ok(delivery) => delivery?,
            Err(error) => {
                tracing::warn!(channel = %name, %error, "channel transport");
                return None;
            }
        };
        Some(
            self.deliveries
                .deliver(&self.namespace, name, &delivery, &self.message)
                .await,
        )
    }

    /// `mode: fallback`: the first Channel not failed for good, retried with backoff while it
    /// fails transiently; the next one once it fails permanently or exhausts its retries, or
    /// at once while its breaker is open or it is not Ready.
    async fn fallback(self) -> Done {
        let now = Timestamp::now;
        let mut channels = ChannelTally::default();
        // The first Channel from the start not failed for good in this attempt.
        let mut first_open: Option<u8> = None;
        let mut held: Option<Timestamp> = None;
        let mut gave_up: Option<String> = None;
        let done = |result, moved_to: Option<u8>, channels| Done {
            recipient: self.recipient,
            result,
            moved_to: moved_to.filter(|&c| c != self.start_channel),
            channels,
        };
        for (index, name) in self
            .channels
            .iter()
            .filter(|(i, _)| *i >= self.start_channel)
        {
            let Some(attempt) = self.send_on(name).await else {
                first_open.get_or_insert(*index);
                held.get_or_insert(now() + UNAVAILABLE_WAIT);
                continue;
            };
            match attempt {
                Attempt::Held { until } => {
                    first_open.get_or_insert(*index);
                    held = Some(held.map_or(until, |h| h.min(until)));
                }
                Attempt::Sent(Outcome::Delivered) => {
                    return done(DeliveryResult::Sent { channel: *index }, None, channels);
                }
                Attempt::Sent(outcome @ Outcome::Transient { .. }) => {
                    channels.failed.push(*index);
                    let attempts_here = if *index == self.start_channel {
                        u32::from(self.attempt)
                    } else {
                        1
                    };
                    match after_failure(&self.retry, attempts_here, &outcome, &self.message.id) {
                        // This Channel is where the recipient stays: the ones before it
                        // failed for good or were passed over.
                        Next::RetryIn(delay) => {
                            let result = DeliveryResult::RetryAt { at: now() + delay };
                            return done(result, Some(*index), channels);
                        }
                        Next::GiveUp(reason) => gave_up = Some(reason),
                    }
                }
                Attempt::Sent(Outcome::Permanent { reason }) => {
                    channels.failed.push(*index);
                    gave_up = Some(reason);
                }
            }
        }
        match held {
            // Only Channels not usable now are left: wait for them, without counting an
            // attempt, from the first one not failed for good.
            Some(until) => done(DeliveryResult::Deferred { until }, first_open, channels),
            None => done(
                DeliveryResult::Failed {
                    reason: gave_up.unwrap_or_else(|| "NoChannel".into()),
                },
                None,
                channels,
            ),
        }
    }

    /// `mode: all`: every Channel; delivered when one took it, retried as a whole while a
    /// failure was transient.
    async fn all(self) -> Done {
        let mut delivered: Option<u8> = None;
        let mut transient: Option<Outcome> = None;
        let mut permanent: Option<String> = None;
        let mut held: Option<Timestamp> = None;
        let mut unavailable = false;
        let mut channels = ChannelTally::default();
        for (index, name) in self.channels.iter() {
            let Some(attempt) = self.send_on(name).await else {
                unavailable = true;
                continue;
            };
            match attempt {
                Attempt::Held { until } => {
                    held = Some(held.map_or(until, |h| h.min(until)));
                }
                Attempt::Sent(Outcome::Delivered) => {
                    if delivered.is_some() {
                        channels.also_sent.push(*index);
                    }
                    delivered.get_or_insert(*index);
                }
                Attempt::Sent(outcome @ Outcome::Transient { .. }) => {
                    channels.failed.push(*index);
                    transient.get_or_insert(outcome);
                }
                Attempt::Sent(Outcome::Permanent { reason }) => {
                    channels.failed.push(*index);
                    permanent.get_or_insert(reason);
                }
            }
        }
        let now = Timestamp::now();
        let result = if let Some(channel) = delivered {
            DeliveryResult::Sent { channel }
        } else if let Some(outcome) = transient {
            match after_failure(
                &self.retry,
                u32::from(self.attempt),
                &outcome,
                &self.message.id,
            ) {
                Next::RetryIn(delay) => DeliveryResult::RetryAt { at: now + delay },
                Next::GiveUp(reason) => DeliveryResult::Failed { reason },
            }
        } else if held.is_some() || unavailable {
            let until = held.unwrap_or(now + UNAVAILABLE_WAIT);
            DeliveryResult::Deferred { until }
        } else {
            DeliveryResult::Failed {
                reason: permanent.unwrap_or_else(|| "NoChannel".into()),
            }
        };
        Done {
            recipient: self.recipient,
            result,
            moved_to: None,
            channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::progress::GroupCounts;

    fn counts(sent: u64, failed: u64) -> LedgerCounts {
        LedgerCounts {
            all: GroupCounts {
                sent,
                failed,
                ..GroupCounts::default()
            },
            ..LedgerCounts::default()
        }
    }

    #[test]
    fn the_threshold_needs_enough_finished_messages_and_forgets_acknowledged_ones() {
        let policy = CampaignFailureThreshold {
            percent: 50,
            min_finished: 10,
        };
        let none = Acknowledged::default();
        assert!(
            !threshold_crossed(Some(&policy), &counts(0, 9), none),
            "too few finished"
        );
        assert!(threshold_crossed(Some(&policy), &counts(5, 5), none));
        assert!(!threshold_crossed(Some(&policy), &counts(6, 4), none));
        assert!(!threshold_crossed(None, &counts(0, 100), none));
        // After a resume accepted 5 of 10 failed, the next 10 are judged alone.
        let accepted = Acknowledged {
            failed: 5,
            finished: 10,
        };
        assert!(!threshold_crossed(Some(&policy), &counts(5, 5), accepted));
        assert!(
            !threshold_crossed(Some(&policy), &counts(12, 8), accepted),
            "7+3: 30%"
        );
        assert!(
            threshold_crossed(Some(&policy), &counts(10, 10), accepted),
            "5+5: 50%"
        );
    }

    #[test]
    fn a_throttle_without_a_rate_paces_nothing() {
        assert!(throttle_pacer(None).is_none());
        let in_flight_only = Throttle {
            messages_per_minute: None,
            max_in_flight: Some(3),
        };
        assert!(throttle_pacer(Some(&in_flight_only)).is_none());
        let rated = Throttle {
            messages_per_minute: Some(600),
            max_in_flight: None,
        };
        assert!(throttle_pacer(Some(&rated)).is_some());
    }
}
