//! Weighted choice among a route's tracks or a track's endpoints: by fresh randomness for
//! requests without a key, by weighted rendezvous hashing for requests with one.
//!
//! # Why rendezvous hashing gives the sticky guarantees
//!
//! For a key `k` and an item `i` with weight `wᵢ > 0`, let `uᵢ(k)` be a uniform draw in (0, 1)
//! derived from a hash of `k` and the item's own seed (its name), and `sᵢ(k) = −ln uᵢ(k) / wᵢ`.
//! The key goes to the item with the smallest score; items of weight 0 take part in nothing.
//!
//! * **Same key, same weights → same item**: the scores depend only on the key, the seeds and
//!   the weights.
//! * **Proportions**: `−ln uᵢ` is Exp(1), so `sᵢ` is Exp(wᵢ) and independent across items; the
//!   smallest of independent exponentials is item `i` with probability `wᵢ / Σw`. Keys spread
//!   over items exactly in proportion to the weights.
//! * **Monotonicity**: only `sᵢ` depends on `wᵢ`, and it falls as `wᵢ` rises. So a key on item
//!   `i` stays on `i` whenever `wᵢ` does not fall and no other weight rises: when a track's weight
//!   grows every key already on it stays, and when a weight shrinks only keys on that track
//!   leave it. This holds exactly in floating point too, because IEEE division is correctly
//!   rounded and therefore monotone in the divisor, and every other score is computed from
//!   unchanged inputs. More generally a key moves from `i` to `j` only if `wⱼ / wᵢ` rose.
//! * **Scale**: multiplying all weights by one positive factor changes no assignment in exact
//!   arithmetic (weights are relative).
//!
//! No rule keyed on the weights alone can keep every key of every growing track in place when
//! two tracks grow at once at the expense of a third (the keys a shrinking track gives up must
//! land somewhere, and where depends on the path the weights took); the rollout controller
//! changes one candidate's weight against its baseline, which the guarantees above cover.
//!
//! Without a key, a request takes a uniform 64-bit random number `r` and the first item whose
//! cumulative bound exceeds it; the bounds divide 2⁶⁴ in proportion to the weights, so the
//! resolution is far finer than one in a million and the long-run shares are exact.

/// One positive-weight item of a split.
#[derive(Debug, Clone)]
struct Item {
    /// Position of the item in its list (track index in the route, endpoint index in the track).
    index: u32,
    weight: f64,
    /// Derived from the item's name, so a key's draw for an item does not depend on order.
    seed: u64,
    /// `r < bound` picks this item (unless an earlier one took it).
    bound: u64,
}

/// A weighted choice among items with at least one positive weight.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    items: Box<[Item]>,
    /// All positive weights are equal: the smallest score is then the largest draw, so the
    /// logarithm can be skipped without changing any choice.
    equal: bool,
}

impl Split {
    /// Builds a split from `(weight, seed)` per item, in item order. Items of weight 0 are never
    /// chosen. Returns `None` if no weight is positive. Weights must be finite and not negative.
    pub(crate) fn new(weights: impl IntoIterator<Item = (f64, u64)>) -> Option<Self> {
        let positive: Vec<(u32, f64, u64)> = weights
            .into_iter()
            .zip(0u32..)
            .filter(|((w, _), _)| *w > 0.0)
            .map(|((w, seed), i)| (i, w, seed))
            .collect();
        let total: f64 = positive.iter().map(|(_, w, _)| w).sum();
        if positive.is_empty() || !total.is_finite() {
            return None;
        }
        let equal = positive.iter().all(|(_, w, _)| *w == positive[0].1);
        let mut cumulative = 0.0;
        let last = positive.len() - 1;
        let items = positive
            .into_iter()
            .enumerate()
            .map(|(n, (index, weight, seed))| {
                cumulative += weight;
                let bound = if n == last {
                    u64::MAX
                } else {
                    // `as` saturates, and the product is at most 2⁶⁴.
                    ((cumulative / total) * TWO_POW_64) as u64
                };
                Item {
                    index,
                    weight,
                    seed,
                    bound,
                }
            })
            .collect();
        Some(Self { items, equal })
    }

    /// The item a request without a key takes, from a uniform random `r`.
    #[inline]
    pub(crate) fn by_random(&self, r: u64) -> usize {
        for item in &self.items[..self.items.len() - 1] {
            if r < item.bound {
                return item.index as usize;
            }
        }
        self.items[self.items.len() - 1].index as usize
    }

    /// The item a key with hash `key` takes (weighted rendezvous hashing).
    #[inline]
    pub(crate) fn by_key(&self, key: u64) -> usize {
        if let [only] = &*self.items {
            return only.index as usize;
        }
        if self.equal {
            // −ln(u)/w is smallest where u is largest, and u rises with the draw's top bits.
            // The same 52 bits `unit_open` uses, so ties fall to the first item as they would.
            let draw = |item: &Item| mix(key ^ item.seed) >> 12;
            let mut chosen = &self.items[0];
            let mut best = draw(chosen);
            for item in &self.items[1..] {
                let d = draw(item);
                if d > best {
                    best = d;
                    chosen = item;
                }
            }
            return chosen.index as usize;
        }
        let mut best = f64::INFINITY;
        let mut chosen = 0;
        for item in &*self.items {
            let score = -unit_open(mix(key ^ item.seed)).ln() / item.weight;
            if score < best {
                best = score;
                chosen = item.index;
            }
        }
        chosen as usize
    }

    /// The item a key with hash `key` takes among the items `usable` accepts: the one of
    /// smallest score among them, so a key whose own item is usable keeps it, and the keys of an
    /// item left out spread over the others in proportion to their weights, each always to the
    /// same one. `None` if no item is usable.
    pub(crate) fn by_key_among(&self, key: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best = f64::INFINITY;
        let mut chosen = None;
        for item in self.items.iter().filter(|i| usable(i.index as usize)) {
            // Equal weights compare as the largest draw, as `by_key` does; scores otherwise.
            let score = if self.equal {
                -((mix(key ^ item.seed) >> 12) as f64)
            } else {
                -unit_open(mix(key ^ item.seed)).ln() / item.weight
            };
            if chosen.is_none() || score < best {
                best = score;
                chosen = Some(item.index as usize);
            }
        }
        chosen
    }

    /// The item a request without a key takes among the items `usable` accepts, from a uniform
    /// random `r`: in proportion to their weights. `None` if no item is usable.
    pub(crate) fn by_random_among(&self, r: u64, usable: impl Fn(usize) -> bool) -> Option<usize> {
        let total: f64 = self
            .items
            .iter()
            .filter(|i| usable(i.index as usize))
            .map(|i| i.weight)
            .sum();
        let mut left = (r as f64 / TWO_POW_64) * total;
        let mut last = None;
        for item in self.items.iter().filter(|i| usable(i.index as usize)) {
            if left < item.weight {
                return Some(item.index as usize);
            }
            left -= item.weight;
            last = Some(item.index as usize);
        }
        // Rounding can leave a sliver past the last bound.
        last
    }
}

const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// A 64-bit finalizer (from MurmurHash3) whose outputs for inputs differing in any bit are
/// uncorrelated; it turns one key hash into independent draws per item seed.
#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Maps 64 random bits to a uniform value in the open interval (0, 1), so `ln` is finite.
#[inline]
fn unit_open(bits: u64) -> f64 {
    // 52 bits plus one half is exact in an f64 (53-bit mantissa), and so is the scaling; with
    // 53 bits the largest value would round up to 1.0.
    ((bits >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

/// A stable 64-bit hash of a name or key; the same in every process and on every proxy, so a
/// fleet agrees on every key's track.
#[inline]
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[f64]) -> Split {
        Split::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| (*w, hash(format!("t{i}").as_bytes()))),
        )
        .unwrap()
    }

    #[test]
    fn no_positive_weight_is_no_split() {
        assert!(Split::new([(0.0, 1), (0.0, 2)]).is_none());
        assert!(Split::new([]).is_none());
    }

    #[test]
    fn random_bounds_cover_the_whole_range() {
        let s = split(&[95.0, 5.0]);
        assert_eq!(s.by_random(0), 0);
        assert_eq!(s.by_random(u64::MAX), 1);
        let edge = (0.95 * TWO_POW_64) as u64;
        assert_eq!(s.by_random(edge - 1), 0);
        assert_eq!(s.by_random(edge), 1);
    }

    #[test]
    fn zero_weight_items_keep_their_index_but_are_skipped() {
        let s = split(&[0.0, 1.0, 0.0]);
        for r in [0, u64::MAX / 2, u64::MAX] {
            assert_eq!(s.by_random(r), 1);
        }
        for k in 0..1000 {
            assert_eq!(s.by_key(k), 1);
        }
    }

    #[test]
    fn equal_weights_choose_exactly_as_the_logarithm_would() {
        let fast = split(&[2.0, 2.0, 2.0]);
        assert!(fast.equal);
        let slow = Split {
            equal: false,
            ..fast.clone()
        };
        for key in 0..20_000u64 {
            let k = mix(key);
            assert_eq!(fast.by_key(k), slow.by_key(k), "key {k}");
        }
        assert!(!split(&[95.0, 5.0]).equal);
    }

    #[test]
    fn unit_open_never_reaches_either_end() {
        assert!(unit_open(0) > 0.0);
        assert!(unit_open(u64::MAX) < 1.0);
    }

    #[test]
    fn among_every_item_is_the_plain_choice() {
        for weights in [&[1.0, 1.0, 1.0][..], &[95.0, 5.0], &[3.0, 0.0, 1.0, 2.0]] {
            let s = split(weights);
            for key in 0..5_000u64 {
                let k = mix(key);
                assert_eq!(s.by_key_among(k, |_| true), Some(s.by_key(k)), "{weights:?} key {k}");
            }
        }
    }

    #[test]
    fn keys_of_a_left_out_item_move_and_no_other_key_does() {
        for weights in [&[1.0, 1.0, 1.0, 1.0][..], &[4.0, 3.0, 2.0, 1.0]] {
            let s = split(weights);
            let mut moved = [0u32; 4];
            for key in 0..20_000u64 {
                let k = mix(key);
                let own = s.by_key(k);
                let without_1 = s.by_key_among(k, |i| i != 1).unwrap();
                if own == 1 {
                    assert_ne!(without_1, 1);
                    moved[without_1] += 1;
                } else {
                    assert_eq!(without_1, own, "a key on a usable item stays");
                }
                assert_eq!(s.by_key_among(k, |i| i != 1), Some(without_1), "deterministic");
            }
            // The left-out item's keys spread over the rest by weight.
            let rest: f64 = weights
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 1)
                .map(|(_, w)| w)
                .sum();
            let total = f64::from(moved.iter().sum::<u32>());
            for i in [0, 2, 3] {
                let share = f64::from(moved[i]) / total;
                assert!(
                    (share - weights[i] / rest).abs() < 0.03,
                    "{weights:?}: item {i} took {share}"
                );
            }
        }
    }

    #[test]
    fn random_among_usable_items_keeps_their_proportions() {
        let s = split(&[1.0, 2.0, 1.0]);
        assert_eq!(s.by_random_among(0, |_| false), None);
        let mut counts = [0u32; 3];
        let n = 30_000u64;
        for i in 0..n {
            let r = mix(i);
            counts[s.by_random_among(r, |i| i != 2).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        let share = f64::from(counts[1]) / n as f64;
        assert!((share - 2.0 / 3.0).abs() < 0.02, "{share}");
        assert_eq!(s.by_random_among(u64::MAX, |i| i == 0), Some(0));
        assert_eq!(s.by_random_among(u64::MAX, |i| i != 2), Some(1));
    }
}
