//! `config/rbac/` applied to an enforcing sandbox: what the operator's and the gateway's
//! ServiceAccounts are refused, and the grant-removal that the "every rule is needed" checks of
//! the controller tests rely on.

use flotilla_crds::{Device, Plan, Subscription};
use flotilla_sandbox::Sandbox;
use flotilla_sandbox::rbac::{RequestAttributes, UserInfo, split_service_account_username};
use flotilla_testkit::rbac::{
    GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT, Grant, denied_for, gateway_user, grants_of,
    install, objects_without, operator_kube_config, operator_user, policy,
    service_account_kube_config,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

async fn enforced() -> Sandbox {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .enforce_rbac()
        .start()
        .await
        .expect("the sandbox starts");
    install(&sandbox).await;
    sandbox
}

fn status_of<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_operator_is_refused_what_config_rbac_does_not_grant() {
    let sandbox = enforced().await;
    let operator = Client::try_from(operator_kube_config(&sandbox)).unwrap();
    let user = operator_user();
    // Granted: it watches Subscriptions everywhere and reads Secrets (Channel credentials).
    Api::<Subscription>::all(operator.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Secret>::namespaced(operator.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    // Its own Lease is granted (absent: 404)...
    assert_eq!(
        status_of(
            Api::<Lease>::namespaced(operator.clone(), "flotilla-system")
                .get("flotilla")
                .await
        )
        .0,
        404
    );
    // ... a Lease anywhere else is not.
    assert_eq!(
        status_of(
            Api::<Lease>::namespaced(operator.clone(), "kube-system")
                .get("flotilla")
                .await
        ),
        (
            403,
            format!(
                "leases.coordination.k8s.io \"flotilla\" is forbidden: User \"{user}\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-system\""
            )
        )
    );
    // It never deletes a Plan, never writes a Secret, never reads Pods.
    assert_eq!(
        status_of(
            Api::<Plan>::all(operator.clone())
                .delete("team", &DeleteParams::default())
                .await
        ),
        (
            403,
            format!(
                "plans.flotilla.dev \"team\" is forbidden: User \"{user}\" cannot delete resource \"plans\" in API group \"flotilla.dev\" at the cluster scope"
            )
        )
    );
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "stolen"}, "stringData": {"k": "v"}}))
            .unwrap();
    let (code, message) = status_of(
        Api::<Secret>::namespaced(operator.clone(), "default")
            .create(&PostParams::default(), &secret)
            .await,
    );
    assert_eq!(code, 403);
    assert!(
        message.ends_with(&format!(
            "is forbidden: User \"{user}\" cannot create resource \"secrets\" in API group \"\" in the namespace \"default\""
        )),
        "{message}"
    );
    assert_eq!(
        status_of(
            Api::<Pod>::all(operator.clone())
                .list(&ListParams::default())
                .await
        ),
        (
            403,
            format!(
                "pods is forbidden: User \"{user}\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
            )
        )
    );
    // Subscriptions: patched (finalizers) but never deleted: that is their owner's call.
    assert_eq!(
        status_of(
            Api::<Subscription>::all(operator.clone())
                .delete("acme", &DeleteParams::default())
                .await
        ),
        (
            403,
            format!(
                "subscriptions.flotilla.dev \"acme\" is forbidden: User \"{user}\" cannot delete resource \"subscriptions\" in API group \"flotilla.dev\" at the cluster scope"
            )
        )
    );
    // Every refusal is in the request log, as the operator's.
    let denied = denied_for(&sandbox, &user);
    assert_eq!(denied.len(), 5, "{denied:#?}");
    assert!(denied.iter().all(|d| d.starts_with("403 ")), "{denied:#?}");
    assert!(denied_for(&sandbox, &gateway_user()).is_empty());
}

#[tokio::test]
async fn the_gateway_is_refused_everything_outside_its_fleet_namespace() {
    let sandbox = enforced().await;
    let gateway = Client::try_from(service_account_kube_config(
        &sandbox,
        GATEWAY_SERVICE_ACCOUNT,
    ))
    .unwrap();
    let user = gateway_user();
    Api::<Device>::namespaced(gateway.clone(), GATEWAY_NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    Api::<Secret>::namespaced(gateway.clone(), GATEWAY_NAMESPACE)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        status_of(
            Api::<Secret>::namespaced(gateway.clone(), "default")
                .list(&ListParams::default())
                .await
        ),
        (
            403,
            format!(
                "secrets is forbidden: User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
            )
        )
    );
    // In its namespace it may list Secrets but not read one by name.
    assert_eq!(
        status_of(
            Api::<Secret>::namespaced(gateway.clone(), GATEWAY_NAMESPACE)
                .get("device-tokens")
                .await
        ),
        (
            403,
            format!(
                "secrets \"device-tokens\" is forbidden: User \"{user}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"fleet\""
            )
        )
    );
    assert_eq!(
        status_of(
            Api::<Device>::all(gateway.clone())
                .list(&ListParams::default())
                .await
        )
        .0,
        403
    );
    // Device specs are the operator's: the gateway writes status only.
    assert_eq!(
        status_of(
            Api::<Device>::namespaced(gateway, GATEWAY_NAMESPACE)
                .patch(
                    "sensor-1",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"approved": true}})),
                )
                .await
        )
        .0,
        403
    );
    assert_eq!(denied_for(&sandbox, &user).len(), 4);
}

/// The request a grant is about, in a namespace the role applies in.
fn request_for(grant: &Grant) -> RequestAttributes {
    let (resource, subresource) = grant
        .resource
        .split_once('/')
        .map_or((grant.resource.as_str(), ""), |(r, s)| (r, s));
    let namespace = grant
        .role
        .strip_prefix("Role/")
        .and_then(|r| r.split_once('/'))
        .map_or("default", |(ns, _)| ns);
    RequestAttributes {
        verb: grant.verb.clone(),
        resource_request: true,
        group: grant.group.clone(),
        resource: resource.to_owned(),
        subresource: subresource.to_owned(),
        namespace: namespace.to_owned(),
        // The one rule with resourceNames grants `bind` on the admin ClusterRole.
        name: if grant.resource == "clusterroles" {
            "admin".to_owned()
        } else {
            "x".to_owned()
        },
        ..Default::default()
    }
}

/// Taking one grant out of config/rbac refuses exactly that grant's requests and no other: the
/// premise of `unneeded`, and proof that no two rules grant the same verb on a resource (a
/// duplicate would survive its removal).
#[test]
fn removing_one_grant_refuses_it_and_nothing_else() {
    for user in [operator_user(), gateway_user()] {
        let (ns, name) = split_service_account_username(&user).unwrap();
        let info = UserInfo::service_account(ns, name, "");
        let grants = grants_of(&user);
        assert!(grants.len() > 5, "{user}: {grants:#?}");
        let full = objects_without(None);
        let full = policy(full.iter().map(|(_, o)| o));
        for grant in &grants {
            assert!(
                full.authorize(&info, &request_for(grant)).allowed,
                "{grant:?}"
            );
            let reduced = objects_without(Some(grant));
            let reduced = policy(reduced.iter().map(|(_, o)| o));
            for other in &grants {
                let allowed = reduced.authorize(&info, &request_for(other)).allowed;
                assert_eq!(
                    allowed,
                    other != grant
                        && !(other.group == grant.group
                            && other.resource == grant.resource
                            && other.verb == grant.verb),
                    "without {grant:?}: {other:?}"
                );
            }
        }
    }
    // The operator's grants are its ClusterRole's and its leader-election Role's, not the
    // gateway's.
    let operator = grants_of(&operator_user());
    assert!(
        operator
            .iter()
            .any(|g| g.role == "Role/flotilla-system/flotilla-leader-election")
    );
    assert!(operator.iter().all(|g| !g.role.contains("gateway")));
}
