//! What a Channel needs from its Secrets, checked: every referenced Secret present and holding
//! its keys, values usable (a Slack URL that is an https URL, credentials both there). The
//! result is either the values, ready for a transport, or every problem named with the Secret
//! and key, for the Channel's `SecretFound` condition.

use std::collections::BTreeMap;

use flotilla_crds::channel::{ChannelSpec, ChannelType};
use flotilla_crds::common::SecretKeyReference;

/// Label the operator's Secret watch selects on: a Channel's Secret carries it, so the
/// operator caches only those Secrets and a change to one reaches its Channels at once.
pub const CHANNEL_SECRET_LABEL: &str = "flotilla.dev/channel-secret";

/// The `data` of the Secrets in a Channel's namespace, by name, as far as the caller knows
/// them.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// What one Secret lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The Secret and its data.
    Found(&'a SecretData),
    /// It exists but lacks [`CHANNEL_SECRET_LABEL`], so its changes would go unseen.
    Unlabelled,
    /// No such Secret.
    Missing,
}

/// The values a Channel's transport is built with.
pub use super::ChannelCredentials as Credentials;

/// One thing wrong with a Channel's Secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    /// The Secret does not exist.
    #[error("Secret {0:?} not found")]
    Missing(String),
    /// The Secret exists without the label.
    #[error("Secret {0:?} lacks the label {CHANNEL_SECRET_LABEL}=true")]
    Unlabelled(String),
    /// A key is not in the Secret.
    #[error("Secret {secret:?} has no key {key:?}")]
    MissingKey {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// A value is unusable.
    #[error("Secret {secret:?} key {key:?}: {problem}")]
    BadValue {
        /// The Secret.
        secret: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

/// Every Secret name `spec` refers to.
pub fn referenced(spec: &ChannelSpec) -> Vec<&str> {
    let mut names = Vec::new();
    if let Some(webhook) = &spec.webhook
        && let Some(key) = &webhook.signing_secret_ref
    {
        names.push(key.name.as_str());
    }
    if let Some(slack) = &spec.slack {
        names.push(slack.webhook_url_secret_ref.name.as_str());
    }
    if let Some(smtp) = &spec.smtp {
        if let Some(secret) = &smtp.credentials_secret_ref {
            names.push(secret.name.as_str());
        }
        if let Some(key) = &smtp.tls_ca_secret_ref {
            names.push(key.name.as_str());
        }
    }
    names.dedup();
    names
}

/// Reads the credentials of `spec` through `lookup` (Secret name → what was found).
pub fn resolve<'a>(
    spec: &ChannelSpec,
    lookup: impl Fn(&str) -> Lookup<'a>,
) -> Result<Credentials, Vec<SecretProblem>> {
    let mut problems = Vec::new();
    let mut value = |secret: &str, key: &str| -> Option<Vec<u8>> {
        let problem = match lookup(secret) {
            Lookup::Found(data) => match data.get(key) {
                Some(value) => return Some(value.clone()),
                None => SecretProblem::MissingKey {
                    secret: secret.to_owned(),
                    key: key.to_owned(),
                },
            },
            Lookup::Unlabelled => SecretProblem::Unlabelled(secret.to_owned()),
            Lookup::Missing => SecretProblem::Missing(secret.to_owned()),
        };
        if !problems.contains(&problem) {
            problems.push(problem);
        }
        None
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).trim().to_owned();
    let mut credentials = Credentials::default();
    let mut bad = Vec::new();
    match spec.type_ {
        ChannelType::Webhook => {
            if let Some(SecretKeyReference { name, key }) = spec
                .webhook
                .as_ref()
                .and_then(|w| w.signing_secret_ref.as_ref())
            {
                credentials.signing_key = value(name, key);
                if credentials.signing_key.as_ref().is_some_and(Vec::is_empty) {
                    bad.push(bad_value(name, key, "the signing key is empty"));
                }
            }
        }
        ChannelType::Slack => {
            if let Some(slack) = &spec.slack {
                let SecretKeyReference { name, key } = &slack.webhook_url_secret_ref;
                credentials.slack_url = value(name, key).map(text);
                let usable = credentials.slack_url.as_deref().is_none_or(|url| {
                    url::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
                });
                if !usable {
                    bad.push(bad_value(name, key, "not an https URL"));
                }
            }
        }
        ChannelType::Smtp => {
            if let Some(secret) = spec
                .smtp
                .as_ref()
                .and_then(|s| s.credentials_secret_ref.as_ref())
            {
                credentials.smtp_username = value(&secret.name, "username").map(text);
                credentials.smtp_password = value(&secret.name, "password")
                    .map(|v| String::from_utf8_lossy(&v).into_owned());
            }
            if let Some(SecretKeyReference { name, key }) = spec
                .smtp
                .as_ref()
                .and_then(|s| s.tls_ca_secret_ref.as_ref())
            {
                credentials.smtp_ca = value(name, key);
                if credentials
                    .smtp_ca
                    .as_deref()
                    .is_some_and(|pem| !is_pem_certificate(pem))
                {
                    bad.push(bad_value(name, key, "not a PEM certificate"));
                }
            }
        }
        ChannelType::Log => {}
    }
    problems.extend(bad);
    if problems.is_empty() {
        Ok(credentials)
    } else {
        Err(problems)
    }
}

/// Whether `pem` holds at least one certificate that parses.
fn is_pem_certificate(pem: &[u8]) -> bool {
    // lettre's parser (the one the transport uses) accepts a text with no certificate at all.
    String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
        && lettre::transport::smtp::client::Certificate::from_pem(pem).is_ok()
}

fn bad_value(secret: &str, key: &str, problem: &str) -> SecretProblem {
    SecretProblem::BadValue {
        secret: secret.to_owned(),
        key: key.to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ChannelSpec {
        serde_json::from_value(value).unwrap()
    }

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn a_log_channel_needs_nothing() {
        let log = spec(json!({"type": "Log"}));
        assert!(referenced(&log).is_empty());
        assert_eq!(
            resolve(&log, |_| Lookup::Missing),
            Ok(Credentials::default())
        );
    }

    #[test]
    fn slack_reads_its_url_and_refuses_a_plain_http_one() {
        let slack = spec(json!({"type": "Slack", "slack": {
            "webhookUrlSecretRef": {"name": "slack", "key": "url"}}}));
        assert_eq!(referenced(&slack), ["slack"]);
        let good = data(&[("url", "https://hooks.slack.com/services/T/B/x\n")]);
        let credentials = resolve(&slack, |_| Lookup::Found(&good)).unwrap();
        assert_eq!(
            credentials.slack_url.as_deref(),
            Some("https://hooks.slack.com/services/T/B/x")
        );
        let plain = data(&[("url", "http://hooks.slack.com/x")]);
        let problems = resolve(&slack, |_| Lookup::Found(&plain)).unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            r#"Secret "slack" key "url": not an https URL"#
        );
    }

    #[test]
    fn every_problem_names_the_secret_and_key() {
        let smtp = spec(json!({"type": "SMTP", "smtp": {
            "host": "smtp.example.com", "from": "noreply@example.com",
            "credentialsSecretRef": {"name": "mail"}}}));
        let only_user = data(&[("username", "ada")]);
        let problems = resolve(&smtp, |_| Lookup::Found(&only_user)).unwrap_err();
        assert_eq!(
            problems,
            [SecretProblem::MissingKey {
                secret: "mail".into(),
                key: "password".into()
            }]
        );
        // A missing Secret is one problem, not one per key.
        let problems = resolve(&smtp, |_| Lookup::Missing).unwrap_err();
        assert_eq!(problems, [SecretProblem::Missing("mail".into())]);
        let problems = resolve(&smtp, |_| Lookup::Unlabelled).unwrap_err();
        assert!(
            problems[0].to_string().contains(CHANNEL_SECRET_LABEL),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_private_ca_is_read_from_its_secret_and_must_be_pem() {
        let smtp = spec(json!({"type": "SMTP", "smtp": {
            "host": "smtp.example.com", "from": "noreply@example.com",
            "credentialsSecretRef": {"name": "mail"},
            "tlsCaSecretRef": {"name": "mail", "key": "ca.crt"}}}));
        assert_eq!(referenced(&smtp), ["mail"], "one Secret, named once");
        let garbage = data(&[
            ("username", "ada"),
            ("password", "pw"),
            ("ca.crt", "not a certificate"),
        ]);
        let problems = resolve(&smtp, |_| Lookup::Found(&garbage)).unwrap_err();
        assert_eq!(
            problems[0].to_string(),
            r#"Secret "mail" key "ca.crt": not a PEM certificate"#
        );
        let without = data(&[("username", "ada"), ("password", "pw")]);
        let problems = resolve(&smtp, |_| Lookup::Found(&without)).unwrap_err();
        assert_eq!(
            problems,
            [SecretProblem::MissingKey {
                secret: "mail".into(),
                key: "ca.crt".into()
            }]
        );
    }

    #[test]
    fn credentials_never_print() {
        let credentials = Credentials {
            signing_key: Some(b"topsecret".to_vec()),
            smtp_password: Some("hunter2".into()),
            ..Credentials::default()
        };
        let shown = format!("{credentials:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
