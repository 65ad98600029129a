//! A harness with the rollout controller, the real device gateway (as its ServiceAccount, bound
//! by `config/rbac/gateway_role.yaml` copied into the fleet's namespace) and simulated fleets
//! talking DDI to it over HTTP: nothing writes Device status but the gateway (unless a test
//! says so).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flotilla_crds::{Device, FirmwareRelease, FirmwareRollout, FirmwareRolloutPhase};
use flotilla_gateway::GatewayConfig;
use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Shutdown, SystemClock};
use flotilla_simulator::{FleetSpec, ModelShare, Simulation};
use kube::api::ListParams;
use serde_json::json;

use super::{Harness, NAMESPACE};

/// How long a wait for a fleet may take.
pub const LONG: Duration = Duration::from_secs(60);
/// The artifacts' SHA-256.
pub const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The operator, a gateway and the simulated fleets.
pub struct Fleet {
    pub harness: Harness,
    pub gateway_url: String,
    pub shutdown: Shutdown,
    simulations: Vec<Simulation>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A valid FirmwareRelease of `version` for models alpha and beta.
pub fn release(name: &str, version: &str) -> serde_json::Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
        "metadata": {"name": name},
        "spec": {"version": version, "compatibleModels": ["alpha", "beta"],
                 "artifact": {"url": format!("https://fw.example.com/{version}.bin"), "sha256": SHA, "sizeBytes": 4096}},
    })
}

/// Starts the release and rollout controllers, releases fw-1-0-0 and fw-2-0-0, and a gateway.
pub async fn start() -> Fleet {
    start_with_client(true).await
}

/// As [`start`]; `client_retries: false` takes kube's retry layer out of the operator's client
/// (see [`Harness::start_with_client`]).
pub async fn start_with_client(client_retries: bool) -> Fleet {
    let harness = Harness::start_with_client(
        flotilla_ota::Selection {
            release: true,
            rollout: true,
        },
        client_retries,
    )
    .await;
    harness
        .create::<FirmwareRelease>(release("fw-1-0-0", "1.0.0"))
        .await;
    harness
        .create::<FirmwareRelease>(release("fw-2-0-0", "2.0.0"))
        .await;
    let shutdown = Shutdown::new();
    let config = GatewayConfig::loopback(NAMESPACE).polling_every_second();
    // The gateway as its own ServiceAccount, its Role copied into the namespace it serves.
    flotilla_testkit::rbac::install_gateway_role_in(harness.sandbox(), NAMESPACE);
    let gateway_client =
        kube::Client::try_from(flotilla_testkit::rbac::service_account_kube_config(
            harness.sandbox(),
            flotilla_testkit::rbac::GATEWAY_SERVICE_ACCOUNT,
        ))
        .expect("the gateway's client");
    let gateway = flotilla_gateway::start(
        config,
        gateway_client,
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    .expect("gateway starts");
    let gateway_url = format!("http://{}", gateway.address);
    tokio::spawn(gateway.wait());
    harness.ready().await;
    Fleet {
        harness,
        gateway_url,
        shutdown,
        simulations: Vec::new(),
    }
}

impl Fleet {
    /// The spec of `devices` simulated devices of this fleet's gateway (models alpha and
    /// beta, half each) on 1.0.0, updating in 400 ms; the caller changes what it needs.
    pub fn fleet_spec(&self, devices: usize) -> FleetSpec {
        FleetSpec {
            gateway_url: self.gateway_url.clone(),
            namespace: NAMESPACE.to_owned(),
            devices,
            models: vec![
                ModelShare {
                    model: "alpha".into(),
                    share: 1,
                },
                ModelShare {
                    model: "beta".into(),
                    share: 1,
                },
            ],
            starting_version: "1.0.0".into(),
            update_duration: Duration::from_millis(400),
            progress_steps: 2,
            ..FleetSpec::default()
        }
    }

    /// Provisions and starts `devices` simulated devices (models alpha and beta, half each)
    /// on 1.0.0, and waits for each to report. `spec` supplies everything else.
    pub async fn simulate(&mut self, devices: usize, spec: FleetSpec) {
        let spec = FleetSpec {
            gateway_url: self.gateway_url.clone(),
            namespace: NAMESPACE.to_owned(),
            devices,
            models: vec![
                ModelShare {
                    model: "alpha".into(),
                    share: 1,
                },
                ModelShare {
                    model: "beta".into(),
                    share: 1,
                },
            ],
            starting_version: "1.0.0".into(),
            update_duration: Duration::from_millis(400),
            progress_steps: 2,
            ..spec
        };
        self.launch(spec, true).await;
    }

    /// Provisions the fleet of `spec` and starts its online devices; with `wait`, waits until
    /// every online device has reported once (lastSeen set) to the API.
    pub async fn launch(&mut self, spec: FleetSpec, wait: bool) {
        flotilla_simulator::provision(&self.harness.client, &spec)
            .await
            .expect("provision");
        let online: Vec<String> = spec
            .profiles()
            .filter(|p| !p.offline)
            .map(|p| p.name)
            .collect();
        self.simulations
            .push(flotilla_simulator::start(spec, self.shutdown.clone()).expect("simulator"));
        if !wait {
            return;
        }
        let api = self.harness.api::<Device>();
        wait_for("every online device to report", LONG, || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            let reported = list
                .items
                .iter()
                .filter(|d| d.status.as_ref().is_some_and(|s| s.last_seen.is_some()))
                .filter_map(|d| d.metadata.name.as_deref())
                .collect::<Vec<_>>();
            online
                .iter()
                .all(|name| reported.contains(&name.as_str()))
                .then_some(())
        })
        .await
        .expect("devices report");
    }

    /// Creates rollout `name` of fw-2-0-0 over the simulated devices; `spec` overrides the
    /// defaults (three waves, maxInFlight 4, soak 1s, no retries, offline devices waited for).
    pub async fn rollout(&self, name: &str, spec: serde_json::Value) -> FirmwareRollout {
        let mut base = json!({
            "release": "fw-2-0-0",
            "selector": {"matchLabels": {"flotilla.dev/simulated": "sim"}},
            "waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
            "maxInFlight": 4,
            "soakTime": "1s",
            "deviceTimeout": "30s",
            "offlineAfter": "1m",
            // The plan reads the operator's Device watch, which may trail the API the test
            // read by a moment: a device whose first report the test saw may be unseen there
            // still, and Skip would leave it out for good. Wait assigns it once it shows.
            "offlinePolicy": "Wait",
            "retries": {"limit": 0, "initialBackoff": "1s", "maxBackoff": "1s"},
        });
        base.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        self.harness
            .create::<FirmwareRollout>(json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRollout",
                "metadata": {"name": name}, "spec": base,
            }))
            .await
    }

    /// Waits for the rollout to reach `phase`, sampling `updating` on the way.
    pub async fn until_phase(
        &self,
        name: &str,
        phase: FirmwareRolloutPhase,
        most_updating: &AtomicU32,
    ) -> FirmwareRollout {
        let api = self.harness.api::<FirmwareRollout>();
        wait_for(format!("rollout {name} to be {phase:?}"), LONG, || async {
            let rollout = api.get(name).await.ok()?;
            let status = rollout.status.as_ref()?;
            if let Some(counts) = &status.counts {
                most_updating.fetch_max(counts.updating as u32, Ordering::Relaxed);
            }
            (status.phase == Some(phase)).then_some(rollout)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every Device.
    pub async fn devices(&self) -> Vec<Device> {
        self.harness
            .api::<Device>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }
}

/// The version a Device reports running.
pub fn current(device: &Device) -> Option<&str> {
    device.status.as_ref()?.current_version.as_deref()
}
