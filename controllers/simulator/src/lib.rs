//! The device simulator (`flotilla simulate-devices`): N devices that talk to the gateway over
//! hawkBit's DDI API v1 exactly as device agents do — poll, configData, deploymentBase,
//! feedback, cancelAction — with configurable update times, failures (overall, by model, by
//! from-version), offline and slow devices and reboot loops. A real HTTP client, never a
//! shortcut that writes Device status.
//!
//! | Concern | Module |
//! |---|---|
//! | the fleet and each device's traits (pure, deterministic) | [`spec`] |
//! | one device's agent loop | `agent` |
//! | what the fleet did | [`counters`] |
//! | Devices and token Secrets for a fleet | [`provision`] |

mod agent;
pub mod counters;
pub mod provision;
pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::Shutdown;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use counters::{Counters, Counts};
pub use provision::provision;
pub use spec::{DeviceProfile, FleetSpec, ModelRate, ModelShare, token_for, token_hash};

/// What stops a simulation from starting.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    #[error("the gateway URL {0:?} is not an http(s) URL")]
    GatewayUrl(String),
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A running simulated fleet.
#[derive(Debug)]
pub struct Simulation {
    counters: Arc<Counters>,
    devices: JoinSet<()>,
    online: usize,
}

impl Simulation {
    /// What the fleet did so far; keeps counting while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Devices that poll (the others are offline).
    pub fn online(&self) -> usize {
        self.online
    }

    /// Waits until every device stopped (after `stop`), then the final counts.
    pub async fn wait(mut self) -> Counts {
        while self.devices.join_next().await.is_some() {}
        self.counters.snapshot()
    }
}

/// Starts one task per online device; offline devices never poll.
pub fn start(spec: FleetSpec, stop: Shutdown) -> Result<Simulation, SimulatorError> {
    let url = &spec.gateway_url;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(SimulatorError::GatewayUrl(url.clone()));
    }
    let in_flight = spec.max_in_flight_requests.max(1);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(in_flight)
        .user_agent(concat!("flotilla-simulator/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SimulatorError::Client)?;
    let spec = Arc::new(spec);
    let counters = Arc::new(Counters::default());
    let requests = Arc::new(Semaphore::new(in_flight));
    let mut devices = JoinSet::new();
    for profile in spec.profiles().filter(|p| !p.offline) {
        let agent = agent::Agent::new(
            http.clone(),
            spec.clone(),
            profile,
            counters.clone(),
            requests.clone(),
            stop.clone(),
        );
        devices.spawn(agent.run());
    }
    let online = devices.len();
    tracing::info!(devices = spec.devices, online, gateway = %spec.gateway_url, "simulated fleet started");
    Ok(Simulation {
        counters,
        devices,
        online,
    })
}

/// Runs the fleet until `stop`: what `flotilla simulate-devices` calls.
pub async fn run(spec: FleetSpec, stop: Shutdown) -> Result<Counts, SimulatorError> {
    Ok(start(spec, stop)?.wait().await)
}
