//! The admin API: publishing tables (validation, If-Match, tokens), the running table kept on
//! every refusal, health, and the OpenAPI description kept true.

mod common;

use common::{admin_json, admin_url, put_routes, start_proxy, start_yaml, url};
use switchyard_testkit::openapi::{OpenApi, assert_object_matches};
use switchyard_testkit::{Client, MockUpstream, Table};

#[tokio::test]
async fn put_publishes_a_new_version_and_get_serves_it_back() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let p = start_proxy(Table::new().route("app").track("a", &[a.addr()], 1.0)).await;
    let routes = admin_json(&p, "/routes").await;
    assert_eq!(routes["version"], 1);
    assert_eq!(routes["routes"][0]["name"], "app");

    let next = Table::new().route("app").track("b", &[b.addr()], 1.0).yaml();
    let r = put_routes(
        &p,
        &next,
        &[("content-type", "application/yaml"), ("if-match", "\"1\"")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.trim()), (200, "{\"version\":2}"));
    assert_eq!(Client::http1().get(&url(&p, "/"), &[]).await.unwrap().body, "b");

    // What GET serves can be PUT back as it is (JSON, with its version field).
    let served = Client::http1().get(&admin_url(&p, "/routes"), &[]).await.unwrap();
    assert_eq!(served.header("etag"), Some("\"2\""));
    let r = put_routes(&p, &served.body, &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(admin_json(&p, "/routes").await["version"], 3);
}

#[tokio::test]
async fn invalid_tables_and_stale_versions_are_refused_and_change_nothing() {
    let a = MockUpstream::start("a").await;
    let p = start_proxy(Table::new().route("app").track("a", &[a.addr()], 1.0)).await;
    let before = admin_json(&p, "/routes").await;

    let invalid = "routes:\n  - name: app\n    tracks:\n      - { name: a, endpoints: [], weight: 0 }\n    rules: [{ track: nope }]\n    tiemout: 5s\n";
    let r = put_routes(&p, invalid, &[]).await;
    assert_eq!(r.status, 400);
    let errors: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let paths: Vec<&str> = errors["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "routes[0].tiemout",
            "routes[0].tracks[0].endpoints",
            "routes[0].tracks[0].weight",
            "routes[0].rules[0].track"
        ],
        "{}",
        r.body
    );

    let r = put_routes(&p, "{ not json", &[("content-type", "application/json")]).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("invalid JSON"), "{}", r.body);

    let valid = Table::new().route("app").track("a", &[a.addr()], 2.0).yaml();
    let r = put_routes(&p, &valid, &[("if-match", "7")]).await;
    assert_eq!(r.status, 409);
    let conflict: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(conflict["version"], 1);
    let r = put_routes(&p, &valid, &[("if-match", "seven")]).await;
    assert_eq!(r.status, 400);

    assert_eq!(admin_json(&p, "/routes").await, before);
    assert_eq!(Client::http1().get(&url(&p, "/"), &[]).await.unwrap().status, 200);
}

#[tokio::test]
async fn a_configured_token_guards_writes_only() {
    let a = MockUpstream::start("a").await;
    let dir = std::env::temp_dir().join(format!("switchyard-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let yaml = Table::new()
        .setting("listen: 127.0.0.1:0")
        .setting(&format!(
            "admin: {{ listen: 127.0.0.1:0, tokenFile: {} }}",
            token_file.display()
        ))
        .route("app")
        .track("a", &[a.addr()], 1.0)
        .yaml();
    let p = start_yaml(&yaml).await;
    let body = Table::new().route("app").track("a", &[a.addr()], 3.0).yaml();
    let r = put_routes(&p, &body, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = put_routes(&p, &body, &[("authorization", "Bearer wrong")]).await;
    assert_eq!(r.status, 401);
    let r = put_routes(&p, &body, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Reads need no token.
    assert_eq!(admin_json(&p, "/routes").await["version"], 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn health_and_unknown_endpoints() {
    let a = MockUpstream::start("a").await;
    let p = start_proxy(Table::new().route("app").track("a", &[a.addr()], 1.0)).await;
    let c = Client::http1();
    assert_eq!(c.get(&admin_url(&p, "/healthz"), &[]).await.unwrap().status, 200);
    assert_eq!(c.get(&admin_url(&p, "/readyz"), &[]).await.unwrap().status, 200);
    assert_eq!(c.get(&admin_url(&p, "/nope"), &[]).await.unwrap().status, 404);
    let r = c
        .send(http::Method::DELETE, &admin_url(&p, "/routes"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT"));
}

/// Every operation the OpenAPI description lists is served, every one served is listed, and
/// `/stats` carries exactly the fields the description requires.
#[tokio::test]
async fn the_openapi_description_matches_the_api() {
    let api = OpenApi::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin-api.yaml"));
    let doc = api.document();
    let a = MockUpstream::start("a").await;
    let p = start_proxy(Table::new().route("app").track("a", &[a.addr()], 1.0)).await;
    let c = Client::http1();
    c.get(&url(&p, "/"), &[]).await.unwrap();

    let documented = api.operations();
    let served = [
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "GET /routes",
        "GET /stats",
        "PUT /routes",
    ];
    assert_eq!(documented, served);
    for op in served {
        let (method, path) = op.split_once(' ').unwrap();
        let status = if method == "GET" {
            c.get(&admin_url(&p, path), &[]).await.unwrap().status
        } else {
            put_routes(&p, &Table::new().route("app").track("a", &[a.addr()], 1.0).yaml(), &[])
                .await
                .status
        };
        assert_eq!(status, 200, "{op}");
        let documented_ok = &doc["paths"][path][method.to_lowercase()]["responses"]["200"];
        assert!(documented_ok.is_object(), "{op} documents 200");
    }

    // Its query parameters are the ones /stats takes.
    let parameters: Vec<&str> = doc["paths"]["/stats"]["get"]["parameters"]
        .as_array()
        .expect("/stats lists parameters")
        .iter()
        .map(|p| p["name"].as_str().expect("a parameter has a name"))
        .collect();
    assert_eq!(parameters, ["window", "since"]);

    // The /stats body against the schema's required fields, level by level.
    let stats = admin_json(&p, "/stats").await;
    assert_object_matches(&stats, api.schema("Stats"), "Stats");
    let route = &api.schema("Stats")["properties"]["routes"]["additionalProperties"];
    assert_object_matches(&stats["routes"]["app"], route, "Stats.routes.app");
    assert_object_matches(
        &stats["routes"]["app"]["clientErrors"],
        &route["properties"]["clientErrors"],
        "clientErrors",
    );
    let track = &stats["routes"]["app"]["tracks"]["a"];
    assert_object_matches(track, api.schema("TrackStats"), "TrackStats");
    for nested in ["statusClasses", "upstreamErrors", "latencyMs"] {
        assert_object_matches(&track[nested], &api.schema("TrackStats")["properties"][nested], nested);
    }
    assert_object_matches(
        &admin_json(&p, "/routes").await,
        api.schema("RoutesDocument"),
        "RoutesDocument",
    );
}

/// `instance` names the process: the same in `/routes` and `/stats`, another for another
/// proxy (as for a restarted one).
#[tokio::test]
async fn the_instance_is_the_process() {
    let a = MockUpstream::start("a").await;
    let table = || Table::new().route("app").track("a", &[a.addr()], 1.0);
    let (p, q) = (start_proxy(table()).await, start_proxy(table()).await);
    for proxy in [&p, &q] {
        let instance = proxy.instance.as_str();
        assert_eq!(instance.len(), 16, "{instance}");
        assert!(instance.bytes().all(|b| b.is_ascii_hexdigit()), "{instance}");
        assert_eq!(admin_json(proxy, "/routes").await["instance"], instance);
        assert_eq!(admin_json(proxy, "/stats").await["instance"], instance);
    }
    assert_ne!(p.instance, q.instance);
}
