use super::*;

use switchyard_testkit::Rng;

/// Per second of a simulated analysis: (candidate requests, baseline requests, the error rates'
/// common factor). The factor lets a shared dependency fail both tracks at once.
type Traffic = fn(u32) -> (u64, u64, f64);

/// 1,000 req/s split as the judgement bench's canary: 5%, 25%, 50%, 30 s each, then 50%.
fn rollout(t: u32) -> (u64, u64, f64) {
    let w = match t {
        0..30 => 50,
        30..60 => 250,
        _ => 500,
    };
    (w, 1000 - w, 1.0)
}

/// The same, with a shared dependency failing for ten seconds: both tracks' error rates ×20.
fn shared_outage(t: u32) -> (u64, u64, f64) {
    let (c, b, _) = rollout(t);
    (c, b, if (40..50).contains(&t) { 20.0 } else { 1.0 })
}

fn quiet(_: u32) -> (u64, u64, f64) {
    (2, 38, 1.0)
}

/// The judge under test, fed one second at a time; returns whether it rejects.
enum Judge {
    Limit { limit: f64, n: u64, errors: u64 },
    Odds(OddsEvidence),
}

impl Judge {
    fn add(&mut self, fresh: Counts, alpha: f64) -> bool {
        let ln_m = match self {
            Self::Limit { limit, n, errors } => {
                *n += fresh.candidate_requests;
                *errors += fresh.candidate_errors;
                limit_log_evidence(*n, *errors, *limit)
            }
            Self::Odds(e) => {
                e.add(fresh);
                e.log_evidence()
            }
        };
        ln_m >= -alpha.ln()
    }
}

/// Runs `runs` analyses of `seconds` each, checking after every second; returns, for each run
/// that rejected, the second of the rejection.
#[allow(clippy::too_many_arguments, reason = "a test's knobs, named at each call")]
fn simulate(
    seed: u64,
    runs: u32,
    seconds: u32,
    traffic: Traffic,
    p_candidate: f64,
    p_baseline: f64,
    alpha: f64,
    judge: impl Fn() -> Judge,
) -> Vec<u32> {
    let mut rng = Rng(seed);
    let mut rejected = Vec::new();
    for _ in 0..runs {
        let mut j = judge();
        for t in 0..seconds {
            let (nc, nb, factor) = traffic(t);
            let fresh = Counts {
                candidate_requests: nc,
                candidate_errors: rng.binomial(nc, (p_candidate * factor).min(1.0)),
                baseline_requests: nb,
                baseline_errors: rng.binomial(nb, (p_baseline * factor).min(1.0)),
            };
            if j.add(fresh, alpha) {
                rejected.push(t + 1);
                break;
            }
        }
    }
    rejected
}

/// The largest number of false alarms out of `runs` still consistent with a rate of `alpha`:
/// the mean plus three standard deviations.
fn allowed(runs: u32, alpha: f64) -> usize {
    let n = f64::from(runs);
    (n * alpha + 3.0 * (n * alpha * (1.0 - alpha)).sqrt()).floor() as usize
}

fn limit(limit: f64) -> impl Fn() -> Judge {
    move || Judge::Limit { limit, n: 0, errors: 0 }
}

fn odds() -> Judge {
    Judge::Odds(OddsEvidence::default())
}

fn median(mut xs: Vec<u32>) -> u32 {
    xs.sort_unstable();
    xs[xs.len() / 2]
}

/// Ville's inequality at work: a candidate exactly at its limit, judged every second for three
/// minutes, is rejected in at most a share α of analyses.
#[test]
fn the_limit_judge_keeps_false_aborts_within_alpha() {
    for (seed, (p, alpha)) in [(0.005, 0.005), (0.005, 0.05), (0.05, 0.01), (0.0005, 0.05)]
        .into_iter()
        .enumerate()
    {
        let runs = 1000;
        let rejected = simulate(seed as u64 + 1, runs, 180, rollout, p, p, alpha, limit(p)).len();
        assert!(
            rejected <= allowed(runs, alpha),
            "rate {p} at its limit, α {alpha}: {rejected} of {runs} rejected"
        );
    }
}

/// The same for the candidate against the baseline at equal rates: with the weights changing,
/// a quiet route, and a shared dependency failing both tracks for ten seconds (where a test on
/// the totals would see the candidate's error rate jump as its share grew).
#[test]
fn the_odds_judge_keeps_false_aborts_within_alpha() {
    let cases: [(&str, Traffic, f64, f64, u32); 4] = [
        ("rollout, 0.5% errors, 99%", rollout, 0.005, 0.01, 120),
        ("rollout, 0.5% errors, 95%", rollout, 0.005, 0.05, 120),
        ("shared outage, 95%", shared_outage, 0.005, 0.05, 120),
        ("quiet, 5% errors, 95%", quiet, 0.05, 0.05, 300),
    ];
    for (seed, (name, traffic, p, alpha, seconds)) in cases.into_iter().enumerate() {
        let runs = 1000;
        let rejected = simulate(seed as u64 + 11, runs, seconds, traffic, p, p, alpha, odds).len();
        assert!(
            rejected <= allowed(runs, alpha),
            "{name}: {rejected} of {runs} null runs rejected, more than α = {alpha} allows"
        );
    }
}

#[test]
fn a_fixed_level_test_repeated_every_second_would_not() {
    // The reason for the martingale: an exact one-sided binomial test at 99% on the totals,
    // looked at every second of a 5-minute analysis, rejects a candidate at its limit far more
    // often than 1% of the time.
    let mut rng = Rng(7);
    let (runs, mut alarms) = (1000, 0);
    for _ in 0..runs {
        let (mut n, mut errors) = (0u64, 0u64);
        for t in 0..300 {
            let (nc, _, _) = rollout(t);
            n += nc;
            errors += rng.binomial(nc, 0.005);
            // P(X ≥ errors) under Binomial(n, 0.005), by the normal approximation of the
            // Poisson's square root (Anscombe), plenty for a demonstration.
            let z = 2.0 * ((errors as f64 + 0.375).sqrt() - (n as f64 * 0.005 + 0.125).sqrt());
            if z > 2.326 {
                alarms += 1;
                break;
            }
        }
    }
    assert!(alarms >= 50, "{alarms} alarms in {runs} runs");
}

/// The judgement bench's faulty candidate: +2 percentage points at 50 requests/s.
#[test]
fn two_points_more_errors_are_caught_within_seconds() {
    let flat: Traffic = |_| (50, 950, 1.0);
    let times = simulate(21, 200, 120, flat, 0.025, 0.005, 0.005, limit(0.005));
    assert_eq!(times.len(), 200, "the limit judge rejects every run within two minutes");
    let m = median(times);
    assert!((4..=7).contains(&m), "limit judge: median detection after {m} s");

    let times = simulate(22, 200, 120, flat, 0.025, 0.005, 0.01, odds);
    assert_eq!(times.len(), 200, "the odds judge rejects every run within two minutes");
    let m = median(times);
    assert!((4..=8).contains(&m), "odds judge: median detection after {m} s");
}

/// The exactness the martingale argument rests on: under the null, the likelihood ratio of one
/// interval has expectation exactly 1.
#[test]
fn each_ratio_has_expectation_one_under_the_null() {
    // The limit judge on 40 requests at a rate of 2%: Σ P(k errors) · M(k).
    let (n, p) = (40u64, 0.02f64);
    let mut pmf = (1.0 - p).powf(n as f64);
    let mut expectation = 0.0f64;
    for k in 0..=n {
        expectation += pmf * limit_log_evidence(n, k, p).exp();
        pmf *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
    }
    assert!((expectation - 1.0).abs() < 1e-9, "{expectation}");

    // The odds judge on an interval of 12 candidate and 30 baseline requests with 7 errors:
    // the candidate's share of them is hypergeometric under equal rates.
    let (c, b, e) = (12u64, 30u64, 7u64);
    let choose = |n: u64, k: u64| (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64);
    let mut expectation = 0.0f64;
    for x in 0..=e.min(c) {
        let pmf = choose(c, x) * choose(b, e - x) / choose(c + b, e);
        let mut one = OddsEvidence::default();
        one.add(Counts {
            candidate_requests: c,
            candidate_errors: x,
            baseline_requests: b,
            baseline_errors: e - x,
        });
        expectation += pmf * one.log_evidence().exp();
    }
    assert!((expectation - 1.0).abs() < 1e-9, "{expectation}");
}

/// The limit judge's closed form is the product of per-request likelihood ratios, mixed.
#[test]
fn the_limit_evidence_is_the_mixed_product_of_per_request_ratios() {
    let (p0, n, errors) = (0.01, 300u64, 9u64);
    let (lo, hi) = LIMIT_EFFECTS;
    let mixed: f64 = log_grid(lo, hi, LIMIT_COMPONENTS)
        .map(|d| {
            let p = p0 + d;
            (0..n)
                .map(|i| if i < errors { p / p0 } else { (1.0 - p) / (1.0 - p0) })
                .product::<f64>()
        })
        .sum::<f64>()
        / LIMIT_COMPONENTS as f64;
    let closed = limit_log_evidence(n, errors, p0).exp();
    assert!((closed / mixed - 1.0).abs() < 1e-9, "{closed} vs {mixed}");
}

#[test]
fn more_errors_bring_more_evidence() {
    let mut previous = f64::NEG_INFINITY;
    for errors in 0..20 {
        let e = limit_log_evidence(500, errors, 0.005);
        assert!(e > previous, "{errors} errors: {e} after {previous}");
        previous = e;
    }
    let mut previous = f64::NEG_INFINITY;
    for x in 0..10 {
        let mut o = OddsEvidence::default();
        o.add(Counts {
            candidate_requests: 50,
            candidate_errors: x,
            baseline_requests: 950,
            baseline_errors: 10 - x,
        });
        let e = o.log_evidence();
        assert!(e > previous, "{x} of 10 errors on the candidate: {e} after {previous}");
        previous = e;
    }
}

#[test]
fn edge_counts_give_defined_evidence() {
    assert_eq!(limit_log_evidence(0, 0, 0.005), 0.0, "no requests: M = 1");
    assert_eq!(
        limit_log_evidence(10, 1, 0.0),
        f64::INFINITY,
        "one error breaks a limit of 0"
    );
    assert!(limit_log_evidence(10, 0, 0.0) < 0.0);
    assert_eq!(
        limit_log_evidence(10, 10, 1.0),
        f64::NEG_INFINITY,
        "a limit of 1 cannot be broken"
    );
    assert_eq!(
        limit_log_evidence(10, 50, 0.1),
        limit_log_evidence(10, 10, 0.1),
        "errors beyond requests count as requests"
    );
    assert!(limit_log_evidence(1000, 1000, 0.99).is_finite());

    let mut o = OddsEvidence::default();
    assert_eq!(o.log_evidence(), 0.0);
    for fresh in [
        Counts::default(),
        Counts {
            candidate_requests: 10,
            candidate_errors: 10,
            ..Counts::default()
        },
        Counts {
            candidate_requests: 10,
            baseline_requests: 10,
            ..Counts::default()
        },
    ] {
        o.add(fresh);
        assert_eq!(o.log_evidence(), 0.0, "{fresh:?} says nothing about the odds ratio");
    }
    // Every request an error on both tracks: the candidate's share is certain, no evidence.
    o.add(Counts {
        candidate_requests: 5,
        candidate_errors: 9,
        baseline_requests: 5,
        baseline_errors: 5,
    });
    assert!(o.log_evidence().abs() < 1e-12, "{}", o.log_evidence());
}

#[test]
fn the_odds_evidence_survives_a_round_trip_through_json() {
    let mut o = OddsEvidence::default();
    o.add(Counts {
        candidate_requests: 50,
        candidate_errors: 3,
        baseline_requests: 950,
        baseline_errors: 4,
    });
    let back: OddsEvidence = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert_eq!(back, o);
    assert!(o.log_evidence() > 0.0);
}
