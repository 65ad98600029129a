//! The checks behind every controller test's RBAC assertion (`common::rbac`): paths map to the
//! right RBAC attributes, and `config/rbac` grants what the operator needs and no more.

mod common;

use common::client::SentRequest;
use common::rbac::{attributes, granted, required};
use flotilla_sandbox::rbac::allows;
use http::Method;

use tokio::time::Instant;

fn request(method: Method, path: &str, watch: bool) -> SentRequest {
    SentRequest {
        sent: Instant::now(),
        method,
        path: path.to_owned(),
        watch,
        status: Some(200),
    }
}

#[test]
fn paths_map_to_rbac_attributes() {
    let cases = [
        (
            Method::GET,
            "/apis/flotilla.dev/v1alpha1/plans",
            false,
            "list flotilla.dev/plans",
        ),
        (
            Method::GET,
            "/apis/flotilla.dev/v1alpha1/plans",
            true,
            "watch flotilla.dev/plans",
        ),
        (
            Method::PATCH,
            "/apis/flotilla.dev/v1alpha1/plans/team/status",
            false,
            "patch flotilla.dev/plans/status",
        ),
        (
            Method::POST,
            "/api/v1/namespaces",
            false,
            "create core/namespaces",
        ),
        (
            Method::GET,
            "/api/v1/namespaces/acme",
            false,
            "get core/namespaces",
        ),
        (
            Method::DELETE,
            "/api/v1/namespaces/acme",
            false,
            "delete core/namespaces",
        ),
        (
            Method::PATCH,
            "/api/v1/namespaces/acme/configmaps/flotilla-entitlements",
            false,
            "patch core/configmaps",
        ),
        (
            Method::GET,
            "/api/v1/configmaps",
            true,
            "watch core/configmaps",
        ),
        (
            Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
            false,
            "create events.k8s.io/events",
        ),
    ];
    for (method, path, watch, expected) in cases {
        let attributes = attributes(&request(method, path, watch)).expect(path);
        assert_eq!(attributes.to_string(), expected, "{path}");
    }
    assert_eq!(attributes(&request(Method::GET, "/version", false)), None);
}

#[test]
fn the_operator_role_grants_what_it_says_and_no_more() {
    let rules = granted();
    let allowed = |method, path, watch| {
        allows(
            &rules,
            &attributes(&request(method, path, watch)).expect(path),
        )
    };
    assert!(allowed(
        Method::PATCH,
        "/apis/flotilla.dev/v1alpha1/plans/team/status",
        false
    ));
    assert!(!allowed(
        Method::PUT,
        "/apis/flotilla.dev/v1alpha1/plans/team/status",
        false
    ));
    assert!(!allowed(
        Method::GET,
        "/apis/flotilla.dev/v1alpha1/plans/team/status",
        false
    ));
    assert!(!allowed(
        Method::PUT,
        "/apis/flotilla.dev/v1alpha1/plans/team",
        false
    ));
    assert!(!allowed(
        Method::POST,
        "/api/v1/namespaces/default/events",
        false
    ));
    assert!(allowed(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
        false
    ));
    assert!(allowed(
        Method::PATCH,
        "/apis/coordination.k8s.io/v1/namespaces/x/leases/l",
        false
    ));
    assert!(!allowed(
        Method::PUT,
        "/apis/coordination.k8s.io/v1/namespaces/x/leases/l",
        false
    ));
    assert!(!allowed(
        Method::DELETE,
        "/api/v1/namespaces/acme/configmaps/flotilla-entitlements",
        false
    ));
}

#[test]
fn a_server_side_apply_that_creates_needs_create_too() {
    let mut apply = request(
        Method::PATCH,
        "/api/v1/namespaces/acme/configmaps/flotilla-entitlements",
        false,
    );
    let verbs = |apply: &SentRequest| -> Vec<String> {
        required(apply).into_iter().map(|a| a.verb).collect()
    };
    assert_eq!(verbs(&apply), ["patch"]);
    apply.status = Some(201);
    assert_eq!(verbs(&apply), ["patch", "create"]);
}
