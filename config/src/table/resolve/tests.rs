use std::collections::HashMap;
use std::net::IpAddr;

use http::{HeaderMap, Method};

use super::*;
use crate::request::RequestView;
use crate::{Format, load_routes};

const TABLE: &str = r#"
routes:
  - name: app
    sticky: { header: x-user-id }
    tracks:
      - name: stable
        weight: 90
        endpoints:
          - { address: "app.svc:8080", weight: 3 }
          - "10.0.0.9:8080"
      - name: canary
        weight: 10
        endpoints: ["canary.svc:9000"]
"#;

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn answers(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<IpAddr>> {
    pairs
        .iter()
        .map(|(host, list)| ((*host).to_owned(), ips(list)))
        .collect()
}

fn resolved(table: &RoutingTable, answers: &HashMap<String, Vec<IpAddr>>) -> RoutingTable {
    table.resolve(|host| answers.get(host).map(Vec::as_slice)).unwrap()
}

/// `(address, weight)` of every endpoint of `route`'s `track`.
fn endpoints(t: &RoutingTable, track: &str) -> Vec<(String, f64)> {
    t.route("app")
        .unwrap()
        .track(track)
        .unwrap()
        .endpoints()
        .iter()
        .map(|e| (e.address().to_owned(), e.weight()))
        .collect()
}

/// The endpoint a request with sticky key `key` (or none) and random number `random` goes to.
fn endpoint(t: &RoutingTable, key: Option<&str>, random: u64) -> (String, String) {
    let mut headers = HeaderMap::new();
    if let Some(k) = key {
        headers.insert("x-user-id", k.parse().unwrap());
    }
    let view = RequestView {
        method: &Method::GET,
        host: "example.com",
        path: "/",
        query: "",
        headers: &headers,
        random,
    };
    let d = t.decide(&view).unwrap();
    (d.track.name().as_str().to_owned(), d.endpoint.address().to_owned())
}

#[test]
fn host_names_are_told_from_ip_endpoints() {
    assert_eq!(host_name("app.svc:8080"), Some(("app.svc", 8080)));
    assert_eq!(host_name("localhost:1"), Some(("localhost", 1)));
    for ip in ["10.0.0.7:8080", "[::1]:80", "[2001:db8::1]:443"] {
        assert_eq!(host_name(ip), None, "{ip}");
    }
    let table = load_routes(TABLE, Format::Yaml, 1).unwrap();
    assert_eq!(
        host_names(table.spec()).into_iter().collect::<Vec<_>>(),
        ["app.svc", "canary.svc"]
    );
}

#[test]
fn every_address_is_an_endpoint_sharing_the_names_weight_in_address_order() {
    let table = load_routes(TABLE, Format::Yaml, 4).unwrap();
    // The answer's order is not the endpoints' order.
    let a = answers(&[
        ("app.svc", &["10.0.0.3", "10.0.0.1", "10.0.0.2"]),
        ("canary.svc", &["fd00::2", "10.1.0.1"]),
    ]);
    let t = resolved(&table, &a);
    assert_eq!(
        endpoints(&t, "stable"),
        [
            ("10.0.0.1:8080".to_owned(), 1.0),
            ("10.0.0.2:8080".to_owned(), 1.0),
            ("10.0.0.3:8080".to_owned(), 1.0),
            ("10.0.0.9:8080".to_owned(), 1.0),
        ]
    );
    assert_eq!(
        endpoints(&t, "canary"),
        [("10.1.0.1:9000".to_owned(), 0.5), ("[fd00::2]:9000".to_owned(), 0.5)]
    );
    // What was written is what is served back, at the same version; track weights stay.
    assert_eq!(t.spec(), table.spec());
    assert_eq!(t.version(), 4);
    assert_eq!(t.route("app").unwrap().track("stable").unwrap().weight(), 90.0);
    // Requests spread over the addresses by their weights: the name keeps 3/4 of stable.
    let mut counts: HashMap<String, u32> = HashMap::new();
    let n = 40_000u64;
    for i in 0..n {
        let (track, address) = endpoint(&t, None, i.wrapping_mul(u64::MAX / n));
        if track == "stable" {
            *counts.entry(address).or_default() += 1;
        }
    }
    let stable: u32 = counts.values().sum();
    for address in ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080", "10.0.0.9:8080"] {
        let share = f64::from(counts[address]) / f64::from(stable);
        assert!((share - 0.25).abs() < 0.01, "{address}: {share}");
    }
}

#[test]
fn a_name_without_addresses_stays_as_written() {
    let table = load_routes(TABLE, Format::Yaml, 1).unwrap();
    let t = resolved(&table, &answers(&[("app.svc", &["10.0.0.1"])]));
    assert_eq!(endpoints(&t, "canary"), [("canary.svc:9000".to_owned(), 1.0)]);
    let t = resolved(&table, &answers(&[("app.svc", &[])]));
    assert_eq!(endpoints(&t, "stable"), endpoints(&table, "stable"));
}

#[test]
fn an_address_reached_twice_is_one_endpoint_with_both_weights() {
    let table = load_routes(TABLE, Format::Yaml, 1).unwrap();
    let t = resolved(&table, &answers(&[("app.svc", &["10.0.0.9", "10.0.0.1", "10.0.0.1"])]));
    assert_eq!(
        endpoints(&t, "stable"),
        [("10.0.0.1:8080".to_owned(), 1.5), ("10.0.0.9:8080".to_owned(), 2.5)]
    );
}

#[test]
fn a_table_without_names_decides_as_before() {
    let text = TABLE.replace("app.svc", "10.0.0.1").replace("canary.svc", "10.1.0.1");
    let table = load_routes(&text, Format::Yaml, 1).unwrap();
    let t = resolved(&table, &answers(&[("app.svc", &["10.9.9.9"])]));
    for i in 0..2_000u64 {
        let key = format!("user-{i}");
        let r = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        assert_eq!(endpoint(&t, Some(&key), r), endpoint(&table, Some(&key), r));
        assert_eq!(endpoint(&t, None, r), endpoint(&table, None, r));
    }
}

#[test]
fn sticky_keys_depend_on_the_address_set_and_move_only_to_a_new_address() {
    let text = r#"
routes:
  - name: app
    sticky: { header: x-user-id }
    tracks: [{ name: stable, weight: 1, endpoints: ["app.svc:8080"] }]
"#;
    let table = load_routes(text, Format::Yaml, 1).unwrap();
    let three = resolved(&table, &answers(&[("app.svc", &["10.0.0.1", "10.0.0.2", "10.0.0.3"])]));
    let shuffled = resolved(&table, &answers(&[("app.svc", &["10.0.0.3", "10.0.0.1", "10.0.0.2"])]));
    let four = resolved(
        &table,
        &answers(&[("app.svc", &["10.0.0.4", "10.0.0.1", "10.0.0.2", "10.0.0.3"])]),
    );
    let mut moved = 0;
    let keys = 4_000;
    for i in 0..keys {
        let key = format!("user-{i}");
        let before = endpoint(&three, Some(&key), i);
        assert_eq!(before, endpoint(&shuffled, Some(&key), i ^ 0xffff), "{key}");
        let after = endpoint(&four, Some(&key), i);
        if after != before {
            assert_eq!(
                after.1, "10.0.0.4:8080",
                "{key} moved between two addresses that stayed"
            );
            moved += 1;
        }
    }
    // The new address takes about a quarter of the keys.
    assert!((800..1_200).contains(&moved), "{moved} of {keys} keys moved");
}
