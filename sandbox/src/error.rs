//! The error every handler returns: an HTTP status and a `metav1.Status` body.

use http::StatusCode;
use serde_json::Value;

/// A failed API request, rendered as the apiserver renders it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: StatusCode,
    pub body: Value,
    /// Seconds for the `Retry-After` header (429 and some 5xx).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: StatusCode, body: Value) -> Self {
        Self {
            code,
            body,
            retry_after: None,
        }
    }

    pub fn reason(&self) -> &str {
        self.body
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

impl From<(StatusCode, Value)> for ApiError {
    fn from((code, body): (StatusCode, Value)) -> Self {
        let retry_after = body
            .pointer("/details/retryAfterSeconds")
            .and_then(Value::as_u64);
        Self {
            code,
            body,
            retry_after,
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Status bodies the core needs beyond [`crate::status_error`]'s object-level builders.
pub mod statuses {
    use http::StatusCode;
    use serde_json::{Value, json};

    fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
        (
            code,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": message, "reason": reason,
                "details": {}, "code": code.as_u16(),
            }),
        )
    }

    /// 404 for a path the server does not serve at all.
    pub fn not_found_path(path: &str) -> (StatusCode, Value) {
        let _ = path;
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 for a resource (or subresource) the group-version does not serve.
    pub fn resource_not_served(resource: &str) -> (StatusCode, Value) {
        let (code, mut body) = status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
        body["details"] = json!({"kind": resource});
        (code, body)
    }

    /// 422 for a patch that cannot be applied to the object.
    pub fn unprocessable(message: &str) -> (StatusCode, Value) {
        status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
    }

    /// 400 for a malformed patch document.
    pub fn malformed(message: &str) -> (StatusCode, Value) {
        status(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// An injected fault with an arbitrary code: the reason the apiserver uses for that code.
    pub fn injected(code: StatusCode) -> (StatusCode, Value) {
        let reason = match code.as_u16() {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        status(code, reason, &format!("injected fault: {}", code.as_u16()))
    }
}
