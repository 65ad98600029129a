//! Log channel: each message is one `info` event with target [`LOG_TARGET`], for trials; it is
//! always delivered.

use super::Message;
use crate::campaign::retry::Outcome;

/// The `tracing` target of Log channel messages, to filter them in or out.
pub const LOG_TARGET: &str = "flotilla::campaign::log_channel";

/// Writes messages to the operator log.
#[derive(Debug, Default)]
pub struct LogTransport;

impl LogTransport {
    /// Logs `message`.
    pub fn send(&self, message: &Message) -> Outcome {
        tracing::info!(
            target: LOG_TARGET,
            message_id = %message.id,
            campaign = %message.campaign,
            variant = %message.variant,
            recipient_name = message.recipient.name.as_deref().unwrap_or(""),
            recipient_email = message.recipient.email.as_deref().unwrap_or(""),
            subject = message.subject.as_deref().unwrap_or(""),
            body = %message.body,
            unsubscribe_url = %message.unsubscribe_url,
            "campaign message"
        );
        Outcome::Delivered
    }
}
