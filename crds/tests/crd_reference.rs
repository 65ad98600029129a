//! `docs/crd-reference.md` stays true to the types: the sections between
//! `<!-- BEGIN GENERATED: <Kind> -->` and `<!-- END GENERATED: <Kind> -->` are generated from
//! the CRDs (names, printer columns, every field with its type, default and constraints, and
//! the CEL rules). Regenerate with:
//!
//! ```sh
//! FLOTILLA_UPDATE_CRDS=1 cargo test -p flotilla-crds --test crd_reference
//! ```

mod support;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

const REGENERATE: &str = "FLOTILLA_UPDATE_CRDS=1 cargo test -p flotilla-crds --test crd_reference";

fn reference_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/crd-reference.md")
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn code(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("`{}`", text.replace('|', "\\|"))
}

fn number(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| value.to_string(), |n| format!("{n}"))
}

/// The type of a schema node, for people: `string`, `[]object`, `map[string]int-or-string`...
fn type_name(node: &Value) -> String {
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "int-or-string".into();
    }
    match node["type"].as_str().unwrap_or("any") {
        "array" => format!("[]{}", type_name(&node["items"])),
        "object"
            if node
                .get("additionalProperties")
                .is_some_and(Value::is_object) =>
        {
            format!("map[string]{}", type_name(&node["additionalProperties"]))
        }
        "string" if node["format"] == "date-time" => "time (RFC 3339)".into(),
        other => other.into(),
    }
}

/// Constraints of a node and of the values of a list or map under it.
fn constraints(node: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |node: &Value, prefix: &str| {
        if let Some(values) = node.get("enum").and_then(Value::as_array) {
            out.push(format!(
                "{prefix}one of {}",
                values.iter().map(code).collect::<Vec<_>>().join(", ")
            ));
        }
        match (node.get("minimum"), node.get("maximum")) {
            (Some(min), Some(max)) => out.push(format!("{prefix}{}–{}", number(min), number(max))),
            (Some(min), None) => out.push(format!("{prefix}≥ {}", number(min))),
            (None, Some(max)) => out.push(format!("{prefix}≤ {}", number(max))),
            (None, None) => {}
        }
        match (node.get("minLength"), node.get("maxLength")) {
            (Some(min), Some(max)) if min == max => out.push(format!("{prefix}length {min}")),
            (Some(min), Some(max)) => out.push(format!("{prefix}length {min}–{max}")),
            (None, Some(max)) => out.push(format!("{prefix}length ≤ {max}")),
            (Some(min), None) => out.push(format!("{prefix}length ≥ {min}")),
            (None, None) => {}
        }
        if let Some(pattern) = node.get("pattern") {
            out.push(format!("{prefix}pattern {}", code(pattern)));
        }
        match (node.get("minItems"), node.get("maxItems")) {
            (Some(min), Some(max)) => out.push(format!("{prefix}{min}–{max} items")),
            (None, Some(max)) => out.push(format!("{prefix}≤ {max} items")),
            (Some(min), None) => out.push(format!("{prefix}≥ {min} items")),
            (None, None) => {}
        }
        if let Some(max) = node.get("maxProperties") {
            out.push(format!("{prefix}≤ {max} entries"));
        }
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => out.push(format!("{prefix}unique")),
            Some("map") => {
                let keys: Vec<_> = node["x-kubernetes-list-map-keys"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(code)
                    .collect();
                out.push(format!("{prefix}unique by {}", keys.join(" + ")));
            }
            _ => {}
        }
    };
    add(node, "");
    if let Some(items) = node.get("items") {
        add(items, "each: ");
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        add(values, "each value: ");
    }
    out
}

fn field_rows(path: &str, node: &Value, required: bool, rows: &mut String) {
    let default = node.get("default").map(code).unwrap_or_default();
    let mut description = one_line(node["description"].as_str().unwrap_or_default());
    let limits = constraints(node);
    if !limits.is_empty() {
        let _ = write!(description, " <br>*{}*", limits.join("; "));
    }
    let _ = writeln!(
        rows,
        "| `{path}` | {} | {} | {default} | {description} |",
        type_name(node),
        if required { "yes" } else { "" }
    );
    let object = if node["type"] == "array" {
        &node["items"]
    } else {
        node
    };
    let child_prefix = if node["type"] == "array" {
        format!("{path}[]")
    } else {
        path.to_owned()
    };
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        let required: Vec<&str> = object["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // Conditions have the standard metav1.Condition shape; listing it for every kind is noise.
        if path.ends_with(".conditions") {
            return;
        }
        for (name, child) in properties {
            field_rows(
                &format!("{child_prefix}.{name}"),
                child,
                required.contains(&name.as_str()),
                rows,
            );
        }
    }
}

fn rules(path: &str, node: &Value, out: &mut Vec<String>) {
    if let Some(list) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in list {
            let message = rule["message"].as_str().unwrap_or("(no message)");
            out.push(format!(
                "- `{}`: {} — `{}`",
                if path.is_empty() { "<object>" } else { path },
                message,
                rule["rule"].as_str().unwrap()
            ));
        }
    }
    let object = if node["type"] == "array" {
        &node["items"]
    } else {
        node
    };
    let child_prefix = if node["type"] == "array" {
        format!("{path}[]")
    } else {
        path.to_owned()
    };
    if let Some(properties) = object.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = if child_prefix.is_empty() {
                name.clone()
            } else {
                format!("{child_prefix}.{name}")
            };
            rules(&child_path, child, out);
        }
    }
}

fn generated_section(crd: &CustomResourceDefinition) -> String {
    let names = &crd.spec.names;
    let schema = support::schema_of(crd);
    let mut out = String::new();
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(
        out,
        "| API version | `{}/{}` |",
        crd.spec.group, crd.spec.versions[0].name
    );
    let _ = writeln!(out, "| Scope | {} |", crd.spec.scope);
    let _ = writeln!(
        out,
        "| Resource | `{}` (singular `{}`) |",
        names.plural,
        names.singular.as_deref().unwrap_or_default()
    );
    let short: Vec<String> = names
        .short_names
        .iter()
        .flatten()
        .map(|s| format!("`{s}`"))
        .collect();
    let _ = writeln!(out, "| Short names | {} |", short.join(", "));
    let categories: Vec<String> = names
        .categories
        .iter()
        .flatten()
        .map(|s| format!("`{s}`"))
        .collect();
    let _ = writeln!(out, "| Categories | {} |", categories.join(", "));
    let _ = writeln!(out, "| Subresources | `status` |");

    let _ = writeln!(
        out,
        "\n**Printer columns** (`kubectl get {}`; priority-1 columns with `-o wide`):\n",
        names.plural
    );
    let _ = writeln!(
        out,
        "| Column | Type | JSONPath | Wide only |\n|---|---|---|---|"
    );
    for column in crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | {} |",
            column.name,
            column.type_,
            column.json_path.replace('|', "\\|"),
            if column.priority.unwrap_or(0) > 0 {
                "yes"
            } else {
                ""
            }
        );
    }

    let _ = writeln!(
        out,
        "\n**Fields** (conditions have the standard `metav1.Condition` shape and are a list-map keyed by `type`):\n"
    );
    let _ = writeln!(
        out,
        "| Field | Type | Required | Default | Description |\n|---|---|---|---|---|"
    );
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for top in ["spec", "status"] {
        if let Some(node) = schema["properties"].get(top) {
            field_rows(top, node, required.contains(&top), &mut out);
        }
    }

    let mut cel = Vec::new();
    rules("", &schema, &mut cel);
    let _ = writeln!(
        out,
        "\n**CEL validation rules** (checked by the API server on create and update):\n"
    );
    if cel.is_empty() {
        let _ = writeln!(out, "None beyond the field constraints above.");
    } else {
        for rule in cel {
            let _ = writeln!(out, "{rule}");
        }
    }
    out
}

fn regenerate(document: &str) -> Result<String, String> {
    let mut result = document.to_owned();
    for crd in flotilla_crds::all_crds() {
        let kind = &crd.spec.names.kind;
        let begin = format!("<!-- BEGIN GENERATED: {kind} -->\n");
        let end = format!("<!-- END GENERATED: {kind} -->");
        let start = result
            .find(&begin)
            .ok_or_else(|| format!("docs/crd-reference.md lacks the marker {begin:?}"))?
            + begin.len();
        let stop = result[start..]
            .find(&end)
            .ok_or_else(|| format!("docs/crd-reference.md lacks the marker {end:?}"))?
            + start;
        result.replace_range(start..stop, &generated_section(&crd));
    }
    Ok(result)
}

#[test]
fn crd_reference_matches_the_types() {
    let path = reference_path();
    let document = fs::read_to_string(&path).expect("docs/crd-reference.md exists");
    let regenerated = regenerate(&document).unwrap_or_else(|e| panic!("{e}"));
    if std::env::var_os("FLOTILLA_UPDATE_CRDS").is_some() {
        fs::write(&path, &regenerated).expect("write docs/crd-reference.md");
        return;
    }
    assert!(
        document == regenerated,
        "docs/crd-reference.md is out of date with the types; regenerate it with:\n  {REGENERATE}"
    );
}
