//! The kubectl plugin `kubectl-flotilla`: `kubectl flotilla rollout status|pause|resume|abort|
//! approve`, `kubectl flotilla fleet versions` and `kubectl flotilla campaign status|pause|
//! resume`. kubectl runs any `kubectl-<name>` on PATH
//! for `kubectl <name>`; the `flotilla` binary is the plugin too when installed or linked
//! under that name ([`invoked_as_plugin`]).
//!
//! | Concern | Module |
//! |---|---|
//! | `rollout status` (pure [`rollout_status::render`], watch) | [`rollout_status`] |
//! | `rollout pause/resume/abort/approve` (merge patches on spec) | [`control`] |
//! | `fleet versions` (pure [`fleet::FleetVersions`]) | [`fleet`] |
//! | `campaign status/pause/resume` (pure [`campaign::render`]) | [`campaign`] |
//! | `subscription usage` (pure [`usage::render`]) | [`usage`] |
//! | aligned text tables | [`table`] |
//!
//! Commands are library functions taking a `kube::Client`, a namespace and a writer, so tests
//! run them against the sandbox and read what they printed. See `docs/kubectl-plugin.md`.

pub mod campaign;
pub mod control;
pub mod fleet;
pub mod rollout_status;
pub mod table;
pub mod usage;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The plugin's executable name; kubectl finds it on PATH by it.
pub const PLUGIN_NAME: &str = "kubectl-flotilla";

/// Whether the process was started as `kubectl-flotilla` (argv\[0\], with or without a
/// directory or `.exe`).
pub fn invoked_as_plugin(argv0: Option<OsString>) -> bool {
    argv0
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_stem)
        .is_some_and(|stem| stem == PLUGIN_NAME)
}

/// `kubectl flotilla`: watch and steer FirmwareRollouts, and see what a fleet runs.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl flotilla",
    bin_name = "kubectl flotilla",
    version,
    about
)]
pub struct PluginCli {
    /// How to reach the cluster.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Cluster connection flags, as kubectl spells them.
#[derive(Clone, Debug, Default, Args)]
pub struct Connection {
    /// Namespace; defaults to the kubeconfig context's namespace, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Path of the kubeconfig file; defaults to $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; defaults to its current context.
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// The plugin's subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// FirmwareRollouts: status, pause, resume, abort, approve.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Devices: what the fleet runs.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Campaigns: status, pause, resume.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Subscriptions: quota usage.
    #[command(subcommand)]
    Subscription(SubscriptionCommand),
}

/// `kubectl flotilla subscription ...`
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Quota usage against the plan's entitlements, in total and per tenant namespace.
    Usage {
        /// The Subscription (cluster-scoped).
        name: String,
    },
}

/// `kubectl flotilla campaign ...`
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Print a Campaign's progress: counts per variant and Channel, rate, ETA, failure
    /// reasons, conditions.
    Status {
        /// The Campaign.
        name: String,
        /// Keep watching and reprint on every change until the campaign ends; exits 1 when it
        /// ends Failed or Cancelled.
        #[arg(short, long)]
        watch: bool,
    },
    /// Pause sending (spec.suspend=true); what is in flight finishes.
    Pause {
        /// The Campaign.
        name: String,
    },
    /// Resume sending (spec.suspend=false and a new spec.resume, which also ends a
    /// failure-threshold pause).
    Resume {
        /// The Campaign.
        name: String,
    },
}

/// `kubectl flotilla rollout ...`
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Print a FirmwareRollout's progress: waves, cohorts, failures, conditions, plan.
    Status {
        /// The FirmwareRollout.
        name: String,
        /// Keep watching and reprint on every change until the rollout finishes; exits 1
        /// when it ends Failed, Aborted or RolledBack.
        #[arg(short, long)]
        watch: bool,
    },
    /// Hold the rollout: no new assignments (spec.paused=true).
    Pause {
        /// The FirmwareRollout.
        name: String,
    },
    /// Lift spec.paused and end a wave or failure-threshold pause (a new spec.resume).
    Resume {
        /// The FirmwareRollout.
        name: String,
    },
    /// Stop the rollout for good (spec.abort=true); this cannot be undone.
    Abort {
        /// The FirmwareRollout.
        name: String,
    },
    /// Print the plan and approve it (spec.approvedPlanHash = status.plan.hash).
    Approve {
        /// The FirmwareRollout.
        name: String,
        /// Approve without asking (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
}

/// `kubectl flotilla fleet ...`
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Devices per model and firmware version, with how many are updating, failed, offline.
    Versions {
        /// Label selector over Devices (`site=berlin,ring!=canary`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
}

/// Parses the command line and runs it (the `kubectl-flotilla` binary's `main`).
pub fn main() -> ExitCode {
    let cli = PluginCli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(execute(cli, &mut stdout)) {
        Ok(outcome) => {
            let _ = stdout.flush();
            ExitCode::from(outcome.exit_code())
        }
        // `kubectl flotilla fleet versions | head` closes the pipe early; that is not a failure.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = stdout.flush();
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// How a command ended, as an exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done (for `status -w`: the rollout Succeeded, the campaign Completed). Exit 0.
    Done,
    /// `status -w` saw the rollout end Failed, Aborted or RolledBack, or the campaign end
    /// Failed or Cancelled. Exit 1.
    Unsuccessful,
    /// Ctrl-C ended a watch before the rollout finished. Exit 130, as shells report SIGINT.
    Interrupted,
}

impl Outcome {
    /// The process exit status.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::Unsuccessful => 1,
            Outcome::Interrupted => 130,
        }
    }
}

/// Connects as the flags say and runs the command, printing to `out`.
pub async fn execute(cli: PluginCli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let (client, default_namespace) = connect(&cli.connection).await?;
    let namespace = cli.connection.namespace.unwrap_or(default_namespace);
    run(&client, &namespace, cli.command, out).await
}

/// Runs one command against `client` in `namespace`.
pub async fn run(
    client: &kube::Client,
    namespace: &str,
    command: PluginCommand,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    match command {
        PluginCommand::Rollout(RolloutCommand::Status { name, watch }) => {
            let options = rollout_status::StatusOptions {
                watch,
                clear_screen: watch && terminal,
            };
            rollout_status::status(client, namespace, &name, options, out).await
        }
        PluginCommand::Rollout(RolloutCommand::Pause { name }) => {
            control::pause(client, namespace, &name, out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Rollout(RolloutCommand::Resume { name }) => {
            control::resume(client, namespace, &name, out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Rollout(RolloutCommand::Abort { name }) => {
            control::abort(client, namespace, &name, out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Rollout(RolloutCommand::Approve { name, yes }) => {
            let confirm = if yes {
                control::Confirmation::Given
            } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                control::Confirmation::Ask
            } else {
                control::Confirmation::Unavailable
            };
            control::approve(client, namespace, &name, confirm, out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Fleet(FleetCommand::Versions { selector }) => {
            fleet::versions(client, namespace, selector.as_deref(), out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Campaign(CampaignCommand::Status { name, watch }) => {
            campaign::status(client, namespace, &name, watch, out).await
        }
        PluginCommand::Campaign(CampaignCommand::Pause { name }) => {
            campaign::pause(client, namespace, &name, out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Campaign(CampaignCommand::Resume { name }) => {
            campaign::resume(client, namespace, &name, out).await?;
            Ok(Outcome::Done)
        }
        PluginCommand::Subscription(SubscriptionCommand::Usage { name }) => {
            usage::usage(client, &name, out).await?;
            Ok(Outcome::Done)
        }
    }
}

/// A client as kubectl would connect: `--kubeconfig`, else kube's inference ($KUBECONFIG,
/// ~/.kube/config, in-cluster), with `--context`; and the context's default namespace.
async fn connect(connection: &Connection) -> anyhow::Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: connection.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&connection.kubeconfig, &connection.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("loading the kubeconfig {}", path.display()))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .context("loading the kubeconfig")?,
        (None, None) => kube::Config::infer().await.context(
            "finding a kubeconfig ($KUBECONFIG, ~/.kube/config) or an in-cluster account",
        )?,
    };
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}

/// `kind.group/name`, as kubectl names what it changed.
pub(crate) fn object_ref(name: &str) -> String {
    format!("firmwarerollout.{}/{name}", flotilla_crds::GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        PluginCli::command().debug_assert();
    }

    #[test]
    fn the_binary_name_selects_the_plugin() {
        for argv0 in [
            "kubectl-flotilla",
            "/usr/local/bin/kubectl-flotilla",
            "C:\\bin\\kubectl-flotilla.exe",
        ] {
            let argv0 = argv0.replace('\\', std::path::MAIN_SEPARATOR_STR);
            assert!(invoked_as_plugin(Some(argv0.clone().into())), "{argv0}");
        }
        for argv0 in ["flotilla", "/usr/bin/flotilla", "kubectl-flotillax"] {
            assert!(!invoked_as_plugin(Some(argv0.into())), "{argv0}");
        }
        assert!(!invoked_as_plugin(None));
    }

    #[test]
    fn flags_parse_as_kubectl_spells_them() {
        let cli = PluginCli::try_parse_from([
            "kubectl-flotilla",
            "rollout",
            "status",
            "spring",
            "-n",
            "fleet",
            "-w",
        ])
        .expect("parse");
        assert_eq!(cli.connection.namespace.as_deref(), Some("fleet"));
        let PluginCommand::Rollout(RolloutCommand::Status { name, watch }) = cli.command else {
            panic!("not rollout status")
        };
        assert_eq!(name, "spring");
        assert!(watch);

        let cli = PluginCli::try_parse_from([
            "kubectl-flotilla",
            "--kubeconfig",
            "/tmp/k",
            "fleet",
            "versions",
            "-l",
            "site=berlin",
        ])
        .expect("parse");
        assert_eq!(cli.connection.kubeconfig, Some(PathBuf::from("/tmp/k")));
        let PluginCommand::Fleet(FleetCommand::Versions { selector }) = cli.command else {
            panic!("not fleet versions")
        };
        assert_eq!(selector.as_deref(), Some("site=berlin"));
        assert!(PluginCli::try_parse_from(["kubectl-flotilla", "rollout", "approve"]).is_err());
    }

    #[test]
    fn a_closed_stdout_is_no_failure() {
        let error = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing to stdout");
        assert!(is_broken_pipe(&error));
        assert!(!is_broken_pipe(&anyhow::anyhow!("not found")));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Outcome::Done.exit_code(), 0);
        assert_eq!(Outcome::Unsuccessful.exit_code(), 1);
        assert_eq!(Outcome::Interrupted.exit_code(), 130);
    }
}
