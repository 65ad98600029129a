//! The Subscriptions domain: Plans and the Subscriptions that use them.

pub mod plan;
pub mod subscription;
