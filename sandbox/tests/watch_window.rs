//! Conformance: the retained window of watch events, per resource, as the kube-apiserver's
//! watch cache keeps it. Inside the window a watch replays exactly what it missed; from before
//! it, the watch gets an ERROR event with `410 Expired` (`too old resource version: 4 (9)`), a
//! paginated list whose snapshot left the window gets `410` with a token that continues at the
//! latest version, and kube-runtime's watcher recovers by re-listing.

mod common;

use std::time::Duration;

use common::*;
use flotilla_sandbox::{FaultRule, Sandbox, Verb, WatchWindow};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, VersionMatch,
    WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use serde_json::json;

async fn sandbox_with_window(events: usize) -> Sandbox {
    Sandbox::builder()
        .crds([widget_crd()])
        .watch_window(events)
        .start()
        .await
        .expect("the sandbox starts")
}

fn rv_of(obj: &DynamicObject) -> u64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .expect("stored objects have a numeric resourceVersion")
}

async fn current_rv(api: &Api<DynamicObject>) -> String {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
}

/// Every event of a one-second watch (the server ends it with a bookmark), bookmarks left out.
async fn events_of_short_watch(api: &Api<DynamicObject>, rv: &str) -> Vec<String> {
    let stream = api
        .watch(&WatchParams::default().timeout(1), rv)
        .await
        .expect("the watch starts");
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect())
        .await
        .expect("the server ends a watch at its timeout");
    events
        .into_iter()
        .map(|e| e.expect("every event parses"))
        .filter_map(|e| match e {
            WatchEvent::Added(o) => Some(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => Some(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => Some(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => None,
            WatchEvent::Error(e) => Some(format!("ERROR {} {} {}", e.code, e.reason, e.message)),
        })
        .collect()
}

#[tokio::test]
async fn the_default_window_is_the_apiservers_watch_cache() {
    let sb = Sandbox::start().await.unwrap();
    let window = sb.store().watch_window();
    assert_eq!(window, WatchWindow::apiserver());
    assert_eq!((window.lower(), window.upper()), (100, 102_400));
    // Fresh events are never dropped below the upper bound: 250 creates in a burst are all
    // replayed to a watch from before them.
    let api: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..250 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let stream = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    let events: Vec<_> = stream.collect().await;
    let added = events
        .iter()
        .filter(|e| matches!(e, Ok(WatchEvent::Added(_))))
        .count();
    assert_eq!(added, 250);
}

#[tokio::test]
async fn a_watch_from_before_the_window_gets_an_error_event_410_expired() {
    let sb = sandbox_with_window(5).await;
    let api = widgets(&sb, "default");
    let configmaps: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = current_rv(&api).await;
    let mut created = Vec::new();
    for i in 0..8 {
        // A write elsewhere before each: other resources' events do not count here.
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
        created.push(
            api.create(&PostParams::default(), &widget(&format!("w{i}"), 1))
                .await
                .unwrap(),
        );
    }
    // The window holds the last five widget events; the oldest version a watch can start
    // from is the one just before the first of them (here a ConfigMap's).
    let oldest = rv_of(&created[3]) - 1;
    assert_eq!(
        events_of_short_watch(&api, &rv).await,
        [format!(
            "ERROR 410 Expired too old resource version: {rv} ({oldest})"
        )]
    );
    // From the oldest retained version on, the watch replays.
    let replayed = events_of_short_watch(&api, &oldest.to_string()).await;
    assert_eq!(
        replayed,
        ["ADDED w3", "ADDED w4", "ADDED w5", "ADDED w6", "ADDED w7"]
    );
    // The expiry arrives as a watch event (HTTP 200), as client-go and kube-rs expect.
    assert_eq!(sb.requests().count(Verb::Watch, "widgets"), 2);
}

#[tokio::test]
async fn inside_the_window_a_watch_replays_exactly_the_missed_events() {
    let sb = sandbox_with_window(5).await;
    let api = widgets(&sb, "default");
    let configmaps: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let rv = current_rv(&api).await;
    api.create(&PostParams::default(), &widget("a", 1))
        .await
        .unwrap();
    // Other resources have windows of their own: many writes elsewhere expire nothing here.
    for i in 0..20 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{i}")}})).unwrap();
        configmaps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();
    }
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &widget("b", 1))
        .await
        .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        events_of_short_watch(&api, &rv).await,
        ["ADDED a", "MODIFIED a", "ADDED b", "DELETED a"]
    );
}

#[tokio::test]
async fn a_resource_served_later_has_no_events_from_before_it_existed() {
    let sb = Sandbox::builder().watch_window(5).start().await.unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sb.client());
    let before = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    // Something else changes before the CRD arrives, so that `before` is older than it.
    let configmaps: Api<ConfigMap> = Api::namespaced(sb.client(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "early"}})).unwrap();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(sb.client());
    let crd = crds
        .create(&PostParams::default(), &widget_crd())
        .await
        .unwrap();
    let api = widgets(&sb, "default");
    // The new resource's watch cache starts from a list made when it was established.
    let established = crd
        .metadata
        .resource_version
        .unwrap()
        .parse::<u64>()
        .unwrap()
        - 1;
    assert_eq!(
        events_of_short_watch(&api, &before).await,
        [format!(
            "ERROR 410 Expired too old resource version: {before} ({established})"
        )]
    );
    assert!(
        events_of_short_watch(&api, &established.to_string())
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_list_continues_from_its_snapshot_while_the_snapshot_is_in_the_window() {
    let sb = sandbox_with_window(10).await;
    let api = widgets(&sb, "default");
    for name in ["a", "b", "c", "d"] {
        api.create(&PostParams::default(), &widget(name, 1))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let names = |list: &kube::core::ObjectList<DynamicObject>| -> Vec<String> {
        list.items
            .iter()
            .map(|o| o.metadata.name.clone().unwrap())
            .collect()
    };
    assert_eq!(names(&first), ["a", "b"]);
    let token = first.metadata.continue_.clone().unwrap();
    // Changes after the first page do not show in the rest of the list.
    api.delete("c", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &widget("e", 1))
        .await
        .unwrap();
    api.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 7}})),
    )
    .await
    .unwrap();
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(&rest), ["c", "d"]);
    assert_eq!(rest.items[1].data["spec"]["size"], 1);
    assert_eq!(
        rest.metadata.resource_version,
        first.metadata.resource_version
    );
    assert!(rest.metadata.continue_.is_none());
    // resourceVersionMatch=Exact lists the same snapshot.
    let rv = first.metadata.resource_version.clone().unwrap();
    let exact = api
        .list(&ListParams::default().at(&rv).matching(VersionMatch::Exact))
        .await
        .unwrap();
    assert_eq!(names(&exact), ["a", "b", "c", "d"]);
    assert_eq!(
        exact.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
}

#[tokio::test]
async fn a_list_page_whose_snapshot_left_the_window_is_410_with_a_token_for_the_rest() {
    let sb = sandbox_with_window(3).await;
    let api = widgets(&sb, "default");
    for name in ["a", "b", "c", "d"] {
        api.create(&PostParams::default(), &widget(name, 1))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    for name in ["e", "f", "g"] {
        api.create(&PostParams::default(), &widget(name, 1))
            .await
            .unwrap();
    }
    api.delete("c", &DeleteParams::default()).await.unwrap();
    let err = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect_err("the snapshot of the token is gone");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status.message.starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{}",
        status.message
    );
    // The Status carries a token that continues, inconsistently, at the latest version.
    let inconsistent = status
        .metadata
        .and_then(|m| m.continue_)
        .expect("the 410 carries a continue token");
    let rest = api
        .list(&ListParams::default().continue_token(&inconsistent))
        .await
        .unwrap();
    let names: Vec<_> = rest
        .items
        .iter()
        .map(|o| o.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["d", "e", "f", "g"]);
    assert_ne!(rest.metadata.resource_version.as_deref(), Some(rv.as_str()));
    // An exact list of the expired version is gone too.
    let err = api
        .list(&ListParams::default().at(&rv).matching(VersionMatch::Exact))
        .await
        .expect_err("the version left the window");
    match err {
        kube::Error::Api(s) => assert_eq!(
            (s.code, s.message.as_str()),
            (410, "The resourceVersion for the provided list is too old.")
        ),
        other => panic!("expected 410, got {other:?}"),
    }
}

/// Records watcher events until `wanted` arrives.
async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    wanted: &str,
    seen: &mut Vec<String>,
) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = rx.recv().await {
            seen.push(event.clone());
            if event == wanted {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no {wanted:?} in {seen:?}");
}

#[tokio::test]
async fn kube_runtime_watcher_re_lists_after_missing_more_than_the_window() {
    let sb = sandbox_with_window(3).await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("before", 1))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let handle = tokio::spawn(async move {
        // Errors (the 410 among them) are not terminal: the watcher goes on after them.
        while let Some(event) = stream.next().await {
            let described = match event {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitApply(o)) => {
                    format!("InitApply {}", o.metadata.name.unwrap())
                }
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::Apply(o)) => format!("Apply {}", o.metadata.name.unwrap()),
                Ok(watcher::Event::Delete(o)) => format!("Delete {}", o.metadata.name.unwrap()),
                Err(e) => format!("Error {e:?}"),
            };
            if tx.send(described).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    wait_for(&mut rx, "InitDone", &mut seen).await;
    // Cut the watch and keep it from coming back while more than the window is written.
    sb.faults().inject(
        FaultRule::new(Verb::Watch, "widgets")
            .status(500)
            .times(1000),
    );
    sb.faults().cut_watches();
    eventually(Duration::from_secs(10), || async {
        let failed = sb
            .requests()
            .snapshot()
            .iter()
            .any(|r| r.verb == Verb::Watch && r.status == 500);
        failed.then_some(())
    })
    .await;
    for i in 0..5 {
        api.create(&PostParams::default(), &widget(&format!("missed-{i}"), 1))
            .await
            .unwrap();
    }
    let lists_before = sb.requests().count(Verb::List, "widgets");
    sb.faults().clear();
    // The resumed watch gets 410 and the watcher lists again, finding what it missed.
    wait_for(&mut rx, "InitApply missed-4", &mut seen).await;
    let relisted = seen
        .iter()
        .position(|e| e == "Init")
        .map(|first| seen[first + 1..].iter().any(|e| e == "Init"));
    assert_eq!(relisted, Some(true), "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| e.starts_with("Error") && e.contains("410")),
        "{seen:?}"
    );
    assert_eq!(sb.requests().count(Verb::List, "widgets"), lists_before + 1);
    handle.abort();
}
