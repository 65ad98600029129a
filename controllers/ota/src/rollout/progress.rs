//! Where a target stands, read from its Device alone. Pure, so that the progress rebuilt after
//! a restart or a leader change is the progress the previous process had.
//!
//! A Device is *assigned by the rollout* when `spec.firmware` names the rollout and the
//! release's version. Then, judged against the latest report about that `actionId`:
//! - Succeeded and running the version: soaking until `finishedAt + soakTime`; succeeded
//!   once heard from after that (`lastSeen` at or after the soak's end; silent until
//!   `offlineAfter` past it, and past the device timeout, fails it) and not booted again after
//!   reporting success (a boot during the soak is a reboot loop: failed, `RebootLoop`). The
//!   boot into the new version may come just after the success report (RAUC's
//!   hawkbit-updater reports, then reboots; SWUpdate reboots, then reports): a boot within
//!   half the soak after it (bounded by [`BOOT_GRACE`]) is that boot, and a boot after the
//!   soak is an ordinary reboot that never takes a success back;
//! - Failed or Cancelled: a failed attempt (the device's error code, or `Cancelled`), retried
//!   after its backoff while `retries.limit` allows;
//! - anything else (no report yet, downloading, installing): in flight until
//!   `assignedAt + deviceTimeout`, then a failed attempt with code `Timeout`.
//!
//! An unassigned Device is pending — or waiting while offline under `offlinePolicy: Wait`.
//! A rollback assignment (the rollout's name with another version) is judged the same way by
//! [`rollback_progress`].

use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::device::UpdateState;
use flotilla_crds::firmware_rollout::{DeviceRetries, FirmwareRolloutSpec, OfflinePolicy};
use jiff::{SignedDuration, Timestamp};

use super::assign::{Progress, after_failed_attempt};
use super::fleet::DeviceView;

/// Error code of a device that did not finish within `deviceTimeout`.
pub const TIMEOUT: &str = "Timeout";
/// How long after a success report a boot is still the boot into the new version: half the
/// soak time, so that a short soak can still see a loop, within these bounds (the upper one
/// for long soaks; the lower one because the boot report of an agent that reports success
/// first can take a few seconds to arrive).
pub const BOOT_GRACE: (SignedDuration, SignedDuration) =
    (SignedDuration::from_secs(10), SignedDuration::from_mins(2));

/// Error code of a device that booted again during its soak time.
pub const REBOOT_LOOP: &str = "RebootLoop";
/// Error code of a device that stopped heartbeating during its soak time.
pub const SOAK_SILENT: &str = "SilentDuringSoak";
/// Error code of a cancelled attempt.
pub const CANCELLED: &str = "Cancelled";
/// Error code of a device that failed without saying why.
pub const UNKNOWN: &str = "UpdateFailed";

/// What a rollout's progress judgement needs from its spec and release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terms {
    /// The rollout's name.
    pub rollout: Arc<str>,
    /// The release's version.
    pub version: Arc<str>,
    /// `soakTime`.
    pub soak: SignedDuration,
    /// `deviceTimeout`.
    pub device_timeout: SignedDuration,
    /// `offlineAfter`.
    pub offline_after: SignedDuration,
    /// `offlinePolicy`.
    pub offline_policy: OfflinePolicy,
    /// `retries`.
    pub retries: DeviceRetries,
}

impl Terms {
    /// The terms of `spec` for a release of `version`.
    pub fn new(rollout: &str, version: &str, spec: &FirmwareRolloutSpec) -> Self {
        let signed = |d: Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
        Self {
            rollout: rollout.into(),
            version: version.into(),
            soak: signed(spec.soak_time.as_std()),
            device_timeout: signed(spec.device_timeout.as_std()),
            offline_after: signed(spec.offline_after.as_std()),
            offline_policy: spec.offline_policy,
            retries: spec.retries.clone(),
        }
    }
}

/// A target's progress, why it failed (if it did), and when it must be judged again even if
/// nothing happens (soak end, timeout, retry due).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    /// The progress.
    pub progress: Progress,
    /// The failure code of the latest failed attempt (kept while retrying and once failed).
    pub failure: Option<Arc<str>>,
    /// When the judgement may change by the clock alone.
    pub deadline: Option<Timestamp>,
}

impl Judged {
    fn of(progress: Progress) -> Self {
        Self {
            progress,
            failure: None,
            deadline: None,
        }
    }
}

/// Whether the device is assigned this rollout's version.
pub fn assigned_here(view: &DeviceView, terms: &Terms) -> bool {
    view.assigned.as_ref().is_some_and(|a| {
        a.rollout.as_deref() == Some(&*terms.rollout) && *a.version == *terms.version
    })
}

/// Whether the device has not been seen for `offlineAfter`.
pub fn offline(view: &DeviceView, offline_after: SignedDuration, now: Timestamp) -> bool {
    view.last_seen
        .is_none_or(|seen| now.duration_since(seen) > offline_after)
}

/// The progress of a target whose Device is `view` (None: the Device is gone).
pub fn judge(view: Option<&DeviceView>, terms: &Terms, now: Timestamp) -> Judged {
    let Some(view) = view else {
        return Judged::of(Progress::Skipped);
    };
    let Some(assigned) = view
        .assigned
        .as_ref()
        .filter(|_| assigned_here(view, terms))
    else {
        let waiting =
            terms.offline_policy == OfflinePolicy::Wait && offline(view, terms.offline_after, now);
        return Judged::of(if waiting {
            Progress::Waiting
        } else {
            Progress::Pending
        });
    };
    let attempt = assigned.attempt.max(1);
    let started = assigned.assigned_at.unwrap_or(now);
    let timeout_at = started
        .checked_add(terms.device_timeout)
        .unwrap_or(Timestamp::MAX);
    let report = view
        .reported
        .as_ref()
        .filter(|r| r.action_id == Some(assigned.action_id));
    let failed = |code: Arc<str>, at: Timestamp| {
        let progress = after_failed_attempt(&terms.retries, attempt, at);
        let deadline = match progress {
            Progress::RetryAt { due, .. } => Some(due),
            _ => None,
        };
        Judged {
            progress,
            failure: Some(code),
            deadline,
        }
    };
    match report.map(|r| r.state) {
        Some(UpdateState::Succeeded)
            if view.current_version.as_deref() == Some(&*terms.version) =>
        {
            let report = report.expect("matched a report");
            let finished = report.finished_at.unwrap_or(started);
            let soaked = finished.checked_add(terms.soak).unwrap_or(Timestamp::MAX);
            // Only a boot during the soak counts: one after it is an ordinary reboot of a
            // device that succeeded, never a reason to take the success back.
            let grace = (terms.soak / 2).clamp(BOOT_GRACE.0, BOOT_GRACE.1);
            let expected_boot = finished.checked_add(grace).unwrap_or(finished);
            if let Some(boot) = view.last_boot_at
                && boot > expected_boot
                && boot <= soaked
            {
                return failed(REBOOT_LOOP.into(), boot);
            }
            if now < soaked {
                return Judged {
                    progress: Progress::InFlight { attempt },
                    failure: None,
                    deadline: Some(soaked),
                };
            }
            // Heard from after the soak ended: alive through it. Judged by that fact, not by
            // how recently it was seen, so a success stays one when the device goes quiet
            // later (a restarted operator re-judges every target).
            if view.last_seen.is_some_and(|seen| seen >= soaked) {
                return Judged::of(Progress::Succeeded);
            }
            let after_soak = soaked
                .checked_add(terms.offline_after)
                .unwrap_or(Timestamp::MAX);
            let timeout_at = timeout_at.max(after_soak);
            if now >= timeout_at {
                return failed(SOAK_SILENT.into(), timeout_at);
            }
            Judged {
                progress: Progress::InFlight { attempt },
                failure: None,
                deadline: Some(timeout_at),
            }
        }
        Some(UpdateState::Failed) => {
            let report = report.expect("matched a report");
            let code = report.error_code.clone().unwrap_or_else(|| UNKNOWN.into());
            failed(code, report.finished_at.unwrap_or(now))
        }
        Some(UpdateState::Cancelled) => {
            let report = report.expect("matched a report");
            failed(CANCELLED.into(), report.finished_at.unwrap_or(now))
        }
        _ if now >= timeout_at => failed(TIMEOUT.into(), timeout_at),
        _ => Judged {
            progress: Progress::InFlight { attempt },
            failure: None,
            deadline: Some(timeout_at),
        },
    }
}

/// How a rollback of one device stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackProgress {
    /// Not assigned its previous version yet.
    Unassigned,
    /// Assigned, not back yet; judged again at the deadline.
    Going(Timestamp),
    /// Runs its previous version again.
    Back,
    /// Could not go back (failed, cancelled, timed out, or gone).
    Failed,
}

/// The rollback of a device to `previous` (the version it had when the rollout assigned it).
pub fn rollback_progress(
    view: Option<&DeviceView>,
    terms: &Terms,
    previous: &str,
    now: Timestamp,
) -> RollbackProgress {
    let Some(view) = view else {
        return RollbackProgress::Failed;
    };
    let Some(assigned) = view
        .assigned
        .as_ref()
        .filter(|a| a.rollout.as_deref() == Some(&*terms.rollout) && *a.version == *previous)
    else {
        return RollbackProgress::Unassigned;
    };
    if view.current_version.as_deref() == Some(previous) {
        return RollbackProgress::Back;
    }
    let report = view
        .reported
        .as_ref()
        .filter(|r| r.action_id == Some(assigned.action_id));
    if report.is_some_and(|r| matches!(r.state, UpdateState::Failed | UpdateState::Cancelled)) {
        return RollbackProgress::Failed;
    }
    let timeout_at = assigned
        .assigned_at
        .unwrap_or(now)
        .checked_add(terms.device_timeout)
        .unwrap_or(Timestamp::MAX);
    if now >= timeout_at {
        RollbackProgress::Failed
    } else {
        RollbackProgress::Going(timeout_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::fleet::{Assigned, Reported};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn terms() -> Terms {
        let spec: FirmwareRolloutSpec = serde_json::from_value(serde_json::json!({
            "release": "fw", "selector": {"matchLabels": {"a": "b"}},
            "soakTime": "10m", "deviceTimeout": "1h", "offlineAfter": "15m",
            "retries": {"limit": 1, "initialBackoff": "1m", "maxBackoff": "5m"},
        }))
        .unwrap();
        Terms::new("spring", "2.0.0", &spec)
    }

    fn view() -> DeviceView {
        DeviceView {
            labels: Box::new([]),
            model: "m".into(),
            approved: true,
            current_version: Some("1.0.0".into()),
            last_seen: Some(at("2030-01-01T10:00:00Z")),
            last_boot_at: None,
            rollout_label: None,
            assigned: None,
            reported: None,
            generation: Some(1),
        }
    }

    fn assigned(mut view: DeviceView, attempt: u32) -> DeviceView {
        view.assigned = Some(Assigned {
            version: "2.0.0".into(),
            release: "fw".into(),
            rollout: Some("spring".into()),
            action_id: 7,
            attempt,
            assigned_at: Some(at("2030-01-01T10:00:00Z")),
            previous_version: Some("1.0.0".into()),
            previous_release: None,
        });
        view
    }

    fn reported(mut view: DeviceView, state: UpdateState, finished: &str) -> DeviceView {
        view.reported = Some(Reported {
            state,
            action_id: Some(7),
            error_code: Some("E42".into()),
            finished_at: Some(at(finished)),
        });
        view
    }

    #[test]
    fn unassigned_devices_are_pending_or_wait_when_offline() {
        let now = at("2030-01-01T10:05:00Z");
        assert_eq!(
            judge(Some(&view()), &terms(), now).progress,
            Progress::Pending
        );
        let mut wait = terms();
        wait.offline_policy = OfflinePolicy::Wait;
        let later = at("2030-01-01T11:00:00Z");
        assert_eq!(
            judge(Some(&view()), &wait, later).progress,
            Progress::Waiting
        );
        assert_eq!(judge(None, &terms(), now).progress, Progress::Skipped);
    }

    #[test]
    fn success_soaks_then_succeeds_while_heartbeating() {
        let mut device = reported(
            assigned(view(), 1),
            UpdateState::Succeeded,
            "2030-01-01T10:20:00Z",
        );
        device.current_version = Some("2.0.0".into());
        let soaking = judge(Some(&device), &terms(), at("2030-01-01T10:25:00Z"));
        assert_eq!(soaking.progress, Progress::InFlight { attempt: 1 });
        assert_eq!(soaking.deadline, Some(at("2030-01-01T10:30:00Z")));
        device.last_seen = Some(at("2030-01-01T10:29:00Z"));
        let waiting = judge(Some(&device), &terms(), at("2030-01-01T10:30:00Z"));
        assert_eq!(
            waiting.progress,
            Progress::InFlight { attempt: 1 },
            "not heard from since"
        );
        device.last_seen = Some(at("2030-01-01T10:30:30Z"));
        let done = judge(Some(&device), &terms(), at("2030-01-01T10:31:00Z"));
        assert_eq!(done.progress, Progress::Succeeded);
        // Quiet for days afterwards (an operator restarted re-judges it): still succeeded.
        let days = judge(Some(&device), &terms(), at("2030-01-09T00:00:00Z"));
        assert_eq!(days.progress, Progress::Succeeded);
        // Silent since the success: waits until the device timeout, then fails.
        device.last_seen = Some(at("2030-01-01T10:20:00Z"));
        let silent = judge(Some(&device), &terms(), at("2030-01-01T11:00:00Z"));
        // Attempt 1 of a rollout allowing one retry: retried after the backoff.
        assert_eq!(
            silent.progress,
            Progress::RetryAt {
                due: at("2030-01-01T11:01:00Z"),
                attempt: 1
            }
        );
        assert_eq!(silent.failure.as_deref(), Some(SOAK_SILENT));
    }

    #[test]
    fn a_boot_after_success_is_a_reboot_loop() {
        let mut device = reported(
            assigned(view(), 2),
            UpdateState::Succeeded,
            "2030-01-01T10:20:00Z",
        );
        device.current_version = Some("2.0.0".into());
        // The boot into the new version, right after the report: still soaking.
        device.last_boot_at = Some(at("2030-01-01T10:20:30Z"));
        let judged = judge(Some(&device), &terms(), at("2030-01-01T10:21:00Z"));
        assert_eq!(judged.progress, Progress::InFlight { attempt: 2 });
        // Booting again later in the soak is a loop.
        device.last_boot_at = Some(at("2030-01-01T10:22:30Z"));
        let judged = judge(Some(&device), &terms(), at("2030-01-01T10:23:00Z"));
        assert_eq!(judged.progress, Progress::Failed);
        assert_eq!(judged.failure.as_deref(), Some(REBOOT_LOOP));
        // A shorter soak shortens the grace to half of it, but not below 10 s.
        let mut short = terms();
        short.soak = SignedDuration::from_secs(30);
        device.last_boot_at = Some(at("2030-01-01T10:20:16Z"));
        let judged = judge(Some(&device), &short, at("2030-01-01T10:20:17Z"));
        assert_eq!(judged.failure.as_deref(), Some(REBOOT_LOOP));
        short.soak = SignedDuration::from_secs(1);
        device.last_boot_at = Some(at("2030-01-01T10:20:08Z"));
        let judged = judge(Some(&device), &short, at("2030-01-01T10:20:09Z"));
        assert_eq!(judged.failure, None, "within the 10 s floor");
        // A boot after the soak is an ordinary reboot: the success stands.
        device.last_boot_at = Some(at("2030-01-01T10:45:00Z"));
        let judged = judge(Some(&device), &terms(), at("2030-01-01T10:46:00Z"));
        assert_eq!(judged.failure, None, "after the soak");
        assert_ne!(judged.progress, Progress::Failed);
    }

    #[test]
    fn failures_retry_within_the_limit_then_fail() {
        let first = reported(
            assigned(view(), 1),
            UpdateState::Failed,
            "2030-01-01T10:10:00Z",
        );
        let judged = judge(Some(&first), &terms(), at("2030-01-01T10:10:30Z"));
        assert_eq!(
            judged.progress,
            Progress::RetryAt {
                due: at("2030-01-01T10:11:00Z"),
                attempt: 1
            }
        );
        assert_eq!(judged.failure.as_deref(), Some("E42"));
        let second = reported(
            assigned(view(), 2),
            UpdateState::Failed,
            "2030-01-01T10:40:00Z",
        );
        assert_eq!(
            judge(Some(&second), &terms(), at("2030-01-01T10:41:00Z")).progress,
            Progress::Failed
        );
    }

    #[test]
    fn a_silent_device_times_out() {
        let device = assigned(view(), 2);
        let waiting = judge(Some(&device), &terms(), at("2030-01-01T10:30:00Z"));
        assert_eq!(waiting.progress, Progress::InFlight { attempt: 2 });
        assert_eq!(waiting.deadline, Some(at("2030-01-01T11:00:00Z")));
        let late = judge(Some(&device), &terms(), at("2030-01-01T11:00:00Z"));
        assert_eq!(late.progress, Progress::Failed);
        assert_eq!(late.failure.as_deref(), Some(TIMEOUT));
    }

    #[test]
    fn a_report_about_another_action_does_not_count() {
        let mut device = reported(
            assigned(view(), 1),
            UpdateState::Failed,
            "2030-01-01T10:10:00Z",
        );
        device.reported.as_mut().unwrap().action_id = Some(6);
        let judged = judge(Some(&device), &terms(), at("2030-01-01T10:11:00Z"));
        assert_eq!(judged.progress, Progress::InFlight { attempt: 1 });
    }

    #[test]
    fn rollback_is_back_when_the_device_runs_its_previous_version() {
        let now = at("2030-01-01T10:30:00Z");
        let mut device = assigned(view(), 1);
        assert_eq!(
            rollback_progress(Some(&device), &terms(), "1.0.0", now),
            RollbackProgress::Unassigned
        );
        let a = device.assigned.as_mut().unwrap();
        a.version = "1.0.0".into();
        device.current_version = Some("2.0.0".into());
        assert_eq!(
            rollback_progress(Some(&device), &terms(), "1.0.0", now),
            RollbackProgress::Going(at("2030-01-01T11:00:00Z"))
        );
        device.current_version = Some("1.0.0".into());
        assert_eq!(
            rollback_progress(Some(&device), &terms(), "1.0.0", now),
            RollbackProgress::Back
        );
        assert_eq!(
            rollback_progress(None, &terms(), "1.0.0", now),
            RollbackProgress::Failed
        );
    }
}
