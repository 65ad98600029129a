//! Flotilla's device gateway (`flotilla gateway`): Eclipse hawkBit's Direct Device Integration
//! API v1 in front of Device objects, so fleets running a hawkBit agent move to Flotilla
//! without touching a device. Tenant = namespace, controllerId = Device name.
//!
//! Stateless (any replica serves any device): it reads Devices, FirmwareReleases and the
//! device- and gateway-token Secrets from watch caches, never per request, creates the Devices
//! a gateway token enrolls (unapproved), and writes a Device's status
//! (server-side apply, field manager `flotilla-gateway`) only when a report changes it, or
//! when `lastSeen` is older than its resolution.
//!
//! | Concern | Module |
//! |---|---|
//! | DDI JSON | [`ddi`] |
//! | what a device is offered (pure) | [`offer`] |
//! | what a report does to the status (pure) | [`report`] |
//! | tokens | [`auth`] |
//! | the watch caches | [`fleet`], `listed`, `packed` |
//! | routes, limits, writes | [`server`] |

pub mod auth;
pub mod ddi;
pub mod fleet;
mod listed;
pub mod metrics;
pub mod offer;
mod packed;
pub mod report;
pub mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla_runtime::admin::{self, AdminState};
use flotilla_runtime::metrics::Metrics;
use flotilla_runtime::readiness::Readiness;
use flotilla_runtime::{Config, SharedClock, Shutdown, SystemClock};
use kube::Client;

pub use fleet::{ENROLLED_BY_ANNOTATION, GATEWAY_TOKEN_LABEL, TOKEN_SECRET_LABEL};
pub use offer::PollingSleep;
pub use server::{FIELD_MANAGER, RateLimit};

/// How `flotilla gateway` runs.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Address of the device API.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz` (kept off the device-facing port).
    pub admin_listen: SocketAddr,
    /// Namespaces (tenants) served; empty serves every namespace, which needs a ClusterRole
    /// that lists Secrets cluster-wide (see docs/gateway-api.md).
    pub namespaces: Vec<String>,
    /// Polling sleeps handed to devices.
    pub polling: PollingSleep,
    /// `lastSeen` is written at most this often per device while nothing else changes.
    pub last_seen_resolution: Duration,
    /// Per-device request rate.
    pub rate_limit: RateLimit,
    /// Largest request body, in bytes; larger ones get `413`.
    pub body_limit: usize,
    /// Base URL of the links in replies (`https://gateway.example.com`); from each request's
    /// `Host` when unset.
    pub public_url: Option<String>,
    /// Serve TLS with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// Page size of the watches' lists.
    pub watch_page_size: u32,
}

/// PEM files of the gateway's TLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            namespaces: Vec::new(),
            polling: PollingSleep::default(),
            last_seen_resolution: Duration::from_secs(300),
            rate_limit: RateLimit::default(),
            body_limit: 64 * 1024,
            public_url: None,
            tls: None,
            watch_page_size: Config::default().watch_page_size,
        }
    }
}

impl GatewayConfig {
    /// A gateway on loopback, on free ports, serving `namespace`: the local demo, the tests
    /// and the benchmarks run it beside their fleet on one machine.
    pub fn loopback(namespace: &str) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            listen: loopback,
            admin_listen: loopback,
            namespaces: vec![namespace.to_owned()],
            ..Self::default()
        }
    }

    /// Devices poll and `lastSeen` moves every second (DDI sleeps are whole seconds), under a
    /// rate limit no such fleet meets: for tests whose devices must react at once.
    pub fn polling_every_second(self) -> Self {
        let second = Duration::from_secs(1);
        Self {
            polling: PollingSleep {
                busy: second,
                idle: second,
            },
            last_seen_resolution: second,
            rate_limit: RateLimit {
                per_minute: std::num::NonZeroU32::new(6000).expect("non-zero"),
                burst: std::num::NonZeroU32::new(100).expect("non-zero"),
            },
            ..self
        }
    }
}

/// What can stop the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("registering the gateway's metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("serving {what} on {address}")]
    Serve {
        what: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the TLS certificate and key")]
    Tls(#[source] std::io::Error),
}

/// A started gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where the device API listens.
    pub address: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub admin_address: SocketAddr,
    /// Every cache's state, as `/readyz` reports it.
    pub readiness: Readiness,
    /// The process metrics (`/metrics`).
    pub metrics: Metrics,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Waits until the device API stops (after `shutdown`).
    pub async fn wait(self) -> Result<(), GatewayError> {
        let address = self.address;
        match self.served.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(GatewayError::Serve {
                what: "the device API",
                address,
                source,
            }),
            Err(join) => Err(GatewayError::Serve {
                what: "the device API",
                address,
                source: std::io::Error::other(join),
            }),
        }
    }
}

/// Runs the gateway until `shutdown`: what `flotilla gateway` calls.
pub async fn run(
    config: GatewayConfig,
    client: Client,
    shutdown: Shutdown,
) -> Result<(), GatewayError> {
    start(config, client, Arc::new(SystemClock), shutdown)
        .await?
        .wait()
        .await
}

/// Starts the watches, the admin server and the device API; returns once both listen.
pub async fn start(
    config: GatewayConfig,
    client: Client,
    clock: SharedClock,
    shutdown: Shutdown,
) -> Result<Gateway, GatewayError> {
    let metrics = Metrics::new()?;
    let gateway_metrics = metrics::GatewayMetrics::register(metrics.registry())?;
    let readiness = Readiness::new();
    let watch_config = Config {
        watch_page_size: config.watch_page_size,
        ..Config::default()
    };
    let fleet = fleet::Fleet::start(
        &client,
        &config.namespaces,
        &watch_config,
        &readiness,
        &shutdown,
    );
    let (admin_address, _admin) = admin::serve(
        config.admin_listen,
        AdminState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            shutdown: shutdown.clone(),
        },
    )
    .await
    .map_err(|source| GatewayError::Serve {
        what: "the admin endpoints",
        address: config.admin_listen,
        source,
    })?;
    let limiter = Arc::new(server::DeviceLimiter::new(config.rate_limit));
    let pruned = limiter.clone();
    let stop = shutdown.clone();
    // The limiter keeps a cell per device; devices that went quiet are forgotten.
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        while !stop.is_triggered() {
            every.tick().await;
            pruned.forget_quiet();
        }
    });
    let state = server::AppState {
        fleet,
        client,
        clock,
        metrics: gateway_metrics,
        sleep: config.polling,
        last_seen_resolution: config.last_seen_resolution,
        public_url: config.public_url.clone(),
        tls: config.tls.is_some(),
        limiter,
    };
    let app = server::router(state, config.body_limit).into_make_service();
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    let signalled = shutdown.signalled();
    tokio::spawn(async move {
        signalled.await;
        stopping.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let served = match &config.tls {
        Some(files) => {
            flotilla_runtime::crypto::use_ring();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(
                &files.certificate,
                &files.key,
            )
            .await
            .map_err(GatewayError::Tls)?;
            let server = axum_server::bind_rustls(config.listen, tls).handle(handle.clone());
            tokio::spawn(server.serve(app))
        }
        None => {
            let server = axum_server::bind(config.listen).handle(handle.clone());
            tokio::spawn(server.serve(app))
        }
    };
    let Some(address) = handle.listening().await else {
        let source = match served.await {
            Ok(Err(error)) => error,
            _ => std::io::Error::other("the listener did not start"),
        };
        return Err(GatewayError::Serve {
            what: "the device API",
            address: config.listen,
            source,
        });
    };
    tracing::info!(%address, tls = config.tls.is_some(), "device gateway listening (hawkBit DDI v1)");
    Ok(Gateway {
        address,
        admin_address,
        readiness,
        metrics,
        served,
    })
}
