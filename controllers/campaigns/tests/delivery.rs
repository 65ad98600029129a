//! The Channel transports against real receivers: an axum webhook/Slack receiver and an SMTP
//! server, both on 127.0.0.1. Also the rate limit's in-flight bound with a slow receiver.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http_receiver::{Answer, HttpReceiver};
use common::smtp_sink::SmtpSink;
use common::{message, spec};
use flotilla_campaigns::campaign::retry::Outcome;
use flotilla_campaigns::channel::smtp::SmtpTransport;
use flotilla_campaigns::channel::webhook::signature;
use flotilla_campaigns::channel::{
    Attempt, ChannelCredentials, ChannelDelivery, ChannelRateLimit, ChannelTransport,
    CircuitBreaker, TransportError,
};
use flotilla_crds::channel::{BreakerState, SmtpChannel};
use serde_json::json;

const KEY: &[u8] = b"whsec-test-key";

fn webhook(url: &str, timeout: &str, signed: bool) -> ChannelTransport {
    let mut settings = json!({"url": url});
    if signed {
        settings["signingSecretRef"] = json!({"name": "hook", "key": "hmac"});
    }
    let spec = spec(json!({"type": "Webhook", "webhook": settings, "timeout": timeout}));
    let credentials = ChannelCredentials {
        signing_key: signed.then(|| KEY.to_vec()),
        ..ChannelCredentials::default()
    };
    ChannelTransport::new(&spec, &credentials).unwrap()
}

fn slack(url: &str) -> ChannelTransport {
    let spec = spec(json!({
        "type": "Slack",
        "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}},
        "timeout": "2s",
    }));
    let credentials = ChannelCredentials {
        slack_url: Some(url.to_owned()),
        ..ChannelCredentials::default()
    };
    ChannelTransport::new(&spec, &credentials).unwrap()
}

fn smtp(port: u16, login: Option<(&str, &str)>) -> ChannelTransport {
    smtp_secured(port, login, "None")
}

fn smtp_secured(port: u16, login: Option<(&str, &str)>, security: &str) -> ChannelTransport {
    let mut settings = json!({
        "host": "127.0.0.1", "port": port, "security": security,
        "from": "Acme Cloud <noreply@acme.example>",
    });
    if login.is_some() {
        settings["credentialsSecretRef"] = json!({"name": "smtp"});
    }
    let spec = spec(json!({"type": "SMTP", "smtp": settings, "timeout": "5s"}));
    let credentials = ChannelCredentials {
        smtp_username: login.map(|(u, _)| u.to_owned()),
        smtp_password: login.map(|(_, p)| p.to_owned()),
        ..ChannelCredentials::default()
    };
    ChannelTransport::new(&spec, &credentials).unwrap()
}

fn status(code: u16) -> Answer {
    Answer::Status(code, Vec::new(), String::new())
}

#[tokio::test]
async fn webhook_posts_the_documented_json_with_idempotency_key_and_signature() {
    let receiver = HttpReceiver::start().await;
    let transport = webhook(&receiver.url, "2s", true);
    let message = message("spring-sale-0f3a");

    assert_eq!(transport.send(&message).await, Outcome::Delivered);
    assert_eq!(transport.send(&message).await, Outcome::Delivered);

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("spring-sale-0f3a"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        // Verify as a receiver would: recompute HMAC-SHA256 over "<timestamp>.<raw body>".
        let timestamp: i64 = request
            .header("x-flotilla-timestamp")
            .unwrap()
            .parse()
            .unwrap();
        let sent = request.header("x-flotilla-signature").unwrap();
        assert_eq!(sent, signature(KEY, timestamp, &request.body));
        let (t, v1) = sent.split_once(',').unwrap();
        assert_eq!(t, format!("t={timestamp}"));
        assert_eq!(v1.len(), "v1=".len() + 64);
        assert!((jiff::Timestamp::now().as_second() - timestamp).abs() < 60);
        assert_ne!(sent, signature(b"another key", timestamp, &request.body));
        assert_eq!(
            request.json(),
            json!({
                "id": "spring-sale-0f3a",
                "campaign": "spring-sale",
                "variant": "b",
                "recipient": {"name": "Ada Lovelace", "email": "ada@example.com"},
                "subject": "Your trial ends soon",
                "body": "Hello Ada,\nyour trial ends on Friday.",
                "unsubscribeUrl": "https://flotilla.example/unsubscribe/spring-sale-0f3a",
            })
        );
    }
}

#[tokio::test]
async fn an_unsigned_webhook_sends_no_signature() {
    let receiver = HttpReceiver::start().await;
    let transport = webhook(&receiver.url, "2s", false);
    assert_eq!(transport.send(&message("m1")).await, Outcome::Delivered);
    let request = &receiver.requests()[0];
    assert_eq!(request.header("idempotency-key"), Some("m1"));
    assert_eq!(request.header("x-flotilla-signature"), None);
    assert_eq!(request.header("x-flotilla-timestamp"), None);
}

#[tokio::test]
async fn webhook_answers_map_to_outcomes() {
    let receiver = HttpReceiver::start().await;
    let transport = webhook(&receiver.url, "2s", true);
    let message = message("m1");

    receiver.answer_with(status(500));
    assert!(matches!(
        transport.send(&message).await,
        Outcome::Transient {
            retry_after: None,
            ..
        }
    ));
    receiver.answer_with(Answer::Status(
        429,
        vec![("retry-after", "17".into())],
        String::new(),
    ));
    assert_eq!(
        transport.send(&message).await,
        Outcome::Transient {
            reason: "HTTP429".into(),
            retry_after: Some(Duration::from_secs(17)),
        }
    );
    receiver.answer_with(status(400));
    assert_eq!(
        transport.send(&message).await,
        Outcome::Permanent {
            reason: "HTTP400".into()
        }
    );
    // A redirect is not followed: the Channel's URL needs fixing.
    receiver.answer_with(Answer::Status(
        308,
        vec![("location", "http://127.0.0.1:1/".into())],
        String::new(),
    ));
    assert!(matches!(
        transport.send(&message).await,
        Outcome::Permanent { .. }
    ));
    assert_eq!(receiver.requests().len(), 4);
}

#[tokio::test]
async fn a_receiver_hanging_past_the_timeout_is_transient() {
    let receiver = HttpReceiver::start().await;
    receiver.answer_with(Answer::Hang);
    let transport = webhook(&receiver.url, "300ms", true);
    let started = Instant::now();
    let outcome = transport.send(&message("m1")).await;
    assert!(matches!(outcome, Outcome::Transient { .. }), "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn nobody_listening_is_transient() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let transport = webhook(&format!("http://127.0.0.1:{port}/hook"), "2s", false);
    assert_eq!(
        transport.send(&message("m1")).await,
        Outcome::unreachable("connection failed")
    );
}

#[tokio::test]
async fn slack_gets_an_incoming_webhook_payload_and_its_answers_map() {
    let receiver = HttpReceiver::start().await;
    let transport = slack(&receiver.url);
    let message = message("m1");

    assert_eq!(transport.send(&message).await, Outcome::Delivered);
    assert_eq!(
        receiver.requests()[0].json(),
        json!({"text": "*Your trial ends soon*\n\nHello Ada,\nyour trial ends on Friday."})
    );

    receiver.answer_with(Answer::Status(
        429,
        vec![("retry-after", "30".into())],
        "rate_limited".into(),
    ));
    assert_eq!(
        transport.send(&message).await,
        Outcome::Transient {
            reason: "HTTP429 rate_limited".into(),
            retry_after: Some(Duration::from_secs(30)),
        }
    );
    receiver.answer_with(Answer::Status(404, Vec::new(), "channel_not_found".into()));
    assert_eq!(
        transport.send(&message).await,
        Outcome::Permanent {
            reason: "HTTP404 channel_not_found".into()
        }
    );
    receiver.answer_with(Answer::Status(400, Vec::new(), "invalid_payload".into()));
    assert_eq!(
        transport.send(&message).await,
        Outcome::Permanent {
            reason: "HTTP400 invalid_payload".into()
        }
    );
}

#[test]
fn a_slack_channel_without_its_url_is_refused() {
    let spec = spec(json!({
        "type": "Slack",
        "slack": {"webhookUrlSecretRef": {"name": "slack", "key": "url"}},
    }));
    assert!(matches!(
        ChannelTransport::new(&spec, &ChannelCredentials::default()),
        Err(TransportError::MissingSecret(_))
    ));
}

#[tokio::test]
async fn smtp_sends_the_mail_with_stable_message_id_and_one_click_unsubscribe() {
    let server = SmtpSink::start(Some(("flotilla", "s3cret")));
    let transport = smtp(server.port, Some(("flotilla", "s3cret")));
    let message = message("spring-sale-0f3a");

    assert_eq!(transport.send(&message).await, Outcome::Delivered);
    assert_eq!(transport.send(&message).await, Outcome::Delivered);

    let mails = server.mails();
    assert_eq!(mails.len(), 2);
    for mail in &mails {
        assert_eq!(mail.authenticated_as.as_deref(), Some("flotilla"));
        assert_eq!(mail.from, "noreply@acme.example");
        assert_eq!(mail.to, ["ada@example.com"]);
        assert_eq!(
            mail.header("Message-ID").as_deref(),
            Some("<spring-sale-0f3a@acme.example>")
        );
        assert_eq!(
            mail.header("From").as_deref(),
            Some("\"Acme Cloud\" <noreply@acme.example>")
        );
        assert_eq!(
            mail.header("To").as_deref(),
            Some("\"Ada Lovelace\" <ada@example.com>")
        );
        assert_eq!(
            mail.header("Subject").as_deref(),
            Some("Your trial ends soon")
        );
        assert_eq!(
            mail.header("List-Unsubscribe").as_deref(),
            Some("<https://flotilla.example/unsubscribe/spring-sale-0f3a>")
        );
        assert_eq!(
            mail.header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(
            mail.body()
                .contains("Hello Ada,\r\nyour trial ends on Friday."),
            "{}",
            mail.data
        );
    }
}

#[tokio::test]
async fn smtp_replies_map_to_outcomes() {
    let server = SmtpSink::start(None);
    let transport = smtp(server.port, None);
    let message = message("m1");

    server.refuse_data_with(451);
    assert!(matches!(
        transport.send(&message).await,
        Outcome::Transient { reason, .. } if reason == "SMTP451"
    ));
    server.refuse_recipients_with(550);
    assert_eq!(
        transport.send(&message).await,
        Outcome::Permanent {
            reason: "SMTP550".into()
        }
    );
    assert!(server.mails().is_empty());

    let mut nobody = common::message("m2");
    nobody.recipient.email = None;
    assert!(matches!(
        transport.send(&nobody).await,
        Outcome::Permanent { .. }
    ));
}

#[tokio::test]
async fn smtp_with_wrong_credentials_is_permanent_and_no_server_is_transient() {
    let server = SmtpSink::start(Some(("flotilla", "s3cret")));
    let transport = smtp(server.port, Some(("flotilla", "wrong")));
    assert_eq!(
        transport.send(&message("m1")).await,
        Outcome::Permanent {
            reason: "SMTP535".into()
        }
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(matches!(
        smtp(port, None).send(&message("m1")).await,
        Outcome::Transient { .. }
    ));
}

#[tokio::test]
async fn starttls_and_tls_never_fall_back_to_plain_text() {
    // The sink speaks plain text only and offers no STARTTLS: neither mode may send to it.
    let server = SmtpSink::start(Some(("flotilla", "s3cret")));
    for security in ["StartTLS", "TLS"] {
        let transport = smtp_secured(server.port, Some(("flotilla", "s3cret")), security);
        let outcome = transport.send(&message("m1")).await;
        assert!(
            matches!(outcome, Outcome::Transient { .. }),
            "{security}: {outcome:?}"
        );
    }
    assert!(server.mails().is_empty());
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate_then_auth() {
    let (server, certificate) = SmtpSink::start_with_starttls(Some(("flotilla", "s3cret")));
    let settings: SmtpChannel = serde_json::from_value(json!({
        "host": "127.0.0.1", "port": server.port, "security": "StartTLS",
        "from": "noreply@acme.example", "credentialsSecretRef": {"name": "smtp"},
    }))
    .unwrap();
    let login = || Some(("flotilla".to_owned(), "s3cret".to_owned()));
    let timeout = Duration::from_secs(5);

    let transport =
        SmtpTransport::trusting(&settings, login(), timeout, certificate.as_bytes()).unwrap();
    assert_eq!(transport.send(&message("m1")).await, Outcome::Delivered);
    // The sink takes AUTH only over TLS, so this also shows the upgrade happened.
    assert_eq!(
        server.mails()[0].authenticated_as.as_deref(),
        Some("flotilla")
    );

    // A certificate nobody vouches for stops the send before any credential or mail goes out.
    let untrusting = SmtpTransport::new(&settings, login(), timeout).unwrap();
    // (lettre reports the failed handshake as a connection error.)
    assert!(matches!(
        untrusting.send(&message("m2")).await,
        Outcome::Transient { .. }
    ));
    assert_eq!(server.mails().len(), 1);
}

#[tokio::test]
async fn the_log_channel_always_delivers() {
    let transport = ChannelTransport::new(
        &spec(json!({"type": "Log"})),
        &ChannelCredentials::default(),
    )
    .unwrap();
    assert_eq!(transport.send(&message("m1")).await, Outcome::Delivered);
}

#[tokio::test]
async fn max_in_flight_bounds_a_slow_receiver_across_campaigns() {
    let receiver = HttpReceiver::start().await;
    receiver.answer_with(Answer::Slow(Duration::from_millis(150)));
    let transport = Arc::new(webhook(&receiver.url, "5s", false));
    let limit = ChannelRateLimit::new(Some(
        &serde_json::from_value(json!({
            "messagesPerMinute": 600_000, "burst": 1000, "maxInFlight": 3,
        }))
        .unwrap(),
    ));
    // Two "campaigns" of 12 senders each, sharing the Channel's one limiter.
    let mut senders = Vec::new();
    for i in 0..24 {
        let (transport, limit) = (Arc::clone(&transport), Arc::clone(&limit));
        senders.push(tokio::spawn(async move {
            let _permit = limit.acquire().await;
            transport.send(&message(&format!("m{i}"))).await
        }));
    }
    for sender in senders {
        assert_eq!(sender.await.unwrap(), Outcome::Delivered);
    }
    assert_eq!(receiver.requests().len(), 24);
    assert_eq!(
        receiver.most_in_flight(),
        3,
        "bounded, and the bound is used"
    );
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_webhook_and_a_probe_closes_it() {
    let receiver = HttpReceiver::start().await;
    let transport = webhook(&receiver.url, "2s", false);
    let mut breaker = CircuitBreaker::new(
        &serde_json::from_value(json!({
            "consecutiveFailures": 2, "coolDown": "30s",
        }))
        .unwrap(),
    );
    let t0 = jiff::Timestamp::now();

    // Rejected recipients do not open it; a 503 twice does.
    receiver.answer_with(status(400));
    for _ in 0..3 {
        assert!(breaker.allow(t0));
        breaker.record(&transport.send(&message("m1")).await, t0);
    }
    receiver.answer_with(status(503));
    for _ in 0..2 {
        assert!(breaker.allow(t0));
        breaker.record(&transport.send(&message("m1")).await, t0);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(!breaker.allow(t0 + Duration::from_secs(29)));

    receiver.answer_with(status(202));
    let later = t0 + Duration::from_secs(30);
    assert!(breaker.allow(later));
    breaker.record(&transport.send(&message("m1")).await, later);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(receiver.requests().len(), 6);
}

#[tokio::test]
async fn a_channel_delivery_holds_messages_while_its_breaker_is_open() {
    let receiver = HttpReceiver::start().await;
    receiver.answer_with(status(503));
    let spec = spec(json!({
        "type": "Webhook",
        "webhook": {"url": receiver.url},
        "rateLimit": {"messagesPerMinute": 60_000, "burst": 100},
        "circuitBreaker": {"consecutiveFailures": 3, "coolDown": "1m", "halfOpenProbes": 1},
    }));
    let delivery = ChannelDelivery::new(
        ChannelTransport::new(&spec, &ChannelCredentials::default()).unwrap(),
        ChannelRateLimit::new(spec.rate_limit.as_ref()),
        CircuitBreaker::new(spec.circuit_breaker.as_ref().unwrap()),
    );
    let t0 = jiff::Timestamp::now();
    let clock = std::sync::Mutex::new(t0);
    let now = || *clock.lock().unwrap();

    for _ in 0..3 {
        assert!(matches!(
            delivery.deliver(&message("m1"), now).await,
            Attempt::Sent(Outcome::Transient { .. })
        ));
    }
    let open = delivery.breaker_status();
    assert_eq!(open.state, BreakerState::Open);
    assert_eq!(open.consecutive_failures, 3);
    let until = t0 + Duration::from_secs(60);
    for _ in 0..5 {
        assert_eq!(
            delivery.deliver(&message("m2"), now).await,
            Attempt::Held { until }
        );
    }
    assert_eq!(receiver.requests().len(), 3, "nothing sent while open");

    // After the cool-down one probe goes out; it succeeds and the channel is back.
    receiver.answer_with(status(200));
    *clock.lock().unwrap() = until;
    assert_eq!(
        delivery.deliver(&message("m2"), now).await,
        Attempt::Sent(Outcome::Delivered)
    );
    assert_eq!(delivery.breaker_status().state, BreakerState::Closed);
    assert_eq!(receiver.requests().len(), 4);
}
