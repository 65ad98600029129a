//! A simulated fleet against the real gateway over HTTP, on the sandbox API server: the
//! Devices' status is what the gateway wrote from the simulator's reports.

use std::sync::Arc;
use std::time::Duration;

use flotilla_crds::device::UpdateState;
use flotilla_crds::{Device, FirmwareRelease};
use flotilla_gateway::GatewayConfig;
use flotilla_runtime::testing::wait_for;
use flotilla_runtime::{Shutdown, SystemClock};
use flotilla_sandbox::Sandbox;
use flotilla_simulator::{Counts, FleetSpec, ModelRate, ModelShare, Simulation, provision};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "fleet";
const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

struct Fixture {
    _sandbox: Sandbox,
    client: Client,
    gateway_url: String,
    shutdown: Shutdown,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn start() -> Fixture {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "flotilla=info,kube=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .expect("sandbox");
    let client = Client::try_from(sandbox.kube_config()).expect("client");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .expect("namespace");
    let release: FirmwareRelease = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "FirmwareRelease",
        "metadata": {"name": "fw-2-0-0"},
        "spec": {"version": "2.0.0", "compatibleModels": ["alpha", "beta"],
                 "artifact": {"url": "https://fw.example.com/2.0.0.bin", "sha256": SHA, "sizeBytes": 4096}},
    }))
    .unwrap();
    Api::<FirmwareRelease>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &release)
        .await
        .expect("release");
    let shutdown = Shutdown::new();
    let config = GatewayConfig::loopback(NS).polling_every_second();
    let gateway = flotilla_gateway::start(
        config,
        client.clone(),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    .expect("gateway starts");
    let gateway_url = format!("http://{}", gateway.address);
    let readiness = gateway.readiness.clone();
    wait_for("the gateway's caches", WAIT, || {
        let ready = readiness.report().is_ready();
        async move { ready.then_some(()) }
    })
    .await
    .expect("ready");
    tokio::spawn(gateway.wait());
    Fixture {
        _sandbox: sandbox,
        client,
        gateway_url,
        shutdown,
    }
}

impl Fixture {
    fn fleet(&self, spec: FleetSpec) -> FleetSpec {
        FleetSpec {
            gateway_url: self.gateway_url.clone(),
            namespace: NS.to_owned(),
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
            update_duration: Duration::from_millis(600),
            progress_steps: 3,
            ..spec
        }
    }

    fn devices(&self) -> Api<Device> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn assign(&self, name: &str, action_id: i64) {
        self.set_firmware(
            name,
            json!({"version": "2.0.0", "release": "fw-2-0-0", "actionId": action_id}),
        )
        .await;
    }

    async fn set_firmware(&self, name: &str, firmware: Value) {
        self.devices()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"firmware": firmware}})),
            )
            .await
            .expect("assign");
    }

    /// Waits until every Device satisfies `wanted`; the Devices then.
    async fn all_until(&self, what: &str, wanted: impl Fn(&Device) -> bool) -> Vec<Device> {
        wait_for(what, WAIT, || async {
            let devices = self
                .devices()
                .list(&ListParams::default())
                .await
                .ok()?
                .items;
            devices.iter().all(&wanted).then_some(devices)
        })
        .await
        .expect(what)
    }

    async fn device_until(&self, name: &str, what: &str, wanted: impl Fn(&Device) -> bool) {
        wait_for(what, WAIT, || async {
            let device = self.devices().get(name).await.ok()?;
            wanted(&device).then_some(())
        })
        .await
        .expect(what)
    }
}

fn state(device: &Device) -> Option<UpdateState> {
    device.status.as_ref()?.update.as_ref().map(|u| u.state)
}

fn attribute<'a>(device: &'a Device, key: &str) -> Option<&'a str> {
    device
        .status
        .as_ref()?
        .attributes
        .get(key)
        .map(String::as_str)
}

fn name_of(device: &Device) -> &str {
    device.metadata.name.as_deref().unwrap()
}

/// A seed for which some devices, but not all, are offline (the draw is per device).
fn seed_with_offline(spec: &FleetSpec) -> u64 {
    (0..)
        .find(|&seed| {
            let spec = FleetSpec {
                seed,
                ..spec.clone()
            };
            let offline: Vec<_> = spec.profiles().filter(|p| p.offline).collect();
            (1..=2).contains(&offline.len())
                && ["alpha", "beta"].iter().all(|m| {
                    spec.profiles()
                        .filter(|p| !p.offline && p.model == *m)
                        .count()
                        >= 2
                })
        })
        .expect("some seed")
}

/// Waits until the simulator counted `wanted`: the gateway answers after its write, so a
/// status can be visible a moment before the device has counted the answer.
async fn counts_until(simulation: &Simulation, what: &str, wanted: impl Fn(&Counts) -> bool) {
    let counters = simulation.counters();
    wait_for(what, WAIT, || {
        let counts = counters.snapshot();
        let done = wanted(&counts);
        async move { done.then_some(()) }
    })
    .await
    .expect(what)
}

async fn simulate(spec: FleetSpec, shutdown: &Shutdown) -> (Simulation, Shutdown) {
    let stop = shutdown.child();
    let simulation = flotilla_simulator::start(spec, stop.clone()).expect("simulator starts");
    (simulation, stop)
}

#[tokio::test]
async fn a_fleet_updates_and_one_model_fails_with_its_code() {
    let f = start().await;
    let base = f.fleet(FleetSpec {
        devices: 8,
        offline_share: 0.2,
        model_failure_rates: vec![ModelRate {
            key: "beta".into(),
            rate: 1.0,
        }],
        failure_code: 4242,
        ..FleetSpec::default()
    });
    let spec = FleetSpec {
        seed: seed_with_offline(&base),
        ..base
    };
    provision(&f.client, &spec).await.expect("provisioned");
    // A second provisioning is harmless.
    provision(&f.client, &spec)
        .await
        .expect("provisioned again");
    let profiles: Vec<_> = spec.profiles().collect();
    let online = profiles.iter().filter(|p| !p.offline).count();

    let (simulation, stop) = simulate(spec.clone(), &f.shutdown).await;
    assert_eq!(simulation.online(), online);
    // First contact: every online device reports its attributes through configData.
    f.all_until("online devices report their attributes", |d| {
        let profile = profiles.iter().find(|p| p.name == name_of(d)).unwrap();
        profile.offline || attribute(d, "serial").is_some()
    })
    .await;
    let mut action = 1_000;
    for profile in &profiles {
        action += 1;
        f.assign(&profile.name, action).await;
    }
    let devices = f
        .all_until("every online device finished its update", |d| {
            let profile = profiles.iter().find(|p| p.name == name_of(d)).unwrap();
            // A device reports its new version in configData after its success.
            profile.offline
                || state(d).is_some_and(UpdateState::is_terminal)
                    && (profile.model == "beta" || attribute(d, "firmwareVersion") == Some("2.0.0"))
        })
        .await;
    for device in &devices {
        let profile = profiles.iter().find(|p| p.name == name_of(device)).unwrap();
        let status = device.status.clone().unwrap_or_default();
        if profile.offline {
            assert!(status.last_seen.is_none(), "{} was seen", profile.name);
            assert!(status.update.is_none(), "{} reported", profile.name);
            assert_eq!(status.current_version.as_deref(), Some("1.0.0"));
            continue;
        }
        let update = status.update.expect("an update");
        assert_eq!(
            attribute(device, "hardwareRevision").map(|r| r.starts_with(&profile.model)),
            Some(true)
        );
        if profile.model == "beta" {
            assert_eq!(update.state, UpdateState::Failed, "{}", profile.name);
            assert_eq!(update.error.as_ref().unwrap().code, "4242");
            assert!(update.error.unwrap().message.contains("errorCode=4242"));
            assert_eq!(status.current_version.as_deref(), Some("1.0.0"));
        } else {
            assert_eq!(update.state, UpdateState::Succeeded, "{}", profile.name);
            assert_eq!(status.current_version.as_deref(), Some("2.0.0"));
            assert_eq!(status.history.len(), 1);
        }
    }
    counts_until(&simulation, "every result counted", |c| {
        c.feedback_success + c.feedback_failure == online as u64
    })
    .await;
    let counters = simulation.counters();
    stop.trigger();
    let counts = simulation.wait().await;
    assert_eq!(counts, counters.snapshot());
    let online_of = |model: &str| {
        profiles
            .iter()
            .filter(|p| !p.offline && p.model == model)
            .count() as u64
    };
    assert_eq!(counts.feedback_success, online_of("alpha"));
    assert_eq!(counts.feedback_failure, online_of("beta"));
    assert_eq!(counts.feedback_canceled, 0);
    assert_eq!(counts.deployments, online as u64);
    // Progress 0 of 3 to 3 of 3 for every update.
    assert_eq!(counts.feedback_proceeding, 4 * online as u64);
    // Attributes at first contact, and the new version after each success.
    assert!(counts.config_data >= online as u64 + online_of("alpha"));
    assert!(counts.polls >= 2 * online as u64);
    assert_eq!(counts.errors(), 0, "{:?}", counts.errors_by_status);
    assert_eq!(counts.transport_errors, 0);
}

#[tokio::test]
async fn a_cancelled_update_is_confirmed_and_a_reboot_loop_reports_its_boots() {
    let f = start().await;
    let spec = f.fleet(FleetSpec {
        devices: 2,
        update_duration: Duration::from_secs(1),
        // Device 0 is slow (its update takes 10 s: time enough to cancel it); both loop.
        slow_share: 1.0,
        slow_factor: 10.0,
        reboot_loop_share: 1.0,
        reboot_loop_boots: 3,
        progress_steps: 10,
        ..FleetSpec::default()
    });
    provision(&f.client, &spec).await.expect("provisioned");
    let (simulation, stop) = simulate(spec.clone(), &f.shutdown).await;
    let (slow, other) = (spec.device_name(0), spec.device_name(1));
    f.assign(&slow, 7).await;
    f.device_until(&slow, "the update running", |d| {
        state(d).is_some_and(UpdateState::is_in_progress)
    })
    .await;
    // Abort: the spec no longer names the running action; the device sees cancelAction.
    f.set_firmware(&slow, Value::Null).await;
    f.device_until(&slow, "the cancel confirmed", |d| {
        state(d) == Some(UpdateState::Cancelled)
    })
    .await;

    // A short update on the other device, then its reboot loop: boot 1, the update's
    // reboot, then three more.
    f.set_firmware(
        &other,
        json!({"version": "2.0.0", "release": "fw-2-0-0", "actionId": 9}),
    )
    .await;
    // Slow too, so a few seconds; meanwhile the cancelled device stays cancelled.
    f.device_until(&other, "the reboot loop reported", |d| {
        state(d) == Some(UpdateState::Succeeded) && attribute(d, "bootCount") == Some("5")
    })
    .await;
    let cancelled = f.devices().get(&slow).await.unwrap();
    assert_eq!(state(&cancelled), Some(UpdateState::Cancelled));
    assert_eq!(attribute(&cancelled, "bootCount"), Some("1"));
    stop.trigger();
    let counts = simulation.wait().await;
    assert_eq!(counts.feedback_canceled, 1);
    assert_eq!(counts.cancels, 1);
    assert_eq!(counts.feedback_success, 1);
    assert_eq!(counts.feedback_failure, 0);
    assert_eq!(counts.errors(), 0, "{:?}", counts.errors_by_status);
}

#[tokio::test]
async fn updates_from_a_bad_version_fail() {
    let f = start().await;
    let spec = f.fleet(FleetSpec {
        devices: 3,
        starting_version: "0.9.0".into(),
        from_version_failure_rates: vec![ModelRate {
            key: "0.9.0".into(),
            rate: 1.0,
        }],
        // Another from-version's rate does not apply.
        model_failure_rates: vec![ModelRate {
            key: "gamma".into(),
            rate: 1.0,
        }],
        ..FleetSpec::default()
    });
    provision(&f.client, &spec).await.expect("provisioned");
    let (simulation, stop) = simulate(spec.clone(), &f.shutdown).await;
    for (index, profile) in spec.profiles().enumerate() {
        f.assign(&profile.name, 100 + index as i64).await;
    }
    let devices = f
        .all_until("every device finished", |d| {
            state(d).is_some_and(UpdateState::is_terminal)
        })
        .await;
    for device in &devices {
        let status = device.status.as_ref().unwrap();
        assert_eq!(
            state(device),
            Some(UpdateState::Failed),
            "{}",
            name_of(device)
        );
        assert_eq!(status.current_version.as_deref(), Some("0.9.0"));
        assert_eq!(status.history[0].error_code.as_deref(), Some("1001"));
    }
    counts_until(&simulation, "every result counted", |c| {
        c.feedback_failure == 3
    })
    .await;
    stop.trigger();
    let counts = simulation.wait().await;
    assert_eq!(counts.feedback_failure, 3);
    assert_eq!(counts.feedback_success, 0);
}

#[test]
fn tokens_hash_as_the_gateway_checks_them() {
    let token = flotilla_simulator::token_for(7, "sim-0001");
    let hash = flotilla_simulator::token_hash(&token);
    assert_eq!(hash, flotilla_gateway::auth::token_hash_hex(&token));
    assert!(flotilla_gateway::auth::token_matches(
        &token,
        hash.as_bytes()
    ));
    assert_eq!(
        flotilla_simulator::provision::TOKEN_SECRET_LABEL,
        flotilla_gateway::TOKEN_SECRET_LABEL
    );
}
