use http::{HeaderMap, Method};

use crate::{Format, RequestView, RoutingTable, load_routes};

fn table(mirror: &str) -> RoutingTable {
    load_routes(&routes(mirror), Format::Yaml, 1).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(mirror: &str) -> Vec<String> {
    load_routes(&routes(mirror), Format::Yaml, 1)
        .err()
        .map(|e| e.0.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

fn routes(mirror: &str) -> String {
    format!(
        r#"
routes:
  - name: checkout
    tracks:
      - {{ name: stable, endpoints: ["127.0.0.1:1"], weight: 100 }}
      - {{ name: canary, endpoints: ["127.0.0.1:2", "127.0.0.1:3"], weight: 0 }}
    rules:
      - match: {{ headers: [{{ name: x-canary, value: "true" }}] }}
        track: canary
    mirror: {mirror}
"#
    )
}

/// The shadow's track and endpoint for a request of `method` with `random`, if it is copied.
fn shadow(t: &RoutingTable, method: &Method, headers: &HeaderMap, random: u64) -> Option<(String, String)> {
    shadow_of(t, method, "/", headers, random)
}

/// The same for a request to `path`.
fn shadow_of(
    t: &RoutingTable,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    random: u64,
) -> Option<(String, String)> {
    let view = RequestView {
        method,
        host: "shop.example.com",
        path,
        query: "",
        headers,
        random,
    };
    let d = t.decide(&view).expect("the route takes every request");
    d.shadow
        .map(|s| (s.track.name().to_string(), s.endpoint.address().to_owned()))
}

/// Fresh random numbers, as the proxy's per-thread generator gives them.
fn randoms(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|i| crate::table::split::mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

#[test]
fn defaults_are_the_safe_methods_and_a_bound_of_100() {
    let t = table("{ track: canary, percent: 100 }");
    let (track, max) = t.routes()[0].mirror().unwrap();
    assert_eq!((track.name().as_str(), max), ("canary", 100));
    let spec = t.spec()[0].mirror.as_ref().unwrap();
    assert_eq!(spec.methods, ["GET", "HEAD", "OPTIONS"]);
    let none = HeaderMap::new();
    for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
        assert!(shadow(&t, &m, &none, 1).is_some(), "{m}");
    }
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        assert_eq!(shadow(&t, &m, &none, 1), None, "{m} is not copied by default");
    }
    let t = table("{ track: canary, percent: 100, methods: [POST], maxInFlight: 3 }");
    assert_eq!(t.routes()[0].mirror().unwrap().1, 3);
    assert!(shadow(&t, &Method::POST, &none, 1).is_some());
    assert_eq!(shadow(&t, &Method::GET, &none, 1), None);
}

#[test]
fn the_share_copied_is_the_percent() {
    let none = HeaderMap::new();
    let count = |t: &RoutingTable| {
        randoms(100_000)
            .filter(|r| shadow(t, &Method::GET, &none, *r).is_some())
            .count()
    };
    assert_eq!(count(&table("{ track: canary, percent: 100 }")), 100_000);
    assert_eq!(count(&table("{ track: canary, percent: 0 }")), 0);
    // 25% of 100 000: the standard deviation is 137, so ±1% is more than seven of them.
    let quarter = count(&table("{ track: canary, percent: 25 }"));
    assert!((24_000..=26_000).contains(&quarter), "{quarter}");
}

#[test]
fn the_pick_is_pure_and_spreads_over_the_mirror_tracks_endpoints() {
    let t = table("{ track: canary, percent: 50 }");
    let none = HeaderMap::new();
    let mut endpoints = std::collections::BTreeMap::<String, u32>::new();
    for r in randoms(10_000) {
        let once = shadow(&t, &Method::GET, &none, r);
        assert_eq!(
            once,
            shadow(&t, &Method::GET, &none, r),
            "the same request, the same pick"
        );
        if let Some((track, endpoint)) = once {
            assert_eq!(track, "canary");
            *endpoints.entry(endpoint).or_default() += 1;
        }
    }
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    assert!(endpoints.values().all(|n| *n > 2_000), "{endpoints:?}");
}

#[test]
fn a_request_decided_to_the_mirror_track_is_not_copied_to_it() {
    let t = table("{ track: canary, percent: 100 }");
    let mut canary = HeaderMap::new();
    canary.insert("x-canary", "true".parse().unwrap());
    for r in randoms(100) {
        assert_eq!(shadow(&t, &Method::GET, &canary, r), None);
    }
}

#[test]
fn bad_mirrors_are_named_by_field_path() {
    assert_eq!(
        errors("{ track: canry, percent: 150, maxInFlight: 0, methods: [get, CONNECT, 'B D'] }"),
        [
            "routes[0].mirror.track: unknown track \"canry\" in route \"checkout\"; the mirror must name one of its tracks: stable, canary",
            "routes[0].mirror.percent: percent must be a number from 0 to 100 (the share of the route's requests copied), found 150",
            "routes[0].mirror.maxInFlight: maxInFlight must be at least 1, or every copy would be dropped; remove the mirror to send none",
            "routes[0].mirror.methods[0]: methods are case-sensitive: write \"GET\"",
            "routes[0].mirror.methods[1]: CONNECT cannot be copied: the proxy refuses it",
            "routes[0].mirror.methods[2]: invalid method \"B D\"",
        ]
    );
    assert_eq!(
        errors("{ track: canary, percent: -1, methods: [] }"),
        [
            "routes[0].mirror.percent: percent must be a number from 0 to 100 (the share of the route's requests copied), found -1",
            "routes[0].mirror.methods: list at least one method to copy, such as GET",
        ]
    );
    assert_eq!(
        errors("{ percent: 5, trak: canary }"),
        [
            "routes[0].mirror.track: required field is missing",
            "routes[0].mirror.trak: unknown field `trak`; did you mean `track`?",
        ]
    );
}

#[test]
fn a_mirror_reads_back_as_written() {
    let t = table("{ track: canary, percent: 12.5, methods: GET }");
    let json = serde_json::json!({ "routes": t.spec() }).to_string();
    assert!(
        json.contains(r#""mirror":{"maxInFlight":100,"methods":["GET"],"percent":12.5,"track":"canary"}"#),
        "{json}"
    );
    let again = load_routes(&json, Format::Json, 2).unwrap();
    assert_eq!(again.spec(), t.spec());
}

#[test]
fn a_match_restricts_the_copies_to_the_requests_that_meet_one_of_its_conditions() {
    let t = table(
        "{ track: canary, percent: 100, match: [{ pathPrefix: /api }, { path: /cart, headers: [{ name: x-shadow, value: 'yes' }] }] }",
    );
    let none = HeaderMap::new();
    let mut marked = HeaderMap::new();
    marked.insert("x-shadow", "yes".parse().unwrap());
    for r in randoms(50) {
        assert!(shadow_of(&t, &Method::GET, "/api/items", &none, r).is_some());
        assert_eq!(
            shadow_of(&t, &Method::GET, "/apix", &none, r),
            None,
            "prefixes end on segments"
        );
        assert_eq!(
            shadow_of(&t, &Method::GET, "/cart", &none, r),
            None,
            "both conditions must hold"
        );
        assert!(shadow_of(&t, &Method::GET, "/cart", &marked, r).is_some());
        assert_eq!(
            shadow_of(&t, &Method::POST, "/api/items", &none, r),
            None,
            "methods still apply"
        );
    }
    // The share applies to the matching requests.
    let t = table("{ track: canary, percent: 25, match: [{ pathPrefix: /api }] }");
    let copied = randoms(10_000)
        .filter(|r| shadow_of(&t, &Method::GET, "/api", &none, *r).is_some())
        .count();
    assert!((2_300..=2_700).contains(&copied), "{copied}");
}

#[test]
fn bodies_are_copied_only_under_a_bound_that_is_written() {
    let t = table("{ track: canary, percent: 100, methods: [POST] }");
    assert_eq!(t.routes()[0].mirror_max_body(), None, "off by default");
    let t = table("{ track: canary, percent: 100, methods: [POST, PUT], body: { maxBytes: 65536 } }");
    assert_eq!(t.routes()[0].mirror_max_body(), Some(65_536));
    assert!(shadow(&t, &Method::POST, &HeaderMap::new(), 1).is_some());
}

#[test]
fn bad_matches_and_bounds_are_named_by_field_path() {
    assert_eq!(
        errors("{ track: canary, percent: 5, match: [] }"),
        ["routes[0].mirror.match: list at least one match, or leave match out to copy every request"]
    );
    assert_eq!(
        errors(
            "{ track: canary, percent: 5, match: [{}, { pathRegex: '(' }, { method: get }], body: { maxBytes: 0 } }"
        ),
        [
            "routes[0].mirror.match[0]: give at least one condition: an empty match takes every request; leave match out to copy every request",
            "routes[0].mirror.match[1].pathRegex: invalid regex \"(\": error: unclosed group",
            "routes[0].mirror.match[2].method[0]: methods are case-sensitive: write \"GET\"",
            "routes[0].mirror.body.maxBytes: maxBytes must be at least 1; remove body to copy only requests without one",
        ]
    );
    assert_eq!(
        errors("{ track: canary, percent: 5, body: { maxbytes: 10 }, match: { path: / } }"),
        [
            "routes[0].mirror.match: expected a list, found a mapping",
            "routes[0].mirror.body.maxBytes: required field is missing",
            "routes[0].mirror.body.maxbytes: unknown field `maxbytes`; did you mean `maxBytes`?",
        ]
    );
}

#[test]
fn a_match_and_a_body_bound_read_back_as_written() {
    let t = table(
        "{ track: canary, percent: 10, methods: [POST], match: [{ pathPrefix: /api }], body: { maxBytes: 1024 } }",
    );
    let json = serde_json::json!({ "routes": t.spec() }).to_string();
    assert!(
        json.contains(r#""body":{"maxBytes":1024},"match":[{"pathPrefix":"/api"}]"#),
        "{json}"
    );
    let again = load_routes(&json, Format::Json, 2).unwrap();
    assert_eq!(again.spec(), t.spec());
}
