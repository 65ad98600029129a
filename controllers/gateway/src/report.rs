//! What a device's reports do to its Device status: feedback on a deployment or a
//! cancellation, `configData`, and plain contact (`lastSeen`). Pure: each function returns the
//! next status, or why the report is refused. The shell writes only when the result differs.

use std::time::Duration;

use flotilla_crds::device::{
    DevicePhase, MAX_ATTRIBUTE_KEY_LENGTH, MAX_ATTRIBUTE_VALUE_LENGTH, MAX_ATTRIBUTES,
    MAX_ERROR_CODE_LENGTH, MAX_ERROR_MESSAGE_LENGTH, MAX_HISTORY, UpdateError, UpdateRecord,
    UpdateState, UpdateStatus,
};
use flotilla_crds::{Device, DeviceStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::ddi::{ActionFeedback, ConfigData, ConfigMode, Execution, Finished};
use crate::offer::CANCEL_REJECTED;

/// Why a report changes nothing and is answered with an error, as hawkBit answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `404`: the action is not one of this device's (unknown, or not offered).
    UnknownAction,
    /// `410`: the action is closed (finished, or superseded by a newer one).
    ActionClosed,
    /// `400`: the report breaks a limit.
    Invalid(String),
}

/// The status after a report, before `lastSeen`.
pub type Outcome = Result<DeviceStatus, Refusal>;

/// Applies feedback on `deploymentBase/{action_id}`.
///
/// Accepted for the action `spec.firmware` asks for and for the one the device is running (a
/// device finishing an action the spec moved away from still reports the truth). A closed
/// action is `410`, an older one too, an unknown or future one `404`.
pub fn deployment_feedback(
    device: &Device,
    action_id: i64,
    feedback: &ActionFeedback,
    now: Timestamp,
) -> Outcome {
    let mut status = device.status.clone().unwrap_or_default();
    let desired = device
        .spec
        .firmware
        .as_ref()
        .filter(|f| f.action_id == action_id);
    let running = status
        .update
        .as_ref()
        .filter(|u| u.action_id == Some(action_id));
    match (desired, running) {
        (_, Some(update)) if update.state.is_terminal() => return Err(Refusal::ActionClosed),
        (None, None) => return Err(older_or_unknown(device, action_id)),
        (Some(firmware), None) => {
            // The first report of a new action.
            let previous = status.update.take();
            if let Some(previous) = &previous
                && !previous.state.is_terminal()
                && previous.action_id.is_some()
            {
                // Superseded without the device confirming a cancel.
                push_history(
                    &mut status,
                    previous.clone(),
                    UpdateState::Cancelled,
                    None,
                    now,
                );
            }
            let attempt = match &previous {
                Some(p) if p.target_version.as_deref() == Some(&firmware.version) => p.attempt + 1,
                _ => 1,
            };
            status.update = Some(UpdateStatus {
                state: UpdateState::Idle,
                action_id: Some(action_id),
                target_version: Some(firmware.version.clone()),
                progress: None,
                error: None,
                started_at: Some(Time(now)),
                finished_at: None,
                attempt,
            });
        }
        (_, Some(_)) => {}
    }
    let rollout = device
        .spec
        .firmware
        .as_ref()
        .filter(|f| f.action_id == action_id)
        .and_then(|f| f.rollout.clone());
    let mut update = status.update.take().expect("set above");
    let state = next_state(update.state, feedback);
    let progress = feedback.status.result.progress.and_then(|p| p.percent());
    if state != update.state {
        update.progress = None;
    }
    if progress.is_some() {
        update.progress = progress;
    }
    update.state = state;
    match state {
        UpdateState::Succeeded => {
            update.progress = Some(100);
            update.error = None;
            status.current_version = update.target_version.clone();
        }
        UpdateState::Failed => {
            let code = match (feedback.status.code, feedback.status.execution) {
                (Some(code), _) => code.to_string(),
                (None, Execution::Rejected) => "Rejected".to_owned(),
                (None, _) => "UpdateFailed".to_owned(),
            };
            update.error = Some(error(code, &feedback.status.details));
        }
        _ => update.error = None,
    }
    if state.is_terminal() {
        update.finished_at = Some(Time(now));
        let error_code = update.error.as_ref().map(|e| e.code.clone());
        push_history(&mut status, update.clone(), state, rollout, now);
        if let Some(last) = status.history.first_mut() {
            last.error_code = error_code;
        }
    }
    status.update = Some(update);
    status.phase = Some(phase(&status));
    Ok(status)
}

/// Applies feedback on `cancelAction/{action_id}`: only while that action runs and the spec
/// no longer asks for it. `closed`+`success` or `canceled` confirm the cancel; `rejected` or
/// a failure refuse it, and the device finishes its action; anything else changes nothing.
pub fn cancel_feedback(
    device: &Device,
    action_id: i64,
    feedback: &ActionFeedback,
    now: Timestamp,
) -> Outcome {
    let mut status = device.status.clone().unwrap_or_default();
    let Some(update) = status
        .update
        .as_ref()
        .filter(|u| u.action_id == Some(action_id))
        .cloned()
    else {
        return Err(older_or_unknown(device, action_id));
    };
    if update.state.is_terminal() {
        return Err(Refusal::ActionClosed);
    }
    if device.spec.firmware.as_ref().map(|f| f.action_id) == Some(action_id) {
        return Err(Refusal::UnknownAction);
    }
    let execution = feedback.status.execution;
    let finished = feedback.status.result.finished;
    let mut update = update;
    match (execution, finished) {
        (Execution::Canceled, _) | (Execution::Closed, Finished::Success | Finished::None) => {
            update.state = UpdateState::Cancelled;
            update.finished_at = Some(Time(now));
            update.progress = None;
            update.error = None;
            let rollout = None;
            push_history(
                &mut status,
                update.clone(),
                UpdateState::Cancelled,
                rollout,
                now,
            );
        }
        (Execution::Rejected, _) | (Execution::Closed, Finished::Failure) => {
            update.error = Some(error(CANCEL_REJECTED.to_owned(), &feedback.status.details));
        }
        _ => {}
    }
    status.update = Some(update);
    status.phase = Some(phase(&status));
    Ok(status)
}

/// The configData attribute whose value, a non-negative integer, is written to
/// `status.bootCount` too (the simulator and agents with a boot counter report it).
pub const BOOT_COUNT_ATTRIBUTE: &str = "bootCount";

/// Applies `PUT configData` to `status.attributes`, within the limits of the Device schema,
/// and a reported [`BOOT_COUNT_ATTRIBUTE`] to `status.bootCount`; a count above the one
/// recorded is a boot, stamped `status.lastBootAt` = `now`.
pub fn config_data(device: &Device, data: &ConfigData, now: Timestamp) -> Outcome {
    let mut status = device.status.clone().unwrap_or_default();
    for (key, value) in &data.data {
        if key.is_empty() || key.chars().count() > MAX_ATTRIBUTE_KEY_LENGTH {
            return Err(Refusal::Invalid(format!(
                "attribute keys must have 1 to {MAX_ATTRIBUTE_KEY_LENGTH} characters"
            )));
        }
        if value.chars().count() > MAX_ATTRIBUTE_VALUE_LENGTH {
            return Err(Refusal::Invalid(format!(
                "attribute {key:?}: values have at most {MAX_ATTRIBUTE_VALUE_LENGTH} characters"
            )));
        }
    }
    match data.mode.unwrap_or_default() {
        ConfigMode::Merge => status
            .attributes
            .extend(data.data.iter().map(|(k, v)| (k.clone(), v.clone()))),
        ConfigMode::Replace => status.attributes = data.data.clone(),
        ConfigMode::Remove => {
            for key in data.data.keys() {
                status.attributes.remove(key);
            }
        }
    }
    if status.attributes.len() > MAX_ATTRIBUTES {
        return Err(Refusal::Invalid(format!(
            "a device has at most {MAX_ATTRIBUTES} attributes"
        )));
    }
    // `status.bootCount` follows the attribute; a value that is not a count leaves it alone.
    // A rise is a boot (the first count reported is not: it says nothing of when). Which
    // boot is the expected one into a new version is the rollout's to judge (its grace).
    if let Some(count) = status
        .attributes
        .get(BOOT_COUNT_ATTRIBUTE)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|count| *count >= 0)
    {
        if status.boot_count.is_some_and(|before| count > before) {
            status.last_boot_at = Some(Time(now));
        }
        status.boot_count = Some(count);
    }
    status.phase = Some(phase(&status));
    Ok(status)
}

/// The status after the device made contact (any authenticated request), before anything it
/// reported.
pub fn contact(device: &Device) -> DeviceStatus {
    let mut status = device.status.clone().unwrap_or_default();
    status.phase = Some(phase(&status));
    status
}

/// The status to write, if any: `next` with `lastSeen` set to `now` when it differs from the
/// current status, or when `lastSeen` is older than `resolution`; `None` when nothing is worth
/// a write.
pub fn to_write(
    current: Option<&DeviceStatus>,
    mut next: DeviceStatus,
    now: Timestamp,
    resolution: Duration,
) -> Option<DeviceStatus> {
    let last_seen = current.and_then(|c| c.last_seen.as_ref()).map(|t| t.0);
    next.last_seen = current.and_then(|c| c.last_seen.clone());
    let changed = current != Some(&next);
    let stale = last_seen.is_none_or(|seen| {
        now.duration_since(seen)
            .try_into()
            .is_ok_and(|age: Duration| age >= resolution)
            || seen > now
    });
    (changed || stale).then(|| {
        next.last_seen = Some(Time(now));
        next
    })
}

/// The next update state for a report.
fn next_state(current: UpdateState, feedback: &ActionFeedback) -> UpdateState {
    use UpdateState::*;
    match feedback.status.execution {
        Execution::Closed if feedback.status.result.finished == Finished::Failure => Failed,
        Execution::Closed => Succeeded,
        Execution::Canceled => Cancelled,
        Execution::Rejected => Failed,
        Execution::Scheduled => Idle,
        Execution::Download => Downloading,
        Execution::Downloaded => Installing,
        Execution::Resumed if current == Idle => Downloading,
        Execution::Resumed => current,
        Execution::Proceeding => {
            // DDI has one "proceeding" for every step; agents name the step in `details`.
            let said = |word: &str| {
                feedback
                    .status
                    .details
                    .iter()
                    .any(|d| d.to_ascii_lowercase().contains(word))
            };
            if said("verif") {
                Verifying
            } else if said("install") {
                Installing
            } else if current.is_in_progress() {
                current
            } else {
                Downloading
            }
        }
    }
}

fn error(code: String, details: &[String]) -> UpdateError {
    let code: String = code.chars().take(MAX_ERROR_CODE_LENGTH).collect();
    let message: String = details
        .join("; ")
        .chars()
        .take(MAX_ERROR_MESSAGE_LENGTH)
        .collect();
    UpdateError { code, message }
}

fn push_history(
    status: &mut DeviceStatus,
    update: UpdateStatus,
    result: UpdateState,
    rollout: Option<String>,
    now: Timestamp,
) {
    status.history.insert(
        0,
        UpdateRecord {
            version: update.target_version.unwrap_or_default(),
            result,
            action_id: update.action_id,
            rollout,
            error_code: None,
            started_at: update.started_at,
            finished_at: Some(update.finished_at.unwrap_or(Time(now))),
        },
    );
    status.history.truncate(MAX_HISTORY);
}

/// `410` for an action older than the ones this device knows, `404` otherwise.
fn older_or_unknown(device: &Device, action_id: i64) -> Refusal {
    let newest = [
        device.spec.firmware.as_ref().map(|f| f.action_id),
        device
            .status
            .as_ref()
            .and_then(|s| s.update.as_ref())
            .and_then(|u| u.action_id),
    ]
    .into_iter()
    .flatten()
    .max();
    match newest {
        Some(newest) if action_id < newest => Refusal::ActionClosed,
        _ => Refusal::UnknownAction,
    }
}

fn phase(status: &DeviceStatus) -> DevicePhase {
    match &status.update {
        Some(u) if u.state.is_in_progress() => DevicePhase::Updating,
        _ => DevicePhase::Online,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_time() -> Timestamp {
        "2030-01-01T10:00:00Z".parse().unwrap()
    }
    use crate::ddi::{FeedbackResult, FeedbackStatus, Progress};
    use proptest::prelude::*;
    use serde_json::json;

    fn device(firmware: Option<i64>) -> Device {
        let mut spec = json!({"model": "sensor-v2"});
        if let Some(action_id) = firmware {
            spec["firmware"] = json!({"version": "2.4.1", "release": "sensor-2-4-1",
                                      "rollout": "spring", "actionId": action_id});
        }
        serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": "sensor-0001", "namespace": "fleet"},
            "spec": spec,
            "status": {"currentVersion": "2.3.0"},
        }))
        .unwrap()
    }

    fn feedback(execution: Execution, finished: Finished) -> ActionFeedback {
        ActionFeedback {
            status: FeedbackStatus {
                execution,
                result: FeedbackResult {
                    finished,
                    progress: None,
                },
                code: None,
                details: Vec::new(),
            },
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn with(mut device: Device, status: DeviceStatus) -> Device {
        device.status = Some(status);
        device
    }

    #[test]
    fn an_update_from_first_report_to_success() {
        let t0 = at("2030-01-01T09:00:00Z");
        let mut progress = feedback(Execution::Proceeding, Finished::None);
        progress.status.result.progress = Some(Progress { cnt: 1, of: 4 });
        let status = deployment_feedback(&device(Some(7)), 7, &progress, t0).unwrap();
        let update = status.update.clone().unwrap();
        assert_eq!(update.state, UpdateState::Downloading);
        assert_eq!(update.progress, Some(25));
        assert_eq!(update.action_id, Some(7));
        assert_eq!(update.attempt, 1);
        assert_eq!(update.started_at, Some(Time(t0)));
        assert_eq!(status.phase, Some(DevicePhase::Updating));

        let device = with(device(Some(7)), status);
        let mut installing = feedback(Execution::Proceeding, Finished::None);
        installing.status.details = vec!["Installing bundle".into()];
        let status = deployment_feedback(&device, 7, &installing, t0).unwrap();
        assert_eq!(
            status.update.as_ref().unwrap().state,
            UpdateState::Installing
        );
        assert_eq!(status.update.as_ref().unwrap().progress, None);

        let device = with(device, status);
        let t1 = at("2030-01-01T09:05:00Z");
        let done = deployment_feedback(
            &device,
            7,
            &feedback(Execution::Closed, Finished::Success),
            t1,
        )
        .unwrap();
        let update = done.update.as_ref().unwrap();
        assert_eq!(update.state, UpdateState::Succeeded);
        assert_eq!(update.finished_at, Some(Time(t1)));
        assert_eq!(done.current_version.as_deref(), Some("2.4.1"));
        assert_eq!(done.phase, Some(DevicePhase::Online));
        assert_eq!(done.history.len(), 1);
        assert_eq!(done.history[0].result, UpdateState::Succeeded);
        assert_eq!(done.history[0].rollout.as_deref(), Some("spring"));
        assert_eq!(done.history[0].started_at, Some(Time(t0)));

        // The action is closed now.
        let device = with(device, done);
        assert_eq!(
            deployment_feedback(&device, 7, &progress, t1),
            Err(Refusal::ActionClosed)
        );
    }

    #[test]
    fn a_failure_keeps_its_code_and_details() {
        let mut failed = feedback(Execution::Closed, Finished::Failure);
        failed.status.code = Some(42);
        failed.status.details = vec!["signature".into(), "mismatch".into()];
        let status =
            deployment_feedback(&device(Some(7)), 7, &failed, at("2030-01-01T09:00:00Z")).unwrap();
        let update = status.update.unwrap();
        assert_eq!(update.state, UpdateState::Failed);
        assert_eq!(
            update.error,
            Some(UpdateError {
                code: "42".into(),
                message: "signature; mismatch".into()
            })
        );
        assert_eq!(status.current_version.as_deref(), Some("2.3.0"));
        assert_eq!(status.history[0].error_code.as_deref(), Some("42"));
        let rejected = deployment_feedback(
            &device(Some(7)),
            7,
            &feedback(Execution::Rejected, Finished::None),
            at("2030-01-01T09:00:00Z"),
        )
        .unwrap();
        assert_eq!(rejected.update.unwrap().error.unwrap().code, "Rejected");
    }

    #[test]
    fn older_and_unknown_actions_are_refused() {
        let t = at("2030-01-01T09:00:00Z");
        let report = feedback(Execution::Proceeding, Finished::None);
        assert_eq!(
            deployment_feedback(&device(Some(7)), 6, &report, t),
            Err(Refusal::ActionClosed)
        );
        assert_eq!(
            deployment_feedback(&device(Some(7)), 8, &report, t),
            Err(Refusal::UnknownAction)
        );
        assert_eq!(
            deployment_feedback(&device(None), 8, &report, t),
            Err(Refusal::UnknownAction)
        );
    }

    #[test]
    fn a_new_attempt_counts_and_supersedes_the_running_one() {
        let t = at("2030-01-01T09:00:00Z");
        let first = deployment_feedback(
            &device(Some(7)),
            7,
            &feedback(Execution::Download, Finished::None),
            t,
        )
        .unwrap();
        // Reassigned with a new action id while the first was still downloading.
        let second = deployment_feedback(
            &with(device(Some(9)), first.clone()),
            9,
            &feedback(Execution::Download, Finished::None),
            t,
        )
        .unwrap();
        assert_eq!(second.update.as_ref().unwrap().attempt, 2);
        assert_eq!(second.history[0].result, UpdateState::Cancelled);
        assert_eq!(second.history[0].action_id, Some(7));
        // The running action still reports even though the spec moved on.
        let running = deployment_feedback(
            &with(device(Some(9)), first),
            7,
            &feedback(Execution::Closed, Finished::Success),
            t,
        )
        .unwrap();
        assert_eq!(running.current_version.as_deref(), Some("2.4.1"));
    }

    #[test]
    fn cancel_confirmed_or_refused() {
        let t = at("2030-01-01T09:00:00Z");
        let running = deployment_feedback(
            &device(Some(7)),
            7,
            &feedback(Execution::Download, Finished::None),
            t,
        )
        .unwrap();
        let aborted = with(device(None), running);
        let confirmed = cancel_feedback(
            &aborted,
            7,
            &feedback(Execution::Closed, Finished::Success),
            t,
        )
        .unwrap();
        assert_eq!(
            confirmed.update.as_ref().unwrap().state,
            UpdateState::Cancelled
        );
        assert_eq!(confirmed.history[0].result, UpdateState::Cancelled);
        assert_eq!(
            crate::offer::work(&with(device(None), confirmed.clone())),
            crate::offer::Work::Idle
        );
        assert_eq!(
            cancel_feedback(
                &with(device(None), confirmed),
                7,
                &feedback(Execution::Canceled, Finished::None),
                t
            ),
            Err(Refusal::ActionClosed)
        );
        let refused = cancel_feedback(
            &aborted,
            7,
            &feedback(Execution::Rejected, Finished::None),
            t,
        )
        .unwrap();
        assert_eq!(
            refused.update.as_ref().unwrap().state,
            UpdateState::Downloading
        );
        assert_eq!(
            crate::offer::work(&with(device(None), refused)),
            crate::offer::Work::Idle
        );
        assert_eq!(
            cancel_feedback(
                &aborted,
                3,
                &feedback(Execution::Canceled, Finished::None),
                t
            ),
            Err(Refusal::ActionClosed)
        );
        // A cancel of the action the spec still asks for is not one that was offered.
        let wanted = with(device(Some(7)), aborted.status.clone().unwrap());
        assert_eq!(
            cancel_feedback(
                &wanted,
                7,
                &feedback(Execution::Canceled, Finished::None),
                t
            ),
            Err(Refusal::UnknownAction)
        );
    }

    #[test]
    fn config_data_merges_replaces_and_removes_within_limits() {
        let data = |mode, pairs: &[(&str, &str)]| ConfigData {
            mode,
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let status = config_data(
            &device(None),
            &data(None, &[("serial", "1"), ("hw", "C")]),
            boot_time(),
        )
        .unwrap();
        let d = with(device(None), status);
        let merged = config_data(
            &d,
            &data(Some(ConfigMode::Merge), &[("hw", "D")]),
            boot_time(),
        )
        .unwrap();
        assert_eq!(merged.attributes["hw"], "D");
        assert_eq!(merged.attributes.len(), 2);
        let replaced = config_data(
            &d,
            &data(Some(ConfigMode::Replace), &[("x", "1")]),
            boot_time(),
        )
        .unwrap();
        assert_eq!(replaced.attributes.keys().collect::<Vec<_>>(), ["x"]);
        let removed = config_data(
            &d,
            &data(Some(ConfigMode::Remove), &[("hw", "")]),
            boot_time(),
        )
        .unwrap();
        assert_eq!(removed.attributes.keys().collect::<Vec<_>>(), ["serial"]);
        let long = "v".repeat(MAX_ATTRIBUTE_VALUE_LENGTH + 1);
        assert!(matches!(
            config_data(&d, &data(None, &[("k", &long)]), boot_time()),
            Err(Refusal::Invalid(_))
        ));
        let many: Vec<(String, String)> = (0..=MAX_ATTRIBUTES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(matches!(
            config_data(&d, &data(None, &many), boot_time()),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn a_reported_boot_count_is_the_status_boot_count() {
        let report = |pairs: &[(&str, &str)]| ConfigData {
            mode: None,
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let first =
            config_data(&device(None), &report(&[("bootCount", "3")]), boot_time()).unwrap();
        assert_eq!(first.boot_count, Some(3));
        assert_eq!(first.last_boot_at, None);
        let d = with(device(None), first);
        let rebooted = config_data(&d, &report(&[("bootCount", " 4 ")]), boot_time()).unwrap();
        assert_eq!(rebooted.boot_count, Some(4));
        assert_eq!(
            rebooted.last_boot_at,
            Some(Time(boot_time())),
            "a rise is a boot"
        );
        let same = config_data(&d, &report(&[("bootCount", "3")]), boot_time()).unwrap();
        assert_eq!(same.last_boot_at, None, "the same count is no boot");
        // Not a count: the attribute is kept as reported, bootCount stays.
        for odd in ["-1", "many", ""] {
            let kept = config_data(&d, &report(&[("bootCount", odd)]), boot_time()).unwrap();
            assert_eq!(
                (kept.boot_count, kept.attributes["bootCount"].as_str()),
                (Some(3), odd)
            );
        }
        // Other attributes leave it alone; removing the attribute keeps the last count.
        let other = config_data(&d, &report(&[("serial", "1")]), boot_time()).unwrap();
        assert_eq!(other.boot_count, Some(3));
        let removed = ConfigData {
            mode: Some(ConfigMode::Remove),
            ..report(&[("bootCount", "")])
        };
        assert_eq!(
            config_data(&d, &removed, boot_time()).unwrap().boot_count,
            Some(3)
        );
    }

    #[test]
    fn last_seen_is_written_once_per_resolution_unless_the_state_changes() {
        let resolution = Duration::from_secs(300);
        let t0 = at("2030-01-01T09:00:00Z");
        let d = device(None);
        // First contact: the phase changes.
        let first = to_write(d.status.as_ref(), contact(&d), t0, resolution).unwrap();
        assert_eq!(first.last_seen, Some(Time(t0)));
        let d = with(d, first);
        let t1 = at("2030-01-01T09:04:59Z");
        assert_eq!(
            to_write(d.status.as_ref(), contact(&d), t1, resolution),
            None
        );
        let t2 = at("2030-01-01T09:05:00Z");
        let later = to_write(d.status.as_ref(), contact(&d), t2, resolution).unwrap();
        assert_eq!(later.last_seen, Some(Time(t2)));
        // A report that changes something is written at once.
        let report = deployment_feedback(
            &with(device(Some(7)), d.status.clone().unwrap()),
            7,
            &feedback(Execution::Download, Finished::None),
            t1,
        )
        .unwrap();
        assert_eq!(
            to_write(d.status.as_ref(), report, t1, resolution)
                .unwrap()
                .last_seen,
            Some(Time(t1))
        );
    }

    fn any_feedback() -> impl Strategy<Value = ActionFeedback> {
        let execution = prop::sample::select(vec![
            Execution::Closed,
            Execution::Proceeding,
            Execution::Canceled,
            Execution::Scheduled,
            Execution::Rejected,
            Execution::Resumed,
            Execution::Downloaded,
            Execution::Download,
        ]);
        let finished =
            prop::sample::select(vec![Finished::Success, Finished::Failure, Finished::None]);
        (
            execution,
            finished,
            prop::option::of((0i64..10, 0i64..10)),
            prop::option::of(0i64..500),
        )
            .prop_map(|(execution, finished, progress, code)| ActionFeedback {
                status: FeedbackStatus {
                    execution,
                    result: FeedbackResult {
                        finished,
                        progress: progress.map(|(cnt, of)| Progress { cnt, of }),
                    },
                    code,
                    details: vec!["x".repeat(700), "y".repeat(700)],
                },
            })
    }

    proptest! {
        /// Any report, repeated, changes nothing the second time (so it costs no write), and
        /// history and errors stay within the schema's bounds.
        #[test]
        fn repeated_reports_are_idempotent(reports in prop::collection::vec(any_feedback(), 1..30)) {
            let t = at("2030-01-01T09:00:00Z");
            let mut d = device(Some(7));
            for (i, report) in reports.iter().enumerate() {
                // Each report is for the current action; a closed one moves on to a new action.
                let action = d.spec.firmware.as_ref().unwrap().action_id;
                match deployment_feedback(&d, action, report, t) {
                    Ok(next) => {
                        prop_assert!(next.history.len() <= MAX_HISTORY);
                        if let Some(e) = next.update.as_ref().and_then(|u| u.error.as_ref()) {
                            prop_assert!(e.message.chars().count() <= MAX_ERROR_MESSAGE_LENGTH);
                        }
                        d.status = Some(next.clone());
                        match deployment_feedback(&d, action, report, t) {
                            Ok(again) => prop_assert_eq!(&again, &next),
                            Err(refusal) => prop_assert_eq!(refusal, Refusal::ActionClosed),
                        }
                        prop_assert_eq!(to_write(Some(&next), next.clone(), t, Duration::from_secs(300)).is_some(),
                                        next.last_seen.is_none());
                    }
                    Err(refusal) => prop_assert_eq!(refusal, Refusal::ActionClosed),
                }
                if d.status.as_ref().and_then(|s| s.update.as_ref()).is_some_and(|u| u.state.is_terminal()) {
                    d.spec.firmware.as_mut().unwrap().action_id = 8 + i as i64;
                }
            }
        }
    }
}
