//! `flotilla dev`: the operator against an in-memory API server, for trying Flotilla on a
//! laptop without a cluster; with the device gateway and a simulated fleet of Devices in
//! namespace [`FLEET_NAMESPACE`] that poll it ([`start_fleet`]), so the OTA samples have
//! devices to update.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use flotilla_gateway::{Gateway, GatewayConfig, PollingSleep};
use flotilla_sandbox::Sandbox;
use flotilla_simulator::{FleetSpec, ModelShare, Simulation};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;

use crate::cli::{DevArgs, run_operator};
use crate::runtime::{Shutdown, SystemClock};

/// Namespace of the simulated fleet (and of the OTA samples).
pub const FLEET_NAMESPACE: &str = "fleet";
/// The fleet's models and their shares: three sensors to each gateway.
pub const FLEET_MODELS: [(&str, u32); 2] = [("sensor-v2", 3), ("gateway-v1", 1)];
/// The version every simulated device runs at the start.
pub const STARTING_VERSION: &str = "1.0.0";
/// How long `start_fleet` waits for the gateway's caches.
const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the sandbox with Flotilla's CRDs, writes its kubeconfig, runs the operator and the
/// demo fleet against it, prints what to try, and runs until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .context("starting the in-memory API server")?;
    sandbox
        .write_kubeconfig(&args.kubeconfig_out)
        .with_context(|| format!("writing {}", args.kubeconfig_out.display()))?;
    let shutdown = Shutdown::on_process_signals();
    let client = sandbox.client();
    let operator = run_operator(client.clone(), &args.operator, shutdown.clone());
    let demo = async {
        match start_fleet(&client, args.devices, !args.no_gateway, &shutdown).await {
            Ok(fleet) => {
                println!("{}", banner(&args, &sandbox.url(), &fleet));
                Ok(fleet)
            }
            Err(error) => {
                // Without the fleet the demo is not what was asked for: stop the operator too.
                shutdown.trigger();
                Err(error)
            }
        }
    };
    let (result, fleet) = tokio::join!(operator, demo);
    shutdown.trigger();
    let stopped = match fleet {
        Ok(fleet) => fleet.stop().await,
        Err(error) => Err(error),
    };
    sandbox.shutdown().await;
    result.and(stopped)
}

/// What `flotilla dev` prints once everything runs.
fn banner(args: &DevArgs, url: &str, fleet: &RunningFleet) -> String {
    let kubeconfig = args.kubeconfig_out.display();
    let gateway = match &fleet.gateway_url {
        Some(url) => format!("{url} (hawkBit DDI v1, namespace {FLEET_NAMESPACE})"),
        None => "not started (--no-gateway)".to_owned(),
    };
    let devices = match (fleet.devices, &fleet.simulation) {
        (0, _) => "none (--devices 0)".to_owned(),
        (n, Some(_)) => {
            format!("{n} simulated Devices in namespace {FLEET_NAMESPACE}, polling the gateway")
        }
        (n, None) => {
            format!("{n} Devices in namespace {FLEET_NAMESPACE}, not simulated (no gateway)")
        }
    };
    format!(
        "Flotilla dev: in-memory API server at {url}\n\
         kubeconfig written to {kubeconfig}\n\
         admin server: http://{admin}/metrics, /healthz, /readyz\n\
         device gateway: {gateway}\n\
         fleet: {devices}\n\
         \n\
         Next steps:\n  \
           kubectl --kubeconfig {kubeconfig} apply -f config/samples/\n  \
           kubectl --kubeconfig {kubeconfig} get flotilla -A\n  \
           kubectl --kubeconfig {kubeconfig} describe plans\n  \
           kubectl --kubeconfig {kubeconfig} get devices -n {FLEET_NAMESPACE}\n  \
           kubectl flotilla --kubeconfig {kubeconfig} fleet versions -n {FLEET_NAMESPACE}\n  \
           kubectl flotilla --kubeconfig {kubeconfig} rollout status spring-update -n {FLEET_NAMESPACE}\n\
         \n\
         Ctrl-C stops the operator and the API server (all state is in memory).",
        admin = args.operator.metrics_address,
    )
}

/// The gateway of the demo: loopback on a free port, serving [`FLEET_NAMESPACE`], with short
/// polling sleeps so that the fleet reacts within seconds.
pub fn gateway_config() -> GatewayConfig {
    GatewayConfig {
        polling: PollingSleep {
            busy: Duration::from_secs(2),
            idle: Duration::from_secs(10),
        },
        last_seen_resolution: Duration::from_secs(30),
        ..GatewayConfig::loopback(FLEET_NAMESPACE)
    }
}

/// The demo fleet: `devices` devices in [`FLEET_NAMESPACE`] of the [`FLEET_MODELS`], on
/// [`STARTING_VERSION`], whose updates take 5–10 s and fail 2 % of the time.
pub fn fleet_spec(devices: usize, gateway_url: &str) -> FleetSpec {
    FleetSpec {
        gateway_url: gateway_url.to_owned(),
        namespace: FLEET_NAMESPACE.to_owned(),
        devices,
        models: FLEET_MODELS
            .iter()
            .map(|(model, share)| ModelShare {
                model: (*model).to_owned(),
                share: *share,
            })
            .collect(),
        starting_version: STARTING_VERSION.to_owned(),
        update_duration: Duration::from_secs(5),
        update_jitter: Duration::from_secs(5),
        failure_rate: 0.02,
        start_spread: Duration::from_secs(5),
        ..FleetSpec::default()
    }
}

/// The gateway and simulated devices `flotilla dev` runs next to the operator.
#[derive(Debug)]
pub struct RunningFleet {
    /// Base URL of the gateway's device API, when it runs.
    pub gateway_url: Option<String>,
    /// Devices provisioned.
    pub devices: usize,
    gateway: Option<Gateway>,
    simulation: Option<Simulation>,
}

impl RunningFleet {
    /// The running simulation, when the devices poll a gateway.
    pub fn simulation(&self) -> Option<&Simulation> {
        self.simulation.as_ref()
    }

    /// Waits for the devices and the gateway to stop (after the shutdown tripped).
    pub async fn stop(self) -> anyhow::Result<()> {
        if let Some(simulation) = self.simulation {
            let counts = simulation.wait().await;
            tracing::info!(?counts, "simulated fleet stopped");
        }
        if let Some(gateway) = self.gateway {
            gateway.wait().await.context("running the device gateway")?;
        }
        Ok(())
    }
}

/// Creates [`FLEET_NAMESPACE`]; starts the gateway (unless `gateway` is false) and waits for
/// its caches; provisions `devices` Devices with their token Secrets and, with a gateway,
/// starts simulating them. Everything stops when `shutdown` trips.
pub async fn start_fleet(
    client: &kube::Client,
    devices: usize,
    gateway: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<RunningFleet> {
    if devices == 0 && !gateway {
        return Ok(RunningFleet {
            gateway_url: None,
            devices,
            gateway: None,
            simulation: None,
        });
    }
    ensure_namespace(client, FLEET_NAMESPACE).await?;
    let gateway = if gateway {
        let config = gateway_config();
        let started = flotilla_gateway::start(
            config,
            client.clone(),
            Arc::new(SystemClock),
            shutdown.clone(),
        )
        .await
        .context("starting the device gateway")?;
        wait_until_ready(&started).await?;
        Some(started)
    } else {
        None
    };
    let gateway_url = gateway.as_ref().map(|g| format!("http://{}", g.address));
    let spec = fleet_spec(
        devices,
        gateway_url.as_deref().unwrap_or("http://127.0.0.1:0"),
    );
    flotilla_simulator::provision(client, &spec)
        .await
        .with_context(|| format!("creating {devices} Devices in namespace {FLEET_NAMESPACE}"))?;
    let simulation = match &gateway {
        Some(_) if devices > 0 => Some(
            flotilla_simulator::start(spec, shutdown.clone())
                .context("starting the simulated devices")?,
        ),
        _ => None,
    };
    Ok(RunningFleet {
        gateway_url,
        devices,
        gateway,
        simulation,
    })
}

/// Creates the namespace unless it exists.
pub async fn ensure_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
    }))
    .expect("a valid Namespace");
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating namespace {name}")),
    }
}

/// Devices polling before the gateway's caches are synced would be turned away.
async fn wait_until_ready(gateway: &Gateway) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + GATEWAY_READY_TIMEOUT;
    while !gateway.readiness.report().is_ready() {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the device gateway's caches did not sync within {}s",
                GATEWAY_READY_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fleet_has_two_models_on_one_version() {
        let spec = fleet_spec(200, "http://127.0.0.1:1234");
        let counts = spec.model_counts();
        assert_eq!(counts["sensor-v2"], 150);
        assert_eq!(counts["gateway-v1"], 50);
        assert_eq!(spec.starting_version, "1.0.0");
        assert_eq!(spec.namespace, "fleet");
        assert!(spec.failure_rate > 0.0 && spec.failure_rate < 0.1);
        assert!(spec.update_duration + spec.update_jitter <= Duration::from_secs(10));
    }

    #[test]
    fn the_banner_names_the_gateway_and_the_fleet() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["flotilla", "dev"]).unwrap();
        let crate::cli::Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        let fleet = RunningFleet {
            gateway_url: Some("http://127.0.0.1:4321".into()),
            devices: 0,
            gateway: None,
            simulation: None,
        };
        let text = banner(&args, "http://127.0.0.1:1234", &fleet);
        assert!(text.contains("in-memory API server at http://127.0.0.1:1234\n"));
        assert!(
            text.contains(
                "device gateway: http://127.0.0.1:4321 (hawkBit DDI v1, namespace fleet)\n"
            )
        );
        assert!(text.contains("fleet: none (--devices 0)\n"));
        assert!(text.contains("get devices -n fleet\n"));
        assert!(text.contains(
            "kubectl flotilla --kubeconfig ./flotilla-dev.kubeconfig fleet versions -n fleet\n"
        ));
        let fleet = RunningFleet {
            gateway_url: None,
            devices: 200,
            ..fleet
        };
        let text = banner(&args, "http://127.0.0.1:1234", &fleet);
        assert!(text.contains("device gateway: not started (--no-gateway)\n"));
        assert!(
            text.contains("fleet: 200 Devices in namespace fleet, not simulated (no gateway)\n")
        );
    }

    #[test]
    fn the_demo_gateway_serves_the_fleet_on_loopback() {
        let config = gateway_config();
        assert!(config.listen.ip().is_loopback() && config.listen.port() == 0);
        assert!(config.admin_listen.ip().is_loopback() && config.admin_listen.port() == 0);
        assert_eq!(config.namespaces, ["fleet"]);
        assert_eq!(config.polling.busy, Duration::from_secs(2));
        assert_eq!(config.polling.idle, Duration::from_secs(10));
    }
}
