//! Lifetime totals as Prometheus metric families, for `/metrics`.

use hdrhistogram::Histogram;
use prometheus::proto::{Bucket, Counter, LabelPair, Metric, MetricFamily, MetricType};

use super::{ClientError, WindowStats, route_client_errors};

/// `switchyard_request_duration_seconds` bucket upper bounds: seconds, and the same in µs.
const BUCKETS: [(f64, u64); 16] = [
    (0.0001, 100),
    (0.00025, 250),
    (0.0005, 500),
    (0.001, 1_000),
    (0.0025, 2_500),
    (0.005, 5_000),
    (0.01, 10_000),
    (0.025, 25_000),
    (0.05, 50_000),
    (0.1, 100_000),
    (0.25, 250_000),
    (0.5, 500_000),
    (1.0, 1_000_000),
    (2.5, 2_500_000),
    (5.0, 5_000_000),
    (10.0, 10_000_000),
];

const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
const UPSTREAM_ERRORS: [&str; 4] = ["connect", "timeout", "reset", "protocol"];

/// The families for `totals` (from [`super::Recorder::totals`]), to encode with
/// `prometheus::TextEncoder` alongside others. Every series exists for every (route, track), zeros
/// included:
///
/// - `switchyard_requests_total{route, track, class="2xx|3xx|4xx|5xx"}`, counter;
/// - `switchyard_request_duration_seconds{route, track}`, histogram; a bucket counts the requests
///   whose latency is at most its bound within the recorder's 3 significant digits, and the sum
///   counts each request at the middle of its histogram bucket (the histogram's mean × count);
/// - `switchyard_upstream_errors_total{route, track, kind="connect|timeout|reset|protocol"}`,
///   counter;
/// - `switchyard_client_errors_total{route, kind="malformed|timeout|aborted"}`, counter: what
///   clients did wrong on the route, in no track's series.
///
/// Labels are in name order. Empty when `totals` has no tracks, since an encoder rejects a family
/// without metrics.
pub fn metric_families(totals: &WindowStats) -> Vec<MetricFamily> {
    let mut requests = Vec::new();
    let mut durations = Vec::new();
    let mut upstream_errors = Vec::new();
    let mut client_errors = Vec::new();
    for (route, tracks) in &totals.routes {
        let client = route_client_errors(tracks);
        for (kind, n) in ClientError::ALL.into_iter().zip(client) {
            client_errors.push(counter(
                vec![label("kind", kind.name()), label("route", route.as_str())],
                n,
            ));
        }
        for (track, stats) in tracks {
            let labels = |extra: Option<(&str, &str)>| {
                let mut pairs: Vec<LabelPair> = extra.into_iter().map(|(name, value)| label(name, value)).collect();
                pairs.push(label("route", route.as_str()));
                pairs.push(label("track", track.as_str()));
                pairs
            };
            for (class, n) in CLASSES.into_iter().zip(stats.status_classes) {
                requests.push(counter(labels(Some(("class", class))), n));
            }
            let mut metric = Metric::from_label(labels(None));
            metric.set_histogram(duration_histogram(&stats.histogram));
            durations.push(metric);
            for (kind, n) in UPSTREAM_ERRORS.into_iter().zip(stats.upstream_errors) {
                upstream_errors.push(counter(labels(Some(("kind", kind))), n));
            }
        }
    }
    if requests.is_empty() {
        return Vec::new();
    }
    vec![
        family(
            "switchyard_requests_total",
            "Requests finished, by route, track and status class (1xx not counted).",
            MetricType::COUNTER,
            requests,
        ),
        family(
            "switchyard_request_duration_seconds",
            "Request latency as the proxy saw it, by route and track.",
            MetricType::HISTOGRAM,
            durations,
        ),
        family(
            "switchyard_upstream_errors_total",
            "Requests the upstream failed, by route, track and kind.",
            MetricType::COUNTER,
            upstream_errors,
        ),
        family(
            "switchyard_client_errors_total",
            "Requests clients got wrong or left, by route and kind; counted against no track.",
            MetricType::COUNTER,
            client_errors,
        ),
    ]
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

fn counter(labels: Vec<LabelPair>, value: u64) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value as f64);
    let mut metric = Metric::from_label(labels);
    metric.set_counter(counter);
    metric
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// The µs histogram as a seconds histogram with [`BUCKETS`], in one pass over its buckets.
fn duration_histogram(h: &Histogram<u64>) -> prometheus::proto::Histogram {
    // Non-cumulative counts per bound; the last entry is +Inf's own.
    let mut counts = [0u64; BUCKETS.len() + 1];
    let mut sum_us = 0.0;
    for v in h.iter_recorded() {
        sum_us += h.median_equivalent(v.value_iterated_to()) as f64 * v.count_since_last_iteration() as f64;
        let lowest = h.lowest_equivalent(v.value_iterated_to());
        let bucket = BUCKETS.partition_point(|&(_, le_us)| le_us < lowest);
        counts[bucket] += v.count_since_last_iteration();
    }
    let mut cumulative = 0;
    let buckets = BUCKETS
        .iter()
        .zip(counts)
        .map(|(&(le, _), n)| {
            cumulative += n;
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(le);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut out = prometheus::proto::Histogram::default();
    out.set_sample_count(h.len());
    out.set_sample_sum(sum_us / 1e6);
    out.set_bucket(buckets);
    out
}
