//! HTTP: routing Kubernetes API paths to the store, content negotiation (JSON, Table,
//! PartialObjectMetadata), watch streams, fault injection and the request log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::{ApiError, ApiResult, statuses};
use crate::faults::{Faults, RequestInfo, Verb};
use crate::rbac::{self, RequestAttributes, UserInfo};
use crate::registry::{Resource, ResourceKey};
use crate::requests::{RequestLog, RequestRecord};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status_error;
use crate::store::{
    Change, ChangeType, DeleteOptions, Mutation, Propagation, Store, WatchStart, WriteOptions,
    labels_of, rv_of,
};
use crate::table::{self, IncludeObject};
use crate::{auth, discovery, events, openapi, patch, protobuf};

/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);
/// The apiserver's default and maximum watch duration is a random 30–60 minutes; kube-rs
/// asks for 290 s. We honour the request and cap it.
const MAX_WATCH: Duration = Duration::from_secs(1800);

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub faults: Arc<Faults>,
    pub requests: Arc<RequestLog>,
    pub shutdown: CancellationToken,
    /// Authentication and RBAC, when the sandbox enforces them.
    pub auth: Option<Arc<auth::Auth>>,
}

/// A parsed resource request path.
#[derive(Debug, Clone)]
struct ApiPath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Resource(ApiPath),
    OpenApiRoot,
    OpenApi(String),
    Discovery(discovery::Endpoint),
    Health,
    NotFound,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => Route::Health,
        ["version"] => Route::Discovery(discovery::Endpoint::Version),
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", rest @ ..] => Route::OpenApi(rest.join("/")),
        ["api"] => Route::Discovery(discovery::Endpoint::CoreVersions),
        ["api", "v1"] => Route::Discovery(discovery::Endpoint::ResourceList {
            group: String::new(),
            version: "v1".into(),
        }),
        ["apis"] => Route::Discovery(discovery::Endpoint::Groups),
        ["apis", group] => Route::Discovery(discovery::Endpoint::Group((*group).to_string())),
        ["apis", group, version] => Route::Discovery(discovery::Endpoint::ResourceList {
            group: (*group).to_string(),
            version: (*version).to_string(),
        }),
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let namespace_scoped = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (namespace, rest) = if namespace_scoped {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return Route::NotFound;
    }
    Route::Resource(ApiPath {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource: rest[0].to_string(),
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
    })
}

fn verb_of(method: &Method, path: &ApiPath, query: &HashMap<String, String>) -> Option<Verb> {
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    Some(match (method.as_str(), path.name.is_some()) {
        ("GET", _) if watch => Verb::Watch,
        ("GET", true) => Verb::Get,
        ("GET", false) => Verb::List,
        ("POST", false) => Verb::Create,
        // Subresources such as `serviceaccounts/NAME/token`.
        ("POST", true) if path.subresource.is_some() => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    })
}

/// The single entry point: every request goes through here.
pub async fn handle(
    State(app): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let latency = app.faults.current_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let query = parse_query(uri.query());
    let route = route(uri.path());
    let mut user = None;
    let mut attrs = None;
    if let Some(auth) = &app.auth {
        let attributes = RequestAttributes::from_request(method.as_str(), uri.path(), &query);
        match gate(&app, auth, &attributes, uri.path(), &headers) {
            Ok(u) => user = Some(u),
            Err((err, who)) => {
                if let Route::Resource(path) = &route
                    && let Some(verb) = verb_of(&method, path, &query)
                {
                    let mut record =
                        record_of(verb, path, err.code.as_u16(), &headers, Vec::new(), who);
                    record.refused = true;
                    app.requests.record(record);
                }
                return error_response(err);
            }
        }
        attrs = Some(attributes);
    }
    match route {
        Route::Health => (StatusCode::OK, "ok").into_response(),
        Route::NotFound => error_response(statuses::not_found_path(uri.path()).into()),
        Route::OpenApiRoot => json_response(StatusCode::OK, &openapi::root(&app.store.registry())),
        Route::OpenApi(prefix) => match openapi::group_version(&app.store.registry(), &prefix) {
            Some(doc) => json_response(StatusCode::OK, &doc),
            None => error_response(statuses::not_found_path(uri.path()).into()),
        },
        Route::Discovery(endpoint) => {
            let registry = app.store.registry();
            let enforced = app.auth.is_some();
            let doc = discovery::render(&registry, &endpoint)
                .map(|mut doc| {
                    if enforced {
                        auth::augment_discovery(&endpoint, &mut doc);
                    }
                    doc
                })
                .or_else(|| {
                    enforced
                        .then(|| auth::virtual_discovery(&endpoint))
                        .flatten()
                });
            match doc {
                Some(body) => json_response(StatusCode::OK, &body),
                None => error_response(statuses::not_found_path(uri.path()).into()),
            }
        }
        Route::Resource(path) => {
            let Some(verb) = verb_of(&method, &path, &query) else {
                return error_response(
                    status_error::method_not_allowed(&path.group, &path.resource, method.as_str())
                        .into(),
                );
            };
            let info = RequestInfo {
                verb,
                resource: &path.resource,
                subresource: path.subresource.as_deref(),
                namespace: path.namespace.as_deref(),
                name: path.name.as_deref(),
            };
            let blocked_owners = if matches!(verb, Verb::Create | Verb::Update | Verb::Patch) {
                blocked_owners(&app, &body)
            } else {
                Vec::new()
            };
            let who = user.as_ref().map(|u| u.name.clone());
            let response = match app.faults.take(&info) {
                Some(failure) => error_response(injected(failure.status, failure.retry_after)),
                None => match (&app.auth, &user, &attrs) {
                    (Some(auth), Some(user), Some(attrs)) => {
                        serve_enforced(&app, auth, user, attrs, verb, &path, &query, &headers, body)
                            .await
                    }
                    _ => serve(&app, verb, &path, &query, &headers, body).await,
                },
            };
            let mut record = record_of(
                verb,
                &path,
                response.status().as_u16(),
                &headers,
                blocked_owners,
                who,
            );
            record.refused = response.extensions().get::<Refused>().is_some();
            app.requests.record(record);
            response
        }
    }
}

fn record_of(
    verb: Verb,
    path: &ApiPath,
    status: u16,
    headers: &HeaderMap,
    blocked_owners: Vec<(String, String, String)>,
    user: Option<String>,
) -> RequestRecord {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    RequestRecord {
        verb,
        group: path.group.clone(),
        resource: path.resource.clone(),
        subresource: path.subresource.clone(),
        namespace: path.namespace.clone(),
        name: path.name.clone(),
        status,
        user_agent,
        blocked_owners,
        user,
        refused: false,
    }
}

/// Marks a response as an authorization refusal (see [`RequestRecord::refused`]).
#[derive(Clone, Copy)]
struct Refused;

fn refused(mut response: Response) -> Response {
    response.extensions_mut().insert(Refused);
    response
}

/// Authentication, impersonation and authorization of one request, in the apiserver's filter
/// order. The error comes with the user it was decided for, if one was authenticated.
fn gate(
    app: &AppState,
    auth: &auth::Auth,
    attrs: &RequestAttributes,
    path: &str,
    headers: &HeaderMap,
) -> Result<UserInfo, (ApiError, Option<String>)> {
    let requester = auth
        .authenticate(&app.store, path, headers)
        .map_err(|e| (e, None))?;
    let policy = auth::policy(&app.store);
    let name = requester.name.clone();
    let user = auth::impersonate(&policy, requester, headers).map_err(|e| (e, Some(name)))?;
    let decision = policy.authorize(&user, attrs);
    if decision.allowed {
        Ok(user)
    } else {
        let err = attrs.forbidden(&user.name, &decision.reason).into();
        Err((err, Some(user.name)))
    }
}

/// Serves an authorized request of a sandbox that enforces RBAC: the endpoints the sandbox
/// answers itself, the escalation checks of the RBAC registry, and the aggregation of
/// ClusterRoles after a write to them.
#[allow(clippy::too_many_arguments)]
async fn serve_enforced(
    app: &AppState,
    auth: &auth::Auth,
    user: &UserInfo,
    attrs: &RequestAttributes,
    verb: Verb,
    path: &ApiPath,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(endpoint) = auth::Virtual::of(attrs) {
        let protobuf = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/vnd.kubernetes.protobuf"));
        let body = if protobuf {
            match protobuf::decode(&body) {
                Ok(obj) => Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
                Err(msg) => return error_response(status_error::bad_request(&msg).into()),
            }
        } else {
            body
        };
        return match auth::serve_virtual(auth, &app.store, endpoint, user, attrs, &body) {
            Ok((code, body)) => json_response(code, &body),
            Err(e) => error_response(e),
        };
    }
    if let Some(denied) = apply_create_check(app, user, attrs, verb, path, headers) {
        return refused(denied);
    }
    if let Some(denied) =
        escalation_check(app, user, attrs, verb, path, query, headers, &body).await
    {
        return refused(denied);
    }
    let response = serve(app, verb, path, query, headers, body).await;
    if path.group == RBAC_GROUP
        && path.resource == "clusterroles"
        && verb != Verb::Get
        && verb != Verb::List
        && verb != Verb::Watch
        && response.status().is_success()
    {
        auth::aggregate_cluster_roles(&app.store);
    }
    response
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A server-side apply that creates the object is authorized as a `create` too (the patch
/// handler's `withAuthorization` of its create validation), and refused with the bare
/// authorizer reason: `leases.coordination.k8s.io "x" is forbidden: ` for RBAC.
fn apply_create_check(
    app: &AppState,
    user: &UserInfo,
    attrs: &RequestAttributes,
    verb: Verb,
    path: &ApiPath,
    headers: &HeaderMap,
) -> Option<Response> {
    let apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/apply-patch"));
    if verb != Verb::Patch || !apply || path.subresource.is_some() {
        return None;
    }
    let registry = app.store.registry();
    let resource = registry.lookup(&path.group, &path.version, &path.resource)?;
    let key = resource.storage.clone().unwrap_or_else(|| resource.key());
    let ns = path.namespace.clone().unwrap_or_default();
    if app
        .store
        .get(&key, &ns, path.name.as_deref().unwrap_or_default())
        .is_ok()
    {
        return None;
    }
    let create = RequestAttributes {
        verb: "create".into(),
        ..attrs.clone()
    };
    let decision = auth::policy(&app.store).authorize(user, &create);
    if decision.allowed {
        return None;
    }
    Some(error_response(
        status_error::forbidden(&attrs.group, &attrs.resource, &attrs.name, &decision.reason)
            .into(),
    ))
}

/// Whether an update changes only what garbage collection needs (`IsOnlyMutatingGCFields`).
fn only_gc_fields_changed(old: &Value, new: &Value) -> bool {
    let strip = |o: &Value| {
        let mut o = o.clone();
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "finalizers",
                "ownerReferences",
                "resourceVersion",
                "managedFields",
                "generation",
            ] {
                meta.remove(k);
            }
        }
        o
    };
    strip(old) == strip(new)
}

/// The RBAC registry's escalation prevention: creating or updating a Role or ClusterRole
/// needs every permission it grants (or `escalate` on it), a RoleBinding or
/// ClusterRoleBinding every permission of the role it references (or `bind` on that role).
/// The new object is computed by running the request as a dry run first.
#[allow(clippy::too_many_arguments)]
async fn escalation_check(
    app: &AppState,
    user: &UserInfo,
    attrs: &RequestAttributes,
    verb: Verb,
    path: &ApiPath,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    if path.group != RBAC_GROUP
        || path.subresource.is_some()
        || !matches!(verb, Verb::Create | Verb::Update | Verb::Patch)
    {
        return None;
    }
    let role = match path.resource.as_str() {
        "roles" | "clusterroles" => true,
        "rolebindings" | "clusterrolebindings" => false,
        _ => return None,
    };
    // Everyone's binding updates are validated: a roleRef cannot change.
    let binding_update = !role && verb != Verb::Create;
    if user.is_privileged() && !binding_update {
        return None;
    }
    let policy = auth::policy(&app.store);
    let ns = path.namespace.clone().unwrap_or_default();
    if role {
        let escalate = RequestAttributes {
            verb: "escalate".into(),
            resource_request: true,
            group: RBAC_GROUP.into(),
            version: "*".into(),
            resource: path.resource.clone(),
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            ..Default::default()
        };
        if policy.authorize(user, &escalate).allowed {
            return None;
        }
    }
    let mut dry = query.clone();
    dry.insert("dryRun".into(), "All".into());
    let response = serve(app, verb, path, &dry, headers, body.clone()).await;
    if !response.status().is_success() {
        return Some(response);
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .ok()?;
    let new: Value = serde_json::from_slice(&bytes).ok()?;
    let key = ResourceKey::new(RBAC_GROUP, &path.resource);
    let old = match verb {
        Verb::Create => None,
        _ => app
            .store
            .get(&key, &ns, path.name.as_deref().unwrap_or_default())
            .ok(),
    };
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    // ValidateRoleBindingUpdate, after the escalation checks as in the registry.
    let role_ref_changed = old.as_ref().filter(|_| binding_update).and_then(|old| {
        let kind = old
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or(if ns.is_empty() {
                "ClusterRoleBinding"
            } else {
                "RoleBinding"
            });
        role_ref_change(kind, &name, old, &new).map(error_response)
    });
    if user.is_privileged() {
        return role_ref_changed;
    }
    if let Some(old) = &old
        && only_gc_fields_changed(old, &new)
    {
        return None;
    }
    let forbidden = |message: &str| {
        Some(error_response(
            status_error::forbidden(RBAC_GROUP, &path.resource, &name, message).into(),
        ))
    };
    if role {
        if let Err(message) = policy.confirm_no_escalation(user, &ns, &rbac::rules_of(&new)) {
            return forbidden(&message);
        }
        if path.resource == "clusterroles" {
            let aggregation =
                |o: &Value| o.get("aggregationRule").filter(|a| !a.is_null()).cloned();
            let changed = match &old {
                None => aggregation(&new).is_some(),
                Some(old) => aggregation(old) != aggregation(&new),
            };
            if changed
                && policy
                    .confirm_no_escalation(user, "", &rbac::full_authority())
                    .is_err()
            {
                return forbidden("must have cluster-admin privileges to use the aggregationRule");
            }
        }
        return None;
    }
    let binding = rbac::Binding::from_object(&new)?;
    let role_ref = &binding.role_ref;
    let role_resource = match role_ref.kind.as_str() {
        "Role" => "roles",
        "ClusterRole" => "clusterroles",
        _ => return None,
    };
    let bind = RequestAttributes {
        verb: "bind".into(),
        resource_request: true,
        group: role_ref.api_group.clone(),
        resource: role_resource.into(),
        namespace: ns.clone(),
        name: role_ref.name.clone(),
        ..Default::default()
    };
    if policy.authorize(user, &bind).allowed {
        return role_ref_changed;
    }
    let rules = match policy.role_reference_rules(role_ref, &ns) {
        Ok(rules) => rules.to_vec(),
        Err(_) => {
            return Some(error_response(
                status_error::not_found(RBAC_GROUP, role_resource, &role_ref.name).into(),
            ));
        }
    };
    match policy.confirm_no_escalation(user, &ns, &rules) {
        Ok(()) => role_ref_changed,
        Err(message) => forbidden(&message),
    }
}

/// The 422 of `ValidateRoleBindingUpdate` when an update changes a binding's roleRef:
/// `... is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:"...", Kind:"...",
/// Name:"..."}: cannot change roleRef`.
fn role_ref_change(kind: &str, name: &str, old: &Value, new: &Value) -> Option<ApiError> {
    let role_ref = |o: &Value| {
        o.get("roleRef")
            .and_then(|r| serde_json::from_value::<rbac::RoleRef>(r.clone()).ok())
            .unwrap_or_default()
    };
    let (before, after) = (role_ref(old), role_ref(new));
    if before == after {
        return None;
    }
    let q = crate::schema::go_fmt::quote;
    let detail = format!(
        "Invalid value: rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}: cannot change roleRef",
        q(&after.api_group),
        q(&after.kind),
        q(&after.name)
    );
    Some(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{kind}.{RBAC_GROUP} {} is invalid: roleRef: {detail}", q(name)),
               "reason": "Invalid",
               "details": {"name": name, "group": RBAC_GROUP, "kind": kind,
                           "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": "roleRef"}]},
               "code": 422}),
    ))
}

/// The owners a request body names with `blockOwnerDeletion: true`, as (group, plural, name).
fn blocked_owners(app: &AppState, body: &Bytes) -> Vec<(String, String, String)> {
    let Ok(object) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let Some(owners) = object
        .pointer("/metadata/ownerReferences")
        .and_then(serde_json::Value::as_array)
    else {
        return Vec::new();
    };
    let registry = app.store.registry();
    owners
        .iter()
        .filter(|o| o["blockOwnerDeletion"] == serde_json::Value::Bool(true))
        .filter_map(|o| {
            let api_version = o["apiVersion"].as_str()?;
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let kind = o["kind"].as_str()?;
            let resource = registry
                .iter()
                .find(|r| r.group == group && r.version == version && r.kind == kind)?;
            Some((
                group.to_owned(),
                resource.plural.clone(),
                o["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

fn injected(status: u16, retry_after: Option<u64>) -> ApiError {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut err: ApiError = match status {
        429 => status_error::too_many_requests(retry_after.unwrap_or(1) as u32).into(),
        _ => statuses::injected(code).into(),
    };
    err.code = code;
    if retry_after.is_some() {
        err.retry_after = retry_after;
    }
    err
}

async fn serve(
    app: &AppState,
    verb: Verb,
    path: &ApiPath,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let registry = app.store.registry();
    let Some(resource) = registry.lookup(&path.group, &path.version, &path.resource) else {
        return error_response(statuses::resource_not_served(&path.resource).into());
    };
    if path.namespace.is_some() && !resource.namespaced {
        return error_response(statuses::resource_not_served(&path.resource).into());
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let output = Output::negotiate(accept, query);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let body = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        // kubectl's imperative `create` sends protobuf for built-in kinds.
        match protobuf::decode(&body) {
            Ok(obj) => Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
            Err(msg) => {
                let (code, mut status) = status_error::unsupported_media_type(&[
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf (v1 Namespace, ConfigMap, Secret, ServiceAccount)",
                ]);
                status["message"] = json!(format!(
                    "{}: {msg}",
                    status["message"].as_str().unwrap_or_default()
                ));
                return error_response((code, status).into());
            }
        }
    } else {
        body
    };
    if verb == Verb::Watch {
        return start_watch(app, &resource, path, query, output).unwrap_or_else(error_response);
    }
    let key = resource.storage.clone().unwrap_or_else(|| resource.key());
    let conversion = Conversion::for_resource(&resource);
    let out = |obj: &Value| conversion.map_or_else(|| obj.clone(), |c| (c.from_storage)(obj));
    let outs = |objs: Vec<Arc<Value>>| -> Vec<Arc<Value>> {
        match conversion {
            Some(c) => objs.iter().map(|o| Arc::new((c.from_storage)(o))).collect(),
            None => objs,
        }
    };
    let ns = path.namespace.clone().unwrap_or_default();
    let name = path.name.clone().unwrap_or_default();
    let result: ApiResult<Response> = (|| -> ApiResult<Response> {
        match verb {
            Verb::Get => {
                if path.subresource.as_deref().is_some_and(|s| s != "status") {
                    return Err(statuses::resource_not_served(&path.resource).into());
                }
                let obj = out(&*app.store.get(&key, &ns, &name)?);
                Ok(json_response(
                    StatusCode::OK,
                    &output.render_one(&resource, &obj),
                ))
            }
            Verb::List => {
                let labels = label_selector(query)?;
                let fields = field_selector(query, &resource)?;
                let limit = query.get("limit").and_then(|l| l.parse().ok());
                // `NotOlderThan` and an unset match are served from the current state, which
                // is never older than anything the server has handed out.
                let exact = match query.get("resourceVersionMatch").map(String::as_str) {
                    Some("Exact") => query
                        .get("resourceVersion")
                        .and_then(|rv| rv.parse::<u64>().ok())
                        .filter(|rv| *rv > 0),
                    _ => None,
                };
                let page = app.store.list_at(
                    &key,
                    path.namespace.as_deref(),
                    &labels,
                    &fields,
                    limit,
                    query
                        .get("continue")
                        .map(String::as_str)
                        .filter(|c| !c.is_empty()),
                    exact,
                )?;
                let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
                if let Some(token) = &page.continue_token {
                    meta["continue"] = json!(token);
                }
                Ok(json_response(
                    StatusCode::OK,
                    &output.render_list(&resource, &outs(page.items), meta),
                ))
            }
            Verb::Create => {
                if path.subresource.is_some() {
                    return Err(statuses::resource_not_served(&path.resource).into());
                }
                let obj = parse_body(&body)?;
                let obj = conversion.map_or(obj.clone(), |c| (c.to_storage)(&obj));
                let opts = write_options(query, headers);
                let created = app.store.create(&key, &ns, obj, &opts)?;
                Ok(json_response(StatusCode::CREATED, &out(&created)))
            }
            Verb::Update => {
                let obj = parse_body(&body)?;
                let obj = conversion.map_or(obj.clone(), |c| (c.to_storage)(&obj));
                let opts = write_options(query, headers);
                let (updated, _) = app.store.update(
                    &key,
                    &ns,
                    &name,
                    path.subresource.as_deref(),
                    Mutation::Replace(obj),
                    &opts,
                )?;
                Ok(json_response(StatusCode::OK, &out(&updated)))
            }
            Verb::Patch => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let patch_body = parse_body(&body)?;
                let opts = write_options(query, headers);
                let force = query.get("force").is_some_and(|f| f == "true");
                let mime = content_type.split(';').next().unwrap_or_default().trim();
                let mutation = match mime {
                    "application/merge-patch+json" => Mutation::Merge(&patch_body),
                    "application/json-patch+json" => Mutation::Json(&patch_body),
                    "application/strategic-merge-patch+json" => Mutation::Strategic(&patch_body),
                    "application/apply-patch+yaml" | "application/apply-patch+json" => {
                        Mutation::Apply {
                            config: &patch_body,
                            force,
                        }
                    }
                    _ => {
                        return Err(status_error::unsupported_media_type(&[
                            "application/json-patch+json",
                            "application/merge-patch+json",
                            "application/apply-patch+yaml",
                            "application/strategic-merge-patch+json",
                        ])
                        .into());
                    }
                };
                let existing = app.store.get(&key, &ns, &name).ok();
                let exists = existing.is_some();
                // A converted view is patched in its own shape, then stored as a replace
                // guarded by the resourceVersion it was read at.
                let replaced;
                let mutation = match (conversion, &existing) {
                    (Some(c), Some(stored)) => {
                        let mut view = (c.from_storage)(stored);
                        match mutation {
                            Mutation::Merge(p) => patch::merge_patch(&mut view, p),
                            Mutation::Json(p) => patch::json_patch(&mut view, p).map_err(|e| {
                                ApiError::from(statuses::unprocessable(e.message()))
                            })?,
                            Mutation::Strategic(p) => {
                                patch::strategic_merge_patch(&mut view, p, &*resource.list_types)
                                    .map_err(|e| {
                                        ApiError::from(statuses::unprocessable(e.message()))
                                    })?
                            }
                            _ => {
                                return Err(status_error::unsupported_media_type(&[
                                    "application/json-patch+json",
                                    "application/merge-patch+json",
                                    "application/strategic-merge-patch+json",
                                ])
                                .into());
                            }
                        }
                        let mut stored_shape = (c.to_storage)(&view);
                        stored_shape["metadata"]["resourceVersion"] =
                            json!(crate::store::rv_of(stored).to_string());
                        replaced = stored_shape;
                        Mutation::Replace(replaced)
                    }
                    _ => mutation,
                };
                let (patched, _) = app.store.update(
                    &key,
                    &ns,
                    &name,
                    path.subresource.as_deref(),
                    mutation,
                    &opts,
                )?;
                let patched = out(&patched);
                let code = if exists {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok(json_response(code, &patched))
            }
            Verb::Delete => {
                let opts = delete_options(query, &body)?;
                let deleted = app.store.delete(&key, &ns, &name, &opts)?;
                Ok(json_response(StatusCode::OK, &out(&deleted)))
            }
            Verb::DeleteCollection => {
                let labels = label_selector(query)?;
                let fields = field_selector(query, &resource)?;
                let opts = delete_options(query, &body)?;
                let deleted = app.store.delete_collection(
                    &key,
                    path.namespace.as_deref(),
                    &labels,
                    &fields,
                    &opts,
                )?;
                let meta = json!({"resourceVersion": app.store.resource_version().to_string()});
                Ok(json_response(
                    StatusCode::OK,
                    &Output::Object.render_list(&resource, &outs(deleted), meta),
                ))
            }
            Verb::Watch => unreachable!("watches return above"),
        }
    })();
    result.unwrap_or_else(error_response)
}

/// How a resource served from another resource's storage converts (see [`crate::events`]).
#[derive(Clone, Copy)]
struct Conversion {
    to_storage: fn(&Value) -> Value,
    from_storage: fn(&Value) -> Value,
}

impl Conversion {
    fn for_resource(resource: &Resource) -> Option<Self> {
        (resource.group == "events.k8s.io").then_some(Conversion {
            to_storage: events::to_core,
            from_storage: events::to_events_v1,
        })
    }
}

/// What shape the client asked the objects in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Object,
    Metadata,
    Table(IncludeObject),
}

impl Output {
    fn negotiate(accept: &str, query: &HashMap<String, String>) -> Self {
        // kubectl sends several alternatives, best first; the first one we support wins.
        for alt in accept.split(',') {
            let params: HashMap<&str, &str> = alt
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().split_once('='))
                .collect();
            match params.get("as") {
                Some(&"Table") => {
                    let include = match query.get("includeObject").map(String::as_str) {
                        Some("None") => IncludeObject::None,
                        Some("Object") => IncludeObject::Object,
                        _ => IncludeObject::Metadata,
                    };
                    return Output::Table(include);
                }
                Some(&"PartialObjectMetadata") | Some(&"PartialObjectMetadataList") => {
                    return Output::Metadata;
                }
                Some(_) => continue,
                None => return Output::Object,
            }
        }
        Output::Object
    }

    fn render_one(self, resource: &Resource, obj: &Value) -> Value {
        match self {
            Output::Object => obj.clone(),
            Output::Metadata => partial_metadata(obj),
            Output::Table(include) => table::to_table(
                std::slice::from_ref(obj),
                &resource.printer_columns,
                include,
                json!({"resourceVersion": rv_of(obj).to_string()}),
            ),
        }
    }

    fn render_list(self, resource: &Resource, items: &[Arc<Value>], meta: Value) -> Value {
        match self {
            Output::Object => json!({
                "apiVersion": resource.api_version(),
                "kind": resource.list_kind,
                "metadata": meta,
                "items": items.iter().map(|o| (**o).clone()).collect::<Vec<_>>(),
            }),
            Output::Metadata => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadataList",
                "metadata": meta,
                "items": items.iter().map(|o| partial_metadata(o)).collect::<Vec<_>>(),
            }),
            Output::Table(include) => {
                let objects: Vec<Value> = items.iter().map(|o| (**o).clone()).collect();
                table::to_table(&objects, &resource.printer_columns, include, meta)
            }
        }
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn start_watch(
    app: &AppState,
    resource: &Arc<Resource>,
    path: &ApiPath,
    query: &HashMap<String, String>,
    output: Output,
) -> ApiResult<Response> {
    let labels = label_selector(query)?;
    let fields = field_selector(query, resource)?;
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let no_initial = query.get("sendInitialEvents").is_some_and(|v| v == "false");
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let start = match rv {
        _ if send_initial => WatchStart::Now,
        "" | "0" if no_initial => WatchStart::Latest,
        "" | "0" => WatchStart::Now,
        rv => WatchStart::After(rv.parse().map_err(|_| {
            ApiError::from(status_error::bad_request(&format!(
                "invalid resource version: {rv}"
            )))
        })?),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_WATCH)
        .min(MAX_WATCH);
    let key = resource.storage.clone().unwrap_or_else(|| resource.key());
    let filter = WatchFilter {
        key: key.clone(),
        namespace: path.namespace.clone(),
        labels,
        fields,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let subscription = match app.store.watch(&key, path.namespace.as_deref(), start) {
        Ok(s) => s,
        Err(e) if e.code == StatusCode::GONE => {
            // The apiserver answers an expired resourceVersion with 200 and an ERROR event;
            // clients (kube-rs, client-go) re-list when they see it.
            let line = event_line("ERROR", &e.body);
            let _ = tx.try_send(Ok(line));
            drop(tx);
            return Ok(stream_response(rx));
        }
        Err(e) => return Err(e),
    };
    let watch = WatchTask {
        resource: resource.clone(),
        conversion: Conversion::for_resource(resource),
        filter,
        output,
        bookmarks,
        send_initial,
        tx,
        cuts: app.faults.watch_cuts(),
        shutdown: app.shutdown.clone(),
        last_rv: subscription.resource_version,
    };
    tokio::spawn(watch.run(
        subscription.initial,
        subscription.receiver,
        timeout,
        subscription.resource_version,
    ));
    Ok(stream_response(rx))
}

fn stream_response(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

struct WatchFilter {
    key: ResourceKey,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: crate::selector::FieldSelector,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&labels_of(obj)) && self.fields.matches(obj)
    }

    /// The event type this watch sees for a change, or None when it sees nothing: an object
    /// that leaves the selector is DELETED for this watch, one that enters it is ADDED.
    fn view(&self, change: &Change) -> Option<ChangeType> {
        if change.resource != self.key {
            return None;
        }
        if let Some(ns) = &self.namespace {
            let obj_ns = change
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if obj_ns != ns {
                return None;
            }
        }
        let now = self.matches(&change.object);
        let before = change.previous.as_ref().is_some_and(|p| self.matches(p));
        match change.change {
            ChangeType::Added => now.then_some(ChangeType::Added),
            ChangeType::Deleted => now.then_some(ChangeType::Deleted),
            ChangeType::Modified => match (before, now) {
                (true, true) => Some(ChangeType::Modified),
                (false, true) => Some(ChangeType::Added),
                (true, false) => Some(ChangeType::Deleted),
                (false, false) => None,
            },
        }
    }
}

struct WatchTask {
    resource: Arc<Resource>,
    conversion: Option<Conversion>,
    filter: WatchFilter,
    output: Output,
    bookmarks: bool,
    send_initial: bool,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    cuts: tokio::sync::watch::Receiver<u64>,
    shutdown: CancellationToken,
    last_rv: u64,
}

impl WatchTask {
    async fn run(
        mut self,
        initial: Vec<Arc<Change>>,
        mut receiver: broadcast::Receiver<Arc<Change>>,
        timeout: Duration,
        snapshot_rv: u64,
    ) {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for change in &initial {
            if !self.send_change(change).await {
                return;
            }
        }
        self.last_rv = snapshot_rv;
        if self.send_initial && !self.send_bookmark(true).await {
            return;
        }
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        self.cuts.borrow_and_update();
        loop {
            tokio::select! {
                received = receiver.recv() => match received {
                    Ok(change) => {
                        if change.rv <= snapshot_rv {
                            continue;
                        }
                        if !self.send_change(&change).await {
                            return;
                        }
                        self.last_rv = change.rv;
                    }
                    // A watcher that fell too far behind is closed; the client resumes from
                    // the last resourceVersion it saw, which the store still retains.
                    Err(_) => return,
                },
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.send_bookmark(false).await {
                        return;
                    }
                }
                _ = &mut deadline => {
                    if self.bookmarks {
                        self.send_bookmark(false).await;
                    }
                    return;
                }
                _ = self.cuts.changed() => return,
                _ = self.shutdown.cancelled() => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    async fn send_change(&mut self, change: &Change) -> bool {
        let Some(kind) = self.filter.view(change) else {
            return true;
        };
        let converted = self.conversion.map(|c| (c.from_storage)(&change.object));
        let obj = converted.as_ref().unwrap_or(&change.object);
        let object = match self.output {
            Output::Object => obj.clone(),
            Output::Metadata => partial_metadata(obj),
            Output::Table(include) => table::to_table(
                std::slice::from_ref(obj),
                &self.resource.printer_columns,
                include,
                json!({"resourceVersion": change.rv.to_string()}),
            ),
        };
        self.tx
            .send(Ok(event_line(kind.as_str(), &object)))
            .await
            .is_ok()
    }

    async fn send_bookmark(&mut self, initial_events_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "apiVersion": self.resource.api_version(),
            "kind": self.resource.kind,
            "metadata": meta,
        });
        self.tx
            .send(Ok(event_line("BOOKMARK", &object)))
            .await
            .is_ok()
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn label_selector(query: &HashMap<String, String>) -> ApiResult<LabelSelector> {
    LabelSelector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(|e| status_error::bad_request(&format!("unable to parse requirement: {e}")).into())
}

fn field_selector(
    query: &HashMap<String, String>,
    resource: &Resource,
) -> ApiResult<FieldSelector> {
    let extra: Vec<&str> = resource
        .selectable_fields
        .iter()
        .map(String::as_str)
        .collect();
    FieldSelector::parse_with_fields(
        query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or_default(),
        &extra,
    )
    .map_err(|e| status_error::bad_request(&e.to_string()).into())
}

fn parse_body(body: &Bytes) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(status_error::bad_request("the request body is empty").into());
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_norway::from_slice::<Value>(body))
        .map_err(|e| {
            status_error::bad_request(&format!("the request body could not be decoded: {e}")).into()
        })
}

fn write_options(query: &HashMap<String, String>, headers: &HeaderMap) -> WriteOptions {
    // Like the apiserver, a write without fieldManager is attributed to the client's
    // User-Agent name.
    let field_manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| {
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .filter(|m| !m.is_empty())
                .map(str::to_string)
        });
    WriteOptions {
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        field_manager,
        strict_fields: query.get("fieldValidation").is_some_and(|v| v == "Strict"),
    }
}

fn delete_options(query: &HashMap<String, String>, body: &Bytes) -> ApiResult<DeleteOptions> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        parse_body(body)?
    };
    let propagation = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| query.get("propagationPolicy").map(String::as_str));
    let propagation = match propagation {
        None | Some("Background") => Propagation::Background,
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(other) => {
            return Err(status_error::bad_request(&format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))
            .into());
        }
    };
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All")
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    Ok(DeleteOptions {
        dry_run,
        propagation,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn json_response<T: serde::Serialize + ?Sized>(code: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pub fn error_response(err: ApiError) -> Response {
    let mut response = json_response(err.code, &err.body);
    if let Some(seconds) = err.retry_after
        && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ApiPath {
        match route(path) {
            Route::Resource(p) => p,
            _ => panic!("{path} is not a resource path"),
        }
    }

    #[test]
    fn namespaced_and_cluster_paths_route() {
        let p = resource("/apis/flotilla.dev/v1alpha1/namespaces/fleet/devices/d1/status");
        assert_eq!(
            (
                p.group.as_str(),
                p.namespace.as_deref(),
                p.resource.as_str(),
                p.name.as_deref(),
                p.subresource.as_deref()
            ),
            (
                "flotilla.dev",
                Some("fleet"),
                "devices",
                Some("d1"),
                Some("status")
            )
        );
        let p = resource("/api/v1/namespaces/tenant-a");
        assert_eq!(
            (p.resource.as_str(), p.name.as_deref(), p.namespace),
            ("namespaces", Some("tenant-a"), None)
        );
        let p = resource("/api/v1/namespaces/tenant-a/status");
        assert_eq!(
            (p.resource.as_str(), p.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let p = resource("/api/v1/namespaces/tenant-a/configmaps");
        assert_eq!(
            (p.namespace.as_deref(), p.resource.as_str(), p.name),
            (Some("tenant-a"), "configmaps", None)
        );
        let p = resource("/apis/flotilla.dev/v1alpha1/plans");
        assert_eq!((p.namespace, p.resource.as_str()), (None, "plans"));
    }

    #[test]
    fn table_is_negotiated_from_kubectl_accept_header() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(matches!(
            Output::negotiate(accept, &HashMap::new()),
            Output::Table(IncludeObject::Metadata)
        ));
        assert!(Output::negotiate("application/json", &HashMap::new()) == Output::Object);
        let meta =
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert!(Output::negotiate(meta, &HashMap::new()) == Output::Metadata);
    }
}
