//! Flotilla's chaos and fault harness (see `docs/chaos.md`): the operator runs as its own OS
//! process — the real `flotilla run`, against an RBAC-enforcing sandbox through a kubeconfig
//! file, as its ServiceAccount bound by `config/rbac/` — while Subscriptions, a FirmwareRollout
//! (with the real gateway and a simulated fleet) and a Campaign (to a webhook receiver in this
//! process) progress. The tests SIGKILL it at seeded random moments and inject API faults;
//! [`World::check`] then asserts the invariants on what the sandbox, the Devices and the
//! receiver show, and returns them as figures.
//!
//! - [`process`]: one operator process, started and SIGKILLed.
//! - [`World`]: the sandbox, gateway, fleet, receiver and workload.
//! - [`faults`]: the API faults, drawn from a seeded [`Rng`].
//! - [`invariants`]: the checks and the [`Figures`] table.

pub mod faults;
pub mod invariants;
pub mod process;
mod world;

pub use flotilla_testkit::chaos::Rng;
pub use invariants::Figures;
pub use world::{Workload, World};

/// The environment variable that sets how many SIGKILLs the kill test delivers (default in
/// the test, at least 20).
pub const KILLS_ENV: &str = "FLOTILLA_CHAOS_KILLS";

/// [`KILLS_ENV`], or `default`.
pub fn kills_from_env(default: usize) -> usize {
    std::env::var(KILLS_ENV)
        .ok()
        .map(|s| s.parse().expect("FLOTILLA_CHAOS_KILLS is a number"))
        .unwrap_or(default)
}
