//! Request ids through the proxy: kept, generated, replaced or left alone as `requestId` says,
//! on the upstream request and (when asked) the response; trace context passed byte for byte.

mod common;

use common::{start_proxy, url};
use switchyard_testkit::{Client, MockUpstream, Table};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn table(upstream: &MockUpstream, setting: &str) -> Table {
    Table::new()
        .setting(setting)
        .route("web")
        .track("stable", &[upstream.addr()], 1.0)
}

fn is_uuid(id: &str) -> bool {
    id.len() == 36 && id.as_bytes()[14] == b'4' && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())
}

/// The id the upstream saw on its last request.
fn seen_id(upstream: &MockUpstream, header: &str) -> Option<String> {
    let seen = upstream.seen();
    let last = seen.last().expect("the upstream got the request");
    let mut ids = last.headers.get_all(header).iter();
    let id = ids.next().map(|v| v.to_str().unwrap().to_owned());
    assert!(ids.next().is_none(), "two ids reached the upstream");
    id
}

#[tokio::test]
async fn by_default_a_valid_id_is_kept_and_a_missing_or_invalid_one_generated() {
    let upstream = MockUpstream::start("stable").await;
    let p = start_proxy(table(&upstream, "")).await;
    let c = Client::http1();
    let r = c.get(&url(&p, "/"), &[("x-request-id", "client-7f3a")]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(seen_id(&upstream, "x-request-id").as_deref(), Some("client-7f3a"));
    // Not on the response unless asked.
    assert_eq!(r.header("x-request-id"), None);

    c.get(&url(&p, "/"), &[]).await.unwrap();
    let generated = seen_id(&upstream, "x-request-id").unwrap();
    assert!(is_uuid(&generated), "{generated}");
    c.get(&url(&p, "/"), &[]).await.unwrap();
    assert_ne!(seen_id(&upstream, "x-request-id").unwrap(), generated);

    for invalid in ["has space", &"x".repeat(129)] {
        c.get(&url(&p, "/"), &[("x-request-id", invalid)]).await.unwrap();
        let id = seen_id(&upstream, "x-request-id").unwrap();
        assert!(is_uuid(&id), "{invalid:?} became {id}");
    }
}

#[tokio::test]
async fn the_response_carries_the_id_the_upstream_got_when_asked() {
    let upstream = MockUpstream::start("stable").await;
    let p = start_proxy(table(
        &upstream,
        "requestId: { header: x-correlation-id, response: true }",
    ))
    .await;
    let c = Client::http1();
    let r = c.get(&url(&p, "/"), &[]).await.unwrap();
    let id = r.header("x-correlation-id").unwrap().to_owned();
    assert!(is_uuid(&id), "{id}");
    assert_eq!(seen_id(&upstream, "x-correlation-id").unwrap(), id);
    assert_eq!(seen_id(&upstream, "x-request-id"), None);
    let r = c.get(&url(&p, "/"), &[("x-correlation-id", "mine")]).await.unwrap();
    assert_eq!(r.header("x-correlation-id"), Some("mine"));

    // The proxy's own answers carry it too.
    upstream.set_behaviour(switchyard_testkit::Behaviour::Reset);
    let r = c.get(&url(&p, "/"), &[("x-correlation-id", "failing")]).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.header("x-correlation-id")),
        (502, Some("failing"))
    );
}

#[tokio::test]
async fn replace_overrides_the_clients_id_and_off_leaves_it_alone() {
    let upstream = MockUpstream::start("stable").await;
    let replace = start_proxy(table(&upstream, "requestId: { mode: replace }")).await;
    let c = Client::http1();
    c.get(&url(&replace, "/"), &[("x-request-id", "chosen-by-client")])
        .await
        .unwrap();
    let id = seen_id(&upstream, "x-request-id").unwrap();
    assert!(is_uuid(&id), "{id}");

    let off = start_proxy(table(&upstream, "requestId: { mode: off, response: true }")).await;
    let r = c.get(&url(&off, "/"), &[("x-request-id", "has space")]).await.unwrap();
    assert_eq!(seen_id(&upstream, "x-request-id").as_deref(), Some("has space"));
    assert_eq!(r.header("x-request-id"), None);
    c.get(&url(&off, "/"), &[]).await.unwrap();
    assert_eq!(seen_id(&upstream, "x-request-id"), None);
}

#[tokio::test]
async fn trace_context_passes_untouched_in_every_mode_and_over_http2() {
    let upstream = MockUpstream::start("stable").await;
    for (mode, client) in [
        ("keep", Client::http1()),
        ("replace", Client::http1()),
        ("off", Client::http1()),
        ("keep", Client::h2c()),
    ] {
        let p = start_proxy(table(&upstream, &format!("requestId: {{ mode: {mode} }}"))).await;
        let headers = [
            ("traceparent", TRACEPARENT),
            ("tracestate", TRACESTATE),
            ("tracestate", "vendor=x"),
        ];
        assert_eq!(client.get(&url(&p, "/"), &headers).await.unwrap().status, 200);
        let seen = upstream.seen();
        let last = &seen.last().unwrap().headers;
        assert_eq!(last["traceparent"], TRACEPARENT, "{mode}");
        let states: Vec<_> = last.get_all("tracestate").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(states, [TRACESTATE, "vendor=x"], "{mode}");
    }
}
