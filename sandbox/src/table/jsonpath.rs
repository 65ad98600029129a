//! The subset of client-go's `util/jsonpath` that CRD printer columns use, with its lenient
//! semantics (`AllowMissingKeys(true)`: a missing field yields no result, not an error).
//!
//! Supported: `.field`, escaped dots (`.metadata.labels.app\.kubernetes\.io/name`), `['key']`,
//! `.*` and `[*]`, indexes and slices (`[0]`, `[-1]`, `[1:3]`, `[::2]`), unions (`[0,2]`),
//! recursive descent (`..name`) and filters (`[?(@.type=="Ready")]`, `[?(@.ready)]`), with or
//! without the surrounding `{}` and an optional leading `$`.

use serde_json::Value;

/// A parsed JSONPath expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Wildcard,
    Recursive,
    Slice {
        start: Option<i64>,
        end: Option<i64>,
        step: Option<i64>,
        single: bool,
    },
    Union(Vec<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: JsonPath,
    comparison: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Literal(Value),
    Path(JsonPath),
}

impl JsonPath {
    /// Parses an expression such as `.status.phase` or `{.spec.waves[*].name}`.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let trimmed = expression.trim();
        let inner = match trimmed.strip_prefix('{') {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or_else(|| format!("unclosed action in {expression:?}"))?,
            None => trimmed,
        };
        let inner = inner.strip_prefix('$').unwrap_or(inner);
        let steps = Parser::new(inner)
            .steps()
            .map_err(|e| format!("{e} in {expression:?}"))?;
        Ok(JsonPath { steps })
    }

    /// Every value the expression selects, in document order (map keys sorted).
    pub fn find<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.steps {
            current = apply(step, &current);
            if current.is_empty() {
                break;
            }
        }
        current
    }
}

fn apply<'a>(step: &Step, input: &[&'a Value]) -> Vec<&'a Value> {
    let mut out = Vec::new();
    for value in input {
        match step {
            Step::Field(name) => {
                if let Some(v) = value.as_object().and_then(|m| m.get(name)) {
                    out.push(v);
                }
            }
            Step::Wildcard => match value {
                Value::Object(map) => out.extend(map.values()),
                Value::Array(items) => out.extend(items.iter()),
                _ => {}
            },
            Step::Recursive => collect_descendants(value, &mut out),
            Step::Slice {
                start,
                end,
                step,
                single,
            } => {
                if let Value::Array(items) = value {
                    out.extend(slice(items, *start, *end, *step, *single));
                }
            }
            Step::Union(indexes) => {
                if let Value::Array(items) = value {
                    for index in indexes {
                        if let Some(i) = resolve_index(*index, items.len()) {
                            out.push(&items[i]);
                        }
                    }
                }
            }
            Step::Filter(filter) => {
                if let Value::Array(items) = value {
                    out.extend(items.iter().filter(|item| filter.matches(item)));
                }
            }
        }
    }
    out
}

fn collect_descendants<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(value);
    match value {
        Value::Object(map) => map.values().for_each(|v| collect_descendants(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_descendants(v, out)),
        _ => {}
    }
}

fn resolve_index(index: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if index < 0 { index + len } else { index };
    (0..len).contains(&i).then_some(i as usize)
}

/// client-go's `evalArray`: out-of-range bounds select nothing (they are errors there, which
/// a printer column shows as an empty cell).
fn slice(
    items: &[Value],
    start: Option<i64>,
    end: Option<i64>,
    step: Option<i64>,
    single: bool,
) -> Vec<&Value> {
    let len = items.len() as i64;
    let mut from = start.unwrap_or(0);
    if from < 0 {
        from += len;
    }
    let mut to = end.unwrap_or(len);
    if to < 0 || (single && to == 0) {
        to += len;
    }
    if from == to {
        return Vec::new();
    }
    if from < 0 || from >= len || to < 0 || to > len || from > to {
        return Vec::new();
    }
    let step = step.unwrap_or(1);
    if step <= 0 {
        return Vec::new();
    }
    items[from as usize..to as usize]
        .iter()
        .step_by(step as usize)
        .collect()
}

impl Filter {
    fn matches(&self, item: &Value) -> bool {
        let lefts = self.left.find(item);
        let Some((op, operand)) = &self.comparison else {
            return !lefts.is_empty();
        };
        let [left] = lefts.as_slice() else {
            return false;
        };
        let right = match operand {
            Operand::Literal(v) => v,
            Operand::Path(p) => match p.find(item).as_slice() {
                [r] => *r,
                _ => return false,
            },
        };
        compare(left, right).is_some_and(|ordering| match op {
            Op::Eq => ordering.is_eq(),
            Op::Ne => ordering.is_ne(),
            Op::Lt => ordering.is_lt(),
            Op::Le => ordering.is_le(),
            Op::Gt => ordering.is_gt(),
            Op::Ge => ordering.is_ge(),
        })
    }
}

/// Go template comparison of basic values: numbers with numbers, strings with strings,
/// booleans only for equality.
fn compare(left: &Value, right: &Value) -> Option<std::cmp::Ordering> {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        },
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Bool(a), Value::Bool(b)) if a == b => Some(std::cmp::Ordering::Equal),
        (Value::Bool(_), Value::Bool(_)) => Some(std::cmp::Ordering::Less),
        _ => None,
    }
}

struct Parser<'a> {
    rest: &'a str,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser { rest: input }
    }

    fn steps(&mut self) -> Result<Vec<Step>, String> {
        let mut steps = Vec::new();
        while !self.rest.is_empty() {
            if let Some(after) = self.rest.strip_prefix("..") {
                self.rest = after;
                steps.push(Step::Recursive);
                if !self.rest.starts_with('[') {
                    steps.push(self.field()?);
                }
            } else if let Some(after) = self.rest.strip_prefix('.') {
                self.rest = after;
                if self.rest.is_empty() {
                    break;
                }
                if !self.rest.starts_with('[') {
                    steps.push(self.field()?);
                }
            } else if self.rest.starts_with('[') {
                steps.push(self.bracket()?);
            } else if steps.is_empty() {
                // A bare leading field (`status.phase`) is read like `.status.phase`.
                steps.push(self.field()?);
            } else {
                return Err(format!("unexpected {:?}", self.rest));
            }
        }
        Ok(steps)
    }

    /// A field name up to the next unescaped `.` or `[`; `\x` escapes `x`.
    fn field(&mut self) -> Result<Step, String> {
        let mut name = String::new();
        let mut chars = self.rest.char_indices();
        let mut end = self.rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        name.push(escaped);
                    }
                }
                '.' | '[' => {
                    end = i;
                    break;
                }
                c => name.push(c),
            }
        }
        self.rest = &self.rest[end..];
        match name.as_str() {
            "" => Err("empty field name".to_string()),
            "*" => Ok(Step::Wildcard),
            _ => Ok(Step::Field(name)),
        }
    }

    fn bracket(&mut self) -> Result<Step, String> {
        let body_start = 1;
        let close = find_closing_bracket(self.rest).ok_or("unclosed array expect ]")?;
        let body = self.rest[body_start..close].trim();
        self.rest = &self.rest[close + 1..];
        if let Some(filter) = body.strip_prefix("?(").and_then(|b| b.strip_suffix(')')) {
            return Ok(Step::Filter(parse_filter(filter)?));
        }
        if body == "*" {
            return Ok(Step::Wildcard);
        }
        if let Some(key) = quoted(body) {
            return Ok(Step::Field(key));
        }
        if body.contains(',') {
            let indexes = body
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i64>()
                        .map_err(|_| format!("invalid union {body:?}"))
                })
                .collect::<Result<_, _>>()?;
            return Ok(Step::Union(indexes));
        }
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() > 3 {
            return Err(format!("invalid array index {body:?}"));
        }
        let number = |s: &str| -> Result<Option<i64>, String> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse()
                    .map(Some)
                    .map_err(|_| format!("invalid array index {body:?}"))
            }
        };
        let start = number(parts[0])?;
        if parts.len() == 1 {
            let index = start.ok_or_else(|| format!("invalid array index {body:?}"))?;
            return Ok(Step::Slice {
                start: Some(index),
                end: Some(index + 1),
                step: None,
                single: true,
            });
        }
        Ok(Step::Slice {
            start,
            end: number(parts[1])?,
            step: parts.get(2).map(|s| number(s)).transpose()?.flatten(),
            single: false,
        })
    }
}

/// The index of the `]` closing the bracket at the start of `s`, skipping quoted strings and
/// nested brackets in filters.
fn find_closing_bracket(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The contents of a `'...'` or `"..."` literal.
fn quoted(s: &str) -> Option<String> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = s.strip_prefix(q)?.strip_suffix(q)?;
    Some(inner.replace(&format!("\\{q}"), &q.to_string()))
}

fn parse_filter(filter: &str) -> Result<Filter, String> {
    const OPS: [(&str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let operator = find_operator(filter, &OPS);
    let (left_src, comparison) = match operator {
        None => (filter.trim(), None),
        Some((at, token, op)) => {
            let right_src = filter[at + token.len()..].trim();
            (filter[..at].trim(), Some((op, parse_operand(right_src)?)))
        }
    };
    let left_src = left_src
        .strip_prefix('@')
        .ok_or_else(|| format!("filter must start with @: {filter:?}"))?;
    let left = JsonPath {
        steps: Parser::new(left_src).steps()?,
    };
    Ok(Filter { left, comparison })
}

/// The first comparison operator outside quotes.
fn find_operator(s: &str, ops: &[(&'static str, Op)]) -> Option<(usize, &'static str, Op)> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            continue;
        }
        for (token, op) in ops {
            if s[i..].starts_with(token) {
                return Some((i, token, *op));
            }
        }
    }
    None
}

fn parse_operand(src: &str) -> Result<Operand, String> {
    if let Some(path) = src.strip_prefix('@') {
        return Ok(Operand::Path(JsonPath {
            steps: Parser::new(path).steps()?,
        }));
    }
    if let Some(s) = quoted(src) {
        return Ok(Operand::Literal(Value::String(s)));
    }
    match src {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    if let Ok(i) = src.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(i)));
    }
    if let Ok(f) = src.parse::<f64>() {
        return Ok(Operand::Literal(Value::from(f)));
    }
    Err(format!("unrecognized filter operand {src:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(doc: &Value, path: &str) -> Vec<Value> {
        JsonPath::parse(path)
            .unwrap()
            .find(doc)
            .into_iter()
            .cloned()
            .collect()
    }

    fn doc() -> Value {
        json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "shop", "tier": "web"}},
            "spec": {"waves": [{"name": "a", "percent": 10}, {"name": "b", "percent": 50}, {"name": "c"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Progressing", "status": "False"}
            ]}
        })
    }

    #[test]
    fn fields_indexes_and_wildcards() {
        let d = doc();
        assert_eq!(find(&d, ".spec.waves[0].name"), [json!("a")]);
        assert_eq!(find(&d, "{.spec.waves[-1].name}"), [json!("c")]);
        assert_eq!(
            find(&d, ".spec.waves[*].name"),
            [json!("a"), json!("b"), json!("c")]
        );
        assert_eq!(find(&d, ".spec.waves[1:].percent"), [json!(50)]);
        assert_eq!(find(&d, ".spec.waves[0,2].name"), [json!("a"), json!("c")]);
        assert_eq!(find(&d, ".spec.waves[9].name"), Vec::<Value>::new());
        assert_eq!(find(&d, "$.spec.missing.x"), Vec::<Value>::new());
        assert_eq!(
            find(&d, ".metadata.labels.*"),
            [json!("shop"), json!("web")]
        );
    }

    #[test]
    fn escaped_dots_and_quoted_keys() {
        let d = doc();
        assert_eq!(
            find(&d, r".metadata.labels.app\.kubernetes\.io/name"),
            [json!("shop")]
        );
        assert_eq!(
            find(&d, ".metadata.labels['app.kubernetes.io/name']"),
            [json!("shop")]
        );
    }

    #[test]
    fn filters_and_recursive_descent() {
        let d = doc();
        assert_eq!(
            find(&d, r#".status.conditions[?(@.type=="Ready")].status"#),
            [json!("True")]
        );
        assert_eq!(
            find(&d, ".status.conditions[?(@.type!='Ready')].type"),
            [json!("Progressing")]
        );
        assert_eq!(
            find(&d, ".spec.waves[?(@.percent)].name"),
            [json!("a"), json!("b")]
        );
        assert_eq!(
            find(&d, ".spec.waves[?(@.percent > 20)].name"),
            [json!("b")]
        );
        assert_eq!(find(&d, "..percent"), [json!(10), json!(50)]);
    }

    #[test]
    fn malformed_paths_are_errors() {
        assert!(JsonPath::parse(".spec.waves[").is_err());
        assert!(JsonPath::parse("{.spec").is_err());
        assert!(JsonPath::parse(".a[x]").is_err());
    }
}
