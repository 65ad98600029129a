//! SMTP channel: e-mail through `spec.smtp.host:port` with lettre, over rustls.
//!
//! | Header | Value |
//! |---|---|
//! | `Message-ID` | `<{message id}@{domain of From}>`, the same on every re-send, so a receiver can drop duplicates |
//! | `From` / `To` / `Subject` | `spec.smtp.from` / the recipient / the rendered subject |
//! | `List-Unsubscribe` | `<{unsubscribe url}>` |
//! | `List-Unsubscribe-Post` | `List-Unsubscribe=One-Click` (RFC 8058) |
//!
//! Replies map by [`Outcome::of_smtp`]: 4xx transient, 5xx (550 no such mailbox) permanent; a
//! connection or TLS failure is transient. lettre is built with its `ring` feature: when no
//! rustls provider is installed it uses ring itself, so it never needs aws-lc-rs.

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MessageBuilder};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Message, TransportError};
use crate::campaign::retry::Outcome;
use flotilla_crds::channel::{SmtpChannel, SmtpSecurity};

/// Sends messages through one SMTP server.
pub struct SmtpTransport {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpTransport {
    /// A transport for `settings`, authenticating with `credentials` (user, password) if given.
    pub fn new(
        settings: &SmtpChannel,
        credentials: Option<(String, String)>,
        timeout: std::time::Duration,
    ) -> Result<Self, TransportError> {
        Self::build(settings, credentials, timeout, None)
    }

    /// As [`new`](Self::new), also trusting the PEM certificate `root` (a server with a
    /// private CA, from `smtp.tlsCaSecretRef`).
    pub fn trusting(
        settings: &SmtpChannel,
        credentials: Option<(String, String)>,
        timeout: std::time::Duration,
        root: &[u8],
    ) -> Result<Self, TransportError> {
        Self::build(settings, credentials, timeout, Some(root))
    }

    fn build(
        settings: &SmtpChannel,
        credentials: Option<(String, String)>,
        timeout: std::time::Duration,
        root: Option<&[u8]>,
    ) -> Result<Self, TransportError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|source| TransportError::From { source })?;
        let smtp_error = |source| TransportError::Smtp { source };
        let tls = |root: &[u8]| {
            let root = Certificate::from_pem(root).map_err(smtp_error)?;
            TlsParameters::builder(settings.host.clone())
                .add_root_certificate(root)
                .build_rustls()
                .map_err(smtp_error)
        };
        let builder = match (settings.security, root) {
            // `starttls_relay` refuses to go on in plain text when the server offers no STARTTLS.
            (SmtpSecurity::StartTLS, None) => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)
                    .map_err(smtp_error)?
            }
            (SmtpSecurity::StartTLS, Some(root)) => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                    .tls(Tls::Required(tls(root)?))
            }
            (SmtpSecurity::TLS, None) => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host).map_err(smtp_error)?
            }
            (SmtpSecurity::TLS, Some(root)) => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
                    .tls(Tls::Wrapper(tls(root)?))
            }
            (SmtpSecurity::None, _) => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
            }
        };
        let port = u16::try_from(settings.port).map_err(|_| TransportError::Port)?;
        let mut builder = builder
            .port(port)
            .timeout(Some(timeout))
            // Without lettre's `hostname` feature EHLO would say 127.0.0.1; the sender's
            // domain is what the server sees in From anyway.
            .hello_name(ClientId::Domain(from.email.domain().to_owned()));
        if let Some((username, password)) = credentials {
            builder = builder.credentials(Credentials::new(username, password));
        }
        Ok(Self {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `message` as a plain-text e-mail.
    pub async fn send(&self, message: &Message) -> Outcome {
        let email = match self.email(message) {
            Ok(email) => email,
            Err(reason) => return Outcome::Permanent { reason },
        };
        match self.transport.send(email).await {
            Ok(_) => Outcome::Delivered,
            Err(error) => outcome_of_error(&error),
        }
    }

    /// The e-mail of `message`, or why it cannot be one (a bad recipient address).
    pub fn email(&self, message: &Message) -> Result<lettre::Message, String> {
        let Some(address) = &message.recipient.email else {
            return Err("recipient has no e-mail address".into());
        };
        let address = address
            .parse()
            .map_err(|_| format!("recipient address {address:?} is not valid"))?;
        let to = Mailbox::new(message.recipient.name.clone(), address);
        let mut builder: MessageBuilder = lettre::Message::builder()
            .message_id(Some(message_id(&message.id, self.from.email.domain())))
            .from(self.from.clone())
            .to(to);
        if let Some(subject) = &message.subject {
            builder = builder.subject(subject.clone());
        }
        // Without an unsubscribe endpoint configured a message has no link to offer.
        if !message.unsubscribe_url.is_empty() {
            builder = builder
                .header(ListUnsubscribe(message.unsubscribe_url.clone()))
                .header(ListUnsubscribePost);
        }
        let builder = builder.header(ContentType::TEXT_PLAIN);
        builder
            .body(message.body.clone())
            .map_err(|error| format!("cannot build the e-mail: {error}"))
    }
}

/// `<{id}@{domain}>`, with every character of `id` that may not stand left of the `@` of a
/// Message-ID (RFC 5322 `dot-atom-text`) written as `=XX`, so the same id always gives the same
/// Message-ID.
pub fn message_id(id: &str, domain: &str) -> String {
    let mut left = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_+".contains(&byte) {
            left.push(char::from(byte));
        } else {
            left.push_str(&format!("={byte:02X}"));
        }
    }
    format!("<{left}@{domain}>")
}

fn outcome_of_error(error: &lettre::transport::smtp::Error) -> Outcome {
    match error.status() {
        Some(code) => Outcome::of_smtp(u16::from(code)),
        // No reply code: the connection, TLS or the timeout failed.
        None if error.is_timeout() => Outcome::unreachable("timeout"),
        None if error.is_tls() => Outcome::unreachable("TLS failed"),
        None => Outcome::unreachable("connection failed"),
    }
}

/// `List-Unsubscribe: <https url>`.
#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned(),
        ))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`: the link unsubscribes on a POST, with
/// no page to click through (RFC 8058).
#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_and_valid() {
        assert_eq!(
            message_id("spring-sale-ab12", "acme.example"),
            "<spring-sale-ab12@acme.example>"
        );
        assert_eq!(
            message_id("ns/c:r@x", "acme.example"),
            "<ns=2Fc=3Ar=40x@acme.example>"
        );
    }
}
