//! How every controller error is classified.
//!
//! Each controller has its own `thiserror` enum; every variant answers one question through
//! [`ControllerError::class`]: is retrying going to help, and how soon? The answer drives the
//! error policy ([`crate::reconciler::error_policy`], [`crate::backoff`]), the `class` label of
//! `flotilla_reconcile_errors_total`, and whether an Event is published.
//!
//! Which layer retries what in production is in `docs/architecture.md` ("Who retries what").

use std::fmt;
use std::time::Duration;

use kube::runtime::finalizer;

/// What kind of failure an error is, and therefore what the controller does about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The world may heal by itself (API server unavailable, conflict, throttling, a cache that
    /// is behind): retry with per-object exponential backoff and jitter.
    Transient,
    /// The API server refused with `403 Forbidden`: the operator's RBAC is not in place yet
    /// (it is often applied after the operator starts) or lacks a rule, or an admission rule
    /// such as a ResourceQuota refused a child. Someone has to act, and nothing about the object
    /// changes when they do, so waiting for a change could wait forever: retry, but slowly (at
    /// least `Config::forbidden_backoff`), with a Warning Event when a streak begins.
    Forbidden,
    /// Retrying the same input cannot succeed (the API server rejects what we send, an illegal
    /// phase transition): publish a Warning Event and wait for the object to change. (A spec the
    /// schema cannot check is not an error at all: controllers report it in `Ready=False` and
    /// succeed.)
    Permanent,
}

impl ErrorClass {
    /// Every class, for exhaustive tests and for initialising metric series.
    pub const ALL: [ErrorClass; 3] = [
        ErrorClass::Transient,
        ErrorClass::Forbidden,
        ErrorClass::Permanent,
    ];

    /// The stable `class` label value in metrics. Dashboards and alerts depend on these strings;
    /// never change them.
    pub const fn metric_label(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Forbidden => "forbidden",
            ErrorClass::Permanent => "permanent",
        }
    }

    /// Whether the error policy retries on a timer (transient and forbidden errors are).
    pub const fn is_retried(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::Forbidden)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.metric_label())
    }
}

/// The contract every controller's error enum fulfils.
pub trait ControllerError: std::error::Error + Send + Sync + 'static {
    /// What kind of failure this is.
    fn class(&self) -> ErrorClass;

    /// A stable, low-cardinality name of the variant (`status_write`, `list_subscriptions`), for
    /// logs and Event reasons.
    fn reason(&self) -> &'static str;

    /// The minimum delay the API server asked for (a `429` or `503` with `Retry-After`), if any.
    fn retry_after(&self) -> Option<Duration> {
        None
    }

    /// The note of the Warning Event about this failure, for the person who reads `kubectl
    /// describe`; the error's text unless a variant says it better.
    fn event_note(&self) -> String {
        self.to_string()
    }
}

/// Classifies an error from the Kubernetes API.
///
/// Server errors, throttling, conflicts, timeouts and transport failures are transient: the same
/// request can succeed later. `404 Not Found` is transient too: in a reconcile it means the
/// local cache is behind the server, and the next watch event settles it. `403 Forbidden` is
/// [`ErrorClass::Forbidden`]: it heals when someone grants the permission or frees quota.
/// Other client errors (`400`, `422`, ...) are permanent: the server rejected what we sent and
/// will again.
pub fn classify_kube_error(error: &kube::Error) -> ErrorClass {
    match error {
        kube::Error::Api(status) => classify_status_code(status.code),
        kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)
        | kube::Error::Auth(_) => ErrorClass::Transient,
        // Could not decode what the server sent, or build a request at all: a bug or a version
        // skew that retrying will not fix.
        _ => ErrorClass::Permanent,
    }
}

/// Classifies an HTTP status code returned by the API server (see [`classify_kube_error`]).
pub const fn classify_status_code(code: u16) -> ErrorClass {
    match code {
        404 | 408 | 409 | 429 => ErrorClass::Transient,
        500..=599 => ErrorClass::Transient,
        403 => ErrorClass::Forbidden,
        // `0` means the server did not say; treat it like a transport failure.
        0 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Whether the API server refused a write because a ResourceQuota would be exceeded: the
/// ResourceQuota admission plugin answers `403 Forbidden` with a message containing
/// `exceeded quota: <quota>, requested: ..., used: ..., limited: ...`. A person can act on it
/// (free usage, or raise the quota), so controllers report it on the object, not only in logs.
pub fn is_quota_exceeded(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 403 && status.message.contains("exceeded quota"),
        _ => false,
    }
}

/// The API server's own message for an API error (without kube's debug rendering of the whole
/// `Status`), for condition messages a person reads; other errors as they display.
pub fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// The `Retry-After` the API server sent with a throttling or unavailability error, if any.
pub fn kube_retry_after(error: &kube::Error) -> Option<Duration> {
    match error {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|details| details.retry_after_seconds)
            .filter(|seconds| *seconds > 0)
            .map(|seconds| Duration::from_secs(u64::from(seconds))),
        _ => None,
    }
}

/// Classifies an error from `kube::runtime::finalizer`: the controller's own errors keep their
/// class; failures to add or remove the finalizer are API errors.
pub fn classify_finalizer_error<E: ControllerError>(error: &finalizer::Error<E>) -> ErrorClass {
    match error {
        finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
            inner.class()
        }
        finalizer::Error::AddFinalizer(api) | finalizer::Error::RemoveFinalizer(api) => match api {
            // The finalizer patch is a JSON patch guarded by a `test` of the current finalizer
            // list; the server rejects it as invalid when someone else changed that list
            // meanwhile. A retry against the fresh object succeeds.
            kube::Error::Api(status) if status.code == 422 => ErrorClass::Transient,
            other => classify_kube_error(other),
        },
        finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => {
            ErrorClass::Permanent
        }
    }
}

/// The `Retry-After` carried by a finalizer error, if any.
pub fn finalizer_retry_after<E: ControllerError>(error: &finalizer::Error<E>) -> Option<Duration> {
    match error {
        finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
            inner.retry_after()
        }
        finalizer::Error::AddFinalizer(api) | finalizer::Error::RemoveFinalizer(api) => {
            kube_retry_after(api)
        }
        finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{Status, response::StatusDetails};

    fn api_error(code: u16, retry_after_seconds: u32) -> kube::Error {
        let mut status = Status::failure("boom", "Reason").with_code(code);
        if retry_after_seconds > 0 {
            let details: StatusDetails = serde_json::from_value(
                serde_json::json!({ "retryAfterSeconds": retry_after_seconds }),
            )
            .expect("status details");
            status = status.with_details(details);
        }
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn metric_labels_are_stable_and_distinct() {
        let labels: Vec<_> = ErrorClass::ALL.iter().map(|c| c.metric_label()).collect();
        assert_eq!(labels, ["transient", "forbidden", "permanent"]);
        assert_eq!(ErrorClass::Transient.to_string(), "transient");
    }

    #[test]
    fn transient_and_forbidden_errors_are_retried() {
        assert!(ErrorClass::Transient.is_retried());
        assert!(ErrorClass::Forbidden.is_retried());
        assert!(!ErrorClass::Permanent.is_retried());
    }

    #[test]
    fn api_status_codes_are_classified() {
        for code in [404, 408, 409, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify_kube_error(&api_error(code, 0)),
                ErrorClass::Transient,
                "{code}"
            );
        }
        assert_eq!(
            classify_kube_error(&api_error(403, 0)),
            ErrorClass::Forbidden
        );
        for code in [400, 401, 405, 410, 413, 415, 422] {
            assert_eq!(
                classify_kube_error(&api_error(code, 0)),
                ErrorClass::Permanent,
                "{code}"
            );
        }
    }

    #[test]
    fn transport_failures_are_transient_and_decoding_failures_permanent() {
        let transport = kube::Error::Service("connection reset".into());
        assert_eq!(classify_kube_error(&transport), ErrorClass::Transient);
        let decode = kube::Error::SerdeError(serde_json::from_str::<u8>("x").unwrap_err());
        assert_eq!(classify_kube_error(&decode), ErrorClass::Permanent);
    }

    #[test]
    fn a_quota_refusal_is_told_from_other_forbidden_errors() {
        let quota = kube::Error::Api(
            Status::failure(
                r#"configmaps "flotilla-entitlements" is forbidden: exceeded quota: tenant-limits, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"#,
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        );
        assert!(is_quota_exceeded(&quota));
        assert_eq!(classify_kube_error(&quota), ErrorClass::Forbidden);
        assert!(
            api_message(&quota)
                .starts_with(r#"configmaps "flotilla-entitlements" is forbidden: exceeded quota"#)
        );
        let rbac = kube::Error::Api(
            Status::failure(
                r#"configmaps "x" is forbidden: User "system:serviceaccount:flotilla-system:flotilla" cannot patch resource "configmaps""#,
                "Forbidden",
            )
            .with_code(403)
            .boxed(),
        );
        assert!(!is_quota_exceeded(&rbac));
        assert!(!is_quota_exceeded(&api_error(422, 0)));
        assert!(!is_quota_exceeded(&kube::Error::Service("x".into())));
    }

    #[test]
    fn retry_after_is_read_from_status_details() {
        assert_eq!(
            kube_retry_after(&api_error(429, 3)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(kube_retry_after(&api_error(429, 0)), None);
        assert_eq!(kube_retry_after(&kube::Error::Service("x".into())), None);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(ErrorClass);

    impl ControllerError for Inner {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn reason(&self) -> &'static str {
            "inner"
        }
    }

    #[test]
    fn finalizer_errors_keep_the_inner_class() {
        let apply = finalizer::Error::ApplyFailed(Inner(ErrorClass::Forbidden));
        assert_eq!(classify_finalizer_error(&apply), ErrorClass::Forbidden);
        let cleanup = finalizer::Error::CleanupFailed(Inner(ErrorClass::Transient));
        assert_eq!(classify_finalizer_error(&cleanup), ErrorClass::Transient);
        let add = finalizer::Error::<Inner>::AddFinalizer(api_error(409, 0));
        assert_eq!(classify_finalizer_error(&add), ErrorClass::Transient);
        let remove = finalizer::Error::<Inner>::RemoveFinalizer(api_error(429, 2));
        assert_eq!(finalizer_retry_after(&remove), Some(Duration::from_secs(2)));
        let raced = finalizer::Error::<Inner>::AddFinalizer(api_error(422, 0));
        assert_eq!(classify_finalizer_error(&raced), ErrorClass::Transient);
        let unnamed = finalizer::Error::<Inner>::UnnamedObject;
        assert_eq!(classify_finalizer_error(&unnamed), ErrorClass::Permanent);
    }
}
