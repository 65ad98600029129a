//! What a failed delivery means and when to try again. Transient failures (timeouts,
//! connection errors, 5xx, 429, SMTP 4xx) are retried with exponential backoff and ±jitter;
//! permanent ones (other 4xx, SMTP 5xx, a rejected recipient) are not.
//!
//! The jitter is drawn from the message id, not a random generator, so the delay of a retry
//! is the same after a restart (a persisted "next attempt at" never disagrees with a recomputed
//! one). `backon` draws its own randomness and only adds jitter upwards, which is why this is
//! written here.

use std::time::Duration;

use flotilla_crds::campaign::CampaignRetry;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

/// What one delivery attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The channel accepted the message.
    Delivered,
    /// Worth trying again; `retry_after` is the channel's own wish (HTTP `Retry-After`).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again would fail again.
    Permanent { reason: String },
}

impl Outcome {
    /// The outcome of an HTTP answer (webhook, Slack) with its `Retry-After` header, if any.
    pub fn of_http(status: u16, retry_after: Option<&str>, now: Timestamp) -> Self {
        match status {
            200..=299 => Self::Delivered,
            408 | 429 | 500..=599 => Self::Transient {
                reason: format!("HTTP{status}"),
                retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
            },
            _ => Self::Permanent {
                reason: format!("HTTP{status}"),
            },
        }
    }

    /// The outcome of an SMTP reply code: 2xx delivered, 4xx transient, 5xx permanent.
    pub fn of_smtp(code: u16) -> Self {
        match code {
            200..=299 => Self::Delivered,
            400..=499 => Self::Transient {
                reason: format!("SMTP{code}"),
                retry_after: None,
            },
            _ => Self::Permanent {
                reason: format!("SMTP{code}"),
            },
        }
    }

    /// A timeout or a connection that failed: transient.
    pub fn unreachable(reason: &str) -> Self {
        Self::Transient {
            reason: reason.to_owned(),
            retry_after: None,
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); a date in the past is
/// no wait at all.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(at.duration_since(now).try_into().unwrap_or(Duration::ZERO))
}

/// What to do after a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryIn(Duration),
    /// Count the message as failed on this channel, with this reason.
    GiveUp(String),
}

/// The uniform draw in `[0, 1)` for retry `attempt` of `message_id`.
fn draw(message_id: &str, attempt: u32) -> f64 {
    let digest = Sha256::new()
        .chain_update(message_id.as_bytes())
        .chain_update(attempt.to_be_bytes())
        .finalize();
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The delay before retry `retry` (1 = the first retry): `initialBackoff·2^(retry-1)` capped at
/// `maxBackoff`, then ±`jitterPercent`.
pub fn backoff(policy: &CampaignRetry, retry: u32, message_id: &str) -> Duration {
    let base = policy.initial_backoff.as_std();
    let cap = policy.max_backoff.as_std().max(base);
    let exponent = retry.saturating_sub(1).min(32);
    let plain = base.saturating_mul(1u32 << exponent.min(31)).min(cap);
    let jitter = f64::from(policy.jitter_percent.clamp(0, 100)) / 100.0;
    let factor = 1.0 + jitter * (2.0 * draw(message_id, retry) - 1.0);
    plain.mul_f64(factor)
}

/// After attempt number `attempts` (1 = the first) failed with `outcome`.
pub fn after_failure(
    policy: &CampaignRetry,
    attempts: u32,
    outcome: &Outcome,
    message_id: &str,
) -> Next {
    match outcome {
        Outcome::Delivered => unreachable!("not a failure"),
        Outcome::Permanent { reason } => Next::GiveUp(reason.clone()),
        Outcome::Transient { reason, .. }
            if attempts >= u32::try_from(policy.max_attempts).unwrap_or(1) =>
        {
            Next::GiveUp(format!("{reason} (after {attempts} attempts)"))
        }
        Outcome::Transient { retry_after, .. } => {
            let delay = backoff(policy, attempts, message_id);
            Next::RetryIn(retry_after.map_or(delay, |wish| delay.max(wish)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn http_and_smtp_answers_are_classified() {
        assert_eq!(Outcome::of_http(202, None, now()), Outcome::Delivered);
        for status in [408, 429, 500, 502, 503] {
            assert!(matches!(
                Outcome::of_http(status, None, now()),
                Outcome::Transient { .. }
            ));
        }
        for status in [400, 401, 403, 404, 410, 413] {
            assert!(matches!(
                Outcome::of_http(status, None, now()),
                Outcome::Permanent { .. }
            ));
        }
        assert_eq!(Outcome::of_smtp(250), Outcome::Delivered);
        assert!(matches!(Outcome::of_smtp(451), Outcome::Transient { .. }));
        assert!(matches!(Outcome::of_smtp(550), Outcome::Permanent { .. }));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 12:00:30 GMT", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        let Outcome::Transient { retry_after, .. } = Outcome::of_http(429, Some("7"), now()) else {
            panic!()
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn the_default_policy_doubles_from_30s_to_480s_within_10_percent() {
        let policy = CampaignRetry::default();
        for (retry, plain) in [
            (1, 30.0),
            (2, 60.0),
            (3, 120.0),
            (4, 240.0),
            (5, 480.0),
            (9, 480.0),
        ] {
            for id in 0..200 {
                let delay = backoff(&policy, retry, &format!("m{id}")).as_secs_f64();
                assert!(
                    (plain * 0.9..=plain * 1.1).contains(&delay),
                    "retry {retry}: {delay}"
                );
            }
        }
        // The same message and retry always wait the same; messages spread out.
        assert_eq!(backoff(&policy, 2, "m1"), backoff(&policy, 2, "m1"));
        let spread: std::collections::BTreeSet<_> = (0..50)
            .map(|i| backoff(&policy, 1, &format!("m{i}")))
            .collect();
        assert!(spread.len() > 40);
    }

    #[test]
    fn retries_stop_at_max_attempts_and_permanent_failures_at_once() {
        let policy = CampaignRetry::default(); // 5 attempts
        let busy = Outcome::of_http(429, Some("600"), now());
        assert_eq!(
            after_failure(&policy, 1, &busy, "m"),
            Next::RetryIn(Duration::from_secs(600)),
            "Retry-After longer than the backoff wins"
        );
        let down = Outcome::of_http(503, None, now());
        assert!(matches!(
            after_failure(&policy, 4, &down, "m"),
            Next::RetryIn(_)
        ));
        assert_eq!(
            after_failure(&policy, 5, &down, "m"),
            Next::GiveUp("HTTP503 (after 5 attempts)".into())
        );
        assert_eq!(
            after_failure(&policy, 1, &Outcome::of_http(404, None, now()), "m"),
            Next::GiveUp("HTTP404".into())
        );
    }
}
