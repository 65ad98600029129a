//! Conformance: `null` in a field whose schema is not `nullable`, verb by verb, as on
//! kube-apiserver. Decoding a request body or a patched object drops such a `null` (or
//! defaults it), so create, update, merge patch and JSON patch accept it; server-side apply
//! keeps the `null` through structured-merge-diff, defaults it where the schema has a
//! default and otherwise answers `422 Invalid`:
//! `spec.namespaces: Invalid value: "null": spec.namespaces in body must be of type array: "null"`.
//! Built-in kinds decode into Go types, where a `null` is simply unset, whatever the verb.

use flotilla_crds::subscription::Subscription;
use flotilla_sandbox::Sandbox;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::core::Status;
use serde_json::{Value, json};

/// A test CRD with one field of each kind of null handling.
fn gadget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.flotilla.dev"},
        "spec": {
            "group": "test.flotilla.dev",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "items": {"type": "array", "items": {"type": "string"}},
                                "color": {"type": "string", "default": "red"},
                                "note": {"type": "string", "nullable": true},
                                "size": {"type": "integer"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {"phase": {"type": "string"}}
                        }
                    }
                }}
            }]
        }
    }))
    .expect("the gadget CRD is valid")
}

fn gadget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.flotilla.dev", "v1", "Gadget"),
        "gadgets",
    )
}

async fn sandbox() -> Sandbox {
    let mut crds = flotilla_crds::all_crds();
    crds.push(gadget_crd());
    Sandbox::builder().crds(crds).start().await.unwrap()
}

fn gadgets(sb: &Sandbox) -> Api<DynamicObject> {
    Api::namespaced_with(sb.client(), "default", &gadget_resource())
}

fn gadget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "test.flotilla.dev/v1", "kind": "Gadget",
           "metadata": {"name": name}, "spec": spec})
}

fn ssa() -> PatchParams {
    PatchParams::apply("test")
}

fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn causes(status: &Status) -> Vec<(String, String)> {
    status
        .details
        .as_ref()
        .map(|d| {
            d.causes
                .iter()
                .map(|c| (c.field.clone(), c.message.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn server_side_apply_of_a_null_in_a_non_nullable_field_is_422() {
    let sb = sandbox().await;
    let api: Api<Subscription> = Api::all(sb.client());
    let config = json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "acme"},
        "spec": {"plan": "gold", "namespaces": null}
    });
    let status = api_error(api.patch("acme", &ssa(), &Patch::Apply(&config)).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.starts_with(
            "Subscription.flotilla.dev \"acme\" is invalid: [spec.namespaces: Invalid value: \"null\": spec.namespaces in body must be of type array: \"null\""
        ),
        "{}",
        status.message
    );
    assert_eq!(
        causes(&status)[0],
        (
            "spec.namespaces".to_string(),
            "Invalid value: \"null\": spec.namespaces in body must be of type array: \"null\""
                .to_string()
        )
    );
    // Nothing was created; without the null the same apply succeeds.
    assert!(api.get_opt("acme").await.unwrap().is_none());
    let config = json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "acme"}, "spec": {"plan": "gold"}
    });
    api.patch("acme", &ssa(), &Patch::Apply(&config))
        .await
        .unwrap();
    // On an existing object too, and on the status subresource.
    let config = gadget("g", json!({"size": null}));
    let gadgets = gadgets(&sb);
    gadgets
        .patch("g", &ssa(), &Patch::Apply(gadget("g", json!({"size": 1}))))
        .await
        .unwrap();
    let status = api_error(gadgets.patch("g", &ssa(), &Patch::Apply(&config)).await);
    assert_eq!(
        causes(&status),
        [(
            "spec.size".to_string(),
            "Invalid value: \"null\": spec.size in body must be of type integer: \"null\""
                .to_string()
        )]
    );
    let status_config = json!({"apiVersion": "test.flotilla.dev/v1", "kind": "Gadget",
                               "metadata": {"name": "g"}, "status": {"phase": null}});
    let status = api_error(
        gadgets
            .patch_status("g", &ssa(), &Patch::Apply(&status_config))
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(causes(&status)[0].0, "status.phase");
}

#[tokio::test]
async fn server_side_apply_defaults_a_null_with_a_default_and_keeps_a_nullable_null() {
    let sb = sandbox().await;
    let api = gadgets(&sb);
    let applied = api
        .patch(
            "g",
            &ssa(),
            &Patch::Apply(gadget("g", json!({"color": null, "note": null}))),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["color"], "red");
    assert_eq!(applied.data["spec"].get("note"), Some(&Value::Null));
    let stored = api.get("g").await.unwrap();
    assert_eq!(stored.data["spec"].get("note"), Some(&Value::Null));
}

#[tokio::test]
async fn create_update_and_patches_drop_a_null_in_a_non_nullable_field() {
    let sb = sandbox().await;
    let subscriptions: Api<DynamicObject> =
        Api::all_with(sb.client(), &ApiResource::erase::<Subscription>(&()));
    // POST
    let body: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "acme"},
        "spec": {"plan": "gold", "namespaces": null}
    }))
    .unwrap();
    let created = subscriptions
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    assert_eq!(created.data["spec"].get("namespaces"), None);

    let api = gadgets(&sb);
    let body: DynamicObject = serde_json::from_value(gadget(
        "g",
        json!({"items": ["a"], "size": 3, "color": null, "note": null}),
    ))
    .unwrap();
    let created = api.create(&PostParams::default(), &body).await.unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"items": ["a"], "size": 3, "color": "red", "note": null})
    );
    // PUT: the null drops the field that was set.
    let mut replaced = created.clone();
    replaced.data["spec"]["items"] = Value::Null;
    let updated = api
        .replace("g", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(updated.data["spec"].get("items"), None);
    // JSON patch: adding a null is dropping the field.
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/size", "value": null}
    ]))
    .unwrap();
    let patched = api
        .patch("g", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(patched.data["spec"].get("size"), None);
    // Merge patch: null deletes, a null with a default gets the default back.
    let patched = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "blue"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["color"], "blue");
    let patched = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": null}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["color"], "red");
}

#[tokio::test]
async fn a_null_in_a_built_in_kind_is_unset_whatever_the_verb() {
    let sb = sandbox().await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        sb.client(),
        "default",
        &ApiResource::erase::<ConfigMap>(&()),
    );
    let body: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "posted", "labels": null}, "data": null
    }))
    .unwrap();
    let created = raw.create(&PostParams::default(), &body).await.unwrap();
    assert_eq!(created.data.get("data"), None);
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "applied"}, "data": null, "binaryData": null});
    let applied = raw
        .patch("applied", &ssa(), &Patch::Apply(&config))
        .await
        .unwrap();
    assert_eq!(applied.data.get("data"), None);
    assert_eq!(applied.data.get("binaryData"), None);
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/data", "value": null}
    ]))
    .unwrap();
    let patched = raw
        .patch("posted", &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .unwrap();
    assert_eq!(patched.data.get("data"), None);
}
