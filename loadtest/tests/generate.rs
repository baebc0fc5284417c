//! The load generator against in-process upstreams on 127.0.0.1:0: every request is counted,
//! the open loop keeps its rate, a slow upstream's queueing shows up in the open loop's latency
//! (coordinated omission corrected) but not in the closed loop's, tracks are broken down, and
//! the JSON has its documented shape. Runs are short (≤ 1 s) and nothing asserts on speed.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::Value;
use switchyard_loadtest::generate::{Options, Report, generate};
use switchyard_loadtest::upstream::{Faults, serve};
use tokio::net::TcpListener;

use common::loadtest_ok;

/// How the test upstream answers request number `n` (from 0).
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// The track header cycles through these (`None`: no header); empty: never set.
    tracks: &'static [Option<&'static str>],
    /// Every this-many-th request has its connection dropped without an answer; 0: never.
    drop_every: u64,
}

/// What the test upstream saw.
#[derive(Default)]
struct Seen {
    connections: AtomicU64,
    requests: AtomicU64,
    users: Mutex<Vec<String>>,
    versions: Mutex<Vec<Version>>,
}

/// An HTTP/1.1 and h2c (prior knowledge) upstream that counts what it sees.
async fn counting_upstream(behaviour: Behaviour) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let shared = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&shared);
            let service = service_fn(move |request: Request<Incoming>| {
                let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                seen.versions.lock().unwrap().push(request.version());
                if let Some(user) = request.headers().get("x-user-id") {
                    seen.users.lock().unwrap().push(user.to_str().unwrap().to_owned());
                }
                async move {
                    if behaviour.drop_every > 0 && (n + 1) % behaviour.drop_every == 0 {
                        return Err("dropped on purpose");
                    }
                    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                    if !behaviour.tracks.is_empty()
                        && let Some(track) = behaviour.tracks[n as usize % behaviour.tracks.len()]
                    {
                        response
                            .headers_mut()
                            .insert("x-switchyard-track", track.parse().unwrap());
                    }
                    Ok(response)
                }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

/// `switchyard_loadtest::upstream` with `faults`.
async fn faulty_upstream(faults: Faults) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, "faulty", "ok\n", faults));
    url
}

fn options(url: &str, connections: usize, rate: f64, duration_ms: u64) -> Options {
    let mut options = Options::new(url.parse::<Uri>().unwrap());
    options.connections = connections;
    options.rate = rate;
    options.duration = Duration::from_millis(duration_ms);
    options.warmup = Duration::ZERO;
    options
}

async fn run(options: &Options) -> Report {
    generate(options).await.expect("the run starts")
}

/// The totals add up: every finished request is an answer or a transport error.
fn assert_consistent(r: &Report) {
    let t = &r.totals;
    let answers: u64 = t.statuses.values().sum();
    assert_eq!(t.requests, answers + t.transport_errors, "{t:?}");
    assert_eq!(t.errors, t.transport_errors + t.status5xx, "{t:?}");
    assert_eq!(r.tracks.iter().map(|t| t.requests).sum::<u64>(), answers, "{r:?}");
    if let (Some(scheduled), Some(unsent)) = (t.scheduled, t.unsent) {
        assert_eq!(scheduled, t.requests + t.unfinished + unsent, "{t:?}");
    }
}

#[tokio::test]
async fn the_closed_loop_counts_every_request_on_exactly_n_connections() {
    let (url, seen) = counting_upstream(Behaviour::default()).await;
    let r = run(&options(&url, 4, 0.0, 300)).await;
    assert_consistent(&r);
    let t = &r.totals;
    let served = seen.requests.load(Ordering::SeqCst);
    assert!(t.requests > 0, "{t:?}");
    // Abandoned requests at the end may or may not have reached the upstream.
    assert!(
        (t.requests..=t.requests + t.unfinished).contains(&served),
        "served {served}, {t:?}"
    );
    assert!(t.unfinished <= 4, "{t:?}");
    assert_eq!((t.errors, t.scheduled, t.unsent), (0, None, None));
    assert_eq!(seen.connections.load(Ordering::SeqCst), 4);
    assert_eq!(r.settings.mode, "closedLoop");
    assert!(r.send_lag_us.is_none());
    let latency = r.latency_us.expect("answers were timed");
    assert!(latency.p50 <= latency.p90 && latency.p90 <= latency.p99 && latency.p99 <= latency.max);
}

#[tokio::test]
async fn upstream_500s_are_counted_as_errors() {
    let url = faulty_upstream(Faults {
        error_rate: 0.1,
        latency: Duration::ZERO,
    })
    .await;
    let r = run(&options(&url, 2, 0.0, 300)).await;
    assert_consistent(&r);
    let t = &r.totals;
    assert_eq!(t.transport_errors, 0, "{t:?}");
    // Every 10th request served is a 500; up to 2 served ones were abandoned at the end.
    let expected = t.requests as f64 / 10.0;
    assert!((t.status5xx as f64 - expected).abs() <= 2.0, "{t:?}");
    assert_eq!(t.errors, t.status5xx);
    assert_eq!(r.tracks[0].errors, t.status5xx);
}

#[tokio::test]
async fn a_dropped_connection_is_a_transport_error_and_is_reopened() {
    let (url, seen) = counting_upstream(Behaviour {
        drop_every: 5,
        ..Behaviour::default()
    })
    .await;
    let r = run(&options(&url, 1, 0.0, 300)).await;
    assert_consistent(&r);
    let t = &r.totals;
    assert!(t.transport_errors > 0, "{t:?}");
    assert!(t.statuses[&200] >= 3 * t.transport_errors, "{t:?}");
    assert_eq!(t.errors, t.transport_errors);
    // One connection at a time, re-opened after each drop.
    assert!(seen.connections.load(Ordering::SeqCst) > t.transport_errors, "{t:?}");
}

#[tokio::test]
async fn the_open_loop_sends_at_the_rate() {
    let (url, seen) = counting_upstream(Behaviour::default()).await;
    let r = run(&options(&url, 4, 200.0, 1000)).await;
    assert_consistent(&r);
    let t = &r.totals;
    assert_eq!(t.scheduled, Some(200));
    assert!((170..=230).contains(&t.requests), "{t:?}");
    assert!((170..=230).contains(&seen.requests.load(Ordering::SeqCst)), "{t:?}");
    assert_eq!(r.settings.mode, "openLoop");
    assert!(r.send_lag_us.is_some());
}

#[tokio::test]
async fn the_warmup_is_sent_but_not_recorded() {
    let (url, seen) = counting_upstream(Behaviour::default()).await;
    let mut o = options(&url, 2, 100.0, 500);
    o.warmup = Duration::from_millis(500);
    let r = run(&o).await;
    assert_consistent(&r);
    assert_eq!(r.totals.scheduled, Some(50));
    assert!((40..=60).contains(&r.totals.requests), "{:?}", r.totals);
    assert!(seen.requests.load(Ordering::SeqCst) >= 90, "{:?}", r.totals);
}

#[tokio::test]
async fn open_loop_latency_counts_the_queueing_a_slow_upstream_causes() {
    // 100 ms per answer on one connection serves 10 requests/s; 50/s are scheduled, so each
    // request waits behind the ones before it. Measured from the intended send time, that
    // wait is latency; a closed loop never sees it.
    let url = faulty_upstream(Faults {
        error_rate: 0.0,
        latency: Duration::from_millis(100),
    })
    .await;
    let open = run(&options(&url, 1, 50.0, 1000)).await;
    let closed = run(&options(&url, 1, 0.0, 1000)).await;
    assert_consistent(&open);
    assert_consistent(&closed);
    let open_latency = open.latency_us.expect("answers");
    let closed_p90 = closed.latency_us.expect("answers").p90;
    assert!(
        open_latency.p90 > 2 * closed_p90,
        "open loop {open_latency:?}, closed loop p90 {closed_p90} µs"
    );
    assert!(
        open_latency.p50 > closed_p90,
        "open loop {open_latency:?}, closed loop p90 {closed_p90} µs"
    );
    // Most of the schedule never left: the upstream could not keep up.
    assert!(
        open.totals.unsent.expect("open loop") > open.totals.requests,
        "{:?}",
        open.totals
    );
    // And the send lag says where the latency came from.
    assert!(open.send_lag_us.expect("open loop").p90 > closed_p90, "{open:?}");
}

#[tokio::test]
async fn answers_are_broken_down_by_track() {
    let (url, _) = counting_upstream(Behaviour {
        tracks: &[Some("stable"), Some("canary"), None],
        ..Behaviour::default()
    })
    .await;
    let r = run(&options(&url, 1, 0.0, 300)).await;
    assert_consistent(&r);
    let tracks: Vec<&str> = r.tracks.iter().map(|t| t.track.as_str()).collect();
    assert_eq!(tracks, ["-", "canary", "stable"]);
    // One connection, one request at a time: the cycle is exact up to where it stopped.
    let counts: Vec<u64> = r.tracks.iter().map(|t| t.requests).collect();
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "{counts:?}");
    assert!(r.tracks.iter().all(|t| t.latency_us.is_some() && t.errors == 0));
}

#[tokio::test]
async fn h2c_multiplexes_the_open_loop_over_n_connections() {
    let (url, seen) = counting_upstream(Behaviour::default()).await;
    let mut o = options(&url, 2, 200.0, 500);
    o.http2 = true;
    let r = run(&o).await;
    assert_consistent(&r);
    assert_eq!(r.settings.protocol, "http2");
    assert_eq!(r.totals.scheduled, Some(100));
    assert!((85..=115).contains(&r.totals.requests), "{:?}", r.totals);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert!(seen.versions.lock().unwrap().iter().all(|&v| v == Version::HTTP_2));

    let mut o = options(&url, 2, 0.0, 200);
    o.http2 = true;
    let r = run(&o).await;
    assert_consistent(&r);
    assert!(r.totals.requests > 0 && r.totals.errors == 0, "{:?}", r.totals);
}

#[tokio::test]
async fn users_are_drawn_from_the_pool_and_headers_are_sent() {
    let (url, seen) = counting_upstream(Behaviour::default()).await;
    let mut o = options(&url, 2, 0.0, 200);
    o.users = 5;
    o.seed = 42;
    let r = run(&o).await;
    assert_consistent(&r);
    let users = seen.users.lock().unwrap();
    assert!(users.len() as u64 >= r.totals.requests);
    let mut distinct: Vec<&str> = users.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, ["user-1", "user-2", "user-3", "user-4", "user-5"]);
}

#[tokio::test]
async fn an_unreachable_target_fails_the_run() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let e = generate(&options(&url, 1, 0.0, 100)).await.unwrap_err();
    assert!(e.to_string().starts_with("cannot connect to 127.0.0.1:"), "{e}");
}

#[test]
fn the_cli_prints_json_with_the_documented_fields() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (url, _) = runtime.block_on(counting_upstream(Behaviour {
        tracks: &[Some("stable"), Some("canary")],
        ..Behaviour::default()
    }));
    let stdout = loadtest_ok([
        "run",
        "--url",
        &url,
        "--rate",
        "100",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "-c",
        "2",
        "-H",
        "x-canary: always",
        "--users",
        "10",
        "--json",
    ]);
    let json: Value = serde_json::from_str(&stdout).expect("JSON");

    let keys = |v: &Value| -> Vec<String> {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort_unstable();
        keys
    };
    let percentiles = ["max", "p50", "p90", "p99", "p999", "p9999"];
    assert_eq!(keys(&json), ["latencyUs", "sendLagUs", "settings", "totals", "tracks"]);
    assert_eq!(
        keys(&json["settings"]),
        [
            "connections",
            "durationSecs",
            "mode",
            "protocol",
            "rate",
            "seed",
            "url",
            "users",
            "warmupSecs"
        ]
    );
    assert_eq!(
        keys(&json["totals"]),
        [
            "achievedRate",
            "errors",
            "requests",
            "scheduled",
            "status5xx",
            "statuses",
            "transportErrors",
            "unfinished",
            "unsent"
        ]
    );
    assert_eq!(keys(&json["latencyUs"]), percentiles);
    assert_eq!(keys(&json["sendLagUs"]), percentiles);
    assert_eq!(json["settings"]["mode"], "openLoop");
    assert_eq!(json["settings"]["rate"], 100.0);
    assert_eq!(json["totals"]["scheduled"], 30);
    let tracks = json["tracks"].as_array().expect("an array");
    let names: Vec<&str> = tracks.iter().map(|t| t["track"].as_str().unwrap()).collect();
    assert_eq!(names, ["canary", "stable"]);
    for track in tracks {
        assert_eq!(keys(track), ["errors", "latencyUs", "requests", "track"]);
        assert_eq!(keys(&track["latencyUs"]), percentiles);
    }
    let answered = json["totals"]["statuses"]["200"].as_u64().expect("200s");
    assert!(answered > 0);
    assert_eq!(json["latencyUs"]["max"].as_u64().map(|max| max > 0), Some(true));
}

#[test]
fn the_table_names_every_track_and_percentile() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime.block_on(async {
        let (url, _) = counting_upstream(Behaviour {
            tracks: &[Some("stable")],
            ..Behaviour::default()
        })
        .await;
        run(&options(&url, 1, 0.0, 100)).await
    });
    let table = report.to_string();
    for word in [
        "closed loop",
        "p50",
        "p99.99",
        "max",
        "all",
        "stable",
        "requests",
        "errors",
    ] {
        assert!(table.contains(word), "{word} missing:\n{table}");
    }
}
