//! `meta.k8s.io/v1` `Table` rendering for `kubectl get`
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), as apiextensions-apiserver's
//! `tableconvertor` renders custom resources: a `Name` column, then the CRD's
//! `additionalPrinterColumns` (or `Age` when it declares none), cells evaluated with
//! client-go JSONPath and typed by the column type, and each row's `object` per `includeObject`.

mod jsonpath;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

pub use jsonpath::JsonPath;

use crate::schema::go_fmt;

/// `ObjectMeta.name`'s API documentation, the `Name` column's description.
const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `ObjectMeta.creationTimestamp`'s API documentation, the default `Age` column's description.
const CREATION_TIMESTAMP_DESCRIPTION: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// One `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    /// Optional format hint (`int32`, `name`, ...), passed through to the client.
    pub format: String,
    /// Column description; empty means the apiserver's default description.
    pub description: String,
    /// 0 for `kubectl get`, higher for `-o wide`.
    pub priority: i32,
    /// The JSONPath of the cell value, e.g. `.status.phase`.
    pub json_path: String,
}

impl PrinterColumn {
    /// Reads a CRD `additionalPrinterColumns` entry (`{name, type, format, description,
    /// priority, jsonPath}`).
    pub fn from_crd(column: &Value) -> Option<Self> {
        let text = |k: &str| {
            column
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        Some(PrinterColumn {
            name: column.get("name")?.as_str()?.to_string(),
            type_: text("type"),
            format: text("format"),
            description: text("description"),
            priority: column
                .get("priority")
                .and_then(Value::as_i64)
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            json_path: column.get("jsonPath")?.as_str()?.to_string(),
        })
    }

    /// The column the apiserver serves for a CRD version without printer columns.
    pub fn age() -> Self {
        PrinterColumn {
            name: "Age".to_string(),
            type_: "date".to_string(),
            format: String::new(),
            description: CREATION_TIMESTAMP_DESCRIPTION.to_string(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".to_string(),
        }
    }

    fn definition(&self) -> Value {
        let description = if self.description.is_empty() {
            format!(
                "Custom resource definition column (in JSONPath format): {}",
                self.json_path
            )
        } else {
            self.description.clone()
        };
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": description,
            "priority": self.priority,
        })
    }
}

/// What each row carries in `object` (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter (absent or empty means `Metadata`); the error
    /// is the apiserver's 400 message.
    pub fn from_query(value: Option<&str>) -> Result<Self, String> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(Self::Metadata),
            "None" => Ok(Self::None),
            "Object" => Ok(Self::Object),
            other => Err(format!(
                "unrecognized includeObject value: {}",
                go_fmt::quote(other)
            )),
        }
    }
}

/// Renders `objects` as a `Table` at the current time. See [`to_table_at`].
pub fn to_table(
    objects: &[Value],
    columns: &[PrinterColumn],
    include: IncludeObject,
    list_metadata: Value,
) -> Value {
    to_table_at(objects, columns, include, list_metadata, Timestamp::now())
}

/// Renders `objects` as a `Table`: columns `Name` plus `columns` (the `Age` column when
/// `columns` is empty), one row per object, `list_metadata` (`resourceVersion`, `continue`,
/// `remainingItemCount`) as the table's `metadata`. Date cells are ages relative to `now`.
pub fn to_table_at(
    objects: &[Value],
    columns: &[PrinterColumn],
    include: IncludeObject,
    list_metadata: Value,
    now: Timestamp,
) -> Value {
    let default_columns;
    let columns = if columns.is_empty() {
        default_columns = [PrinterColumn::age()];
        &default_columns[..]
    } else {
        columns
    };
    let paths: Vec<Option<JsonPath>> = columns
        .iter()
        .map(|c| JsonPath::parse(&c.json_path).ok())
        .collect();

    let mut definitions = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": NAME_DESCRIPTION,
        "priority": 0,
    })];
    definitions.extend(columns.iter().map(PrinterColumn::definition));

    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![
                object
                    .pointer("/metadata/name")
                    .cloned()
                    .unwrap_or_else(|| Value::from("")),
            ];
            for (column, path) in columns.iter().zip(&paths) {
                let found = path
                    .as_ref()
                    .and_then(|p| p.find(object).into_iter().next());
                cells.push(found.map_or(Value::Null, |v| cell(&column.type_, v, now)));
            }
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert("object".into(), partial_object_metadata(object));
                }
                IncludeObject::Object => {
                    row.insert("object".into(), object.clone());
                }
            }
            Value::Object(row)
        })
        .collect();

    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// `PartialObjectMetadata` of an object, as the `Metadata` row object.
fn partial_object_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The JSONPath value as a cell of the column type (`cellForJSONValue`); values of
/// the wrong type are empty cells.
fn cell(column_type: &str, value: &Value, now: Timestamp) -> Value {
    match (column_type, value) {
        (_, Value::Null) => Value::Null,
        // String columns print any value like kubectl's JSONPath printer does.
        ("string", Value::Object(_) | Value::Array(_)) => Value::String(value.to_string()),
        ("string", v) => Value::String(go_fmt::plain(v)),
        ("integer", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => n.as_f64().map_or(Value::Null, |f| Value::from(f as i64)),
        },
        ("number", Value::Number(n)) => n.as_f64().map_or(Value::Null, Value::from),
        ("boolean", Value::Bool(b)) => Value::Bool(*b),
        ("date", Value::String(s)) => Value::String(date_cell(s, now)),
        _ => Value::Null,
    }
}

/// A date cell: the age of an RFC 3339 timestamp, `<unknown>` for an empty one and `<invalid>`
/// for one that does not parse.
fn date_cell(s: &str, now: Timestamp) -> String {
    if s.is_empty() || s == "null" {
        return "<unknown>".to_string();
    }
    match s.parse::<Timestamp>() {
        Ok(t) => human_duration(now.duration_since(t).as_secs()),
        Err(_) => "<invalid>".to_string(),
    }
}

/// apimachinery's `duration.HumanDuration` of an age in seconds: `45s`, `5m30s`, `17m`,
/// `3h10m`, `9h`, `3d4h`, `25d`, `2y20d`, `9y`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The first value `path` selects in `object` (`.status.phase`, `.spec.x[0].y`,
/// `.metadata.labels.a\.b`, `{.status.conditions[?(@.type=="Ready")].status}`), or `None` when
/// nothing matches or the path does not parse.
pub fn evaluate_json_path(object: &Value, path: &str) -> Option<Value> {
    JsonPath::parse(path)
        .ok()?
        .find(object)
        .into_iter()
        .next()
        .cloned()
}
