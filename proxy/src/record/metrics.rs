//! Lifetime totals as Prometheus metric families, for `/metrics`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use prometheus::proto::{Bucket, Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use switchyard_config::stats::{HIGHEST_LATENCY_US, NameStatus};

use super::{ClientError, WindowStats, route_client_errors};

/// One decade of `switchyard_request_duration_seconds` bounds, in hundredths of its start: 1 to
/// 2.5 in 11 geometric steps, 2.5 to 5 and 5 to 10 in 8 each, rounded to 3 significant digits. No
/// step is more than 9.4% (128 → 140), which bounds the error of a `histogram_quantile` (linear
/// interpolation within a bucket) at 9.4% of the true quantile; and the bounds of the first
/// exposition (1, 2.5 and 5 of every decade) stay bounds, so a query on one of them keeps working.
const DECADE: [u64; 27] = [
    100, 109, 118, 128, 140, 152, 165, 179, 195, 212, 230, 250, 273, 297, 324, 354, 386, 420, 459, 500, 545, 595, 648,
    707, 771, 841, 917,
];

/// `switchyard_request_duration_seconds` bucket upper bounds, µs: 0.1, 0.25 and 0.5 ms, then
/// [`DECADE`] from 1 ms for as long as it stays 10% below the histograms' ceiling (54.5 s), then
/// the ceiling itself, 60 s ([`HIGHEST_LATENCY_US`]: a longer request counts as 60 s, so the
/// `+Inf` bucket always equals the 60 s one). 133 bounds: with `+Inf`, `_sum` and `_count`, 136
/// lines per (route, track).
pub(super) const BUCKETS_US: [u64; 133] = buckets();

const fn buckets() -> [u64; 133] {
    let mut out = [0; 133];
    out[0] = 100;
    out[1] = 250;
    out[2] = 500;
    let mut n = 3;
    let mut decade = 1_000;
    'series: loop {
        let mut i = 0;
        while i < DECADE.len() {
            let bound = DECADE[i] * decade / 100;
            if bound * 11 > HIGHEST_LATENCY_US * 10 {
                break 'series;
            }
            out[n] = bound;
            n += 1;
            i += 1;
        }
        decade *= 10;
    }
    out[n] = HIGHEST_LATENCY_US;
    assert!(n + 1 == out.len(), "BUCKETS_US's length is its number of bounds");
    out
}

const CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];
const UPSTREAM_ERRORS: [&str; 4] = ["connect", "timeout", "reset", "protocol"];

/// The families for `totals` (from [`super::Recorder::totals`]), to encode with
/// `prometheus::TextEncoder` alongside others. Every series exists for every (route, track), zeros
/// included:
///
/// - `switchyard_requests_total{route, track, class="2xx|3xx|4xx|5xx"}`, counter;
/// - `switchyard_request_duration_seconds{route, track}`, histogram with the bounds of
///   [`BUCKETS_US`] (no step above 9.4% from 1 ms to 54.5 s, so that `histogram_quantile` is within
///   that of the proxy's own quantiles); a bucket counts the requests whose latency is at most its
///   bound within the recorder's 3 significant digits, and the sum counts each request at the
///   middle of its histogram bucket (the histogram's mean × count);
/// - `switchyard_upstream_errors_total{route, track, kind="connect|timeout|reset|protocol"}`,
///   counter;
/// - `switchyard_client_errors_total{route, kind="malformed|timeout|aborted"}`, counter: what
///   clients did wrong on the route, in no track's series.
///
/// Each family's lines come together in the text (one family per metric name, every series in
/// it), as the exposition format requires. Labels are in name order. Empty when `totals` has no
/// tracks, since an encoder rejects a family without metrics.
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

/// A counter family with one series per route, `name{route}`, for counts that belong to a
/// route rather than to one of its tracks.
pub fn route_counters<'a>(name: &str, help: &str, values: impl IntoIterator<Item = (&'a str, u64)>) -> MetricFamily {
    let metrics = values
        .into_iter()
        .map(|(route, value)| counter(vec![label("route", route)], value))
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
}

/// The families of the host names the table's endpoints use (`report` from
/// [`crate::dns::Names::report`]), one series per name:
///
/// - `switchyard_dns_addresses{name}`, gauge: the addresses its endpoints go to (the last
///   answer's, kept while lookups fail; 0 for a name that has never resolved);
/// - `switchyard_dns_failures_total{name}`, counter: its lookups that failed.
///
/// Empty when no endpoint is written with a name.
pub fn dns_families(report: &BTreeMap<String, NameStatus>) -> Vec<MetricFamily> {
    if report.is_empty() {
        return Vec::new();
    }
    let (addresses, failures) = report
        .iter()
        .map(|(name, status)| {
            let mut gauge = Gauge::default();
            gauge.set_value(status.addresses.len() as f64);
            let mut metric = Metric::from_label(vec![label("name", name)]);
            metric.set_gauge(gauge);
            (metric, counter(vec![label("name", name)], status.failures))
        })
        .unzip();
    vec![
        family(
            "switchyard_dns_addresses",
            "Addresses an endpoint host name resolved to, by name: the last answer's, kept while lookups fail.",
            MetricType::GAUGE,
            addresses,
        ),
        family(
            "switchyard_dns_failures_total",
            "Lookups of an endpoint host name that failed (an error, no answer in time, no address of dns.family), by name.",
            MetricType::COUNTER,
            failures,
        ),
    ]
}

/// One endpoint of a track whose endpoints' health the proxy keeps, for [`endpoint_families`].
#[derive(Debug, Clone, Copy)]
pub struct EndpointHealthRow<'a> {
    /// Its route's name.
    pub route: &'a str,
    /// Its track's name.
    pub track: &'a str,
    /// `HOST:PORT` as written.
    pub endpoint: &'a str,
    /// Whether it takes the track's requests now (neither ejected nor unhealthy).
    pub serving: bool,
    /// Ejections since start.
    pub ejections: u64,
    /// Health checks failed since start.
    pub check_failures: u64,
}

/// The endpoint health families, one series per row (labels `endpoint`, `route`, `track`):
///
/// - `switchyard_endpoint_ejections_total`, counter: times outlier detection ejected it;
/// - `switchyard_endpoint_healthy`, gauge: 1 while it takes requests, 0 while ejected or
///   unhealthy;
/// - `switchyard_endpoint_health_check_failures_total`, counter: active checks it failed.
///
/// Empty without rows (tracks without `outlierDetection` or `healthCheck` have none).
pub fn endpoint_families(rows: &[EndpointHealthRow<'_>]) -> Vec<MetricFamily> {
    if rows.is_empty() {
        return Vec::new();
    }
    let labels = |r: &EndpointHealthRow<'_>| {
        vec![
            label("endpoint", r.endpoint),
            label("route", r.route),
            label("track", r.track),
        ]
    };
    let ejections = rows.iter().map(|r| counter(labels(r), r.ejections)).collect();
    let healthy = rows
        .iter()
        .map(|r| {
            let mut gauge = Gauge::default();
            gauge.set_value(if r.serving { 1.0 } else { 0.0 });
            let mut metric = Metric::from_label(labels(r));
            metric.set_gauge(gauge);
            metric
        })
        .collect();
    let failures = rows.iter().map(|r| counter(labels(r), r.check_failures)).collect();
    vec![
        family(
            "switchyard_endpoint_ejections_total",
            "Times outlier detection ejected an endpoint, by route, track and endpoint; its requests still count against its track.",
            MetricType::COUNTER,
            ejections,
        ),
        family(
            "switchyard_endpoint_healthy",
            "1 while an endpoint takes its track's requests, 0 while it is ejected or fails its health checks.",
            MetricType::GAUGE,
            healthy,
        ),
        family(
            "switchyard_endpoint_health_check_failures_total",
            "Active health checks an endpoint failed, by route, track and endpoint.",
            MetricType::COUNTER,
            failures,
        ),
    ]
}

/// The families of the shadow series in `totals` (from [`super::Recorder::totals`] of the
/// shadow slots): the copies a route's mirror sent to a track, in families of their own so
/// that no query on the primary ones changes, named as those with `shadow_` after
/// `switchyard_` and with the same labels: `switchyard_shadow_requests_total`,
/// `switchyard_shadow_request_duration_seconds`, `switchyard_shadow_upstream_errors_total`;
/// and `switchyard_shadow_dropped_total{reason, route, track}`, counter, the copies not sent:
/// `reason="max_in_flight"` past `maxInFlight`, `reason="body_too_large"` for a request whose
/// body was over `mirror.body.maxBytes` (`dropped`: route, track, and the two counts). Empty
/// when `totals` has no tracks.
pub fn shadow_metric_families(totals: &WindowStats, dropped: &[(&str, &str, ShadowDropped)]) -> Vec<MetricFamily> {
    let mut families: Vec<MetricFamily> = metric_families(totals)
        .into_iter()
        .filter(|f| f.name() != "switchyard_client_errors_total")
        .map(|mut f| {
            let name = f.name().replacen("switchyard_", "switchyard_shadow_", 1);
            let help = format!("{} Copies sent by a route's mirror, answers discarded.", f.help());
            f.set_name(name);
            f.set_help(help);
            f
        })
        .collect();
    if !dropped.is_empty() {
        let metrics = dropped
            .iter()
            .flat_map(|(route, track, n)| {
                [("max_in_flight", n.max_in_flight), ("body_too_large", n.body_too_large)].map(|(reason, count)| {
                    counter(
                        vec![label("reason", reason), label("route", route), label("track", track)],
                        count,
                    )
                })
            })
            .collect();
        families.push(family(
            "switchyard_shadow_dropped_total",
            "Copies a route's mirror did not send, by reason (max_in_flight: that many were in flight; \
             body_too_large: the request's body was over mirror.body.maxBytes), route and track.",
            MetricType::COUNTER,
            metrics,
        ));
    }
    families
}

/// The copies of one (route, track) a mirror did not send, by reason, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowDropped {
    /// Past `maxInFlight`.
    pub max_in_flight: u64,
    /// Their request's body was over `mirror.body.maxBytes`.
    pub body_too_large: u64,
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

/// The µs histogram as a seconds histogram with [`BUCKETS_US`], in one pass over its buckets.
pub(super) fn duration_histogram(h: &Histogram<u64>) -> prometheus::proto::Histogram {
    // Non-cumulative counts per bound; the last entry is +Inf's own.
    let mut counts = [0u64; BUCKETS_US.len() + 1];
    let mut sum_us = 0.0;
    for v in h.iter_recorded() {
        sum_us += h.median_equivalent(v.value_iterated_to()) as f64 * v.count_since_last_iteration() as f64;
        let lowest = h.lowest_equivalent(v.value_iterated_to());
        let bucket = BUCKETS_US.partition_point(|&le_us| le_us < lowest);
        counts[bucket] += v.count_since_last_iteration();
    }
    let mut cumulative = 0;
    let buckets = BUCKETS_US
        .iter()
        .zip(counts)
        .map(|(&le_us, n)| {
            cumulative += n;
            let mut bucket = Bucket::default();
            // Exact to the µs: the text shows the shortest decimal that reads back as this value.
            bucket.set_upper_bound(le_us as f64 / 1e6);
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

#[cfg(test)]
mod tests;
