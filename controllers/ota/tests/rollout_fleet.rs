//! The FirmwareRollout controller through the real `Controller`, against the sandbox, with the
//! real device gateway and a simulated fleet talking DDI over HTTP: nothing writes Device
//! status but the gateway.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::fleet::{LONG, current, release, start};
use flotilla_crds::condition::types;
use flotilla_crds::{Device, FirmwareRelease, FirmwareRollout, FirmwareRolloutPhase};
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::{FaultRule, Verb};
use flotilla_simulator::{FleetSpec, ModelRate};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::ListParams;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_moves_every_device_through_its_waves() {
    let mut fleet = start().await;
    fleet.simulate(20, FleetSpec::default()).await;
    fleet.rollout("spring", json!({})).await;
    let most_updating = AtomicU32::new(0);
    let done = fleet
        .until_phase("spring", FirmwareRolloutPhase::Succeeded, &most_updating)
        .await;
    let status = done.status.unwrap();
    let counts = status.counts.unwrap();
    assert_eq!(
        (counts.targeted, counts.succeeded, counts.failed),
        (20, 20, 0),
        "plan: {:?}",
        status.plan
    );
    // Waves of ⌈10%⌉, ⌈50%⌉ − 2 and the rest.
    let sizes: Vec<i32> = status.waves.iter().map(|w| w.counts.targeted).collect();
    assert_eq!(sizes, [2, 8, 10]);
    assert!(status.waves.iter().all(|w| w.completed_at.is_some()));
    assert!(status.started_at.is_some() && status.completed_at.is_some());
    assert!(
        most_updating.load(Ordering::Relaxed) <= 4,
        "never above maxInFlight"
    );
    let plan = status.plan.unwrap();
    assert_eq!(plan.targeted, 20);
    for device in fleet.devices().await {
        assert_eq!(current(&device), Some("2.0.0"));
        let firmware = device.spec.firmware.as_ref().unwrap();
        assert_eq!(firmware.rollout.as_deref(), Some("spring"));
        assert_eq!(firmware.previous.as_ref().unwrap().version, "1.0.0");
        assert_eq!(
            firmware.previous.as_ref().unwrap().release.as_deref(),
            Some("fw-1-0-0")
        );
        assert_eq!(
            device
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get("flotilla.dev/rollout")
                .map(String::as_str),
            Some("spring")
        );
    }
    // One write per device: the assignment (patch), nothing else from the operator.
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 20);
    let shards = fleet
        .harness
        .api::<ConfigMap>()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(shards.items.len(), 1, "20 targets fit in one shard");
    // Events follow the status write that changed the phase.
    let harness = &fleet.harness;
    wait_for("Started and Completed Events", LONG, || async {
        let events = harness.events_about("FirmwareRollout", "spring").await;
        let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).collect();
        (reasons.iter().any(|r| r == "Started") && reasons.iter().any(|r| r == "Completed"))
            .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_model_rolls_the_rollout_back_while_the_fleet_rate_is_fine() {
    let mut fleet = start().await;
    fleet
        .simulate(
            20,
            FleetSpec {
                model_failure_rates: vec![ModelRate {
                    key: "beta".into(),
                    rate: 1.0,
                }],
                ..FleetSpec::default()
            },
        )
        .await;
    fleet
        .rollout(
            "risky",
            json!({
                "waves": [{"percent": 100}],
                "failureThreshold": {"overall": {"percent": 90}, "perCohort": {"count": 2}, "minFinished": 10},
                "onFailure": "Rollback",
            }),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    let done = fleet
        .until_phase("risky", FirmwareRolloutPhase::RolledBack, &most_updating)
        .await;
    let status = done.status.unwrap();
    let crossed = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::FAILURE_THRESHOLD_EXCEEDED)
        .unwrap();
    assert_eq!(crossed.status, "True");
    assert!(
        crossed.message.contains("cohort model=beta"),
        "{}",
        crossed.message
    );
    assert!(status.failure_reasons.iter().any(|r| r.count >= 2));
    // Every device the rollout touched runs 1.0.0 again; untouched ones never left it.
    for device in fleet.devices().await {
        assert_eq!(
            current(&device),
            Some("1.0.0"),
            "{:?}",
            device.metadata.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_running_rollout_releases_its_devices_and_keeps_their_versions() {
    let mut fleet = start().await;
    fleet.simulate(10, FleetSpec::default()).await;
    fleet
        .rollout(
            "held",
            json!({"waves": [{"percent": 10, "pause": {"untilResumed": true}}, {"percent": 100}]}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    fleet
        .until_phase("held", FirmwareRolloutPhase::Paused, &most_updating)
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    api.delete("held", &Default::default()).await.unwrap();
    wait_for("the rollout to go", LONG, || async {
        api.get_opt("held").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    let devices = fleet.devices().await;
    let updated: Vec<_> = devices
        .iter()
        .filter(|d| current(d) == Some("2.0.0"))
        .collect();
    assert_eq!(updated.len(), 1, "the first wave (10% of 10) was updated");
    for device in &devices {
        assert!(
            device.labels_get("flotilla.dev/rollout").is_none(),
            "released: {:?}",
            device.metadata.name
        );
    }
    assert!(
        updated[0]
            .spec
            .firmware
            .as_ref()
            .is_some_and(|f| f.version == "2.0.0")
    );
}

trait Labels {
    fn labels_get(&self, key: &str) -> Option<&str>;
}

impl Labels for Device {
    fn labels_get(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_operator_resumes_from_the_shards_without_assigning_anyone_twice() {
    let mut fleet = start().await;
    fleet
        .simulate(
            30,
            FleetSpec {
                update_duration: Duration::from_millis(1500),
                ..FleetSpec::default()
            },
        )
        .await;
    fleet
        .rollout(
            "steady",
            // Wait: a first report the operator's watch has not delivered yet when the plan
            // is fixed is waited for, not left out (CI saw 29 of 30 targeted).
            json!({"waves": [{"percent": 20}, {"percent": 100}], "maxInFlight": 3,
                   "offlinePolicy": "Wait"}),
        )
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    wait_for("some devices assigned", LONG, || async {
        let rollout = api.get("steady").await.ok()?;
        let counts = rollout.status?.counts?;
        (counts.updating > 0).then_some(())
    })
    .await
    .unwrap();
    fleet.harness.restart().await;
    let most_updating = AtomicU32::new(0);
    let done = fleet
        .until_phase("steady", FirmwareRolloutPhase::Succeeded, &most_updating)
        .await;
    let counts = done.status.unwrap().counts.unwrap();
    assert_eq!((counts.targeted, counts.succeeded), (30, 30));
    assert!(most_updating.load(Ordering::Relaxed) <= 3);
    // Exactly one assignment per device across both operators.
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_pause_and_resume_are_decided_in_spec() {
    let mut fleet = start().await;
    fleet.simulate(10, FleetSpec::default()).await;
    fleet
        .rollout(
            "gated",
            json!({"approval": {"required": true},
                   "waves": [{"percent": 10, "pause": {"untilResumed": true}}, {"percent": 100}]}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    let waiting = fleet
        .until_phase(
            "gated",
            FirmwareRolloutPhase::AwaitingApproval,
            &most_updating,
        )
        .await;
    let hash = waiting.status.unwrap().plan.unwrap().hash;
    let api = fleet.harness.api::<FirmwareRollout>();
    let patch = |spec: serde_json::Value| {
        let api = api.clone();
        async move {
            api.patch(
                "gated",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": spec})),
            )
            .await
            .unwrap();
        }
    };
    // A wrong hash is refused with a condition saying so; nothing is assigned.
    patch(json!({"approvedPlanHash": "0".repeat(64)})).await;
    wait_for("the mismatch condition", LONG, || async {
        let rollout = api.get("gated").await.ok()?;
        rollout
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == types::APPROVED && c.reason == "PlanHashMismatch")
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
    patch(json!({"approvedPlanHash": hash})).await;
    fleet
        .until_phase("gated", FirmwareRolloutPhase::Paused, &most_updating)
        .await;
    assert_eq!(
        fleet.harness.succeeded(Verb::Patch, "devices"),
        1,
        "wave 1 only"
    );
    patch(json!({"resume": "go"})).await;
    fleet
        .until_phase("gated", FirmwareRolloutPhase::Succeeded, &most_updating)
        .await;
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_of_an_unknown_release_waits_and_says_why() {
    let mut fleet = start().await;
    fleet.simulate(4, FleetSpec::default()).await;
    fleet
        .rollout("orphan", json!({"release": "no-such-release"}))
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    let condition = wait_for("the ReleaseReady condition", LONG, || async {
        let rollout = api.get("orphan").await.ok()?;
        rollout
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == types::RELEASE_READY && c.status == "False")
    })
    .await
    .unwrap();
    assert!(
        condition.message.contains("no-such-release not found"),
        "{}",
        condition.message
    );
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_converges_through_api_faults_and_cut_watches() {
    let mut fleet = start().await;
    fleet.simulate(12, FleetSpec::default()).await;
    let faults = fleet.harness.sandbox().faults();
    // 500s are not retried by kube's client: the controller's own backoff must carry them.
    faults.inject(FaultRule::new(Verb::Patch, "devices").status(500).times(3));
    faults.inject(
        FaultRule::new(Verb::Patch, "configmaps")
            .status(500)
            .times(1),
    );
    faults.inject(
        FaultRule::new(Verb::Patch, "firmwarerollouts")
            .subresource("status")
            .status(409)
            .times(2),
    );
    fleet
        .rollout(
            "bumpy",
            json!({"waves": [{"percent": 25}, {"percent": 100}], "maxInFlight": 3}),
        )
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    wait_for("the first assignments", LONG, || async {
        let counts = api.get("bumpy").await.ok()?.status?.counts?;
        (counts.updating + counts.succeeded > 0).then_some(())
    })
    .await
    .unwrap();
    fleet.harness.sandbox().faults().cut_watches();
    let most_updating = AtomicU32::new(0);
    let done = fleet
        .until_phase("bumpy", FirmwareRolloutPhase::Succeeded, &most_updating)
        .await;
    let status = done.status.unwrap();
    let counts = status.counts.unwrap();
    assert_eq!(
        (counts.targeted, counts.succeeded, counts.failed),
        (12, 12, 0),
        "{:?}",
        status.plan
    );
    assert!(most_updating.load(Ordering::Relaxed) <= 3);
    assert_eq!(
        fleet.harness.sandbox().faults().pending(),
        0,
        "every fault fired"
    );
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_rollout_over_held_devices_waits_and_names_the_holder() {
    let mut fleet = start().await;
    fleet.simulate(6, FleetSpec::default()).await;
    fleet
        .rollout(
            "first",
            json!({"waves": [{"percent": 20, "pause": {"untilResumed": true}}, {"percent": 100}]}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    fleet
        .until_phase("first", FirmwareRolloutPhase::Paused, &most_updating)
        .await;
    fleet.rollout("second", json!({})).await;
    let api = fleet.harness.api::<FirmwareRollout>();
    let contended = wait_for("the DevicesContended condition", LONG, || async {
        let status = api.get("second").await.ok()?.status?;
        let condition = status
            .conditions
            .into_iter()
            .find(|c| c.type_ == types::DEVICES_CONTENDED && c.status == "True")?;
        (status.phase == Some(FirmwareRolloutPhase::Pending)).then_some(condition)
    })
    .await
    .unwrap();
    assert!(contended.message.contains("first"), "{}", contended.message);
    let before = fleet.harness.succeeded(Verb::Patch, "devices");
    api.patch(
        "first",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"resume": "go"}})),
    )
    .await
    .unwrap();
    fleet
        .until_phase("first", FirmwareRolloutPhase::Succeeded, &most_updating)
        .await;
    // Once the holder is done, the second plans over devices already on the version.
    let second = fleet
        .until_phase("second", FirmwareRolloutPhase::Succeeded, &most_updating)
        .await;
    let plan = second.status.unwrap().plan.unwrap();
    assert_eq!((plan.targeted, plan.excluded.already_on_version), (0, 6));
    // One assignment per device, all by the first rollout.
    assert!(before >= 1);
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_that_never_finish_time_out_and_the_threshold_pauses() {
    let mut fleet = start().await;
    fleet
        .simulate(
            6,
            FleetSpec {
                slow_share: 1.0,
                slow_factor: 100.0,
                ..FleetSpec::default()
            },
        )
        .await;
    fleet
        .rollout(
            "slow",
            json!({"deviceTimeout": "2s", "waves": [{"percent": 100}], "maxInFlight": 2,
                   "failureThreshold": {"overall": {"count": 2}}, "onFailure": "Pause"}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    let paused = fleet
        .until_phase("slow", FirmwareRolloutPhase::Paused, &most_updating)
        .await;
    let status = paused.status.unwrap();
    assert_eq!(status.failure_reasons[0].reason, "Timeout");
    assert!(status.failure_reasons[0].count >= 2);
    assert!(status.failed_devices.iter().all(|d| d.reason == "Timeout"));
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::PROGRESSING)
        .unwrap();
    assert!(
        progressing.message.contains("failure threshold"),
        "{}",
        progressing.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_that_starts_matching_joins_the_last_wave() {
    let mut fleet = start().await;
    fleet.simulate(6, FleetSpec::default()).await;
    fleet
        .rollout(
            "growing",
            json!({"includeNewDevices": true,
                   "waves": [{"percent": 20, "pause": {"untilResumed": true}}, {"percent": 100}]}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    fleet
        .until_phase("growing", FirmwareRolloutPhase::Paused, &most_updating)
        .await;
    // A device created later, already reporting 1.0.0.
    fleet
        .harness
        .create::<Device>(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": "late", "labels": {"flotilla.dev/simulated": "sim"}},
            "spec": {"model": "alpha"},
        }))
        .await;
    fleet
        .harness
        .write_status::<Device>(
            "late",
            json!({"currentVersion": "1.0.0", "lastSeen": jiff::Timestamp::now().to_string()}),
        )
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    let status = wait_for("the late device to join", LONG, || async {
        let status = api.get("growing").await.ok()?.status?;
        (status.counts.as_ref()?.targeted == 7).then_some(status)
    })
    .await
    .unwrap();
    // ⌈20% of 6⌉ = 2 in the first wave; the other 4 and the newcomer in the last.
    assert_eq!(
        status.waves.last().unwrap().counts.targeted,
        5,
        "joined the last wave"
    );
    assert_eq!(
        status.plan.unwrap().targeted,
        6,
        "the plan stays as it was fixed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rollouts_are_refused_or_marked_invalid_and_assign_nothing() {
    let mut fleet = start().await;
    fleet.simulate(2, FleetSpec::default()).await;
    // What the schema can say is refused at apply time, with the field named.
    let rollouts = fleet.harness.api::<FirmwareRollout>();
    for (name, spec, field) in [
        ("zero", json!({"maxInFlight": 0}), "maxInFlight"),
        (
            "short",
            json!({"waves": [{"percent": 10}, {"percent": 50}]}),
            "spec.waves",
        ),
    ] {
        let mut full = json!({"release": "fw-2-0-0", "selector": {"matchLabels": {"a": "b"}}});
        full.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        let object: FirmwareRollout = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
            "metadata": {"name": name}, "spec": full,
        }))
        .unwrap();
        let refused = rollouts
            .create(&Default::default(), &object)
            .await
            .expect_err("refused");
        assert!(refused.to_string().contains(field), "{refused}");
    }
    // What only the controller can judge gets Ready=False InvalidSpec and an Event.
    for (name, spec) in [(
        "nowhere",
        json!({"maintenanceWindow": {"start": "22:00", "end": "04:00", "timeZone": "Mars/Olympus_Mons"}}),
    )] {
        fleet.rollout(name, spec).await;
        let condition = wait_for(format!("{name} marked invalid"), LONG, || async {
            let status = rollouts.get(name).await.ok()?.status?;
            status
                .conditions
                .into_iter()
                .find(|c| c.type_ == types::READY && c.reason == "InvalidSpec")
        })
        .await
        .unwrap();
        assert!(condition.message.contains("spec."), "{}", condition.message);
        // The Event is published after the status write that set the condition.
        let harness = &fleet.harness;
        wait_for(format!("{name} InvalidSpec Event"), LONG, || async {
            let events = harness.events_about("FirmwareRollout", name).await;
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some("InvalidSpec"))
                .then_some(())
        })
        .await
        .unwrap();
    }
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outside_the_maintenance_window_nothing_is_assigned() {
    let mut fleet = start().await;
    fleet.simulate(4, FleetSpec::default()).await;
    // A one-hour window starting two hours from now (UTC), every day: closed now.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let start = now
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    let end = start
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let window = json!({
        "start": start.strftime("%H:%M").to_string(),
        "end": end.strftime("%H:%M").to_string(),
        "timeZone": "UTC",
    });
    fleet
        .rollout("nightly", json!({"maintenanceWindow": window}))
        .await;
    let most_updating = AtomicU32::new(0);
    let waiting = fleet
        .until_phase(
            "nightly",
            FirmwareRolloutPhase::WaitingForWindow,
            &most_updating,
        )
        .await;
    let status = waiting.status.unwrap();
    let window = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::IN_MAINTENANCE_WINDOW)
        .unwrap();
    assert_eq!(
        (window.status.as_str(), window.reason.as_str()),
        ("False", "OutsideMaintenanceWindow")
    );
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
    // The plan's timeline starts with the window.
    let first = status.plan.unwrap().waves[0]
        .estimated_start_at
        .clone()
        .unwrap();
    assert!(
        first.0
            >= start
                .timestamp()
                .checked_sub(jiff::SignedDuration::from_secs(60))
                .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crossed_threshold_with_on_failure_abort_stops_at_once() {
    let mut fleet = start().await;
    fleet
        .simulate(
            10,
            FleetSpec {
                model_failure_rates: vec![ModelRate {
                    key: "beta".into(),
                    rate: 1.0,
                }],
                ..FleetSpec::default()
            },
        )
        .await;
    fleet
        .rollout(
            "abortive",
            json!({"waves": [{"percent": 100}], "maxInFlight": 2,
                   "failureThreshold": {"overall": {"count": 1}}, "onFailure": "Abort"}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    let aborted = fleet
        .until_phase("abortive", FirmwareRolloutPhase::Aborted, &most_updating)
        .await;
    let status = aborted.status.unwrap();
    let progressing = status
        .conditions
        .iter()
        .find(|c| c.type_ == types::PROGRESSING)
        .unwrap();
    assert!(
        progressing
            .message
            .contains("aborted by the failure threshold"),
        "{}",
        progressing.message
    );
    let assigned = fleet.harness.succeeded(Verb::Patch, "devices");
    assert!(
        assigned < 10,
        "stopped before assigning everyone ({assigned})"
    );
    // Nothing more is assigned once aborted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), assigned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_config_map_in_the_way_of_a_shard_is_left_alone() {
    let mut fleet = start().await;
    fleet.simulate(2, FleetSpec::default()).await;
    fleet
        .harness
        .create::<ConfigMap>(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "taken-targets-0"}, "data": {"mine": "yes"},
        }))
        .await;
    fleet.rollout("taken", json!({})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let config_map = fleet
        .harness
        .api::<ConfigMap>()
        .get("taken-targets-0")
        .await
        .unwrap();
    assert_eq!(
        config_map.data.unwrap().get("mine").map(String::as_str),
        Some("yes")
    );
    assert!(config_map.metadata.owner_references.is_none());
    let rollout = fleet
        .harness
        .api::<FirmwareRollout>()
        .get("taken")
        .await
        .unwrap();
    let phase = rollout.status.and_then(|s| s.phase).unwrap_or_default();
    assert_eq!(phase, FirmwareRolloutPhase::Pending, "never started");
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
}

/// `config/rbac/` carries exactly what the OTA controllers use: every request the operator
/// sent is granted (checked by every test), and every verb granted on an OTA resource is sent
/// by some path of this scenario — finalizer guards failing (get), a shard left by a start that
/// did not finish (get, then patch), a restart reading the shards back, a deletion releasing
/// devices (list by label).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_role_grants_exactly_what_the_ota_controllers_use() {
    let mut fleet = start().await;
    fleet.simulate(6, FleetSpec::default()).await;
    // The finalizer's guarded patch fails its test (a stale finalizer list): 422.
    fleet
        .harness
        .sandbox()
        .faults()
        .inject(FaultRule::new(Verb::Patch, "firmwarerollouts").status(422));
    let created = fleet
        .rollout(
            "scoped",
            json!({"approval": {"required": true},
                   "waves": [{"percent": 50, "pause": {"untilResumed": true}}, {"percent": 100}]}),
        )
        .await;
    let most_updating = AtomicU32::new(0);
    let waiting = fleet
        .until_phase(
            "scoped",
            FirmwareRolloutPhase::AwaitingApproval,
            &most_updating,
        )
        .await;
    // A shard of this rollout that an earlier start wrote before it could record the start.
    let uid = created.metadata.uid.clone().unwrap();
    fleet
        .harness
        .create::<ConfigMap>(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "scoped-targets-0", "ownerReferences": [{
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
                "name": "scoped", "uid": uid, "controller": true}]},
            "data": {"stale": "yes"},
        }))
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    let hash = waiting.status.unwrap().plan.unwrap().hash;
    api.patch(
        "scoped",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"approvedPlanHash": hash}})),
    )
    .await
    .unwrap();
    fleet
        .until_phase("scoped", FirmwareRolloutPhase::Paused, &most_updating)
        .await;
    fleet.harness.restart().await;
    let shard_reads = || fleet.harness.succeeded(Verb::Get, "configmaps");
    let before = shard_reads();
    wait_for("the shards read back", LONG, || async {
        (shard_reads() > before).then_some(())
    })
    .await
    .unwrap();
    api.delete("scoped", &Default::default()).await.unwrap();
    wait_for("the rollout to go", LONG, || async {
        api.get_opt("scoped").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    // A release whose finalizer patch fails its guard once, then deleted.
    let faults = fleet.harness.sandbox().faults();
    faults.inject(FaultRule::new(Verb::Patch, "firmwarereleases").status(422));
    fleet
        .harness
        .create::<FirmwareRelease>(release("fw-3-0-0", "3.0.0"))
        .await;
    let releases = fleet.harness.api::<FirmwareRelease>();
    wait_for("the finalizer on the new release", LONG, || async {
        let release = releases.get("fw-3-0-0").await.ok()?;
        (!release.finalizers().is_empty()).then_some(())
    })
    .await
    .unwrap();
    releases
        .delete("fw-3-0-0", &Default::default())
        .await
        .unwrap();
    wait_for("the unused release to go", LONG, || async {
        releases
            .get_opt("fw-3-0-0")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(faults.pending(), 0, "every guard failure fired");
    let ota = |group: &str, resource: &str| {
        (group == "flotilla.dev" && (resource.starts_with("firmware") || resource == "devices"))
            || (group.is_empty() && resource == "configmaps")
    };
    let mut report = fleet.harness.rbac_report(ota);
    // The Subscription controller's entitlement watch is what lists and watches ConfigMaps;
    // the Campaign ledger replaces its progress shards (update).
    report.unused.retain(|u| {
        !matches!(
            u.as_str(),
            "list core/configmaps" | "watch core/configmaps" | "update core/configmaps"
        )
    });
    assert!(report.denied.is_empty(), "not granted: {:?}", report.denied);
    assert!(
        report.unused.is_empty(),
        "granted, never used by the OTA controllers: {:?}",
        report.unused
    );
    // Stronger, by the sandbox's RBAC evaluator: each verb of each rule on an OTA resource,
    // taken out of config/rbac alone, would have refused one of these requests.
    let unneeded: Vec<_> = fleet
        .harness
        .rbac_unneeded(ota)
        .into_iter()
        .filter(|g| {
            !matches!(
                g.to_string().as_str(),
                "list core/configmaps" | "watch core/configmaps" | "update core/configmaps"
            )
        })
        .collect();
    assert!(
        unneeded.is_empty(),
        "config/rbac grants the OTA controllers did not need: {unneeded:#?}"
    );
}

/// A rollout waiting for approval shows its plan without rewriting its status each time it is
/// reconciled: only the clock moved, so nothing is written (no churn for GitOps tools).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_rollout_is_not_rewritten_when_only_time_passes() {
    let mut fleet = start().await;
    fleet.simulate(4, FleetSpec::default()).await;
    fleet
        .rollout("waiting", json!({"approval": {"required": true}}))
        .await;
    let most_updating = AtomicU32::new(0);
    fleet
        .until_phase(
            "waiting",
            FirmwareRolloutPhase::AwaitingApproval,
            &most_updating,
        )
        .await;
    fleet.harness.quiet("rollout").await;
    let writes = fleet.harness.served(Verb::Patch, "firmwarerollouts/status");
    let reconciles = || {
        fleet
            .harness
            .metric(r#"flotilla_reconciliations_total{controller="rollout"}"#)
    };
    let before = reconciles();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A change to its release wakes the rollout; nothing it shows depends on the label.
    fleet
        .harness
        .api::<FirmwareRelease>()
        .patch(
            "fw-2-0-0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"team": "fleet"}}})),
        )
        .await
        .unwrap();
    wait_for("a reconcile after the release changed", LONG, || async {
        (reconciles() > before).then_some(())
    })
    .await
    .unwrap();
    fleet.harness.quiet("rollout").await;
    assert_eq!(
        fleet.harness.served(Verb::Patch, "firmwarerollouts/status"),
        writes,
        "the status was rewritten though only time passed"
    );
}
