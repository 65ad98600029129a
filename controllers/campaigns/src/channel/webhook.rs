//! Webhook channel: each message is POSTed as JSON to `spec.webhook.url`.
//!
//! | Header | Value |
//! |---|---|
//! | `Content-Type` | `application/json` |
//! | `Idempotency-Key` | the message id (the same on every re-send) |
//! | `X-Flotilla-Timestamp` | Unix seconds of this attempt (only with a signing key) |
//! | `X-Flotilla-Signature` | `t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<unix seconds>.<body>")>` |
//!
//! The body is the [`Message`] as JSON: `{"id", "campaign", "variant", "recipient": {"name",
//! "email"}, "subject", "body", "unsubscribeUrl"}` (absent `name`, `email` and `subject` are
//! left out). Receivers verify the signature over the raw body and refuse timestamps older than
//! a few minutes, so a captured request cannot be replayed later; the scheme is Stripe's.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::http::{client, outcome_of_answer, outcome_of_error, retry_after};
use super::{Message, TransportError};
use crate::campaign::retry::Outcome;
use flotilla_crds::channel::WebhookChannel;

/// Header carrying the message id.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Header carrying the Unix time the signature was made at.
pub const TIMESTAMP_HEADER: &str = "X-Flotilla-Timestamp";
/// Header carrying the signature, `t=<unix seconds>,v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Flotilla-Signature";

/// The `X-Flotilla-Signature` value of `body` sent at `timestamp` (Unix seconds).
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Sends messages to one webhook.
#[derive(Debug)]
pub struct WebhookTransport {
    client: reqwest::Client,
    url: reqwest::Url,
    signing_key: Option<Vec<u8>>,
}

impl WebhookTransport {
    /// A transport for `settings`, signing with `signing_key` when there is one.
    pub fn new(
        settings: &WebhookChannel,
        signing_key: Option<Vec<u8>>,
        timeout: std::time::Duration,
    ) -> Result<Self, TransportError> {
        let url = settings
            .url
            .parse()
            .map_err(|source| TransportError::Url { source })?;
        Ok(Self {
            client: client(timeout)?,
            url,
            signing_key,
        })
    }

    /// POSTs `message`; the answer is mapped by [`Outcome::of_http`], honouring `Retry-After`.
    pub async fn send(&self, message: &Message) -> Outcome {
        let body = serde_json::to_vec(message).expect("a Message serializes");
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(IDEMPOTENCY_KEY_HEADER, &message.id);
        if let Some(key) = &self.signing_key {
            let now = jiff::Timestamp::now().as_second();
            request = request
                .header(TIMESTAMP_HEADER, now.to_string())
                .header(SIGNATURE_HEADER, signature(key, now, &body));
        }
        match request.body(body).send().await {
            Ok(response) => outcome_of_answer(
                response.status().as_u16(),
                retry_after(&response).as_deref(),
                None,
            ),
            Err(error) => outcome_of_error(&error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_timestamp_and_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac Jefe
        let value = signature(b"Jefe", 1_700_000_000, b"{}");
        assert_eq!(
            value,
            "t=1700000000,v1=d3793e2b4103edfbd98cc19591832f5fad701d413db9fcae0ae7dab8184ed207"
        );
        assert_ne!(value, signature(b"Jefe", 1_700_000_001, b"{}"));
        assert_ne!(value, signature(b"Jefe", 1_700_000_000, b"{ }"));
        assert_ne!(value, signature(b"jefe", 1_700_000_000, b"{}"));
    }
}
