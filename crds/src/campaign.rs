//! `Campaign` (namespaced): a message to an audience of Subscriptions, with A/B variants, a
//! holdout group, throttling, quiet hours and retries — sent once on a schedule, or always-on
//! when a trigger fires. Each recipient gets at most one message, identified by a stable id.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN, FailureReasonCount, GoDuration, SpecError,
    TIME_OF_DAY_PATTERN, TIME_ZONE_PATTERN, into_result, validate_time_of_day, validate_time_zone,
};
use crate::condition::Condition;
use crate::subscription::SubscriptionPhase;

/// Most channels one Campaign may use.
pub const MAX_CHANNELS: u32 = 8;
/// Most variants of one Campaign.
pub const MAX_VARIANTS: u32 = 16;
/// Most plans an audience may list.
pub const MAX_AUDIENCE_PLANS: u32 = 32;
/// Longest message body template (64 KiB).
pub const MAX_BODY_LENGTH: u32 = 65536;
/// Longest subject template (RFC 5322's line limit).
pub const MAX_SUBJECT_LENGTH: u32 = 998;

/// A message campaign to Subscriptions.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Campaign",
    plural = "campaigns",
    singular = "campaign",
    shortname = "fcamp",
    category = "flotilla",
    namespaced,
    status = "CampaignStatus",
    derive = "PartialEq",
    doc = "A Campaign sends a message to an audience of Subscriptions through Channels: once, on a \
           schedule, or always-on when a trigger fires. Variants, holdout, throttle, quiet hours and \
           retries are declared here; every recipient gets at most one message.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Audience",
        type_ = "integer",
        json_path = ".status.audienceSize",
        description = "Recipients matched"
    ),
    printcolumn(name = "Sent", type_ = "integer", json_path = ".status.counts.sent"),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counts.failed"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.counts.pending",
        priority = 1
    ),
    printcolumn(
        name = "Next Send",
        type_ = "date",
        json_path = ".status.nextSendAt",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.schedule) && has(self.trigger))").message("spec.schedule and spec.trigger are mutually exclusive: a campaign is sent once on a schedule, or always-on by a trigger"),
    validation = Rule::new("!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)").message("a cancelled campaign cannot be resumed; create a new Campaign")
)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct CampaignSpec {
    /// Who receives the campaign: Subscriptions matching the selector, plans and phases, minus
    /// a holdout group. Fixed when the campaign starts.
    pub audience: Audience,

    /// The Channels to send through, and how to use them.
    pub channels: CampaignChannels,

    /// The message: subject and body templates rendered with each recipient's Subscription.
    pub message: MessageTemplate,

    /// A/B variants, each with its own subject and/or body; recipients are split between them
    /// by weight with a stable hash. Empty means everyone gets `message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_VARIANTS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    #[x_kube(validation = Rule::new("size(self) == 0 || self.map(v, v.weight).sum() > 0").message("variant weights must not all be zero"))]
    pub variants: Vec<Variant>,

    /// When to send a one-off campaign. Without `startAt` (or without `schedule` and
    /// `trigger`) the campaign stays a Draft, showing its preview in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Makes the campaign always-on: each Subscription receives it once when the trigger fires
    /// for it. Mutually exclusive with `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,

    /// Sending speed limits of this campaign (on top of each Channel's own rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,

    /// Hours during which nothing is sent to a recipient, in the recipient's own time zone.
    /// Messages are delayed, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,

    /// Retries of transient delivery failures (timeouts, connection errors, 5xx, 429).
    #[serde(default)]
    pub retry: CampaignRetry,

    /// Pauses the campaign automatically when too many deliveries fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<CampaignFailureThreshold>,

    /// Pauses sending while true; set back to false to resume where it stopped.
    #[serde(default)]
    pub suspend: bool,

    /// Stops the campaign for good (phase Cancelled). Cannot be undone.
    #[serde(default)]
    pub cancel: bool,

    /// Set to a new value (any string, e.g. a date or ticket) to continue after the failure
    /// threshold paused the campaign: the failures so far are accepted, and the threshold
    /// pauses again only once more messages fail. A pause ends when this differs from
    /// `status.resumeAtPause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub resume: Option<String>,
}

/// Who receives a campaign.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Audience {
    /// Label selector over Subscriptions. Omit to match every Subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Only Subscriptions on one of these Plans. Empty means any plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_AUDIENCE_PLANS),
        inner(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub plans: Vec<String>,

    /// Only Subscriptions in one of these phases. Empty means Trialing, Active and PastDue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "set"))]
    pub phases: Vec<SubscriptionPhase>,

    /// Percentage of the audience held out as a control group (0–100); they receive nothing.
    /// Who is held out is a stable hash of campaign and recipient.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub holdout_percent: i32,
}

impl Audience {
    /// The phases an audience matches: `phases`, or Trialing, Active and PastDue when empty.
    pub fn effective_phases(&self) -> Vec<SubscriptionPhase> {
        if self.phases.is_empty() {
            vec![
                SubscriptionPhase::Trialing,
                SubscriptionPhase::Active,
                SubscriptionPhase::PastDue,
            ]
        } else {
            self.phases.clone()
        }
    }
}

/// The Channels a campaign sends through.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CampaignChannels {
    /// Fallback: try the channels in order, moving to the next when one fails permanently or
    /// exhausts its retries for a message (at once while its breaker is open).
    /// All: send on every channel; a message counts as sent when at least one delivered.
    #[serde(default)]
    pub mode: DeliveryMode,

    /// Names of Channels in this namespace, in order of preference.
    #[schemars(
        length(min = 1, max = MAX_CHANNELS),
        inner(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub names: Vec<String>,
}

/// How a campaign uses several channels.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum DeliveryMode {
    /// Try the next channel only when one fails.
    #[default]
    Fallback,
    /// Send on every channel.
    All,
}

/// Subject and body templates. Fields of the recipient's Subscription are written as
/// `{{ field }}`, e.g. `{{ subscription.name }}`, `{{ plan.displayName }}`,
/// `{{ subscription.trialEndsAt }}`; an unknown field stops the campaign before it sends
/// (condition TemplatesValid=False says which).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MessageTemplate {
    /// Subject line (e-mail subject, Slack/webhook title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUBJECT_LENGTH))]
    pub subject: Option<String>,
    /// Message body (plain text).
    #[schemars(length(min = 1, max = MAX_BODY_LENGTH))]
    pub body: String,
}

/// One A/B variant. A variant that overrides neither subject nor body sends `message` as
/// it is (a control variant).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    /// Variant name (a DNS label), shown in the per-variant counts.
    #[schemars(length(min = 1, max = 63), pattern(DNS1123_LABEL_PATTERN))]
    pub name: String,
    /// Relative share of recipients (0–1000); shares are weight / sum of weights.
    #[schemars(range(min = 0, max = 1000))]
    pub weight: i32,
    /// Subject template of this variant; defaults to `message.subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_SUBJECT_LENGTH))]
    pub subject: Option<String>,
    /// Body template of this variant; defaults to `message.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_BODY_LENGTH))]
    pub body: Option<String>,
}

/// When a one-off campaign is sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// When sending starts (RFC 3339). A time in the past starts now. Omit to keep a Draft.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Time>,
    /// When true, `startAt`'s date and time of day (in UTC as written) are used as a wall-clock
    /// time in each recipient's own time zone, so everyone receives it at, say, 09:00 local.
    #[serde(default)]
    pub local_time: bool,
}

/// What makes an always-on campaign send to a Subscription (exactly one).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("has(self.phaseEntered) != has(self.daysBeforeTrialEnd)").message("set exactly one of phaseEntered and daysBeforeTrialEnd"))]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Send when a Subscription enters this phase, e.g. PastDue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_entered: Option<SubscriptionPhase>,
    /// Send this many days before a Subscription's trial ends (0 = on the day it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 365))]
    pub days_before_trial_end: Option<i32>,
}

/// Sending speed limits of a campaign.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Throttle {
    /// Most messages sent per minute by this campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub messages_per_minute: Option<i32>,
    /// Most deliveries in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_in_flight: Option<i32>,
}

/// A daily window, in each recipient's time zone, during which nothing is sent. The window
/// may span midnight (e.g. 21:00 to 08:00).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.start != self.end").message("quiet hours must not start and end at the same time"))]
#[serde(rename_all = "camelCase")]
pub struct QuietHours {
    /// Start of the quiet window, `HH:MM` (24-hour clock).
    #[schemars(length(equal = 5), pattern(TIME_OF_DAY_PATTERN))]
    pub start: String,
    /// End of the quiet window, `HH:MM`; sending resumes at this time.
    #[schemars(length(equal = 5), pattern(TIME_OF_DAY_PATTERN))]
    pub end: String,
    /// IANA time zone for recipients whose Subscription has no `contact.timeZone`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), pattern(TIME_ZONE_PATTERN))]
    pub default_time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// Retry policy of a campaign: exponential backoff with jitter per message.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CampaignRetry {
    /// Delivery attempts per message and channel, including the first.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 20))]
    pub max_attempts: i32,
    /// Delay before the first retry; doubles with each attempt.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: GoDuration,
    /// Longest delay between attempts.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: GoDuration,
    /// Random jitter applied to each delay, in percent (±).
    #[serde(default = "default_jitter_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub jitter_percent: i32,
}

impl Default for CampaignRetry {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            jitter_percent: default_jitter_percent(),
        }
    }
}

fn default_max_attempts() -> i32 {
    5
}
fn default_initial_backoff() -> GoDuration {
    "30s".parse().expect("valid default duration")
}
fn default_max_backoff() -> GoDuration {
    "480s".parse().expect("valid default duration")
}
fn default_jitter_percent() -> i32 {
    10
}

/// When a campaign pauses itself because of failed deliveries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CampaignFailureThreshold {
    /// Pause when failed / (sent + failed) reaches this percentage (0–100).
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
    /// Do not judge the rate before this many messages finished (sent or failed).
    #[serde(default = "default_min_finished")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_finished: i32,
}

fn default_min_finished() -> i32 {
    20
}

/// Observed state of a Campaign, written by the Campaign controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct CampaignStatus {
    /// Draft, Scheduled, Running, Paused, Completed, Cancelled or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CampaignPhase>,

    /// Conditions: Ready, ChannelsReady, TemplatesValid, Progressing, FailureThresholdExceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// Subscriptions matching the audience (before the holdout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub audience_size: Option<i64>,

    /// Delivery counts over the whole campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<DeliveryCounts>,

    /// Delivery counts per variant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_VARIANTS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub variants: Vec<VariantCounts>,

    /// Delivery counts per channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_CHANNELS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub channels: Vec<ChannelCounts>,

    /// Failed messages grouped by reason, most frequent first (at most 20 reasons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::common::MAX_FAILURE_REASONS))]
    pub failure_reasons: Vec<FailureReasonCount>,

    /// When the next message is due (set while waiting for quiet hours or the throttle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_send_at: Option<Time>,

    /// When sending started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the campaign reached Completed, Cancelled or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// While Draft or Scheduled: what the campaign will do, for review before it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<CampaignPreview>,

    /// The value of `spec.resume` when the failure threshold paused the campaign; changing
    /// `spec.resume` to anything else ends the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub resume_at_pause: Option<String>,

    /// Failed messages (`counts.failed`) accepted by the `spec.resume` that ended a
    /// failure-threshold pause; the threshold is judged on the failures after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub acknowledged_failures: Option<i64>,

    /// Messages finished (sent or failed) when the failures were accepted, so the rate after a
    /// resume is judged on the messages after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub acknowledged_finished: Option<i64>,
}

/// Lifecycle phase of a Campaign.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum CampaignPhase {
    /// No start time or trigger yet; the preview shows what it would do.
    #[default]
    Draft,
    /// Waiting for `schedule.startAt`.
    Scheduled,
    /// Sending (or, for a trigger campaign, listening for its trigger).
    Running,
    /// Suspended by the user or by the failure threshold.
    Paused,
    /// Every recipient outside the holdout was sent to or failed.
    Completed,
    /// Stopped for good by `spec.cancel`.
    Cancelled,
    /// Cannot proceed (e.g. every channel failed permanently).
    Failed,
}

impl CampaignPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [CampaignPhase; 7] = [
        CampaignPhase::Draft,
        CampaignPhase::Scheduled,
        CampaignPhase::Running,
        CampaignPhase::Paused,
        CampaignPhase::Completed,
        CampaignPhase::Cancelled,
        CampaignPhase::Failed,
    ];

    /// Whether the campaign is finished and will not send again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CampaignPhase::Completed | CampaignPhase::Cancelled | CampaignPhase::Failed
        )
    }

    /// The wire form (as in `status.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignPhase::Draft => "Draft",
            CampaignPhase::Scheduled => "Scheduled",
            CampaignPhase::Running => "Running",
            CampaignPhase::Paused => "Paused",
            CampaignPhase::Completed => "Completed",
            CampaignPhase::Cancelled => "Cancelled",
            CampaignPhase::Failed => "Failed",
        }
    }
}

/// The campaign lifecycle. Before the start a campaign moves freely between Draft and
/// Scheduled (its schedule is edited), and Paused (suspended); it starts into Running, pauses
/// and resumes, and ends Completed or Failed; Cancelled is reachable from every live phase.
/// Nothing leaves a terminal phase.
impl crate::phase::Phase for CampaignPhase {
    const ALL: &'static [Self] = &CampaignPhase::ALL;
    const INITIAL: Self = CampaignPhase::Draft;

    fn as_str(self) -> &'static str {
        CampaignPhase::as_str(self)
    }

    fn allows(self, next: Self) -> bool {
        use CampaignPhase::{Cancelled, Completed, Draft, Failed, Paused, Running, Scheduled};
        matches!(
            (self, next),
            (Draft, Scheduled | Running | Paused | Cancelled)
                | (Scheduled, Draft | Running | Paused | Cancelled)
                | (Running, Paused | Completed | Failed | Cancelled)
                | (
                    Paused,
                    Draft | Scheduled | Running | Completed | Failed | Cancelled
                )
        )
    }
}

/// Message counts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryCounts {
    /// Recipients the campaign is sent to (audience minus holdout).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub targeted: i64,
    /// Recipients held out as the control group.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub held_out: i64,
    /// Targeted recipients sent nothing because their Subscription opted out of campaigns.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub opted_out: i64,
    /// Messages delivered.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub sent: i64,
    /// Messages that failed for good (permanent error or retries exhausted).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i64,
    /// Messages not finished yet.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub pending: i64,
}

/// Message counts of one variant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VariantCounts {
    /// Variant name.
    #[schemars(length(max = 63))]
    pub name: String,
    /// Recipients allocated to the variant.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub targeted: i64,
    /// Messages delivered.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub sent: i64,
    /// Messages failed for good.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i64,
    /// Messages not finished yet.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub pending: i64,
}

/// Delivery counts of one channel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChannelCounts {
    /// Channel name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Messages this channel delivered.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub sent: i64,
    /// Delivery attempts on this channel that failed (including ones a fallback then delivered).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i64,
}

/// What a Draft or Scheduled campaign will do.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CampaignPreview {
    /// Subscriptions matching the audience now.
    #[schemars(range(min = 0))]
    pub audience_size: i64,
    /// Of those, how many would be held out.
    #[schemars(range(min = 0))]
    pub held_out: i64,
    /// Of those outside the holdout, how many opted out of campaigns.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub opted_out: i64,
    /// How many recipients each variant would get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_VARIANTS))]
    pub variants: Vec<VariantShare>,
    /// Estimated time the last message goes out, under the throttle and quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_finish_at: Option<Time>,
}

/// Recipients allocated to one variant in a preview.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VariantShare {
    /// Variant name.
    #[schemars(length(max = 63))]
    pub name: String,
    /// Recipients allocated to it.
    #[schemars(range(min = 0))]
    pub recipients: i64,
}

impl CampaignSpec {
    /// Checks what the schema cannot (and repeats its cross-field rules, for objects that
    /// reached the controller without them): channels and variants are unique, variant
    /// weights do not sum to zero, schedule and trigger are exclusive, the trigger names
    /// exactly one event, quiet hours are valid times in a known zone, and backoffs are sane.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        if !(0..=100).contains(&self.audience.holdout_percent) {
            errors.push(SpecError::new(
                "spec.audience.holdoutPercent",
                "must be between 0 and 100",
            ));
        }
        if self.channels.names.is_empty() {
            errors.push(SpecError::new(
                "spec.channels.names",
                "at least one Channel is required",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, name) in self.channels.names.iter().enumerate() {
            if !seen.insert(name) {
                errors.push(SpecError::new(
                    format!("spec.channels.names[{i}]"),
                    format!("{name:?} is listed more than once"),
                ));
            }
        }
        let mut variant_names = std::collections::BTreeSet::new();
        for (i, variant) in self.variants.iter().enumerate() {
            if !variant_names.insert(&variant.name) {
                errors.push(SpecError::new(
                    format!("spec.variants[{i}].name"),
                    format!("{:?} is used by two variants", variant.name),
                ));
            }
            if variant.weight < 0 {
                errors.push(SpecError::new(
                    format!("spec.variants[{i}].weight"),
                    "must not be negative",
                ));
            }
        }
        if !self.variants.is_empty()
            && self
                .variants
                .iter()
                .map(|v| i64::from(v.weight.max(0)))
                .sum::<i64>()
                == 0
        {
            errors.push(SpecError::new(
                "spec.variants",
                "variant weights must not all be zero",
            ));
        }
        if self.schedule.is_some() && self.trigger.is_some() {
            errors.push(SpecError::new(
                "spec.trigger",
                "spec.schedule and spec.trigger are mutually exclusive",
            ));
        }
        if let Some(trigger) = &self.trigger
            && trigger.phase_entered.is_some() == trigger.days_before_trial_end.is_some()
        {
            errors.push(SpecError::new(
                "spec.trigger",
                "set exactly one of phaseEntered and daysBeforeTrialEnd",
            ));
        }
        if let Some(quiet) = &self.quiet_hours {
            let start = validate_time_of_day("spec.quietHours.start", &quiet.start)
                .map_err(|e| errors.push(e))
                .ok();
            let end = validate_time_of_day("spec.quietHours.end", &quiet.end)
                .map_err(|e| errors.push(e))
                .ok();
            if start.is_some() && start == end {
                errors.push(SpecError::new(
                    "spec.quietHours",
                    "must not start and end at the same time",
                ));
            }
            if let Err(error) =
                validate_time_zone("spec.quietHours.defaultTimeZone", &quiet.default_time_zone)
            {
                errors.push(error);
            }
        }
        let retry = &self.retry;
        if retry.initial_backoff.is_zero() {
            errors.push(SpecError::new(
                "spec.retry.initialBackoff",
                "must be more than 0s",
            ));
        }
        if retry.max_backoff < retry.initial_backoff {
            errors.push(SpecError::new(
                "spec.retry.maxBackoff",
                "must not be shorter than initialBackoff",
            ));
        }
        into_result(errors)
    }

    /// Whether the campaign is a Draft by its spec: neither a start time nor a trigger.
    pub fn is_draft(&self) -> bool {
        self.trigger.is_none()
            && self
                .schedule
                .as_ref()
                .and_then(|s| s.start_at.as_ref())
                .is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CampaignSpec {
        serde_json::from_value(serde_json::json!({
            "audience": {"plans": ["team"], "holdoutPercent": 10},
            "channels": {"names": ["webhook", "smtp"]},
            "message": {"subject": "Hello {{ subscription.name }}", "body": "Your trial ends {{ subscription.trialEndsAt }}."},
            "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "subject": "Hi!"}],
            "schedule": {"startAt": "2030-01-01T09:00:00Z", "localTime": true},
            "quietHours": {"start": "21:00", "end": "08:00"},
        }))
        .unwrap()
    }

    #[test]
    fn defaults() {
        let spec = spec();
        assert_eq!(spec.channels.mode, DeliveryMode::Fallback);
        assert_eq!(spec.retry, CampaignRetry::default());
        assert_eq!(spec.retry.max_backoff.as_std().as_secs(), 480);
        assert_eq!(spec.quiet_hours.as_ref().unwrap().default_time_zone, "UTC");
        assert_eq!(spec.validate(), Ok(()));
        assert!(!spec.is_draft());
    }

    #[test]
    fn schedule_and_trigger_are_exclusive() {
        let mut spec = spec();
        spec.trigger = Some(Trigger {
            phase_entered: Some(SubscriptionPhase::PastDue),
            days_before_trial_end: None,
        });
        assert_eq!(spec.validate().unwrap_err()[0].field, "spec.trigger");
        spec.schedule = None;
        assert_eq!(spec.validate(), Ok(()));
        spec.trigger = Some(Trigger::default());
        assert_eq!(
            spec.validate().unwrap_err()[0].message,
            "set exactly one of phaseEntered and daysBeforeTrialEnd"
        );
    }

    #[test]
    fn zero_weights_and_duplicates_are_refused() {
        let mut spec = spec();
        for variant in &mut spec.variants {
            variant.weight = 0;
        }
        spec.channels.names.push("webhook".into());
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.channels.names[2]", "spec.variants"]);
    }

    #[test]
    fn quiet_hours_and_backoff_are_checked() {
        let mut spec = spec();
        let quiet = spec.quiet_hours.as_mut().unwrap();
        quiet.end = quiet.start.clone();
        quiet.default_time_zone = "Nowhere/Special".into();
        spec.retry.max_backoff = "1s".parse().unwrap();
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.quietHours",
                "spec.quietHours.defaultTimeZone",
                "spec.retry.maxBackoff"
            ]
        );
    }

    #[test]
    fn without_start_or_trigger_it_is_a_draft() {
        let mut spec = spec();
        spec.schedule = None;
        assert!(spec.is_draft());
        assert_eq!(spec.audience.effective_phases().len(), 3);
    }
}
