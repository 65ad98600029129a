//! Flotilla: Kubernetes operators for subscriptions, OTA firmware rollouts and campaigns.
//!
//! - [`runtime`]: the machinery every controller shares.
//! - [`subscriptions`]: the Plan controller (and, next, Subscriptions).
//! - [`cli`]: the `flotilla` command line; [`dev`]: `flotilla dev`.

pub mod cli;
pub mod dev;
pub mod runtime;
pub mod subscriptions;
pub mod testing;

use runtime::Operator;

/// The controllers this binary can run (`flotilla run --controllers ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ControllerName {
    /// Plans: validation, subscription counts, deletion protection.
    Plan,
}

impl ControllerName {
    /// Every controller.
    pub const ALL: &'static [ControllerName] = &[ControllerName::Plan];
}

/// Runs every controller until the operator's shutdown signal trips, then waits for their
/// in-flight reconciles to finish.
pub async fn run_controllers(operator: &Operator) {
    run_selected(operator, ControllerName::ALL).await;
}

/// Runs the `selected` controllers side by side until the operator's shutdown signal trips.
pub async fn run_selected(operator: &Operator, selected: &[ControllerName]) {
    let running = selected.iter().map(|name| match name {
        ControllerName::Plan => subscriptions::plan::run(operator),
    });
    futures::future::join_all(running).await;
}
