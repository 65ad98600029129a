//! [`ChannelTransport`]: a Channel's spec and Secret values made into something that sends,
//! with the spec's timeout around every attempt.

use std::time::Duration;

use flotilla_crds::channel::{ChannelSpec, ChannelType};

use super::log::LogTransport;
use super::slack::SlackTransport;
use super::smtp::SmtpTransport;
use super::webhook::WebhookTransport;
use super::{ChannelCredentials, Message};
use crate::campaign::retry::Outcome;

/// Why a Channel cannot be made into a transport: its spec or Secret values are wrong.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The settings block of the channel's type is missing.
    #[error("spec.{0} is required with this type")]
    MissingSettings(&'static str),
    /// A Secret value the channel needs was not given.
    #[error("the Secret value {0} is missing")]
    MissingSecret(&'static str),
    /// The webhook or Slack URL does not parse.
    #[error("the URL is not valid")]
    Url {
        /// The parse error.
        #[source]
        source: url::ParseError,
    },
    /// `spec.smtp.from` is not a mailbox.
    #[error("spec.smtp.from is not an e-mail address")]
    From {
        /// The parse error.
        #[source]
        source: lettre::address::AddressError,
    },
    /// `spec.smtp.port` is out of range.
    #[error("spec.smtp.port is not a port")]
    Port,
    /// lettre refused the SMTP settings (e.g. TLS parameters for the host).
    #[error("cannot set up the SMTP connection")]
    Smtp {
        /// lettre's error.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// The HTTP client could not be built (TLS roots).
    #[error("cannot build the HTTP client")]
    HttpClient {
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
}

/// One Channel's way of sending; build it again when the Channel or its Secret changes.
#[derive(Debug)]
pub struct ChannelTransport {
    kind: Kind,
    timeout: Duration,
}

#[derive(Debug)]
enum Kind {
    Webhook(WebhookTransport),
    Slack(SlackTransport),
    Smtp(SmtpTransport),
    Log(LogTransport),
}

impl ChannelTransport {
    /// A transport for `spec`, with the Secret values it names in `credentials`.
    ///
    /// # Errors
    /// The settings block of the type is missing, a needed Secret value is missing, or a URL,
    /// address or port does not parse. `ChannelSpec::validate` catches most of this earlier.
    pub fn new(
        spec: &ChannelSpec,
        credentials: &ChannelCredentials,
    ) -> Result<Self, TransportError> {
        let timeout = spec.timeout.as_std();
        let kind = match spec.type_ {
            ChannelType::Webhook => {
                let settings = spec
                    .webhook
                    .as_ref()
                    .ok_or(TransportError::MissingSettings("webhook"))?;
                Kind::Webhook(WebhookTransport::new(
                    settings,
                    credentials.signing_key.clone(),
                    timeout,
                )?)
            }
            ChannelType::Slack => {
                spec.slack
                    .as_ref()
                    .ok_or(TransportError::MissingSettings("slack"))?;
                let url = credentials
                    .slack_url
                    .as_deref()
                    .ok_or(TransportError::MissingSecret("slack.webhookUrlSecretRef"))?;
                Kind::Slack(SlackTransport::new(url, timeout)?)
            }
            ChannelType::Smtp => {
                let settings = spec
                    .smtp
                    .as_ref()
                    .ok_or(TransportError::MissingSettings("smtp"))?;
                let login = match (
                    settings.credentials_secret_ref.is_some(),
                    &credentials.smtp_username,
                    &credentials.smtp_password,
                ) {
                    (false, _, _) => None,
                    (true, Some(user), Some(password)) => Some((user.clone(), password.clone())),
                    (true, None, _) => return Err(TransportError::MissingSecret("username")),
                    (true, _, None) => return Err(TransportError::MissingSecret("password")),
                };
                let transport = match (&settings.tls_ca_secret_ref, &credentials.smtp_ca) {
                    (None, _) => SmtpTransport::new(settings, login, timeout)?,
                    (Some(_), Some(ca)) => SmtpTransport::trusting(settings, login, timeout, ca)?,
                    (Some(_), None) => {
                        return Err(TransportError::MissingSecret("smtp.tlsCaSecretRef"));
                    }
                };
                Kind::Smtp(transport)
            }
            ChannelType::Log => Kind::Log(LogTransport),
        };
        Ok(Self { kind, timeout })
    }

    /// The type of channel this sends through.
    pub fn channel_type(&self) -> ChannelType {
        match self.kind {
            Kind::Webhook(_) => ChannelType::Webhook,
            Kind::Slack(_) => ChannelType::Slack,
            Kind::Smtp(_) => ChannelType::Smtp,
            Kind::Log(_) => ChannelType::Log,
        }
    }

    /// Sends `message` once.
    ///
    /// # Guarantees
    /// Returns within `spec.timeout` (plus scheduling): an attempt still running then is
    /// dropped and is [`Outcome::Transient`] — the receiver may have got it, which is why every
    /// transport names the message id to it.
    pub async fn send(&self, message: &Message) -> Outcome {
        let attempt = async {
            match &self.kind {
                Kind::Webhook(webhook) => webhook.send(message).await,
                Kind::Slack(slack) => slack.send(message).await,
                Kind::Smtp(smtp) => smtp.send(message).await,
                Kind::Log(log) => log.send(message),
            }
        };
        // The clients have their own timeouts; this one also bounds DNS, TLS and SMTP dialogue
        // together, which no client timeout covers as a whole.
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::unreachable("timeout"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> ChannelSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn missing_settings_and_secret_values_are_named() {
        let no_block = spec(serde_json::json!({"type": "Webhook"}));
        assert!(matches!(
            ChannelTransport::new(&no_block, &ChannelCredentials::default()),
            Err(TransportError::MissingSettings("webhook"))
        ));
        let smtp = spec(serde_json::json!({"type": "SMTP", "smtp": {
            "host": "smtp.example.com", "from": "noreply@acme.example",
            "credentialsSecretRef": {"name": "smtp"},
        }}));
        let only_user = ChannelCredentials {
            smtp_username: Some("flotilla".into()),
            ..ChannelCredentials::default()
        };
        assert!(matches!(
            ChannelTransport::new(&smtp, &only_user),
            Err(TransportError::MissingSecret("password"))
        ));
        let bad_from = spec(serde_json::json!({"type": "SMTP", "smtp": {
            "host": "smtp.example.com", "from": "not an address",
        }}));
        assert!(matches!(
            ChannelTransport::new(&bad_from, &ChannelCredentials::default()),
            Err(TransportError::From { .. })
        ));
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let credentials = ChannelCredentials {
            signing_key: Some(b"whsec".to_vec()),
            slack_url: Some("https://hooks.slack.com/services/T/B/secret".into()),
            smtp_username: Some("flotilla".into()),
            smtp_password: Some("s3cret".into()),
            smtp_ca: None,
        };
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("secret") && !shown.contains("s3cret") && !shown.contains("whsec"));
        assert!(shown.contains("flotilla"));
    }
}
