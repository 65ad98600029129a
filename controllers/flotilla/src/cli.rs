//! The `flotilla` command line: `run`, `dev` and `crds`. `main.rs` only calls [`main`].

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::ControllerName;
use crate::runtime::config::parse_duration;
use crate::runtime::leadership::{LeaseSettings, run_while_leading};
use crate::runtime::{Config, Operator, Shutdown, SystemClock, admin};
use flotilla_campaigns::unsubscribe::{ApiOptOut, Links, Signer};

/// Flotilla: Kubernetes operators for subscriptions, OTA firmware rollouts and campaigns.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FLOTILLA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter: a level (`info`, `debug`) or `tracing` directives (`flotilla=debug,kube=info`).
    #[arg(long, global = true, default_value = "info", env = "FLOTILLA_LOG")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the current kubeconfig context, or in-cluster.
    Run(OperatorArgs),
    /// Start an in-memory API server with the CRDs, write a kubeconfig for it, and run the
    /// operator, the device gateway and a simulated fleet against it (a local demo; Ctrl-C
    /// stops everything).
    Dev(DevArgs),
    /// Run the device gateway: hawkBit's Direct Device Integration API v1 in front of the
    /// Device objects (devices hold no Kubernetes credentials).
    Gateway(GatewayArgs),
    /// Run simulated devices that talk to the gateway's DDI API as real agents do.
    SimulateDevices(SimulateArgs),
    /// Print every CustomResourceDefinition as YAML.
    Crds,
}

/// Flags of `flotilla simulate-devices`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Create the Devices and token Secrets first (current kubeconfig context); existing
    /// ones are left alone.
    #[arg(long)]
    pub provision: bool,
    /// The fleet.
    #[command(flatten)]
    pub fleet: flotilla_simulator::FleetSpec,
}

/// Flags of `flotilla gateway` (defaults from `flotilla_gateway::GatewayConfig`).
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Address of the device API.
    #[arg(long, default_value = "0.0.0.0:8443", env = "FLOTILLA_GATEWAY_LISTEN")]
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,
    /// Namespaces (tenants) served, comma-separated; none serves every namespace.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Polling sleep handed to a device that has work (Go duration).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub poll_busy: Duration,
    /// Polling sleep handed to an idle device (Go duration).
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub poll_idle: Duration,
    /// `lastSeen` is written at most this often per device while nothing else changes.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub last_seen_resolution: Duration,
    /// Sustained requests per minute per device.
    #[arg(long, default_value = "120")]
    pub rate_per_minute: std::num::NonZeroU32,
    /// Requests per device allowed at once above the sustained rate.
    #[arg(long, default_value = "30")]
    pub rate_burst: std::num::NonZeroU32,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Base URL of the links in replies; from each request's Host header when unset.
    #[arg(long)]
    pub public_url: Option<String>,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl GatewayArgs {
    /// The gateway's configuration from the flags.
    pub fn config(&self) -> flotilla_gateway::GatewayConfig {
        flotilla_gateway::GatewayConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            namespaces: self.namespaces.clone(),
            polling: flotilla_gateway::PollingSleep {
                busy: self.poll_busy,
                idle: self.poll_idle,
            },
            last_seen_resolution: self.last_seen_resolution,
            rate_limit: flotilla_gateway::RateLimit {
                per_minute: self.rate_per_minute,
                burst: self.rate_burst,
            },
            body_limit: self.body_limit,
            public_url: self.public_url.clone(),
            tls: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(certificate, key)| flotilla_gateway::TlsFiles { certificate, key }),
            ..flotilla_gateway::GatewayConfig::default()
        }
    }
}

/// Flags of every command that runs the operator.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, default_value = "0.0.0.0:8080", env = "FLOTILLA_METRICS_ADDRESS")]
    pub metrics_address: SocketAddr,
    /// Which controllers to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ControllerName::ALL.to_vec())]
    pub controllers: Vec<ControllerName>,
    /// Objects each controller reconciles at the same time.
    #[arg(long, default_value_t = Config::default().concurrency, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// First retry delay after a transient reconcile error (Go duration: 500ms, 2s, ...).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest retry delay after repeated transient errors, jitter included.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub backoff_cap: Duration,
    /// How long the Subscription controller waits after the last event about a Subscription
    /// before reconciling it, so the events of its own writes wake one reconcile (Go duration).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Shortest retry delay after a `403 Forbidden` (RBAC not applied yet, a ResourceQuota
    /// refusing a child); later retries grow up to the cap.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub backoff_forbidden: Duration,
    /// Run controllers only while holding a Lease, so that several replicas can run.
    #[arg(long)]
    pub leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "flotilla-leader")]
    pub lease_name: String,
    /// How long the leader-election Lease stays valid without renewal: a standby takes over
    /// within about this long after a leader stops renewing (whole seconds, Go duration).
    #[arg(long, default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
    /// How long before the Lease expires the leader renews it (tolerated clock skew between
    /// replicas); less than --lease-duration.
    #[arg(long, default_value = "5s", value_parser = parse_lease_duration)]
    pub lease_renew_margin: Duration,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", required_if_eq("leader_election", "true"))]
    pub lease_namespace: Option<String>,
    /// This replica's name: the `reportingInstance` of its Events and its leader-election
    /// identity (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// Public base URL of the one-click unsubscribe endpoint (`https://news.example.com`):
    /// every campaign message links to `<url>/unsubscribe/<signed token>`. Without it messages
    /// carry no unsubscribe link.
    #[arg(
        long,
        env = "FLOTILLA_UNSUBSCRIBE_URL",
        requires = "unsubscribe_key_file"
    )]
    pub unsubscribe_url: Option<String>,
    /// File with the key that signs unsubscribe links (at least 32 bytes; mount it from a
    /// Secret, the same on every replica).
    #[arg(
        long,
        env = "FLOTILLA_UNSUBSCRIBE_KEY_FILE",
        requires = "unsubscribe_url"
    )]
    pub unsubscribe_key_file: Option<PathBuf>,
    /// Address the unsubscribe endpoint listens on (every replica serves it).
    #[arg(
        long,
        default_value = "0.0.0.0:8081",
        env = "FLOTILLA_UNSUBSCRIBE_ADDRESS"
    )]
    pub unsubscribe_address: SocketAddr,
    /// How long an unsubscribe link stays valid (Go duration).
    #[arg(long, default_value = "2160h", value_parser = parse_duration)]
    pub unsubscribe_validity: Duration,
}

impl OperatorArgs {
    fn config(&self) -> Config {
        Config {
            concurrency: self.concurrency,
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            debounce: self.debounce,
            forbidden_backoff: self.backoff_forbidden,
            reporting_instance: self.instance.clone(),
            ..Config::default()
        }
    }

    /// The unsubscribe signer and link base, when configured.
    fn unsubscribe(&self) -> anyhow::Result<Option<(Signer, Links)>> {
        let (Some(url), Some(key_file)) = (&self.unsubscribe_url, &self.unsubscribe_key_file)
        else {
            return Ok(None);
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            anyhow::bail!("--unsubscribe-url {url:?} must be an http(s) URL");
        }
        let key = std::fs::read(key_file)
            .with_context(|| format!("reading --unsubscribe-key-file {}", key_file.display()))?;
        let key = key.trim_ascii();
        let signer = Signer::new(key, self.unsubscribe_validity).with_context(|| {
            format!(
                "--unsubscribe-key-file {}: the key must be at least 32 bytes",
                key_file.display()
            )
        })?;
        let links = Links::new(url, signer.clone());
        Ok(Some((signer, links)))
    }

    fn lease(&self) -> anyhow::Result<Option<LeaseSettings>> {
        let Some(namespace) = self
            .lease_namespace
            .as_ref()
            .filter(|_| self.leader_election)
        else {
            return Ok(None);
        };
        if self.lease_renew_margin >= self.lease_duration {
            anyhow::bail!(
                "--lease-renew-margin ({:?}) must be shorter than --lease-duration ({:?})",
                self.lease_renew_margin,
                self.lease_duration
            );
        }
        Ok(Some(LeaseSettings {
            duration_seconds: self.lease_duration.as_secs(),
            grace_seconds: self.lease_renew_margin.as_secs(),
            ..LeaseSettings::new(
                self.lease_name.clone(),
                namespace.clone(),
                self.instance.clone(),
            )
        }))
    }
}

/// Flags of `flotilla dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where to write the kubeconfig of the in-memory API server.
    #[arg(long, default_value = "./flotilla-dev.kubeconfig")]
    pub kubeconfig_out: PathBuf,
    /// Simulated devices in namespace `fleet` (0: none).
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Do not start the device gateway (the fleet's Devices are created but not simulated).
    #[arg(long)]
    pub no_gateway: bool,
    /// The operator's flags.
    #[command(flatten)]
    pub operator: OperatorArgs,
}

/// Log line formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(cli.log_format, &cli.log_level) {
        eprintln!("flotilla: {error:#}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("flotilla: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flotilla: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// One line for an error and its causes. Many errors (kube's among them) already print their
/// cause in their own message; a cause whose text is already there is not repeated.
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// Runs one subcommand.
pub async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the cluster (kubeconfig or in-cluster service account)")?;
            run_operator(client, &args, Shutdown::on_process_signals()).await
        }
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Gateway(args) => {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the cluster (kubeconfig or in-cluster service account)")?;
            flotilla_gateway::run(args.config(), client, Shutdown::on_process_signals())
                .await
                .context("running the device gateway")
        }
        Command::SimulateDevices(args) => {
            if args.provision {
                let client = kube::Client::try_default()
                    .await
                    .context("connecting to the cluster to provision the fleet")?;
                flotilla_simulator::provision(&client, &args.fleet)
                    .await
                    .context("creating the Devices and token Secrets")?;
            }
            let counts = flotilla_simulator::run(args.fleet, Shutdown::on_process_signals())
                .await
                .context("simulating devices")?;
            tracing::info!(?counts, "simulated fleet stopped");
            Ok(())
        }
        Command::Crds => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(flotilla_crds::crds_yaml().as_bytes())
                .and_then(|()| stdout.flush())
            {
                // `flotilla crds | head` closes the pipe early; that is not a failure.
                Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(error).context("writing the CRDs to stdout")
                }
                _ => Ok(()),
            }
        }
    }
}

/// Runs the admin server and every controller against `client` until `shutdown` trips.
pub async fn run_operator(
    client: kube::Client,
    args: &OperatorArgs,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let lease = args.lease()?;
    let operator = Operator::new(
        client,
        args.config(),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .context("registering metrics")?;
    let (_, admin_server) = admin::serve(args.metrics_address, operator.admin_state())
        .await
        .with_context(|| format!("binding the admin server to {}", args.metrics_address))?;
    let mut campaigns = flotilla_campaigns::Settings::default();
    let unsubscribe_server = match args.unsubscribe()? {
        Some((signer, links)) => {
            campaigns.unsubscribe = Arc::new(move |_, subscription| links.link(subscription));
            let router = flotilla_campaigns::unsubscribe::router(
                signer,
                Arc::new(ApiOptOut(operator.client.clone())),
            );
            let listener = tokio::net::TcpListener::bind(args.unsubscribe_address)
                .await
                .with_context(|| {
                    format!(
                        "binding the unsubscribe endpoint to {}",
                        args.unsubscribe_address
                    )
                })?;
            tracing::info!(address = %args.unsubscribe_address, "unsubscribe endpoint listening");
            let stop = shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.signalled().await })
                    .await
            }))
        }
        None => None,
    };
    let controllers = args.controllers.clone();
    if controllers.contains(&ControllerName::Campaign)
        && !controllers.contains(&ControllerName::Channel)
    {
        anyhow::bail!(
            "--controllers: campaign sends through the Channels the channel controller checks; \
             add channel"
        );
    }
    let outcome = match lease {
        None => {
            crate::run_selected(&operator, &controllers, campaigns).await;
            Ok(())
        }
        Some(lease) => run_while_leading(&operator, &lease, |leading| async move {
            crate::run_selected(&leading, &controllers, campaigns).await;
        })
        .await
        .map_err(anyhow::Error::from),
    };
    // The controllers return on shutdown or on a lost Lease; stop serving either way.
    shutdown.trigger();
    admin_server
        .await
        .context("admin server task")?
        .context("admin server")?;
    if let Some(server) = unsubscribe_server {
        server
            .await
            .context("unsubscribe endpoint task")?
            .context("unsubscribe endpoint")?;
    }
    outcome
}

/// A Lease timing: a Go duration of whole seconds, at least one (the Lease counts seconds).
fn parse_lease_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 || duration.is_zero() {
        return Err(format!(
            "{text:?}: a Lease counts whole seconds, at least 1s"
        ));
    }
    Ok(duration)
}

fn init_logging(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("invalid --log-level {filter:?}"))?;
    // Colours only for a person at a terminal (and never with NO_COLOR): log files and
    // collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    installed.map_err(|error| anyhow::anyhow!("installing the log subscriber: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "flotilla",
            "--log-format",
            "json",
            "run",
            "--metrics-address",
            "127.0.0.1:9090",
            "--concurrency",
            "4",
        ])
        .expect("parse");
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.metrics_address, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(args.config().concurrency, 4);
    }

    #[test]
    fn the_charts_arguments_parse() {
        let cli = Cli::try_parse_from([
            "flotilla",
            "run",
            "--metrics-address=0.0.0.0:8080",
            "--log-level=info",
            "--log-format=json",
            "--controllers=plan",
            "--concurrency=16",
            "--backoff-base=500ms",
            "--backoff-cap=5m",
            "--debounce=100ms",
            "--backoff-forbidden=30s",
            "--leader-election",
            "--lease-name=flotilla-leader",
            "--lease-namespace=flotilla-system",
            "--instance=flotilla-abc",
        ])
        .expect("parse");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.controllers, [ControllerName::Plan]);
        let config = args.config();
        assert_eq!(config.backoff_base, Duration::from_millis(500));
        assert_eq!(config.backoff_cap, Duration::from_secs(300));
        assert_eq!(config.debounce, Duration::from_millis(100));
        assert_eq!(config.forbidden_backoff, Duration::from_secs(30));
        assert_eq!(
            config,
            Config {
                concurrency: 16,
                reporting_instance: Some("flotilla-abc".to_owned()),
                ..Config::default()
            },
            "the chart's values are the defaults"
        );
        let lease = args.lease().expect("valid").expect("leader election");
        assert_eq!(lease.namespace, "flotilla-system");
        assert_eq!(lease.identity.as_deref(), Some("flotilla-abc"));
        assert_eq!(
            (lease.duration_seconds, lease.grace_seconds),
            (15, 5),
            "the chart's timing is the library's default"
        );
        let defaults = LeaseSettings::new("x", "y", None);
        assert_eq!((defaults.duration_seconds, defaults.grace_seconds), (15, 5));
    }

    #[test]
    fn the_lease_timing_is_configurable() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "flotilla",
                "run",
                "--leader-election",
                "--lease-namespace=flotilla-system",
            ];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).map(|cli| match cli.command {
                Command::Run(args) => args,
                _ => panic!("not run"),
            })
        };
        let args = parse(&["--lease-duration=4s", "--lease-renew-margin=1s"]).expect("parse");
        let lease = args.lease().expect("valid").expect("leader election");
        assert_eq!((lease.duration_seconds, lease.grace_seconds), (4, 1));
        assert!(
            parse(&["--lease-duration=1500ms"]).is_err(),
            "whole seconds"
        );
        assert!(
            parse(&["--lease-duration=0s"]).is_err(),
            "at least one second"
        );
        let margin_too_long = parse(&["--lease-duration=3s", "--lease-renew-margin=3s"])
            .expect("parse")
            .lease();
        assert!(
            margin_too_long.is_err(),
            "the margin is shorter than the Lease"
        );
    }

    #[test]
    fn the_gateway_flags_default_to_the_gateways_defaults() {
        let cli = Cli::try_parse_from(["flotilla", "gateway"]).expect("parse");
        let Command::Gateway(args) = cli.command else {
            panic!("not gateway")
        };
        let config = args.config();
        let defaults = flotilla_gateway::GatewayConfig::default();
        assert_eq!(config.listen, defaults.listen);
        assert_eq!(config.admin_listen, defaults.admin_listen);
        assert_eq!(config.polling, defaults.polling);
        assert_eq!(config.last_seen_resolution, defaults.last_seen_resolution);
        assert_eq!(config.rate_limit, defaults.rate_limit);
        assert_eq!(config.body_limit, defaults.body_limit);
        assert_eq!(config.tls, None);

        let cli = Cli::try_parse_from([
            "flotilla",
            "gateway",
            "--namespaces=fleet-a,fleet-b",
            "--tls-cert=/tls/tls.crt",
            "--tls-key=/tls/tls.key",
            "--poll-idle=1h",
        ])
        .expect("parse");
        let Command::Gateway(args) = cli.command else {
            panic!("not gateway")
        };
        let config = args.config();
        assert_eq!(config.namespaces, ["fleet-a", "fleet-b"]);
        assert_eq!(config.polling.idle, Duration::from_secs(3600));
        assert!(config.tls.is_some());
        assert!(
            Cli::try_parse_from(["flotilla", "gateway", "--tls-cert=/tls/tls.crt"]).is_err(),
            "a certificate needs its key"
        );
    }

    #[test]
    fn without_leader_election_there_is_no_lease() {
        let cli = Cli::try_parse_from(["flotilla", "run", "--lease-namespace=x"]).expect("parse");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.lease().expect("valid"), None);
        assert_eq!(args.controllers, ControllerName::ALL);
    }

    #[test]
    fn bad_durations_are_refused() {
        assert!(Cli::try_parse_from(["flotilla", "run", "--backoff-cap=forever"]).is_err());
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("inner failure")]
        struct Inner;
        #[derive(Debug, thiserror::Error)]
        #[error("outer failure: {0}")]
        struct Outer(#[source] Inner);
        let error = anyhow::Error::from(Outer(Inner)).context("starting");
        assert_eq!(describe(&error), "starting: outer failure: inner failure");
    }

    #[test]
    fn zero_concurrency_is_refused() {
        assert!(Cli::try_parse_from(["flotilla", "run", "--concurrency", "0"]).is_err());
    }

    #[test]
    fn dev_has_a_default_kubeconfig_path() {
        let cli = Cli::try_parse_from(["flotilla", "dev"]).expect("parse");
        let Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        assert_eq!(
            args.kubeconfig_out,
            PathBuf::from("./flotilla-dev.kubeconfig")
        );
        assert_eq!(args.devices, 200);
        assert!(!args.no_gateway);
        let cli = Cli::try_parse_from(["flotilla", "dev", "--devices", "0", "--no-gateway"])
            .expect("parse");
        let Command::Dev(args) = cli.command else {
            panic!("not dev")
        };
        assert_eq!(args.devices, 0);
        assert!(args.no_gateway);
    }
}
