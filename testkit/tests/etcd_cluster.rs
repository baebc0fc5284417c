//! The etcd harness is a real cluster: a write to one member is read from another, it survives
//! one member's death, it stops taking writes without a quorum, and takes them again when a
//! member comes back. Spoken through etcd's own JSON gateway on the client port.

use std::time::Duration;

use switchyard_testkit::{Client, EtcdCluster, assert_eventually};

/// `switchyard/harness` and `1`, `2`, base64 as the gateway wants them.
const KEY: &str = "c3dpdGNoeWFyZC9oYXJuZXNz";
const ONE: &str = "MQ==";
const TWO: &str = "Mg==";

async fn put(url: &str, value: &str) -> bool {
    let body = format!(r#"{{"key": "{KEY}", "value": "{value}"}}"#);
    let (client, target) = (Client::http1(), format!("{url}/v3/kv/put"));
    let call = client.send(http::Method::POST, &target, &[], body);
    matches!(tokio::time::timeout(Duration::from_secs(3), call).await, Ok(Ok(r)) if r.status == 200)
}

async fn get(url: &str) -> Option<String> {
    let body = format!(r#"{{"key": "{KEY}"}}"#);
    let reply = Client::http1()
        .send(http::Method::POST, &format!("{url}/v3/kv/range"), &[], body)
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&reply.body).ok()?;
    v["kvs"][0]["value"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_survive_one_death_and_need_a_quorum() {
    let mut cluster = EtcdCluster::start("harness", 3).await;
    let urls = cluster.client_urls();
    assert!(put(&urls[0], ONE).await, "a healthy cluster takes a write");
    assert_eq!(get(&urls[2]).await.as_deref(), Some(ONE), "another member reads it");

    cluster.kill(1);
    // When the killed member led, the other two elect a leader first (election timeout 500 ms):
    // a write in that gap fails, so the quorum is shown by a write that succeeds within a bound.
    assert_eventually!(put(&urls[2], TWO).await, Duration::from_secs(10));
    assert_eq!(get(&urls[0]).await.as_deref(), Some(TWO));

    cluster.kill(2);
    assert!(!put(&urls[0], ONE).await, "one of three takes no write");

    cluster.restart(1).await;
    assert!(put(&urls[0], ONE).await, "a quorum again");
    assert_eq!(
        get(&urls[1]).await.as_deref(),
        Some(ONE),
        "the member that was down caught up"
    );
}
