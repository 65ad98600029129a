//! A minimal OpenAPI v3 description of what the sandbox serves.
//!
//! kubectl (`apply`, `create`, `replace`) reads `/openapi/v3` to learn whether the server
//! validates fields itself (the `fieldValidation` query parameter on PATCH). When it does,
//! kubectl sends `fieldValidation=Strict` and leaves validation to the server, which is what
//! a real cluster gets; without these documents kubectl would fail to download its schemas.
//! The documents describe operations and, for custom resources, their schema — enough for
//! kubectl, not a complete Kubernetes OpenAPI.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::registry::{Registry, Resource};

/// `/openapi/v3`: the group-version documents.
pub fn root(registry: &Registry) -> Value {
    let mut paths = BTreeMap::new();
    for (prefix, _, _) in group_versions(registry) {
        paths.insert(
            prefix.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{prefix}?hash={}", hash(registry, &prefix))}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/<group>/<version>`.
pub fn group_version(registry: &Registry, prefix: &str) -> Option<Value> {
    let (_, group, version) = group_versions(registry)
        .into_iter()
        .find(|(p, _, _)| p == prefix)?;
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in registry
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let scoped = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(scoped.clone(), collection_path(r));
        paths.insert(format!("{scoped}/{{name}}"), item_path(r));
        if r.has_status {
            paths.insert(format!("{scoped}/{{name}}/status"), item_path(r));
        }
        if let Some(schema) = &r.openapi_schema {
            let mut schema = schema.clone();
            schema["x-kubernetes-group-version-kind"] =
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
            schemas.insert(schema_name(r), schema);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (flotilla sandbox)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn group_versions(registry: &Registry) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for r in registry.iter() {
        let prefix = if r.group.is_empty() {
            format!("api/{}", r.version)
        } else {
            format!("apis/{}/{}", r.group, r.version)
        };
        if !out.iter().any(|(p, _, _)| p == &prefix) {
            out.push((prefix, r.group.clone(), r.version.clone()));
        }
    }
    out
}

/// Changes whenever the served resources of the group-version change, so that kubectl's
/// cache of these documents is refreshed.
fn hash(registry: &Registry, prefix: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    prefix.hash(&mut hasher);
    for r in registry.iter() {
        r.group.hash(&mut hasher);
        r.plural.hash(&mut hasher);
        r.kind.hash(&mut hasher);
        if let Some(s) = &r.openapi_schema {
            s.to_string().hash(&mut hasher);
        }
    }
    format!("{:016X}", hasher.finish())
}

fn schema_name(r: &Resource) -> String {
    let group: Vec<&str> = r.group.split('.').rev().collect();
    if r.group.is_empty() {
        format!("io.k8s.api.core.{}.{}", r.version, r.kind)
    } else {
        format!("{}.{}.{}", group.join("."), r.version, r.kind)
    }
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    ["dryRun", "fieldManager", "fieldValidation"]
        .iter()
        .map(|n| query_param(n))
        .collect()
}

fn operation(r: &Resource, action: &str, params: Vec<Value>) -> Value {
    json!({
        "operationId": format!("{action}{}", r.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    })
}

fn collection_path(r: &Resource) -> Value {
    json!({
        "get": operation(r, "list", ["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"].iter().map(|n| query_param(n)).collect()),
        "post": operation(r, "post", write_params()),
        "delete": operation(r, "deletecollection", vec![query_param("labelSelector")]),
    })
}

fn item_path(r: &Resource) -> Value {
    let mut patch_params = write_params();
    patch_params.push(query_param("force"));
    json!({
        "get": operation(r, "get", vec![]),
        "put": operation(r, "put", write_params()),
        "patch": operation(r, "patch", patch_params),
        "delete": operation(r, "delete", vec![query_param("dryRun")]),
        "parameters": [
            {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
        ],
    })
}
