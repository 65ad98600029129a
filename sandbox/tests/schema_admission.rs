//! Admission of custom resources against a CRD schema: pruning, defaulting, OpenAPI keyword
//! validation, list-type invariants and CEL rules, with the apiserver's messages.

use flotilla_sandbox::list_type::{ListType, ListTypes};
use flotilla_sandbox::schema::{CrdSchema, FieldError, FieldErrorReason, Source};
use serde_json::{Value, json};

/// A Plan-like schema exercising most keywords.
fn plan_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["tier"],
                "properties": {
                    "tier": {"type": "string", "enum": ["gold", "silver"]},
                    "trialDays": {"type": "integer", "minimum": 0, "maximum": 90, "default": 14},
                    "discount": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": true},
                    "step": {"type": "integer", "multipleOf": 5},
                    "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-zé]+$"},
                    "startsAt": {"type": "string", "format": "date-time"},
                    "size": {"type": "integer", "format": "int32"},
                    "port": {"x-kubernetes-int-or-string": true},
                    "note": {"type": "string", "nullable": true},
                    "region": {"type": "string"},
                    "tags": {
                        "type": "array",
                        "items": {"type": "string"},
                        "x-kubernetes-list-type": "set",
                        "maxItems": 3
                    },
                    "codes": {"type": "array", "items": {"type": "integer"}, "uniqueItems": true, "minItems": 1},
                    "waves": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string"},
                                "percent": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
                                "paused": {"type": "boolean", "default": false}
                            }
                        }
                    },
                    "labels": {
                        "type": "object",
                        "additionalProperties": {"type": "string"},
                        "maxProperties": 2
                    },
                    "limits": {
                        "type": "object",
                        "minProperties": 1,
                        "properties": {"cpu": {"type": "string"}, "memory": {"type": "string"}}
                    },
                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                              "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
                    "template": {
                        "type": "object",
                        "x-kubernetes-embedded-resource": true,
                        "properties": {"spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}
                    },
                    "delivery": {
                        "type": "object",
                        "default": {},
                        "properties": {"mode": {"type": "string", "default": "push"}}
                    }
                }
            },
            "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
        }
    })
}

fn plan(spec: Value) -> Value {
    json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "gold", "namespace": "default"},
        "spec": spec
    })
}

fn admit(schema: &CrdSchema, mut object: Value) -> Result<Value, Vec<FieldError>> {
    schema
        .admit(&mut object, None, Source::Decoded)
        .map(|()| object)
}

fn messages(errors: &[FieldError]) -> Vec<String> {
    errors.iter().map(ToString::to_string).collect()
}

fn one_error(schema: &CrdSchema, spec: Value) -> String {
    let errors = admit(schema, plan(spec)).expect_err("the object should be rejected");
    let errors: Vec<&FieldError> = errors
        .iter()
        .filter(|e| !e.message.contains("some validation rules were not checked"))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error, got {errors:?}");
    errors[0].to_string()
}

#[test]
fn unknown_fields_are_pruned_and_preserved_where_the_schema_says() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    let admitted = admit(
        &schema,
        json!({
            "apiVersion": "flotilla.dev/v1alpha1",
            "kind": "Plan",
            "metadata": {"name": "gold", "labels": {"a": "b"}},
            "bogus": 1,
            "spec": {
                "tier": "gold",
                "unknown": "x",
                "waves": [{"name": "w1", "percent": 5, "color": "red"}],
                "extra": {"anything": {"goes": true}, "known": {"a": "kept", "b": "pruned"}},
                "template": {
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "whatever": 1},
                    "spec": {"replicas": 1, "nope": 2}, "other": 3
                }
            }
        }),
    )
    .unwrap();
    assert_eq!(admitted.get("bogus"), None);
    assert_eq!(admitted["metadata"]["labels"]["a"], "b");
    assert_eq!(admitted["spec"].get("unknown"), None);
    assert_eq!(admitted["spec"]["waves"][0].get("color"), None);
    assert_eq!(admitted["spec"]["extra"]["anything"], json!({"goes": true}));
    assert_eq!(admitted["spec"]["extra"]["known"], json!({"a": "kept"}));
    let template = &admitted["spec"]["template"];
    assert_eq!(template["apiVersion"], "v1");
    assert_eq!(template["kind"], "Pod");
    assert_eq!(template["metadata"], json!({"name": "p", "whatever": 1}));
    assert_eq!(template["spec"], json!({"replicas": 1}));
    assert_eq!(template.get("other"), None);
}

#[test]
fn unknown_fields_are_reported_like_strict_field_validation() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    let object = json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "gold", "whatever": 1},
        "bogus": 1,
        "spec": {
            "tier": "gold",
            "unknown": "x",
            "waves": [{"name": "w1"}, {"name": "w2", "color": "red"}],
            "extra": {"anything": 1, "known": {"b": 2}},
            "template": {"apiVersion": "v1", "kind": "Pod", "spec": {"nope": 2}}
        }
    });
    assert_eq!(
        schema.unknown_fields(&object),
        [
            "bogus",
            "spec.extra.known.b",
            "spec.template.spec.nope",
            "spec.unknown",
            "spec.waves[1].color",
        ]
    );
    assert!(
        schema
            .unknown_fields(&plan(json!({"tier": "gold"})))
            .is_empty()
    );
}

#[test]
fn defaults_fill_missing_fields_and_non_nullable_nulls() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    let admitted = admit(
        &schema,
        plan(json!({
            "tier": "gold",
            "note": null,
            "region": null,
            "waves": [{"name": "a"}, {"name": "b", "percent": null, "paused": true}]
        })),
    )
    .unwrap();
    let spec = &admitted["spec"];
    assert_eq!(spec["trialDays"], 14);
    assert_eq!(spec["note"], Value::Null, "nullable nulls are kept");
    assert_eq!(
        spec.get("region"),
        None,
        "non-nullable nulls without default are dropped"
    );
    assert_eq!(
        spec["waves"][0],
        json!({"name": "a", "percent": 10, "paused": false})
    );
    assert_eq!(
        spec["waves"][1],
        json!({"name": "b", "percent": 10, "paused": true})
    );
    assert_eq!(spec["delivery"], json!({"mode": "push"}), "defaults nest");
}

#[test]
fn an_applied_object_keeps_non_nullable_nulls_for_validation_to_refuse() {
    // (The schema has no CEL rules, so no "rules were not checked" error follows.)
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    let applied = |spec: Value| {
        let mut object = plan(spec);
        schema
            .admit(&mut object, None, Source::Applied)
            .map(|()| object)
    };
    let errors = applied(json!({
        "tier": "gold",
        "note": null,
        "region": null,
        "tags": null,
        "waves": [{"name": "b", "percent": null}]
    }))
    .unwrap_err();
    assert_eq!(
        messages(&errors),
        [
            "spec.region: Invalid value: \"null\": spec.region in body must be of type string: \"null\"",
            "spec.tags: Invalid value: \"null\": spec.tags in body must be of type array: \"null\"",
        ]
    );
    // Nullable nulls stay; non-nullable ones with a default get it.
    let admitted = applied(json!({
        "tier": "gold",
        "note": null,
        "trialDays": null,
        "waves": [{"name": "b", "percent": null}]
    }))
    .unwrap();
    assert_eq!(admitted["spec"]["note"], Value::Null);
    assert_eq!(admitted["spec"]["trialDays"], 14);
    assert_eq!(admitted["spec"]["waves"][0]["percent"], 10);
}

#[test]
fn openapi_keywords_report_the_apiserver_messages() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    let cases = [
        (
            json!({"tier": "gold", "trialDays": -1}),
            "spec.trialDays: Invalid value: -1: spec.trialDays in body should be greater than or equal to 0",
        ),
        (
            json!({"tier": "gold", "trialDays": 91}),
            "spec.trialDays: Invalid value: 91: spec.trialDays in body should be less than or equal to 90",
        ),
        (
            json!({"tier": "gold", "discount": 1.0}),
            "spec.discount: Invalid value: 1: spec.discount in body should be less than 1",
        ),
        (
            json!({"tier": "gold", "step": 7}),
            "spec.step: Invalid value: 7: spec.step in body should be a multiple of 5",
        ),
        (
            json!({"tier": "gold", "trialDays": 1.5}),
            "spec.trialDays: Invalid value: \"number\": spec.trialDays in body must be of type integer: \"number\"",
        ),
        (
            json!({"tier": "gold", "trialDays": "7"}),
            "spec.trialDays: Invalid value: \"string\": spec.trialDays in body must be of type integer: \"string\"",
        ),
        (
            json!({"tier": "platinum"}),
            "spec.tier: Unsupported value: \"platinum\": supported values: \"gold\", \"silver\"",
        ),
        (json!({"trialDays": 3}), "spec.tier: Required value"),
        (
            json!({"tier": "gold", "name": "a"}),
            "spec.name: Invalid value: \"a\": spec.name in body should be at least 2 chars long",
        ),
        (
            json!({"tier": "gold", "name": "abcdef"}),
            "spec.name: Too long: may not be more than 5 bytes",
        ),
        (
            json!({"tier": "gold", "name": "AB"}),
            "spec.name: Invalid value: \"AB\": spec.name in body should match '^[a-zé]+$'",
        ),
        (
            json!({"tier": "gold", "startsAt": "tomorrow"}),
            "spec.startsAt: Invalid value: \"tomorrow\": spec.startsAt in body must be of type date-time: \"tomorrow\"",
        ),
        (
            json!({"tier": "gold", "port": true}),
            "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
        ),
        (
            json!({"tier": "gold", "tags": ["a", "b", "c", "d"]}),
            "spec.tags: Too many: 4: must have at most 3 items",
        ),
        (
            json!({"tier": "gold", "codes": []}),
            "spec.codes: Invalid value: 0: spec.codes in body should have at least 1 items",
        ),
        (
            json!({"tier": "gold", "codes": [1, 2, 1]}),
            "spec.codes: Invalid value: \"\": spec.codes in body shouldn't contain duplicates",
        ),
        (
            json!({"tier": "gold", "labels": {"a": "1", "b": "2", "c": "3"}}),
            "spec.labels: Too many: 3: must have at most 2 items",
        ),
        (
            json!({"tier": "gold", "limits": {}}),
            "spec.limits: Invalid value: 0: spec.limits in body should have at least 1 properties",
        ),
        (
            json!({"tier": "gold", "labels": {"team": 7}}),
            "spec.labels.team: Invalid value: \"integer\": spec.labels.team in body must be of type string: \"integer\"",
        ),
        (
            json!({"tier": "gold", "waves": [{"name": "a"}, {"name": "b"}, {"name": "c", "percent": 0}]}),
            "spec.waves[2].percent: Invalid value: 0: spec.waves[2].percent in body should be greater than or equal to 1",
        ),
        (
            json!({"tier": "gold", "waves": [{"percent": 5}]}),
            "spec.waves[0].name: Required value",
        ),
        (
            json!({"tier": "gold", "template": {"kind": "Pod"}}),
            "spec.template.apiVersion: Required value: must not be empty",
        ),
    ];
    for (spec, expected) in cases {
        assert_eq!(one_error(&schema, spec.clone()), expected, "spec: {spec}");
    }
}

#[test]
fn accepted_values_pass() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    admit(
        &schema,
        plan(json!({
            "tier": "silver",
            "trialDays": 2.0,
            "discount": 0.5,
            "step": 10,
            "name": "éa",
            "startsAt": "2024-05-01T10:00:00Z",
            "size": 9_999_999_999_i64,
            "port": "http",
            "note": "x",
            "tags": ["a", "b"],
            "codes": [1, 2],
            "labels": {"a": "1"},
            "limits": {"cpu": "1"}
        })),
    )
    .unwrap();
}

#[test]
fn list_type_invariants_report_duplicates() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    let errors = admit(
        &schema,
        plan(json!({
            "tier": "gold",
            "tags": ["a", "b", "a"],
            "waves": [{"name": "x"}, {"name": "y"}, {"name": "x"}, {"name": "x"}]
        })),
    )
    .unwrap_err();
    assert_eq!(
        messages(&errors),
        [
            "spec.tags[2]: Duplicate value: \"a\"",
            "spec.waves[2]: Duplicate value: map[string]interface {}{\"name\":\"x\"}",
        ]
    );
    assert!(
        errors
            .iter()
            .all(|e| e.reason == FieldErrorReason::Duplicate)
    );
}

fn ruled_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [
                    {"rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
                    {"rule": "!has(self.maxReplicas) || self.maxReplicas < 100", "messageExpression": "'maxReplicas is ' + string(self.maxReplicas)", "fieldPath": ".maxReplicas", "reason": "FieldValueForbidden"},
                    {"rule": "!has(self.owner) || self.owner == oldSelf.owner", "message": "owner is immutable", "fieldPath": ".owner"}
                ],
                "properties": {
                    "minReplicas": {"type": "integer"},
                    "maxReplicas": {"type": "integer"},
                    "owner": {"type": "string"},
                    "tier": {"type": "string", "enum": ["a", "b"]},
                    "version": {
                        "type": "string",
                        "x-kubernetes-validations": [{"rule": "self != 'latest'"}]
                    },
                    "windows": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "hours": {"type": "integer"}},
                            "x-kubernetes-validations": [
                                {"rule": "self.hours >= oldSelf.hours", "message": "hours may only grow"}
                            ]
                        }
                    }
                }
            }
        },
        "x-kubernetes-validations": [
            {"rule": "self.metadata.name.startsWith('p-')", "message": "name must start with p-"}
        ]
    })
}

fn obj(spec: Value) -> Value {
    json!({"apiVersion": "x.dev/v1", "kind": "X", "metadata": {"name": "p-1"}, "spec": spec})
}

#[test]
fn cel_rules_report_message_reason_and_field_path() {
    let schema = CrdSchema::new(&ruled_schema()).unwrap();
    let errors = admit(
        &schema,
        obj(json!({"minReplicas": 300, "maxReplicas": 200})),
    )
    .unwrap_err();
    assert_eq!(
        messages(&errors),
        [
            "spec: Invalid value: minReplicas must not exceed maxReplicas",
            "spec.maxReplicas: Forbidden: maxReplicas is 200",
        ]
    );
    assert_eq!(errors[1].reason, FieldErrorReason::Forbidden);

    let errors = admit(&schema, obj(json!({"version": "latest"}))).unwrap_err();
    assert_eq!(
        messages(&errors),
        ["spec.version: Invalid value: \"latest\": failed rule: self != 'latest'"]
    );

    let mut root_failure = obj(json!({}));
    root_failure["metadata"]["name"] = json!("q-1");
    let errors = admit(&schema, root_failure).unwrap_err();
    assert_eq!(
        messages(&errors),
        ["<nil>: Invalid value: name must start with p-"]
    );
}

#[test]
fn rule_evaluation_errors_and_optional_old_self() {
    let schema = CrdSchema::new(&json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer"},
                    "limit": {"type": "integer"}
                },
                "x-kubernetes-validations": [
                    {"rule": "self.replicas <= self.limit", "message": "replicas above limit"},
                    {"rule": "oldSelf == null || self.replicas >= oldSelf.replicas",
                     "message": "cannot scale down", "optionalOldSelf": true}
                ]
            }
        }
    }))
    .unwrap();
    let errors = admit(&schema, obj(json!({"replicas": 3}))).unwrap_err();
    assert_eq!(
        messages(&errors),
        [
            "spec: Invalid value: \"object\": no such key: limit evaluating rule: self.replicas <= self.limit"
        ]
    );
    let created = admit(&schema, obj(json!({"replicas": 3, "limit": 5}))).unwrap();
    let mut scaled_down = obj(json!({"replicas": 2, "limit": 5}));
    let errors = schema
        .admit(&mut scaled_down, Some(&created), Source::Decoded)
        .unwrap_err();
    assert_eq!(
        messages(&errors),
        ["spec: Invalid value: cannot scale down"]
    );
}

#[test]
fn transition_rules_run_only_on_update_with_a_correlated_old_value() {
    let schema = CrdSchema::new(&ruled_schema()).unwrap();
    let created = admit(
        &schema,
        obj(json!({"owner": "alice", "windows": [{"name": "a", "hours": 3}, {"name": "b", "hours": 1}]})),
    )
    .expect("transition rules are skipped on create");

    let mut changed = obj(json!({
        "owner": "bob",
        // Reordered: list-map items correlate by key, not by index.
        "windows": [{"name": "b", "hours": 2}, {"name": "a", "hours": 2}, {"name": "c", "hours": 0}]
    }));
    let errors = schema
        .admit(&mut changed, Some(&created), Source::Decoded)
        .unwrap_err();
    assert_eq!(
        messages(&errors),
        [
            "spec.owner: Invalid value: owner is immutable",
            "spec.windows[1]: Invalid value: hours may only grow",
        ]
    );

    let mut same_owner = obj(json!({"owner": "alice", "windows": [{"name": "a", "hours": 4}]}));
    schema
        .admit(&mut same_owner, Some(&created), Source::Decoded)
        .unwrap();
}

#[test]
fn cel_rules_do_not_run_after_blocking_schema_errors() {
    let schema = CrdSchema::new(&ruled_schema()).unwrap();
    let errors = admit(
        &schema,
        obj(json!({"tier": "c", "minReplicas": 5, "maxReplicas": 1})),
    )
    .unwrap_err();
    assert_eq!(
        messages(&errors),
        [
            "spec.tier: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ]
    );
}

#[test]
fn unchanged_invalid_fields_ratchet_on_update() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    // Stored before the schema tightened.
    let old = plan(json!({"tier": "gold", "trialDays": 500, "name": "toolongname"}));
    let mut update = plan(json!({"tier": "silver", "trialDays": 500, "name": "toolongname"}));
    schema
        .admit(&mut update, Some(&old), Source::Decoded)
        .unwrap();
    let mut worse = plan(json!({"tier": "silver", "trialDays": 501, "name": "toolongname"}));
    let errors = schema
        .admit(&mut worse, Some(&old), Source::Decoded)
        .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].field, "spec.trialDays");
}

#[test]
fn invalid_schemas_are_rejected() {
    let bad_pattern =
        json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)y"}}});
    assert!(
        CrdSchema::new(&bad_pattern)
            .unwrap_err()
            .contains("pattern")
    );
    let bad_rule = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]});
    assert!(CrdSchema::new(&bad_rule).is_err());
}

#[test]
fn list_types_come_from_the_schema() {
    let schema = CrdSchema::new(&plan_schema()).unwrap();
    assert_eq!(schema.list_type(&["spec", "tags"]), ListType::Set);
    assert_eq!(
        schema.list_type(&["spec", "waves"]),
        ListType::Map(vec!["name".to_string()])
    );
    assert_eq!(schema.list_type(&["spec", "codes"]), ListType::Atomic);
    assert_eq!(schema.list_type(&["spec", "nope"]), ListType::Atomic);
    assert_eq!(schema.list_type(&["metadata", "finalizers"]), ListType::Set);
    assert_eq!(
        schema.list_type(&["metadata", "ownerReferences"]),
        ListType::Map(vec!["uid".to_string()])
    );
    assert_eq!(
        schema.map_key_default(&["spec", "waves"], "percent"),
        Some(json!(10))
    );
    assert_eq!(schema.map_key_default(&["spec", "waves"], "name"), None);
}
