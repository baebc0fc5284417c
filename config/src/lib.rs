//! Switchyard's shared configuration: the schema of routing tables (YAML or JSON, camelCase),
//! validation that reports every problem with its field path, and the compiled, immutable
//! [`RoutingTable`] whose pure [`RoutingTable::decide`] picks route, track and endpoint for a
//! request without allocating.
//!
//! ```
//! use switchyard_config::{load_config, Format, RequestView};
//!
//! let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/canary-weight.yaml")).unwrap();
//! let loaded = load_config(&text, Format::Yaml, 1).unwrap();
//! let (parts, ()) = http::Request::get("/cart").header("host", "shop.example.com")
//!     .header("x-canary", "true").body(()).unwrap().into_parts();
//! let d = loaded.table.decide(&RequestView::of(&parts, 42)).unwrap();
//! assert_eq!((d.route.name().as_str(), d.track.name().as_str()), ("checkout", "canary"));
//! ```
//!
//! It also holds the documents the proxy's admin API writes and the control loop reads, one type
//! each: [`RoutesDocument`] (`GET /routes`) and [`stats::StatsDocument`] (`GET /stats`), with the
//! [`InstanceId`] that tells one run of a proxy from the next.
//!
//! Both the proxy (`switchyard-proxy`) and the control loop (`switchyard`) depend on this crate;
//! they never depend on each other.

#![forbid(unsafe_code)]

mod error;
pub mod etcd_access;
pub mod fleet;
pub mod health;
mod instance;
pub mod path;
mod read;
mod request;
pub mod retry;
pub mod rollout;
mod routes;
pub mod schema;
pub mod stats;
pub mod table;
mod validate;

pub use error::{ConfigErrors, FieldError};
pub use instance::InstanceId;
pub use read::Format;
pub use request::RequestView;
pub use rollout::{RolloutSpec, load_rollout};
pub use routes::{RoutesDocument, RoutesPublished, load_routes};
pub use schema::{ProxyConfig, RouteName, RouteSpec, TrackName};
pub use table::{DecidedBy, Decision, EndpointDraw, RoutingTable};
pub use validate::MAX_NAME_LEN;

use error::Problems;
use read::parse_tree;

/// A proxy configuration that passed validation, with its routes compiled.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration as written (with defaults filled in).
    pub config: ProxyConfig,
    /// Its routes, compiled.
    pub table: RoutingTable,
}

/// Reads, validates and compiles a whole proxy configuration; its table gets `version`.
/// Every problem is reported, each with its field path.
pub fn load_config(text: &str, format: Format, version: u64) -> Result<Loaded, ConfigErrors> {
    let mut p = Problems::default();
    let Some((config, positions)) = parse_tree(text, format, &mut p).and_then(|tree| ProxyConfig::read(&tree, &mut p))
    else {
        return Err(p.into_errors());
    };
    let mut checks = Problems::default();
    validate::proxy(&config, &mut checks);
    let table = RoutingTable::compile_into(&config.routes, &positions, version, &mut checks);
    p.add_uncovered(checks);
    p.into_result(Loaded { config, table })
}
