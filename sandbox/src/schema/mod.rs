//! Admission of custom resources against their CRD version's `openAPIV3Schema`, in the order
//! the apiserver applies it: prune unknown fields, drop non-nullable nulls, apply defaults,
//! validate the OpenAPI keywords, embedded resources and list-type invariants, then evaluate
//! the CEL `x-kubernetes-validations` rules.
//!
//! Messages, reasons and field paths follow kube-apiserver (k8s 1.33), so that a client sees
//! the same 422 it would get from a real cluster, for example
//! `spec.trialDays: Invalid value: -1: spec.trialDays in body should be greater than or equal to 0`.

mod cel;
mod defaults;
mod embedded;
mod field_error;
mod formats;
pub(crate) mod go_fmt;
mod list_sets;
mod node;
mod pattern;
mod prune;
mod validate;

use serde_json::Value;

pub use field_error::{FieldError, FieldErrorReason};

use crate::list_type::{ListType, ListTypes, MetadataListTypes};
use node::{AdditionalProperties, JsonType, ListKind, Node};

/// The detail of the error the apiserver adds instead of running CEL rules on an object that
/// already failed basic schema validation.
const CEL_SKIPPED: &str = "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// How an object reached admission, which decides what becomes of `null`s in fields that
/// are not `nullable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Decoded from JSON: a create or update body, or the result of a merge, JSON or
    /// strategic merge patch. Non-nullable `null`s without a default are dropped
    /// (`PruneNonNullableNullsWithoutDefaults`), those with a default get it.
    Decoded,
    /// The result of server-side apply (structured-merge-diff keeps a configured `null`):
    /// defaults replace non-nullable `null`s, the others fail validation with 422.
    Applied,
}

/// A CRD version's structural schema, compiled once when the CRD is registered.
#[derive(Debug)]
pub struct CrdSchema {
    root: Node,
    /// Whether any node has CEL rules: without any, the apiserver has no CEL validator and
    /// adds no "rules were not checked" error.
    has_rules: bool,
}

impl CrdSchema {
    /// Compiles `openAPIV3Schema`. Fails, like CRD registration does, on a malformed schema,
    /// an invalid `pattern` or a CEL rule that does not compile.
    pub fn new(open_api_v3_schema: &Value) -> Result<Self, String> {
        let root = Node::compile(open_api_v3_schema, "openAPIV3Schema")?;
        let has_rules = root.has_rules();
        Ok(CrdSchema { root, has_rules })
    }

    /// Admits a custom resource on create (`old` is `None`) or update (`old` is the stored
    /// object): prunes unknown fields (keeping `x-kubernetes-preserve-unknown-fields` subtrees
    /// and the `apiVersion`/`kind`/`metadata` of the root and of embedded resources), applies
    /// `default`s, then validates. On update, fields equal to their old value are not
    /// re-validated (the apiserver's validation ratcheting) and transition rules see `oldSelf`.
    ///
    /// `metadata` is left to the caller, which validates names with [`crate::names`].
    ///
    /// `source` says how the object was built. The apiserver drops a `null` in a non-nullable
    /// field without a default when it decodes a request body or a patched object
    /// ([`Source::Decoded`]); server-side apply's merge result is defaulted but never decoded
    /// ([`Source::Applied`]), so such a `null` reaches validation and is refused:
    /// `spec.x: Invalid value: "null": spec.x in body must be of type array: "null"`.
    pub fn admit(
        &self,
        object: &mut Value,
        old: Option<&Value>,
        source: Source,
    ) -> Result<(), Vec<FieldError>> {
        prune::prune(object, &self.root, true);
        if source == Source::Decoded {
            defaults::prune_non_nullable_nulls(object, &self.root);
        }
        defaults::apply_defaults(object, &self.root);

        let mut errors = Vec::new();
        validate::validate(object, &self.root, old, &mut errors);
        embedded::validate(object, &self.root, "", &mut errors);
        // Like the apiserver, an update only enforces list invariants the old object met.
        let old_lists_valid = old.is_none_or(|o| {
            let mut old_errors = Vec::new();
            list_sets::validate(o, &self.root, "", &mut old_errors);
            old_errors.is_empty()
        });
        if old_lists_valid {
            list_sets::validate(object, &self.root, "", &mut errors);
        }

        if self.has_rules {
            if errors.iter().any(blocks_cel) {
                errors.push(FieldError::invalid("<nil>", &Value::Null, CEL_SKIPPED));
            } else {
                evaluate_rules(object, &self.root, old, "", &mut errors);
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The fields admission would prune from `object`, as the apiserver reports them for
    /// `fieldValidation=Strict` (`strict decoding error: unknown field "spec.foo"`) and `Warn`:
    /// `spec.foo`, `spec.waves[0].color`, sorted.
    pub fn unknown_fields(&self, object: &Value) -> Vec<String> {
        let mut copy = object.clone();
        prune::prune_recording(&mut copy, &self.root, true)
    }

    /// The schema node for a field path (field names only; list elements are skipped).
    fn node_at(&self, path: &[&str]) -> Option<&Node> {
        let mut node = &self.root;
        for segment in path {
            node = through_lists(node);
            node = node.child(segment)?;
        }
        Some(node)
    }
}

/// Basic schema failures after which the apiserver does not run CEL rules.
fn blocks_cel(error: &FieldError) -> bool {
    use FieldErrorReason::*;
    matches!(
        error.reason,
        NotSupported | Required | TooLong | TooMany | TypeInvalid
    )
}

/// Evaluates the CEL rules of every node below `value`; `path` is a `field.Path` string.
fn evaluate_rules(
    value: &Value,
    node: &Node,
    old: Option<&Value>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    // Rules only see non-null values; a rule that cares about null checks from the parent.
    if value.is_null() {
        return;
    }
    for rule in &node.rules {
        rule.evaluate(value, old, path, out);
    }
    for branch in &node.all_of {
        evaluate_rules(value, branch, old, path, out);
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let old_child = old.and_then(|o| o.get(key));
                if let Some(prop) = node.properties.get(key) {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    evaluate_rules(child, prop, old_child, &child_path, out);
                } else if let AdditionalProperties::Schema(s) = &node.additional_properties {
                    evaluate_rules(child, s, old_child, &format!("{path}[{key}]"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = node.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    let old_item = list_sets::correlated_item(node, item, old);
                    evaluate_rules(item, item_node, old_item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// List elements are not part of list-type paths, so a field below a list is looked up in the
/// list's item schema.
fn through_lists(mut node: &Node) -> &Node {
    while node.ty == Some(JsonType::Array) {
        match node.items.as_deref() {
            Some(items) => node = items,
            None => break,
        }
    }
    node
}

impl ListTypes for CrdSchema {
    /// `x-kubernetes-list-type` of the list at `path` (atomic when unset), with `metadata`
    /// following `ObjectMeta`.
    fn list_type(&self, path: &[&str]) -> ListType {
        if path.first() == Some(&"metadata") {
            return MetadataListTypes.list_type(path);
        }
        match self.node_at(path).map(|n| &n.list) {
            Some(ListKind::Set) => ListType::Set,
            Some(ListKind::Map(keys)) => ListType::Map(keys.clone()),
            Some(ListKind::Atomic) | None => ListType::Atomic,
        }
    }

    /// The `default` of a list-map key field, which apply uses to match elements that omit it.
    fn map_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        if path.first() == Some(&"metadata") {
            return MetadataListTypes.map_key_default(path, key);
        }
        let list = self.node_at(path)?;
        list.items.as_deref()?.properties.get(key)?.default.clone()
    }

    /// `x-kubernetes-map-type: atomic`.
    fn atomic_map(&self, path: &[&str]) -> bool {
        if path.first() == Some(&"metadata") {
            return MetadataListTypes.atomic_map(path);
        }
        self.node_at(path).is_some_and(|n| n.atomic_map)
    }
}
