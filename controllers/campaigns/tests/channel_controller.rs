//! The Channel controller against the sandbox, through the real `Controller`: readiness from
//! the configuration and its Secrets, reacting to Secrets created or changed later, and a
//! deletion held while live campaigns use the Channel.

use std::sync::Arc;

use flotilla_campaigns::channel::secrets::CHANNEL_SECRET_LABEL;
use flotilla_campaigns::channel::status::{channel_reasons, event_reasons};
use flotilla_crds::condition::{find_condition, reasons, types};
use flotilla_crds::{Campaign, Channel, ChannelPhase, FINALIZER};
use flotilla_runtime::testing::wait_for;
use flotilla_testkit::{Harness, Spawn, WAIT};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn start() -> Harness {
    let spawn: Spawn = Arc::new(|operator| {
        Box::pin(async move {
            flotilla_campaigns::run(
                &operator,
                flotilla_campaigns::Selection {
                    channel: true,
                    campaign: false,
                },
                flotilla_campaigns::Settings::default(),
            )
            .await;
        })
    });
    let h = Harness::start(spawn).await;
    h.ready().await;
    h
}

/// Waits until Channel `name` satisfies `check`; returns it.
async fn wait_channel(
    h: &Harness,
    what: &str,
    name: &str,
    check: impl Fn(&Channel) -> bool,
) -> Channel {
    h.wait_object(what, name, WAIT, check).await
}

fn phase(channel: &Channel) -> Option<ChannelPhase> {
    channel.status.as_ref().and_then(|s| s.phase)
}

fn ready(channel: &Channel) -> (String, String, String) {
    let condition = channel
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, types::READY))
        .expect("a Ready condition");
    (
        condition.status.clone(),
        condition.reason.clone(),
        condition.message.clone(),
    )
}

fn slack(name: &str, secret: &str) -> serde_json::Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": name},
        "spec": {"type": "Slack", "slack": {"webhookUrlSecretRef": {"name": secret, "key": "url"}}},
    })
}

fn secret(name: &str, labelled: bool, data: &[(&str, &str)]) -> serde_json::Value {
    let labels = if labelled {
        json!({ CHANNEL_SECRET_LABEL: "true" })
    } else {
        json!({})
    };
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "labels": labels},
        "stringData": data,
    })
}

#[tokio::test]
async fn a_log_channel_is_ready_at_once_with_an_event() {
    let h = start().await;
    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "trial-log"}, "spec": {"type": "Log"},
    }))
    .await;
    let channel = wait_channel(&h, "Ready", "trial-log", |c| {
        phase(c) == Some(ChannelPhase::Ready)
    })
    .await;
    assert_eq!(ready(&channel).0, "True");
    let status = channel.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, channel.metadata.generation);
    assert!(
        channel
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    );
    let events = wait_for("the ChannelReady Event", WAIT, || {
        let h = &h;
        async move {
            let events = h.events_about("Channel", "trial-log").await;
            events
                .iter()
                .any(|e| e.reason.as_deref() == Some(event_reasons::CHANNEL_READY))
                .then_some(events)
        }
    })
    .await;
    assert!(events.is_ok(), "{events:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_channel_waits_for_its_secret_and_follows_its_changes() {
    let h = start().await;
    h.create::<Channel>(slack("alerts", "slack-hook")).await;
    let missing = wait_channel(&h, "NotReady", "alerts", |c| {
        phase(c) == Some(ChannelPhase::NotReady)
    })
    .await;
    assert_eq!(
        ready(&missing),
        (
            "False".into(),
            channel_reasons::SECRET_NOT_FOUND.into(),
            r#"Secret "slack-hook" not found"#.into()
        )
    );

    // Created later, labelled: the Channel becomes Ready without waiting for a resync.
    h.create::<Secret>(secret(
        "slack-hook",
        true,
        &[("url", "https://hooks.slack.com/services/T0/B0/x")],
    ))
    .await;
    wait_channel(&h, "Ready once the Secret exists", "alerts", |c| {
        phase(c) == Some(ChannelPhase::Ready)
    })
    .await;

    // A change that breaks the value is seen too.
    h.api::<Secret>()
        .patch(
            "slack-hook",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"url": "http://plain.example.com/hook"}})),
        )
        .await
        .unwrap();
    let broken = wait_channel(&h, "NotReady after the change", "alerts", |c| {
        phase(c) == Some(ChannelPhase::NotReady)
    })
    .await;
    assert_eq!(ready(&broken).1, channel_reasons::SECRET_INVALID);
    assert!(
        ready(&broken).2.contains("not an https URL"),
        "{:?}",
        ready(&broken)
    );
    h.stop().await;
}

#[tokio::test]
async fn an_unlabelled_secret_is_named_and_labelling_it_is_enough() {
    let h = start().await;
    h.create::<Secret>(secret(
        "hook",
        false,
        &[("url", "https://hooks.slack.com/services/T0/B0/y")],
    ))
    .await;
    h.create::<Channel>(slack("ops", "hook")).await;
    let unlabelled = wait_channel(&h, "NotReady", "ops", |c| {
        phase(c) == Some(ChannelPhase::NotReady)
    })
    .await;
    let (_, reason, message) = ready(&unlabelled);
    assert_eq!(reason, channel_reasons::SECRET_NOT_LABELLED);
    assert!(message.contains(CHANNEL_SECRET_LABEL), "{message}");
    h.api::<Secret>()
        .patch(
            "hook",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {CHANNEL_SECRET_LABEL: "true"}}})),
        )
        .await
        .unwrap();
    wait_channel(&h, "Ready once labelled", "ops", |c| {
        phase(c) == Some(ChannelPhase::Ready)
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn a_webhook_url_that_is_not_http_is_refused_by_the_api() {
    let h = start().await;
    let channel: Channel = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "bad"},
        "spec": {"type": "Webhook", "webhook": {"url": "ftp://example.com/hook"}},
    }))
    .unwrap();
    let error = h
        .api::<Channel>()
        .create(&PostParams::default(), &channel)
        .await
        .expect_err("the schema refuses an ftp URL");
    let message = error.to_string();
    assert!(message.contains("spec.webhook.url"), "{message}");
    assert!(message.contains("http or https"), "{message}");
    h.stop().await;
}

#[tokio::test]
async fn a_channel_in_use_is_deleted_only_once_no_live_campaign_uses_it() {
    let h = start().await;
    h.create::<Channel>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
        "metadata": {"name": "mail-log"}, "spec": {"type": "Log"},
    }))
    .await;
    wait_channel(&h, "Ready", "mail-log", |c| {
        phase(c) == Some(ChannelPhase::Ready)
    })
    .await;
    h.create::<Campaign>(json!({
        "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
        "metadata": {"name": "launch"},
        "spec": {"audience": {}, "channels": {"names": ["mail-log"]},
                 "message": {"body": "We launched"}},
    }))
    .await;
    wait_channel(&h, "InUse", "mail-log", |c| {
        c.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, types::IN_USE))
            .is_some_and(|c| c.status == "True")
    })
    .await;
    h.api::<Channel>()
        .delete("mail-log", &DeleteParams::default())
        .await
        .unwrap();
    let held = wait_channel(&h, "Terminating", "mail-log", |c| {
        phase(c) == Some(ChannelPhase::Terminating)
    })
    .await;
    let in_use = find_condition(&held.status.as_ref().unwrap().conditions, types::IN_USE).unwrap();
    assert_eq!(in_use.reason, reasons::DELETION_BLOCKED);
    assert!(in_use.message.ends_with(": launch"), "{}", in_use.message);

    h.api::<Campaign>()
        .delete("launch", &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait_for("the Channel to go", WAIT, || {
        let api = h.api::<Channel>();
        async move {
            api.get_opt("mail-log")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        }
    })
    .await;
    assert!(gone.is_ok(), "{gone:?}");
    h.stop().await;
}
