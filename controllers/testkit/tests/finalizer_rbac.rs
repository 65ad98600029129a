//! Regression (found by the chaos suite, `tests/chaos`): a reconcile woken before the watch
//! showed the finalizer an earlier reconcile added sees a stale object, its guarded patch
//! fails (`422`), and the object is read again — with a request `config/rbac/` grants. It
//! used to be a `get`, which the operator's ServiceAccount may not do on any Flotilla kind, so
//! on a cluster that reconcile failed with `403 Forbidden` and was retried slowly.

use std::sync::Arc;

use flotilla_crds::Plan;
use flotilla_runtime::finalizer::{Cleanup, FINALIZER, reconcile_with_finalizer};
use flotilla_sandbox::Sandbox;
use flotilla_testkit::rbac::{denied_for, install, operator_kube_config, operator_user};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Client, ResourceExt};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[tokio::test]
async fn a_stale_object_gets_its_finalizer_with_what_config_rbac_grants() {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .enforce_rbac()
        .start()
        .await
        .expect("the sandbox starts");
    install(&sandbox).await;
    let plan: Plan = serde_json::from_value(serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
        "metadata": {"name": "stale"}, "spec": {"displayName": "Stale"},
    }))
    .expect("a Plan");
    let stale = Api::<Plan>::all(sandbox.client())
        .create(&PostParams::default(), &plan)
        .await
        .expect("created");
    let operator = Api::<Plan>::all(Client::try_from(operator_kube_config(&sandbox)).unwrap());
    let reconcile = |object: Plan| {
        let operator = operator.clone();
        async move {
            reconcile_with_finalizer(
                &operator,
                Arc::new(object),
                |plan| async move {
                    assert!(plan.finalizers().iter().any(|f| f == FINALIZER));
                    Ok::<_, Never>(Action::await_change())
                },
                |_| async { Ok(Cleanup::Done) },
            )
            .await
        }
    };
    reconcile(stale.clone()).await.expect("the first reconcile");
    // The second one still holds the object without the finalizer.
    reconcile(stale).await.expect("the stale reconcile");
    assert_eq!(denied_for(&sandbox, &operator_user()), Vec::<String>::new());
    let stored = Api::<Plan>::all(sandbox.client())
        .get("stale")
        .await
        .unwrap();
    assert_eq!(stored.finalizers(), [FINALIZER], "added once");
}
