//! The generated CRDs satisfy what the kube-apiserver demands of them (structural schemas,
//! list-type rules, CEL rules that compile) and what makes them pleasant to use (status
//! subresource, the `flotilla` category, short names, printer columns, descriptions).

mod support;

use std::collections::BTreeSet;

use flotilla_crds::all_crds;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use support::schema_of;

/// Short names of the built-in resources of Kubernetes 1.33 (`kubectl api-resources`); a CRD
/// short name equal to one of them would shadow it.
const BUILT_IN_SHORT_NAMES: &[&str] = &[
    "cm", "cs", "csr", "crd", "crds", "cj", "deploy", "ds", "ep", "ev", "hpa", "ing", "limits",
    "netpol", "no", "ns", "pc", "pdb", "po", "psp", "pv", "pvc", "quota", "rc", "rs", "sa", "sc",
    "sts", "svc", "vac", "ipa",
];

/// Formats the apiserver knows (k8s.io/kube-openapi/pkg/validation/strfmt, as used for CRDs).
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
];

fn crd(kind: &str) -> CustomResourceDefinition {
    all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

/// Walks a schema node, calling `visit(path, node)` on it and every node below it.
fn walk<'a>(path: &str, node: &'a Value, visit: &mut dyn FnMut(&str, &'a Value)) {
    visit(path, node);
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), values, visit);
    }
}

#[test]
fn there_are_seven_kinds_in_one_group_and_version() {
    let crds = all_crds();
    let kinds: Vec<_> = crds.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Plan",
            "Subscription",
            "Channel",
            "Campaign",
            "FirmwareRelease",
            "Device",
            "FirmwareRollout"
        ]
    );
    for crd in &crds {
        assert_eq!(crd.spec.group, "flotilla.dev");
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(
            (version.name.as_str(), version.served, version.storage),
            ("v1alpha1", true, true)
        );
        let name = crd.metadata.name.as_deref().unwrap();
        assert_eq!(name, format!("{}.flotilla.dev", crd.spec.names.plural));
    }
    assert_eq!(crd("Plan").spec.scope, "Cluster");
    assert_eq!(crd("Subscription").spec.scope, "Cluster");
    for kind in [
        "Channel",
        "Campaign",
        "FirmwareRelease",
        "Device",
        "FirmwareRollout",
    ] {
        assert_eq!(crd(kind).spec.scope, "Namespaced", "{kind}");
    }
}

#[test]
fn every_kind_is_in_the_flotilla_category_with_a_unique_short_name() {
    let mut seen = BTreeSet::new();
    for crd in all_crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["flotilla".to_owned()][..]),
            "{}",
            names.kind
        );
        let short = names
            .short_names
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no short name", names.kind));
        for s in short {
            assert!(
                !BUILT_IN_SHORT_NAMES.contains(&s.as_str()),
                "{s} shadows a built-in"
            );
            assert!(seen.insert(s.clone()), "{s} is used twice");
        }
        assert_eq!(
            names.singular.as_deref(),
            Some(names.kind.to_lowercase().as_str())
        );
    }
}

#[test]
fn every_kind_has_a_status_subresource_with_phase_conditions_and_observed_generation() {
    for crd in all_crds() {
        let kind = &crd.spec.names.kind;
        let version = &crd.spec.versions[0];
        let subresources = version
            .subresources
            .as_ref()
            .unwrap_or_else(|| panic!("{kind} has no subresources"));
        assert!(
            subresources.status.is_some(),
            "{kind} has no status subresource"
        );
        let schema = schema_of(&crd);
        let status = &schema["properties"]["status"]["properties"];
        let phases = status["phase"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: status.phase is not an enum"));
        assert!(phases.len() >= 3, "{kind}: {phases:?}");
        assert_eq!(
            status["conditions"]["x-kubernetes-list-type"], "map",
            "{kind}"
        );
        assert_eq!(
            status["conditions"]["x-kubernetes-list-map-keys"][0], "type",
            "{kind}"
        );
        assert_eq!(status["observedGeneration"]["type"], "integer", "{kind}");
    }
}

#[test]
fn the_phases_are_the_documented_ones() {
    let phases = |kind: &str| -> Vec<String> {
        let schema = schema_of(&crd(kind));
        serde_json::from_value(
            schema["properties"]["status"]["properties"]["phase"]["enum"].clone(),
        )
        .unwrap()
    };
    assert_eq!(
        phases("Subscription"),
        [
            "Pending",
            "Provisioning",
            "Trialing",
            "Active",
            "PastDue",
            "Suspended",
            "Cancelling",
            "Cancelled"
        ]
    );
    assert_eq!(
        phases("Campaign"),
        [
            "Draft",
            "Scheduled",
            "Running",
            "Paused",
            "Completed",
            "Cancelled",
            "Failed"
        ]
    );
    assert_eq!(
        phases("FirmwareRollout"),
        [
            "Pending",
            "AwaitingApproval",
            "Progressing",
            "Paused",
            "WaitingForWindow",
            "Succeeded",
            "Failed",
            "RollingBack",
            "RolledBack",
            "Aborted"
        ]
    );
    let schema = schema_of(&crd("Device"));
    let states: Vec<String> = serde_json::from_value(
        schema["properties"]["status"]["properties"]["update"]["properties"]["state"]["enum"]
            .clone(),
    )
    .unwrap();
    assert_eq!(
        states,
        [
            "Idle",
            "Downloading",
            "Installing",
            "Verifying",
            "Succeeded",
            "Failed",
            "Cancelled"
        ]
    );
}

#[test]
fn printer_columns_point_at_fields_that_exist() {
    for crd in all_crds() {
        let kind = &crd.spec.names.kind;
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        assert!(columns.len() >= 4, "{kind} has too few printer columns");
        assert_eq!(
            columns.last().map(|c| c.name.as_str()),
            Some("Age"),
            "{kind}"
        );
        let schema = schema_of(&crd);
        for column in &columns {
            assert!(
                ["string", "integer", "number", "boolean", "date"].contains(&column.type_.as_str()),
                "{kind}.{}",
                column.name
            );
            let path = column.json_path.split("[?").next().unwrap();
            if path.starts_with(".metadata.") {
                continue;
            }
            let mut node = &schema;
            for segment in path.trim_start_matches('.').split('.') {
                node = node
                    .get("properties")
                    .and_then(|p| p.get(segment))
                    .unwrap_or_else(|| {
                        panic!(
                            "{kind} column {} points at {path}, which the schema lacks",
                            column.name
                        )
                    });
            }
            let field_type = node["type"].as_str().unwrap_or("int-or-string");
            let expected = match column.type_.as_str() {
                "date" => "string",
                "integer" => "integer",
                _ => field_type,
            };
            assert_eq!(
                field_type, expected,
                "{kind} column {} has type {} but {path} is {field_type}",
                column.name, column.type_
            );
        }
    }
}

#[test]
fn schemas_are_structural() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        walk("", &schema, &mut |path, node| {
            let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            let preserve =
                node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if int_or_string {
                assert!(
                    node.get("type").is_none(),
                    "{kind}{path}: int-or-string must not have a type"
                );
            } else if !preserve {
                assert!(
                    node.get("type").and_then(Value::as_str).is_some(),
                    "{kind}{path}: every node needs a single type: {node}"
                );
            }
            for forbidden in [
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "$ref",
                "definitions",
                "$defs",
                "$schema",
                "uniqueItems",
                "const",
            ] {
                assert!(
                    node.get(forbidden).is_none(),
                    "{kind}{path}: {forbidden} is not allowed here"
                );
            }
            assert!(
                !(node.get("properties").is_some() && node.get("additionalProperties").is_some()),
                "{kind}{path}: properties and additionalProperties are mutually exclusive"
            );
            if node.get("type").and_then(Value::as_str) == Some("array") {
                assert!(
                    node.get("items").is_some(),
                    "{kind}{path}: arrays need items"
                );
            }
            if let Some(format) = node.get("format").and_then(Value::as_str) {
                assert!(
                    KNOWN_FORMATS.contains(&format),
                    "{kind}{path}: unknown format {format}"
                );
            }
            match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    let item_type = node["items"]["type"].as_str().unwrap();
                    assert!(
                        ["string", "integer", "number", "boolean"].contains(&item_type),
                        "{kind}{path}: sets hold scalars"
                    );
                    assert!(
                        node["items"].get("nullable").is_none(),
                        "{kind}{path}: set items must not be nullable"
                    );
                }
                Some("map") => {
                    let items = &node["items"];
                    assert_eq!(
                        items["type"], "object",
                        "{kind}{path}: list-maps hold objects"
                    );
                    assert!(
                        items.get("nullable").is_none(),
                        "{kind}{path}: list-map items must not be nullable"
                    );
                    let required: Vec<&str> = items["required"]
                        .as_array()
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    for key in node["x-kubernetes-list-map-keys"]
                        .as_array()
                        .expect("map keys")
                    {
                        let key = key.as_str().unwrap();
                        let key_schema = &items["properties"][key];
                        assert!(
                            required.contains(&key) || key_schema.get("default").is_some(),
                            "{kind}{path}: key {key} must be required or defaulted"
                        );
                        assert!(
                            key_schema.get("nullable").is_none(),
                            "{kind}{path}: key {key} must not be nullable"
                        );
                        assert!(
                            ["string", "integer", "boolean"]
                                .contains(&key_schema["type"].as_str().unwrap()),
                            "{kind}{path}: key {key} must be a scalar"
                        );
                    }
                }
                Some("atomic") | None => {}
                Some(other) => panic!("{kind}{path}: unknown list type {other}"),
            }
        });
    }
}

#[test]
fn every_field_is_explained() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        assert!(
            schema["description"].as_str().is_some_and(|d| d.len() > 40),
            "{kind} has no kind description"
        );
        walk("", &schema, &mut |path, node| {
            if let Some(properties) = node.get("properties").and_then(Value::as_object) {
                for (name, child) in properties {
                    let described = child
                        .get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.trim().is_empty());
                    assert!(
                        described,
                        "{kind}{path}.{name} has no description for kubectl explain"
                    );
                    let text = child["description"].as_str().unwrap_or_default();
                    assert!(
                        !text.replace("\n\n", "").contains('\n'),
                        "{kind}{path}.{name}: description has hard line breaks: {text:?}"
                    );
                }
            }
        });
    }
}

/// Every node with CEL rules: (path, node, rules, how many times the node can repeat).
fn rule_sites(schema: &Value) -> Vec<(String, Value, Vec<String>, u64)> {
    fn go(
        path: &str,
        node: &Value,
        cardinality: u64,
        out: &mut Vec<(String, Value, Vec<String>, u64)>,
    ) {
        if let Some(rules) = node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            let rules = rules
                .iter()
                .map(|r| r["rule"].as_str().expect("rule").to_owned())
                .collect();
            out.push((path.to_owned(), node.clone(), rules, cardinality));
        }
        if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                go(&format!("{path}.{name}"), child, cardinality, out);
            }
        }
        if let Some(items) = node.get("items") {
            let max = node
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX / 4);
            go(
                &format!("{path}[]"),
                items,
                cardinality.saturating_mul(max),
                out,
            );
        }
        if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
            let max = node
                .get("maxProperties")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX / 4);
            go(
                &format!("{path}{{}}"),
                values,
                cardinality.saturating_mul(max),
                out,
            );
        }
    }
    let mut out = Vec::new();
    go("", schema, 1, &mut out);
    out
}

#[test]
fn cel_rules_compile_and_stay_within_the_cost_budget() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        let compiled = kube_cel::compile_schema(&schema);
        let mut stack = vec![&compiled];
        while let Some(node) = stack.pop() {
            assert!(
                !node.has_errors(),
                "{kind}: a CEL rule does not compile: {:?}",
                node.compilation_errors()
            );
            stack.extend(node.properties.values());
            stack.extend(node.items.as_deref());
            stack.extend(node.additional_properties.as_deref());
        }
        for (path, node, rules, cardinality) in rule_sites(&schema) {
            // Rules must not sit under unbounded lists or maps: the apiserver multiplies a
            // rule's cost by how often its node can occur.
            assert!(
                cardinality <= 10_000,
                "{kind}{path}: rules repeat up to {cardinality} times; bound the enclosing lists"
            );
            let compiled_node = kube_cel::compile_schema(&node);
            for rule in rules {
                let warnings: Vec<_> = kube_cel::analyze_rule(
                    &rule,
                    &compiled_node,
                    kube_cel::ScopeContext::CrdValidation,
                )
                .into_iter()
                .filter(|w| !binds_macro_variable(&rule, w))
                .collect();
                assert!(warnings.is_empty(), "{kind}{path}: {rule}: {warnings:?}");
            }
        }
    }
}

/// kube-cel's scope check does not know comprehension variables (`self.map(v, ...)` binds
/// `v`); those warnings are false alarms.
fn binds_macro_variable(rule: &str, warning: &kube_cel::AnalysisWarning) -> bool {
    warning.kind == kube_cel::WarningKind::WrongScope
        && warning
            .message
            .split('\'')
            .nth(1)
            .is_some_and(|variable| rule.contains(&format!("({variable},")))
}

#[test]
fn the_cross_field_rules_are_in_place() {
    let rules_of = |kind: &str| -> Vec<String> {
        rule_sites(&schema_of(&crd(kind)))
            .into_iter()
            .flat_map(|(path, _, rules, _)| rules.into_iter().map(move |r| format!("{path}: {r}")))
            .collect()
    };
    let has = |kind: &str, needle: &str| {
        let rules = rules_of(kind);
        assert!(
            rules.iter().any(|r| r.contains(needle)),
            "{kind} lacks a rule containing {needle:?}: {rules:#?}"
        );
    };
    has("Subscription", ".spec: oldSelf.state != 'Cancelled'");
    has("Subscription", ": (has(self.spec.namespaces)");
    has("Subscription", ".spec.payment: self.state == 'PastDue'");
    has("Channel", ".spec: self.type == 'Webhook'");
    has("Channel", ".spec.webhook.url: isURL(self)");
    has(
        "Campaign",
        ".spec: !(has(self.schedule) && has(self.trigger))",
    );
    has(
        "Campaign",
        ".spec.variants: size(self) == 0 || self.map(v, v.weight).sum() > 0",
    );
    has(
        "Campaign",
        ".spec.trigger: has(self.phaseEntered) != has(self.daysBeforeTrialEnd)",
    );
    has("Campaign", ".spec.quietHours: self.start != self.end");
    has("FirmwareRelease", ".spec.version: self == oldSelf");
    has("FirmwareRelease", ".spec.artifact: self == oldSelf");
    has(
        "FirmwareRollout",
        ".spec.waves: has(self[size(self) - 1].percent)",
    );
    has(
        "FirmwareRollout",
        ".spec.waves[]: has(self.percent) != has(self.count)",
    );
    has("FirmwareRollout", ".spec.selector:");
    has(
        "FirmwareRollout",
        ".spec.maintenanceWindow: self.start != self.end",
    );
}

#[test]
fn defaults_satisfy_their_own_schema() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        walk("", &schema, &mut |path, node| {
            if let Some(default) = node.get("default") {
                let mut probe = node.clone();
                // A default is validated against its own node, CEL rules included.
                probe.as_object_mut().unwrap().remove("default");
                let wrapped = serde_json::json!({"type": "object", "properties": {"v": probe}});
                let value = serde_json::json!({"v": default});
                assert_eq!(
                    kube_cel::Validator::new().validate(&wrapped, &value, None),
                    Ok(()),
                    "{kind}{path}: default {default}"
                );
            }
        });
    }
}
