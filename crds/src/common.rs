//! Names, patterns and small value types shared by every Flotilla kind.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The API group of every Flotilla kind.
pub const GROUP: &str = "flotilla.dev";
/// The API version of every Flotilla kind.
pub const VERSION: &str = "v1alpha1";
/// `group/version`, as written in `apiVersion`.
pub const API_VERSION: &str = "flotilla.dev/v1alpha1";
/// The `kubectl get` category every Flotilla kind belongs to (`kubectl get flotilla -A`).
pub const CATEGORY: &str = "flotilla";

/// The finalizer Flotilla controllers put on objects whose deletion needs cleanup.
pub const FINALIZER: &str = "flotilla.dev/cleanup";

/// Well-known label keys written by the Flotilla controllers.
pub mod labels {
    /// On tenant Namespaces (and their children): the owning Subscription's name.
    pub const SUBSCRIPTION: &str = "flotilla.dev/subscription";
    /// On tenant Namespaces: the name of the Plan the Subscription is on.
    pub const PLAN: &str = "flotilla.dev/plan";
    /// On Devices: the FirmwareRollout that last assigned the device (it holds the device
    /// while it is live).
    pub const ROLLOUT: &str = "flotilla.dev/rollout";
    /// Marks objects created and kept in shape by Flotilla.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`] on objects Flotilla manages.
    pub const MANAGED_BY_VALUE: &str = "flotilla";
}

/// Well-known annotation keys that users set on objects for Flotilla to read.
pub mod annotations {
    /// On a Namespace handed over to a Subscription (by the `flotilla.dev/subscription` label):
    /// `"true"` lets Flotilla delete it with the Subscription's `deletionPolicy: Delete`.
    /// Without it a handed-over namespace is only ever released, never deleted.
    pub const ALLOW_DELETION: &str = "flotilla.dev/allow-deletion";
}

/// An RFC 1123 DNS label (Namespace names): lower-case alphanumerics and `-`, starting and
/// ending with an alphanumeric, at most 63 characters.
pub const DNS1123_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Maximum length of an RFC 1123 DNS label.
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// An RFC 1123 DNS subdomain (names of most objects): DNS labels joined by dots.
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Maximum length of an RFC 1123 DNS subdomain.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// A Kubernetes condition type or reason in UpperCamelCase.
pub const CAMEL_CASE_PATTERN: &str = "^[A-Z][A-Za-z0-9]*$";
/// A Go `time.ParseDuration` string with non-negative units only, as in `metav1.Duration`
/// (e.g. `90s`, `1h30m`, `500ms`).
pub const DURATION_PATTERN: &str = "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// A wall-clock time of day `HH:MM`, 24-hour clock.
pub const TIME_OF_DAY_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// An IANA time zone name such as `Europe/Berlin` or `UTC` (checked against the tz database
/// by the controllers; the schema only checks the shape).
pub const TIME_ZONE_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// Maximum length of an IANA time zone name.
pub const TIME_ZONE_MAX_LENGTH: usize = 64;
/// A semantic version 2.0.0 string without a leading `v` (e.g. `1.4.0`, `2.0.0-rc.1+build.5`).
pub const SEMVER_PATTERN: &str = "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-((0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?(\\+([0-9a-zA-Z-]+(\\.[0-9a-zA-Z-]+)*))?$";
/// Maximum length of a version string.
pub const SEMVER_MAX_LENGTH: usize = 128;

/// Schema transform for enums used as optional fields: drops the enum's own description.
///
/// kube's `OptionalEnum` rewrite of `Option<Enum>` copies the enum's description over the
/// field's, so without this every optional enum field would show the enum's doc comment in
/// `kubectl explain` instead of the field's. Use as `#[schemars(transform = ...)]` on the enum.
pub fn drop_description(schema: &mut Schema) {
    schema.remove("description");
}

/// Schema transform that joins the hard-wrapped lines of every description below a type into
/// paragraphs, so that `kubectl explain` can wrap them to the terminal itself.
///
/// Doc comments are wrapped at 100 columns in the source; kept as they are, `kubectl explain`
/// would show ragged lines. Use as `#[schemars(transform = ...)]` on each kind's spec and
/// status (it reaches every type inlined below them).
pub fn unwrap_descriptions(schema: &mut Schema) {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match (key.as_str(), child) {
                        ("description", serde_json::Value::String(text)) => {
                            *text = unwrap_paragraphs(text)
                        }
                        // Defaults and examples are data, not prose.
                        ("default" | "example", _) => {}
                        (_, child) => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    if let Some(map) = schema.as_object_mut() {
        let mut value = serde_json::Value::Object(std::mem::take(map));
        walk(&mut value);
        if let serde_json::Value::Object(unwrapped) = value {
            *map = unwrapped;
        }
    }
}

/// Joins the lines of each paragraph (paragraphs are separated by a blank line).
fn unwrap_paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// A problem in an object's spec that the schema could not express, found by a kind's
/// `validate()` function. Controllers report these in a `Ready=False` condition with reason
/// [`crate::condition::reasons::INVALID_SPEC`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// JSON path of the offending field, relative to the object (e.g. `spec.quota.hard[pods]`).
    pub field: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl SpecError {
    /// A new error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Renders a list of spec errors as one line, for a condition message.
pub fn describe_spec_errors(errors: &[SpecError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns a list of collected errors into the `validate()` result.
pub(crate) fn into_result(errors: Vec<SpecError>) -> Result<(), Vec<SpecError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether `name` is an RFC 1123 DNS label (a valid Namespace name).
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= DNS1123_LABEL_MAX_LENGTH
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Whether `name` is an RFC 1123 DNS subdomain (a valid name for most objects).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DNS1123_SUBDOMAIN_MAX_LENGTH
        && name.split('.').all(is_dns1123_label)
}

/// A reference to one key of a Secret in the same namespace as the referring object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret, in the namespace of this object.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key within the Secret's `data`.
    #[schemars(length(min = 1, max = 253), pattern("^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A reference to a Secret in the same namespace as the referring object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret, in the namespace of this object.
    #[schemars(length(min = 1, max = 253), pattern(DNS1123_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Most distinct failure reasons kept in a status.
pub const MAX_FAILURE_REASONS: u32 = 20;

/// How many items failed for one reason.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureReasonCount {
    /// The error, normalised so that equal causes group together (e.g. `HTTP 410 Gone`).
    #[schemars(length(max = 256))]
    pub reason: String,
    /// How many items failed with it.
    #[schemars(range(min = 0))]
    pub count: i64,
}

/// A non-negative duration written as Go's `time.ParseDuration` (and `metav1.Duration`) reads
/// it — `90s`, `1h30m`, `500ms` — kept exactly as written so that objects round-trip unchanged.
///
/// Equality, ordering and hashing compare the length of time (`60m == 1h`).
#[derive(Clone, Debug)]
pub struct GoDuration {
    text: String,
    value: std::time::Duration,
}

/// Why a string is not a [`GoDuration`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not in Go's duration syntax.
    #[error("{0:?} is not a duration such as 90s, 1h30m or 500ms")]
    Syntax(String),
    /// Negative durations make no sense here.
    #[error("{0:?} is negative")]
    Negative(String),
    /// Longer than Go's time.Duration holds (about 292 years).
    #[error("{0:?} is longer than a duration can be (about 292 years)")]
    TooLong(String),
}

/// Nanoseconds `text` adds up to, as a float, or `None` when it is not in the grammar of
/// [`DURATION_PATTERN`] (one or more `digits[.digits]unit`; `0` alone is zero). Checked before
/// kube's parser sees the text: that parser accepts more (a bare number, a sign inside, stray
/// bytes after a term) and panics converting what does not fit, so only valid text reaches it.
fn duration_nanos(text: &str) -> Option<f64> {
    if text == "0" {
        return Some(0.0);
    }
    if text.is_empty() {
        return None;
    }
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let mut rest = text;
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let well_formed = match number.split_once('.') {
            Some((whole, fraction)) => digits(whole) && digits(fraction),
            None => digits(number),
        };
        if !well_formed {
            return None;
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * scale;
        rest = next;
    }
    Some(total)
}

impl GoDuration {
    /// The length of time.
    pub fn as_std(&self) -> std::time::Duration {
        self.value
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the duration is zero.
    pub fn is_zero(&self) -> bool {
        self.value.is_zero()
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some(nanos) = duration_nanos(text) else {
            return Err(match text.strip_prefix('-').and_then(duration_nanos) {
                Some(_) => DurationError::Negative(text.to_owned()),
                None => DurationError::Syntax(text.to_owned()),
            });
        };
        if nanos >= i64::MAX as f64 {
            return Err(DurationError::TooLong(text.to_owned()));
        }
        let parsed: kube::core::Duration = text
            .parse()
            .map_err(|_| DurationError::Syntax(text.to_owned()))?;
        Ok(Self {
            text: text.to_owned(),
            value: parsed.into(),
        })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for GoDuration {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for GoDuration {}

impl PartialOrd for GoDuration {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GoDuration {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

impl Hash for GoDuration {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.value.hash(state);
    }
}

impl Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": DURATION_PATTERN,
        })
    }
}

/// A day of the week, for maintenance windows.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[schemars(transform = drop_description)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    /// The matching `jiff` weekday.
    pub fn to_jiff(self) -> jiff::civil::Weekday {
        match self {
            Weekday::Monday => jiff::civil::Weekday::Monday,
            Weekday::Tuesday => jiff::civil::Weekday::Tuesday,
            Weekday::Wednesday => jiff::civil::Weekday::Wednesday,
            Weekday::Thursday => jiff::civil::Weekday::Thursday,
            Weekday::Friday => jiff::civil::Weekday::Friday,
            Weekday::Saturday => jiff::civil::Weekday::Saturday,
            Weekday::Sunday => jiff::civil::Weekday::Sunday,
        }
    }
}

impl fmt::Display for Weekday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A wall-clock time of day (`HH:MM`, 24-hour clock), parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
}

impl TimeOfDay {
    /// Parses `HH:MM` (exactly two digits each, 24-hour clock).
    pub fn parse(s: &str) -> Option<Self> {
        let (h, m) = s.split_once(':')?;
        if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hour: u8 = h.parse().ok()?;
        let minute: u8 = m.parse().ok()?;
        (hour < 24 && minute < 60).then_some(Self { hour, minute })
    }

    /// Minutes since midnight.
    pub fn minutes_since_midnight(self) -> u16 {
        u16::from(self.hour) * 60 + u16::from(self.minute)
    }
}

/// Checks that `zone` names a time zone in the IANA database known to this process.
pub fn validate_time_zone(field: &str, zone: &str) -> Result<(), SpecError> {
    jiff::tz::TimeZone::get(zone)
        .map(|_| ())
        .map_err(|_| SpecError::new(field, format!("unknown IANA time zone {zone:?}")))
}

/// Checks that `value` is a `HH:MM` time of day.
pub(crate) fn validate_time_of_day(field: &str, value: &str) -> Result<TimeOfDay, SpecError> {
    TimeOfDay::parse(value)
        .ok_or_else(|| SpecError::new(field, format!("{value:?} is not a time of day HH:MM")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert!(is_dns1123_label("acme"));
        assert!(is_dns1123_label("acme-prod-1"));
        assert!(is_dns1123_label("a"));
        assert!(!is_dns1123_label(""));
        assert!(!is_dns1123_label("-acme"));
        assert!(!is_dns1123_label("acme-"));
        assert!(!is_dns1123_label("Acme"));
        assert!(!is_dns1123_label("acme.prod"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_label(&"a".repeat(63)));
    }

    #[test]
    fn dns_subdomains() {
        assert!(is_dns1123_subdomain("acme.prod"));
        assert!(!is_dns1123_subdomain("acme..prod"));
        assert!(!is_dns1123_subdomain(".acme"));
    }

    #[test]
    fn times_of_day() {
        assert_eq!(
            TimeOfDay::parse("00:00"),
            Some(TimeOfDay { hour: 0, minute: 0 })
        );
        assert_eq!(
            TimeOfDay::parse("23:59").map(TimeOfDay::minutes_since_midnight),
            Some(1439)
        );
        for bad in ["24:00", "7:00", "07:60", "0700", "07:0a", "", "07:00:00"] {
            assert_eq!(TimeOfDay::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_zones() {
        assert!(validate_time_zone("tz", "Europe/Berlin").is_ok());
        assert!(validate_time_zone("tz", "UTC").is_ok());
        let err = validate_time_zone("spec.tz", "Mars/Olympus").unwrap_err();
        assert_eq!(err.field, "spec.tz");
    }

    #[test]
    fn a_sign_inside_a_duration_is_refused() {
        // Found by the `duration` fuzz target: kube's parser read "4h-2h5m114s" as a sum of
        // signed parts and panicked subtracting; Go refuses a sign after the first character.
        for text in ["4h-2h5m114s", "1h+30m", "5m-1s"] {
            assert!(
                matches!(text.parse::<GoDuration>(), Err(DurationError::Syntax(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn stray_bytes_after_a_term_are_refused() {
        // Found by the `duration` fuzz target on CI: kube's parser multiplied the first term
        // (8.9e20 minutes) before it saw the unknown unit after it, and panicked.
        for text in [
            "888888888888819498338m\u{12}:m",
            "5m:m",
            "1h 2m",
            "1.2.3s",
            ".5s",
            "1.s",
            "+1s",
            "1hh",
        ] {
            assert!(
                matches!(text.parse::<GoDuration>(), Err(DurationError::Syntax(_))),
                "{text:?}"
            );
        }
        for (text, nanos) in [
            ("1.5h", 5_400_000_000_000),
            ("0.5s", 500_000_000),
            ("2\u{b5}s", 2_000),
        ] {
            assert_eq!(
                text.parse::<GoDuration>().unwrap().as_std().as_nanos(),
                nanos,
                "{text}"
            );
        }
    }

    #[test]
    fn a_duration_beyond_what_go_holds_is_refused() {
        // Found by the `duration` fuzz target: kube's parser panicked converting a number of
        // seconds beyond u64. Go's time.Duration holds up to 2^63 ns (about 292 years).
        let huge = format!("{}5m", "1".repeat(66));
        for text in [huge.as_str(), "2562048h", "9223372037s", "1e30h"] {
            let parsed = text.parse::<GoDuration>();
            assert!(
                matches!(
                    parsed,
                    Err(DurationError::TooLong(_) | DurationError::Syntax(_))
                ),
                "{text}: {parsed:?}"
            );
        }
        assert!(matches!(
            "2562048h".parse::<GoDuration>(),
            Err(DurationError::TooLong(_))
        ));
        assert_eq!(
            "2562047h".parse::<GoDuration>().unwrap().as_std(),
            std::time::Duration::from_secs(2_562_047 * 3600)
        );
    }

    #[test]
    fn durations_keep_their_text_and_compare_by_length() {
        let hour: GoDuration = "1h".parse().unwrap();
        let minutes: GoDuration = "60m".parse().unwrap();
        assert_eq!(hour, minutes);
        assert_eq!(hour.to_string(), "1h");
        assert_eq!(serde_json::to_value(&minutes).unwrap(), "60m");
        assert_eq!(
            "1h30m".parse::<GoDuration>().unwrap().as_std().as_secs(),
            5400
        );
        assert_eq!(
            "1.5s".parse::<GoDuration>().unwrap().as_std().as_millis(),
            1500
        );
        assert!("0".parse::<GoDuration>().unwrap().is_zero());
        assert!("500ms".parse::<GoDuration>().unwrap() < hour);
        for bad in ["", "1", "h", "1x", "1h30", "-5m", "soon"] {
            assert!(bad.parse::<GoDuration>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_value::<GoDuration>(serde_json::json!("forever")).is_err());
    }

    #[test]
    fn duration_pattern_agrees_with_the_parser() {
        let regex = regex::Regex::new(DURATION_PATTERN).unwrap();
        let pattern = |s: &str| regex.is_match(s);
        for good in [
            "0s",
            "90s",
            "1h30m",
            "500ms",
            "1.5h",
            "10us",
            "3µs",
            "2h45m30.5s",
        ] {
            assert!(pattern(good), "{good}");
            assert!(good.parse::<GoDuration>().is_ok(), "{good}");
        }
        for bad in ["1", "-5m", "1 h", "h", "1.h", ".5h", "+1h", "1d", "5m:m"] {
            assert!(!pattern(bad), "{bad}");
            assert!(bad.parse::<GoDuration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions_are_unwrapped_into_paragraphs() {
        let mut schema = schemars::json_schema!({
            "description": "One\nline.\n\nSecond\n paragraph.",
            "properties": {"a": {"description": "x\ny", "default": {"description": "kept\nas is"}}},
        });
        unwrap_descriptions(&mut schema);
        assert_eq!(
            schema.get("description").unwrap(),
            "One line.\n\nSecond paragraph."
        );
        let a = &schema.as_object().unwrap()["properties"]["a"];
        assert_eq!(a["description"], "x y");
        assert_eq!(a["default"]["description"], "kept\nas is");
    }

    #[test]
    fn spec_errors_render_with_their_path() {
        let errors = vec![
            SpecError::new("spec.a", "bad"),
            SpecError::new("spec.b", "worse"),
        ];
        assert_eq!(describe_spec_errors(&errors), "spec.a: bad; spec.b: worse");
    }
}
