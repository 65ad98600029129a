//! RBAC rules read from manifests and matched against requests the way the API server's RBAC
//! authorizer matches them (group, resource or `resource/subresource`, verb, resourceNames;
//! `*` wildcards). Tests use it to prove a Role grants what a process sent and nothing it did
//! not use; the sandbox does not enforce it.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use crate::RequestRecord;

/// One policy rule of a Role or ClusterRole.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
}

#[derive(Deserialize)]
struct Role {
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

/// What RBAC authorizes a request by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    /// The API group (`""` for core).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    /// The object's name, if the request names one.
    pub name: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
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

/// The rules of every Role and ClusterRole in these manifest files (bindings are skipped).
pub fn rules_in(files: &[&Path]) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let Ok(role) = serde_yaml::from_value::<Role>(value) else {
                continue;
            };
            if role.kind == "ClusterRole" || role.kind == "Role" {
                rules.extend(role.rules);
            }
        }
    }
    Ok(rules)
}

fn matches(granted: &[String], wanted: &str) -> bool {
    granted.iter().any(|g| g == "*" || g == wanted)
}

impl Rule {
    /// Whether this rule grants the request.
    pub fn allows(&self, request: &Attributes) -> bool {
        matches(&self.api_groups, &request.group)
            && matches(&self.resources, &request.resource)
            && matches(&self.verbs, &request.verb)
            && (self.resource_names.is_empty()
                || request
                    .name
                    .as_ref()
                    .is_some_and(|name| self.resource_names.contains(name)))
    }
}

/// Whether some rule grants the request.
pub fn allows(rules: &[Rule], request: &Attributes) -> bool {
    rules.iter().any(|rule| rule.allows(request))
}

impl RequestRecord {
    /// What this request needs granted: its verb, `create` too for a server-side apply that
    /// created the object (`201`), which the API server authorizes as a create as well, and
    /// `update` on the `finalizers` of every owner it sets `blockOwnerDeletion` on
    /// (OwnerReferencesPermissionEnforcement).
    pub fn required(&self) -> Vec<Attributes> {
        let attributes = Attributes {
            group: self.group.clone(),
            resource: self.full_resource(),
            name: self.name.clone(),
            verb: self.verb.as_str().to_owned(),
        };
        let create = (self.verb == crate::Verb::Patch && self.status == 201).then(|| Attributes {
            verb: "create".to_owned(),
            ..attributes.clone()
        });
        let owners = self
            .blocked_owners
            .iter()
            .map(|(group, plural, name)| Attributes {
                group: group.clone(),
                resource: format!("{plural}/finalizers"),
                name: Some(name.clone()),
                verb: "update".to_owned(),
            });
        std::iter::once(attributes)
            .chain(create)
            .chain(owners)
            .collect()
    }
}

/// Requests checked against rules.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests no rule grants, each described once.
    pub denied: Vec<String>,
    /// `verb group/resource` a rule grants that no request used (wildcards and rules with
    /// resourceNames are not expanded).
    pub unused: Vec<String>,
}

/// Checks `requests` against `rules`. `unused` covers only the resources `scope` accepts, so a
/// test of one controller can judge the rules written for it.
pub fn check(
    requests: impl IntoIterator<Item = Attributes>,
    rules: &[Rule],
    scope: impl Fn(&str, &str) -> bool,
) -> Report {
    let used: BTreeSet<Attributes> = requests.into_iter().collect();
    let mut denied: Vec<String> = used
        .iter()
        .filter(|request| !allows(rules, request))
        .map(ToString::to_string)
        .collect();
    denied.dedup();
    let used: BTreeSet<(&str, &str, &str)> = used
        .iter()
        .map(|a| (a.group.as_str(), a.resource.as_str(), a.verb.as_str()))
        .collect();
    let mut unused = Vec::new();
    for rule in rules {
        for group in &rule.api_groups {
            for resource in &rule.resources {
                if !scope(group, resource) {
                    continue;
                }
                for verb in &rule.verbs {
                    if !used.contains(&(group.as_str(), resource.as_str(), verb.as_str())) {
                        let granted = Attributes {
                            group: group.clone(),
                            resource: resource.clone(),
                            name: None,
                            verb: verb.clone(),
                        };
                        unused.push(granted.to_string());
                    }
                }
            }
        }
    }
    Report { denied, unused }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> Rule {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Rule {
            api_groups: strings(groups),
            resources: strings(resources),
            verbs: strings(verbs),
            resource_names: strings(names),
        }
    }

    fn request(group: &str, resource: &str, verb: &str, name: Option<&str>) -> Attributes {
        Attributes {
            group: group.into(),
            resource: resource.into(),
            name: name.map(Into::into),
            verb: verb.into(),
        }
    }

    #[test]
    fn rules_match_as_the_rbac_authorizer_does() {
        let status = rule(&["flotilla.dev"], &["plans/status"], &["patch"], &[]);
        assert!(status.allows(&request("flotilla.dev", "plans/status", "patch", Some("a"))));
        assert!(!status.allows(&request("flotilla.dev", "plans", "patch", Some("a"))));
        assert!(!status.allows(&request("", "plans/status", "patch", Some("a"))));
        let named = rule(&[""], &["configmaps"], &["get"], &["lock"]);
        assert!(named.allows(&request("", "configmaps", "get", Some("lock"))));
        assert!(!named.allows(&request("", "configmaps", "get", Some("other"))));
        assert!(!named.allows(&request("", "configmaps", "get", None)));
        let wild = rule(&["*"], &["*"], &["*"], &[]);
        assert!(wild.allows(&request("apps", "deployments/scale", "update", None)));
    }

    #[test]
    fn check_reports_denied_and_unused() {
        let rules = [rule(&[""], &["secrets"], &["get", "watch"], &[])];
        let report = check(
            [
                request("", "secrets", "get", Some("s")),
                request("", "configmaps", "get", Some("c")),
            ],
            &rules,
            |_, _| true,
        );
        assert_eq!(report.denied, ["get core/configmaps"]);
        assert_eq!(report.unused, ["watch core/secrets"]);
        let report = check([], &rules, |_, resource| resource != "secrets");
        assert!(report.unused.is_empty());
    }
}
