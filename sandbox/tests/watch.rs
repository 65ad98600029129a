//! Conformance: watch streams — ADDED/MODIFIED/DELETED/BOOKMARK from a resourceVersion,
//! selector transitions, and 410 Gone once the version has left the retained window.

mod common;

use std::time::Duration;

use common::*;
use flotilla_sandbox::Sandbox;
use futures::{StreamExt, TryStreamExt};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

async fn next_event(
    stream: &mut (
             impl futures::Stream<Item = kube::Result<WatchEvent<kube::api::DynamicObject>>> + Unpin
         ),
) -> WatchEvent<kube::api::DynamicObject> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event arrives")
        .expect("the stream is open")
        .expect("the event parses")
}

fn describe(ev: &WatchEvent<kube::api::DynamicObject>) -> String {
    match ev {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_and_follows() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let list = api.list(&Default::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &widget("a", 1))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED a");
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "MODIFIED a");
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let ev = next_event(&mut stream).await;
    assert_eq!(describe(&ev), "DELETED a");
}

#[tokio::test]
async fn watch_from_zero_starts_with_synthetic_added_events() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("a", 1))
        .await
        .unwrap();
    api.create(&PostParams::default(), &widget("b", 1))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut names = vec![
        describe(&next_event(&mut stream).await),
        describe(&next_event(&mut stream).await),
    ];
    names.sort();
    assert_eq!(names, ["ADDED a", "ADDED b"]);
}

#[tokio::test]
async fn a_watch_with_a_label_selector_sees_objects_enter_and_leave() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let rv = api
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("ring=canary"), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &widget("a", 1))
        .await
        .unwrap();
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"ring": v}}}));
    api.patch("a", &PatchParams::default(), &label("canary"))
        .await
        .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "ADDED a");
    api.patch("a", &PatchParams::default(), &label("stable"))
        .await
        .unwrap();
    assert_eq!(describe(&next_event(&mut stream).await), "DELETED a");
}

#[tokio::test]
async fn bookmarks_carry_the_latest_resource_version() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let rv = api
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    // With a one second timeout the server closes the watch with a final bookmark.
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => {
            assert!(
                b.metadata.resource_version.parse::<u64>().unwrap() >= rv.parse::<u64>().unwrap()
            )
        }
        other => panic!("expected a bookmark, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn watching_from_an_expired_resource_version_is_gone() {
    let sb = Sandbox::builder()
        .crds([widget_crd()])
        .watch_window(3)
        .start()
        .await
        .unwrap();
    let api = widgets(&sb, "default");
    let rv = api
        .list(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    for i in 0..5 {
        api.create(&PostParams::default(), &widget(&format!("w{i}"), 1))
            .await
            .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.contains("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected 410 Gone, got {}", describe(&other)),
    }
}

#[tokio::test]
async fn kube_runtime_watcher_recovers_from_cut_and_expired_watches() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher(api.clone(), watcher::Config::default()).applied_objects();
    let handle = tokio::spawn(async move {
        let mut stream = stream.boxed();
        // A 410 comes out as an error item; the watcher goes on after it.
        while let Some(item) = stream.next().await {
            if let Ok(obj) = item {
                let _ = tx.send(obj.metadata.name.unwrap());
            }
        }
    });
    api.create(&PostParams::default(), &widget("before", 1))
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), "before");
    sb.faults().cut_watches();
    api.create(&PostParams::default(), &widget("after-cut", 1))
        .await
        .unwrap();
    let name = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = rx.recv().await.unwrap();
            if n == "after-cut" {
                return n;
            }
        }
    })
    .await
    .expect("the watcher resumes after a cut");
    assert_eq!(name, "after-cut");
    // A write elsewhere moves the server past the watcher's version, which the expiry then
    // leaves behind: the watcher's resumed watch gets 410 and it lists again.
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(sb.client(), "default");
    let cm: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).unwrap();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let lists = sb.requests().count(flotilla_sandbox::Verb::List, "widgets");
    sb.expire_watches();
    api.create(&PostParams::default(), &widget("after-expiry", 1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if rx.recv().await.unwrap() == "after-expiry" {
                return;
            }
        }
    })
    .await
    .expect("the watcher re-lists after 410 Gone");
    assert_eq!(
        sb.requests().count(flotilla_sandbox::Verb::List, "widgets"),
        lists + 1
    );
    handle.abort();
}

#[tokio::test]
async fn kube_runtime_watcher_with_streaming_lists_gets_initial_events_then_changes() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("existing", 1))
        .await
        .unwrap();
    let config = watcher::Config::default().streaming_lists();
    let mut stream = watcher(api.clone(), config).boxed();
    // sendInitialEvents: the existing object arrives as InitApply, then InitDone once the
    // server sends the bookmark annotated k8s.io/initial-events-end.
    let mut initial = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .expect("an event arrives")
            .unwrap()
            .unwrap();
        match event {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => initial.push(o.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected event before InitDone: {other:?}"),
        }
    }
    assert_eq!(initial, ["existing"]);
    api.create(&PostParams::default(), &widget("later", 1))
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("an event arrives")
        .unwrap()
        .unwrap();
    match event {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("later")),
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_with_send_initial_events_false_starts_from_now_without_the_current_state() {
    let sb = sandbox().await;
    let api = widgets(&sb, "default");
    api.create(&PostParams::default(), &widget("existing", 1))
        .await
        .unwrap();
    let request = http::Request::get(
        "/apis/test.flotilla.dev/v1/namespaces/default/widgets?watch=true&resourceVersion=0\
         &sendInitialEvents=false&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    .body(Vec::new())
    .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), sb.client().request_text(request))
        .await
        .expect("the watch ends at its timeout")
        .unwrap();
    let types: Vec<String> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["type"].to_string())
        .collect();
    assert_eq!(types, ["\"BOOKMARK\""], "{text}");
}
