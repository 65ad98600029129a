//! `pattern` keyword. CRD schemas document ECMA-262 regexes, but the apiserver compiles them
//! with Go's RE2 `regexp` package (no lookaround, no backreferences), whose syntax the `regex`
//! crate shares. The one difference that matters is that RE2's `\d`, `\w`, `\s` and `\b` are
//! ASCII-only while the `regex` crate's are Unicode-aware, so they are rewritten to their ASCII
//! forms before compiling.

use regex::Regex;

/// A compiled `pattern`, keeping the source for error messages.
#[derive(Debug)]
pub(crate) struct Pattern {
    pub source: String,
    pub regex: Regex,
}

impl Pattern {
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        let translated = ascii_perl_classes(source);
        let regex =
            Regex::new(&translated).map_err(|e| format!("invalid pattern {source:?}: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// Whether the value matches somewhere (RE2's `MatchString` is unanchored).
    pub(crate) fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

/// Rewrites the Perl classes `\d \D \w \W \s \S \b \B` to the ASCII sets RE2 gives them.
fn ascii_perl_classes(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 16);
    let mut chars = source.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(next) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let replacement = match (in_class, next) {
                    (false, 'd') => Some("[0-9]"),
                    (false, 'D') => Some("[^0-9]"),
                    (false, 'w') => Some("[0-9A-Za-z_]"),
                    (false, 'W') => Some("[^0-9A-Za-z_]"),
                    (false, 's') => Some("[\\t\\n\\f\\r ]"),
                    (false, 'S') => Some("[^\\t\\n\\f\\r ]"),
                    (false, 'b') => Some("(?-u:\\b)"),
                    (false, 'B') => Some("(?-u:\\B)"),
                    (true, 'd') => Some("0-9"),
                    (true, 'w') => Some("0-9A-Za-z_"),
                    (true, 's') => Some("\\t\\n\\f\\r "),
                    _ => None,
                };
                match replacement {
                    Some(r) => out.push_str(r),
                    None => {
                        out.push('\\');
                        out.push(next);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                // A `]` right after `[` or `[^` is a literal, not the end of the class.
                let rest = chars.as_str();
                if let Some(stripped) = rest.strip_prefix('^') {
                    out.push('^');
                    chars = stripped.chars();
                }
                if chars.as_str().starts_with(']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perl_classes_are_ascii_like_re2() {
        let digits = Pattern::compile(r"^\d+$").unwrap();
        assert!(digits.is_match("0123"));
        assert!(
            !digits.is_match("١٢٣"),
            "Arabic-Indic digits are not RE2 \\d"
        );
        let word = Pattern::compile(r"^[\w-]+$").unwrap();
        assert!(word.is_match("a_b-c"));
        assert!(!word.is_match("é"));
        assert!(Pattern::compile(r"^\\d$").unwrap().is_match("\\d"));
    }

    #[test]
    fn matching_is_unanchored_like_go() {
        assert!(Pattern::compile("[a-z]").unwrap().is_match("123a"));
    }

    #[test]
    fn lookaround_is_rejected_like_re2() {
        assert!(Pattern::compile("^(?!x)").is_err());
    }
}
