//! What one delivery carries, whatever the channel: [`Message`], and the Secret values a
//! transport needs ([`ChannelCredentials`]), filled by the caller so this module reads no Secret.

use serde::Serialize;

/// One message to one recipient, rendered and ready to send.
///
/// The same message (same `id`) may be sent more than once — after a timeout, or after a
/// restart — and every transport says so to the receiver (`Idempotency-Key`, `Message-ID`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Stable id of this message, derived from the campaign and the recipient.
    pub id: String,
    /// Name of the Campaign sending it.
    pub campaign: String,
    /// The recipient's variant; empty for a campaign without variants.
    pub variant: String,
    /// Who receives it.
    pub recipient: Addressee,
    /// The rendered subject, for channels that have one (SMTP; bold first line on Slack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The rendered body.
    pub body: String,
    /// The one-click unsubscribe link of this message (https).
    pub unsubscribe_url: String,
}

/// The recipient of a [`Message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
pub struct Addressee {
    /// Display name (the Subscription's contact name), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail address; SMTP channels refuse a message without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The Secret values of a Channel, read by the caller from the Secrets the spec names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelCredentials {
    /// Webhook HMAC-SHA256 signing key (`webhook.signingSecretRef`); `None` sends unsigned.
    pub signing_key: Option<Vec<u8>>,
    /// Slack incoming-webhook URL (`slack.webhookUrlSecretRef`).
    pub slack_url: Option<String>,
    /// SMTP AUTH user (`username` of `smtp.credentialsSecretRef`).
    pub smtp_username: Option<String>,
    /// SMTP AUTH password (`password` of `smtp.credentialsSecretRef`).
    pub smtp_password: Option<String>,
    /// PEM certificates of the SMTP server's private CA (`smtp.tlsCaSecretRef`).
    pub smtp_ca: Option<Vec<u8>>,
}

// Secrets stay out of logs and panics.
impl std::fmt::Debug for ChannelCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |present: bool| if present { "<set>" } else { "<none>" };
        f.debug_struct("ChannelCredentials")
            .field("signing_key", &set(self.signing_key.is_some()))
            .field("slack_url", &set(self.slack_url.is_some()))
            .field("smtp_username", &self.smtp_username)
            .field("smtp_password", &set(self.smtp_password.is_some()))
            .field("smtp_ca", &set(self.smtp_ca.is_some()))
            .finish()
    }
}
