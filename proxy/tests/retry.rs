//! Retries (`retry:` of a route): what is sent again, to where, within which budget, and that
//! every attempt stays in its track's numbers, so that a retry never hides a candidate's errors.

mod common;

use common::{admin_json, metrics, start_yaml, track_stats, url};
use http::Method;
use switchyard_testkit::{Behaviour, Client, MockUpstream, assert_eventually, free_port};

/// A proxy on free ports with route `web` retrying as `retry` says, over track `canary`.
async fn proxy(retry: &str, endpoints: &[String], protocol: &str) -> switchyard_proxy::Running {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("{e:?}")).collect();
    start_yaml(&format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nroutes:\n  - name: web\n    retry: {retry}\n    tracks:\n      - {{ name: canary, weight: 1, protocol: {protocol}, endpoints: [{}] }}\n",
        endpoints.join(", ")
    ))
    .await
}

fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a count, found {v}"))
}

#[tokio::test]
async fn a_canary_answering_503_keeps_its_errors_when_the_retry_succeeds() {
    let failing = MockUpstream::start("failing").await;
    failing.set_status(503);
    let healthy = MockUpstream::start("healthy").await;
    let p = proxy(
        "{ attempts: 1, codes: [503], backoff: 1ms }",
        &[failing.addr(), healthy.addr()],
        "http1",
    )
    .await;
    let c = Client::http1();
    for _ in 0..40 {
        let r = c.get(&url(&p, "/"), &[]).await.unwrap();
        // The retry goes to the track's other endpoint.
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "healthy"));
    }
    let retried = failing.requests();
    assert!(
        retried > 0,
        "40 requests, none of which went first to the failing endpoint"
    );
    assert_eq!(healthy.requests(), 40);
    let stats = track_stats(&p, "web", "canary").await;
    assert_eq!(count(&stats["requests"]), 40 + retried, "{stats}");
    assert_eq!(count(&stats["errors"]), retried, "{stats}");
    let route = &admin_json(&p, "/stats").await["routes"]["web"];
    assert_eq!(
        route["retries"],
        serde_json::json!({ "sent": retried, "budgetExhausted": 0 })
    );
    let text = metrics(&p).await;
    assert!(
        text.contains(&format!("switchyard_retries_total{{route=\"web\"}} {retried}")),
        "{text}"
    );
}

#[tokio::test]
async fn retries_stop_at_attempts_and_the_client_gets_the_last_answer() {
    let failing = MockUpstream::start("failing").await;
    failing.set_status(503);
    let p = proxy("{ attempts: 2, backoff: 1ms }", &[failing.addr()], "http1").await;
    let r = Client::http1().get(&url(&p, "/"), &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(failing.requests(), 3, "one attempt and two retries");
    let stats = track_stats(&p, "web", "canary").await;
    assert_eq!((count(&stats["requests"]), count(&stats["errors"])), (3, 3), "{stats}");

    // A status that is not listed is answered as it is.
    failing.set_status(500);
    let r = Client::http1().get(&url(&p, "/"), &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), failing.requests()), (500, 4));
}

#[tokio::test]
async fn a_post_is_sent_again_only_when_it_reached_no_upstream() {
    let failing = MockUpstream::start("failing").await;
    failing.set_status(503);
    let p = proxy("{ attempts: 2, backoff: 1ms }", &[failing.addr()], "http1").await;
    let c = Client::http1();
    let r = c.send(Method::POST, &url(&p, "/"), &[], "").await.unwrap();
    assert_eq!(
        (r.status.as_u16(), failing.requests()),
        (503, 1),
        "a POST the upstream answered"
    );
    // Nor a request with a body, whatever its method: its body went with the first attempt.
    let r = c.send(Method::PUT, &url(&p, "/"), &[], "payload").await.unwrap();
    assert_eq!((r.status.as_u16(), failing.requests()), (503, 2));

    // Nothing listens at `dead`: nothing reached an upstream, so a POST is sent again.
    let dead = format!("127.0.0.1:{}", free_port());
    let healthy = MockUpstream::start("healthy").await;
    let p = proxy("{ attempts: 1, backoff: 1ms }", &[dead, healthy.addr()], "http1").await;
    for _ in 0..20 {
        let r = c.send(Method::POST, &url(&p, "/"), &[], "").await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "healthy"));
    }
    let stats = track_stats(&p, "web", "canary").await;
    let refused = count(&stats["upstreamErrors"]["connect"]);
    assert!(
        refused > 0,
        "20 requests, none of which went first to the dead endpoint"
    );
    assert_eq!(count(&stats["requests"]), 20 + refused, "{stats}");
}

#[tokio::test]
async fn the_budget_bounds_retries_and_counts_the_ones_it_refused() {
    let failing = MockUpstream::start("failing").await;
    failing.set_status(503);
    // No share of the traffic, and a floor of one retry per hour.
    let p = proxy(
        "{ attempts: 3, backoff: 1ms, budget: { percent: 0, interval: 1h, minRetryRate: { count: 1, interval: 1h } } }",
        &[failing.addr()],
        "http1",
    )
    .await;
    let c = Client::http1();
    assert_eq!(c.get(&url(&p, "/"), &[]).await.unwrap().status, 503);
    assert_eq!(failing.requests(), 2, "one retry, then the budget was spent");
    assert_eq!(c.get(&url(&p, "/"), &[]).await.unwrap().status, 503);
    assert_eq!(failing.requests(), 3);
    let route = &admin_json(&p, "/stats").await["routes"]["web"];
    assert_eq!(route["retries"], serde_json::json!({ "sent": 1, "budgetExhausted": 2 }));
    let text = metrics(&p).await;
    assert!(
        text.contains("switchyard_retry_budget_exhausted_total{route=\"web\"} 2"),
        "{text}"
    );
}

#[tokio::test]
async fn an_attempt_past_its_per_try_timeout_is_sent_to_the_next_endpoint() {
    let hung = MockUpstream::start("hung").await;
    hung.set_behaviour(Behaviour::Hang);
    let healthy = MockUpstream::start("healthy").await;
    let p = proxy(
        "{ attempts: 1, backoff: 1ms, perTryTimeout: 100ms }",
        &[hung.addr(), healthy.addr()],
        "http1",
    )
    .await;
    let c = Client::http1();
    for _ in 0..10 {
        let r = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "healthy"));
    }
    let stats = track_stats(&p, "web", "canary").await;
    let timeouts = count(&stats["upstreamErrors"]["timeout"]);
    assert_eq!(timeouts, hung.requests(), "{stats}");
    assert!(
        timeouts > 0,
        "10 requests, none of which went first to the hung endpoint"
    );
    assert_eq!(count(&stats["errors"]), timeouts, "{stats}");
}

#[tokio::test]
async fn an_h2c_retry_names_its_new_endpoint() {
    let dead = format!("127.0.0.1:{}", free_port());
    let healthy = MockUpstream::start("healthy").await;
    let p = proxy("{ attempts: 1, backoff: 1ms }", &[dead, healthy.addr()], "h2c").await;
    let c = Client::http1();
    for _ in 0..20 {
        let r = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "healthy"), "{}", r.body);
    }
    for seen in healthy.seen() {
        assert_eq!(seen.version, http::Version::HTTP_2);
    }
    let stats = track_stats(&p, "web", "canary").await;
    assert!(count(&stats["upstreamErrors"]["connect"]) > 0, "{stats}");
}

#[tokio::test]
async fn a_retry_goes_to_a_serving_endpoint_other_than_the_one_that_failed() {
    // `failing` answers 503 and passes its checks; `unhealthy` would answer 200, but fails its
    // checks; `healthy` does both. Retries from `failing` may only go to `healthy`.
    let failing = MockUpstream::start("failing").await;
    failing.set_status(503);
    failing.set_path_status("/healthz", 200);
    let unhealthy = MockUpstream::start("unhealthy").await;
    unhealthy.set_path_status("/healthz", 503);
    let healthy = MockUpstream::start("healthy").await;
    healthy.set_path_status("/healthz", 200);
    let p = start_yaml(&format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nroutes:\n  - name: web\n    retry: {{ attempts: 1, codes: [503], backoff: 1ms }}\n    tracks:\n      - name: canary\n        weight: 1\n        endpoints: [{:?}, {:?}, {:?}]\n        healthCheck: {{ path: /healthz, interval: 50ms, timeout: 50ms, unhealthyThreshold: 1 }}\n",
        failing.addr(),
        unhealthy.addr(),
        healthy.addr()
    ))
    .await;
    assert_eventually!(
        admin_json(&p, "/stats").await["routes"]["web"]["tracks"]["canary"]["endpoints"][1]["state"] == "unhealthy"
    );
    let c = Client::http1();
    for i in 0..60 {
        let r = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "healthy"), "request {i}");
    }
    let retried = failing.requests_besides("/healthz");
    assert!(
        retried > 0,
        "60 requests, none of which went first to the failing endpoint"
    );
    assert_eq!(
        unhealthy.requests_besides("/healthz"),
        0,
        "no retry to an endpoint that is out"
    );
    assert_eq!(healthy.requests_besides("/healthz"), 60);
    let stats = track_stats(&p, "web", "canary").await;
    assert_eq!(count(&stats["requests"]), 60 + retried as u64, "{stats}");
}
