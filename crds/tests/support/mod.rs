//! Test support: admits an object the way the kube-apiserver would for a CRD — defaults, then
//! the OpenAPI value validations of the structural schema, then the CEL rules — without a
//! server. The OpenAPI part covers the keywords Flotilla's schemas use (type, nullable, enum,
//! required, numeric and length bounds, pattern, list types); CEL is evaluated by kube-cel.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

/// The `openAPIV3Schema` of a CRD, as JSON.
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("every Flotilla CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

/// Admits `object` as a `K` (create when `old` is None, update otherwise); the errors are
/// `path: message` strings.
pub fn admit<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Result<(), Vec<String>> {
    let schema = schema_of(&K::crd());
    let defaulted = kube_cel::apply_defaults(&schema, object);
    let mut errors = Vec::new();
    // metadata is validated by the apiserver itself, not by the CRD schema.
    let mut body = defaulted.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
    }
    check(&schema, &body, "", &mut errors);
    if let Err(cel_errors) = kube_cel::Validator::new().validate(&schema, object, old) {
        errors.extend(cel_errors.into_vec().into_iter().map(|e| e.to_string()));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Asserts that admission fails with an error containing `needle`.
#[track_caller]
pub fn assert_rejected<K: CustomResourceExt>(object: &Value, old: Option<&Value>, needle: &str) {
    match admit::<K>(object, old) {
        Ok(()) => panic!(
            "expected rejection containing {needle:?}, but the object was admitted:\n{object:#}"
        ),
        Err(errors) => assert!(
            errors.iter().any(|e| e.contains(needle)),
            "expected an error containing {needle:?}, got {errors:#?}"
        ),
    }
}

/// Asserts that admission succeeds.
#[track_caller]
pub fn assert_admitted<K: CustomResourceExt>(object: &Value, old: Option<&Value>) {
    if let Err(errors) = admit::<K>(object, old) {
        panic!("expected the object to be admitted, got {errors:#?}\n{object:#}");
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let fail = |errors: &mut Vec<String>, message: String| {
        errors.push(format!(
            "{}: {message}",
            if path.is_empty() { "<root>" } else { path }
        ));
    };
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            fail(errors, "must not be null".into());
        }
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if int_or_string {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            fail(
                errors,
                format!("must be an integer or a string, got {value}"),
            );
            return;
        }
    } else if let Some(type_) = schema.get("type").and_then(Value::as_str) {
        let ok = match type_ {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("unexpected schema type {other}"),
        };
        if !ok {
            fail(errors, format!("must be of type {type_}, got {value}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        fail(
            errors,
            format!("Unsupported value: {value}: supported values: {allowed:?}"),
        );
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            fail(errors, format!("should be greater than or equal to {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            fail(errors, format!("should be less than or equal to {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            fail(errors, format!("should be at least {min} chars long"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            fail(
                errors,
                format!("Too long: may not be more than {max} bytes"),
            );
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let regex =
                regex::Regex::new(pattern).unwrap_or_else(|e| panic!("bad pattern {pattern}: {e}"));
            if !regex.is_match(s) {
                fail(errors, format!("should match '{pattern}'"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            fail(errors, format!("should have at least {min} items"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            fail(errors, format!("Too many: must have at most {max} items"));
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                let mut seen = BTreeSet::new();
                for item in items {
                    if !seen.insert(item.to_string()) {
                        fail(errors, format!("Duplicate value: {item}"));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .expect("list-map keys")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                let mut seen = BTreeSet::new();
                for item in items {
                    let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                    if !seen.insert(key.clone()) {
                        fail(errors, format!("Duplicate value: {key:?}"));
                    }
                }
            }
            _ => {}
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && object.len() as u64 > max
        {
            fail(
                errors,
                format!("Too many: must have at most {max} properties"),
            );
        }
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for field in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(field) {
                    errors.push(format!("{}: Required value", join(path, field)));
                }
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (key, field_value) in object {
            let field_path = join(path, key);
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(field_schema), _) => check(field_schema, field_value, &field_path, errors),
                (None, Some(value_schema)) if value_schema.is_object() => {
                    check(value_schema, field_value, &field_path, errors)
                }
                // The apiserver prunes unknown fields; kubectl's strict field validation
                // reports them. Either way the object a controller sees lacks them.
                _ => errors.push(format!("{field_path}: unknown field")),
            }
        }
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}
