//! `metav1.Status` error bodies with the messages, reasons, codes and details of
//! kube-apiserver (apimachinery `api/errors`), so that clients such as kube-rs
//! (`kube::Error::Api`) and kubectl see what a real cluster would send.
//!
//! Every builder returns the HTTP status code and the JSON body.

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::apply::Conflict;
use crate::schema::{FieldError, FieldErrorReason};

/// The optimistic-concurrency failure detail of a `Conflict` status.
pub const OBJECT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// The message of a throttled request (the apiserver's max-in-flight and priority-and-fairness
/// filters).
pub const TOO_MANY_REQUESTS: &str = "Too many requests, please try again later.";

/// `resource.group`, or the bare resource for the core group (`pods`).
fn qualified(group: &str, plural_or_kind: &str) -> String {
    if group.is_empty() {
        plural_or_kind.to_string()
    } else {
        format!("{plural_or_kind}.{group}")
    }
}

/// Go's `%q` of a name.
fn quoted(name: &str) -> String {
    crate::schema::go_fmt::quote(name)
}

fn status(
    code: StatusCode,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> (StatusCode, Value) {
    let mut body = Map::new();
    body.insert("kind".into(), "Status".into());
    body.insert("apiVersion".into(), "v1".into());
    body.insert("metadata".into(), json!({}));
    body.insert("status".into(), "Failure".into());
    body.insert("message".into(), message.into());
    if !reason.is_empty() {
        body.insert("reason".into(), reason.into());
    }
    if let Some(details) = details {
        body.insert("details".into(), details);
    }
    body.insert("code".into(), code.as_u16().into());
    (code, Value::Object(body))
}

/// `details` naming one object, with empty fields omitted like `omitempty` does.
fn object_details(group: &str, kind: &str, name: &str) -> Value {
    let mut details = Map::new();
    if !name.is_empty() {
        details.insert("name".into(), name.into());
    }
    if !group.is_empty() {
        details.insert("group".into(), group.into());
    }
    if !kind.is_empty() {
        details.insert("kind".into(), kind.into());
    }
    Value::Object(details)
}

/// 404 `NotFound`: `plans.flotilla.dev "gold" not found`.
pub fn not_found(group: &str, resource: &str, name: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} {} not found", qualified(group, resource), quoted(name)),
        Some(object_details(group, resource, name)),
    )
}

/// 409 `AlreadyExists`: `plans.flotilla.dev "gold" already exists`.
pub fn already_exists(group: &str, resource: &str, name: &str) -> (StatusCode, Value) {
    status(
        StatusCode::CONFLICT,
        "AlreadyExists",
        &format!(
            "{} {} already exists",
            qualified(group, resource),
            quoted(name)
        ),
        Some(object_details(group, resource, name)),
    )
}

/// 409 `Conflict`: `Operation cannot be fulfilled on plans.flotilla.dev "gold": <detail>`.
/// Use [`OBJECT_MODIFIED`] as the detail for a stale `resourceVersion`.
pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> (StatusCode, Value) {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} {}: {detail}",
            qualified(group, resource),
            quoted(name)
        ),
        Some(object_details(group, resource, name)),
    )
}

/// 409 `Conflict` for a write with a stale `resourceVersion`.
pub fn conflict_modified(group: &str, resource: &str, name: &str) -> (StatusCode, Value) {
    conflict(group, resource, name, OBJECT_MODIFIED)
}

/// 422 `Invalid`: `Plan.flotilla.dev "gold" is invalid: spec.trialDays: Invalid value: ...`,
/// one `details.causes` entry per field error. Several errors are listed as `[a, b]`, with
/// repeated messages shown once, like `field.ErrorList.ToAggregate`.
pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> (StatusCode, Value) {
    let qualified_kind = qualified(group, kind);
    let mut shown: Vec<String> = Vec::new();
    for error in errors {
        let text = error.to_string();
        if !shown.contains(&text) {
            shown.push(text);
        }
    }
    let message = match shown.as_slice() {
        [] => format!("{qualified_kind} {} is invalid", quoted(name)),
        [one] => format!("{qualified_kind} {} is invalid: {one}", quoted(name)),
        many => format!(
            "{qualified_kind} {} is invalid: [{}]",
            quoted(name),
            many.join(", ")
        ),
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason.as_str(), "message": e.message, "field": e.field}))
        .collect();
    let mut details = object_details(group, kind, name);
    details["causes"] = Value::Array(causes);
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &message,
        Some(details),
    )
}

/// 422 `Invalid` for an update without `metadata.resourceVersion` on a kind that requires one
/// (custom resources): `plans.flotilla.dev "gold" is invalid: metadata.resourceVersion: Invalid
/// value: 0x0: must be specified for an update`. The apiserver names the resource where the
/// kind belongs and prints the missing version as Go's `%#v` of `uint64(0)`.
pub fn resource_version_required(group: &str, resource: &str, name: &str) -> (StatusCode, Value) {
    let error = FieldError {
        field: "metadata.resourceVersion".to_string(),
        reason: FieldErrorReason::Invalid,
        message: "Invalid value: 0x0: must be specified for an update".to_string(),
    };
    invalid(resource, group, name, &[error])
}

/// 400 `BadRequest` for `fieldValidation=Strict` when the body has fields the schema does not
/// know (see [`crate::schema::CrdSchema::unknown_fields`]): `Plan in version "v1alpha1" cannot
/// be handled as a Plan: strict decoding error: unknown field "spec.foo"`.
pub fn strict_decoding(
    kind: &str,
    version: &str,
    unknown_fields: &[String],
) -> (StatusCode, Value) {
    let listed: Vec<String> = unknown_fields
        .iter()
        .map(|f| format!("unknown field {}", quoted(f)))
        .collect();
    bad_request(&format!(
        "{kind} in version {} cannot be handled as a {kind}: strict decoding error: {}",
        quoted(version),
        listed.join(", ")
    ))
}

/// The warning the apiserver returns (as a `Warning: 299 - "..."` header) for each unknown
/// field under `fieldValidation=Warn`: `unknown field "spec.foo"`.
pub fn unknown_field_warning(field: &str) -> String {
    format!("unknown field {}", quoted(field))
}

/// 400 `BadRequest` with the given message.
pub fn bad_request(message: &str) -> (StatusCode, Value) {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// 405 `MethodNotAllowed`: `<action> is not supported on resources of kind "plans.flotilla.dev"`.
pub fn method_not_allowed(group: &str, resource: &str, action: &str) -> (StatusCode, Value) {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        &format!(
            "{action} is not supported on resources of kind {}",
            quoted(&qualified(group, resource))
        ),
        Some(object_details(group, resource, "")),
    )
}

/// 415 `UnsupportedMediaType` for a request body (or patch) type the endpoint does not take.
pub fn unsupported_media_type(accepted: &[&str]) -> (StatusCode, Value) {
    status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepted.join(", ")
        ),
        None,
    )
}

/// 406 `NotAcceptable` for an `Accept` header the server cannot satisfy.
pub fn not_acceptable(accepted: &[&str]) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_ACCEPTABLE,
        "NotAcceptable",
        &format!(
            "only the following media types are accepted: {}",
            accepted.join(", ")
        ),
        None,
    )
}

/// 410 `Expired` (`NewResourceExpired`), used for watches and continue tokens that are too old.
pub fn gone(message: &str) -> (StatusCode, Value) {
    status(StatusCode::GONE, "Expired", message, None)
}

/// 410 `Expired` for a watch from a resourceVersion older than the retained event window:
/// `too old resource version: <requested> (<oldest retained>)`.
pub fn too_old_resource_version(requested: u64, oldest: u64) -> (StatusCode, Value) {
    gone(&format!("too old resource version: {requested} ({oldest})"))
}

/// 504 `Timeout` for a read at a resourceVersion the server has not reached
/// (`storage.NewTooLargeResourceVersionError`), retried by clients after a second.
pub fn too_large_resource_version(requested: u64, current: u64) -> (StatusCode, Value) {
    let (code, mut body) = timeout(
        &format!("Too large resource version: {requested}, current: {current}"),
        1,
    );
    body["details"]["causes"] = json!([
        {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    ]);
    (code, body)
}

/// 429 `TooManyRequests` with `details.retryAfterSeconds`; the response should also carry a
/// `Retry-After: <seconds>` header (see [`retry_after_seconds`]).
pub fn too_many_requests(retry_after_seconds: u32) -> (StatusCode, Value) {
    status(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        TOO_MANY_REQUESTS,
        Some(json!({"retryAfterSeconds": retry_after_seconds})),
    )
}

/// 500 `InternalError`: `Internal error occurred: <message>`.
pub fn internal(message: &str) -> (StatusCode, Value) {
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &format!("Internal error occurred: {message}"),
        Some(json!({"causes": [{"message": message}]})),
    )
}

/// 503 `ServiceUnavailable` with the given message.
pub fn service_unavailable(message: &str) -> (StatusCode, Value) {
    status(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        message,
        None,
    )
}

/// 504 `Timeout`: `Timeout: <message>`, with `details.retryAfterSeconds` when non-zero.
pub fn timeout(message: &str, retry_after_seconds: u32) -> (StatusCode, Value) {
    let details =
        (retry_after_seconds > 0).then(|| json!({"retryAfterSeconds": retry_after_seconds}));
    status(
        StatusCode::GATEWAY_TIMEOUT,
        "Timeout",
        &format!("Timeout: {message}"),
        details,
    )
}

/// 403 `Forbidden`: `plans.flotilla.dev "gold" is forbidden: <reason>` (without a name:
/// `plans.flotilla.dev is forbidden: <reason>`).
pub fn forbidden(group: &str, resource: &str, name: &str, reason: &str) -> (StatusCode, Value) {
    let qualified_resource = qualified(group, resource);
    let message = match (qualified_resource.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {reason}"),
        (false, true) => format!("{qualified_resource} is forbidden: {reason}"),
        (false, false) => format!(
            "{qualified_resource} {} is forbidden: {reason}",
            quoted(name)
        ),
    };
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &message,
        Some(object_details(group, resource, name)),
    )
}

/// 403 `Forbidden` for a create in a namespace that is being deleted, with the
/// `NamespaceTerminating` cause the apiserver's lifecycle admission adds.
pub fn namespace_terminating(
    group: &str,
    resource: &str,
    name: &str,
    namespace: &str,
) -> (StatusCode, Value) {
    let reason = format!(
        "unable to create new content in namespace {namespace} because it is being terminated"
    );
    let (code, mut body) = forbidden(group, resource, name, &reason);
    body["details"]["causes"] = json!([{
        "reason": "NamespaceTerminating",
        "message": format!("namespace {namespace} is being terminated"),
        "field": "metadata.namespace"
    }]);
    (code, body)
}

/// 409 `Conflict` for a server-side apply that would change fields owned by other managers,
/// one `FieldManagerConflict` cause per field (`Apply failed with 1 conflict: conflict with
/// "kubectl": .spec.replicas`). A manager may also be the JSON-encoded managed-fields entry
/// structured-merge-diff uses, which is printed like the apiserver does
/// (`"kubectl" using v1 at 2024-05-01T10:00:00Z`).
pub fn conflict_apply(conflicts: &[Conflict]) -> (StatusCode, Value) {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", print_manager(&c.manager)),
                "field": c.field
            })
        })
        .collect();
    let message = if let [only] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            print_manager(&only.manager),
            only.field
        )
    } else {
        let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
        managers.sort_unstable();
        managers.dedup();
        let mut lines = Vec::new();
        for manager in managers {
            lines.push(format!("conflicts with {}:", print_manager(manager)));
            for c in conflicts.iter().filter(|c| c.manager == manager) {
                lines.push(format!("- {}", c.field));
            }
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &message,
        Some(json!({"causes": causes})),
    )
}

/// The apiserver's `printManager`: a JSON-encoded managed-fields entry is shown with its
/// operation details, anything else as a quoted name.
fn print_manager(manager: &str) -> String {
    let Ok(entry) = serde_json::from_str::<Map<String, Value>>(manager) else {
        return quoted(manager);
    };
    let text = |k: &str| entry.get(k).and_then(Value::as_str).unwrap_or("");
    let mut printed = quoted(text("manager"));
    if !text("subresource").is_empty() {
        printed = format!("{printed} with subresource {}", quoted(text("subresource")));
    }
    if text("operation") == "Update" {
        printed = if text("time").is_empty() {
            format!("{printed} using {}", text("apiVersion"))
        } else {
            format!("{printed} using {} at {}", text("apiVersion"), text("time"))
        };
    }
    printed
}

/// `details.retryAfterSeconds` of a status body, for the `Retry-After` header.
pub fn retry_after_seconds(status: &Value) -> Option<u32> {
    status
        .pointer("/details/retryAfterSeconds")
        .and_then(Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
        .filter(|s| *s > 0)
}
