//! The sequential judges: exact, anytime-valid tests on error counts, safe to check every
//! second (or after every request, or whenever the control loop looks) without inflating false
//! aborts.
//!
//! Both are mixture sequential probability ratio tests (Wald's SPRT with the alternative mixed
//! over a prior, after Robbins, *Statistical methods related to the law of the iterated
//! logarithm*, 1970). Each keeps a likelihood ratio `M` that is a nonnegative supermartingale with
//! `M₀ = 1` under its null hypothesis, so by Ville's inequality (1939) `P(M ever reaches 1/α) ≤ α`
//! — over the whole analysis, however often it is looked at and however long it runs. Rejecting
//! at `1/α` is therefore a test at level α under continuous monitoring: an *e-process* in the
//! terms of Ramdas, Grünwald, Vovk and Shafer, *Game-theoretic statistics and safe anytime-valid
//! inference* (Statistical Science, 2023). Unlike the normal-approximation mSPRT (Johari,
//! Pekelis and Walsh, 2017) that this module replaced, both work on the binomial likelihood
//! itself, so they are exact at the small counts a low-weight canary has, where a normal
//! approximation must be padded to stay valid and so wastes most of the evidence.
//!
//! - [`limit_log_evidence`] — **the candidate against a fixed limit** (`successRate {min}`,
//!   `errorRate {max}`): H₀ "the error rate is at most the limit `p₀`". The alternative is a
//!   mixture over `p = p₀ + Δ`, `Δ` spread log-uniformly over [`LIMIT_EFFECTS`] (+0.5 to +5
//!   percentage points, the effects a canary's error checks exist for: the playbooks' +0.5 pp
//!   tolerance up to the usual 5% emergency limit) on [`LIMIT_COMPONENTS`] points. For each
//!   `p > p₀` the per-request likelihood ratio `(p/p₀)^x ((1−p)/(1−p₀))^(1−x)` has expectation
//!   `1 + (p_true − p₀)(p − p₀)/(p₀(1 − p₀))`, at most 1 whenever the true rate is at most `p₀`
//!   — even a rate that changes from request to request, as long as it stays within the limit.
//!   So the mixture is a supermartingale for every candidate within its limit, and the
//!   false-abort probability of a candidate exactly at the limit is at most α. It needs only the
//!   totals since the analysis began: `M` depends on the data through the request and error
//!   counts alone.
//! - [`OddsEvidence`] — **the candidate against the baseline** (`sequentialErrorRate`): H₀ "the
//!   candidate's error rate is at most the baseline's", whatever that rate is. Within one
//!   interval, given how many requests each track served and how many errors there were in all,
//!   the number of those errors that are the candidate's follows Fisher's noncentral
//!   hypergeometric distribution with the two tracks' odds ratio `ψ`, and is the central
//!   (ordinary) hypergeometric exactly when the rates are equal — whatever the common rate, and
//!   whatever each track's share of traffic. Conditioning on each interval's total errors, as
//!   Fisher's exact test does, removes the unknown baseline rate. The likelihood ratio of odds
//!   ratio `ψ > 1` against `ψ = 1` for the interval, `ψ^x / E₀[ψ^X]`, has expectation 1 under
//!   equal rates and at most 1 when the candidate is better (the distribution is stochastically
//!   increasing in `ψ`); the product over intervals, mixed over `ψ` spread log-uniformly over
//!   [`ODDS_RATIOS`] (a quarter more errors to twenty times as many) on [`ODDS_COMPONENTS`]
//!   points, is the supermartingale. Exact for any traffic split, changing weights included, and
//!   for error rates that move over time as long as both tracks move together. It needs each
//!   interval's fresh counts, so the caller folds them in one interval at a time
//!   ([`OddsEvidence::add`]). (Turner, Ly and Grünwald, *Generic E-variables for exact
//!   sequential k-sample tests that allow for optional stopping*, 2024, build exact sequential
//!   two-sample e-values without conditioning, from blocks of a fixed design; conditioning needs
//!   no design and no assumption about the common rate.)
//!
//! The priors are fixed constants, not fitted to data (choosing them from the data would break
//! the martingale property). They set how fast an effect is found, not whether the test is valid:
//! an effect inside the range costs about `ln` of the range's width in prior mass, one outside it
//! is still found, later.

use serde::{Deserialize, Serialize};

use super::Counts;

/// The range of error-rate increases, in shares (0.005 = half a percentage point), that
/// [`limit_log_evidence`] mixes over, log-uniformly.
pub const LIMIT_EFFECTS: (f64, f64) = (0.005, 0.05);

/// How many points of [`LIMIT_EFFECTS`] the mixture uses: enough that neighbours lie 7.7%
/// apart, so the discrete mixture loses nothing measurable against the continuous one.
pub const LIMIT_COMPONENTS: usize = 32;

/// The range of odds ratios, candidate to baseline, that [`OddsEvidence`] mixes over,
/// log-uniformly. For rates of a few percent the odds ratio is close to the ratio of the rates:
/// +2 percentage points on a 0.5% baseline is about 5.
pub const ODDS_RATIOS: (f64, f64) = (1.25, 20.0);

/// How many points of [`ODDS_RATIOS`] the mixture uses (neighbours 12.8% apart).
pub const ODDS_COMPONENTS: usize = 24;

/// `k` points spread log-uniformly from `lo` to `hi`, both included.
fn log_grid(lo: f64, hi: f64, k: usize) -> impl Iterator<Item = f64> + Clone {
    let step = (hi / lo).ln() / (k - 1) as f64;
    (0..k).map(move |i| lo * (step * i as f64).exp())
}

/// `ln Σ exp(xs)`, without overflow; `-∞` for no terms.
fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let top = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    if top.is_infinite() {
        return top;
    }
    top + xs.map(|x| (x - top).exp()).sum::<f64>().ln()
}

/// `ln` of the binomial likelihood of `errors` in `requests` at rate `p` (0 ≤ p ≤ 1), without
/// the binomial coefficient (it cancels in every ratio). `0 · ln 0` counts as 0.
fn log_likelihood(p: f64, requests: u64, errors: u64) -> f64 {
    let term = |count: u64, q: f64| if count == 0 { 0.0 } else { count as f64 * q.ln() };
    term(errors, p) + term(requests - errors, 1.0 - p)
}

/// `ln M`: the natural log of the mixture likelihood ratio against "the error rate is at most
/// `limit`" after `errors` errors in `requests` requests (errors beyond `requests` count as
/// `requests`). The test rejects at false-abort probability α when `ln M ≥ ln(1/α)`.
///
/// `M = (1/K) Σₖ L(p₀ + Δₖ) / L(p₀)` over the [`LIMIT_COMPONENTS`] effects `Δₖ` of
/// [`LIMIT_EFFECTS`]; components at or beyond a rate of 1 drop out (their prior mass is lost,
/// which keeps `M` a supermartingale). A limit of 0 is broken by the first error (`M` is then
/// infinite); a limit of 1 cannot be broken (`M` is 0, `ln M` is `-∞`). `M₀ = 1`.
pub fn limit_log_evidence(requests: u64, errors: u64, limit: f64) -> f64 {
    let errors = errors.min(requests);
    let null = log_likelihood(limit, requests, errors);
    let (lo, hi) = LIMIT_EFFECTS;
    let components = log_grid(lo, hi, LIMIT_COMPONENTS).map(|d| limit + d).map(|p| {
        if p < 1.0 {
            log_likelihood(p, requests, errors) - null
        } else {
            f64::NEG_INFINITY
        }
    });
    log_sum_exp(components) - (LIMIT_COMPONENTS as f64).ln()
}

/// The evidence, interval by interval, that the candidate's error rate exceeds the baseline's:
/// the running log likelihood ratio of each odds ratio of [`ODDS_RATIOS`] (see the module
/// documentation). Starts empty (every ratio 1); serializable, so that a persisted analysis
/// carries on after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OddsEvidence {
    /// `ln` of each component's likelihood ratio so far; empty before the first interval with
    /// errors on both sides of the comparison.
    log_ratios: Vec<f64>,
}

impl OddsEvidence {
    /// Folds in one interval's fresh counts of both tracks. An interval without errors, or
    /// without requests on one track, carries no information about the odds ratio and changes
    /// nothing. Errors beyond requests count as requests.
    pub fn add(&mut self, fresh: Counts) {
        let (c, b) = (fresh.candidate_requests, fresh.baseline_requests);
        let (x, y) = (fresh.candidate_errors.min(c), fresh.baseline_errors.min(b));
        let e = x + y;
        if e == 0 || c == 0 || b == 0 {
            return;
        }
        // The hypergeometric weights C(c, k)·C(b, e − k) of every possible candidate share `k`
        // of the interval's `e` errors, as logs relative to the first, from the ratio of
        // consecutive terms.
        let first = e.saturating_sub(b);
        let last = e.min(c);
        let mut weights = Vec::with_capacity((last - first + 1) as usize);
        let mut w = 0.0;
        for k in first..=last {
            weights.push(w);
            w += (((c - k) * (e - k)) as f64).ln() - (((k + 1) * (b + k + 1 - e)) as f64).ln();
        }
        let base = log_sum_exp(weights.iter().copied());
        if self.log_ratios.is_empty() {
            self.log_ratios = vec![0.0; ODDS_COMPONENTS];
        }
        let (lo, hi) = ODDS_RATIOS;
        for (total, psi) in self.log_ratios.iter_mut().zip(log_grid(lo, hi, ODDS_COMPONENTS)) {
            let ln_psi = psi.ln();
            let tilted = weights.iter().zip(first..).map(|(w, k)| w + k as f64 * ln_psi);
            // ln(ψ^x / E₀[ψ^X]).
            *total += x as f64 * ln_psi - (log_sum_exp(tilted) - base);
        }
    }

    /// `ln M`, the log of the mixture likelihood ratio; 0 (`M = 1`) before any evidence. The
    /// test rejects at false-abort probability α when `ln M ≥ ln(1/α)`.
    pub fn log_evidence(&self) -> f64 {
        if self.log_ratios.is_empty() {
            return 0.0;
        }
        log_sum_exp(self.log_ratios.iter().copied()) - (self.log_ratios.len() as f64).ln()
    }
}

/// The complementary error function, with fractional error below 1.2e-7 everywhere (the
/// Chebyshev fit of Press et al., *Numerical Recipes*, 2nd ed., §6.2). Checks the analysis's
/// z-scores in its tests.
#[cfg(test)]
pub(super) fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests;
