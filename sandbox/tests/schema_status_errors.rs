//! Status error bodies: the apiserver's messages and reasons, readable by kube-rs.

use flotilla_sandbox::apply::Conflict;
use flotilla_sandbox::schema::FieldError;
use flotilla_sandbox::status_error as se;
use http::StatusCode;
use kube::core::Status;
use serde_json::{Value, json};

fn conflict(manager: &str, field: &str) -> Conflict {
    Conflict {
        manager: manager.to_string(),
        field: field.to_string(),
    }
}

fn parse(body: &Value) -> Status {
    serde_json::from_value(body.clone()).expect("kube-rs reads the body as a Status")
}

#[test]
fn every_builder_is_a_status_kube_rs_understands() {
    let invalid_errors = [FieldError::invalid("spec.x", &json!(1), "nope")];
    let cases: Vec<((StatusCode, Value), u16, &str)> = vec![
        (
            se::not_found("flotilla.dev", "plans", "gold"),
            404,
            "NotFound",
        ),
        (
            se::already_exists("flotilla.dev", "plans", "gold"),
            409,
            "AlreadyExists",
        ),
        (
            se::conflict_modified("flotilla.dev", "plans", "gold"),
            409,
            "Conflict",
        ),
        (
            se::invalid("Plan", "flotilla.dev", "gold", &invalid_errors),
            422,
            "Invalid",
        ),
        (se::bad_request("bad"), 400, "BadRequest"),
        (
            se::method_not_allowed("flotilla.dev", "plans", "watch"),
            405,
            "MethodNotAllowed",
        ),
        (
            se::unsupported_media_type(&["application/json"]),
            415,
            "UnsupportedMediaType",
        ),
        (
            se::not_acceptable(&["application/json"]),
            406,
            "NotAcceptable",
        ),
        (se::too_old_resource_version(5, 10), 410, "Expired"),
        (se::too_many_requests(3), 429, "TooManyRequests"),
        (se::internal("boom"), 500, "InternalError"),
        (se::service_unavailable("down"), 503, "ServiceUnavailable"),
        (se::timeout("slow", 2), 504, "Timeout"),
        (
            se::forbidden("", "namespaces", "kube-system", "no"),
            403,
            "Forbidden",
        ),
        (
            se::conflict_apply(&[conflict("kubectl", ".spec.x")]),
            409,
            "Conflict",
        ),
    ];
    for ((code, body), expected_code, expected_reason) in cases {
        assert_eq!(code.as_u16(), expected_code, "{body}");
        let status = parse(&body);
        assert_eq!(status.code, expected_code, "{body}");
        assert_eq!(status.reason, expected_reason, "{body}");
        assert!(status.is_failure(), "{body}");
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["apiVersion"], "v1");
    }
}

#[test]
fn not_found_and_already_exists_name_the_qualified_resource() {
    let (_, body) = se::not_found("flotilla.dev", "plans", "gold");
    let status = parse(&body);
    assert_eq!(status.message, "plans.flotilla.dev \"gold\" not found");
    assert!(status.is_not_found());
    let details = status.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("gold", "flotilla.dev", "plans")
    );

    let (_, body) = se::not_found("", "configmaps", "cfg");
    assert_eq!(body["message"], "configmaps \"cfg\" not found");
    assert_eq!(
        body["details"],
        json!({"name": "cfg", "kind": "configmaps"})
    );

    let (_, body) = se::already_exists("flotilla.dev", "plans", "gold");
    assert_eq!(
        body["message"],
        "plans.flotilla.dev \"gold\" already exists"
    );
    assert!(parse(&body).is_already_exists());
}

#[test]
fn conflict_messages() {
    let (_, body) = se::conflict_modified("flotilla.dev", "plans", "gold");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on plans.flotilla.dev \"gold\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert!(parse(&body).is_conflict());
}

#[test]
fn invalid_lists_causes_and_aggregates_messages() {
    let errors = [
        FieldError::invalid(
            "spec.trialDays",
            &json!(-1),
            "spec.trialDays in body should be greater than or equal to 0",
        ),
        FieldError::required("spec.tier", ""),
    ];
    let (code, body) = se::invalid("Plan", "flotilla.dev", "gold", &errors[..1]);
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "Plan.flotilla.dev \"gold\" is invalid: spec.trialDays: Invalid value: -1: spec.trialDays in body should be greater than or equal to 0"
    );
    let (_, body) = se::invalid("Plan", "flotilla.dev", "gold", &errors);
    assert_eq!(
        body["message"],
        "Plan.flotilla.dev \"gold\" is invalid: [spec.trialDays: Invalid value: -1: spec.trialDays in body should be greater than or equal to 0, spec.tier: Required value]"
    );
    let status = parse(&body);
    assert!(status.is_invalid());
    let details = status.details.unwrap();
    assert_eq!(details.kind, "Plan");
    assert_eq!(details.causes.len(), 2);
    assert_eq!(details.causes[1].reason, "FieldValueRequired");
    assert_eq!(details.causes[1].field, "spec.tier");
    assert_eq!(details.causes[1].message, "Required value");
}

#[test]
fn update_and_decoding_errors() {
    let (code, body) = se::resource_version_required("flotilla.dev", "plans", "gold");
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["message"],
        "plans.flotilla.dev \"gold\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
    );
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );

    let (code, body) = se::strict_decoding(
        "Plan",
        "v1alpha1",
        &["spec.foo".to_string(), "spec.waves[0].bar".to_string()],
    );
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "Plan in version \"v1alpha1\" cannot be handled as a Plan: strict decoding error: unknown field \"spec.foo\", unknown field \"spec.waves[0].bar\""
    );
    assert_eq!(
        se::unknown_field_warning("spec.foo"),
        "unknown field \"spec.foo\""
    );
}

#[test]
fn expired_and_throttled() {
    let (_, body) = se::too_old_resource_version(12, 40);
    assert_eq!(body["message"], "too old resource version: 12 (40)");
    let (_, body) = se::too_many_requests(7);
    assert_eq!(parse(&body).details.unwrap().retry_after_seconds, 7);
    assert_eq!(se::retry_after_seconds(&body), Some(7));
    assert_eq!(se::retry_after_seconds(&se::bad_request("x").1), None);
}

#[test]
fn other_messages() {
    assert_eq!(
        se::method_not_allowed("flotilla.dev", "plans", "deletecollection").1["message"],
        "deletecollection is not supported on resources of kind \"plans.flotilla.dev\""
    );
    assert_eq!(
        se::unsupported_media_type(&[
            "application/json-patch+json",
            "application/merge-patch+json"
        ])
        .1["message"],
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json"
    );
    assert_eq!(
        se::internal("boom").1["message"],
        "Internal error occurred: boom"
    );
    assert_eq!(
        se::namespace_terminating("flotilla.dev", "plans", "gold", "shop").1["message"],
        "plans.flotilla.dev \"gold\" is forbidden: unable to create new content in namespace shop because it is being terminated"
    );
}

#[test]
fn apply_conflicts_are_grouped_by_manager() {
    let (_, body) = se::conflict_apply(&[conflict("kubectl", ".spec.replicas")]);
    assert_eq!(
        body["message"],
        "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
    );
    assert_eq!(
        body["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\"", "field": ".spec.replicas"}])
    );
    let update_manager = r#"{"manager":"flotilla","operation":"Update","apiVersion":"flotilla.dev/v1alpha1","time":"2024-05-01T10:00:00Z"}"#;
    let (_, body) = se::conflict_apply(&[
        conflict("kubectl", ".spec.replicas"),
        conflict(update_manager, ".spec.tier"),
        conflict("kubectl", ".spec.paused"),
    ]);
    assert_eq!(
        body["message"],
        "Apply failed with 3 conflicts: conflicts with \"kubectl\":\n- .spec.replicas\n- .spec.paused\nconflicts with \"flotilla\" using flotilla.dev/v1alpha1 at 2024-05-01T10:00:00Z:\n- .spec.tier"
    );
}
