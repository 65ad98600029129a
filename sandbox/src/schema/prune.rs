//! Structural pruning: drop every field the schema does not specify, as the apiserver does
//! when it decodes a custom resource (apiextensions-apiserver `pruning` package), optionally
//! recording the dropped paths for `fieldValidation=Strict|Warn`.

use serde_json::Value;

use super::node::{AdditionalProperties, Node};

/// The fields of an embedded resource (and of the object root) that pruning leaves alone.
const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Pruning state: the current path and, when recording, the pruned paths.
struct Pruning {
    path: Vec<String>,
    pruned: Option<Vec<String>>,
}

impl Pruning {
    fn push_key(&mut self, key: &str) {
        if self.pruned.is_some() {
            if !self.path.is_empty() {
                self.path.push(".".to_string());
            }
            self.path.push(key.to_string());
        }
    }

    fn push_index(&mut self, index: usize) {
        if self.pruned.is_some() {
            self.path.push(format!("[{index}]"));
        }
    }

    fn truncate(&mut self, len: usize) {
        self.path.truncate(len);
    }

    fn record(&mut self, key: &str) {
        if self.pruned.is_some() {
            let len = self.path.len();
            self.push_key(key);
            let joined = self.path.concat();
            self.truncate(len);
            if let Some(pruned) = &mut self.pruned {
                pruned.push(joined);
            }
        }
    }
}

/// Prunes `value` against `node`. `resource_root` treats the node as an embedded resource,
/// keeping `apiVersion`, `kind` and `metadata` (the core owns `metadata`).
pub(crate) fn prune(value: &mut Value, node: &Node, resource_root: bool) {
    let mut state = Pruning {
        path: Vec::new(),
        pruned: None,
    };
    prune_with(value, Some(node), resource_root, &mut state);
}

/// Prunes `value` and returns the pruned field paths (`spec.foo`, `spec.waves[0].color`),
/// sorted, as the apiserver reports unknown fields.
pub(crate) fn prune_recording(value: &mut Value, node: &Node, resource_root: bool) -> Vec<String> {
    let mut state = Pruning {
        path: Vec::new(),
        pruned: Some(Vec::new()),
    };
    prune_with(value, Some(node), resource_root, &mut state);
    let mut pruned = state.pruned.unwrap_or_default();
    pruned.sort();
    pruned
}

fn prune_with(value: &mut Value, node: Option<&Node>, embedded: bool, state: &mut Pruning) {
    if let Some(n) = node
        && n.preserve_unknown_fields
    {
        skip_prune(value, n, embedded, state);
        return;
    }
    let depth = state.path.len();
    match value {
        Value::Object(map) => {
            let Some(n) = node else {
                // Below a node without a schema nothing is known, so every field goes.
                for key in map.keys() {
                    state.record(key);
                }
                map.clear();
                return;
            };
            let embedded = embedded || n.embedded_resource;
            map.retain(|key, child| {
                if embedded && META_FIELDS.contains(&key.as_str()) {
                    return true;
                }
                let child_node = match (n.properties.get(key), &n.additional_properties) {
                    (Some(prop), _) => Some(Some(prop)),
                    (None, AdditionalProperties::Schema(s)) => Some(Some(&**s)),
                    (None, AdditionalProperties::Allowed(true)) => Some(None),
                    (None, _) => None,
                };
                match child_node {
                    Some(child_node) => {
                        state.push_key(key);
                        prune_with(child, child_node, false, state);
                        state.truncate(depth);
                        true
                    }
                    None => {
                        if !META_FIELDS.contains(&key.as_str()) || depth > 0 {
                            state.record(key);
                        }
                        false
                    }
                }
            });
        }
        Value::Array(items) => {
            let item_node = node.and_then(|n| n.items.as_deref());
            for (i, item) in items.iter_mut().enumerate() {
                state.push_index(i);
                prune_with(item, item_node, false, state);
                state.truncate(depth);
            }
        }
        _ => {}
    }
}

/// Below `x-kubernetes-preserve-unknown-fields: true` unknown fields stay, but the fields the
/// schema does specify are still pruned.
fn skip_prune(value: &mut Value, node: &Node, embedded: bool, state: &mut Pruning) {
    let depth = state.path.len();
    match value {
        Value::Object(map) => {
            let embedded = embedded || node.embedded_resource;
            for (key, child) in map.iter_mut() {
                if embedded && META_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let child_node = match (node.properties.get(key), &node.additional_properties) {
                    (Some(prop), _) => Some(Some(prop)),
                    (None, AdditionalProperties::Schema(s)) => Some(Some(&**s)),
                    (None, AdditionalProperties::Allowed(true)) => Some(None),
                    (None, _) => None,
                };
                if let Some(child_node) = child_node {
                    state.push_key(key);
                    prune_with(child, child_node, false, state);
                    state.truncate(depth);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                state.push_index(i);
                prune_with(item, node.items.as_deref(), false, state);
                state.truncate(depth);
            }
        }
        _ => {}
    }
}
