//! Inline measurement: what `/stats` and `/metrics` report after real traffic, and failing
//! upstreams counted against their track.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{admin_json, admin_url, start_proxy, track_stats, url};
use switchyard_config::stats::{StatsDocument, decode_histogram};
use switchyard_proxy::Running;
use switchyard_testkit::{Behaviour, Client, MockUpstream, Table, assert_eventually};

/// The wall clock, ms since the Unix epoch, as a controller reads it.
fn unix_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since_epoch.as_millis()).expect("ms fit in u64")
}

/// `/stats` read with the controller's type.
async fn stats_document(p: &Running, query: &str) -> StatsDocument {
    serde_json::from_value(admin_json(p, &format!("/stats?{query}")).await).expect("a stats document")
}

#[tokio::test]
async fn histogram_counts_equal_requests_sent() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(4);
    let p = start_proxy(
        Table::new()
            .route("checkout")
            .track("stable", &[stable.addr()], 1.0)
            .track("canary", &[canary.addr()], 0.0)
            .header_rule("x-canary", "true", "canary"),
    )
    .await;
    let c = Client::http1();
    for _ in 0..37 {
        assert_eq!(
            c.get(&url(&p, "/"), &[("x-canary", "false")]).await.unwrap().status,
            200
        );
    }
    for _ in 0..40 {
        c.get(&url(&p, "/"), &[("x-canary", "true")]).await.unwrap();
    }
    // Bodies are recorded when they end; the client has read them all.
    assert_eventually!(track_stats(&p, "checkout", "canary").await["requests"] == 40);
    let stable_stats = track_stats(&p, "checkout", "stable").await;
    let canary_stats = track_stats(&p, "checkout", "canary").await;
    for (s, n) in [(&stable_stats, 37), (&canary_stats, 40)] {
        assert_eq!(s["requests"], n);
        let h = decode_histogram(s["histogram"].as_str().unwrap()).unwrap();
        assert_eq!(h.len(), n, "histogram count");
        assert!(s["latencyMs"]["p50"].as_f64().unwrap() > 0.0);
        assert!(s["latencyMs"]["max"].as_f64().unwrap() >= s["latencyMs"]["p99"].as_f64().unwrap());
    }
    assert_eq!(stable_stats["statusClasses"]["2xx"], 37);
    assert_eq!(canary_stats["statusClasses"]["2xx"], 30);
    assert_eq!(canary_stats["statusClasses"]["5xx"], 10);
    assert_eq!(canary_stats["errors"], 10);
    assert_eq!(canary_stats["errorRate"], 0.25);
    assert_eq!(canary_stats["upstreamErrors"]["connect"], 0);

    let stats = admin_json(&p, "/stats?window=10s").await;
    assert_eq!(stats["version"], 1);
    assert_eq!(stats["windowSeconds"], 10);

    let metrics = Client::http1().get(&admin_url(&p, "/metrics"), &[]).await.unwrap();
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("text/plain"));
    for line in [
        "switchyard_requests_total{class=\"2xx\",route=\"checkout\",track=\"stable\"} 37",
        "switchyard_requests_total{class=\"5xx\",route=\"checkout\",track=\"canary\"} 10",
        "switchyard_request_duration_seconds_count{route=\"checkout\",track=\"canary\"} 40",
        "switchyard_request_duration_seconds_bucket{route=\"checkout\",track=\"stable\",le=\"+Inf\"} 37",
        "switchyard_upstream_errors_total{kind=\"connect\",route=\"checkout\",track=\"canary\"} 0",
        "switchyard_table_version 1",
        "switchyard_config_reload_failures_total 0",
        "# TYPE switchyard_request_duration_seconds histogram",
    ] {
        assert!(metrics.body.contains(line), "missing {line:?} in\n{}", metrics.body);
    }
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_counted_as_a_connect_error_of_its_track() {
    let stable = MockUpstream::start("stable").await;
    // A port nobody listens on: bind one, then free it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let p = start_proxy(
        Table::new()
            .route("checkout")
            .track("stable", &[stable.addr()], 1.0)
            .track("canary", &[dead], 0.0)
            .header_rule("x-canary", "true", "canary"),
    )
    .await;
    let r = Client::http1()
        .get(&url(&p, "/"), &[("x-canary", "true")])
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    assert!(r.body.starts_with("upstream connect error"), "{}", r.body);
    assert_eq!(r.header("x-switchyard-track"), Some("canary"));
    let s = track_stats(&p, "checkout", "canary").await;
    assert_eq!((s["requests"].as_u64(), s["errors"].as_u64()), (Some(1), Some(1)));
    assert_eq!(s["statusClasses"]["5xx"], 1);
    assert_eq!(s["upstreamErrors"]["connect"], 1);
    assert_eq!(track_stats(&p, "checkout", "stable").await["requests"], 0);
}

#[tokio::test]
async fn a_slow_upstream_is_504_and_a_reset_is_502_each_counted() {
    let slow = MockUpstream::start("slow").await;
    let broken = MockUpstream::start("broken").await;
    slow.set_behaviour(Behaviour::Hang);
    broken.set_behaviour(Behaviour::Reset);
    let p = start_proxy(
        Table::new()
            .setting("timeouts: { request: 200ms }")
            .route("app")
            .track("slow", &[slow.addr()], 1.0)
            .track("broken", &[broken.addr()], 0.0)
            .header_rule("x-broken", "1", "broken"),
    )
    .await;
    let c = Client::http1();
    let r = c.get(&url(&p, "/"), &[]).await.unwrap();
    assert_eq!(r.status, 504);
    assert!(r.body.starts_with("upstream timeout"), "{}", r.body);
    let r = c.get(&url(&p, "/"), &[("x-broken", "1")]).await.unwrap();
    assert_eq!(r.status, 502);
    assert!(r.body.starts_with("upstream reset"), "{}", r.body);
    let slow_stats = track_stats(&p, "app", "slow").await;
    assert_eq!(slow_stats["upstreamErrors"]["timeout"], 1);
    assert_eq!(slow_stats["errors"], 1);
    let latency = slow_stats["latencyMs"]["max"].as_f64().unwrap();
    assert!(
        latency >= 200.0,
        "a timed-out request is measured to its timeout: {latency}"
    );
    let broken_stats = track_stats(&p, "app", "broken").await;
    assert_eq!(broken_stats["upstreamErrors"]["reset"], 1);
    assert_eq!(broken_stats["statusClasses"]["5xx"], 1);
    slow.set_behaviour(Behaviour::Answer);
}

#[tokio::test]
async fn the_timeout_holds_for_every_request_of_a_keep_alive_connection() {
    // Requests on one connection share a re-armed timer: each gets the whole timeout, whether
    // the one before answered in time or timed out.
    let upstream = MockUpstream::start("stable").await;
    let p = start_proxy(Table::new().setting("timeouts: { request: 200ms }").route("app").track(
        "stable",
        &[upstream.addr()],
        1.0,
    ))
    .await;
    let c = Client::http1();
    for (behaviour, status) in [
        (Behaviour::Answer, 200),
        (Behaviour::Hang, 504),
        (Behaviour::Answer, 200),
        (Behaviour::Hang, 504),
        (Behaviour::Answer, 200),
    ] {
        upstream.set_behaviour(behaviour);
        let r = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!(r.status, status, "{}", r.body);
    }
    let s = track_stats(&p, "app", "stable").await;
    assert_eq!(
        (s["requests"].as_u64(), s["upstreamErrors"]["timeout"].as_u64()),
        (Some(5), Some(2))
    );
}

#[tokio::test]
async fn stats_windows_are_validated() {
    let stable = MockUpstream::start("stable").await;
    let p = start_proxy(Table::new().route("app").track("stable", &[stable.addr()], 1.0)).await;
    let c = Client::http1();
    for (bad, path) in [
        ("/stats?window=0s", "window"),
        ("/stats?window=301s", "window"),
        ("/stats?window=soon", "window"),
        ("/stats?frame=1s", "frame=1s"),
        ("/stats?since=soon", "since"),
        ("/stats?since=-1", "since"),
        ("/stats?since=1.5e12", "since"),
        ("/stats?window=10s&since=", "since"),
    ] {
        let r = c.get(&admin_url(&p, bad), &[]).await.unwrap();
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["errors"][0]["path"], path, "{bad}");
        assert!(v["errors"][0]["message"].is_string(), "{bad}");
    }
    let r = c.get(&admin_url(&p, "/stats?since=soon"), &[]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v["errors"][0]["message"],
        "\"soon\" is not a time in whole milliseconds since the Unix epoch; give one such as 1767225600000."
    );
    let s = admin_json(&p, "/stats?window=5m").await;
    assert_eq!(s["windowSeconds"], 300);
    assert_eq!(s["routes"]["app"]["tracks"]["stable"]["requests"], 0);
}

#[tokio::test]
async fn since_leaves_out_what_was_served_before_it_and_totals_keep_it() {
    let stable = MockUpstream::start("stable").await;
    let p = start_proxy(Table::new().route("app").track("stable", &[stable.addr()], 1.0)).await;
    let c = Client::http1();
    for _ in 0..5 {
        assert_eq!(c.get(&url(&p, "/"), &[]).await.unwrap().status, 200);
    }
    // Requests are recorded when their bodies end: once the stats show all five, every one was
    // recorded before `since` is read. 1 ms on, so that the clock's cut to whole ms cannot put
    // `since` before the last of them.
    assert_eventually!(track_stats(&p, "app", "stable").await["requests"] == 5);
    let since = unix_ms() + 1;
    let stats = stats_document(&p, &format!("window=300s&since={since}")).await;
    let after = unix_ms();
    let s = stats.track_stats("app", "stable").unwrap();
    let latencies = decode_histogram(&s.histogram).unwrap();
    assert_eq!((s.requests, s.errors, latencies.len()), (0, 0, 0));
    assert_eq!((s.total_requests, s.total_errors), (5, 0));
    // The window covers whole seconds after `since` only.
    assert!(
        stats.window_seconds <= after.saturating_sub(since).div_ceil(1000),
        "{} seconds between {since} and {after}",
        stats.window_seconds
    );

    // `since` in the future: nothing yet, over no time.
    let stats = stats_document(&p, &format!("since={}", since + 3_600_000)).await;
    let s = stats.track_stats("app", "stable").unwrap();
    assert_eq!((stats.window_seconds, s.requests, s.total_requests), (0, 0, 5));

    // What is served after `since` is counted once it lies in a whole second after it.
    let since_requests = || async {
        let stats = stats_document(&p, &format!("window=300s&since={since}")).await;
        stats.track_stats("app", "stable").unwrap().requests
    };
    assert_eventually!({
        assert_eq!(c.get(&url(&p, "/"), &[]).await.unwrap().status, 200);
        since_requests().await > 0
    });
    let stats = stats_document(&p, "window=300s").await;
    let s = stats.track_stats("app", "stable").unwrap();
    assert!(s.requests > 5 && s.total_requests == s.requests, "{s:?}");
}
