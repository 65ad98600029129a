//! `FirmwareRollout` (namespaced): rolls a FirmwareRelease out to the devices a selector
//! matches, in waves, with at most `maxInFlight` devices updating at once, inside maintenance
//! windows, stopping by itself when failures cross a threshold. Every control (`paused`,
//! `abort`, `resume`, `approvedPlanHash`) lives in spec, so each decision is a reviewed commit
//! in a GitOps setup.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    DNS1123_SUBDOMAIN_PATTERN, FailureReasonCount, GoDuration, MAX_FAILURE_REASONS, SpecError,
    TIME_OF_DAY_PATTERN, TIME_ZONE_PATTERN, Weekday, into_result, validate_time_of_day,
    validate_time_zone,
};
use crate::condition::Condition;
use crate::phase::Phase;

/// Most waves of one rollout.
pub const MAX_WAVES: u32 = 20;
/// Most failed devices listed by name in status (the counts cover all of them).
pub const MAX_LISTED_FAILED_DEVICES: u32 = 50;
/// Most cohorts (model × from-version) reported in status.
pub const MAX_COHORTS: u32 = 64;
/// Pattern of a plan hash: SHA-256 as 64 lower-case hex digits.
pub const PLAN_HASH_PATTERN: &str = "^[a-f0-9]{64}$";

/// A staged rollout of a FirmwareRelease to a fleet of Devices.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "FirmwareRollout",
    plural = "firmwarerollouts",
    singular = "firmwarerollout",
    shortname = "fwro",
    category = "flotilla",
    namespaced,
    status = "FirmwareRolloutStatus",
    derive = "PartialEq",
    doc = "A FirmwareRollout updates the Devices a selector matches to a FirmwareRelease, in waves, \
           never more than maxInFlight at once, inside maintenance windows, and stops by itself \
           (pause, abort or roll back) when failures cross the threshold.",
    printcolumn(name = "Release", type_ = "string", json_path = ".spec.release"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Wave",
        type_ = "integer",
        json_path = ".status.currentWave",
        description = "Current wave, from 1"
    ),
    printcolumn(
        name = "Targeted",
        type_ = "integer",
        json_path = ".status.counts.targeted",
        priority = 1
    ),
    printcolumn(
        name = "Updating",
        type_ = "integer",
        json_path = ".status.counts.updating",
        priority = 1
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.counts.succeeded"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counts.failed"
    ),
    printcolumn(
        name = "Skipped",
        type_ = "integer",
        json_path = ".status.counts.skipped",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(oldSelf.abort) || !oldSelf.abort || (has(self.abort) && self.abort)").message("an aborted rollout cannot be resumed; create a new FirmwareRollout"),
    validation = Rule::new("!has(self.approvedPlanHash) || (has(self.approval) && self.approval.required)").message("approvedPlanHash is only used when approval.required is true")
)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareRolloutSpec {
    /// Name of the FirmwareRelease (same namespace) to roll out. It must be Ready.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub release: String,

    /// Label selector over Devices, intersected with the release's compatible models. Must
    /// not be empty: an empty selector would target the whole namespace.
    #[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("selector must not be empty"))]
    pub selector: LabelSelector,

    /// Waves, each cumulative: the share (`percent`) or number (`count`) of targeted devices
    /// updated by the end of that wave, and an optional pause after it. The last wave must be
    /// `percent: 100`. Defaults to 1%, 10%, 50%, 100% without pauses.
    #[serde(default = "default_waves")]
    #[schemars(length(min = 1, max = MAX_WAVES), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(
        validation = Rule::new("has(self[size(self) - 1].percent) && self[size(self) - 1].percent == 100").message("the last wave must be percent: 100"),
        validation = Rule::new("self.filter(w, has(w.percent)).map(w, w.percent).isSorted()").message("wave percentages must not decrease"),
        validation = Rule::new("self.filter(w, has(w.count)).map(w, w.count).isSorted()").message("wave counts must not decrease")
    )]
    pub waves: Vec<Wave>,

    /// Most devices updating at the same time.
    #[serde(default = "default_max_in_flight")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_in_flight: i32,

    /// When failures stop the rollout. Checked overall, per wave, and per cohort (device model
    /// × version updated from), so one bad hardware revision stops it even when the
    /// fleet-wide rate looks fine.
    #[serde(default)]
    pub failure_threshold: FailureThreshold,

    /// A device that has not succeeded this long after assignment counts as failed.
    #[serde(default = "default_device_timeout")]
    pub device_timeout: GoDuration,

    /// Retries per device after a failed attempt, with exponential backoff.
    #[serde(default)]
    pub retries: DeviceRetries,

    /// When new assignments may be made. Outside it nothing new is assigned; updates in
    /// flight may finish. Omit to allow any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,

    /// Devices not seen for this long are offline, and handled per `offlinePolicy`.
    #[serde(default = "default_offline_after")]
    pub offline_after: GoDuration,

    /// Skip offline devices (reported in the plan and counts), or Wait for them to come back.
    #[serde(default)]
    pub offline_policy: OfflinePolicy,

    /// A device counts as succeeded only after reporting the new version and staying healthy
    /// (heartbeating, no reboot loop) this long.
    #[serde(default = "default_soak_time")]
    pub soak_time: GoDuration,

    /// What crossing the failure threshold does: Pause (hold; resume with `spec.resume`),
    /// Abort (stop assigning), or Rollback (return every touched device to its previous
    /// version).
    #[serde(default)]
    pub on_failure: FailureAction,

    /// Whether devices that start matching during the rollout join its last wave.
    #[serde(default)]
    pub include_new_devices: bool,

    /// Whether a person must approve the plan (`status.plan`) before anything is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,

    /// With approval required: the `status.plan.hash` being approved. Nothing is assigned
    /// until it equals the hash of the current plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(equal = 64), pattern(PLAN_HASH_PATTERN))]
    pub approved_plan_hash: Option<String>,

    /// Holds the rollout while true (no new assignments; updates in flight finish).
    #[serde(default)]
    pub paused: bool,

    /// Stops the rollout for good: nothing new is assigned, devices keep what they have.
    /// Cannot be undone.
    #[serde(default)]
    pub abort: bool,

    /// Set to a new value (any string, e.g. a date or ticket) to continue after a wave paused
    /// with `untilResumed` or after the failure threshold paused the rollout. A pause ends when
    /// this differs from `status.resumeAtPause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub resume: Option<String>,
}

/// One wave: how far the rollout goes, then whether it pauses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.percent) != has(self.count)").message("a wave sets exactly one of percent and count"))]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Share of the targeted devices updated by the end of this wave (cumulative), 1–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<i32>,

    /// Number of targeted devices updated by the end of this wave (cumulative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<i32>,

    /// Pause after this wave completes. Omit to continue at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<WavePause>,
}

impl Wave {
    /// A wave reaching `percent` of the fleet, without a pause.
    pub fn percent(percent: i32) -> Self {
        Self {
            percent: Some(percent),
            count: None,
            pause: None,
        }
    }

    /// A wave reaching `count` devices, without a pause.
    pub fn count(count: i32) -> Self {
        Self {
            percent: None,
            count: Some(count),
            pause: None,
        }
    }
}

/// A pause after a wave: a fixed duration, or until resumed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.duration) != (has(self.untilResumed) && self.untilResumed)").message("a pause sets exactly one of duration and untilResumed: true"))]
#[serde(rename_all = "camelCase")]
pub struct WavePause {
    /// Wait this long, then start the next wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<GoDuration>,

    /// Wait until `spec.resume` changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub until_resumed: bool,
}

fn default_waves() -> Vec<Wave> {
    [1, 10, 50, 100].into_iter().map(Wave::percent).collect()
}

fn default_max_in_flight() -> i32 {
    10
}

fn default_device_timeout() -> GoDuration {
    "1h".parse().expect("valid default duration")
}

fn default_offline_after() -> GoDuration {
    "24h".parse().expect("valid default duration")
}

fn default_soak_time() -> GoDuration {
    "10m".parse().expect("valid default duration")
}

/// Failure limits at each scope. A scope without its own limit uses `overall`'s percent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailureThreshold {
    /// Limits over the whole rollout.
    #[serde(default = "default_overall_limit")]
    pub overall: ThresholdLimit,

    /// Limits within each wave. Defaults to `overall.percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_wave: Option<ThresholdLimit>,

    /// Limits within each cohort (device model × version updated from). Defaults to
    /// `overall.percent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_cohort: Option<ThresholdLimit>,

    /// Percent limits are not judged in a scope before this many of its devices finished
    /// (succeeded or failed), so that 1 failure out of 2 does not stop a rollout.
    #[serde(default = "default_min_finished")]
    #[schemars(range(min = 1, max = 100_000))]
    pub min_finished: i32,
}

impl Default for FailureThreshold {
    fn default() -> Self {
        Self {
            overall: default_overall_limit(),
            per_wave: None,
            per_cohort: None,
            min_finished: default_min_finished(),
        }
    }
}

impl FailureThreshold {
    /// The limit in effect per wave.
    pub fn effective_per_wave(&self) -> ThresholdLimit {
        self.per_wave.clone().unwrap_or(ThresholdLimit {
            percent: self.overall.percent,
            count: None,
        })
    }

    /// The limit in effect per cohort.
    pub fn effective_per_cohort(&self) -> ThresholdLimit {
        self.per_cohort.clone().unwrap_or(ThresholdLimit {
            percent: self.overall.percent,
            count: None,
        })
    }
}

fn default_overall_limit() -> ThresholdLimit {
    ThresholdLimit {
        percent: Some(5),
        count: None,
    }
}

fn default_min_finished() -> i32 {
    10
}

/// A failure limit: crossed when failed devices reach `count`, or reach `percent` of the
/// devices that finished. At least one must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.percent) || has(self.count)").message("set percent, count, or both"))]
#[serde(rename_all = "camelCase")]
pub struct ThresholdLimit {
    /// Failed devices as a percentage of finished devices, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,

    /// Number of failed devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub count: Option<i32>,
}

/// Per-device retries.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRetries {
    /// Retries after the first failed attempt (0 = none).
    #[serde(default = "default_retry_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub limit: i32,

    /// Delay before the first retry; doubles with each retry.
    #[serde(default = "default_retry_initial_backoff")]
    pub initial_backoff: GoDuration,

    /// Longest delay between retries.
    #[serde(default = "default_retry_max_backoff")]
    pub max_backoff: GoDuration,
}

impl Default for DeviceRetries {
    fn default() -> Self {
        Self {
            limit: default_retry_limit(),
            initial_backoff: default_retry_initial_backoff(),
            max_backoff: default_retry_max_backoff(),
        }
    }
}

fn default_retry_limit() -> i32 {
    2
}

fn default_retry_initial_backoff() -> GoDuration {
    "1m".parse().expect("valid default duration")
}

fn default_retry_max_backoff() -> GoDuration {
    "30m".parse().expect("valid default duration")
}

/// A weekly maintenance window in a time zone. A window whose end is before its start spans
/// midnight (e.g. 22:00–04:00 on Saturday runs into Sunday morning).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.start != self.end").message("a maintenance window must not start and end at the same time"))]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Days on which the window opens. Empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7), extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,

    /// Opening time, `HH:MM` (24-hour clock).
    #[schemars(length(equal = 5), pattern(TIME_OF_DAY_PATTERN))]
    pub start: String,

    /// Closing time, `HH:MM`; before `start` means the next day.
    #[schemars(length(equal = 5), pattern(TIME_OF_DAY_PATTERN))]
    pub end: String,

    /// IANA time zone of `start` and `end`, e.g. "Europe/Berlin" (daylight saving applies).
    #[schemars(length(min = 1, max = 64), pattern(TIME_ZONE_PATTERN))]
    pub time_zone: String,
}

/// How a rollout treats offline devices.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum OfflinePolicy {
    /// Leave them out (counted as skipped, reason Offline).
    #[default]
    Skip,
    /// Keep them targeted and assign them when they come back.
    Wait,
}

/// What crossing the failure threshold does.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum FailureAction {
    /// Hold; continue with `spec.resume`.
    #[default]
    Pause,
    /// Stop assigning; devices keep what they have.
    Abort,
    /// Assign every touched device its previous version.
    Rollback,
}

/// Approval policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// When true, nothing is assigned until `spec.approvedPlanHash` equals `status.plan.hash`.
    #[serde(default)]
    pub required: bool,
}

/// Observed state of a FirmwareRollout. Counts are aggregates: the object stays small however
/// large the fleet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct FirmwareRolloutStatus {
    /// Pending, AwaitingApproval, Progressing, Paused, WaitingForWindow, Succeeded, Failed,
    /// RollingBack, RolledBack or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<FirmwareRolloutPhase>,

    /// Conditions: Ready, ReleaseReady, Approved, Progressing, InMaintenanceWindow,
    /// DevicesContended, FailureThresholdExceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// The wave in progress, from 1 (0 before the first wave starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub current_wave: Option<i32>,

    /// Device counts over the whole rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<DeviceCounts>,

    /// Device counts per wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = MAX_WAVES),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["number"])
    )]
    pub waves: Vec<WaveStatus>,

    /// Device counts per cohort (model × version updated from), largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COHORTS))]
    pub cohorts: Vec<CohortStatus>,

    /// Failed devices grouped by error, most frequent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_FAILURE_REASONS))]
    pub failure_reasons: Vec<FailureReasonCount>,

    /// The most recent failed devices with their reasons (at most 50; `counts.failed` has the
    /// total).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_FAILED_DEVICES))]
    pub failed_devices: Vec<FailedDevice>,

    /// When the first device was assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the rollout reached Succeeded, Failed, RolledBack or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// When a timed pause ends and the next wave starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_wave_at: Option<Time>,

    /// The value of `spec.resume` when the current pause began; changing `spec.resume` to
    /// anything else ends the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub resume_at_pause: Option<String>,

    /// Failed devices (`counts.failed`) accepted by the `spec.resume` that ended a
    /// failure-threshold pause; the threshold pauses again only once more devices fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub acknowledged_failures: Option<i32>,

    /// The plan, computed before the start and then fixed: wave sizes, exclusions, hash and
    /// estimated timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RolloutPlan>,
}

/// Lifecycle phase of a FirmwareRollout.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum FirmwareRolloutPhase {
    /// Computing the plan, or waiting for the release to be Ready.
    #[default]
    Pending,
    /// Waiting for `spec.approvedPlanHash` to match the plan.
    AwaitingApproval,
    /// Assigning devices and watching them update.
    Progressing,
    /// Held by `spec.paused`, a wave pause, or the failure threshold.
    Paused,
    /// Outside the maintenance window; nothing new is assigned.
    WaitingForWindow,
    /// Every targeted device succeeded or was skipped.
    Succeeded,
    /// Finished with failures above the threshold, or could not proceed.
    Failed,
    /// Returning touched devices to their previous versions.
    RollingBack,
    /// Every touched device is back on its previous version.
    RolledBack,
    /// Stopped by `spec.abort` or by the threshold with `onFailure: Abort`.
    Aborted,
}

impl FirmwareRolloutPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [FirmwareRolloutPhase; 10] = [
        FirmwareRolloutPhase::Pending,
        FirmwareRolloutPhase::AwaitingApproval,
        FirmwareRolloutPhase::Progressing,
        FirmwareRolloutPhase::Paused,
        FirmwareRolloutPhase::WaitingForWindow,
        FirmwareRolloutPhase::Succeeded,
        FirmwareRolloutPhase::Failed,
        FirmwareRolloutPhase::RollingBack,
        FirmwareRolloutPhase::RolledBack,
        FirmwareRolloutPhase::Aborted,
    ];

    /// The wire form (as in `status.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            FirmwareRolloutPhase::Pending => "Pending",
            FirmwareRolloutPhase::AwaitingApproval => "AwaitingApproval",
            FirmwareRolloutPhase::Progressing => "Progressing",
            FirmwareRolloutPhase::Paused => "Paused",
            FirmwareRolloutPhase::WaitingForWindow => "WaitingForWindow",
            FirmwareRolloutPhase::Succeeded => "Succeeded",
            FirmwareRolloutPhase::Failed => "Failed",
            FirmwareRolloutPhase::RollingBack => "RollingBack",
            FirmwareRolloutPhase::RolledBack => "RolledBack",
            FirmwareRolloutPhase::Aborted => "Aborted",
        }
    }

    /// Whether the rollout is finished and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            FirmwareRolloutPhase::Succeeded
                | FirmwareRolloutPhase::Failed
                | FirmwareRolloutPhase::RolledBack
                | FirmwareRolloutPhase::Aborted
        )
    }
}

/// The rollout lifecycle. A rollout starts (Pending or AwaitingApproval → Progressing) and,
/// once started, moves between Progressing, Paused and WaitingForWindow until it finishes
/// (Succeeded, Failed), is aborted, or rolls back. Abort is reachable from every live phase;
/// nothing leaves a terminal phase, and nothing returns to Pending once started.
impl Phase for FirmwareRolloutPhase {
    const ALL: &'static [Self] = &FirmwareRolloutPhase::ALL;
    const INITIAL: Self = FirmwareRolloutPhase::Pending;

    fn as_str(self) -> &'static str {
        FirmwareRolloutPhase::as_str(self)
    }

    fn allows(self, next: Self) -> bool {
        use FirmwareRolloutPhase::{
            Aborted, AwaitingApproval, Failed, Paused, Pending, Progressing, RolledBack,
            RollingBack, Succeeded, WaitingForWindow,
        };
        matches!(
            (self, next),
            (Pending, AwaitingApproval | Progressing | Aborted)
                | (AwaitingApproval, Pending | Progressing | Aborted)
                | (
                    Progressing | Paused | WaitingForWindow,
                    Succeeded | Failed | RollingBack | Aborted
                )
                | (Progressing, Paused | WaitingForWindow)
                | (Paused, Progressing | WaitingForWindow)
                | (WaitingForWindow, Progressing | Paused)
                | (RollingBack, RolledBack | Failed | Aborted)
        )
    }
}

/// Device counts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCounts {
    /// Devices the rollout (or wave) updates.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub targeted: i32,
    /// Not assigned yet.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub pending: i32,
    /// Assigned and not finished (including soaking).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub updating: i32,
    /// Updated, reported the new version and stayed healthy for the soak time.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub succeeded: i32,
    /// Failed after all retries, or timed out.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i32,
    /// Left out while running (e.g. went offline with `offlinePolicy: Skip`).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skipped: i32,
}

/// Progress of one wave.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// Wave number, from 1.
    #[schemars(range(min = 1))]
    pub number: i32,
    /// Device counts of this wave.
    #[serde(default)]
    pub counts: DeviceCounts,
    /// When the wave started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When every device of the wave succeeded, failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// Progress of one cohort: devices of one model updating from one version.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CohortStatus {
    /// Device model.
    #[schemars(length(max = 63))]
    pub model: String,
    /// Version the devices updated from.
    #[schemars(length(max = 128))]
    pub from_version: String,
    /// Device counts of the cohort.
    #[serde(default)]
    pub counts: DeviceCounts,
}

/// A failed device and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FailedDevice {
    /// Device name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// Why it failed (the device's error, or `Timeout`).
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// Wave it belonged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub wave: Option<i32>,
    /// When it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Time>,
}

/// What the rollout will do, fixed when it starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPlan {
    /// SHA-256 (hex) of the plan's content; approve it by copying it to
    /// `spec.approvedPlanHash`.
    #[schemars(length(max = 64))]
    pub hash: String,
    /// Version being rolled out.
    #[schemars(length(max = 128))]
    pub version: String,
    /// Devices the rollout will update.
    #[schemars(range(min = 0))]
    pub targeted: i32,
    /// Size and estimated timing of each wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WAVES))]
    pub waves: Vec<PlannedWave>,
    /// Devices the selector matched but the plan leaves out, by reason.
    #[serde(default)]
    pub excluded: Exclusions,
    /// Estimated finish of the whole rollout, from maxInFlight, the device timings seen so far
    /// and the maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_completion_at: Option<Time>,
    /// When the plan shown was computed. A waiting rollout keeps showing it, estimates
    /// included, until the plan changes or its estimated completion moves by 5 minutes or
    /// more, so time passing alone rewrites no status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_at: Option<Time>,
}

/// One wave of the plan.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlannedWave {
    /// Wave number, from 1.
    #[schemars(range(min = 1))]
    pub number: i32,
    /// Devices in this wave (not cumulative).
    #[schemars(range(min = 0))]
    pub devices: i32,
    /// Estimated start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_start_at: Option<Time>,
    /// Estimated finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_finish_at: Option<Time>,
}

/// Devices left out of a plan, by reason.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Exclusions {
    /// Model not in the release's `compatibleModels`.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub incompatible_model: i32,
    /// Running a version below the release's `minimumFromVersion`.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub below_minimum_version: i32,
    /// Already running the release's version.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub already_on_version: i32,
    /// Offline, with `offlinePolicy: Skip`.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub offline: i32,
    /// Held by another rollout when the plan was made.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub held_by_another_rollout: i32,
    /// Reporting no firmware version, or one that is not a semantic version: the rollout
    /// cannot tell whether the release applies, nor what to roll back to.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub unknown_version: i32,
}

impl FirmwareRolloutSpec {
    /// Checks what the schema cannot (and repeats its cross-field rules): waves set exactly
    /// one of percent and count, increase strictly, and end at 100%; pauses are well-formed;
    /// limits are in range; the selector is not empty; the maintenance window has valid times
    /// in a known time zone; backoffs are sane.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let selector_empty = self
            .selector
            .match_labels
            .as_ref()
            .is_none_or(|m| m.is_empty())
            && self
                .selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty());
        if selector_empty {
            errors.push(SpecError::new("spec.selector", "must not be empty"));
        }
        validate_waves(&self.waves, &mut errors);
        if self.max_in_flight < 1 {
            errors.push(SpecError::new("spec.maxInFlight", "must be at least 1"));
        }
        let threshold = &self.failure_threshold;
        for (field, limit) in [
            ("spec.failureThreshold.overall", Some(&threshold.overall)),
            ("spec.failureThreshold.perWave", threshold.per_wave.as_ref()),
            (
                "spec.failureThreshold.perCohort",
                threshold.per_cohort.as_ref(),
            ),
        ] {
            let Some(limit) = limit else { continue };
            if limit.percent.is_none() && limit.count.is_none() {
                errors.push(SpecError::new(field, "set percent, count, or both"));
            }
            if limit.percent.is_some_and(|p| !(0..=100).contains(&p)) {
                errors.push(SpecError::new(
                    format!("{field}.percent"),
                    "must be between 0 and 100",
                ));
            }
            if limit.count.is_some_and(|c| c < 0) {
                errors.push(SpecError::new(
                    format!("{field}.count"),
                    "must not be negative",
                ));
            }
        }
        for (field, duration) in [
            ("spec.deviceTimeout", &self.device_timeout),
            ("spec.offlineAfter", &self.offline_after),
            ("spec.retries.initialBackoff", &self.retries.initial_backoff),
        ] {
            if duration.is_zero() {
                errors.push(SpecError::new(field, "must be more than 0s"));
            }
        }
        if self.retries.max_backoff < self.retries.initial_backoff {
            errors.push(SpecError::new(
                "spec.retries.maxBackoff",
                "must not be shorter than initialBackoff",
            ));
        }
        if let Some(window) = &self.maintenance_window {
            let start = validate_time_of_day("spec.maintenanceWindow.start", &window.start)
                .map_err(|e| errors.push(e))
                .ok();
            let end = validate_time_of_day("spec.maintenanceWindow.end", &window.end)
                .map_err(|e| errors.push(e))
                .ok();
            if start.is_some() && start == end {
                errors.push(SpecError::new(
                    "spec.maintenanceWindow",
                    "must not start and end at the same time",
                ));
            }
            if let Err(error) =
                validate_time_zone("spec.maintenanceWindow.timeZone", &window.time_zone)
            {
                errors.push(error);
            }
        }
        let approval_required = self.approval.as_ref().is_some_and(|a| a.required);
        if self.approved_plan_hash.is_some() && !approval_required {
            errors.push(SpecError::new(
                "spec.approvedPlanHash",
                "only used when approval.required is true",
            ));
        }
        into_result(errors)
    }

    /// Whether approval is required and the approved hash differs from `plan_hash`.
    pub fn awaits_approval_of(&self, plan_hash: &str) -> bool {
        self.approval.as_ref().is_some_and(|a| a.required)
            && self.approved_plan_hash.as_deref() != Some(plan_hash)
    }
}

fn validate_waves(waves: &[Wave], errors: &mut Vec<SpecError>) {
    if waves.is_empty() {
        errors.push(SpecError::new(
            "spec.waves",
            "at least one wave is required",
        ));
        return;
    }
    let mut last_percent = 0;
    let mut last_count = 0;
    for (i, wave) in waves.iter().enumerate() {
        let field = format!("spec.waves[{i}]");
        match (wave.percent, wave.count) {
            (Some(_), Some(_)) | (None, None) => {
                errors.push(SpecError::new(
                    &field,
                    "set exactly one of percent and count",
                ));
            }
            (Some(percent), None) => {
                if !(1..=100).contains(&percent) {
                    errors.push(SpecError::new(
                        format!("{field}.percent"),
                        "must be between 1 and 100",
                    ));
                } else if percent <= last_percent {
                    errors.push(SpecError::new(
                        format!("{field}.percent"),
                        format!("must be above the previous wave's {last_percent}% (waves are cumulative)"),
                    ));
                }
                last_percent = percent;
            }
            (None, Some(count)) => {
                if count < 1 {
                    errors.push(SpecError::new(
                        format!("{field}.count"),
                        "must be at least 1",
                    ));
                } else if count <= last_count {
                    errors.push(SpecError::new(
                        format!("{field}.count"),
                        format!("must be above the previous wave's {last_count} devices (waves are cumulative)"),
                    ));
                }
                last_count = count;
            }
        }
        if let Some(pause) = &wave.pause
            && pause.duration.is_some() == pause.until_resumed
        {
            errors.push(SpecError::new(
                format!("{field}.pause"),
                "set exactly one of duration and untilResumed: true",
            ));
        }
    }
    if waves.last().and_then(|w| w.percent) != Some(100) {
        errors.push(SpecError::new(
            format!("spec.waves[{}]", waves.len() - 1),
            "the last wave must be percent: 100",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FirmwareRolloutSpec {
        serde_json::from_value(serde_json::json!({
            "release": "sensor-2-4-1",
            "selector": {"matchLabels": {"ring": "canary"}},
        }))
        .unwrap()
    }

    #[test]
    fn defaults() {
        let spec = spec();
        assert_eq!(spec.waves, default_waves());
        assert_eq!(spec.max_in_flight, 10);
        assert_eq!(spec.failure_threshold.overall.percent, Some(5));
        assert_eq!(spec.failure_threshold.effective_per_wave().percent, Some(5));
        assert_eq!(spec.on_failure, FailureAction::Pause);
        assert_eq!(spec.offline_policy, OfflinePolicy::Skip);
        assert_eq!(spec.retries, DeviceRetries::default());
        assert_eq!(spec.validate(), Ok(()));
        assert!(!spec.awaits_approval_of("abc"));
    }

    #[test]
    fn waves_must_increase_and_end_at_100_percent() {
        let mut spec = spec();
        spec.waves = vec![
            Wave::count(10),
            Wave::percent(50),
            Wave::percent(50),
            Wave::count(5),
            Wave::percent(90),
        ];
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.waves[2].percent",
                "spec.waves[3].count",
                "spec.waves[4]"
            ]
        );
    }

    #[test]
    fn each_wave_sets_one_size_and_one_pause_kind() {
        let mut spec = spec();
        spec.waves = vec![
            Wave {
                percent: Some(10),
                count: Some(5),
                pause: None,
            },
            Wave {
                percent: Some(100),
                count: None,
                pause: Some(WavePause {
                    duration: Some("1h".parse().unwrap()),
                    until_resumed: true,
                }),
            },
        ];
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.waves[0]", "spec.waves[1].pause"]);
    }

    #[test]
    fn empty_selector_zero_in_flight_and_threshold_above_100_are_refused() {
        let mut spec = spec();
        spec.selector = LabelSelector::default();
        spec.max_in_flight = 0;
        spec.failure_threshold.overall.percent = Some(101);
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.selector",
                "spec.maxInFlight",
                "spec.failureThreshold.overall.percent"
            ]
        );
    }

    #[test]
    fn maintenance_window_is_checked() {
        let mut spec = spec();
        spec.maintenance_window = Some(MaintenanceWindow {
            days: vec![Weekday::Saturday],
            start: "22:00".into(),
            end: "04:00".into(),
            time_zone: "Europe/Berlin".into(),
        });
        assert_eq!(spec.validate(), Ok(()));
        let window = spec.maintenance_window.as_mut().unwrap();
        window.end = "22:00".into();
        window.time_zone = "Mars/Base".into();
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["spec.maintenanceWindow", "spec.maintenanceWindow.timeZone"]
        );
    }

    #[test]
    fn approval_gates_on_the_plan_hash() {
        let mut spec = spec();
        let hash = "a".repeat(64);
        spec.approved_plan_hash = Some(hash.clone());
        assert_eq!(
            spec.validate().unwrap_err()[0].field,
            "spec.approvedPlanHash"
        );
        spec.approval = Some(Approval { required: true });
        assert_eq!(spec.validate(), Ok(()));
        assert!(!spec.awaits_approval_of(&hash));
        assert!(spec.awaits_approval_of(&"b".repeat(64)));
    }

    #[test]
    fn phases_round_trip_their_wire_form() {
        for phase in FirmwareRolloutPhase::ALL {
            let wire = serde_json::to_value(phase).unwrap();
            assert_eq!(wire, phase.as_str());
            assert_eq!(
                <FirmwareRolloutPhase as Phase>::parse(phase.as_str()),
                Some(phase)
            );
        }
    }

    #[test]
    fn terminal_phases_allow_no_move() {
        for from in FirmwareRolloutPhase::ALL
            .into_iter()
            .filter(|p| p.is_terminal())
        {
            for to in FirmwareRolloutPhase::ALL {
                assert!(!from.allows(to), "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn terminal_phases() {
        assert!(FirmwareRolloutPhase::RolledBack.is_terminal());
        assert!(!FirmwareRolloutPhase::RollingBack.is_terminal());
        assert!(!FirmwareRolloutPhase::Paused.is_terminal());
    }
}
