//! Conformance: CRD schema validation (pruning, 422 Invalid with field paths, CEL rules), CRDs
//! created through the API, fault injection and the request log.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flotilla_sandbox::{FaultRule, Sandbox, Verb};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use serde_json::json;

fn status_of(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_fields_are_pruned() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let mut w = widget("w", 1);
    w.data["spec"]["bogus"] = json!(true);
    w.data["extra"] = json!("x");
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.data["spec"].get("bogus").is_none());
    assert!(created.data.get("extra").is_none());
}

#[tokio::test]
async fn invalid_objects_are_rejected_with_the_field_path() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let err = status_of(
        api.create(&PostParams::default(), &widget("w", 0))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("Widget.test.flotilla.dev \"w\" is invalid"),
        "{}",
        err.message
    );
    assert!(err.message.contains("spec.size"), "{}", err.message);

    let mut w = widget("w", 5);
    w.data["spec"]["color"] = json!("green");
    let err = status_of(api.create(&PostParams::default(), &w).await.unwrap_err());
    assert!(err.message.contains("spec.color"), "{}", err.message);

    let mut w = widget("w", 5);
    w.data["spec"]["max"] = json!(2);
    let err = status_of(api.create(&PostParams::default(), &w).await.unwrap_err());
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("size must not exceed max"),
        "{}",
        err.message
    );

    let mut w = widget("w", 5);
    w.data["spec"] = json!({});
    let err = status_of(api.create(&PostParams::default(), &w).await.unwrap_err());
    assert!(
        err.message.contains("spec.size") && err.message.contains("Required"),
        "{}",
        err.message
    );

    let err = status_of(
        api.create(&PostParams::default(), &widget("Bad_Name", 1))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(err.message.contains("metadata.name"), "{}", err.message);
}

#[tokio::test]
async fn crds_created_through_the_api_are_served_and_removed_with_their_objects() {
    let sb = Sandbox::start().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(sb.client());
    let created = crds
        .create(&PostParams::default(), &widget_crd())
        .await
        .unwrap();
    let established = created
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    crds.delete("widgets.test.flotilla.dev", &Default::default())
        .await
        .unwrap();
    let err = status_of(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn every_flotilla_crd_registers() {
    let sb = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .unwrap();
    let discovery = kube::Discovery::new(sb.client()).run().await.unwrap();
    let group = discovery
        .get("flotilla.dev")
        .expect("the flotilla.dev group is discovered");
    let mut kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.kind)
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Campaign",
            "Channel",
            "Device",
            "FirmwareRelease",
            "FirmwareRollout",
            "Plan",
            "Subscription"
        ]
    );
}

#[tokio::test]
async fn injected_faults_fail_exactly_the_matching_requests() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    sb.faults()
        .inject(FaultRule::new(Verb::Get, "widgets").status(500).times(2));
    sb.faults().inject(
        FaultRule::new(Verb::List, "widgets")
            .status(429)
            .retry_after(1),
    );
    sb.faults()
        .inject(FaultRule::new(Verb::Create, "widgets").status(409));
    assert_eq!(status_of(api.get("w").await.unwrap_err()).code, 500);
    assert_eq!(status_of(api.get("w").await.unwrap_err()).code, 500);
    assert!(api.get("w").await.is_ok());
    // kube's client retries a 429 itself after Retry-After; the log shows both attempts.
    let started = Instant::now();
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let lists: Vec<u16> = sb
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| r.verb == Verb::List)
        .map(|r| r.status)
        .collect();
    assert_eq!(lists, [429, 200]);
    assert_eq!(
        status_of(
            api.create(&PostParams::default(), &widget("x", 1))
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    assert!(
        api.create(&PostParams::default(), &widget("x", 1))
            .await
            .is_ok()
    );
    assert_eq!(sb.requests().count(Verb::Get, "widgets"), 3);
    assert_eq!(sb.requests().count(Verb::Create, "widgets"), 3);
}

#[tokio::test]
async fn a_429_carries_the_retry_after_header() {
    let sb = sandbox().await;
    sb.faults().inject(
        FaultRule::new(Verb::List, "widgets")
            .status(429)
            .retry_after(3),
    );
    let url = format!(
        "{}/apis/test.flotilla.dev/v1/namespaces/default/widgets",
        sb.url()
    );
    let response = reqwest_like_get(&url).await;
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 3"),
        "{response}"
    );
    assert!(response.contains("\"retryAfterSeconds\":3"), "{response}");
    assert!(
        response.contains("\"reason\":\"TooManyRequests\""),
        "{response}"
    );
}

/// A minimal HTTP/1.1 GET, so the test sees raw headers without another client crate.
async fn reqwest_like_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.unwrap();
    buf
}

#[tokio::test]
async fn latency_is_added_to_every_request() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    sb.faults().latency(Duration::from_millis(150));
    let start = Instant::now();
    api.list(&ListParams::default()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn the_request_log_counts_by_verb_and_subresource() {
    let sb = sandbox().await;
    let api: Api<DynamicObject> = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    api.patch_status(
        "w",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": {"phase": "Ready"}})),
    )
    .await
    .unwrap();
    assert_eq!(sb.requests().count(Verb::Create, "widgets"), 1);
    assert_eq!(sb.requests().count(Verb::Patch, "widgets/status"), 1);
    assert_eq!(sb.requests().count(Verb::Patch, "widgets"), 0);
    sb.requests().reset();
    assert!(sb.requests().is_empty());
}

/// OwnerReferencesPermissionEnforcement: setting `blockOwnerDeletion` on an owner needs
/// `update` on that owner's `finalizers`, which the request log's RBAC requirements say.
#[tokio::test]
async fn an_owner_reference_blocking_deletion_needs_update_on_the_owners_finalizers() {
    let sb = sandbox().await;
    let owner = widgets(&sb, "default")
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(sb.client(), "default");
    for (name, block) in [("blocking", true), ("plain", false)] {
        let object = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [{
                "apiVersion": widget_resource().api_version, "kind": widget_resource().kind,
                "name": "owner",
                "uid": owner.metadata.uid, "blockOwnerDeletion": block}]},
        }))
        .unwrap();
        config_maps
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    let required: Vec<Vec<String>> = sb
        .requests()
        .snapshot()
        .into_iter()
        .filter(|r| r.resource == "configmaps")
        .map(|r| r.required().iter().map(ToString::to_string).collect())
        .collect();
    assert_eq!(required.len(), 2);
    assert_eq!(required[0].len(), 2, "{required:?}");
    assert!(required[0][1].contains("update") && required[0][1].contains("widgets/finalizers"));
    assert_eq!(
        required[1].len(),
        1,
        "no blockOwnerDeletion, nothing more: {required:?}"
    );
}
