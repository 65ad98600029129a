//! Cleanup before deletion, through `kube::runtime::finalizer`.
//!
//! kube-runtime's helper owns the finalizer bookkeeping (removing it only after a successful
//! cleanup, with JSON-patch tests so a concurrent writer is never overwritten). On top of it
//! this module adds two things every Flotilla kind needs:
//!
//! - the finalizer is added with the same guarded patch, and the same pass goes on with the
//!   object the API server returned — kube-runtime's helper returns instead and leaves the work
//!   to the reconcile the patch's watch event brings, one more reconcile per object;
//! - a cleanup that has to *wait* (a Plan still used by Subscriptions, a Subscription whose
//!   namespaces are still terminating) without that wait being counted as an error.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use kube::api::{ListParams, Patch, PatchParams};
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
    let object = if needs_finalizer(object.as_ref()) {
        Arc::new(
            add_finalizer(api, object.as_ref())
                .await
                .map_err(FinalizerError::AddFinalizer)?,
        )
    } else {
        object
    };
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

/// Whether `object` lives and lacks Flotilla's finalizer.
fn needs_finalizer<K: Resource>(object: &K) -> bool {
    object.meta().deletion_timestamp.is_none()
        && !object.finalizers().iter().any(|f| f == FINALIZER)
}

/// The JSON patch that adds Flotilla's finalizer to `finalizers`, failing (with a `422`) if
/// the list changed meanwhile — the patch kube-runtime's helper sends.
fn add_finalizer_patch(finalizers: &[String]) -> json_patch::Patch {
    let operations = if finalizers.is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER},
        ])
    };
    serde_json::from_value(operations).expect("a well-formed JSON patch")
}

/// Adds Flotilla's finalizer; returns the object as the API server stored it. A reconcile woken
/// before the watch showed the finalizer added by an earlier one sees a stale list, and the
/// patch's test fails (`422`): the object is then read, and the patch sent again only if the
/// finalizer is still missing. It is read by a list of its name, not a get: `config/rbac/`
/// grants every watched kind `list` but not `get` (a get was refused there, seen by the chaos
/// suite as a `403` right after a Plan's first reconcile).
async fn add_finalizer<K>(api: &Api<K>, object: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = object.meta().name.as_deref().unwrap_or_default();
    let patch = |finalizers: &[String]| Patch::Json::<()>(add_finalizer_patch(finalizers));
    match api
        .patch(name, &PatchParams::default(), &patch(object.finalizers()))
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 422 => {
            let by_name = ListParams::default().fields(&format!("metadata.name={name}"));
            let Some(current) = api.list(&by_name).await?.items.into_iter().next() else {
                // Gone meanwhile: the 422 stands, and the deletion's event comes next.
                return Err(kube::Error::Api(status));
            };
            if needs_finalizer(&current) {
                api.patch(name, &PatchParams::default(), &patch(current.finalizers()))
                    .await
            } else {
                Ok(current)
            }
        }
        answer => answer,
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
    fn the_finalizer_is_added_only_to_living_objects_without_it() {
        let mut plan: Plan = serde_json::from_value(serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
            "metadata": {"name": "team"},
            "spec": {"displayName": "Team"},
        }))
        .expect("plan");
        assert!(needs_finalizer(&plan));
        plan.metadata.finalizers = Some(vec!["someone.else/finalizer".to_owned()]);
        assert!(needs_finalizer(&plan));
        plan.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        assert!(!needs_finalizer(&plan));
        plan.metadata.finalizers = None;
        plan.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(
            !needs_finalizer(&plan),
            "a deleted object gets no finalizer"
        );
    }

    #[test]
    fn the_finalizer_patch_is_guarded_by_the_list_it_extends() {
        // (The API server tests an absent list as `null`; the json-patch crate needs it spelt.)
        let mut object = serde_json::json!({"metadata": {"name": "team", "finalizers": null}});
        json_patch::patch(&mut object, &add_finalizer_patch(&[])).expect("applies");
        assert_eq!(
            object["metadata"]["finalizers"],
            serde_json::json!([FINALIZER])
        );

        let others = vec!["a/b".to_owned()];
        let mut object = serde_json::json!({"metadata": {"finalizers": ["a/b"]}});
        json_patch::patch(&mut object, &add_finalizer_patch(&others)).expect("applies");
        assert_eq!(
            object["metadata"]["finalizers"],
            serde_json::json!(["a/b", FINALIZER])
        );
        // Someone changed the list meanwhile: the test fails the patch.
        let mut changed = serde_json::json!({"metadata": {"finalizers": ["c/d"]}});
        assert!(json_patch::patch(&mut changed, &add_finalizer_patch(&others)).is_err());
        let mut added = serde_json::json!({"metadata": {"finalizers": ["c/d"]}});
        assert!(json_patch::patch(&mut added, &add_finalizer_patch(&[])).is_err());
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
