//! The Campaign kind: its pure decisions, the sender that delivers a running campaign, and
//! the controller that drives both.
//!
//! | Piece | Decides |
//! |---|---|
//! | [`audience`], [`allocation`] | who is targeted, who is held out, who gets which variant |
//! | [`template`], [`content`] | what each recipient is sent |
//! | [`quiet_hours`], [`preview`] | when a recipient may be sent to; what a waiting campaign will do |
//! | [`retry`] | what a failure means and when to try again |
//! | [`phase`] | the phase and what to do, from what the shell observed |
//! | [`sender`] | delivery of a running campaign through the ledger |
//! | [`status`] | the status and Events |
//!
//! The controller ([`controller`]) wakes, all from shared watches, on its own Campaigns, on
//! Channels (through [`crate::index::LiveCampaignsByChannel`]) and on its senders' progress.

pub mod allocation;
pub mod audience;
pub mod content;
pub mod phase;
pub mod preview;
pub mod quiet_hours;
pub mod reconcile;
pub mod retry;
pub mod sender;
pub mod status;
pub mod template;

use std::sync::Arc;

use flotilla_crds::Campaign;
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
use reconcile::{CampaignError, CampaignState};

/// The controller's name in metrics, spans and readiness.
pub const CONTROLLER: &str = "campaign";

/// A Campaign to reconcile.
pub type CampaignRef = ObjectRef<DeserializeGuard<Campaign>>;

/// Builds the Campaign controller on the process's shared watches; the returned future runs
/// it until the operator's shutdown signal. `related` are the Campaigns other watches and the
/// senders woke.
pub fn controller<'a>(
    operator: &'a Operator,
    campaigns: &mut SharedWatch<DeserializeGuard<Campaign>>,
    state: CampaignState,
    related: Vec<futures::stream::BoxStream<'static, CampaignRef>>,
) -> BoxFuture<'a, ()> {
    let census_source = campaigns.store();
    operator.metrics.track_phases(CONTROLLER, move || {
        phases::census(
            census_source
                .state()
                .iter()
                .filter_map(|guarded| guarded.0.as_ref().ok())
                .map(|campaign| campaign.status.as_ref().and_then(|status| status.phase)),
        )
    });
    let ctx = operator.context(CONTROLLER, state);
    let own = campaigns.changes(reconcile_inputs);
    let queue = ctx.queue.clone();
    let related: std::pin::Pin<Box<dyn Stream<Item = CampaignRef> + Send>> =
        Box::pin(stream::select_all(related));
    let controller = Controller::for_stream(
        queue.own_objects(
            stream::pending::<Result<DeserializeGuard<Campaign>, watcher::Error>>(),
            &campaigns.store(),
        ),
        campaigns.store(),
    )
    .with_config(controller::Config::default().concurrency(operator.config.concurrency))
    .reconcile_on(queue.triggers(own))
    .reconcile_on(queue.triggers(related))
    .graceful_shutdown_on(operator.shutdown.signalled());
    async move {
        controller
            .run(
                reconcile::reconcile,
                |campaign, error: &CampaignError, ctx: Arc<_>| {
                    reconciler::error_policy(campaign, error, ctx)
                },
                ctx,
            )
            .for_each(|result| {
                match result {
                    Ok((campaign, action)) => {
                        tracing::trace!(campaign = %campaign.name, ?action, "reconciled");
                    }
                    Err(
                        controller::Error::ReconcilerFailed(..)
                        | controller::Error::ObjectNotFound(_),
                    ) => {}
                    Err(error) => tracing::warn!(%error, "campaign controller"),
                }
                future::ready(())
            })
            .await;
        tracing::info!(controller = CONTROLLER, "stopped");
    }
    .boxed()
}
