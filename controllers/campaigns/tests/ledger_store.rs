//! The delivery ledger against the sandbox API server: written, read back by a fresh store,
//! updated under resourceVersion preconditions, refusing foreign ConfigMaps, completing a
//! start cut short — and what it costs in API writes.

use std::time::Duration;

use flotilla_campaigns::campaign::allocation::Group;
use flotilla_campaigns::ledger::store::{LedgerPart, shard_name};
use flotilla_campaigns::ledger::{
    Audience, DeliveryLedger, DeliveryResult, FlushPolicy, LedgerError, LedgerStore, Recipient,
};
use flotilla_crds::campaign::Campaign;
use flotilla_sandbox::Sandbox;
use flotilla_sandbox::faults::{FaultRule, Verb};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

const NAMESPACE: &str = "shop";

async fn sandbox() -> (Sandbox, Client) {
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .expect("sandbox starts");
    let client = sandbox.client();
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    (sandbox, client)
}

async fn campaign(client: &Client, name: &str) -> Campaign {
    let campaign: Campaign = serde_json::from_value(json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Campaign",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "audience": {"holdoutPercent": 10},
            "channels": {"names": ["mail", "slack"]},
            "message": {"body": "Hello {{ subscription.contact.name }}"},
        },
    }))
    .unwrap();
    Api::<Campaign>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &campaign)
        .await
        .expect("campaign")
}

fn recipients(n: usize, tag: &str) -> Vec<Recipient> {
    (0..n)
        .map(|i| Recipient {
            subscription: format!("customer-{i:06}"),
            uid: format!("uid-{tag}-{i:06}"),
            group: if i % 10 == 0 {
                Group::HeldOut
            } else {
                Group::Variant(i % 2)
            },
            email: Some(format!("ops@customer-{i:06}.example.com")),
            name: Some(format!("Customer {i}")),
            time_zone: Some("Europe/Berlin".into()),
        })
        .collect()
}

fn snapshot(
    n: usize,
    tag: &str,
) -> impl FnOnce() -> (Audience, Vec<flotilla_runtime::shards::Shard>) {
    let list = recipients(n, tag);
    move || Audience::from_recipients(list)
}

fn policy() -> FlushPolicy {
    FlushPolicy {
        max_unflushed: 200,
        max_delay: Duration::from_secs(5),
    }
}

fn writes(sandbox: &Sandbox) -> usize {
    [Verb::Create, Verb::Update, Verb::Patch]
        .into_iter()
        .map(|verb| sandbox.requests().count(verb, "configmaps"))
        .sum()
}

/// Sends every claim (channel 1 for odd recipients), recording and flushing as a sender does.
async fn send_all(
    store: &LedgerStore,
    ledger: &mut DeliveryLedger,
    batch: usize,
    limit: usize,
) -> usize {
    let mut now = Timestamp::from_second(1_800_000_000).unwrap();
    let mut sent = 0;
    while sent < limit {
        let claims = store
            .claim(ledger, batch.min(limit - sent), now)
            .await
            .unwrap();
        if claims.is_empty() {
            break;
        }
        for claim in claims {
            let channel = (claim.recipient % 2) as u8;
            ledger
                .record(claim.recipient, DeliveryResult::Sent { channel }, now)
                .unwrap();
            sent += 1;
        }
        now += Duration::from_secs(1);
        store.flush_if_due(ledger, now).await.unwrap();
    }
    store.flush(ledger).await.unwrap();
    sent
}

#[tokio::test]
async fn five_thousand_recipients_survive_a_restart_at_few_writes_a_message() {
    let (sandbox, client) = sandbox().await;
    let promo = campaign(&client, "promo").await;
    let store = LedgerStore::new(client.clone(), &promo, policy());
    let mut ledger = store.open(snapshot(5_000, "a")).await.unwrap();
    let shards = ledger.audience().shard_count();
    assert_eq!(shards, 2, "5,000 recipients take 2 audience shards");
    assert_eq!(
        writes(&sandbox),
        2 * shards,
        "the start writes each shard once"
    );

    // Half the audience, then a restart: a fresh store reads the same ledger back.
    let before = writes(&sandbox);
    let sent = send_all(&store, &mut ledger, 100, 2_250).await;
    let per_message = (writes(&sandbox) - before) as f64 / sent as f64;
    assert!(
        per_message <= 0.02,
        "{} writes for {sent} messages",
        writes(&sandbox) - before
    );
    let fresh = LedgerStore::new(client.clone(), &promo, policy());
    let mut reloaded = fresh.load().await.unwrap().expect("a committed ledger");
    assert_eq!(reloaded.audience(), ledger.audience());
    assert_eq!(reloaded.counts(), ledger.counts());
    assert_eq!(reloaded.counts().all.sent, 2_250);

    // Later Subscription changes do not matter: open() keeps the persisted audience.
    let mut reopened = fresh.open(snapshot(10, "changed")).await.unwrap();
    assert_eq!(reopened.audience(), ledger.audience());
    let rest = send_all(&fresh, &mut reopened, 100, usize::MAX).await;
    assert_eq!(rest, 4_500 - 2_250);
    reloaded = fresh.load().await.unwrap().unwrap();
    assert!(reloaded.is_finished());
    let counts = reloaded.counts();
    assert_eq!((counts.all.sent, counts.held_out), (4_500, 500));
    assert_eq!(counts.channels[0].0 + counts.channels[1].0, 4_500);
    let per_message = (writes(&sandbox) - before) as f64 / 4_500.0;
    println!("writes per message: {per_message:.4}");
    assert!(per_message <= 0.02, "{per_message} writes a message");

    // The ConfigMaps are the Campaign's.
    let config_map = Api::<ConfigMap>::namespaced(client, NAMESPACE)
        .get(&shard_name("promo", LedgerPart::Progress, 0))
        .await
        .unwrap();
    let owner = &config_map.metadata.owner_references.unwrap()[0];
    assert_eq!(Some(&owner.uid), promo.metadata.uid.as_ref());
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
}

#[tokio::test]
async fn a_second_writer_gets_a_conflict_and_reloads() {
    let (_sandbox, client) = sandbox().await;
    let promo = campaign(&client, "promo").await;
    let store = LedgerStore::new(client.clone(), &promo, policy());
    let mut first = store.open(snapshot(500, "a")).await.unwrap();
    let mut second = store.load().await.unwrap().unwrap();
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let claims = store.claim(&mut first, 50, now).await.unwrap();
    assert_eq!(claims.len(), 50);
    let error = store.claim(&mut second, 50, now).await.unwrap_err();
    assert!(
        matches!(&error, LedgerError::Conflict { name } if name == "promo-progress-0"),
        "{error}"
    );
    // Reloaded, the second writer sees the first one's claims and hands them out again.
    let mut second = store.load().await.unwrap().unwrap();
    let again = store.claim(&mut second, 50, now).await.unwrap();
    assert_eq!(
        again,
        claims
            .iter()
            .cloned()
            .map(|mut c| {
                c.resent = true;
                c
            })
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_foreign_configmap_of_a_shard_name_is_refused_and_left_alone() {
    let (_sandbox, client) = sandbox().await;
    let promo = campaign(&client, "promo").await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    let foreign: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "promo-audience-1"},
        "data": {"mine": "yes"},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let store = LedgerStore::new(client.clone(), &promo, policy());
    let error = store.open(snapshot(5_000, "a")).await.unwrap_err();
    assert!(
        matches!(&error, LedgerError::NameTaken { name, earlier_campaign: false } if name == "promo-audience-1"),
        "{error}"
    );
    assert_eq!(error.class(), flotilla_runtime::ErrorClass::Permanent);
    let kept = config_maps.get("promo-audience-1").await.unwrap();
    assert_eq!(kept.data, foreign.data);
    // Nothing committed: a load finds no ledger.
    assert!(store.load().await.unwrap().is_none());
}

#[tokio::test]
async fn a_start_cut_short_is_written_again_from_a_fresh_snapshot() {
    let (sandbox, client) = sandbox().await;
    let promo = campaign(&client, "promo").await;
    let store = LedgerStore::new(client.clone(), &promo, policy());
    // The third create fails: some shards are written, the commit (progress 0) is not.
    sandbox.faults().inject(
        FaultRule::new(Verb::Create, "configmaps")
            .status(500)
            .times(1),
    );
    store
        .open(snapshot(5_000, "old"))
        .await
        .expect_err("the start is cut short");
    let written = sandbox.requests().count(Verb::Create, "configmaps");
    assert!(written > 1, "{written} creates");
    assert!(store.load().await.unwrap().is_none(), "not committed");

    // The next start snapshots again (the world changed) and overwrites what it owns.
    let ledger = store.open(snapshot(4_000, "new")).await.unwrap();
    let fresh = LedgerStore::new(client, &promo, policy());
    let loaded = fresh.load().await.unwrap().unwrap();
    assert_eq!(loaded.audience(), ledger.audience());
    assert_eq!(loaded.audience().recipients().len(), 4_000);
    assert_eq!(loaded.audience().recipients()[1].uid, "uid-new-000001");
    assert_eq!(loaded.counts().all.pending, 3_600);
}

#[tokio::test]
async fn a_damaged_shard_is_named_by_its_configmap() {
    let (_sandbox, client) = sandbox().await;
    let promo = campaign(&client, "promo").await;
    let store = LedgerStore::new(client.clone(), &promo, policy());
    store.open(snapshot(5_000, "a")).await.unwrap();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    let damage = |name: &'static str, key: &'static str| {
        let config_maps = config_maps.clone();
        async move {
            let mut config_map = config_maps.get(name).await.unwrap();
            let data = config_map.data.as_mut().unwrap();
            let value = data.get_mut(key).unwrap();
            value.replace_range(0..1, "x");
            config_maps
                .replace(name, &PostParams::default(), &config_map)
                .await
                .unwrap()
        }
    };
    let original = config_maps.get("promo-progress-1").await.unwrap();
    damage("promo-progress-1", "states").await;
    let error = store.load().await.unwrap_err();
    assert!(matches!(error, LedgerError::Progress { .. }), "{error}");
    assert_eq!(error.config_map(), Some("promo-progress-1"));
    let mut restored = original.clone();
    restored.metadata.resource_version = None;
    config_maps
        .replace("promo-progress-1", &PostParams::default(), &restored)
        .await
        .unwrap();
    assert!(store.load().await.unwrap().is_some());
    damage("promo-audience-1", "lines").await;
    let error = store.load().await.unwrap_err();
    assert!(matches!(error, LedgerError::Audience { .. }), "{error}");
    assert_eq!(error.config_map(), Some("promo-audience-1"));
    assert_eq!(error.class(), flotilla_runtime::ErrorClass::Permanent);
}

#[tokio::test]
async fn shards_of_an_earlier_campaign_of_the_same_name_are_waited_for() {
    let (_sandbox, client) = sandbox().await;
    let first = campaign(&client, "promo").await;
    LedgerStore::new(client.clone(), &first, policy())
        .open(snapshot(50, "a"))
        .await
        .unwrap();
    // The same name, another UID: as if deleted and re-created before the collector ran.
    let mut second = first.clone();
    second.metadata.uid = Some("another-uid".into());
    let error = LedgerStore::new(client.clone(), &second, policy())
        .open(snapshot(50, "b"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            LedgerError::NameTaken {
                earlier_campaign: true,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.class(), flotilla_runtime::ErrorClass::Transient);
    // The first campaign's ledger is untouched.
    let kept = LedgerStore::new(client, &first, policy())
        .load()
        .await
        .unwrap();
    assert_eq!(kept.unwrap().audience().recipients()[0].uid, "uid-a-000000");
}
