//! The routes document: the body of a proxy's `GET /routes` ([`RoutesDocument`]) and of
//! `PUT /routes` ([`load_routes`]), and the answer to a `PUT` it took ([`RoutesPublished`]).
//!
//! ```
//! use switchyard_config::{Format, RoutesDocument};
//!
//! let body = r#"{"version": 3, "instance": "5f0c6e1d2a9b8c47", "routes": [{"name": "app",
//!   "tracks": [{"name": "stable", "endpoints": ["127.0.0.1:9000"], "weight": 1}]}]}"#;
//! let doc = RoutesDocument::read(body, Format::Json).unwrap();
//! assert_eq!((doc.version, doc.routes[0].name.as_str()), (3, "app"));
//! assert_eq!(doc.instance.unwrap().as_str(), "5f0c6e1d2a9b8c47");
//! ```

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::read::{Fields, lenient_list, parse_tree};
use crate::{ConfigErrors, Format, InstanceId, RouteSpec, RoutingTable};

/// The body of a proxy's `GET /routes`: the table in force. Written by the proxy with this type
/// and read back with [`RoutesDocument::read`], which validates the routes as the proxy did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutesDocument {
    /// The table's version (also the response's `ETag`).
    pub version: u64,
    /// The proxy process that answered. Absent from proxies older than this field (then
    /// `None`: a restart cannot be told).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// The routes as written, with defaults filled in (the configuration file's schema).
    pub routes: Vec<RouteSpec>,
}

/// The body of a proxy's answer to a `PUT /routes` it took: the version now in force. Written
/// by the proxy and read by the control loop with this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesPublished {
    /// The version of the table just published.
    pub version: u64,
}

impl RoutesDocument {
    /// Reads a `GET /routes` body: `version` is required, `instance` optional, and the routes
    /// are validated and compiled as [`load_routes`] does. Every problem is reported, each with
    /// its field path.
    pub fn read(text: &str, format: Format) -> Result<Self, ConfigErrors> {
        let mut p = Problems::default();
        let Some(fields) = read_fields(text, format, Version::Required, &mut p) else {
            return Err(p.into_errors());
        };
        // Without a readable version the routes are still checked, so that every problem is
        // reported at once; the version they compile with does not matter then.
        let table = compile(&fields, fields.version.unwrap_or(0), &mut p);
        match fields.version {
            Some(version) => p.into_result(Self {
                version,
                instance: fields.instance,
                routes: table.spec().to_vec(),
            }),
            None => Err(p.into_errors()),
        }
    }
}

/// Reads, validates and compiles a routes document, `{"routes": [...]}` (the `version` and
/// `instance` fields that `GET /routes` serves are allowed and ignored, so what it serves can be
/// sent back); the table gets `version`.
pub fn load_routes(text: &str, format: Format, version: u64) -> Result<RoutingTable, ConfigErrors> {
    let mut p = Problems::default();
    let Some(fields) = read_fields(text, format, Version::Ignored, &mut p) else {
        return Err(p.into_errors());
    };
    let table = compile(&fields, version, &mut p);
    p.into_result(table)
}

/// Whether a routes document must carry its `version`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Version {
    /// As `GET /routes` serves it.
    Required,
    /// As `PUT /routes` takes it: the caller names the version with `If-Match`.
    Ignored,
}

/// The fields of a routes document, read but not yet checked against each other.
struct RoutesFields {
    /// Each route's position in the document, for the field paths of later checks.
    positions: Vec<usize>,
    routes: Vec<RouteSpec>,
    version: Option<u64>,
    instance: Option<InstanceId>,
}

/// Reads the document's fields, reporting each problem into `p`; `None` if it is not a mapping.
fn read_fields(text: &str, format: Format, version: Version, p: &mut Problems) -> Option<RoutesFields> {
    let tree = parse_tree(text, format, p)?;
    let mut f = Fields::of(&tree, "", p)?;
    let (positions, routes) = match f.raw("routes") {
        Some(v) => lenient_list(v, "routes", p).into_iter().unzip(),
        None => {
            p.push("routes", "required field is missing");
            Default::default()
        }
    };
    let version = match version {
        Version::Required => f.required("version", p),
        Version::Ignored => f.optional("version", p),
    };
    let instance = f.optional("instance", p);
    f.finish(p);
    Some(RoutesFields {
        positions,
        routes,
        version,
        instance,
    })
}

/// Compiles the routes as version `version`, adding to `p` (the problems found while reading)
/// those of the checks that are not under a field already reported.
fn compile(fields: &RoutesFields, version: u64, p: &mut Problems) -> RoutingTable {
    let mut checks = Problems::default();
    let table = RoutingTable::compile_into(&fields.routes, &fields.positions, version, &mut checks);
    p.add_uncovered(checks);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        r#"[{"name": "app", "tracks": [{"name": "stable", "endpoints": ["127.0.0.1:9000"], "weight": 1}]}]"#;

    fn paths(e: ConfigErrors) -> Vec<String> {
        e.errors().iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn what_the_proxy_writes_reads_back_the_same() {
        let table = load_routes(&format!(r#"{{"routes": {ROUTES}}}"#), Format::Json, 4).unwrap();
        let doc = RoutesDocument {
            version: 4,
            instance: Some(InstanceId::from_bits(0x5eed)),
            routes: table.spec().to_vec(),
        };
        let json = serde_json::to_value(&doc).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["instance", "routes", "version"]);
        assert_eq!(json["instance"], "0000000000005eed");
        assert_eq!(RoutesDocument::read(&json.to_string(), Format::Json).unwrap(), doc);
        // And `PUT /routes` takes it back as it is.
        assert_eq!(
            load_routes(&json.to_string(), Format::Json, 5).unwrap().spec(),
            table.spec()
        );
    }

    #[test]
    fn a_served_document_needs_its_version_and_may_lack_its_instance() {
        let doc = RoutesDocument::read(&format!(r#"{{"version": 2, "routes": {ROUTES}}}"#), Format::Json).unwrap();
        assert_eq!((doc.version, doc.instance), (2, None));
        let missing = RoutesDocument::read(&format!(r#"{{"routes": {ROUTES}}}"#), Format::Json).unwrap_err();
        assert_eq!(paths(missing), ["version"]);
        let bad = r#"{"version": "two", "instance": [], "routes": [{"name": "app", "tracks": []}]}"#;
        assert_eq!(
            paths(RoutesDocument::read(bad, Format::Json).unwrap_err()),
            ["version", "instance", "routes[0].tracks"]
        );
    }
}
