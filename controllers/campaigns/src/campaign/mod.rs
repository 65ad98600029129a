//! The Campaign kind: its pure decisions.

pub mod allocation;
pub mod audience;
pub mod phase;
pub mod preview;
pub mod quiet_hours;
pub mod retry;
pub mod template;
