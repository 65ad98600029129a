//! What the Webhook and Slack transports share: one HTTP client per channel, and how an HTTP
//! answer or failure becomes an [`Outcome`].

use std::time::Duration;

use jiff::Timestamp;
use reqwest::header::RETRY_AFTER;

use super::TransportError;
use crate::campaign::retry::Outcome;

/// An HTTP client for one channel. Redirects are not followed: a receiver that moved answers
/// 3xx, which is permanent until the Channel's URL is fixed.
pub(super) fn client(timeout: Duration) -> Result<reqwest::Client, TransportError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flotilla/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| TransportError::HttpClient { source })
}

/// The outcome of an answer; `detail` (e.g. Slack's error code in the body) is appended to the
/// reason of a failure.
pub(super) fn outcome_of_answer(
    status: u16,
    retry_after: Option<&str>,
    detail: Option<&str>,
) -> Outcome {
    let outcome = Outcome::of_http(status, retry_after, Timestamp::now());
    match (outcome, detail.map(str::trim).filter(|d| !d.is_empty())) {
        (
            Outcome::Transient {
                reason,
                retry_after,
            },
            Some(detail),
        ) => Outcome::Transient {
            reason: format!("{reason} {}", truncate(detail)),
            retry_after,
        },
        (Outcome::Permanent { reason }, Some(detail)) => Outcome::Permanent {
            reason: format!("{reason} {}", truncate(detail)),
        },
        (outcome, _) => outcome,
    }
}

/// The `Retry-After` header of a response, if it is text.
pub(super) fn retry_after(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A request that got no answer: always transient (the receiver may be back soon).
pub(super) fn outcome_of_error(error: &reqwest::Error) -> Outcome {
    let what = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    Outcome::unreachable(what)
}

// Reasons end up in status and Events, which stay small.
fn truncate(detail: &str) -> &str {
    let end = detail
        .char_indices()
        .nth(120)
        .map_or(detail.len(), |(at, _)| at);
    &detail[..end]
}
