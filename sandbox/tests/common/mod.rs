//! Fixtures shared by the sandbox conformance tests.
#![allow(dead_code)]

use std::time::Duration;

use flotilla_sandbox::Sandbox;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

/// A small namespaced test CRD with a status subresource, printer columns, schema
/// constraints of every common kind and a CEL rule.
pub fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.flotilla.dev"},
        "spec": {
            "group": "test.flotilla.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "categories": ["flotilla"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["size"],
                            "x-kubernetes-validations": [
                                {"rule": "!has(self.max) || self.size <= self.max",
                                 "message": "size must not exceed max"}
                            ],
                            "properties": {
                                "size": {"type": "integer", "minimum": 1, "maximum": 100},
                                "max": {"type": "integer"},
                                "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                "tags": {"type": "array", "items": {"type": "string"},
                                         "x-kubernetes-list-type": "set"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string"},
                                "count": {"type": "integer"}
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .expect("the widget CRD is a valid CustomResourceDefinition")
}

pub fn widget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.flotilla.dev", "v1", "Widget"),
        "widgets",
    )
}

pub async fn sandbox() -> Sandbox {
    Sandbox::builder()
        .crds([widget_crd()])
        .start()
        .await
        .expect("the sandbox starts")
}

pub fn widgets(sandbox: &Sandbox, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(sandbox.client(), ns, &widget_resource())
}

pub fn widget(name: &str, size: i64) -> DynamicObject {
    DynamicObject::new(name, &widget_resource()).data(json!({"spec": {"size": size}}))
}

/// Polls `check` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
