//! Defaulting, in the apiserver's order: non-nullable `null`s without a default are dropped
//! (`PruneNonNullableNullsWithoutDefaults`), then `default`s fill missing fields and replace
//! non-nullable `null`s (`structuraldefaulting.Default`). The apiserver defaults on read and on
//! write; the sandbox stores defaulted objects, which clients cannot tell apart.

use serde_json::Value;

use super::node::{AdditionalProperties, Node};

/// Drops `null` values of non-nullable fields that have no default.
pub(crate) fn prune_non_nullable_nulls(value: &mut Value, node: &Node) {
    match value {
        Value::Object(map) => {
            map.retain(|key, child| {
                let Some(child_node) = node.child(key) else {
                    return true;
                };
                if child.is_null() {
                    return child_node.nullable || child_node.default.is_some();
                }
                prune_non_nullable_nulls(child, child_node);
                true
            });
        }
        Value::Array(items) => {
            if let Some(item_node) = node.items.as_deref() {
                for item in items.iter_mut().filter(|i| !i.is_null()) {
                    prune_non_nullable_nulls(item, item_node);
                }
            }
        }
        _ => {}
    }
}

/// Applies `default`s below `value` (the value itself is never replaced).
pub(crate) fn apply_defaults(value: &mut Value, node: &Node) {
    match value {
        Value::Object(map) => {
            for (key, prop) in &node.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                let missing = match map.get(key) {
                    None => true,
                    Some(Value::Null) => !prop.nullable,
                    Some(_) => false,
                };
                if missing {
                    map.insert(key.clone(), default.clone());
                }
            }
            for (key, child) in map.iter_mut() {
                if let Some(prop) = node.properties.get(key) {
                    apply_defaults(child, prop);
                } else if let AdditionalProperties::Schema(s) = &node.additional_properties {
                    replace_non_nullable_null(child, s);
                    apply_defaults(child, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = node.items.as_deref() {
                for item in items {
                    replace_non_nullable_null(item, item_node);
                    apply_defaults(item, item_node);
                }
            }
        }
        _ => {}
    }
}

fn replace_non_nullable_null(value: &mut Value, node: &Node) {
    if value.is_null()
        && !node.nullable
        && let Some(default) = &node.default
    {
        *value = default.clone();
    }
}
