use std::time::Duration;

use proptest::prelude::*;
use switchyard_config::rollout::{EmergencySpec, MetricSpec};

use super::*;

/// A measurement of the proxies' checks alone: no metric provider was asked.
fn measure(spec: &AnalysisSpec, obs: &Observation, since: &Cumulative) -> Measurement {
    super::measure(spec, obs, since, &Readings::default())
}

/// A histogram with `count` requests at each of `ms` milliseconds.
fn latencies(points: &[(f64, u64)]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
    for &(ms, count) in points {
        h.record_n((ms * 1000.0) as u64, count).unwrap();
    }
    h
}

/// A 10-second window of `requests` requests, `errors` of them errors, all taking `ms`.
fn sample(requests: u64, errors: u64, ms: f64) -> Sample {
    Sample {
        requests,
        errors,
        latency: latencies(&[(ms, requests)]),
        seconds: 10.0,
    }
}

fn obs(candidate: Sample, baseline: Sample) -> Observation {
    Observation { candidate, baseline }
}

fn spec(metrics: Vec<MetricCheck>, emergency: EmergencySpec) -> AnalysisSpec {
    AnalysisSpec {
        initial_delay: Duration::ZERO,
        interval: Duration::from_secs(1),
        window: Duration::from_secs(10),
        min_requests: 100,
        count: None,
        failure_limit: 3,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        sequential_confidence: None,
        series: Default::default(),
        metrics: metrics
            .into_iter()
            .enumerate()
            .map(|(i, check)| MetricSpec {
                name: format!("m{i}"),
                check,
            })
            .collect(),
        emergency,
    }
}

/// Everything since the analysis began, as one interval of these counts.
fn since(candidate_requests: u64, candidate_errors: u64, baseline_requests: u64, baseline_errors: u64) -> Cumulative {
    let mut c = Cumulative::default();
    c += Counts {
        candidate_requests,
        candidate_errors,
        baseline_requests,
        baseline_errors,
    };
    c
}

/// The window as everything since the analysis began.
fn totals_of(o: &Observation) -> Cumulative {
    since(
        o.candidate.requests,
        o.candidate.errors,
        o.baseline.requests,
        o.baseline.errors,
    )
}

/// Measures one metric on `o` (totals = the window) and returns its only result.
fn one(check: MetricCheck, o: &Observation) -> MetricResult {
    let m = measure(&spec(vec![check], EmergencySpec::default()), o, &totals_of(o));
    assert_eq!(m.results.len(), 1);
    assert_eq!(m.outcome, m.results[0].outcome, "one metric decides the measurement");
    m.results.into_iter().next().unwrap()
}

fn healthy() -> Sample {
    sample(10_000, 50, 20.0)
}

#[test]
fn success_rate() {
    let min = MetricCheck::SuccessRate { min: 0.995 };
    let r = one(min.clone(), &obs(sample(1000, 4, 20.0), healthy()));
    assert_eq!((r.outcome, r.value), (Outcome::Pass, Some(0.996)));
    assert_eq!(r.limit, "≥ 99.50%");
    assert_eq!(r.message, "success rate 99.60% ≥ 99.50%");
    let r = one(min.clone(), &obs(sample(1000, 25, 20.0), healthy()));
    assert_eq!((r.outcome, r.value), (Outcome::Fail, Some(0.975)));
    assert_eq!(
        r.message,
        "success rate 97.50% < 99.50% (at most 98.94% with 99.99% confidence, 1000 requests)"
    );
    let r = one(min, &obs(sample(1000, 9, 20.0), healthy()));
    assert_eq!((r.outcome, r.value), (Outcome::Inconclusive, Some(0.991)));
    assert_eq!(
        r.message,
        "success rate 99.10% < 99.50%, but not clearly (could be as high as 99.82% at 99.99% confidence, 1000 requests)"
    );
}

#[test]
fn error_rate() {
    let max = MetricCheck::ErrorRate { max: 0.01 };
    let r = one(max.clone(), &obs(sample(1000, 31, 20.0), healthy()));
    assert_eq!((r.outcome, r.value), (Outcome::Fail, Some(0.031)));
    assert_eq!(
        r.message,
        "error rate 3.10% > 1.00% (at least 1.45% with 99.99% confidence, 1000 requests)"
    );
    let r = one(max.clone(), &obs(sample(1000, 15, 20.0), healthy()));
    assert_eq!(r.outcome, Outcome::Inconclusive);
    assert_eq!(
        r.message,
        "error rate 1.50% > 1.00%, but not clearly (could be as low as 0.47% at 99.99% confidence, 1000 requests)"
    );
    let r = one(max, &obs(sample(1000, 10, 20.0), healthy()));
    assert_eq!(r.outcome, Outcome::Pass, "the limit itself passes");
}

/// The contract's `successRate ≥ 99.5%` on the first windows of a canary at 50 requests/s: at
/// the limit, 0.75 errors are expected in 150 requests, and 7 or more come once in 81,000
/// windows (6 or more once in 8,300, short of 99.99%); one error in a hundred requests (1%,
/// twice the limit) is noise.
#[test]
fn a_rate_fails_only_on_a_clear_breach() {
    let min = MetricCheck::SuccessRate { min: 0.995 };
    let outcome = |n, errors| one(min.clone(), &obs(sample(n, errors, 20.0), healthy())).outcome;
    assert_eq!(outcome(150, 7), Outcome::Fail);
    assert_eq!(outcome(150, 6), Outcome::Inconclusive);
    assert_eq!(outcome(100, 1), Outcome::Inconclusive);
    assert_eq!(outcome(5000, 40), Outcome::Inconclusive, "0.8% of 5,000");
    assert_eq!(outcome(5000, 50), Outcome::Fail, "1% of 5,000");
}

/// The probability that a window of `n` requests from a candidate whose error rate is exactly
/// `p` fails `check`: the binomial probabilities of the error counts that fail, summed.
fn chance_to_fail(check: &MetricCheck, n: u64, p: f64) -> f64 {
    let mut chance = 0.0;
    let mut pmf = (1.0 - p).powf(n as f64);
    for errors in 0..=n {
        if one(check.clone(), &obs(sample(n, errors, 20.0), healthy())).outcome == Outcome::Fail {
            chance += pmf;
        }
        pmf *= (n - errors) as f64 / (errors + 1) as f64 * p / (1.0 - p);
        if errors as f64 > 10.0 * n as f64 * p + 50.0 {
            break;
        }
    }
    chance
}

/// What [`METRIC_CONFIDENCE`] documents: a candidate exactly at its limit fails a window at
/// most once in 10,000, whatever the window's size; the exact test holds its level where only a
/// few errors are expected, too.
#[test]
fn a_candidate_at_its_limit_rarely_fails_a_window() {
    let min = MetricCheck::SuccessRate { min: 0.995 };
    for n in [20, 100, 150, 500, 2500, 5000, 20_000] {
        let chance = chance_to_fail(&min, n, 0.005);
        assert!(chance <= 1.0 - METRIC_CONFIDENCE, "{n} requests: {chance}");
    }
    let chance = chance_to_fail(&MetricCheck::ErrorRate { max: 0.05 }, 2000, 0.05);
    assert!(chance <= 1.0 - METRIC_CONFIDENCE, "5% of 2,000: {chance}");
}

#[test]
fn the_z_scores_match_their_confidence() {
    let phi = |z: f64| 1.0 - 0.5 * sprt::erfc(z / std::f64::consts::SQRT_2);
    assert!((phi(METRIC_Z) - METRIC_CONFIDENCE).abs() < 1e-9);
}

#[test]
fn latency_quantile() {
    let mut c = sample(1000, 0, 20.0);
    c.latency = latencies(&[(20.0, 950), (800.0, 50)]);
    let p99 = MetricCheck::Latency {
        quantile: Quantile::P99,
        max_ms: 500.0,
    };
    let r = one(p99.clone(), &obs(c.clone(), healthy()));
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(
        r.message,
        "p99 latency 800 ms > 500 ms (50 of 1000 requests slower: more than 1.00% with 99.99% confidence)"
    );
    let p90 = MetricCheck::Latency {
        quantile: Quantile::P90,
        max_ms: 100.0,
    };
    let r = one(p90, &obs(c.clone(), healthy()));
    assert_eq!(r.outcome, Outcome::Pass);
    assert_eq!(r.message, "p90 latency 20.0 ms ≤ 100 ms");

    // 1.5% slower than the limit: the p99 is above it, but 15 of 1,000 is within noise of 1%.
    c.latency = latencies(&[(20.0, 985), (800.0, 15)]);
    let r = one(p99.clone(), &obs(c.clone(), healthy()));
    assert_eq!(r.outcome, Outcome::Inconclusive);
    assert_eq!(
        r.message,
        "p99 latency 800 ms > 500 ms, but not clearly (15 of 1000 requests slower: too few to show more than 1.00% with 99.99% confidence)"
    );

    c.latency.reset();
    let r = one(p99, &obs(c, healthy()));
    assert_eq!((r.outcome, r.value), (Outcome::Inconclusive, None));
}

#[test]
fn request_rate() {
    let r = one(
        MetricCheck::RequestRate { min: 50.0 },
        &obs(sample(400, 0, 20.0), healthy()),
    );
    assert_eq!((r.outcome, r.value), (Outcome::Fail, Some(40.0)));
    assert_eq!(r.message, "request rate 40 < 50 req/s");
    let r = one(
        MetricCheck::RequestRate { min: 50.0 },
        &obs(sample(500, 0, 20.0), healthy()),
    );
    assert_eq!(r.outcome, Outcome::Pass);
}

#[test]
fn error_rate_vs_baseline_passes_if_either_bound_holds() {
    let both = MetricCheck::ErrorRateVsBaseline {
        max_ratio: Some(1.1),
        max_diff: Some(0.005),
    };
    // Baseline 0.5%: ratio bound 0.55%, difference bound 1.00%; the larger one applies.
    let r = one(both.clone(), &obs(sample(1000, 10, 20.0), healthy()));
    assert_eq!(r.outcome, Outcome::Pass);
    assert_eq!(r.limit, "≤ 1.00%");
    assert_eq!(
        r.message,
        "error rate 1.00% ≤ 1.00% (baseline 0.50% × 1.1 or baseline 0.50% + 0.5 pp)"
    );
    let r = one(both.clone(), &obs(sample(1000, 31, 20.0), healthy()));
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(
        r.message,
        "error rate 3.10% > 1.00% (baseline 0.50% × 1.1 or baseline 0.50% + 0.5 pp) with 99.99% confidence over 1000 candidate and 10000 baseline requests"
    );
    // Baseline 20%: now the ratio bound (22%) is the larger.
    let r = one(both, &obs(sample(1000, 215, 20.0), sample(10_000, 2000, 20.0)));
    assert_eq!(r.outcome, Outcome::Pass);

    let ratio_only = MetricCheck::ErrorRateVsBaseline {
        max_ratio: Some(1.1),
        max_diff: None,
    };
    let r = one(ratio_only.clone(), &obs(sample(1000, 40, 20.0), healthy()));
    assert_eq!(r.outcome, Outcome::Fail, "4.00% > 0.55%");
    let r = one(ratio_only, &obs(sample(1000, 10, 20.0), healthy()));
    assert_eq!(
        r.outcome,
        Outcome::Inconclusive,
        "1.00% > 0.55%, but 10 errors in 1,000 are noise"
    );
    assert_eq!(
        r.message,
        "error rate 1.00% > 0.55% (baseline 0.50% × 1.1), but not clearly: not with 99.99% confidence over 1000 candidate and 10000 baseline requests"
    );
    let none = MetricCheck::ErrorRateVsBaseline {
        max_ratio: None,
        max_diff: None,
    };
    assert_eq!(one(none, &obs(healthy(), healthy())).outcome, Outcome::Inconclusive);
}

/// The baseline's error rate is measured too: the same candidate is a clear breach against a
/// baseline of 100,000 requests and noise against one of 200.
#[test]
fn a_quiet_baseline_widens_the_comparison() {
    let diff = MetricCheck::ErrorRateVsBaseline {
        max_ratio: None,
        max_diff: Some(0.005),
    };
    let candidate = || sample(5000, 100, 20.0);
    let r = one(diff.clone(), &obs(candidate(), sample(100_000, 500, 20.0)));
    assert_eq!(r.outcome, Outcome::Fail, "2% against 0.5% of 100,000");
    let r = one(diff, &obs(candidate(), sample(200, 1, 20.0)));
    assert_eq!(r.outcome, Outcome::Inconclusive, "2% against 1 error in 200");
}

#[test]
fn comparisons_with_a_quiet_baseline_are_inconclusive() {
    let o = obs(sample(1000, 100, 900.0), sample(99, 0, 10.0));
    let r = one(
        MetricCheck::ErrorRateVsBaseline {
            max_ratio: Some(1.1),
            max_diff: Some(0.005),
        },
        &o,
    );
    assert_eq!((r.outcome, r.value), (Outcome::Inconclusive, Some(0.1)));
    assert_eq!(
        r.message,
        "not judged: 99 baseline requests in the window, fewer than minRequests 100"
    );
    let r = one(
        MetricCheck::LatencyVsBaseline {
            quantile: Quantile::P99,
            max_ratio: 1.2,
        },
        &o,
    );
    assert_eq!(r.outcome, Outcome::Inconclusive);
}

#[test]
fn latency_vs_baseline() {
    let p99 = MetricCheck::LatencyVsBaseline {
        quantile: Quantile::P99,
        max_ratio: 1.2,
    };
    let r = one(p99.clone(), &obs(sample(1000, 0, 23.0), healthy()));
    assert_eq!(r.outcome, Outcome::Pass);
    assert_eq!(r.message, "p99 latency 23.0 ms ≤ 24.0 ms (baseline 20.0 ms × 1.2)");
    let r = one(p99, &obs(sample(1000, 0, 30.0), healthy()));
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(r.limit, "≤ 24.0 ms");
    assert_eq!(
        r.message,
        "p99 latency 30.0 ms > 24.0 ms (baseline 20.0 ms × 1.2): 1000 of 1000 requests slower than 24.0 ms (baseline up to 20.0 ms × 1.2), more than 1.00% with 99.99% confidence"
    );
}

/// The baseline's p99 over 1,000 requests is 20 ms, but ten of them took 40 ms: its true p99
/// could well be 40 ms, so a candidate at 30 ms is not clearly slower than 1.2 times it.
#[test]
fn latency_vs_an_uncertain_baseline_is_inconclusive() {
    let p99 = MetricCheck::LatencyVsBaseline {
        quantile: Quantile::P99,
        max_ratio: 1.2,
    };
    let mut baseline = sample(1000, 0, 20.0);
    baseline.latency = latencies(&[(20.0, 990), (40.0, 10)]);
    let r = one(p99.clone(), &obs(sample(1000, 0, 30.0), baseline.clone()));
    assert_eq!(r.outcome, Outcome::Inconclusive);
    assert_eq!(
        r.message,
        "p99 latency 30.0 ms > 24.0 ms (baseline 20.0 ms × 1.2), but not clearly: 0 of 1000 requests slower than 48.0 ms (baseline up to 40.0 ms × 1.2), too few to show more than 1.00% with 99.99% confidence"
    );
    let r = one(p99, &obs(sample(1000, 0, 60.0), baseline));
    assert_eq!(r.outcome, Outcome::Fail);
}

#[test]
fn sequential_error_rate() {
    let seq = |confidence| MetricCheck::SequentialErrorRate { confidence };
    // 2.5% against 0.5% over 5,000 candidate requests: overwhelming.
    let bad = obs(sample(5_000, 125, 20.0), sample(95_000, 475, 20.0));
    let r = one(seq(0.99), &bad);
    assert_eq!(r.outcome, Outcome::Fail);
    assert!(r.value.unwrap() > 1e20);
    assert!(
        r.message.ends_with("candidate worse with 99% confidence"),
        "{}",
        r.message
    );
    assert_eq!(r.limit, "evidence < 100 (99% confidence)");

    let same = obs(sample(5_000, 25, 20.0), sample(95_000, 475, 20.0));
    let r = one(seq(0.99), &same);
    assert_eq!(r.outcome, Outcome::Pass);
    assert!(r.value.unwrap() < 1.0, "{r:?}");
    assert_eq!(
        r.message,
        format!(
            "error rate 0.50% vs baseline 0.50% over 5000 and 95000 requests: evidence {} < 100",
            num(r.value.unwrap())
        )
    );

    // The window has enough requests, but nothing was counted since the analysis began.
    let m = measure(
        &spec(vec![seq(0.99)], EmergencySpec::default()),
        &bad,
        &Cumulative::default(),
    );
    assert_eq!(m.outcome, Outcome::Inconclusive);
    assert_eq!(m.results[0].value, None);

    assert_eq!(one(seq(1.0), &bad).outcome, Outcome::Inconclusive);
    assert_eq!(one(seq(f64::NAN), &bad).outcome, Outcome::Inconclusive);
}

/// A sequential rejection needs no `minRequests` and marks the measurement, so that the tracker
/// aborts at once.
#[test]
fn a_sequential_rejection_fails_below_min_requests() {
    let s = spec(
        vec![MetricCheck::SequentialErrorRate { confidence: 0.99 }],
        EmergencySpec::default(),
    );
    let o = obs(sample(60, 12, 20.0), healthy());
    let m = measure(&s, &o, &since(60, 12, 1_000, 5));
    assert_eq!(m.outcome, Outcome::Fail);
    assert!(m.sequential && !m.emergency);
    let mut run = Tracker::new(&s);
    assert!(matches!(
        run.record(&m, true),
        Verdict::Abort {
            reason: AbortReason::Sequential { .. }
        }
    ));
}

fn with_sequential(metrics: Vec<MetricCheck>, confidence: f64) -> AnalysisSpec {
    let mut s = spec(metrics, EmergencySpec::default());
    s.sequential_confidence = Some(confidence);
    s
}

/// The contract's `successRate ≥ 99.5%` at 40 requests/s: after two seconds, 5 errors in 80
/// requests reject "at most 0.5%" at 99.5%, while the window is not judged yet (minRequests).
#[test]
fn success_and_error_rates_get_a_sequential_judge() {
    let s = with_sequential(
        vec![
            MetricCheck::SuccessRate { min: 0.995 },
            MetricCheck::ErrorRate { max: 0.05 },
        ],
        0.995,
    );
    let o = obs(sample(80, 5, 20.0), healthy());
    let m = measure(&s, &o, &since(80, 5, 1_920, 10));
    let names: Vec<&str> = m.results.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["m0", "m0.sequential", "m1", "m1.sequential"]);
    assert_eq!(m.results[0].outcome, Outcome::Inconclusive);
    let r = &m.results[1];
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(r.limit, "evidence < 200 (99.5% confidence)");
    assert_eq!(
        r.message,
        format!(
            "success rate 93.75% over 80 requests since the analysis began: evidence {} ≥ 200, below 99.50% with 99.5% confidence",
            num(r.value.unwrap())
        )
    );
    assert_eq!(
        m.results[3].outcome,
        Outcome::Pass,
        "6.25% of 80 is no proof of more than 5%"
    );
    assert!(m.sequential);
    assert_eq!(m.outcome, Outcome::Fail);

    // A healthy candidate: the evidence shrinks, the row passes.
    let m = measure(&s, &obs(healthy(), healthy()), &since(10_000, 50, 10_000, 50));
    assert_eq!(m.results[1].outcome, Outcome::Pass);
    assert!(m.results[1].value.unwrap() < 1.0);
    assert!(!m.sequential);
    assert_eq!(m.outcome, Outcome::Pass);

    // Nothing since the analysis began: nothing to judge.
    let m = measure(&s, &obs(healthy(), healthy()), &Cumulative::default());
    assert_eq!(m.results[1].outcome, Outcome::Inconclusive);
    assert_eq!(m.results[1].message, "no candidate requests since the analysis began");

    // `sequentialConfidence: off`.
    let mut off = s.clone();
    off.sequential_confidence = None;
    assert_eq!(measure(&off, &o, &since(80, 5, 1_920, 10)).results.len(), 2);
}

#[test]
fn too_few_candidate_requests_are_inconclusive_but_keep_their_values() {
    let s = spec(vec![MetricCheck::ErrorRate { max: 0.01 }], EmergencySpec::default());
    let o = obs(sample(99, 10, 20.0), healthy());
    let m = measure(&s, &o, &totals_of(&o));
    assert_eq!(m.outcome, Outcome::Inconclusive);
    assert_eq!(m.results[0].value, Some(10.0 / 99.0));
    assert_eq!(
        m.results[0].message,
        "not judged: 99 candidate requests in the window, fewer than minRequests 100"
    );
    // Also without any metric: no data is not a pass.
    let empty = spec(Vec::new(), EmergencySpec::default());
    assert_eq!(measure(&empty, &o, &totals_of(&o)).outcome, Outcome::Inconclusive);
    let o = obs(healthy(), healthy());
    assert_eq!(measure(&empty, &o, &totals_of(&o)).outcome, Outcome::Pass);
}

#[test]
fn any_failure_fails_and_any_inconclusive_holds_back_a_pass() {
    let o = obs(sample(1000, 31, 20.0), sample(50, 0, 20.0));
    let vs = MetricCheck::ErrorRateVsBaseline {
        max_ratio: Some(1.1),
        max_diff: None,
    };
    let m = measure(
        &spec(
            vec![MetricCheck::ErrorRate { max: 0.01 }, vs.clone()],
            EmergencySpec::default(),
        ),
        &o,
        &totals_of(&o),
    );
    assert_eq!(m.outcome, Outcome::Fail);
    assert_eq!(
        m.failures(),
        "m0: error rate 3.10% > 1.00% (at least 1.45% with 99.99% confidence, 1000 requests)"
    );
    let m = measure(
        &spec(vec![MetricCheck::ErrorRate { max: 0.05 }, vs], EmergencySpec::default()),
        &o,
        &totals_of(&o),
    );
    assert_eq!(m.outcome, Outcome::Inconclusive);
}

const EMERGENCY: EmergencySpec = EmergencySpec {
    error_rate: Some(0.05),
    latency_p99_ms: Some(2000.0),
};

fn emergency(candidate: Sample) -> Measurement {
    let o = obs(candidate, healthy());
    measure(
        &spec(vec![MetricCheck::ErrorRate { max: 0.01 }], EMERGENCY),
        &o,
        &totals_of(&o),
    )
}

#[test]
fn a_crashed_candidate_aborts_within_its_first_twenty_requests() {
    let m = emergency(sample(20, 20, 5.0));
    assert!(m.emergency);
    assert_eq!(m.outcome, Outcome::Fail, "even below minRequests");
    assert_eq!(m.results[0].name, "emergency.errorRate");
    assert_eq!(
        m.results[0].message,
        "error rate 100.00% > emergency limit 5.00% (at least 79.43% with 99% confidence, 20 requests)"
    );
    assert_eq!(m.results[2].outcome, Outcome::Inconclusive, "the ordinary metric waits");
}

#[test]
fn a_few_unlucky_errors_are_not_an_emergency() {
    for (n, errors) in [(1, 1), (19, 19), (30, 2), (500, 31)] {
        let m = emergency(sample(n, errors, 20.0));
        assert!(!m.emergency, "{errors} errors in {n} requests");
        assert_eq!(m.results[0].outcome, Outcome::Inconclusive);
        assert!(m.results[0].message.contains("not yet with 99% confidence"));
    }
    assert!(emergency(sample(500, 45, 20.0)).emergency, "9% of 500");
}

#[test]
fn slow_requests_are_an_emergency_only_when_clearly_more_than_one_percent() {
    let mut c = sample(500, 0, 20.0);
    c.latency = latencies(&[(20.0, 480), (3000.0, 20)]);
    let m = emergency(c.clone());
    assert!(m.emergency);
    assert_eq!(
        m.results[1].message,
        "p99 latency 3000 ms > emergency limit 2000 ms (20 of 500 requests slower)"
    );
    c.latency = latencies(&[(20.0, 19), (3000.0, 1)]);
    c.requests = 20;
    let m = emergency(c);
    assert!(!m.emergency, "one hung request of 20");
    let m = emergency(sample(500, 0, 1900.0));
    assert_eq!(m.results[1].outcome, Outcome::Pass);
}

#[test]
fn measurements_serialize_as_camel_case() {
    let m = emergency(sample(20, 20, 5.0));
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["outcome"], "fail");
    assert_eq!(json["emergency"], true);
    assert_eq!(json["results"][0]["limit"], "≤ 5.00%");
    assert_eq!(serde_json::from_value::<Measurement>(json).unwrap(), m);
}

fn arb_quantile() -> impl Strategy<Value = Quantile> {
    prop_oneof![
        Just(Quantile::P50),
        Just(Quantile::P90),
        Just(Quantile::P99),
        Just(Quantile::P999)
    ]
}

fn arb_check() -> impl Strategy<Value = MetricCheck> {
    prop_oneof![
        (0.0..=1.0f64).prop_map(|min| MetricCheck::SuccessRate { min }),
        (0.0..=1.0f64).prop_map(|max| MetricCheck::ErrorRate { max }),
        (arb_quantile(), 0.0..3000.0f64).prop_map(|(quantile, max_ms)| MetricCheck::Latency { quantile, max_ms }),
        (0.0..200.0f64).prop_map(|min| MetricCheck::RequestRate { min }),
        (proptest::option::of(0.5..3.0f64), proptest::option::of(0.0..0.1f64))
            .prop_map(|(max_ratio, max_diff)| MetricCheck::ErrorRateVsBaseline { max_ratio, max_diff }),
        (arb_quantile(), 0.5..3.0f64)
            .prop_map(|(quantile, max_ratio)| MetricCheck::LatencyVsBaseline { quantile, max_ratio }),
        (0.5..0.9999f64).prop_map(|confidence| MetricCheck::SequentialErrorRate { confidence }),
    ]
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    (
        0u64..2000,
        0.0..1.05f64,
        proptest::collection::vec(1u64..5_000_000, 0..30),
        0.0..60.0f64,
    )
        .prop_map(|(requests, share, values, seconds)| {
            let mut latency = Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
            for v in values {
                latency.record(v).unwrap();
            }
            Sample {
                requests,
                errors: (requests as f64 * share) as u64,
                latency,
                seconds,
            }
        })
}

fn arb_case() -> impl Strategy<Value = (AnalysisSpec, Observation, Cumulative)> {
    (
        proptest::collection::vec(arb_check(), 0..6),
        proptest::option::of(0.0..1.0f64),
        proptest::option::of(0.0..3000.0f64),
        0u64..500,
        arb_sample(),
        arb_sample(),
        (0u64..100_000, 0u64..5_000, 0u64..1_000_000, 0u64..50_000),
        proptest::option::of(0.5..0.9999f64),
    )
        .prop_map(
            |(checks, error_rate, latency_p99_ms, min_requests, candidate, baseline, t, sequential)| {
                let mut s = spec(
                    checks,
                    EmergencySpec {
                        error_rate,
                        latency_p99_ms,
                    },
                );
                s.min_requests = min_requests;
                s.sequential_confidence = sequential;
                (s, Observation { candidate, baseline }, since(t.0, t.1, t.2, t.3))
            },
        )
}

proptest! {
    #[test]
    fn never_a_pass_below_min_requests((s, o, t) in arb_case()) {
        let m = measure(&s, &o, &t);
        if o.candidate.requests < s.min_requests {
            prop_assert_ne!(m.outcome, Outcome::Pass);
        }
        let judged = s.metrics.iter().filter(|m| matches!(m.check, MetricCheck::SuccessRate { .. } | MetricCheck::ErrorRate { .. })).count();
        let sequential = if s.sequential_confidence.is_some() { judged } else { 0 };
        prop_assert_eq!(m.results.len(), s.metrics.len() + sequential + usize::from(s.emergency.error_rate.is_some())
            + usize::from(s.emergency.latency_p99_ms.is_some()));
    }

    #[test]
    fn a_failed_check_fails_the_measurement((s, o, t) in arb_case()) {
        let m = measure(&s, &o, &t);
        let any_fail = m.results.iter().any(|r| r.outcome == Outcome::Fail);
        prop_assert_eq!(any_fail, m.outcome == Outcome::Fail);
        if m.emergency || m.sequential {
            prop_assert_eq!(m.outcome, Outcome::Fail);
        }
        let sequential_fail = m.results.iter().any(|r| r.outcome == Outcome::Fail
            && (r.name.ends_with(".sequential") || s.metrics.iter().any(|x| x.name == r.name && matches!(x.check, MetricCheck::SequentialErrorRate { .. }))));
        prop_assert_eq!(sequential_fail, m.sequential);
        if m.outcome == Outcome::Pass {
            prop_assert!(m.results.iter().all(|r| r.outcome == Outcome::Pass));
        }
    }
}

fn rank(o: Outcome) -> u8 {
    match o {
        Outcome::Pass => 0,
        Outcome::Inconclusive => 1,
        Outcome::Error => 2,
        Outcome::Fail => 3,
    }
}

proptest! {
    #[test]
    fn wilson_bounds_hold_the_estimate(n in 1u64..10_000_000, share in 0.0..=1.0f64, z in 0.0..5.0f64) {
        let hits = (share * n as f64) as u64;
        let (lower, upper) = wilson(hits, n, z);
        let p = hits as f64 / n as f64;
        prop_assert!(0.0 <= lower && lower <= p + 1e-12, "{lower} vs {p}");
        prop_assert!(p <= upper + 1e-12 && upper <= 1.0, "{upper} vs {p}");
    }

    /// More errors in the same window never judge better, and a failed rate is beyond its limit.
    #[test]
    fn more_errors_never_judge_better(n in 1u64..20_000, a in 0.0..=1.0f64, b in 0.0..=1.0f64, max in 0.0..0.2f64) {
        let (fewer, more) = ((a.min(b) * n as f64) as u64, (a.max(b) * n as f64) as u64);
        let checks = [
            MetricCheck::ErrorRate { max },
            MetricCheck::SuccessRate { min: 1.0 - max },
            MetricCheck::ErrorRateVsBaseline { max_ratio: Some(1.5), max_diff: Some(max) },
        ];
        for check in checks {
            let judge = |errors| one(check.clone(), &obs(sample(n, errors, 20.0), healthy()));
            let (r_fewer, r_more) = (judge(fewer), judge(more));
            prop_assert!(rank(r_fewer.outcome) <= rank(r_more.outcome), "{check:?}: {r_fewer:?} then {r_more:?}");
            for r in [r_fewer, r_more] {
                let errors = match check {
                    MetricCheck::SuccessRate { .. } => 1.0 - r.value.unwrap(),
                    _ => r.value.unwrap(),
                };
                if r.outcome == Outcome::Fail {
                    prop_assert!(errors > max, "{check:?}: {r:?}");
                }
            }
        }
    }
}

// ---- metric providers beside the proxies' checks ------------------------------------------

fn prometheus_max(max: f64) -> MetricCheck {
    MetricCheck::Prometheus(switchyard_config::rollout::PrometheusQuery {
        address: "http://127.0.0.1:9090".into(),
        query: "up".into(),
        timeout: None,
        judge: switchyard_config::rollout::Judge::Range {
            min: None,
            max: Some(max),
        },
    })
}

/// The readings of one measurement: the metric `m{i}` read `reading`.
fn read(i: usize, reading: Reading) -> Readings {
    Readings([(format!("m{i}"), reading)].into_iter().collect())
}

#[test]
fn providers_are_judged_in_spec_order_beside_the_proxies_checks() {
    let s = spec(
        vec![MetricCheck::ErrorRate { max: 0.05 }, prometheus_max(0.01)],
        EmergencySpec::default(),
    );
    let o = obs(healthy(), healthy());
    let m = super::measure(&s, &o, &totals_of(&o), &read(1, Reading::Scalar(0.002)));
    let rows: Vec<(&str, Outcome)> = m.results.iter().map(|r| (r.name.as_str(), r.outcome)).collect();
    assert_eq!(rows, [("m0", Outcome::Pass), ("m1", Outcome::Pass)]);
    assert_eq!(m.outcome, Outcome::Pass);

    // A failing provider fails the measurement, and takes no short-cut.
    let m = super::measure(&s, &o, &totals_of(&o), &read(1, Reading::Scalar(0.2)));
    assert_eq!((m.outcome, m.emergency, m.sequential), (Outcome::Fail, false, false));
    assert_eq!(m.failures(), "m1: query value 0.2 > max 0.01");

    // One that gave no usable answer makes it an error, unless something failed.
    let refused = || {
        read(
            1,
            Reading::Failed("cannot reach Prometheus at http://127.0.0.1:9090: connection refused".into()),
        )
    };
    assert_eq!(
        super::measure(&s, &o, &totals_of(&o), &refused()).outcome,
        Outcome::Error
    );
    let bad = obs(sample(2000, 400, 20.0), healthy());
    assert_eq!(
        super::measure(&s, &bad, &totals_of(&bad), &refused()).outcome,
        Outcome::Fail
    );
}

#[test]
fn min_requests_holds_back_the_proxies_checks_only() {
    let quiet = obs(sample(10, 0, 20.0), healthy());
    let mixed = spec(
        vec![MetricCheck::ErrorRate { max: 0.05 }, prometheus_max(0.01)],
        EmergencySpec::default(),
    );
    let m = super::measure(&mixed, &quiet, &totals_of(&quiet), &read(1, Reading::Scalar(0.5)));
    assert_eq!(m.results[0].outcome, Outcome::Inconclusive);
    assert_eq!(m.results[1].outcome, Outcome::Fail);
    let m = super::measure(&mixed, &quiet, &totals_of(&quiet), &read(1, Reading::Scalar(0.002)));
    assert_eq!(m.outcome, Outcome::Inconclusive, "the proxies' check is not judged yet");

    // An analysis of providers alone is judged on them alone, with or without requests.
    let alone = spec(vec![prometheus_max(0.01)], EmergencySpec::default());
    let none = obs(sample(0, 0, 20.0), sample(0, 0, 20.0));
    let m = super::measure(&alone, &none, &Cumulative::default(), &read(0, Reading::Scalar(0.002)));
    assert_eq!(m.outcome, Outcome::Pass);
    let m = super::measure(&alone, &none, &Cumulative::default(), &read(0, Reading::Vector(vec![])));
    assert_eq!(m.outcome, Outcome::Inconclusive);
    // A reading missing for a provider is an error of the measurement, never a pass.
    let m = super::measure(&alone, &none, &Cumulative::default(), &Readings::default());
    assert_eq!(m.outcome, Outcome::Error);
}
