//! A seeded random generator for simulations in tests and benches: SplitMix64, dependency-free,
//! so a seed gives the same draws everywhere.

/// SplitMix64 (Steele, Lea and Flood, 2014), seeded by its starting state.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform on (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// Binomial(n, p), exactly: jumps from success to success with geometric gaps, about
    /// `n·min(p, 1−p) + 1` draws, so cheap for error rates.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if p > 0.5 {
            return n - self.binomial(n, 1.0 - p);
        }
        if p <= 0.0 {
            return 0;
        }
        let ln_q = (1.0 - p).ln();
        let (mut hits, mut at) = (0, 0u64);
        loop {
            let failures = (self.unit().ln() / ln_q).floor() as u64;
            at = at.saturating_add(failures).saturating_add(1);
            if at > n {
                return hits;
            }
            hits += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn binomial_draws_center_on_the_mean() {
        let mut rng = Rng(7);
        for (n, p) in [(1_000u64, 0.005), (1_000, 0.5), (1_000, 0.97), (10, 1.0), (10, 0.0)] {
            let draws = 2_000;
            let mean = (0..draws).map(|_| rng.binomial(n, p)).sum::<u64>() as f64 / f64::from(draws);
            let sd = (n as f64 * p * (1.0 - p) / f64::from(draws)).sqrt();
            assert!((mean - n as f64 * p).abs() <= 5.0 * sd + 1e-9, "n {n} p {p}: {mean}");
        }
    }
}
