//! Conformance: events.k8s.io/v1 and core/v1 Events are the same objects, as on a real
//! cluster, so Events a controller records with kube-runtime's Recorder show up in
//! `kubectl describe` (core/v1 with involvedObject field selectors).

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

#[tokio::test]
async fn recorder_events_are_visible_as_core_events_with_field_selectors() {
    let sb = sandbox().await;
    let reporter = Reporter {
        controller: "flotilla".into(),
        instance: Some("flotilla-0".into()),
    };
    let recorder = Recorder::new(sb.client(), reporter);
    let regarding = ObjectReference {
        api_version: Some("test.flotilla.dev/v1".into()),
        kind: Some("Widget".into()),
        name: Some("sprocket".into()),
        namespace: Some("default".into()),
        uid: Some("0b6a2c5e-0000-4000-8000-000000000001".into()),
        ..Default::default()
    };
    recorder
        .publish(
            &Event {
                type_: EventType::Warning,
                reason: "InUse".into(),
                note: Some("still used by 2 subscriptions".into()),
                action: "Delete".into(),
                secondary: None,
            },
            &regarding,
        )
        .await
        .unwrap();

    let core: Api<CoreEvent> = Api::namespaced(sb.client(), "default");
    let selected = core
        .list(
            &ListParams::default()
                .fields("involvedObject.kind=Widget,involvedObject.name=sprocket"),
        )
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    let event = &selected.items[0];
    assert_eq!(
        event.message.as_deref(),
        Some("still used by 2 subscriptions")
    );
    assert_eq!(event.reason.as_deref(), Some("InUse"));
    assert_eq!(event.reporting_component.as_deref(), Some("flotilla"));
    let other = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .unwrap();
    assert!(other.items.is_empty());

    // The same object through events.k8s.io, patched there and read back through core.
    let v1: Api<EventV1> = Api::namespaced(sb.client(), "default");
    let name = event.metadata.name.clone().unwrap();
    let via_v1 = v1.get(&name).await.unwrap();
    assert_eq!(via_v1.regarding.unwrap().name.as_deref(), Some("sprocket"));
    v1.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"note": "now unused"})),
    )
    .await
    .unwrap();
    assert_eq!(
        core.get(&name).await.unwrap().message.as_deref(),
        Some("now unused")
    );
}
