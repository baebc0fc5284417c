//! Endpoints written with a host name, through the real proxy: `localhost:PORT` reaches its
//! upstream by the address the resolver stage found (the upstream clients never look a name up
//! themselves), over HTTP/1.1 and h2c; a name that never resolves fails its track's requests
//! with 502, counted against the track; `/stats` and `/metrics` report both names.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{admin_json, metrics, start_proxy, track_stats, url};
use switchyard_config::stats::StatsDocument;
use switchyard_testkit::openapi::{OpenApi, assert_object_matches};
use switchyard_testkit::{Client, MockUpstream, Table, assert_eventually};

/// `/stats` read with the controller's type.
async fn stats(p: &switchyard_proxy::Running) -> StatsDocument {
    serde_json::from_value(admin_json(p, "/stats").await).expect("a stats document")
}

/// `localhost:PORT` for a mock upstream on `127.0.0.1:PORT`.
fn by_name(upstream: &MockUpstream) -> String {
    let port = upstream.addr().rsplit_once(':').unwrap().1.to_owned();
    format!("localhost:{port}")
}

#[tokio::test]
async fn a_named_endpoint_is_reached_by_its_address_and_reported() {
    let stable = MockUpstream::start("stable").await;
    let grpc = MockUpstream::start("h2").await;
    let p = start_proxy(
        Table::new()
            // .invalid never resolves (RFC 6761); the timeout bounds the wait where a lookup hangs.
            .setting("dns: { refresh: 1s, timeout: 2s }")
            .route("app")
            .track("stable", &[by_name(&stable)], 1.0)
            .track_with("h2", &[by_name(&grpc)], 0.0, "protocol: h2c")
            .track("gone", &["nowhere.invalid:8080".to_owned()], 0.0)
            .header_rule("x-track", "h2", "h2")
            .header_rule("x-track", "gone", "gone"),
    )
    .await;

    // The proxy looked the names up before serving: the first request goes through.
    let c = Client::http1();
    for _ in 0..5 {
        let reply = c.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!(
            (reply.status.as_u16(), reply.header("x-upstream")),
            (200, Some("stable"))
        );
    }
    assert_eq!(stable.requests(), 5);
    // What decided them: the snapshot's endpoint is the address, not the name.
    let snapshot = p.publisher.load_full();
    let track = snapshot.table.route("app").unwrap().track("stable").unwrap();
    let addresses: Vec<&str> = track.endpoints().iter().map(|e| e.address()).collect();
    assert_eq!(addresses, [stable.addr()]);
    let reply = c.get(&url(&p, "/"), &[("x-track", "h2")]).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.header("x-upstream")), (200, Some("h2")));
    assert_eq!(grpc.requests(), 1);

    // Never resolved: one endpoint as written, which is not looked up on the request path.
    let reply = c.get(&url(&p, "/"), &[("x-track", "gone")]).await.unwrap();
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eventually!(track_stats(&p, "app", "gone").await["upstreamErrors"]["connect"] == 1);
    assert_eventually!(track_stats(&p, "app", "stable").await["requests"] == 5);

    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let doc = stats(&p).await;
    let status = &doc.dns["localhost"];
    assert_eq!(status.addresses, [localhost]);
    assert!(status.resolved_at.is_some() && status.error.is_none(), "{status:?}");
    let gone = &doc.dns["nowhere.invalid"];
    assert!(gone.addresses.is_empty() && gone.resolved_at.is_none(), "{gone:?}");
    assert!(gone.error.is_some() && gone.failing_since.is_some(), "{gone:?}");
    assert_eq!(doc.dns.len(), 2, "{:?}", doc.dns);
    let api = OpenApi::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin-api.yaml"));
    let raw = admin_json(&p, "/stats").await;
    assert_object_matches(&raw, api.schema("Stats"), "/stats");
    for name in ["localhost", "nowhere.invalid"] {
        assert_object_matches(&raw["dns"][name], api.schema("NameStatus"), name);
    }

    // Every refresh looks the failing name up again, and counts it.
    assert_eventually!(
        stats(&p).await.dns["nowhere.invalid"].failures >= 2,
        Duration::from_secs(15)
    );
    let text = metrics(&p).await;
    assert!(
        text.contains("switchyard_dns_addresses{name=\"localhost\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_dns_addresses{name=\"nowhere.invalid\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_dns_failures_total{name=\"localhost\"} 0\n"),
        "{text}"
    );
    assert!(
        !text.contains("switchyard_dns_failures_total{name=\"nowhere.invalid\"} 0\n"),
        "{text}"
    );

    // The table as written is what the proxy serves back, at its version.
    let routes = admin_json(&p, "/routes").await;
    assert_eq!(routes["version"], 1);
    assert_eq!(
        routes["routes"][0]["tracks"][0]["endpoints"][0]["address"],
        by_name(&stable).as_str()
    );
    assert!(p.shutdown().await);
}
