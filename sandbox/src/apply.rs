//! Server-side apply and `metadata.managedFields`, after the apiserver's structured-merge-diff.
//!
//! Field ownership is tracked as sets of field paths in the real `FieldsV1` encoding:
//! `f:<field>` for a field, `k:{"name":"x"}` for an element of a map list (its key fields as a
//! compact JSON object with sorted keys), `v:<json>` for an element of a set, and `.` for "the
//! node itself" when a node is both owned and has owned children. Atomic lists and atomic maps
//! are owned whole.
//!
//! - Apply merges the configuration into the live object (maps recursively, lists per
//!   [`ListType`]), owns exactly the fields in the configuration, removes the fields it applied
//!   before and omits now unless another manager owns them, and reports a [`Conflict`] when it
//!   would change a field another manager owns (unless `force`, which moves ownership). Equal
//!   values become shared ownership.
//! - Any other write ([`record_update`]) gives the fields it added or changed to its manager
//!   (operation `Update`) and takes them away from every other manager.
//!
//! `apiVersion`, `kind` and the server-owned `metadata` fields (name, namespace, uid,
//! resourceVersion, generation, creationTimestamp, managedFields, deletionTimestamp,
//! deletionGracePeriodSeconds, selfLink) are never tracked, as in the apiserver.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde_json::{Map, Value, json};

use crate::list_type::{ListType, ListTypes};

/// One server-side apply request.
pub struct ApplyRequest<'a> {
    /// The current object, `None` when apply creates it.
    pub live: Option<&'a Value>,
    /// The apply configuration as sent by the client.
    pub applied: &'a Value,
    /// The `fieldManager` (required for apply).
    pub manager: &'a str,
    pub force: bool,
    /// `Some("status")` for `/status`.
    pub subresource: Option<&'a str>,
    pub lists: &'a dyn ListTypes,
    /// RFC 3339 time for the managedFields entry.
    pub now: &'a str,
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (HTTP 409 Conflict).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The configuration cannot be applied, e.g. `metadata.managedFields` is set or a map-list
    /// element lacks its key (HTTP 400 BadRequest).
    #[error("{0}")]
    Invalid(String),
}

/// A field that an apply would change although another manager owns it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The other manager as structured-merge-diff identifies it: its managedFields entry
    /// without fields and time, JSON-encoded (`{"manager":"kubectl","operation":"Update",
    /// "apiVersion":"apps/v1"}`), so the error can say `"kubectl" using apps/v1` like the
    /// apiserver. [`Conflict::manager_name`] gives the plain name.
    pub manager: String,
    /// The field path as the apiserver prints it: `.spec.replicas`,
    /// `.status.conditions[type="Ready"].status`, `.metadata.finalizers[="x"]`.
    pub field: String,
}

impl Conflict {
    /// The other manager's `fieldManager` name.
    pub fn manager_name(&self) -> String {
        manager_entry(&self.manager)
            .and_then(|e| e.get("manager").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| self.manager.clone())
    }
}

fn manager_entry(manager: &str) -> Option<Map<String, Value>> {
    serde_json::from_str(manager).ok()
}

/// The apiserver's `printManager`: `"name"`, plus ` with subresource "status"` and, for an
/// `Update` manager, ` using <apiVersion>`.
fn print_manager(manager: &str) -> String {
    let Some(entry) = manager_entry(manager) else {
        return format!("{manager:?}");
    };
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut printed = format!("{:?}", text("manager"));
    if !text("subresource").is_empty() {
        printed = format!("{printed} with subresource {:?}", text("subresource"));
    }
    if text("operation") == "Update" {
        printed = format!("{printed} using {}", text("apiVersion"));
    }
    printed
}

/// The apiserver's message for an apply conflict (`Apply failed with 1 conflict: conflict with
/// "manager": .spec.replicas`).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            print_manager(&only.manager),
            only.field
        );
    }
    let mut by_manager: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by_manager
            .entry(print_manager(&c.manager))
            .or_default()
            .push(&c.field);
    }
    let mut lines = Vec::new();
    for (manager, fields) in by_manager {
        lines.push(format!("conflicts with {manager}:"));
        lines.extend(fields.iter().map(|f| format!("- {f}")));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Applies `req.applied` to `req.live` and returns the new object with `metadata.managedFields`
/// updated. Re-applying a configuration that changes nothing returns an object equal to the
/// live one (managedFields included), so the caller can skip the write.
pub fn server_side_apply(req: ApplyRequest) -> Result<Value, ApplyError> {
    let Value::Object(applied) = req.applied else {
        return Err(ApplyError::Invalid(
            "the apply configuration must be a JSON object".into(),
        ));
    };
    if req
        .applied
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let live_version = req
        .live
        .and_then(|l| l.get("apiVersion"))
        .and_then(Value::as_str);
    let applied_version = applied.get("apiVersion").and_then(Value::as_str);
    if let (Some(live), Some(patch)) = (live_version, applied_version)
        && live != patch
    {
        return Err(ApplyError::Invalid(format!(
            "Incorrect version specified in apply patch. Specified patch version: {patch}, expected: {live}"
        )));
    }
    let api_version = applied_version.or(live_version).unwrap_or_default();

    let mut live = req.live.cloned().unwrap_or_else(|| json!({}));
    let mut managers = ManagedFields::decode(&live);
    remove_managed_fields(&mut live);
    let mut config = req.applied.clone();
    remove_managed_fields(&mut config);

    let applied_set = field_set(&tracked(&config), req.lists)?;
    let mut merged = merge_objects(&live, &config, req.lists)?;

    let id = ManagerId {
        manager: req.manager.to_string(),
        operation: Operation::Apply,
        subresource: req.subresource.unwrap_or_default().to_string(),
        api_version: String::new(),
    };
    let previous = managers.take(&id);
    let last_applied = previous.as_ref().map(|e| e.set.clone()).unwrap_or_default();
    let mut kept = applied_set.clone();
    for entry in &managers.entries {
        kept.union(&entry.set);
    }
    prune(&mut merged, &last_applied, &kept, req.lists);

    let comparison = compare_objects(&live, &merged, req.lists);
    let changed = comparison.changed();
    let mut conflicts = BTreeSet::new();
    for entry in &managers.entries {
        for path in entry.set.intersection(&changed).members_paths() {
            conflicts.insert(Conflict {
                manager: entry.id.identifier(),
                field: display_path(&path),
            });
        }
    }
    if !conflicts.is_empty() && !req.force {
        return Err(ApplyError::Conflicts(conflicts.into_iter().collect()));
    }
    for entry in &mut managers.entries {
        entry.set = entry
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    let object_changed = live != merged;
    let time = match &previous {
        Some(entry) if !object_changed => entry.time.clone(),
        _ => Some(req.now.to_string()),
    };
    managers.entries.push(ManagedFieldsEntry {
        id,
        api_version: api_version.to_string(),
        time,
        set: applied_set,
    });
    managers.encode_into(&mut merged);
    Ok(merged)
}

/// Records ownership for a non-apply write (create, update, patch): the fields this write added
/// or changed become owned by `manager` (operation `Update`, merged into its earlier `Update`
/// entry) and leave every other manager's set; removed fields leave every set. A client that
/// sends `metadata.managedFields: [{}]` clears managedFields, as on the apiserver.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    lists: &dyn ListTypes,
    now: &str,
) {
    if new
        .pointer("/metadata/managedFields")
        .is_some_and(|mf| *mf == json!([{}]))
    {
        remove_managed_fields(new);
        return;
    }
    let subresource = subresource.unwrap_or_default();
    // A main-resource write may set managedFields directly; otherwise (or when it sends none)
    // the live object's ownership carries over, so clients unaware of it cannot erase it.
    let sent = ManagedFields::decode(new);
    let mut managers = if subresource.is_empty() && !sent.entries.is_empty() {
        sent
    } else {
        old.map(ManagedFields::decode).unwrap_or_default()
    };
    let empty = json!({});
    let mut old = old.unwrap_or(&empty).clone();
    remove_managed_fields(&mut old);
    remove_managed_fields(new);

    let comparison = compare_objects(&old, new, lists);
    let changed = comparison.changed();
    for entry in &mut managers.entries {
        entry.set = entry
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    if !changed.is_empty() {
        let api_version = new
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let id = ManagerId {
            manager: manager.to_string(),
            operation: Operation::Update,
            subresource: subresource.to_string(),
            api_version: api_version.clone(),
        };
        let mut set = managers.take(&id).map(|e| e.set).unwrap_or_default();
        set.union(&changed);
        managers.entries.push(ManagedFieldsEntry {
            id,
            api_version,
            time: Some(now.to_string()),
            set,
        });
    }
    managers.encode_into(new);
}

/// The field paths (`.spec.replicas`, ...) owned by `manager` under any operation, read from
/// the object's managedFields. Handy for asserting ownership in tests.
pub fn fields_owned_by(object: &Value, manager: &str) -> BTreeSet<String> {
    ManagedFields::decode(object)
        .entries
        .iter()
        .filter(|e| e.id.manager == manager)
        .flat_map(|e| e.set.members_paths())
        .map(|p| display_path(&p))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Field paths and sets.

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PathElement {
    /// `f:<name>`
    Field(String),
    /// `k:<json>`: a map-list element by its key fields (canonical JSON object).
    Key(String),
    /// `v:<json>`: a set element by value (canonical JSON).
    Value(String),
    /// `i:<n>`: a list element by position (read for compatibility; never produced).
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(json) => format!("k:{json}"),
            PathElement::Value(json) => format!("v:{json}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Self, String> {
        let canonical = |json: &str| -> Result<String, String> {
            serde_json::from_str::<Value>(json)
                .map(|v| v.to_string())
                .map_err(|e| format!("invalid path element {s:?}: {e}"))
        };
        if let Some(name) = s.strip_prefix("f:") {
            Ok(PathElement::Field(name.to_string()))
        } else if let Some(json) = s.strip_prefix("k:") {
            Ok(PathElement::Key(canonical(json)?))
        } else if let Some(json) = s.strip_prefix("v:") {
            Ok(PathElement::Value(canonical(json)?))
        } else if let Some(index) = s.strip_prefix("i:") {
            index
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("invalid path element {s:?}: {e}"))
        } else {
            Err(format!("invalid path element {s:?}"))
        }
    }
}

/// Go's `value.ToString`: strings quoted, everything else as JSON.
fn go_value_string(value: &Value) -> String {
    value.to_string()
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(json) => {
                let keys = serde_json::from_str::<Map<String, Value>>(json).unwrap_or_default();
                let parts: Vec<String> = keys
                    .iter()
                    .map(|(k, v)| format!("{k}={}", go_value_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(json) => {
                let value = serde_json::from_str::<Value>(json).unwrap_or(Value::Null);
                write!(f, "[={}]", go_value_string(&value))
            }
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

fn display_path(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A set of field paths, as a tree: `members` are owned nodes, `children` lead to deeper ones.
/// Invariant: no child set is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    fn union(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (element, child) in &other.children {
            self.children
                .entry(element.clone())
                .or_default()
                .union(child);
        }
    }

    /// Members of `self` that are not members of `other` (node by node, like SMD).
    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.difference(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(other_child) => child.difference(other_child),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.intersection(&other.members).cloned().collect(),
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(other_child) = other.children.get(element) {
                let both = child.intersection(other_child);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Whether `path` is a member.
    fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// Every member, as a full path.
    fn members_paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        for member in &self.members {
            prefix.push(member.clone());
            out.push(prefix.clone());
            prefix.pop();
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for member in &self.members {
            if !self.children.contains_key(member) {
                map.insert(member.encode(), json!({}));
            }
        }
        for (element, child) in &self.children {
            let Value::Object(mut inner) = child.to_fields_v1() else {
                continue;
            };
            if self.members.contains(element) {
                inner.insert(".".into(), json!({}));
            }
            map.insert(element.encode(), Value::Object(inner));
        }
        Value::Object(map)
    }

    fn from_fields_v1(value: &Value) -> Result<FieldSet, String> {
        let Value::Object(map) = value else {
            return Err(format!("expected an object in fieldsV1, found {value}"));
        };
        let mut set = FieldSet::default();
        for (key, inner) in map {
            if key == "." {
                continue;
            }
            let element = PathElement::decode(key)?;
            let Value::Object(inner_map) = inner else {
                return Err(format!("expected an object at {key:?} in fieldsV1"));
            };
            if inner_map.is_empty() || inner_map.contains_key(".") {
                set.members.insert(element.clone());
            }
            let child = FieldSet::from_fields_v1(inner)?;
            if !child.is_empty() {
                set.children.insert(element, child);
            }
        }
        Ok(set)
    }
}

/// Drops the fields no manager owns (see the module docs) from a set.
fn strip_untracked(set: &mut FieldSet) {
    for top in ["apiVersion", "kind"] {
        let element = PathElement::Field(top.into());
        set.members.remove(&element);
        set.children.remove(&element);
    }
    let metadata = PathElement::Field("metadata".into());
    set.members.remove(&metadata);
    if let Some(meta) = set.children.get_mut(&metadata) {
        for field in UNTRACKED_METADATA {
            let element = PathElement::Field((*field).into());
            meta.members.remove(&element);
            meta.children.remove(&element);
        }
        if meta.is_empty() {
            set.children.remove(&metadata);
        }
    }
}

const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "clusterName",
];

/// The object without the fields no manager owns.
fn tracked(object: &Value) -> Value {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for field in UNTRACKED_METADATA {
                meta.remove(*field);
            }
        }
    }
    object
}

fn remove_managed_fields(object: &mut Value) {
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        meta.remove("managedFields");
    }
}

/// Field names of a path, for [`ListTypes`] lookups.
fn names_of(names: &[String]) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// The path element of a list item: its key fields for a map list, its value for a set.
fn item_element(
    item: &Value,
    list: &ListType,
    names: &[String],
    lists: &dyn ListTypes,
) -> Result<PathElement, String> {
    match list {
        ListType::Map(keys) => {
            let Value::Object(fields) = item else {
                return Err(format!("expected a map element, found {item}"));
            };
            let mut key = Map::new();
            for k in keys {
                let value = fields
                    .get(k)
                    .cloned()
                    .or_else(|| lists.map_key_default(&names_of(names), k))
                    .ok_or_else(|| {
                        format!(
                            "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                        )
                    })?;
                key.insert(k.clone(), value);
            }
            Ok(PathElement::Key(Value::Object(key).to_string()))
        }
        _ => Ok(PathElement::Value(item.to_string())),
    }
}

fn dotted(names: &[String]) -> String {
    names.iter().map(|n| format!(".{n}")).collect()
}

/// The set of fields an apply configuration sets (structured-merge-diff `ToFieldSet`): every
/// scalar, `null`, empty map, atomic list or atomic map is owned; elements of map lists and
/// sets are owned themselves, with the fields inside map elements.
fn field_set(config: &Value, lists: &dyn ListTypes) -> Result<FieldSet, ApplyError> {
    let mut set = FieldSet::default();
    if let Value::Object(map) = config {
        walk_map(map, &mut Vec::new(), &mut Vec::new(), lists, &mut set)
            .map_err(ApplyError::Invalid)?;
    }
    strip_untracked(&mut set);
    Ok(set)
}

fn walk_map(
    map: &Map<String, Value>,
    path: &mut Vec<PathElement>,
    names: &mut Vec<String>,
    lists: &dyn ListTypes,
    set: &mut FieldSet,
) -> Result<(), String> {
    for (key, value) in map {
        path.push(PathElement::Field(key.clone()));
        names.push(key.clone());
        walk_value(value, path, names, lists, set)?;
        names.pop();
        path.pop();
    }
    Ok(())
}

fn walk_value(
    value: &Value,
    path: &mut Vec<PathElement>,
    names: &mut Vec<String>,
    lists: &dyn ListTypes,
    set: &mut FieldSet,
) -> Result<(), String> {
    match value {
        Value::Object(map) if !map.is_empty() && !lists.atomic_map(&names_of(names)) => {
            walk_map(map, path, names, lists, set)
        }
        Value::Array(items) => match lists.list_type(&names_of(names)) {
            ListType::Atomic => {
                set.insert(path);
                Ok(())
            }
            list => {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let element = item_element(item, &list, names, lists)
                        .map_err(|e| format!("{}: element {i}: {e}", dotted(names)))?;
                    if !seen.insert(element.clone()) {
                        return Err(format!(
                            "{}: duplicate entries for key {element}",
                            dotted(names)
                        ));
                    }
                    path.push(element);
                    set.insert(path);
                    if let (ListType::Map(_), Value::Object(fields)) = (&list, item) {
                        walk_map(fields, path, names, lists, set)?;
                    }
                    path.pop();
                }
                Ok(())
            }
        },
        _ => {
            set.insert(path);
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Merging an apply configuration into the live object.

fn merge_objects(live: &Value, config: &Value, lists: &dyn ListTypes) -> Result<Value, ApplyError> {
    merge_value(Some(live), config, &mut Vec::new(), lists).map_err(ApplyError::Invalid)
}

/// structured-merge-diff `Merge`: the configuration wins on every field it sets; maps merge
/// field by field, map lists and sets element by element, atomic lists and maps are replaced.
/// A `null` in the configuration is a value like any other (see [`merge_null`]): the apiserver
/// then defaults it or rejects it for a custom resource, and drops it for a built-in kind.
fn merge_value(
    live: Option<&Value>,
    config: &Value,
    names: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<Value, String> {
    match config {
        Value::Object(config_map) if !lists.atomic_map(&names_of(names)) => {
            let mut out = match live {
                Some(Value::Object(live_map)) => live_map.clone(),
                _ => Map::new(),
            };
            for (key, value) in config_map {
                names.push(key.clone());
                let merged = if value.is_null() {
                    Ok(merge_null(out.get(key), names, lists))
                } else {
                    merge_value(out.get(key), value, names, lists)
                };
                names.pop();
                out.insert(key.clone(), merged?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(config_items) => match lists.list_type(&names_of(names)) {
            ListType::Atomic => Ok(config.clone()),
            list => {
                let live_items = match live {
                    Some(Value::Array(items)) => items.as_slice(),
                    _ => &[],
                };
                merge_list(live_items, config_items, &list, names, lists).map(Value::Array)
            }
        },
        _ => Ok(config.clone()),
    }
}

/// A configured `null` merged into the live value: structured-merge-diff reads `null` as an
/// empty map or list, so a live map merged field by field, or a live map list or set, stays as
/// it is; anything else (a scalar, an atomic list or map, an empty or missing value) becomes
/// `null`.
fn merge_null(live: Option<&Value>, names: &[String], lists: &dyn ListTypes) -> Value {
    match live {
        Some(Value::Object(map)) if !map.is_empty() && !lists.atomic_map(&names_of(names)) => {
            Value::Object(map.clone())
        }
        Some(Value::Array(items))
            if !items.is_empty() && lists.list_type(&names_of(names)) != ListType::Atomic =>
        {
            Value::Array(items.clone())
        }
        _ => Value::Null,
    }
}

/// structured-merge-diff's associative list merge: elements only in the live list keep their
/// place, configured elements follow the configuration's order, merged with their live
/// counterpart.
fn merge_list(
    live: &[Value],
    config: &[Value],
    list: &ListType,
    names: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<Vec<Value>, String> {
    let mut rhs = Vec::with_capacity(config.len());
    let mut observed_rhs = BTreeMap::new();
    for (i, item) in config.iter().enumerate() {
        let element = item_element(item, list, names, lists)
            .map_err(|e| format!("{}: element {i}: {e}", dotted(names)))?;
        if observed_rhs.insert(element.clone(), item).is_some() {
            return Err(format!(
                "{}: duplicate entries for key {element}",
                dotted(names)
            ));
        }
        rhs.push(element);
    }
    // Live elements whose key cannot be computed (invalid stored data) are kept as they are.
    let lhs: Vec<Option<PathElement>> = live
        .iter()
        .map(|item| item_element(item, list, names, lists).ok())
        .collect();
    let mut observed_lhs: BTreeMap<PathElement, &Value> = BTreeMap::new();
    for (element, item) in lhs.iter().zip(live) {
        if let Some(element) = element {
            observed_lhs.entry(element.clone()).or_insert(item);
        }
    }
    let mut shared: VecDeque<&PathElement> = rhs
        .iter()
        .filter(|e| observed_lhs.contains_key(*e))
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs = BTreeSet::new();
    let mut out = Vec::with_capacity(live.len().max(config.len()));
    let merge_item = |element: &PathElement, names: &mut Vec<String>| -> Result<Value, String> {
        let config_item = observed_rhs[element];
        match list {
            ListType::Map(_) => merge_value(
                observed_lhs.get(element).copied(),
                config_item,
                names,
                lists,
            ),
            _ => Ok(config_item.clone()),
        }
    };
    let (mut li, mut ri) = (0, 0);
    while li < live.len() || ri < rhs.len() {
        if li < live.len() && ri < rhs.len() {
            if lhs[li].as_ref() == Some(&rhs[ri]) {
                merged_rhs.insert(rhs[ri].clone());
                out.push(merge_item(&rhs[ri], names)?);
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if let Some(element) = &lhs[li]
                && observed_rhs.contains_key(element)
                && next_shared.is_some_and(|n| n != element)
            {
                // A shared element out of the configuration's order: placed when the
                // configuration reaches it.
                li += 1;
                continue;
            }
        }
        if li < live.len() {
            match &lhs[li] {
                Some(element) if observed_rhs.contains_key(element) => {
                    if merged_rhs.contains(element) {
                        li += 1;
                        continue;
                    }
                }
                _ => {
                    out.push(live[li].clone());
                    li += 1;
                    continue;
                }
            }
        }
        if ri < rhs.len() {
            let element = &rhs[ri];
            merged_rhs.insert(element.clone());
            out.push(merge_item(element, names)?);
            ri += 1;
            if next_shared.is_some_and(|n| n == element) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Removing fields an applier no longer applies.

/// Removes from `object` what the applier applied last time (`last`) and no longer applies,
/// unless another manager owns it (`kept` also holds the new configuration's fields). Like
/// structured-merge-diff, a field that leads to owned fields counts as owned itself, so a map
/// the applier built is removed whole once nobody owns anything in it, and a map-list element
/// is removed whole unless someone owns the element itself (an `Update` manager that only
/// changed a field inside it does not keep it).
fn prune(object: &mut Value, last: &FieldSet, kept: &FieldSet, lists: &dyn ListTypes) {
    let kept = with_field_nodes(kept);
    let metadata = [PathElement::Field("metadata".into())];
    for path in with_field_nodes(last).members_paths() {
        // `metadata` itself always stays: it holds the untracked identity fields.
        if path.as_slice() != metadata && !kept.contains(&path) {
            remove_path(object, &path, &mut Vec::new(), lists);
        }
    }
}

/// The set with every field that leads to a member made a member too (SMD's
/// `EnsureNamedFieldsAreMembers`, without a schema to tell struct fields from map keys).
fn with_field_nodes(set: &FieldSet) -> FieldSet {
    let mut out = FieldSet {
        members: set.members.clone(),
        children: BTreeMap::new(),
    };
    for (element, child) in &set.children {
        if matches!(element, PathElement::Field(_)) {
            out.members.insert(element.clone());
        }
        out.children
            .insert(element.clone(), with_field_nodes(child));
    }
    out
}

fn matches_element(
    item: &Value,
    element: &PathElement,
    names: &[String],
    lists: &dyn ListTypes,
) -> bool {
    let list = lists.list_type(&names_of(names));
    match (element, &list) {
        (PathElement::Key(_), ListType::Map(_)) | (PathElement::Value(_), ListType::Set) => {
            item_element(item, &list, names, lists).is_ok_and(|e| e == *element)
        }
        (PathElement::Value(json), _) => {
            serde_json::from_str::<Value>(json).is_ok_and(|v| v == *item)
        }
        _ => false,
    }
}

fn remove_path(
    value: &mut Value,
    path: &[PathElement],
    names: &mut Vec<String>,
    lists: &dyn ListTypes,
) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match (first, value) {
        (PathElement::Field(name), Value::Object(map)) => {
            if rest.is_empty() {
                map.remove(name);
            } else if let Some(next) = map.get_mut(name) {
                names.push(name.clone());
                remove_path(next, rest, names, lists);
                names.pop();
            }
        }
        (PathElement::Index(i), Value::Array(items)) => {
            if rest.is_empty() {
                if *i < items.len() {
                    items.remove(*i);
                }
            } else if let Some(next) = items.get_mut(*i) {
                remove_path(next, rest, names, lists);
            }
        }
        (element, Value::Array(items)) => {
            if rest.is_empty() {
                items.retain(|item| !matches_element(item, element, names, lists));
            } else if let Some(next) = items
                .iter_mut()
                .find(|item| matches_element(item, element, names, lists))
            {
                remove_path(next, rest, names, lists);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Comparing two versions of an object.

/// What changed between two versions of an object, as field sets.
#[derive(Debug, Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

impl Comparison {
    fn changed(&self) -> FieldSet {
        let mut changed = self.added.clone();
        changed.union(&self.modified);
        changed
    }
}

fn compare_objects(old: &Value, new: &Value, lists: &dyn ListTypes) -> Comparison {
    let mut comparison = Comparison::default();
    compare(
        Some(&tracked(old)),
        Some(&tracked(new)),
        &mut Vec::new(),
        &mut Vec::new(),
        lists,
        &mut comparison,
    );
    strip_untracked(&mut comparison.added);
    strip_untracked(&mut comparison.modified);
    strip_untracked(&mut comparison.removed);
    comparison
}

/// How a value is compared: field by field, element by element, or as a whole.
#[derive(PartialEq, Eq)]
enum Shape {
    Map,
    List(ListType),
    Leaf,
}

fn shape(value: &Value, names: &[String], lists: &dyn ListTypes) -> Shape {
    match value {
        Value::Object(_) if !lists.atomic_map(&names_of(names)) => Shape::Map,
        Value::Array(_) => match lists.list_type(&names_of(names)) {
            ListType::Atomic => Shape::Leaf,
            list => Shape::List(list),
        },
        _ => Shape::Leaf,
    }
}

/// structured-merge-diff `Compare`: leaves are added, removed or modified as a whole; a map or
/// associative list that appears or disappears is itself added or removed along with its
/// contents.
fn compare(
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Vec<PathElement>,
    names: &mut Vec<String>,
    lists: &dyn ListTypes,
    out: &mut Comparison,
) {
    let old_shape = old.map(|v| shape(v, names, lists));
    let new_shape = new.map(|v| shape(v, names, lists));
    if let (Some(a), Some(b)) = (&old_shape, &new_shape)
        && a != b
    {
        // A value changing kind (map to scalar, ...) is a removal and an addition.
        compare(old, None, path, names, lists, out);
        compare(None, new, path, names, lists, out);
        return;
    }
    match old_shape.as_ref().or(new_shape.as_ref()) {
        None => return,
        Some(Shape::Leaf) => {
            match (old, new) {
                (None, Some(_)) => out.added.insert(path),
                (Some(_), None) => out.removed.insert(path),
                (Some(a), Some(b)) if a != b => out.modified.insert(path),
                _ => {}
            }
            return;
        }
        Some(Shape::Map) => {
            let empty = Map::new();
            let old_map = old.and_then(Value::as_object).unwrap_or(&empty);
            let new_map = new.and_then(Value::as_object).unwrap_or(&empty);
            let keys: BTreeSet<&String> = old_map.keys().chain(new_map.keys()).collect();
            for key in keys {
                path.push(PathElement::Field(key.clone()));
                names.push(key.clone());
                compare(old_map.get(key), new_map.get(key), path, names, lists, out);
                names.pop();
                path.pop();
            }
        }
        Some(Shape::List(list)) => {
            let index = |value: Option<&Value>| -> BTreeMap<PathElement, Value> {
                let mut items = BTreeMap::new();
                for item in value.and_then(Value::as_array).into_iter().flatten() {
                    if let Ok(element) = item_element(item, list, names, lists) {
                        items.entry(element).or_insert_with(|| item.clone());
                    }
                }
                items
            };
            let (old_items, new_items) = (index(old), index(new));
            let elements: BTreeSet<&PathElement> =
                old_items.keys().chain(new_items.keys()).collect();
            for element in elements {
                path.push(element.clone());
                match list {
                    ListType::Map(_) => compare(
                        old_items.get(element),
                        new_items.get(element),
                        path,
                        names,
                        lists,
                        out,
                    ),
                    _ => match (
                        old_items.contains_key(element),
                        new_items.contains_key(element),
                    ) {
                        (false, true) => out.added.insert(path),
                        (true, false) => out.removed.insert(path),
                        _ => {}
                    },
                }
                path.pop();
            }
        }
    }
    match (old, new) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// metadata.managedFields

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Who owns a set: the apiserver keys entries by manager, operation, subresource and, for
/// `Update` only, apiVersion (an applier keeps one entry across versions).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ManagerId {
    manager: String,
    operation: Operation,
    subresource: String,
    api_version: String,
}

impl ManagerId {
    /// structured-merge-diff's manager identifier: the entry's `manager`, `operation`,
    /// `apiVersion` (for `Update` only) and `subresource`, JSON-encoded in Go field order.
    fn identifier(&self) -> String {
        let mut fields = vec![
            format!("\"manager\":{}", json!(self.manager)),
            format!("\"operation\":{}", json!(self.operation.as_str())),
        ];
        if !self.api_version.is_empty() {
            fields.push(format!("\"apiVersion\":{}", json!(self.api_version)));
        }
        if !self.subresource.is_empty() {
            fields.push(format!("\"subresource\":{}", json!(self.subresource)));
        }
        format!("{{{}}}", fields.join(","))
    }
}

#[derive(Debug, Clone)]
struct ManagedFieldsEntry {
    id: ManagerId,
    api_version: String,
    time: Option<String>,
    set: FieldSet,
}

#[derive(Debug, Clone, Default)]
struct ManagedFields {
    entries: Vec<ManagedFieldsEntry>,
}

impl ManagedFields {
    /// Reads `metadata.managedFields`; like the apiserver, unreadable managedFields are reset.
    fn decode(object: &Value) -> ManagedFields {
        let Some(Value::Array(items)) = object.pointer("/metadata/managedFields") else {
            return ManagedFields::default();
        };
        let mut managers = ManagedFields::default();
        for item in items {
            match ManagedFields::decode_entry(item) {
                Ok(entry) => match managers.entries.iter_mut().find(|e| e.id == entry.id) {
                    Some(existing) => existing.set.union(&entry.set),
                    None => managers.entries.push(entry),
                },
                Err(_) => return ManagedFields::default(),
            }
        }
        managers
    }

    fn decode_entry(item: &Value) -> Result<ManagedFieldsEntry, String> {
        let text = |field: &str| {
            item.get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let operation = match item.get("operation").and_then(Value::as_str) {
            Some("Apply") => Operation::Apply,
            Some("Update") => Operation::Update,
            other => return Err(format!("unknown operation {other:?}")),
        };
        let fields_type = text("fieldsType");
        if fields_type != "FieldsV1" {
            return Err(format!("unsupported fieldsType {fields_type:?}"));
        }
        let set = match item.get("fieldsV1") {
            Some(fields) => FieldSet::from_fields_v1(fields)?,
            None => FieldSet::default(),
        };
        let api_version = text("apiVersion");
        Ok(ManagedFieldsEntry {
            id: ManagerId {
                manager: text("manager"),
                operation,
                subresource: text("subresource"),
                api_version: if operation == Operation::Update {
                    api_version.clone()
                } else {
                    String::new()
                },
            },
            api_version,
            time: item.get("time").and_then(Value::as_str).map(str::to_string),
            set,
        })
    }

    fn take(&mut self, id: &ManagerId) -> Option<ManagedFieldsEntry> {
        let index = self.entries.iter().position(|e| e.id == *id)?;
        Some(self.entries.remove(index))
    }

    /// Writes the non-empty entries, in the apiserver's order (operation, time, manager,
    /// apiVersion, subresource), to `metadata.managedFields`, or removes it when none remain.
    fn encode_into(mut self, object: &mut Value) {
        self.entries.retain(|e| !e.set.is_empty());
        self.entries.sort_by(|a, b| {
            (
                a.id.operation,
                seconds(a.time.as_deref()),
                &a.id.manager,
                &a.api_version,
                &a.id.subresource,
            )
                .cmp(&(
                    b.id.operation,
                    seconds(b.time.as_deref()),
                    &b.id.manager,
                    &b.api_version,
                    &b.id.subresource,
                ))
        });
        let Value::Object(root) = object else {
            return;
        };
        if self.entries.is_empty() {
            if let Some(Value::Object(meta)) = root.get_mut("metadata") {
                meta.remove("managedFields");
            }
            return;
        }
        let encoded: Vec<Value> = self
            .entries
            .iter()
            .map(|entry| {
                let mut e = Map::new();
                e.insert("manager".into(), json!(entry.id.manager));
                e.insert("operation".into(), json!(entry.id.operation.as_str()));
                e.insert("apiVersion".into(), json!(entry.api_version));
                if let Some(time) = &entry.time {
                    e.insert("time".into(), json!(time));
                }
                e.insert("fieldsType".into(), json!("FieldsV1"));
                e.insert("fieldsV1".into(), entry.set.to_fields_v1());
                if !entry.id.subresource.is_empty() {
                    e.insert("subresource".into(), json!(entry.id.subresource));
                }
                Value::Object(e)
            })
            .collect();
        let meta = root
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(meta) = meta {
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

/// Whole seconds of an RFC 3339 time (entries are ordered by second, like `metav1.Time`).
fn seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list_type::builtin_list_types;

    const T1: &str = "2025-01-01T00:00:00Z";
    const T2: &str = "2025-01-01T00:01:00Z";
    const T3: &str = "2025-01-01T00:02:00Z";

    fn deployment_lists() -> Box<dyn ListTypes> {
        builtin_list_types("apps", "Deployment")
    }

    fn apply_at(
        live: Option<&Value>,
        config: Value,
        manager: &str,
        force: bool,
        subresource: Option<&str>,
        now: &str,
    ) -> Result<Value, ApplyError> {
        let lists = deployment_lists();
        server_side_apply(ApplyRequest {
            live,
            applied: &config,
            manager,
            force,
            subresource,
            lists: &*lists,
            now,
        })
    }

    fn apply(live: Option<&Value>, config: Value, manager: &str) -> Result<Value, ApplyError> {
        apply_at(live, config, manager, false, None, T1)
    }

    fn update(old: Option<&Value>, new: Value, manager: &str, now: &str) -> Value {
        let mut new = new;
        record_update(old, &mut new, manager, None, &*deployment_lists(), now);
        new
    }

    fn meta() -> Value {
        json!({"name": "web", "namespace": "default"})
    }

    fn config(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(), "spec": spec})
    }

    fn managed(object: &Value) -> &Vec<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields present")
    }

    fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
        object["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == operation)
    }

    fn without_managed_fields(object: &Value) -> Value {
        let mut object = object.clone();
        remove_managed_fields(&mut object);
        object
    }

    fn conflicts(result: Result<Value, ApplyError>) -> Vec<Conflict> {
        match result {
            Err(ApplyError::Conflicts(c)) => c,
            other => panic!("expected conflicts, got {other:?}"),
        }
    }

    /// A conflict with an applier.
    fn conflict(manager: &str, field: &str) -> Conflict {
        Conflict {
            manager: format!("{{\"manager\":\"{manager}\",\"operation\":\"Apply\"}}"),
            field: field.into(),
        }
    }

    #[test]
    fn create_via_apply_records_fields_v1() {
        let desired = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "app",
                        "image": "web:1",
                        "ports": [{"containerPort": 80}],
                        "env": [{"name": "A", "value": "1"}]
                    }]}
                }
            }
        });
        let created = apply(None, desired.clone(), "flotilla").unwrap();
        assert_eq!(without_managed_fields(&created), desired);
        assert_eq!(
            managed(&created),
            &vec![json!({
                "manager": "flotilla",
                "operation": "Apply",
                "apiVersion": "apps/v1",
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {
                        "f:replicas": {},
                        "f:selector": {},
                        "f:template": {
                            "f:metadata": {"f:labels": {"f:app": {}}},
                            "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                                ".": {},
                                "f:env": {"k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
                                "f:image": {},
                                "f:name": {},
                                "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                    ".": {},
                                    "f:containerPort": {}
                                }}
                            }}}
                        }
                    }
                }
            })]
        );
        assert!(fields_owned_by(&created, "flotilla").contains(
            ".spec.template.spec.containers[name=\"app\"].ports[containerPort=80,protocol=\"TCP\"].containerPort"
        ));
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let desired = config(
            json!({"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "a"}]}}}),
        );
        let first = apply_at(None, desired.clone(), "flotilla", false, None, T1).unwrap();
        let second = apply_at(Some(&first), desired, "flotilla", false, None, T2).unwrap();
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            serde_json::to_string(&second).unwrap(),
            "a no-op apply must return the live object byte for byte"
        );
    }

    #[test]
    fn changed_apply_updates_the_entry_time() {
        let first = apply_at(
            None,
            config(json!({"replicas": 1})),
            "flotilla",
            false,
            None,
            T1,
        )
        .unwrap();
        let second = apply_at(
            Some(&first),
            config(json!({"replicas": 2})),
            "flotilla",
            false,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(second["spec"]["replicas"], 2);
        assert_eq!(managed(&second).len(), 1);
        assert_eq!(managed(&second)[0]["time"], T2);
    }

    #[test]
    fn omitted_fields_are_removed() {
        let mut first_config = config(json!({"replicas": 2, "paused": false}));
        first_config["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        let first = apply(None, first_config, "flotilla").unwrap();
        let mut second_config = config(json!({"paused": false}));
        second_config["metadata"]["labels"] = json!({"app": "web"});
        let second = apply_at(Some(&first), second_config, "flotilla", false, None, T2).unwrap();
        assert_eq!(second["metadata"]["labels"], json!({"app": "web"}));
        assert!(second["spec"].get("replicas").is_none());
        assert_eq!(
            fields_owned_by(&second, "flotilla"),
            BTreeSet::from([
                ".metadata.labels.app".to_string(),
                ".spec.paused".to_string()
            ])
        );
        // Dropping the last label removes the emptied map too; identity metadata stays.
        let third = apply_at(
            Some(&second),
            config(json!({"paused": false})),
            "flotilla",
            false,
            None,
            T3,
        )
        .unwrap();
        assert!(third["metadata"].get("labels").is_none());
        assert_eq!(third["metadata"]["name"], "web");
    }

    #[test]
    fn omitted_fields_owned_by_another_manager_stay() {
        let mut a = config(json!({}));
        a["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        let first = apply(None, a, "a").unwrap();
        let mut b = config(json!({}));
        b["metadata"]["labels"] = json!({"tier": "front"});
        let second = apply(Some(&first), b, "b").unwrap();
        let mut a_again = config(json!({}));
        a_again["metadata"]["labels"] = json!({"app": "web"});
        let third = apply(Some(&second), a_again, "a").unwrap();
        assert_eq!(
            third["metadata"]["labels"],
            json!({"app": "web", "tier": "front"})
        );
        assert!(fields_owned_by(&third, "b").contains(".metadata.labels.tier"));
        assert!(!fields_owned_by(&third, "a").contains(".metadata.labels.tier"));
    }

    #[test]
    fn unowned_fields_are_left_alone() {
        let first = apply(None, config(json!({"replicas": 1})), "a").unwrap();
        // A field written without a field manager (no entry at all).
        let mut live = first.clone();
        live["spec"]["revisionHistoryLimit"] = json!(10);
        let second = apply(Some(&live), config(json!({"replicas": 2})), "a").unwrap();
        assert_eq!(second["spec"]["revisionHistoryLimit"], 10);
    }

    #[test]
    fn conflict_with_another_applier() {
        let first = apply(None, config(json!({"replicas": 2})), "alice").unwrap();
        let err = apply(Some(&first), config(json!({"replicas": 3})), "bob");
        let err_message = err.as_ref().unwrap_err().to_string();
        assert_eq!(conflicts(err), vec![conflict("alice", ".spec.replicas")]);
        assert_eq!(
            err_message,
            "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
        );
    }

    #[test]
    fn equal_values_are_shared_then_conflict() {
        let first = apply(None, config(json!({"replicas": 2})), "alice").unwrap();
        let shared = apply(Some(&first), config(json!({"replicas": 2})), "bob").unwrap();
        assert_eq!(
            without_managed_fields(&shared),
            without_managed_fields(&first)
        );
        assert!(fields_owned_by(&shared, "alice").contains(".spec.replicas"));
        assert!(fields_owned_by(&shared, "bob").contains(".spec.replicas"));
        let err = apply(Some(&shared), config(json!({"replicas": 5})), "alice");
        assert_eq!(conflicts(err), vec![conflict("bob", ".spec.replicas")]);
        // Alice dropping the shared field leaves it with Bob.
        let dropped = apply(Some(&shared), config(json!({"paused": true})), "alice").unwrap();
        assert_eq!(dropped["spec"]["replicas"], 2);
        assert!(!fields_owned_by(&dropped, "alice").contains(".spec.replicas"));
    }

    #[test]
    fn conflict_with_an_update_manager() {
        let created = update(
            None,
            config(json!({"replicas": 1, "paused": false})),
            "kubectl-create",
            T1,
        );
        let entry_value = entry(&created, "kubectl-create", "Update").unwrap();
        assert_eq!(entry_value["apiVersion"], "apps/v1");
        assert_eq!(entry_value["time"], T1);
        let err = apply(Some(&created), config(json!({"replicas": 3})), "flotilla");
        let found = conflicts(err);
        assert_eq!(
            found,
            vec![Conflict {
                manager:
                    r#"{"manager":"kubectl-create","operation":"Update","apiVersion":"apps/v1"}"#
                        .into(),
                field: ".spec.replicas".into(),
            }]
        );
        assert_eq!(found[0].manager_name(), "kubectl-create");
        assert_eq!(
            conflict_message(&found),
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using apps/v1: .spec.replicas"
        );
        // Forcing takes the field; the updater keeps the rest.
        let forced = apply_at(
            Some(&created),
            config(json!({"replicas": 3})),
            "flotilla",
            true,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(
            fields_owned_by(&forced, "kubectl-create"),
            BTreeSet::from([".spec".to_string(), ".spec.paused".to_string()])
        );
        assert!(fields_owned_by(&forced, "flotilla").contains(".spec.replicas"));
    }

    #[test]
    fn force_moves_ownership_between_appliers() {
        let first = apply(
            None,
            config(json!({"replicas": 2, "paused": false})),
            "alice",
        )
        .unwrap();
        let forced = apply_at(
            Some(&first),
            config(json!({"replicas": 3})),
            "bob",
            true,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(
            fields_owned_by(&forced, "alice"),
            BTreeSet::from([".spec.paused".to_string()])
        );
        assert_eq!(
            fields_owned_by(&forced, "bob"),
            BTreeSet::from([".spec.replicas".to_string()])
        );
        // Alice lost the field, so omitting it no longer removes it.
        let again = apply_at(
            Some(&forced),
            config(json!({"paused": false})),
            "alice",
            false,
            None,
            T3,
        )
        .unwrap();
        assert_eq!(again["spec"]["replicas"], 3);
    }

    #[test]
    fn multiple_conflicts_are_listed_by_manager() {
        let first = apply(None, config(json!({"replicas": 2})), "alice").unwrap();
        let second = apply(Some(&first), config(json!({"paused": false})), "bob").unwrap();
        let err = apply(
            Some(&second),
            config(json!({"replicas": 1, "paused": true})),
            "carol",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\nconflicts with \"bob\":\n- .spec.paused"
        );
    }

    fn with_conditions(conditions: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(), "status": {"conditions": conditions}})
    }

    #[test]
    fn map_list_elements_are_owned_separately() {
        let live = apply(None, config(json!({"replicas": 1})), "owner").unwrap();
        let a = apply_at(
            Some(&live),
            with_conditions(json!([{"type": "Ready", "status": "True"}])),
            "ctrl-a",
            false,
            Some("status"),
            T2,
        )
        .unwrap();
        let b = apply_at(
            Some(&a),
            with_conditions(json!([{"type": "Synced", "status": "True"}])),
            "ctrl-b",
            false,
            Some("status"),
            T2,
        )
        .unwrap();
        assert_eq!(
            b["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}])
        );
        let err = apply_at(
            Some(&b),
            with_conditions(json!([{"type": "Ready", "status": "False"}])),
            "ctrl-b",
            false,
            Some("status"),
            T3,
        );
        let found = conflicts(err);
        assert_eq!(
            found,
            vec![Conflict {
                manager: r#"{"manager":"ctrl-a","operation":"Apply","subresource":"status"}"#
                    .into(),
                field: ".status.conditions[type=\"Ready\"].status".into(),
            }]
        );
        assert_eq!(
            conflict_message(&found),
            "Apply failed with 1 conflict: conflict with \"ctrl-a\" with subresource \"status\": .status.conditions[type=\"Ready\"].status"
        );
        // ctrl-a dropping its condition removes only that element.
        let dropped = apply_at(
            Some(&b),
            with_conditions(json!([])),
            "ctrl-a",
            false,
            Some("status"),
            T3,
        )
        .unwrap();
        assert_eq!(
            dropped["status"]["conditions"],
            json!([{"type": "Synced", "status": "True"}])
        );
        assert!(
            entry(&dropped, "ctrl-a", "Apply").is_none(),
            "an entry with no fields is dropped"
        );
        assert_eq!(dropped["spec"]["replicas"], 1);
    }

    #[test]
    fn map_list_merge_order_follows_structured_merge_diff() {
        let live = config(json!({"template": {"spec": {"containers": [
            {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}
        ]}}}));
        let merged = apply(
            Some(&live),
            config(json!({"template": {"spec": {"containers": [{"name": "c", "image": "c2"}, {"name": "a", "image": "a"}]}}})),
            "flotilla",
        )
        .unwrap();
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "a"]);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][1]["image"],
            "c2"
        );
    }

    #[test]
    fn map_list_keys_use_defaults() {
        let first = apply(
            None,
            config(json!({"template": {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}]}]}}})),
            "flotilla",
        )
        .unwrap();
        // The apiserver defaulted the protocol.
        let mut live = first.clone();
        live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = json!("TCP");
        let second = apply_at(
            Some(&live),
            config(json!({"template": {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}]}]}}})),
            "flotilla",
            false,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn omitted_map_list_element_is_removed_unless_another_applier_owns_it() {
        let first = apply(
            None,
            config(json!({"template": {"spec": {"containers": [
                {"name": "app", "image": "a:1"}, {"name": "sidecar", "image": "s:1"}
            ]}}})),
            "flotilla",
        )
        .unwrap();
        // `kubectl set image` on the sidecar (an Update).
        let mut edited = first.clone();
        edited["spec"]["template"]["spec"]["containers"][1]["image"] = json!("s:2");
        let edited = update(Some(&first), edited, "kubectl-set", T2);
        assert_eq!(
            fields_owned_by(&edited, "kubectl-set"),
            BTreeSet::from([".spec.template.spec.containers[name=\"sidecar\"].image".to_string()])
        );
        let applied = apply_at(
            Some(&edited),
            config(
                json!({"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}),
            ),
            "flotilla",
            false,
            None,
            T3,
        )
        .unwrap();
        // As in structured-merge-diff, the element goes whole: kubectl-set owns a field inside
        // it, not the element.
        assert_eq!(
            applied["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "a:1"}])
        );
        assert!(entry(&applied, "kubectl-set", "Update").is_none());
        // Another applier owning the element keeps it, minus the fields only flotilla owned.
        let shared = apply_at(
            Some(&first),
            config(json!({"template": {"spec": {"containers": [{"name": "sidecar", "resources": {}}]}}})),
            "other",
            false,
            None,
            T2,
        )
        .unwrap();
        let kept = apply_at(
            Some(&shared),
            config(
                json!({"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}),
            ),
            "flotilla",
            false,
            None,
            T3,
        )
        .unwrap();
        assert_eq!(
            kept["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "a:1"}, {"name": "sidecar", "resources": {}}])
        );
        let lone = apply_at(
            Some(&first),
            config(
                json!({"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}),
            ),
            "flotilla",
            false,
            None,
            T3,
        )
        .unwrap();
        assert_eq!(
            lone["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "a:1"}])
        );
    }

    fn with_finalizers(finalizers: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default", "finalizers": finalizers}})
    }

    #[test]
    fn set_list_finalizers() {
        let a = apply(None, with_finalizers(json!(["a.dev/x"])), "a").unwrap();
        let b = apply(Some(&a), with_finalizers(json!(["b.dev/y"])), "b").unwrap();
        assert_eq!(b["metadata"]["finalizers"], json!(["a.dev/x", "b.dev/y"]));
        assert_eq!(
            fields_owned_by(&b, "b"),
            BTreeSet::from([".metadata.finalizers[=\"b.dev/y\"]".to_string()])
        );
        assert_eq!(
            entry(&b, "b", "Apply").unwrap()["fieldsV1"],
            json!({"f:metadata": {"f:finalizers": {"v:\"b.dev/y\"": {}}}})
        );
        let removed = apply(Some(&b), with_finalizers(json!([])), "a").unwrap();
        assert_eq!(removed["metadata"]["finalizers"], json!(["b.dev/y"]));
        let err = apply(Some(&b), with_finalizers(json!(["x", "x"])), "a").unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate entries for key [=\"x\"]"),
            "{err}"
        );
    }

    #[test]
    fn status_subresource_entries_are_separate_and_sorted() {
        let main = apply_at(
            None,
            config(json!({"replicas": 1})),
            "flotilla",
            false,
            None,
            T2,
        )
        .unwrap();
        let status = apply_at(
            Some(&main),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(), "status": {"replicas": 1}}),
            "flotilla",
            false,
            Some("status"),
            T1,
        )
        .unwrap();
        let entries = managed(&status);
        assert_eq!(entries.len(), 2);
        // Same operation: ordered by time.
        assert_eq!(entries[0]["subresource"], "status");
        assert_eq!(
            entries[0]["fieldsV1"],
            json!({"f:status": {"f:replicas": {}}})
        );
        assert!(entries[1].get("subresource").is_none());
        assert_eq!(
            entries[1]["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        // Apply entries come before Update entries.
        let updated = update(
            Some(&status),
            {
                let mut s = without_managed_fields(&status);
                s["spec"]["paused"] = json!(true);
                s
            },
            "kubectl",
            T1,
        );
        let operations: Vec<&str> = managed(&updated)
            .iter()
            .map(|e| e["operation"].as_str().unwrap())
            .collect();
        assert_eq!(operations, ["Apply", "Apply", "Update"]);
    }

    #[test]
    fn invalid_apply_configurations() {
        let mut with_mf = config(json!({}));
        with_mf["metadata"]["managedFields"] = json!([]);
        assert_eq!(
            apply(None, with_mf, "m").unwrap_err(),
            ApplyError::Invalid("metadata.managedFields must be nil".into())
        );
        let live = apply(None, config(json!({"replicas": 1})), "m").unwrap();
        let mut other_version = config(json!({}));
        other_version["apiVersion"] = json!("apps/v1beta1");
        assert_eq!(
            apply(Some(&live), other_version, "m").unwrap_err(),
            ApplyError::Invalid(
                "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1".into()
            )
        );
        let missing_key = config(json!({"template": {"spec": {"containers": [{"image": "x"}]}}}));
        let err = apply(None, missing_key, "m").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)"
        );
        let duplicate =
            config(json!({"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}));
        let err = apply(None, duplicate, "m").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".spec.template.spec.containers: duplicate entries for key [name=\"a\"]"
        );
        assert!(matches!(
            apply(None, json!([1]), "m"),
            Err(ApplyError::Invalid(_))
        ));
    }

    #[test]
    fn apply_null_sets_null_and_owns_the_field() {
        let first = update(
            None,
            config(json!({"replicas": 2, "paused": true})),
            "kubectl",
            T1,
        );
        let applied = apply_at(
            Some(&first),
            config(json!({"paused": null})),
            "flotilla",
            true,
            None,
            T2,
        )
        .unwrap();
        // The null stays for the store to default, reject or drop (see `store`).
        assert_eq!(applied["spec"].get("paused"), Some(&Value::Null));
        assert!(fields_owned_by(&applied, "flotilla").contains(".spec.paused"));
        assert!(!fields_owned_by(&applied, "kubectl").contains(".spec.paused"));
    }

    #[test]
    fn apply_null_leaves_a_granular_map_and_an_associative_list_as_they_are() {
        let first = apply(
            None,
            config(json!({
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "app", "image": "a"}]}}
            })),
            "kubectl",
        )
        .unwrap();
        let applied = apply_at(
            Some(&first),
            config(json!({
                "template": {"metadata": {"labels": null}, "spec": {"containers": null}},
                "paused": null
            })),
            "flotilla",
            false,
            None,
            T2,
        )
        .unwrap();
        assert_eq!(applied["spec"]["template"], first["spec"]["template"]);
        assert_eq!(applied["spec"]["paused"], Value::Null);
    }

    #[test]
    fn atomic_lists_and_maps_are_owned_whole() {
        let first = apply(
            None,
            config(json!({
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "app", "args": ["--a", "--b"]}]}}
            })),
            "flotilla",
        )
        .unwrap();
        let owned = fields_owned_by(&first, "flotilla");
        assert!(owned.contains(".spec.selector"));
        assert!(!owned.iter().any(|f| f.starts_with(".spec.selector.")));
        assert!(owned.contains(".spec.template.spec.containers[name=\"app\"].args"));
        // Replacing an atomic map replaces it whole instead of merging.
        let second = apply(
            Some(&first),
            config(json!({"selector": {"matchExpressions": []}, "template": {"spec": {"containers": [{"name": "app", "args": ["--c"]}]}}})),
            "flotilla",
        )
        .unwrap();
        assert_eq!(second["spec"]["selector"], json!({"matchExpressions": []}));
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["--c"])
        );
    }

    #[test]
    fn record_update_on_create_owns_everything_written() {
        let mut desired = config(
            json!({"replicas": 1, "template": {"spec": {"containers": [{"name": "app", "image": "a"}]}}}),
        );
        desired["metadata"]["labels"] = json!({"app": "web"});
        let created = update(None, desired, "kubectl-create", T1);
        assert_eq!(
            entry(&created, "kubectl-create", "Update").unwrap()["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    ".": {},
                    "f:replicas": {},
                    "f:template": {
                        ".": {},
                        "f:spec": {
                            ".": {},
                            "f:containers": {".": {}, "k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}
                        }
                    }
                }
            })
        );
    }

    #[test]
    fn record_update_moves_changed_fields_and_keeps_unchanged_entries() {
        let applied = apply(
            None,
            config(json!({"replicas": 1, "paused": false})),
            "flotilla",
        )
        .unwrap();
        let mut edited = applied.clone();
        edited["spec"]["replicas"] = json!(4);
        let edited = update(Some(&applied), edited, "kubectl-edit", T2);
        assert_eq!(
            fields_owned_by(&edited, "flotilla"),
            BTreeSet::from([".spec.paused".to_string()])
        );
        assert_eq!(
            fields_owned_by(&edited, "kubectl-edit"),
            BTreeSet::from([".spec.replicas".to_string()])
        );
        // A write that changes nothing leaves managedFields (and their times) alone.
        let same = update(Some(&edited), edited.clone(), "kubectl-edit", T3);
        assert_eq!(same, edited);
        // A client that sends no managedFields does not erase them.
        let blind = update(
            Some(&edited),
            without_managed_fields(&edited),
            "kube-rs",
            T3,
        );
        assert_eq!(blind, edited);
        // Removing a field removes it from every set.
        let mut removed = edited.clone();
        removed["spec"].as_object_mut().unwrap().remove("paused");
        let removed = update(Some(&edited), removed, "kubectl-edit", T3);
        assert!(entry(&removed, "flotilla", "Apply").is_none());
        // A later update by the same manager merges into its entry.
        let mut more = removed.clone();
        more["spec"]["minReadySeconds"] = json!(5);
        let more = update(Some(&removed), more, "kubectl-edit", T3);
        assert_eq!(
            fields_owned_by(&more, "kubectl-edit"),
            BTreeSet::from([
                ".spec.minReadySeconds".to_string(),
                ".spec.replicas".to_string()
            ])
        );
        assert_eq!(managed(&more).len(), 1);
        assert_eq!(managed(&more)[0]["time"], T3);
    }

    #[test]
    fn record_update_can_reset_managed_fields() {
        let applied = apply(None, config(json!({"replicas": 1})), "flotilla").unwrap();
        let mut reset = applied.clone();
        reset["metadata"]["managedFields"] = json!([{}]);
        let reset = update(Some(&applied), reset, "kubectl", T2);
        assert!(reset["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn record_update_on_status_subresource() {
        let live = apply(None, config(json!({"replicas": 1})), "flotilla").unwrap();
        let mut new = live.clone();
        new["status"] = json!({"readyReplicas": 1});
        record_update(
            Some(&live),
            &mut new,
            "controller",
            Some("status"),
            &*deployment_lists(),
            T2,
        );
        let entry = entry(&new, "controller", "Update").unwrap();
        assert_eq!(entry["subresource"], "status");
        assert_eq!(
            entry["fieldsV1"],
            json!({"f:status": {".": {}, "f:readyReplicas": {}}})
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let fields = json!({
            "f:metadata": {"f:finalizers": {".": {}, "v:\"a\"": {}}},
            "f:spec": {"f:items": {"i:0": {}}, "f:list": {"k:{\"a\":1,\"b\":\"x\"}": {".": {}, "f:c": {}}}}
        });
        let set = FieldSet::from_fields_v1(&fields).unwrap();
        assert_eq!(set.to_fields_v1(), fields);
        // Key objects are canonicalised (sorted keys, compact).
        let loose = json!({"f:spec": {"f:list": {"k:{\"b\": \"x\", \"a\": 1}": {}}}});
        assert_eq!(
            FieldSet::from_fields_v1(&loose).unwrap().to_fields_v1(),
            json!({"f:spec": {"f:list": {"k:{\"a\":1,\"b\":\"x\"}": {}}}})
        );
        assert!(FieldSet::from_fields_v1(&json!({"x:bad": {}})).is_err());
    }

    mod properties {
        use super::*;
        use proptest::collection::{btree_map, btree_set, vec};
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(str::to_string)
        }

        fn container() -> impl Strategy<Value = (String, Value)> {
            (
                name(),
                proptest::option::of("[a-z]{1,3}:[0-9]"),
                proptest::option::of(btree_map(name(), "[0-9]", 1..3)),
            )
                .prop_map(|(name, image, env)| {
                    let mut c = json!({"name": name});
                    if let Some(image) = image {
                        c["image"] = json!(image);
                    }
                    if let Some(env) = env {
                        c["env"] = env
                            .into_iter()
                            .map(|(n, v)| json!({"name": n, "value": v}))
                            .collect();
                    }
                    (name, c)
                })
        }

        /// Deployment apply configurations over a small field space, so that successive
        /// configurations overlap: labels, replicas, finalizers (a set), containers (a map
        /// list) with env (a nested map list).
        fn deployment_config() -> impl Strategy<Value = Value> {
            (
                proptest::option::of(btree_map(name(), "[a-z]{1,2}", 1..3)),
                proptest::option::of(0..5i64),
                proptest::option::of(btree_set(name(), 1..3)),
                proptest::option::of(vec(container(), 1..4)),
            )
                .prop_map(|(labels, replicas, finalizers, containers)| {
                    let mut c = config(json!({}));
                    if let Some(labels) = labels {
                        c["metadata"]["labels"] = json!(labels);
                    }
                    if let Some(finalizers) = finalizers {
                        c["metadata"]["finalizers"] = json!(finalizers);
                    }
                    if let Some(replicas) = replicas {
                        c["spec"]["replicas"] = json!(replicas);
                    }
                    if let Some(containers) = containers {
                        let mut seen = BTreeSet::new();
                        let unique: Vec<Value> = containers
                            .into_iter()
                            .filter(|(n, _)| seen.insert(n.clone()))
                            .map(|(_, c)| c)
                            .collect();
                        c["spec"]["template"] = json!({"spec": {"containers": unique}});
                    }
                    c
                })
        }

        fn owned(object: &Value) -> Value {
            managed(object)[0]["fieldsV1"].clone()
        }

        proptest! {
            #[test]
            fn apply_is_idempotent_and_history_free(first in deployment_config(), second in deployment_config()) {
                let created = apply_at(None, first.clone(), "m", false, None, T1).unwrap();
                prop_assert_eq!(without_managed_fields(&created), first.clone());
                let again = apply_at(Some(&created), first, "m", false, None, T2).unwrap();
                prop_assert_eq!(&again, &created);
                // With a single manager, where the object came from does not matter.
                let moved = apply_at(Some(&created), second.clone(), "m", false, None, T2).unwrap();
                let fresh = apply_at(None, second, "m", false, None, T2).unwrap();
                prop_assert_eq!(without_managed_fields(&moved), without_managed_fields(&fresh));
                if fresh["metadata"].get("managedFields").is_some() {
                    prop_assert_eq!(owned(&moved), owned(&fresh));
                }
            }
        }
    }

    #[test]
    fn corrupt_managed_fields_are_reset() {
        let mut live = config(json!({"replicas": 1}));
        live["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Frobnicate", "fieldsType": "FieldsV1", "fieldsV1": {}}]);
        let applied = apply(Some(&live), config(json!({"replicas": 2})), "flotilla").unwrap();
        assert_eq!(managed(&applied).len(), 1);
        assert_eq!(managed(&applied)[0]["manager"], "flotilla");
    }
}
