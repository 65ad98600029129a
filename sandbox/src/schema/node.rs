//! The compiled form of a CRD version's structural schema: one [`Node`] per schema node, with
//! regexes, formats and CEL rules prepared once when the CRD is registered.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::cel::CelRule;
use super::formats::Format;
use super::pattern::Pattern;

/// A JSON type named by a schema's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonType {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl JsonType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "object" => Self::Object,
            "array" => Self::Array,
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Object => "object",
            Self::Array => "array",
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
        }
    }
}

/// `additionalProperties` of an object schema.
#[derive(Debug)]
pub(crate) enum AdditionalProperties {
    /// Not set: unknown fields are pruned (structural schemas).
    Unset,
    /// `true` or `false`.
    Allowed(bool),
    /// A schema for every value of a map.
    Schema(Box<Node>),
}

/// `x-kubernetes-list-type` of an array schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListKind {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// `minimum` / `maximum` with its `exclusive*` flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub value: f64,
    pub exclusive: bool,
}

/// One compiled schema node.
#[derive(Debug)]
pub(crate) struct Node {
    pub ty: Option<JsonType>,
    pub int_or_string: bool,
    pub nullable: bool,
    /// The format as written in the schema (for messages) and, when the apiserver validates
    /// it, its validator.
    pub format: Option<(String, Format)>,
    pub properties: BTreeMap<String, Node>,
    pub additional_properties: AdditionalProperties,
    pub items: Option<Box<Node>>,
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    pub minimum: Option<Bound>,
    pub maximum: Option<Bound>,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<Pattern>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub preserve_unknown_fields: bool,
    pub embedded_resource: bool,
    pub list: ListKind,
    /// `x-kubernetes-map-type: atomic`: the object is replaced and owned as a whole.
    pub atomic_map: bool,
    pub default: Option<Value>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
    pub rules: Vec<CelRule>,
}

impl Node {
    /// Whether this node or any below it has `x-kubernetes-validations` rules.
    pub(crate) fn has_rules(&self) -> bool {
        !self.rules.is_empty()
            || self.properties.values().any(Node::has_rules)
            || matches!(&self.additional_properties, AdditionalProperties::Schema(s) if s.has_rules())
            || self.items.as_deref().is_some_and(Node::has_rules)
            || self.all_of.iter().any(Node::has_rules)
    }

    /// Compiles a schema node; `path` names it in errors (`openAPIV3Schema.properties[spec]`).
    pub(crate) fn compile(schema: &Value, path: &str) -> Result<Node, String> {
        let obj = schema
            .as_object()
            .ok_or_else(|| format!("{path}: must be a schema object"))?;
        let u64_of = |key: &str| -> Result<Option<u64>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("{path}.{key}: must be a non-negative integer")),
            }
        };
        let f64_of = |key: &str| -> Result<Option<f64>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| format!("{path}.{key}: must be a number")),
            }
        };
        let bool_of = |key: &str| obj.get(key).and_then(Value::as_bool).unwrap_or(false);

        let ty = match obj.get("type").and_then(Value::as_str) {
            None | Some("") => None,
            Some(t) => Some(
                JsonType::parse(t).ok_or_else(|| format!("{path}.type: unsupported type {t:?}"))?,
            ),
        };

        let mut properties = BTreeMap::new();
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                properties.insert(
                    name.clone(),
                    Node::compile(prop, &format!("{path}.properties[{name}]"))?,
                );
            }
        }

        let additional_properties = match obj.get("additionalProperties") {
            None | Some(Value::Null) => AdditionalProperties::Unset,
            Some(Value::Bool(b)) => AdditionalProperties::Allowed(*b),
            Some(s) => AdditionalProperties::Schema(Box::new(Node::compile(
                s,
                &format!("{path}.additionalProperties"),
            )?)),
        };

        let items = match obj.get("items") {
            None | Some(Value::Null) => None,
            Some(s) => Some(Box::new(Node::compile(s, &format!("{path}.items"))?)),
        };

        let required = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();

        let list = match obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListKind::Set,
            Some("map") => ListKind::Map(
                obj.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| {
                        keys.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListKind::Atomic,
        };

        let format = obj
            .get("format")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
            .and_then(|f| Format::recognise(f).map(|v| (f.to_string(), v)));

        let pattern = match obj.get("pattern").and_then(Value::as_str) {
            None => None,
            Some(p) => Some(Pattern::compile(p).map_err(|e| format!("{path}.pattern: {e}"))?),
        };

        let branches = |key: &str| -> Result<Vec<Node>, String> {
            obj.get(key)
                .and_then(Value::as_array)
                .map(|all| {
                    all.iter()
                        .enumerate()
                        .map(|(i, s)| Node::compile(s, &format!("{path}.{key}[{i}]")))
                        .collect()
                })
                .unwrap_or_else(|| Ok(Vec::new()))
        };

        let not = match obj.get("not") {
            None | Some(Value::Null) => None,
            Some(s) => Some(Box::new(Node::compile(s, &format!("{path}.not"))?)),
        };

        let int_or_string = bool_of("x-kubernetes-int-or-string");
        // The apiserver's structural type of an int-or-string node is empty.
        let type_name = if int_or_string {
            ""
        } else {
            ty.map(JsonType::as_str).unwrap_or("")
        };
        let rules = super::cel::compile_rules(schema, path, type_name)?;

        let mut node = Node {
            ty,
            int_or_string,
            nullable: bool_of("nullable"),
            format,
            properties,
            additional_properties,
            items,
            required,
            enumeration: obj.get("enum").and_then(Value::as_array).cloned(),
            minimum: f64_of("minimum")?.map(|value| Bound {
                value,
                exclusive: bool_of("exclusiveMinimum"),
            }),
            maximum: f64_of("maximum")?.map(|value| Bound {
                value,
                exclusive: bool_of("exclusiveMaximum"),
            }),
            multiple_of: f64_of("multipleOf")?,
            min_length: u64_of("minLength")?,
            max_length: u64_of("maxLength")?,
            pattern,
            min_items: u64_of("minItems")?,
            max_items: u64_of("maxItems")?,
            unique_items: bool_of("uniqueItems"),
            min_properties: u64_of("minProperties")?,
            max_properties: u64_of("maxProperties")?,
            preserve_unknown_fields: bool_of("x-kubernetes-preserve-unknown-fields"),
            embedded_resource: bool_of("x-kubernetes-embedded-resource"),
            list,
            atomic_map: obj.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
            default: None,
            all_of: branches("allOf")?,
            any_of: branches("anyOf")?,
            one_of: branches("oneOf")?,
            not,
            rules,
        };
        // The apiserver rejects CRDs whose defaults carry unknown fields; pruning them here
        // keeps the stored objects structural in the same way.
        if let Some(default) = obj.get("default") {
            let mut default = default.clone();
            super::prune::prune(&mut default, &node, false);
            node.default = Some(default);
        }
        Ok(node)
    }

    /// The schema node of a property: a declared property or the `additionalProperties` schema.
    pub(crate) fn child(&self, name: &str) -> Option<&Node> {
        self.properties
            .get(name)
            .or(match &self.additional_properties {
                AdditionalProperties::Schema(s) => Some(s),
                _ => None,
            })
    }
}

/// Removes every `x-kubernetes-validations` below `schema` (but not on it), so that a schema
/// compiled for one rule evaluates only that rule.
pub(crate) fn strip_nested_rules(schema: &mut Map<String, Value>) {
    fn strip(value: &mut Value) {
        if let Some(obj) = value.as_object_mut() {
            obj.remove("x-kubernetes-validations");
            strip_nested_rules(obj);
        }
    }
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        for prop in props.values_mut() {
            strip(prop);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = schema.get_mut(key) {
            strip(child);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = schema.get_mut(key) {
            for branch in branches {
                strip(branch);
            }
        }
    }
}
