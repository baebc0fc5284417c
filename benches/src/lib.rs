//! Criterion micro-benchmarks of Switchyard's hot path (`cargo bench -p switchyard-benches`),
//! and the table builders they share. `benches/decide.rs` measures `decide()` and table compile.
//!
//! The synthetic tables are generated as YAML and read with
//! [`switchyard_config::load_routes`], so they go through the same reading, validation and
//! compilation as a real configuration. Route `i` of a table with `hosts` hosts and `per_host =
//! routes / hosts` routes per host has host `svc-{i / per_host}.example.com`, path prefix
//! `/p{i % per_host}` and two tracks, `stable` (weight 95) and `canary` (weight 5), of two
//! endpoints each.

#![forbid(unsafe_code)]

use std::fmt::Write as _;

use http::{HeaderMap, HeaderValue, Method};
use switchyard_config::schema::RouteSpec;
use switchyard_config::{Format, RequestView, RoutingTable, load_routes};

/// The sticky header of tables built with `sticky_and_rules`.
pub const USER_HEADER: &str = "x-user-id";

/// The YAML text of a `{"routes": [...]}` document with `routes` routes spread over `hosts`
/// hosts (see the crate docs for the layout). With `sticky_and_rules` every route also has two
/// header rules (`x-canary: "true"` → canary, `x-environment: stable` → stable) and is sticky on
/// the [`USER_HEADER`] header.
///
/// # Panics
///
/// If `hosts` is 0 or does not divide `routes`.
pub fn routes_yaml(routes: usize, hosts: usize, sticky_and_rules: bool) -> String {
    let per_host = routes_per_host(routes, hosts);
    let mut y = String::with_capacity(routes * if sticky_and_rules { 700 } else { 400 });
    y.push_str("routes:\n");
    for i in 0..routes {
        let (h, n) = (i / per_host, i % per_host);
        let (a, b) = (i / 250, i % 250);
        // `write!` into a `String` cannot fail.
        let _ = write!(
            y,
            "  - name: svc-{h}-p{n}
    match:
      host: svc-{h}.example.com
      pathPrefix: /p{n}
    tracks:
      - name: stable
        endpoints: [\"10.{a}.{b}.1:8080\", \"10.{a}.{b}.2:8080\"]
        weight: 95
      - name: canary
        endpoints: [\"10.{a}.{b}.3:8080\", \"10.{a}.{b}.4:8080\"]
        weight: 5
"
        );
        if sticky_and_rules {
            let _ = write!(
                y,
                "    rules:
      - match: {{ headers: [{{ name: x-canary, value: \"true\" }}] }}
        track: canary
      - match: {{ headers: [{{ name: x-environment, value: stable }}] }}
        track: stable
    sticky:
      header: {USER_HEADER}
"
            );
        }
    }
    y
}

/// A compiled table of `routes` routes over `hosts` hosts, as described by [`routes_yaml`].
///
/// # Panics
///
/// If the generated document does not load (a bug in this crate or in the config crate), or
/// as [`routes_yaml`].
pub fn table(routes: usize, hosts: usize, sticky_and_rules: bool) -> RoutingTable {
    let text = routes_yaml(routes, hosts, sticky_and_rules);
    match load_routes(&text, Format::Yaml, 1) {
        Ok(table) => table,
        Err(e) => panic!("generated routes do not load: {e}"),
    }
}

/// The route specs of [`table`]`(routes, hosts, sticky_and_rules)`, to benchmark
/// [`RoutingTable::compile`] alone.
pub fn specs(routes: usize, hosts: usize, sticky_and_rules: bool) -> Vec<RouteSpec> {
    table(routes, hosts, sticky_and_rules).spec().to_vec()
}

/// An owned request, built once outside the timed loop; [`Request::view`] borrows it as the
/// [`RequestView`] that `decide` takes, which costs a few pointer copies.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request method (`GET`).
    pub method: Method,
    /// The authority as the client sent it (mixed case, with a port).
    pub host: String,
    /// The path, without query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The name of the route this request should reach.
    pub expected_route: String,
}

impl Request {
    /// A view of this request with `random` as its entropy.
    #[inline]
    pub fn view(&self, random: u64) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            random,
        }
    }
}

/// `count` requests for a table built by [`table`]`(routes, hosts, _)`, hitting routes spread
/// over the whole table: request `k` targets route `(k × 7919) mod routes`, so `count ≥ routes`
/// reaches every route, the last ones included. Hosts are written `SVC-{h}.example.com:8080`
/// (mixed case and a port, to exercise normalization) and paths `/p{n}/items/{k}`. Each request
/// carries a few ordinary headers; with `with_user` also a distinct [`USER_HEADER`] value
/// (from a pool of `count` user ids), so sticky hashing sees real, varying keys. No request
/// carries a rule header.
///
/// # Panics
///
/// As [`routes_yaml`].
pub fn requests(routes: usize, hosts: usize, count: usize, with_user: bool) -> Vec<Request> {
    let per_host = routes_per_host(routes, hosts);
    (0..count)
        .map(|k| {
            let route = (k * 7919) % routes;
            request(route / per_host, route % per_host, k, with_user)
        })
        .collect()
}

/// `count` requests that all target the route with host `svc-{host}.example.com` and prefix
/// `/p{prefix}`, otherwise as [`requests`] (distinct paths and user ids).
pub fn requests_to(host: usize, prefix: usize, count: usize, with_user: bool) -> Vec<Request> {
    (0..count).map(|k| request(host, prefix, k, with_user)).collect()
}

fn request(h: usize, n: usize, k: usize, with_user: bool) -> Request {
    let mut headers = HeaderMap::new();
    headers.insert(http::header::USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&format!("SVC-{h}.example.com:8080")).expect("valid header value"),
    );
    if with_user {
        // Ids as a session store would hand them out: unrelated, fixed-length tokens.
        let id = format!("user-{:016x}", mix(k as u64));
        headers.insert(USER_HEADER, HeaderValue::from_str(&id).expect("valid header value"));
    }
    Request {
        method: Method::GET,
        host: format!("SVC-{h}.example.com:8080"),
        path: format!("/p{n}/items/{k}"),
        query: String::new(),
        headers,
        expected_route: format!("svc-{h}-p{n}"),
    }
}

/// Checks that every request in `reqs` reaches its expected route in `table`.
///
/// # Panics
///
/// On the first request that does not.
pub fn check(table: &RoutingTable, reqs: &[Request]) {
    for (k, r) in reqs.iter().enumerate() {
        let got = table
            .decide(&r.view(k as u64))
            .map(|d| d.route.name().as_str().to_owned());
        assert_eq!(
            got.as_deref(),
            Some(r.expected_route.as_str()),
            "request {k} ({} {}) went astray",
            r.host,
            r.path
        );
    }
}

/// Cheap, well-spread per-iteration entropy: a counter times an odd constant, finalized.
#[inline]
pub fn mix(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

fn routes_per_host(routes: usize, hosts: usize) -> usize {
    assert!(
        hosts > 0 && routes.is_multiple_of(hosts),
        "{routes} routes cannot be spread evenly over {hosts} hosts"
    );
    routes / hosts
}
