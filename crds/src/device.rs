//! `Device` (namespaced): the twin of one physical device. Its spec holds the model and the
//! firmware it should run (written by the rollout controller); its status is what the device
//! reported through the gateway. Labels (site, ring, customer) select devices for rollouts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    DNS1123_SUBDOMAIN_PATTERN, SEMVER_MAX_LENGTH, SEMVER_PATTERN, SecretKeyReference, SpecError,
    into_result,
};
use crate::condition::Condition;
use crate::firmware_release::{MODEL_MAX_LENGTH, MODEL_PATTERN};

/// The twin of one physical device.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Device",
    plural = "devices",
    singular = "device",
    shortname = "fdev",
    category = "flotilla",
    namespaced,
    status = "DeviceStatus",
    derive = "PartialEq",
    doc = "A Device is the twin of one physical device: its model and the firmware it should run \
           (spec, written by FirmwareRollouts), and what it last reported through the device gateway \
           (status). Devices in a rollout carry the label flotilla.dev/rollout.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentVersion",
        description = "Firmware version the device reports"
    ),
    printcolumn(
        name = "Desired",
        type_ = "string",
        json_path = ".spec.firmware.version",
        description = "Firmware version it should run"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.update.state",
        description = "State of the latest update"
    ),
    printcolumn(
        name = "Progress",
        type_ = "integer",
        json_path = ".status.update.progress",
        priority = 1
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        priority = 1
    ),
    printcolumn(name = "Last Seen", type_ = "date", json_path = ".status.lastSeen"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct DeviceSpec {
    /// Hardware model, matched against a FirmwareRelease's `compatibleModels`.
    #[schemars(length(min = 1, max = MODEL_MAX_LENGTH), pattern(MODEL_PATTERN))]
    pub model: String,

    /// The firmware the device should run. Written by the FirmwareRollout controller; the
    /// device learns it by polling the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<DesiredFirmware>,

    /// Secret key holding the SHA-256 hash (hex) of this device's gateway token. The gateway
    /// compares the hash of the presented token in constant time; the token itself is never
    /// stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyReference>,

    /// false: enrolled through a GatewayToken and awaiting admission; the gateway offers it no
    /// update until set true. Devices created by hand are approved (the default).
    #[serde(default = "approved_default", skip_serializing_if = "is_true")]
    pub approved: bool,
}

fn approved_default() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

/// The firmware a device should run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DesiredFirmware {
    /// Desired firmware version.
    #[schemars(length(min = 5, max = SEMVER_MAX_LENGTH), pattern(SEMVER_PATTERN))]
    pub version: String,

    /// Name of the FirmwareRelease (same namespace) providing that version.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub release: String,

    /// The FirmwareRollout that assigned it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rollout: Option<String>,

    /// The device gateway's action id for this assignment (hawkBit DDI `actionId`): a new
    /// assignment, or a new attempt at the same version, gets a new, larger id. The rollout
    /// controller uses the assignment time in milliseconds since the Unix epoch; set it the
    /// same way when assigning by hand.
    #[schemars(range(min = 1))]
    pub action_id: i64,

    /// Which attempt at this version the assignment is, from 1: a rollout retrying a failed
    /// device assigns it again with the next attempt and a new `actionId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub attempt: Option<i32>,

    /// When it was assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_at: Option<Time>,

    /// What the device ran (or was assigned) before, recorded at assignment so that a
    /// rollback can return to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousFirmware>,
}

/// Firmware a device ran before an assignment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PreviousFirmware {
    /// The previous version.
    #[schemars(length(min = 1, max = SEMVER_MAX_LENGTH))]
    pub version: String,
    /// The FirmwareRelease of the previous version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub release: Option<String>,
}

/// What the device last reported, written by the device gateway.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct DeviceStatus {
    /// Pending (never reported), Online, Updating or Offline, as of the last status write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DevicePhase>,

    /// Conditions: Ready, Online, UpToDate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// Firmware version the device runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = SEMVER_MAX_LENGTH))]
    pub current_version: Option<String>,

    /// What the device reports about itself through the gateway's `configData` (hardware
    /// revision, serial number, free space...): at most 64 entries, keys up to 128 and values
    /// up to 512 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "attributes_schema")]
    pub attributes: BTreeMap<String, String>,

    /// Progress of the latest update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateStatus>,

    /// The device's last finished updates, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_HISTORY))]
    pub history: Vec<UpdateRecord>,

    /// When the device last contacted the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,

    /// When the device last booted: the gateway stamps it when a reported `bootCount` rises.
    /// Rollouts use it to spot reboot loops during the soak time (a boot within half the
    /// soak, 10 s to 2 min, after the success report is the boot into the new version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_boot_at: Option<Time>,

    /// Boots the device has reported since it was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub boot_count: Option<i64>,
}

/// Most entries in `status.attributes`.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest key in `status.attributes`.
pub const MAX_ATTRIBUTE_KEY_LENGTH: usize = 128;
/// Longest value in `status.attributes`.
pub const MAX_ATTRIBUTE_VALUE_LENGTH: usize = 512;
/// Most entries in `status.history`.
pub const MAX_HISTORY: usize = 10;
/// Longest `status.update.error.message`.
pub const MAX_ERROR_MESSAGE_LENGTH: usize = 1024;
/// Longest `status.update.error.code`.
pub const MAX_ERROR_CODE_LENGTH: usize = 64;

fn attributes_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_ATTRIBUTES,
        "additionalProperties": {"type": "string", "maxLength": MAX_ATTRIBUTE_VALUE_LENGTH},
    })
}

/// Lifecycle phase of a Device.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum DevicePhase {
    /// Has never reported.
    #[default]
    Pending,
    /// Reporting, no update in progress.
    Online,
    /// An update is in progress.
    Updating,
    /// Not seen for longer than its rollout's `offlineAfter`.
    Offline,
}

/// Progress of a firmware update on a device.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// Idle, Downloading, Installing, Verifying, Succeeded, Failed or Cancelled.
    pub state: UpdateState,

    /// The gateway action (`spec.firmware.actionId` when it was offered) this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub action_id: Option<i64>,

    /// The version being installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = SEMVER_MAX_LENGTH))]
    pub target_version: Option<String>,

    /// Percent done, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<i32>,

    /// The error the device reported, when Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<UpdateError>,

    /// When this attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When this attempt ended (Succeeded, Failed or Cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,

    /// Attempt number for this target version, from 1.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub attempt: i32,
}

/// Why an update failed, as the device reported it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateError {
    /// Machine-readable reason, the same for every device that failed the same way: the
    /// device's numeric DDI status code when it sent one, else `UpdateFailed` or `Rejected`.
    /// Rollouts group failures by it.
    #[schemars(length(min = 1, max = MAX_ERROR_CODE_LENGTH))]
    pub code: String,
    /// What the device said (its DDI `details`, joined).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = MAX_ERROR_MESSAGE_LENGTH))]
    pub message: String,
}

/// One finished update in a Device's history.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRecord {
    /// The version the update was to install.
    #[schemars(length(max = SEMVER_MAX_LENGTH))]
    pub version: String,
    /// Succeeded, Failed or Cancelled.
    pub result: UpdateState,
    /// The gateway action of the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<i64>,
    /// The FirmwareRollout that assigned it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub rollout: Option<String>,
    /// The error code, when Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_ERROR_CODE_LENGTH))]
    pub error_code: Option<String>,
    /// When the device started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// State of a firmware update on a device.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum UpdateState {
    /// Nothing to do.
    #[default]
    Idle,
    /// Fetching the image.
    Downloading,
    /// Writing the image.
    Installing,
    /// Checking the installed image (digest, boot).
    Verifying,
    /// Runs the target version.
    Succeeded,
    /// The attempt failed; see `error`.
    Failed,
    /// The attempt was called off (abort, rollback, release withdrawn) and the device
    /// confirmed it.
    Cancelled,
}

impl UpdateState {
    /// Whether the update has finished, well or badly.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            UpdateState::Succeeded | UpdateState::Failed | UpdateState::Cancelled
        )
    }

    /// Whether an update is under way.
    pub fn is_in_progress(self) -> bool {
        matches!(
            self,
            UpdateState::Downloading | UpdateState::Installing | UpdateState::Verifying
        )
    }
}

impl DeviceSpec {
    /// Checks what the schema cannot: the desired version is a semantic version.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        if self.model.is_empty() {
            errors.push(SpecError::new("spec.model", "must not be empty"));
        }
        if let Some(firmware) = &self.firmware
            && let Err(error) = semver::Version::parse(&firmware.version)
        {
            errors.push(SpecError::new(
                "spec.firmware.version",
                format!("{:?} is not a semantic version: {error}", firmware.version),
            ));
        }
        into_result(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_twin_round_trips() {
        let json = serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": "Device",
            "metadata": {"name": "sensor-0001", "namespace": "fleet", "labels": {"site": "berlin", "ring": "canary"}},
            "spec": {
                "model": "sensor-v2",
                "firmware": {"version": "2.4.1", "release": "sensor-2-4-1", "rollout": "spring", "actionId": 1_893_488_400_000_i64,
                             "previous": {"version": "2.3.0", "release": "sensor-2-3-0"}},
                "tokenSecretRef": {"name": "device-tokens", "key": "sensor-0001"},
            },
            "status": {
                "currentVersion": "2.3.0",
                "attributes": {"hwRevision": "C", "serial": "SN-0001"},
                "update": {"state": "Downloading", "actionId": 1_893_488_400_000_i64, "targetVersion": "2.4.1",
                           "progress": 40, "attempt": 1, "startedAt": "2030-01-01T09:00:00Z"},
                "history": [{"version": "2.3.0", "result": "Failed", "errorCode": "UpdateFailed",
                             "finishedAt": "2029-12-01T09:00:00Z"}],
                "lastSeen": "2030-01-01T09:01:00Z",
            },
        });
        let device: Device = serde_json::from_value(json.clone()).unwrap();
        let update = device.status.as_ref().unwrap().update.as_ref().unwrap();
        assert!(update.state.is_in_progress());
        assert_eq!(serde_json::to_value(&device).unwrap(), json);
        assert_eq!(device.spec.validate(), Ok(()));
    }

    #[test]
    fn devices_are_approved_unless_enrolled_and_waiting() {
        let spec: DeviceSpec = serde_json::from_value(serde_json::json!({"model": "m"})).unwrap();
        assert!(spec.approved);
        assert_eq!(
            serde_json::to_value(&spec).unwrap(),
            serde_json::json!({"model": "m"})
        );
        let waiting: DeviceSpec =
            serde_json::from_value(serde_json::json!({"model": "m", "approved": false})).unwrap();
        assert!(!waiting.approved);
        assert_eq!(
            serde_json::to_value(&waiting).unwrap(),
            serde_json::json!({"model": "m", "approved": false})
        );
    }

    #[test]
    fn cancelled_updates_are_finished() {
        assert!(UpdateState::Cancelled.is_terminal());
        assert!(!UpdateState::Cancelled.is_in_progress());
        assert!(!UpdateState::Idle.is_terminal());
    }

    #[test]
    fn desired_version_must_be_semver() {
        let spec = DeviceSpec {
            approved: true,
            model: "sensor-v2".into(),
            firmware: Some(DesiredFirmware {
                version: "latest".into(),
                release: "x".into(),
                rollout: None,
                action_id: 1,
                attempt: None,
                assigned_at: None,
                previous: None,
            }),
            token_secret_ref: None,
        };
        assert_eq!(
            spec.validate().unwrap_err()[0].field,
            "spec.firmware.version"
        );
    }
}
