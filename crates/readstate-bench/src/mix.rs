//! The operation mix of BENCH.md (ack 40 %, message created 30 %, get read states
//! 20 %, summary 8 %, mark unread 2 %) and its `--mix` override
//! (`ack=40,message=30,read_states=20,summary=8,unread=2`).

use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngExt};

/// The operations the bench sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A member acks the channel head or a message near it.
    Ack,
    /// A member writes a message; 10 % mention 1–3 members.
    Message,
    /// All of one user's read states (what a client asks on connect).
    ReadStates,
    /// One user's summary.
    Summary,
    /// Mark unread from a recent message.
    Unread,
}

impl OpKind {
    /// Every kind, in the order of BENCH.md's table.
    pub const ALL: [OpKind; 5] = [
        OpKind::Ack,
        OpKind::Message,
        OpKind::ReadStates,
        OpKind::Summary,
        OpKind::Unread,
    ];

    /// The name used by `--mix` and in the results.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Ack => "ack",
            OpKind::Message => "message",
            OpKind::ReadStates => "read_states",
            OpKind::Summary => "summary",
            OpKind::Unread => "unread",
        }
    }

    /// The position of this kind in [`OpKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ack" => OpKind::Ack,
            "message" | "message_created" => OpKind::Message,
            "read_states" | "read-states" | "get_read_states" | "connect" => OpKind::ReadStates,
            "summary" => OpKind::Summary,
            "unread" | "mark_unread" => OpKind::Unread,
            _ => return None,
        })
    }
}

/// Relative weights of the operations (the shares are weight / total).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    /// Indexed by [`OpKind::index`].
    weights: [u32; 5],
    /// Running sums of `weights`, for sampling.
    cumulative: [u32; 5],
}

impl Default for Mix {
    /// BENCH.md's mix: ack 40, message 30, read states 20, summary 8, unread 2.
    fn default() -> Self {
        Self::from_weights([40, 30, 20, 8, 2])
    }
}

impl Mix {
    fn from_weights(weights: [u32; 5]) -> Self {
        let mut cumulative = [0; 5];
        let mut sum = 0_u32;
        for (c, w) in cumulative.iter_mut().zip(weights) {
            sum = sum.saturating_add(w);
            *c = sum;
        }
        Self {
            weights,
            cumulative,
        }
    }

    /// The sum of the weights (100 for the default mix).
    pub fn total(&self) -> u32 {
        self.cumulative[4]
    }

    /// The weight of `kind` as written.
    pub fn weight(&self, kind: OpKind) -> u32 {
        self.weights[kind.index()]
    }

    /// The fraction of operations of `kind`.
    pub fn share(&self, kind: OpKind) -> f64 {
        f64::from(self.weight(kind)) / f64::from(self.total())
    }

    /// Draws the kind of the next operation.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> OpKind {
        let x = rng.random_range(0..self.total());
        let i = self.cumulative.partition_point(|&c| c <= x);
        OpKind::ALL[i.min(4)]
    }
}

impl fmt::Display for Mix {
    /// `ack=40,message=30,read_states=20,summary=8,unread=2` (what `--mix` parses).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", kind.name(), self.weight(*kind))?;
        }
        Ok(())
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `name=weight` pairs separated by commas; unnamed operations get weight 0.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = [0_u32; 5];
        let mut seen = [false; 5];
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=weight, e.g. ack=40"))?;
            let kind = OpKind::parse(name.trim()).ok_or_else(|| {
                format!(
                    "`{}`: unknown operation; expected one of ack, message, read_states, summary, unread",
                    name.trim()
                )
            })?;
            let weight: u32 = weight
                .trim()
                .trim_end_matches('%')
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number ≥ 0"))?;
            if seen[kind.index()] {
                return Err(format!("`{}` is given twice", kind.name()));
            }
            seen[kind.index()] = true;
            weights[kind.index()] = weight;
        }
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Err("the mix must give at least one operation a weight above 0".into());
        }
        if total > u64::from(u32::MAX) {
            return Err("the weights add up to more than 4294967295".into());
        }
        Ok(Self::from_weights(weights))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    #[test]
    fn the_default_mix_is_the_one_of_bench_md_and_sums_to_100() {
        let mix = Mix::default();

        assert_eq!(mix.total(), 100);
        assert_eq!(
            mix.to_string(),
            "ack=40,message=30,read_states=20,summary=8,unread=2"
        );
        let shares: f64 = OpKind::ALL.iter().map(|&k| mix.share(k)).sum();
        assert!((shares - 1.0).abs() < 1e-12);
        assert!((mix.share(OpKind::Summary) - 0.08).abs() < 1e-12);
    }

    #[test]
    fn parses_a_partial_mix_and_gives_the_others_zero() {
        let mix: Mix = "ack=3, summary=1".parse().unwrap();

        assert_eq!(mix.total(), 4);
        assert!((mix.share(OpKind::Ack) - 0.75).abs() < 1e-12);
        assert!((mix.share(OpKind::Summary) - 0.25).abs() < 1e-12);
        assert_eq!(mix.weight(OpKind::Message), 0);
        assert_eq!(
            mix.to_string(),
            "ack=3,message=0,read_states=0,summary=1,unread=0"
        );
    }

    #[test]
    fn the_printed_mix_parses_back_to_itself() {
        let mix: Mix = "message_created=5,connect=3,mark_unread=2%"
            .parse()
            .unwrap();

        assert_eq!(mix.to_string().parse::<Mix>().unwrap(), mix);
        assert_eq!(
            Mix::default().to_string().parse::<Mix>().unwrap(),
            Mix::default()
        );
    }

    #[test]
    fn rejects_bad_mixes_with_a_reason() {
        for (text, reason) in [
            ("ack", "expected name=weight"),
            ("bogus=1", "unknown operation"),
            ("ack=-1", "whole number"),
            ("ack=1.5", "whole number"),
            ("ack=1,ack=2", "given twice"),
            ("ack=0", "at least one"),
            ("", "at least one"),
        ] {
            let err = text.parse::<Mix>().unwrap_err();
            assert!(err.contains(reason), "{text}: {err}");
        }
    }

    #[test]
    fn sampled_frequencies_match_the_shares() {
        let mix = Mix::default();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let draws = 200_000;
        let mut counts = [0_u64; 5];

        for _ in 0..draws {
            counts[mix.sample(&mut rng).index()] += 1;
        }

        // Binomial counts: within 5 standard deviations of the expectation.
        let n = draws as f64;
        for kind in OpKind::ALL {
            let p = mix.share(kind);
            let sigma = (n * p * (1.0 - p)).sqrt();
            let diff = (counts[kind.index()] as f64 - n * p).abs();
            assert!(
                diff <= 5.0 * sigma,
                "{}: {}",
                kind.name(),
                counts[kind.index()]
            );
        }
    }

    #[test]
    fn an_operation_with_weight_zero_is_never_drawn() {
        let mix: Mix = "ack=1,unread=1".parse().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);

        let drawn: Vec<OpKind> = (0..10_000).map(|_| mix.sample(&mut rng)).collect();

        assert!(
            drawn
                .iter()
                .all(|k| matches!(k, OpKind::Ack | OpKind::Unread))
        );
        assert!(drawn.contains(&OpKind::Unread));
    }
}
