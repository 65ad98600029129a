//! `kubectl get` tables for custom resources, rendered like apiextensions-apiserver does.

use flotilla_sandbox::table::{
    IncludeObject, PrinterColumn, evaluate_json_path, human_duration, to_table_at,
};
use jiff::Timestamp;
use serde_json::{Value, json};

fn columns() -> Vec<PrinterColumn> {
    [
        json!({"name": "Tier", "type": "string", "jsonPath": ".spec.tier"}),
        json!({"name": "Trial", "type": "integer", "jsonPath": ".spec.trialDays", "description": "Trial length in days"}),
        json!({"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"}),
        json!({"name": "Discount", "type": "number", "jsonPath": ".spec.discount", "priority": 1}),
        json!({"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"}),
        json!({"name": "Waves", "type": "string", "jsonPath": ".spec.waves[*].name"}),
        json!({"name": "Labels", "type": "string", "jsonPath": ".metadata.labels"}),
        json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}),
    ]
    .iter()
    .map(|c| PrinterColumn::from_crd(c).unwrap())
    .collect()
}

fn plans() -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
            "metadata": {"name": "gold", "namespace": "shop", "resourceVersion": "12",
                         "creationTimestamp": "2024-05-01T09:55:00Z", "labels": {"tier": "top"}},
            "spec": {"tier": "gold", "trialDays": 14, "discount": 0.25, "paused": false,
                     "waves": [{"name": "canary"}, {"name": "rest"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }),
        json!({
            "apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan",
            "metadata": {"name": "basic", "namespace": "shop", "resourceVersion": "13",
                         "creationTimestamp": "2024-04-28T07:00:00Z"},
            "spec": {"tier": "basic", "trialDays": "soon"}
        }),
    ]
}

fn now() -> Timestamp {
    "2024-05-01T10:00:00Z".parse().unwrap()
}

#[test]
fn golden_table_for_a_crd_with_printer_columns() {
    let table = to_table_at(
        &plans(),
        &columns(),
        IncludeObject::None,
        json!({"resourceVersion": "13"}),
        now(),
    );
    let expected = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "13"},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "priority": 0,
             "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"},
            {"name": "Tier", "type": "string", "format": "", "priority": 0,
             "description": "Custom resource definition column (in JSONPath format): .spec.tier"},
            {"name": "Trial", "type": "integer", "format": "", "priority": 0, "description": "Trial length in days"},
            {"name": "Ready", "type": "string", "format": "", "priority": 0,
             "description": "Custom resource definition column (in JSONPath format): .status.conditions[?(@.type==\"Ready\")].status"},
            {"name": "Discount", "type": "number", "format": "", "priority": 1,
             "description": "Custom resource definition column (in JSONPath format): .spec.discount"},
            {"name": "Paused", "type": "boolean", "format": "", "priority": 0,
             "description": "Custom resource definition column (in JSONPath format): .spec.paused"},
            {"name": "Waves", "type": "string", "format": "", "priority": 0,
             "description": "Custom resource definition column (in JSONPath format): .spec.waves[*].name"},
            {"name": "Labels", "type": "string", "format": "", "priority": 0,
             "description": "Custom resource definition column (in JSONPath format): .metadata.labels"},
            {"name": "Age", "type": "date", "format": "", "priority": 0,
             "description": "Custom resource definition column (in JSONPath format): .metadata.creationTimestamp"}
        ],
        "rows": [
            {"cells": ["gold", "gold", 14, "True", 0.25, false, "canary", "{\"tier\":\"top\"}", "5m"]},
            {"cells": ["basic", "basic", null, null, null, null, null, null, "3d3h"]}
        ]
    });
    assert_eq!(table, expected);
}

#[test]
fn crds_without_columns_get_an_age_column() {
    let table = to_table_at(&plans()[..1], &[], IncludeObject::None, json!({}), now());
    let definitions = table["columnDefinitions"].as_array().unwrap();
    assert_eq!(definitions.len(), 2);
    assert_eq!(definitions[1]["name"], "Age");
    assert_eq!(definitions[1]["type"], "date");
    assert!(
        definitions[1]["description"]
            .as_str()
            .unwrap()
            .starts_with("CreationTimestamp is a timestamp")
    );
    assert_eq!(table["rows"][0]["cells"], json!(["gold", "5m"]));
}

#[test]
fn rows_carry_the_object_per_include_object() {
    let objects = plans();
    let metadata = to_table_at(&objects, &[], IncludeObject::Metadata, json!({}), now());
    assert_eq!(
        metadata["rows"][0]["object"],
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": objects[0]["metadata"]
        })
    );
    let full = to_table_at(&objects, &[], IncludeObject::Object, json!({}), now());
    assert_eq!(full["rows"][1]["object"], objects[1]);
    let none = to_table_at(&objects, &[], IncludeObject::None, json!({}), now());
    assert_eq!(none["rows"][0].get("object"), None);

    assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
    assert_eq!(
        IncludeObject::from_query(Some("Object")),
        Ok(IncludeObject::Object)
    );
    assert_eq!(
        IncludeObject::from_query(Some("All")),
        Err("unrecognized includeObject value: \"All\"".to_string())
    );
}

#[test]
fn continue_tokens_stay_in_table_metadata() {
    let table = to_table_at(
        &[],
        &columns(),
        IncludeObject::Metadata,
        json!({"resourceVersion": "99", "continue": "abc", "remainingItemCount": 4}),
        now(),
    );
    assert_eq!(table["metadata"]["continue"], "abc");
    assert_eq!(table["rows"], json!([]));
}

#[test]
fn date_cells_for_odd_timestamps() {
    let column = PrinterColumn {
        name: "Seen".into(),
        type_: "date".into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: ".status.seen".into(),
    };
    let render = |seen: Value| {
        let object = json!({"metadata": {"name": "x"}, "status": {"seen": seen}});
        to_table_at(
            &[object],
            std::slice::from_ref(&column),
            IncludeObject::None,
            json!({}),
            now(),
        )["rows"][0]["cells"][1]
            .clone()
    };
    assert_eq!(render(json!("")), json!("<unknown>"));
    assert_eq!(render(json!("yesterday")), json!("<invalid>"));
    assert_eq!(
        render(json!("2024-05-01T10:00:30Z")),
        json!("<invalid>"),
        "future beyond skew"
    );
    assert_eq!(render(json!(5)), Value::Null, "non-string dates are empty");
}

#[test]
fn human_durations_match_apimachinery() {
    let cases = [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (330, "5m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 600, "3h10m"),
        (9 * 3600, "9h"),
        (47 * 3600, "47h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (7 * 86400, "7d"),
        (25 * 86400, "25d"),
        (2 * 365 * 86400 + 20 * 86400, "2y20d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (seconds, expected) in cases {
        assert_eq!(human_duration(seconds), expected, "{seconds}s");
    }
}

#[test]
fn json_path_helper() {
    let plan = &plans()[0];
    assert_eq!(evaluate_json_path(plan, ".spec.tier"), Some(json!("gold")));
    assert_eq!(
        evaluate_json_path(plan, "{.spec.waves[1].name}"),
        Some(json!("rest"))
    );
    assert_eq!(evaluate_json_path(plan, ".spec.nothing"), None);
    assert_eq!(evaluate_json_path(plan, ".spec.waves["), None);
}
