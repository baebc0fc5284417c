//! Analysis: judges a rollout's candidate track against its baseline from the proxies' per-track
//! measurements. Everything here is pure — stats in, verdicts out, no I/O and no clock: time
//! enters only as [`Sample::seconds`] and as the order of [`Tracker::record`] calls.
//!
//! The control loop runs two stages every `interval`:
//!
//! 1. [`measure`] turns one stats window of both tracks ([`Observation`]) and the totals since the
//!    analysis began ([`Cumulative`]) into a [`Measurement`]: one [`MetricResult`] per emergency
//!    limit and per metric, and an [`Outcome`] for the whole.
//! 2. A [`Tracker`] folds the measurements of one analysis run into a [`Verdict`]: continue,
//!    passed, abort, or pause because nothing conclusive comes in.
//!
//! ```
//! use std::time::Duration;
//!
//! use hdrhistogram::Histogram;
//! use switchyard_config::rollout::{AnalysisSpec, EmergencySpec, MetricCheck, MetricSpec};
//! use switchyard_control::analyze::{Cumulative, Observation, Outcome, Sample, Tracker, Verdict, measure};
//!
//! let spec = AnalysisSpec {
//!     interval: Duration::from_secs(1),
//!     window: Duration::from_secs(10),
//!     min_requests: 100,
//!     count: None,
//!     failure_limit: 3,
//!     inconclusive_limit: 0,
//!     consecutive_error_limit: 4,
//!     metrics: vec![MetricSpec { name: "error-rate".into(), check: MetricCheck::ErrorRate { max: 0.01 } }],
//!     emergency: EmergencySpec { error_rate: Some(0.05), latency_p99_ms: None },
//! };
//! let window = |requests, errors| Sample {
//!     requests,
//!     errors,
//!     latency: Histogram::new(2).unwrap(),
//!     seconds: 10.0,
//! };
//! let obs = Observation { candidate: window(500, 45), baseline: window(9_500, 40) };
//! let totals = Cumulative { candidate_requests: 500, candidate_errors: 45, baseline_requests: 9_500, baseline_errors: 40 };
//!
//! let m = measure(&spec, &obs, &totals);
//! assert_eq!(m.outcome, Outcome::Fail);
//! assert!(m.emergency); // 45 errors in 500 requests: above 5% with 99% confidence
//! assert_eq!(m.results[1].message, "error rate 9.00% > 1.00%");
//!
//! let mut run = Tracker::new(&spec);
//! assert!(matches!(run.record(&m, true), Verdict::Abort { .. }));
//! ```

use std::fmt::Write as _;
use std::ops::AddAssign;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use switchyard_config::rollout::{AnalysisSpec, MetricCheck, Quantile};

pub mod sprt;
mod tracker;

pub use tracker::{AbortReason, Tracker, Verdict};

/// An emergency limit needs at least this many candidate requests in the window (or
/// `minRequests`, when that is lower) before it can abort: one error among the first three
/// requests is not an emergency.
pub const EMERGENCY_MIN_REQUESTS: u64 = 20;

/// One-sided confidence with which a window must show an emergency breach before it aborts at
/// once (see [`measure`]).
pub const EMERGENCY_CONFIDENCE: f64 = 0.99;

/// z-score of [`EMERGENCY_CONFIDENCE`] (one-sided): Φ⁻¹(0.99).
const EMERGENCY_Z: f64 = 2.326_347_874_040_841;

/// One track's stats over one window, merged over every proxy serving the route.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Requests that finished in the window.
    pub requests: u64,
    /// Of those, requests answered with a 5xx status (the proxy's own 502, 503 and 504 included).
    pub errors: u64,
    /// Latency of the window's requests, µs.
    pub latency: Histogram<u64>,
    /// Length of the window the counts cover, seconds (shorter than the spec's window while the
    /// analysis is younger than it).
    pub seconds: f64,
}

impl Sample {
    /// Errors ÷ requests; `None` without requests. Errors beyond `requests` count as `requests`.
    pub fn error_rate(&self) -> Option<f64> {
        rate(self.errors, self.requests)
    }

    /// The latency at `quantile` in ms; `None` when the histogram is empty.
    pub fn latency_ms(&self, quantile: Quantile) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(quantile.fraction()) as f64 / 1000.0)
    }
}

/// The two tracks over the same window.
#[derive(Debug, Clone)]
pub struct Observation {
    /// The track being rolled out.
    pub candidate: Sample,
    /// The track in service.
    pub baseline: Sample,
}

/// Request and error totals of both tracks since the analysis began, for the sequential judge.
/// The caller adds each window's fresh counts (`+=`), or passes lifetime totals minus those at
/// the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cumulative {
    /// Candidate requests since the analysis began.
    pub candidate_requests: u64,
    /// Candidate errors since the analysis began.
    pub candidate_errors: u64,
    /// Baseline requests since the analysis began.
    pub baseline_requests: u64,
    /// Baseline errors since the analysis began.
    pub baseline_errors: u64,
}

impl AddAssign for Cumulative {
    fn add_assign(&mut self, fresh: Self) {
        self.candidate_requests = self.candidate_requests.saturating_add(fresh.candidate_requests);
        self.candidate_errors = self.candidate_errors.saturating_add(fresh.candidate_errors);
        self.baseline_requests = self.baseline_requests.saturating_add(fresh.baseline_requests);
        self.baseline_errors = self.baseline_errors.saturating_add(fresh.baseline_errors);
    }
}

/// How a check, or a whole measurement, came out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Within its limit.
    Pass,
    /// Beyond its limit.
    Fail,
    /// Not enough data to say; never counts as a pass.
    #[default]
    Inconclusive,
}

/// One check of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    /// The metric's name from the spec; emergency limits are `emergency.errorRate` and
    /// `emergency.latencyP99Ms`.
    pub name: String,
    /// How it came out.
    pub outcome: Outcome,
    /// What was measured, in the unit of the check: a share (0 to 1) for rates, ms for latency,
    /// requests/s for request rate, the likelihood ratio for the sequential judge. `None` when
    /// there was nothing to measure.
    pub value: Option<f64>,
    /// The limit as a person reads it (`≤ 1.00%`, `≤ 500 ms`).
    pub limit: String,
    /// What happened, with values (`error rate 3.10% > 1.00%`).
    pub message: String,
}

/// The judgement of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Fail if any result failed; otherwise inconclusive if any result was; otherwise pass.
    pub outcome: Outcome,
    /// An emergency limit was breached: abort now, whatever `failureLimit` says.
    pub emergency: bool,
    /// Emergency limits first (those configured), then the metrics in spec order.
    pub results: Vec<MetricResult>,
}

impl Measurement {
    /// The failed results as one line, `name: message; name: message`.
    pub fn failures(&self) -> String {
        let mut out = String::new();
        for r in self.results.iter().filter(|r| r.outcome == Outcome::Fail) {
            if !out.is_empty() {
                out.push_str("; ");
            }
            // Writing into a `String` cannot fail.
            let _ = write!(out, "{}: {}", r.name, r.message);
        }
        out
    }
}

/// Judges one window.
///
/// - **Emergency limits** are checked first, on the candidate's window. One aborts at once
///   (`emergency: true`, outcome Fail) when the window holds at least [`EMERGENCY_MIN_REQUESTS`]
///   candidate requests (or `minRequests`, if lower) *and* shows the breach with
///   [`EMERGENCY_CONFIDENCE`]: the Wilson score lower bound of the error rate — or, for p99, of
///   the share of requests slower than the limit — must exceed the limit (the share 1%). A
///   crashed candidate clears that bar within its first 20 requests (20 errors in 20 bound the
///   rate above 78%); two errors among 30 requests in a quiet minute, which a plain comparison
///   would call a 6.7% emergency, do not. A breach seen but not yet confident makes that row
///   Inconclusive; the ordinary metrics and `failureLimit` still catch it.
/// - Fewer than `minRequests` candidate requests in the window make every metric Inconclusive
///   (values are still reported), so the measurement is never a pass and, barring an
///   emergency, never a failure.
/// - Comparisons with the baseline (`errorRateVsBaseline`, `latency…VsBaseline`) are
///   Inconclusive while the baseline's window has fewer than `minRequests` requests; the
///   sequential judge is Inconclusive until both tracks have `minRequests` requests in
///   [`Cumulative`].
pub fn measure(spec: &AnalysisSpec, obs: &Observation, totals: &Cumulative) -> Measurement {
    let candidate = &obs.candidate;
    let mut results = Vec::with_capacity(spec.metrics.len() + 2);
    let floor = EMERGENCY_MIN_REQUESTS.min(spec.min_requests).max(1);
    if let Some(max) = spec.emergency.error_rate {
        results.push(emergency_error_rate(candidate, max, floor));
    }
    if let Some(max_ms) = spec.emergency.latency_p99_ms {
        results.push(emergency_latency(candidate, max_ms, floor));
    }
    let emergency = results.iter().any(|r| r.outcome == Outcome::Fail);

    let enough = candidate.requests >= spec.min_requests.max(1);
    for metric in &spec.metrics {
        let mut r = check(&metric.name, &metric.check, spec.min_requests, obs, totals);
        if !enough {
            r.outcome = Outcome::Inconclusive;
            r.message = format!(
                "not judged: {} candidate requests in the window, fewer than minRequests {}",
                candidate.requests, spec.min_requests
            );
        }
        results.push(r);
    }

    let outcome = if results.iter().any(|r| r.outcome == Outcome::Fail) {
        Outcome::Fail
    } else if !enough || results.iter().any(|r| r.outcome == Outcome::Inconclusive) {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    Measurement {
        outcome,
        emergency,
        results,
    }
}

fn emergency_error_rate(candidate: &Sample, max: f64, floor: u64) -> MetricResult {
    let name = "emergency.errorRate";
    let limit = format!("≤ {}", pct(max));
    let n = candidate.requests;
    let Some(observed) = candidate.error_rate() else {
        return row(name, Outcome::Inconclusive, None, limit, "no candidate requests".into());
    };
    let outcome = breach(candidate.errors.min(n), n, max, floor);
    let message = match outcome {
        Outcome::Pass => format!("error rate {} ≤ emergency limit {}", pct(observed), pct(max)),
        Outcome::Fail => format!(
            "error rate {} > emergency limit {} (at least {} with 99% confidence, {n} requests)",
            pct(observed),
            pct(max),
            pct(wilson_lower(candidate.errors.min(n), n))
        ),
        Outcome::Inconclusive => format!(
            "error rate {} above emergency limit {}, but not yet with 99% confidence ({n} requests)",
            pct(observed),
            pct(max)
        ),
    };
    row(name, outcome, Some(observed), limit, message)
}

fn emergency_latency(candidate: &Sample, max_ms: f64, floor: u64) -> MetricResult {
    let name = "emergency.latencyP99Ms";
    let limit = format!("≤ {}", ms(max_ms));
    let Some(p99) = candidate.latency_ms(Quantile::P99) else {
        return row(
            name,
            Outcome::Inconclusive,
            None,
            limit,
            "no candidate latencies".into(),
        );
    };
    let h = &candidate.latency;
    let n = h.len();
    // p99 > limit exactly when more than 1% of requests are slower than the limit; judging that
    // share (a binomial proportion) gives the emergency the same confidence rule as error rates.
    let max_us = (max_ms * 1000.0).round() as u64;
    let slow = n.saturating_sub(h.count_between(0, max_us));
    let outcome = breach(slow, n, 1.0 - Quantile::P99.fraction(), floor);
    let message = match outcome {
        Outcome::Pass => format!("p99 latency {} ≤ emergency limit {}", ms(p99), ms(max_ms)),
        Outcome::Fail => format!(
            "p99 latency {} > emergency limit {} ({slow} of {n} requests slower)",
            ms(p99),
            ms(max_ms)
        ),
        Outcome::Inconclusive => format!(
            "p99 latency {} above emergency limit {}, but not yet with 99% confidence ({slow} of {n} requests slower)",
            ms(p99),
            ms(max_ms)
        ),
    };
    row(name, outcome, Some(p99), limit, message)
}

/// Whether `hits` of `n` show a share above `limit`: Pass if the share is at most `limit`, Fail
/// if `n ≥ floor` and the share's 99% lower bound is above it, Inconclusive in between.
fn breach(hits: u64, n: u64, limit: f64, floor: u64) -> Outcome {
    if n == 0 || hits as f64 <= limit * n as f64 {
        Outcome::Pass
    } else if n >= floor && wilson_lower(hits, n) > limit {
        Outcome::Fail
    } else {
        Outcome::Inconclusive
    }
}

/// The lower end of the Wilson score interval of `hits / n` at [`EMERGENCY_CONFIDENCE`]
/// (one-sided). `n` must be positive.
fn wilson_lower(hits: u64, n: u64) -> f64 {
    let (n, z2) = (n as f64, EMERGENCY_Z * EMERGENCY_Z);
    let p = hits as f64 / n;
    let center = p + z2 / (2.0 * n);
    let half = EMERGENCY_Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    (center - half) / (1.0 + z2 / n)
}

fn check(name: &str, check: &MetricCheck, min_requests: u64, obs: &Observation, totals: &Cumulative) -> MetricResult {
    let (c, b) = (&obs.candidate, &obs.baseline);
    let inconclusive = |limit: String, message: String| row(name, Outcome::Inconclusive, None, limit, message);
    match *check {
        MetricCheck::SuccessRate { min } => {
            let limit = format!("≥ {}", pct(min));
            match c.error_rate() {
                None => inconclusive(limit, "no candidate requests".into()),
                Some(e) => {
                    let s = 1.0 - e;
                    let (ok, cmp) = judge(s >= min, "≥", "<");
                    row(
                        name,
                        ok,
                        Some(s),
                        limit,
                        format!("success rate {} {cmp} {}", pct(s), pct(min)),
                    )
                }
            }
        }
        MetricCheck::ErrorRate { max } => {
            let limit = format!("≤ {}", pct(max));
            match c.error_rate() {
                None => inconclusive(limit, "no candidate requests".into()),
                Some(e) => {
                    let (ok, cmp) = judge(e <= max, "≤", ">");
                    row(
                        name,
                        ok,
                        Some(e),
                        limit,
                        format!("error rate {} {cmp} {}", pct(e), pct(max)),
                    )
                }
            }
        }
        MetricCheck::Latency { quantile, max_ms } => {
            let limit = format!("≤ {}", ms(max_ms));
            match c.latency_ms(quantile) {
                None => inconclusive(limit, "no candidate latencies".into()),
                Some(v) => {
                    let (ok, cmp) = judge(v <= max_ms, "≤", ">");
                    let q = quantile_name(quantile);
                    row(
                        name,
                        ok,
                        Some(v),
                        limit,
                        format!("{q} latency {} {cmp} {}", ms(v), ms(max_ms)),
                    )
                }
            }
        }
        MetricCheck::RequestRate { min } => {
            let limit = format!("≥ {} req/s", num(min));
            if c.seconds <= 0.0 {
                return inconclusive(limit, "empty window".into());
            }
            let r = c.requests as f64 / c.seconds;
            let (ok, cmp) = judge(r >= min, "≥", "<");
            row(
                name,
                ok,
                Some(r),
                limit,
                format!("request rate {} {cmp} {} req/s", num(r), num(min)),
            )
        }
        MetricCheck::ErrorRateVsBaseline { max_ratio, max_diff } => {
            error_rate_vs_baseline(name, max_ratio, max_diff, min_requests, obs)
        }
        MetricCheck::LatencyVsBaseline { quantile, max_ratio } => {
            let q = quantile_name(quantile);
            let limit = format!("≤ baseline {q} × {}", num(max_ratio));
            let (Some(cv), Some(bv)) = (c.latency_ms(quantile), b.latency_ms(quantile)) else {
                return inconclusive(limit, "no candidate or baseline latencies".into());
            };
            if b.requests < min_requests.max(1) {
                return baseline_too_small(name, limit, Some(cv), b.requests, min_requests);
            }
            let max = bv * max_ratio;
            let (ok, cmp) = judge(cv <= max, "≤", ">");
            let message = format!(
                "{q} latency {} {cmp} {} (baseline {} × {})",
                ms(cv),
                ms(max),
                ms(bv),
                num(max_ratio)
            );
            row(name, ok, Some(cv), format!("≤ {}", ms(max)), message)
        }
        MetricCheck::SequentialErrorRate { confidence } => sequential(name, confidence, min_requests, totals),
    }
}

fn error_rate_vs_baseline(
    name: &str,
    max_ratio: Option<f64>,
    max_diff: Option<f64>,
    min_requests: u64,
    obs: &Observation,
) -> MetricResult {
    let describe = |base: &str| {
        let mut bounds = Vec::new();
        if let Some(r) = max_ratio {
            bounds.push(format!("baseline {base} × {}", num(r)));
        }
        if let Some(d) = max_diff {
            bounds.push(format!("baseline {base} + {} pp", num(d * 100.0)));
        }
        bounds.join(" or ")
    };
    let (c, b) = (&obs.candidate, &obs.baseline);
    let (Some(ce), Some(be)) = (c.error_rate(), b.error_rate()) else {
        let limit = format!("≤ {}", describe("error rate"));
        return row(
            name,
            Outcome::Inconclusive,
            None,
            limit,
            "no candidate or baseline requests".into(),
        );
    };
    if b.requests < min_requests.max(1) {
        return baseline_too_small(
            name,
            format!("≤ {}", describe("error rate")),
            Some(ce),
            b.requests,
            min_requests,
        );
    }
    // The check passes if either given bound holds, so the effective limit is the larger one.
    let bound = [max_ratio.map(|r| be * r), max_diff.map(|d| be + d)]
        .into_iter()
        .flatten()
        .reduce(f64::max);
    let Some(max) = bound else {
        return row(
            name,
            Outcome::Inconclusive,
            Some(ce),
            "none".into(),
            "neither maxRatio nor maxDiff is given".into(),
        );
    };
    let (ok, cmp) = judge(ce <= max, "≤", ">");
    let message = format!("error rate {} {cmp} {} ({})", pct(ce), pct(max), describe(&pct(be)));
    row(name, ok, Some(ce), format!("≤ {}", pct(max)), message)
}

fn sequential(name: &str, confidence: f64, min_requests: u64, totals: &Cumulative) -> MetricResult {
    if !(confidence > 0.0 && confidence < 1.0) {
        let message = format!("confidence {} is not between 0 and 1", num(confidence));
        return row(name, Outcome::Inconclusive, None, "none".into(), message);
    }
    let alpha = 1.0 - confidence;
    let threshold = 1.0 / alpha;
    let limit = format!(
        "evidence < {} ({}% confidence)",
        num(threshold),
        num(confidence * 100.0)
    );
    let (nc, nb) = (totals.candidate_requests, totals.baseline_requests);
    let min = min_requests.max(1);
    let evidence = sprt::evidence(totals, sprt::TAU);
    let Some(e) = evidence.filter(|_| nc >= min && nb >= min) else {
        let message = format!(
            "{nc} candidate and {nb} baseline requests since the analysis began; needs minRequests {min_requests} of each"
        );
        return row(name, Outcome::Inconclusive, None, limit, message);
    };
    let ratio = e.likelihood_ratio();
    let rates = format!(
        "error rate {} vs baseline {} over {nc} and {nb} requests",
        pct(e.candidate_rate),
        pct(e.baseline_rate)
    );
    if e.rejects(alpha) {
        let message = format!(
            "{rates}: evidence {} ≥ {}, candidate worse with {}% confidence",
            num(ratio),
            num(threshold),
            num(confidence * 100.0)
        );
        row(name, Outcome::Fail, Some(ratio), limit, message)
    } else {
        let message = format!("{rates}: evidence {} < {}", num(ratio), num(threshold));
        row(name, Outcome::Pass, Some(ratio), limit, message)
    }
}

fn baseline_too_small(name: &str, limit: String, value: Option<f64>, n: u64, min_requests: u64) -> MetricResult {
    let message = format!("not judged: {n} baseline requests in the window, fewer than minRequests {min_requests}");
    row(name, Outcome::Inconclusive, value, limit, message)
}

fn row(name: &str, outcome: Outcome, value: Option<f64>, limit: String, message: String) -> MetricResult {
    MetricResult {
        name: name.to_owned(),
        outcome,
        value,
        limit,
        message,
    }
}

/// Pass with the `yes` comparison sign, or Fail with the `no` one.
fn judge(ok: bool, yes: &'static str, no: &'static str) -> (Outcome, &'static str) {
    if ok { (Outcome::Pass, yes) } else { (Outcome::Fail, no) }
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part.min(whole) as f64 / whole as f64)
}

fn quantile_name(q: Quantile) -> &'static str {
    match q {
        Quantile::P50 => "p50",
        Quantile::P90 => "p90",
        Quantile::P99 => "p99",
        Quantile::P999 => "p99.9",
    }
}

/// A share as a percentage with two decimals: `3.10%`.
fn pct(share: f64) -> String {
    format!("{:.2}%", share * 100.0)
}

/// Milliseconds: whole above 100 ms, one decimal below.
fn ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// A number with at most three decimals and no trailing zeros: `1.1`, `100`, `0.005`; large
/// numbers in scientific notation.
fn num(v: f64) -> String {
    if v.abs() >= 1e9 {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.3}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    s.to_owned()
}

#[cfg(test)]
mod tests;
