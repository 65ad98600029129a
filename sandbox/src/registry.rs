//! The resources the sandbox serves: the built-in kinds Flotilla and kubectl touch, plus every
//! CustomResourceDefinition created through the API.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::list_type::{ListTypes, builtin_list_types};
use crate::schema::CrdSchema;
use crate::table::PrinterColumn;

/// Identifies a served resource: API group ("" for core) and plural name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub group: String,
    pub plural: String,
}

impl ResourceKey {
    pub fn new(group: &str, plural: &str) -> Self {
        Self {
            group: group.to_string(),
            plural: plural.to_string(),
        }
    }

    /// `plans.flotilla.dev`, or `namespaces` for the core group: the form the apiserver uses
    /// in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Everything the server needs to know about one resource.
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub has_status: bool,
    /// Whether `generation` tracks the whole object except metadata and status (custom
    /// resources) rather than `spec` only (built-in kinds).
    pub custom: bool,
    pub printer_columns: Vec<PrinterColumn>,
    pub schema: Option<Arc<CrdSchema>>,
    /// The CRD's `openAPIV3Schema` as written, for the OpenAPI documents kubectl reads.
    pub openapi_schema: Option<Value>,
    pub list_types: Arc<dyn ListTypes>,
    /// Whether strategic merge patch is accepted (built-in kinds only, as on a real cluster).
    pub strategic_merge: bool,
    /// Field selectors accepted besides `metadata.name` and `metadata.namespace`.
    pub selectable_fields: Vec<String>,
    /// Another resource whose objects these are, converted (events.k8s.io Events are core
    /// Events).
    pub storage: Option<ResourceKey>,
}

impl Resource {
    pub fn key(&self) -> ResourceKey {
        ResourceKey::new(&self.group, &self.plural)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Plan.flotilla.dev` — the form used in 422 messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// The static description of a built-in kind.
struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    has_status: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        namespaced: false,
        has_status: true,
        short_names: &["ns"],
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        namespaced: true,
        has_status: false,
        short_names: &["cm"],
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        namespaced: true,
        has_status: false,
        short_names: &[],
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        has_status: false,
        short_names: &["ev"],
        categories: &[],
    },
    Builtin {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        has_status: false,
        short_names: &["ev"],
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ResourceQuota",
        plural: "resourcequotas",
        namespaced: true,
        has_status: true,
        short_names: &["quota"],
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "LimitRange",
        plural: "limitranges",
        namespaced: true,
        has_status: false,
        short_names: &["limits"],
        categories: &[],
    },
    Builtin {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        namespaced: true,
        has_status: false,
        short_names: &["sa"],
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        namespaced: true,
        has_status: false,
        short_names: &[],
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        namespaced: true,
        has_status: false,
        short_names: &[],
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        has_status: false,
        short_names: &[],
        categories: &[],
    },
    Builtin {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        has_status: false,
        short_names: &[],
        categories: &[],
    },
    Builtin {
        group: "networking.k8s.io",
        version: "v1",
        kind: "NetworkPolicy",
        plural: "networkpolicies",
        namespaced: true,
        has_status: false,
        short_names: &["netpol"],
        categories: &[],
    },
    Builtin {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        has_status: false,
        short_names: &[],
        categories: &[],
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        namespaced: true,
        has_status: true,
        short_names: &["deploy"],
        categories: &["all"],
    },
    Builtin {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        namespaced: true,
        has_status: true,
        short_names: &["sts"],
        categories: &["all"],
    },
    Builtin {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: "CustomResourceDefinition",
        plural: "customresourcedefinitions",
        namespaced: false,
        has_status: true,
        short_names: &["crd", "crds"],
        categories: &["api-extensions"],
    },
];

/// The set of served resources. Cheap to clone: resources are shared.
#[derive(Clone, Default)]
pub struct Registry {
    resources: BTreeMap<ResourceKey, Arc<Resource>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        for b in BUILTINS {
            let resource = Resource {
                group: b.group.to_string(),
                version: b.version.to_string(),
                kind: b.kind.to_string(),
                list_kind: format!("{}List", b.kind),
                plural: b.plural.to_string(),
                singular: b.kind.to_lowercase(),
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                namespaced: b.namespaced,
                has_status: b.has_status,
                custom: false,
                printer_columns: builtin_columns(b.group, b.kind),
                schema: None,
                openapi_schema: None,
                list_types: Arc::from(builtin_list_types(b.group, b.kind)),
                strategic_merge: true,
                selectable_fields: match (b.group, b.kind) {
                    ("", "Event") => crate::events::CORE_SELECTABLE_FIELDS
                        .iter()
                        .map(|f| f.to_string())
                        .collect(),
                    _ => Vec::new(),
                },
                storage: match (b.group, b.kind) {
                    ("events.k8s.io", "Event") => Some(ResourceKey::new("", "events")),
                    _ => None,
                },
            };
            registry.insert(resource);
        }
        registry
    }

    pub fn insert(&mut self, resource: Resource) {
        self.resources.insert(resource.key(), Arc::new(resource));
    }

    pub fn remove(&mut self, key: &ResourceKey) {
        self.resources.remove(key);
    }

    pub fn get(&self, key: &ResourceKey) -> Option<Arc<Resource>> {
        self.resources.get(key).cloned()
    }

    /// Looks a resource up as a request path names it: group, version and plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources
            .get(&ResourceKey::new(group, plural))
            .filter(|r| r.version == version)
            .cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    /// Groups and their versions, core group excluded, sorted by name.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.resources.values().filter(|r| !r.group.is_empty()) {
            let versions = groups.entry(r.group.clone()).or_default();
            if !versions.contains(&r.version) {
                versions.push(r.version.clone());
            }
        }
        groups
    }

    /// The resource a CustomResourceDefinition object describes (its first served version).
    pub fn resource_from_crd(crd: &Value) -> Result<Resource, String> {
        let spec = crd.get("spec").ok_or("spec is required")?;
        let group = str_at(spec, &["group"]).ok_or("spec.group is required")?;
        let names = spec.get("names").ok_or("spec.names is required")?;
        let plural = str_at(names, &["plural"]).ok_or("spec.names.plural is required")?;
        let kind = str_at(names, &["kind"]).ok_or("spec.names.kind is required")?;
        let singular = str_at(names, &["singular"])
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let list_kind = str_at(names, &["listKind"])
            .map(str::to_string)
            .unwrap_or_else(|| format!("{kind}List"));
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        let namespaced = match str_at(spec, &["scope"]) {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            _ => return Err("spec.scope must be Namespaced or Cluster".into()),
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .ok_or("spec.versions is required")?;
        let version = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .or_else(|| versions.first())
            .ok_or("spec.versions must not be empty")?;
        let version_name = str_at(version, &["name"]).ok_or("spec.versions[].name is required")?;
        let has_status = version
            .get("subresources")
            .and_then(|s| s.get("status"))
            .is_some();
        let printer_columns = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
            .map(|cols| cols.iter().filter_map(PrinterColumn::from_crd).collect())
            .unwrap_or_default();
        let openapi_schema = version
            .get("schema")
            .and_then(|s| s.get("openAPIV3Schema"))
            .cloned();
        let schema = match &openapi_schema {
            Some(s) => Some(Arc::new(CrdSchema::new(s)?)),
            None => None,
        };
        let list_types: Arc<dyn ListTypes> = match &schema {
            Some(s) => s.clone(),
            None => Arc::from(builtin_list_types(group, kind)),
        };
        let selectable_fields = version
            .get("selectableFields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                    .map(|p| p.trim_start_matches('.').to_string())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Resource {
            group: group.to_string(),
            version: version_name.to_string(),
            kind: kind.to_string(),
            list_kind,
            plural: plural.to_string(),
            singular,
            short_names: strings(names.get("shortNames")),
            categories: strings(names.get("categories")),
            namespaced,
            has_status,
            custom: true,
            printer_columns,
            schema,
            openapi_schema,
            list_types,
            strategic_merge: false,
            selectable_fields,
            storage: None,
        })
    }
}

/// The columns kube-apiserver prints for the built-in kinds where `kubectl get` users expect
/// more than Name and Age.
fn builtin_columns(group: &str, kind: &str) -> Vec<PrinterColumn> {
    let column = |name: &str, type_: &str, path: &str| PrinterColumn {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.to_string(),
    };
    match kind {
        "Namespace" => vec![
            column("Status", "string", ".status.phase"),
            PrinterColumn::age(),
        ],
        "Deployment" | "StatefulSet" => vec![
            column("Replicas", "integer", ".spec.replicas"),
            column("Ready", "integer", ".status.readyReplicas"),
            PrinterColumn::age(),
        ],
        "Event" if group.is_empty() => vec![
            column("Type", "string", ".type"),
            column("Reason", "string", ".reason"),
            column("Object", "string", ".involvedObject.name"),
            column("Message", "string", ".message"),
            PrinterColumn::age(),
        ],
        "Event" => vec![
            column("Type", "string", ".type"),
            column("Reason", "string", ".reason"),
            column("Object", "string", ".regarding.name"),
            column("Note", "string", ".note"),
            PrinterColumn::age(),
        ],
        "Lease" => vec![
            column("Holder", "string", ".spec.holderIdentity"),
            PrinterColumn::age(),
        ],
        _ => Vec::new(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}
