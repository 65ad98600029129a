//! Label and field selectors as the apiserver parses and evaluates them (`?labelSelector=`,
//! `?fieldSelector=`).
//!
//! The label selector parser is hand-written because kube-core's `Selector` only *renders*
//! selectors (`Display`) and converts from `metav1.LabelSelector`; it has no string parser.
//! The grammar, error messages and validation follow k8s.io/apimachinery `labels.Parse` and
//! `fields.ParseSelector`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// A selector string the apiserver would reject (HTTP 400 BadRequest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value` (also matches objects without the label)
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` (also matches objects without the label)
    NotIn,
    /// `key>5` (integer comparison)
    GreaterThan,
    /// `key<5` (integer comparison)
    LessThan,
}

/// One comma-separated term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// Whether a label set satisfies this requirement (`labels.Requirement.Matches`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.contains(v))
            }
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values
                        .iter()
                        .next()
                        .and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.iter().next().map(String::as_str).unwrap_or("");
        let list = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::DoubleEquals => write!(f, "{}=={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, list()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, list()),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
        }
    }
}

/// A parsed label selector: all requirements must hold. The empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the string form (`a=b,c in (x,y),!d`); `""` selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s);
        let mut parser = Parser {
            tokens,
            position: 0,
        };
        let mut requirements = parser.parse()?;
        // The apiserver keeps requirements sorted by key; evaluation order does not matter.
        requirements.sort();
        Ok(Self { requirements })
    }

    /// A selector that selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this selector selects every object.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object by its `metadata.labels` (non-string label values count as absent).
    pub fn matches_object(&self, object: &Value) -> bool {
        if self.is_everything() {
            return true;
        }
        let labels: BTreeMap<String, String> = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        self.matches(&labels)
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    /// `!`
    Not,
    /// `=`
    Equals,
    /// `==`
    DoubleEquals,
    /// `!=`
    NotEquals,
    /// `>`
    GreaterThan,
    /// `<`
    LessThan,
    In,
    NotIn,
    OpenPar,
    ClosedPar,
    Comma,
    End,
}

impl Token {
    /// The literal as the apiserver quotes it in error messages.
    fn literal(&self) -> &str {
        match self {
            Token::Identifier(s) => s,
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::OpenPar => "(",
            Token::ClosedPar => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits a selector into tokens; identifiers run until whitespace or a special symbol.
fn lex(s: &str) -> Vec<Token> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_whitespace(c) {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (token, width) = match (c, next) {
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', _) => (Token::Not, 1),
                ('=', _) => (Token::Equals, 1),
                ('>', _) => (Token::GreaterThan, 1),
                ('<', _) => (Token::LessThan, 1),
                ('(', _) => (Token::OpenPar, 1),
                (')', _) => (Token::ClosedPar, 1),
                _ => (Token::Comma, 1),
            };
            tokens.push(token);
            i += width;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_whitespace(chars[i]) && !is_special(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
    tokens.push(Token::End);
    tokens
}

/// Where a token is read: keys and values treat `in`/`notin` as plain identifiers, the
/// operator position treats them as keywords (so a label may be called `in`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<Token>,
    position: usize,
}

impl Parser {
    fn lookahead(&self, context: Context) -> Token {
        let token = self.tokens[self.position.min(self.tokens.len() - 1)].clone();
        match (context, token) {
            (Context::Values, Token::In) => Token::Identifier("in".into()),
            (Context::Values, Token::NotIn) => Token::Identifier("notin".into()),
            (_, token) => token,
        }
    }

    fn consume(&mut self, context: Context) -> Token {
        let token = self.lookahead(context);
        if self.position < self.tokens.len() - 1 {
            self.position += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.lookahead(Context::Values) {
                Token::Identifier(_) | Token::Not => {
                    let requirement = self
                        .parse_requirement()
                        .map_err(|e| SelectorError(format!("unable to parse requirement: {e}")))?;
                    requirements.push(requirement);
                    match self.consume(Context::Values) {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let next = self.lookahead(Context::Values);
                            if !matches!(next, Token::Identifier(_) | Token::Not) {
                                return Err(SelectorError(format!(
                                    "found '{}', expected: identifier after ','",
                                    next.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(SelectorError(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                other => {
                    return Err(SelectorError(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, unary) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = unary {
            return new_requirement(key, operator, BTreeSet::new());
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, operator, values)
    }

    /// Reads `[!]key`; returns the operator when it is unary (`key` or `!key`).
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut token = self.consume(Context::Values);
        let mut operator = None;
        if token == Token::Not {
            operator = Some(Operator::DoesNotExist);
            token = self.consume(Context::Values);
        }
        let Token::Identifier(key) = token else {
            return Err(format!("found '{}', expected: identifier", token.literal()));
        };
        validate_label_key(&key)?;
        if operator.is_none()
            && matches!(self.lookahead(Context::Values), Token::End | Token::Comma)
        {
            operator = Some(Operator::Exists);
        }
        Ok((key, operator))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        match self.consume(Context::KeyAndOperator) {
            Token::In => Ok(Operator::In),
            Token::NotIn => Ok(Operator::NotIn),
            Token::Equals => Ok(Operator::Equals),
            Token::DoubleEquals => Ok(Operator::DoubleEquals),
            Token::NotEquals => Ok(Operator::NotEquals),
            Token::GreaterThan => Ok(Operator::GreaterThan),
            Token::LessThan => Ok(Operator::LessThan),
            other => Err(format!(
                "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                other.literal()
            )),
        }
    }

    /// `( a, b, ... )`; empty entries (`()`, `(a,)`) stand for the empty value, as upstream.
    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let open = self.consume(Context::Values);
        if open != Token::OpenPar {
            return Err(format!("found '{}' expected: '('", open.literal()));
        }
        match self.lookahead(Context::Values) {
            Token::Identifier(_) | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.consume(Context::Values);
                if close != Token::ClosedPar {
                    return Err(format!("found '{}', expected: ')'", close.literal()));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            other => Err(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut values = BTreeSet::new();
        loop {
            match self.consume(Context::Values) {
                Token::Identifier(value) => {
                    values.insert(value);
                    match self.lookahead(Context::Values) {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            ));
                        }
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    match self.lookahead(Context::Values) {
                        Token::ClosedPar => {
                            values.insert(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.consume(Context::Values);
                            values.insert(String::new());
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    ));
                }
            }
        }
    }

    /// The value after `=`, `==`, `!=`, `>` or `<`; nothing (`a=`) is the empty value.
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        if matches!(self.lookahead(Context::Values), Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.consume(Context::Values) {
            Token::Identifier(value) => Ok(BTreeSet::from([value])),
            other => Err(format!("found '{}', expected: identifier", other.literal())),
        }
    }
}

/// `labels.NewRequirement`: validates the values for the operator and every value.
fn new_requirement(
    key: String,
    operator: Operator,
    values: BTreeSet<String>,
) -> Result<Requirement, String> {
    let mut errors = Vec::new();
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => errors.push(
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
                .to_string(),
        ),
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if values.len() != 1 => {
            errors.push(
                "values: Invalid value: exact-match compatibility requires one single value"
                    .to_string(),
            )
        }
        Operator::GreaterThan | Operator::LessThan => {
            for (i, value) in values.iter().enumerate() {
                if value.parse::<i64>().is_err() {
                    errors.push(format!(
                        "values[{i}]: Invalid value: {value:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                    ));
                }
            }
        }
        _ => {}
    }
    for (i, value) in values.iter().enumerate() {
        let problems = label_value_errors(value);
        if !problems.is_empty() {
            errors.push(format!(
                "values[{i}][{key}]: Invalid value: {value:?}: {}",
                problems.join("; ")
            ));
        }
    }
    match errors.len() {
        0 => Ok(Requirement {
            key,
            operator,
            values,
        }),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// `validation.RegexError`: the message, examples and the regex, worded like upstream.
fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{message} (e.g. {}regex used for validation is '{format}')",
        examples.join("or ")
    )
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alnum(first)
                && alnum(last)
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                edge(first)
                    && edge(last)
                    && bytes
                        .iter()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            }
            _ => false,
        }
    })
}

/// `validation.IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errors.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errors.push(format!(
                        "prefix part {}",
                        regex_error(
                            DNS1123_SUBDOMAIN_MSG,
                            DNS1123_SUBDOMAIN_FMT,
                            &["example.com"]
                        )
                    ));
                }
            }
            *name
        }
        _ => {
            errors.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errors;
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// `validation.IsValidLabelValue`: empty, or at most 63 characters of a qualified name part.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errors.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

fn validate_label_key(key: &str) -> Result<(), String> {
    let errors = qualified_name_errors(key);
    if errors.is_empty() {
        Ok(())
    } else {
        // The parser has no field path, which upstream renders as `<nil>`.
        Err(format!(
            "<nil>: Invalid value: {key:?}: {}",
            errors.join("; ")
        ))
    }
}

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldTerm {
    /// A dotted path such as `metadata.name`.
    pub field: String,
    pub value: String,
    /// `!=`
    pub negated: bool,
}

/// A parsed field selector: all terms must hold. The empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// The fields every resource supports in field selectors (custom resources support only these,
/// unless their CRD declares `selectableFields`).
pub const DEFAULT_SELECTABLE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

impl FieldSelector {
    /// Parses a selector over `metadata.name` and `metadata.namespace`; any other field is an
    /// error, like the apiserver's `field label not supported: <field>`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        Self::parse_with_fields(s, &[])
    }

    /// Like [`FieldSelector::parse`], also accepting the dotted paths in `extra_fields` (a
    /// kind's own selectable fields, e.g. `involvedObject.name` for core Events or a CRD's
    /// `selectableFields`).
    pub fn parse_with_fields(s: &str, extra_fields: &[&str]) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_term(part) else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(raw_value)?;
            if !DEFAULT_SELECTABLE_FIELDS.contains(&field) && !extra_fields.contains(&field) {
                return Err(SelectorError(format!("field label not supported: {field}")));
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                value,
                negated: operator == "!=",
            });
        }
        Ok(Self { terms })
    }

    /// A selector that selects everything.
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Whether the object's fields satisfy every term. A missing field reads as `""` (so
    /// `metadata.namespace=` selects cluster-scoped objects), as in the apiserver's field sets.
    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = field_value(object, &term.field);
            (actual == term.value) != term.negated
        })
    }

    /// The value the selector requires for `field` with `=`/`==`, if any (lets a caller narrow
    /// a list to one name or namespace before filtering).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && !t.negated)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = if t.negated { "!=" } else { "=" };
                format!("{}{op}{}", t.field, escape_value(&t.value))
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// The string form of a dotted field path of an object, `""` when absent.
fn field_value(object: &Value, field: &str) -> String {
    let mut current = object;
    for segment in field.split('.') {
        match current.get(segment) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Splits on commas not escaped by a backslash (the backslash stays, for unescaping later).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits `field<op>value` at the first operator (`!=`, `==`, `=`).
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], op, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )));
                }
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => {
                return Err(SelectorError(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )));
            }
            other => out.push(other),
        }
    }
    if escaped {
        return Err(SelectorError(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

/// `fields.EscapeValue`
fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        LabelSelector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector:?} should parse: {e}"))
            .matches(&labels(pairs))
    }

    fn label_error(selector: &str) -> String {
        match LabelSelector::parse(selector) {
            Ok(parsed) => panic!("{selector:?} should be rejected, parsed as {parsed:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        for s in ["", "   "] {
            let selector = LabelSelector::parse(s).unwrap();
            assert!(selector.is_everything());
            assert!(selector.matches(&labels(&[])));
            assert!(selector.matches(&labels(&[("a", "b")])));
        }
    }

    #[test]
    fn equality_operators() {
        for s in ["app=web", "app==web", " app = web "] {
            assert!(selects(s, &[("app", "web")]), "{s}");
            assert!(!selects(s, &[("app", "db")]), "{s}");
            assert!(!selects(s, &[]), "{s}");
        }
        assert!(selects("app!=web", &[("app", "db")]));
        assert!(
            selects("app!=web", &[]),
            "!= matches objects without the label"
        );
        assert!(!selects("app!=web", &[("app", "web")]));
    }

    #[test]
    fn empty_value_after_equals() {
        assert!(selects("app=", &[("app", "")]));
        assert!(!selects("app=", &[("app", "x")]));
        assert!(selects("app=,tier=db", &[("app", ""), ("tier", "db")]));
    }

    #[test]
    fn set_based_operators() {
        assert!(selects("env in (prod, staging)", &[("env", "prod")]));
        assert!(selects("env in (prod,staging)", &[("env", "staging")]));
        assert!(!selects("env in (prod)", &[("env", "dev")]));
        assert!(!selects("env in (prod)", &[]));
        assert!(selects("env notin (prod)", &[("env", "dev")]));
        assert!(
            selects("env notin (prod)", &[]),
            "notin matches objects without the label"
        );
        assert!(!selects("env notin (prod,dev)", &[("env", "dev")]));
        assert!(
            selects("env in ()", &[("env", "")]),
            "() is the empty value"
        );
        assert!(selects("env in (a,)", &[("env", "")]));
    }

    #[test]
    fn existence_operators() {
        assert!(selects("app", &[("app", "anything")]));
        assert!(!selects("app", &[]));
        assert!(selects("!app", &[]));
        assert!(selects(" ! app ", &[]));
        assert!(!selects("!app", &[("app", "")]));
    }

    #[test]
    fn integer_comparisons() {
        assert!(selects("replicas>2", &[("replicas", "3")]));
        assert!(!selects("replicas>2", &[("replicas", "2")]));
        assert!(!selects("replicas>2", &[("replicas", "many")]));
        assert!(selects("replicas<2", &[("replicas", "1")]));
        assert!(!selects("replicas<2", &[]));
        assert!(label_error("replicas>two").contains("the value must be an integer"));
    }

    #[test]
    fn conjunction_of_terms() {
        let s = "app=web, tier in (frontend,edge),!canary,env!=dev,owner";
        let all = [
            ("app", "web"),
            ("tier", "edge"),
            ("env", "prod"),
            ("owner", "x"),
        ];
        assert!(selects(s, &all));
        assert!(!selects(
            s,
            &[
                ("app", "web"),
                ("tier", "edge"),
                ("owner", "x"),
                ("canary", "1")
            ]
        ));
        assert!(!selects(
            s,
            &[("app", "web"), ("tier", "db"), ("owner", "x")]
        ));
        assert!(!selects(s, &[("app", "web"), ("tier", "edge")]));
    }

    #[test]
    fn keywords_are_identifiers_in_key_and_value_positions() {
        assert!(selects("in=notin", &[("in", "notin")]));
        assert!(selects("notin in (in)", &[("notin", "in")]));
    }

    #[test]
    fn prefixed_keys() {
        assert!(selects(
            "app.kubernetes.io/name=web",
            &[("app.kubernetes.io/name", "web")]
        ));
        assert!(selects(
            "flotilla.dev/plan in (gold)",
            &[("flotilla.dev/plan", "gold")]
        ));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            label_error("a=b c=d"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert_eq!(
            label_error("a,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            label_error(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            label_error("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            label_error("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            label_error("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            label_error("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            label_error("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(
            label_error("!a=b"),
            "found '=', expected: ',' or 'end of string'"
        );
    }

    #[test]
    fn invalid_keys_and_values() {
        let e = label_error("-a=b");
        assert!(e.starts_with("unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters"), "{e}");
        assert!(label_error("a/b/c=d").contains("a qualified name must consist of"));
        assert!(
            label_error("Example.com/a=b").contains("prefix part a lowercase RFC 1123 subdomain")
        );
        assert!(label_error("/a").contains("prefix part must be non-empty"));
        assert!(
            label_error(&"k".repeat(64)).contains("name part must be no more than 63 characters")
        );
        let e = label_error("a=-b");
        assert!(
            e.contains(
                "values[0][a]: Invalid value: \"-b\": a valid label must be an empty string"
            ),
            "{e}"
        );
        assert!(
            label_error(&format!("a={}", "v".repeat(64)))
                .contains("must be no more than 63 characters")
        );
        assert!(label_error("a in (ok,-bad)").contains("Invalid value: \"-bad\""));
    }

    #[test]
    fn display_is_sorted_and_reparses() {
        let selector = LabelSelector::parse("z notin (b,a),a==1,!m,k").unwrap();
        assert_eq!(selector.to_string(), "a==1,k,!m,z notin (a,b)");
        assert_eq!(
            LabelSelector::parse(&selector.to_string()).unwrap(),
            selector
        );
    }

    #[test]
    fn matches_object_labels() {
        let selector = LabelSelector::parse("app=web").unwrap();
        assert!(selector.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!selector.matches_object(&json!({"metadata": {}})));
        assert!(LabelSelector::everything().matches_object(&json!({})));
    }

    fn object(name: &str, namespace: Option<&str>) -> Value {
        match namespace {
            Some(ns) => json!({"metadata": {"name": name, "namespace": ns}}),
            None => json!({"metadata": {"name": name}}),
        }
    }

    #[test]
    fn field_selector_name_and_namespace() {
        let selector = FieldSelector::parse("metadata.name=gold").unwrap();
        assert!(selector.matches(&object("gold", Some("a"))));
        assert!(!selector.matches(&object("silver", Some("a"))));
        let selector = FieldSelector::parse("metadata.name==gold,metadata.namespace!=b").unwrap();
        assert!(selector.matches(&object("gold", Some("a"))));
        assert!(!selector.matches(&object("gold", Some("b"))));
        assert_eq!(selector.required_value("metadata.name"), Some("gold"));
        assert_eq!(selector.required_value("metadata.namespace"), None);
        let cluster_scoped = FieldSelector::parse("metadata.namespace=").unwrap();
        assert!(cluster_scoped.matches(&object("n", None)));
        assert!(!cluster_scoped.matches(&object("n", Some("a"))));
        assert!(FieldSelector::parse("").unwrap().is_everything());
        assert!(
            FieldSelector::parse("")
                .unwrap()
                .matches(&object("x", None))
        );
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("spec.plan=gold").unwrap_err().0,
            "field label not supported: spec.plan"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err().0,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a=b").unwrap_err().0,
            "invalid field selector: unescaped character in value: ="
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a\\x").unwrap_err().0,
            "invalid field selector: invalid escape sequence: \\x"
        );
        // No whitespace trimming: the field label is "metadata.name ".
        assert_eq!(
            FieldSelector::parse("metadata.name = a").unwrap_err().0,
            "field label not supported: metadata.name "
        );
    }

    #[test]
    fn field_selector_escapes_and_extra_fields() {
        let selector = FieldSelector::parse("metadata.name=a\\,b").unwrap();
        assert!(selector.matches(&object("a,b", None)));
        assert_eq!(selector.to_string(), "metadata.name=a\\,b");
        let events = FieldSelector::parse_with_fields(
            "involvedObject.kind=Plan,involvedObject.name=gold",
            &["involvedObject.kind", "involvedObject.name"],
        )
        .unwrap();
        assert!(events.matches(&json!({"involvedObject": {"kind": "Plan", "name": "gold"}})));
        assert!(!events.matches(&json!({"involvedObject": {"kind": "Plan"}})));
    }

    mod kube_core_round_trip {
        use super::*;
        use kube::core::{Expression, Selector, SelectorExt};
        use proptest::collection::{btree_map, btree_set, vec};
        use proptest::prelude::*;

        /// Keys from a small pool (so selectors and label sets overlap, including the `in` /
        /// `notin` keywords as keys) or generated qualified names with an optional prefix.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec!["app", "tier", "in", "notin", "example.com/owner"])
                    .prop_map(str::to_string),
                (
                    "([a-z]{1,4}\\.[a-z]{2,3}/)?",
                    "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,8}[a-zA-Z0-9])?"
                )
                    .prop_map(|(prefix, name)| format!("{prefix}{name}")),
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec!["", "web", "db", "in", "1.0", "A_b-c"])
                    .prop_map(str::to_string),
                "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,8}[a-zA-Z0-9])?",
            ]
        }

        fn expression() -> impl Strategy<Value = Expression> {
            // kube-core renders `in ()` for an empty set, which the apiserver reads as the
            // empty value; such selectors cannot be built from a metav1.LabelSelector anyway.
            let values = || btree_set(value(), 1..4);
            prop_oneof![
                (key(), values()).prop_map(|(k, v)| Expression::In(k, v)),
                (key(), values()).prop_map(|(k, v)| Expression::NotIn(k, v)),
                (key(), value()).prop_map(|(k, v)| Expression::Equal(k, v)),
                (key(), value()).prop_map(|(k, v)| Expression::NotEqual(k, v)),
                key().prop_map(Expression::Exists),
                key().prop_map(Expression::DoesNotExist),
            ]
        }

        proptest! {
            #[test]
            fn kube_core_display_parses_to_the_same_selection(
                expressions in vec(expression(), 0..5),
                label_sets in vec(btree_map(key(), value(), 0..5), 1..6),
            ) {
                let selector: Selector = expressions.into_iter().collect();
                let rendered = selector.to_string();
                let parsed = LabelSelector::parse(&rendered)
                    .map_err(|e| TestCaseError::fail(format!("{rendered:?}: {e}")))?;
                for labels in &label_sets {
                    prop_assert_eq!(
                        parsed.matches(labels),
                        selector.matches(labels),
                        "selector {:?} on {:?}", rendered, labels
                    );
                }
            }
        }
    }
}
