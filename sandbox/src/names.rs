//! Object names and `metadata` validation with apimachinery's rules and messages
//! (`util/validation` and `api/validation/objectmeta.go`), for the core to check
//! `metadata.name`, `generateName`, `namespace`, labels, annotations, finalizers and owner
//! references before it stores an object.

use std::sync::LazyLock;

use rand::Rng;
use regex::Regex;
use serde_json::{Map, Value};

use crate::schema::FieldError;

/// Maximum length of a DNS-1123 label (and of a label value or a qualified name's name part).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Maximum total size of an object's annotations (keys and values).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_ERR: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

fn subdomain_fmt() -> String {
    format!("{DNS1123_LABEL_FMT}(\\.{DNS1123_LABEL_FMT})*")
}

fn anchored(fmt: &str) -> Regex {
    Regex::new(&format!("^{fmt}$")).expect("apimachinery's name formats are valid regexes")
}

static DNS1123_LABEL: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1123_LABEL_FMT));
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| anchored(&subdomain_fmt()));
static DNS1035_LABEL: LazyLock<Regex> = LazyLock::new(|| anchored(DNS1035_LABEL_FMT));
static QUALIFIED_NAME: LazyLock<Regex> = LazyLock::new(|| anchored(QUALIFIED_NAME_FMT));
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| anchored(&format!("({QUALIFIED_NAME_FMT})?")));

/// `validation.MaxLenError`.
fn max_len_error(length: usize) -> String {
    format!("must be no more than {length} characters")
}

/// `validation.RegexError`: the message, examples and the regex, built exactly as Go does
/// (including its `'a',  or 'b', ` separator).
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{example}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

/// `IsDNS1123Label`: the reasons `value` is not a DNS-1123 label (empty when it is one).
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1123_LABEL.is_match(value) {
        if DNS1123_SUBDOMAIN.is_match(value) {
            errors.push("must not contain dots".to_string());
        } else {
            errors.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errors
}

/// `IsDNS1123Subdomain`: the reasons `value` is not a DNS-1123 subdomain.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            &subdomain_fmt(),
            &["example.com"],
        ));
    }
    errors
}

/// `IsDNS1035Label` (Service names): the reasons `value` is not a DNS-1035 label.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !DNS1035_LABEL.is_match(value) {
        errors.push(regex_error(
            DNS1035_LABEL_ERR,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// `IsQualifiedName` (label and annotation keys, finalizers): `[prefix/]name`.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(format!(
            "name part {}",
            max_len_error(DNS1123_LABEL_MAX_LENGTH)
        ));
    }
    if !QUALIFIED_NAME.is_match(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// `IsValidLabelValue`.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        errors.push(max_len_error(DNS1123_LABEL_MAX_LENGTH));
    }
    if !LABEL_VALUE.is_match(value) {
        errors.push(regex_error(
            LABEL_VALUE_ERR,
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// How a kind's object names are validated (the registry's `ValidateNameFunc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameRule {
    /// DNS-1123 subdomain: custom resources and most built-in kinds.
    #[default]
    Dns1123Subdomain,
    /// DNS-1123 label: Namespaces.
    Dns1123Label,
    /// DNS-1035 label: Services.
    Dns1035Label,
    /// A path segment (`path.IsValidPathSegmentName`): the RBAC kinds (`ValidateRBACName`),
    /// whose names are often like `system:discovery`.
    PathSegment,
}

/// `path.IsValidPathSegmentName`
pub fn path_segment_name_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

impl NameRule {
    /// The reasons `name` is invalid. A `generateName` prefix (`prefix: true`) may end in `-`.
    pub fn validate(self, name: &str, prefix: bool) -> Vec<String> {
        // maskTrailingDash: a prefix such as "web-" is fine once a suffix is appended.
        let masked;
        let name = if prefix && name.len() > 1 && name.ends_with('-') {
            masked = format!("{}a", &name[..name.len() - 1]);
            masked.as_str()
        } else {
            name
        };
        match self {
            NameRule::Dns1123Subdomain => is_dns1123_subdomain(name),
            NameRule::Dns1123Label => is_dns1123_label(name),
            NameRule::Dns1035Label => is_dns1035_label(name),
            NameRule::PathSegment => path_segment_name_errors(name),
        }
    }
}

/// `metadata.name` check in the style of the contract helper: `Ok` or the joined reasons.
pub fn validate_object_meta_name(name: &str, rule: NameRule) -> Result<(), String> {
    let errors = rule.validate(name, false);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(", "))
    }
}

fn text<'a>(metadata: &'a Value, key: &str) -> &'a str {
    metadata.get(key).and_then(Value::as_str).unwrap_or("")
}

fn string_map(metadata: &Value, key: &str) -> Map<String, Value> {
    metadata
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// `ValidateObjectMetaAccessor` for a create: `name` or `generateName`, `namespace` present
/// exactly when the kind is namespaced, and well-formed labels, annotations, finalizers and
/// owner references. Paths are rooted at `metadata`.
pub fn validate_object_meta(metadata: &Value, namespaced: bool, rule: NameRule) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let generate_name = text(metadata, "generateName");
    if !generate_name.is_empty() {
        for msg in rule.validate(generate_name, true) {
            errors.push(FieldError::invalid(
                "metadata.generateName",
                &Value::from(generate_name),
                &msg,
            ));
        }
    }
    let name = text(metadata, "name");
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in rule.validate(name, false) {
            errors.push(FieldError::invalid(
                "metadata.name",
                &Value::from(name),
                &msg,
            ));
        }
    }
    let namespace = text(metadata, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errors.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in is_dns1123_label(namespace) {
                errors.push(FieldError::invalid(
                    "metadata.namespace",
                    &Value::from(namespace),
                    &msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errors.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    if let Some(generation) = metadata.get("generation").and_then(Value::as_i64)
        && generation < 0
    {
        errors.push(FieldError::invalid(
            "metadata.generation",
            &Value::from(generation),
            "must be greater than or equal to 0",
        ));
    }
    errors.extend(validate_common(metadata));
    errors
}

/// `ValidateObjectMetaAccessorUpdate`, after the caller copied the server-managed fields
/// (`uid`, `creationTimestamp`, `deletionTimestamp`) from the old object: immutable `name`,
/// `namespace` and `uid`, no new finalizers once deletion started, and well-formed labels,
/// annotations, finalizers and owner references.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old.get("deletionTimestamp").is_some_and(|t| !t.is_null()) {
        let old_finalizers = string_list(old, "finalizers");
        let added: Vec<String> = string_list(new, "finalizers")
            .into_iter()
            .filter(|f| !old_finalizers.contains(f))
            .collect();
        if !added.is_empty() {
            let listed: Vec<String> = added
                .iter()
                .map(|f| crate::schema::go_fmt::quote(f))
                .collect();
            errors.push(FieldError::forbidden(
                "metadata.finalizers",
                &format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    listed.join(", ")
                ),
            ));
        }
    }
    for key in ["name", "namespace", "uid"] {
        let (now, before) = (text(new, key), text(old, key));
        if now != before {
            errors.push(FieldError::invalid(
                format!("metadata.{key}"),
                &Value::from(now),
                "field is immutable",
            ));
        }
    }
    errors.extend(validate_common(new));
    errors
}

fn string_list(metadata: &Value, key: &str) -> Vec<String> {
    metadata
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Labels, annotations, finalizers and owner references, shared by create and update.
fn validate_common(metadata: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (key, value) in string_map(metadata, "labels") {
        for msg in is_qualified_name(&key) {
            errors.push(FieldError::invalid(
                "metadata.labels",
                &Value::from(key.as_str()),
                &msg,
            ));
        }
        let value = value.as_str().unwrap_or("");
        for msg in is_valid_label_value(value) {
            errors.push(FieldError::invalid(
                "metadata.labels",
                &Value::from(value),
                &msg,
            ));
        }
    }
    let annotations = string_map(metadata, "annotations");
    let mut total = 0;
    for (key, value) in &annotations {
        // Annotation keys are qualified names in any case.
        for msg in is_qualified_name(&key.to_lowercase()) {
            errors.push(FieldError::invalid(
                "metadata.annotations",
                &Value::from(key.as_str()),
                &msg,
            ));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(
            "metadata.annotations",
            TOTAL_ANNOTATION_SIZE_LIMIT,
        ));
    }
    let finalizers = string_list(metadata, "finalizers");
    for finalizer in &finalizers {
        for msg in is_qualified_name(finalizer) {
            errors.push(FieldError::invalid(
                "metadata.finalizers",
                &Value::from(finalizer.as_str()),
                &msg,
            ));
        }
    }
    if finalizers.iter().any(|f| f == "orphan")
        && finalizers.iter().any(|f| f == "foregroundDeletion")
    {
        errors.push(FieldError::invalid(
            "metadata.finalizers",
            &Value::from(finalizers.clone()),
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errors.extend(validate_owner_references(metadata));
    errors
}

/// `ValidateOwnerReferences`: each reference names a versioned kind, a name and a UID, and at
/// most one is the controller.
fn validate_owner_references(metadata: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let Some(references) = metadata.get("ownerReferences").and_then(Value::as_array) else {
        return errors;
    };
    let path = "metadata.ownerReferences";
    let mut controller: Option<String> = None;
    for reference in references {
        let field = |k: &str| text(reference, k);
        let api_version = field("apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        if version.is_empty() {
            errors.push(FieldError::invalid(
                format!("{path}.apiVersion"),
                &Value::from(api_version),
                "version must not be empty",
            ));
        }
        for key in ["kind", "name", "uid"] {
            if field(key).is_empty() {
                errors.push(FieldError::invalid(
                    format!("{path}.{key}"),
                    &Value::from(""),
                    "must not be empty",
                ));
            }
        }
        if reference.get("controller").and_then(Value::as_bool) == Some(true) {
            let this = format!("{}/{}", field("kind"), field("name"));
            match &controller {
                Some(first) => errors.push(FieldError::invalid_without_value(
                    path,
                    &format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"
                    ),
                )),
                None => controller = Some(this),
            }
        }
    }
    errors
}

/// The alphabet of generated name suffixes (`utilrand.String`): no vowels, no confusable
/// characters.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of the random suffix appended to `generateName`.
const SUFFIX_LENGTH: usize = 5;

/// The name the apiserver generates from `generateName`: the prefix, cut to leave room within
/// 63 characters, followed by five random characters.
pub fn generate_name(prefix: &str, rng: &mut impl Rng) -> String {
    let max_prefix = DNS1123_LABEL_MAX_LENGTH - SUFFIX_LENGTH;
    let mut cut = prefix.len().min(max_prefix);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let suffix: String = (0..SUFFIX_LENGTH)
        .map(|_| char::from(SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())]))
        .collect();
    format!("{}{suffix}", &prefix[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subdomain_messages_match_apimachinery() {
        assert!(is_dns1123_subdomain("gold.plans").is_empty());
        assert_eq!(
            is_dns1123_subdomain("Gold"),
            [
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254))[0],
            "must be no more than 253 characters"
        );
    }

    #[test]
    fn label_messages() {
        assert!(is_dns1123_label("shop-1").is_empty());
        assert_eq!(is_dns1123_label("a.b"), ["must not contain dots"]);
        assert_eq!(
            is_dns1123_label("-a"),
            [
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert!(!is_dns1035_label("1abc").is_empty());
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("flotilla.dev/cleanup").is_empty());
        assert_eq!(is_qualified_name("/x"), ["prefix part must be non-empty"]);
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(is_valid_label_value("").is_empty());
        assert!(!is_valid_label_value("-x").is_empty());
    }

    #[test]
    fn object_meta_on_create() {
        let errors = validate_object_meta(
            &json!({"name": "Gold", "labels": {"tier": "top"}}),
            true,
            NameRule::Dns1123Subdomain,
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "metadata.namespace"]);
        assert!(
            errors[0].to_string().starts_with(
                "metadata.name: Invalid value: \"Gold\": a lowercase RFC 1123 subdomain"
            )
        );
        assert_eq!(errors[1].to_string(), "metadata.namespace: Required value");

        let errors = validate_object_meta(&json!({}), false, NameRule::Dns1123Subdomain);
        assert_eq!(
            errors[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        let errors = validate_object_meta(
            &json!({"name": "x", "namespace": "shop"}),
            false,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            errors[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        assert!(
            validate_object_meta(
                &json!({"name": "web-x1", "generateName": "web-", "namespace": "shop",
                        "finalizers": ["flotilla.dev/cleanup"],
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "1", "controller": true}]}),
                true,
                NameRule::Dns1123Subdomain
            )
            .is_empty()
        );
    }

    #[test]
    fn object_meta_on_update() {
        let old = json!({"name": "a", "namespace": "shop", "uid": "1", "finalizers": ["x.dev/f"], "deletionTimestamp": "2024-05-01T10:00:00Z"});
        let new = json!({"name": "b", "namespace": "shop", "uid": "1", "finalizers": ["x.dev/f", "x.dev/g"]});
        let messages: Vec<String> = validate_object_meta_update(&new, &old)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            messages,
            [
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x.dev/g\"}",
                "metadata.name: Invalid value: \"b\": field is immutable",
            ]
        );
    }

    #[test]
    fn owner_references_allow_one_controller() {
        let errors = validate_object_meta(
            &json!({"name": "x", "ownerReferences": [
                {"apiVersion": "v1", "kind": "A", "name": "a", "uid": "1", "controller": true},
                {"apiVersion": "v1", "kind": "B", "name": "b", "uid": "2", "controller": true}
            ]}),
            false,
            NameRule::Dns1123Subdomain,
        );
        assert_eq!(
            errors[0].to_string(),
            "metadata.ownerReferences: Invalid value: Only one reference can have Controller set to true. Found \"true\" in references for A/a and B/b"
        );
    }

    #[test]
    fn generated_names_fit_a_label() {
        let mut rng = rand::rng();
        let name = generate_name("web-", &mut rng);
        assert!(name.starts_with("web-") && name.len() == 9, "{name}");
        assert!(name[4..].bytes().all(|b| SUFFIX_ALPHABET.contains(&b)));
        let long = generate_name(&"x".repeat(80), &mut rng);
        assert_eq!(long.len(), 63);
        assert!(validate_object_meta_name(&long, NameRule::Dns1123Subdomain).is_ok());
    }
}
