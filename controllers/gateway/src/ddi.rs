//! The JSON of hawkBit's Direct Device Integration API v1, as device agents send and expect it
//! (field names, enum spellings and optional parts follow hawkBit's `DdiRootController` and
//! the clients rauc-hawkbit-updater, SWUpdate's suricatta and the `hawkbit` crate). No I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /{tenant}/controller/v1/{controllerId}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PollReply {
    pub config: PollConfig,
    /// Omitted when the device has nothing to do, as hawkBit does.
    #[serde(rename = "_links", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, Link>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PollConfig {
    pub polling: Polling,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Polling {
    /// `HH:MM:SS`.
    pub sleep: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub href: String,
}

/// `GET .../deploymentBase/{actionId}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeploymentReply {
    /// The action id, as a string (hawkBit's type).
    pub id: String,
    pub deployment: Deployment,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub download: Handling,
    pub update: Handling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,
    pub chunks: Vec<Chunk>,
}

/// How the device should handle the download or the update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Handling {
    Skip,
    Attempt,
    Forced,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MaintenanceWindow {
    Available,
    Unavailable,
}

/// One software module of the deployment; Flotilla's releases have one, of part `os`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub part: String,
    pub version: String,
    pub name: String,
    pub artifacts: Vec<ArtifactRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRef {
    pub filename: String,
    pub hashes: Hashes,
    pub size: i64,
    /// `download` (https) and/or `download-http`.
    #[serde(rename = "_links")]
    pub links: BTreeMap<String, Link>,
}

/// hawkBit always sends all three; clients such as the `hawkbit` crate refuse a reply without
/// them. A FirmwareRelease only knows its SHA-256, so `sha1` and `md5` are empty strings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hashes {
    pub sha1: String,
    pub md5: String,
    pub sha256: String,
}

/// `GET .../cancelAction/{actionId}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CancelReply {
    pub id: String,
    #[serde(rename = "cancelAction")]
    pub cancel_action: CancelStop,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CancelStop {
    #[serde(rename = "stopId")]
    pub stop_id: String,
}

/// `POST .../deploymentBase/{actionId}/feedback` and `.../cancelAction/{actionId}/feedback`.
/// `id` and `time` are accepted and ignored (the path names the action).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ActionFeedback {
    pub status: FeedbackStatus,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FeedbackStatus {
    pub execution: Execution,
    #[serde(default)]
    pub result: FeedbackResult,
    /// The device's own status code (hawkBit ≥ 0.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    Closed,
    Proceeding,
    Canceled,
    Scheduled,
    Rejected,
    Resumed,
    Downloaded,
    Download,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FeedbackResult {
    #[serde(default)]
    pub finished: Finished,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Finished {
    Success,
    Failure,
    #[default]
    None,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub cnt: i64,
    pub of: i64,
}

impl Progress {
    /// Percent done, 0–100; `None` when `of` is not positive.
    pub fn percent(self) -> Option<i32> {
        // In i128: a device may send any i64, and `cnt * 100` overflows i64 near its maximum.
        (self.of > 0)
            .then(|| (i128::from(self.cnt.clamp(0, self.of)) * 100 / i128::from(self.of)) as i32)
    }
}

/// `PUT .../configData`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConfigData {
    pub data: BTreeMap<String, String>,
    /// `merge` when absent or null.
    #[serde(default)]
    pub mode: Option<ConfigMode>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConfigMode {
    #[default]
    Merge,
    Replace,
    Remove,
}

/// hawkBit's error body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub exception_class: String,
    pub error_code: String,
    pub message: String,
}

/// A duration as DDI's `HH:MM:SS` (hours may exceed 23; longer than 99 hours is capped there).
pub fn format_sleep(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs().min(99 * 3600 + 59 * 60 + 59);
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn progress_near_the_i64_limit_is_a_percentage() {
        // `{"cnt": i64::MAX, "of": i64::MAX}` overflowed `cnt * 100` (found reviewing the
        // gateway_body fuzz target's limits).
        let full = Progress {
            cnt: i64::MAX,
            of: i64::MAX,
        };
        assert_eq!(full.percent(), Some(100));
        let half = Progress {
            cnt: i64::MAX / 2,
            of: i64::MAX,
        };
        assert_eq!(half.percent(), Some(49));
    }

    #[test]
    fn sleeps_are_hh_mm_ss() {
        assert_eq!(format_sleep(Duration::from_secs(5)), "00:00:05");
        assert_eq!(format_sleep(Duration::from_secs(3905)), "01:05:05");
        assert_eq!(format_sleep(Duration::from_secs(12 * 3600)), "12:00:00");
        assert_eq!(format_sleep(Duration::from_secs(1_000_000)), "99:59:59");
    }

    #[test]
    fn feedback_as_the_hawkbit_crate_and_rauc_send_it() {
        // The `hawkbit` crate: string id, details always present, no code.
        let crate_style: ActionFeedback = serde_json::from_value(json!({
            "id": "17", "status": {"execution": "proceeding",
            "result": {"finished": "none", "progress": {"cnt": 2, "of": 5}}, "details": ["Downloading"]}
        }))
        .unwrap();
        assert_eq!(crate_style.status.execution, Execution::Proceeding);
        assert_eq!(
            crate_style.status.result.progress.unwrap().percent(),
            Some(40)
        );
        // hawkBit ≥ 0.3 with a status code and a timestamp, no details.
        let coded: ActionFeedback = serde_json::from_value(json!({
            "time": "20240101T120000", "status": {"execution": "closed",
            "result": {"finished": "failure"}, "code": 42}
        }))
        .unwrap();
        assert_eq!(coded.status.code, Some(42));
        assert_eq!(coded.status.result.finished, Finished::Failure);
        assert!(
            serde_json::from_value::<ActionFeedback>(json!({"status": {"execution": "exploded"}}))
                .is_err()
        );
    }

    #[test]
    fn config_data_mode_may_be_null() {
        let data: ConfigData =
            serde_json::from_value(json!({"mode": null, "data": {"serial": "1"}, "status": {}}))
                .unwrap();
        assert_eq!(data.mode, None);
    }

    #[test]
    fn progress_is_clamped() {
        assert_eq!(Progress { cnt: 7, of: 5 }.percent(), Some(100));
        assert_eq!(Progress { cnt: -1, of: 5 }.percent(), Some(0));
        assert_eq!(Progress { cnt: 1, of: 0 }.percent(), None);
    }

    #[test]
    fn an_idle_poll_has_no_links() {
        let reply = PollReply {
            config: PollConfig {
                polling: Polling {
                    sleep: "00:30:00".into(),
                },
            },
            links: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"config": {"polling": {"sleep": "00:30:00"}}})
        );
    }
}
