//! Traffic steering over the wire: weights, header/cookie/query rules, sticky users across
//! weight changes, what the upstream receives, HTTP/2 both ways.

mod common;

use std::collections::HashMap;

use common::{put_routes, start_proxy, url};
use switchyard_testkit::{Client, MockUpstream, Table};

async fn two_tracks() -> (MockUpstream, MockUpstream) {
    (MockUpstream::start("stable").await, MockUpstream::start("canary").await)
}

fn count(replies: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in replies {
        *m.entry(r.clone()).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn weights_split_traffic_and_the_track_header_names_the_choice() {
    let (stable, canary) = two_tracks().await;
    let p = start_proxy(
        Table::new()
            .route("checkout")
            .track("stable", &[stable.addr()], 80.0)
            .track("canary", &[canary.addr()], 20.0),
    )
    .await;
    let client = Client::http1();
    let mut tracks = Vec::new();
    for _ in 0..2000 {
        let r = client.get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
        // The response names the track, and the body comes from that track's upstream.
        assert_eq!(r.header("x-switchyard-track"), Some(r.body.as_str()));
        tracks.push(r.body);
    }
    let counts = count(&tracks);
    // 20% of 2000 = 400, σ ≈ 17.9: five σ either way.
    let c = counts.get("canary").copied().unwrap_or(0);
    assert!((310..=490).contains(&c), "{counts:?}");
    assert_eq!(stable.requests() + canary.requests(), 2000);
    // Keep-alive: far fewer upstream connections than requests.
    assert!(
        stable.connections() < 10,
        "{} connections for {} requests",
        stable.connections(),
        stable.requests()
    );
}

#[tokio::test]
async fn header_cookie_and_query_rules_win_over_weights() {
    let (stable, canary) = two_tracks().await;
    let p = start_proxy(
        Table::new()
            .route("app")
            .track("stable", &[stable.addr()], 100.0)
            .track("canary", &[canary.addr()], 0.0)
            .header_rule("x-canary", "true", "canary")
            .rule("cookies: [{ name: beta, value: \"1\" }]", "canary")
            .rule("queryParams: [{ name: preview, present: true }]", "canary"),
    )
    .await;
    let c = Client::http1();
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        let u = url(&p, path);
        async move { c.get(&u, headers).await.unwrap().body }
    };
    assert_eq!(get("/", &[]).await, "stable");
    assert_eq!(get("/", &[("x-canary", "true")]).await, "canary");
    assert_eq!(get("/", &[("x-canary", "false")]).await, "stable");
    assert_eq!(get("/", &[("cookie", "theme=dark; beta=1")]).await, "canary");
    assert_eq!(get("/?preview", &[]).await, "canary");
    assert_eq!(get("/?previewx=1", &[]).await, "stable");
}

#[tokio::test]
async fn sticky_users_stay_on_canary_while_it_grows() {
    let (stable, canary) = two_tracks().await;
    let table = |w: f64| {
        Table::new()
            .route("app")
            .track("stable", &[stable.addr()], 100.0 - w)
            .track("canary", &[canary.addr()], w)
            .sticky_header("x-user-id")
    };
    let p = start_proxy(table(5.0)).await;
    let c = Client::http1();
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut on_canary: Vec<bool> = Vec::new();
    for u in &users {
        let r = c.get(&url(&p, "/"), &[("x-user-id", u)]).await.unwrap();
        on_canary.push(r.body == "canary");
    }
    for w in [25.0, 50.0, 100.0] {
        let reply = put_routes(&p, &table(w).yaml(), &[("content-type", "application/yaml")]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let mut now = Vec::new();
        for u in &users {
            // Twice per user: the same answer both times.
            let a = c.get(&url(&p, "/"), &[("x-user-id", u)]).await.unwrap().body;
            let b = c.get(&url(&p, "/"), &[("x-user-id", u)]).await.unwrap().body;
            assert_eq!(a, b, "{u} flapped at {w}%");
            now.push(a == "canary");
        }
        for (i, (was, is)) in on_canary.iter().zip(&now).enumerate() {
            assert!(!was || *is, "user-{i} left canary when it grew to {w}%");
        }
        let share = now.iter().filter(|x| **x).count() as f64 / users.len() as f64;
        assert!((share - w / 100.0).abs() < 0.1, "{share} at {w}%");
        on_canary = now;
    }
}

#[tokio::test]
async fn the_upstream_gets_forwarding_headers_and_no_hop_by_hop_ones() {
    let (stable, _) = two_tracks().await;
    let p = start_proxy(Table::new().route("app").track("stable", &[stable.addr()], 1.0)).await;
    let r = Client::http1()
        .get(
            &url(&p, "/a/b?c=d"),
            &[
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("x-end", "2"),
                ("x-forwarded-for", "192.0.2.9"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let seen = stable.seen().pop().unwrap();
    assert_eq!(seen.uri.path_and_query().unwrap().as_str(), "/a/b?c=d");
    let h = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(h("x-switchyard-track").as_deref(), Some("stable"));
    assert_eq!(h("x-forwarded-for").as_deref(), Some("192.0.2.9, 127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(h("x-end").as_deref(), Some("2"));
    assert_eq!(h("x-hop"), None);
    assert_eq!(h("connection"), None);
    assert_eq!(h("host").as_deref(), Some(p.listen[0].to_string().as_str()));
}

#[tokio::test]
async fn no_route_is_404_with_a_reason() {
    let (stable, _) = two_tracks().await;
    let p = start_proxy(
        Table::new()
            .route("api")
            .matching("pathPrefix: /api")
            .track("stable", &[stable.addr()], 1.0),
    )
    .await;
    let r = Client::http1().get(&url(&p, "/other"), &[]).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "no route matches this request\n");
    assert_eq!(stable.requests(), 0);
}

#[tokio::test]
async fn http2_downstream_and_h2c_upstream() {
    let (stable, canary) = two_tracks().await;
    let p = start_proxy(
        Table::new()
            .route("app")
            .track("stable", &[stable.addr()], 1.0)
            .track_with("canary", &[canary.addr()], 0.0, "protocol: h2c")
            .header_rule("x-canary", "true", "canary"),
    )
    .await;
    let h2 = Client::h2c();
    let r = h2.get(&url(&p, "/x"), &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "stable"));
    assert_eq!(stable.seen()[0].version, http::Version::HTTP_11);
    let r = Client::http1()
        .get(&url(&p, "/y"), &[("x-canary", "true")])
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_str()), (200, "canary"));
    assert_eq!(canary.seen()[0].version, http::Version::HTTP_2);
    // Over HTTP/2 the authority becomes the upstream request's Host.
    assert_eq!(
        stable.seen()[0].headers.get("host").unwrap().to_str().unwrap(),
        p.listen[0].to_string()
    );
}

#[tokio::test]
async fn the_track_header_can_be_renamed_or_turned_off() {
    let (stable, _) = two_tracks().await;
    for (setting, name) in [
        ("trackHeader: x-version", Some("x-version")),
        ("trackHeader: false", None),
    ] {
        let p = start_proxy(
            Table::new()
                .setting(setting)
                .route("app")
                .track("stable", &[stable.addr()], 1.0),
        )
        .await;
        let r = Client::http1().get(&url(&p, "/"), &[]).await.unwrap();
        assert_eq!(r.header("x-switchyard-track"), None);
        if let Some(n) = name {
            assert_eq!(r.header(n), Some("stable"));
        }
    }
}
