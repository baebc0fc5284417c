//! Reads arbitrary bytes as a proxy configuration and, when it loads, routes a handful of
//! requests through the compiled table, checking the decisions' invariants.
//!
//! Input layout: the first byte picks the format (even → YAML, odd → JSON); the rest is the
//! document, decoded as UTF-8 lossily. The bytes also seed the requests' randomness and user ids.
//!
//! Nothing here may panic except the invariant checks below:
//! * a decision's route, track and endpoint are the table's own, at the indices they report;
//! * a weighted or sticky pick never lands on a track of weight 0, and no pick lands on an
//!   endpoint of weight 0;
//! * a rule decision names a rule of the route, and that rule's track;
//! * `decide` is pure (same view, same decision) and a sticky decision does not depend on the
//!   request's random number;
//! * the routes of a loaded configuration compile again on their own.

#![no_main]

use std::ptr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use switchyard_config::schema::{RequestMatch, RouteSpec};
use switchyard_config::{DecidedBy, Decision, Format, RequestView, RoutingTable, load_config};

/// Routes (and rules per route) that get a request aimed at them.
const TARGETED_ROUTES: usize = 16;
const TARGETED_RULES: usize = 4;
/// Requests made of random combinations of the candidate hosts, paths, headers and queries.
const RANDOM_VIEWS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 { Format::Yaml } else { Format::Json };
    let text = String::from_utf8_lossy(rest);
    let Ok(loaded) = load_config(&text, format, 1) else {
        return;
    };
    let table = &loaded.table;
    let spec = table.spec();
    assert_eq!(
        table.routes().len(),
        spec.len(),
        "every route of a loaded config is compiled"
    );
    if let Err(e) = RoutingTable::compile(spec, 2) {
        panic!("routes of a loaded configuration do not compile on their own: {e}");
    }

    let mut rng = Rng::new(data);
    let user = user_id(data);
    let candidates = Candidates::new(spec, &user);

    // Requests aimed at each route, then at each of its rules.
    for route in spec.iter().take(TARGETED_ROUTES) {
        let base = Aimed::at(&route.matches, None);
        base.decide(table, &mut rng);
        for rule in route.rules.iter().take(TARGETED_RULES) {
            Aimed::at(&route.matches, Some(&rule.matches)).decide(table, &mut rng);
        }
    }

    // Random combinations.
    for _ in 0..RANDOM_VIEWS {
        let c = &candidates;
        let view = RequestView {
            method: &c.methods[rng.below(c.methods.len())],
            host: &c.hosts[rng.below(c.hosts.len())],
            path: &c.paths[rng.below(c.paths.len())],
            query: &c.queries[rng.below(c.queries.len())],
            headers: &c.headers[rng.below(c.headers.len())],
            random: rng.next(),
        };
        check(table, &view);
    }
});

/// Checks every invariant of `table.decide(view)`.
fn check(table: &RoutingTable, view: &RequestView<'_>) {
    let Some(d) = table.decide(view) else {
        return;
    };
    let (route, track, endpoint) = (d.route, d.track, d.endpoint);
    let ctx = || {
        format!(
            "{view:?} -> route {} track {} endpoint {} by {:?}",
            route.name(),
            track.name(),
            endpoint.address(),
            d.by
        )
    };

    assert!(
        route.index() < table.routes().len(),
        "route index out of range: {}",
        ctx()
    );
    assert!(
        ptr::eq(&table.routes()[route.index()], route),
        "route not at its index: {}",
        ctx()
    );
    assert!(
        table.route(route.name().as_str()).is_some_and(|r| ptr::eq(r, route)),
        "route not found by name: {}",
        ctx()
    );
    assert!(
        track.index() < route.tracks().len(),
        "track index out of range: {}",
        ctx()
    );
    assert!(
        ptr::eq(&route.tracks()[track.index()], track),
        "track not at its index: {}",
        ctx()
    );
    assert!(
        endpoint.index() < track.endpoints().len(),
        "endpoint index out of range: {}",
        ctx()
    );
    assert!(
        ptr::eq(&track.endpoints()[endpoint.index()], endpoint),
        "endpoint not at its index: {}",
        ctx()
    );
    assert!(endpoint.weight() > 0.0, "endpoint of weight 0 chosen: {}", ctx());

    match d.by {
        DecidedBy::Rule(i) => {
            let rules = &table.spec()[route.index()].rules;
            assert!(i < rules.len(), "rule index out of range: {}", ctx());
            assert_eq!(
                &rules[i].track,
                track.name(),
                "rule decision on another track: {}",
                ctx()
            );
        }
        DecidedBy::Sticky | DecidedBy::Weight => {
            assert!(
                track.weight() > 0.0,
                "track of weight 0 chosen by {:?}: {}",
                d.by,
                ctx()
            );
        }
    }

    let again = table
        .decide(view)
        .expect("decide is pure, but the second call found no route");
    assert_eq!(key(&again), key(&d), "decide is not pure: {}", ctx());

    if d.by == DecidedBy::Sticky {
        let other = RequestView {
            random: view.random ^ 0x5555_5555_5555_5555,
            ..*view
        };
        let other = table.decide(&other).expect("same request, other random: no route");
        assert_eq!(
            key(&other),
            key(&d),
            "sticky decision depends on the random number: {}",
            ctx()
        );
    }
}

fn key(d: &Decision<'_>) -> (usize, usize, usize, DecidedBy) {
    (d.route.index(), d.track.index(), d.endpoint.index(), d.by)
}

/// A request built to meet a route's conditions (and a rule's), as far as they can be met
/// without inverting a regex.
struct Aimed {
    method: Method,
    host: String,
    path: String,
    query: String,
    headers: HeaderMap,
}

impl Aimed {
    fn at(route: &RequestMatch, rule: Option<&RequestMatch>) -> Self {
        let mut a = Self {
            method: Method::GET,
            host: "a.example.com".to_owned(),
            path: "/".to_owned(),
            query: String::new(),
            headers: HeaderMap::new(),
        };
        let mut cookies = Vec::new();
        let mut query = Vec::new();
        for m in std::iter::once(route).chain(rule) {
            if let Some(h) = m.host.as_deref().map(host_for) {
                a.host = h;
            }
            if let Some(p) = m.path.as_deref().or(m.path_prefix.as_deref()) {
                a.path = p.to_owned();
            }
            if let Some(method) = m.method.first().and_then(|m| Method::from_bytes(m.as_bytes()).ok()) {
                a.method = method;
            }
            for h in &m.headers {
                let (Ok(name), Some(value)) = (HeaderName::from_bytes(h.name.as_bytes()), wanted(h)) else {
                    continue;
                };
                if let Ok(value) = HeaderValue::from_str(value) {
                    a.headers.append(name, value);
                }
            }
            query.extend(
                m.query_params
                    .iter()
                    .filter_map(|q| Some(format!("{}={}", q.name, wanted(q)?))),
            );
            cookies.extend(
                m.cookies
                    .iter()
                    .filter_map(|c| Some(format!("{}={}", c.name, wanted(c)?))),
            );
        }
        a.query = query.join("&");
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            a.headers.append(http::header::COOKIE, v);
        }
        a
    }

    fn decide(&self, table: &RoutingTable, rng: &mut Rng) {
        let view = RequestView {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            random: rng.next(),
        };
        check(table, &view);
    }
}

/// A value that meets a value condition, if one can be named without inverting a regex.
fn wanted(v: &switchyard_config::schema::ValueMatch) -> Option<&str> {
    match (&v.value, &v.one_of, v.present) {
        (Some(value), _, _) => Some(value),
        (None, Some(one_of), _) => one_of.first().map(String::as_str),
        (None, None, Some(false)) => None,
        _ if v.regex.is_some() => None,
        _ => Some("1"),
    }
}

/// A request host that a route's host condition takes, written as a client might (upper case,
/// with a port).
fn host_for(condition: &str) -> String {
    let name = condition
        .strip_prefix('*')
        .map_or_else(|| condition.to_owned(), |rest| format!("x{rest}"));
    format!("{}:8443", name.to_ascii_uppercase())
}

/// Hex of the input's last bytes: a user id that varies with the input.
fn user_id(data: &[u8]) -> String {
    let tail = &data[data.len().saturating_sub(12)..];
    tail.iter().map(|b| format!("{b:02x}")).collect()
}

/// Candidate parts of requests: fixed ones plus ones taken from the routes.
struct Candidates {
    methods: Vec<Method>,
    hosts: Vec<String>,
    paths: Vec<String>,
    queries: Vec<String>,
    headers: Vec<HeaderMap>,
}

impl Candidates {
    fn new(spec: &[RouteSpec], user: &str) -> Self {
        let mut c = Self {
            methods: vec![Method::GET, Method::POST],
            hosts: [
                "a.example.com",
                "A.EXAMPLE.COM.:8080",
                "example.com",
                "",
                "[::1]:8080",
                "shop.example.com",
            ]
            .map(String::from)
            .to_vec(),
            paths: ["/", "/api", "/api/x", "/assets/a.css", ""].map(String::from).to_vec(),
            queries: ["", "canary=1", "canary=%31&x", "=&&="].map(String::from).to_vec(),
            headers: vec![HeaderMap::new()],
        };
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("true"));
        h.insert("x-environment", HeaderValue::from_static("stable"));
        if let Ok(v) = HeaderValue::from_str(user) {
            h.insert("x-user-id", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("uid={user}; theme=dark")) {
            h.insert(http::header::COOKIE, v);
        }
        c.headers.push(h);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(user) {
            h.insert("x-user-id", v);
        }
        h.append(http::header::COOKIE, HeaderValue::from_static("a=b"));
        if let Ok(v) = HeaderValue::from_str(&format!("uid=\"{user}\"")) {
            h.append(http::header::COOKIE, v);
        }
        c.headers.push(h);

        for route in spec.iter().take(TARGETED_ROUTES) {
            let matches = std::iter::once(&route.matches).chain(route.rules.iter().map(|r| &r.matches));
            for m in matches.take(1 + TARGETED_RULES) {
                c.hosts.extend(m.host.as_deref().map(host_for));
                c.paths.extend(m.path.clone());
                c.paths.extend(
                    m.path_prefix
                        .iter()
                        .map(|p| format!("{}/more", p.trim_end_matches('/'))),
                );
                c.methods
                    .extend(m.method.iter().filter_map(|m| Method::from_bytes(m.as_bytes()).ok()));
                let aimed = Aimed::at(m, None);
                c.queries.push(aimed.query);
                c.headers.push(aimed.headers);
            }
            if let Some(sticky) = &route.sticky {
                let mut h = HeaderMap::new();
                if let Some(name) = sticky
                    .header
                    .as_deref()
                    .and_then(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                    && let Ok(v) = HeaderValue::from_str(user)
                {
                    h.insert(name, v);
                }
                if let Some(cookie) = &sticky.cookie
                    && let Ok(v) = HeaderValue::from_str(&format!("{cookie}={user}"))
                {
                    h.insert(http::header::COOKIE, v);
                }
                c.headers.push(h);
            }
        }
        c
    }
}

/// splitmix64, seeded from the input.
struct Rng(u64);

impl Rng {
    fn new(data: &[u8]) -> Self {
        // FNV-1a.
        Self(data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        }))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n`; `n` must not be 0.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
