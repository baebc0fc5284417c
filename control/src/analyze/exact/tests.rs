use super::*;

/// `P(X ≥ k)` by summing every term directly, in high-precision-free but short form.
fn brute_at_least(k: u64, n: u64, p: f64) -> f64 {
    let mut choose = 1.0f64;
    let mut total = 0.0;
    for i in 0..=n {
        if i > 0 {
            choose *= (n - i + 1) as f64 / i as f64;
        }
        if i >= k {
            total += choose * p.powi(i as i32) * (1.0 - p).powi((n - i) as i32);
        }
    }
    total
}

#[test]
fn tails_match_the_direct_sum() {
    for n in [1u64, 2, 7, 30, 60] {
        for p in [0.001, 0.005, 0.05, 0.3, 0.5, 0.9] {
            for k in 0..=n + 1 {
                let (fast, slow) = (at_least(k, n, p), brute_at_least(k, n, p));
                assert!(
                    (fast - slow).abs() <= 1e-12 + 1e-9 * slow,
                    "n {n} p {p} k {k}: {fast} vs {slow}"
                );
            }
        }
    }
}

#[test]
fn ln_gamma_matches_factorials() {
    assert!(ln_gamma(1.0).abs() < 1e-14);
    assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
    let ln_100_factorial: f64 = (1..=100).map(|i| (i as f64).ln()).sum();
    assert!((ln_gamma(101.0) - ln_100_factorial).abs() < 1e-10);
}

#[test]
fn large_windows_keep_their_precision() {
    // 1,000,000 requests at 0.5%: the mean plus five standard deviations (about 352 errors
    // above 5,000) is rare, the mean itself about even.
    let (n, p) = (1_000_000, 0.005);
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let far = at_least(5_000 + (5.0 * sd) as u64, n, p);
    assert!(far > 1e-8 && far < 1e-6, "{far}");
    let mid = at_least(5_000, n, p);
    assert!((mid - 0.5).abs() < 0.01, "{mid}");
}

#[test]
fn the_lower_bound_is_where_the_tail_reaches_alpha() {
    for (hits, n) in [(1u64, 10u64), (4, 150), (9, 500), (26, 2500), (500, 1000), (1000, 1000)] {
        for confidence in [0.99, 0.9999] {
            let low = lower_bound(hits, n, confidence);
            assert!(low < hits as f64 / n as f64);
            let tail = at_least(hits, n, low);
            assert!(((1.0 - confidence) - tail).abs() < 1e-9, "{hits}/{n}: {tail}");
            // `exceeds` says the same: a limit just below the bound is exceeded, one above not.
            assert!(exceeds(hits, n, low * 0.999, confidence));
            assert!(!exceeds(hits, n, low * 1.001, confidence));
        }
    }
    assert_eq!(lower_bound(0, 100, 0.99), 0.0);
    // The textbook value: one success in ten at 95% one-sided is 0.0051.
    assert!((lower_bound(1, 10, 0.95) - 0.005_116).abs() < 1e-5);
}

#[test]
fn a_share_at_the_limit_is_never_judged_above_it_more_often_than_alpha() {
    // The exact test's guarantee, for every window size: the probability, at share = limit, of
    // the counts it calls a breach.
    for n in [20u64, 100, 150, 500, 2_500, 10_000] {
        for limit in [0.005, 0.01, 0.05] {
            for confidence in [0.99, 0.9999] {
                let first = (0..=n).find(|&k| exceeds(k, n, limit, confidence));
                let chance = first.map_or(0.0, |k| at_least(k, n, limit));
                assert!(chance <= 1.0 - confidence, "{n} at {limit}: {chance}");
            }
        }
    }
}
