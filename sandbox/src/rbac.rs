//! RBAC rules read from manifests and matched against requests the way the API server's RBAC
//! authorizer matches them (group, resource or `resource/subresource`, verb, resourceNames,
//! nonResourceURLs; `*` wildcards). Tests use [`check`] to prove a Role grants what a process
//! sent and nothing it did not use.
//!
//! The [`Policy`] half is the authorizer a sandbox started with
//! [`crate::SandboxBuilder::enforce_rbac`] runs on every request: the Roles, ClusterRoles and
//! their bindings in the sandbox's own store, evaluated as kube-apiserver's RBAC authorizer
//! (`plugin/pkg/auth/authorizer/rbac`) and rule resolver (`pkg/registry/rbac/validation`) do,
//! with the escalation checks of the RBAC registry (`policybased` storage).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::RequestRecord;

/// One policy rule of a Role or ClusterRole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
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
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_norway::Value::deserialize(document)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let Ok(role) = serde_norway::from_value::<Role>(value) else {
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
        let subresource = request
            .resource
            .split_once('/')
            .map(|(_, sub)| sub)
            .unwrap_or_default();
        matches(&self.api_groups, &request.group)
            && resource_matches(&self.resources, &request.resource, subresource)
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

/// `ResourceMatches` of the RBAC helpers: `*`, the exact `resource` or `resource/subresource`,
/// or `*/subresource` for any resource's subresource.
fn resource_matches(granted: &[String], combined: &str, subresource: &str) -> bool {
    granted.iter().any(|g| {
        g == "*"
            || g == combined
            || (!subresource.is_empty()
                && g.len() == subresource.len() + 2
                && g.starts_with("*/")
                && g.ends_with(subresource))
    })
}

/// `NonResourceURLMatches`: `*`, the exact path, or a prefix ending in `*`.
fn non_resource_url_matches(granted: &[String], path: &str) -> bool {
    granted.iter().any(|g| {
        g == "*" || g == path || (g.ends_with('*') && path.starts_with(g.trim_end_matches('*')))
    })
}

/// The group of privileged users: always authorized, never subject to escalation checks.
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";
/// The group of every ServiceAccount.
pub const SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Who a request is from (`user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A ServiceAccount's user: `system:serviceaccount:NS:NAME` in `system:serviceaccounts`,
    /// `system:serviceaccounts:NS` and `system:authenticated`.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            name: service_account_username(namespace, name),
            uid: uid.to_owned(),
            groups: vec![
                SERVICE_ACCOUNTS.to_owned(),
                format!("{SERVICE_ACCOUNTS}:{namespace}"),
                AUTHENTICATED.to_owned(),
            ],
            extra: BTreeMap::new(),
        }
    }

    pub fn is_privileged(&self) -> bool {
        self.groups.iter().any(|g| g == SYSTEM_MASTERS)
    }
}

/// `system:serviceaccount:NS:NAME`
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}")
}

/// The namespace and name of a ServiceAccount username (`serviceaccount.SplitUsername`).
pub fn split_service_account_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// What the authorizer decides on: the attributes `requestinfo.go` derives from a request
/// (`authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestAttributes {
    pub verb: String,
    /// A request for a resource (`/api/v1/...`, `/apis/g/v/...`) rather than a path.
    pub resource_request: bool,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path (what nonResourceURLs match).
    pub path: String,
}

fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Whether a name can be a path segment (`path.IsValidPathSegmentName`).
fn valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

impl RequestAttributes {
    /// Derives the attributes like `RequestInfoFactory.NewRequestInfo`: the verb from the
    /// method (`GET` without a name is `list`, or `watch` with `?watch=true`; `DELETE` without
    /// a name is `deletecollection`), the namespace of `/namespaces/NS/...` (also of the
    /// Namespace `NS` itself), the name of a list or watch from `fieldSelector=metadata.name=X`.
    pub fn from_request(method: &str, path: &str, query: &HashMap<String, String>) -> Self {
        let mut info = RequestAttributes {
            path: path.to_owned(),
            verb: method.to_ascii_lowercase(),
            ..Default::default()
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let parts: Vec<&str> = if parts == [""] { Vec::new() } else { parts };
        if parts.len() < 3 {
            return info;
        }
        let mut rest: &[&str] = match parts[0] {
            "api" => &parts[1..],
            "apis" => {
                if parts.len() < 4 {
                    return info;
                }
                info.group = parts[1].to_owned();
                &parts[2..]
            }
            _ => return info,
        };
        info.resource_request = true;
        info.version = rest[0].to_owned();
        rest = &rest[1..];
        info.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_owned();
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            info.namespace = rest[1].to_owned();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        if let Some(resource) = rest.first() {
            info.resource = (*resource).to_owned();
        }
        if let Some(name) = rest.get(1) {
            info.name = (*name).to_owned();
        }
        if let Some(sub) = rest.get(2) {
            info.subresource = (*sub).to_owned();
        }
        if info.name.is_empty() && info.verb == "get" {
            info.verb = if query.get("watch").is_some_and(|w| parse_bool(w)) {
                "watch".to_owned()
            } else {
                "list".to_owned()
            };
            if let Some(name) = query
                .get("fieldSelector")
                .and_then(|s| exact_name(s))
                .filter(|n| valid_path_segment_name(n))
            {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_owned();
        }
        info
    }

    /// `resource` or `resource/subresource`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// `forbiddenMessage` of the apiserver's response writers.
    pub fn forbidden_message(&self, user: &str) -> String {
        let user = quote(user);
        if !self.resource_request {
            return format!(
                "User {user} cannot {} path {}",
                self.verb,
                quote(&self.path)
            );
        }
        let resource = quote(&self.combined_resource());
        let group = quote(&self.group);
        if self.namespace.is_empty() {
            format!(
                "User {user} cannot {} resource {resource} in API group {group} at the cluster scope",
                self.verb
            )
        } else {
            format!(
                "User {user} cannot {} resource {resource} in API group {group} in the namespace {}",
                self.verb,
                quote(&self.namespace)
            )
        }
    }

    /// The 403 the apiserver answers a denied request with (`responsewriters.Forbidden`).
    pub fn forbidden(&self, user: &str, reason: &str) -> (http::StatusCode, Value) {
        let message = self.forbidden_message(user);
        let message = if reason.is_empty() {
            message
        } else {
            format!("{message}: {reason}")
        };
        crate::status_error::forbidden(&self.group, &self.resource, &self.name, &message)
    }
}

/// The name a field selector requires with `metadata.name=X` or `==` (`RequiresExactMatch`).
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))?;
        (key.trim() == "metadata.name").then(|| value.trim().to_owned())
    })
}

fn quote(s: &str) -> String {
    crate::schema::go_fmt::quote(s)
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// `RuleAllows` of the RBAC authorizer.
pub fn rule_allows(rule: &Rule, request: &RequestAttributes) -> bool {
    if request.resource_request {
        matches(&rule.verbs, &request.verb)
            && matches(&rule.api_groups, &request.group)
            && resource_matches(
                &rule.resources,
                &request.combined_resource(),
                &request.subresource,
            )
            && (rule.resource_names.is_empty() || rule.resource_names.contains(&request.name))
    } else {
        matches(&rule.verbs, &request.verb)
            && non_resource_url_matches(&rule.non_resource_urls, &request.path)
    }
}

/// A Role's or ClusterRole's reference in a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    #[serde(default)]
    pub api_group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// A binding's subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
}

impl Subject {
    /// `appliesToUser`: a ServiceAccount subject without a namespace is in the binding's.
    fn applies_to(&self, user: &UserInfo, namespace: &str) -> bool {
        match self.kind.as_str() {
            "User" => user.name == self.name,
            "Group" => user.groups.contains(&self.name),
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    namespace
                } else {
                    &self.namespace
                };
                !ns.is_empty() && user.name == service_account_username(ns, &self.name)
            }
            _ => false,
        }
    }

    /// `describeSubject`
    fn describe(&self, binding_namespace: &str) -> String {
        match self.kind.as_str() {
            "ServiceAccount" => {
                let ns = if self.namespace.is_empty() {
                    binding_namespace
                } else {
                    &self.namespace
                };
                format!("{} {}", self.kind, quote(&format!("{}/{ns}", self.name)))
            }
            _ => format!("{} {}", self.kind, quote(&self.name)),
        }
    }
}

/// A RoleBinding (namespace set) or ClusterRoleBinding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub name: String,
    pub namespace: String,
    pub role_ref: RoleRef,
    pub subjects: Vec<Subject>,
}

impl Binding {
    /// Reads a binding object; None when it is not one.
    pub fn from_object(object: &Value) -> Option<Self> {
        let meta = object.get("metadata")?;
        Some(Self {
            name: meta.get("name")?.as_str()?.to_owned(),
            namespace: meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            role_ref: serde_json::from_value(object.get("roleRef")?.clone()).ok()?,
            subjects: object
                .get("subjects")
                .and_then(|s| serde_json::from_value(s.clone()).ok())
                .unwrap_or_default(),
        })
    }
}

/// The rules of a Role or ClusterRole object.
pub fn rules_of(object: &Value) -> Vec<Rule> {
    object
        .get("rules")
        .and_then(|r| serde_json::from_value(r.clone()).ok())
        .unwrap_or_default()
}

/// What the authorizer decided, and why (`RBAC: allowed by ...` when allowed; the rule
/// resolution errors, if any, when not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Every Role, ClusterRole and binding of a cluster: what the RBAC authorizer evaluates.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub cluster_roles: BTreeMap<String, Vec<Rule>>,
    /// By (namespace, name).
    pub roles: BTreeMap<(String, String), Vec<Rule>>,
    pub cluster_role_bindings: Vec<Binding>,
    /// By namespace.
    pub role_bindings: BTreeMap<String, Vec<Binding>>,
}

/// Where a rule came from, for `RBAC: allowed by ...`.
struct Source<'a> {
    binding: &'a Binding,
    subject: &'a Subject,
}

impl Source<'_> {
    fn describe(&self) -> String {
        let b = self.binding;
        if b.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {} of {} {} to {}",
                quote(&b.name),
                b.role_ref.kind,
                quote(&b.role_ref.name),
                self.subject.describe("")
            )
        } else {
            format!(
                "RoleBinding {} of {} {} to {}",
                quote(&format!("{}/{}", b.name, b.namespace)),
                b.role_ref.kind,
                quote(&b.role_ref.name),
                self.subject.describe(&b.namespace)
            )
        }
    }
}

/// The rules that grant every permission (`fullAuthority` of the ClusterRole registry).
pub fn full_authority() -> Vec<Rule> {
    let all = || vec!["*".to_owned()];
    vec![
        Rule {
            verbs: all(),
            api_groups: all(),
            resources: all(),
            ..Default::default()
        },
        Rule {
            verbs: all(),
            non_resource_urls: all(),
            ..Default::default()
        },
    ]
}

impl Policy {
    /// A policy from Role, ClusterRole, RoleBinding and ClusterRoleBinding objects.
    pub fn from_objects<'a>(
        cluster_roles: impl IntoIterator<Item = &'a Value>,
        roles: impl IntoIterator<Item = &'a Value>,
        cluster_role_bindings: impl IntoIterator<Item = &'a Value>,
        role_bindings: impl IntoIterator<Item = &'a Value>,
    ) -> Self {
        let name_of = |o: &Value| {
            let meta = o.get("metadata");
            let s = |k: &str| {
                meta.and_then(|m| m.get(k))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (s("namespace"), s("name"))
        };
        let mut policy = Policy::default();
        for role in cluster_roles {
            policy.cluster_roles.insert(name_of(role).1, rules_of(role));
        }
        for role in roles {
            policy.roles.insert(name_of(role), rules_of(role));
        }
        policy.cluster_role_bindings = cluster_role_bindings
            .into_iter()
            .filter_map(Binding::from_object)
            .collect();
        for binding in role_bindings.into_iter().filter_map(Binding::from_object) {
            policy
                .role_bindings
                .entry(binding.namespace.clone())
                .or_default()
                .push(binding);
        }
        policy
    }

    /// `GetRoleReferenceRules`, with the lister's error (`clusterrole.rbac.authorization.k8s.io
    /// "x" not found`) for a missing role.
    pub fn role_reference_rules(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<&[Rule], String> {
        match role_ref.kind.as_str() {
            "Role" => self
                .roles
                .get(&(namespace.to_owned(), role_ref.name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {} not found",
                        quote(&role_ref.name)
                    )
                }),
            "ClusterRole" => self
                .cluster_roles
                .get(&role_ref.name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {} not found",
                        quote(&role_ref.name)
                    )
                }),
            other => Err(format!("unsupported role reference kind: {}", quote(other))),
        }
    }

    /// `VisitRulesFor`: the rules of every ClusterRoleBinding, then (for a namespace) of every
    /// RoleBinding in it, that applies to the user. The visitor returns false to stop.
    fn visit_rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visitor: impl FnMut(Option<&Source<'_>>, Option<&Rule>, Option<String>) -> bool,
    ) {
        let namespaced = if namespace.is_empty() {
            None
        } else {
            self.role_bindings.get(namespace)
        };
        let bindings = self
            .cluster_role_bindings
            .iter()
            .map(|b| (b, ""))
            .chain(namespaced.into_iter().flatten().map(|b| (b, namespace)));
        for (binding, ns) in bindings {
            let Some(subject) = binding.subjects.iter().find(|s| s.applies_to(user, ns)) else {
                continue;
            };
            match self.role_reference_rules(&binding.role_ref, ns) {
                Err(e) => {
                    if !visitor(None, None, Some(e)) {
                        return;
                    }
                }
                Ok(rules) => {
                    let source = Source { binding, subject };
                    for rule in rules {
                        if !visitor(Some(&source), Some(rule), None) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// `RulesFor`: the user's rules in a namespace (`""`: cluster-wide only), and the errors
    /// resolving them (bindings to missing roles).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<Rule>, Vec<String>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit_rules_for(user, namespace, |_, rule, err| {
            if let Some(rule) = rule {
                rules.push(rule.clone());
            }
            if let Some(err) = err {
                errors.push(err);
            }
            true
        });
        (rules, errors)
    }

    /// The authorizer chain of a kube-apiserver with `--authorization-mode=RBAC`: members of
    /// `system:masters` are allowed everything, everyone else what RBAC grants.
    pub fn authorize(&self, user: &UserInfo, request: &RequestAttributes) -> Decision {
        if user.is_privileged() {
            return Decision {
                allowed: true,
                reason: String::new(),
            };
        }
        let mut allowed_by = None;
        let mut errors = Vec::new();
        self.visit_rules_for(user, &request.namespace, |source, rule, err| {
            if let (Some(source), Some(rule)) = (source, rule)
                && rule_allows(rule, request)
            {
                allowed_by = Some(source.describe());
                return false;
            }
            if let Some(err) = err {
                errors.push(err);
            }
            true
        });
        match allowed_by {
            Some(source) => Decision {
                allowed: true,
                reason: format!("RBAC: allowed by {source}"),
            },
            None => Decision {
                allowed: false,
                reason: if errors.is_empty() {
                    String::new()
                } else {
                    format!("RBAC: {}", aggregate(&errors))
                },
            },
        }
    }

    /// `ConfirmNoEscalation`: Ok when the user holds every permission `rules` grant (in
    /// `namespace`, or cluster-wide for `""`), else the apiserver's message listing the
    /// missing ones.
    pub fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        namespace: &str,
        rules: &[Rule],
    ) -> Result<(), String> {
        let (owner, errors) = self.rules_for(user, namespace);
        let (covered, missing) = covers(&owner, rules);
        if covered {
            return Ok(());
        }
        let descriptions: BTreeSet<String> =
            compact_rules(&missing).iter().map(compact_string).collect();
        let mut message = format!(
            "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
            quote(&user.name),
            quote_list(&user.groups),
            descriptions.into_iter().collect::<Vec<_>>().join("\n")
        );
        if !errors.is_empty() {
            message.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
        }
        Err(message)
    }
}

/// `utilerrors.NewAggregate(errs).Error()`
fn aggregate(errors: &[String]) -> String {
    let unique: Vec<&String> = {
        let mut seen = BTreeSet::new();
        errors.iter().filter(|e| seen.insert(*e)).collect()
    };
    if unique.len() == 1 {
        unique[0].clone()
    } else {
        format!(
            "[{}]",
            unique
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `BreakdownRule`: one rule per group, resource, verb and name (or URL and verb).
pub fn breakdown_rule(rule: &Rule) -> Vec<Rule> {
    let one = |s: &String| vec![s.clone()];
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                if rule.resource_names.is_empty() {
                    out.push(Rule {
                        api_groups: one(group),
                        resources: one(resource),
                        verbs: one(verb),
                        ..Default::default()
                    });
                } else {
                    for name in &rule.resource_names {
                        out.push(Rule {
                            api_groups: one(group),
                            resources: one(resource),
                            verbs: one(verb),
                            resource_names: one(name),
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(Rule {
                non_resource_urls: one(url),
                verbs: one(verb),
                ..Default::default()
            });
        }
    }
    out
}

fn has(set: &[String], item: &str) -> bool {
    set.iter().any(|s| s == item)
}

fn has_all(set: &[String], items: &[String]) -> bool {
    items.iter().all(|i| has(set, i))
}

fn resource_covers_all(set: &[String], covers: &[String]) -> bool {
    if has(set, "*") || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        if has(set, path) {
            return true;
        }
        match path.split_once('/') {
            Some((_, sub)) => has(set, &format!("*/{sub}")),
            None => false,
        }
    })
}

fn non_resource_url_covers(owner: &str, sub: &str) -> bool {
    owner == sub || (owner.ends_with('*') && sub.starts_with(owner.trim_end_matches('*')))
}

/// `ruleCovers`: whether an owner rule covers a broken-down servant rule.
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = sub.non_resource_urls.iter().all(|path| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| non_resource_url_covers(o, path))
    });
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// `Covers`: whether the owner's rules cover every servant rule, and the uncovered pieces.
pub fn covers(owner: &[Rule], servant: &[Rule]) -> (bool, Vec<Rule>) {
    let missing: Vec<Rule> = servant
        .iter()
        .flat_map(breakdown_rule)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    (missing.is_empty(), missing)
}

/// `CompactRules`: simple rules (one group, one resource, at most one name) that differ only
/// by verb are merged.
pub fn compact_rules(rules: &[Rule]) -> Vec<Rule> {
    let mut compacted = Vec::new();
    type SimpleResource = (String, String, Option<String>);
    let mut simple: Vec<(SimpleResource, Rule)> = Vec::new();
    for rule in rules {
        let is_simple = rule.resource_names.len() <= 1
            && rule.non_resource_urls.is_empty()
            && rule.api_groups.len() == 1
            && rule.resources.len() == 1;
        if !is_simple {
            compacted.push(rule.clone());
            continue;
        }
        let key = (
            rule.api_groups[0].clone(),
            rule.resources[0].clone(),
            rule.resource_names.first().cloned(),
        );
        match simple.iter_mut().find(|(k, _)| *k == key) {
            Some((_, existing)) => {
                for verb in &rule.verbs {
                    if !existing.verbs.contains(verb) {
                        existing.verbs.push(verb.clone());
                    }
                }
            }
            None => simple.push((key, rule.clone())),
        }
    }
    compacted.extend(simple.into_iter().map(|(_, r)| r));
    compacted
}

/// `CompactString`: `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`.
pub fn compact_string(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if !rule.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", quote_list(&rule.api_groups)));
    }
    if !rule.resources.is_empty() {
        parts.push(format!("Resources:{}", quote_list(&rule.resources)));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!(
            "NonResourceURLs:{}",
            quote_list(&rule.non_resource_urls)
        ));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!(
            "ResourceNames:{}",
            quote_list(&rule.resource_names)
        ));
    }
    if !rule.verbs.is_empty() {
        parts.push(format!("Verbs:{}", quote_list(&rule.verbs)));
    }
    format!("{{{}}}", parts.join(", "))
}

/// The rules an aggregated ClusterRole gets from the ClusterRoles its `aggregationRule`
/// selects (the ClusterRole aggregation controller): each selector in turn, the ClusterRoles
/// it matches by name, their rules without repeats. None when the object has no
/// aggregationRule.
pub fn aggregated_rules(cluster_role: &Value, all: &[&Value]) -> Option<Vec<Value>> {
    let selectors = cluster_role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)?;
    let own_name = cluster_role.pointer("/metadata/name");
    let mut sorted: Vec<&Value> = all.to_vec();
    sorted.sort_by(|a, b| {
        let name = |o: &Value| {
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        name(a).cmp(&name(b))
    });
    let mut rules: Vec<Value> = Vec::new();
    let mut parsed: Vec<Rule> = Vec::new();
    for selector in selectors {
        let Some(selector) = label_selector(selector) else {
            continue;
        };
        for role in &sorted {
            if role.pointer("/metadata/name") == own_name
                || !selector.matches(&crate::store::labels_of(role))
            {
                continue;
            }
            for rule in role
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Ok(p) = serde_json::from_value::<Rule>(rule.clone()) else {
                    continue;
                };
                if !parsed.contains(&p) {
                    parsed.push(p);
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

/// A `metav1.LabelSelector` as a selector (`LabelSelectorAsSelector`; the empty one selects
/// everything).
fn label_selector(selector: &Value) -> Option<crate::selector::LabelSelector> {
    let mut terms = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            terms.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for expr in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expr.get("key").and_then(Value::as_str)?;
        let values: Vec<&str> = expr
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match expr.get("operator").and_then(Value::as_str)? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    crate::selector::LabelSelector::parse(&terms.join(",")).ok()
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
            non_resource_urls: Vec::new(),
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

    fn attrs(method: &str, path: &str, query: &[(&str, &str)]) -> RequestAttributes {
        let query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RequestAttributes::from_request(method, path, &query)
    }

    fn summary(a: &RequestAttributes) -> (bool, &str, &str, &str, &str, &str) {
        (
            a.resource_request,
            a.verb.as_str(),
            a.group.as_str(),
            a.combined_resource_str(),
            a.namespace.as_str(),
            a.name.as_str(),
        )
    }

    impl RequestAttributes {
        fn combined_resource_str(&self) -> &'static str {
            Box::leak(self.combined_resource().into_boxed_str())
        }
    }

    #[test]
    fn verbs_are_derived_like_requestinfo() {
        let ns = "/apis/flotilla.dev/v1alpha1/namespaces/fleet/subscriptions";
        assert_eq!(
            summary(&attrs("GET", ns, &[])),
            (true, "list", "flotilla.dev", "subscriptions", "fleet", "")
        );
        assert_eq!(attrs("GET", ns, &[("watch", "true")]).verb, "watch");
        assert_eq!(attrs("GET", ns, &[("watch", "1")]).verb, "watch");
        assert_eq!(attrs("GET", ns, &[("watch", "false")]).verb, "list");
        let named = attrs(
            "GET",
            ns,
            &[("watch", "true"), ("fieldSelector", "metadata.name=gold")],
        );
        assert_eq!(
            (named.verb.as_str(), named.name.as_str()),
            ("watch", "gold")
        );
        let not_named = attrs("GET", ns, &[("fieldSelector", "metadata.name!=gold")]);
        assert_eq!(not_named.name, "");
        assert_eq!(attrs("POST", ns, &[]).verb, "create");
        assert_eq!(attrs("DELETE", ns, &[]).verb, "deletecollection");
        let one = format!("{ns}/gold");
        assert_eq!(attrs("GET", &one, &[]).verb, "get");
        // A named GET stays a get even with watch=true, as in requestinfo.go.
        assert_eq!(attrs("GET", &one, &[("watch", "true")]).verb, "get");
        assert_eq!(attrs("PUT", &one, &[]).verb, "update");
        assert_eq!(attrs("PATCH", &one, &[]).verb, "patch");
        assert_eq!(attrs("DELETE", &one, &[]).verb, "delete");
        assert_eq!(
            summary(&attrs("PATCH", &format!("{one}/status"), &[])),
            (
                true,
                "patch",
                "flotilla.dev",
                "subscriptions/status",
                "fleet",
                "gold"
            )
        );
        assert_eq!(
            summary(&attrs(
                "POST",
                "/api/v1/namespaces/fleet/serviceaccounts/op/token",
                &[]
            )),
            (true, "create", "", "serviceaccounts/token", "fleet", "op")
        );
        // The Namespace itself is in its own namespace; its status too.
        assert_eq!(
            summary(&attrs("GET", "/api/v1/namespaces/fleet", &[])),
            (true, "get", "", "namespaces", "fleet", "fleet")
        );
        assert_eq!(
            summary(&attrs("PUT", "/api/v1/namespaces/fleet/finalize", &[])),
            (true, "update", "", "namespaces/finalize", "fleet", "fleet")
        );
        assert_eq!(
            summary(&attrs("GET", "/apis/flotilla.dev/v1alpha1/plans", &[])),
            (true, "list", "flotilla.dev", "plans", "", "")
        );
        // Discovery and other paths are non-resource requests with the method as verb.
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/flotilla.dev",
            "/apis/flotilla.dev/v1alpha1",
            "/version",
            "/openapi/v3",
        ] {
            let a = attrs("GET", path, &[]);
            assert!(!a.resource_request, "{path}");
            assert_eq!((a.verb.as_str(), a.path.as_str()), ("get", path));
        }
        assert_eq!(attrs("POST", "/healthz", &[]).verb, "post");
    }

    fn resource_request(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> RequestAttributes {
        RequestAttributes {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn path_request(verb: &str, path: &str) -> RequestAttributes {
        RequestAttributes {
            verb: verb.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rule_allows_matches_subresources_names_wildcards_and_urls() {
        let status = rule(
            &["flotilla.dev"],
            &["subscriptions/status"],
            &["patch"],
            &[],
        );
        assert!(rule_allows(
            &status,
            &resource_request(
                "patch",
                "flotilla.dev",
                "subscriptions",
                "status",
                "ns",
                "x"
            )
        ));
        assert!(!rule_allows(
            &status,
            &resource_request("patch", "flotilla.dev", "subscriptions", "", "ns", "x")
        ));
        assert!(!rule_allows(
            &status,
            &resource_request(
                "patch",
                "flotilla.dev",
                "subscriptions",
                "finalizers",
                "ns",
                "x"
            )
        ));
        let main = rule(&["flotilla.dev"], &["subscriptions"], &["*"], &[]);
        assert!(!rule_allows(
            &main,
            &resource_request(
                "update",
                "flotilla.dev",
                "subscriptions",
                "status",
                "ns",
                "x"
            )
        ));
        let any_status = rule(&["*"], &["*/status"], &["get"], &[]);
        assert!(rule_allows(
            &any_status,
            &resource_request("get", "apps", "deployments", "status", "", "d")
        ));
        assert!(!rule_allows(
            &any_status,
            &resource_request("get", "apps", "deployments", "", "", "d")
        ));
        assert!(!rule_allows(
            &any_status,
            &resource_request("get", "apps", "deployments", "scale", "", "d")
        ));
        let named = rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "update"],
            &["lock"],
        );
        assert!(rule_allows(
            &named,
            &resource_request("get", "coordination.k8s.io", "leases", "", "ns", "lock")
        ));
        assert!(!rule_allows(
            &named,
            &resource_request("get", "coordination.k8s.io", "leases", "", "ns", "other")
        ));
        assert!(!rule_allows(
            &named,
            &resource_request("list", "coordination.k8s.io", "leases", "", "ns", "")
        ));
        assert!(!rule_allows(
            &named,
            &resource_request("get", "", "leases", "", "ns", "lock")
        ));
        let urls = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/apis/*".into()],
            ..Default::default()
        };
        assert!(rule_allows(&urls, &path_request("get", "/healthz")));
        assert!(!rule_allows(&urls, &path_request("get", "/healthz/etcd")));
        assert!(rule_allows(
            &urls,
            &path_request("get", "/apis/flotilla.dev/v1alpha1")
        ));
        assert!(!rule_allows(&urls, &path_request("get", "/apis")));
        assert!(!rule_allows(&urls, &path_request("post", "/healthz")));
        // Resource rules never grant paths, nor URL rules resources.
        assert!(!rule_allows(
            &rule(&["*"], &["*"], &["*"], &[]),
            &path_request("get", "/version")
        ));
        assert!(!rule_allows(
            &urls,
            &resource_request("get", "", "apis", "", "", "")
        ));
    }

    fn policy_of(objects: Value) -> Policy {
        let of = |kind: &str| -> Vec<Value> {
            objects
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["kind"] == kind)
                .cloned()
                .collect()
        };
        let (cr, r, crb, rb) = (
            of("ClusterRole"),
            of("Role"),
            of("ClusterRoleBinding"),
            of("RoleBinding"),
        );
        Policy::from_objects(cr.iter(), r.iter(), crb.iter(), rb.iter())
    }

    fn sa(ns: &str, name: &str) -> UserInfo {
        UserInfo::service_account(ns, name, "uid")
    }

    #[test]
    fn a_rolebinding_to_a_clusterrole_grants_in_its_namespace_only() {
        let policy = policy_of(serde_json::json!([
            {"kind": "ClusterRole", "metadata": {"name": "reader"},
             "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
            {"kind": "RoleBinding", "metadata": {"name": "read", "namespace": "a"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
             "subjects": [{"kind": "ServiceAccount", "name": "op"}]},
            {"kind": "RoleBinding", "metadata": {"name": "dangling", "namespace": "b"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gone"},
             "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]}
        ]));
        let get = |ns: &str| resource_request("get", "", "configmaps", "", ns, "c");
        let op = sa("a", "op");
        let decision = policy.authorize(&op, &get("a"));
        assert!(decision.allowed);
        assert_eq!(
            decision.reason,
            "RBAC: allowed by RoleBinding \"read/a\" of ClusterRole \"reader\" to ServiceAccount \"op/a\""
        );
        assert!(!policy.authorize(&op, &get("")).allowed);
        assert!(!policy.authorize(&op, &get("c")).allowed);
        // The subject without a namespace is the binding's namespace's ServiceAccount.
        assert!(!policy.authorize(&sa("c", "op"), &get("a")).allowed);
        // A binding to a missing role is reported as the RBAC authorizer does.
        let decision = policy.authorize(&op, &get("b"));
        assert_eq!(
            decision,
            Decision {
                allowed: false,
                reason: "RBAC: role.rbac.authorization.k8s.io \"gone\" not found".into()
            }
        );
        // system:masters needs no binding.
        let admin = UserInfo {
            name: "root".into(),
            groups: vec![SYSTEM_MASTERS.into()],
            ..Default::default()
        };
        assert!(policy.authorize(&admin, &get("z")).allowed);
    }

    #[test]
    fn forbidden_messages_match_the_apiserver() {
        let user = "system:serviceaccount:ns:sa";
        let a = resource_request(
            "patch",
            "flotilla.dev",
            "subscriptions",
            "status",
            "ns",
            "x",
        );
        let (code, body) = a.forbidden(user, "");
        assert_eq!(code, 403);
        assert_eq!(
            body["message"],
            "subscriptions.flotilla.dev \"x\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot patch resource \"subscriptions/status\" in API group \"flotilla.dev\" in the namespace \"ns\""
        );
        assert_eq!(
            body["details"],
            serde_json::json!({"name": "x", "group": "flotilla.dev", "kind": "subscriptions"})
        );
        let list = resource_request("list", "flotilla.dev", "plans", "", "", "");
        assert_eq!(
            list.forbidden(user, "").1["message"],
            "plans.flotilla.dev is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"plans\" in API group \"flotilla.dev\" at the cluster scope"
        );
        let path = path_request("get", "/apis");
        assert_eq!(
            path.forbidden(user, "RBAC: x").1["message"],
            "forbidden: User \"system:serviceaccount:ns:sa\" cannot get path \"/apis\": RBAC: x"
        );
    }

    #[test]
    fn escalation_is_judged_by_covers() {
        let owner = [
            rule(&[""], &["configmaps"], &["get", "list"], &[]),
            rule(&["apps"], &["*/status"], &["update"], &[]),
            rule(&[""], &["secrets"], &["get"], &["s1", "s2"]),
        ];
        assert!(covers(&owner, &[rule(&[""], &["configmaps"], &["get"], &["c"])]).0);
        assert!(
            covers(
                &owner,
                &[rule(&["apps"], &["deployments/status"], &["update"], &[])]
            )
            .0
        );
        assert!(covers(&owner, &[rule(&[""], &["secrets"], &["get"], &["s2"])]).0);
        assert!(!covers(&owner, &[rule(&[""], &["secrets"], &["get"], &[])]).0);
        let (ok, missing) = covers(
            &owner,
            &[rule(&["", "apps"], &["configmaps"], &["get", "watch"], &[])],
        );
        assert!(!ok);
        let mut described: Vec<String> =
            compact_rules(&missing).iter().map(compact_string).collect();
        described.sort();
        assert_eq!(
            described,
            [
                "{APIGroups:[\"\"], Resources:[\"configmaps\"], Verbs:[\"watch\"]}",
                "{APIGroups:[\"apps\"], Resources:[\"configmaps\"], Verbs:[\"get\" \"watch\"]}",
            ]
        );
        let policy = policy_of(serde_json::json!([
            {"kind": "Role", "metadata": {"name": "cm", "namespace": "a"},
             "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]},
            {"kind": "RoleBinding", "metadata": {"name": "cm", "namespace": "a"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
             "subjects": [{"kind": "User", "name": "u"}]}
        ]));
        let u = UserInfo {
            name: "u".into(),
            groups: vec![AUTHENTICATED.into()],
            ..Default::default()
        };
        let grant = [rule(&[""], &["configmaps"], &["get"], &[])];
        assert!(policy.confirm_no_escalation(&u, "a", &grant).is_ok());
        assert_eq!(
            policy.confirm_no_escalation(&u, "b", &grant).unwrap_err(),
            "user \"u\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"configmaps\"], Verbs:[\"get\"]}"
        );
    }

    #[test]
    fn aggregation_unions_the_selected_cluster_roles() {
        let aggregate = serde_json::json!({"metadata": {"name": "agg"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"agg": "true"}},
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}]}});
        let b = serde_json::json!({"metadata": {"name": "b", "labels": {"agg": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        let a = serde_json::json!({"metadata": {"name": "a", "labels": {"agg": "true", "tier": "x"}},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        let other = serde_json::json!({"metadata": {"name": "c", "labels": {"agg": "false"}},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
        let all = [&aggregate, &b, &a, &other];
        let rules = aggregated_rules(&aggregate, &all).unwrap();
        let resources: Vec<&str> = rules
            .iter()
            .map(|r| r["resources"][0].as_str().unwrap())
            .collect();
        assert_eq!(resources, ["secrets", "pods"]);
        assert!(aggregated_rules(&b, &all).is_none());
    }

    #[test]
    fn service_account_usernames_split() {
        assert_eq!(
            split_service_account_username("system:serviceaccount:ns:op"),
            Some(("ns", "op"))
        );
        assert_eq!(
            split_service_account_username("system:serviceaccount:ns"),
            None
        );
        assert_eq!(split_service_account_username("bob"), None);
    }
}
