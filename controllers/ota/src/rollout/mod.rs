//! The FirmwareRollout controller: a fixed plan of waves over the targeted Devices, at most
//! `maxInFlight` updating at once, stopped by itself when failures cross a threshold.

pub mod assign;
pub mod plan;
pub mod shards;
pub mod thresholds;
pub mod window;
