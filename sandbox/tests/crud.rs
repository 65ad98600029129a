//! Conformance: create, get, list (selectors, paging), replace, patches and server-side apply,
//! the status subresource and generation — each as the real kube-apiserver behaves.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn api_error(err: kube::Error) -> Box<kube::core::Status> {
    match err {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    }))
    .unwrap()
}

#[tokio::test]
async fn create_sets_server_fields_and_rejects_duplicates() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let created = api
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(
        meta.resource_version
            .as_deref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    // Schema defaults are applied on write.
    assert_eq!(created.data["spec"]["color"], "red");

    let err = api_error(
        api.create(&PostParams::default(), &widget("w1", 3))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert!(
        err.message.contains("\"w1\" already exists"),
        "{}",
        err.message
    );

    let mut generated = widget("", 2);
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let created = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
}

#[tokio::test]
async fn create_in_a_missing_namespace_is_not_found() {
    let sb = sandbox().await;
    let err = api_error(
        widgets(&sb, "nowhere")
            .create(&PostParams::default(), &widget("w", 1))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert!(
        err.message.contains("namespaces \"nowhere\" not found"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn get_missing_is_not_found_with_the_resource_named() {
    let sb = sandbox().await;
    let err = api_error(widgets(&sb, "default").get("ghost").await.unwrap_err());
    assert_eq!(err.code, 404);
    assert!(
        err.message
            .contains("widgets.test.flotilla.dev \"ghost\" not found"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn list_filters_by_label_and_field_selectors() {
    let sb = sandbox().await;
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let pp = PostParams::default();
    api.create(
        &pp,
        &config_map("a", json!({"tier": "gold", "site": "ams"})),
    )
    .await
    .unwrap();
    api.create(
        &pp,
        &config_map("b", json!({"tier": "silver", "site": "ams"})),
    )
    .await
    .unwrap();
    api.create(&pp, &config_map("c", json!({"tier": "bronze"})))
        .await
        .unwrap();
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let l = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(names(api.list(&l("tier=gold")).await.unwrap()), ["a"]);
    assert_eq!(names(api.list(&l("tier!=gold")).await.unwrap()), ["b", "c"]);
    assert_eq!(
        names(api.list(&l("tier in (gold,bronze)")).await.unwrap()),
        ["a", "c"]
    );
    assert_eq!(
        names(api.list(&l("tier notin (gold)")).await.unwrap()),
        ["b", "c"]
    );
    assert_eq!(names(api.list(&l("site")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(api.list(&l("!site")).await.unwrap()), ["c"]);
    assert_eq!(
        names(api.list(&l("site=ams,tier=silver")).await.unwrap()),
        ["b"]
    );
    let f = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(api.list(&f).await.unwrap()), ["b"]);
    let f = ListParams::default().fields("metadata.name!=b");
    assert_eq!(names(api.list(&f).await.unwrap()), ["a", "c"]);
    let err = api_error(
        api.list(&ListParams::default().fields("spec.x=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    let err = api_error(api.list(&l("tier in (gold")).await.unwrap_err());
    assert_eq!(err.code, 400);
    // Namespaced list sees only its namespace; all-namespaces sees everything.
    let all: Api<ConfigMap> = Api::all(sb.client());
    assert_eq!(names(all.list(&l("tier")).await.unwrap()).len(), 3);
}

#[tokio::test]
async fn list_pages_with_limit_and_continue() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    for i in 0..7 {
        api.create(&PostParams::default(), &widget(&format!("w{i}"), 1))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|w| w.metadata.name.unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["w0", "w1", "w2", "w3", "w4", "w5", "w6"]);
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_conflicts() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let created = api
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let mut first = created.clone();
    first.data["spec"]["size"] = json!(2);
    let updated = api
        .replace("w", &PostParams::default(), &first)
        .await
        .unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    let mut stale = created;
    stale.data["spec"]["size"] = json!(5);
    let err = api_error(
        api.replace("w", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn status_subresource_splits_spec_and_status() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let mut w = widget("w", 1);
    w.data["status"] = json!({"phase": "Created"});
    let created = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );

    // A status write changes only status, and does not bump generation.
    let patched = api
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"size": 9}, "status": {"phase": "Ready"}
            })),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.data["spec"]["size"], 1);
    assert_eq!(patched.metadata.generation, Some(1));

    // A main-resource write ignores status; a spec change bumps generation.
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"size": 4}, "status": {"phase": "Hacked"}
            })),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.metadata.generation, Some(2));

    // A metadata-only change does not bump generation.
    let patched = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"x": "y"}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
}

#[tokio::test]
async fn a_write_that_changes_nothing_keeps_the_resource_version() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let created = api
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let again = api
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );
}

#[tokio::test]
async fn json_patch_applies_and_test_failures_are_rejected() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/size", "value": 1},
        {"op": "replace", "path": "/spec/size", "value": 7},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}
    ]))
    .unwrap();
    let patched = api
        .patch("w", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["size"], 7);
    assert_eq!(patched.metadata.labels.unwrap()["a"], "b");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/size", "value": 1}])).unwrap();
    let err = api_error(
        api.patch("w", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name_and_is_refused_for_crds() {
    let sb = sandbox().await;
    let api: Api<Deployment> = Api::namespaced(sb.client(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "app", "image": "app:1"},
                    {"name": "sidecar", "image": "proxy:1"}
                ]}
            }
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &deploy).await.unwrap();
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({
                "spec": {"replicas": 0, "template": {"spec": {"containers": [
                    {"name": "sidecar", "image": "proxy:2"}
                ]}}}
            })),
        )
        .await
        .unwrap();
    let spec = patched.spec.unwrap();
    assert_eq!(spec.replicas, Some(0));
    let containers = spec.template.spec.unwrap().containers;
    let images: Vec<_> = containers
        .iter()
        .map(|c| c.image.clone().unwrap())
        .collect();
    assert_eq!(images, ["app:1", "proxy:2"]);

    let widgets = widgets(&sb, "default");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let err = api_error(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 2}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 415);
}

#[tokio::test]
async fn server_side_apply_tracks_managers_conflicts_and_removals() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let apply = |name: &str, spec: serde_json::Value| {
        let mut obj = DynamicObject::new(name, &widget_resource());
        obj.data = json!({"spec": spec});
        Patch::Apply(obj)
    };
    // Apply creates.
    let created = api
        .patch(
            "w",
            &PatchParams::apply("alice"),
            &apply("w", json!({"size": 2, "tags": ["a"]})),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["size"], 2);
    let managers: Vec<_> = created
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert_eq!(managers, [("alice".to_string(), "Apply".to_string())]);

    // Re-applying the same configuration changes nothing.
    let again = api
        .patch(
            "w",
            &PatchParams::apply("alice"),
            &apply("w", json!({"size": 2, "tags": ["a"]})),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );

    // Another manager changing alice's field conflicts, unless it forces.
    let err = api_error(
        api.patch(
            "w",
            &PatchParams::apply("bob"),
            &apply("w", json!({"size": 5})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("alice") && err.message.contains(".spec.size"),
        "{}",
        err.message
    );
    let forced = api
        .patch(
            "w",
            &PatchParams::apply("bob").force(),
            &apply("w", json!({"size": 5})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["size"], 5);

    // A field alice stops applying is removed (she still owns tags, not size any more).
    let removed = api
        .patch(
            "w",
            &PatchParams::apply("alice"),
            &apply("w", json!({"size": 5})),
        )
        .await
        .unwrap();
    assert!(
        removed.data["spec"].get("tags").is_none(),
        "{}",
        removed.data
    );
    assert_eq!(removed.data["spec"]["size"], 5);

    // Apply without a field manager is refused.
    let err = api_error(
        api.patch(
            "w",
            &PatchParams::default(),
            &apply("w", json!({"size": 1})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 400);
}

#[tokio::test]
async fn server_side_apply_on_status_touches_only_status() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let mut status = DynamicObject::new("w", &widget_resource());
    status.data = json!({"status": {"phase": "Ready", "count": 1}, "spec": {"size": 50}});
    let patched = api
        .patch_status(
            "w",
            &PatchParams::apply("flotilla").force(),
            &Patch::Apply(status.clone()),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(patched.data["spec"]["size"], 1);
    let entry = patched
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("flotilla"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    // The same status again is not a write.
    let again = api
        .patch_status(
            "w",
            &PatchParams::apply("flotilla").force(),
            &Patch::Apply(status),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        patched.metadata.resource_version
    );
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let created = api.create(&pp, &widget("w", 1)).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("w"));
    assert!(api.get_opt("w").await.unwrap().is_none());
    api.create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let dp = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    api.delete("w", &dp).await.unwrap();
    assert!(api.get_opt("w").await.unwrap().is_some());
}

#[tokio::test]
async fn built_in_defaults_secret_string_data_and_replicas() {
    use k8s_openapi::api::core::v1::Secret;
    let sb = sandbox().await;
    let secrets: Api<Secret> = Api::namespaced(sb.client(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "smtp"},
        "stringData": {"password": "hunter2"},
        "data": {"user": "YWRtaW4="}
    }))
    .unwrap();
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert!(created.string_data.is_none());
    let data = created.data.unwrap();
    assert_eq!(data["password"].0, b"hunter2");
    assert_eq!(data["user"].0, b"admin");

    let deployments: Api<Deployment> = Api::namespaced(sb.client(), "default");
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
    }))
    .unwrap();
    let created = deployments
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();
    assert_eq!(created.spec.unwrap().replicas, Some(1));
}
