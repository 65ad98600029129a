//! The real Flotilla CRDs compile into admission schemas and printer columns, and admit or
//! reject Plans like a cluster would.

use flotilla_sandbox::schema::{CrdSchema, Source};
use flotilla_sandbox::table::{IncludeObject, PrinterColumn, to_table_at};
use serde_json::{Value, json};

fn crds() -> Vec<Value> {
    flotilla_crds::all_crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("CRDs serialize"))
        .collect()
}

fn version_of<'a>(crd: &'a Value, kind: &str) -> Option<&'a Value> {
    (crd["spec"]["names"]["kind"] == kind).then(|| &crd["spec"]["versions"][0])
}

fn plan_version() -> Value {
    crds()
        .iter()
        .find_map(|crd| version_of(crd, "Plan").cloned())
        .expect("the Plan CRD exists")
}

#[test]
fn every_crd_version_schema_compiles() {
    let crds = crds();
    assert!(!crds.is_empty());
    for crd in &crds {
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            if let Err(e) = CrdSchema::new(schema) {
                panic!("{} {}: {e}", crd["metadata"]["name"], version["name"]);
            }
        }
    }
}

#[test]
fn plans_are_pruned_defaulted_and_validated() {
    let version = plan_version();
    let schema = CrdSchema::new(&version["schema"]["openAPIV3Schema"]).unwrap();

    let mut plan = json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "team"},
        "spec": {"displayName": "Team", "trialDays": 14, "surprise": true}
    });
    schema
        .admit(&mut plan, None, Source::Decoded)
        .expect("a valid Plan is admitted");
    assert_eq!(
        plan["spec"].get("surprise"),
        None,
        "unknown fields are pruned"
    );
    assert_eq!(plan["spec"]["displayName"], "Team");

    let mut invalid = json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "team"},
        "spec": {"displayName": "Team", "trialDays": -1}
    });
    let errors = schema
        .admit(&mut invalid, None, Source::Decoded)
        .unwrap_err();
    assert!(
        errors.iter().any(|e| e.to_string()
            == "spec.trialDays: Invalid value: -1: spec.trialDays in body should be greater than or equal to 0"),
        "{errors:?}"
    );

    let mut nameless = json!({"apiVersion": "flotilla.dev/v1alpha1", "kind": "Plan", "metadata": {"name": "x"}, "spec": {}});
    let errors = schema
        .admit(&mut nameless, None, Source::Decoded)
        .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.to_string() == "spec.displayName: Required value"),
        "{errors:?}"
    );
}

#[test]
fn plan_printer_columns_render() {
    let version = plan_version();
    let columns: Vec<PrinterColumn> = version["additionalPrinterColumns"]
        .as_array()
        .map(|cols| cols.iter().filter_map(PrinterColumn::from_crd).collect())
        .unwrap_or_default();
    assert!(!columns.is_empty(), "the Plan CRD declares printer columns");
    let plan = json!({
        "apiVersion": "flotilla.dev/v1alpha1",
        "kind": "Plan",
        "metadata": {"name": "team", "creationTimestamp": "2024-05-01T09:00:00Z"},
        "spec": {"displayName": "Team", "trialDays": 14}
    });
    let table = to_table_at(
        &[plan],
        &columns,
        IncludeObject::None,
        json!({}),
        "2024-05-01T10:00:00Z".parse().unwrap(),
    );
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(headers[0], "Name");
    let display = headers
        .iter()
        .position(|h| *h == "Display")
        .expect("Display column");
    let trial = headers
        .iter()
        .position(|h| *h == "Trial")
        .expect("Trial column");
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "team");
    assert_eq!(cells[display], "Team");
    assert_eq!(cells[trial], 14);
}
