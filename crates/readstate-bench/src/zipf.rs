//! A Zipf sampler over ranks `0..n`: rank `k` (0-based) is drawn with probability
//! proportional to `1 / (k + 1)^s`. Exact: the cumulative distribution is precomputed
//! once (8 bytes per rank) and each draw is one uniform variate and a binary search.

use rand::{Rng, RngExt};

/// Zipf(`n`, `s`) over 0-based ranks. Cheap to share (`Arc`); sampling is read-only.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// `cdf[k]` = P(rank ≤ k); the last entry is exactly 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks with exponent `s` (`s = 1.0` is the classic
    /// Zipf law of BENCH.md).
    ///
    /// # Errors
    /// When `n` is 0 or `s` is negative or not finite.
    pub fn new(n: usize, s: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(n > 0, "a Zipf distribution needs at least one rank");
        anyhow::ensure!(
            s.is_finite() && s >= 0.0,
            "the Zipf exponent must be a finite number ≥ 0, not {s}"
        );
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0_f64;
        for k in 1..=n {
            total += (k as f64).powf(-s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        // Rounding can leave the last entry a hair below 1; a draw of u ∈ [0, 1) must
        // always find a rank.
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Ok(Self { cdf })
    }

    /// The number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: a Zipf distribution has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The probability of rank `k` (0-based); 0 outside `0..n`.
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf.first().copied().unwrap_or(0.0),
            _ if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// Draws a 0-based rank.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.random();
        // The first rank whose cumulative probability exceeds u.
        let k = self.cdf.partition_point(|&c| c <= u);
        k.min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    /// Counts per rank after `draws` samples.
    fn histogram(zipf: &Zipf, seed: u64, draws: usize) -> Vec<u64> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut counts = vec![0_u64; zipf.len()];
        for _ in 0..draws {
            counts[zipf.sample(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn probabilities_follow_one_over_rank_and_sum_to_one() {
        let zipf = Zipf::new(1000, 1.0).unwrap();

        let h: f64 = (1..=1000).map(|k| 1.0 / f64::from(k)).sum();
        let total: f64 = (0..1000).map(|k| zipf.probability(k)).sum();

        assert!((total - 1.0).abs() < 1e-12);
        for k in [0_usize, 1, 9, 99, 999] {
            let expected = 1.0 / ((k + 1) as f64 * h);
            assert!((zipf.probability(k) - expected).abs() < 1e-12, "rank {k}");
        }
        assert!((zipf.probability(0) / zipf.probability(1) - 2.0).abs() < 1e-9);
        assert_eq!(zipf.probability(1000), 0.0);
    }

    #[test]
    fn sampled_frequencies_match_the_distribution() {
        let zipf = Zipf::new(200, 1.0).unwrap();
        let draws = 400_000;

        let counts = histogram(&zipf, 7, draws);

        // Each count is binomial(draws, p): allow 5 standard deviations, which a
        // correct sampler exceeds with probability ~6e-7 per rank.
        let n = draws as f64;
        for (k, &count) in counts.iter().enumerate() {
            let p = zipf.probability(k);
            let expected = n * p;
            let sigma = (n * p * (1.0 - p)).sqrt();
            let diff = (count as f64 - expected).abs();
            assert!(
                diff <= 5.0 * sigma + 1.0,
                "rank {k}: {count} draws, expected {expected:.1} ± {sigma:.1}"
            );
        }
        // And as a whole: Pearson's chi-square with 199 degrees of freedom stays far
        // below its 1e-6 tail (~320).
        let chi2: f64 = counts
            .iter()
            .enumerate()
            .map(|(k, &c)| {
                let e = n * zipf.probability(k);
                (c as f64 - e).powi(2) / e
            })
            .sum();
        assert!(chi2 < 320.0, "chi-square {chi2:.1}");
    }

    #[test]
    fn the_same_seed_gives_the_same_draws_and_another_seed_does_not() {
        let zipf = Zipf::new(10_000, 1.0).unwrap();

        let a = histogram(&zipf, 42, 10_000);
        let b = histogram(&zipf, 42, 10_000);
        let c = histogram(&zipf, 43, 10_000);

        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_draw_is_a_valid_rank_even_with_one_rank() {
        let one = Zipf::new(1, 1.0).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);

        assert!((0..1000).all(|_| one.sample(&mut rng) == 0));
        let uniform = Zipf::new(4, 0.0).unwrap();
        assert!((0..4).all(|k| (uniform.probability(k) - 0.25).abs() < 1e-12));
    }

    #[test]
    fn rejects_an_empty_range_and_a_bad_exponent() {
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(10, f64::NAN).is_err());
        assert!(Zipf::new(10, -1.0).is_err());
    }
}
