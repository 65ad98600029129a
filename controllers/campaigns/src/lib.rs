//! Flotilla's Campaigns domain: a `Campaign` sends messages to Subscriptions over `Channel`s.
//!
//! This crate starts with the pure core every delivery decision is made of — who gets which
//! variant or is held out ([`campaign::allocation`]), when a recipient may be messaged
//! ([`campaign::quiet_hours`]) and what the message says ([`campaign::template`]) — so each is
//! tested without a server before the controllers are built on it. [`channel`] is how a
//! message goes out: the transports, each Channel's rate limit and its circuit breaker.

pub mod campaign;
pub mod channel;
