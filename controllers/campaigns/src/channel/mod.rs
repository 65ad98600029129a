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

use std::sync::Arc;

use flotilla_crds::Channel;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, future, stream};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use flotilla_runtime::context::Operator;
use flotilla_runtime::index::reconcile_inputs;
use flotilla_runtime::watch::SharedWatch;
use flotilla_runtime::{phase as phases, reconciler};
use reconcile::{ChannelError, ChannelState};

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
    let census_source = channels.store();
    operator.metrics.track_phases(CONTROLLER, move || {
        phases::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(|channel| channel.status.as_ref().and_then(|status| status.phase)),
        )
    });
    let ctx = operator.context(CONTROLLER, state);
    let own = channels.changes(reconcile_inputs);
    let queue = ctx.queue.clone();
    let related: std::pin::Pin<Box<dyn Stream<Item = ChannelRef> + Send>> =
        Box::pin(stream::select_all(related));
    let controller = Controller::for_stream(
        queue.own_objects(
            stream::pending::<Result<DeserializeGuard<Channel>, watcher::Error>>(),
            &channels.store(),
        ),
        channels.store(),
    )
    .with_config(controller::Config::default().concurrency(operator.config.concurrency))
    .reconcile_on(queue.triggers(own))
    .reconcile_on(queue.triggers(related))
    .graceful_shutdown_on(operator.shutdown.signalled());
    async move {
        controller
            .run(
                reconcile::reconcile,
                |channel, error: &ChannelError, ctx: Arc<_>| {
                    reconciler::error_policy(channel, error, ctx)
                },
                ctx,
            )
            .for_each(|result| {
                match result {
                    Ok((channel, action)) => {
                        tracing::trace!(channel = %channel.name, ?action, "reconciled");
                    }
                    Err(
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_),
                    ) => {}
                    Err(error) => tracing::warn!(%error, "channel controller"),
                }
                future::ready(())
            })
            .await;
        tracing::info!(controller = CONTROLLER, "stopped");
    }
    .boxed()
}
