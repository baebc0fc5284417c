//! Reading a YAML or JSON document into schema types, reporting every structural problem
//! (wrong type, missing field, unknown field) with its path instead of stopping at the first.
//!
//! serde's derived `Deserialize` stops at the first error and cannot name every unknown field,
//! so the document is first parsed into a generic tree and then read field by field here.

use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::error::Problems;

/// The syntax of a configuration document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2 (JSON documents are read as YAML too, but JSON errors read better).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON when the text starts (after whitespace) with `{` or `[`, YAML otherwise.
    pub fn sniff(text: &str) -> Self {
        match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Parses `text` into a tree; a syntax error is a document-level problem.
pub(crate) fn parse_tree(text: &str, format: Format, problems: &mut Problems) -> Option<Value> {
    let parsed = match format {
        Format::Json => serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}")),
        Format::Yaml => serde_yaml_ng::from_str::<Value>(text).map_err(|e| format!("invalid YAML: {e}")),
    };
    match parsed {
        Ok(v) => Some(v),
        Err(message) => {
            problems.push("", message);
            None
        }
    }
}

/// A value that can be read from a tree node at a path.
pub(crate) trait FromTree: Sized {
    /// Reads `v`; on failure reports every problem under `path` and returns `None`.
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self>;
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

pub(crate) fn expected<T>(p: &mut Problems, path: &str, what: &str, v: &Value) -> Option<T> {
    p.push(path, format!("expected {what}, found {}", kind(v)));
    None
}

impl FromTree for String {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v {
            Value::String(s) => Some(s.clone()),
            // Unquoted YAML scalars such as `true` or `8080` are meant as text where text is
            // expected (`value: true` in a header match).
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => expected(p, path, "a string", v),
        }
    }
}

impl FromTree for bool {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => expected(p, path, "true or false", v),
        }
    }
}

impl FromTree for f64 {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v {
            Value::Number(n) => n.as_f64().or_else(|| expected(p, path, "a number", v)),
            _ => expected(p, path, "a number", v),
        }
    }
}

macro_rules! unsigned_from_tree {
    ($($t:ty),*) => {$(
        impl FromTree for $t {
            fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
                match v.as_u64().map(<$t>::try_from) {
                    Some(Ok(n)) => Some(n),
                    _ => {
                        p.push(path, format!(
                            "expected a whole number from 0 to {}, found {}",
                            <$t>::MAX,
                            describe(v)
                        ));
                        None
                    }
                }
            }
        }
    )*};
}
unsigned_from_tree!(u16, u32, u64, usize);

/// A short rendering of a scalar for messages, or its kind for anything larger.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        _ => kind(v).to_owned(),
    }
}

impl FromTree for Duration {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v {
            Value::String(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    p.push(path, format!("invalid duration {s:?} ({e}); write e.g. 500ms, 5s, 2m"));
                    None
                }
            },
            _ => expected(p, path, "a duration such as 500ms, 5s or 2m", v),
        }
    }
}

impl<T: FromTree> FromTree for Vec<T> {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let Value::Sequence(items) = v else {
            return expected(p, path, "a list", v);
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match T::from_tree(item, &format!("{path}[{i}]"), p) {
                Some(t) => out.push(t),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Reads a list item by item, keeping the items that read with their positions, so that one
/// unreadable item does not hide the others' problems.
pub(crate) fn lenient_list<T: FromTree>(v: &Value, path: &str, p: &mut Problems) -> Vec<(usize, T)> {
    let Value::Sequence(items) = v else {
        expected::<()>(p, path, "a list", v);
        return Vec::new();
    };
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| T::from_tree(item, &format!("{path}[{i}]"), p).map(|t| (i, t)))
        .collect()
}

/// Reads one mapping field by field, then reports the fields nobody asked for.
pub(crate) struct Fields<'v> {
    map: &'v Mapping,
    path: String,
    known: Vec<&'static str>,
}

impl<'v> Fields<'v> {
    /// Starts reading `v` as a mapping; reports and returns `None` if it is not one.
    pub(crate) fn of(v: &'v Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v {
            Value::Mapping(map) => Some(Self {
                map,
                path: path.to_owned(),
                known: Vec::new(),
            }),
            _ => expected(p, path, "a mapping", v),
        }
    }

    /// The path of one of this mapping's fields.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw node of a field, if present and not null.
    pub(crate) fn raw(&mut self, key: &'static str) -> Option<&'v Value> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// An optional field: `None` when absent or null, or when it is malformed (then reported).
    pub(crate) fn optional<T: FromTree>(&mut self, key: &'static str, p: &mut Problems) -> Option<T> {
        let v = self.raw(key)?;
        T::from_tree(v, &self.path_of(key), p)
    }

    /// A field with a default for when it is absent, or malformed (then reported).
    pub(crate) fn or<T: FromTree>(&mut self, key: &'static str, default: T, p: &mut Problems) -> T {
        self.optional(key, p).unwrap_or(default)
    }

    /// A field that must be present.
    pub(crate) fn required<T: FromTree>(&mut self, key: &'static str, p: &mut Problems) -> Option<T> {
        if self.raw(key).is_none() {
            p.push(self.path_of(key), "required field is missing");
            return None;
        }
        self.optional(key, p)
    }

    /// Reports unknown fields (likely typos). They are problems, but do not stop the fields
    /// that were read from being checked further.
    pub(crate) fn finish(self, p: &mut Problems) {
        for key in self.map.keys() {
            let known = key.as_str().is_some_and(|k| self.known.contains(&k));
            if !known {
                let name = key.as_str().map_or_else(|| describe(key), str::to_owned);
                let mut msg = format!("unknown field `{name}`");
                if let Some(near) = self.closest(&name) {
                    msg.push_str(&format!("; did you mean `{near}`?"));
                } else {
                    msg.push_str(&format!("; expected one of: {}", self.known.join(", ")));
                }
                p.push(self.path_of(&name), msg);
            }
        }
    }

    fn closest(&self, name: &str) -> Option<&'static str> {
        let lower = name.to_ascii_lowercase();
        self.known
            .iter()
            .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
            .filter(|(d, k)| *d <= 2.max(k.len() / 4))
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k)
    }
}

/// Levenshtein distance, for "did you mean" hints on short field names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("weight", "weight"), 0);
        assert_eq!(edit_distance("wieght", "weight"), 2);
        assert_eq!(edit_distance("weigt", "weight"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn unknown_field_names_the_nearest_known_one() {
        let v: Value = serde_yaml_ng::from_str("wieght: 5\nname: x").unwrap();
        let mut p = Problems::default();
        let mut f = Fields::of(&v, "tracks[0]", &mut p).unwrap();
        let _ = f.optional::<f64>("weight", &mut p);
        let _ = f.optional::<String>("name", &mut p);
        f.finish(&mut p);
        let errs = p.into_result(()).unwrap_err();
        assert_eq!(
            errs.0[0].to_string(),
            "tracks[0].wieght: unknown field `wieght`; did you mean `weight`?"
        );
    }

    #[test]
    fn sniffs_json_by_its_first_character() {
        assert_eq!(Format::sniff("  {\"routes\": []}"), Format::Json);
        assert_eq!(Format::sniff("routes: []"), Format::Yaml);
    }
}
