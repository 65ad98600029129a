//! Authentication, impersonation and the authentication/authorization APIs of a sandbox
//! started with [`crate::SandboxBuilder::enforce_rbac`]: the static admin token, ServiceAccount
//! tokens minted by the TokenRequest API, `Impersonate-*` headers, `SelfSubjectAccessReview`,
//! `SelfSubjectRulesReview`, `SelfSubjectReview`, the bootstrap RBAC policy and the ClusterRole
//! aggregation controller.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::rbac::{
    self, AUTHENTICATED, Policy, RequestAttributes, Rule, SYSTEM_MASTERS, UNAUTHENTICATED, UserInfo,
};
use crate::registry::ResourceKey;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status_error;
use crate::store::{Mutation, Store, WriteOptions};

/// The bearer token of the sandbox's administrator (the token the sandbox's kubeconfig has
/// always carried).
pub const ADMIN_TOKEN: &str = "flotilla-sandbox";
/// The administrator's user name.
pub const ADMIN_USER: &str = "sandbox-admin";
/// The audience of the API server's own tokens (kube-apiserver's default `--api-audiences`).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// A TokenRequest's default `expirationSeconds`.
pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The administrator: `system:masters`, so allowed everything, as a cluster's admin
/// certificate is.
pub fn admin_user() -> UserInfo {
    UserInfo {
        name: ADMIN_USER.to_owned(),
        uid: String::new(),
        groups: vec![SYSTEM_MASTERS.to_owned(), AUTHENTICATED.to_owned()],
        extra: BTreeMap::new(),
    }
}

/// One minted ServiceAccount token.
#[derive(Debug, Clone)]
struct TokenInfo {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    expires: jiff::Timestamp,
}

/// The authenticator's state: the ServiceAccount tokens minted so far.
#[derive(Default)]
pub struct Auth {
    tokens: Mutex<HashMap<String, TokenInfo>>,
}

fn rbac_key(plural: &str) -> ResourceKey {
    ResourceKey::new(RBAC_GROUP, plural)
}

/// The RBAC objects in the store, as the authorizer sees them.
pub fn policy(store: &Store) -> Policy {
    let list = |plural: &str| -> Vec<Arc<Value>> {
        store
            .list(
                &rbac_key(plural),
                None,
                &LabelSelector::everything(),
                &FieldSelector::everything(),
                None,
                None,
            )
            .map(|p| p.items)
            .unwrap_or_default()
    };
    let (cr, r, crb, rb) = (
        list("clusterroles"),
        list("roles"),
        list("clusterrolebindings"),
        list("rolebindings"),
    );
    Policy::from_objects(
        cr.iter().map(|o| &**o),
        r.iter().map(|o| &**o),
        crb.iter().map(|o| &**o),
        rb.iter().map(|o| &**o),
    )
}

/// 401 `Unauthorized`.
pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
    )
}

fn internal(message: &str) -> ApiError {
    status_error::internal(message).into()
}

impl Auth {
    /// Mints a token for a ServiceAccount, valid for `lifetime` (no lower bound, unlike the
    /// API).
    pub fn mint(
        &self,
        store: &Store,
        namespace: &str,
        name: &str,
        audiences: Vec<String>,
        lifetime: Duration,
    ) -> ApiResult<(String, jiff::Timestamp)> {
        let sa = store.get(&ResourceKey::new("", "serviceaccounts"), namespace, name)?;
        let uid = sa
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let now = jiff::Timestamp::now();
        let expires =
            now + jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::ZERO);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"RS256","kid":"flotilla-sandbox"}"#);
        let claims = json!({
            "aud": audiences,
            "exp": expires.as_second(),
            "iat": now.as_second(),
            "nbf": now.as_second(),
            "iss": API_AUDIENCE,
            "jti": uuid::Uuid::new_v4().to_string(),
            "sub": rbac::service_account_username(namespace, name),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": uid}},
        });
        let payload = b64.encode(claims.to_string());
        let signature: [u8; 32] = rand::random();
        let token = format!("{header}.{payload}.{}", b64.encode(signature));
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.clone(),
                TokenInfo {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    uid,
                    audiences,
                    expires,
                },
            );
        Ok((token, expires))
    }

    /// The user a bearer token authenticates as: the admin, or a ServiceAccount whose token
    /// has not expired, names the API server's audience and whose ServiceAccount still exists
    /// with the UID the token was bound to.
    fn user_of_token(&self, store: &Store, token: &str) -> Option<UserInfo> {
        if token == ADMIN_TOKEN {
            return Some(admin_user());
        }
        let info = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()?;
        if info.expires <= jiff::Timestamp::now()
            || !info.audiences.iter().any(|a| a == API_AUDIENCE)
        {
            return None;
        }
        let sa = store
            .get(
                &ResourceKey::new("", "serviceaccounts"),
                &info.namespace,
                &info.name,
            )
            .ok()?;
        let uid = sa.pointer("/metadata/uid").and_then(Value::as_str)?;
        (uid == info.uid).then(|| UserInfo::service_account(&info.namespace, &info.name, uid))
    }

    /// Authenticates a request: `Authorization: Bearer <token>`. Without credentials only the
    /// health endpoints are served (to `system:anonymous`, as the apiserver's
    /// anonymous-auth-for-health-endpoints configuration does); everything else is 401, as is
    /// any unknown, expired or revoked token.
    pub fn authenticate(
        &self,
        store: &Store,
        path: &str,
        headers: &HeaderMap,
    ) -> ApiResult<UserInfo> {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        match bearer {
            Some(token) => self.user_of_token(store, token).ok_or_else(unauthorized),
            None if health_path(path) => Ok(UserInfo {
                name: rbac::ANONYMOUS.to_owned(),
                groups: vec![UNAUTHENTICATED.to_owned()],
                ..Default::default()
            }),
            None => Err(unauthorized()),
        }
    }
}

fn health_path(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// Applies `Impersonate-*` headers as the apiserver's impersonation filter does: every
/// requested user, group, uid and extra value needs `impersonate` on `users`, `groups`,
/// `serviceaccounts` (core group) or `uids`, `userextras/<key>` (authentication.k8s.io);
/// the first one refused is a 403. Returns the requester when nothing is impersonated.
pub fn impersonate(
    policy: &Policy,
    requester: UserInfo,
    headers: &HeaderMap,
) -> ApiResult<UserInfo> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let uids = values("impersonate-uid");
    let mut extras: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(value) = value.to_str()
        {
            let key = url::form_urlencoded::parse(key.as_bytes())
                .map(|(k, v)| {
                    if v.is_empty() {
                        k.into_owned()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<String>();
            extras.push((key, value.to_owned()));
        }
    }
    let Some(user) = users.first() else {
        if groups.is_empty() && uids.is_empty() && extras.is_empty() {
            return Ok(requester);
        }
        return Err(internal(
            "requested impersonation of groups, uid or extra without impersonating a user",
        ));
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(internal("only one user and one uid may be impersonated"));
    }
    let mut target = UserInfo::default();
    let check = |attrs: RequestAttributes| -> ApiResult<()> {
        let decision = policy.authorize(&requester, &attrs);
        if decision.allowed {
            Ok(())
        } else {
            Err(attrs.forbidden(&requester.name, &decision.reason).into())
        }
    };
    let attrs = |group: &str, resource: &str, namespace: &str, name: &str| RequestAttributes {
        verb: "impersonate".to_owned(),
        resource_request: true,
        group: group.to_owned(),
        resource: resource.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    };
    let groups_specified = !groups.is_empty();
    match rbac::split_service_account_username(user) {
        Some((namespace, name)) => {
            check(attrs("", "serviceaccounts", namespace, name))?;
            target.name = user.clone();
            if !groups_specified {
                target.groups = vec![
                    rbac::SERVICE_ACCOUNTS.to_owned(),
                    format!("{}:{namespace}", rbac::SERVICE_ACCOUNTS),
                ];
            }
        }
        None => {
            check(attrs("", "users", "", user))?;
            target.name = user.clone();
        }
    }
    for group in &groups {
        check(attrs("", "groups", "", group))?;
        target.groups.push(group.clone());
    }
    for (key, value) in &extras {
        let mut a = attrs("authentication.k8s.io", "userextras", "", value);
        a.subresource = key.clone();
        check(a)?;
        target
            .extra
            .entry(key.clone())
            .or_default()
            .push(value.clone());
    }
    if let Some(uid) = uids.first() {
        check(attrs("authentication.k8s.io", "uids", "", uid))?;
        target.uid = uid.clone();
    }
    if target.name != rbac::ANONYMOUS {
        if !target
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
        {
            target.groups.push(AUTHENTICATED.to_owned());
        }
    } else if !target.groups.iter().any(|g| g == UNAUTHENTICATED) {
        target.groups.push(UNAUTHENTICATED.to_owned());
    }
    Ok(target)
}

/// The endpoints the sandbox answers itself when authorization is on, rather than from the
/// store.
pub enum Virtual {
    TokenRequest,
    SelfSubjectAccessReview,
    SelfSubjectRulesReview,
    SelfSubjectReview,
}

impl Virtual {
    pub fn of(attrs: &RequestAttributes) -> Option<Self> {
        if !attrs.resource_request || attrs.verb != "create" {
            return None;
        }
        match (
            attrs.group.as_str(),
            attrs.version.as_str(),
            attrs.resource.as_str(),
            attrs.subresource.as_str(),
        ) {
            ("", "v1", "serviceaccounts", "token") => Some(Self::TokenRequest),
            ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "") => {
                Some(Self::SelfSubjectAccessReview)
            }
            ("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "") => {
                Some(Self::SelfSubjectRulesReview)
            }
            ("authentication.k8s.io", "v1", "selfsubjectreviews", "") => {
                Some(Self::SelfSubjectReview)
            }
            _ => None,
        }
    }
}

fn bad_request(message: &str) -> ApiError {
    status_error::bad_request(message).into()
}

fn invalid(kind: &str, group: &str, name: &str, field: &str, detail: &str) -> ApiError {
    let message = format!(
        "{kind}.{group} {} is invalid: {field}: {detail}",
        crate::schema::go_fmt::quote(name)
    );
    let mut details = json!({"group": group, "kind": kind, "causes": [
        {"reason": "FieldValueInvalid", "message": detail, "field": field}]});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": "Invalid", "details": details, "code": 422}),
    )
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Serves a virtual endpoint for an authenticated, authorized user.
pub fn serve_virtual(
    auth: &Auth,
    store: &Store,
    endpoint: Virtual,
    user: &UserInfo,
    attrs: &RequestAttributes,
    body: &[u8],
) -> ApiResult<(StatusCode, Value)> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .or_else(|_| serde_norway::from_slice(body))
            .map_err(|e| bad_request(&format!("the request body could not be decoded: {e}")))?
    };
    match endpoint {
        Virtual::TokenRequest => {
            let seconds = match body.pointer("/spec/expirationSeconds") {
                None | Some(Value::Null) => DEFAULT_TOKEN_SECONDS,
                Some(v) => v
                    .as_i64()
                    .ok_or_else(|| bad_request("spec.expirationSeconds must be an integer"))?,
            };
            let name = &attrs.name;
            if seconds < 600 {
                return Err(invalid(
                    "TokenRequest",
                    "authentication.k8s.io",
                    name,
                    "spec.expirationSeconds",
                    &format!(
                        "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
                    ),
                ));
            }
            if seconds > 1 << 32 {
                return Err(invalid(
                    "TokenRequest",
                    "authentication.k8s.io",
                    name,
                    "spec.expirationSeconds",
                    &format!(
                        "Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
                    ),
                ));
            }
            let audiences: Vec<String> = body
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .filter(|a: &Vec<String>| !a.is_empty())
                .unwrap_or_else(|| vec![API_AUDIENCE.to_owned()]);
            let (token, expires) = auth.mint(
                store,
                &attrs.namespace,
                name,
                audiences.clone(),
                Duration::from_secs(seconds as u64),
            )?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "kind": "TokenRequest",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"name": name, "namespace": attrs.namespace,
                                 "creationTimestamp": Value::Null},
                    "spec": {"audiences": audiences, "expirationSeconds": seconds,
                             "boundObjectRef": body.pointer("/spec/boundObjectRef").cloned().unwrap_or(Value::Null)},
                    "status": {"token": token,
                               "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
                }),
            ))
        }
        Virtual::SelfSubjectAccessReview => {
            let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
            let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
            let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
            let request = match (resource, non_resource) {
                (Some(r), None) => RequestAttributes {
                    verb: str_at(r, "/verb").to_owned(),
                    resource_request: true,
                    group: str_at(r, "/group").to_owned(),
                    version: str_at(r, "/version").to_owned(),
                    resource: str_at(r, "/resource").to_owned(),
                    subresource: str_at(r, "/subresource").to_owned(),
                    namespace: str_at(r, "/namespace").to_owned(),
                    name: str_at(r, "/name").to_owned(),
                    path: String::new(),
                },
                (None, Some(n)) => RequestAttributes {
                    verb: str_at(n, "/verb").to_owned(),
                    path: str_at(n, "/path").to_owned(),
                    ..Default::default()
                },
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "SelfSubjectAccessReview",
                        "authorization.k8s.io",
                        "",
                        "spec",
                        "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "SelfSubjectAccessReview",
                        "authorization.k8s.io",
                        "",
                        "spec.resourceAttributes",
                        "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    ));
                }
            };
            let decision = policy(store).authorize(user, &request);
            let mut status = json!({"allowed": decision.allowed});
            if !decision.reason.is_empty() {
                status["reason"] = json!(decision.reason);
            }
            Ok((
                StatusCode::CREATED,
                json!({
                    "kind": "SelfSubjectAccessReview",
                    "apiVersion": "authorization.k8s.io/v1",
                    "metadata": {"creationTimestamp": Value::Null},
                    "spec": spec,
                    "status": status,
                }),
            ))
        }
        Virtual::SelfSubjectRulesReview => {
            let namespace = str_at(&body, "/spec/namespace").to_owned();
            let (rules, errors) = policy(store).rules_for(user, &namespace);
            let (resource_rules, non_resource_rules) = rules_review(&rules);
            let mut status = json!({
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": !errors.is_empty(),
            });
            if !errors.is_empty() {
                status["evaluationError"] = json!(errors.join(", "));
            }
            Ok((
                StatusCode::CREATED,
                json!({
                    "kind": "SelfSubjectRulesReview",
                    "apiVersion": "authorization.k8s.io/v1",
                    "metadata": {"creationTimestamp": Value::Null},
                    "spec": {"namespace": namespace},
                    "status": status,
                }),
            ))
        }
        Virtual::SelfSubjectReview => {
            let mut info = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                info["uid"] = json!(user.uid);
            }
            if !user.extra.is_empty() {
                info["extra"] = json!(user.extra);
            }
            Ok((
                StatusCode::CREATED,
                json!({
                    "kind": "SelfSubjectReview",
                    "apiVersion": "authentication.k8s.io/v1",
                    "metadata": {"creationTimestamp": Value::Null},
                    "status": {"userInfo": info},
                }),
            ))
        }
    }
}

/// A user's rules as `SelfSubjectRulesReview` lists them.
fn rules_review(rules: &[Rule]) -> (Vec<Value>, Vec<Value>) {
    let mut resource = Vec::new();
    let mut non_resource = Vec::new();
    for rule in rules {
        if !rule.resources.is_empty() {
            let mut r = json!({"verbs": rule.verbs, "apiGroups": rule.api_groups,
                               "resources": rule.resources});
            if !rule.resource_names.is_empty() {
                r["resourceNames"] = json!(rule.resource_names);
            }
            resource.push(r);
        }
        if !rule.non_resource_urls.is_empty() {
            non_resource
                .push(json!({"verbs": rule.verbs, "nonResourceURLs": rule.non_resource_urls}));
        }
    }
    (resource, non_resource)
}

/// The API groups the sandbox serves itself when authorization is on.
pub fn virtual_group(group: &str) -> Option<Vec<Value>> {
    let create = json!(["create"]);
    match group {
        "authentication.k8s.io" => Some(vec![json!({
            "name": "selfsubjectreviews", "singularName": "selfsubjectreview",
            "namespaced": false, "kind": "SelfSubjectReview", "verbs": create})]),
        "authorization.k8s.io" => Some(vec![
            json!({"name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
                   "namespaced": false, "kind": "SelfSubjectAccessReview", "verbs": create}),
            json!({"name": "selfsubjectrulesreviews", "singularName": "selfsubjectrulesreview",
                   "namespaced": false, "kind": "SelfSubjectRulesReview", "verbs": create}),
        ]),
        _ => None,
    }
}

/// Adds the virtual groups and `serviceaccounts/token` to a discovery document.
pub fn augment_discovery(endpoint: &crate::discovery::Endpoint, doc: &mut Value) {
    use crate::discovery::Endpoint;
    let group_doc = |name: &str| {
        json!({"name": name, "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
               "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}})
    };
    match endpoint {
        Endpoint::Groups => {
            if let Some(groups) = doc.get_mut("groups").and_then(Value::as_array_mut) {
                for name in ["authentication.k8s.io", "authorization.k8s.io"] {
                    if !groups.iter().any(|g| g["name"] == name) {
                        groups.push(group_doc(name));
                    }
                }
            }
        }
        Endpoint::ResourceList { group, version } if group.is_empty() && version == "v1" => {
            if let Some(resources) = doc.get_mut("resources").and_then(Value::as_array_mut) {
                resources.push(json!({"name": "serviceaccounts/token", "singularName": "",
                    "namespaced": true, "group": "authentication.k8s.io", "version": "v1",
                    "kind": "TokenRequest", "verbs": ["create"]}));
            }
        }
        _ => {}
    }
}

/// The discovery document of a virtual group, or of its v1 resources.
pub fn virtual_discovery(endpoint: &crate::discovery::Endpoint) -> Option<Value> {
    use crate::discovery::Endpoint;
    match endpoint {
        Endpoint::Group(name) => {
            virtual_group(name)?;
            Some(json!({"kind": "APIGroup", "apiVersion": "v1", "name": name,
                "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
                "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}}))
        }
        Endpoint::ResourceList { group, version } if version == "v1" => {
            let resources = virtual_group(group)?;
            Some(json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": format!("{group}/v1"), "resources": resources}))
        }
        _ => None,
    }
}

/// The bootstrap policy a kube-apiserver creates: `cluster-admin` bound to `system:masters`;
/// `system:discovery`, `system:basic-user` and `system:public-info-viewer` bound to
/// `system:authenticated` (the last one to `system:unauthenticated` too),
/// `system:service-account-issuer-discovery` bound to `system:serviceaccounts`, and the
/// user-facing `admin`, `edit` and `view`, aggregated from `system:aggregate-to-*` (the rules
/// of Kubernetes 1.33 for the core, apps, autoscaling, batch, policy, networking and
/// coordination groups).
pub fn bootstrap_policy() -> (Vec<Value>, Vec<Value>) {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta(name), "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": meta(name),
               "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
               "subjects": subjects})
    };
    let roles = vec![
        role(
            "cluster-admin",
            json!([
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
            "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
             "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
             "verbs": ["create"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": [
            "/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:service-account-issuer-discovery",
            json!([{"nonResourceURLs": [
            "/.well-known/openid-configuration", "/.well-known/openid-configuration/",
            "/openid/v1/jwks", "/openid/v1/jwks/"], "verbs": ["get"]}]),
        ),
    ];
    let rw = json!(["create", "delete", "deletecollection", "patch", "update"]);
    let ro = json!(["get", "list", "watch"]);
    let aggregated = |name: &str, label: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": meta(name),
               "aggregationRule": {"clusterRoleSelectors": [
                   {"matchLabels": {format!("rbac.authorization.k8s.io/{label}"): "true"}}]},
               "rules": []})
    };
    let aggregate_to = |name: &str, labels: &[&str], rules: Value| {
        let mut role = role(name, rules);
        for label in labels {
            role["metadata"]["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{label}")] =
                json!("true");
        }
        role
    };
    let mut roles = roles;
    roles.extend([
        aggregated("admin", "aggregate-to-admin"),
        aggregated("edit", "aggregate-to-edit"),
        aggregated("view", "aggregate-to-view"),
        aggregate_to("system:aggregate-to-admin", &["admin"], json!([
            {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"],
             "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}])),
        aggregate_to("system:aggregate-to-edit", &["admin", "edit"], json!([
            {"apiGroups": [""], "resources": ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"], "verbs": ro},
            {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
            {"apiGroups": [""], "resources": ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], "verbs": rw},
            {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers", "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"], "verbs": rw},
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets", "replicasets/scale", "statefulsets", "statefulsets/scale"], "verbs": rw},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": rw},
            {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": rw},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": rw},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "networkpolicies"], "verbs": rw},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}])),
        aggregate_to("system:aggregate-to-view", &["admin", "edit", "view"], json!([
            {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/status"], "verbs": ro},
            {"apiGroups": [""], "resources": ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status", "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"], "verbs": ro},
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ro},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ro},
            {"apiGroups": ["apps"], "resources": ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale", "statefulsets/status"], "verbs": ro},
            {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers", "horizontalpodautoscalers/status"], "verbs": ro},
            {"apiGroups": ["batch"], "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], "verbs": ro},
            {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"], "verbs": ro},
            {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses", "ingresses/status", "networkpolicies"], "verbs": ro}])),
    ]);
    let bindings = vec![
        binding("cluster-admin", &[SYSTEM_MASTERS]),
        binding("system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", &[AUTHENTICATED]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
        binding(
            "system:service-account-issuer-discovery",
            &[rbac::SERVICE_ACCOUNTS],
        ),
    ];
    (roles, bindings)
}

/// Installs the bootstrap policy into the store.
pub fn install_bootstrap_policy(store: &Store) -> ApiResult<()> {
    let (roles, bindings) = bootstrap_policy();
    let opts = WriteOptions {
        field_manager: Some("kube-apiserver".into()),
        ..Default::default()
    };
    for role in roles {
        store.create(&rbac_key("clusterroles"), "", role, &opts)?;
    }
    for binding in bindings {
        store.create(&rbac_key("clusterrolebindings"), "", binding, &opts)?;
    }
    Ok(())
}

/// One pass of the ClusterRole aggregation controller: every ClusterRole with an
/// aggregationRule gets the rules of the ClusterRoles it selects.
pub fn aggregate_cluster_roles(store: &Store) {
    let key = rbac_key("clusterroles");
    let Ok(page) = store.list(
        &key,
        None,
        &LabelSelector::everything(),
        &FieldSelector::everything(),
        None,
        None,
    ) else {
        return;
    };
    let all: Vec<&Value> = page.items.iter().map(|o| &**o).collect();
    for role in &all {
        let Some(rules) = rbac::aggregated_rules(role, &all) else {
            continue;
        };
        let current = role.get("rules").cloned().unwrap_or_else(|| json!([]));
        if current == Value::Array(rules.clone()) {
            continue;
        }
        let name = str_at(role, "/metadata/name");
        let patch = json!({"rules": rules});
        let opts = WriteOptions {
            field_manager: Some("clusterrole-aggregation-controller".into()),
            ..Default::default()
        };
        if let Err(e) = store.update(&key, "", name, None, Mutation::Merge(&patch), &opts) {
            tracing::debug!(role = name, error = ?e.body, "aggregating a ClusterRole");
        }
    }
}

/// Runs the aggregation controller: a pass now and after every change of a ClusterRole.
pub fn spawn_aggregation(store: Arc<Store>, shutdown: tokio_util::sync::CancellationToken) {
    let key = rbac_key("clusterroles");
    let Ok(subscription) = store.watch(&key, None, crate::store::WatchStart::Latest) else {
        return;
    };
    aggregate_cluster_roles(&store);
    let mut receiver = subscription.receiver;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                received = receiver.recv() => match received {
                    Ok(change) if change.resource == key => aggregate_cluster_roles(&store),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        aggregate_cluster_roles(&store)
                    }
                    Err(_) => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    });
}
