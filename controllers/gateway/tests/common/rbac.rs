//! The gateway's RBAC (`config/rbac/gateway_role.yaml`) checked against the requests the gateway
//! really sent, as the sandbox logged them: every request must be granted by a rule, and every
//! verb a rule grants must have been used, so the Role neither lacks nor carries a permission.
//! (The operator's copy, over its own client log, is `controllers/subscriptions/tests/common/
//! rbac.rs`; this one reads the sandbox's request log, which names no API group.)

use std::collections::BTreeSet;
use std::path::Path;

use flotilla_sandbox::RequestRecord;
use serde::Deserialize;

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

/// What RBAC authorizes a request by: `(group, resource[/subresource], verb)`.
pub type Attributes = (String, String, String);

fn describe((group, resource, verb): &Attributes) -> String {
    let group = if group.is_empty() { "core" } else { group };
    format!("{verb} {group}/{resource}")
}

/// The rules of the gateway's Role.
pub fn gateway_rules() -> Vec<Rule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac/gateway_role.yaml");
    let text = std::fs::read_to_string(&path).expect("config/rbac/gateway_role.yaml is readable");
    let role: Role = serde_yaml::from_str(&text).expect("gateway_role.yaml is a Role");
    assert_eq!(role.kind, "Role");
    role.rules
}

/// The API group of a resource the gateway may touch. The sandbox's log names resources by
/// plural only; a resource missing here fails the test, so a new kind is added deliberately.
fn group_of(resource: &str) -> &'static str {
    match resource {
        "secrets" => "",
        "devices" | "firmwarereleases" => "flotilla.dev",
        other => panic!("the gateway requested {other}, which no gateway rule can grant"),
    }
}

/// What a request needs granted: its verb, and `create` too for a server-side apply that
/// created the object (`201`).
pub fn required(record: &RequestRecord) -> Vec<Attributes> {
    let verb = record.verb.as_str().to_owned();
    let attributes = (
        group_of(&record.resource).to_owned(),
        record.full_resource(),
        verb.clone(),
    );
    let create = (verb == "patch" && record.status == 201).then(|| {
        (
            attributes.0.clone(),
            attributes.1.clone(),
            "create".to_owned(),
        )
    });
    std::iter::once(attributes).chain(create).collect()
}

fn allows(rule: &Rule, (group, resource, verb): &Attributes) -> bool {
    rule.api_groups.contains(group)
        && rule.resources.contains(resource)
        && rule.verbs.contains(verb)
        && rule.resource_names.is_empty()
}

/// The requests no rule grants, and the granted `(group, resource, verb)` nobody used, each
/// described once.
pub fn check(records: &[RequestRecord], rules: &[Rule]) -> (Vec<String>, Vec<String>) {
    let used: BTreeSet<Attributes> = records.iter().flat_map(required).collect();
    let denied = used
        .iter()
        .filter(|attributes| !rules.iter().any(|rule| allows(rule, attributes)))
        .map(describe)
        .collect();
    let mut unused = Vec::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    let granted = (group.clone(), resource.clone(), verb.clone());
                    if !used.contains(&granted) {
                        unused.push(describe(&granted));
                    }
                }
            }
        }
    }
    (denied, unused)
}
