//! Bad input to the rollout controller: what the schema can say is refused at apply time
//! with the field named; what only the controller can judge gets a `False` condition with a
//! reason and a Warning Event. Either way nothing is assigned. (A wrong `approvedPlanHash` is
//! covered by `rollout_fleet.rs`'s approval test.)

mod common;

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use common::fleet::{Fleet, start};
use flotilla_crds::condition::types;
use flotilla_crds::{Device, FirmwareRelease, FirmwareRollout, FirmwareRolloutPhase};
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::Verb;
use flotilla_simulator::FleetSpec;
use jiff::Timestamp;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

const LONG: Duration = common::fleet::LONG;

fn rollout_json(name: &str, spec: serde_json::Value) -> serde_json::Value {
    let mut base = json!({
        "release": "fw-2-0-0",
        "selector": {"matchLabels": {"flotilla.dev/simulated": "sim"}},
        "waves": [{"percent": 100}],
        "soakTime": "300ms",
        "retries": {"limit": 0, "initialBackoff": "1s", "maxBackoff": "1s"},
    });
    base.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
           "metadata": {"name": name}, "spec": base})
}

/// Creates a rollout from JSON the Rust type may not be able to hold; the API's answer.
async fn create_raw(
    fleet: &Fleet,
    object: serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let resource = ApiResource::erase::<FirmwareRollout>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(fleet.harness.client.clone(), common::NAMESPACE, &resource);
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&Default::default(), &object).await
}

/// Devices the test writes as an installer would: model alpha, labelled like the simulated
/// fleet, reporting `version` (or nothing) and seen just now.
async fn manual_device(fleet: &Fleet, name: &str, version: Option<&str>) {
    fleet
        .harness
        .create::<Device>(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Device",
            "metadata": {"name": name, "labels": {"flotilla.dev/simulated": "sim"}},
            "spec": {"model": "alpha"},
        }))
        .await;
    let mut status = json!({"lastSeen": Timestamp::now().to_string()});
    if let Some(version) = version {
        status["currentVersion"] = version.into();
    }
    fleet.harness.write_status::<Device>(name, status).await;
}

/// Waits for the Warning Event `reason` about rollout `name`; its note.
async fn warning(fleet: &Fleet, name: &str, reason: &str) -> String {
    let harness = &fleet.harness;
    wait_for(format!("{name} {reason} Event"), LONG, || async {
        let events = harness.events_about("FirmwareRollout", name).await;
        events
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason) && e.type_.as_deref() == Some("Warning"))
            .and_then(|e| e.note)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_failing_validation_holds_the_rollout_until_it_is_fixed() {
    let mut fleet = start().await;
    fleet.simulate(2, FleetSpec::default()).await;
    // Valid to the schema, invalid to the release controller: the minimum is above the
    // version itself.
    let mut bad = common::fleet::release("fw-3-0-0", "3.0.0");
    bad["spec"]["minimumFromVersion"] = "4.0.0".into();
    fleet.harness.create::<FirmwareRelease>(bad).await;
    fleet
        .harness
        .create::<FirmwareRollout>(rollout_json("blocked", json!({"release": "fw-3-0-0"})))
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    let condition = wait_for("ReleaseReady=False", LONG, || async {
        let status = api.get("blocked").await.ok()?.status?;
        (status.phase == Some(FirmwareRolloutPhase::Pending)).then_some(())?;
        status
            .conditions
            .into_iter()
            .find(|c| c.type_ == types::RELEASE_READY && c.status == "False")
    })
    .await
    .unwrap();
    assert_eq!(condition.reason, "NotReady");
    assert!(
        condition
            .message
            .contains("FirmwareRelease fw-3-0-0 is not Ready"),
        "{}",
        condition.message
    );
    let note = warning(&fleet, "blocked", "ReleaseNotReady").await;
    assert!(note.contains("fw-3-0-0"), "{note}");
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
    // Fixed, the release becomes Ready and wakes the rollout, which then runs.
    fleet
        .harness
        .api::<FirmwareRelease>()
        .patch(
            "fw-3-0-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minimumFromVersion": null}})),
        )
        .await
        .unwrap();
    let done = fleet
        .until_phase(
            "blocked",
            FirmwareRolloutPhase::Succeeded,
            &AtomicU32::new(0),
        )
        .await;
    assert_eq!(done.status.unwrap().counts.unwrap().succeeded, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_the_schema_can_judge_is_refused_with_the_field_named() {
    let mut fleet = start().await;
    fleet.simulate(2, FleetSpec::default()).await;
    let window = |extra: serde_json::Value| {
        let mut w = json!({"start": "22:00", "end": "04:00", "timeZone": "UTC"});
        w.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"maintenanceWindow": w})
    };
    for (name, spec, field) in [
        // An empty selector would select every Device of the namespace: refused (the
        // selector's documentation says so), never taken as "everything".
        (
            "empty",
            json!({"selector": {}}),
            "selector must not be empty",
        ),
        (
            "empty-labels",
            json!({"selector": {"matchLabels": {}, "matchExpressions": []}}),
            "selector must not be empty",
        ),
        (
            "overall",
            json!({"failureThreshold": {"overall": {"percent": 150}}}),
            "spec.failureThreshold.overall.percent",
        ),
        (
            "per-wave",
            json!({"failureThreshold": {"overall": {"percent": 5}, "perWave": {"percent": 101}}}),
            "spec.failureThreshold.perWave.percent",
        ),
        (
            "per-cohort",
            json!({"failureThreshold": {"overall": {"percent": 5}, "perCohort": {"percent": 1000}}}),
            "spec.failureThreshold.perCohort.percent",
        ),
        (
            "short-end",
            window(json!({"end": "4:00"})),
            "spec.maintenanceWindow.end",
        ),
        (
            "late-end",
            window(json!({"end": "24:00"})),
            "spec.maintenanceWindow.end",
        ),
        (
            "funday",
            window(json!({"days": ["Monday", "Funday"]})),
            "spec.maintenanceWindow.days",
        ),
        (
            "twice-monday",
            window(json!({"days": ["Monday", "Monday"]})),
            "spec.maintenanceWindow.days",
        ),
        (
            "instant",
            window(json!({"start": "04:00", "end": "04:00"})),
            "must not start and end at the same time",
        ),
    ] {
        let refused = create_raw(&fleet, rollout_json(name, spec))
            .await
            .expect_err(name);
        let message = refused.to_string();
        assert!(message.contains(field), "{name}: {message}");
    }
    assert!(
        fleet
            .harness
            .api::<FirmwareRollout>()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_on_unknown_versions_are_left_out_and_a_wrong_version_never_succeeds() {
    let fleet = start().await;
    // Planned out: no version reported, or one that is not a semantic version (the rollout
    // could neither check minimumFromVersion nor roll back to it).
    manual_device(&fleet, "silent", None).await;
    manual_device(&fleet, "garbled", Some("v1-final")).await;
    manual_device(&fleet, "liar", Some("1.0.0")).await;
    // The plan reads the operator's Device watch, which may trail the writes above; fw-1-0-0
    // counting liar (written last; the watch delivers in order) shows it has them all.
    let releases = fleet.harness.api::<FirmwareRelease>();
    wait_for("the operator to count liar on 1.0.0", LONG, || async {
        let status = releases.get("fw-1-0-0").await.ok()?.status?;
        (status.devices == 1).then_some(())
    })
    .await
    .unwrap();
    fleet
        .harness
        .create::<FirmwareRollout>(rollout_json(
            "picky",
            json!({"deviceTimeout": "2s",
                   "failureThreshold": {"overall": {"count": 5}}}),
        ))
        .await;
    let api = fleet.harness.api::<FirmwareRollout>();
    let started = wait_for("picky to assign liar", LONG, || async {
        let status = api.get("picky").await.ok()?.status?;
        (status.counts.as_ref()?.updating == 1).then_some(status)
    })
    .await
    .unwrap();
    let plan = started.plan.unwrap();
    assert_eq!((plan.targeted, plan.excluded.unknown_version), (1, 2));
    let devices = fleet.harness.api::<Device>();
    for name in ["silent", "garbled"] {
        let device = devices.get(name).await.unwrap();
        assert!(device.spec.firmware.is_none(), "{name} assigned");
    }
    // The device says its update succeeded, yet reports running another version than the
    // release's — as a device that booted back into its old image would. The gateway cannot
    // produce this (a success there sets currentVersion to the assigned version), so the
    // report is written as a gateway would write it.
    let firmware = devices.get("liar").await.unwrap().spec.firmware.unwrap();
    let now = Timestamp::now().to_string();
    fleet
        .harness
        .write_status::<Device>(
            "liar",
            json!({"currentVersion": "2.0.1", "lastSeen": now,
                   "update": {"state": "Succeeded", "actionId": firmware.action_id,
                              "targetVersion": "2.0.0", "attempt": 1,
                              "startedAt": now, "finishedAt": now}}),
        )
        .await;
    let status = wait_for("liar to time out", LONG, || async {
        let status = api.get("picky").await.ok()?.status?;
        (status.counts.as_ref()?.failed == 1).then_some(status)
    })
    .await
    .unwrap();
    let counts = status.counts.unwrap();
    assert_eq!((counts.succeeded, counts.failed), (0, 1), "{counts:?}");
    assert_eq!(status.failed_devices[0].name, "liar");
    assert_eq!(status.failed_devices[0].reason, "Timeout");
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 1);
}
