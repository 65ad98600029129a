//! The FirmwareRollout controller: a fixed plan of waves over the targeted Devices, at most
//! `maxInFlight` updating at once, stopped by itself when failures cross a threshold.
//!
//! Functional core (pure, unit-tested): `plan` (exclusions, order, waves, hash, timeline),
//! `shards` (the target set in ConfigMap-sized pieces), `window` (maintenance windows),
//! `thresholds` (overall, per wave, per cohort), `assign` (which devices next), `phase`
//! (the lifecycle and each reconcile's decision).

pub mod assign;
pub mod phase;
pub mod plan;
pub mod shards;
pub mod thresholds;
pub mod window;
