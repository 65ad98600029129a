//! The three PATCH formats of the apiserver: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902) and Kubernetes strategic merge patch.
//!
//! Merge patch and JSON patch come from the `json-patch` crate. Strategic merge patch is
//! written here by hand: no maintained Rust crate implements it. It follows the behaviour of
//! k8s.io/apimachinery `strategicpatch.StrategicMergeMapPatch` (the server side of
//! `kubectl patch`/`kubectl apply`/`kubectl edit`), with list strategies taken from
//! [`ListTypes::patch_strategy`] instead of Go struct tags:
//! <https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md>.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::list_type::{ListType, ListTypes};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document itself is malformed (the apiserver answers 400 BadRequest).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well-formed but does not apply to this object, e.g. a failed JSON patch
    /// `test` or a missing path (the apiserver answers 422 Unprocessable Entity).
    #[error("{0}")]
    Unprocessable(String),
}

impl PatchError {
    pub fn message(&self) -> &str {
        match self {
            PatchError::Malformed(m) | PatchError::Unprocessable(m) => m,
        }
    }
}

/// JSON merge patch (RFC 7386): objects merge recursively, `null` deletes, everything else —
/// lists included — replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// JSON patch (RFC 6902), all operations including `test`. The patch applies atomically: on
/// any failure `target` is left unchanged.
///
/// Like the apiserver's JSON patch library, a `test` for `null` passes when the path is absent
/// (its parent existing): clients rely on it, e.g. kube-runtime's finalizer helper tests
/// `/metadata/finalizers` against `null` before adding the first finalizer.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            json_kind(patch)
        )));
    };
    let parsed: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
    let mut doc = target.clone();
    for (index, operation) in parsed.0.iter().enumerate() {
        if let json_patch::PatchOperation::Test(test) = operation
            && test.value.is_null()
            && doc.pointer(test.path.as_str()).is_none()
        {
            let parent_exists = test
                .path
                .parent()
                .and_then(|parent| doc.pointer(parent.as_str()))
                .is_some_and(|parent| parent.is_object() || parent.is_array());
            if parent_exists {
                continue;
            }
            return Err(PatchError::Unprocessable(format!(
                "test operation does not apply: is missing path: {}",
                test.path.as_str()
            )));
        }
        json_patch::patch(&mut doc, std::slice::from_ref(operation))
            .map_err(|e| operation_error(&e, &operations[index]))?;
    }
    *target = doc;
    Ok(())
}

/// The apiserver's wording for a JSON patch operation that does not apply.
fn operation_error(error: &json_patch::PatchError, operation: &Value) -> PatchError {
    let op = operation
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let path = error.path.as_str();
    let message = match error.kind {
        json_patch::PatchErrorKind::TestFailed => {
            format!("testing value {path} failed: test failed")
        }
        json_patch::PatchErrorKind::InvalidFromPointer => {
            let from = operation
                .get("from")
                .and_then(Value::as_str)
                .unwrap_or_default();
            format!(
                "{op} operation does not apply: doc is missing from path: \"{from}\": missing value"
            )
        }
        json_patch::PatchErrorKind::CannotMoveInsideItself => {
            format!("{op} operation does not apply: cannot move {path} inside itself")
        }
        _ => {
            format!("{op} operation does not apply: doc is missing path: \"{path}\": missing value")
        }
    };
    PatchError::Unprocessable(message)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Strategic merge patch: maps merge recursively and `null` deletes; lists merge per
/// [`ListTypes::patch_strategy`] (a map list merges element by element on its key, a set
/// unions, an atomic list is replaced); the directives `$patch: replace|delete|merge`,
/// `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` are
/// honoured. Element order follows the apiserver: patched elements in patch order, the others
/// kept in their place where possible. On error `target` is left unchanged.
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    lists: &dyn ListTypes,
) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed("invalid JSON document".into()));
    };
    let mut result = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut path = Vec::new();
    match map_directive(patch)? {
        MapDirective::Replace => result = materialize_map(patch, &mut path, lists)?,
        MapDirective::Delete => result = Map::new(),
        MapDirective::Merge => merge_map(&mut result, patch, &mut path, lists)?,
    }
    *target = Value::Object(result);
    Ok(())
}

/// What a `$patch` key asks of the map that holds it.
enum MapDirective {
    Merge,
    Replace,
    Delete,
}

fn map_directive(patch: &Map<String, Value>) -> Result<MapDirective, PatchError> {
    match patch.get(DIRECTIVE) {
        None => Ok(MapDirective::Merge),
        Some(Value::String(s)) if s == "replace" => Ok(MapDirective::Replace),
        Some(Value::String(s)) if s == "delete" => Ok(MapDirective::Delete),
        Some(other) => Err(PatchError::Malformed(format!(
            "unknown patch type: {} in map: {}",
            display_scalar(other),
            Value::Object(patch.clone())
        ))),
    }
}

fn display_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Borrowed field-name path for [`ListTypes`] lookups.
fn path_refs(path: &[String]) -> Vec<&str> {
    path.iter().map(String::as_str).collect()
}

/// Merges `patch` into `original` (`mergeMap`): `$retainKeys` first, then `$setElementOrder`
/// lists, then `$deleteFromPrimitiveList` lists, then the fields.
fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<(), PatchError> {
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        apply_retain_keys(original, patch, retain)?;
    }

    let mut ordered_fields = BTreeSet::new();
    for (key, order) in patch {
        let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) else {
            continue;
        };
        if field.is_empty() {
            return Err(bad_set_element_order());
        }
        path.push(field.to_string());
        let ordered =
            apply_set_element_order(original.get(field), patch.get(field), order, path, lists);
        path.pop();
        if let Some(list) = ordered? {
            original.insert(field.to_string(), Value::Array(list));
        }
        ordered_fields.insert(field);
    }

    for (key, values) in patch {
        let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) else {
            continue;
        };
        let (false, Value::Array(to_delete)) = (field.is_empty(), values) else {
            return Err(PatchError::Malformed(
                "invalid patch format of primitive list".into(),
            ));
        };
        // Deleting from a list the object does not have is a no-op.
        if let Some(Value::Array(items)) = original.get_mut(field) {
            items.retain(|item| !to_delete.contains(item));
        }
    }

    for (key, value) in patch {
        if key.starts_with('$') || ordered_fields.contains(key.as_str()) {
            continue;
        }
        if value.is_null() {
            original.remove(key);
            continue;
        }
        path.push(key.clone());
        let merged = match original.get_mut(key) {
            Some(existing) => merge_value(existing, value, path, lists).map(|keep| (keep, None)),
            None => materialize(value, path, lists).map(|v| (v.is_some(), v)),
        };
        path.pop();
        match merged? {
            (false, _) => {
                original.remove(key);
            }
            (true, Some(new)) => {
                original.insert(key.clone(), new);
            }
            (true, None) => {}
        }
    }
    Ok(())
}

/// Merges `patch` into `original` in place; returns false when the field must be removed.
fn merge_value(
    original: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<bool, PatchError> {
    match (&mut *original, patch) {
        (Value::Object(o), Value::Object(p)) => match map_directive(p)? {
            MapDirective::Merge => merge_map(o, p, path, lists).map(|()| true),
            MapDirective::Replace => {
                *o = materialize_map(p, path, lists)?;
                Ok(true)
            }
            // As upstream, `$patch: delete` on a nested map leaves it empty.
            MapDirective::Delete => {
                o.clear();
                Ok(true)
            }
        },
        (Value::Array(o), Value::Array(p)) => {
            let strategy = lists.patch_strategy(&path_refs(path));
            merge_list(o, p, &strategy, path, lists)?;
            Ok(true)
        }
        _ => match materialize(patch, path, lists)? {
            Some(value) => {
                *original = value;
                Ok(true)
            }
            None => Ok(false),
        },
    }
}

/// The value a patch produces where the object has nothing to merge it into: directives are
/// resolved and `null`s dropped, as decoding the upstream result into a typed object does.
/// `None` when the patch removes the field (`null`).
fn materialize(
    patch: &Value,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(p) => match map_directive(p)? {
            MapDirective::Delete => Ok(Some(Value::Object(Map::new()))),
            _ => Ok(Some(Value::Object(materialize_map(p, path, lists)?))),
        },
        Value::Array(p) => {
            let mut strategy = lists.patch_strategy(&path_refs(path));
            // Upstream takes a new list as sent, without requiring merge keys.
            let identity = ElementIdentity::new(&strategy, path, lists);
            if p.iter()
                .any(|item| item.is_object() && identity.key_of(item).iter().any(Option::is_none))
            {
                strategy = ListType::Atomic;
            }
            let mut list = Vec::new();
            merge_list(&mut list, p, &strategy, path, lists)?;
            Ok(Some(Value::Array(list)))
        }
        scalar => Ok(Some(scalar.clone())),
    }
}

fn materialize_map(
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<Map<String, Value>, PatchError> {
    let mut without_directive = patch.clone();
    without_directive.remove(DIRECTIVE);
    let mut result = Map::new();
    merge_map(&mut result, &without_directive, path, lists)?;
    Ok(result)
}

/// `$retainKeys`: clears every field of `original` not listed; the patch may only set listed
/// fields.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Result<(), PatchError> {
    let bad = || PatchError::Malformed("invalid patch format of retainKeys".into());
    let Value::Array(keys) = retain else {
        return Err(bad());
    };
    let keys: BTreeSet<&str> = keys
        .iter()
        .map(|k| k.as_str().ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    for (key, value) in patch {
        if value.is_null() || key.starts_with('$') {
            continue;
        }
        if !keys.contains(key.as_str()) {
            return Err(bad());
        }
    }
    original.retain(|key, _| keys.contains(key.as_str()));
    Ok(())
}

fn bad_set_element_order() -> PatchError {
    PatchError::Malformed("invalid patch format of setElementOrder list".into())
}

/// `$setElementOrder/<field>`: merges the field's list (if the patch has one) and orders the
/// result: listed elements in the directive's order, the others where they were.
fn apply_set_element_order(
    original: Option<&Value>,
    patch_list: Option<&Value>,
    order: &Value,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<Option<Vec<Value>>, PatchError> {
    let Value::Array(order) = order else {
        return Err(bad_set_element_order());
    };
    let original = match original {
        None => None,
        Some(Value::Array(items)) => Some(items),
        Some(other) => {
            return Err(PatchError::Unprocessable(format!(
                "expected a []interface {{}}, but received a {}",
                json_kind(other)
            )));
        }
    };
    let patch_list = match patch_list {
        None => None,
        Some(Value::Array(items)) => Some(items),
        Some(_) => return Err(bad_set_element_order()),
    };
    let strategy = lists.patch_strategy(&path_refs(path));
    let identity = ElementIdentity::new(&strategy, path, lists);
    if let Some(patch_list) = patch_list {
        validate_order(patch_list, order, &identity)?;
    }
    let merged = match (original, patch_list) {
        (None, None) => return Ok(None),
        (Some(original), None) => original.clone(),
        (None, Some(patch_list)) => {
            let mut list = Vec::new();
            merge_list(&mut list, patch_list, &strategy, path, lists)?;
            list
        }
        (Some(original), Some(patch_list)) => {
            let mut list = original.clone();
            merge_list(&mut list, patch_list, &strategy, path, lists)?;
            list
        }
    };
    let server_order = original.cloned().unwrap_or_default();
    let (listed, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|item| identity.position(order, item).is_some());
    let listed = sort_by_order(listed, order, &identity);
    let server_only = sort_by_order(server_only, &server_order, &identity);
    Ok(Some(merge_sorted(
        server_only,
        listed,
        &server_order,
        &identity,
    )))
}

/// The patch list must be a subsequence of the `$setElementOrder` list (deletions aside).
fn validate_order(
    patch_list: &[Value],
    order: &[Value],
    identity: &ElementIdentity,
) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch_list
        .iter()
        .filter(|item| !item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)))
        .collect();
    let mut next = 0;
    for wanted in order {
        if next < items.len() && identity.same(items[next], wanted) {
            next += 1;
        }
    }
    if next < items.len() {
        return Err(PatchError::Unprocessable(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

/// How list elements are identified: by merge key values for map lists, by value otherwise.
struct ElementIdentity {
    keys: Vec<(String, Option<Value>)>,
}

impl ElementIdentity {
    fn new(strategy: &ListType, path: &[String], lists: &dyn ListTypes) -> Self {
        let refs = path_refs(path);
        let keys = match strategy {
            ListType::Map(keys) => keys
                .iter()
                .map(|k| (k.clone(), lists.map_key_default(&refs, k)))
                .collect(),
            _ => Vec::new(),
        };
        Self { keys }
    }

    /// The merge key values of a map element (`None` where missing and not defaulted).
    fn key_of<'a>(&'a self, item: &'a Value) -> Vec<Option<&'a Value>> {
        self.keys
            .iter()
            .map(|(k, default)| item.get(k).or(default.as_ref()))
            .collect()
    }

    fn same(&self, a: &Value, b: &Value) -> bool {
        if self.keys.is_empty() || !a.is_object() || !b.is_object() {
            return a == b;
        }
        let (ka, kb) = (self.key_of(a), self.key_of(b));
        ka.iter().all(Option::is_some) && ka == kb
    }

    fn position(&self, list: &[Value], item: &Value) -> Option<usize> {
        list.iter().position(|candidate| self.same(candidate, item))
    }
}

/// Stable sort of `items` by their position in `order` (items not in it keep their place at
/// the end).
fn sort_by_order(items: Vec<Value>, order: &[Value], identity: &ElementIdentity) -> Vec<Value> {
    let mut keyed: Vec<(usize, Value)> = items
        .into_iter()
        .map(|item| (identity.position(order, &item).unwrap_or(usize::MAX), item))
        .collect();
    keyed.sort_by_key(|(position, _)| *position);
    keyed.into_iter().map(|(_, item)| item).collect()
}

/// `mergeSortedSlice`: interleaves server-only elements (`left`) into the patched ones
/// (`right`), both already ordered, using their positions in the live list; a patched element
/// that was not in the live list goes before the server-only elements still waiting.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    identity: &ElementIdentity,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let before = match (
                    identity.position(server_order, l),
                    identity.position(server_order, r),
                ) {
                    (Some(li), Some(ri)) => li < ri,
                    _ => false,
                };
                let next = if before { left.next() } else { right.next() };
                out.extend(next);
            }
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (None, None) => return out,
        }
    }
}

/// The JSON kinds of the elements of both lists, which must agree for a merge.
fn element_kind(original: &[Value], patch: &[Value]) -> Result<Option<&'static str>, PatchError> {
    let mut kind = None;
    for item in original.iter().chain(patch) {
        let this = json_kind(item);
        if this == "array" {
            return Err(PatchError::Unprocessable(
                "lists of lists are not supported".into(),
            ));
        }
        match kind {
            None => kind = Some(this),
            Some(k) if k != this => {
                return Err(PatchError::Unprocessable(format!(
                    "list element types are not identical: {} {}",
                    Value::Array(original.to_vec()),
                    Value::Array(patch.to_vec())
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Merges a patch list into `original` (`mergeSliceHandler`).
fn merge_list(
    original: &mut Vec<Value>,
    patch: &[Value],
    strategy: &ListType,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<(), PatchError> {
    if *strategy == ListType::Atomic {
        // Replace; directive-only elements (`$patch: replace`) are not data.
        let mut replaced = Vec::with_capacity(patch.len());
        for item in patch {
            if item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)) {
                continue;
            }
            replaced.extend(materialize(item, path, lists)?);
        }
        *original = replaced;
        return Ok(());
    }
    if original.is_empty() && patch.is_empty() {
        return Ok(());
    }
    let identity = ElementIdentity::new(strategy, path, lists);
    let server_order = original.clone();
    match element_kind(original, patch)? {
        Some("object") => {
            if identity.keys.is_empty() {
                return Err(PatchError::Unprocessable(
                    "cannot merge lists without merge key for type map".into(),
                ));
            }
            let items = merge_map_elements(original, patch, &identity, path, lists)?;
            // With `$patch: replace` the patch list is the result, in its own order.
            let Some(patch_items) = items else {
                return Ok(());
            };
            let (patched, server_only): (Vec<Value>, Vec<Value>) = std::mem::take(original)
                .into_iter()
                .partition(|item| identity.position(&patch_items, item).is_some());
            let patched = sort_by_order(patched, &patch_items, &identity);
            let server_only = sort_by_order(server_only, &server_order, &identity);
            *original = merge_sorted(server_only, patched, &server_order, &identity);
        }
        _ => {
            // A list of scalars with merge strategy is an ordered set: union, deduplicated.
            let scalars = ElementIdentity { keys: Vec::new() };
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(patch) {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            let (patched, server_only): (Vec<Value>, Vec<Value>) =
                merged.into_iter().partition(|item| patch.contains(item));
            let patched = sort_by_order(patched, patch, &scalars);
            let server_only = sort_by_order(server_only, &server_order, &scalars);
            *original = merge_sorted(server_only, patched, &server_order, &scalars);
        }
    }
    Ok(())
}

/// Merges the elements of a map list by key. Returns the patch's data elements (for ordering),
/// or `None` when a `$patch: replace` element made the patch list the whole result.
fn merge_map_elements(
    original: &mut Vec<Value>,
    patch: &[Value],
    identity: &ElementIdentity,
    path: &mut Vec<String>,
    lists: &dyn ListTypes,
) -> Result<Option<Vec<Value>>, PatchError> {
    let missing_key = |item: &Value| {
        let key = identity
            .keys
            .iter()
            .find(|(k, default)| item.get(k).is_none() && default.is_none())
            .map(|(k, _)| k.as_str())
            .unwrap_or_default();
        PatchError::Unprocessable(format!(
            "map: {item} does not contain declared merge key: {key}"
        ))
    };
    let mut replace = false;
    let mut data = Vec::new();
    for item in patch {
        let Value::Object(element) = item else {
            continue;
        };
        match element.get(DIRECTIVE) {
            None => data.push(item.clone()),
            Some(Value::String(d)) if d == "delete" => {
                if identity.key_of(item).iter().any(Option::is_none) {
                    return Err(missing_key(item));
                }
                original.retain(|candidate| !identity.same(candidate, item));
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => {
                return Err(PatchError::Unprocessable(
                    "merging lists cannot yet be specified in the patch".into(),
                ));
            }
            Some(other) => {
                return Err(PatchError::Malformed(format!(
                    "unknown patch type: {} in map: {item}",
                    display_scalar(other)
                )));
            }
        }
    }
    if replace {
        let mut replaced = Vec::with_capacity(data.len());
        for item in &data {
            replaced.extend(materialize(item, path, lists)?);
        }
        *original = replaced;
        return Ok(None);
    }
    for item in &data {
        if identity.key_of(item).iter().any(Option::is_none) {
            return Err(missing_key(item));
        }
        let Value::Object(element) = item else {
            continue;
        };
        match original
            .iter_mut()
            .find(|candidate| identity.same(candidate, item))
        {
            Some(Value::Object(existing)) => merge_map(existing, element, path, lists)?,
            _ => original.extend(materialize(item, path, lists)?),
        }
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list_type::builtin_list_types;
    use serde_json::json;

    /// The lists of upstream's `MergeItem` test type: `mergingList` merges by `name`,
    /// `mergingIntList` is a set, the rest atomic.
    struct MergeItem;
    impl ListTypes for MergeItem {
        fn list_type(&self, path: &[&str]) -> ListType {
            match path.last() {
                Some(&"mergingList") | Some(&"retainKeysMergingList") => {
                    ListType::Map(vec!["name".into()])
                }
                Some(&"mergingIntList") => ListType::Set,
                _ => ListType::Atomic,
            }
        }
    }

    fn smp(original: Value, patch: Value) -> Result<Value, PatchError> {
        let mut target = original;
        strategic_merge_patch(&mut target, &patch, &MergeItem)?;
        Ok(target)
    }

    fn assert_smp(original: Value, patch: Value, expected: Value) {
        let result = smp(original.clone(), patch.clone()).unwrap();
        assert_eq!(result, expected, "patching {original} with {patch}");
    }

    #[test]
    fn merge_patch_is_rfc_7386() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "list": [1, 2], "keep": true});
        merge_patch(&mut doc, &json!({"a": {"b": null, "d": 3}, "list": [3]}));
        assert_eq!(
            doc,
            json!({"a": {"c": 2, "d": 3}, "list": [3], "keep": true})
        );
    }

    #[test]
    fn json_patch_applies_all_operations() {
        let mut doc =
            json!({"spec": {"replicas": 1, "tags": ["a"]}, "metadata": {"labels": {"x": "1"}}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/tags/-", "value": "b"},
                {"op": "remove", "path": "/metadata/labels/x"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copied"},
                {"op": "move", "from": "/spec/copied", "path": "/spec/moved"},
                {"op": "add", "path": "/metadata/labels/a~1b", "value": "slash"}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"replicas": 3, "tags": ["a", "b"], "moved": 3}, "metadata": {"labels": {"a/b": "slash"}}})
        );
    }

    #[test]
    fn json_patch_failed_test_leaves_the_object_unchanged() {
        let original = json!({"spec": {"replicas": 1}});
        let mut doc = original.clone();
        let err = json_patch(
            &mut doc,
            &json!([
                {"op": "replace", "path": "/spec/replicas", "value": 5},
                {"op": "test", "path": "/spec/replicas", "value": 2}
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::Unprocessable("testing value /spec/replicas failed: test failed".into())
        );
        assert_eq!(doc, original);
    }

    #[test]
    fn json_patch_test_null_passes_for_an_absent_field() {
        // kube-runtime's finalizer helper, adding the first finalizer.
        let mut doc = json!({"metadata": {"name": "gold"}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["flotilla.dev/cleanup"]}
            ]),
        )
        .unwrap();
        assert_eq!(
            doc["metadata"]["finalizers"],
            json!(["flotilla.dev/cleanup"])
        );
        // Now present, so the same guard fails: someone else added a finalizer first.
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "testing value /metadata/finalizers failed: test failed"
        );
        // The parent must exist.
        let err = json_patch(
            &mut doc,
            &json!([{"op": "test", "path": "/spec/x", "value": null}]),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "test operation does not apply: is missing path: /spec/x"
        );
    }

    #[test]
    fn json_patch_errors() {
        let mut doc = json!({"spec": {}});
        let err = json_patch(
            &mut doc,
            &json!([{"op": "remove", "path": "/spec/missing"}]),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "remove operation does not apply: doc is missing path: \"/spec/missing\": missing value"
        );
        assert!(matches!(err, PatchError::Unprocessable(_)));
        let err = json_patch(&mut doc, &json!({"op": "add"})).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err:?}");
        let err = json_patch(&mut doc, &json!([{"op": "frobnicate", "path": "/x"}])).unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn smp_maps_merge_and_null_deletes() {
        assert_smp(
            json!({"name": 1, "simpleMap": {"key1": 1, "key2": 1}}),
            json!({"value": 1, "simpleMap": {"key2": null, "key3": 3}, "missing": null}),
            json!({"name": 1, "value": 1, "simpleMap": {"key1": 1, "key3": 3}}),
        );
    }

    #[test]
    fn smp_patch_replace_on_a_map() {
        assert_smp(
            json!({"name": 1, "value": 1}),
            json!({"$patch": "replace"}),
            json!({}),
        );
        assert_smp(
            json!({"name": 1, "value": 1}),
            json!({"other": "a", "$patch": "replace"}),
            json!({"other": "a"}),
        );
        assert_smp(
            json!({"simpleMap": {"a": 1}, "name": 1}),
            json!({"simpleMap": {"b": 2, "$patch": "replace"}}),
            json!({"simpleMap": {"b": 2}, "name": 1}),
        );
    }

    #[test]
    fn smp_patch_delete_on_a_map() {
        // Upstream leaves the deleted map empty.
        assert_smp(
            json!({"simpleMap": {"key1": 1, "key2": 1}}),
            json!({"simpleMap": {"$patch": "delete"}}),
            json!({"simpleMap": {}}),
        );
        assert_smp(json!({"a": 1}), json!({"$patch": "delete"}), json!({}));
    }

    #[test]
    fn smp_unknown_directive_is_rejected() {
        let err = smp(json!({}), json!({"simpleMap": {"$patch": "frob"}})).unwrap_err();
        assert!(
            err.message().starts_with("unknown patch type: frob in map"),
            "{err}"
        );
        assert!(matches!(err, PatchError::Malformed(_)));
        let err = smp(
            json!({"mergingList": [{"name": "1"}]}),
            json!({"mergingList": [{"$patch": "merge"}]}),
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "merging lists cannot yet be specified in the patch"
        );
        assert_eq!(
            smp(json!({}), json!([1])).unwrap_err(),
            PatchError::Malformed("invalid JSON document".into())
        );
    }

    #[test]
    fn smp_map_lists_merge_by_key_in_patch_order() {
        // "preserve the order from the patch in a merging list" (upstream test cases)
        assert_smp(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "other": "x"}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}, {"name": 2, "value": "b", "other": "x"}]}),
        );
        assert_smp(
            json!({"mergingList": [{"name": 1}, {"name": 2, "value": "b"}, {"name": 3}]}),
            json!({"mergingList": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"name": 2, "value": "b"}, {"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}),
        );
        // Nested fields of a merged element merge too; a new element goes first, as upstream.
        assert_smp(
            json!({"mergingList": [{"name": "a", "value": "1", "other": "x"}]}),
            json!({"mergingList": [{"name": "a", "other": null}, {"name": "b"}]}),
            json!({"mergingList": [{"name": "a", "value": "1"}, {"name": "b"}]}),
        );
        assert_smp(
            json!({"mergingList": [{"name": "a"}]}),
            json!({"mergingList": [{"name": "b"}]}),
            json!({"mergingList": [{"name": "b"}, {"name": "a"}]}),
        );
    }

    #[test]
    fn smp_map_list_delete_and_replace_elements() {
        // "delete all duplicate entries in a merging list"
        assert_smp(
            json!({"mergingList": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]}),
            json!({"mergingList": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}),
            json!({"mergingList": [{"name": 2, "value": "a"}]}),
        );
        // "delete all items from merging list"
        assert_smp(
            json!({"mergingList": [{"name": 1}, {"name": 2}]}),
            json!({"mergingList": [{"$patch": "replace"}]}),
            json!({"mergingList": []}),
        );
        assert_smp(
            json!({"mergingList": [{"name": 1, "value": "x"}, {"name": 2}]}),
            json!({"mergingList": [{"name": 3}, {"name": 1}, {"$patch": "replace"}]}),
            json!({"mergingList": [{"name": 3}, {"name": 1}]}),
        );
        let err = smp(
            json!({"mergingList": [{"name": 1, "value": "a"}]}),
            json!({"mergingList": [{"value": "b"}]}),
        )
        .unwrap_err();
        assert!(
            err.message()
                .contains("does not contain declared merge key: name"),
            "{err}"
        );
    }

    #[test]
    fn smp_sets_union_and_atomic_lists_replace() {
        // "unique scalars when merging lists"
        assert_smp(
            json!({"mergingIntList": [1, 2]}),
            json!({"mergingIntList": [2, 3]}),
            json!({"mergingIntList": [1, 2, 3]}),
        );
        // "preserve the order from the patch in a merging int list"
        assert_smp(
            json!({"mergingIntList": [1, 2, 3]}),
            json!({"mergingIntList": [3, 1]}),
            json!({"mergingIntList": [2, 3, 1]}),
        );
        assert_smp(
            json!({"nonMergingIntList": [1, 2], "nonMergingList": [{"name": 1}]}),
            json!({"nonMergingIntList": [2, 3], "nonMergingList": [{"name": 2}]}),
            json!({"nonMergingIntList": [2, 3], "nonMergingList": [{"name": 2}]}),
        );
        let err = smp(
            json!({"mergingIntList": [1]}),
            json!({"mergingIntList": ["a"]}),
        )
        .unwrap_err();
        assert!(
            err.message()
                .starts_with("list element types are not identical"),
            "{err}"
        );
    }

    #[test]
    fn smp_delete_from_primitive_list() {
        // "delete all duplicate items in lists of scalars" / "add and delete items"
        assert_smp(
            json!({"mergingIntList": [1, 2, 3, 3, 4]}),
            json!({"$setElementOrder/mergingIntList": [1, 2], "$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({"mergingIntList": [1, 2, 4]}),
        );
        assert_smp(
            json!({"mergingIntList": [1, 2, 3, 4]}),
            json!({
                "$setElementOrder/mergingIntList": [1, 2, 4],
                "$deleteFromPrimitiveList/mergingIntList": [3],
                "mergingIntList": [4]
            }),
            json!({"mergingIntList": [1, 2, 4]}),
        );
        // Nothing to delete from.
        assert_smp(
            json!({}),
            json!({"$deleteFromPrimitiveList/mergingIntList": [3]}),
            json!({}),
        );
        let err = smp(
            json!({}),
            json!({"$deleteFromPrimitiveList/mergingIntList": 3}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::Malformed("invalid patch format of primitive list".into())
        );
    }

    #[test]
    fn smp_set_element_order() {
        // "merge lists of maps" (three-way result)
        assert_smp(
            json!({"mergingList": [{"name": 1, "other": "a"}, {"name": 2, "value": 2, "other": "b"}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 4}, {"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 4, "value": 4}, {"name": 3, "value": 3}]
            }),
            json!({"mergingList": [
                {"name": 4, "value": 4},
                {"name": 1, "other": "a"},
                {"name": 2, "value": 2, "other": "b"},
                {"name": 3, "value": 3}
            ]}),
        );
        // "$setElementOrder contains item that is not present in the list to be merged"
        assert_smp(
            json!({"mergingList": [{"name": 1}, {"name": 3}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 3}, {"name": 2}, {"name": 1}],
                "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
            }),
            json!({"mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]}),
        );
        assert_smp(
            json!({"mergingIntList": [1, 3]}),
            json!({"$setElementOrder/mergingIntList": [3, 2, 1]}),
            json!({"mergingIntList": [3, 1]}),
        );
        // Finalizers reordered (the SMP doc's example).
        let mut object = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        strategic_merge_patch(
            &mut object,
            &json!({"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"]}}),
            &*builtin_list_types("", "ConfigMap"),
        )
        .unwrap();
        assert_eq!(object, json!({"metadata": {"finalizers": ["b", "c", "a"]}}));
    }

    #[test]
    fn smp_set_element_order_must_match_the_patch() {
        let err = smp(
            json!({"mergingList": [{"name": 1}, {"name": 3}, {"name": 2}]}),
            json!({
                "$setElementOrder/mergingList": [{"name": 1}, {"name": 2}, {"name": 3}],
                "mergingList": [{"name": 3, "value": 3}, {"name": 1, "value": 1}]
            }),
        )
        .unwrap_err();
        assert!(
            err.message()
                .contains("doesn't match $setElementOrder list"),
            "{err}"
        );
        let err = smp(
            json!({"mergingIntList": [1, 3, 2]}),
            json!({"$setElementOrder/mergingIntList": [1, 2, 3], "mergingIntList": [3, 1]}),
        )
        .unwrap_err();
        assert!(err.message().contains("doesn't match"), "{err}");
    }

    #[test]
    fn smp_retain_keys() {
        // The SMP doc's union example.
        assert_smp(
            json!({"union": {"foo": "a", "other": "b"}}),
            json!({"union": {"$retainKeys": ["another", "bar"], "another": "d", "bar": "c"}}),
            json!({"union": {"another": "d", "bar": "c"}}),
        );
        // retainKeys in a map list element: the volume source switch kubectl sends.
        let types = builtin_list_types("apps", "Deployment");
        let mut deployment = json!({"spec": {"template": {"spec": {"volumes": [
            {"name": "data", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "c"}}
        ]}}}});
        strategic_merge_patch(
            &mut deployment,
            &json!({"spec": {"template": {"spec": {"volumes": [
                {"$retainKeys": ["name", "persistentVolumeClaim"], "name": "data", "persistentVolumeClaim": {"claimName": "pvc"}}
            ]}}}}),
            &*types,
        )
        .unwrap();
        assert_eq!(
            deployment,
            json!({"spec": {"template": {"spec": {"volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "pvc"}},
                {"name": "config", "configMap": {"name": "c"}}
            ]}}}})
        );
        let err = smp(
            json!({"union": {"foo": "a"}}),
            json!({"union": {"$retainKeys": ["bar"], "foo": "x"}}),
        )
        .unwrap_err();
        assert_eq!(
            err,
            PatchError::Malformed("invalid patch format of retainKeys".into())
        );
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "web:1",
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "args": ["--a"]
                            },
                            {"name": "sidecar", "image": "proxy:1"}
                        ]
                    }
                }
            }
        })
    }

    fn patch_deployment(patch: Value) -> Value {
        let mut object = deployment();
        strategic_merge_patch(
            &mut object,
            &patch,
            &*builtin_list_types("apps", "Deployment"),
        )
        .unwrap();
        object
    }

    #[test]
    fn smp_deployment_set_image_like_kubectl() {
        // `kubectl set image deployment/web app=web:2`
        let result = patch_deployment(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}}),
        );
        let containers = &result["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "web:2");
        assert_eq!(
            containers[0]["env"],
            deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
        );
        assert_eq!(
            containers[1],
            json!({"name": "sidecar", "image": "proxy:1"})
        );
    }

    #[test]
    fn smp_deployment_env_like_kubectl_apply() {
        // What `kubectl apply` sends after B is removed from and C added to the manifest.
        let result = patch_deployment(json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
            "containers": [{
                "name": "app",
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}, {"name": "B", "$patch": "delete"}],
                "args": ["--b"]
            }]
        }}}}));
        let app = &result["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            app["env"],
            json!([{"name": "A", "value": "1"}, {"name": "C", "value": "3"}])
        );
        assert_eq!(app["args"], json!(["--b"]), "args is atomic");
        assert_eq!(
            result["spec"]["template"]["spec"]["containers"][1]["name"],
            "sidecar"
        );
    }

    #[test]
    fn smp_deployment_remove_container_and_ports_by_container_port() {
        let result = patch_deployment(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"},
            // SMP merges ports on containerPort alone (apply uses containerPort+protocol).
            {"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}
        ]}}}}));
        let containers = result["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(
            containers[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}])
        );
    }

    #[test]
    fn smp_finalizers_and_owner_references() {
        let types = builtin_list_types("", "ConfigMap");
        let mut object = json!({"metadata": {
            "finalizers": ["a"],
            "ownerReferences": [{"uid": "1", "name": "x", "kind": "Plan"}]
        }});
        strategic_merge_patch(
            &mut object,
            &json!({"metadata": {
                "finalizers": ["b"],
                "ownerReferences": [{"uid": "2", "name": "y", "kind": "Plan"}]
            }}),
            &*types,
        )
        .unwrap();
        assert_eq!(object["metadata"]["finalizers"], json!(["b", "a"]));
        assert_eq!(
            object["metadata"]["ownerReferences"],
            json!([{"uid": "2", "name": "y", "kind": "Plan"}, {"uid": "1", "name": "x", "kind": "Plan"}])
        );
        // Conditions merge by type.
        let types = builtin_list_types("apps", "Deployment");
        let mut object = json!({"status": {"conditions": [
            {"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}
        ]}});
        strategic_merge_patch(
            &mut object,
            &json!({"status": {"conditions": [{"type": "Available", "status": "False"}]}}),
            &*types,
        )
        .unwrap();
        assert_eq!(
            object["status"]["conditions"],
            json!([{"type": "Available", "status": "False"}, {"type": "Progressing", "status": "True"}])
        );
    }

    #[test]
    fn smp_new_fields_drop_directives_and_nulls() {
        assert_smp(
            json!({}),
            json!({"mergingList": [{"name": "a", "value": null}, {"name": "b", "$patch": "delete"}], "simpleMap": {"x": null, "y": 1}}),
            json!({"mergingList": [{"name": "a"}], "simpleMap": {"y": 1}}),
        );
    }

    #[test]
    fn smp_errors_leave_target_unchanged() {
        let mut target = json!({"mergingList": [{"name": 1}], "keep": true});
        let before = target.clone();
        let result = strategic_merge_patch(
            &mut target,
            &json!({"keep": false, "mergingList": [{"value": 1}]}),
            &MergeItem,
        );
        assert!(result.is_err());
        assert_eq!(target, before);
    }
}
