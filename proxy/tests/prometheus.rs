//! The proxies' `/metrics` as a real Prometheus reads them: Debian's `prometheus`, started by
//! `testkit::Prometheus` on loopback, scraping real proxies in front of mock upstreams. Every
//! scrape is accepted whole; `histogram_quantile` over `switchyard_request_duration_seconds`
//! agrees with the proxy's own `/stats` within 10% for latencies from 1 ms to 10 s; and every
//! query of the Grafana dashboard (`deploy/grafana/switchyard.json`), its template variables
//! substituted, returns data from two proxies under traffic.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{metrics, start_proxy, track_stats, url};
use serde_json::Value;
use switchyard_proxy::Running;
use switchyard_testkit::prometheus::exposition_problems;
use switchyard_testkit::{Client, MockUpstream, Prometheus, Sample, Table, assert_eventually};

/// A track whose upstream answers after a fixed delay, and the requests sent to it (so many at a
/// time).
struct Latency {
    track: &'static str,
    delay: Duration,
    requests: usize,
    concurrency: usize,
}

/// From 1 ms to 8 s; the slow tracks get few requests, all at once, so that the test takes about
/// as long as its slowest request.
const LATENCIES: [Latency; 5] = [
    Latency {
        track: "1ms",
        delay: Duration::from_millis(1),
        requests: 200,
        concurrency: 4,
    },
    Latency {
        track: "20ms",
        delay: Duration::from_millis(20),
        requests: 100,
        concurrency: 10,
    },
    Latency {
        track: "300ms",
        delay: Duration::from_millis(300),
        requests: 40,
        concurrency: 10,
    },
    Latency {
        track: "2s",
        delay: Duration::from_secs(2),
        requests: 20,
        concurrency: 10,
    },
    Latency {
        track: "8s",
        delay: Duration::from_secs(8),
        requests: 10,
        concurrency: 10,
    },
];

/// Checks what Prometheus says of its one target: `up` is 1 and the last scrape had no error.
async fn scrapes_are_accepted(prometheus: &Prometheus) {
    let up = prometheus.query("up").await.expect("up");
    assert_eq!(up.len(), prometheus.targets().len(), "{up:?}");
    assert!(up.iter().all(|s| s.value == 1.0), "a target is down: {up:?}");
    for target in prometheus.target_health().await.expect("targets") {
        assert_eq!(
            (target.health.as_str(), target.last_error.as_str()),
            ("up", ""),
            "{target:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_quantile_agrees_with_stats_within_ten_percent_from_1_ms_to_10_s() {
    let mut upstreams = Vec::new();
    let mut table = Table::new().route("latency");
    for (i, l) in LATENCIES.iter().enumerate() {
        let upstream = MockUpstream::start(l.track).await;
        upstream.set_latency(l.delay);
        table = table.track(l.track, &[upstream.addr()], if i == 0 { 1.0 } else { 0.0 });
        upstreams.push(upstream);
    }
    for l in &LATENCIES {
        table = table.header_rule("x-track", l.track, l.track);
    }
    let proxy = start_proxy(table).await;
    let prometheus = Prometheus::start("quantiles", &[proxy.admin.to_string()]).await;

    let mut requests = tokio::task::JoinSet::new();
    for l in &LATENCIES {
        for _ in 0..l.concurrency {
            let (target, track, n) = (url(&proxy, "/"), l.track, l.requests / l.concurrency);
            requests.spawn(async move {
                let client = Client::http1();
                for _ in 0..n {
                    let reply = client
                        .get(&target, &[("x-track", track)])
                        .await
                        .expect("the proxy answers");
                    assert_eq!(
                        (reply.status.as_u16(), reply.header("x-switchyard-track")),
                        (200, Some(track))
                    );
                }
            });
        }
    }
    while let Some(done) = requests.join_next().await {
        done.expect("a client task");
    }
    for l in &LATENCIES {
        assert_eventually!(track_stats(&proxy, "latency", l.track).await["requests"] == l.requests);
    }
    // Prometheus has a scrape with every request in it.
    prometheus
        .wait_for(
            r#"switchyard_request_duration_seconds_count{route="latency"}"#,
            |counts| {
                LATENCIES.iter().all(|l| {
                    counts
                        .iter()
                        .any(|s| s.label("track") == Some(l.track) && s.value == l.requests as f64)
                })
            },
        )
        .await;
    scrapes_are_accepted(&prometheus).await;
    let text = metrics(&proxy).await;
    let problems = exposition_problems(&text);
    assert!(problems.is_empty(), "/metrics breaks the text format: {problems:#?}");
    eprintln!(
        "/metrics: {} lines, {} bytes for one route of {} tracks",
        text.lines().count(),
        text.len(),
        LATENCIES.len()
    );

    let mut report = Vec::new();
    let mut worst: f64 = 0.0;
    for l in &LATENCIES {
        let stats = track_stats(&proxy, "latency", l.track).await;
        for (q, field) in [(0.5, "p50"), (0.99, "p99")] {
            let expr = format!(
                r#"histogram_quantile({q}, switchyard_request_duration_seconds_bucket{{route="latency",track="{}"}})"#,
                l.track
            );
            let result = prometheus.query(&expr).await.expect("the quantile query runs");
            assert_eq!(result.len(), 1, "{expr}: {result:?}");
            let from_prometheus = result[0].value * 1000.0;
            let from_stats = stats["latencyMs"][field].as_f64().expect("a latency");
            let error = (from_prometheus - from_stats) / from_stats;
            worst = worst.max(error.abs());
            report.push(format!(
                "{:>6} {field}: /stats {from_stats:.3} ms, Prometheus {from_prometheus:.3} ms ({:+.1}%)",
                l.track,
                error * 100.0
            ));
        }
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(worst < 0.1, "histogram_quantile is more than 10% off /stats:\n{report}");
}

/// The dashboard, as Grafana reads it.
fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/switchyard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel, those inside collapsed rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A query variable's `label_values(SELECTOR, LABEL)` (or `label_values(LABEL)`), as
/// (label, selector).
fn label_values_query(variable: &Value) -> (String, String) {
    let query = variable["query"]["query"]
        .as_str()
        .or(variable["query"].as_str())
        .unwrap_or_else(|| panic!("variable {} has no query", variable["name"]));
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable {}: {query:?} is not label_values(...)", variable["name"]));
    match inner.rsplit_once(',') {
        Some((selector, label)) => (label.trim().to_owned(), selector.trim().to_owned()),
        None => (inner.trim().to_owned(), "{__name__=~\".+\"}".to_owned()),
    }
}

/// `expr` with the template variables of `values` and Grafana's `$__rate_interval` put in;
/// panics on any variable left.
fn substitute(expr: &str, values: &BTreeMap<String, String>) -> String {
    // Four scrapes at least, as Grafana's own $__rate_interval, with room for a slow scrape.
    let mut out = expr.replace("$__rate_interval", "10s");
    // Longer names first, so that `$route` never eats the start of `$routes`.
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        out = out
            .replace(&format!("${{{name}}}"), &values[name])
            .replace(&format!("${name}"), &values[name]);
    }
    assert!(
        !out.contains('$'),
        "a template variable is left in {out:?} (from {expr:?})"
    );
    out
}

/// The substitution sets to run every query with: every variable at All (Grafana's `allValue`),
/// and each value of each variable in turn, with the variables after it resolved under it.
async fn variable_settings(prometheus: &Prometheus, variables: &[&Value]) -> Vec<BTreeMap<String, String>> {
    let mut settings = vec![BTreeMap::new()];
    for variable in variables {
        let name = variable["name"].as_str().expect("a variable's name").to_owned();
        assert_eq!(variable["includeAll"], true, "variable {name}");
        let all = variable["allValue"].as_str().expect("an allValue").to_owned();
        let (label, selector) = label_values_query(variable);
        let mut next = Vec::new();
        for setting in &settings {
            let selector = substitute(&selector, setting);
            let values = prometheus.label_values(&label, &selector).await.expect("label values");
            assert!(
                !values.is_empty(),
                "variable {name}: label_values({selector}, {label}) is empty"
            );
            for value in values.into_iter().chain([all.clone()]) {
                let mut setting = setting.clone();
                setting.insert(name.clone(), value);
                next.push(setting);
            }
        }
        settings = next;
    }
    settings
}

/// Requests to every route (and to none) through every proxy, until dropped.
struct Traffic(Arc<AtomicBool>);

impl Traffic {
    fn start(proxies: &[Running]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let targets: Vec<String> = proxies
            .iter()
            .flat_map(|p| ["/checkout", "/search", "/nowhere"].map(|path| url(p, path)))
            .collect();
        let running = Arc::clone(&stop);
        tokio::spawn(async move {
            let client = Client::http1();
            while !running.load(Ordering::Relaxed) {
                for target in &targets {
                    client.get(target, &[]).await.expect("the proxy answers");
                }
                // A steady trickle is enough for rates; no need to load the machine.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self(stop)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_the_grafana_dashboard_returns_data_from_two_proxies() {
    let dashboard = dashboard();
    let panels = panels(&dashboard);
    let variables: Vec<&Value> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .collect();
    // The data source is a variable, and every panel and query uses it.
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    assert!(
        variables
            .iter()
            .any(|v| v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"),
        "no datasource variable"
    );
    let mut ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().expect("a panel id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are not unique");
    let mut queries = Vec::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("a title");
        assert_eq!(panel["datasource"], datasource, "panel {title}");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "panel {title} has no gridPos");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            assert_eq!(target["datasource"], datasource, "panel {title}");
            queries.push((title, target["expr"].as_str().expect("an expr")));
        }
    }
    // What the dashboard is for: per route and track, rate, error rate, p50 and p99.
    for needed in [
        "rate(switchyard_requests_total{route",
        "class=\"5xx\"",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
    ] {
        assert!(
            queries.iter().any(|(_, q)| q.contains(needed)),
            "no query has {needed:?}"
        );
    }
    let query_variables: Vec<&Value> = variables.iter().copied().filter(|v| v["type"] == "query").collect();

    let stable = MockUpstream::start("stable").await;
    stable.set_latency(Duration::from_millis(2));
    let canary = MockUpstream::start("canary").await;
    canary.set_latency(Duration::from_millis(10));
    canary.fail_every(10);
    let blue = MockUpstream::start("blue").await;
    let table = || {
        Table::new()
            .route("checkout")
            .matching("pathPrefix: /checkout")
            .track("stable", &[stable.addr()], 50.0)
            .track("canary", &[canary.addr()], 50.0)
            .route("search")
            .matching("pathPrefix: /search")
            .track("blue", &[blue.addr()], 1.0)
    };
    let proxies = [start_proxy(table()).await, start_proxy(table()).await];
    let admins: Vec<String> = proxies.iter().map(|p| p.admin.to_string()).collect();
    let prometheus = Prometheus::start("grafana", &admins).await;
    let _traffic = Traffic::start(&proxies);
    prometheus.wait_scrapes(1).await;

    let settings = variable_settings(&prometheus, &query_variables).await;
    let routes: Vec<&str> = settings
        .iter()
        .filter_map(|s| s.get("route").map(String::as_str))
        .collect();
    assert!(
        routes.contains(&"checkout") && routes.contains(&"search"),
        "{settings:?}"
    );
    let mut ran = 0;
    for setting in &settings {
        for (title, expr) in &queries {
            let expr = substitute(expr, setting);
            let data = prometheus
                .wait_for(&expr, |samples| {
                    !samples.is_empty() && samples.iter().all(|s: &Sample| s.value.is_finite())
                })
                .await;
            ran += 1;
            // The error rate is the share of 5xx: the canary's 1 in 10, none of stable's.
            if *title == "Error rate" && setting.get("route").map(String::as_str) == Some("checkout") {
                for sample in &data {
                    match sample.label("track") {
                        Some("canary") => assert!((0.02..0.3).contains(&sample.value), "{expr}: {data:?}"),
                        _ => assert_eq!(sample.value, 0.0, "{expr}: {data:?}"),
                    }
                }
            }
            if *title == "Requests per second" {
                assert!(data.iter().all(|s| s.value > 0.0), "{expr}: {data:?}");
            }
        }
    }
    assert_eq!(ran, settings.len() * queries.len());
    eprintln!(
        "{} queries of the dashboard, each with {} settings of its variables, returned data",
        queries.len(),
        settings.len()
    );
    scrapes_are_accepted(&prometheus).await;
}
