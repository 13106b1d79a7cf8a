//! One way to report a refused configuration value, for the balancer and both apps: the
//! environment variable or file key, the value as written, what is wrong and what was
//! expected, and never a Rust type or path.
//!
//! ```text
//! BALANCER_LISTEN="foo" (environment): invalid socket address syntax; expected ...
//! balancer.toml key listen = "foo" (file /etc/balancer/balancer.toml, line 1): ...
//! ```
//!
//! confique's own errors are opaque and name fields by their Rust path (`RawConfig::listen`),
//! so the sources are loaded here one at a time: the environment layer (a failure can only
//! come from a variable, found by its name in confique's message), the file layer (parsed
//! with `toml`, whose error carries the span, mapped back to the key), then confique merges
//! them with the defaults. What was expected comes from the parser's message when it says,
//! else from the field's doc comment and default in `Config::META`.
//!
//! Used by the balancer and both apps: it needs only confique and toml, and names nothing of
//! any of them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use confique::meta::{Expr, Field, FieldKind, LeafKind, Meta};
use confique::{Config, Layer};

/// Where a refused value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An environment variable.
    Env(String),
    /// A key of the config file: dotted (`pools.web.members`, `routes[0].pool`).
    File {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// 1-based line of the value, when known.
        line: Option<usize>,
    },
    /// The config file is not valid TOML here.
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The built-in default of this key (wrong only together with another value).
    Default(String),
}

/// A configuration value that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where it came from (boxed: a `Result` carrying a `Problem` stays small).
    pub origin: Box<Source>,
    /// The value as written (file values in TOML syntax), if there is one.
    pub value: Option<String>,
    /// What is wrong with it (may be empty when `expected` says it all).
    pub reason: String,
    /// What would have been accepted, unless `reason` already says.
    pub expected: Option<String>,
}

impl std::error::Error for Problem {}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.value.as_deref();
        match &*self.origin {
            Source::Env(var) => {
                write!(f, "{var}={} (environment)", value.unwrap_or("\"\""))?;
            }
            Source::File { path, key, line } => {
                write!(f, "{} key {key}", file_name(path))?;
                if let Some(v) = value {
                    write!(f, " = {v}")?;
                }
                write!(f, " (file {}", path.display())?;
                if let Some(l) = line {
                    write!(f, ", line {l}")?;
                }
                f.write_str(")")?;
            }
            Source::Syntax { path, line, column } => {
                write!(f, "{} line {line}", file_name(path))?;
                if let Some(v) = value {
                    write!(f, " `{v}`")?;
                }
                write!(f, " (file {}, column {column})", path.display())?;
            }
            Source::Default(key) => {
                write!(f, "{key}")?;
                if let Some(v) = value {
                    write!(f, " = {v}")?;
                }
                f.write_str(" (default)")?;
            }
        }
        match (&self.expected, self.reason.is_empty()) {
            (Some(e), true) => write!(f, ": expected {e}"),
            (Some(e), false) => write!(f, ": {}; expected {e}", self.reason),
            (None, _) => write!(f, ": {}", self.reason),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl Problem {
    /// A value that parsed but is refused, from `origin`.
    pub fn invalid(origin: Source, value: Option<String>, expected: impl Into<String>) -> Self {
        Problem {
            origin: Box::new(origin),
            value,
            reason: String::new(),
            expected: Some(expected.into()),
        }
    }

    /// The config file could not be read at all.
    pub fn unreadable(path: &Path, err: &std::io::Error) -> Self {
        Problem {
            origin: Box::new(Source::File {
                path: path.to_owned(),
                key: "(whole file)".into(),
                line: None,
            }),
            value: None,
            reason: format!("cannot read it: {err}"),
            expected: Some("a readable TOML file".into()),
        }
    }
}

/// The value of env var `var` as it will be shown: quoted, or hidden for a secret.
pub fn env_value(var: &str) -> Option<String> {
    let raw = std::env::var_os(var)?;
    Some(shown(var, &raw.to_string_lossy()))
}

/// `value` quoted for display, or hidden when `name` is a token or secret.
pub fn shown(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower.contains("token") || lower.contains("secret") {
        format!("<hidden, {} characters>", value.chars().count())
    } else {
        format!("{value:?}")
    }
}

/// Loads `C` from the environment, then the TOML file at `file` (if given), then defaults.
pub fn load<C: Config>(file: Option<&Path>) -> Result<C, Problem> {
    let mut builder = C::builder().preloaded(env_layer::<C>()?);
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| Problem::unreadable(path, &e))?;
        builder = builder.preloaded(file_layer::<C>(path, &text)?);
    }
    builder.load().map_err(|e| from_merge::<C>(&e))
}

/// The layer of every variable that is set; a bad one is named with its value.
pub fn env_layer<C: Config>() -> Result<C::Layer, Problem> {
    C::Layer::from_env().map_err(|e| from_env_error::<C>(&e))
}

/// The layer the TOML `text` of the file at `path` gives; a bad key or value is named with
/// its line.
pub fn file_layer<C: Config>(path: &Path, text: &str) -> Result<C::Layer, Problem> {
    let doc = toml::de::DeTable::parse(text).map_err(|e| syntax::<C>(path, text, &e))?;
    toml::from_str::<C::Layer>(text).map_err(|e| in_file::<C>(path, text, doc.get_ref(), &e))
}

fn from_env_error<C: Config>(e: &confique::Error) -> Problem {
    let msg = e.to_string();
    let Some((var, field)) = env_fields(&C::META)
        .into_iter()
        .find(|(var, _)| msg.contains(&format!("`{var}`")))
    else {
        return from_merge::<C>(e);
    };
    // A `parse_env` function's error is the source; confique's own deserializer's message
    // follows the variable's name.
    let detail = match std::error::Error::source(e) {
        Some(s) => s.to_string(),
        None => msg
            .split_once(&format!("`{var}`: "))
            .map_or(msg.clone(), |(_, d)| d.to_owned()),
    };
    let (reason, expected) = humanize(&detail);
    let expected = expected.or_else(|| unless_said(&reason, Some(field)));
    Problem {
        origin: Box::new(Source::Env(var.to_owned())),
        value: env_value(var),
        reason,
        expected,
    }
}

fn in_file<C: Config>(
    path: &Path,
    text: &str,
    doc: &toml::de::DeTable<'_>,
    e: &toml::de::Error,
) -> Problem {
    let (reason, expected) = humanize(e.message());
    let found = e.span().and_then(|span| {
        let mut key = Vec::new();
        locate(doc, &span, &mut key).map(|value| (key, value))
    });
    let line = e.span().map(|s| line_col(text, s.start).0);
    let Some((key, value)) = found else {
        return Problem {
            origin: Box::new(Source::File {
                path: path.to_owned(),
                key: "(whole file)".into(),
                line,
            }),
            value: None,
            reason,
            expected,
        };
    };
    let expected = expected.or_else(|| unless_said(&reason, field_at(&C::META, &key)));
    Problem {
        origin: Box::new(Source::File {
            path: path.to_owned(),
            key: dotted(&key),
            line,
        }),
        value: value.and_then(|r| text.get(r)).map(|v| short(v.trim())),
        reason,
        expected,
    }
}

fn syntax<C: Config>(path: &Path, text: &str, e: &toml::de::Error) -> Problem {
    let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
    let reason = e.message().trim();
    let reason = reason.strip_suffix(", expected nothing").unwrap_or(reason);
    let example = example_line(&C::META).map_or(String::new(), |l| format!(", e.g. {l}"));
    Problem {
        origin: Box::new(Source::Syntax {
            path: path.to_owned(),
            line,
            column,
        }),
        value: text.lines().nth(line - 1).map(|l| short(l.trim())),
        reason: format!("not valid TOML ({reason})"),
        expected: Some(format!(
            "`key = value` lines with text in double quotes{example}"
        )),
    }
}

/// What confique reports after merging the layers: a missing value or a failed validation.
/// Nothing a parser refused reaches here; the message is kept, without the Rust type names.
pub fn from_merge<C: Config>(e: &confique::Error) -> Problem {
    let mut msg = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    let msg = msg.replace(&format!("`{}::", C::META.name), "`");
    let msg = msg.replace(&format!("`{}`", C::META.name), "the configuration");
    let (reason, expected) = humanize(&msg);
    Problem {
        origin: Box::new(Source::Default("configuration".into())),
        value: None,
        reason,
        expected,
    }
}

/// Every environment variable `C` reads.
#[allow(dead_code)] // the balancer's; the apps' variables are all in their `--help`
pub fn env_vars<C: Config>() -> Vec<&'static str> {
    env_fields(&C::META).into_iter().map(|(v, _)| v).collect()
}

/// Every leaf with an env var, with its field.
fn env_fields(meta: &'static Meta) -> Vec<(&'static str, &'static Field)> {
    let mut out = Vec::new();
    for f in meta.fields {
        match f.kind {
            FieldKind::Leaf { env: Some(var), .. } => out.push((var, f)),
            FieldKind::Leaf { env: None, .. } => {}
            FieldKind::Nested { meta } => out.extend(env_fields(meta)),
        }
    }
    out
}

/// The field a file key names, if `META` declares it (not inside a map of tables).
fn field_at(meta: &'static Meta, key: &[String]) -> Option<&'static Field> {
    let (first, rest) = key.split_first()?;
    let f = meta.fields.iter().find(|f| f.name == first)?;
    match (f.kind, rest.is_empty()) {
        (FieldKind::Leaf { .. }, true) => Some(f),
        (FieldKind::Nested { meta }, false) => field_at(meta, rest),
        _ => None,
    }
}

/// The field's expectation, unless the parser's `reason` already says what it expected.
fn unless_said(reason: &str, field: Option<&Field>) -> Option<String> {
    if reason.contains("expected") {
        return None;
    }
    field.and_then(field_expectation)
}

/// What a field takes, from its doc comment and its default.
fn field_expectation(f: &Field) -> Option<String> {
    let doc = f.doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    let doc = doc.trim().trim_end_matches('.');
    let default = match f.kind {
        FieldKind::Leaf {
            kind: LeafKind::Required {
                default: Some(expr),
            },
            ..
        } => scalar(&expr),
        _ => None,
    };
    let mut out = lower_first(doc);
    if let Some(d) = default {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&format!("like the default {d}"));
    }
    (!out.is_empty()).then_some(out)
}

/// A default as it would be written in TOML, for scalars.
fn scalar(e: &Expr) -> Option<String> {
    match e {
        Expr::Str(s) => Some(format!("{s:?}")),
        Expr::Integer(i) => Some(i.to_string()),
        Expr::Float(x) => Some(x.to_string()),
        Expr::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `listen = "0.0.0.0:80"`: the first field with a text default, as a line to copy.
fn example_line(meta: &'static Meta) -> Option<String> {
    meta.fields.iter().find_map(|f| match f.kind {
        FieldKind::Leaf {
            kind: LeafKind::Required {
                default: Some(Expr::Str(s)),
            },
            ..
        } => Some(format!("{} = {s:?}", f.name)),
        _ => None,
    })
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        // An acronym (`HTTP`) keeps its case.
        (Some(a), Some(b)) if a.is_uppercase() && !b.is_uppercase() => {
            a.to_lowercase().chain(s[a.len_utf8()..].chars()).collect()
        }
        _ => s.to_owned(),
    }
}

/// Finds the key whose name or value holds `span`; returns the value's span (`None` for a
/// table, whose text is not a value to show).
fn locate(
    table: &toml::de::DeTable<'_>,
    span: &Range<usize>,
    key: &mut Vec<String>,
) -> Option<Option<Range<usize>>> {
    for (k, v) in table.iter() {
        key.push(k.get_ref().to_string());
        if holds(&k.span(), span) {
            return Some(Some(v.span()));
        }
        if let Some(found) = locate_value(v, span, key) {
            return Some(found);
        }
        key.pop();
    }
    None
}

fn locate_value(
    v: &toml::Spanned<toml::de::DeValue<'_>>,
    span: &Range<usize>,
    key: &mut Vec<String>,
) -> Option<Option<Range<usize>>> {
    match v.get_ref() {
        toml::de::DeValue::Table(t) => {
            locate(t, span, key).or_else(|| holds(&v.span(), span).then_some(None))
        }
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                key.push(format!("[{i}]"));
                if let Some(found) = locate_value(item, span, key) {
                    return Some(found);
                }
                key.pop();
            }
            holds(&v.span(), span).then(|| Some(v.span()))
        }
        _ => holds(&v.span(), span).then(|| Some(v.span())),
    }
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn dotted(key: &[String]) -> String {
    let mut out = String::new();
    for k in key {
        if !k.starts_with('[') && !out.is_empty() {
            out.push('.');
        }
        out.push_str(k);
    }
    out
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn short(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Rewrites a serde, toml or confique message in the words of the config file: (what is
/// wrong, what was expected if the message says).
pub fn humanize(msg: &str) -> (String, Option<String>) {
    let msg = msg.trim();
    let msg = msg.strip_prefix("validation failed: ").unwrap_or(msg);
    // The apps' parsers say `invalid value "x": ...`; the value is shown once, before.
    let msg = msg
        .strip_prefix("invalid value \"")
        .and_then(|r| r.split_once("\": "))
        .map_or(msg, |(_, r)| r);
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        return unknown_key(rest);
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        return match rest.split_once(", expected ") {
            Some((name, choices)) => (format!("unknown value {name}"), Some(choices.to_owned())),
            None => (format!("unknown value {rest}"), None),
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return (
            format!("missing key {rest}"),
            Some(format!("a {rest} key in this table")),
        );
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((found, ty)) = msg
            .strip_prefix(prefix)
            .and_then(|r| r.rsplit_once(", expected "))
        {
            let what = if prefix == "invalid type: " {
                format!("found {}", kind_of(found))
            } else {
                "invalid value".to_owned()
            };
            return (what, Some(type_words(ty)));
        }
    }
    // confique's env deserializer: "invalid value 'x' for type u64: invalid digit ..."
    if let Some((ty, detail)) = msg
        .strip_prefix("invalid value '")
        .and_then(|r| r.split_once("' for type "))
        .and_then(|(_, r)| r.split_once(": "))
    {
        let reason = if detail.contains("too large") || detail.contains("too small") {
            "out of range"
        } else {
            "not a number"
        };
        return (reason.into(), Some(type_words(ty)));
    }
    if msg.starts_with("invalid value for bool") {
        return (
            "not a boolean".into(),
            Some("true or false (also yes/no, 1/0)".into()),
        );
    }
    if msg == "wanted string or table" {
        return ("found another type".into(), Some("a string".into()));
    }
    (msg.to_owned(), None)
}

/// "unknown field `lisen`, expected one of `listen`, ..." as an unknown key with a guess.
fn unknown_key(rest: &str) -> (String, Option<String>) {
    let (name, choices) = match rest.split_once(", expected one of ") {
        Some((n, c)) => (n, Some(c)),
        None => match rest.split_once(", expected ") {
            Some((n, c)) => (n, Some(c)),
            None => (rest.split(',').next().unwrap_or(rest), None),
        },
    };
    let bare = name.trim_matches('`');
    let guess = choices.and_then(|c| {
        c.split(", ")
            .map(|k| k.trim_matches('`'))
            .filter(|k| close(k, bare))
            .min_by_key(|k| distance(k, bare))
    });
    let reason = match guess {
        Some(g) => format!("unknown key {name} (did you mean `{g}`?)"),
        None => format!("unknown key {name}"),
    };
    let expected = match choices {
        Some(c) if c.contains(", ") => Some(format!("one of {c}")),
        Some(c) => Some(c.to_owned()),
        None => Some("no keys here".into()),
    };
    (reason, expected)
}

fn close(a: &str, b: &str) -> bool {
    distance(a, b) <= 2.max(b.len() / 4)
}

/// Edit distance between two short keys.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut row = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            row.push(sub.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

/// serde's "string \"x\"", "integer `5`", "sequence" as the kind of TOML value it was.
fn kind_of(unexpected: &str) -> &'static str {
    match unexpected.split([' ', '`']).next().unwrap_or("") {
        "string" | "char" => "a string",
        "integer" => "an integer",
        "floating" => "a decimal number",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" => "a table",
        _ => "another type",
    }
}

/// serde's expectation (`u32`, `struct Foo`, `a sequence`) in TOML words.
fn type_words(ty: &str) -> String {
    let ty = ty.trim();
    let whole = |max: &str| format!("a whole number from 0 to {max}");
    match ty {
        "u8" => whole("255"),
        "u16" => whole("65535"),
        "u32" => whole("4294967295"),
        "u64" | "usize" | "u128" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        _ if ty.starts_with("struct ") => "a table".into(),
        _ if ty.starts_with("enum ") || ty.contains("::") => "another kind of value".into(),
        _ => ty.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_words_become_toml_words() {
        let (r, e) = humanize("invalid type: string \"x\", expected usize");
        assert_eq!(r, "found a string");
        assert_eq!(e.as_deref(), Some("a whole number (0 or more)"));
        let (r, e) = humanize("invalid type: integer `5`, expected struct HealthFile");
        assert_eq!(
            (r.as_str(), e.as_deref()),
            ("found an integer", Some("a table"))
        );
        let (r, e) = humanize("invalid value 'x' for type u16: invalid digit found in string");
        assert_eq!(r, "not a number");
        assert_eq!(e.as_deref(), Some("a whole number from 0 to 65535"));
    }

    #[test]
    fn an_unknown_key_gets_a_guess() {
        let (r, e) = humanize("unknown field `lisen`, expected one of `listen`, `workers`");
        assert_eq!(r, "unknown key `lisen` (did you mean `listen`?)");
        assert_eq!(e.as_deref(), Some("one of `listen`, `workers`"));
        let (r, _) = humanize("unknown field `zzz`, expected one of `listen`, `workers`");
        assert_eq!(r, "unknown key `zzz`");
    }

    #[test]
    fn secrets_are_not_shown() {
        assert_eq!(
            shown("BALANCER_ADMIN_TOKEN", "s3cret"),
            "<hidden, 6 characters>"
        );
        assert_eq!(shown("BALANCER_LISTEN", "a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn keys_are_found_by_span() {
        let text = "workers = 1\n[pools.web]\nmembers = [\"a:1\", 5]\n";
        let doc = toml::de::DeTable::parse(text).unwrap();
        let at = text.find('5').unwrap();
        let mut key = Vec::new();
        let value = locate(doc.get_ref(), &(at..at + 1), &mut key).unwrap();
        assert_eq!(dotted(&key), "pools.web.members[1]");
        assert_eq!(&text[value.unwrap()], "5");
        assert_eq!(line_col(text, at), (3, 19));
    }
}
