//! Shared by the proxy's integration tests: start a proxy in-process on free loopback ports and
//! talk to it and to its admin API.

#![allow(dead_code)] // each test file uses its own subset

use switchyard_config::{Format, load_config};
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{Client, Reply, Table};

/// Starts a proxy on free ports serving `table` (its listen/admin settings are added).
pub async fn start_proxy(table: Table) -> Running {
    start_yaml(&table.on_free_ports().yaml()).await
}

/// Starts a proxy from a whole YAML configuration.
pub async fn start_yaml(yaml: &str) -> Running {
    let loaded = load_config(yaml, Format::Yaml, 1).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    start(loaded, Options::default()).await.expect("proxy starts")
}

/// Starts a proxy from a whole YAML configuration, or says why it cannot (for tables of cases,
/// where one configuration that does not load is one failing case).
pub async fn try_start_yaml(yaml: &str) -> Result<Running, String> {
    let loaded = load_config(yaml, Format::Yaml, 1).map_err(|e| e.to_string())?;
    start(loaded, Options::default()).await.map_err(|e| format!("{e:#}"))
}

/// `http://LISTENER{path}`.
pub fn url(p: &Running, path: &str) -> String {
    format!("http://{}{path}", p.listen[0])
}

/// `http://ADMIN{path}`.
pub fn admin_url(p: &Running, path: &str) -> String {
    format!("http://{}{path}", p.admin)
}

/// `GET` an admin path as JSON.
pub async fn admin_json(p: &Running, path: &str) -> serde_json::Value {
    let reply = Client::http1()
        .get(&admin_url(p, path), &[])
        .await
        .expect("admin answers");
    assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    serde_json::from_str(&reply.body).expect("JSON")
}

/// `PUT /routes` with a body and headers.
pub async fn put_routes(p: &Running, body: &str, headers: &[(&str, &str)]) -> Reply {
    Client::http1()
        .send(http::Method::PUT, &admin_url(p, "/routes"), headers, body.to_owned())
        .await
        .expect("admin answers")
}

/// The stats of one track over the default window.
pub async fn track_stats(p: &Running, route: &str, track: &str) -> serde_json::Value {
    let stats = admin_json(p, "/stats?window=300s").await;
    stats["routes"][route]["tracks"][track].clone()
}

/// A route's `clientErrors` (`malformed`, `timeout`, `aborted`) over the default window.
pub async fn client_errors(p: &Running, route: &str) -> serde_json::Value {
    let stats = admin_json(p, "/stats?window=300s").await;
    stats["routes"][route]["clientErrors"].clone()
}

/// The `/metrics` text.
pub async fn metrics(p: &Running) -> String {
    let reply = Client::http1()
        .get(&admin_url(p, "/metrics"), &[])
        .await
        .expect("admin answers");
    assert_eq!(reply.status, 200, "/metrics: {}", reply.body);
    reply.body
}
