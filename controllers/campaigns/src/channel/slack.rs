//! Slack channel: a Slack incoming-webhook message, `{"text": "*<subject>*\n\n<body>"}` (the
//! subject in bold when there is one), POSTed to the URL from the Channel's Secret.
//!
//! Slack answers 200 `ok`; 429 with `Retry-After` when rate limited (transient); 4xx with an
//! error code in the body — `invalid_payload`, `channel_not_found`, `no_service` — which are
//! permanent and end up in the reason; 5xx is transient.

use serde::Serialize;

use super::http::{client, outcome_of_answer, outcome_of_error, retry_after};
use super::{Message, TransportError};
use crate::campaign::retry::Outcome;

/// The JSON Slack's incoming webhooks take.
#[derive(Serialize)]
struct Payload<'a> {
    text: &'a str,
}

/// The `text` of a message: `&`, `<` and `>` are escaped as Slack's mrkdwn requires, so a
/// rendered body cannot mention `@channel` or forge a link.
pub fn slack_text(message: &Message) -> String {
    let body = escape(&message.body);
    match &message.subject {
        Some(subject) if !subject.trim().is_empty() => {
            format!("*{}*\n\n{body}", escape(subject.trim()))
        }
        _ => body,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sends messages to one Slack incoming webhook.
#[derive(Debug)]
pub struct SlackTransport {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl SlackTransport {
    /// A transport posting to `webhook_url` (the Secret's value).
    pub fn new(webhook_url: &str, timeout: std::time::Duration) -> Result<Self, TransportError> {
        let url = webhook_url
            .trim()
            .parse()
            .map_err(|source| TransportError::Url { source })?;
        Ok(Self {
            client: client(timeout)?,
            url,
        })
    }

    /// Posts `message`; Slack's error code (the body of a failed answer) is in the reason.
    pub async fn send(&self, message: &Message) -> Outcome {
        let text = slack_text(message);
        let request = self
            .client
            .post(self.url.clone())
            .json(&Payload { text: &text });
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return outcome_of_error(&error),
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        if response.status().is_success() {
            return Outcome::Delivered;
        }
        // The body only names the error; a failure to read it loses the name, not the outcome.
        let detail = response.text().await.unwrap_or_default();
        outcome_of_answer(status, retry_after.as_deref(), Some(&detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_in_bold_and_mrkdwn_escaped() {
        let mut message = Message {
            id: "m".into(),
            campaign: "c".into(),
            variant: String::new(),
            recipient: Default::default(),
            subject: Some("Trial <ends>".into()),
            body: "Hi & bye <!channel>".into(),
            unsubscribe_url: "https://u".into(),
        };
        assert_eq!(
            slack_text(&message),
            "*Trial &lt;ends&gt;*\n\nHi &amp; bye &lt;!channel&gt;"
        );
        message.subject = None;
        assert_eq!(slack_text(&message), "Hi &amp; bye &lt;!channel&gt;");
    }
}
