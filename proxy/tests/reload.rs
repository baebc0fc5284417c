//! The config file watch: saving the file publishes its routes as the next table version, an
//! invalid save is counted and keeps the table in force, and editors' rename-into-place saves
//! are seen like plain writes.

mod common;

use common::{admin_url, url};
use switchyard_config::{Format, load_config};
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{Client, MockUpstream, Scratch, Table, assert_eventually};

/// One route splitting between `stable` and `canary`, `canary_percent` to canary.
fn config(stable: &MockUpstream, canary: &MockUpstream, canary_percent: f64) -> String {
    Table::new()
        .on_free_ports()
        .route("app")
        .track("stable", &[stable.addr()], 100.0 - canary_percent)
        .track("canary", &[canary.addr()], canary_percent)
        .yaml()
}

/// Writes the config file and starts a proxy from it, watching it.
async fn start_watched(dir: &Scratch, yaml: &str) -> Running {
    std::fs::write(dir.join("proxy.yaml"), yaml).expect("write the config file");
    let loaded = load_config(yaml, Format::Yaml, 1).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let options = Options {
        config_file: Some(dir.join("proxy.yaml")),
        ..Options::default()
    };
    start(loaded, options).await.expect("proxy starts")
}

/// The version of the table in force, as `GET /routes` reports it.
async fn version(p: &Running) -> u64 {
    common::admin_json(p, "/routes").await["version"]
        .as_u64()
        .expect("a numeric version")
}

/// Whether `/metrics` has exactly this sample line.
async fn metrics_show(p: &Running, line: &str) -> bool {
    let metrics = Client::http1()
        .get(&admin_url(p, "/metrics"), &[])
        .await
        .expect("admin answers");
    metrics.body.lines().any(|l| l == line)
}

/// The tracks that answered `n` requests.
async fn tracks(p: &Running, n: usize) -> Vec<String> {
    let client = Client::http1();
    let mut tracks = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = client.get(&url(p, "/"), &[]).await.expect("proxy answers");
        assert_eq!(reply.status, 200, "{}", reply.body);
        tracks.push(reply.body);
    }
    tracks
}

fn all(tracks: &[String], track: &str) -> bool {
    tracks.iter().all(|t| t == track)
}

#[tokio::test]
async fn saving_the_file_publishes_and_an_invalid_save_keeps_the_table() {
    let dir = Scratch::new("reload-save");
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = start_watched(&dir, &config(&stable, &canary, 0.0)).await;
    assert_eq!(version(&p).await, 1);
    assert!(all(&tracks(&p, 20).await, "stable"));

    std::fs::write(dir.join("proxy.yaml"), config(&stable, &canary, 100.0)).expect("rewrite");
    assert_eventually!(version(&p).await == 2);
    assert!(all(&tracks(&p, 20).await, "canary"));
    assert!(metrics_show(&p, "switchyard_config_reloads_total 1").await);

    // Valid YAML, but a rule names a track the route does not have.
    let invalid = Table::new()
        .on_free_ports()
        .route("app")
        .track("stable", &[stable.addr()], 100.0)
        .track("canary", &[canary.addr()], 0.0)
        .header_rule("x-canary", "true", "no-such-track")
        .yaml();
    std::fs::write(dir.join("proxy.yaml"), invalid).expect("rewrite");
    assert_eventually!(metrics_show(&p, "switchyard_config_reload_failures_total 1").await);
    assert_eq!(version(&p).await, 2);
    assert!(all(&tracks(&p, 20).await, "canary"));

    std::fs::write(dir.join("proxy.yaml"), config(&stable, &canary, 0.0)).expect("rewrite");
    assert_eventually!(version(&p).await == 3);
    assert!(all(&tracks(&p, 20).await, "stable"));
    assert!(metrics_show(&p, "switchyard_config_reloads_total 2").await);
    assert_eq!(canary.requests(), 40);
}

#[tokio::test]
async fn a_rename_into_place_save_is_picked_up() {
    let dir = Scratch::new("reload-rename");
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = start_watched(&dir, &config(&stable, &canary, 0.0)).await;
    assert_eq!(version(&p).await, 1);

    // What editors and `kubectl` do: write a new file beside the old one, rename it over.
    let staged = dir.path().join(".proxy.yaml.swp");
    std::fs::write(&staged, config(&stable, &canary, 100.0)).expect("write the staged file");
    std::fs::rename(&staged, dir.join("proxy.yaml")).expect("rename into place");
    assert_eventually!(version(&p).await == 2);
    assert!(all(&tracks(&p, 20).await, "canary"));
    assert!(metrics_show(&p, "switchyard_config_reload_failures_total 0").await);
}
