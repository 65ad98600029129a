//! The Channel kind's delivery layer: how one [`Message`] goes out through one Channel, and
//! when it may. No Kubernetes I/O — the caller reads the Channel and its Secrets.
//!
//! | Piece | Decides |
//! |---|---|
//! | [`ChannelTransport`] | sends one message (Webhook, Slack, SMTP, Log) within `spec.timeout` |
//! | [`ChannelRateLimit`] | when the next message may go (`rateLimit`, shared by all Campaigns) |
//! | [`CircuitBreaker`] | whether to send at all while the channel keeps failing |
//! | [`ChannelDelivery`] | the three together, in the right order, per Channel |
//!
//! A sender calls [`ChannelDelivery::deliver`]: held while the breaker is open, else a rate
//! permit, a send, and the outcome recorded with the breaker. Wire formats (headers, signature, JSON)
//! are in [`webhook`], [`slack`] and [`smtp`], and in `docs/crd-reference.md#channel`.

pub mod breaker;
mod delivery;
mod http;
pub mod log;
mod message;
pub mod rate_limit;
pub mod slack;
pub mod smtp;
mod transport;
pub mod webhook;

pub use breaker::CircuitBreaker;
pub use delivery::{Attempt, ChannelDelivery};
pub use message::{Addressee, ChannelCredentials, Message};
pub use rate_limit::{ChannelRateLimit, SendPermit};
pub use transport::{ChannelTransport, TransportError};
