//! `events.k8s.io/v1` Events are the same objects as core `v1` Events, as on a real cluster:
//! the sandbox stores core Events and converts at the events.k8s.io endpoints. kube-runtime's
//! `Recorder` writes events.k8s.io/v1; `kubectl describe` reads core/v1 with field selectors on
//! `involvedObject`. Field mapping as in Kubernetes' `pkg/apis/events/v1` conversion.

use serde_json::{Map, Value};

/// Field selectors core/v1 Events accept besides `metadata.name` and `metadata.namespace`.
pub const CORE_SELECTABLE_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "type",
];

/// (events.k8s.io/v1 field, core/v1 field) pairs that only change name.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// An events.k8s.io/v1 Event as the core/v1 Event it is stored as.
pub fn to_core(event: &Value) -> Value {
    let mut out = rename(event, |k| {
        RENAMED
            .iter()
            .find(|(v1, _)| *v1 == k)
            .map(|(_, core)| *core)
    });
    if let Some(o) = out.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        if !o.contains_key("source") {
            // Older readers (kubectl's "From" column) look at source.component.
            let mut source = Map::new();
            if let Some(c) = o.get("reportingComponent").cloned() {
                source.insert("component".into(), c);
            }
            if let Some(h) = o.get("reportingInstance").cloned() {
                source.insert("host".into(), h);
            }
            if !source.is_empty() {
                o.insert("source".into(), Value::Object(source));
            }
        }
    }
    out
}

/// A stored core/v1 Event as events.k8s.io/v1 shows it.
pub fn to_events_v1(event: &Value) -> Value {
    let mut out = rename(event, |k| {
        RENAMED
            .iter()
            .find(|(_, core)| *core == k)
            .map(|(v1, _)| *v1)
    });
    if let Some(o) = out.as_object_mut() {
        o.insert("apiVersion".into(), "events.k8s.io/v1".into());
    }
    out
}

fn rename(event: &Value, map: impl Fn(&str) -> Option<&'static str>) -> Value {
    let Some(obj) = event.as_object() else {
        return event.clone();
    };
    let renamed: Map<String, Value> = obj
        .iter()
        .map(|(k, v)| {
            (
                map(k).map(str::to_string).unwrap_or_else(|| k.clone()),
                v.clone(),
            )
        })
        .collect();
    Value::Object(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_v1_round_trips_through_core() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "gold.1", "namespace": "default"},
            "regarding": {"kind": "Plan", "name": "gold", "apiVersion": "flotilla.dev/v1alpha1"},
            "note": "Plan gold is in use", "reason": "InUse", "type": "Warning",
            "reportingController": "flotilla", "reportingInstance": "flotilla-0",
            "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Delete"
        });
        let core = to_core(&v1);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "gold");
        assert_eq!(core["message"], "Plan gold is in use");
        assert_eq!(core["reportingComponent"], "flotilla");
        assert_eq!(
            core["source"],
            json!({"component": "flotilla", "host": "flotilla-0"})
        );
        let back = to_events_v1(&core);
        assert_eq!(back["regarding"], v1["regarding"]);
        assert_eq!(back["note"], v1["note"]);
        assert_eq!(back["deprecatedSource"]["component"], "flotilla");
        assert_eq!(back["apiVersion"], "events.k8s.io/v1");
    }
}
