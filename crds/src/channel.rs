//! `Channel` (namespaced): one way of delivering Campaign messages — a signed webhook, a Slack
//! incoming webhook, an SMTP server, or the operator log — with a timeout and a rate limit
//! shared by every Campaign that uses it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{GoDuration, SecretKeyReference, SecretReference, SpecError, into_result};
use crate::condition::Condition;

/// Default of `spec.timeout`.
pub const DEFAULT_TIMEOUT: &str = "10s";
/// Longest accepted `spec.timeout`.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;
/// Longest accepted `spec.circuitBreaker.coolDown` (one hour).
pub const MAX_COOL_DOWN_SECONDS: u64 = 3600;
/// Longest URL accepted in a Channel.
pub const MAX_URL_LENGTH: u32 = 2048;

/// A delivery channel for Campaign messages.
// Each `printcolumn(...)` repeats keys such as `type_`, which clippy's duplicated_attributes
// lint mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "Channel",
    plural = "channels",
    singular = "channel",
    shortname = "fchan",
    category = "flotilla",
    namespaced,
    status = "ChannelStatus",
    derive = "PartialEq",
    doc = "A Channel is one way of delivering Campaign messages: a signed Webhook, a Slack incoming \
           webhook, an SMTP server, or the operator Log. Its rate limit is shared by every Campaign \
           using it.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Rate/min",
        type_ = "integer",
        json_path = ".spec.rateLimit.messagesPerMinute",
        description = "Messages per minute across all campaigns"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("self.type == 'Webhook' ? has(self.webhook) : !has(self.webhook)").message("spec.webhook is required with type Webhook and not allowed otherwise"),
    validation = Rule::new("self.type == 'Slack' ? has(self.slack) : !has(self.slack)").message("spec.slack is required with type Slack and not allowed otherwise"),
    validation = Rule::new("self.type == 'SMTP' ? has(self.smtp) : !has(self.smtp)").message("spec.smtp is required with type SMTP and not allowed otherwise")
)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    /// How messages are delivered: Webhook, Slack, SMTP or Log. The block of the same name
    /// (`webhook`, `slack`, `smtp`) holds its settings; Log needs none.
    #[serde(rename = "type")]
    pub type_: ChannelType,

    /// Settings of a Webhook channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,

    /// Settings of a Slack channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannel>,

    /// Settings of an SMTP channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpChannel>,

    /// How long one delivery attempt may take (a Go duration such as `10s`); a timeout is a
    /// transient failure and is retried per the Campaign's retry policy.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,

    /// Rate limit shared by every Campaign sending through this channel. Omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// When to stop sending through this channel for a while because it keeps failing
    /// (timeouts, connection errors, 5xx, 429). Omit for the defaults; a rejected recipient
    /// (HTTP 400, SMTP 550) never trips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreakerPolicy>,
}

fn default_timeout() -> GoDuration {
    DEFAULT_TIMEOUT
        .parse()
        .expect("the default timeout is a valid duration")
}

/// The delivery mechanism of a Channel.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::common::drop_description)]
pub enum ChannelType {
    /// HTTP POST of a JSON document, signed with HMAC-SHA256 over a timestamp and the body.
    Webhook,
    /// A Slack incoming-webhook message.
    Slack,
    /// E-mail through an SMTP server.
    #[serde(rename = "SMTP")]
    Smtp,
    /// A line in the operator's log, for trials.
    Log,
}

/// Settings of a Webhook channel: each message is POSTed as JSON, with an `Idempotency-Key`
/// header (the message id) and, when a signing secret is set, the headers
/// `X-Flotilla-Timestamp: <unix seconds>` and `X-Flotilla-Signature: t=<unix seconds>,v1=<hex
/// HMAC-SHA256 of "<unix seconds>.<body>">`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// The http(s) URL messages are POSTed to.
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''").message("must be an absolute http or https URL"))]
    #[schemars(length(min = 1, max = MAX_URL_LENGTH))]
    pub url: String,

    /// Secret key holding the HMAC-SHA256 signing key. Omit to send unsigned requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyReference>,
}

/// Settings of a Slack channel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SlackChannel {
    /// Secret key holding the incoming-webhook URL (it is a credential, so not in the spec).
    pub webhook_url_secret_ref: SecretKeyReference,
}

/// Settings of an SMTP channel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!has(self.tlsCaSecretRef) || self.security != 'None'").message("spec.smtp.tlsCaSecretRef needs security StartTLS or TLS")
)]
#[serde(rename_all = "camelCase")]
pub struct SmtpChannel {
    /// SMTP server host name or IP address.
    #[schemars(
        length(min = 1, max = 253),
        pattern("^[A-Za-z0-9]([-A-Za-z0-9.:]*[A-Za-z0-9])?$")
    )]
    pub host: String,

    /// SMTP server port: usually 587 with StartTLS, 465 with TLS.
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Transport security: StartTLS (upgrade a plain connection), TLS (TLS from the first
    /// byte) or None (plain text; only for local test servers).
    #[serde(default)]
    pub security: SmtpSecurity,

    /// Secret with keys `username` and `password` for SMTP AUTH. Omit for no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,

    /// Secret key holding the PEM certificate(s) of the CA that signed the server's
    /// certificate (a relay with a private CA), trusted besides the public roots. Needs
    /// StartTLS or TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_secret_ref: Option<SecretKeyReference>,

    /// Sender address, e.g. `Acme Cloud <noreply@acme.example>`.
    #[schemars(length(min = 3, max = 320), pattern("@"))]
    pub from: String,
}

fn default_smtp_port() -> i32 {
    587
}

/// Transport security of an SMTP connection.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum SmtpSecurity {
    /// Connect in plain text, then upgrade with STARTTLS (required).
    #[default]
    StartTLS,
    /// TLS from the first byte (SMTPS).
    TLS,
    /// No encryption. Only for local test servers.
    None,
}

/// A message rate limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Most messages sent per minute through this channel, across all campaigns.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub messages_per_minute: i32,

    /// Most messages that may be sent at once after an idle period; defaults to one second's
    /// worth of the rate (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub burst: Option<i32>,

    /// Most messages being delivered at once through this channel, across all campaigns (a
    /// slow receiver then slows sending down instead of piling up connections). Omit for no
    /// bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub max_in_flight: Option<i32>,
}

impl RateLimit {
    /// The burst size in effect: `burst`, or one second's worth of the rate (at least 1).
    pub fn effective_burst(&self) -> i32 {
        self.burst
            .unwrap_or_else(|| (self.messages_per_minute / 60).max(1))
    }
}

/// When a channel's circuit breaker opens, and how it closes again.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerPolicy {
    /// Failed deliveries in a row (timeouts, connection errors, 5xx, 429) that open the
    /// breaker; while open, nothing is sent through this channel.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_failures: i32,

    /// How long the breaker stays open before letting probe messages through (a Go duration).
    #[serde(default = "default_cool_down")]
    pub cool_down: GoDuration,

    /// Messages let through as probes after the cool-down; the first success closes the
    /// breaker, a failure opens it again.
    #[serde(default = "default_half_open_probes")]
    #[schemars(range(min = 1, max = 100))]
    pub half_open_probes: i32,
}

impl Default for CircuitBreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            cool_down: default_cool_down(),
            half_open_probes: default_half_open_probes(),
        }
    }
}

fn default_consecutive_failures() -> i32 {
    5
}
fn default_cool_down() -> GoDuration {
    "30s".parse().expect("valid default duration")
}
fn default_half_open_probes() -> i32 {
    1
}

/// State of a channel's circuit breaker.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum BreakerState {
    /// Sending normally.
    #[default]
    Closed,
    /// Failing: nothing is sent until the cool-down ends.
    Open,
    /// After the cool-down: a few probe messages decide whether to close or open again.
    HalfOpen,
}

/// What the circuit breaker of a channel is doing.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BreakerStatus {
    /// Closed (sending), Open (paused after repeated failures) or HalfOpen (probing).
    pub state: BreakerState,

    /// When the breaker last opened; empty while it has never opened since it last closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<Time>,

    /// Failed deliveries in a row so far.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub consecutive_failures: i32,
}

/// Observed state of a Channel, written by the Channel controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[schemars(transform = crate::common::unwrap_descriptions)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    /// Pending (not checked yet), Ready (configuration and Secret are usable) or NotReady (the
    /// Ready condition says what is wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ChannelPhase>,

    /// Conditions: Ready, SecretFound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,

    /// The circuit breaker: whether the operator is currently sending through this channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerStatus>,
}

/// Lifecycle phase of a Channel.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[schemars(transform = crate::common::drop_description)]
pub enum ChannelPhase {
    /// Not checked yet.
    #[default]
    Pending,
    /// Usable by Campaigns.
    Ready,
    /// Misconfigured or its Secret is missing; the Ready condition says which.
    NotReady,
    /// Deleted; waits until no live Campaign uses it.
    Terminating,
}

impl ChannelPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [ChannelPhase; 4] = [
        ChannelPhase::Pending,
        ChannelPhase::Ready,
        ChannelPhase::NotReady,
        ChannelPhase::Terminating,
    ];

    /// The wire form (as in `status.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelPhase::Pending => "Pending",
            ChannelPhase::Ready => "Ready",
            ChannelPhase::NotReady => "NotReady",
            ChannelPhase::Terminating => "Terminating",
        }
    }
}

/// The Channel lifecycle: `Pending → Ready ⇄ NotReady`, and from any of them `→ Terminating`
/// once deleted. Terminating is final.
impl crate::phase::Phase for ChannelPhase {
    const ALL: &'static [Self] = &ChannelPhase::ALL;
    const INITIAL: Self = ChannelPhase::Pending;
    fn as_str(self) -> &'static str {
        ChannelPhase::as_str(self)
    }
    fn allows(self, next: Self) -> bool {
        use ChannelPhase::{NotReady, Pending, Ready, Terminating};
        matches!(
            (self, next),
            (Pending, Ready | NotReady | Terminating)
                | (Ready, NotReady | Terminating)
                | (NotReady, Ready | Terminating)
        )
    }
}

impl ChannelSpec {
    /// Checks what the schema cannot: the settings block matches the type, the URL parses with
    /// an http(s) scheme, the timeout is positive and at most five minutes, the breaker's
    /// cool-down is positive and at most an hour, and the SMTP sender is an address.
    pub fn validate(&self) -> Result<(), Vec<SpecError>> {
        let mut errors = Vec::new();
        let blocks = [
            ("webhook", ChannelType::Webhook, self.webhook.is_some()),
            ("slack", ChannelType::Slack, self.slack.is_some()),
            ("smtp", ChannelType::Smtp, self.smtp.is_some()),
        ];
        for (field, type_, present) in blocks {
            if present != (self.type_ == type_) {
                errors.push(SpecError::new(
                    format!("spec.{field}"),
                    if present {
                        format!("not allowed with type {:?}", self.type_)
                    } else {
                        format!("required with type {type_:?}")
                    },
                ));
            }
        }
        if let Some(webhook) = &self.webhook {
            match url::Url::parse(&webhook.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
                Ok(_) => errors.push(SpecError::new(
                    "spec.webhook.url",
                    "must be an http or https URL with a host",
                )),
                Err(error) => errors.push(SpecError::new(
                    "spec.webhook.url",
                    format!("not a URL: {error}"),
                )),
            }
        }
        if let Some(smtp) = &self.smtp {
            if !(1..=65535).contains(&smtp.port) {
                errors.push(SpecError::new(
                    "spec.smtp.port",
                    "must be between 1 and 65535",
                ));
            }
            if !is_mailbox(&smtp.from) {
                errors.push(SpecError::new(
                    "spec.smtp.from",
                    format!("{:?} is not an e-mail address", smtp.from),
                ));
            }
        }
        if let Some(breaker) = &self.circuit_breaker {
            let cool_down = breaker.cool_down.as_std();
            if cool_down.is_zero() || cool_down.as_secs() > MAX_COOL_DOWN_SECONDS {
                errors.push(SpecError::new(
                    "spec.circuitBreaker.coolDown",
                    format!("must be more than 0s and at most {MAX_COOL_DOWN_SECONDS}s"),
                ));
            }
        }
        let timeout = self.timeout.as_std();
        if timeout.is_zero() || timeout.as_secs() > MAX_TIMEOUT_SECONDS {
            errors.push(SpecError::new(
                "spec.timeout",
                format!("must be more than 0s and at most {MAX_TIMEOUT_SECONDS}s"),
            ));
        }
        into_result(errors)
    }
}

/// `addr@domain` or `Display Name <addr@domain>`.
fn is_mailbox(s: &str) -> bool {
    let address = match (s.rfind('<'), s.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => s,
    };
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !address.chars().any(char::is_whitespace)
        && domain.split('.').all(|label| !label.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook() -> ChannelSpec {
        serde_json::from_value(serde_json::json!({
            "type": "Webhook",
            "webhook": {"url": "https://hooks.example.com/flotilla", "signingSecretRef": {"name": "hook", "key": "hmac"}},
            "rateLimit": {"messagesPerMinute": 600},
        }))
        .unwrap()
    }

    #[test]
    fn defaults() {
        let spec = webhook();
        assert_eq!(spec.timeout, default_timeout());
        assert_eq!(spec.rate_limit.as_ref().unwrap().effective_burst(), 10);
        assert_eq!(spec.rate_limit.as_ref().unwrap().max_in_flight, None);
        assert_eq!(spec.circuit_breaker, None);
        assert_eq!(spec.validate(), Ok(()));
        let breaker: CircuitBreakerPolicy = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(breaker, CircuitBreakerPolicy::default());
        assert_eq!(
            (
                breaker.consecutive_failures,
                breaker.cool_down.as_std().as_secs(),
                breaker.half_open_probes
            ),
            (5, 30, 1)
        );
        let smtp: ChannelSpec = serde_json::from_value(serde_json::json!({
            "type": "SMTP", "smtp": {"host": "smtp.example.com", "from": "Acme <noreply@acme.example>"},
        }))
        .unwrap();
        let settings = smtp.smtp.as_ref().unwrap();
        assert_eq!(
            (settings.port, settings.security),
            (587, SmtpSecurity::StartTLS)
        );
        assert_eq!(smtp.validate(), Ok(()));
    }

    #[test]
    fn settings_must_match_the_type() {
        let mut spec = webhook();
        spec.type_ = ChannelType::Log;
        let errors = spec.validate().unwrap_err();
        assert_eq!(errors[0].field, "spec.webhook");
        spec.type_ = ChannelType::Slack;
        assert_eq!(spec.validate().unwrap_err().len(), 2);
    }

    #[test]
    fn bad_urls_timeouts_and_senders_are_refused() {
        let mut spec = webhook();
        spec.webhook.as_mut().unwrap().url = "ftp://example.com/x".into();
        spec.timeout = "0s".parse().unwrap();
        let fields: Vec<_> = spec
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["spec.webhook.url", "spec.timeout"]);
        let mut spec = webhook();
        spec.circuit_breaker = Some(CircuitBreakerPolicy {
            cool_down: "0s".parse().unwrap(),
            ..CircuitBreakerPolicy::default()
        });
        assert_eq!(
            spec.validate().unwrap_err()[0].field,
            "spec.circuitBreaker.coolDown"
        );
        assert!(!is_mailbox("noreply"));
        assert!(!is_mailbox("no reply@example.com"));
        assert!(is_mailbox("noreply@example.com"));
    }

    #[test]
    fn smtp_type_is_written_in_capitals() {
        assert_eq!(serde_json::to_value(ChannelType::Smtp).unwrap(), "SMTP");
        assert_eq!(
            serde_json::to_value(SmtpSecurity::StartTLS).unwrap(),
            "StartTLS"
        );
    }
}
