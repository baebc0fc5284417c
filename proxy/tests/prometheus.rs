//! The proxies' `/metrics` as a real Prometheus reads them: Debian's `prometheus`, started by
//! `testkit::Prometheus` on loopback, scraping real proxies in front of mock upstreams. Every
//! scrape is accepted whole; `histogram_quantile` over `switchyard_request_duration_seconds`
//! agrees with the proxy's own `/stats` within 10% for latencies from 1 ms to 10 s.

mod common;

use std::time::Duration;

use common::{metrics, start_proxy, track_stats, url};
use switchyard_testkit::prometheus::exposition_problems;
use switchyard_testkit::{Client, MockUpstream, Prometheus, Table, assert_eventually};

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
