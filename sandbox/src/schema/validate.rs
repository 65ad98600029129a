//! OpenAPI v3 keyword validation with kube-openapi's semantics and messages (the validator the
//! apiserver runs on custom resources), converted to field errors the way apiextensions'
//! `kubeOpenAPIResultToFieldErrors` does: the field is the value's path, the detail names the
//! path again (`spec.x in body should be ...`).
//!
//! Paths here are kube-openapi's: `spec.waves[2].percent` for properties and items and
//! `spec.labels.key` for `additionalProperties` values.

use serde_json::{Map, Value};

use super::field_error::FieldError;
use super::go_fmt;
use super::list_sets::correlated_item;
use super::node::{AdditionalProperties, Node};

/// Validates `value` against `node`. With `old` (an update), values equal to their correlated
/// old value are not validated: the apiserver ratchets unchanged fields so that tightening a
/// schema does not lock existing objects.
pub(crate) fn validate(
    value: &Value,
    node: &Node,
    old: Option<&Value>,
    errors: &mut Vec<FieldError>,
) {
    check(value, node, old, "", errors);
}

fn check(value: &Value, node: &Node, old: Option<&Value>, path: &str, out: &mut Vec<FieldError>) {
    if old == Some(value) {
        return;
    }
    if value.is_null() {
        check_type(value, node, path, out);
        check_enum(value, node, path, out);
        return;
    }
    check_type(value, node, path, out);
    check_composition(value, node, path, out);
    match value {
        Value::String(s) => {
            check_string(s, node, path, out);
            check_format(s, node, path, out);
        }
        Value::Number(n) => check_number(n, node, path, out),
        Value::Array(items) => check_array(items, node, old, path, out),
        _ => {}
    }
    check_enum(value, node, path, out);
    if let Value::Object(map) = value {
        check_object(map, node, old, path, out);
    }
}

/// Checks a value against a sub-schema on its own (for `allOf`/`anyOf`/`oneOf`/`not`).
fn errors_of(value: &Value, node: &Node, path: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    check(value, node, None, path, &mut out);
    out
}

/// The error field for a kube-openapi path: the root is the nil path.
fn field_of(path: &str) -> String {
    let trimmed = path.strip_prefix('.').unwrap_or(path);
    if trimmed.is_empty() {
        "<nil>".to_string()
    } else {
        trimmed.to_string()
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The JSON type of a decoded value and the Go format kube-openapi infers for it.
fn kind_of(value: &Value) -> (&'static str, &'static str) {
    match value {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::Number(n) if n.is_i64() || n.is_u64() => ("integer", "int64"),
        Value::Number(_) => ("number", "double"),
        Value::String(_) => ("string", ""),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
    }
}

fn check_type(value: &Value, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    let types: &[&str] = if node.int_or_string {
        &["integer", "string"]
    } else {
        match node.ty {
            Some(t) => &[t.as_str()][..],
            None => return,
        }
    };
    let joined = types.join(",");
    let field = field_of(path);
    if value.is_null() {
        if !node.nullable {
            out.push(FieldError::type_invalid(
                field,
                &Value::from("null"),
                &format!("{path} in body must be of type {joined}: \"null\""),
            ));
        }
        return;
    }
    let (kind, go_format) = kind_of(value);
    let declares = |t: &str| types.contains(&t);
    let float_is_int = kind == "number"
        && declares("integer")
        && value
            .as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0);
    let int_is_float = kind == "integer" && declares("number");
    let string_or_array = value.is_string() || value.is_array();
    if let Some((format, _)) = &node.format {
        if !(string_or_array
            || declares(kind)
            || go_format == format
            || float_is_int
            || int_is_float)
        {
            out.push(FieldError::type_invalid(
                field,
                &Value::from(go_format),
                &format!(
                    "{path} in body must be of type {format}: {}",
                    go_fmt::quote(go_format)
                ),
            ));
            return;
        }
        if !(declares("number") || declares("integer")) && string_or_array {
            return;
        }
    }
    if !(declares(kind) || float_is_int || int_is_float) {
        out.push(FieldError::type_invalid(
            field,
            &Value::from(kind),
            &format!(
                "{path} in body must be of type {joined}: {}",
                go_fmt::quote(kind)
            ),
        ));
    }
}

/// A composite error, which kube-openapi does not attach to a field.
fn composite(message: String) -> FieldError {
    FieldError::invalid("<nil>", &Value::from(""), &message)
}

fn check_composition(value: &Value, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    let quoted = go_fmt::quote(path);
    if !node.any_of.is_empty() {
        let mut best: Option<Vec<FieldError>> = None;
        let mut matched = false;
        for branch in &node.any_of {
            let errs = errors_of(value, branch, path);
            if errs.is_empty() {
                matched = true;
                break;
            }
            // kube-openapi reports the branch that got furthest; fewest errors approximates it.
            if best.as_ref().is_none_or(|b| errs.len() < b.len()) {
                best = Some(errs);
            }
        }
        if !matched {
            out.push(composite(format!(
                "{quoted} must validate at least one schema (anyOf)"
            )));
            out.extend(best.unwrap_or_default());
        }
    }
    if !node.one_of.is_empty() {
        let mut best: Option<Vec<FieldError>> = None;
        let mut valid = 0;
        for branch in &node.one_of {
            let errs = errors_of(value, branch, path);
            if errs.is_empty() {
                valid += 1;
            } else if valid == 0 && best.as_ref().is_none_or(|b| errs.len() < b.len()) {
                best = Some(errs);
            }
        }
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            out.push(composite(format!(
                "{quoted} must validate one and only one schema (oneOf). {found}"
            )));
            if valid == 0 {
                out.extend(best.unwrap_or_default());
            }
        }
    }
    if !node.all_of.is_empty() {
        let mut valid = 0;
        for branch in &node.all_of {
            let errs = errors_of(value, branch, path);
            if errs.is_empty() {
                valid += 1;
            }
            out.extend(errs);
        }
        if valid != node.all_of.len() {
            let none = if valid == 0 { ". None validated" } else { "" };
            out.push(composite(format!(
                "{quoted} must validate all the schemas (allOf){none}"
            )));
        }
    }
    if let Some(not) = &node.not
        && errors_of(value, not, path).is_empty()
    {
        out.push(composite(format!(
            "{quoted} must not validate the schema (not)"
        )));
    }
}

fn check_string(s: &str, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    // Lengths count Unicode characters (utf8.RuneCountInString), not bytes.
    let length = s.chars().count() as u64;
    let field = field_of(path);
    if let Some(max) = node.max_length
        && length > max
    {
        out.push(FieldError::too_long(field, max as usize));
        return;
    }
    if let Some(min) = node.min_length
        && length < min
    {
        out.push(FieldError::invalid(
            field,
            &Value::from(s),
            &format!("{path} in body should be at least {min} chars long"),
        ));
        return;
    }
    if let Some(pattern) = &node.pattern
        && !pattern.is_match(s)
    {
        out.push(FieldError::invalid(
            field,
            &Value::from(s),
            &format!("{path} in body should match '{}'", pattern.source),
        ));
    }
}

fn check_format(s: &str, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    if let Some((name, format)) = &node.format
        && !format.is_valid(s)
    {
        out.push(FieldError::type_invalid(
            field_of(path),
            &Value::from(s),
            &format!(
                "{path} in body must be of type {name}: {}",
                go_fmt::quote(s)
            ),
        ));
    }
}

/// A number as kube-openapi sees it: `int64` data is compared natively against bounds
/// truncated to integers; anything else as `float64`.
enum Numeric {
    Int(i64),
    Float(f64),
}

fn check_number(n: &serde_json::Number, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    let value = Value::Number(n.clone());
    let data = match n.as_i64() {
        Some(i) => Numeric::Int(i),
        None => Numeric::Float(n.as_f64().unwrap_or(f64::NAN)),
    };
    let field = field_of(path);
    if let Some(factor) = node.multiple_of {
        let (ok, shown) = match data {
            Numeric::Int(i) if factor.fract() == 0.0 && factor as i64 != 0 => {
                (i % factor as i64 == 0, (factor as i64).to_string())
            }
            Numeric::Int(i) => (is_json_integer(i as f64 / factor), go_fmt::float(factor)),
            Numeric::Float(f) => (is_json_integer(f / factor), go_fmt::float(factor)),
        };
        if !ok {
            out.push(FieldError::invalid(
                field.clone(),
                &value,
                &format!("{path} in body should be a multiple of {shown}"),
            ));
        }
    }
    if let Some(max) = node.maximum {
        let (fails, shown) = match data {
            Numeric::Int(i) => {
                let bound = max.value as i64;
                (
                    if max.exclusive { i >= bound } else { i > bound },
                    bound.to_string(),
                )
            }
            Numeric::Float(f) => (
                if max.exclusive {
                    f >= max.value
                } else {
                    f > max.value
                },
                go_fmt::float(max.value),
            ),
        };
        if fails {
            let relation = if max.exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(FieldError::invalid(
                field.clone(),
                &value,
                &format!("{path} in body should be {relation} {shown}"),
            ));
        }
    }
    if let Some(min) = node.minimum {
        let (fails, shown) = match data {
            Numeric::Int(i) => {
                let bound = min.value as i64;
                (
                    if min.exclusive { i <= bound } else { i < bound },
                    bound.to_string(),
                )
            }
            Numeric::Float(f) => (
                if min.exclusive {
                    f <= min.value
                } else {
                    f < min.value
                },
                go_fmt::float(min.value),
            ),
        };
        if fails {
            let relation = if min.exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(FieldError::invalid(
                field,
                &value,
                &format!("{path} in body should be {relation} {shown}"),
            ));
        }
    }
}

/// swag.IsFloat64AJSONInteger: finite and integral.
fn is_json_integer(f: f64) -> bool {
    f.is_finite() && f.fract() == 0.0
}

fn check_array(
    items: &[Value],
    node: &Node,
    old: Option<&Value>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    if let Some(item_node) = node.items.as_deref() {
        for (i, item) in items.iter().enumerate() {
            let old_item = correlated_item(node, item, old);
            check(item, item_node, old_item, &format!("{path}[{i}]"), out);
        }
    }
    let len = items.len() as u64;
    let field = field_of(path);
    if let Some(min) = node.min_items
        && len < min
    {
        out.push(FieldError::invalid(
            field.clone(),
            &Value::from(len),
            &format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = node.max_items
        && len > max
    {
        out.push(FieldError::too_many(
            field.clone(),
            len as usize,
            max as usize,
        ));
    }
    if node.unique_items && has_duplicates(items) {
        out.push(FieldError::invalid(
            field,
            &Value::from(""),
            &format!("{path} in body shouldn't contain duplicates"),
        ));
    }
}

fn has_duplicates(items: &[Value]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].iter().any(|b| json_equal(a, b)))
}

/// Equality of decoded JSON values where numbers compare by value (`1` equals `1.0`), as
/// kube-openapi converts values before comparing them.
pub(crate) fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn check_enum(value: &Value, node: &Node, path: &str, out: &mut Vec<FieldError>) {
    let Some(allowed) = &node.enumeration else {
        return;
    };
    if allowed.is_empty() || allowed.iter().any(|e| json_equal(e, value)) {
        return;
    }
    let supported: Vec<String> = allowed
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    out.push(FieldError::not_supported(field_of(path), value, &supported));
}

fn check_object(
    map: &Map<String, Value>,
    node: &Node,
    old: Option<&Value>,
    path: &str,
    out: &mut Vec<FieldError>,
) {
    let count = map.len() as u64;
    let field = field_of(path);
    if let Some(min) = node.min_properties
        && count < min
    {
        out.push(FieldError::invalid(
            field,
            &Value::from(count),
            &format!("{path} in body should have at least {min} properties"),
        ));
        return;
    }
    if let Some(max) = node.max_properties
        && count > max
    {
        out.push(FieldError::too_many(field, count as usize, max as usize));
        return;
    }
    let old_child = |key: &str| old.and_then(|o| o.get(key));
    for (key, child) in map {
        if node.properties.contains_key(key) {
            continue;
        }
        match &node.additional_properties {
            AdditionalProperties::Allowed(false) => out.push(FieldError::invalid(
                field.clone(),
                &Value::from(key.as_str()),
                &format!("{path}.{key} in body is a forbidden property"),
            )),
            AdditionalProperties::Schema(s) => {
                check(child, s, old_child(key), &format!("{path}.{key}"), out);
            }
            _ => {}
        }
    }
    for (name, prop) in &node.properties {
        if let Some(child) = map.get(name) {
            check(child, prop, old_child(name), &child_path(path, name), out);
        }
    }
    for name in &node.required {
        if !map.contains_key(name) {
            out.push(FieldError::required(
                field_of(&format!("{path}.{name}")),
                "",
            ));
        }
    }
}
