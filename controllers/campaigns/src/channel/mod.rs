//! The Channel kind's delivery layer: how one [`Message`] goes out through one Channel, and
//! when it may. No Kubernetes I/O — the caller reads the Channel and its Secrets.
//!
//! | Piece | Decides |
//! |---|---|
//! | [`ChannelTransport`] | sends one message (Webhook, Slack, SMTP, Log) within `spec.timeout` |
//! | [`ChannelRateLimit`] | when the next message may go (`rateLimit`, shared by all Campaigns) |
//! | [`CircuitBreaker`] | whether to send at all while the channel keeps failing |
//!
//! A sender takes a [`ChannelRateLimit::acquire`] permit, asks [`CircuitBreaker::allow`],
//! sends, and [`CircuitBreaker::record`]s the outcome. Wire formats (headers, signature, JSON)
//! are in [`webhook`], [`slack`] and [`smtp`], and in `docs/crd-reference.md#channel`.

pub mod breaker;
mod http;
pub mod log;
mod message;
pub mod rate_limit;
pub mod slack;
pub mod smtp;
mod transport;
pub mod webhook;

pub use breaker::CircuitBreaker;
pub use message::{Addressee, ChannelCredentials, Message};
pub use rate_limit::{ChannelRateLimit, SendPermit};
pub use transport::{ChannelTransport, TransportError};
