//! Exact binomial tails, and the one-sided Clopper–Pearson bound built on them, for judging a
//! window's share of errors (or of slow requests) against a limit.
//!
//! A window fails a rate limit when the exact one-sided binomial test rejects "the share is at
//! most the limit": `P(X ≥ hits)` for `X ~ Binomial(n, limit)` is below `1 − confidence`. That is
//! the same as the Clopper–Pearson lower bound of the share lying above the limit (Clopper and
//! Pearson, *Biometrika* 26, 1934), and unlike an approximate (Wald or Wilson) bound it holds
//! its level for every `n` and limit: a candidate exactly at its limit fails a window with
//! probability at most `1 − confidence`, also in the first seconds of a canary, when a window
//! holds only a handful of expected errors.

/// `P(X ≥ k)` for `X ~ Binomial(n, p)`, summed exactly from whichever tail is smaller, in
/// terms that shrink away from the mode; `k` beyond `n` gives 0.
pub fn at_least(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (nf, odds) = (n as f64, p / (1.0 - p));
    if k as f64 >= (nf + 1.0) * p {
        // Above the mode: terms fall from k upwards.
        sum_terms(n, p, k, |i| {
            (i < n).then(|| ((n - i) as f64 / (i + 1) as f64 * odds, i + 1))
        })
    } else {
        // Below the mode: 1 − P(X ≤ k − 1), terms falling from k − 1 downwards.
        let below = sum_terms(n, p, k - 1, |i| {
            (i > 0).then(|| (i as f64 / (n - i + 1) as f64 / odds, i - 1))
        });
        (1.0 - below).max(0.0)
    }
}

/// `Σ pmf(i)` from `i = start` on, each next term being the last times `step(i).0` at
/// `step(i).1`, until the terms stop mattering (or `step` ends).
fn sum_terms(n: u64, p: f64, start: u64, step: impl Fn(u64) -> Option<(f64, u64)>) -> f64 {
    let mut term = ln_pmf(start, n, p).exp();
    let (mut sum, mut i) = (term, start);
    while let Some((ratio, next)) = step(i) {
        term *= ratio;
        sum += term;
        i = next;
        if term <= sum * 1e-17 {
            break;
        }
    }
    sum.min(1.0)
}

/// `ln P(X = k)` for `X ~ Binomial(n, p)`, `0 < p < 1`.
fn ln_pmf(k: u64, n: u64, p: f64) -> f64 {
    let (k, n) = (k as f64, n as f64);
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0) + k * p.ln() + (n - k) * (-p).ln_1p()
}

/// `ln Γ(x)` for `x > 0`: the Lanczos approximation with g = 7 and nine coefficients (as in
/// Press et al., *Numerical Recipes*, 3rd ed., §6.1), relative error near 1e-15.
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Whether `hits` of `n` show a share above `limit` at `confidence`: the exact one-sided
/// binomial test rejects "share ≤ limit" (equivalently, [`lower_bound`] is above `limit`).
pub fn exceeds(hits: u64, n: u64, limit: f64, confidence: f64) -> bool {
    let hits = hits.min(n);
    n > 0 && hits as f64 > limit * n as f64 && at_least(hits, n, limit) < 1.0 - confidence
}

/// The one-sided Clopper–Pearson lower confidence bound of the share `hits / n`: the smallest
/// share that would give `hits` or more with probability `1 − confidence`. Found by bisection
/// (`P(X ≥ hits)` rises with the share); 0 with no hits.
pub fn lower_bound(hits: u64, n: u64, confidence: f64) -> f64 {
    let hits = hits.min(n);
    if n == 0 || hits == 0 {
        return 0.0;
    }
    let alpha = 1.0 - confidence;
    let (mut low, mut high) = (0.0, hits as f64 / n as f64);
    for _ in 0..60 {
        let mid = 0.5 * (low + high);
        if at_least(hits, n, mid) < alpha {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

#[cfg(test)]
mod tests;
