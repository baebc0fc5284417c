//! Outlier ejection and active health checks on a real proxy in front of mock upstreams: an
//! endpoint that fails is taken out of its track and its requests go to the track's others,
//! while everything it answered still counts against the track.

mod common;

use common::{admin_json, metrics, start_proxy, url};
use switchyard_proxy::Running;
use switchyard_testkit::{Client, MockUpstream, Table, assert_eventually};

/// The `/stats` entry of the `stable` track of route `app`.
async fn stable(p: &Running) -> serde_json::Value {
    admin_json(p, "/stats?window=300s").await["routes"]["app"]["tracks"]["stable"].clone()
}

/// The state of endpoint `i` of `stable` in `/stats` (`serving`, `ejected`, `unhealthy`).
async fn state(p: &Running, i: usize) -> String {
    stable(p).await["endpoints"][i]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The value of the `/metrics` series `name{endpoint, route="app", track="stable"}`.
async fn endpoint_metric(p: &Running, name: &str, endpoint: &str) -> Option<f64> {
    let series = format!("{name}{{endpoint=\"{endpoint}\",route=\"app\",track=\"stable\"}} ");
    let text = metrics(p).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.parse().expect("a number"))
}

#[tokio::test]
async fn an_endpoint_answering_503_is_ejected_and_its_503s_still_count_against_the_track() {
    let good = MockUpstream::start("good").await;
    let bad = MockUpstream::start("bad").await;
    bad.set_status(503);
    let p = start_proxy(Table::new().route("app").track_with(
        "stable",
        &[good.addr(), bad.addr()],
        1.0,
        "outlierDetection: { consecutive5xx: 3, baseEjectionTime: 5m, maxEjectedPercent: 50 }",
    ))
    .await;
    let c = Client::http1();
    assert_eq!(state(&p, 1).await, "serving");
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_healthy", &bad.addr()).await,
        Some(1.0)
    );

    // About half the requests reach the bad endpoint until its third 503 in a row ejects it.
    let mut sent = 0u64;
    assert_eventually!({
        c.get(&url(&p, "/"), &[]).await.unwrap();
        sent += 1;
        stable(&p).await["endpoints"][1]["ejections"] == 1
    });
    let answered_by_bad = bad.requests();
    assert!(answered_by_bad >= 3, "{answered_by_bad}");
    assert_eq!(state(&p, 1).await, "ejected");
    assert_eq!(state(&p, 0).await, "serving");

    let before = good.requests();
    for _ in 0..40 {
        let reply = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "good"));
    }
    assert_eq!(bad.requests(), answered_by_bad, "an ejected endpoint gets no request");
    assert_eq!(good.requests(), before + 40);

    // Every 503 the bad endpoint answered is the track's error: ejection hides nothing.
    assert_eventually!(stable(&p).await["requests"] == sent + 40);
    let stats = stable(&p).await;
    assert_eq!(stats["errors"], answered_by_bad);
    assert_eq!(stats["statusClasses"]["5xx"], answered_by_bad);
    assert_eq!(stats["endpoints"][0]["address"], good.addr());
    assert_eq!(stats["endpoints"][0]["ejections"], 0);

    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_ejections_total", &bad.addr()).await,
        Some(1.0)
    );
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_ejections_total", &good.addr()).await,
        Some(0.0)
    );
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_healthy", &bad.addr()).await,
        Some(0.0)
    );
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_healthy", &good.addr()).await,
        Some(1.0)
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_track_of_one_endpoint_keeps_it_whatever_it_answers() {
    let only = MockUpstream::start("only").await;
    only.set_status(503);
    let p = start_proxy(Table::new().route("app").track_with(
        "stable",
        &[only.addr()],
        1.0,
        "outlierDetection: { consecutive5xx: 1, maxEjectedPercent: 100 }",
    ))
    .await;
    let c = Client::http1();
    for _ in 0..10 {
        assert_eq!(c.get(&url(&p, "/"), &[]).await.unwrap().status, 503);
    }
    assert_eq!(only.requests(), 10);
    assert_eventually!(stable(&p).await["errors"] == 10);
    assert_eq!(state(&p, 0).await, "serving");
    assert_eq!(stable(&p).await["endpoints"][0]["ejections"], 0);
    p.shutdown().await;
}

#[tokio::test]
async fn an_endpoint_failing_its_health_check_gets_no_request_until_it_passes_again() {
    let good = MockUpstream::start("good").await;
    let flaky = MockUpstream::start("flaky").await;
    good.set_path_status("/healthz", 200);
    flaky.set_path_status("/healthz", 503);
    let p = start_proxy(Table::new().route("app").track_with(
        "stable",
        &[good.addr(), flaky.addr()],
        1.0,
        "healthCheck: { path: /healthz, interval: 50ms, timeout: 50ms, healthyThreshold: 2, unhealthyThreshold: 2 }",
    ))
    .await;
    let c = Client::http1();
    assert_eventually!(state(&p, 1).await == "unhealthy");
    assert_eq!(state(&p, 0).await, "serving", "{}", stable(&p).await["endpoints"]);
    let seen = flaky.seen();
    let check = seen.iter().find(|s| s.uri.path() == "/healthz").expect("a check");
    assert_eq!(check.headers["host"], flaky.addr().as_str());
    assert_eq!(check.headers["user-agent"], "switchyard-health-check");

    let (before, good_before) = (flaky.requests_besides("/healthz"), good.requests_besides("/healthz"));
    assert_eq!(before, 0);
    for _ in 0..30 {
        let reply = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "good"));
    }
    assert_eq!(
        flaky.requests_besides("/healthz"),
        0,
        "an unhealthy endpoint gets no request"
    );
    assert_eq!(good.requests_besides("/healthz"), good_before + 30);
    assert!(endpoint_metric(&p, "switchyard_endpoint_health_check_failures_total", &flaky.addr()).await >= Some(2.0));
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_healthy", &flaky.addr()).await,
        Some(0.0)
    );
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_health_check_failures_total", &good.addr()).await,
        Some(0.0)
    );
    // Health checks are not the track's requests.
    assert_eventually!(stable(&p).await["requests"] == 30);

    flaky.set_path_status("/healthz", 200);
    assert_eventually!(state(&p, 1).await == "serving");
    assert_eventually!({
        c.get(&url(&p, "/"), &[]).await.unwrap();
        flaky.requests_besides("/healthz") > 0
    });
    assert_eq!(
        endpoint_metric(&p, "switchyard_endpoint_healthy", &flaky.addr()).await,
        Some(1.0)
    );
    p.shutdown().await;
}

#[tokio::test]
async fn expected_statuses_say_which_answers_pass() {
    // A check endpoint that answers 401 to anyone without credentials, as many do: listed, it
    // passes; a 302, out of the list, fails.
    let locked = MockUpstream::start("locked").await;
    let moved = MockUpstream::start("moved").await;
    locked.set_path_status("/healthz", 401);
    moved.set_path_status("/healthz", 302);
    let p = start_proxy(Table::new().route("app").track_with(
        "stable",
        &[locked.addr(), moved.addr()],
        1.0,
        "healthCheck: { path: /healthz, interval: 50ms, timeout: 50ms, healthyThreshold: 1, unhealthyThreshold: 1, \
         expectedStatuses: [200, \"400-401\"] }",
    ))
    .await;
    assert_eventually!(state(&p, 1).await == "unhealthy");
    assert_eventually!(locked.seen().iter().filter(|s| s.uri.path() == "/healthz").count() >= 3);
    assert_eq!(state(&p, 0).await, "serving");
    assert_eq!(stable(&p).await["endpoints"][0]["healthCheckFailures"], 0);
    p.shutdown().await;
}

#[tokio::test]
async fn an_h2c_track_is_checked_over_http2_and_a_table_without_checks_lets_its_endpoints_serve() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let checked = |b_extra: &str| {
        Table::new()
            .route("app")
            .track_with("stable", &[a.addr(), b.addr()], 1.0, &format!("protocol: h2c{b_extra}"))
    };
    let p = start_proxy(checked(
        ", healthCheck: { path: /ready, interval: 50ms, timeout: 50ms, healthyThreshold: 1, unhealthyThreshold: 1 }",
    ))
    .await;
    assert_eventually!(b.seen().iter().filter(|s| s.uri.path() == "/ready").count() >= 3);
    assert!(
        b.seen()
            .iter()
            .filter(|s| s.uri.path() == "/ready")
            .all(|s| s.version == http::Version::HTTP_2)
    );
    assert_eq!(stable(&p).await["endpoints"][1]["healthCheckFailures"], 0);
    assert_eq!(state(&p, 1).await, "serving");
    b.set_path_status("/ready", 500);
    assert_eventually!(state(&p, 1).await == "unhealthy");

    // The next table has no checks: the endpoint serves again.
    let reply = common::put_routes(&p, &checked("").yaml(), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(stable(&p).await.get("endpoints").is_none(), "no health is kept");
    let c = Client::h2c();
    assert_eventually!({
        c.get(&url(&p, "/"), &[]).await.unwrap();
        b.requests_besides("/ready") > 0
    });
    p.shutdown().await;
}
