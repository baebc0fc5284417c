//! Analysis: judges a rollout's candidate track against its baseline from the proxies' per-track
//! measurements. Everything here is pure — stats in, verdicts out, no I/O and no clock: time
//! enters only as [`Sample::seconds`] and as the order of [`Tracker::record`] calls.
//!
//! The control loop runs two stages every `interval`:
//!
//! 1. [`measure`] turns one stats window of both tracks ([`Observation`]) and everything since
//!    the analysis began ([`Cumulative`], to which the caller has added the interval's fresh
//!    counts), with what the metric providers answered ([`Readings`]), into a [`Measurement`]:
//!    one [`MetricResult`] per emergency limit, per metric and per sequential judge, and an
//!    [`Outcome`] for the whole.
//! 2. A [`Tracker`] folds the measurements of one analysis run into a [`Verdict`]: continue,
//!    passed, abort, or pause because nothing conclusive comes in.
//!
//! ```
//! use std::time::Duration;
//!
//! use hdrhistogram::Histogram;
//! use switchyard_config::rollout::{AnalysisSpec, EmergencySpec, MetricCheck, MetricSpec};
//! use switchyard_control::analyze::{
//!     Counts, Cumulative, Observation, Outcome, Readings, Sample, Tracker, Verdict, measure,
//! };
//!
//! let spec = AnalysisSpec {
//!     initial_delay: Duration::ZERO,
//!     interval: Duration::from_secs(1),
//!     window: Duration::from_secs(10),
//!     min_requests: 100,
//!     count: None,
//!     failure_limit: 3,
//!     inconclusive_limit: 0,
//!     consecutive_error_limit: 4,
//!     sequential_confidence: Some(0.99),
//!     series: Default::default(),
//!     metrics: vec![MetricSpec { name: "error-rate".into(), check: MetricCheck::ErrorRate { max: 0.01 } }],
//!     emergency: EmergencySpec { error_rate: Some(0.05), latency_p99_ms: None },
//! };
//! let window = |requests, errors| Sample {
//!     requests,
//!     errors,
//!     latency: Histogram::new(2).unwrap(),
//!     seconds: 10.0,
//! };
//! // Two seconds of a canary at 40 requests/s failing 7.5%: too few requests for the window's
//! // threshold (minRequests), but enough for the sequential judge.
//! let mut since = Cumulative::default();
//! for _ in 0..2 {
//!     since += Counts { candidate_requests: 40, candidate_errors: 3, baseline_requests: 960, baseline_errors: 5 };
//! }
//! let obs = Observation { candidate: window(80, 6), baseline: window(1_920, 10) };
//! let m = measure(&spec, &obs, &since, &Readings::default());
//! assert_eq!(m.outcome, Outcome::Fail);
//! assert!(m.sequential && !m.emergency);
//! assert_eq!(m.results[1].outcome, Outcome::Inconclusive); // not judged: 80 < minRequests
//! assert_eq!(
//!     m.results[2].message,
//!     "error rate 7.50% over 80 requests since the analysis began: evidence 241.203 ≥ 100, above 1.00% with 99% confidence"
//! );
//!
//! let mut run = Tracker::new(&spec);
//! assert!(matches!(run.record(&m, true), Verdict::Abort { .. })); // at once: no failureLimit
//! ```

use std::fmt::Write as _;
use std::ops::AddAssign;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use switchyard_config::rollout::{AnalysisSpec, MetricCheck, Quantile};

pub mod exact;
pub mod provider;
pub mod sprt;
mod tracker;

pub use provider::{Reading, Readings};
pub use tracker::{AbortReason, Tracker, Verdict};

/// An emergency limit needs at least this many candidate requests in the window (or
/// `minRequests`, when that is lower) before it can abort: one error among the first three
/// requests is not an emergency.
pub const EMERGENCY_MIN_REQUESTS: u64 = 20;

/// One-sided confidence with which a window must show an emergency breach before it aborts at
/// once (see [`measure`]).
pub const EMERGENCY_CONFIDENCE: f64 = 0.99;

/// One-sided confidence with which a window must show that the candidate breaks a threshold
/// (`successRate`, `errorRate`, a latency quantile, `errorRateVsBaseline`,
/// `latency…VsBaseline`) before that metric fails (see [`measure`]): 99.99%.
///
/// It is this high because every rollout spends it many times: the window is judged every
/// `interval` (about 90 overlapping windows in a 90-second rollout at 1 s), `failureLimit`
/// counts failures over the whole run, and a healthy candidate may sit right at its limit (the
/// contract's `successRate ≥ 99.5%` with the baseline at 0.5% errors), where each window is a
/// fresh chance to fail. Rates and shares are judged by the exact binomial test ([`exact`]), so
/// a candidate at its limit fails at most one window in 10,000 whatever the window's size. The
/// judgement bench (`cargo bench -p switchyard-benches --bench judgement`, the README's
/// "Judgement") measures the result: with the contract's spec judged by windows alone
/// (`sequentialConfidence: off`), 0.1% of healthy rollouts aborted, and a candidate at +2
/// percentage points caught in every run, in a median 11 s at 50 requests/s (a 10-second
/// window of 500 requests needs 11 errors) and 6 s at 250. The sequential judges (see
/// [`measure`]) catch the low-traffic case sooner; the windows remain for a fault that starts
/// late, which evidence gathered since the analysis began is slow to show.
pub const METRIC_CONFIDENCE: f64 = 0.9999;

/// z-score of [`METRIC_CONFIDENCE`] (one-sided): Φ⁻¹(0.9999).
const METRIC_Z: f64 = 3.719_016_485_455_708;

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

/// Request and error counts of both tracks: one interval's fresh counts, or totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Candidate requests.
    pub candidate_requests: u64,
    /// Candidate errors.
    pub candidate_errors: u64,
    /// Baseline requests.
    pub baseline_requests: u64,
    /// Baseline errors.
    pub baseline_errors: u64,
}

impl Counts {
    /// The counts since `earlier`, each saturating at zero (a proxy that restarted counts from
    /// zero again: nothing of it is taken as fresh until it passes its old count).
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            candidate_requests: self.candidate_requests.saturating_sub(earlier.candidate_requests),
            candidate_errors: self.candidate_errors.saturating_sub(earlier.candidate_errors),
            baseline_requests: self.baseline_requests.saturating_sub(earlier.baseline_requests),
            baseline_errors: self.baseline_errors.saturating_sub(earlier.baseline_errors),
        }
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, fresh: Self) {
        self.candidate_requests = self.candidate_requests.saturating_add(fresh.candidate_requests);
        self.candidate_errors = self.candidate_errors.saturating_add(fresh.candidate_errors);
        self.baseline_requests = self.baseline_requests.saturating_add(fresh.baseline_requests);
        self.baseline_errors = self.baseline_errors.saturating_add(fresh.baseline_errors);
    }
}

/// What the sequential judges know since the analysis began: the totals of both tracks, and the
/// candidate-against-baseline evidence gathered interval by interval. Start from
/// [`Cumulative::default`] when the analysis begins and add each interval's fresh counts
/// (`+=`) before measuring it. Serializable, so that a persisted analysis carries on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cumulative {
    /// Requests and errors of both tracks since the analysis began.
    pub totals: Counts,
    /// The evidence of `sequentialErrorRate`.
    pub vs_baseline: sprt::OddsEvidence,
}

impl AddAssign<Counts> for Cumulative {
    fn add_assign(&mut self, fresh: Counts) {
        self.totals += fresh;
        self.vs_baseline.add(fresh);
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
    /// The check could not be made: its metric provider gave no usable answer. Neither a pass
    /// nor a failure; `consecutiveErrorLimit` of them in a row abort.
    Error,
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
    /// Fail if any result failed; otherwise error if any result was one (a metric provider gave
    /// no usable answer); otherwise inconclusive if any result was; otherwise pass.
    pub outcome: Outcome,
    /// An emergency limit was breached: abort now, whatever `failureLimit` says.
    pub emergency: bool,
    /// A sequential judge rejected: abort now, whatever `failureLimit` says (its false-abort
    /// probability is already bounded over the whole analysis).
    #[serde(default)]
    pub sequential: bool,
    /// Emergency limits first (those configured), then the metrics in spec order, each
    /// `successRate` and `errorRate` followed by its sequential judge (named `NAME.sequential`)
    /// when `sequentialConfidence` is on; a metric provider's row is judged on its [`Reading`].
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
///   [`EMERGENCY_CONFIDENCE`]: the exact (Clopper–Pearson) lower bound of the error rate — or,
///   for p99, of the share of requests slower than the limit — must exceed the limit (the share
///   1%); see [`exact`]. A
///   crashed candidate clears that bar within its first 20 requests (20 errors in 20 bound the
///   rate above 78%); two errors among 30 requests in a quiet minute, which a plain comparison
///   would call a 6.7% emergency, do not. A breach seen but not yet confident makes that row
///   Inconclusive; the ordinary metrics and `failureLimit` still catch it.
/// - **Thresholds** are judged on the candidate's window with [`METRIC_CONFIDENCE`]: a metric
///   passes when the window's estimate is within its limit, fails only when the breach is clear,
///   and is Inconclusive in between (beyond the limit, but within the window's noise). Clear
///   means: for `successRate {min}` and `errorRate {max}`, the exact one-sided (Clopper–Pearson)
///   lower bound of the error rate lies above `1 − min` or `max`, that is, the exact binomial
///   test rejects "at most the limit" (see [`exact`]); for a latency quantile q, the same bound
///   of the share of requests slower than `maxMs` lies above `1 − q` (p99 > 500 ms exactly
///   when more than 1% of requests take longer); for `errorRateVsBaseline`, the lower bound of
///   `candidate − baseline × maxRatio` and of `candidate − baseline − maxDiff` (each given one)
///   lies above 0, from both tracks' Wilson intervals; for `latency…VsBaseline`, more than
///   `1 − q` of the candidate's requests are clearly slower than `maxRatio` × the most the
///   baseline's quantile could be. Each result's value stays the window's estimate.
///   `requestRate` is a plain comparison.
/// - **Sequential judges** run on [`Cumulative`], everything since the analysis began, with
///   the exact anytime-valid tests of [`sprt`]. With `sequentialConfidence` on (the default),
///   each `successRate` and `errorRate` metric is followed by a row `NAME.sequential` that tests
///   "the candidate's error rate is at most the limit" on the totals; a `sequentialErrorRate`
///   metric tests "at most the baseline's" on the evidence gathered interval by interval. A row
///   fails when its likelihood ratio reaches `1/(1 − confidence)`, and then the measurement is
///   marked [`Measurement::sequential`]: the [`Tracker`] aborts at once, because the false-abort
///   probability is bounded for the whole analysis, however often it is measured. Otherwise the
///   row passes, with the ratio as its value (Inconclusive without candidate requests). A
///   rejection is valid at any count, so, like an emergency, it needs no `minRequests`.
/// - Fewer than `minRequests` candidate requests in the window make every threshold
///   Inconclusive (values are still reported), so the measurement is never a pass and, barring
///   an emergency or a sequential rejection, never a failure.
/// - Comparisons with the baseline (`errorRateVsBaseline`, `latency…VsBaseline`) are
///   Inconclusive while the baseline's window has fewer than `minRequests` requests.
/// - **Metric providers** (`prometheus`, `web`) are judged on what they answered for this
///   measurement, their entry in `readings` (see [`provider`]): a range or conditions, no data
///   Inconclusive, no usable answer an Error. `minRequests` does not hold them back, and an
///   analysis of providers alone is judged on them alone; they take no short-cut (a failing
///   provider counts towards `failureLimit`, never aborts at once).
pub fn measure(spec: &AnalysisSpec, obs: &Observation, since: &Cumulative, readings: &Readings) -> Measurement {
    let candidate = &obs.candidate;
    let mut results = Vec::with_capacity(2 * spec.metrics.len() + 2);
    let floor = EMERGENCY_MIN_REQUESTS.min(spec.min_requests).max(1);
    if let Some(max) = spec.emergency.error_rate {
        results.push(emergency_error_rate(candidate, max, floor));
    }
    if let Some(max_ms) = spec.emergency.latency_p99_ms {
        results.push(emergency_latency(candidate, max_ms, floor));
    }
    let emergency = results.iter().any(|r| r.outcome == Outcome::Fail);

    let enough = candidate.requests >= spec.min_requests.max(1);
    // minRequests holds back the checks of the proxies' window; providers judge on their own.
    let window_checks = spec.metrics.is_empty() || spec.metrics.iter().any(|m| m.check.provider().is_none());
    let mut sequential = false;
    for metric in &spec.metrics {
        let mut r = check(&metric.name, &metric.check, spec.min_requests, obs, since, readings);
        if let MetricCheck::SequentialErrorRate { .. } = metric.check {
            sequential |= r.outcome == Outcome::Fail;
        } else if !enough && metric.check.provider().is_none() {
            r.outcome = Outcome::Inconclusive;
            r.message = format!(
                "not judged: {} candidate requests in the window, fewer than minRequests {}",
                candidate.requests, spec.min_requests
            );
        }
        results.push(r);
        let limit = match metric.check {
            MetricCheck::SuccessRate { min } => Some((1.0 - min, true)),
            MetricCheck::ErrorRate { max } => Some((max, false)),
            _ => None,
        };
        if let (Some((limit, success)), Some(confidence)) = (limit, spec.sequential_confidence) {
            let r = limit_sequential(&metric.name, limit, success, confidence, &since.totals);
            sequential |= r.outcome == Outcome::Fail;
            results.push(r);
        }
    }

    let any = |o: Outcome| results.iter().any(|r| r.outcome == o);
    let outcome = if any(Outcome::Fail) {
        Outcome::Fail
    } else if any(Outcome::Error) {
        Outcome::Error
    } else if (window_checks && !enough) || any(Outcome::Inconclusive) {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    Measurement {
        outcome,
        emergency,
        sequential,
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
    let errors = candidate.errors.min(n);
    let graded = breach(errors, n, max, floor);
    let conf = confidence(EMERGENCY_CONFIDENCE);
    let message = match graded {
        Graded::Pass => format!("error rate {} ≤ emergency limit {}", pct(observed), pct(max)),
        Graded::Fail => format!(
            "error rate {} > emergency limit {} (at least {} with {conf} confidence, {n} requests)",
            pct(observed),
            pct(max),
            pct(exact::lower_bound(errors, n, EMERGENCY_CONFIDENCE))
        ),
        Graded::Inconclusive => format!(
            "error rate {} above emergency limit {}, but not yet with {conf} confidence ({n} requests)",
            pct(observed),
            pct(max)
        ),
    };
    row(name, graded.into(), Some(observed), limit, message)
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
    // p99 > limit exactly when more than 1% of requests are slower than the limit; judging that
    // share (a binomial proportion) gives the emergency the same confidence rule as error rates.
    let (slow, n) = slower(&candidate.latency, max_ms);
    let graded = breach(slow, n, 1.0 - Quantile::P99.fraction(), floor);
    let conf = confidence(EMERGENCY_CONFIDENCE);
    let message = match graded {
        Graded::Pass => format!("p99 latency {} ≤ emergency limit {}", ms(p99), ms(max_ms)),
        Graded::Fail => format!(
            "p99 latency {} > emergency limit {} ({slow} of {n} requests slower)",
            ms(p99),
            ms(max_ms)
        ),
        Graded::Inconclusive => format!(
            "p99 latency {} above emergency limit {}, but not yet with {conf} confidence ({slow} of {n} requests slower)",
            ms(p99),
            ms(max_ms)
        ),
    };
    row(name, graded.into(), Some(p99), limit, message)
}

/// Whether `hits` of `n` show a share above `limit`: Pass if the share is at most `limit`, Fail
/// if `n ≥ floor` and the share's lower bound at [`EMERGENCY_CONFIDENCE`] is above it,
/// Inconclusive in between.
fn breach(hits: u64, n: u64, limit: f64, floor: u64) -> Graded {
    grade(
        n == 0 || hits as f64 <= limit * n as f64,
        n >= floor && exact::exceeds(hits, n, limit, EMERGENCY_CONFIDENCE),
    )
}

/// Pass if the point estimate is `within` its limit; otherwise Fail if the breach is `clear`
/// (beyond the limit at the check's confidence), Inconclusive if not.
fn grade(within: bool, clear: bool) -> Graded {
    if within {
        Graded::Pass
    } else if clear {
        Graded::Fail
    } else {
        Graded::Inconclusive
    }
}

/// How a check of the proxies' stats comes out: never an [`Outcome::Error`], which only a
/// metric provider that gave no usable answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Graded {
    Pass,
    Fail,
    Inconclusive,
}

impl From<Graded> for Outcome {
    fn from(g: Graded) -> Self {
        match g {
            Graded::Pass => Self::Pass,
            Graded::Fail => Self::Fail,
            Graded::Inconclusive => Self::Inconclusive,
        }
    }
}

/// The Wilson score interval of the share `hits / n`, `(lower, upper)`, each end one-sided at
/// z-score `z` (the bounds of the shares that a score test at `z` would not reject). Unlike
/// `p̂ ± z·√(p̂(1 − p̂)/n)` it stays inside 0 to 1 and does not collapse to a point at zero
/// hits, so small counts get wide bounds. `n` must be positive; hits beyond `n` count as `n`.
fn wilson(hits: u64, n: u64, z: f64) -> (f64, f64) {
    let (hits, n, z2) = (hits.min(n) as f64, n as f64, z * z);
    let p = hits / n;
    let center = p + z2 / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let scale = 1.0 + z2 / n;
    (
        ((center - half) / scale).clamp(0.0, 1.0),
        ((center + half) / scale).clamp(0.0, 1.0),
    )
}

/// Of the requests in `h`, how many took longer than `limit_ms`, and how many there were. A
/// quantile exceeds the limit exactly when more than its tail share (1% for p99) are slower.
fn slower(h: &Histogram<u64>, limit_ms: f64) -> (u64, u64) {
    let n = h.len();
    let limit_us = (limit_ms * 1000.0).round() as u64;
    (n.saturating_sub(h.count_between(0, limit_us)), n)
}

fn check(
    name: &str,
    check: &MetricCheck,
    min_requests: u64,
    obs: &Observation,
    since: &Cumulative,
    readings: &Readings,
) -> MetricResult {
    let (c, b) = (&obs.candidate, &obs.baseline);
    let inconclusive = |limit: String, message: String| row(name, Outcome::Inconclusive, None, limit, message);
    let conf = confidence(METRIC_CONFIDENCE);
    match *check {
        MetricCheck::SuccessRate { min } => {
            let limit = format!("≥ {}", pct(min));
            let Some(e) = c.error_rate() else {
                return inconclusive(limit, "no candidate requests".into());
            };
            let (s, n) = (1.0 - e, c.requests);
            // The highest success rate the window is consistent with.
            let most = || 1.0 - exact::lower_bound(c.errors, n, METRIC_CONFIDENCE);
            let graded = grade(s >= min, exact::exceeds(c.errors, n, 1.0 - min, METRIC_CONFIDENCE));
            let message = match graded {
                Graded::Pass => format!("success rate {} ≥ {}", pct(s), pct(min)),
                Graded::Fail => format!(
                    "success rate {} < {} (at most {} with {conf} confidence, {n} requests)",
                    pct(s),
                    pct(min),
                    pct(most())
                ),
                Graded::Inconclusive => format!(
                    "success rate {} < {}, but not clearly (could be as high as {} at {conf} confidence, {n} requests)",
                    pct(s),
                    pct(min),
                    pct(most())
                ),
            };
            row(name, graded.into(), Some(s), limit, message)
        }
        MetricCheck::ErrorRate { max } => {
            let limit = format!("≤ {}", pct(max));
            let Some(e) = c.error_rate() else {
                return inconclusive(limit, "no candidate requests".into());
            };
            let n = c.requests;
            // The lowest error rate the window is consistent with.
            let least = || exact::lower_bound(c.errors, n, METRIC_CONFIDENCE);
            let graded = grade(e <= max, exact::exceeds(c.errors, n, max, METRIC_CONFIDENCE));
            let message = match graded {
                Graded::Pass => format!("error rate {} ≤ {}", pct(e), pct(max)),
                Graded::Fail => format!(
                    "error rate {} > {} (at least {} with {conf} confidence, {n} requests)",
                    pct(e),
                    pct(max),
                    pct(least())
                ),
                Graded::Inconclusive => format!(
                    "error rate {} > {}, but not clearly (could be as low as {} at {conf} confidence, {n} requests)",
                    pct(e),
                    pct(max),
                    pct(least())
                ),
            };
            row(name, graded.into(), Some(e), limit, message)
        }
        MetricCheck::Latency { quantile, max_ms } => {
            let limit = format!("≤ {}", ms(max_ms));
            let Some(v) = c.latency_ms(quantile) else {
                return inconclusive(limit, "no candidate latencies".into());
            };
            let q = quantile_name(quantile);
            let tail = 1.0 - quantile.fraction();
            let (slow, n) = slower(&c.latency, max_ms);
            let graded = grade(v <= max_ms, exact::exceeds(slow, n, tail, METRIC_CONFIDENCE));
            let message = match graded {
                Graded::Pass => format!("{q} latency {} ≤ {}", ms(v), ms(max_ms)),
                Graded::Fail => format!(
                    "{q} latency {} > {} ({slow} of {n} requests slower: more than {} with {conf} confidence)",
                    ms(v),
                    ms(max_ms),
                    pct(tail)
                ),
                Graded::Inconclusive => format!(
                    "{q} latency {} > {}, but not clearly ({slow} of {n} requests slower: too few to show more than {} with {conf} confidence)",
                    ms(v),
                    ms(max_ms),
                    pct(tail)
                ),
            };
            row(name, graded.into(), Some(v), limit, message)
        }
        MetricCheck::RequestRate { min } => {
            let limit = format!("≥ {} req/s", num(min));
            if c.seconds <= 0.0 {
                return inconclusive(limit, "empty window".into());
            }
            let r = c.requests as f64 / c.seconds;
            let (ok, cmp) = if r >= min {
                (Outcome::Pass, "≥")
            } else {
                (Outcome::Fail, "<")
            };
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
            // The baseline's quantile is an estimate too. A breach is clear when more than the
            // tail share of candidate requests are slower than the most the baseline's quantile
            // could be — its histogram at the upper confidence bound of the quantile's rank —
            // times the ratio.
            let f = quantile.fraction();
            let rank = f + METRIC_Z * (f * (1.0 - f) / b.latency.len() as f64).sqrt();
            let b_most = b.latency.value_at_quantile(rank.min(1.0)) as f64 / 1000.0;
            let (slow, n) = slower(&c.latency, b_most * max_ratio);
            let graded = grade(cv <= max, exact::exceeds(slow, n, 1.0 - f, METRIC_CONFIDENCE));
            let base = format!("baseline {} × {}", ms(bv), num(max_ratio));
            let evidence = format!(
                "{slow} of {n} requests slower than {} (baseline up to {} × {})",
                ms(b_most * max_ratio),
                ms(b_most),
                num(max_ratio)
            );
            let message = match graded {
                Graded::Pass => format!("{q} latency {} ≤ {} ({base})", ms(cv), ms(max)),
                Graded::Fail => format!(
                    "{q} latency {} > {} ({base}): {evidence}, more than {} with {conf} confidence",
                    ms(cv),
                    ms(max),
                    pct(1.0 - f)
                ),
                Graded::Inconclusive => format!(
                    "{q} latency {} > {} ({base}), but not clearly: {evidence}, too few to show more than {} with {conf} confidence",
                    ms(cv),
                    ms(max),
                    pct(1.0 - f)
                ),
            };
            row(name, graded.into(), Some(cv), format!("≤ {}", ms(max)), message)
        }
        MetricCheck::SequentialErrorRate { confidence } => vs_baseline_sequential(name, confidence, since),
        MetricCheck::Prometheus(ref q) => provider::judge(name, &q.judge, readings.get(name)),
        MetricCheck::Web(ref w) => provider::judge(name, &w.judge, readings.get(name)),
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
    // A breach is clear when the candidate is clearly beyond every given bound: the lower
    // confidence bound of `candidate − baseline × ratio − diff` is above 0. That bound combines
    // the two tracks' Wilson intervals (Newcombe's hybrid score interval for a difference of
    // proportions, generalised to a multiple of one by Zou and Donner's MOVER), so a quiet
    // baseline's uncertainty counts as well as the candidate's.
    let (c_least, _) = wilson(c.errors, c.requests, METRIC_Z);
    let (_, b_most) = wilson(b.errors, b.requests, METRIC_Z);
    let clearly_above = |ratio: f64, diff: f64| {
        let spread = (ce - c_least).hypot(ratio * (b_most - be));
        ce - ratio * be - diff - spread > 0.0
    };
    let clear = max_ratio.is_none_or(|r| clearly_above(r, 0.0)) && max_diff.is_none_or(|d| clearly_above(1.0, d));
    let graded = grade(ce <= max, clear);
    let (nc, nb) = (c.requests, b.requests);
    let bounds = describe(&pct(be));
    let conf = confidence(METRIC_CONFIDENCE);
    let message = match graded {
        Graded::Pass => format!("error rate {} ≤ {} ({bounds})", pct(ce), pct(max)),
        Graded::Fail => format!(
            "error rate {} > {} ({bounds}) with {conf} confidence over {nc} candidate and {nb} baseline requests",
            pct(ce),
            pct(max)
        ),
        Graded::Inconclusive => format!(
            "error rate {} > {} ({bounds}), but not clearly: not with {conf} confidence over {nc} candidate and {nb} baseline requests",
            pct(ce),
            pct(max)
        ),
    };
    row(name, graded.into(), Some(ce), format!("≤ {}", pct(max)), message)
}

/// The row of a sequential judge: its limit, or `Err` with the row to report when `confidence`
/// is not a probability (the spec's validation prevents that; a hand-built spec may not).
fn sequential_limit(name: &str, confidence: f64) -> Result<(f64, String), MetricResult> {
    if !(confidence > 0.0 && confidence < 1.0) {
        let message = format!("confidence {} is not between 0 and 1", num(confidence));
        return Err(row(name, Outcome::Inconclusive, None, "none".into(), message));
    }
    let threshold = 1.0 / (1.0 - confidence);
    let limit = format!(
        "evidence < {} ({} confidence)",
        num(threshold),
        self::confidence(confidence)
    );
    Ok((threshold, limit))
}

/// A likelihood ratio from its log, capped at 1e300 so that it stays a finite number in JSON.
fn ratio_of(log_ratio: f64) -> f64 {
    log_ratio.min(690.0).exp()
}

/// The sequential judge of a `successRate` (`success`) or `errorRate` limit, on the totals
/// since the analysis began: [`sprt::limit_log_evidence`] against the error-rate `limit`.
fn limit_sequential(name: &str, limit: f64, success: bool, confidence: f64, totals: &Counts) -> MetricResult {
    let name = format!("{name}.sequential");
    let (threshold, bound) = match sequential_limit(&name, confidence) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (n, errors) = (
        totals.candidate_requests,
        totals.candidate_errors.min(totals.candidate_requests),
    );
    let Some(e) = rate(errors, n) else {
        let message = "no candidate requests since the analysis began".to_owned();
        return row(&name, Outcome::Inconclusive, None, bound, message);
    };
    let log_ratio = sprt::limit_log_evidence(n, errors, limit);
    let ratio = ratio_of(log_ratio);
    let seen = if success {
        format!(
            "success rate {} over {n} requests since the analysis began",
            pct(1.0 - e)
        )
    } else {
        format!("error rate {} over {n} requests since the analysis began", pct(e))
    };
    if log_ratio >= threshold.ln() {
        let side = if success {
            format!("below {}", pct(1.0 - limit))
        } else {
            format!("above {}", pct(limit))
        };
        let message = format!(
            "{seen}: evidence {} ≥ {}, {side} with {} confidence",
            num(ratio),
            num(threshold),
            self::confidence(confidence)
        );
        row(&name, Outcome::Fail, Some(ratio), bound, message)
    } else {
        let message = format!("{seen}: evidence {} < {}", num(ratio), num(threshold));
        row(&name, Outcome::Pass, Some(ratio), bound, message)
    }
}

/// `sequentialErrorRate`: the candidate against the baseline, on the evidence gathered interval
/// by interval ([`sprt::OddsEvidence`]).
fn vs_baseline_sequential(name: &str, confidence: f64, since: &Cumulative) -> MetricResult {
    let (threshold, limit) = match sequential_limit(name, confidence) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let t = &since.totals;
    let (nc, nb) = (t.candidate_requests, t.baseline_requests);
    let (Some(ce), Some(be)) = (rate(t.candidate_errors, nc), rate(t.baseline_errors, nb)) else {
        let message = format!("{nc} candidate and {nb} baseline requests since the analysis began: nothing to compare");
        return row(name, Outcome::Inconclusive, None, limit, message);
    };
    let log_ratio = since.vs_baseline.log_evidence();
    let ratio = ratio_of(log_ratio);
    let rates = format!(
        "error rate {} vs baseline {} over {nc} and {nb} requests",
        pct(ce),
        pct(be)
    );
    if log_ratio >= threshold.ln() {
        let message = format!(
            "{rates}: evidence {} ≥ {}, candidate worse with {} confidence",
            num(ratio),
            num(threshold),
            self::confidence(confidence)
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

/// A confidence level as a percentage: `99.9%`.
fn confidence(level: f64) -> String {
    format!("{}%", num(level * 100.0))
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
