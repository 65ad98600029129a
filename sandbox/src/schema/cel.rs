//! `x-kubernetes-validations`: CEL rules compiled once per CRD with the `kube-cel` crate and
//! evaluated like apiextensions-apiserver's `cel.Validator`: rules run on non-null values, a
//! rule that uses `oldSelf` (a transition rule) runs only when an old value correlates (or it
//! sets `optionalOldSelf`), and failures become field errors at the rule's node (or its
//! `fieldPath`) with the rule's `message`, `messageExpression` and `reason`.

use serde_json::Value;

use super::field_error::{FieldError, FieldErrorReason};
use super::node::strip_nested_rules;

/// One compiled rule of a schema node.
#[derive(Debug)]
pub(crate) struct CelRule {
    rule: String,
    message: Option<String>,
    has_message_expression: bool,
    reason: Option<FieldErrorReason>,
    /// The rule's `fieldPath`, already in `field.Path` form relative to the node (`a.b[key]`).
    field_path: Option<String>,
    optional_old_self: bool,
    uses_old_self: bool,
    /// The node's `type`, shown as the bad value of evaluation errors.
    node_type: String,
    /// The node's schema with this rule as its only rule, so that `kube-cel` converts `self`
    /// with the node's formats and evaluates exactly this rule.
    program: kube_cel::CompiledSchema,
}

/// Compiles the rules of one schema node. A rule that does not compile makes the CRD invalid,
/// as the apiserver rejects such CRDs at registration.
pub(crate) fn compile_rules(
    schema: &Value,
    path: &str,
    node_type: &str,
) -> Result<Vec<CelRule>, String> {
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return Ok(Vec::new());
    };
    let mut base = schema
        .as_object()
        .cloned()
        .ok_or_else(|| format!("{path}: must be a schema object"))?;
    strip_nested_rules(&mut base);

    rules
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let at = format!("{path}.x-kubernetes-validations[{i}]");
            let rule = raw
                .get("rule")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}.rule: Required value"))?
                .to_string();
            let reason = match raw.get("reason").and_then(Value::as_str) {
                None => None,
                Some(r) => Some(
                    FieldErrorReason::parse(r)
                        .filter(|r| {
                            matches!(
                                r,
                                FieldErrorReason::Invalid
                                    | FieldErrorReason::Forbidden
                                    | FieldErrorReason::Required
                                    | FieldErrorReason::Duplicate
                            )
                        })
                        .ok_or_else(|| format!("{at}.reason: Unsupported value: {r:?}"))?,
                ),
            };
            let field_path = match raw.get("fieldPath").and_then(Value::as_str) {
                None | Some("") => None,
                Some(fp) => Some(
                    normalize_field_path(fp, schema)
                        .map_err(|e| format!("{at}.fieldPath: Invalid value: {fp:?}: {e}"))?,
                ),
            };

            let mut single = base.clone();
            single.insert(
                "x-kubernetes-validations".to_string(),
                Value::Array(vec![raw.clone()]),
            );
            let program = kube_cel::compile_schema(&Value::Object(single));
            if let Some(err) = program.compilation_errors().first() {
                return Err(format!("{at}.rule: Invalid value: {rule:?}: {err}"));
            }
            let uses_old_self = program
                .validations
                .first()
                .and_then(|r| r.as_ref().ok())
                .is_some_and(|c| c.is_transition_rule);

            Ok(CelRule {
                message: raw
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .map(str::to_string),
                has_message_expression: raw
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .is_some_and(|m| !m.is_empty()),
                reason,
                field_path,
                optional_old_self: raw
                    .get("optionalOldSelf")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                uses_old_self,
                node_type: node_type.to_string(),
                program,
                rule,
            })
        })
        .collect()
}

impl CelRule {
    /// Evaluates the rule on `value` (non-null) at `path` (a `field.Path` string, empty for
    /// the object root), pushing a field error when it does not hold.
    pub(crate) fn evaluate(
        &self,
        value: &Value,
        old: Option<&Value>,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) {
        if self.uses_old_self && old.is_none() && !self.optional_old_self {
            return;
        }
        // Ratcheting: a rule that does not look at oldSelf cannot newly fail on an unchanged
        // value; the apiserver downgrades such failures to warnings.
        if !self.uses_old_self && old == Some(value) {
            return;
        }
        let old = if self.uses_old_self { old } else { None };
        let Err(failures) = kube_cel::validate_compiled(&self.program, value, old) else {
            return;
        };
        for failure in failures.iter() {
            errors.push(self.field_error(failure, value, path));
        }
    }

    fn field_error(
        &self,
        failure: &kube_cel::ValidationError,
        value: &Value,
        path: &str,
    ) -> FieldError {
        let node_field = report_path(path);
        match failure.kind {
            kube_cel::ErrorKind::ValidationFailure => {
                let field = match &self.field_path {
                    Some(fp) => report_path(&join(path, fp)),
                    None => node_field,
                };
                let detail = if self.has_message_expression {
                    failure.message.trim().to_string()
                } else {
                    self.message
                        .clone()
                        .unwrap_or_else(|| format!("failed rule: {}", self.rule.trim()))
                };
                // Objects and arrays are not echoed back in the message.
                let shown = (!value.is_object() && !value.is_array()).then_some(value);
                match (self.reason, shown) {
                    (Some(FieldErrorReason::Forbidden), _) => FieldError::forbidden(field, &detail),
                    (Some(FieldErrorReason::Required), _) => FieldError::required(field, &detail),
                    (Some(FieldErrorReason::Duplicate), Some(v)) => FieldError::duplicate(field, v),
                    (Some(FieldErrorReason::Duplicate), None) => {
                        FieldError::duplicate_without_value(field)
                    }
                    (_, Some(v)) => FieldError::invalid(field, v, &detail),
                    (_, None) => FieldError::invalid_without_value(field, &detail),
                }
            }
            _ => {
                let cause = std::error::Error::source(failure)
                    .map(|e| lowercase_first(&e.to_string()))
                    .unwrap_or_else(|| failure.message.clone());
                FieldError::invalid(
                    node_field,
                    &Value::String(self.node_type.clone()),
                    &format!("{cause} evaluating rule: {}", self.rule.trim()),
                )
            }
        }
    }
}

/// cel-go's runtime errors start in lower case (`no such key: x`); the `cel` crate's are
/// capitalised (`No such key: x`).
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Joins a relative `field.Path` string onto a base path.
fn join(base: &str, relative: &str) -> String {
    if base.is_empty() {
        relative.to_string()
    } else if relative.starts_with('[') {
        format!("{base}{relative}")
    } else {
        format!("{base}.{relative}")
    }
}

/// The field of an error: the apiserver prints the nil root path as `<nil>`.
pub(crate) fn report_path(path: &str) -> String {
    if path.is_empty() {
        "<nil>".to_string()
    } else {
        path.to_string()
    }
}

/// Turns a rule's `fieldPath` (`.spec.replicas`, `.labels['a.b']`) into `field.Path` form,
/// checking it names a field of the schema like `cel.ValidFieldPath` does.
fn normalize_field_path(field_path: &str, schema: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut node = schema;
    let mut rest = field_path;
    while !rest.is_empty() {
        let name = if let Some(after) = rest.strip_prefix(".") {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Err("unexpected end of JSON path".to_string());
            }
            rest = &after[end..];
            after[..end].to_string()
        } else if let Some(after) = rest.strip_prefix("['") {
            let end = after
                .find("']")
                .ok_or_else(|| "expected ] but got end of path".to_string())?;
            rest = &after[end + 2..];
            after[..end].replace("\\'", "'").replace("\\\\", "\\")
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        };
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            node = props
                .get(&name)
                .ok_or_else(|| "does not refer to a valid field".to_string())?;
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&name);
        } else if let Some(additional) = node.get("additionalProperties").filter(|a| a.is_object())
        {
            node = additional;
            out.push_str(&format!("[{name}]"));
        } else {
            return Err("does not refer to a valid field".to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_paths_normalise_against_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        });
        assert_eq!(
            normalize_field_path(".spec.replicas", &schema).unwrap(),
            "spec.replicas"
        );
        assert_eq!(
            normalize_field_path(".labels['a.b']", &schema).unwrap(),
            "labels[a.b]"
        );
        assert!(normalize_field_path(".spec.nope", &schema).is_err());
    }

    #[test]
    fn rules_that_do_not_compile_are_rejected() {
        let schema = json!({
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self.replicas >="}]
        });
        let err = compile_rules(&schema, "openAPIV3Schema", "object").unwrap_err();
        assert!(err.contains("x-kubernetes-validations[0].rule"), "{err}");
    }
}
