//! Field-level validation errors, shaped like apimachinery's `field.Error`: the reason is a
//! `metav1.CauseType` and the message is the error body (`Invalid value: -1: ...`) that the
//! apiserver puts into `Status.details.causes[].message`.

use std::fmt;

use serde_json::Value;

use super::go_fmt;

/// Why a field is invalid; the names are the `metav1.CauseType` values the apiserver sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldErrorReason {
    /// `FieldValueNotFound`: a referenced value does not exist.
    NotFound,
    /// `FieldValueRequired`: a required value is missing.
    Required,
    /// `FieldValueDuplicate`: a value that must be unique is repeated.
    Duplicate,
    /// `FieldValueInvalid`: the value is malformed or out of range.
    Invalid,
    /// `FieldValueNotSupported`: the value is not one of the enumerated values.
    NotSupported,
    /// `FieldValueForbidden`: the value is not allowed under the current conditions.
    Forbidden,
    /// `FieldValueTooLong`: the value is too long.
    TooLong,
    /// `FieldValueTooMany`: a list or map has too many items.
    TooMany,
    /// `InternalError`: the server failed while validating.
    Internal,
    /// `FieldValueTypeInvalid`: the value does not have the schema's type.
    TypeInvalid,
}

impl FieldErrorReason {
    /// The `metav1.CauseType` string, e.g. `FieldValueInvalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// Parses a `metav1.CauseType` string (as used by `x-kubernetes-validations[].reason`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FieldValueNotFound" => Self::NotFound,
            "FieldValueRequired" => Self::Required,
            "FieldValueDuplicate" => Self::Duplicate,
            "FieldValueInvalid" => Self::Invalid,
            "FieldValueNotSupported" => Self::NotSupported,
            "FieldValueForbidden" => Self::Forbidden,
            "FieldValueTooLong" => Self::TooLong,
            "FieldValueTooMany" => Self::TooMany,
            "InternalError" => Self::Internal,
            "FieldValueTypeInvalid" => Self::TypeInvalid,
            _ => return None,
        })
    }

    /// The human summary that starts an error body, e.g. `Invalid value`.
    pub fn summary(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
        }
    }
}

impl fmt::Display for FieldErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invalid field of an object, as reported in a 422 `Invalid` status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.waves[2].percent` (`<nil>` for errors about the whole object,
    /// as the apiserver reports them).
    pub field: String,
    /// The cause type.
    pub reason: FieldErrorReason,
    /// The error body without the field, e.g.
    /// `Invalid value: -1: spec.trialDays in body should be greater than or equal to 0`.
    pub message: String,
}

/// The value shown in an error body, or none (`field.OmitValueType`).
enum BadValue<'a> {
    Shown(&'a Value),
    Omitted,
}

impl FieldError {
    fn build(
        field: impl Into<String>,
        reason: FieldErrorReason,
        value: BadValue<'_>,
        detail: &str,
    ) -> Self {
        // Mirrors field.Error.ErrorBody: some types never print the value.
        let mut message = match (reason, value) {
            (
                FieldErrorReason::Required
                | FieldErrorReason::Forbidden
                | FieldErrorReason::TooLong
                | FieldErrorReason::Internal,
                _,
            )
            | (_, BadValue::Omitted) => reason.summary().to_string(),
            (_, BadValue::Shown(v)) => format!("{}: {}", reason.summary(), render_bad_value(v)),
        };
        if !detail.is_empty() {
            message.push_str(": ");
            message.push_str(detail);
        }
        FieldError {
            field: field.into(),
            reason,
            message,
        }
    }

    /// `field.Required`: `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        Self::build(field, FieldErrorReason::Required, BadValue::Omitted, detail)
    }

    /// `field.Invalid`: `Invalid value: <value>: detail`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self::build(
            field,
            FieldErrorReason::Invalid,
            BadValue::Shown(value),
            detail,
        )
    }

    /// `field.Invalid` with `field.OmitValueType{}`: `Invalid value: detail`.
    pub fn invalid_without_value(field: impl Into<String>, detail: &str) -> Self {
        Self::build(field, FieldErrorReason::Invalid, BadValue::Omitted, detail)
    }

    /// `field.TypeInvalid`: `Invalid value: <value>: detail` with cause `FieldValueTypeInvalid`.
    pub fn type_invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        Self::build(
            field,
            FieldErrorReason::TypeInvalid,
            BadValue::Shown(value),
            detail,
        )
    }

    /// `field.NotSupported`: `Unsupported value: <value>: supported values: "a", "b"`.
    pub fn not_supported(field: impl Into<String>, value: &Value, supported: &[String]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_fmt::quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::build(
            field,
            FieldErrorReason::NotSupported,
            BadValue::Shown(value),
            &detail,
        )
    }

    /// `field.Duplicate`: `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        Self::build(
            field,
            FieldErrorReason::Duplicate,
            BadValue::Shown(value),
            "",
        )
    }

    /// `field.Duplicate` with `field.OmitValueType{}`: `Duplicate value`.
    pub fn duplicate_without_value(field: impl Into<String>) -> Self {
        Self::build(field, FieldErrorReason::Duplicate, BadValue::Omitted, "")
    }

    /// `field.NotFound`: `Not found: <value>`.
    pub fn not_found(field: impl Into<String>, value: &Value) -> Self {
        Self::build(
            field,
            FieldErrorReason::NotFound,
            BadValue::Shown(value),
            "",
        )
    }

    /// `field.Forbidden`: `Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        Self::build(
            field,
            FieldErrorReason::Forbidden,
            BadValue::Omitted,
            detail,
        )
    }

    /// `field.TooLong`: `Too long: may not be more than <max> bytes`.
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        Self::build(
            field,
            FieldErrorReason::TooLong,
            BadValue::Omitted,
            &format!("may not be more than {max_bytes} {unit}"),
        )
    }

    /// `field.TooMany`: `Too many: <actual>: must have at most <max> items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self::build(
            field,
            FieldErrorReason::TooMany,
            BadValue::Shown(&Value::from(actual)),
            &format!("must have at most {max} {unit}"),
        )
    }

    /// `field.InternalError`: `Internal error: detail`.
    pub fn internal(field: impl Into<String>, detail: &str) -> Self {
        Self::build(field, FieldErrorReason::Internal, BadValue::Omitted, detail)
    }
}

impl fmt::Display for FieldError {
    /// `field.Error.Error()`: `<field>: <body>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// How `field.Error.ErrorBody` prints a bad value: scalars with `%v`, strings with `%q`, a
/// missing value as `"null"`, and compound values with `%#v`.
fn render_bad_value(value: &Value) -> String {
    match value {
        Value::Null => go_fmt::quote("null"),
        Value::String(s) => go_fmt::quote(s),
        Value::Bool(_) | Value::Number(_) => go_fmt::plain(value),
        Value::Array(_) | Value::Object(_) => go_fmt::go_syntax(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_match_apimachinery() {
        let e = FieldError::invalid("spec.trialDays", &json!(-1), "should be positive");
        assert_eq!(e.message, "Invalid value: -1: should be positive");
        assert_eq!(
            e.to_string(),
            "spec.trialDays: Invalid value: -1: should be positive"
        );
        assert_eq!(
            FieldError::required("spec.plan", "").message,
            "Required value"
        );
        assert_eq!(
            FieldError::not_supported(
                "spec.tier",
                &json!("platinum"),
                &["gold".into(), "silver".into()]
            )
            .message,
            "Unsupported value: \"platinum\": supported values: \"gold\", \"silver\""
        );
        assert_eq!(
            FieldError::too_long("spec.name", 63).message,
            "Too long: may not be more than 63 bytes"
        );
        assert_eq!(
            FieldError::too_many("spec.waves", 12, 10).message,
            "Too many: 12: must have at most 10 items"
        );
        assert_eq!(
            FieldError::duplicate("spec.waves[1]", &json!({"name": "a"})).message,
            "Duplicate value: map[string]interface {}{\"name\":\"a\"}"
        );
        assert_eq!(
            FieldError::invalid("<nil>", &Value::Null, "x").message,
            "Invalid value: \"null\": x"
        );
        assert_eq!(
            FieldError::forbidden("spec.x", "may not change").message,
            "Forbidden: may not change"
        );
    }

    #[test]
    fn reasons_round_trip() {
        for r in [
            FieldErrorReason::NotFound,
            FieldErrorReason::Required,
            FieldErrorReason::Duplicate,
            FieldErrorReason::Invalid,
            FieldErrorReason::NotSupported,
            FieldErrorReason::Forbidden,
            FieldErrorReason::TooLong,
            FieldErrorReason::TooMany,
            FieldErrorReason::Internal,
            FieldErrorReason::TypeInvalid,
        ] {
            assert_eq!(FieldErrorReason::parse(r.as_str()), Some(r));
        }
    }
}
