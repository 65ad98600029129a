//! The Channel kind: how a message goes out through a Channel, and the controller that says
//! whether it may.
//!
//! Delivery (no Kubernetes I/O — the caller reads the Channel and its Secrets):
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
//!
//! The controller ([`controller`]) checks a Channel and its Secrets and sets `Ready`, keeps a
//! Channel that live campaigns use from being deleted (finalizer `flotilla.dev/cleanup`), and
//! publishes usable Channels to the [`registry::Registry`] campaigns send through. It wakes,
//! all from shared watches, on its own Channels (spec, deletion, finalizers); on Secrets
//! labelled [`secrets::CHANNEL_SECRET_LABEL`] through [`crate::index::ChannelsBySecret`]; on
//! Campaigns through [`crate::index::LiveCampaignsByChannel`].

pub mod breaker;
pub mod deliveries;
mod delivery;
mod http;
pub mod log;
mod message;
pub mod phase;
pub mod rate_limit;
pub mod reconcile;
pub mod registry;
pub mod secrets;
pub mod slack;
pub mod smtp;
pub mod status;
mod transport;
pub mod webhook;

pub use breaker::CircuitBreaker;
pub use delivery::{Attempt, ChannelDelivery};
pub use message::{Addressee, ChannelCredentials, Message};
pub use rate_limit::{ChannelRateLimit, SendPermit};
pub use transport::{ChannelTransport, TransportError};

use flotilla_crds::Channel;
use futures::future::BoxFuture;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use flotilla_runtime::context::Operator;
use flotilla_runtime::controller::Parts;
use flotilla_runtime::watch::SharedWatch;
use reconcile::ChannelState;

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "channel";

/// A Channel to reconcile.
pub type ChannelRef = ObjectRef<DeserializeGuard<Channel>>;

/// Builds the Channel controller on the process's shared watches; the returned future runs it
/// until the operator's shutdown signal. `related` are the Channels other watches woke.
pub fn controller<'a>(
    operator: &'a Operator,
    channels: &mut SharedWatch<DeserializeGuard<Channel>>,
    state: ChannelState,
    related: Vec<futures::stream::BoxStream<'static, ChannelRef>>,
) -> BoxFuture<'a, ()> {
    flotilla_runtime::controller::run(
        operator,
        channels,
        Parts {
            name: CONTROLLER,
            state,
            phase_of: |channel: &Channel| channel.status.as_ref().and_then(|s| s.phase),
            related,
        },
        reconcile::reconcile,
    )
}
