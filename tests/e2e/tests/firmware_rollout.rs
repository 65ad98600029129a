//! A firmware rollout as a fleet operator sees it: the sample release, a fleet of simulated
//! devices talking hawkBit DDI to the device gateway, a rollout moving them through its
//! waves, and its deletion releasing them. The gateway and the simulator run in this process
//! against the backend (the sandbox, or the cluster of `FLOTILLA_E2E_KUBECONFIG`), exactly as
//! they would beside a real cluster: the devices never touch the Kubernetes API.

use std::sync::Arc;
use std::time::Duration;

use flotilla::runtime::{Shutdown, SystemClock};
use flotilla::testing::wait_for;
use flotilla_crds::condition::{find_condition, types};
use flotilla_crds::{
    Device, FirmwareRelease, FirmwareReleasePhase, FirmwareRollout, FirmwareRolloutPhase,
};
use flotilla_e2e::{Environment, FIELD_MANAGER, samples_of_kind, step_timeout};
use flotilla_gateway::GatewayConfig;
use flotilla_simulator::{FleetSpec, ModelShare};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

const DEVICES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_rolls_out_to_a_simulated_fleet_through_the_gateway() -> anyhow::Result<()> {
    let env = Environment::start().await?;
    let timeout = step_timeout(&env) * 4;
    let namespace = env.name("fleet");
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &namespace,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
            })),
        )
        .await?;

    // The sample release, in this run's namespace.
    let mut release = samples_of_kind("FirmwareRelease")?.remove(0);
    let release_name = release["metadata"]["name"]
        .as_str()
        .unwrap_or("release")
        .to_owned();
    release["metadata"] = serde_json::json!({"name": release_name, "namespace": namespace});
    let releases: Api<FirmwareRelease> = Api::namespaced(env.client.clone(), &namespace);
    releases
        .patch(
            &release_name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&release),
        )
        .await?;
    let models: Vec<String> = release["spec"]["compatibleModels"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let version = release["spec"]["version"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    wait_for(
        format!("FirmwareRelease {release_name} Ready"),
        timeout,
        || async {
            let status = releases
                .get_opt(&release_name)
                .await
                .ok()
                .flatten()?
                .status?;
            (status.phase == Some(FirmwareReleasePhase::Ready)).then_some(())
        },
    )
    .await?;

    // The gateway for that namespace, and a fleet polling it.
    let shutdown = Shutdown::new();
    let gateway = flotilla_gateway::start(
        GatewayConfig::loopback(&namespace).polling_every_second(),
        env.gateway_client(&namespace)?,
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await?;
    let spec = FleetSpec {
        gateway_url: format!("http://{}", gateway.address),
        namespace: namespace.clone(),
        devices: DEVICES,
        name_prefix: "dev-".into(),
        models: models
            .iter()
            .map(|model| ModelShare {
                model: model.clone(),
                share: 1,
            })
            .collect(),
        starting_version: "1.0.0".into(),
        update_duration: Duration::from_millis(500),
        progress_steps: 2,
        ..FleetSpec::default()
    };
    tokio::spawn(gateway.wait());
    flotilla_simulator::provision(&env.client, &spec).await?;
    let fleet = flotilla_simulator::start(spec, shutdown.clone())?;
    let devices: Api<Device> = Api::namespaced(env.client.clone(), &namespace);
    wait_for("every device reports to the gateway", timeout, || async {
        let list = devices.list(&ListParams::default()).await.ok()?;
        (list.items.len() == DEVICES
            && list
                .items
                .iter()
                .all(|d| d.status.as_ref().is_some_and(|s| s.last_seen.is_some())))
        .then_some(())
    })
    .await?;

    // The rollout, in two waves.
    let rollout_name = "spring";
    let rollouts: Api<FirmwareRollout> = Api::namespaced(env.client.clone(), &namespace);
    rollouts
        .patch(
            rollout_name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
                "metadata": {"name": rollout_name, "namespace": namespace},
                "spec": {
                    "release": release_name,
                    "selector": {"matchLabels": {"flotilla.dev/simulated": "dev"}},
                    "waves": [{"percent": 25}, {"percent": 100}],
                    "maxInFlight": 3,
                    "soakTime": "1s",
                    "deviceTimeout": "2m",
                    // The plan reads the operator's Device watch, which may trail the list
                    // above: under Skip a device whose first report is not there yet would
                    // be left out; Wait assigns it once it shows.
                    "offlinePolicy": "Wait",
                },
            })),
        )
        .await?;
    let done = wait_for(
        format!("FirmwareRollout {rollout_name} Succeeded"),
        timeout,
        || async {
            let rollout = rollouts.get_opt(rollout_name).await.ok().flatten()?;
            let status = rollout.status?;
            (status.phase == Some(FirmwareRolloutPhase::Succeeded)).then_some(status)
        },
    )
    .await?;
    let counts = done.counts.clone().unwrap_or_default();
    assert_eq!(
        (counts.targeted, counts.succeeded, counts.failed),
        (DEVICES as i32, DEVICES as i32, 0)
    );
    assert_eq!(done.waves.len(), 2);
    let ready = find_condition(&done.conditions, types::READY).expect("a Ready condition");
    assert_eq!(ready.status, "True");
    for device in devices.list(&ListParams::default()).await?.items {
        let current = device
            .status
            .as_ref()
            .and_then(|s| s.current_version.as_deref());
        assert_eq!(
            current,
            Some(version.as_str()),
            "{:?}",
            device.metadata.name
        );
    }

    // Deleting it releases the devices; their versions stay.
    rollouts
        .delete(rollout_name, &DeleteParams::default())
        .await?;
    wait_for(
        "the rollout to go and release its devices",
        timeout,
        || async {
            let gone = rollouts.get_opt(rollout_name).await.ok()?.is_none();
            let list = devices.list(&ListParams::default()).await.ok()?;
            let released = list.items.iter().all(|d| {
                d.metadata
                    .labels
                    .as_ref()
                    .is_none_or(|l| !l.contains_key("flotilla.dev/rollout"))
            });
            (gone && released).then_some(())
        },
    )
    .await?;

    shutdown.trigger();
    drop(fleet);
    Api::<Namespace>::all(env.client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await?;
    env.stop().await
}
