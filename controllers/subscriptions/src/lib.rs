//! The Subscriptions domain: Plans and the Subscriptions that use them.

pub mod index;
pub mod plan;
pub mod subscription;

use flotilla_crds::{Plan, Subscription};
use kube::Api;
use kube::core::DeserializeGuard;

use flotilla_runtime::Operator;
use flotilla_runtime::index::SharedIndex;
use flotilla_runtime::watch::{self, SharedWatch};
use index::SubscribersByPlan;

/// Which of the domain's controllers run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The Plan controller.
    pub plan: bool,
    /// The Subscription controller.
    pub subscription: bool,
}

impl Selection {
    /// Both controllers.
    pub const ALL: Selection = Selection {
        plan: true,
        subscription: true,
    };
}

/// Runs the Plan and Subscription controllers side by side until the operator's shutdown
/// signal trips, then waits for their in-flight reconciles to finish.
pub async fn run(operator: &Operator) {
    run_selected(operator, Selection::ALL).await;
}

/// Runs the selected controllers on one watch of Subscriptions and one of Plans, which both
/// controllers share (with the index of subscribers by plan), until the shutdown signal.
pub async fn run_selected(operator: &Operator, selection: Selection) {
    if !selection.plan && !selection.subscription {
        return;
    }
    let client = operator.client.clone();
    let wc = watch::watcher_config(&operator.config);
    let mut subscriptions = SharedWatch::new(
        "subscriptions",
        Api::<DeserializeGuard<Subscription>>::all(client.clone()),
        wc.clone(),
    );
    let mut plans = SharedWatch::new("plans", Api::<DeserializeGuard<Plan>>::all(client), wc);
    for (kind, synced) in [
        (subscriptions.kind(), subscriptions.synced()),
        (plans.kind(), plans.synced()),
    ] {
        operator.readiness.track(kind, synced);
    }
    // Registered first: every later handler of the Subscription watch, and the Plan watch's,
    // read it up to date.
    let subscribers = SharedIndex::new(SubscribersByPlan::default());
    let feed = subscribers.clone();
    let subscribers_changed =
        subscriptions.wakes(move |event| feed.lock().apply_watcher_event(event));
    let plan_controller = selection.plan.then(|| {
        plan::controller(
            operator,
            &mut plans,
            &subscriptions,
            subscribers.clone(),
            subscribers_changed,
        )
    });
    let subscription_controller = selection.subscription.then(|| {
        subscription::controller(
            operator,
            &mut subscriptions,
            &mut plans,
            subscribers.clone(),
        )
    });
    let stop = || operator.shutdown.signalled();
    futures::join!(
        Box::pin(subscriptions.run(stop())),
        Box::pin(plans.run(stop())),
        async {
            if let Some(running) = plan_controller {
                running.await;
            }
        },
        async {
            if let Some(running) = subscription_controller {
                running.await;
            }
        },
    );
}
