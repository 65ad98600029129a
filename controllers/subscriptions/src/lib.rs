//! The Subscriptions domain: Plans and the Subscriptions that use them.

pub mod plan;
pub mod subscription;

use flotilla_runtime::Operator;

/// Runs the Plan and Subscription controllers side by side until the operator's shutdown
/// signal trips, then waits for their in-flight reconciles to finish.
pub async fn run(operator: &Operator) {
    futures::join!(plan::run(operator), subscription::run(operator));
}
