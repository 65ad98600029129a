//! Flotilla's Campaigns domain: a `Campaign` sends messages to Subscriptions over `Channel`s.
//!
//! This crate starts with the pure core every delivery decision is made of — who gets which
//! variant or is held out ([`campaign::allocation`]), when a recipient may be messaged
//! ([`campaign::quiet_hours`]) and what the message says ([`campaign::template`]) — so each is
//! tested without a server before the controllers are built on it — and the delivery ledger
//! ([`ledger`]) that makes sending survive crashes without skipping or repeating anyone.

pub mod campaign;
pub mod ledger;
