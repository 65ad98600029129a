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
pub mod pacer;
pub mod phase;
pub mod preview;
pub mod quiet_hours;
pub mod reconcile;
pub mod retry;
pub mod sender;
pub mod status;
pub mod template;

use flotilla_crds::Campaign;
use futures::future::BoxFuture;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use flotilla_runtime::context::Operator;
use flotilla_runtime::controller::Parts;
use flotilla_runtime::watch::SharedWatch;
use reconcile::CampaignState;

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
    flotilla_runtime::controller::run(
        operator,
        campaigns,
        Parts {
            name: CONTROLLER,
            state,
            phase_of: |campaign: &Campaign| campaign.status.as_ref().and_then(|s| s.phase),
            related,
        },
        reconcile::reconcile,
    )
}
