//! How lists (and a few maps) merge: the `x-kubernetes-list-type` / `patchStrategy` metadata that
//! server-side apply and strategic merge patch need and that a plain JSON value does not carry.
//!
//! Paths are field names only, from the object root: the `env` list of every container of a
//! Deployment is `["spec", "template", "spec", "containers", "env"]` (list elements are not part
//! of the path).

use std::sync::Arc;

use serde_json::Value;

/// How a list field merges under server-side apply and strategic merge patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value: a write replaces it whole and one manager owns it whole.
    Atomic,
    /// A set of scalars: writes union, each value is owned separately (`v:<json>`).
    Set,
    /// A list of objects identified by these key fields: writes merge element by element,
    /// each element is owned separately (`k:{"name":"x"}`).
    Map(Vec<String>),
}

/// Answers the list type of the list at a field path such as
/// `["spec","template","spec","containers"]`.
pub trait ListTypes: Send + Sync {
    /// The server-side apply list type (`x-kubernetes-list-type` / `-list-map-keys`).
    fn list_type(&self, path: &[&str]) -> ListType;

    /// The strategic-merge-patch strategy (`patchStrategy` / `patchMergeKey`), which differs from
    /// [`ListTypes::list_type`] for a few built-in fields: container `ports` merge by
    /// `containerPort` alone under SMP but by `containerPort`+`protocol` under apply.
    fn patch_strategy(&self, path: &[&str]) -> ListType {
        self.list_type(path)
    }

    /// The default of a map-list key field that an element may omit (a list-map key must be
    /// required or defaulted), such as a container port's `protocol` (`TCP`). Apply matches
    /// elements as if the default were written, like structured-merge-diff does.
    fn map_key_default(&self, _path: &[&str], _key: &str) -> Option<Value> {
        None
    }

    /// Whether the object at `path` is atomic (`+structType=atomic` / `x-kubernetes-map-type:
    /// atomic`): apply replaces and owns it whole instead of field by field.
    fn atomic_map(&self, _path: &[&str]) -> bool {
        false
    }
}

impl<T: ListTypes + ?Sized> ListTypes for &T {
    fn list_type(&self, path: &[&str]) -> ListType {
        (**self).list_type(path)
    }
    fn patch_strategy(&self, path: &[&str]) -> ListType {
        (**self).patch_strategy(path)
    }
    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        (**self).map_key_default(path, key)
    }
    fn atomic_map(&self, path: &[&str]) -> bool {
        (**self).atomic_map(path)
    }
}

impl<T: ListTypes + ?Sized> ListTypes for Box<T> {
    fn list_type(&self, path: &[&str]) -> ListType {
        (**self).list_type(path)
    }
    fn patch_strategy(&self, path: &[&str]) -> ListType {
        (**self).patch_strategy(path)
    }
    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        (**self).map_key_default(path, key)
    }
    fn atomic_map(&self, path: &[&str]) -> bool {
        (**self).atomic_map(path)
    }
}

impl<T: ListTypes + ?Sized> ListTypes for Arc<T> {
    fn list_type(&self, path: &[&str]) -> ListType {
        (**self).list_type(path)
    }
    fn patch_strategy(&self, path: &[&str]) -> ListType {
        (**self).patch_strategy(path)
    }
    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        (**self).map_key_default(path, key)
    }
    fn atomic_map(&self, path: &[&str]) -> bool {
        (**self).atomic_map(path)
    }
}

/// The rules of `metadata` that every kind shares, as the apiserver declares them on
/// `ObjectMeta`: `ownerReferences` is a map keyed by `uid`, `finalizers` a set; every other
/// list is atomic.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetadataListTypes;

impl ListTypes for MetadataListTypes {
    fn list_type(&self, path: &[&str]) -> ListType {
        object_meta_list(path).unwrap_or(ListType::Atomic)
    }
}

/// `ObjectMeta` list rules for a path relative to an object's root (`["metadata", ...]`).
fn object_meta_list(path: &[&str]) -> Option<ListType> {
    match path {
        ["metadata", "ownerReferences"] => Some(ListType::Map(vec!["uid".to_string()])),
        ["metadata", "finalizers"] => Some(ListType::Set),
        _ => None,
    }
}

/// Routes `metadata.*` to [`MetadataListTypes`] and everything else to `inner`: a CRD's schema
/// describes `spec`/`status` but not `metadata`, whose lists must still behave like on any
/// other object (a custom resource's finalizers are a set).
#[derive(Debug, Clone)]
pub struct WithMetadata<T>(pub T);

/// Wraps `inner` so that `metadata` lists follow the `ObjectMeta` rules.
pub fn with_metadata<T: ListTypes>(inner: T) -> WithMetadata<T> {
    WithMetadata(inner)
}

impl<T: ListTypes> ListTypes for WithMetadata<T> {
    fn list_type(&self, path: &[&str]) -> ListType {
        if path.first() == Some(&"metadata") {
            MetadataListTypes.list_type(path)
        } else {
            self.0.list_type(path)
        }
    }
    fn patch_strategy(&self, path: &[&str]) -> ListType {
        if path.first() == Some(&"metadata") {
            MetadataListTypes.patch_strategy(path)
        } else {
            self.0.patch_strategy(path)
        }
    }
    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        if path.first() == Some(&"metadata") {
            None
        } else {
            self.0.map_key_default(path, key)
        }
    }
    fn atomic_map(&self, path: &[&str]) -> bool {
        path.first() != Some(&"metadata") && self.0.atomic_map(path)
    }
}

/// One list rule in a static table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Atomic,
    Set,
    Map(&'static [&'static str]),
}

impl Rule {
    fn to_list_type(self) -> ListType {
        match self {
            Rule::Atomic => ListType::Atomic,
            Rule::Set => ListType::Set,
            Rule::Map(keys) => ListType::Map(keys.iter().map(|k| k.to_string()).collect()),
        }
    }
}

/// A list field: its apply rule and its strategic-merge-patch rule (usually the same).
#[derive(Debug, Clone, Copy)]
struct ListField {
    path: &'static [&'static str],
    apply: Rule,
    patch: Rule,
}

const fn same(path: &'static [&'static str], rule: Rule) -> ListField {
    ListField {
        path,
        apply: rule,
        patch: rule,
    }
}

/// `core/v1 Container` (also `EphemeralContainer`), relative to the container.
/// From the Kubernetes v1.33 API types: `env` (patchMergeKey/listMapKey `name`), `ports`
/// (patchMergeKey `containerPort`, listMapKeys `containerPort`+`protocol`), `volumeMounts`
/// (`mountPath`), `volumeDevices` (`devicePath`), `resources.claims` (listMapKey `name`, no
/// patchStrategy, so SMP replaces it). `args`, `command`, `envFrom`, `resizePolicy` are atomic.
const CONTAINER_LISTS: &[ListField] = &[
    same(&["env"], Rule::Map(&["name"])),
    ListField {
        path: &["ports"],
        apply: Rule::Map(&["containerPort", "protocol"]),
        patch: Rule::Map(&["containerPort"]),
    },
    same(&["volumeMounts"], Rule::Map(&["mountPath"])),
    same(&["volumeDevices"], Rule::Map(&["devicePath"])),
    ListField {
        path: &["resources", "claims"],
        apply: Rule::Map(&["name"]),
        patch: Rule::Atomic,
    },
];

/// `core/v1 PodSpec` lists that are not containers' own lists, relative to the pod spec.
/// `tolerations`, `readinessGates` and everything under `affinity` are atomic.
const POD_SPEC_LISTS: &[ListField] = &[
    same(&["volumes"], Rule::Map(&["name"])),
    same(&["imagePullSecrets"], Rule::Map(&["name"])),
    same(&["hostAliases"], Rule::Map(&["ip"])),
    ListField {
        path: &["topologySpreadConstraints"],
        apply: Rule::Map(&["topologyKey", "whenUnsatisfiable"]),
        patch: Rule::Map(&["topologyKey"]),
    },
    same(&["resourceClaims"], Rule::Map(&["name"])),
    same(&["schedulingGates"], Rule::Map(&["name"])),
    ListField {
        path: &["resources", "claims"],
        apply: Rule::Map(&["name"]),
        patch: Rule::Atomic,
    },
];

/// The three container lists of a pod spec.
const CONTAINER_FIELDS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Atomic structs inside a container (`+structType=atomic` on the key selectors of `env`).
const CONTAINER_ATOMIC_MAPS: &[&[&str]] = &[
    &["env", "valueFrom", "configMapKeyRef"],
    &["env", "valueFrom", "secretKeyRef"],
    &["env", "valueFrom", "fieldRef"],
    &["env", "valueFrom", "resourceFieldRef"],
];

/// The list rules of one built-in kind, with `metadata` rules included.
#[derive(Debug, Clone, Default)]
struct BuiltinListTypes {
    lists: Vec<(Vec<&'static str>, Rule, Rule)>,
    atomic_maps: Vec<Vec<&'static str>>,
    /// Map-list key fields with a default, e.g. container ports' `protocol`.
    key_defaults: Vec<(Vec<&'static str>, &'static str, &'static str)>,
}

impl BuiltinListTypes {
    fn list(&mut self, path: &[&'static str], apply: Rule, patch: Rule) {
        self.lists.push((path.to_vec(), apply, patch));
    }

    fn conditions(&mut self, path: &[&'static str]) {
        self.list(path, Rule::Map(&["type"]), Rule::Map(&["type"]));
    }

    /// Adds the rules of a pod template (`metadata` and `spec`) under `prefix`.
    fn pod_template(&mut self, prefix: &[&'static str]) {
        let meta: Vec<&'static str> = prefix.iter().copied().chain(["metadata"]).collect();
        self.list(
            &join(&meta, &["ownerReferences"]),
            Rule::Map(&["uid"]),
            Rule::Map(&["uid"]),
        );
        self.list(&join(&meta, &["finalizers"]), Rule::Set, Rule::Set);
        let spec: Vec<&'static str> = prefix.iter().copied().chain(["spec"]).collect();
        for field in POD_SPEC_LISTS {
            self.list(&join(&spec, field.path), field.apply, field.patch);
        }
        self.atomic_maps
            .push(join(&spec, &["topologySpreadConstraints", "labelSelector"]));
        for container in CONTAINER_FIELDS {
            let base = join(&spec, &[container]);
            self.list(&base, Rule::Map(&["name"]), Rule::Map(&["name"]));
            for field in CONTAINER_LISTS {
                self.list(&join(&base, field.path), field.apply, field.patch);
            }
            for atomic in CONTAINER_ATOMIC_MAPS {
                self.atomic_maps.push(join(&base, atomic));
            }
            self.key_defaults
                .push((join(&base, &["ports"]), "protocol", "TCP"));
        }
    }

    fn find(&self, path: &[&str]) -> Option<&(Vec<&'static str>, Rule, Rule)> {
        self.lists.iter().find(|(p, _, _)| p.as_slice() == path)
    }
}

fn join(prefix: &[&'static str], rest: &[&'static str]) -> Vec<&'static str> {
    prefix.iter().chain(rest).copied().collect()
}

impl ListTypes for BuiltinListTypes {
    fn list_type(&self, path: &[&str]) -> ListType {
        if let Some(list) = object_meta_list(path) {
            return list;
        }
        self.find(path)
            .map_or(ListType::Atomic, |(_, apply, _)| apply.to_list_type())
    }

    fn patch_strategy(&self, path: &[&str]) -> ListType {
        if let Some(list) = object_meta_list(path) {
            return list;
        }
        self.find(path)
            .map_or(ListType::Atomic, |(_, _, patch)| patch.to_list_type())
    }

    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        self.key_defaults
            .iter()
            .find(|(p, k, _)| p.as_slice() == path && *k == key)
            .map(|(_, _, default)| Value::String((*default).to_string()))
    }

    fn atomic_map(&self, path: &[&str]) -> bool {
        self.atomic_maps.iter().any(|p| p.as_slice() == path)
    }
}

/// The list types of the built-in kinds the sandbox serves (by API group and kind), as declared
/// by the Kubernetes v1.33 API types; `metadata` follows [`MetadataListTypes`] for every kind,
/// including unknown ones, and undeclared lists are atomic.
///
/// Kinds without non-atomic lists outside `metadata` (ConfigMap, Secret, both Events, Lease,
/// ResourceQuota, LimitRange, RoleBinding, ClusterRole, ClusterRoleBinding, NetworkPolicy)
/// need no entries: their lists (`subjects`, `rules`, `limits`, `ingress`, ...) are atomic.
pub fn builtin_list_types(group: &str, kind: &str) -> Box<dyn ListTypes> {
    let mut types = BuiltinListTypes::default();
    match (group, kind) {
        ("", "Namespace") => types.conditions(&["status", "conditions"]),
        ("", "ServiceAccount") => {
            types.list(&["secrets"], Rule::Map(&["name"]), Rule::Map(&["name"]));
        }
        ("", "Pod") => {
            types.pod_template(&[]);
            types.conditions(&["status", "conditions"]);
        }
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            types.pod_template(&["spec", "template"]);
            types.conditions(&["status", "conditions"]);
            types.atomic_maps.push(vec!["spec", "selector"]);
        }
        // ObjectReference is `+structType=atomic`.
        ("", "Event") => {
            types.atomic_maps.push(vec!["involvedObject"]);
            types.atomic_maps.push(vec!["related"]);
        }
        ("events.k8s.io", "Event") => {
            types.atomic_maps.push(vec!["regarding"]);
            types.atomic_maps.push(vec!["related"]);
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            types.atomic_maps.push(vec!["spec", "podSelector"]);
        }
        _ => {}
    }
    Box::new(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> ListType {
        ListType::Map(keys.iter().map(|k| k.to_string()).collect())
    }

    #[test]
    fn metadata_lists_apply_to_every_kind() {
        for (group, kind) in [
            ("", "ConfigMap"),
            ("flotilla.dev", "Plan"),
            ("apps", "Deployment"),
        ] {
            let types = builtin_list_types(group, kind);
            assert_eq!(
                types.list_type(&["metadata", "ownerReferences"]),
                map(&["uid"])
            );
            assert_eq!(types.list_type(&["metadata", "finalizers"]), ListType::Set);
            assert_eq!(
                types.list_type(&["metadata", "managedFields"]),
                ListType::Atomic
            );
        }
    }

    #[test]
    fn deployment_pod_template_lists() {
        let types = builtin_list_types("apps", "Deployment");
        let pod = ["spec", "template", "spec"];
        let at = |rest: &[&'static str]| -> Vec<&'static str> {
            pod.iter().chain(rest).copied().collect()
        };
        assert_eq!(types.list_type(&at(&["containers"])), map(&["name"]));
        assert_eq!(types.list_type(&at(&["initContainers"])), map(&["name"]));
        assert_eq!(types.list_type(&at(&["containers", "env"])), map(&["name"]));
        assert_eq!(
            types.list_type(&at(&["containers", "ports"])),
            map(&["containerPort", "protocol"])
        );
        assert_eq!(
            types.patch_strategy(&at(&["containers", "ports"])),
            map(&["containerPort"])
        );
        assert_eq!(
            types.map_key_default(&at(&["containers", "ports"]), "protocol"),
            Some(Value::String("TCP".into()))
        );
        assert_eq!(
            types.list_type(&at(&["containers", "volumeMounts"])),
            map(&["mountPath"])
        );
        assert_eq!(types.list_type(&at(&["volumes"])), map(&["name"]));
        assert_eq!(
            types.list_type(&at(&["topologySpreadConstraints"])),
            map(&["topologyKey", "whenUnsatisfiable"])
        );
        assert_eq!(types.list_type(&at(&["tolerations"])), ListType::Atomic);
        assert_eq!(
            types.list_type(&at(&["containers", "args"])),
            ListType::Atomic
        );
        assert_eq!(
            types.list_type(&at(&["containers", "resources", "claims"])),
            map(&["name"])
        );
        assert_eq!(
            types.patch_strategy(&at(&["containers", "resources", "claims"])),
            ListType::Atomic
        );
        assert_eq!(types.list_type(&["status", "conditions"]), map(&["type"]));
        assert_eq!(
            types.list_type(&["spec", "template", "metadata", "finalizers"]),
            ListType::Set
        );
        assert!(types.atomic_map(&["spec", "selector"]));
        assert!(types.atomic_map(&at(&["containers", "env", "valueFrom", "secretKeyRef"])));
        assert!(!types.atomic_map(&["spec", "template"]));
    }

    #[test]
    fn statefulset_claim_templates_are_atomic() {
        let types = builtin_list_types("apps", "StatefulSet");
        assert_eq!(
            types.list_type(&["spec", "volumeClaimTemplates"]),
            ListType::Atomic
        );
        assert_eq!(
            types.list_type(&["spec", "template", "spec", "containers"]),
            map(&["name"])
        );
        assert_eq!(types.list_type(&["status", "conditions"]), map(&["type"]));
    }

    #[test]
    fn other_builtin_kinds() {
        assert_eq!(
            builtin_list_types("", "Namespace").list_type(&["status", "conditions"]),
            map(&["type"])
        );
        assert_eq!(
            builtin_list_types("", "Namespace").list_type(&["spec", "finalizers"]),
            ListType::Atomic
        );
        assert_eq!(
            builtin_list_types("", "ServiceAccount").list_type(&["secrets"]),
            map(&["name"])
        );
        assert_eq!(
            builtin_list_types("", "ServiceAccount").list_type(&["imagePullSecrets"]),
            ListType::Atomic
        );
        let rb = builtin_list_types("rbac.authorization.k8s.io", "RoleBinding");
        assert_eq!(rb.list_type(&["subjects"]), ListType::Atomic);
        let cr = builtin_list_types("rbac.authorization.k8s.io", "ClusterRole");
        assert_eq!(cr.list_type(&["rules"]), ListType::Atomic);
        let np = builtin_list_types("networking.k8s.io", "NetworkPolicy");
        assert_eq!(np.list_type(&["spec", "ingress"]), ListType::Atomic);
        assert!(np.atomic_map(&["spec", "podSelector"]));
        assert!(builtin_list_types("", "Event").atomic_map(&["involvedObject"]));
        assert!(builtin_list_types("events.k8s.io", "Event").atomic_map(&["regarding"]));
        for (group, kind) in [
            ("", "ConfigMap"),
            ("", "Secret"),
            ("coordination.k8s.io", "Lease"),
            ("", "ResourceQuota"),
            ("", "LimitRange"),
        ] {
            let types = builtin_list_types(group, kind);
            assert_eq!(
                types.list_type(&["spec", "scopes"]),
                ListType::Atomic,
                "{kind}"
            );
            assert_eq!(
                types.list_type(&["spec", "limits"]),
                ListType::Atomic,
                "{kind}"
            );
            assert!(!types.atomic_map(&["data"]), "{kind}");
        }
    }

    struct Everything(ListType);
    impl ListTypes for Everything {
        fn list_type(&self, _path: &[&str]) -> ListType {
            self.0.clone()
        }
    }

    #[test]
    fn with_metadata_routes_metadata_to_object_meta_rules() {
        let types = with_metadata(Everything(map(&["name"])));
        assert_eq!(types.list_type(&["metadata", "finalizers"]), ListType::Set);
        assert_eq!(
            types.list_type(&["metadata", "ownerReferences"]),
            map(&["uid"])
        );
        assert_eq!(types.list_type(&["metadata", "other"]), ListType::Atomic);
        assert_eq!(types.list_type(&["spec", "items"]), map(&["name"]));
        assert_eq!(types.patch_strategy(&["spec", "items"]), map(&["name"]));
        // Works through the smart pointers the registry stores schemas in.
        let shared: Arc<dyn ListTypes> =
            Arc::new(with_metadata(Arc::new(Everything(ListType::Set))));
        assert_eq!(shared.list_type(&["status", "tags"]), ListType::Set);
    }
}
