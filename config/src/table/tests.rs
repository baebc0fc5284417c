use http::{HeaderMap, Method};

use super::*;
use crate::{Format, load_routes};

fn table(yaml: &str) -> RoutingTable {
    load_routes(yaml, Format::Yaml, 7).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(yaml: &str) -> Vec<String> {
    load_routes(yaml, Format::Yaml, 1)
        .err()
        .map(|e| e.0.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, value.parse().unwrap());
    }
    h
}

/// `(route, track, endpoint, by)` for a GET of `host` + `path` with `headers`.
fn decide(
    t: &RoutingTable,
    host: &str,
    path: &str,
    h: &HeaderMap,
    random: u64,
) -> Option<(String, String, String, DecidedBy)> {
    let view = RequestView {
        method: &Method::GET,
        host,
        path,
        query: "",
        headers: h,
        random,
    };
    t.decide(&view).map(|d| {
        (
            d.route.name().to_string(),
            d.track.name().to_string(),
            d.endpoint.address().to_owned(),
            d.by,
        )
    })
}

const TWO_ROUTES: &str = r#"
routes:
  - name: admin
    match: { host: admin.example.com, pathPrefix: /admin }
    tracks: [{ name: stable, endpoints: ["127.0.0.1:1"], weight: 1 }]
  - name: shop
    match: { host: "*.example.com" }
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:2"], weight: 95 }
      - { name: canary, endpoints: ["127.0.0.1:3", "127.0.0.1:4"], weight: 5 }
    rules:
      - match: { headers: [{ name: x-canary, value: "true" }] }
        track: canary
      - match: { headers: [{ name: x-environment, value: stable }] }
        track: stable
    sticky: { header: x-user-id }
  - name: fallback
    tracks: [{ name: stable, endpoints: ["127.0.0.1:5"], weight: 1 }]
"#;

#[test]
fn routes_are_tried_in_order_and_the_first_match_wins() {
    let t = table(TWO_ROUTES);
    assert_eq!(t.version(), 7);
    let none = HeaderMap::new();
    let route = |host, path| decide(&t, host, path, &none, 0).map(|d| d.0);
    assert_eq!(route("admin.example.com", "/admin/users").as_deref(), Some("admin"));
    // Same host, other path: the wildcard route comes next.
    assert_eq!(route("admin.example.com", "/cart").as_deref(), Some("shop"));
    assert_eq!(route("www.example.com", "/admin").as_deref(), Some("shop"));
    assert_eq!(route("example.org", "/").as_deref(), Some("fallback"));
    assert_eq!(route("", "/").as_deref(), Some("fallback"));
}

#[test]
fn no_matching_route_is_no_decision() {
    let t = table("routes: [{ name: a, match: { path: /a }, tracks: [{ name: s, endpoints: ['h:1'], weight: 1 }] }]");
    assert!(decide(&t, "x", "/b", &HeaderMap::new(), 0).is_none());
    assert!(decide(&RoutingTable::empty(), "x", "/", &HeaderMap::new(), 0).is_none());
}

#[test]
fn rules_win_over_sticky_keys_and_weights_in_order() {
    let t = table(TWO_ROUTES);
    // Whatever the random number and the user, the rule decides.
    for r in [0, u64::MAX / 2, u64::MAX] {
        let h = headers(&[("x-canary", "true"), ("x-user-id", "u1"), ("x-environment", "stable")]);
        let d = decide(&t, "a.example.com", "/", &h, r).unwrap();
        assert_eq!((d.1.as_str(), d.3), ("canary", DecidedBy::Rule(0)));
        let h = headers(&[("x-environment", "stable"), ("x-user-id", "u1")]);
        let d = decide(&t, "a.example.com", "/", &h, r).unwrap();
        assert_eq!((d.1.as_str(), d.3), ("stable", DecidedBy::Rule(1)));
    }
}

#[test]
fn weights_decide_requests_without_rule_or_key() {
    let t = table(TWO_ROUTES);
    let none = HeaderMap::new();
    let low = decide(&t, "a.example.com", "/", &none, 0).unwrap();
    let high = decide(&t, "a.example.com", "/", &none, u64::MAX).unwrap();
    assert_eq!((low.1.as_str(), low.3), ("stable", DecidedBy::Weight));
    assert_eq!((high.1.as_str(), high.3), ("canary", DecidedBy::Weight));
}

#[test]
fn a_sticky_key_keeps_track_and_endpoint_whatever_the_random_number() {
    let t = table(TWO_ROUTES);
    for user in 0..200 {
        let h = headers(&[("x-user-id", &format!("user-{user}"))]);
        let first = decide(&t, "a.example.com", "/", &h, 1).unwrap();
        assert_eq!(first.3, DecidedBy::Sticky);
        for r in [2, 3, u64::MAX] {
            assert_eq!(decide(&t, "a.example.com", "/", &h, r).unwrap(), first);
        }
    }
    // An empty key is no key.
    let h = headers(&[("x-user-id", "")]);
    assert_eq!(decide(&t, "a.example.com", "/", &h, 0).unwrap().3, DecidedBy::Weight);
}

#[test]
fn sticky_by_cookie_reads_the_named_cookie() {
    let t = table(
        "routes: [{ name: a, sticky: { cookie: uid }, tracks: [{ name: s, endpoints: ['h:1'], weight: 1 }, { name: c, endpoints: ['h:2'], weight: 1 }] }]",
    );
    let h = headers(&[("cookie", "theme=dark; uid=alice")]);
    let d = decide(&t, "x", "/", &h, 0).unwrap();
    assert_eq!(d.3, DecidedBy::Sticky);
    let h2 = headers(&[("cookie", "uid=alice")]);
    assert_eq!(decide(&t, "x", "/", &h2, u64::MAX).unwrap(), d);
}

#[test]
fn endpoint_weights_split_a_track() {
    let t = table(
        "routes: [{ name: a, tracks: [{ name: s, weight: 1, endpoints: [{ address: 'h:1', weight: 3 }, { address: 'h:2', weight: 0 }, 'h:3'] }] }]",
    );
    let none = HeaderMap::new();
    let mut counts = [0usize; 3];
    for i in 0..4000u64 {
        let d = t.decide(&RequestView {
            method: &Method::GET,
            host: "x",
            path: "/",
            query: "",
            headers: &none,
            random: mix(i),
        });
        counts[d.unwrap().endpoint.index()] += 1;
    }
    assert_eq!(counts[1], 0, "weight 0 endpoint chosen");
    assert!((2700..3300).contains(&counts[0]), "{counts:?}");
}

#[test]
fn the_example_of_a_zero_sum_is_reported_on_the_last_weight() {
    let e = errors(
        r#"
routes:
  - name: checkout
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:9001"], weight: 0 }
      - { name: canary, endpoints: ["127.0.0.1:9002"] }
"#,
    );
    assert_eq!(
        e,
        [
            "routes[0].tracks[1].weight: weights of route \"checkout\" sum to 0; give at least one track a positive weight"
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = errors(
        r#"
routes:
  - name: checkout
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:9001"], weight: -5 }
      - { name: stable, endpoints: [], weight: 1 }
    rules:
      - { match: { headers: [{ name: x-canary }] }, track: canary }
    sticky: { header: x-user-id, cookie: uid }
    timeout: 0s
  - name: checkout
    tracks: []
  - name: "bad name"
    tracks: [{ name: s, endpoints: ["nope"], weight: 1 }]
"#,
    );
    let expect = [
        "routes[0].tracks[0].weight: weight must not be negative, found -5",
        "routes[0].tracks[1].name: duplicate track name \"stable\" in route \"checkout\"",
        "routes[0].tracks[1].endpoints: list at least one endpoint (HOST:PORT)",
        "routes[0].rules[0].track: unknown track \"canary\" in route \"checkout\"; its tracks are: stable, stable",
        "routes[0].sticky: give exactly one of header and cookie",
        "routes[0].timeout: timeout must be longer than 0s",
        "routes[1].name: duplicate route name \"checkout\"",
        "routes[1].tracks: list at least one track",
        "routes[2].name: invalid route name \"bad name\"",
        "routes[2].tracks[0].endpoints[0]: invalid endpoint \"nope\"",
    ];
    assert_eq!(e.len(), expect.len(), "{e:#?}");
    for (got, want) in e.iter().zip(expect) {
        assert!(got.starts_with(want), "{got}\n does not start with\n{want}");
    }
}

#[test]
fn compile_keeps_the_spec_to_serve_back() {
    let t = table(TWO_ROUTES);
    assert_eq!(t.spec().len(), 3);
    assert_eq!(t.routes().len(), 3);
    let shop = t.route("shop").unwrap();
    assert_eq!(shop.index(), 1);
    assert_eq!(shop.track("canary").unwrap().endpoints().len(), 2);
    assert_eq!(shop.tracks()[0].weight(), 95.0);
    assert!(t.route("nope").is_none());
}

#[test]
fn a_retry_goes_to_another_usable_endpoint_by_weight_and_to_the_failed_one_last() {
    let t = table(
        r#"
routes:
  - name: app
    tracks:
      - name: stable
        weight: 1
        endpoints: ["127.0.0.1:1", { address: "127.0.0.1:2", weight: 3 }, "127.0.0.1:3"]
"#,
    );
    let track = &t.routes()[0].tracks()[0];
    let retry = |failed, random, usable: &dyn Fn(usize) -> bool| track.retry_endpoint(failed, random, usable).index();
    let randoms = || (0..4_000u64).map(|i| mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    // Every endpoint usable: never the one that failed, the others by their weights (1 and 3).
    let mut counts = [0u32; 3];
    for r in randoms() {
        counts[retry(0, r, &|_| true)] += 1;
    }
    assert_eq!(counts[0], 0, "{counts:?}");
    assert!((2_800..=3_200).contains(&counts[1]), "{counts:?}");
    // One other endpoint out: the one left, whatever the draw.
    assert!(randoms().all(|r| retry(0, r, &|i| i != 1) == 2));
    // Only the failed endpoint usable: it again, rather than one that is out.
    assert!(randoms().all(|r| retry(0, r, &|i| i == 0) == 0));
    // Every endpoint out (panic mode): another one still.
    assert!(randoms().all(|r| retry(2, r, &|_| false) != 2));

    // A track of one endpoint retries to it.
    let t = table("routes: [{ name: one, tracks: [{ name: s, weight: 1, endpoints: [\"127.0.0.1:1\"] }] }]");
    let track = &t.routes()[0].tracks()[0];
    assert_eq!(track.retry_endpoint(0, 7, |_| true).index(), 0);
    assert_eq!(track.retry_endpoint(0, 7, |_| false).index(), 0);
}
