//! The measurement path: recording one request, merging a window of per-thread slices, writing
//! `/stats` (with the base64 histogram), and the controller reading it back and merging.
//!
//! `cargo bench -p switchyard-benches --bench record`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_config::InstanceId;
use switchyard_config::stats::StatsDocument;
use switchyard_proxy::record::{Outcome, Recorder, Since, UpstreamError};
use tokio::time::Instant;

/// A recorder with two tracks that saw `seconds` seconds of traffic, 1,000 requests a second.
fn filled(
    seconds: u64,
) -> (
    Recorder,
    Vec<(
        switchyard_config::RouteName,
        switchyard_config::TrackName,
        switchyard_proxy::record::SlotId,
    )>,
    Instant,
) {
    let start = Instant::now();
    let recorder = Recorder::new(2, start);
    let slots: Vec<_> = ["stable", "canary"]
        .iter()
        .map(|t| {
            let (route, track) = ("checkout".into(), (*t).into());
            let slot = recorder.slot(&route, &track);
            (route, track, slot)
        })
        .collect();
    for s in 0..seconds {
        let at = start + Duration::from_secs(s);
        for i in 0..1000u64 {
            let outcome = Outcome {
                status: if i % 100 == 0 { 503 } else { 200 },
                latency: Duration::from_micros(800 + (i * 7919) % 20_000),
                upstream_error: (i % 500 == 0).then_some(UpstreamError::Reset),
            };
            recorder.record(slots[(i % 2) as usize].2, &outcome, at);
        }
    }
    (recorder, slots, start + Duration::from_secs(seconds))
}

fn record(c: &mut Criterion) {
    let (recorder, slots, now) = filled(1);
    let outcome = Outcome {
        status: 200,
        latency: Duration::from_micros(1234),
        upstream_error: None,
    };
    let mut i = 0u64;
    c.bench_function("record/record-one-request", |b| {
        b.iter(|| {
            i += 1;
            recorder.record(slots[(i & 1) as usize].2, black_box(&outcome), now);
        })
    });

    let (recorder, slots, now) = filled(30);
    c.bench_function("record/window-merge-10s", |b| {
        b.iter(|| black_box(recorder.window(&slots, Duration::from_secs(10), Since::Unbounded, now)))
    });
    let window = recorder.window(&slots, Duration::from_secs(10), Since::Unbounded, now);
    let totals = recorder.totals(&slots);
    let instance = InstanceId::from_bits(7);
    let document = || window.to_document(&totals, 7, &instance);
    c.bench_function("record/stats-json-10s", |b| {
        b.iter(|| black_box(serde_json::to_string(&document()).expect("serializes")))
    });

    let json = serde_json::to_string(&document()).expect("serializes");
    c.bench_function("observe/parse-and-merge-10s", |b| {
        b.iter(|| {
            let doc: StatsDocument = serde_json::from_str(black_box(&json)).expect("valid");
            let mut stable = doc.track("checkout", "stable").expect("track");
            stable.merge(&doc.track("checkout", "canary").expect("track"));
            black_box(stable)
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
