//! `flotilla dev`'s fleet against the sandbox: 200 Devices of two models in namespace `fleet`
//! that poll the in-process gateway (the gateway writes their `status.lastSeen`), and the
//! `fleet versions` view of them.

use std::time::Duration;

use flotilla::dev::{FLEET_MODELS, FLEET_NAMESPACE, STARTING_VERSION, start_fleet};
use flotilla::runtime::Shutdown;
use flotilla::testing::wait_for;
use flotilla_crds::{Device, FirmwareRelease, FirmwareRollout};
use flotilla_sandbox::Sandbox;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde::Deserialize as _;

/// The OTA sample made for this fleet: its Namespace, FirmwareRelease and FirmwareRollout.
fn fleet_samples() -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/samples/fleet-spring-update.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the fleet sample");
    serde_norway::Deserializer::from_str(&text)
        .map(|document| serde_json::Value::deserialize(document).expect("YAML"))
        .collect()
}

#[tokio::test]
async fn the_dev_fleet_polls_the_gateway() {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .expect("sandbox");
    let client = sandbox.client();
    let shutdown = Shutdown::new();
    let fleet = start_fleet(&client, 200, true, &shutdown)
        .await
        .expect("the fleet starts");
    let url = fleet.gateway_url.clone().expect("a gateway");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(fleet.simulation().map(|s| s.online()), Some(200));

    let devices: Api<Device> = Api::namespaced(client.clone(), FLEET_NAMESPACE);
    let list = devices.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 200);
    let sensors = list
        .items
        .iter()
        .filter(|d| d.spec.model == "sensor-v2")
        .count();
    assert_eq!(sensors, 150);
    assert_eq!(
        list.items
            .iter()
            .filter(|d| d.spec.model == "gateway-v1")
            .count(),
        50
    );

    // The devices' first polls are spread over 5 s; each sets lastSeen.
    wait_for(
        "every Device seen by the gateway",
        Duration::from_secs(60),
        || async {
            let list = devices.list(&ListParams::default()).await.ok()?;
            let seen = list
                .items
                .iter()
                .filter(|d| d.status.as_ref().is_some_and(|s| s.last_seen.is_some()))
                .count();
            (seen == 200).then_some(())
        },
    )
    .await
    .unwrap_or_else(|error| panic!("{error}"));
    let list = devices.list(&ListParams::default()).await.unwrap();
    assert!(list.items.iter().all(|d| {
        d.status.as_ref().and_then(|s| s.current_version.as_deref()) == Some("1.0.0")
    }));

    // The samples fit this fleet: a release for both models and another version, and a
    // rollout whose selector matches every device.
    let samples = fleet_samples();
    let release: FirmwareRelease = serde_json::from_value(samples[1].clone()).unwrap();
    for (model, _) in FLEET_MODELS {
        assert!(
            release.spec.compatible_models.iter().any(|m| m == model),
            "{model}"
        );
    }
    assert_ne!(release.spec.version, STARTING_VERSION);
    let rollout: FirmwareRollout = serde_json::from_value(samples[2].clone()).unwrap();
    assert_eq!(rollout.metadata.namespace.as_deref(), Some(FLEET_NAMESPACE));
    Api::<FirmwareRelease>::namespaced(client.clone(), FLEET_NAMESPACE)
        .create(&PostParams::default(), &release)
        .await
        .expect("the sandbox admits the release sample");
    Api::<FirmwareRollout>::namespaced(client.clone(), FLEET_NAMESPACE)
        .create(&PostParams::default(), &rollout)
        .await
        .expect("the sandbox admits the rollout sample");
    let selector = rollout
        .spec
        .selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let selected = devices
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 200, "{selector} selects the fleet");

    let mut out = Vec::new();
    flotilla::plugin::fleet::versions(&client, FLEET_NAMESPACE, None, &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\nTOTAL       200    200 "),
        "every device on 1.0.0: {text}"
    );

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), fleet.stop())
        .await
        .expect("the fleet stops on shutdown")
        .expect("cleanly");
}

#[tokio::test]
async fn without_a_gateway_the_devices_exist_but_are_not_simulated() {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .expect("sandbox");
    let client = sandbox.client();
    let shutdown = Shutdown::new();
    let fleet = start_fleet(&client, 12, false, &shutdown).await.unwrap();
    assert_eq!(fleet.gateway_url, None);
    assert!(fleet.simulation().is_none());
    let devices: Api<Device> = Api::namespaced(client.clone(), FLEET_NAMESPACE);
    assert_eq!(
        devices
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        12
    );
    // A second start (flotilla dev restarted against the same server) is harmless.
    start_fleet(&client, 12, false, &shutdown).await.unwrap();
    shutdown.trigger();
    fleet.stop().await.unwrap();
}
