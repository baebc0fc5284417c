use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value;
use switchyard_config::stats::{HIGHEST_LATENCY_US, StatsDocument, decode_histogram};
use switchyard_config::{InstanceId, RouteName, TrackName};
use tokio::time::Instant;

use super::shard::SEALED_SECONDS;
use super::*;

fn ok(ms: u64) -> Outcome {
    Outcome {
        status: 200,
        latency: Duration::from_millis(ms),
        upstream_error: None,
    }
}

fn status(status: u16, upstream_error: Option<UpstreamError>) -> Outcome {
    Outcome {
        status,
        latency: Duration::from_millis(1),
        upstream_error,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A recorder with the given (route, track) pairs, and their slot list.
fn recorder(shards: usize, pairs: &[(&str, &str)]) -> (Recorder, Instant, Vec<(RouteName, TrackName, SlotId)>) {
    let start = Instant::now();
    let recorder = Recorder::new(shards, start);
    let slots = pairs
        .iter()
        .map(|&(r, t)| {
            let (route, track) = (RouteName::from(r), TrackName::from(t));
            let slot = recorder.slot(&route, &track);
            (route, track, slot)
        })
        .collect();
    (recorder, start, slots)
}

fn track<'a>(stats: &'a WindowStats, route: &str, track: &str) -> &'a TrackStats {
    &stats.routes[route][track]
}

/// The `/stats` document of `stats` with the recorder's lifetime totals, as JSON.
fn json(stats: &WindowStats, recorder: &Recorder, slots: &[(RouteName, TrackName, SlotId)]) -> Value {
    let document = stats.to_document(&recorder.totals(slots), 1, &InstanceId::from_bits(7));
    serde_json::to_value(document).unwrap()
}

impl Recorder {
    fn shards_in_use(&self) -> usize {
        self.shards.iter().filter(|s| !s.lock().is_empty()).count()
    }

    fn sealed_len(&self, slot: SlotId) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().slot(slot.index()).map(SlotState::sealed_len))
            .sum()
    }
}

#[test]
fn same_names_get_the_same_slot() {
    let (recorder, _, slots) = recorder(
        2,
        &[("checkout", "stable"), ("checkout", "canary"), ("search", "stable")],
    );
    assert_ne!(slots[0].2, slots[1].2);
    assert_ne!(slots[0].2, slots[2].2);
    assert_eq!(recorder.slot(&"checkout".into(), &"canary".into()), slots[1].2);
}

#[test]
fn histogram_counts_every_request_and_clamps_latency() {
    let (recorder, start, slots) = recorder(4, &[("checkout", "canary")]);
    let slot = slots[0].2;
    for ms in [0, 1, 5, 250, 59_999] {
        recorder.record(slot, &ok(ms), start);
    }
    recorder.record(slot, &ok(3_600_000), start + secs(1));
    let totals = recorder.totals(&slots);
    let canary = track(&totals, "checkout", "canary");
    assert_eq!(canary.requests, 6);
    assert_eq!(canary.histogram.len(), 6);
    assert_eq!(
        canary.histogram.max(),
        canary.histogram.highest_equivalent(HIGHEST_LATENCY_US)
    );
    assert_eq!(canary.histogram.count_between(0, 0), 1);
}

#[test]
fn status_classes_errors_and_upstream_errors() {
    let (recorder, start, slots) = recorder(1, &[("checkout", "canary")]);
    let slot = slots[0].2;
    for outcome in [
        status(101, None),
        status(200, None),
        status(204, None),
        status(301, None),
        status(404, None),
        status(500, None),
        status(502, Some(UpstreamError::Connect)),
        status(502, Some(UpstreamError::Reset)),
        status(504, Some(UpstreamError::Timeout)),
        status(503, None),
    ] {
        recorder.record(slot, &outcome, start);
    }
    let stats = recorder.window(&slots, secs(10), Since::Unbounded, start);
    let canary = track(&stats, "checkout", "canary");
    assert_eq!(canary.requests, 10);
    assert_eq!(canary.status_classes, [2, 1, 1, 5]);
    assert_eq!(canary.errors, 5);
    assert_eq!(canary.upstream_errors, [1, 1, 1, 0]);
    assert_eq!(canary.histogram.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_response_that_broke_off_is_an_error_whatever_its_status() {
    let (recorder, start, slots) = recorder(2, &[("checkout", "canary")]);
    let slot = slots[0].2;
    let status = |status, upstream_error| Outcome {
        status,
        latency: Duration::from_millis(1),
        upstream_error,
    };
    recorder.record(slot, &status(200, Some(UpstreamError::Protocol)), start);
    recorder.record(slot, &status(200, Some(UpstreamError::Reset)), start);
    recorder.record(slot, &status(502, Some(UpstreamError::Protocol)), start);
    recorder.record(slot, &status(200, None), start);
    let stats = recorder.window(&slots, secs(10), Since::Unbounded, start);
    let canary = track(&stats, "checkout", "canary");
    assert_eq!((canary.requests, canary.errors), (4, 3));
    assert_eq!(canary.status_classes, [3, 0, 0, 1]);
    assert_eq!(canary.upstream_errors, [0, 0, 1, 2]);
    let json = json(&stats, &recorder, &slots);
    assert_eq!(
        json["routes"]["checkout"]["tracks"]["canary"]["upstreamErrors"]["protocol"],
        2
    );
}

#[tokio::test(start_paused = true)]
async fn client_errors_count_per_route_and_in_no_track() {
    let (recorder, start, slots) = recorder(2, &[("checkout", "stable"), ("checkout", "canary")]);
    recorder.record(slots[0].2, &ok(1), start);
    recorder.record_client_error(slots[0].2, ClientError::Malformed, start);
    recorder.record_client_error(slots[1].2, ClientError::Malformed, start);
    recorder.record_client_error(slots[1].2, ClientError::Aborted, start);
    // A second with client errors only is kept like any other.
    recorder.record_client_error(slots[1].2, ClientError::Timeout, start + secs(1));
    for stats in [
        recorder.window(&slots, secs(10), Since::Unbounded, start + secs(3)),
        recorder.totals(&slots),
    ] {
        let (stable, canary) = (track(&stats, "checkout", "stable"), track(&stats, "checkout", "canary"));
        assert_eq!((stable.requests, stable.errors, stable.histogram.len()), (1, 0, 1));
        assert_eq!((canary.requests, canary.errors, canary.histogram.len()), (0, 0, 0));
        let json = json(&stats, &recorder, &slots);
        let route = &json["routes"]["checkout"];
        assert_eq!(route["clientErrors"]["malformed"], 2, "{route}");
        assert_eq!(route["clientErrors"]["timeout"], 1, "{route}");
        assert_eq!(route["clientErrors"]["aborted"], 1, "{route}");
        assert_eq!(route["tracks"]["canary"]["errorRate"], 0.0);
        assert_eq!(route["tracks"]["canary"]["requests"], 0);
    }
    let families = metric_families(&recorder.totals(&slots));
    let client = families
        .iter()
        .find(|f| f.name() == "switchyard_client_errors_total")
        .expect("the client errors family");
    assert_eq!(client.get_metric().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn window_excludes_older_seconds() {
    let (recorder, start, slots) = recorder(2, &[("checkout", "canary")]);
    let slot = slots[0].2;
    recorder.record(slot, &ok(1), Instant::now());
    tokio::time::advance(secs(5)).await;
    recorder.record(slot, &ok(2), Instant::now());
    recorder.record(slot, &status(500, None), Instant::now());
    tokio::time::advance(Duration::from_millis(999)).await;

    let requests = |window: u64| {
        track(
            &recorder.window(&slots, secs(window), Since::Unbounded, Instant::now()),
            "checkout",
            "canary",
        )
        .requests
    };
    assert_eq!(requests(1), 2);
    assert_eq!(requests(5), 2);
    assert_eq!(requests(6), 3);
    let last_5 = recorder.window(&slots, secs(5), Since::Unbounded, start + secs(5));
    assert_eq!(track(&last_5, "checkout", "canary").errors, 1);
    assert_eq!(track(&last_5, "checkout", "canary").histogram.len(), 2);
    // A reader's clock ahead of the last record.
    assert_eq!(
        track(
            &recorder.window(&slots, secs(10), Since::Unbounded, start + secs(15)),
            "checkout",
            "canary"
        )
        .requests,
        0
    );
    assert_eq!(
        track(
            &recorder.window(&slots, secs(11), Since::Unbounded, start + secs(15)),
            "checkout",
            "canary"
        )
        .requests,
        2
    );
}

#[test]
fn window_is_clamped_to_1_to_300_seconds() {
    let (recorder, start, slots) = recorder(1, &[("checkout", "canary")]);
    let slot = slots[0].2;
    recorder.record(slot, &ok(1), start);
    recorder.record(slot, &ok(1), start + secs(400));
    let now = start + secs(400);
    let zero = recorder.window(&slots, Duration::ZERO, Since::Unbounded, now);
    assert_eq!(
        (zero.window_seconds, track(&zero, "checkout", "canary").requests),
        (1, 1)
    );
    let long = recorder.window(&slots, secs(3600), Since::Unbounded, now);
    assert_eq!(
        (long.window_seconds, track(&long, "checkout", "canary").requests),
        (300, 1)
    );
    assert_eq!(recorder.totals(&slots).window_seconds, 0);
}

#[test]
fn slices_older_than_the_ring_are_dropped_but_stay_in_totals() {
    let (recorder, start, slots) = recorder(1, &[("checkout", "canary")]);
    let slot = slots[0].2;
    for s in 0..400 {
        recorder.record(slot, &ok(s), start + secs(s));
    }
    assert_eq!(recorder.sealed_len(slot), SEALED_SECONDS as usize);
    let stats = recorder.window(&slots, secs(300), Since::Unbounded, start + secs(399));
    let canary = track(&stats, "checkout", "canary");
    assert_eq!(canary.requests, 300);
    assert_eq!(canary.histogram.count_between(0, 99_000), 0);
    assert_eq!(track(&recorder.totals(&slots), "checkout", "canary").requests, 400);
    // A later second drops everything more than 301 s older than it, the second it seals included.
    recorder.record(slot, &ok(1), start + secs(1000));
    assert_eq!(recorder.sealed_len(slot), 0);
}

#[test]
fn a_late_record_counts_in_the_current_second() {
    let (recorder, start, slots) = recorder(1, &[("checkout", "canary")]);
    let slot = slots[0].2;
    recorder.record(slot, &ok(1), start + secs(5));
    recorder.record(slot, &ok(1), start + Duration::from_millis(4_900));
    let stats = recorder.window(&slots, secs(1), Since::Unbounded, start + secs(5));
    assert_eq!(track(&stats, "checkout", "canary").requests, 2);
}

#[test]
fn zero_traffic_slots_appear_with_zeros() {
    let (recorder, start, slots) = recorder(2, &[("checkout", "stable"), ("checkout", "canary"), ("search", "blue")]);
    recorder.record(slots[0].2, &ok(1), start);
    for stats in [
        recorder.window(&slots, secs(10), Since::Unbounded, start),
        recorder.totals(&slots),
    ] {
        assert_eq!(stats.routes.len(), 2);
        assert_eq!(stats.routes["checkout"].len(), 2);
        for (route, tr) in [("checkout", "canary"), ("search", "blue")] {
            let t = track(&stats, route, tr);
            assert_eq!(
                (t.requests, t.errors, t.status_classes, t.upstream_errors),
                (0, 0, [0; 4], [0; 4])
            );
            assert!(t.histogram.is_empty());
        }
        let json = json(&stats, &recorder, &slots);
        assert_eq!(json["routes"]["search"]["tracks"]["blue"]["latencyMs"]["max"], 0.0);
        assert_eq!(json["routes"]["search"]["tracks"]["blue"]["errorRate"], 0.0);
    }
}

#[test]
fn threads_use_their_own_shards_and_merge_exactly() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 1000;
    let (recorder, start, slots) = recorder(256, &[("checkout", "stable"), ("checkout", "canary")]);
    let recorder = Arc::new(recorder);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let recorder = Arc::clone(&recorder);
            let slots = slots.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let outcome = status(if i % 10 == 0 { 503 } else { 200 }, None);
                    recorder.record(slots[(i % 2) as usize].2, &outcome, start + secs(t + i / 100));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert_eq!(recorder.shards_in_use(), THREADS as usize);
    let totals = recorder.totals(&slots);
    let window = recorder.window(
        &slots,
        secs(300),
        Since::Unbounded,
        start + secs(THREADS + PER_THREAD / 100),
    );
    for stats in [&totals, &window] {
        for tr in ["stable", "canary"] {
            let t = track(stats, "checkout", tr);
            assert_eq!(t.requests, THREADS * PER_THREAD / 2);
            assert_eq!(t.histogram.len(), t.requests);
        }
        assert_eq!(track(stats, "checkout", "stable").errors, THREADS * PER_THREAD / 10);
    }
}

#[test]
fn json_matches_the_contract() {
    let (recorder, start, slots) = recorder(1, &[("checkout", "canary")]);
    recorder.record(slots[0].2, &ok(4), start);
    recorder.record(slots[0].2, &status(502, Some(UpstreamError::Connect)), start);
    recorder.record(slots[0].2, &ok(9), start + secs(20));
    let instance = InstanceId::from_bits(0xfeed);
    let document = recorder
        .window(&slots, secs(10), Since::Unbounded, start + secs(5))
        .to_document(&recorder.totals(&slots), 7, &instance);
    let json = serde_json::to_value(&document).unwrap();

    let keys = |v: &Value| {
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&json), ["instance", "routes", "version", "windowSeconds"]);
    assert_eq!(
        (json["version"].as_u64(), json["windowSeconds"].as_u64()),
        (Some(7), Some(10))
    );
    assert_eq!(json["instance"], "000000000000feed");
    assert_eq!(keys(&json["routes"]["checkout"]), ["clientErrors", "tracks"]);
    assert_eq!(
        keys(&json["routes"]["checkout"]["clientErrors"]),
        ["aborted", "malformed", "timeout"]
    );
    let canary = &json["routes"]["checkout"]["tracks"]["canary"];
    assert_eq!(
        keys(canary),
        [
            "errorRate",
            "errors",
            "histogram",
            "latencyMs",
            "requests",
            "statusClasses",
            "totalErrors",
            "totalRequests",
            "upstreamErrors"
        ]
    );
    assert_eq!(keys(&canary["statusClasses"]), ["2xx", "3xx", "4xx", "5xx"]);
    assert_eq!(
        keys(&canary["upstreamErrors"]),
        ["connect", "protocol", "reset", "timeout"]
    );
    assert_eq!(keys(&canary["latencyMs"]), ["max", "p50", "p90", "p99", "p999"]);
    assert_eq!(
        (canary["requests"].as_u64(), canary["errors"].as_u64()),
        (Some(2), Some(1))
    );
    // Lifetime totals count the request of second 20 too, which no window at 5 s holds.
    assert_eq!(
        (canary["totalRequests"].as_u64(), canary["totalErrors"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(canary["errorRate"].as_f64(), Some(0.5));
    assert_eq!(canary["statusClasses"]["2xx"].as_u64(), Some(1));
    assert_eq!(canary["upstreamErrors"]["connect"].as_u64(), Some(1));
    let max_ms = canary["latencyMs"]["max"].as_f64().unwrap();
    assert!((4.0..4.01).contains(&max_ms), "{max_ms}");
    let decoded = decode_histogram(canary["histogram"].as_str().unwrap()).unwrap();
    assert_eq!(decoded.len(), 2);
}

/// What the proxy writes, the controller reads whole: the text deserializes to an equal
/// document, and that serializes to the same JSON, so no field is dropped on the way.
#[test]
fn the_document_round_trips_through_the_controllers_type() {
    let (recorder, start, slots) = recorder(2, &[("checkout", "stable"), ("checkout", "canary"), ("search", "blue")]);
    for (i, ms) in [1, 4, 250, 59_000].into_iter().enumerate() {
        recorder.record(slots[i % 2].2, &ok(ms), start + secs(i as u64));
    }
    recorder.record(slots[1].2, &status(504, Some(UpstreamError::Timeout)), start + secs(3));
    recorder.record(slots[1].2, &status(200, Some(UpstreamError::Protocol)), start + secs(3));
    recorder.record_client_error(slots[0].2, ClientError::Aborted, start + secs(2));
    let written = recorder
        .window(
            &slots,
            secs(10),
            Since::At(start + Duration::from_millis(1500)),
            start + secs(3),
        )
        .to_document(&recorder.totals(&slots), 3, &InstanceId::from_bits(1));
    let text = serde_json::to_string(&written).unwrap();
    let read: StatsDocument = serde_json::from_str(&text).unwrap();
    assert_eq!(read, written);
    let as_json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&read).unwrap(), as_json);
    assert_eq!(read.window_seconds, 2);
    let canary = read.track_stats("checkout", "canary").unwrap();
    assert_eq!((canary.requests, canary.errors, canary.total_requests), (3, 2, 4));
    assert_eq!(read.routes["checkout"].client_errors.aborted, 1);
    assert_eq!(read.track("search", "blue").unwrap().requests, 0);
}

#[test]
fn prometheus_text() {
    let (recorder, start, slots) = recorder(2, &[("checkout", "canary"), ("checkout", "stable")]);
    let canary = slots[0].2;
    for ms in [1, 1, 30] {
        recorder.record(canary, &ok(ms), start);
    }
    recorder.record(canary, &status(504, Some(UpstreamError::Timeout)), start + secs(1));
    let families = metric_families(&recorder.totals(&slots));
    let text = prometheus::TextEncoder::new().encode_to_string(&families).unwrap();
    for line in [
        "# TYPE switchyard_requests_total counter",
        r#"switchyard_requests_total{class="2xx",route="checkout",track="canary"} 3"#,
        r#"switchyard_requests_total{class="5xx",route="checkout",track="canary"} 1"#,
        r#"switchyard_requests_total{class="2xx",route="checkout",track="stable"} 0"#,
        "# TYPE switchyard_request_duration_seconds histogram",
        r#"switchyard_request_duration_seconds_bucket{route="checkout",track="canary",le="0.0005"} 0"#,
        r#"switchyard_request_duration_seconds_bucket{route="checkout",track="canary",le="0.001"} 3"#,
        r#"switchyard_request_duration_seconds_bucket{route="checkout",track="canary",le="0.025"} 3"#,
        r#"switchyard_request_duration_seconds_bucket{route="checkout",track="canary",le="0.01"} 3"#,
        r#"switchyard_request_duration_seconds_bucket{route="checkout",track="canary",le="0.05"} 4"#,
        r#"switchyard_request_duration_seconds_bucket{route="checkout",track="canary",le="+Inf"} 4"#,
        r#"switchyard_request_duration_seconds_count{route="checkout",track="canary"} 4"#,
        r#"switchyard_upstream_errors_total{kind="timeout",route="checkout",track="canary"} 1"#,
        r#"switchyard_upstream_errors_total{kind="connect",route="checkout",track="canary"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let sum_line = text
        .lines()
        .find(|l| l.starts_with(r#"switchyard_request_duration_seconds_sum{route="checkout",track="canary"}"#))
        .unwrap();
    let sum: f64 = sum_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((sum - 0.033).abs() < 0.0001, "{sum}");
    assert!(metric_families(&recorder.totals(&[])).is_empty());
}

#[test]
fn prometheus_text_gives_each_family_its_lines_together() {
    let pairs = [
        ("checkout", "canary"),
        ("checkout", "stable"),
        ("search", "blue"),
        ("search", "green"),
    ];
    let (recorder, start, slots) = recorder(2, &pairs);
    for (i, (_, _, slot)) in slots.iter().enumerate() {
        recorder.record(*slot, &ok(1 + 10 * i as u64), start);
        recorder.record(*slot, &status(502, Some(UpstreamError::Connect)), start);
        recorder.record_client_error(*slot, ClientError::Aborted, start);
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&metric_families(&recorder.totals(&slots)))
        .unwrap();
    let problems = switchyard_testkit::prometheus::exposition_problems(&text);
    assert!(problems.is_empty(), "{problems:#?}\n{text}");
    // One block per family, in this order, and its size: 4 counters and 136 histogram lines per
    // (route, track), 3 client error kinds per route.
    let mut blocks: Vec<(&str, usize)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| *f == "switchyard_request_duration_seconds")
            })
            .unwrap_or(name);
        match blocks.last_mut() {
            Some((last, n)) if *last == family => *n += 1,
            _ => blocks.push((family, 1)),
        }
    }
    assert_eq!(
        blocks,
        [
            ("switchyard_requests_total", 4 * 4),
            ("switchyard_request_duration_seconds", 4 * 136),
            ("switchyard_upstream_errors_total", 4 * 4),
            ("switchyard_client_errors_total", 2 * 3),
        ]
    );
}

/// One request in a property test: (slot index, status, latency µs, seconds since the previous).
type Op = (usize, u16, u64, i64);

fn op() -> impl Strategy<Value = Op> {
    let step = prop_oneof![8 => -2i64..=3, 1 => 250i64..=320];
    // Below 2048 µs a bucket is a single value; above, wide buckets and the 60 s clamp.
    let latency_us = prop_oneof![0u64..3000, 0u64..70_000_000];
    (0usize..3, 100u16..600, latency_us, step)
}

/// The stats a naive recorder keeps: every request with its effective second.
fn naive(ops: &[Op]) -> Vec<(usize, u16, u64, u64)> {
    let mut second = 0u64;
    let mut slot_second = [0u64; 3];
    ops.iter()
        .map(|&(slot, status, us, step)| {
            second = second.saturating_add_signed(step);
            // A second earlier than the slot's current one counts in the current one.
            slot_second[slot] = slot_second[slot].max(second);
            (slot, status, us, slot_second[slot])
        })
        .collect()
}

fn naive_stats(requests: impl Iterator<Item = (u16, u64)>) -> TrackStats {
    let mut stats = TrackStats::empty();
    for (status, us) in requests {
        stats.requests += 1;
        if (200..600).contains(&status) {
            stats.status_classes[usize::from(status / 100 - 2)] += 1;
        }
        stats.errors += u64::from(status >= 500);
        stats.histogram.saturating_record(us);
    }
    stats
}

proptest! {
    // Each case seals hundreds of seconds, each a scan of a dense histogram: slow unoptimized.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn window_merge_equals_naive_recomputation(
        ops in prop::collection::vec(op(), 1..300),
        window in 1u64..=300,
        ahead in 0u64..3,
    ) {
        let (recorder, start, slots) = recorder(3, &[("a", "stable"), ("a", "canary"), ("b", "stable")]);
        let requests = naive(&ops);
        for &(slot, status, us, second) in &requests {
            let outcome = Outcome { status, latency: Duration::from_micros(us), upstream_error: None };
            recorder.record(slots[slot].2, &outcome, start + secs(second) + Duration::from_millis(us % 1000));
        }
        let now = requests.iter().map(|r| r.3).max().unwrap_or(0) + ahead;
        let stats = recorder.window(&slots, secs(window), Since::Unbounded, start + secs(now));
        let totals = recorder.totals(&slots);
        for (i, (route, tr, _)) in slots.iter().enumerate() {
            let of_slot = || requests.iter().filter(move |r| r.0 == i);
            let expected = naive_stats(of_slot().filter(|r| r.3 + window > now && r.3 <= now).map(|r| (r.1, r.2)));
            let got = track(&stats, route.as_str(), tr.as_str());
            prop_assert_eq!(got, &expected);
            prop_assert_eq!(got.histogram.len(), expected.requests);
            prop_assert_eq!(got.histogram.max(), expected.histogram.max());
            let expected = naive_stats(of_slot().map(|r| (r.1, r.2)));
            prop_assert_eq!(track(&totals, route.as_str(), tr.as_str()), &expected);
        }
    }
}
