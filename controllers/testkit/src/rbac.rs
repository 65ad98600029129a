//! `config/rbac/` in tests: applied to an enforcing sandbox from the files (the list in its
//! `kustomization.yaml`), the operator's and the gateway's ServiceAccount clients, and the
//! check that every rule is needed — each verb a rule grants on each resource, taken away
//! alone, would refuse some request a scenario's operator really sent (the sandbox's own RBAC
//! evaluator decides, namespaces and resourceNames included).

use std::path::{Path, PathBuf};

use flotilla_sandbox::rbac::{Policy, RequestAttributes, UserInfo};
use flotilla_sandbox::{RequestRecord, Sandbox};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

/// The namespace of the operator's and the gateway's ServiceAccounts (`config/rbac/`).
pub const OPERATOR_NAMESPACE: &str = "flotilla-system";
/// The operator's ServiceAccount (`config/rbac/service_account.yaml`).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "flotilla";
/// The gateway's ServiceAccount (`config/rbac/gateway_service_account.yaml`).
pub const GATEWAY_SERVICE_ACCOUNT: &str = "flotilla-gateway";
/// The namespace `config/rbac/gateway_role.yaml` grants the gateway its rights in.
pub const GATEWAY_NAMESPACE: &str = "fleet";

/// The user the operator's requests are served as: `system:serviceaccount:flotilla-system:flotilla`.
pub fn operator_user() -> String {
    flotilla_sandbox::rbac::service_account_username(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
}

/// The user of the gateway's requests.
pub fn gateway_user() -> String {
    flotilla_sandbox::rbac::service_account_username(OPERATOR_NAMESPACE, GATEWAY_SERVICE_ACCOUNT)
}

/// The repository's `config/rbac/`.
pub fn config_rbac_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac")
}

/// The manifests `config/rbac/kustomization.yaml` lists, in its order.
pub fn manifest_files() -> Vec<PathBuf> {
    let dir = config_rbac_dir();
    let text = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .expect("config/rbac/kustomization.yaml is readable");
    let kustomization: Value =
        serde_norway::from_str(&text).expect("config/rbac/kustomization.yaml parses");
    kustomization["resources"]
        .as_array()
        .expect("the kustomization lists its resources")
        .iter()
        .map(|r| dir.join(r.as_str().expect("a resource is a file name")))
        .collect()
}

/// Every object of `config/rbac/`, with the file it comes from.
pub fn objects() -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    for file in manifest_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                objects.push((name.clone(), value));
            }
        }
    }
    objects
}

/// One verb a rule of a Role or ClusterRole in `config/rbac/` grants on one resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// The file (`role.yaml`).
    pub file: String,
    /// `ClusterRole/flotilla`, `Role/flotilla-system/flotilla-leader-election`.
    pub role: String,
    /// The rule's index in the role.
    pub rule: usize,
    /// The API group (`""` for core).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub verb: String,
}

impl std::fmt::Display for Grant {
    /// `verb group/resource`, as [`flotilla_sandbox::rbac::Attributes`] prints (`list
    /// core/configmaps`), so tests can name a grant.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)
    }
}

fn role_id(object: &Value) -> Option<String> {
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?;
    match kind {
        "ClusterRole" => Some(format!("ClusterRole/{name}")),
        "Role" => Some(format!(
            "Role/{}/{name}",
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
        )),
        _ => None,
    }
}

/// The roles `config/rbac/` binds to `user` (`ClusterRole/NAME`, `Role/NS/NAME`).
fn roles_bound_to(objects: &[(String, Value)], user: &str) -> Vec<String> {
    let user = user_info(user);
    let policy = policy(objects.iter().map(|(_, o)| o));
    let mut roles = Vec::new();
    let bindings = policy
        .cluster_role_bindings
        .iter()
        .chain(policy.role_bindings.values().flatten());
    for binding in bindings {
        let one = Policy {
            cluster_roles: policy.cluster_roles.clone(),
            roles: policy.roles.clone(),
            cluster_role_bindings: if binding.namespace.is_empty() {
                vec![binding.clone()]
            } else {
                Vec::new()
            },
            role_bindings: if binding.namespace.is_empty() {
                Default::default()
            } else {
                [(binding.namespace.clone(), vec![binding.clone()])].into()
            },
        };
        if one.rules_for(&user, &binding.namespace).0.is_empty() {
            continue;
        }
        roles.push(match binding.role_ref.kind.as_str() {
            "Role" => format!("Role/{}/{}", binding.namespace, binding.role_ref.name),
            _ => format!("ClusterRole/{}", binding.role_ref.name),
        });
    }
    roles
}

/// Every grant of the roles `config/rbac/` binds to `user`.
pub fn grants_of(user: &str) -> Vec<Grant> {
    let objects = objects();
    let bound = roles_bound_to(&objects, user);
    let mut grants = Vec::new();
    for (file, object) in &objects {
        let Some(role) = role_id(object).filter(|r| bound.contains(r)) else {
            continue;
        };
        for (index, rule) in flotilla_sandbox::rbac::rules_of(object).iter().enumerate() {
            for group in &rule.api_groups {
                for resource in &rule.resources {
                    for verb in &rule.verbs {
                        grants.push(Grant {
                            file: file.clone(),
                            role: role.clone(),
                            rule: index,
                            group: group.clone(),
                            resource: resource.clone(),
                            verb: verb.clone(),
                        });
                    }
                }
            }
        }
    }
    grants
}

/// The objects of `config/rbac/` with `removed` taken out of its rule: the rule is split into
/// the rest of its groups, the rest of its resources, and the resource with the other verbs.
pub fn objects_without(removed: Option<&Grant>) -> Vec<(String, Value)> {
    let mut objects = objects();
    let Some(grant) = removed else {
        return objects;
    };
    let object = objects
        .iter_mut()
        .map(|(_, o)| o)
        .find(|o| role_id(o).as_deref() == Some(grant.role.as_str()))
        .unwrap_or_else(|| panic!("{} is not in config/rbac", grant.role));
    let rules = object["rules"].as_array_mut().expect("the role has rules");
    let rule = rules[grant.rule].clone();
    let without = |key: &str, item: &str| -> Value {
        let mut rule = rule.clone();
        let list: Vec<Value> = rule[key]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|v| v.as_str() != Some(item))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        rule[key] = Value::Array(list);
        rule
    };
    let mut replacement = Vec::new();
    replacement.push(without("apiGroups", &grant.group));
    let mut other_resources = without("resources", &grant.resource);
    other_resources["apiGroups"] = json!([grant.group]);
    replacement.push(other_resources);
    let mut other_verbs = without("verbs", &grant.verb);
    other_verbs["apiGroups"] = json!([grant.group]);
    other_verbs["resources"] = json!([grant.resource]);
    replacement.push(other_verbs);
    let nonempty = |rule: &Value| {
        ["apiGroups", "resources", "verbs"]
            .iter()
            .all(|k| rule[k].as_array().is_some_and(|l| !l.is_empty()))
    };
    let replacement: Vec<Value> = replacement.into_iter().filter(nonempty).collect();
    let _removed: Vec<Value> = rules.splice(grant.rule..=grant.rule, replacement).collect();
    objects
}

/// The RBAC policy of these objects (the Roles, ClusterRoles and bindings among them).
pub fn policy<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Policy {
    let objects: Vec<&Value> = objects.into_iter().collect();
    let of = |kind: &str| {
        objects
            .iter()
            .copied()
            .filter(|o| o["kind"] == kind)
            .collect::<Vec<_>>()
    };
    Policy::from_objects(
        of("ClusterRole"),
        of("Role"),
        of("ClusterRoleBinding"),
        of("RoleBinding"),
    )
}

fn user_info(user: &str) -> UserInfo {
    let (namespace, name) = flotilla_sandbox::rbac::split_service_account_username(user)
        .expect("a ServiceAccount's user name");
    UserInfo::service_account(namespace, name, "")
}

/// Creates the namespaces `config/rbac/` names (when missing), then every object of its
/// manifests as the admin, from the files themselves.
pub async fn install(sandbox: &Sandbox) {
    create_namespaces(sandbox, &objects()).await;
    for file in manifest_files() {
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        sandbox
            .create_from_yaml(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

/// Like [`install`] with one grant taken out of its rule (see [`objects_without`]).
pub async fn install_without(sandbox: &Sandbox, removed: &Grant) {
    let objects = objects_without(Some(removed));
    create_namespaces(sandbox, &objects).await;
    for (file, object) in objects {
        let yaml = serde_norway::to_string(&object).expect("an object serializes");
        sandbox
            .create_from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{file} without {removed}: {e}"));
    }
}

/// The gateway's Role and RoleBinding (`gateway_role.yaml`, `gateway_role_binding.yaml`)
/// copied into `namespace`, as `config/rbac/kustomization.yaml` says to do for every namespace
/// a gateway serves.
pub fn install_gateway_role_in(sandbox: &Sandbox, namespace: &str) {
    for (file, mut object) in objects() {
        if !matches!(
            file.as_str(),
            "gateway_role.yaml" | "gateway_role_binding.yaml"
        ) {
            continue;
        }
        object["metadata"]["namespace"] = json!(namespace);
        let yaml = serde_norway::to_string(&object).expect("an object serializes");
        sandbox
            .create_from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{file} in {namespace}: {e}"));
    }
}

async fn create_namespaces(sandbox: &Sandbox, objects: &[(String, Value)]) {
    let namespaces: Api<Namespace> = Api::all(sandbox.client());
    let mut names: Vec<&str> = objects
        .iter()
        .filter_map(|(_, o)| o["metadata"]["namespace"].as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        if namespaces
            .get_opt(name)
            .await
            .expect("get namespace")
            .is_none()
        {
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": name}})).expect("a Namespace");
            namespaces
                .create(&PostParams::default(), &namespace)
                .await
                .expect("create namespace");
        }
    }
}

/// A client of the operator's ServiceAccount (`config/rbac/service_account.yaml`).
pub fn operator_kube_config(sandbox: &Sandbox) -> kube::Config {
    service_account_kube_config(sandbox, OPERATOR_SERVICE_ACCOUNT)
}

/// The `kube::Config` of a ServiceAccount in [`OPERATOR_NAMESPACE`], with a fresh token.
pub fn service_account_kube_config(sandbox: &Sandbox, name: &str) -> kube::Config {
    let token = sandbox
        .service_account_token(OPERATOR_NAMESPACE, name)
        .unwrap_or_else(|e| panic!("a token for {OPERATOR_NAMESPACE}/{name}: {e}"));
    sandbox.kube_config_for_token(&token)
}

/// What RBAC decides a logged request on: its verb, and `create` too for a server-side apply
/// that created the object, and `update` on the finalizers of each owner it blocks (see
/// [`RequestRecord::required`]), in the request's namespace.
pub fn attributes_of(record: &RequestRecord) -> Vec<RequestAttributes> {
    let mut namespace = record.namespace.clone().unwrap_or_default();
    if namespace.is_empty() && record.group.is_empty() && record.resource == "namespaces" {
        namespace = record.name.clone().unwrap_or_default();
    }
    record
        .required()
        .into_iter()
        .map(|a| {
            let (resource, subresource) = match a.resource.split_once('/') {
                Some((r, s)) => (r.to_owned(), s.to_owned()),
                None => (a.resource.clone(), String::new()),
            };
            RequestAttributes {
                verb: a.verb,
                resource_request: true,
                group: a.group,
                version: String::new(),
                resource,
                subresource,
                namespace: namespace.clone(),
                name: a.name.unwrap_or_default(),
                path: String::new(),
            }
        })
        .collect()
}

/// A denied request, described for a failure message.
pub fn describe(record: &RequestRecord) -> String {
    let group = if record.group.is_empty() {
        "core"
    } else {
        &record.group
    };
    format!(
        "{} {} {group}/{} {}{} ({})",
        record.status,
        record.verb.as_str(),
        record.full_resource(),
        record
            .namespace
            .as_deref()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default(),
        record.name.as_deref().unwrap_or("*"),
        record.user.as_deref().unwrap_or("unauthenticated"),
    )
}

/// The requests of `user` the sandbox refused (401 or 403).
pub fn denied_for(sandbox: &Sandbox, user: &str) -> Vec<String> {
    sandbox
        .requests()
        .denied()
        .iter()
        .filter(|r| r.user.as_deref() == Some(user))
        .map(describe)
        .collect()
}

/// The grants of the roles bound to `user` (on a group and resource `scope` accepts) whose
/// removal alone would refuse none of `user`'s requests in `records` that the full rules
/// allow: rules this scenario does not need. Empty means every grant in scope is used.
pub fn unneeded(
    records: &[RequestRecord],
    user: &str,
    scope: impl Fn(&str, &str) -> bool,
) -> Vec<Grant> {
    let info = user_info(user);
    let full = policy(objects().iter().map(|(_, o)| o));
    let mut seen = std::collections::BTreeSet::new();
    let mut requests: Vec<RequestAttributes> = Vec::new();
    for attributes in records
        .iter()
        .filter(|r| r.user.as_deref() == Some(user))
        .flat_map(attributes_of)
    {
        let key = (
            attributes.verb.clone(),
            attributes.group.clone(),
            attributes.combined_resource(),
            attributes.namespace.clone(),
            attributes.name.clone(),
        );
        if seen.insert(key) && full.authorize(&info, &attributes).allowed {
            requests.push(attributes);
        }
    }
    grants_of(user)
        .into_iter()
        .filter(|grant| scope(&grant.group, &grant.resource))
        .filter(|grant| {
            let reduced = objects_without(Some(grant));
            let reduced = policy(reduced.iter().map(|(_, o)| o));
            requests
                .iter()
                .all(|request| reduced.authorize(&info, request).allowed)
        })
        .collect()
}
