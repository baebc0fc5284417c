//! Shadow traffic over the wire: a route's mirror copies its requests to a track whose answers
//! no client sees, measured as that track's shadow series in `/stats` and `/metrics`.

mod common;

use common::{admin_json, metrics, start_proxy, url};
use http::Method;
use serde_json::Value;
use switchyard_testkit::{Behaviour, Client, MockUpstream, Table, assert_eventually};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
        "switchyard_shadow_dropped_total{reason=\"max_in_flight\",route=\"checkout\",track=\"canary\"} 0",
        "switchyard_shadow_dropped_total{reason=\"body_too_large\",route=\"checkout\",track=\"canary\"} 0",
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
    let dropped = "switchyard_shadow_dropped_total{reason=\"max_in_flight\",route=\"checkout\",track=\"canary\"} 45";
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
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::HEAD] {
        let r = client.send(method.clone(), &url(&p, "/"), &[], "").await.unwrap();
        assert_eq!(r.status, 200, "{method}");
    }
    assert_eq!(stable.requests(), 4);
    assert_eventually!(shadow(&p).await["requests"] == 1 && shadow(&p).await["inFlight"] == 0);
    let copied: Vec<_> = canary.seen().iter().map(|s| s.method.clone()).collect();
    assert_eq!(copied, [Method::HEAD], "only the HEAD is copied by default");

    let (stable, canary, p) = mirrored("track: canary, percent: 100, methods: [POST]").await;
    for body in ["", "a body is not copied"] {
        let r = client.send(Method::POST, &url(&p, "/"), &[], body).await.unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"));
    }
    only_stable_answers(&p, 1).await;
    assert_eq!(stable.requests(), 3);
    assert_eventually!(shadow(&p).await["requests"] == 1 && shadow(&p).await["inFlight"] == 0);
    let seen = canary.seen();
    assert_eq!((seen.len(), &seen[0].method, seen[0].body.len()), (1, &Method::POST, 0));
    assert_eq!(stable.seen()[1].body, "a body is not copied");
}

/// Sends `POST /upload` with a chunked body of `chunks`, each written on its own, and returns
/// the whole answer as text (the connection closes after it).
async fn post_chunked(p: &switchyard_proxy::Running, chunks: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for chunk in chunks {
        let mut piece = format!("{:x}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(chunk);
        piece.extend_from_slice(b"\r\n");
        stream.write_all(&piece).await.unwrap();
        stream.flush().await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_body_within_the_bound_is_copied_with_the_same_bytes() {
    let (stable, canary, p) =
        mirrored("track: canary, percent: 100, methods: [POST, PUT], body: { maxBytes: 1024 }").await;
    let client = Client::http1();
    // Every byte value, so that nothing on the way may treat the body as text.
    let binary: Vec<u8> = (0..=255u8).cycle().take(1024).collect();
    let r = client
        .send(
            Method::POST,
            &url(&p, "/orders?id=7"),
            &[("content-type", "application/octet-stream")],
            binary.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (200, "stable"),
        "the bound itself fits"
    );
    let r = client
        .send(Method::PUT, &url(&p, "/orders/7"), &[], "small")
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"));
    let answer = post_chunked(&p, &[b"chunked ", b"in three ", b"pieces"]).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("stable"),
        "{answer}"
    );
    assert_eventually!(shadow(&p).await["requests"] == 3 && shadow(&p).await["inFlight"] == 0);

    let (primary, copies) = (stable.seen(), canary.seen());
    assert_eq!(copies.len(), 3);
    for (i, body) in [&binary[..], b"small", b"chunked in three pieces"]
        .into_iter()
        .enumerate()
    {
        let (p, c) = (&primary[i], &copies[i]);
        assert_eq!((&p.body[..], &c.body[..]), (body, body), "request {i}");
        assert_eq!((&c.method, c.uri.path()), (&p.method, p.uri.path()));
        assert_eq!(c.headers["content-length"], body.len().to_string().as_str());
        assert!(c.headers.get("transfer-encoding").is_none(), "{:?}", c.headers);
        assert_eq!(c.headers["x-switchyard-shadow"], "1");
    }
    assert_eq!(copies[0].uri.query(), Some("id=7"));
    assert_eq!(copies[0].headers["content-type"], "application/octet-stream");
    let s = shadow(&p).await;
    assert_eq!((s["bodyTooLarge"].as_u64(), s["dropped"].as_u64()), (Some(0), Some(0)));
}

#[tokio::test]
async fn a_body_over_the_bound_is_not_copied_and_is_counted_and_the_client_sees_no_difference() {
    let (stable, canary, p) =
        mirrored("track: canary, percent: 100, methods: [GET, POST], body: { maxBytes: 16 }").await;
    let client = Client::http1();
    let long = "seventeen bytes!!";
    // Over the bound by its Content-Length: not copied, not even started.
    let r = client.send(Method::POST, &url(&p, "/"), &[], long).await.unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"));
    // Chunked, past the bound only in its second chunk.
    let answer = post_chunked(&p, &[b"ten bytes.", b"and seven"]).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("stable"),
        "{answer}"
    );
    // What fits still goes: a bodyless GET and a body of 16.
    only_stable_answers(&p, 1).await;
    let r = client
        .send(Method::POST, &url(&p, "/"), &[], "sixteen bytes!!!")
        .await
        .unwrap();
    assert_eq!(r.body, "stable");
    assert_eventually!(shadow(&p).await["requests"] == 2 && shadow(&p).await["inFlight"] == 0);

    // The primary got every body whole.
    let bodies: Vec<_> = stable.seen().iter().map(|s| s.body.clone()).collect();
    assert_eq!(
        bodies,
        [long.as_bytes(), b"ten bytes.and seven", b"", b"sixteen bytes!!!"]
    );
    let copied: Vec<_> = canary
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.body.clone()))
        .collect();
    assert_eq!(
        copied,
        [(Method::GET, "".into()), (Method::POST, "sixteen bytes!!!".into())]
    );
    let s = shadow(&p).await;
    assert_eq!((s["bodyTooLarge"].as_u64(), s["dropped"].as_u64()), (Some(2), Some(0)));
    let text = metrics(&p).await;
    for line in [
        "switchyard_shadow_dropped_total{reason=\"body_too_large\",route=\"checkout\",track=\"canary\"} 2",
        "switchyard_shadow_dropped_total{reason=\"max_in_flight\",route=\"checkout\",track=\"canary\"} 0",
        "switchyard_requests_total{class=\"2xx\",route=\"checkout\",track=\"stable\"} 4",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn a_hanging_shadow_holds_its_place_and_the_client_still_gets_its_answer_at_once() {
    let (stable, canary, p) =
        mirrored("track: canary, percent: 100, methods: [POST], maxInFlight: 2, body: { maxBytes: 64 }").await;
    canary.set_behaviour(Behaviour::Hang);
    let client = Client::http1();
    for i in 0..6 {
        let r = client
            .send(Method::POST, &url(&p, "/"), &[], format!("body {i}"))
            .await
            .unwrap();
        assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"), "request {i}");
    }
    assert_eq!(stable.requests(), 6);
    assert_eventually!(canary.requests() == 2);
    let s = shadow(&p).await;
    assert_eq!((s["inFlight"].as_u64(), s["dropped"].as_u64()), (Some(2), Some(4)));
    canary.set_behaviour(Behaviour::Answer);
    assert_eventually!(shadow(&p).await["requests"] == 2 && shadow(&p).await["inFlight"] == 0);
    let copied: Vec<_> = canary.seen().iter().map(|s| s.body.clone()).collect();
    assert_eq!(copied, ["body 0", "body 1"]);
}

#[tokio::test]
async fn a_match_copies_only_the_requests_it_takes() {
    let (stable, canary, p) = mirrored("track: canary, percent: 100, match: [{ pathPrefix: /api }, { headers: [{ name: x-shadow-me, present: true }] }]").await;
    let client = Client::http1();
    for (path, headers) in [
        ("/api/items", &[][..]),
        ("/static/app.js", &[][..]),
        ("/apiary", &[][..]),
        ("/cart", &[("x-shadow-me", "1")][..]),
    ] {
        let r = client.get(&url(&p, path), headers).await.unwrap();
        assert_eq!(r.body, "stable", "{path}");
    }
    assert_eq!(stable.requests(), 4);
    assert_eventually!(shadow(&p).await["requests"] == 2 && shadow(&p).await["inFlight"] == 0);
    let copied: Vec<_> = canary.seen().iter().map(|s| s.uri.path().to_owned()).collect();
    assert_eq!(copied, ["/api/items", "/cart"]);
}

#[tokio::test]
async fn copies_go_only_to_the_mirror_tracks_serving_endpoints() {
    let stable = MockUpstream::start("stable").await;
    let up = MockUpstream::start("canary up").await;
    up.set_path_status("/healthz", 200);
    let down = MockUpstream::start("canary down").await;
    down.set_path_status("/healthz", 503);
    let p = start_proxy(
        Table::new()
            .route("checkout")
            .track("stable", &[stable.addr()], 100.0)
            .track_with(
                "canary",
                &[up.addr(), down.addr()],
                0.0,
                "healthCheck: { path: /healthz, interval: 50ms, timeout: 50ms, unhealthyThreshold: 1 }",
            )
            .mirror("track: canary, percent: 100"),
    )
    .await;
    assert_eventually!(
        admin_json(&p, "/stats").await["routes"]["checkout"]["tracks"]["canary"]["endpoints"][1]["state"]
            == "unhealthy"
    );
    only_stable_answers(&p, 40).await;
    assert_eventually!(shadow(&p).await["requests"] == 40 && shadow(&p).await["inFlight"] == 0);
    assert_eq!(
        down.requests_besides("/healthz"),
        0,
        "no copy to an endpoint that is out"
    );
    assert_eq!(up.requests_besides("/healthz"), 40);
}
