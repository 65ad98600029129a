//! The Campaign controller against the sandbox, through the real `Controller`, sending to a real
//! HTTP webhook receiver: a complete campaign, fallback, bad input, the failure threshold, and
//! the operator crashing mid-campaign. Every test ends with the RBAC check.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::http_receiver::{Answer, HttpReceiver};
use flotilla_campaigns::campaign::allocation::Group;
use flotilla_campaigns::campaign::sender::allocation;
use flotilla_campaigns::campaign::status::{campaign_reasons, event_reasons};
use flotilla_campaigns::ledger::FlushPolicy;
use flotilla_crds::condition::{find_condition, types};
use flotilla_crds::{Campaign, CampaignPhase, Channel, ChannelPhase, Subscription};
use flotilla_runtime::testing::wait_for;
use flotilla_testkit::{Harness, Spawn};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// Long enough for a campaign of a few hundred messages on a busy CI machine.
const CAMPAIGN_WAIT: Duration = Duration::from_secs(90);

async fn start() -> Harness {
    let spawn: Spawn = Arc::new(|operator| {
        Box::pin(async move {
            flotilla_campaigns::run(
                &operator,
                flotilla_campaigns::Selection {
                    channel: true,
                    campaign: true,
                },
                flotilla_campaigns::Settings {
                    unsubscribe: Arc::new(|_, id| format!("https://flotilla.example/u/{id}")),
                    flush: FlushPolicy {
                        max_unflushed: 20,
                        max_delay: Duration::from_secs(1),
                    },
                },
            )
            .await;
        })
    });
    let h = Harness::start(spawn).await;
    h.ready().await;
    h
}

fn subscriptions(h: &Harness) -> Api<Subscription> {
    Api::all(h.sandbox().client())
}

/// Creates Subscriptions `{prefix}-000`… with contacts, Active (as their controller would say).
async fn create_subscriptions(h: &Harness, prefix: &str, count: usize) -> Vec<String> {
    let api = subscriptions(h);
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i:03}");
        let subscription: Subscription = serde_json::from_value(json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": name, "labels": {"audience": prefix}},
            "spec": {
                "plan": "team",
                "owners": [{"kind": "User", "name": format!("{name}@example.com")}],
                "contact": {"name": format!("Customer {i}"), "email": format!("{name}@example.com")},
            },
        }))
        .unwrap();
        api.create(&PostParams::default(), &subscription)
            .await
            .unwrap();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Active"}})),
        )
        .await
        .unwrap();
        names.push(name);
    }
    names
}

async fn opt_out(h: &Harness, name: &str) {
    subscriptions(h)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"contact": {"optedOut": true}}})),
        )
        .await
        .unwrap();
}

/// A Secret labelled for the Channel controller's watch, with `string_data`.
async fn channel_secret(h: &Harness, name: &str, string_data: serde_json::Value) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = h.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "labels": {"flotilla.dev/channel-secret": "true"}},
                "stringData": string_data,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
}

async fn webhook_channel(h: &Harness, name: &str, receiver: &HttpReceiver) {
    webhook_channel_with(h, name, receiver, json!({})).await;
}

/// A Webhook Channel to `receiver` with `extra` spec fields (rate limit, breaker).
async fn webhook_channel_with(
    h: &Harness,
    name: &str,
    receiver: &HttpReceiver,
    extra: serde_json::Value,
) {
    let mut spec = json!({"type": "Webhook", "webhook": {"url": receiver.url}, "timeout": "5s"});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .await;
    wait_channel(h, "the Channel Ready", name, |c| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ChannelPhase::Ready)
    })
    .await;
}

/// A campaign to the Subscriptions labelled `audience=prefix`, starting now.
fn campaign(name: &str, prefix: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "audience": {"selector": {"matchLabels": {"audience": prefix}}},
        "channels": {"names": ["hook"]},
        "message": {"subject": "News", "body": "Hello {{ subscription.contact.name }}"},
        "schedule": {"startAt": "2020-01-01T00:00:00Z"},
        "retry": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s"},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
        "metadata": {"name": name}, "spec": spec,
    })
}

async fn wait_campaign(
    h: &Harness,
    what: &str,
    name: &str,
    check: impl Fn(&Campaign) -> bool,
) -> Campaign {
    h.wait_object(what, name, CAMPAIGN_WAIT, check).await
}

async fn wait_channel(
    h: &Harness,
    what: &str,
    name: &str,
    check: impl Fn(&Channel) -> bool,
) -> Channel {
    h.wait_object(what, name, CAMPAIGN_WAIT, check).await
}

fn phase(campaign: &Campaign) -> Option<CampaignPhase> {
    campaign.status.as_ref().and_then(|s| s.phase)
}

fn condition(campaign: &Campaign, type_: &str) -> (String, String, String) {
    let c = campaign
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, type_))
        .unwrap_or_else(|| panic!("a {type_} condition: {:?}", campaign.status));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// The recipients a campaign must reach: its audience outside the holdout.
fn expected_recipients(campaign: &Campaign, names: &[String]) -> BTreeSet<String> {
    let allocation = allocation(campaign).unwrap();
    names
        .iter()
        .filter(|n| allocation.group(n) != Group::HeldOut)
        .cloned()
        .collect()
}

/// Which Subscription each received message went to (by the e-mail in the payload), and how
/// many times.
fn received_by_recipient(receiver: &HttpReceiver) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for request in receiver.requests() {
        let body = request.json();
        let email = body
            .pointer("/recipient/email")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let name = email.trim_end_matches("@example.com").to_owned();
        by.entry(name).or_default().push(
            request
                .header("idempotency-key")
                .unwrap_or_default()
                .to_owned(),
        );
    }
    by
}

#[tokio::test]
async fn a_campaign_reaches_everyone_outside_the_holdout_exactly_once_and_completes() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "launch", 40).await;
    opt_out(&h, &names[3]).await;
    channel_secret(&h, "hook-key", json!({"hmac": "whsec-launch"})).await;
    webhook_channel_with(
        &h,
        "hook",
        &receiver,
        json!({"webhook": {"url": receiver.url, "signingSecretRef": {"name": "hook-key", "key": "hmac"}}}),
    )
    .await;
    h.create::<Campaign>(campaign(
        "launch",
        "launch",
        json!({
            "audience": {"selector": {"matchLabels": {"audience": "launch"}}, "holdoutPercent": 20},
            "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1, "body": "Hi {{ subscription.name }}"}],
        }),
    ))
    .await;
    let done = wait_campaign(&h, "Completed", "launch", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let status = done.status.clone().unwrap();
    let counts = status.counts.clone().unwrap();
    let mut expected = expected_recipients(&done, &names);
    let opted_out_expected = usize::from(expected.remove(&names[3]));
    let received = received_by_recipient(&receiver);
    assert_eq!(
        received.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every recipient outside the holdout and the opt-outs, nobody else"
    );
    assert!(
        received.values().all(|ids| ids.len() == 1),
        "nobody twice: {received:?}"
    );
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.signed_with(b"whsec-launch") && !r.signed_with(b"another key")),
        "every message signed with the key from the Secret"
    );
    let ids: BTreeSet<&String> = received.values().flatten().collect();
    assert_eq!(ids.len(), expected.len(), "one distinct message id each");
    assert_eq!(counts.sent as usize, expected.len());
    assert_eq!(counts.opted_out as usize, opted_out_expected);
    assert_eq!(
        counts.held_out as usize,
        40 - expected.len() - opted_out_expected
    );
    assert_eq!(counts.pending, 0);
    assert_eq!(status.audience_size, Some(40));
    assert!(status.started_at.is_some() && status.completed_at.is_some());
    assert_eq!(
        status.preview, None,
        "the preview is for campaigns not started"
    );
    let variant_sent: i64 = status.variants.iter().map(|v| v.sent).sum();
    assert_eq!(variant_sent, counts.sent);
    assert_eq!(status.channels[0].sent, counts.sent);
    // The variant's own body went to its members, the message's to the others.
    let bodies: BTreeSet<String> = receiver
        .requests()
        .iter()
        .map(|r| {
            r.json()["body"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        bodies,
        BTreeSet::from(["Hello".to_owned(), "Hi".to_owned()])
    );
    let events = h.events_about("Campaign", "launch").await;
    for reason in [event_reasons::STARTED, event_reasons::COMPLETED] {
        assert!(
            events.iter().any(|e| e.reason.as_deref() == Some(reason)),
            "{reason}: {events:?}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn fallback_delivers_on_the_next_channel_when_the_first_refuses() {
    let h = start().await;
    let refusing = HttpReceiver::start().await;
    refusing.answer_with(Answer::Status(400, Vec::new(), "no".into()));
    let backup = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "fallback", 10).await;
    webhook_channel(&h, "hook", &refusing).await;
    webhook_channel(&h, "backup", &backup).await;
    h.create::<Campaign>(campaign(
        "fallback",
        "fallback",
        json!({"channels": {"mode": "Fallback", "names": ["hook", "backup"]}}),
    ))
    .await;
    let done = wait_campaign(&h, "Completed", "fallback", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        refusing.requests().len(),
        names.len(),
        "each tried once on the first"
    );
    let received = received_by_recipient(&backup);
    assert_eq!(received.len(), names.len());
    assert!(received.values().all(|ids| ids.len() == 1));
    assert_eq!(status.counts.unwrap().sent, 10);
    assert_eq!(
        (status.channels[0].sent, status.channels[0].failed),
        (0, 10),
        "{:?}",
        status.channels
    );
    assert_eq!(
        (status.channels[1].sent, status.channels[1].failed),
        (10, 0)
    );
    h.stop().await;
}

#[tokio::test]
async fn fallback_retries_a_transient_failure_where_it_is_and_moves_on_once_retries_run_out() {
    let h = start().await;
    let unavailable = || Answer::Status(503, Vec::new(), "busy".into());
    // "blip": the primary fails twice, then takes it; the backup is never called for it.
    let blipping = HttpReceiver::start().await;
    blipping.answer_next([unavailable(), unavailable()]);
    // "down": the primary keeps failing; after its two attempts the backup takes it.
    let down = HttpReceiver::start().await;
    down.answer_with(unavailable());
    let backup = HttpReceiver::start().await;
    let blip_names = create_subscriptions(&h, "blip", 1).await;
    let down_names = create_subscriptions(&h, "down", 2).await;
    webhook_channel(&h, "blipping", &blipping).await;
    webhook_channel(&h, "down", &down).await;
    webhook_channel(&h, "backup", &backup).await;
    h.create::<Campaign>(campaign(
        "blip",
        "blip",
        json!({"channels": {"mode": "Fallback", "names": ["blipping", "backup"]}}),
    ))
    .await;
    h.create::<Campaign>(campaign(
        "down",
        "down",
        json!({
            "channels": {"mode": "Fallback", "names": ["down", "backup"]},
            "retry": {"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s"},
        }),
    ))
    .await;
    let mut statuses = Vec::new();
    for name in ["blip", "down"] {
        let done = wait_campaign(&h, "Completed", name, |c| {
            phase(c) == Some(CampaignPhase::Completed)
        })
        .await;
        statuses.push(done.status.unwrap());
    }
    assert_eq!(
        blipping.requests().len(),
        3,
        "two failures, then delivered there"
    );
    assert_eq!(received_by_recipient(&blipping).len(), blip_names.len());
    assert_eq!(
        down.requests().len(),
        2 * down_names.len(),
        "two attempts each"
    );
    let on_backup = received_by_recipient(&backup);
    assert_eq!(
        on_backup.keys().cloned().collect::<Vec<_>>(),
        down_names,
        "only those whose primary gave up, once each"
    );
    assert!(on_backup.values().all(|ids| ids.len() == 1));
    let per_channel = |status: &flotilla_crds::campaign::CampaignStatus| -> Vec<(i64, i64)> {
        status.channels.iter().map(|c| (c.sent, c.failed)).collect()
    };
    assert_eq!(per_channel(&statuses[0]), [(1, 2), (0, 0)]);
    assert_eq!(per_channel(&statuses[1]), [(0, 4), (2, 0)]);
    h.stop().await;
}

#[tokio::test]
async fn mode_all_sends_on_every_channel_and_counts_each() {
    let h = start().await;
    let first = HttpReceiver::start().await;
    let refusing = HttpReceiver::start().await;
    refusing.answer_with(Answer::Status(400, Vec::new(), "no".into()));
    let third = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "all", 8).await;
    webhook_channel(&h, "first", &first).await;
    webhook_channel(&h, "refusing", &refusing).await;
    webhook_channel(&h, "third", &third).await;
    h.create::<Campaign>(campaign(
        "all",
        "all",
        json!({"channels": {"mode": "All", "names": ["first", "refusing", "third"]}}),
    ))
    .await;
    let done = wait_campaign(&h, "Completed", "all", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let status = done.status.unwrap();
    for receiver in [&first, &third] {
        let received = received_by_recipient(receiver);
        assert_eq!(
            received.len(),
            names.len(),
            "everyone on both working channels"
        );
        assert!(received.values().all(|ids| ids.len() == 1));
    }
    assert_eq!(refusing.requests().len(), names.len(), "tried once each");
    let counts = status.counts.unwrap();
    assert_eq!(
        (counts.sent, counts.failed),
        (8, 0),
        "delivered where one took it"
    );
    let per_channel: Vec<(String, i64, i64)> = status
        .channels
        .iter()
        .map(|c| (c.name.clone(), c.sent, c.failed))
        .collect();
    assert_eq!(
        per_channel,
        [
            ("first".to_owned(), 8, 0),
            ("refusing".to_owned(), 0, 8),
            ("third".to_owned(), 8, 0)
        ]
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unknown_template_field_or_channel_waits_with_a_condition_and_sends_nothing() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    create_subscriptions(&h, "typo", 3).await;
    webhook_channel(&h, "hook", &receiver).await;
    h.create::<Campaign>(campaign(
        "typo",
        "typo",
        json!({"message": {"body": "Hello\n{{ subscription.contact.nmae }}"}}),
    ))
    .await;
    let waiting = wait_campaign(&h, "TemplatesValid False", "typo", |c| {
        c.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, types::TEMPLATES_VALID))
            .is_some_and(|c| c.status == "False")
    })
    .await;
    let (_, reason, message) = condition(&waiting, types::TEMPLATES_VALID);
    assert_eq!(reason, campaign_reasons::TEMPLATES_INVALID);
    assert!(
        message.contains("spec.message.body") && message.contains("line 2"),
        "{message}"
    );
    assert!(message.contains("subscription.contact.nmae"), "{message}");
    assert_eq!(
        condition(&waiting, types::READY).1,
        campaign_reasons::TEMPLATES_INVALID
    );
    assert_ne!(phase(&waiting), Some(CampaignPhase::Running));
    h.create::<Campaign>(campaign(
        "nowhere",
        "typo",
        json!({"channels": {"names": ["missing"]}}),
    ))
    .await;
    let waiting = wait_campaign(&h, "NoChannelReady", "nowhere", |c| {
        c.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, types::READY))
            .is_some_and(|c| c.reason == campaign_reasons::NO_CHANNEL_READY)
    })
    .await;
    assert!(
        condition(&waiting, types::CHANNELS_READY)
            .2
            .contains("missing")
    );
    let events = h.events_about("Campaign", "typo").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(event_reasons::TEMPLATES_INVALID))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.requests().is_empty(), "nothing was sent");
    h.stop().await;
}

#[tokio::test]
async fn the_failure_threshold_pauses_and_a_resume_finishes_the_campaign() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    receiver.answer_with(Answer::Status(400, Vec::new(), "bad".into()));
    let names = create_subscriptions(&h, "flaky", 30).await;
    webhook_channel(&h, "hook", &receiver).await;
    h.create::<Campaign>(campaign(
        "flaky",
        "flaky",
        json!({
            "failureThreshold": {"percent": 50, "minFinished": 5},
            "throttle": {"maxInFlight": 1},
        }),
    ))
    .await;
    let paused = wait_campaign(&h, "Paused by the threshold", "flaky", |c| {
        phase(c) == Some(CampaignPhase::Paused)
    })
    .await;
    assert_eq!(
        condition(&paused, types::READY).1,
        flotilla_crds::condition::reasons::PAUSED_BY_FAILURE_THRESHOLD
    );
    assert_eq!(
        condition(&paused, types::FAILURE_THRESHOLD_EXCEEDED).0,
        "True"
    );
    let failed_at_pause = paused
        .status
        .as_ref()
        .unwrap()
        .counts
        .clone()
        .unwrap()
        .failed;
    assert!(failed_at_pause >= 5, "{failed_at_pause}");
    assert!(
        (failed_at_pause as usize) < names.len(),
        "paused before failing everyone"
    );
    let events = h.events_about("Campaign", "flaky").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(event_reasons::AUTO_PAUSED))
    );
    // The receiver is fixed; the operator resumes.
    receiver.answer_with(Answer::Status(200, Vec::new(), "ok".into()));
    h.api::<Campaign>()
        .patch(
            "flaky",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resume": "receiver fixed"}})),
        )
        .await
        .unwrap();
    let done = wait_campaign(&h, "Completed", "flaky", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let counts = done.status.unwrap().counts.unwrap();
    assert_eq!(counts.failed, failed_at_pause, "the failures stay counted");
    assert_eq!(counts.sent + counts.failed, names.len() as i64);
    h.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_retry_after_is_honoured() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    receiver.answer_next([
        Answer::Status(503, Vec::new(), "busy".into()),
        Answer::Status(429, vec![("retry-after", "2".into())], "slow down".into()),
    ]);
    create_subscriptions(&h, "retry", 1).await;
    webhook_channel(&h, "hook", &receiver).await;
    h.create::<Campaign>(campaign("retry", "retry", json!({})))
        .await;
    let done = wait_campaign(&h, "Completed", "retry", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    assert_eq!(done.status.unwrap().counts.unwrap().sent, 1);
    let keys = receiver.keys();
    assert_eq!(keys.len(), 3, "two failures, then the delivery");
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one message id: {keys:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_crash_mid_campaign_skips_nobody_and_resends_only_what_was_in_flight() {
    let h = start().await;
    let mut h = h;
    let receiver = HttpReceiver::start().await;
    receiver.answer_with(Answer::Slow(Duration::from_millis(20)));
    let names = create_subscriptions(&h, "crash", 120).await;
    webhook_channel(&h, "hook", &receiver).await;
    h.create::<Campaign>(campaign(
        "crash",
        "crash",
        json!({"throttle": {"maxInFlight": 4}}),
    ))
    .await;
    // Killed three times, after a varying number of messages (fixed seed: reproducible).
    let mut seed: u64 = 0x5eed;
    let mut at = 0;
    for _ in 0..3 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        at += 15 + (seed >> 33) as usize % 20;
        wait_for("more messages", CAMPAIGN_WAIT, || {
            let receiver = receiver.clone();
            async move { (receiver.requests().len() >= at).then_some(()) }
        })
        .await
        .unwrap();
        h.crash().await;
    }
    let done = wait_campaign(&h, "Completed after the crash", "crash", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let expected = expected_recipients(&done, &names);
    let received = received_by_recipient(&receiver);
    assert_eq!(
        received.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "nobody skipped"
    );
    for ids in received.values() {
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "a re-send carries the same id"
        );
    }
    let resent: usize = received.values().map(|ids| ids.len() - 1).sum();
    // Claimed and not recorded at each crash: at most one claim batch (50) plus what was in
    // flight (4).
    assert!(resent <= 3 * 54, "{resent} re-sent");
    let counts = done.status.unwrap().counts.unwrap();
    assert_eq!(
        counts.sent as usize,
        expected.len(),
        "counts equal what was received"
    );
    h.stop().await;
}

async fn set_phase(h: &Harness, name: &str, status: serde_json::Value) {
    subscriptions(h)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_trigger_campaign_sends_once_to_each_subscription_entering_its_phase() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "dunning", 4).await;
    webhook_channel(&h, "hook", &receiver).await;
    let mut spec = campaign(
        "dunning",
        "dunning",
        json!({"trigger": {"phaseEntered": "PastDue"}}),
    );
    spec["spec"].as_object_mut().unwrap().remove("schedule");
    h.create::<Campaign>(spec).await;
    let listening = wait_campaign(&h, "Running, listening", "dunning", |c| {
        phase(c) == Some(CampaignPhase::Running)
    })
    .await;
    assert_eq!(condition(&listening, types::READY).0, "True");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(receiver.requests().is_empty(), "nobody is past due yet");
    set_phase(&h, &names[1], json!({"phase": "PastDue"})).await;
    wait_for("the first past-due message", CAMPAIGN_WAIT, || {
        let receiver = receiver.clone();
        async move { (receiver.requests().len() == 1).then_some(()) }
    })
    .await
    .unwrap();
    set_phase(&h, &names[2], json!({"phase": "PastDue"})).await;
    let counted = wait_campaign(&h, "two sent", "dunning", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.counts.as_ref())
            .is_some_and(|c| c.sent == 2)
    })
    .await;
    assert_eq!(
        phase(&counted),
        Some(CampaignPhase::Running),
        "never complete"
    );
    // Leaving the phase and entering it again sends nothing more.
    set_phase(&h, &names[1], json!({"phase": "Active"})).await;
    set_phase(&h, &names[1], json!({"phase": "PastDue"})).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let received = received_by_recipient(&receiver);
    assert_eq!(
        received.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([names[1].clone(), names[2].clone()])
    );
    assert!(received.values().all(|ids| ids.len() == 1), "{received:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_trial_ending_trigger_sends_within_its_days_only() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "trial", 2).await;
    let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(240);
    set_phase(
        &h,
        &names[0],
        json!({"phase": "Trialing", "trialEndsAt": soon.to_string()}),
    )
    .await;
    set_phase(
        &h,
        &names[1],
        json!({"phase": "Trialing", "trialEndsAt": later.to_string()}),
    )
    .await;
    webhook_channel(&h, "hook", &receiver).await;
    let mut spec = campaign(
        "trial",
        "trial",
        json!({"trigger": {"daysBeforeTrialEnd": 3}}),
    );
    spec["spec"].as_object_mut().unwrap().remove("schedule");
    h.create::<Campaign>(spec).await;
    wait_for("the trial-ending message", CAMPAIGN_WAIT, || {
        let receiver = receiver.clone();
        async move { (!receiver.requests().is_empty()).then_some(()) }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = received_by_recipient(&receiver);
    assert_eq!(received.keys().collect::<Vec<_>>(), [&names[0]]);
    h.stop().await;
}

#[tokio::test]
async fn suspend_pauses_and_resumes_where_it_stopped_and_a_later_opt_out_is_honoured() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "pause", 12).await;
    webhook_channel(&h, "hook", &receiver).await;
    // One message a second: slow enough to pause in the middle.
    h.create::<Campaign>(campaign(
        "pause",
        "pause",
        json!({"throttle": {"messagesPerMinute": 60, "maxInFlight": 1}}),
    ))
    .await;
    wait_for("a few messages", CAMPAIGN_WAIT, || {
        let receiver = receiver.clone();
        async move { (receiver.requests().len() >= 2).then_some(()) }
    })
    .await
    .unwrap();
    let api = h.api::<Campaign>();
    let suspend = |value: bool| {
        let api = api.clone();
        async move {
            api.patch(
                "pause",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": value}})),
            )
            .await
            .unwrap();
        }
    };
    suspend(true).await;
    wait_campaign(&h, "Paused", "pause", |c| {
        phase(c) == Some(CampaignPhase::Paused)
    })
    .await;
    let at_pause = receiver.requests().len();
    // The last recipient opts out while the campaign is paused.
    opt_out(&h, &names[11]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.requests().len() <= at_pause + 1,
        "at most what was in flight finishes after the pause"
    );
    suspend(false).await;
    let done = wait_campaign(&h, "Completed", "pause", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let received = received_by_recipient(&receiver);
    assert_eq!(received.len(), 11, "everyone but the one who opted out");
    assert!(!received.contains_key(&names[11]));
    assert!(received.values().all(|ids| ids.len() == 1), "{received:?}");
    let counts = done.status.unwrap().counts.unwrap();
    assert_eq!((counts.sent, counts.opted_out), (11, 1));
    let events = h.events_about("Campaign", "pause").await;
    for reason in [event_reasons::PAUSED, event_reasons::RESUMED] {
        assert!(
            events.iter().any(|e| e.reason.as_deref() == Some(reason)),
            "{reason}"
        );
    }
    h.stop().await;
}

fn breaker_state(channel: &Channel) -> Option<flotilla_crds::channel::BreakerState> {
    channel
        .status
        .as_ref()
        .and_then(|s| s.breaker.as_ref())
        .map(|b| b.state)
}

#[tokio::test]
async fn a_failing_channel_opens_its_breaker_fallback_moves_on_and_a_probe_closes_it() {
    use flotilla_crds::channel::BreakerState;
    let h = start().await;
    let failing = HttpReceiver::start().await;
    failing.answer_with(Answer::Status(503, Vec::new(), "down".into()));
    let backup = HttpReceiver::start().await;
    create_subscriptions(&h, "breaker", 60).await;
    webhook_channel_with(
        &h,
        "hook",
        &failing,
        json!({"circuitBreaker": {"consecutiveFailures": 3, "coolDown": "2s", "halfOpenProbes": 1}}),
    )
    .await;
    webhook_channel(&h, "backup", &backup).await;
    h.create::<Campaign>(campaign(
        "breaker",
        "breaker",
        json!({
            "channels": {"mode": "Fallback", "names": ["hook", "backup"]},
            "throttle": {"messagesPerMinute": 600, "maxInFlight": 1},
        }),
    ))
    .await;
    let open = wait_channel(&h, "the breaker Open", "hook", |c| {
        breaker_state(c) == Some(BreakerState::Open)
    })
    .await;
    // Three failures in a row opened it; an open channel is not called.
    assert_eq!(failing.requests().len(), 3);
    let circuit = open
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, types::CIRCUIT_CLOSED))
        .unwrap();
    assert_eq!(
        (circuit.status.as_str(), circuit.reason.as_str()),
        ("False", "BreakerOpen")
    );
    assert_eq!(
        h.metric(r#"flotilla_channel_breaker_state{channel="hook",namespace="default"}"#),
        2.0
    );
    failing.answer_with(Answer::Status(200, Vec::new(), "ok".into()));
    wait_channel(&h, "the breaker Closed again", "hook", |c| {
        breaker_state(c) == Some(BreakerState::Closed)
    })
    .await;
    let done = wait_campaign(&h, "Completed", "breaker", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.counts.unwrap().sent, 60);
    let (hook, spare) = (&status.channels[0], &status.channels[1]);
    assert!(spare.sent >= 1, "fallback delivered while open: {spare:?}");
    assert!(hook.sent >= 1, "delivered again once closed: {hook:?}");
    assert_eq!(hook.sent + spare.sent, 60);
    let events = h.events_about("Channel", "hook").await;
    for reason in ["CircuitBreakerOpened", "CircuitBreakerClosed"] {
        assert!(
            events.iter().any(|e| e.reason.as_deref() == Some(reason)),
            "{reason}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn two_campaigns_sharing_a_rate_limited_channel_never_exceed_its_rate() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    create_subscriptions(&h, "shared-a", 8).await;
    create_subscriptions(&h, "shared-b", 8).await;
    // 120 a minute: 2 a second, burst 2.
    webhook_channel_with(
        &h,
        "hook",
        &receiver,
        json!({"rateLimit": {"messagesPerMinute": 120}}),
    )
    .await;
    h.create::<Campaign>(campaign("shared-a", "shared-a", json!({})))
        .await;
    h.create::<Campaign>(campaign("shared-b", "shared-b", json!({})))
        .await;
    for name in ["shared-a", "shared-b"] {
        wait_campaign(&h, "Completed", name, |c| {
            phase(c) == Some(CampaignPhase::Completed)
        })
        .await;
    }
    let mut arrivals: Vec<std::time::Instant> = receiver.requests().iter().map(|r| r.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 16);
    // A token bucket of rate 2/s and burst 2 lets through at most 2 + 2·t in any t seconds
    // (with 50 ms for scheduling).
    for (i, first) in arrivals.iter().enumerate() {
        for (j, last) in arrivals.iter().enumerate().skip(i) {
            let window = last.duration_since(*first).as_secs_f64() + 0.05;
            let allowed = 2.0 + 2.0 * window;
            assert!(
                (j - i + 1) as f64 <= allowed.floor() + 1.0,
                "{} messages in {window:.2}s",
                j - i + 1
            );
        }
    }
    let span = arrivals[15].duration_since(arrivals[0]).as_secs_f64();
    assert!(
        span >= 6.5,
        "16 messages at 2/s after a burst of 2 take 7 s, not {span:.1}"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_operator_role_grants_exactly_what_the_campaign_controllers_use() {
    use flotilla_sandbox::{FaultRule, Verb};
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    create_subscriptions(&h, "rbac", 3).await;
    // A Channel whose Secret exists without the label: looked up once (get).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = h.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "unlabelled"},
                "stringData": {"url": "https://hooks.slack.com/services/x"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "slack"},
        "spec": {"type": "Slack", "slack": {"webhookUrlSecretRef": {"name": "unlabelled", "key": "url"}}},
    }))
    .await;
    // The finalizer patches fail their guard once each: the object is read afresh (get).
    let faults = h.sandbox().faults();
    faults.inject(FaultRule::new(Verb::Patch, "channels").status(422));
    faults.inject(FaultRule::new(Verb::Patch, "campaigns").status(422));
    webhook_channel(&h, "hook", &receiver).await;
    h.create::<Campaign>(campaign("rbac", "rbac", json!({})))
        .await;
    wait_campaign(&h, "Completed", "rbac", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let campaigns = h.api::<Campaign>();
    campaigns.delete("rbac", &Default::default()).await.unwrap();
    wait_for("the campaign to go", CAMPAIGN_WAIT, || async {
        campaigns
            .get_opt("rbac")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(faults.pending(), 0, "every guard failure fired");
    let campaign_resources = |group: &str, resource: &str| {
        (group == "flotilla.dev"
            && (resource.starts_with("channels") || resource.starts_with("campaigns")))
            || (group.is_empty() && (resource == "secrets" || resource == "configmaps"))
    };
    let mut report = h.rbac_report(campaign_resources);
    // ConfigMaps are also the Subscription and OTA controllers' (list, watch, patch).
    report.unused.retain(|u| {
        !matches!(
            u.as_str(),
            "list core/configmaps" | "watch core/configmaps" | "patch core/configmaps"
        )
    });
    assert!(report.denied.is_empty(), "not granted: {:?}", report.denied);
    assert!(
        report.unused.is_empty(),
        "granted, never used by the Campaigns controllers: {:?}",
        report.unused
    );
    // Stronger, by the sandbox's RBAC evaluator: each verb of each rule on these resources,
    // taken out of config/rbac alone, would have refused one of these requests.
    let unneeded: Vec<_> = h
        .rbac_unneeded(campaign_resources)
        .into_iter()
        .filter(|g| {
            !matches!(
                g.to_string().as_str(),
                "list core/configmaps" | "watch core/configmaps" | "patch core/configmaps"
            )
        })
        .collect();
    assert!(
        unneeded.is_empty(),
        "config/rbac grants the Campaigns controllers did not need: {unneeded:#?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_campaign_over_starttls_smtp_sends_one_mail_each_with_its_message_id_and_unsubscribe_headers()
 {
    use common::smtp_sink::SmtpSink;
    let h = start().await;
    // A relay with a private CA: its certificate comes from the Channel's Secret.
    let (server, ca) = SmtpSink::start_with_starttls(Some(("flotilla", "s3cret")));
    let names = create_subscriptions(&h, "mail", 5).await;
    channel_secret(
        &h,
        "smtp",
        json!({"username": "flotilla", "password": "s3cret", "ca.crt": ca}),
    )
    .await;
    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "mail"},
        "spec": {"type": "SMTP", "timeout": "5s", "smtp": {
            "host": "127.0.0.1", "port": server.port, "security": "StartTLS",
            "from": "Acme Cloud <noreply@acme.example>",
            "credentialsSecretRef": {"name": "smtp"},
            "tlsCaSecretRef": {"name": "smtp", "key": "ca.crt"},
        }},
    }))
    .await;
    h.create::<Campaign>(campaign(
        "mail",
        "mail",
        json!({"channels": {"names": ["mail"]}}),
    ))
    .await;
    wait_campaign(&h, "Completed", "mail", |c| {
        phase(c) == Some(CampaignPhase::Completed)
    })
    .await;
    let mails = server.mails();
    let mut to: Vec<String> = mails.iter().flat_map(|m| m.to.clone()).collect();
    to.sort();
    let expected: Vec<String> = names.iter().map(|n| format!("{n}@example.com")).collect();
    assert_eq!(to, expected, "one mail to each");
    let ids: BTreeSet<String> = mails
        .iter()
        .filter_map(|m| m.header("Message-ID"))
        .collect();
    assert_eq!(ids.len(), 5, "a distinct Message-ID each");
    for mail in &mails {
        // The sink takes AUTH only after STARTTLS: every mail went over TLS.
        assert_eq!(mail.authenticated_as.as_deref(), Some("flotilla"));
        let link = mail.header("List-Unsubscribe").unwrap_or_default();
        assert!(link.starts_with("<https://flotilla.example/u/"), "{link}");
        assert_eq!(
            mail.header("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(mail.body().starts_with("Hello Customer"), "{}", mail.body());
    }
    h.stop().await;
}

#[tokio::test]
async fn a_scheduled_campaign_shows_its_preview_before_it_sends() {
    let h = start().await;
    let names = create_subscriptions(&h, "preview", 50).await;
    opt_out(&h, &names[0]).await;
    let receiver = HttpReceiver::start().await;
    webhook_channel(&h, "hook", &receiver).await;
    let start_at = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
    h.create::<Campaign>(campaign(
        "preview",
        "preview",
        json!({
            "audience": {"selector": {"matchLabels": {"audience": "preview"}}, "holdoutPercent": 10},
            "variants": [{"name": "a", "weight": 3}, {"name": "b", "weight": 1}],
            "schedule": {"startAt": start_at.to_string()},
            "throttle": {"messagesPerMinute": 10},
        }),
    ))
    .await;
    let scheduled = wait_campaign(&h, "Scheduled with a preview", "preview", |c| {
        phase(c) == Some(CampaignPhase::Scheduled)
            && c.status.as_ref().is_some_and(|s| s.preview.is_some())
    })
    .await;
    let status = scheduled.status.unwrap();
    let preview = status.preview.unwrap();
    assert_eq!(preview.audience_size, 50);
    assert_eq!(preview.opted_out, 1);
    let split: i64 = preview.variants.iter().map(|v| v.recipients).sum();
    assert_eq!(split + preview.held_out + preview.opted_out, 50);
    assert!(preview.variants[0].recipients > preview.variants[1].recipients);
    // About 44 recipients at 10 a minute: finishing four to five minutes after the start.
    let finish = preview.estimated_finish_at.unwrap().0;
    let hours = finish.duration_since(start_at).as_secs_f64() / 3600.0;
    assert!((0.05..0.1).contains(&hours), "{hours} h");
    assert_eq!(
        status.next_send_at.map(|t| t.0.as_second()),
        Some(start_at.as_second())
    );
    assert!(receiver.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn quiet_hours_hold_every_recipient_until_they_end_and_drop_nobody() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    create_subscriptions(&h, "quiet", 4).await;
    webhook_channel(&h, "hook", &receiver).await;
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let hhmm = |z: &jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
    let start = now
        .checked_sub(jiff::SignedDuration::from_hours(1))
        .unwrap();
    let end = now
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    h.create::<Campaign>(campaign(
        "quiet",
        "quiet",
        json!({"quietHours": {"start": hhmm(&start), "end": hhmm(&end), "defaultTimeZone": "UTC"}}),
    ))
    .await;
    let held = wait_campaign(&h, "Running with a next send", "quiet", |c| {
        phase(c) == Some(CampaignPhase::Running)
            && c.status.as_ref().is_some_and(|s| s.next_send_at.is_some())
    })
    .await;
    let status = held.status.unwrap();
    let next = status.next_send_at.unwrap().0;
    let wait = next.duration_since(jiff::Timestamp::now()).as_secs_f64();
    assert!(
        (3600.0..7300.0).contains(&wait),
        "held until the window ends: {wait} s"
    );
    let counts = status.counts.unwrap();
    assert_eq!((counts.sent, counts.pending, counts.failed), (0, 4, 0));
    assert!(receiver.requests().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn local_time_sending_reaches_each_zone_at_its_own_wall_clock_time() {
    let h = start().await;
    let receiver = HttpReceiver::start().await;
    let names = create_subscriptions(&h, "local", 4).await;
    // Two recipients at UTC+2 (the hour came two hours ago there: sent at the start, late
    // rather than skipped) and two at UTC−3 (the hour is three hours away there).
    let zone_of = |i: usize| if i < 2 { "Etc/GMT-2" } else { "Etc/GMT+3" };
    for (i, name) in names.iter().enumerate() {
        subscriptions(&h)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"contact": {"timeZone": zone_of(i)}}})),
            )
            .await
            .unwrap();
    }
    webhook_channel(&h, "hook", &receiver).await;
    let start_at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    h.create::<Campaign>(campaign(
        "local",
        "local",
        json!({"schedule": {"startAt": start_at.to_string(), "localTime": true}}),
    ))
    .await;
    let running = wait_campaign(&h, "two sent, two waiting", "local", |c| {
        c.status.as_ref().is_some_and(|s| {
            s.counts.as_ref().is_some_and(|n| n.sent == 2) && s.next_send_at.is_some()
        })
    })
    .await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Some(CampaignPhase::Running));
    let due = status.next_send_at.unwrap().0;
    let expected = start_at + jiff::SignedDuration::from_hours(3);
    assert!(
        due.duration_since(expected).abs() < jiff::SignedDuration::from_secs(2),
        "the UTC−3 recipients wait for their own wall-clock time: {due} against {expected}"
    );
    let counts = status.counts.unwrap();
    assert_eq!((counts.sent, counts.pending, counts.failed), (2, 2, 0));
    let received: BTreeSet<String> = received_by_recipient(&receiver).into_keys().collect();
    assert_eq!(received, names[..2].iter().cloned().collect());
    h.stop().await;
}
