//! Properties of `decide()` and of validation, checked over random inputs: weighted proportions
//! within binomial bounds, sticky monotonicity under weight changes, zero weights never chosen,
//! rule precedence, and validation that never panics.

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;
use switchyard_config::schema::{
    EndpointSpec, RequestMatch, RuleSpec, StickySpec, TrackSpec, UpstreamProtocol, ValueMatch,
};
use switchyard_config::{DecidedBy, Format, RequestView, RouteSpec, RoutingTable, load_config, load_routes};

const TRACKS: [&str; 3] = ["stable", "canary", "preview"];

fn route(weights: &[u64], rules: Vec<RuleSpec>, sticky: bool) -> RoutingTable {
    let tracks = weights
        .iter()
        .zip(TRACKS)
        .enumerate()
        .map(|(i, (w, name))| TrackSpec {
            name: name.into(),
            endpoints: vec![EndpointSpec {
                address: format!("127.0.0.1:{}", 9000 + i),
                weight: 1.0,
            }],
            weight: *w as f64,
            protocol: UpstreamProtocol::Http1,
            outlier_detection: None,
            health_check: None,
        })
        .collect();
    let spec = RouteSpec {
        name: "r".into(),
        matches: RequestMatch::default(),
        tracks,
        rules,
        sticky: sticky.then(|| StickySpec {
            header: Some("x-user-id".into()),
            cookie: None,
        }),
        timeout: None,
        retry: None,
        mirror: None,
    };
    RoutingTable::compile(&[spec], 1).expect("valid route")
}

/// The track index `decide` picks for a request with `headers` and `random`.
fn pick(t: &RoutingTable, headers: &HeaderMap, random: u64) -> (usize, DecidedBy) {
    let d = t
        .decide(&RequestView {
            method: &Method::GET,
            host: "svc.example.com",
            path: "/",
            query: "",
            headers,
            random,
        })
        .expect("the route matches every request");
    (d.track.index(), d.by)
}

fn user(key: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-user-id", HeaderValue::from_str(key).expect("ascii key"));
    h
}

/// SplitMix64: a seeded stream of well-mixed 64-bit numbers, standing in for the proxy's RNG.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `count` successes in `n` trials are within 5 standard deviations of `n·p`
/// (a false alarm once in about 1.7 million checks).
fn within_binomial(count: usize, n: usize, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (count as f64 - mean).abs() <= 5.0 * sd + 1.0
}

const SHARES: [(u64, u64); 4] = [(999, 1), (99, 1), (95, 5), (50, 50)];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn weighted_requests_follow_the_weights(seed in any::<u64>(), share in 0..SHARES.len()) {
        let (stable, canary) = SHARES[share];
        let p = canary as f64 / (stable + canary) as f64;
        let t = route(&[stable, canary], vec![], false);
        let none = HeaderMap::new();
        let mut state = seed;
        let n = 40_000;
        let hits = (0..n).filter(|_| pick(&t, &none, splitmix(&mut state)).0 == 1).count();
        prop_assert!(within_binomial(hits, n, p), "{hits} of {n} at p={p}");
    }

    #[test]
    fn sticky_keys_spread_in_proportion_to_the_weights(seed in any::<u64>(), share in 0..SHARES.len()) {
        let (stable, canary) = SHARES[share];
        let p = canary as f64 / (stable + canary) as f64;
        let t = route(&[stable, canary], vec![], true);
        let n = 20_000;
        let hits = (0..n)
            .filter(|i| pick(&t, &user(&format!("user-{seed}-{i}")), 0).0 == 1)
            .count();
        prop_assert!(within_binomial(hits, n, p), "{hits} of {n} at p={p}");
    }

    #[test]
    fn arbitrary_weights_are_followed(seed in any::<u64>(), w in prop::collection::vec(0u64..1_000_000, 3)) {
        prop_assume!(w.iter().any(|x| *x > 0));
        let total: u64 = w.iter().sum();
        let t = route(&w, vec![], false);
        let none = HeaderMap::new();
        let mut state = seed;
        let n = 20_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[pick(&t, &none, splitmix(&mut state)).0] += 1;
        }
        for (i, c) in counts.iter().enumerate() {
            let p = w[i] as f64 / total as f64;
            if w[i] == 0 {
                prop_assert_eq!(*c, 0, "weight-0 track {} chosen", i);
            }
            prop_assert!(within_binomial(*c, n, p), "track {i}: {c} of {n} at p={p}");
        }
    }

    /// A key leaves track i for track j only if w_j / w_i rose; in particular it stays while its
    /// track's weight does not fall and no other weight rises, and no key ever lands on a track
    /// of weight 0.
    #[test]
    fn sticky_keys_move_only_towards_tracks_that_gained(
        steps in prop::collection::vec(prop::collection::vec(0u64..1000, 3), 2..8),
        tracks in 2usize..=3,
    ) {
        let steps: Vec<Vec<u64>> = steps
            .into_iter()
            .map(|w| w[..tracks].to_vec())
            .filter(|w| w.iter().any(|x| *x > 0))
            .collect();
        let keys: Vec<HeaderMap> = (0..300).map(|i| user(&format!("k{i}"))).collect();
        let mut before: Option<(Vec<u64>, Vec<usize>)> = None;
        for w in steps {
            let t = route(&w, vec![], true);
            let now: Vec<usize> = keys.iter().map(|k| pick(&t, k, 0).0).collect();
            for &track in &now {
                prop_assert!(w[track] > 0, "key on weight-0 track {track} with {w:?}");
            }
            if let Some((w0, was)) = &before {
                for (k, (&i, &j)) in was.iter().zip(&now).enumerate() {
                    if i == j {
                        continue;
                    }
                    // Moved i → j: allowed only if w_j/w_i rose (cross-multiplied, exact).
                    prop_assert!(
                        w[i] == 0 || w[j] * w0[i] > w0[j] * w[i],
                        "key {k} moved {i}→{j} with weights {w0:?} → {w:?}"
                    );
                    let kept_or_grew = w[i] >= w0[i];
                    let others_held = (0..w.len()).all(|x| x == i || w[x] <= w0[x]);
                    prop_assert!(!(kept_or_grew && others_held), "key {k} left {i} with {w0:?} → {w:?}");
                }
            }
            before = Some((w, now));
        }
    }

    /// The issue's words, one weight change at a time over three tracks: when a track's weight
    /// grows every key already on it stays on it; when it shrinks only keys on it leave it.
    #[test]
    fn one_weight_change_moves_keys_only_to_or_from_that_track(
        start in prop::collection::vec(1u64..1000, 3),
        changes in prop::collection::vec((0usize..3, 0u64..1000), 1..8),
    ) {
        let keys: Vec<HeaderMap> = (0..300).map(|i| user(&format!("u{i}"))).collect();
        let mut w = start;
        let mut was: Vec<usize> = {
            let t = route(&w, vec![], true);
            keys.iter().map(|k| pick(&t, k, 0).0).collect()
        };
        for (track, weight) in changes {
            let mut next = w.clone();
            next[track] = weight;
            if next.iter().all(|x| *x == 0) {
                continue;
            }
            let t = route(&next, vec![], true);
            let now: Vec<usize> = keys.iter().map(|k| pick(&t, k, 0).0).collect();
            for (k, (&a, &b)) in was.iter().zip(&now).enumerate() {
                if next[track] >= w[track] {
                    // Grew (or held): keys on it stay, other keys may only move onto it.
                    prop_assert!(a != track || b == track, "key {k} left growing track {track}");
                    prop_assert!(a == b || b == track, "key {k} moved {a}→{b} when only {track} grew");
                } else {
                    // Shrank: only keys on it leave it.
                    prop_assert!(a == b || a == track, "key {k} moved {a}→{b} when only {track} shrank");
                }
            }
            w = next;
            was = now;
        }
    }

    /// Rules are checked in order before stickiness and weights: the first rule whose header is
    /// present decides, whatever the key and the random number.
    #[test]
    fn the_first_matching_rule_decides(
        rule_tracks in prop::collection::vec(0usize..3, 0..6),
        present in prop::collection::vec(any::<bool>(), 6),
        sticky in any::<bool>(),
        random in any::<u64>(),
        weights in prop::collection::vec(0u64..100, 3),
    ) {
        prop_assume!(weights.iter().any(|x| *x > 0));
        let rules = rule_tracks
            .iter()
            .enumerate()
            .map(|(i, t)| RuleSpec {
                matches: RequestMatch {
                    headers: vec![ValueMatch {
                        name: format!("x-rule-{i}"),
                        value: Some("1".into()),
                        one_of: None,
                        regex: None,
                        present: None,
                    }],
                    ..RequestMatch::default()
                },
                track: TRACKS[*t].into(),
            })
            .collect();
        let t = route(&weights, rules, sticky);
        let mut h = user("someone");
        for (i, on) in present.iter().enumerate() {
            if *on {
                h.insert(
                    http::HeaderName::from_bytes(format!("x-rule-{i}").as_bytes()).expect("valid"),
                    HeaderValue::from_static("1"),
                );
            }
        }
        let (track, by) = pick(&t, &h, random);
        match (0..rule_tracks.len()).find(|i| present[*i]) {
            Some(first) => prop_assert_eq!((track, by), (rule_tracks[first], DecidedBy::Rule(first))),
            None => {
                prop_assert!(weights[track] > 0);
                prop_assert_eq!(by, if sticky { DecidedBy::Sticky } else { DecidedBy::Weight });
            }
        }
    }
}

// ---- validation never panics ---------------------------------------------------------------

/// Field names of the schema, so that random documents reach deep into validation.
const NAMES: &[&str] = &[
    "listen",
    "admin",
    "routes",
    "name",
    "match",
    "host",
    "path",
    "pathPrefix",
    "pathRegex",
    "method",
    "headers",
    "queryParams",
    "cookies",
    "value",
    "oneOf",
    "regex",
    "present",
    "tracks",
    "endpoints",
    "weight",
    "protocol",
    "rules",
    "track",
    "sticky",
    "header",
    "cookie",
    "timeout",
    "timeouts",
    "limits",
    "address",
    "tls",
    "certFile",
    "keyFile",
    "tokenFile",
    "stateFile",
    "trackHeader",
    "connect",
    "request",
    "maxHeaders",
    "version",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(NAMES).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(&["127.0.0.1:1", "*.example.com", "/", "a(", "5s", "h2c", "x-user-id", "0"][..])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(NAMES).prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validation_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = load_config(&text, Format::Yaml, 1);
        let _ = load_config(&text, Format::Json, 1);
        let _ = load_routes(&text, Format::Yaml, 1);
    }

    #[test]
    fn validation_never_panics_on_schema_shaped_documents(v in json_value()) {
        let json = v.to_string();
        let yaml = serde_yaml_ng::to_string(&v).expect("serializable");
        let errors = [load_config(&json, Format::Json, 1).err(), load_config(&yaml, Format::Yaml, 1).err()];
        for e in errors.into_iter().flatten() {
            prop_assert!(!e.errors().is_empty());
        }
        let _ = load_routes(&json, Format::Json, 1);
    }

    #[test]
    fn validation_never_panics_on_mangled_examples(
        example in 0usize..4,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let text = [
            include_str!("../examples/canary-weight.yaml"),
            include_str!("../examples/blue-green.yaml"),
            include_str!("../examples/sticky-canary.yaml"),
            include_str!("../examples/rings.yaml"),
        ][example];
        let mut bytes = text.as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(loaded) = load_config(&text, Format::Yaml, 1) {
            // Whatever still validates must decide without panicking.
            let none = HeaderMap::new();
            let _ = loaded.table.decide(&RequestView {
                method: &Method::GET,
                host: "a.example.com",
                path: "/",
                query: "",
                headers: &none,
                random: 1,
            });
        }
    }
}
