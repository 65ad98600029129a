//! The operator's RBAC (`config/rbac/`) checked against the requests the controllers really
//! send: every controller test ends by asserting that each request its operator made is
//! granted by a rule, so a rule trimmed too far fails the tests that need it. Rules and
//! matching are the sandbox's ([`flotilla_sandbox::rbac`]); this maps the client's own
//! request log onto RBAC attributes.

use std::path::Path;

use flotilla_sandbox::rbac::{self, Attributes, Rule};
use http::Method;

use super::client::SentRequest;

/// The rules of the operator's ClusterRole and leader-election Role.
pub fn granted() -> Vec<Rule> {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac");
    rbac::rules_in(&[
        &rbac.join("role.yaml"),
        &rbac.join("leader_election_role.yaml"),
    ])
    .expect("config/rbac is readable")
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
        verb: verb.to_owned(),
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
        verb: "create".to_owned(),
        ..attributes.clone()
    });
    std::iter::once(attributes).chain(create).collect()
}

/// The requests among `sent` that no rule grants, each once.
pub fn denied(sent: &[SentRequest]) -> Vec<String> {
    rbac::check(sent.iter().flat_map(required), &granted(), |_, _| false).denied
}
