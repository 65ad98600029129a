//! Cleanup before deletion, through `kube::runtime::finalizer`.
//!
//! kube-runtime's helper owns the finalizer bookkeeping (adding it before the first apply,
//! removing it only after a successful cleanup, with JSON-patch tests so a concurrent writer is
//! never overwritten). On top of it this module adds one thing every Flotilla kind needs: a
//! cleanup that has to *wait* (a Plan still used by Subscriptions, a Subscription whose
//! namespaces are still terminating) without that wait being counted as an error.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use flotilla_crds::common::FINALIZER;

/// The result of a cleanup step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing is left to do: the finalizer is removed and the deletion proceeds.
    Done,
    /// The object cannot go yet; the finalizer stays and the controller comes back as `retry`
    /// says (usually `await_change()`, when a watch will announce what is being waited for).
    Wait(Action),
}

/// Why [`reconcile_with_finalizer`] failed.
pub type FinalizerError<E> = finalizer::Error<E>;

/// Internal: the cleanup outcome smuggled through `finalizer`'s error channel, so that the
/// finalizer stays in place while we wait.
#[derive(Debug, thiserror::Error)]
enum Step<E: std::error::Error + 'static> {
    #[error("cleanup is waiting")]
    Wait(Action),
    #[error(transparent)]
    Failed(E),
}

/// Runs `apply` while the object lives and `cleanup` once it is being deleted, keeping the
/// finalizer [`FINALIZER`] on the object until `cleanup` reports [`Cleanup::Done`].
///
/// Both steps must be idempotent; `cleanup` must tolerate `apply` never having run.
pub async fn reconcile_with_finalizer<K, E, ApplyFut, CleanupFut>(
    api: &Api<K>,
    object: Arc<K>,
    apply: impl FnOnce(Arc<K>) -> ApplyFut,
    cleanup: impl FnOnce(Arc<K>) -> CleanupFut,
) -> Result<Action, FinalizerError<E>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    E: std::error::Error + 'static,
    ApplyFut: Future<Output = Result<Action, E>>,
    CleanupFut: Future<Output = Result<Cleanup, E>>,
{
    let outcome = finalizer::finalizer(api, FINALIZER, object, |event| async move {
        match event {
            Event::Apply(object) => apply(object).await.map_err(Step::Failed),
            Event::Cleanup(object) => match cleanup(object).await {
                Ok(Cleanup::Done) => Ok(Action::await_change()),
                Ok(Cleanup::Wait(retry)) => Err(Step::Wait(retry)),
                Err(error) => Err(Step::Failed(error)),
            },
        }
    })
    .await;
    match outcome {
        Ok(action) => Ok(action),
        Err(finalizer::Error::CleanupFailed(Step::Wait(retry))) => Ok(retry),
        Err(error) => Err(unwrap_step(error)),
    }
}

fn unwrap_step<E: std::error::Error + 'static>(
    error: finalizer::Error<Step<E>>,
) -> finalizer::Error<E> {
    use finalizer::Error as F;
    let inner = |step: Step<E>| match step {
        Step::Failed(error) => Ok(error),
        Step::Wait(_) => Err(()),
    };
    match error {
        F::ApplyFailed(step) => match inner(step) {
            Ok(error) => F::ApplyFailed(error),
            // `apply` never produces `Wait`.
            Err(()) => F::InvalidFinalizer,
        },
        F::CleanupFailed(step) => match inner(step) {
            Ok(error) => F::CleanupFailed(error),
            Err(()) => F::InvalidFinalizer,
        },
        F::AddFinalizer(error) => F::AddFinalizer(error),
        F::RemoveFinalizer(error) => F::RemoveFinalizer(error),
        F::UnnamedObject => F::UnnamedObject,
        F::InvalidFinalizer => F::InvalidFinalizer,
    }
}

/// Whether `object` is being deleted and still carries Flotilla's finalizer (its cleanup has
/// not completed).
pub fn is_being_finalized<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_some() && object.finalizers().iter().any(|f| f == FINALIZER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_crds::Plan;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn the_finalizer_name_is_flotillas() {
        assert_eq!(FINALIZER, "flotilla.dev/cleanup");
    }

    #[test]
    fn being_finalized_needs_both_deletion_and_our_finalizer() {
        let mut plan: Plan = serde_json::from_value(serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
            "metadata": {"name": "team"},
            "spec": {"displayName": "Team"},
        }))
        .expect("plan");
        assert!(!is_being_finalized(&plan));
        plan.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        assert!(!is_being_finalized(&plan));
        plan.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(is_being_finalized(&plan));
        plan.metadata.finalizers = Some(vec!["someone.else/finalizer".to_owned()]);
        assert!(!is_being_finalized(&plan));
    }

    #[test]
    fn failures_keep_their_side() {
        #[derive(Debug, thiserror::Error, PartialEq)]
        #[error("boom")]
        struct Boom;
        let apply = unwrap_step(finalizer::Error::ApplyFailed(Step::Failed(Boom)));
        assert!(matches!(apply, finalizer::Error::ApplyFailed(Boom)));
        let cleanup = unwrap_step(finalizer::Error::CleanupFailed(Step::Failed(Boom)));
        assert!(matches!(cleanup, finalizer::Error::CleanupFailed(Boom)));
    }
}
