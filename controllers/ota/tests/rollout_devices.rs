//! What devices do to a rollout, through the real gateway: offline devices under
//! `offlinePolicy: Wait`, reboot loops during the soak, and a failed attempt retried after its
//! backoff.

mod common;

use std::sync::atomic::AtomicU32;

use common::NAMESPACE;
use common::fleet::{Fleet, LONG, start};
use flotilla_crds::device::UpdateState;
use flotilla_crds::{Device, FirmwareRollout, FirmwareRolloutPhase};
use flotilla_runtime::testing::wait_for;
use flotilla_sandbox::Verb;
use flotilla_simulator::FleetSpec;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

async fn status_of(fleet: &Fleet, name: &str) -> Option<flotilla_crds::FirmwareRolloutStatus> {
    fleet
        .harness
        .api::<FirmwareRollout>()
        .get(name)
        .await
        .ok()?
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_devices_under_wait_are_assigned_when_they_come_back() {
    let mut fleet = start().await;
    fleet.simulate(4, FleetSpec::default()).await;
    // Two more devices, provisioned (on 1.0.0) but never seen: offline.
    let late = FleetSpec {
        name_prefix: "late-".into(),
        ..fleet.fleet_spec(2)
    };
    flotilla_simulator::provision(&fleet.harness.client, &late)
        .await
        .expect("provision");
    fleet
        .rollout(
            "patient",
            json!({
                "selector": {"matchExpressions": [{"key": "flotilla.dev/simulated",
                                                   "operator": "In", "values": ["sim", "late"]}]},
                "waves": [{"percent": 100}], "soakTime": "300ms", "offlinePolicy": "Wait",
            }),
        )
        .await;
    let status = wait_for("the online devices to succeed", LONG, || async {
        let status = status_of(&fleet, "patient").await?;
        (status.counts.as_ref()?.succeeded == 4).then_some(status)
    })
    .await
    .unwrap();
    let plan = status.plan.as_ref().unwrap();
    assert_eq!(
        (plan.targeted, plan.excluded.offline),
        (6, 0),
        "offline devices are planned, not skipped"
    );
    let counts = status.counts.unwrap();
    assert_eq!((counts.skipped, counts.updating), (0, 0), "{counts:?}");
    assert_ne!(status.phase, Some(FirmwareRolloutPhase::Succeeded));
    for name in ["late-0000", "late-0001"] {
        let device = fleet.harness.api::<Device>().get(name).await.unwrap();
        assert!(
            device.spec.firmware.is_none(),
            "{name} assigned while offline"
        );
    }
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 4);
    // They come back: assigned, updated, and the rollout completes.
    fleet.launch(late, false).await;
    let done = fleet
        .until_phase(
            "patient",
            FirmwareRolloutPhase::Succeeded,
            &AtomicU32::new(0),
        )
        .await;
    let counts = done.status.unwrap().counts.unwrap();
    assert_eq!(
        (counts.targeted, counts.succeeded, counts.skipped),
        (6, 6, 0)
    );
    for name in ["late-0000", "late-0001"] {
        let device = fleet.harness.api::<Device>().get(name).await.unwrap();
        assert_eq!(
            device.status.unwrap().current_version.as_deref(),
            Some("2.0.0")
        );
    }
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 6);
}

/// Starts `devices` simulated devices, a `loop_share` of which reboot again and again after
/// an update (one boot per poll, for 15 s: past the boot grace of half the 20 s soak), and a
/// rollout over them soaking long enough to see it.
async fn looping_fleet(devices: usize, loop_share: f64) -> Fleet {
    let mut fleet = start().await;
    fleet
        .simulate(
            devices,
            FleetSpec {
                reboot_loop_share: loop_share,
                reboot_loop_boots: 15,
                ..FleetSpec::default()
            },
        )
        .await;
    fleet
        .rollout(
            "loopy",
            json!({"waves": [{"percent": 100}], "soakTime": "20s", "deviceTimeout": "40s",
                   "failureThreshold": {"overall": {"count": 100}}}),
        )
        .await;
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_boot_reported_during_the_soak_fails_the_device_as_a_reboot_loop() {
    let fleet = looping_fleet(2, 0.0).await;
    let devices = fleet.harness.api::<Device>();
    // The simulator's devices update and boot no more; one boot, later than the boot into the
    // new version can be (half the soak after the success report), is written here.
    let updated = wait_for("sim-0000 to report success", LONG, || async {
        let device = devices.get("sim-0000").await.ok()?;
        let update = device.status.as_ref()?.update.as_ref()?;
        (update.state == UpdateState::Succeeded).then_some(device)
    })
    .await
    .unwrap();
    let finished = updated
        .status
        .unwrap()
        .update
        .unwrap()
        .finished_at
        .unwrap()
        .0;
    let late = finished.checked_add(SignedDuration::from_secs(11)).unwrap();
    if let Ok(wait) = std::time::Duration::try_from(late.duration_since(Timestamp::now())) {
        tokio::time::sleep(wait).await;
    }
    let boot = Timestamp::now();
    fleet
        .harness
        .write_status::<Device>(
            "sim-0000",
            json!({"lastBootAt": boot.to_string(), "bootCount": 7}),
        )
        .await;
    let status = wait_for("sim-0000 failed", LONG, || async {
        let status = status_of(&fleet, "loopy").await?;
        (status.counts.as_ref()?.failed == 1).then_some(status)
    })
    .await
    .unwrap();
    assert_eq!(status.failed_devices[0].name, "sim-0000");
    assert_eq!(status.failed_devices[0].reason, "RebootLoop");
    assert_eq!(status.failure_reasons[0].reason, "RebootLoop");
    // The other device, which booted no more, is still soaking: not succeeded, not failed.
    let counts = status.counts.unwrap();
    assert_eq!((counts.succeeded, counts.updating), (0, 1), "{counts:?}");
}

/// End to end: the simulator's reboot-loop devices report a rising `bootCount` through
/// `configData`, one per poll, after reporting success; the gateway stamps `lastBootAt` on
/// each rise, and the rollout fails them as reboot loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_simulators_reboot_loops_fail_their_devices_through_the_gateway() {
    let fleet = looping_fleet(2, 1.0).await;
    let status = wait_for("both devices failed", LONG, || async {
        let status = status_of(&fleet, "loopy").await?;
        let counts = status.counts.as_ref()?;
        (counts.failed + counts.succeeded == 2).then_some(status)
    })
    .await
    .unwrap();
    let counts = status.counts.unwrap();
    assert_eq!((counts.failed, counts.succeeded), (2, 0), "{counts:?}");
    assert!(
        status
            .failed_devices
            .iter()
            .all(|d| d.reason == "RebootLoop")
    );
}

/// A device driven by hand over the gateway's DDI API, to script what it reports.
struct HandDevice {
    http: reqwest::Client,
    base: String,
    authorization: String,
}

impl HandDevice {
    /// Provisions Device `hand-0000` (model alpha, on 1.0.0) and its token.
    async fn provision(fleet: &Fleet) -> Self {
        let spec = FleetSpec {
            name_prefix: "hand-".into(),
            ..fleet.fleet_spec(1)
        };
        flotilla_simulator::provision(&fleet.harness.client, &spec)
            .await
            .expect("provision");
        let name = spec.device_name(0);
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/{NAMESPACE}/controller/v1/{name}", fleet.gateway_url),
            authorization: format!("TargetToken {}", flotilla_simulator::token_for(0, &name)),
        }
    }

    /// `GET url`; `None` unless the gateway answers 2xx.
    async fn try_get(&self, url: &str) -> Option<Value> {
        let response = self
            .http
            .get(url)
            .header("authorization", &self.authorization)
            .header("accept", "application/hal+json")
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn get(&self, url: &str) -> Value {
        self.try_get(url)
            .await
            .unwrap_or_else(|| panic!("GET {url} refused"))
    }

    /// Polls until the gateway knows the device (its token Secret and Device reach the
    /// gateway's caches a moment after they are created).
    async fn come_online(&self) {
        wait_for("the gateway to accept hand-0000", LONG, || {
            self.try_get(&self.base)
        })
        .await
        .unwrap();
    }

    /// Polls until the gateway offers a deployment other than `after`; its link and id.
    async fn next_deployment(&self, after: Option<&str>) -> (String, String) {
        wait_for("a deployment", LONG, || async {
            let poll = self.try_get(&self.base).await?;
            let href = poll["_links"]["deploymentBase"]["href"]
                .as_str()?
                .to_owned();
            let path = href.split('?').next()?.to_owned();
            let id = path.rsplit('/').next()?.to_owned();
            (Some(id.as_str()) != after).then_some((href, id))
        })
        .await
        .unwrap()
    }

    /// Takes the deployment and reports it finished.
    async fn finish(&self, href: &str, id: &str, success: bool) {
        self.get(href).await;
        let path = href.split('?').next().unwrap();
        let status = if success {
            json!({"execution": "closed", "result": {"finished": "success"},
                   "details": ["Rebooted into 2.0.0"]})
        } else {
            json!({"execution": "closed", "result": {"finished": "failure"}, "code": 1234,
                   "details": ["errorCode=1234", "flash write failed"]})
        };
        let response = self
            .http
            .post(format!("{path}/feedback"))
            .header("authorization", &self.authorization)
            .json(&json!({"id": id, "status": status}))
            .send()
            .await
            .expect("the gateway answers");
        assert!(
            response.status().is_success(),
            "feedback: {}",
            response.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_failing_once_is_retried_after_its_backoff_and_succeeds_on_attempt_two() {
    let fleet = start().await;
    let device = HandDevice::provision(&fleet).await;
    device.come_online().await;
    fleet
        .rollout(
            "second-chance",
            json!({"selector": {"matchLabels": {"flotilla.dev/simulated": "hand"}},
                   "waves": [{"percent": 100}], "soakTime": "300ms",
                   "retries": {"limit": 1, "initialBackoff": "2s", "maxBackoff": "2s"},
                   "failureThreshold": {"overall": {"count": 1}}, "onFailure": "Pause"}),
        )
        .await;
    let (href, first) = device.next_deployment(None).await;
    device.finish(&href, &first, false).await;
    let (href, second) = device.next_deployment(Some(&first)).await;
    device.finish(&href, &second, true).await;
    // A success counts once the device is heard from after the soak: a poll past the soak
    // and the gateway's lastSeen resolution (1 s here) is that heartbeat.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    device
        .try_get(&device.base)
        .await
        .expect("a heartbeat poll");
    let done = fleet
        .until_phase(
            "second-chance",
            FirmwareRolloutPhase::Succeeded,
            &AtomicU32::new(0),
        )
        .await;
    let status = done.status.unwrap();
    let counts = status.counts.unwrap();
    assert_eq!(
        (counts.targeted, counts.succeeded, counts.failed),
        (1, 1, 0),
        "a failed attempt that was retried is no failure"
    );
    assert!(status.failed_devices.is_empty());
    let hand = fleet
        .harness
        .api::<Device>()
        .get("hand-0000")
        .await
        .unwrap();
    let firmware = hand.spec.firmware.unwrap();
    assert_eq!(firmware.attempt, Some(2));
    assert_eq!(firmware.action_id.to_string(), second);
    let device_status = hand.status.unwrap();
    assert_eq!(device_status.current_version.as_deref(), Some("2.0.0"));
    assert_eq!(device_status.update.as_ref().unwrap().attempt, 2);
    let history: Vec<_> = device_status
        .history
        .iter()
        .map(|h| (h.result, h.action_id.map(|a| a.to_string())))
        .collect();
    assert_eq!(
        history,
        [
            (UpdateState::Succeeded, Some(second.clone())),
            (UpdateState::Failed, Some(first.clone()))
        ]
    );
    // The retry waited out initialBackoff after the failure (both instants as stored).
    let failed_at = device_status.history[1].finished_at.clone().unwrap().0;
    let retried_at = firmware.assigned_at.unwrap().0;
    assert!(
        retried_at.duration_since(failed_at) >= SignedDuration::from_secs(2),
        "retried {retried_at} after failing {failed_at}"
    );
    assert_eq!(fleet.harness.succeeded(Verb::Patch, "devices"), 2);
}
