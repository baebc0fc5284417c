//! Keeping an OpenAPI description true: the operations it lists, and JSON bodies checked
//! against its object schemas.

use serde_json::Value;

/// An OpenAPI 3 document read from YAML.
#[derive(Debug)]
pub struct OpenApi(Value);

impl OpenApi {
    /// Reads the document at `path`; panics with the reason if it cannot.
    pub fn load(path: &str) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        Self(serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    /// Every operation as `METHOD /path`, sorted.
    pub fn operations(&self) -> Vec<String> {
        let mut ops: Vec<String> = self.0["paths"]
            .as_object()
            .expect("the document has paths")
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .expect("a path holds operations")
                    .keys()
                    .map(move |method| format!("{} {path}", method.to_uppercase()))
            })
            .collect();
        ops.sort();
        ops
    }

    /// The named schema under `components.schemas`.
    pub fn schema(&self, name: &str) -> &Value {
        &self.0["components"]["schemas"][name]
    }

    /// The whole document.
    pub fn document(&self) -> &Value {
        &self.0
    }
}

/// Asserts that `value` is an object carrying every field `schema` requires and no field it does
/// not describe; `name` names it in failures.
pub fn assert_object_matches(value: &Value, schema: &Value, name: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{name} is not an object: {value}"));
    for required in schema["required"].as_array().into_iter().flatten() {
        let r = required.as_str().expect("required names are strings");
        assert!(object.contains_key(r), "{name} lacks required {r}");
    }
    for key in object.keys() {
        assert!(
            schema["properties"].get(key).is_some(),
            "{name}.{key} is not documented"
        );
    }
}
