//! The operator's RBAC (`config/rbac/`) checked against the requests the controllers really
//! send: every controller test ends by asserting that each request its operator made is
//! granted by a rule, so a rule trimmed too far fails the tests that need it.

use std::path::Path;

use http::Method;
use serde::Deserialize;

use super::client::SentRequest;

/// One RBAC policy rule.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
}

#[derive(Deserialize)]
struct Role {
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// What RBAC authorizes a request by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// The API group (`""` for core).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// The object's name, if the request names one.
    pub name: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: &'static str,
}

impl std::fmt::Display for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)
    }
}

/// The rules of the operator's ClusterRole and leader-election Role.
pub fn granted() -> Vec<Rule> {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac");
    let mut rules = Vec::new();
    for file in ["role.yaml", "leader_election_role.yaml"] {
        let text = std::fs::read_to_string(rbac.join(file)).expect("config/rbac is readable");
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).expect("YAML");
            let Ok(role) = serde_yaml::from_value::<Role>(value) else {
                continue; // a binding
            };
            if role.kind == "ClusterRole" || role.kind == "Role" {
                rules.extend(role.rules);
            }
        }
    }
    rules
}

/// The RBAC attributes of a request, or `None` for a path that is not a resource (discovery).
pub fn attributes(request: &SentRequest) -> Option<Attributes> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (resource, name, subresource) = match rest {
        ["namespaces", _namespace, resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
        [resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
        [] => return None,
    };
    let verb = match (&request.method, request.watch, name.is_some()) {
        (&Method::GET, true, _) => "watch",
        (&Method::GET, false, true) => "get",
        (&Method::GET, false, false) => "list",
        (&Method::POST, ..) => "create",
        (&Method::PUT, ..) => "update",
        (&Method::PATCH, ..) => "patch",
        (&Method::DELETE, _, true) => "delete",
        (&Method::DELETE, _, false) => "deletecollection",
        _ => return None,
    };
    Some(Attributes {
        group: group.to_owned(),
        resource: match subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        },
        name: name.map(|n| (*n).to_owned()),
        verb,
    })
}

/// Whether some rule grants the request.
pub fn allows(rules: &[Rule], request: &Attributes) -> bool {
    rules.iter().any(|rule| {
        rule.api_groups.contains(&request.group)
            && rule.resources.contains(&request.resource)
            && rule.verbs.iter().any(|verb| verb == request.verb)
            && (rule.resource_names.is_empty()
                || request
                    .name
                    .as_ref()
                    .is_some_and(|name| rule.resource_names.contains(name)))
    })
}

/// What a request needs granted: its own verb, and `create` too for a server-side apply
/// that created the object (`201`), which the API server authorizes as a create as well.
pub fn required(request: &SentRequest) -> Vec<Attributes> {
    let Some(attributes) = attributes(request) else {
        return Vec::new();
    };
    let created = attributes.verb == "patch" && request.status == Some(201);
    let create = created.then(|| Attributes {
        verb: "create",
        ..attributes.clone()
    });
    std::iter::once(attributes).chain(create).collect()
}

/// The requests among `sent` that no rule grants, each once.
pub fn denied(sent: &[SentRequest]) -> Vec<String> {
    let rules = granted();
    let mut denied: Vec<String> = sent
        .iter()
        .flat_map(required)
        .filter(|request| !allows(&rules, request))
        .map(|request| request.to_string())
        .collect();
    denied.sort();
    denied.dedup();
    denied
}
