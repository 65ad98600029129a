//! Objects marked `x-kubernetes-embedded-resource` must carry `apiVersion` and `kind`, like the
//! apiserver's `schemaobjectmeta` validation. (The object root is the core's business.)

use serde_json::Value;

use super::field_error::FieldError;
use super::node::{AdditionalProperties, Node};

/// Validates the embedded resources below the root; `path` is a `field.Path` string.
pub(crate) fn validate(value: &Value, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    match value {
        Value::Object(map) => {
            if node.embedded_resource && !path.is_empty() {
                validate_embedded(map, path, out);
            }
            for (key, child) in map {
                if node.embedded_resource
                    && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                if let Some(prop) = node.properties.get(key) {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    validate(child, prop, &child_path, out);
                } else if let AdditionalProperties::Schema(s) = &node.additional_properties {
                    validate(child, s, &format!("{path}[{key}]"), out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = node.items.as_deref() {
                for (i, item) in items.iter().enumerate() {
                    validate(item, item_node, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn validate_embedded(map: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<FieldError>) {
    let api_version_path = format!("{path}.apiVersion");
    let kind_path = format!("{path}.kind");
    if !map.contains_key("apiVersion") {
        out.push(FieldError::required(
            api_version_path.clone(),
            "must not be empty",
        ));
    }
    if !map.contains_key("kind") {
        out.push(FieldError::required(kind_path.clone(), "must not be empty"));
    }
    match map.get("apiVersion") {
        Some(Value::String(v)) if v.is_empty() => {
            out.push(FieldError::invalid(
                api_version_path,
                &Value::from(""),
                "must not be empty",
            ));
        }
        Some(Value::String(v)) if v.matches('/').count() > 1 => {
            out.push(FieldError::invalid(
                api_version_path,
                &Value::from(v.as_str()),
                &format!("unexpected GroupVersion string: {v}"),
            ));
        }
        Some(Value::String(_)) | None => {}
        Some(other) => out.push(FieldError::invalid(
            api_version_path,
            other,
            "must be a string",
        )),
    }
    match map.get("kind") {
        Some(Value::String(k)) if k.is_empty() => {
            out.push(FieldError::invalid(
                kind_path,
                &Value::from(""),
                "must not be empty",
            ));
        }
        Some(Value::String(_)) | None => {}
        Some(other) => out.push(FieldError::invalid(kind_path, other, "must be a string")),
    }
}
