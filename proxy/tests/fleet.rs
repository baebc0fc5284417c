//! Proxies in a group on a real 3-member etcd cluster: the first proxy's routes become the
//! group's table and the next adopts it; a new table in etcd reaches every proxy, an invalid
//! one is refused (the registration says why) while the old one keeps serving; and an etcd
//! outage is not an outage of the proxy, which follows the table again once etcd is back.

#![cfg(feature = "fleet")]

mod common;

use std::time::Duration;

use common::{admin_json, url};
use etcd_client::{Client as Etcd, GetOptions};
use switchyard_config::fleet::{FleetKeys, GroupName, Registration};
use switchyard_config::{Format, load_config};
use switchyard_proxy::fleet::FleetOptions;
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{Client, EtcdCluster, MockUpstream, Table, assert_eventually};

const GROUP: &str = "checkout";
/// How long a change may take to travel through etcd to a proxy in these tests.
const WITHIN: Duration = Duration::from_secs(10);

fn group() -> GroupName {
    GroupName::new(GROUP).unwrap()
}

/// A routes table sending route `route` to `upstream`'s one track.
fn routes(route: &str, upstream: &MockUpstream) -> Table {
    Table::new().route(route).track("stable", &[upstream.addr()], 1.0)
}

/// Starts a proxy serving `table` that joins the test group on `etcd`.
async fn join(etcd: &EtcdCluster, table: Table) -> Running {
    let yaml = table.on_free_ports().yaml();
    let loaded = load_config(&yaml, Format::Yaml, 1).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let mut fleet = FleetOptions::new(etcd.client_urls(), group());
    fleet.lease_ttl = Duration::from_secs(3);
    let options = Options {
        fleet: Some(fleet),
        ..Options::default()
    };
    start(loaded, options).await.expect("proxy starts")
}

async fn etcd_client(etcd: &EtcdCluster) -> Etcd {
    Etcd::connect(etcd.client_urls(), None).await.expect("etcd client")
}

/// The names of the routes `p` serves.
async fn served(p: &Running) -> Vec<String> {
    let routes = admin_json(p, "/routes").await;
    routes["routes"]
        .as_array()
        .map(|r| r.iter().map(|r| r["name"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

/// `p`'s registration in etcd, if there is one.
async fn registration(etcd: &mut Etcd, p: &Running) -> Option<Registration> {
    let key = FleetKeys::default().proxy(&group(), &p.instance);
    let answer = etcd.get(key, None).await.ok()?;
    let kv = answer.kvs().first()?;
    Some(serde_json::from_slice(kv.value()).expect("a registration"))
}

/// Puts a routes document into the group's table key; returns its revision.
async fn put_table(etcd: &mut Etcd, document: &str) -> i64 {
    let key = FleetKeys::default().table(&group());
    let answer = etcd.put(key, document, None).await.expect("put the table");
    answer.header().expect("a header").revision()
}

/// The body of a GET through `p`: the upstream's name.
async fn through(p: &Running) -> (u16, String) {
    let reply = Client::http1().get(&url(p, "/"), &[]).await.expect("the proxy answers");
    (reply.status.as_u16(), reply.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_proxy_creates_the_group_table_and_the_next_adopts_it() {
    let etcd = EtcdCluster::start("fleet-join", 3).await;
    let mut client = etcd_client(&etcd).await;
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);

    let first = join(&etcd, routes("first", &a)).await;
    let table_key = FleetKeys::default().table(&group());
    assert_eventually!(
        client
            .get(table_key.as_str(), None)
            .await
            .is_ok_and(|r| !r.kvs().is_empty()),
        WITHIN
    );
    let second = join(&etcd, routes("second", &b)).await;
    assert_eventually!(served(&second).await == ["first"], WITHIN);
    assert_eq!(served(&first).await, ["first"]);
    assert_eq!(through(&second).await, (200, "a".to_owned()));

    for p in [&first, &second] {
        assert_eventually!(
            registration(&mut client, p)
                .await
                .is_some_and(|r| r.table_revision.is_some()),
            WITHIN
        );
        let r = registration(&mut client, p).await.unwrap();
        assert_eq!(r.admin_url, format!("http://{}", p.admin));
        assert_eq!(r.id, p.instance);
        assert!(r.refused.is_none());
    }
    let proxies = client
        .get(
            FleetKeys::default().proxies(&group()),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(proxies.kvs().len(), 2);
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_table_reaches_every_proxy_and_an_invalid_one_is_refused() {
    let etcd = EtcdCluster::start("fleet-table", 3).await;
    let mut client = etcd_client(&etcd).await;
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let first = join(&etcd, routes("app", &a)).await;
    let second = join(&etcd, routes("app", &a)).await;
    for p in [&first, &second] {
        assert_eventually!(
            registration(&mut client, p)
                .await
                .is_some_and(|r| r.table_revision.is_some()),
            WITHIN
        );
    }

    let valid = format!("version: 2\n{}", routes("moved", &b).yaml());
    let revision = put_table(&mut client, &valid).await;
    for p in [&first, &second] {
        assert_eventually!(served(p).await == ["moved"], WITHIN);
        assert_eq!(through(p).await, (200, "b".to_owned()));
        assert_eventually!(
            registration(&mut client, p)
                .await
                .is_some_and(|r| r.table_revision == Some(revision)),
            WITHIN
        );
    }

    let invalid = format!(
        "version: 3\n{}",
        routes("broken", &b).track("bad", &["no port".to_owned()], 0.0).yaml()
    );
    let refused_at = put_table(&mut client, &invalid).await;
    for p in [&first, &second] {
        assert_eventually!(
            registration(&mut client, p).await.is_some_and(|r| r.refused.is_some()),
            WITHIN
        );
        let r = registration(&mut client, p).await.unwrap();
        let refusal = r.refused.unwrap();
        assert_eq!(refusal.revision, refused_at);
        assert!(
            refusal.errors.iter().any(|e| e.path.starts_with("routes[0].tracks")),
            "{:?}",
            refusal.errors
        );
        assert_eq!(r.table_revision, Some(revision), "still serves the one before");
        assert_eq!(served(p).await, ["moved"]);
        assert_eq!(through(p).await, (200, "b".to_owned()));
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_is_not_an_outage_and_the_watch_resumes() {
    let mut etcd = EtcdCluster::start("fleet-outage", 3).await;
    let (a, b) = (MockUpstream::start("a").await, MockUpstream::start("b").await);
    let p = join(&etcd, routes("app", &a)).await;
    {
        let mut client = etcd_client(&etcd).await;
        assert_eventually!(
            registration(&mut client, &p)
                .await
                .is_some_and(|r| r.table_revision.is_some()),
            WITHIN
        );
    }

    for i in 0..3 {
        etcd.kill(i);
    }
    for _ in 0..50 {
        assert_eq!(through(&p).await, (200, "a".to_owned()));
    }

    etcd.restart_all().await;
    let mut client = etcd_client(&etcd).await;
    let revision = put_table(&mut client, &format!("version: 2\n{}", routes("after", &b).yaml())).await;
    assert_eventually!(served(&p).await == ["after"], WITHIN);
    assert_eq!(through(&p).await, (200, "b".to_owned()));
    assert_eventually!(
        registration(&mut client, &p)
            .await
            .is_some_and(|r| r.table_revision == Some(revision)),
        WITHIN
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_started_while_etcd_is_down_serves_its_file_and_joins_later() {
    let mut etcd = EtcdCluster::start("fleet-late", 3).await;
    let a = MockUpstream::start("a").await;
    for i in 0..3 {
        etcd.kill(i);
    }
    // Starting does not wait for etcd.
    let p = tokio::time::timeout(Duration::from_secs(5), join(&etcd, routes("file", &a)))
        .await
        .expect("the proxy starts without etcd");
    assert_eq!(served(&p).await, ["file"]);
    assert_eq!(through(&p).await, (200, "a".to_owned()));

    etcd.restart_all().await;
    let mut client = etcd_client(&etcd).await;
    assert_eventually!(
        registration(&mut client, &p)
            .await
            .is_some_and(|r| r.table_revision.is_some()),
        WITHIN
    );
    let table = client.get(FleetKeys::default().table(&group()), None).await.unwrap();
    let document: serde_json::Value = serde_json::from_slice(table.kvs()[0].value()).unwrap();
    assert_eq!(
        document["routes"][0]["name"], "file",
        "its routes became the group's table"
    );
    p.shutdown().await;
}
