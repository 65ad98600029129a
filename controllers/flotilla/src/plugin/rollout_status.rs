//! `kubectl flotilla rollout status NAME [-w]`: a FirmwareRollout's progress on one screen,
//! in the manner of `kubectl argo rollouts get rollout`. [`render`] is pure (the rollout and
//! the time), so every section is tested on text; [`status`] fetches or watches and prints.

use std::fmt::Write as _;
use std::io::Write;
use std::pin::pin;
use std::time::Duration;

use anyhow::Context as _;
use flotilla_crds::firmware_rollout::{DeviceCounts, Exclusions, RolloutPlan};
use flotilla_crds::{FirmwareRollout, FirmwareRolloutPhase};
use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, ResourceExt as _};

use super::Outcome;
use super::table::Table;

/// Width of the progress bar, in characters.
const BAR_WIDTH: usize = 30;
/// Label column of the key/value lines.
const LABEL_WIDTH: usize = 15;

/// How `status` prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusOptions {
    /// Keep watching until the rollout finishes.
    pub watch: bool,
    /// Clear the screen before each print (a terminal), rather than appending.
    pub clear_screen: bool,
}

/// Prints the rollout `name`; with `watch`, again on every change until its phase is
/// terminal. Returns [`Outcome::Unsuccessful`] when a watched rollout ends Failed,
/// Aborted or RolledBack.
///
/// # Errors
/// The rollout does not exist or is deleted while watched; the API cannot be reached; `out`
/// cannot be written.
pub async fn status(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    options: StatusOptions,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let api: Api<FirmwareRollout> = Api::namespaced(client.clone(), namespace);
    // A watch on a missing object would wait forever; fail fast instead.
    let rollout = super::control::get(&api, namespace, name).await?;
    let mut printer = Printer {
        options,
        last: None,
        out,
    };
    printer.print(&rollout)?;
    if !options.watch {
        return Ok(Outcome::Done);
    }
    if let Some(outcome) = finished(&rollout) {
        return Ok(outcome);
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = pin!(watcher(api, config).default_backoff());
    let mut interrupted = pin!(tokio::signal::ctrl_c());
    // Relative times ("in 25s") go stale between events; a terminal gets them refreshed.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut latest = rollout;
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(Outcome::Interrupted),
            _ = tick.tick(), if options.clear_screen => printer.print(&latest)?,
            event = events.next() => match event {
                None => anyhow::bail!("the watch of {} ended", super::object_ref(name)),
                Some(Err(error)) => eprintln!("warning: watching {}: {error}", super::object_ref(name)),
                Some(Ok(watcher::Event::Apply(rollout) | watcher::Event::InitApply(rollout))) => {
                    printer.print(&rollout)?;
                    if let Some(outcome) = finished(&rollout) {
                        return Ok(outcome);
                    }
                    latest = rollout;
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    anyhow::bail!("{} was deleted", super::object_ref(name))
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
            },
        }
    }
}

/// The outcome of a rollout in a terminal phase; `None` while it can still change.
fn finished(rollout: &FirmwareRollout) -> Option<Outcome> {
    let phase = rollout.status.as_ref()?.phase?;
    match phase {
        FirmwareRolloutPhase::Succeeded => Some(Outcome::Done),
        phase if phase.is_terminal() => Some(Outcome::Unsuccessful),
        _ => None,
    }
}

/// Prints renders, skipping one equal to the last.
struct Printer<'a> {
    options: StatusOptions,
    last: Option<String>,
    out: &'a mut dyn Write,
}

impl Printer<'_> {
    fn print(&mut self, rollout: &FirmwareRollout) -> anyhow::Result<()> {
        let text = render(rollout, Timestamp::now());
        if self.last.as_ref() == Some(&text) {
            return Ok(());
        }
        let written = if self.options.clear_screen {
            // Home the cursor and clear the screen, as `watch` does.
            write!(self.out, "\x1b[H\x1b[2J{text}")
        } else if self.last.is_some() {
            write!(self.out, "\n{text}")
        } else {
            write!(self.out, "{text}")
        };
        written
            .and_then(|()| self.out.flush())
            .context("writing to stdout")?;
        self.last = Some(text);
        Ok(())
    }
}

/// The status screen of `rollout` at `now`.
pub fn render(rollout: &FirmwareRollout, now: Timestamp) -> String {
    let mut text = String::new();
    let spec = &rollout.spec;
    let status = rollout.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    let plan = status.plan.as_ref();

    line(&mut text, "Name", &rollout.name_any());
    line(
        &mut text,
        "Namespace",
        rollout.namespace().as_deref().unwrap_or("default"),
    );
    let release = match plan.map(|p| p.version.as_str()).filter(|v| !v.is_empty()) {
        Some(version) => format!("{} (version {version})", spec.release),
        None => spec.release.clone(),
    };
    line(&mut text, "Release", &release);
    line(
        &mut text,
        "Phase",
        &format!("{} {}", symbol(phase), phase.as_str()),
    );
    if let Some(message) = ready_message(&status.conditions) {
        line(&mut text, "Message", message);
    }
    if !phase.is_terminal() {
        if spec.abort {
            line(&mut text, "Abort", "requested (spec.abort)");
        } else if spec.paused {
            line(
                &mut text,
                "Paused",
                "by spec.paused (kubectl flotilla rollout resume)",
            );
        } else if phase == FirmwareRolloutPhase::Paused && status.next_wave_at.is_none() {
            // A wave pause `untilResumed` or the failure threshold; a timed pause shows its
            // next wave instead.
            line(
                &mut text,
                "Paused",
                &format!(
                    "until resumed: kubectl flotilla rollout resume {} -n {}",
                    rollout.name_any(),
                    rollout.namespace().as_deref().unwrap_or("default"),
                ),
            );
        }
    }
    let total_waves = plan
        .map(|p| p.waves.len())
        .filter(|n| *n > 0)
        .unwrap_or(spec.waves.len());
    line(
        &mut text,
        "Wave",
        &format!("{} of {total_waves}", status.current_wave.unwrap_or(0)),
    );
    if let Some(started) = &status.started_at {
        line(&mut text, "Started", &when(started, now));
    }
    if let Some(completed) = &status.completed_at {
        line(&mut text, "Completed", &when(completed, now));
    }
    if !phase.is_terminal() {
        if let Some(next) = &status.next_wave_at {
            line(&mut text, "Next wave", &when(next, now));
        }
        if let Some(eta) = plan.and_then(|p| p.estimated_completion_at.as_ref()) {
            line(&mut text, "ETA", &when(eta, now));
        }
    }

    let counts = status.counts.clone().unwrap_or_default();
    text.push('\n');
    line(&mut text, "Devices", &progress(&counts));
    for (label, value) in [
        ("Targeted", counts.targeted),
        ("Succeeded", counts.succeeded),
        ("Failed", counts.failed),
        ("Updating", counts.updating),
        ("Pending", counts.pending),
        ("Skipped", counts.skipped),
    ] {
        line(&mut text, &format!("  {label}"), &value.to_string());
    }

    if !status.waves.is_empty() {
        text.push_str("\nWaves:\n");
        let mut table = counts_table(["WAVE", "DEVICES"], ["STARTED", "COMPLETED"]);
        for wave in &status.waves {
            let marker = if status.current_wave == Some(wave.number) && !phase.is_terminal() {
                format!("{} *", wave.number)
            } else {
                wave.number.to_string()
            };
            table.row(
                [marker, wave.counts.targeted.to_string()]
                    .into_iter()
                    .chain(count_cells(&wave.counts))
                    .chain([ago(&wave.started_at, now), ago(&wave.completed_at, now)]),
            );
        }
        text.push_str(&table.render("  "));
    }

    if !status.cohorts.is_empty() {
        text.push_str("\nCohorts (model × version updated from):\n");
        let mut table = counts_table(["MODEL", "FROM", "TARGETED"], [] as [&str; 0]);
        for cohort in &status.cohorts {
            table.row(
                [
                    cohort.model.clone(),
                    cohort.from_version.clone(),
                    cohort.counts.targeted.to_string(),
                ]
                .into_iter()
                .chain(count_cells(&cohort.counts)),
            );
        }
        text.push_str(&table.render("  "));
    }

    if !status.failure_reasons.is_empty() {
        text.push_str("\nFailure reasons:\n");
        let mut table = Table::new(["CODE", "DEVICES"]);
        for reason in &status.failure_reasons {
            table.row([reason.reason.clone(), reason.count.to_string()]);
        }
        text.push_str(&table.render("  "));
    }

    if !status.failed_devices.is_empty() {
        let listed = status.failed_devices.len();
        let total = usize::try_from(counts.failed).unwrap_or(0).max(listed);
        let _ = writeln!(text, "\nFailed devices (latest {listed} of {total}):");
        let mut table = Table::new(["DEVICE", "WAVE", "REASON", "FAILED"]);
        for device in &status.failed_devices {
            table.row([
                device.name.clone(),
                device
                    .wave
                    .map_or_else(|| "-".to_owned(), |w| w.to_string()),
                device.reason.clone(),
                ago(&device.failed_at, now),
            ]);
        }
        text.push_str(&table.render("  "));
    }

    if !status.conditions.is_empty() {
        text.push_str("\nConditions:\n");
        let mut table = Table::new(["TYPE", "STATUS", "REASON", "MESSAGE"]);
        for condition in &status.conditions {
            table.row([
                condition.type_.clone(),
                condition.status.clone(),
                condition.reason.clone(),
                condition.message.clone(),
            ]);
        }
        text.push_str(&table.render("  "));
    }

    if matches!(
        phase,
        FirmwareRolloutPhase::Pending | FirmwareRolloutPhase::AwaitingApproval
    ) {
        text.push('\n');
        match plan {
            Some(plan) => {
                text.push_str(&render_plan(plan, now));
                if spec.awaits_approval_of(&plan.hash) {
                    let _ = writeln!(
                        text,
                        "\nWaiting for approval: kubectl flotilla rollout approve {} -n {}",
                        rollout.name_any(),
                        rollout.namespace().as_deref().unwrap_or("default"),
                    );
                }
            }
            None => text.push_str("Plan: not computed yet\n"),
        }
    }
    text
}

/// The plan: hash, version, wave sizes and estimates, exclusions by reason.
pub fn render_plan(plan: &RolloutPlan, now: Timestamp) -> String {
    let mut text = String::from("Plan:\n");
    line(&mut text, "  Hash", &plan.hash);
    line(&mut text, "  Version", &plan.version);
    line(&mut text, "  Targeted", &plan.targeted.to_string());
    if let Some(computed) = &plan.computed_at {
        line(&mut text, "  Computed", &when(computed, now));
    }
    if let Some(eta) = &plan.estimated_completion_at {
        line(&mut text, "  Finishes", &when(eta, now));
    }
    if !plan.waves.is_empty() {
        text.push_str("  Waves:\n");
        let mut table = Table::new(["WAVE", "DEVICES", "EST. START", "EST. FINISH"]);
        for wave in &plan.waves {
            let estimate = |time: &Option<Time>| {
                time.as_ref()
                    .map_or_else(|| "-".to_owned(), |t| relative(t.0, now))
            };
            table.row([
                wave.number.to_string(),
                wave.devices.to_string(),
                estimate(&wave.estimated_start_at),
                estimate(&wave.estimated_finish_at),
            ]);
        }
        text.push_str(&table.render("    "));
    }
    let excluded = exclusions(&plan.excluded);
    if excluded.is_empty() {
        text.push_str("  Excluded: none\n");
    } else {
        let total: i32 = excluded.iter().map(|(_, _, n)| n).sum();
        let _ = writeln!(text, "  Excluded: {total}");
        let mut table = Table::new(["REASON", "DEVICES", "WHY"]);
        for (reason, why, count) in excluded {
            table.row([reason.to_owned(), count.to_string(), why.to_owned()]);
        }
        text.push_str(&table.render("    "));
    }
    text
}

/// The non-zero exclusions: reason, explanation, count.
fn exclusions(excluded: &Exclusions) -> Vec<(&'static str, &'static str, i32)> {
    [
        (
            "IncompatibleModel",
            "model not in the release's compatibleModels",
            excluded.incompatible_model,
        ),
        (
            "BelowMinimumVersion",
            "running a version below minimumFromVersion",
            excluded.below_minimum_version,
        ),
        (
            "AlreadyOnVersion",
            "already running the release's version",
            excluded.already_on_version,
        ),
        (
            "Offline",
            "offline, with offlinePolicy: Skip",
            excluded.offline,
        ),
        (
            "HeldByAnotherRollout",
            "held by another rollout",
            excluded.held_by_another_rollout,
        ),
        (
            "UnknownVersion",
            "reports no semantic version",
            excluded.unknown_version,
        ),
    ]
    .into_iter()
    .filter(|(_, _, count)| *count > 0)
    .collect()
}

fn line(text: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    let _ = writeln!(text, "{label:<LABEL_WIDTH$}{value}");
}

/// The headers of a table whose middle columns are a [`DeviceCounts`] without `targeted`.
fn counts_table<const B: usize, const A: usize>(before: [&str; B], after: [&str; A]) -> Table {
    Table::new(
        before
            .into_iter()
            .chain(["SUCCEEDED", "FAILED", "UPDATING", "PENDING", "SKIPPED"])
            .chain(after),
    )
}

fn count_cells(counts: &DeviceCounts) -> [String; 5] {
    [
        counts.succeeded,
        counts.failed,
        counts.updating,
        counts.pending,
        counts.skipped,
    ]
    .map(|n| n.to_string())
}

/// `[#########---------]  45%  90 of 200 finished`: finished is succeeded, failed or skipped.
fn progress(counts: &DeviceCounts) -> String {
    let finished = counts.succeeded + counts.failed + counts.skipped;
    let targeted = counts.targeted.max(0);
    let share = if targeted == 0 {
        0.0
    } else {
        f64::from(finished.clamp(0, targeted)) / f64::from(targeted)
    };
    let filled = ((share * BAR_WIDTH as f64).floor() as usize).min(BAR_WIDTH);
    format!(
        "[{}{}] {:>3}%  {finished} of {targeted} finished",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        (share * 100.0).floor() as u32,
    )
}

/// Argo-style phase symbols: at a glance, moving, held, done or broken.
fn symbol(phase: FirmwareRolloutPhase) -> &'static str {
    match phase {
        FirmwareRolloutPhase::Pending | FirmwareRolloutPhase::AwaitingApproval => "◷",
        FirmwareRolloutPhase::Progressing | FirmwareRolloutPhase::RollingBack => "◌",
        FirmwareRolloutPhase::Paused | FirmwareRolloutPhase::WaitingForWindow => "॥",
        FirmwareRolloutPhase::Succeeded => "✔",
        FirmwareRolloutPhase::Failed
        | FirmwareRolloutPhase::RolledBack
        | FirmwareRolloutPhase::Aborted => "✖",
    }
}

/// The Ready condition's message when Ready is not True: why the rollout is where it is.
fn ready_message(conditions: &[flotilla_crds::Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|c| c.type_ == flotilla_crds::condition::types::READY && c.status != "True")
        .map(|c| c.message.as_str())
        .filter(|m| !m.is_empty())
}

/// `2030-01-01T09:00:00Z (5m ago)` or `(in 30s)`.
fn when(time: &Time, now: Timestamp) -> String {
    let seconds = Timestamp::from_second(time.0.as_second()).unwrap_or(time.0);
    format!("{seconds} ({})", relative(time.0, now))
}

/// `5m ago`, `in 30s`, `now`.
fn relative(time: Timestamp, now: Timestamp) -> String {
    let seconds = time.as_second() - now.as_second();
    match seconds {
        0 => "now".to_owned(),
        s if s > 0 => format!("in {}", span(s)),
        s => format!("{} ago", span(-s)),
    }
}

/// `-` or how long ago.
fn ago(time: &Option<Time>, now: Timestamp) -> String {
    time.as_ref()
        .map_or_else(|| "-".to_owned(), |t| relative(t.0, now))
}

/// A length of time as kubectl prints ages: `45s`, `5m30s`, `3h5m`, `2d4h`.
fn span(seconds: i64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2030-01-01T10:00:00Z".parse().unwrap()
    }

    fn rollout(status: serde_json::Value) -> FirmwareRollout {
        serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
            "metadata": {"name": "spring-update", "namespace": "fleet"},
            "spec": {
                "release": "sensor-fw-1-1-0",
                "selector": {"matchLabels": {"ring": "all"}},
                "waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                "approval": {"required": true},
            },
            "status": status,
        }))
        .unwrap()
    }

    fn counts(t: i32, s: i32, f: i32, u: i32, p: i32, k: i32) -> serde_json::Value {
        json!({"targeted": t, "succeeded": s, "failed": f, "updating": u, "pending": p, "skipped": k})
    }

    fn progressing() -> FirmwareRollout {
        rollout(json!({
            "phase": "Progressing",
            "currentWave": 2,
            "counts": counts(200, 70, 6, 20, 104, 0),
            "waves": [
                {"number": 1, "counts": counts(20, 19, 1, 0, 0, 0),
                 "startedAt": "2030-01-01T09:00:00Z", "completedAt": "2030-01-01T09:20:00Z"},
                {"number": 2, "counts": counts(80, 51, 5, 20, 4, 0), "startedAt": "2030-01-01T09:50:30Z"},
                {"number": 3, "counts": counts(100, 0, 0, 0, 100, 0)},
            ],
            "cohorts": [
                {"model": "sensor-v2", "fromVersion": "1.0.0", "counts": counts(100, 40, 5, 10, 45, 0)},
                {"model": "gateway-v1", "fromVersion": "1.0.0", "counts": counts(100, 30, 1, 10, 59, 0)},
            ],
            "failureReasons": [{"reason": "1001", "count": 5}, {"reason": "Timeout", "count": 1}],
            "failedDevices": [
                {"name": "sim-0007", "reason": "1001", "wave": 1, "failedAt": "2030-01-01T09:10:00Z"},
                {"name": "sim-0042", "reason": "Timeout", "wave": 2, "failedAt": "2030-01-01T09:59:00Z"},
            ],
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Progressing",
                 "message": "wave 2 of 3: 56 of 80 devices finished", "lastTransitionTime": "2030-01-01T09:00:00Z"},
                {"type": "FailureThresholdExceeded", "status": "False", "reason": "BelowThreshold",
                 "message": "6 of 76 finished failed (7%)", "lastTransitionTime": "2030-01-01T09:00:00Z"},
            ],
            "startedAt": "2030-01-01T09:00:00Z",
            "nextWaveAt": "2030-01-01T10:00:30Z",
            "plan": {"hash": "a".repeat(64), "version": "1.1.0", "targeted": 200,
                     "waves": [{"number": 1, "devices": 20}, {"number": 2, "devices": 80}, {"number": 3, "devices": 100}],
                     "estimatedCompletionAt": "2030-01-01T11:05:00Z"},
        }))
    }

    #[test]
    fn a_progressing_rollout_shows_every_section() {
        let text = render(&progressing(), now());
        let expected_head = "\
Name:          spring-update
Namespace:     fleet
Release:       sensor-fw-1-1-0 (version 1.1.0)
Phase:         ◌ Progressing
Message:       wave 2 of 3: 56 of 80 devices finished
Wave:          2 of 3
Started:       2030-01-01T09:00:00Z (1h ago)
Next wave:     2030-01-01T10:00:30Z (in 30s)
ETA:           2030-01-01T11:05:00Z (in 1h5m)

Devices:       [###########-------------------]  38%  76 of 200 finished
  Targeted:    200
  Succeeded:   70
  Failed:      6
  Updating:    20
  Pending:     104
  Skipped:     0

Waves:
  WAVE  DEVICES  SUCCEEDED  FAILED  UPDATING  PENDING  SKIPPED  STARTED    COMPLETED
  1     20       19         1       0         0        0        1h ago     40m ago
  2 *   80       51         5       20        4        0        9m30s ago  -
  3     100      0          0       0         100      0        -          -

Cohorts (model × version updated from):
  MODEL       FROM   TARGETED  SUCCEEDED  FAILED  UPDATING  PENDING  SKIPPED
  sensor-v2   1.0.0  100       40         5       10        45       0
  gateway-v1  1.0.0  100       30         1       10        59       0

Failure reasons:
  CODE     DEVICES
  1001     5
  Timeout  1

Failed devices (latest 2 of 6):
  DEVICE    WAVE  REASON   FAILED
  sim-0007  1     1001     50m ago
  sim-0042  2     Timeout  1m ago

Conditions:
  TYPE                      STATUS  REASON          MESSAGE
  Ready                     False   Progressing     wave 2 of 3: 56 of 80 devices finished
  FailureThresholdExceeded  False   BelowThreshold  6 of 76 finished failed (7%)
";
        assert_eq!(text, expected_head);
        assert!(!text.contains("Plan:"), "a started rollout hides its plan");
    }

    #[test]
    fn a_rollout_awaiting_approval_shows_its_plan() {
        let rollout = rollout(json!({
            "phase": "AwaitingApproval",
            "currentWave": 0,
            "counts": counts(190, 0, 0, 0, 190, 0),
            "conditions": [{"type": "Approved", "status": "False", "reason": "AwaitingApproval",
                            "message": "approve plan aaaa", "lastTransitionTime": "2030-01-01T09:00:00Z"}],
            "plan": {"hash": "a".repeat(64), "version": "1.1.0", "targeted": 190,
                     "waves": [{"number": 1, "devices": 19, "estimatedStartAt": "2030-01-01T10:00:00Z",
                                "estimatedFinishAt": "2030-01-01T10:05:00Z"},
                               {"number": 2, "devices": 76}, {"number": 3, "devices": 95}],
                     "excluded": {"incompatibleModel": 3, "alreadyOnVersion": 5, "offline": 2},
                     "computedAt": "2030-01-01T09:59:00Z"},
        }));
        let text = render(&rollout, now());
        assert!(
            text.contains("Phase:         ◷ AwaitingApproval\n"),
            "{text}"
        );
        assert!(text.contains("Wave:          0 of 3\n"), "{text}");
        let plan = format!(
            "\
Plan:
  Hash:        {hash}
  Version:     1.1.0
  Targeted:    190
  Computed:    2030-01-01T09:59:00Z (1m ago)
  Waves:
    WAVE  DEVICES  EST. START  EST. FINISH
    1     19       now         in 5m
    2     76       -           -
    3     95       -           -
  Excluded: 10
    REASON             DEVICES  WHY
    IncompatibleModel  3        model not in the release's compatibleModels
    AlreadyOnVersion   5        already running the release's version
    Offline            2        offline, with offlinePolicy: Skip

Waiting for approval: kubectl flotilla rollout approve spring-update -n fleet
",
            hash = "a".repeat(64)
        );
        assert!(text.ends_with(&plan), "{text}");
    }

    #[test]
    fn a_pending_rollout_without_a_plan_says_so() {
        let text = render(&rollout(json!({})), now());
        assert!(text.contains("Phase:         ◷ Pending\n"), "{text}");
        assert!(text.ends_with("\nPlan: not computed yet\n"), "{text}");
        assert!(text.contains("[------------------------------]   0%  0 of 0 finished"));
    }

    #[test]
    fn a_finished_rollout_shows_when_and_no_eta() {
        let mut rollout = progressing();
        let status = rollout.status.as_mut().unwrap();
        status.phase = Some(FirmwareRolloutPhase::Succeeded);
        status.completed_at = Some(Time("2030-01-01T09:58:00Z".parse().unwrap()));
        status.counts = Some(DeviceCounts {
            targeted: 200,
            succeeded: 194,
            failed: 6,
            ..DeviceCounts::default()
        });
        rollout.spec.paused = true;
        let text = render(&rollout, now());
        assert!(text.contains("Phase:         ✔ Succeeded\n"));
        assert!(text.contains("Completed:     2030-01-01T09:58:00Z (2m ago)\n"));
        assert!(text.contains("[##############################] 100%  200 of 200 finished"));
        assert!(!text.contains("Next wave:") && !text.contains("ETA:"));
        assert!(
            !text.contains("Paused:"),
            "a finished rollout is not paused"
        );
        assert!(
            text.contains("\n  2     80 "),
            "no current-wave marker: {text}"
        );
    }

    #[test]
    fn pause_and_abort_requests_show_while_live() {
        let mut rollout = progressing();
        let status = rollout.status.as_mut().unwrap();
        status.phase = Some(FirmwareRolloutPhase::Paused);
        assert!(
            !render(&rollout, now()).contains("Paused:"),
            "a timed pause shows its next wave"
        );
        rollout.status.as_mut().unwrap().next_wave_at = None;
        assert!(render(&rollout, now()).contains(
            "Paused:        until resumed: kubectl flotilla rollout resume spring-update -n fleet\n"
        ));
        rollout.spec.paused = true;
        assert!(render(&rollout, now()).contains("Paused:        by spec.paused"));
        rollout.spec.abort = true;
        let text = render(&rollout, now());
        assert!(text.contains("Abort:         requested (spec.abort)"));
        assert!(!text.contains("Paused:"));
    }

    #[test]
    fn terminal_phases_end_a_watch() {
        let mut rollout = progressing();
        assert_eq!(finished(&rollout), None);
        for (phase, outcome) in [
            (FirmwareRolloutPhase::Succeeded, Some(Outcome::Done)),
            (FirmwareRolloutPhase::Failed, Some(Outcome::Unsuccessful)),
            (FirmwareRolloutPhase::Aborted, Some(Outcome::Unsuccessful)),
            (
                FirmwareRolloutPhase::RolledBack,
                Some(Outcome::Unsuccessful),
            ),
            (FirmwareRolloutPhase::RollingBack, None),
            (FirmwareRolloutPhase::Paused, None),
        ] {
            rollout.status.as_mut().unwrap().phase = Some(phase);
            assert_eq!(finished(&rollout), outcome, "{phase:?}");
        }
    }

    #[test]
    fn a_watch_prints_changes_only_and_redraws_a_terminal() {
        let mut out = Vec::new();
        let mut printer = Printer {
            options: StatusOptions {
                watch: true,
                clear_screen: false,
            },
            last: None,
            out: &mut out,
        };
        let mut rollout = rollout(json!({"phase": "Pending"}));
        printer.print(&rollout).unwrap();
        printer.print(&rollout).unwrap();
        rollout.status.as_mut().unwrap().phase = Some(FirmwareRolloutPhase::Progressing);
        printer.print(&rollout).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Name:").count(), 2, "{text}");
        assert!(
            text.contains("\n\nName:          spring-update\n"),
            "appended after a blank line"
        );

        let mut out = Vec::new();
        let mut printer = Printer {
            options: StatusOptions {
                watch: true,
                clear_screen: true,
            },
            last: None,
            out: &mut out,
        };
        printer.print(&rollout).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("\x1b[H\x1b[2JName:")
        );
    }

    #[test]
    fn spans_read_like_kubectl_ages() {
        assert_eq!(span(45), "45s");
        assert_eq!(span(300), "5m");
        assert_eq!(span(330), "5m30s");
        assert_eq!(span(3600), "1h");
        assert_eq!(span(3900), "1h5m");
        assert_eq!(span(86_400 * 2 + 3600 * 4 + 5), "2d4h");
        assert_eq!(span(86_400), "1d");
    }
}
