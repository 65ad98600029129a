//! `docs/metrics.md` against the operator's `/metrics`: with every controller running over
//! `config/samples/` (Plans, Subscriptions, a Log Channel and a Campaign sending through it, a
//! FirmwareRelease and its rollout), every metric family the table documents is served, with
//! the documented type, and every family served is documented.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla::runtime::{Config, Operator, Shutdown, SystemClock, admin};
use flotilla_sandbox::Sandbox;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::{Api, Client};
use serde::Deserialize as _;

/// `name → type` of the families in the docs' table (rows like "| `name` | counter | ...").
fn documented() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/metrics.md");
    text.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = *cells.get(2)?;
            (name.starts_with("flotilla_") && ["counter", "gauge", "histogram"].contains(&kind))
                .then(|| (name.to_owned(), kind.to_owned()))
        })
        .collect()
}

/// `name → type` of the families in a text exposition (its `# TYPE` lines).
fn served(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// The objects of `config/samples/`, created through the API.
async fn apply_samples(client: &Client) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/samples");
    let mut documents = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("config/samples")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("a sample");
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document).expect("YAML");
            if !value.is_null() {
                documents.push(value);
            }
        }
    }
    // Namespaces first, then Plans: what the rest lives in or refers to.
    let order = |kind: &str| match kind {
        "Namespace" => 0,
        "Plan" => 1,
        _ => 2,
    };
    documents.sort_by_key(|d| order(d["kind"].as_str().unwrap_or_default()));
    for document in documents {
        let object: DynamicObject = serde_json::from_value(document).expect("an object");
        let types = object.types.clone().expect("apiVersion and kind");
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let plural = match types.kind.as_str() {
            "Namespace" => "namespaces".to_owned(),
            kind => format!("{}s", kind.to_lowercase()),
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &types.kind),
            &plural,
        );
        let api: Api<DynamicObject> = match &object.metadata.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", types.kind, object.metadata.name));
    }
}

#[tokio::test]
async fn every_documented_family_is_served_and_every_served_family_is_documented() {
    let documented = documented();
    assert!(
        documented.len() >= 10,
        "the docs table was not read: {documented:?}"
    );
    let sandbox = Sandbox::builder()
        .crds(flotilla_crds::all_crds())
        .start()
        .await
        .expect("sandbox");
    let client = sandbox.client();
    let operator = Operator::new(
        client.clone(),
        Config::default(),
        Arc::new(SystemClock),
        Shutdown::new(),
    )
    .expect("operator");
    let (address, server) = admin::serve("127.0.0.1:0".parse().unwrap(), operator.admin_state())
        .await
        .expect("admin server");
    let running = operator.clone();
    let controllers = tokio::spawn(async move { flotilla::run_controllers(&running).await });
    apply_samples(&client).await;

    let url = format!("http://{address}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let served = loop {
        let text = reqwest::get(&url)
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("a body");
        let served = served(&text);
        let missing: Vec<_> = documented
            .keys()
            .filter(|name| !served.contains_key(*name))
            .collect();
        if missing.is_empty() {
            break served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "documented but not served after 60 s: {missing:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let undocumented: Vec<_> = served
        .keys()
        .filter(|name| name.starts_with("flotilla_") && !documented.contains_key(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "served but not in docs/metrics.md: {undocumented:?}"
    );
    for (name, kind) in &documented {
        assert_eq!(&served[name], kind, "the type of {name}");
    }
    operator.shutdown.trigger();
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    let _ = server.await;
}
