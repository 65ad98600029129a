//! An axum server on 127.0.0.1:0 that records every request and answers as told: a webhook
//! receiver or a fake Slack.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// How the receiver answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// This status, headers and body.
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never, as a receiver that hangs.
    Hang,
    /// 200 after this long, as a slow receiver.
    Slow(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
    /// Whether it carries a valid signature with `key`, checked as a receiver would:
    /// HMAC-SHA256 over `<timestamp>.<raw body>`.
    pub fn signed_with(&self, key: &[u8]) -> bool {
        use hmac::{Hmac, Mac};
        let Some(timestamp) = self.header("x-flotilla-timestamp") else {
            return false;
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(&self.body);
        let expected = format!(
            "t={timestamp},v1={}",
            hex::encode(mac.finalize().into_bytes())
        );
        self.header("x-flotilla-signature") == Some(expected.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Received>>,
    /// Answers for the next requests, before `answer`.
    queued: Mutex<std::collections::VecDeque<Answer>>,
    answer: Mutex<Option<Answer>>,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

/// A running receiver; it stops with the test's runtime.
#[derive(Clone)]
pub struct HttpReceiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl HttpReceiver {
    /// Starts a receiver answering 200 `ok`.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, shared }
    }

    pub fn answer_with(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = Some(answer);
    }

    /// Answers the next requests with `answers`, one each, then as before.
    pub fn answer_next(&self, answers: impl IntoIterator<Item = Answer>) {
        self.shared.queued.lock().unwrap().extend(answers);
    }

    /// The `Idempotency-Key` of every request, in arrival order.
    pub fn keys(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect()
    }

    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The most requests it was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.requests.lock().unwrap().push(Received {
        headers,
        body,
        at: std::time::Instant::now(),
    });
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let queued = shared.queued.lock().unwrap().pop_front();
    let answer = queued.or_else(|| shared.answer.lock().unwrap().clone());
    let response = match answer {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Answer::Status(status, headers, body)) => {
            let mut response = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Some(Answer::Hang) => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Some(Answer::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, "ok").into_response()
        }
    };
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}
