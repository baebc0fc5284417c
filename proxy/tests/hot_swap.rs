//! The hot-swap guarantee: 1,000 table swaps through the admin API while 20,000 requests flow
//! on keep-alive connections; no request fails, and every response comes from a track the table
//! in force when it started allowed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{put_routes, start_proxy, url};
use switchyard_testkit::{Client, MockUpstream, Table};

const SWAPS: u64 = 1_000;
const REQUESTS: u64 = 20_000;
const CLIENTS: u64 = 16;

/// Odd versions send everything to stable, even versions to canary; `never` has weight 0 in
/// every version and its rule never matches.
fn table(version: u64, stable: &MockUpstream, canary: &MockUpstream, never: &MockUpstream) -> String {
    let (s, c) = if version % 2 == 1 { (1.0, 0.0) } else { (0.0, 1.0) };
    Table::new()
        .route("app")
        .track("stable", &[stable.addr()], s)
        .track("canary", &[canary.addr()], c)
        .track("never", &[never.addr()], 0.0)
        .header_rule("x-never", "1", "never")
        .yaml()
}

fn allowed(version: u64, track: &str) -> bool {
    track == if version % 2 == 1 { "stable" } else { "canary" }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_swaps_under_load_lose_and_misroute_nothing() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let never = MockUpstream::start("never").await;
    let first = Table::new()
        .route("app")
        .track("stable", &[stable.addr()], 1.0)
        .track("canary", &[canary.addr()], 0.0)
        .track("never", &[never.addr()], 0.0)
        .header_rule("x-never", "1", "never");
    let p = Arc::new(start_proxy(first).await);

    // The highest version whose PUT has returned: any request sent after reading it runs on
    // that version or a later one.
    let confirmed = Arc::new(AtomicU64::new(1));
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(tokio::sync::Notify::new());

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (p, confirmed, sent) = (Arc::clone(&p), Arc::clone(&confirmed), Arc::clone(&sent));
        let progress = Arc::clone(&progress);
        clients.push(tokio::spawn(async move {
            let client = Client::http1();
            let target = url(&p, "/");
            let mut checked = 0u64;
            while sent.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let lo = confirmed.load(Ordering::SeqCst);
                let reply = client
                    .get(&target, &[])
                    .await
                    .unwrap_or_else(|e| panic!("request failed: {e}"));
                // A PUT may have swapped its table without having returned yet.
                let hi = confirmed.load(Ordering::SeqCst) + 1;
                assert_eq!(reply.status, 200, "{}", reply.body);
                let track = reply.header("x-switchyard-track").expect("track header").to_owned();
                assert_eq!(reply.body, track, "the body comes from the named track's upstream");
                assert!(
                    (lo..=hi).any(|v| allowed(v, &track)),
                    "track {track} not allowed by any version in {lo}..={hi}"
                );
                checked += 1;
                progress.notify_one();
            }
            checked
        }));
    }

    for version in 2..=SWAPS + 1 {
        // Spread the swaps over the whole run: wait for traffic between swaps.
        let due = (version - 1) * REQUESTS / (SWAPS + 1);
        while sent.load(Ordering::Relaxed) < due {
            progress.notified().await;
        }
        let reply = put_routes(&p, &table(version, &stable, &canary, &never), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body.trim(), format!("{{\"version\":{version}}}"));
        confirmed.store(version, Ordering::SeqCst);
    }

    let mut total = 0;
    for c in clients {
        total += c.await.expect("client task");
    }
    assert_eq!(total, REQUESTS);
    assert_eq!(never.requests(), 0);
    assert_eq!(stable.requests() + canary.requests(), REQUESTS);
    assert!(stable.requests() > 0 && canary.requests() > 0);
    // Keep-alive held: connections stay far below requests. Idle upstream connections are kept
    // per worker thread (as Envoy keeps them per worker), and a request can finish on another
    // thread than it started on, so each thread's pool fills up to its own need first.
    let connections = stable.connections() + canary.connections();
    assert!(
        connections < REQUESTS / 20,
        "{connections} upstream connections for {REQUESTS} requests"
    );
}
