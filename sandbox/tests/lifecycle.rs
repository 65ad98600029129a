//! Conformance: deletion with finalizers, ownerReference garbage collection, and namespace
//! termination.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn cm(name: &str, owner: Option<(&str, &str)>) -> ConfigMap {
    let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    if let Some((owner_name, uid)) = owner {
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "test.flotilla.dev/v1", "kind": "Widget",
            "name": owner_name, "uid": uid, "controller": true, "blockOwnerDeletion": true
        }]);
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn finalizers_hold_an_object_until_removed() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let mut w = widget("w", 1);
    w.metadata.finalizers = Some(vec!["flotilla.dev/cleanup".into()]);
    api.create(&PostParams::default(), &w).await.unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    let held = api.get("w").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // New finalizers cannot be added while deleting.
    let err = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"finalizers": ["flotilla.dev/cleanup", "other"]}
            })),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("w").await.unwrap().is_none());
}

#[tokio::test]
async fn dependents_are_garbage_collected_with_their_owner() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let owner = api
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    cms.create(&PostParams::default(), &cm("child", Some(("owner", &uid))))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("unrelated", None))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        cms.get_opt("child").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(cms.get_opt("unrelated").await.unwrap().is_some());
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_without_the_owner_reference() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let owner = api
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    let uid = owner.metadata.uid.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    cms.create(&PostParams::default(), &cm("child", Some(("owner", &uid))))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        api.get_opt("owner").await.unwrap().is_none().then_some(())
    })
    .await;
    let child = cms.get("child").await.unwrap();
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents_then_itself() {
    let sb = sandbox().await;
    let namespaces: Api<Namespace> = Api::all(sb.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "tenant-a"}})).unwrap();
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        created.metadata.labels.unwrap()["kubernetes.io/metadata.name"],
        "tenant-a"
    );
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "tenant-a");
    cms.create(&PostParams::default(), &cm("plain", None))
        .await
        .unwrap();
    let api = widgets(&sb, "tenant-a");
    let mut held = widget("held", 1);
    held.metadata.finalizers = Some(vec!["flotilla.dev/cleanup".into()]);
    api.create(&PostParams::default(), &held).await.unwrap();

    namespaces
        .delete("tenant-a", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = namespaces.get("tenant-a").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    assert!(cms.get_opt("plain").await.unwrap().is_none());
    // Nothing new can be created in a terminating namespace.
    let err = cms
        .create(&PostParams::default(), &cm("late", None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err:?}"
    );
    // The namespace waits for the finalizer of its last object.
    assert!(
        api.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(5), || async {
        namespaces
            .get_opt("tenant-a")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn resource_quota_status_mirrors_hard_and_counts_objects() {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let sb = sandbox().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(sb.client(), "default");
    let rq: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "tenant"},
        "spec": {"hard": {"count/configmaps": "5", "requests.cpu": "2"}}
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &rq).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    cms.create(&PostParams::default(), &cm("one", None))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("two", None))
        .await
        .unwrap();
    let status = eventually(Duration::from_secs(5), || async {
        let status = quotas.get("tenant").await.unwrap().status?;
        let used = status.used.clone()?;
        (used.get("count/configmaps")?.0 == "2").then_some(status)
    })
    .await;
    assert_eq!(status.hard.unwrap()["requests.cpu"].0, "2");
    assert_eq!(status.used.unwrap()["requests.cpu"].0, "0");
}
