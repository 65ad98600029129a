//! A campaign as a platform team sends one: three Subscriptions on the sample starter Plan
//! become Active, a Webhook Channel points at a receiver in this process (the operator runs in
//! this process too, on the sandbox or beside a real cluster, so it reaches the receiver), and
//! a Campaign to those Subscriptions completes with exactly one message each. Then everything
//! is deleted again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use flotilla::testing::wait_for;
use flotilla_crds::subscription::SubscriptionPhase;
use flotilla_crds::{Campaign, CampaignPhase, Channel, ChannelPhase, Plan, Subscription};
use flotilla_e2e::{Environment, FIELD_MANAGER, samples_of_kind, step_timeout};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

/// Idempotency-Key → how many times it arrived.
type Received = Arc<Mutex<BTreeMap<String, usize>>>;

async fn receiver() -> anyhow::Result<(String, Received)> {
    let received: Received = Arc::default();
    let seen = Arc::clone(&received);
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let seen = Arc::clone(&seen);
        async move {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            *seen.lock().unwrap().entry(key).or_default() += 1;
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_campaign_sends_one_message_to_each_subscription_and_completes() -> anyhow::Result<()> {
    let env = Environment::start().await?;
    let timeout = step_timeout(&env) * 4;
    let run = env.name("run");

    let mut plan = samples_of_kind("Plan")?
        .into_iter()
        .find(|p| p["metadata"]["name"] == "starter")
        .expect("the starter sample Plan");
    let plan_name = env.name("starter");
    plan["metadata"] = json!({ "name": plan_name });
    env.apply::<Plan>(&plan).await?;

    let subscriptions: Api<Subscription> = Api::all(env.client.clone());
    let mut names = Vec::new();
    for i in 0..3 {
        let name = env.name(&format!("reader-{i}"));
        env.apply::<Subscription>(&json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Subscription",
            "metadata": {"name": name, "labels": {"flotilla.dev/e2e-run": run}},
            "spec": {
                "plan": plan_name,
                "owners": [{"kind": "User", "name": format!("{name}@example.com")}],
                "contact": {"name": format!("Reader {i}"), "email": format!("{name}@example.com")},
                "namespaces": [name],
                "deletionPolicy": "Delete",
            },
        }))
        .await?;
        names.push(name);
    }
    for name in &names {
        wait_for(format!("Subscription {name} Active"), timeout, || async {
            let status = subscriptions.get_opt(name).await.ok().flatten()?.status?;
            (status.phase == Some(SubscriptionPhase::Active)).then_some(())
        })
        .await?;
    }

    let namespace = env.name("news");
    Api::<Namespace>::all(env.client.clone())
        .patch(
            &namespace,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
            })),
        )
        .await?;
    let (url, received) = receiver().await?;
    let channels: Api<Channel> = Api::namespaced(env.client.clone(), &namespace);
    channels
        .patch(
            "hook",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Channel",
                "metadata": {"name": "hook", "namespace": namespace},
                "spec": {"type": "Webhook", "webhook": {"url": url}},
            })),
        )
        .await?;
    wait_for("Channel hook Ready", timeout, || async {
        let status = channels.get_opt("hook").await.ok().flatten()?.status?;
        (status.phase == Some(ChannelPhase::Ready)).then_some(())
    })
    .await?;

    let campaigns: Api<Campaign> = Api::namespaced(env.client.clone(), &namespace);
    campaigns
        .patch(
            "hello",
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(json!({
                "apiVersion": "flotilla.dev/v1alpha1", "kind": "Campaign",
                "metadata": {"name": "hello", "namespace": namespace},
                "spec": {
                    "audience": {"selector": {"matchLabels": {"flotilla.dev/e2e-run": run}}},
                    "channels": {"names": ["hook"]},
                    "message": {"subject": "Hello", "body": "Hello {{ subscription.contact.name }}"},
                    "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
                    "schedule": {"startAt": "2020-01-01T00:00:00Z"},
                },
            })),
        )
        .await?;
    let done = wait_for("Campaign hello Completed", timeout, || async {
        let status = campaigns.get_opt("hello").await.ok().flatten()?.status?;
        (status.phase == Some(CampaignPhase::Completed)).then_some(status)
    })
    .await?;
    let counts = done.counts.clone().unwrap_or_default();
    assert_eq!(
        (counts.targeted, counts.sent, counts.failed, counts.pending),
        (3, 3, 0, 0)
    );
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        3,
        "one distinct message id per recipient: {received:?}"
    );
    assert!(
        received.values().all(|n| *n == 1),
        "nobody twice: {received:?}"
    );
    assert_eq!(done.variants.iter().map(|v| v.sent).sum::<i64>(), 3);

    // Clean up: the Campaign (its ledger ConfigMaps are owned by it), the Channel, the
    // Subscriptions (their namespaces go with them), the Plan and the namespace.
    campaigns.delete("hello", &DeleteParams::default()).await?;
    wait_for("Campaign hello gone", timeout, || async {
        campaigns
            .get_opt("hello")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    channels.delete("hook", &DeleteParams::default()).await?;
    for name in &names {
        subscriptions.delete(name, &DeleteParams::default()).await?;
        env.wait_until_gone::<Subscription>(name).await?;
    }
    Api::<Plan>::all(env.client.clone())
        .delete(&plan_name, &DeleteParams::default())
        .await?;
    env.wait_until_gone::<Plan>(&plan_name).await?;
    Api::<Namespace>::all(env.client.clone())
        .delete(&namespace, &DeleteParams::default())
        .await?;
    env.stop().await
}
