//! The Campaign kind: its pure decisions.

pub mod allocation;
pub mod phase;
pub mod quiet_hours;
pub mod retry;
pub mod template;
