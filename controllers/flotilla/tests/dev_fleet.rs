//! `flotilla dev`'s fleet against the sandbox: 200 Devices of two models in namespace `fleet`
//! that poll the in-process gateway (the gateway writes their `status.lastSeen`), and the
//! `fleet versions` view of them.

use std::time::Duration;

use flotilla::dev::{FLEET_NAMESPACE, start_fleet};
use flotilla::runtime::Shutdown;
use flotilla::testing::wait_for;
use flotilla_crds::Device;
use flotilla_sandbox::Sandbox;
use kube::Api;
use kube::api::ListParams;

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
