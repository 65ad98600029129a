//! The imperative shell: the DDI routes, authentication, limits, and the Device status writes.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use flotilla_crds::{Device, DeviceStatus};
use flotilla_runtime::SharedClock;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth;
use crate::ddi::{ActionFeedback, ConfigData, ErrorBody};
use crate::fleet::{ENROLLED_BY_ANNOTATION, Fleet, GatewayTokenData};
use crate::metrics::GatewayMetrics;
use crate::offer::{self, DeviceBase, PollingSleep, Work};
use crate::report::{self, Refusal};

/// The field manager of the gateway's Device status writes.
pub const FIELD_MANAGER: &str = "flotilla-gateway";

/// The OpenAPI 3 description of the device API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/gateway-openapi.json");

/// Requests per device: a sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per minute.
    pub per_minute: NonZeroU32,
    /// Requests allowed at once above the sustained rate.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: NonZeroU32::new(120).expect("non-zero"),
            burst: NonZeroU32::new(30).expect("non-zero"),
        }
    }
}

/// What the routes need.
#[derive(Clone)]
pub struct AppState {
    pub fleet: Arc<Fleet>,
    pub client: Client,
    pub clock: SharedClock,
    pub metrics: GatewayMetrics,
    pub sleep: PollingSleep,
    pub last_seen_resolution: Duration,
    /// Base of the links in replies; from the request's `Host` when unset.
    pub public_url: Option<String>,
    /// Whether the listener speaks TLS (the scheme of links built from `Host`).
    pub tls: bool,
    pub limiter: Arc<DeviceLimiter>,
}

/// The per-device rate limit: a `governor` cell per device, keyed by a 64-bit hash of
/// `(tenant, controllerId)` instead of the two strings (about 60 bytes less a device).
/// SipHash with this process's random key, so no device can pick a name that collides with
/// another's; a chance collision (about 1 in 10⁹ at 100,000 devices) only makes two devices
/// share an allowance.
pub struct DeviceLimiter {
    cells: DefaultKeyedRateLimiter<u64>,
    keys: RandomState,
}

impl DeviceLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            cells: RateLimiter::keyed(Quota::per_minute(limit.per_minute).allow_burst(limit.burst)),
            keys: RandomState::new(),
        }
    }

    /// Counts a request of the device; `Err` with the time until it may send another.
    pub fn check(&self, tenant: &str, controller_id: &str) -> Result<(), Duration> {
        self.cells
            .check_key(&self.keys.hash_one((tenant, controller_id)))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets the devices that went quiet (their cells are full again).
    pub fn forget_quiet(&self) {
        self.cells.retain_recent();
        self.cells.shrink_to_fit();
    }
}

const POLL: &str = "/{tenant}/controller/v1/{controller_id}";
const DEPLOYMENT: &str = "/{tenant}/controller/v1/{controller_id}/deploymentBase/{action_id}";
const DEPLOYMENT_FEEDBACK: &str =
    "/{tenant}/controller/v1/{controller_id}/deploymentBase/{action_id}/feedback";
const CANCEL: &str = "/{tenant}/controller/v1/{controller_id}/cancelAction/{action_id}";
const CANCEL_FEEDBACK: &str =
    "/{tenant}/controller/v1/{controller_id}/cancelAction/{action_id}/feedback";
const CONFIG_DATA: &str = "/{tenant}/controller/v1/{controller_id}/configData";
const OPENAPI_PATH: &str = "/openapi.json";

/// Every route the device API serves (axum path syntax).
pub const ROUTES: [&str; 7] = [
    POLL,
    DEPLOYMENT,
    DEPLOYMENT_FEEDBACK,
    CANCEL,
    CANCEL_FEEDBACK,
    CONFIG_DATA,
    OPENAPI_PATH,
];

/// The device API routes, with `body_limit` bytes at most per request body.
pub fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .route(POLL, get(poll))
        .route(DEPLOYMENT, get(deployment_base))
        .route(DEPLOYMENT_FEEDBACK, post(deployment_feedback))
        .route(CANCEL, get(cancel_action))
        .route(CANCEL_FEEDBACK, post(cancel_feedback))
        .route(CONFIG_DATA, put(config_data))
        .route(OPENAPI_PATH, get(openapi))
        .fallback(|| async { ApiError::not_found("no such resource") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The `route` label of a matched path: its last fixed segments.
fn route_label(path: Option<&MatchedPath>) -> &'static str {
    let Some(path) = path else { return "unmatched" };
    let path = path.as_str();
    if path == "/openapi.json" {
        "openapi"
    } else if path.ends_with("deploymentBase/{action_id}/feedback") {
        "deploymentBase/feedback"
    } else if path.ends_with("deploymentBase/{action_id}") {
        "deploymentBase"
    } else if path.ends_with("cancelAction/{action_id}/feedback") {
        "cancelAction/feedback"
    } else if path.ends_with("cancelAction/{action_id}") {
        "cancelAction"
    } else if path.ends_with("configData") {
        "configData"
    } else {
        "poll"
    }
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let response = next.run(request).await;
    state.metrics.request(route, response.status().as_u16());
    response
}

/// An error answered with hawkBit's error body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "hawkbit.server.error.rest.authentication",
            "a valid 'Authorization: TargetToken <token>' (or GatewayToken) for this device is required",
        )
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "hawkbit.server.error.repo.entitiyNotFound",
            message,
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "hawkbit.server.error.rest.body.notReadable",
            message,
        )
    }

    fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "flotilla.gateway.error.unavailable",
            message,
        );
        error.retry_after = Some(Duration::from_secs(5));
        error
    }

    fn refused(refusal: Refusal) -> Self {
        match refusal {
            Refusal::UnknownAction => Self::not_found("no such action for this device"),
            Refusal::ActionClosed => Self::new(
                StatusCode::GONE,
                "hawkbit.server.error.action.closed",
                "the action is closed",
            ),
            Refusal::Invalid(message) => Self::new(
                StatusCode::BAD_REQUEST,
                "hawkbit.server.error.rest.param.invalid",
                message,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            exception_class: format!("dev.flotilla.gateway.{}", self.status.as_u16()),
            error_code: self.code.to_owned(),
            message: self.message,
        };
        let mut response = (self.status, json(&body)).into_response();
        if let Some(after) = self.retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        response
    }
}

fn json(body: &impl Serialize) -> ([(header::HeaderName, &'static str); 1], Vec<u8>) {
    (
        [(header::CONTENT_TYPE, "application/hal+json")],
        serde_json::to_vec(body).expect("DDI bodies serialize"),
    )
}

/// A JSON body with an ETag, or `304` when the device already has it.
fn cacheable(headers: &HeaderMap, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).expect("DDI bodies serialize");
    let etag = offer::etag(&bytes);
    let etag_header = HeaderValue::from_str(&etag).expect("hex is a valid header");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| offer::if_none_match(v, &etag))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag_header)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/hal+json"),
            ),
            (header::ETAG, etag_header),
        ],
        bytes,
    )
        .into_response()
}

/// Whether a request may enroll an unknown controllerId (only a poll does, as in hawkBit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enroll {
    Yes,
    No,
}

/// The Device `tenant/controller_id`, if the request carries its token and is within its
/// rate. Every failure before the token is checked is the same `401`, so a caller learns
/// nothing about which devices exist.
///
/// A `GatewayToken` authenticates the Devices its Secret enrolled (annotation
/// `flotilla.dev/enrolled-by`) and, on a poll, enrolls a controllerId no Device has yet: the
/// Device is created unapproved, with the Secret's `model`.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    controller_id: &str,
    enroll: Enroll,
) -> Result<Arc<Device>, ApiError> {
    let credential = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::credential)
        .ok_or_else(ApiError::unauthorized)?;
    let device = match credential {
        auth::Credential::Target(token) => {
            let device = state
                .fleet
                .device(tenant, controller_id)
                .ok_or_else(ApiError::unauthorized)?;
            let reference = device
                .spec
                .token_secret_ref
                .as_ref()
                .ok_or_else(ApiError::unauthorized)?;
            let expected = state
                .fleet
                .token_hash(tenant, &reference.name, &reference.key)
                .ok_or_else(ApiError::unauthorized)?;
            if !auth::token_hashes_to(token, &expected) {
                return Err(ApiError::unauthorized());
            }
            device
        }
        auth::Credential::Gateway(token) => {
            // Every Secret is tried (no early exit), so the time taken says nothing about
            // which one matched.
            let matched = state
                .fleet
                .gateway_tokens(tenant)
                .into_iter()
                .filter(|(_, data)| {
                    data.token_hash
                        .as_deref()
                        .is_some_and(|hash| auth::token_matches(token, hash))
                })
                .min_by(|a, b| a.0.cmp(&b.0))
                .ok_or_else(ApiError::unauthorized)?;
            let (secret, data) = matched;
            match state.fleet.device(tenant, controller_id) {
                Some(device) => {
                    if enrolled_by(&device) != Some(secret.as_str()) {
                        return Err(ApiError::unauthorized());
                    }
                    device
                }
                None if enroll == Enroll::Yes => {
                    enroll_device(state, tenant, controller_id, &secret, &data).await?
                }
                None => return Err(ApiError::unauthorized()),
            }
        }
    };
    // Limited after authentication, so nobody can use up another device's allowance.
    if let Err(wait) = state.limiter.check(tenant, controller_id) {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "flotilla.gateway.error.tooManyRequests",
            "this device exceeds its request rate",
        );
        error.retry_after = Some(wait.max(Duration::from_secs(1)));
        return Err(error);
    }
    Ok(device)
}

/// The gateway-token Secret that enrolled `device`, if one did.
fn enrolled_by(device: &Device) -> Option<&str> {
    device
        .metadata
        .annotations
        .as_ref()?
        .get(ENROLLED_BY_ANNOTATION)
        .map(String::as_str)
}

/// Creates the unapproved Device `tenant/controller_id` that the gateway-token Secret `secret`
/// admits. When a Device of that name appeared meanwhile (another replica enrolled it), that
/// one is read and must have been enrolled by the same Secret.
async fn enroll_device(
    state: &AppState,
    tenant: &str,
    controller_id: &str,
    secret: &str,
    data: &GatewayTokenData,
) -> Result<Arc<Device>, ApiError> {
    if !auth::is_device_name(controller_id) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "hawkbit.server.error.rest.param.invalid",
            "the controllerId must be a DNS-1123 name (lowercase letters, digits, '-' and '.') to enroll",
        ));
    }
    let model = data
        .model
        .as_deref()
        .and_then(|m| std::str::from_utf8(m).ok())
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let Some(model) = model else {
        tracing::warn!(
            namespace = tenant,
            secret,
            "the gateway-token Secret has no `model` key; it enrolls nothing"
        );
        return Err(ApiError::unavailable(
            "enrollment is not configured; try again later",
        ));
    };
    let device: Device = serde_json::from_value(serde_json::json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Device",
        "metadata": {
            "name": controller_id,
            "namespace": tenant,
            "annotations": {ENROLLED_BY_ANNOTATION: secret},
        },
        "spec": {"model": model, "approved": false},
    }))
    .map_err(|error| ApiError::bad_request(format!("cannot enroll: {error}")))?;
    let api: Api<Device> = Api::namespaced(state.client.clone(), tenant);
    let device = match api.create(&PostParams::default(), &device).await {
        Ok(created) => {
            state.metrics.write("enroll", "ok");
            tracing::info!(
                namespace = tenant,
                name = controller_id,
                secret,
                "device enrolled; awaiting approval"
            );
            created
        }
        Err(kube::Error::Api(response)) if response.code == 409 => {
            state.metrics.write("enroll", "conflict");
            let existing = api.get(controller_id).await.map_err(|error| {
                tracing::warn!(%error, namespace = tenant, name = controller_id, "re-reading the Device failed");
                ApiError::unavailable("the device twin cannot be read; try again")
            })?;
            if enrolled_by(&existing) != Some(secret) {
                return Err(ApiError::unauthorized());
            }
            existing
        }
        Err(kube::Error::Api(response)) if response.code == 422 => {
            state.metrics.write("enroll", "error");
            return Err(ApiError::bad_request(format!(
                "cannot enroll: {}",
                response.message
            )));
        }
        Err(error) => {
            state.metrics.write("enroll", "error");
            tracing::warn!(%error, namespace = tenant, name = controller_id, "enrolling the Device failed");
            return Err(ApiError::unavailable(
                "the device could not be enrolled; try again",
            ));
        }
    };
    state.fleet.wrote(&device);
    Ok(Arc::new(device))
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "hawkbit.server.error.rest.body.tooLarge",
                "the request body is too large",
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    decode_body(&body)
}

/// Reads a JSON request body (feedback, `configData`) as the handlers do: a body that is not
/// the expected document is `400` with serde's reason.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| ApiError::bad_request(error.to_string()))
}

fn base(state: &AppState, headers: &HeaderMap, tenant: &str, controller_id: &str) -> DeviceBase {
    let public = state.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(if state.tls { "https" } else { "http" });
        format!("{scheme}://{host}")
    });
    DeviceBase::new(&public, tenant, controller_id)
}

/// Writes what `compute` makes of the Device, if it is worth a write (see
/// [`report::to_write`]). The apply is conditional on the resourceVersion it was computed from;
/// on a conflict the Device is read once more and the report applied again.
async fn update_status(
    state: &AppState,
    device: Arc<Device>,
    cause: &'static str,
    compute: impl Fn(&Device) -> Result<DeviceStatus, Refusal>,
) -> Result<(), ApiError> {
    let namespace = device.metadata.namespace.clone().unwrap_or_default();
    let name = device.metadata.name.clone().unwrap_or_default();
    let api: Api<Device> = Api::namespaced(state.client.clone(), &namespace);
    let mut device = device;
    for attempt in 0..2 {
        let now = state.clock.now();
        let next = compute(&device).map_err(ApiError::refused)?;
        let Some(mut status) = report::to_write(
            device.status.as_ref(),
            next,
            now,
            state.last_seen_resolution,
        ) else {
            return Ok(());
        };
        // The controllers' fields, not the gateway's.
        status.conditions.clear();
        status.observed_generation = None;
        let patch = serde_json::json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": "Device",
            "metadata": {"name": name, "resourceVersion": device.metadata.resource_version},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(written) => {
                state.metrics.write(cause, "ok");
                state.fleet.wrote(&written);
                return Ok(());
            }
            Err(kube::Error::Api(response)) if response.code == 409 && attempt == 0 => {
                state.metrics.write(cause, "conflict");
                device = Arc::new(api.get(&name).await.map_err(|error| {
                    tracing::warn!(%error, namespace, name, "re-reading the Device failed");
                    ApiError::unavailable("the device twin cannot be read; try again")
                })?);
            }
            Err(error) => {
                state.metrics.write(cause, "error");
                tracing::warn!(%error, namespace, name, cause, "writing the Device status failed");
                return Err(ApiError::unavailable(
                    "the report could not be recorded; send it again",
                ));
            }
        }
    }
    Err(ApiError::unavailable(
        "the device twin keeps changing; send the report again",
    ))
}

type DevicePath = Path<(String, String)>;
type ActionPath = Path<(String, String, String)>;

/// The `{actionId}` path segment: an integer, or `404` (no action has that name).
pub fn action_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("no such action for this device"))
}

async fn poll(
    State(state): State<AppState>,
    Path((tenant, controller_id)): DevicePath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = authenticate(&state, &headers, &tenant, &controller_id, Enroll::Yes).await?;
    // Contact is recorded on a best-effort basis: a device must get its work even while the
    // API server is slow.
    let _ = update_status(&state, device.clone(), "poll", |d| Ok(report::contact(d))).await;
    let release = device
        .spec
        .firmware
        .as_ref()
        .and_then(|f| state.fleet.release(&tenant, &f.release));
    let reply = offer::poll_reply(
        &device,
        release.as_ref().map(|r| &r.spec),
        &base(&state, &headers, &tenant, &controller_id),
        state.sleep,
    );
    Ok(cacheable(&headers, &reply))
}

async fn deployment_base(
    State(state): State<AppState>,
    Path((tenant, controller_id, action)): ActionPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = authenticate(&state, &headers, &tenant, &controller_id, Enroll::No).await?;
    let action = action_id(&action)?;
    let firmware = device
        .spec
        .firmware
        .as_ref()
        .filter(|f| f.action_id == action && device.spec.approved)
        .ok_or_else(|| ApiError::not_found("no such action for this device"))?;
    let release = state
        .fleet
        .release(&tenant, &firmware.release)
        .ok_or_else(|| {
            ApiError::not_found(format!("FirmwareRelease {} not found", firmware.release))
        })?;
    Ok(cacheable(
        &headers,
        &offer::deployment_reply(firmware, &release.spec),
    ))
}

async fn deployment_feedback(
    State(state): State<AppState>,
    Path((tenant, controller_id, action)): ActionPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let device = authenticate(&state, &headers, &tenant, &controller_id, Enroll::No).await?;
    let feedback: ActionFeedback = parse(body)?;
    let action = action_id(&action)?;
    let now = state.clock.now();
    update_status(&state, device, "feedback", |d| {
        report::deployment_feedback(d, action, &feedback, now)
    })
    .await?;
    Ok(StatusCode::OK)
}

async fn cancel_action(
    State(state): State<AppState>,
    Path((tenant, controller_id, action)): ActionPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let device = authenticate(&state, &headers, &tenant, &controller_id, Enroll::No).await?;
    let action = action_id(&action)?;
    match offer::work(&device) {
        Work::Cancel(running) if running == action => {
            Ok(cacheable(&headers, &offer::cancel_reply(action)))
        }
        _ => Err(ApiError::not_found("no cancellation of this action")),
    }
}

async fn cancel_feedback(
    State(state): State<AppState>,
    Path((tenant, controller_id, action)): ActionPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let device = authenticate(&state, &headers, &tenant, &controller_id, Enroll::No).await?;
    let feedback: ActionFeedback = parse(body)?;
    let action = action_id(&action)?;
    let now = state.clock.now();
    update_status(&state, device, "cancel", |d| {
        report::cancel_feedback(d, action, &feedback, now)
    })
    .await?;
    Ok(StatusCode::OK)
}

async fn config_data(
    State(state): State<AppState>,
    Path((tenant, controller_id)): DevicePath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let device = authenticate(&state, &headers, &tenant, &controller_id, Enroll::No).await?;
    let data: ConfigData = parse(body)?;
    let now = state.clock.now();
    update_status(&state, device, "config", |d| {
        report::config_data(d, &data, now)
    })
    .await?;
    Ok(StatusCode::OK)
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        let mut documented: Vec<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let mut served: Vec<String> = ROUTES
            .iter()
            .map(|r| {
                r.replace("{controller_id}", "{controllerId}")
                    .replace("{action_id}", "{actionId}")
            })
            .collect();
        documented.sort();
        served.sort();
        assert_eq!(served, documented);
        // Each documented operation names the responses the shell can give.
        let poll = &doc["paths"]["/{tenant}/controller/v1/{controllerId}"]["get"]["responses"];
        for code in ["200", "304", "401", "429"] {
            assert!(poll.get(code).is_some(), "poll documents {code}");
        }
    }

    #[test]
    fn routes_are_labelled_by_their_fixed_segments() {
        assert_eq!(route_label(None), "unmatched");
    }
}
