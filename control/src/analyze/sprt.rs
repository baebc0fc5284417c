//! The sequential judge: an anytime-valid test that the candidate's error rate exceeds the
//! baseline's, safe to check after every request, every second, or whenever the control loop
//! looks, without inflating false aborts.
//!
//! It is the normal-approximation mixture SPRT (mSPRT) of Johari, Pekelis and Walsh, *Always
//! Valid Inference: Continuous Monitoring of A/B Tests* (2017; Operations Research 2022), for the
//! difference of two Bernoulli rates. With `θ̂ = p̂_c − p̂_b` and its variance
//! `V = p_c(1 − p_c)/n_c + p_b(1 − p_b)/n_b`, the likelihood ratio of "difference θ" against
//! "no difference", mixed over θ, is a nonnegative martingale under the null; by Ville's
//! inequality it ever reaches `1/α` with probability at most `α`, however often it is looked at.
//!
//! Two choices differ from the paper's symmetric test:
//!
//! - **One-sided mixture.** θ is mixed over a half-normal on θ > 0 (scale [`TAU`]) rather than
//!   a normal on all θ, because only "candidate worse" aborts. That gives
//!   `Λ₊ = 2Φ(θ̂τ/√(V(V+τ²))) · √(V/(V+τ²)) · exp(τ²θ̂²/(2V(V+τ²)))`, the symmetric `Λ` times
//!   a factor between 0 and 2. Each likelihood ratio with θ > 0 is a supermartingale whenever the
//!   true difference is ≤ 0, so `α` bounds the false-abort probability for every candidate that
//!   is no worse than the baseline, and a worse one is caught sooner than with `Λ` (up to a factor
//!   2 more evidence for the same data).
//! - **Continuity floor.** The variance uses `p̃ = (errors + ½)/(requests + 1)` per track, so `V`
//!   stays positive with zero errors, and small counts (where the normal approximation is
//!   weakest) are judged conservatively. A candidate with more errors than its baseline gets a
//!   larger plug-in variance, which only makes the test slower to reject.
//!
//! The martingale argument assumes the two error rates are constant over the analysis. A failure
//! of a dependency shared by both tracks while the candidate's share of traffic changes can bias
//! `θ̂` (the candidate's requests lean towards the later period); restart the totals at each
//! weight step if that matters more than the extra `α` each restart spends.

use serde::{Deserialize, Serialize};

use super::Cumulative;

/// The mixing scale τ of the difference of error rates: one percentage point. The test is most
/// sensitive to differences near the scale where `V ≈ τ²`; one percentage point is the effect
/// a canary's error-rate checks care about (the playbooks' `+0.5 pp` to `+2 pp`). It is a
/// constant because choosing it from the data would break the martingale property.
pub const TAU: f64 = 0.01;

/// The evidence that the candidate's error rate exceeds the baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The candidate's error rate over the totals.
    pub candidate_rate: f64,
    /// The baseline's error rate over the totals.
    pub baseline_rate: f64,
    /// `candidate_rate − baseline_rate`, the estimated difference θ̂.
    pub difference: f64,
    /// The variance `V` of the difference (with the continuity floor).
    pub variance: f64,
    /// `ln Λ₊`, the natural log of the one-sided mixture likelihood ratio.
    pub log_ratio: f64,
}

impl Evidence {
    /// Whether the evidence rejects "candidate no worse" at false-abort probability `alpha`
    /// (1 − confidence): the estimated difference is positive and `Λ₊ ≥ 1/alpha`.
    pub fn rejects(&self, alpha: f64) -> bool {
        self.difference > 0.0 && self.log_ratio >= -alpha.ln()
    }

    /// `Λ₊`, capped at 1e300 so that it stays a finite number in JSON.
    pub fn likelihood_ratio(&self) -> f64 {
        self.log_ratio.min(690.0).exp()
    }
}

/// The evidence from the totals since the analysis began, with mixing scale `tau`
/// (use [`TAU`]); `None` while either track has no requests. Errors beyond requests count as
/// requests.
pub fn evidence(totals: &Cumulative, tau: f64) -> Option<Evidence> {
    let (nc, nb) = (totals.candidate_requests, totals.baseline_requests);
    if nc == 0 || nb == 0 {
        return None;
    }
    let (ec, eb) = (totals.candidate_errors.min(nc), totals.baseline_errors.min(nb));
    let (nc_f, nb_f) = (nc as f64, nb as f64);
    let (candidate_rate, baseline_rate) = (ec as f64 / nc_f, eb as f64 / nb_f);
    let theta = candidate_rate - baseline_rate;
    let floored = |e: u64, n: f64| {
        let p = (e as f64 + 0.5) / (n + 1.0);
        p * (1.0 - p) / n
    };
    let v = floored(ec, nc_f) + floored(eb, nb_f);
    let t2 = tau * tau;
    let log_ratio = std::f64::consts::LN_2
        + ln_normal_cdf(theta * tau / (v * (v + t2)).sqrt())
        + 0.5 * (v / (v + t2)).ln()
        + t2 * theta * theta / (2.0 * v * (v + t2));
    Some(Evidence {
        candidate_rate,
        baseline_rate,
        difference: theta,
        variance: v,
        log_ratio,
    })
}

/// `ln Φ(x)` of the standard normal distribution; `-∞` where Φ underflows.
fn ln_normal_cdf(x: f64) -> f64 {
    (0.5 * erfc(-x / std::f64::consts::SQRT_2)).ln()
}

/// The complementary error function, with fractional error below 1.2e-7 everywhere (the
/// Chebyshev fit of Press et al., *Numerical Recipes*, 2nd ed., §6.2). Also checks the
/// analysis's z-scores in its tests.
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
