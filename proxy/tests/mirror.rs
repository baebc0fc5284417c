//! Shadow traffic over the wire: a route's mirror copies its requests to a track whose answers
//! no client sees, measured as that track's shadow series in `/stats` and `/metrics`.

mod common;

use common::{admin_json, metrics, start_proxy, url};
use serde_json::Value;
use switchyard_testkit::{Behaviour, Client, MockUpstream, Table, assert_eventually};

/// A route of `stable` (all the weight) and `canary` (none), mirroring as `mirror` says.
async fn mirrored(mirror: &str) -> (MockUpstream, MockUpstream, switchyard_proxy::Running) {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    // The shadow's answers differ from the primary's: a client that saw one would notice.
    canary.set_status(500);
    canary.set_body("answer of the shadow");
    let p = start_proxy(
        Table::new()
            .route("checkout")
            .track("stable", &[stable.addr()], 100.0)
            .track("canary", &[canary.addr()], 0.0)
            .mirror(mirror),
    )
    .await;
    (stable, canary, p)
}

async fn shadow(p: &switchyard_proxy::Running) -> Value {
    admin_json(p, "/stats?window=300s").await["routes"]["checkout"]["shadow"]["canary"].clone()
}

/// Sends `n` GETs and checks that every one got stable's answer.
async fn only_stable_answers(p: &switchyard_proxy::Running, n: usize) {
    let client = Client::http1();
    for i in 0..n {
        let r = client.get(&url(p, &format!("/item/{i}?q=1")), &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"), "request {i}");
        assert_eq!(r.header("x-switchyard-track"), Some("stable"));
    }
}

#[tokio::test]
async fn the_client_gets_only_the_primarys_answers_and_the_shadow_every_copy() {
    let (stable, canary, p) = mirrored("track: canary, percent: 100").await;
    only_stable_answers(&p, 200).await;
    assert_eq!(stable.requests(), 200);
    assert_eventually!(shadow(&p).await["requests"] == 200 && shadow(&p).await["inFlight"] == 0);
    assert_eq!(canary.requests(), 200, "percent 100: every request copied, once");
    let s = shadow(&p).await;
    assert_eq!(
        (s["errors"].as_u64(), s["statusClasses"]["5xx"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(
        (s["totalRequests"].as_u64(), s["dropped"].as_u64()),
        (Some(200), Some(0))
    );
    // The copies are the shadow's own series: the canary track itself took no request.
    let stats = admin_json(&p, "/stats?window=300s").await;
    let tracks = &stats["routes"]["checkout"]["tracks"];
    assert_eq!(
        (
            tracks["canary"]["requests"].as_u64(),
            tracks["stable"]["requests"].as_u64()
        ),
        (Some(0), Some(200))
    );
    assert!(stats["routes"]["checkout"]["shadow"].get("stable").is_none());

    // The copy is the primary's head: method, target and Host kept, marked as a shadow.
    let (primary, copy) = (&stable.seen()[7], &canary.seen()[7]);
    assert_eq!((&copy.method, copy.uri.path()), (&primary.method, primary.uri.path()));
    assert_eq!(copy.uri.query(), Some("q=1"));
    assert_eq!(copy.headers["host"], primary.headers["host"]);
    assert_eq!(copy.headers["x-forwarded-for"], primary.headers["x-forwarded-for"]);
    assert_eq!(copy.headers["x-request-id"], primary.headers["x-request-id"]);
    assert_eq!(copy.headers["x-switchyard-shadow"], "1");
    assert_eq!(copy.headers["x-switchyard-track"], "canary");
    assert!(primary.headers.get("x-switchyard-shadow").is_none());
    // A client cannot make a real request pass for a copy.
    let r = Client::http1()
        .get(&url(&p, "/spoof"), &[("x-switchyard-shadow", "1")])
        .await
        .unwrap();
    assert_eq!(r.body, "stable");
    let spoofed = stable.seen().pop().unwrap();
    assert_eq!(spoofed.uri.path(), "/spoof");
    assert!(
        spoofed.headers.get("x-switchyard-shadow").is_none(),
        "{:?}",
        spoofed.headers
    );
    assert_eventually!(shadow(&p).await["requests"] == 201);

    let text = metrics(&p).await;
    for line in [
        "switchyard_shadow_requests_total{class=\"5xx\",route=\"checkout\",track=\"canary\"} 201",
        "switchyard_shadow_request_duration_seconds_count{route=\"checkout\",track=\"canary\"} 201",
        "switchyard_shadow_dropped_total{route=\"checkout\",track=\"canary\"} 0",
        // The primary series are as they were.
        "switchyard_requests_total{class=\"2xx\",route=\"checkout\",track=\"stable\"} 201",
        "switchyard_requests_total{class=\"5xx\",route=\"checkout\",track=\"canary\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn the_shadow_gets_the_configured_share() {
    let (stable, canary, p) = mirrored("track: canary, percent: 25").await;
    only_stable_answers(&p, 2000).await;
    assert_eq!(stable.requests(), 2000);
    assert_eventually!(shadow(&p).await["inFlight"] == 0);
    let copied = canary.requests();
    assert_eq!(shadow(&p).await["requests"].as_u64(), Some(copied));
    // 25% of 2000 = 500, σ ≈ 19.4: five σ either way.
    assert!((403..=597).contains(&copied), "{copied} copies of 2000 requests");
}

#[tokio::test]
async fn a_hanging_shadow_changes_nothing_for_the_client_and_copies_past_the_bound_are_dropped() {
    let (stable, canary, p) = mirrored("track: canary, percent: 100, maxInFlight: 5").await;
    canary.set_behaviour(Behaviour::Hang);
    only_stable_answers(&p, 50).await;
    assert_eq!(stable.requests(), 50);
    assert_eventually!(canary.requests() == 5);
    let s = shadow(&p).await;
    assert_eq!(
        (s["inFlight"].as_u64(), s["dropped"].as_u64(), s["requests"].as_u64()),
        (Some(5), Some(45), Some(0))
    );
    let text = metrics(&p).await;
    let dropped = "switchyard_shadow_dropped_total{route=\"checkout\",track=\"canary\"} 45";
    assert!(text.lines().any(|l| l == dropped), "{dropped} not in\n{text}");

    // Released, the five copies end and are measured; the bound lets copies through again.
    canary.set_behaviour(Behaviour::Answer);
    assert_eventually!(shadow(&p).await["requests"] == 5 && shadow(&p).await["inFlight"] == 0);
    only_stable_answers(&p, 3).await;
    assert_eventually!(shadow(&p).await["requests"] == 8);
    assert_eq!(shadow(&p).await["dropped"].as_u64(), Some(45));
}

#[tokio::test]
async fn a_failing_shadow_changes_nothing_for_the_client_and_counts_against_the_shadow() {
    let (stable, canary, p) = mirrored("track: canary, percent: 100").await;
    canary.set_behaviour(Behaviour::Reset);
    only_stable_answers(&p, 40).await;
    assert_eq!(stable.requests(), 40);
    assert_eventually!(shadow(&p).await["requests"] == 40);
    let s = shadow(&p).await;
    assert_eq!(
        (s["errors"].as_u64(), s["upstreamErrors"]["reset"].as_u64()),
        (Some(40), Some(40))
    );
    let stats = admin_json(&p, "/stats?window=300s").await;
    assert_eq!(
        stats["routes"]["checkout"]["tracks"]["stable"]["errors"].as_u64(),
        Some(0)
    );
}

#[tokio::test]
async fn only_safe_methods_and_requests_without_a_body_are_copied() {
    let (stable, canary, p) = mirrored("track: canary, percent: 100").await;
    let client = Client::http1();
    for method in [
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::HEAD,
    ] {
        let r = client.send(method.clone(), &url(&p, "/"), &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{method}");
    }
    assert_eq!(stable.requests(), 4);
    assert_eventually!(shadow(&p).await["requests"] == 1 && shadow(&p).await["inFlight"] == 0);
    let copied: Vec<_> = canary.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(copied, [http::Method::HEAD], "only the HEAD is copied by default");

    let (stable, canary, p) = mirrored("track: canary, percent: 100, methods: [POST]").await;
    for body in ["", "a body is not copied"] {
        let r = client.send(http::Method::POST, &url(&p, "/"), &[], body).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"));
    }
    only_stable_answers(&p, 1).await;
    assert_eq!(stable.requests(), 3);
    assert_eventually!(shadow(&p).await["requests"] == 1 && shadow(&p).await["inFlight"] == 0);
    let seen = canary.seen();
    assert_eq!(
        (seen.len(), &seen[0].method, seen[0].body.len()),
        (1, &http::Method::POST, 0)
    );
    assert_eq!(stable.seen()[1].body, "a body is not copied");
}
