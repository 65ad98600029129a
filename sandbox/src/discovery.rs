//! API discovery: `/version`, `/api`, `/apis`, and the per group-version resource lists that
//! kube-rs and kubectl read to map kinds to resources.
//!
//! Only the legacy (unaggregated) documents are served; clients that ask for aggregated
//! discovery (`as=APIGroupDiscoveryList`) fall back to these when the response is plain JSON,
//! as they do against older clusters.

use serde_json::{Value, json};

use crate::registry::Registry;

/// The Kubernetes version the sandbox claims to be: the oldest one Flotilla supports.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "33";

pub enum Endpoint {
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList { group: String, version: String },
}

/// Renders a discovery document, or None when the group or version is not served.
pub fn render(registry: &Registry, endpoint: &Endpoint) -> Option<Value> {
    match endpoint {
        Endpoint::Version => Some(json!({
            "major": KUBERNETES_MAJOR,
            "minor": KUBERNETES_MINOR,
            "gitVersion": format!("v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-flotilla-sandbox"),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "n/a (flotilla sandbox)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        })),
        Endpoint::CoreVersions => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        })),
        Endpoint::Groups => {
            let groups: Vec<Value> = registry
                .groups()
                .iter()
                .map(|(name, versions)| group_document(name, versions))
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        Endpoint::Group(name) => {
            let groups = registry.groups();
            let versions = groups.get(name)?;
            let mut doc = group_document(name, versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            Some(doc)
        }
        Endpoint::ResourceList { group, version } => {
            let mut resources = Vec::new();
            for r in registry
                .iter()
                .filter(|r| &r.group == group && &r.version == version)
            {
                resources.push(json!({
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": r.verbs(),
                    "shortNames": r.short_names,
                    "categories": r.categories,
                }));
                if r.has_status {
                    resources.push(json!({
                        "name": format!("{}/status", r.plural),
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            if resources.is_empty() {
                return None;
            }
            let group_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            Some(json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": resources,
            }))
        }
    }
}

fn group_document(name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}
