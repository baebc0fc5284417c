//! How well the analysis judges: simulated canary rollouts, measured and judged second by second
//! as the control loop does it, report how often a healthy candidate is aborted and how fast a
//! faulty one is.
//!
//! ```text
//! cargo bench -p switchyard-benches --bench judgement
//! ```
//!
//! Not a timing benchmark: it prints a markdown table of outcomes. The world it simulates:
//! 1,000 requests/s split by the canary plan (5% → 25% → 50%, 30 s each); the baseline fails
//! 0.5% of requests; latencies are log-normal around 20 ms; the proxies keep per-second stats and
//! every second the controller reads the last 10 s (`window`) of both tracks, adds the second's
//! fresh counts to what the sequential judges have seen since the analysis began, calls
//! `measure`, and feeds the measurement to a `Tracker`. Every analysis variant sees exactly the
//! same traffic (one seeded generator per run, so the figures of a variant do not depend on which
//! other variants run).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use switchyard_config::rollout::{
    AnalysisSpec, EmergencySpec, MetricCheck, MetricSpec, Quantile, SEQUENTIAL_CONFIDENCE,
};
use switchyard_control::analyze::{
    Counts, Cumulative, METRIC_CONFIDENCE, Observation, Outcome, Readings, Sample, Tracker, Verdict, measure,
};
use switchyard_testkit::Rng;

/// Requests per second, both tracks together.
const TRAFFIC: u64 = 1_000;
/// The baseline's error rate, and a healthy candidate's.
const BASELINE_ERRORS: f64 = 0.005;
/// A faulty candidate's error rate: two percentage points worse.
const FAULTY_ERRORS: f64 = 0.025;
/// The canary plan: candidate weight (percent) and how long it holds, seconds.
const PLAN: [(u64, u32); 3] = [(5, 30), (25, 30), (50, 30)];
/// Rollouts per faulty scenario.
const RUNS: u32 = 200;
/// Healthy rollouts: more than the faulty ones, because 200 runs cannot tell a 0.5% false-abort
/// rate from a 1.5% one.
const HEALTHY_RUNS: u32 = 1_000;
/// Median latency, ms, and the log-normal's σ (p99 ≈ 64 ms).
const LATENCY_MEDIAN_MS: f64 = 20.0;
const LATENCY_SIGMA: f64 = 0.5;

/// One track's requests in one second.
struct Second {
    requests: u64,
    errors: u64,
    latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("constant bounds are valid")
}

impl Second {
    fn simulate(rng: &mut Rng, requests: u64, error_rate: f64) -> Self {
        let mut latency = histogram();
        for _ in 0..requests {
            let ms = LATENCY_MEDIAN_MS * (LATENCY_SIGMA * rng.normal()).exp();
            latency.saturating_record((ms * 1000.0) as u64);
        }
        Self {
            requests,
            errors: rng.binomial(requests, error_rate),
            latency,
        }
    }
}

/// The candidate's weight (percent) during second `t`, or `None` once the plan is over.
fn weight_at(t: u32) -> Option<u64> {
    let mut end = 0;
    PLAN.iter().find_map(|&(w, secs)| {
        end += secs;
        (t < end).then_some(w)
    })
}

fn plan_seconds() -> u32 {
    PLAN.iter().map(|&(_, s)| s).sum()
}

/// A way of running rollouts: when the candidate turns bad, if it does.
struct Scenario {
    name: &'static str,
    fault_from: Option<u32>,
    runs: u32,
}

/// An analysis variant under test.
struct Variant {
    name: &'static str,
    spec: AnalysisSpec,
}

/// What one variant did over one scenario's runs.
#[derive(Default)]
struct Tally {
    /// Seconds from the rollout's start to the abort, per run aborted while the candidate was
    /// healthy.
    false_aborts: Vec<u32>,
    /// Seconds from the fault's start to the abort, per run aborted after it.
    detections: Vec<u32>,
    /// Aborted runs by what failed in the aborting measurement.
    causes: BTreeMap<String, u32>,
}

/// Runs the rollouts of `scenario` and judges each with every variant.
fn run(scenario: &Scenario, variants: &[Variant], seed: u64) -> Vec<Tally> {
    let mut tallies: Vec<Tally> = variants.iter().map(|_| Tally::default()).collect();
    let window = variants
        .iter()
        .map(|v| v.spec.window.as_secs() as usize)
        .max()
        .unwrap_or(10);
    for i in 0..scenario.runs {
        // A generator per run: a run stops once every variant has aborted, so a shared one would
        // give the next runs other traffic whenever the set of variants changes.
        let mut rng = Rng(seed.wrapping_mul(0x1_0000_0001).wrapping_add(u64::from(i)));
        let mut trackers: Vec<Option<Tracker>> = variants.iter().map(|v| Some(Tracker::new(&v.spec))).collect();
        let mut history: Vec<(Second, Second)> = Vec::new();
        let mut totals = Cumulative::default();
        let mut t = 0;
        while let Some(weight) = weight_at(t) {
            let bad = scenario.fault_from.is_some_and(|from| t >= from);
            let candidate_rate = if bad { FAULTY_ERRORS } else { BASELINE_ERRORS };
            let candidate_requests = rng.binomial(TRAFFIC, weight as f64 / 100.0);
            let c = Second::simulate(&mut rng, candidate_requests, candidate_rate);
            let b = Second::simulate(&mut rng, TRAFFIC - candidate_requests, BASELINE_ERRORS);
            totals += Counts {
                candidate_requests: c.requests,
                candidate_errors: c.errors,
                baseline_requests: b.requests,
                baseline_errors: b.errors,
            };
            history.push((c, b));
            if history.len() > window {
                history.remove(0);
            }
            t += 1;
            // Variants with the same window read the same stats.
            let mut windows: BTreeMap<usize, Observation> = BTreeMap::new();
            for ((variant, slot), tally) in variants.iter().zip(&mut trackers).zip(&mut tallies) {
                let Some(tracker) = slot else { continue };
                let secs = variant.spec.window.as_secs() as usize;
                let obs = windows.entry(secs).or_insert_with(|| observe(&history, secs));
                let m = measure(&variant.spec, obs, &totals, &Readings::default());
                if let Verdict::Abort { reason } = tracker.record(&m, true) {
                    match scenario.fault_from {
                        Some(from) if t > from => tally.detections.push(t - from),
                        _ => tally.false_aborts.push(t),
                    }
                    let failed: Vec<&str> = m
                        .results
                        .iter()
                        .filter(|r| r.outcome == Outcome::Fail)
                        .map(|r| r.name.as_str())
                        .collect();
                    let cause = format!("{} ({})", reason.label(), failed.join("+"));
                    *tally.causes.entry(cause).or_default() += 1;
                    *slot = None;
                }
            }
            if trackers.iter().all(Option::is_none) {
                break;
            }
        }
    }
    tallies
}

/// The last `window` seconds of `history` (fewer at the start), merged per track.
fn observe(history: &[(Second, Second)], window: usize) -> Observation {
    let recent = &history[history.len().saturating_sub(window)..];
    let merge = |pick: fn(&(Second, Second)) -> &Second| {
        let mut latency = histogram();
        let (mut requests, mut errors) = (0, 0);
        for s in recent.iter().map(pick) {
            requests += s.requests;
            errors += s.errors;
            latency.add(&s.latency).expect("same bounds");
        }
        Sample {
            requests,
            errors,
            latency,
            seconds: recent.len() as f64,
        }
    };
    Observation {
        candidate: merge(|p| &p.0),
        baseline: merge(|p| &p.1),
    }
}

fn metric(name: &str, check: MetricCheck) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        check,
    }
}

fn success_rate(min: f64) -> MetricSpec {
    metric("success-rate", MetricCheck::SuccessRate { min })
}

fn p99() -> MetricSpec {
    metric(
        "p99",
        MetricCheck::Latency {
            quantile: Quantile::P99,
            max_ms: 500.0,
        },
    )
}

fn vs_baseline(max_diff: f64) -> MetricSpec {
    metric(
        "vs-baseline",
        MetricCheck::ErrorRateVsBaseline {
            max_ratio: Some(1.1),
            max_diff: Some(max_diff),
        },
    )
}

fn sequential() -> MetricSpec {
    metric("sequential", MetricCheck::SequentialErrorRate { confidence: 0.99 })
}

/// The contract's analysis (1 s interval, 10 s window, failureLimit 3, emergency 5% errors or
/// p99 2000 ms, the default `sequentialConfidence`) with these metrics and `minRequests`.
fn spec(metrics: Vec<MetricSpec>, min_requests: u64) -> AnalysisSpec {
    AnalysisSpec {
        initial_delay: Duration::ZERO,
        interval: Duration::from_secs(1),
        window: Duration::from_secs(10),
        min_requests,
        count: None,
        failure_limit: 3,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        sequential_confidence: Some(SEQUENTIAL_CONFIDENCE),
        series: Default::default(),
        metrics,
        emergency: EmergencySpec {
            error_rate: Some(0.05),
            latency_p99_ms: Some(2000.0),
        },
    }
}

fn sequential_confidence(confidence: Option<f64>, mut spec: AnalysisSpec) -> AnalysisSpec {
    spec.sequential_confidence = confidence;
    spec
}

fn variants() -> Vec<Variant> {
    let contract = || vec![success_rate(0.995), p99(), vs_baseline(0.005)];
    let wider = || vec![success_rate(0.98), p99(), vs_baseline(0.015)];
    let with_sequential = |mut m: Vec<MetricSpec>| {
        m.push(sequential());
        m
    };
    let failure_limit = |limit, mut spec: AnalysisSpec| {
        spec.failure_limit = limit;
        spec
    };
    let at = |confidence| sequential_confidence(Some(confidence), spec(contract(), 100));
    vec![
        Variant {
            name: "contract: success ≥ 99.5%, p99 ≤ 500 ms, vs baseline ×1.1 or +0.5 pp (default sequentialConfidence 0.98)",
            spec: spec(contract(), 100),
        },
        Variant {
            name: "contract, sequentialConfidence off (windows only)",
            spec: sequential_confidence(None, spec(contract(), 100)),
        },
        Variant {
            name: "contract + sequentialErrorRate 99%",
            spec: spec(with_sequential(contract()), 100),
        },
        Variant {
            name: "p99 + sequentialErrorRate 99% (no rate thresholds)",
            spec: spec(vec![p99(), sequential()], 100),
        },
        Variant {
            name: "contract, sequential off, failureLimit 2",
            spec: failure_limit(2, sequential_confidence(None, spec(contract(), 100))),
        },
        Variant {
            name: "success ≥ 98%, p99, vs baseline ×1.1 or +1.5 pp",
            spec: spec(wider(), 100),
        },
        Variant {
            name: "contract, sequentialConfidence 0.95",
            spec: at(0.95),
        },
        Variant {
            name: "contract, sequentialConfidence 0.99",
            spec: at(0.99),
        },
        Variant {
            name: "contract, sequentialConfidence 0.995",
            spec: at(0.995),
        },
        Variant {
            name: "contract, sequentialConfidence 0.999",
            spec: at(0.999),
        },
    ]
}

/// The nearest-rank `q` quantile of sorted `xs`.
fn quantile(xs: &[u32], q: f64) -> u32 {
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// `caught/runs | median | p95 | early` of a faulty scenario.
fn detection(t: &Tally, runs: u32) -> String {
    let mut xs = t.detections.clone();
    xs.sort_unstable();
    let early = t.false_aborts.len();
    if xs.is_empty() {
        return format!("0/{runs} | – | – | {early}");
    }
    let (median, p95) = (quantile(&xs, 0.5), quantile(&xs, 0.95));
    format!("{}/{runs} | {median} s | {p95} s | {early}", xs.len())
}

/// `aborted/runs (share), median time` of a healthy scenario.
fn false_aborts(t: &Tally, runs: u32) -> String {
    let mut xs = t.false_aborts.clone();
    xs.sort_unstable();
    let share = 100.0 * xs.len() as f64 / f64::from(runs);
    let at = if xs.is_empty() {
        String::new()
    } else {
        format!(", median at {} s", quantile(&xs, 0.5))
    };
    format!("{}/{runs} ({share:.1}%{at})", xs.len())
}

fn causes(t: &Tally) -> String {
    let mut c: Vec<(&String, &u32)> = t.causes.iter().collect();
    c.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    c.iter()
        .take(3)
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    // `cargo test` runs bench targets without `--bench` to check they work: a few rollouts then.
    let full = std::env::args().any(|a| a == "--bench");
    let (healthy_runs, runs) = if full { (HEALTHY_RUNS, RUNS) } else { (3, 3) };
    let variants = variants();
    let scenarios = [
        Scenario {
            name: "healthy",
            fault_from: None,
            runs: healthy_runs,
        },
        Scenario {
            name: "faulty from the start (5%: 50 req/s)",
            fault_from: Some(0),
            runs,
        },
        Scenario {
            name: "faulty from 45 s (25%: 250 req/s)",
            fault_from: Some(45),
            runs,
        },
    ];
    let results: Vec<Vec<Tally>> = scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| run(s, &variants, 0x5eed + i as u64))
        .collect();

    let plan: Vec<String> = PLAN.iter().map(|(w, s)| format!("{w}% for {s} s")).collect();
    println!(
        "\n{healthy_runs} healthy and {runs} faulty rollouts per scenario, {TRAFFIC} req/s, plan {} ({} s); baseline errors {:.1}%, faulty \
         candidate {:.1}%; measured every 1 s over a 10 s window, failureLimit 3, emergency 5% / p99 2000 ms; \
         a threshold fails only when its breach is clear in the window with {}% confidence; a sequential judge \
         rejects on everything since the analysis began and aborts at once. Detection: seconds from the fault's start to the abort; \"early\": aborted before the fault began.\n",
        plan.join(" → "),
        plan_seconds(),
        BASELINE_ERRORS * 100.0,
        FAULTY_ERRORS * 100.0,
        METRIC_CONFIDENCE * 100.0,
    );
    let [healthy, from_start, later] = &scenarios;
    println!(
        "| analysis | {}: false aborts | {}: caught | median | p95 | early | {}: caught | median | p95 | early |",
        healthy.name, from_start.name, later.name
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} |",
            v.name,
            false_aborts(&results[0][i], healthy.runs),
            detection(&results[1][i], from_start.runs),
            detection(&results[2][i], later.runs),
        );
    }
    println!("\nWhat aborted: the verdict and the failing checks of the aborting measurement (top 3).\n");
    println!("| analysis | {} | {} | {} |", healthy.name, from_start.name, later.name);
    println!("|---|---|---|---|");
    for (i, v) in variants.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} |",
            v.name,
            causes(&results[0][i]),
            causes(&results[1][i]),
            causes(&results[2][i])
        );
    }
}
