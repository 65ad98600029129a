//! Flotilla: Kubernetes operators for subscriptions, OTA firmware rollouts and campaigns.
//!
//! This crate wires the domain crates into one binary; it decides nothing itself.
//!
//! - [`runtime`] (crate `flotilla-runtime`): the machinery every controller shares.
//! - [`subscriptions`] (crate `flotilla-subscriptions`): the Plan and Subscription controllers.
//! - [`cli`]: the `flotilla` command line; [`dev`]: `flotilla dev`.
//! - [`plugin`]: the kubectl plugin `kubectl-flotilla` (`kubectl flotilla rollout status ...`).

pub mod cli;
pub mod dev;
pub mod plugin;

pub use flotilla_runtime as runtime;
pub use flotilla_runtime::testing;
pub use flotilla_subscriptions as subscriptions;

use runtime::Operator;

/// The `flotilla` process: the kubectl plugin when invoked as `kubectl-flotilla`, the command
/// line ([`cli::main`]) otherwise. `main.rs` only calls this, and so does the chaos suite's
/// copy of the binary (`tests/chaos`), so both run exactly the same code.
pub fn main() -> std::process::ExitCode {
    flotilla_runtime::crypto::use_ring();
    if plugin::invoked_as_plugin(std::env::args_os().next()) {
        return plugin::main();
    }
    cli::main()
}

/// The controllers this binary can run (`flotilla run --controllers ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ControllerName {
    /// Plans: validation, subscription counts, deletion protection.
    Plan,
    /// Subscriptions: tenant namespaces, quotas, trial, payment, suspension, cancellation.
    Subscription,
    /// FirmwareReleases: validation, device counts, deletion protection while rollouts use them.
    Release,
    /// FirmwareRollouts: waves over the fleet, thresholds, rollback.
    Rollout,
    /// Channels: configuration and Secret checks, deletion protection while campaigns use them.
    Channel,
    /// Campaigns: audience, schedule, delivery through the ledger. Needs `channel` (it sends
    /// through the Channels that controller checks).
    Campaign,
}

impl ControllerName {
    /// Every controller.
    pub const ALL: &'static [ControllerName] = &[
        ControllerName::Plan,
        ControllerName::Subscription,
        ControllerName::Release,
        ControllerName::Rollout,
        ControllerName::Channel,
        ControllerName::Campaign,
    ];
}

/// Runs every controller until the operator's shutdown signal trips, then waits for their
/// in-flight reconciles to finish.
pub async fn run_controllers(operator: &Operator) {
    run_selected(
        operator,
        ControllerName::ALL,
        flotilla_campaigns::Settings::default(),
    )
    .await;
}

/// Runs the `selected` controllers side by side until the operator's shutdown signal trips. A
/// controller that is not selected does not run; the watches it would share with a selected
/// one still feed that one.
pub async fn run_selected(
    operator: &Operator,
    selected: &[ControllerName],
    campaigns: flotilla_campaigns::Settings,
) {
    let selection = subscriptions::Selection {
        plan: selected.contains(&ControllerName::Plan),
        subscription: selected.contains(&ControllerName::Subscription),
    };
    let ota = flotilla_ota::run(
        operator,
        flotilla_ota::Selection {
            release: selected.contains(&ControllerName::Release),
            rollout: selected.contains(&ControllerName::Rollout),
        },
    );
    let campaigns = flotilla_campaigns::run(
        operator,
        flotilla_campaigns::Selection {
            channel: selected.contains(&ControllerName::Channel),
            campaign: selected.contains(&ControllerName::Campaign),
        },
        campaigns,
    );
    futures::join!(
        subscriptions::run_selected(operator, selection),
        ota,
        campaigns
    );
}
