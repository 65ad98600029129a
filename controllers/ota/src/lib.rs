//! Flotilla's OTA domain: FirmwareReleases, Device twins and the FirmwareRollouts that move a
//! release across a fleet in waves. Depends on the runtime and the API types only.

pub mod release;
pub mod rollout;
