//! `x-kubernetes-list-type` invariants (apiextensions-apiserver `listtype` package): items of
//! a `set` are unique, and items of a `map` are objects with unique key-field combinations.
//! Also the correlation of list-map items with their old versions, which transition rules and
//! ratcheting use.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::field_error::FieldError;
use super::node::{AdditionalProperties, ListKind, Node};

/// Validates every list below `value`; `path` is a `field.Path` string (empty at the root).
pub(crate) fn validate(value: &Value, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if let Some(prop) = node.properties.get(key) {
                    validate(child, prop, &child_path(path, key), out);
                } else if let AdditionalProperties::Schema(s) = &node.additional_properties {
                    validate(child, s, &format!("{path}[{key}]"), out);
                }
            }
        }
        Value::Array(items) => {
            match &node.list {
                ListKind::Set => {
                    for i in first_repeats(items.iter().map(ItemKey::of)) {
                        out.push(FieldError::duplicate(format!("{path}[{i}]"), &items[i]));
                    }
                }
                ListKind::Map(keys) => validate_list_map(items, keys, path, out),
                ListKind::Atomic => {}
            }
            if let Some(item_node) = node.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    validate(item, item_node, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn validate_list_map(items: &[Value], keys: &[String], path: &str, out: &mut Vec<FieldError>) {
    if let Some(i) = items.iter().position(|x| !x.is_null() && !x.is_object()) {
        out.push(FieldError::invalid(
            format!("{path}[{i}]"),
            &items[i],
            "must be an object for an array of list-type map",
        ));
        return;
    }
    // The key of an item is the object of its key fields; a null item has none.
    let key_objects: Vec<Map<String, Value>> = items
        .iter()
        .map(|item| {
            keys.iter()
                .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                .collect()
        })
        .collect();
    let item_keys: Vec<ItemKey> = if let [single] = keys {
        key_objects
            .iter()
            .map(|k| k.get(single).map_or(ItemKey::Unspecified, ItemKey::of))
            .collect()
    } else {
        key_objects
            .iter()
            .map(|k| ItemKey::of(&Value::Object(k.clone())))
            .collect()
    };
    for i in first_repeats(item_keys.into_iter()) {
        out.push(FieldError::duplicate(
            format!("{path}[{i}]"),
            &Value::Object(key_objects[i].clone()),
        ));
    }
}

/// Go map-key identity of a decoded value: scalars compare with their Go type (`1` and `1.0`
/// differ), compound values by their JSON encoding.
#[derive(Debug, PartialEq, Eq, Hash)]
enum ItemKey {
    Unspecified,
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(u64),
    String(String),
    Compound(String),
}

impl ItemKey {
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Self::Int(i),
                (None, Some(u)) => Self::Uint(u),
                _ => Self::Float(n.as_f64().unwrap_or(f64::NAN).to_bits()),
            },
            Value::String(s) => Self::String(s.clone()),
            compound => Self::Compound(compound.to_string()),
        }
    }
}

/// The index of the second occurrence of each repeated key (reported once per key).
fn first_repeats(keys: impl Iterator<Item = ItemKey>) -> Vec<usize> {
    let mut seen: HashMap<ItemKey, usize> = HashMap::new();
    let mut repeats = Vec::new();
    for (i, key) in keys.enumerate() {
        let times = seen.entry(key).or_insert(0);
        *times += 1;
        if *times == 2 {
            repeats.push(i);
        }
    }
    repeats
}

/// The old version of a list item: only items of `x-kubernetes-list-type: map` lists
/// correlate (by their key fields); other list items have no identity across updates.
pub(crate) fn correlated_item<'a>(
    list: &Node,
    item: &Value,
    old_list: Option<&'a Value>,
) -> Option<&'a Value> {
    let ListKind::Map(keys) = &list.list else {
        return None;
    };
    let item = item.as_object()?;
    old_list?.as_array()?.iter().find(|candidate| {
        candidate
            .as_object()
            .is_some_and(|c| keys.iter().all(|k| c.get(k) == item.get(k)))
    })
}
