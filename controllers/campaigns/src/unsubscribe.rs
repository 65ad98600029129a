//! One-click unsubscribe: the signed, expiring link in every message, and the HTTP endpoint
//! that records the opt-out on the Subscription (`spec.contact.optedOut: true`).
//!
//! A token is `v1.<subscription>.<expiry (unix seconds)>.<signature>`, the signature being
//! HMAC-SHA256 over `v1.<subscription>.<expiry>` with the operator's unsubscribe key (URL-safe
//! base64, no padding). A Subscription name may hold dots (a DNS subdomain), so it is
//! everything between the version and the last two fields.
//!
//! The endpoint follows RFC 8058: `POST /unsubscribe/<token>` (what mail clients send for
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`) opts out at once; `GET` (a person
//! clicking the link, or a mail scanner following it) only shows a page with a button that
//! POSTs, so a link prefetched by a scanner unsubscribes nobody.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use flotilla_crds::Subscription;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use sha2::Sha256;

/// How long an unsubscribe link stays valid unless configured otherwise.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
const VERSION: &str = "v1";

/// Why a token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this operator makes.
    #[error("malformed unsubscribe token")]
    Malformed,
    /// The signature does not match (another key, or altered).
    #[error("unsubscribe token signature does not match")]
    BadSignature,
    /// Past its expiry.
    #[error("unsubscribe link expired")]
    Expired,
}

/// Signs and checks unsubscribe tokens with one key.
#[derive(Clone)]
pub struct Signer {
    key: Arc<[u8]>,
    validity: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with `key` (at least 32 bytes; shorter keys are refused) and links valid for
    /// `validity`.
    pub fn new(key: &[u8], validity: Duration) -> Option<Self> {
        (key.len() >= 32).then(|| Self {
            key: key.into(),
            validity,
        })
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(payload.as_bytes());
        mac
    }

    /// The token for Subscription `subscription`, issued at `now`.
    pub fn token(&self, subscription: &str, now: Timestamp) -> String {
        let expiry = now.as_second() + i64::try_from(self.validity.as_secs()).unwrap_or(i64::MAX);
        let payload = format!("{VERSION}.{subscription}.{expiry}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The Subscription a token names, if it is genuine and not expired at `now`.
    ///
    /// # Errors
    /// [`TokenError`] says why it is refused.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<String, TokenError> {
        let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (head, expiry) = payload.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let subscription = head
            .strip_prefix(VERSION)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|name| !name.is_empty())
            .ok_or(TokenError::Malformed)?;
        let expiry: i64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        // `verify_slice` compares in constant time.
        self.mac(payload)
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        if now.as_second() > expiry {
            return Err(TokenError::Expired);
        }
        Ok(subscription.to_owned())
    }
}

/// The unsubscribe links of messages: `<base>/unsubscribe/<token>`.
#[derive(Clone, Debug)]
pub struct Links {
    base: String,
    signer: Signer,
}

impl Links {
    /// Links under `base` (the public URL the endpoint is reached at).
    pub fn new(base: &str, signer: Signer) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            signer,
        }
    }

    /// The link for Subscription `subscription` now.
    pub fn link(&self, subscription: &str) -> String {
        format!(
            "{}/unsubscribe/{}",
            self.base,
            self.signer.token(subscription, Timestamp::now())
        )
    }
}

/// Records an opt-out.
pub trait OptOut: Send + Sync + 'static {
    /// Opts Subscription `name` out of campaigns; `Ok(false)` when it does not exist.
    fn opt_out(&self, name: &str) -> futures::future::BoxFuture<'_, Result<bool, kube::Error>>;
}

/// Opt-outs written to the API server: a merge patch of `spec.contact.optedOut`.
#[derive(Clone)]
pub struct ApiOptOut(pub Client);

impl OptOut for ApiOptOut {
    fn opt_out(&self, name: &str) -> futures::future::BoxFuture<'_, Result<bool, kube::Error>> {
        let api: Api<Subscription> = Api::all(self.0.clone());
        let name = name.to_owned();
        Box::pin(async move {
            let patch = serde_json::json!({"spec": {"contact": {"optedOut": true}}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
                Err(error) => Err(error),
            }
        })
    }
}

struct Endpoint {
    signer: Signer,
    opt_out: Arc<dyn OptOut>,
}

/// The endpoint's routes: `GET` and `POST /unsubscribe/{token}`.
pub fn router(signer: Signer, opt_out: Arc<dyn OptOut>) -> Router {
    Router::new()
        .route("/unsubscribe/{token}", get(confirm).post(unsubscribe))
        .with_state(Arc::new(Endpoint { signer, opt_out }))
}

fn refused(error: &TokenError) -> Response {
    let status = match error {
        TokenError::Expired => StatusCode::GONE,
        _ => StatusCode::NOT_FOUND,
    };
    (
        status,
        Html(page(&format!("This link cannot be used: {error}."))),
    )
        .into_response()
}

fn page(text: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><p>{text}</p></body></html>"
    )
}

async fn confirm(State(endpoint): State<Arc<Endpoint>>, Path(token): Path<String>) -> Response {
    if let Err(error) = endpoint.signer.verify(&token, Timestamp::now()) {
        return refused(&error);
    }
    // The token is URL-safe base64 and dots only; nothing in it needs escaping.
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\" action=\"{token}\"><p>Stop receiving these messages?</p>\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    ))
    .into_response()
}

async fn unsubscribe(State(endpoint): State<Arc<Endpoint>>, Path(token): Path<String>) -> Response {
    let subscription = match endpoint.signer.verify(&token, Timestamp::now()) {
        Ok(subscription) => subscription,
        Err(error) => return refused(&error),
    };
    match endpoint.opt_out.opt_out(&subscription).await {
        Ok(_) => {
            tracing::info!(%subscription, "unsubscribed");
            Html(page("You are unsubscribed.")).into_response()
        }
        Err(error) => {
            tracing::warn!(%subscription, %error, "recording an unsubscribe");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html(page("Please try again in a minute.")),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(&[7u8; 32], Duration::from_secs(3600)).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_token_names_its_subscription_until_it_expires() {
        let token = signer().token("acme.eu-1", at("2030-01-01T00:00:00Z"));
        assert_eq!(
            signer().verify(&token, at("2030-01-01T00:59:00Z")),
            Ok("acme.eu-1".to_owned())
        );
        assert_eq!(
            signer().verify(&token, at("2030-01-01T01:00:01Z")),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn an_altered_or_foreign_token_is_refused() {
        let token = signer().token("acme", at("2030-01-01T00:00:00Z"));
        let now = at("2030-01-01T00:01:00Z");
        let other = token.replacen("acme", "globe", 1);
        assert_eq!(signer().verify(&other, now), Err(TokenError::BadSignature));
        let longer = {
            let (payload, signature) = token.rsplit_once('.').unwrap();
            let (head, _) = payload.rsplit_once('.').unwrap();
            format!("{head}.99999999999.{signature}")
        };
        assert_eq!(signer().verify(&longer, now), Err(TokenError::BadSignature));
        let foreign = Signer::new(&[8u8; 32], Duration::from_secs(3600)).unwrap();
        assert_eq!(foreign.verify(&token, now), Err(TokenError::BadSignature));
        for bad in ["", "v1", "v1..1.x", "v2.acme.1.abc", "v1.acme.soon.abc"] {
            assert_eq!(
                signer().verify(bad, now),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        assert!(Signer::new(b"short", Duration::from_secs(1)).is_none());
    }

    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<String>>);

    impl OptOut for Recorded {
        fn opt_out(&self, name: &str) -> futures::future::BoxFuture<'_, Result<bool, kube::Error>> {
            self.0.lock().unwrap().push(name.to_owned());
            Box::pin(async { Ok(true) })
        }
    }

    #[tokio::test]
    async fn get_only_asks_and_post_opts_out() {
        let recorded = Arc::new(Recorded::default());
        let app = router(signer(), recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let link = Links::new(&base, signer()).link("acme");
        let client = reqwest::Client::new();
        let page = client.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("method=\"post\""));
        assert!(
            recorded.0.lock().unwrap().is_empty(),
            "a GET changes nothing"
        );
        let done = client
            .post(&link)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 200);
        assert_eq!(*recorded.0.lock().unwrap(), ["acme"]);
        let forged = client
            .post(format!("{base}/unsubscribe/v1.globex.99999999999.AAAA"))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 404);
        assert_eq!(recorded.0.lock().unwrap().len(), 1);
    }
}
