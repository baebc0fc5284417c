//! The two small languages a metric provider's spec may hold, each read by a well-kept crate
//! rather than a parser of ours: a web provider's `jsonPath` (RFC 9535 JSONPath, by
//! `serde_json_path`) and Argo-style `successCondition` / `failureCondition` expressions over
//! `result` (CEL, the Common Expression Language that Kubernetes uses, by `cel`).
//!
//! Both are checked when the spec is read, so a mistake is a field-path problem of the spec, and
//! evaluated here too, so that what validation accepted and what the controller runs are the
//! same language by construction.

use std::fmt;

use serde::{Serialize, Serializer};

/// A JSONPath query (RFC 9535), such as `$.data.ratio` or `$.checks[?@.name == 'conversion'].value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    path: serde_json_path::JsonPath,
}

impl JsonPath {
    /// Parses `text`; the error is a sentence that says where the query is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('{') && trimmed.ends_with('}') {
            // Argo Rollouts' web provider takes Kubernetes' JSONPath, written in braces.
            return Err(format!(
                "write the JSONPath without braces, as RFC 9535 has it: {}",
                trimmed[1..trimmed.len() - 1].trim()
            ));
        }
        match serde_json_path::JsonPath::parse(text) {
            Ok(path) => Ok(Self {
                text: text.to_owned(),
                path,
            }),
            Err(e) => Err(format!(
                "invalid JSONPath {text:?} at character {}: {} (write RFC 9535 JSONPath such as $.data.ratio)",
                e.position(),
                e.message()
            )),
        }
    }

    /// The query as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The nodes of `document` the query selects, in document order.
    pub fn select<'v>(&self, document: &'v serde_json::Value) -> Vec<&'v serde_json::Value> {
        self.path.query(document).all()
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for JsonPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A condition over `result` (what the provider answered), in CEL: `result[0] >= 0.95`,
/// `result < 0.01`, `result.ok && result.count > 100`. Argo Rollouts writes its conditions in
/// expr, whose comparisons, indexing, `&&`, `||` and `!` CEL writes alike; `len(x)` is
/// `size(x)` in CEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    text: String,
}

impl Condition {
    /// Parses `text` and checks that it names nothing but `result` and CEL's functions; the
    /// error is a sentence.
    pub fn parse(text: &str) -> Result<Self, String> {
        let program = compile(text)?;
        // CEL resolves names when it runs, so a misspelt name (`reslt`, or Argo's `isNaN`) is
        // found by running the expression: on a number and on a list of one, the two shapes a
        // result takes. A name is unknown only if both runs stop at it; any other outcome
        // (true, false, a type error because the sample has the other shape) says nothing
        // against the expression.
        let unknown = |sample: serde_json::Value| match run(&program, sample) {
            Err(cel::ExecutionError::UndeclaredReference(name)) => Some(name.to_string()),
            _ => None,
        };
        if let (Some(name), Some(again)) = (unknown(serde_json::json!(1.0)), unknown(serde_json::json!([1.0])))
            && name == again
        {
            return Err(format!(
                "{text:?} uses `{name}`, which CEL does not know: a condition reads `result` (what the provider answered) with CEL's operators and functions, such as result[0] >= 0.95"
            ));
        }
        Ok(Self { text: text.to_owned() })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the condition holds for `result`; the error is a sentence (the expression does
    /// not fit the result's shape, as `result[0]` on a number, or does not give true or false).
    pub fn holds(&self, result: &serde_json::Value) -> Result<bool, String> {
        let program = compile(&self.text)?;
        match run(&program, result.clone()) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{}` gives {}, not true or false", self.text, describe(&other))),
            Err(e) => Err(format!("`{}` cannot be evaluated: {}", self.text, words(&e))),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

fn compile(text: &str) -> Result<cel::Program, String> {
    cel::Program::compile(text).map_err(|errors| {
        let first = errors.errors.first();
        let detail = first.map_or_else(
            || errors.to_string(),
            // Columns count from 1.
            |e| {
                let msg = e.msg.strip_prefix("Syntax error: ").unwrap_or(&e.msg);
                format!("syntax error at character {}: {msg}", e.pos.1)
            },
        );
        format!("invalid condition {text:?}: {detail} (write CEL such as result[0] >= 0.95)")
    })
}

fn run(program: &cel::Program, result: serde_json::Value) -> Result<cel::Value, cel::ExecutionError> {
    let mut context = cel::Context::default();
    context.add_variable_from_value("result", value(result));
    program.execute(&context)
}

/// A JSON value as CEL's. Every number becomes a double, as JSON has one kind of number: CEL
/// keeps integers and doubles apart in arithmetic, so `result.count * 2.0` would otherwise work
/// on `1.5` and fail on `1`.
fn value(json: serde_json::Value) -> cel::Value {
    use serde_json::Value as J;
    match json {
        J::Null => cel::Value::Null,
        J::Bool(b) => cel::Value::Bool(b),
        J::Number(n) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => cel::Value::String(s.into()),
        J::Array(items) => cel::Value::List(items.into_iter().map(value).collect::<Vec<_>>().into()),
        J::Object(fields) => {
            let fields: std::collections::HashMap<String, cel::Value> =
                fields.into_iter().map(|(k, v)| (k, value(v))).collect();
            cel::Value::Map(fields.into())
        }
    }
}

/// A CEL value as part of a sentence: `0.5`, `the text "x"`, `a list of 2`.
fn describe(v: &cel::Value) -> String {
    match v {
        cel::Value::Int(n) => n.to_string(),
        cel::Value::UInt(n) => n.to_string(),
        cel::Value::Float(x) => x.to_string(),
        cel::Value::Bool(b) => b.to_string(),
        cel::Value::String(s) => format!("the text {s:?}"),
        cel::Value::Null => "null".to_owned(),
        cel::Value::List(items) => format!("a list of {}", items.len()),
        cel::Value::Map(_) => "a map".to_owned(),
        other => format!("a {}", other.type_of()),
    }
}

/// Why an expression could not be evaluated, as a sentence: CEL's own messages show its values
/// as Rust's debug output (`Index out of bounds: Int(0)`).
fn words(e: &cel::ExecutionError) -> String {
    use cel::ExecutionError as E;
    match e {
        E::IndexOutOfBounds(i) => format!("index {} is out of range", describe(i)),
        E::NoSuchKey(key) => format!("there is no field {key:?}"),
        E::UndeclaredReference(name) => format!("`{name}` is not known"),
        E::ValuesNotComparable(a, b) => format!("{} cannot be compared with {}", describe(a), describe(b)),
        E::UnsupportedBinaryOperator(op, a, b) => {
            format!("`{op}` does not apply to {} and {}", describe(a), describe(b))
        }
        E::UnsupportedIndex(i, v) => format!("{} cannot be indexed by {}", describe(v), describe(i)),
        E::DivisionByZero(_) | E::RemainderByZero(_) => "it divides by zero".to_owned(),
        E::UnexpectedType { got, want } => format!("found a {got} where a {want} is needed"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_json_path_selects_its_nodes() {
        let p = JsonPath::parse("$.data.ratio").unwrap();
        let doc = json!({"data": {"ratio": 0.97}});
        assert_eq!(p.select(&doc), [&json!(0.97)]);
        let all = JsonPath::parse("$.checks[*].value").unwrap();
        let doc = json!({"checks": [{"value": 1}, {"value": 2}]});
        assert_eq!(all.select(&doc).len(), 2);
        assert!(p.select(&json!({"data": {}})).is_empty());
    }

    #[test]
    fn a_json_path_error_says_where_and_how_to_write_one() {
        let e = JsonPath::parse("$.data[").unwrap_err();
        assert!(e.starts_with("invalid JSONPath \"$.data[\" at character "), "{e}");
        assert!(e.ends_with("(write RFC 9535 JSONPath such as $.data.ratio)"), "{e}");
        assert_eq!(
            JsonPath::parse("{$.data.ok}").unwrap_err(),
            "write the JSONPath without braces, as RFC 9535 has it: $.data.ok"
        );
    }

    #[test]
    fn conditions_hold_or_not_on_numbers_and_lists() {
        let c = |text: &str| Condition::parse(text).unwrap();
        assert_eq!(c("result[0] >= 0.95").holds(&json!([0.97])), Ok(true));
        assert_eq!(c("result[0] >= 0.95").holds(&json!([0.9])), Ok(false));
        // An integer literal compares with a float result.
        assert_eq!(c("result < 1").holds(&json!(0.5)), Ok(true));
        assert_eq!(
            c("result.ok && result.count > 100").holds(&json!({"ok": true, "count": 150})),
            Ok(true)
        );
        assert_eq!(c("size(result) == 0").holds(&json!([])), Ok(true));
        // Every number is a double, whether JSON wrote it with a point or not.
        assert_eq!(c("result * 2.0 > 1.5").holds(&json!(1)), Ok(true));
    }

    #[test]
    fn a_condition_that_does_not_fit_its_result_is_an_error_in_words() {
        let index = Condition::parse("result[0] > 1").unwrap();
        let e = index.holds(&json!([])).unwrap_err();
        assert!(e.starts_with("`result[0] > 1` cannot be evaluated: "), "{e}");
        let number = Condition::parse("result + 1.0").unwrap();
        assert_eq!(
            number.holds(&json!(1)).unwrap_err(),
            "`result + 1.0` gives 2, not true or false"
        );
    }

    #[test]
    fn bad_conditions_are_refused_when_read() {
        let e = Condition::parse("result >").unwrap_err();
        assert!(e.starts_with("invalid condition \"result >\": "), "{e}");
        assert!(e.contains("at character 9"), "{e}");
        for unknown in ["reslt > 1", "isNaN(result)"] {
            let e = Condition::parse(unknown).unwrap_err();
            assert!(e.contains("which CEL does not know"), "{unknown}: {e}");
        }
        // A comprehension's own variable is not an unknown name.
        assert!(Condition::parse("result.all(x, x > 0.9)").is_ok());
        // Nor is a shape the samples do not have.
        assert!(Condition::parse("result.ok == true").is_ok());
    }
}
