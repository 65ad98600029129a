//! The operator's API client in controller tests: kube's client stack *without* its retry
//! layer, plus a log of every request as the caller saw it and, for the rare answer the sandbox
//! cannot give, canned responses.
//!
//! kube 5's default client retries `429`, `503` and `504` by itself (`RetryPolicy::
//! server_retry()`: up to 15 times, honouring `Retry-After`), so a fault the sandbox injects
//! would be retried inside the client and the controller would never see it. Tests that prove
//! how the *controller* handles a fault need the fault to reach it; production keeps kube's
//! retry (see "Who retries what" in `docs/architecture.md`).
//!
//! The log sits outside kube's stack: one entry per request the controller made, with the
//! time it was sent and the status it got back, so a test can measure the delay between a
//! failure and the controller's retry.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use kube::client::{Body, ClientBuilder, DynBody};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

/// One request the client sent.
#[derive(Clone, Debug)]
pub struct SentRequest {
    /// When it was sent.
    pub sent: Instant,
    /// The HTTP method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// Whether it was a watch (`?watch=true`).
    pub watch: bool,
    /// The response status, once it came (`None` while in flight or on a transport error).
    pub status: Option<u16>,
}

/// A response given instead of sending the request, for the next `times` matching requests.
#[derive(Clone, Debug)]
struct Canned {
    method: Method,
    path_suffix: String,
    status: u16,
    body: serde_json::Value,
    times: usize,
}

/// The request log and canned responses of one test client. Clones share.
#[derive(Clone, Default)]
pub struct ClientLog {
    sent: Arc<Mutex<Vec<SentRequest>>>,
    canned: Arc<Mutex<Vec<Canned>>>,
}

impl ClientLog {
    /// Every request sent, in order.
    pub fn sent(&self) -> Vec<SentRequest> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every request but watches sent with `method` to a path ending in `path_suffix`, in
    /// order.
    pub fn requests(&self, method: &Method, path_suffix: &str) -> Vec<SentRequest> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|r| !r.watch && r.method == method && r.path.ends_with(path_suffix))
            .cloned()
            .collect()
    }

    /// The statuses those requests got, in order (in-flight ones left out).
    pub fn statuses(&self, method: &Method, path_suffix: &str) -> Vec<u16> {
        self.requests(method, path_suffix)
            .iter()
            .filter_map(|r| r.status)
            .collect()
    }

    /// Answers the next `times` requests with `method` to a path ending in `path_suffix` with
    /// `status` and the `Status` object `body`, as the API server would: for answers the
    /// sandbox's fault injection cannot give (its injected faults carry a fixed message).
    pub fn respond(
        &self,
        method: Method,
        path_suffix: &str,
        status: u16,
        body: serde_json::Value,
        times: usize,
    ) {
        self.canned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Canned {
                method,
                path_suffix: path_suffix.to_owned(),
                status,
                body,
                times,
            });
    }

    /// Canned responses not given yet.
    pub fn canned_pending(&self) -> usize {
        self.canned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| c.times)
            .sum()
    }

    fn take_canned(&self, method: &Method, path: &str) -> Option<(u16, serde_json::Value)> {
        let mut canned = self.canned.lock().unwrap_or_else(PoisonError::into_inner);
        let index = canned
            .iter()
            .position(|c| c.times > 0 && c.method == method && path.ends_with(&c.path_suffix))?;
        let entry = &mut canned[index];
        entry.times -= 1;
        let answer = (entry.status, entry.body.clone());
        if entry.times == 0 {
            canned.remove(index);
        }
        Some(answer)
    }

    fn record(&self, request: SentRequest) -> usize {
        let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
        sent.push(request);
        sent.len() - 1
    }

    fn answered(&self, index: usize, status: u16) {
        if let Some(entry) = self
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(index)
        {
            entry.status = Some(status);
        }
    }
}

/// A client for `config` with kube's stack minus the retry layer, logging into `log`.
pub fn client(mut config: kube::Config, log: &ClientLog) -> kube::Client {
    config.default_retry = false;
    ClientBuilder::try_from(config)
        .expect("a plain-HTTP client config is always valid")
        .with_layer(&LogLayer(log.clone()))
        .build()
}

struct LogLayer(ClientLog);

impl<S> Layer<S> for LogLayer {
    type Service = LogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LogService {
            inner,
            log: self.0.clone(),
        }
    }
}

struct LogService<S> {
    inner: S,
    log: ClientLog,
}

type BoxedBody = Box<DynBody>;

impl<S> Service<Request<Body>> for LogService<S>
where
    S: Service<Request<Body>, Response = Response<BoxedBody>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<BoxedBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let watch = request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair == "watch=true"));
        let log = self.log.clone();
        let index = log.record(SentRequest {
            sent: Instant::now(),
            method: method.clone(),
            path: path.clone(),
            watch,
            status: None,
        });
        if let Some((status, body)) = log.take_canned(&method, &path).filter(|_| !watch) {
            log.answered(index, status);
            return Box::pin(async move { Ok(canned_response(status, &body)) });
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            log.answered(index, response.status().as_u16());
            Ok(response)
        })
    }
}

fn canned_response(status: u16, body: &serde_json::Value) -> Response<BoxedBody> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON"));
    let body: BoxedBody = Box::new(
        http_body_util::Full::new(bytes).map_err(|never: std::convert::Infallible| match never {}),
    );
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid response")
}
