//! A sandbox started with `enforce_rbac()`: authentication (admin token, TokenRequest
//! ServiceAccount tokens), impersonation, RBAC authorization with the apiserver's Forbidden
//! messages, escalation prevention, ClusterRole aggregation and SelfSubjectAccessReview.

mod common;

use std::time::Duration;

use common::*;
use flotilla_sandbox::{Sandbox, Verb};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Error};
use serde_json::{Value, json};

const NS: &str = "team";

async fn enforced() -> Sandbox {
    Sandbox::builder()
        .crds([widget_crd()])
        .enforce_rbac()
        .start()
        .await
        .expect("the sandbox starts")
}

async fn apply<K>(api: &Api<K>, object: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

/// Namespace `team`, ServiceAccount `team/NAME` and a Role `NAME` with these rules bound to it.
async fn service_account_with_role(sb: &Sandbox, name: &str, rules: Value) {
    let admin = sb.client();
    if Api::<Namespace>::all(admin.clone())
        .get_opt(NS)
        .await
        .unwrap()
        .is_none()
    {
        apply(
            &Api::<Namespace>::all(admin.clone()),
            json!({"metadata": {"name": NS}}),
        )
        .await;
    }
    apply(
        &Api::<ServiceAccount>::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": name}}),
    )
    .await;
    apply(
        &Api::<Role>::namespaced(admin.clone(), NS),
        json!({"metadata": {"name": name}, "rules": rules}),
    )
    .await;
    bind(sb, name, "Role", name).await;
}

async fn bind(sb: &Sandbox, sa: &str, kind: &str, role: &str) {
    apply(
        &Api::<RoleBinding>::namespaced(sb.client(), NS),
        json!({"metadata": {"name": format!("{sa}-{role}")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": NS}]}),
    )
    .await;
}

fn widget(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "test.flotilla.dev/v1", "kind": "Widget",
        "metadata": {"name": name, "namespace": NS}, "spec": {"size": 3}
    }))
    .unwrap()
}

fn api_error(result: Result<impl std::fmt::Debug, Error>) -> kube::core::Status {
    match result {
        Err(Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn sa_user(name: &str) -> String {
    format!("system:serviceaccount:{NS}:{name}")
}

#[tokio::test]
async fn the_admin_client_is_allowed_everything() {
    let sb = enforced().await;
    assert!(sb.rbac_enforced());
    let admin = sb.client();
    apply(
        &Api::<Namespace>::all(admin.clone()),
        json!({"metadata": {"name": NS}}),
    )
    .await;
    let widgets = Api::<DynamicObject>::namespaced_with(admin.clone(), NS, &widget_resource());
    widgets
        .create(&PostParams::default(), &widget("w"))
        .await
        .unwrap();
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    // The bootstrap policy is there, as on a real cluster.
    let roles = Api::<ClusterRole>::all(admin);
    for name in [
        "cluster-admin",
        "system:discovery",
        "system:basic-user",
        "system:public-info-viewer",
    ] {
        roles.get(name).await.unwrap();
    }
    assert!(sb.requests().denied().is_empty());
}

#[tokio::test]
async fn a_service_account_token_is_allowed_only_what_its_role_grants() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "reader",
        json!([{"apiGroups": ["test.flotilla.dev"], "resources": ["widgets"], "verbs": ["get", "list", "create"]}]),
    )
    .await;
    let client = sb.service_account_client(NS, "reader").unwrap();
    let widgets = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &widget_resource());
    widgets
        .create(&PostParams::default(), &widget("w1"))
        .await
        .unwrap();
    widgets.get("w1").await.unwrap();
    widgets.list(&ListParams::default()).await.unwrap();

    let status = api_error(widgets.delete("w1", &DeleteParams::default()).await);
    assert_eq!(status.code, 403);
    assert_eq!(status.reason, "Forbidden");
    assert_eq!(
        status.message,
        format!(
            "widgets.test.flotilla.dev \"w1\" is forbidden: User \"{}\" cannot delete resource \"widgets\" in API group \"test.flotilla.dev\" in the namespace \"team\"",
            sa_user("reader")
        )
    );
    let details = status.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("w1", "test.flotilla.dev", "widgets")
    );

    // The status subresource needs `widgets/status`.
    let patch = Patch::Merge(json!({"status": {"phase": "Ready"}}));
    let status = api_error(
        widgets
            .patch_status("w1", &PatchParams::default(), &patch)
            .await,
    );
    assert_eq!(
        status.message,
        format!(
            "widgets.test.flotilla.dev \"w1\" is forbidden: User \"{}\" cannot patch resource \"widgets/status\" in API group \"test.flotilla.dev\" in the namespace \"team\"",
            sa_user("reader")
        )
    );

    // Cluster-wide and other namespaces: not granted by a Role.
    let all = Api::<DynamicObject>::all_with(client.clone(), &widget_resource());
    let status = api_error(all.list(&ListParams::default()).await);
    assert_eq!(
        status.message,
        format!(
            "widgets.test.flotilla.dev is forbidden: User \"{}\" cannot list resource \"widgets\" in API group \"test.flotilla.dev\" at the cluster scope",
            sa_user("reader")
        )
    );
    let status = api_error(Api::<Namespace>::all(client.clone()).get(NS).await);
    assert_eq!(
        status.message,
        format!(
            "namespaces \"team\" is forbidden: User \"{}\" cannot get resource \"namespaces\" in API group \"\" in the namespace \"team\"",
            sa_user("reader")
        )
    );

    // Denials are in the request log, with the user.
    let denied = sb.requests().denied();
    assert_eq!(denied.len(), 4, "{denied:#?}");
    assert!(
        denied
            .iter()
            .all(|r| r.status == 403 && r.user.as_deref() == Some(sa_user("reader").as_str()))
    );
    assert_eq!(denied.iter().filter(|r| r.verb == Verb::Delete).count(), 1);

    // Granting the verb takes effect at once.
    let roles = Api::<Role>::namespaced(sb.client(), NS);
    roles
        .patch(
            "reader",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(json!([
                {"op": "add", "path": "/rules/-", "value":
                    {"apiGroups": ["test.flotilla.dev"], "resources": ["widgets/status"], "verbs": ["patch"]}}
            ])).unwrap()),
        )
        .await
        .unwrap();
    widgets
        .patch_status("w1", &PatchParams::default(), &patch)
        .await
        .unwrap();
    let status = api_error(widgets.delete("w1", &DeleteParams::default()).await);
    assert_eq!(status.code, 403);
}

#[tokio::test]
async fn resource_names_and_watch_are_authorized_like_the_apiserver() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "named",
        json!([
            {"apiGroups": ["test.flotilla.dev"], "resources": ["widgets"], "verbs": ["get", "list", "watch"], "resourceNames": ["mine"]},
            {"apiGroups": ["test.flotilla.dev"], "resources": ["widgets"], "verbs": ["list"]}
        ]),
    )
    .await;
    let admin_widgets = Api::<DynamicObject>::namespaced_with(sb.client(), NS, &widget_resource());
    for name in ["mine", "theirs"] {
        admin_widgets
            .create(&PostParams::default(), &widget(name))
            .await
            .unwrap();
    }
    let client = sb.service_account_client(NS, "named").unwrap();
    let widgets = Api::<DynamicObject>::namespaced_with(client, NS, &widget_resource());
    widgets.get("mine").await.unwrap();
    assert_eq!(api_error(widgets.get("theirs").await).code, 403);
    // A watch needs `watch`: of one name (fieldSelector metadata.name) it is granted...
    let one = kube::api::WatchParams::default().fields("metadata.name=mine");
    drop(widgets.watch(&one, "0").await.unwrap());
    // ... of the collection it is not, although `list` is.
    let status = api_error(
        widgets
            .watch(&kube::api::WatchParams::default(), "0")
            .await
            .map(|_| ()),
    );
    assert_eq!(
        status.message,
        format!(
            "widgets.test.flotilla.dev is forbidden: User \"{}\" cannot watch resource \"widgets\" in API group \"test.flotilla.dev\" in the namespace \"team\"",
            sa_user("named")
        )
    );
    assert_eq!(sb.requests().count(Verb::Watch, "widgets"), 2);
}

#[tokio::test]
async fn tokens_expire_and_die_with_their_service_account() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "short",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
    )
    .await;
    let configmaps =
        |client: Client| Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, NS);
    let token = sb
        .service_account_token_for(NS, "short", Duration::from_secs(1))
        .unwrap();
    configmaps(sb.client_for_token(&token))
        .list(&ListParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = api_error(
        configmaps(sb.client_for_token(&token))
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );

    let token = sb.service_account_token(NS, "short").unwrap();
    configmaps(sb.client_for_token(&token))
        .list(&ListParams::default())
        .await
        .unwrap();
    let sas = Api::<ServiceAccount>::namespaced(sb.client(), NS);
    sas.delete("short", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        api_error(
            configmaps(sb.client_for_token(&token))
                .list(&ListParams::default())
                .await
        )
        .code,
        401
    );
    // A new ServiceAccount of the same name has another UID: the old token stays dead.
    apply(&sas, json!({"metadata": {"name": "short"}})).await;
    assert_eq!(
        api_error(
            configmaps(sb.client_for_token(&token))
                .list(&ListParams::default())
                .await
        )
        .code,
        401
    );

    // No token, or an unknown one.
    let mut anonymous = sb.kube_config();
    anonymous.auth_info.token = None;
    let status = api_error(
        configmaps(Client::try_from(anonymous).unwrap())
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(status.code, 401);
    assert_eq!(
        api_error(
            configmaps(sb.client_for_token("nonsense"))
                .list(&ListParams::default())
                .await
        )
        .code,
        401
    );
    assert_eq!(
        sb.requests()
            .denied()
            .iter()
            .filter(|r| r.status == 401)
            .count(),
        5
    );
    assert!(sb.service_account_token(NS, "missing").is_err());
}

#[tokio::test]
async fn the_token_request_api_mints_tokens() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "minted",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}]),
    )
    .await;
    let sas = Api::<ServiceAccount>::namespaced(sb.client(), NS);
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 1200}});
    let response: Value = sas
        .create_subresource("token", "minted", &PostParams::default(), &request)
        .await
        .unwrap();
    assert_eq!(response["kind"], "TokenRequest");
    assert_eq!(response["spec"]["expirationSeconds"], 1200);
    let expiry: jiff::Timestamp = response["status"]["expirationTimestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let lifetime = expiry.as_second() - jiff::Timestamp::now().as_second();
    assert!((1190..=1200).contains(&lifetime), "{lifetime}");
    let token = response["status"]["token"].as_str().unwrap();
    let own = Api::<ServiceAccount>::namespaced(sb.client_for_token(token), NS);
    own.get("minted").await.unwrap();
    // The ServiceAccount may not mint tokens itself: that is `create serviceaccounts/token`.
    let status = api_error(
        own.create_subresource::<_, Value>("token", "minted", &PostParams::default(), &request)
            .await,
    );
    assert_eq!(
        status.message,
        format!(
            "serviceaccounts \"minted\" is forbidden: User \"{}\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"team\"",
            sa_user("minted")
        )
    );
    let status = api_error(
        sas.create_subresource::<_, Value>("token", "nobody", &PostParams::default(), &request)
            .await,
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "serviceaccounts \"nobody\" not found")
    );
    let short = json!({"spec": {"expirationSeconds": 60}});
    let status = api_error(
        sas.create_subresource::<_, Value>("token", "minted", &PostParams::default(), &short)
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "reader",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
    )
    .await;
    let configmaps = |client: Client, ns: &str| {
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, ns)
    };
    // The admin may impersonate anyone, and then has their permissions.
    let as_reader = sb.client_as(&sa_user("reader"), &[]);
    configmaps(as_reader.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let status = api_error(
        configmaps(as_reader, "default")
            .list(&ListParams::default())
            .await,
    );
    assert!(
        status.message.contains(&format!(
            "User \"{}\" cannot list resource \"configmaps\"",
            sa_user("reader")
        )),
        "{}",
        status.message
    );
    let as_bob = sb.client_as("bob", &["system:masters"]);
    configmaps(as_bob, "default")
        .list(&ListParams::default())
        .await
        .unwrap();

    // The ServiceAccount may not impersonate without `impersonate` on users.
    let token = sb.service_account_token(NS, "reader").unwrap();
    let impersonating = |user: &str| {
        let mut config = sb.kube_config_for_token(&token);
        config.auth_info.impersonate = Some(user.to_owned());
        Client::try_from(config).unwrap()
    };
    let status = api_error(
        configmaps(impersonating("bob"), NS)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        format!(
            "users \"bob\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
            sa_user("reader")
        )
    );
    apply(
        &Api::<ClusterRole>::all(sb.client()),
        json!({"metadata": {"name": "impersonate-bob"},
               "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["bob"]}]}),
    )
    .await;
    // Users are cluster-scoped: a RoleBinding does not grant impersonating them...
    bind(&sb, "reader", "ClusterRole", "impersonate-bob").await;
    assert_eq!(
        api_error(
            configmaps(impersonating("bob"), NS)
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    // ... a ClusterRoleBinding does.
    apply(
        &Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(sb.client()),
        json!({"metadata": {"name": "reader-impersonates-bob"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonate-bob"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": NS}]}),
    )
    .await;
    apply(
        &Api::<RoleBinding>::namespaced(sb.client(), NS),
        json!({"metadata": {"name": "bob-view"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
               "subjects": [{"kind": "User", "name": "bob"}]}),
    )
    .await;
    configmaps(impersonating("bob"), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_error(
            configmaps(impersonating("alice"), NS)
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
}

#[tokio::test]
async fn rolebindings_and_roles_cannot_escalate() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "binder",
        json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"], "verbs": ["create"]}]),
    )
    .await;
    let client = sb.service_account_client(NS, "binder").unwrap();
    let bindings = Api::<RoleBinding>::namespaced(client.clone(), NS);
    let admin_binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "steal"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "binder", "namespace": NS}]}))
    .unwrap();
    let status = api_error(
        bindings
            .create(&PostParams::default(), &admin_binding)
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        format!(
            "rolebindings.rbac.authorization.k8s.io \"steal\" is forbidden: user \"{}\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:team\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}}\n{{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}}",
            sa_user("binder")
        )
    );
    // A Role with more than the requester holds is refused too.
    let roles = Api::<Role>::namespaced(client.clone(), NS);
    let wide: Role = serde_json::from_value(json!({"metadata": {"name": "wide"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}))
    .unwrap();
    let status = api_error(roles.create(&PostParams::default(), &wide).await);
    assert!(status.message.ends_with("is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}"), "{}", status.message);
    // A Role within the requester's own permissions is fine.
    let narrow: Role = serde_json::from_value(json!({"metadata": {"name": "narrow"},
        "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]}]})).unwrap();
    roles.create(&PostParams::default(), &narrow).await.unwrap();

    // With `bind` on cluster-admin (and `escalate` on roles) both go through.
    let admin_roles = Api::<Role>::namespaced(sb.client(), NS);
    admin_roles
        .patch(
            "binder",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "binder"},
                "rules": [
                    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"], "verbs": ["create"]},
                    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["cluster-admin"]},
                    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}
                ]})),
        )
        .await
        .unwrap();
    roles.create(&PostParams::default(), &wide).await.unwrap();
    bindings
        .create(&PostParams::default(), &admin_binding)
        .await
        .unwrap();
    // Now bound to cluster-admin in its namespace: secrets there, not elsewhere.
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let status = api_error(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(status.code, 403);
}

#[tokio::test]
async fn aggregated_cluster_roles_pick_up_labelled_cluster_roles() {
    let sb = enforced().await;
    service_account_with_role(&sb, "agg", json!([])).await;
    let cluster_roles = Api::<ClusterRole>::all(sb.client());
    apply(
        &cluster_roles,
        json!({"metadata": {"name": "widget-admin"},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"test.flotilla.dev/aggregate-to-widget-admin": "true"}}]}}),
    )
    .await;
    bind(&sb, "agg", "ClusterRole", "widget-admin").await;
    let client = sb.service_account_client(NS, "agg").unwrap();
    let widgets = Api::<DynamicObject>::namespaced_with(client, NS, &widget_resource());
    assert_eq!(
        api_error(widgets.list(&ListParams::default()).await).code,
        403
    );
    apply(
        &cluster_roles,
        json!({"metadata": {"name": "widget-reader", "labels": {"test.flotilla.dev/aggregate-to-widget-admin": "true"}},
               "rules": [{"apiGroups": ["test.flotilla.dev"], "resources": ["widgets"], "verbs": ["list"]}]}),
    )
    .await;
    let aggregated = cluster_roles.get("widget-admin").await.unwrap();
    let rules = aggregated.rules.unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["widgets".to_owned()][..])
    );
    widgets.list(&ListParams::default()).await.unwrap();
    // Removing the label takes the rules away again.
    cluster_roles
        .patch("widget-reader", &PatchParams::default(),
               &Patch::Merge(json!({"metadata": {"labels": {"test.flotilla.dev/aggregate-to-widget-admin": null}}})))
        .await
        .unwrap();
    assert!(
        cluster_roles
            .get("widget-admin")
            .await
            .unwrap()
            .rules
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(
        api_error(widgets.list(&ListParams::default()).await).code,
        403
    );
    // Only a cluster-admin may set an aggregationRule.
    service_account_with_role(
        &sb,
        "maker",
        json!([{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}]),
    )
    .await;
    apply(
        &Api::<ClusterRole>::all(sb.client()),
        json!({"metadata": {"name": "make-clusterroles"},
               "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["create"]}]}),
    )
    .await;
    apply(
        &Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(sb.client()),
        json!({"metadata": {"name": "maker"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "make-clusterroles"},
               "subjects": [{"kind": "ServiceAccount", "name": "maker", "namespace": NS}]}),
    )
    .await;
    let maker = Api::<ClusterRole>::all(sb.service_account_client(NS, "maker").unwrap());
    let aggregating: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "sneaky"},
        "aggregationRule": {"clusterRoleSelectors": [{}]}}))
    .unwrap();
    let status = api_error(maker.create(&PostParams::default(), &aggregating).await);
    assert_eq!(
        status.message,
        "clusterroles.rbac.authorization.k8s.io \"sneaky\" is forbidden: must have cluster-admin privileges to use the aggregationRule"
    );
}

#[tokio::test]
async fn self_subject_access_reviews_answer_for_the_requester() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "asker",
        json!([{"apiGroups": ["test.flotilla.dev"], "resources": ["widgets"], "verbs": ["get"]}]),
    )
    .await;
    let client = sb.service_account_client(NS, "asker").unwrap();
    let reviews = Api::<SelfSubjectAccessReview>::all(client);
    let ask = |verb: &str| -> SelfSubjectAccessReview {
        serde_json::from_value(json!({"spec": {"resourceAttributes":
            {"namespace": NS, "verb": verb, "group": "test.flotilla.dev", "resource": "widgets"}}}))
        .unwrap()
    };
    let yes = reviews
        .create(&PostParams::default(), &ask("get"))
        .await
        .unwrap();
    let status = yes.status.unwrap();
    assert!(status.allowed);
    assert_eq!(
        status.reason.as_deref(),
        Some(
            "RBAC: allowed by RoleBinding \"asker-asker/team\" of Role \"asker\" to ServiceAccount \"asker/team\""
        )
    );
    let no = reviews
        .create(&PostParams::default(), &ask("delete"))
        .await
        .unwrap();
    assert!(!no.status.unwrap().allowed);
    let path: SelfSubjectAccessReview = serde_json::from_value(
        json!({"spec": {"nonResourceAttributes": {"path": "/apis/test.flotilla.dev/v1", "verb": "get"}}}),
    )
    .unwrap();
    assert!(
        reviews
            .create(&PostParams::default(), &path)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
}

#[tokio::test]
async fn discovery_is_open_to_every_authenticated_user() {
    let sb = enforced().await;
    service_account_with_role(&sb, "nobody", json!([])).await;
    let client = sb.service_account_client(NS, "nobody").unwrap();
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.has_group("authorization.k8s.io"));
    assert!(discovery.has_group("test.flotilla.dev"));
    client.apiserver_version().await.unwrap();
}

#[tokio::test]
async fn without_enforcement_nothing_is_checked() {
    let sb = sandbox().await;
    assert!(!sb.rbac_enforced());
    let mut config = sb.kube_config();
    assert!(config.auth_info.token.is_none());
    config.auth_info.token = Some("garbage".to_owned().into());
    let client = Client::try_from(config).unwrap();
    Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(sb.service_account_token("default", "default").is_err());
}

/// Creates every object of the YAML manifests in `config/rbac` (they name their namespaces).
async fn apply_config_rbac(sb: &Sandbox) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rbac");
    let admin = sb.client();
    for ns in ["flotilla-system", "fleet"] {
        apply(
            &Api::<Namespace>::all(admin.clone()),
            json!({"metadata": {"name": ns}}),
        )
        .await;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    for file in files {
        sb.create_from_yaml(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

#[tokio::test]
async fn config_rbac_takes_effect_for_the_operator_service_account() {
    let sb = enforced().await;
    apply_config_rbac(&sb).await;
    let operator = "system:serviceaccount:flotilla-system:flotilla";
    let reviews = Api::<SelfSubjectAccessReview>::all(sb.client_as(operator, &[]));
    let can = |verb: &str, group: &str, resource: &str, subresource: &str, ns: &str| {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {"resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": ns}}}))
        .unwrap();
        let reviews = reviews.clone();
        async move {
            reviews
                .create(&PostParams::default(), &review)
                .await
                .unwrap()
                .status
                .unwrap()
                .allowed
        }
    };
    assert!(can("watch", "flotilla.dev", "subscriptions", "", "").await);
    assert!(
        can(
            "patch",
            "flotilla.dev",
            "subscriptions",
            "status",
            "tenant-a"
        )
        .await
    );
    assert!(
        can(
            "update",
            "flotilla.dev",
            "subscriptions",
            "finalizers",
            "tenant-a"
        )
        .await
    );
    assert!(!can("update", "flotilla.dev", "subscriptions", "", "tenant-a").await);
    assert!(!can("delete", "flotilla.dev", "plans", "", "").await);
    assert!(
        can(
            "get",
            "coordination.k8s.io",
            "leases",
            "",
            "flotilla-system"
        )
        .await
    );
    assert!(!can("get", "coordination.k8s.io", "leases", "", "fleet").await);

    // The operator may bind the aggregated `admin` ClusterRole in a tenant namespace (it holds
    // `bind` on it), though it does not hold admin's permissions.
    let client = sb.client_as(operator, &[]);
    apply(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": "tenant-a"}}),
    )
    .await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "tenant-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "tenant-a-admins"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), "tenant-a")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The aggregated admin role is in effect for the group bound to it.
    let tenant = sb.client_as("alice", &["tenant-a-admins"]);
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(tenant.clone(), "tenant-a")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_error(
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(tenant, "fleet")
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
    // Binding `edit` is not granted to it: refused as an escalation.
    let edit: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "tenant-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "tenant-a-editors"}]}))
    .unwrap();
    let status = api_error(
        Api::<RoleBinding>::namespaced(client, "tenant-a")
            .create(&PostParams::default(), &edit)
            .await,
    );
    assert!(
        status.message.starts_with(&format!(
            "rolebindings.rbac.authorization.k8s.io \"tenant-edit\" is forbidden: user \"{operator}\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:flotilla-system\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n"
        )),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn a_server_side_apply_that_creates_needs_create_too() {
    let sb = enforced().await;
    service_account_with_role(
        &sb,
        "applier",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]}]),
    )
    .await;
    let admin = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(sb.client(), NS);
    apply(&admin, json!({"metadata": {"name": "existing"}})).await;
    let client = sb.service_account_client(NS, "applier").unwrap();
    let configmaps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client, NS);
    let config = |name: &str| {
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": name}, "data": {"k": "v"}}))
    };
    let params = PatchParams::apply("applier");
    configmaps
        .patch("existing", &params, &config("existing"))
        .await
        .unwrap();
    let status = api_error(configmaps.patch("new", &params, &config("new")).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (403, "configmaps \"new\" is forbidden: ")
    );
    assert!(admin.get_opt("new").await.unwrap().is_none());
}

#[tokio::test]
async fn a_bindings_role_ref_cannot_change() {
    let sb = enforced().await;
    service_account_with_role(&sb, "bound", json!([])).await;
    let bindings = Api::<RoleBinding>::namespaced(sb.client(), NS);
    let status = api_error(
        bindings
            .patch(
                "bound-bound",
                &PatchParams::default(),
                &Patch::Merge(json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                 "kind": "ClusterRole", "name": "view"}})),
            )
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        "RoleBinding.rbac.authorization.k8s.io \"bound-bound\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"ClusterRole\", Name:\"view\"}: cannot change roleRef"
    );
    // Other changes are fine.
    bindings
        .patch(
            "bound-bound",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn an_admission_refusal_is_not_an_authorization_refusal() {
    let sb = enforced().await;
    service_account_with_role(&sb, "writer", json!([])).await;
    let admin = sb.client();
    apply(
        &Api::<ClusterRole>::all(admin.clone()),
        json!({"metadata": {"name": "configmap-writer"},
               "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]}),
    )
    .await;
    apply(
        &Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone()),
        json!({"metadata": {"name": "writer-configmaps"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "configmap-writer"},
               "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": NS}]}),
    )
    .await;
    // A namespace held in Terminating by an object's finalizer.
    apply(
        &Api::<Namespace>::all(admin.clone()),
        json!({"metadata": {"name": "closing"}}),
    )
    .await;
    let held = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(admin.clone(), "closing");
    apply(
        &held,
        json!({"metadata": {"name": "held", "finalizers": ["flotilla.dev/cleanup"]}}),
    )
    .await;
    Api::<Namespace>::all(admin.clone())
        .delete("closing", &DeleteParams::default())
        .await
        .unwrap();

    let client = sb.service_account_client(NS, "writer").unwrap();
    let late = serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap();
    let terminating = api_error(
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "closing")
            .create(&PostParams::default(), &late)
            .await,
    );
    assert_eq!(terminating.code, 403);
    assert!(
        terminating.message.contains("being terminated"),
        "{}",
        terminating.message
    );
    let secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let forbidden = api_error(
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS)
            .create(&PostParams::default(), &secret)
            .await,
    );
    assert_eq!(forbidden.code, 403);

    // Both are 403; only RBAC's is a refusal.
    let denied = sb.requests().denied();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0].resource, "secrets");
}
