//! `decide()` allocates nothing: a counting global allocator sees zero allocations on this
//! thread across decisions that exercise every kind of condition, rules, sticky keys by header
//! and cookie, and a large table.

#![allow(unsafe_code)] // A global allocator can only be written with `unsafe impl`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{HeaderMap, Method};
use switchyard_config::{Format, RequestView, RoutingTable, load_config, load_routes};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// const-initialized thread-local `Cell` without destructor, so touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

struct Request {
    method: Method,
    host: &'static str,
    path: &'static str,
    query: &'static str,
    headers: HeaderMap,
}

fn request(host: &'static str, path_and_query: &'static str, headers: &[(&'static str, &'static str)]) -> Request {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut h = HeaderMap::new();
    for (name, value) in headers {
        h.append(*name, value.parse().unwrap());
    }
    Request {
        method: Method::GET,
        host,
        path,
        query,
        headers: h,
    }
}

fn decide_all(table: &RoutingTable, requests: &[Request]) -> usize {
    let mut decided = 0;
    for (i, r) in requests.iter().enumerate() {
        let view = RequestView {
            method: &r.method,
            host: r.host,
            path: r.path,
            query: r.query,
            headers: &r.headers,
            random: (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        decided += usize::from(std::hint::black_box(table.decide(&view)).is_some());
    }
    decided
}

const CONDITIONS: &str = r#"
routes:
  - name: api
    match:
      host: "*.example.com"
      pathRegex: "/api/v[0-9]+/.*"
      method: [GET, POST]
      headers: [{ name: accept, regex: ".*json.*" }]
    tracks:
      - { name: stable, endpoints: ["127.0.0.1:1", { address: "127.0.0.1:2", weight: 3 }], weight: 90 }
      - { name: canary, endpoints: ["127.0.0.1:3"], weight: 10 }
    rules:
      - match: { queryParams: [{ name: "canary flag", regex: "on|yes" }] }
        track: canary
      - match: { cookies: [{ name: beta, value: "1" }] }
        track: canary
      - match: { headers: [{ name: x-user-group, oneOf: [internal, beta] }] }
        track: canary
    sticky: { cookie: uid }
  - name: web
    match: { host: shop.example.com, pathPrefix: /shop }
    tracks:
      - { name: blue, endpoints: ["127.0.0.1:4"], weight: 0 }
      - { name: green, endpoints: ["127.0.0.1:5"], weight: 1 }
    sticky: { header: x-user-id }
"#;

#[test]
fn decide_does_not_allocate() {
    let table = load_routes(CONDITIONS, Format::Yaml, 1).unwrap();
    let requests = [
        request(
            "a.example.com",
            "/api/v1/x?canary%20flag=yes",
            &[("accept", "application/json")],
        ),
        request(
            "A.Example.COM:443",
            "/api/v2/y",
            &[("accept", "text/json"), ("cookie", "beta=1; uid=u7")],
        ),
        request(
            "a.example.com",
            "/api/v2/y",
            &[("accept", "json"), ("x-user-group", "beta")],
        ),
        request(
            "a.example.com",
            "/api/v2/y",
            &[("accept", "json"), ("cookie", "uid=\"u9\"")],
        ),
        request("a.example.com", "/api/v2/y", &[("accept", "json")]),
        request("shop.example.com", "/shop/cart", &[("x-user-id", "alice")]),
        request("shop.example.com", "/shop", &[]),
        request("nowhere.test", "/", &[]),
    ];
    decide_all(&table, &requests); // warm up lazily built regex caches
    let mut decided = 0;
    let n = allocations_during(|| decided = decide_all(&table, &requests));
    assert_eq!(decided, 7, "the last request matches no route");
    assert_eq!(n, 0, "decide() allocated {n} times");
}

#[test]
fn decide_on_the_example_and_on_a_thousand_routes_does_not_allocate() {
    let example = load_config(include_str!("../examples/canary-weight.yaml"), Format::Yaml, 1)
        .unwrap()
        .table;
    let mut yaml = String::from("routes:\n");
    for i in 0..1000 {
        yaml.push_str(&format!(
            "  - {{ name: r{i}, match: {{ host: svc-{}.example.com, pathPrefix: /p{} }}, sticky: {{ header: x-user-id }}, \
             tracks: [{{ name: stable, endpoints: ['127.0.0.1:1'], weight: 95 }}, {{ name: canary, endpoints: ['127.0.0.1:2'], weight: 5 }}] }}\n",
            i / 10,
            i % 10
        ));
    }
    let large = load_routes(&yaml, Format::Yaml, 1).unwrap();
    let requests = [
        request("shop.example.com", "/cart", &[("x-canary", "true")]),
        request("shop.example.com", "/cart", &[("x-user-id", "bob")]),
        request("svc-99.example.com", "/p9/z", &[("x-user-id", "bob")]),
        request("svc-5.example.com:80", "/p3", &[]),
    ];
    decide_all(&example, &requests);
    decide_all(&large, &requests);
    let n = allocations_during(|| {
        assert_eq!(decide_all(&example, &requests), 4);
        assert_eq!(decide_all(&large, &requests), 2);
    });
    assert_eq!(n, 0, "decide() allocated {n} times");
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}
